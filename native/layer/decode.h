// Incremental decoding: the recurrence run one token at a time with constant memory per sequence.
//
// Why it works: T is causal, so the first w outputs of T([S_{k-1}, X_k]) are T(S_{k-1}) whatever X_k
// is. Per layer two applications are live: A, the window pair [prefix, X_j] that produces S_j, and B,
// T over S_j, whose rows are the outputs of the window so far. Each new token extends A and then B by
// one row through their key/value caches (block_chunk). When window j completes, B's rows become A's
// prefix for window j+1 (forget). For accumulate the prefix is T(alpha*P_j + S_j) instead, and the
// outputs of window j change from T(S_j) (what the sequence ending inside window j sees, DESIGN's
// Y_{m-1}) to that prefix; the layers above then redo their window j with those final inputs, bottom up,
// before the next token. So every output equals the offline forward of the prefix ending at that token.
//
// Memory per layer and sequence: A's cache [2w, 3d], B's cache [w, 3d], and (accumulate) five [w, d]
// buffers: O(layers * w * d) per sequence, independent of the length generated. w = 0 (the plain
// transformer) keeps a cache of maxPositions rows instead, as any transformer must.
#pragma once
#include <cstdint>
#include <memory>
#include <mutex>
#include <vector>

#include "layer/backend.h"
#include "layer/block.h"
#include "layer/recurrence.h"

namespace rt {

class DecodeState {
 public:
  // `slots` sequences, each with its own position (continuous batching: a finished sequence's slot is
  // reset and reused while the others go on). max_positions bounds the plain transformer's cache (w = 0).
  DecodeState(const LayerStack& stack, int slots, int max_positions);

  // Feeds one token to each of S distinct slots: x [S, d] holds the layer-stack inputs of the tokens at
  // those slots' positions; y [S, d] (written) the stack's outputs there. Advances each slot by one.
  // Steps over disjoint slots may run at once on different threads (each takes scratch of its own);
  // `serial` keeps a step on its calling thread (the caller runs it under a SerialScope): a wide step's
  // parts of rows then run one after another there instead of across the thread pool, with the same bits.
  void step(const int* slots, int S, const float* x, float* y, bool serial = false);
  // Starts slot s over at position 0 (its old state is simply overwritten as it advances).
  void reset(int s);
  int64_t position(int s) const { return pos_.at(s); }
  int slots() const { return slots_; }
  int window() const { return w_; }
  int max_positions() const { return w_ == 0 ? cap_ : -1; }

 private:
  struct Layer {
    DeviceBuffer kvA, kvB;             // key/value caches of applications A and B, [slots, cap, 3d]
    DeviceBuffer X, S, Pin, Pnext, Y;  // accumulate only, [slots, w, d]: inputs, S_j, P_{j-1}, P_j, final Y_j
  };
  // A group of rows decoded together, with scratch of its own so that groups can run on different threads.
  struct Part {
    ChunkScratch scratch;
    DeviceBuffer bufs[3];  // layer outputs (two, alternating) and the B application's input, [rows, d]
    void ensure(Backend& be, size_t Sd);
  };
  // The positions of step()'s rows within their windows, worked out once per step.
  struct Rows {
    const int* slots;
    std::vector<int> tA, tB, iw;
    std::vector<int64_t> jw;
  };
  // Rows [r0, r1) of a step, start to finish (every layer, window closes included).
  void step_rows(const Rows& rows, int r0, int r1, const float* x, float* y, Part& p);
  void close_window(int slot, int64_t j, ChunkScratch& scratch);

  const LayerStack& stack_;
  Backend& be_;
  int slots_, w_, d_, cap_;
  bool accumulate_;
  std::vector<int64_t> pos_;
  std::vector<Layer> layers_;
  std::vector<float> alpha_;
  // Scratch of finished steps, kept for the next ones (a step takes as many as it has parts).
  std::vector<std::unique_ptr<Part>> spare_;
  std::mutex spare_mu_;
};

}  // namespace rt
