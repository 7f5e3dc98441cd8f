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
// Memory per layer: A's cache [B, 2w, 3d], B's cache [B, w, 3d], and (accumulate) four [B, w, d]
// buffers: O(layers * w * d) per sequence, independent of the length generated. w = 0 (the plain
// transformer) keeps a cache of maxPositions rows instead, as any transformer must.
#pragma once
#include <cstdint>
#include <vector>

#include "layer/backend.h"
#include "layer/block.h"
#include "layer/recurrence.h"

namespace rt {

class DecodeState {
 public:
  // B sequences decoded in lockstep. max_positions bounds the plain transformer's cache (w = 0).
  DecodeState(const LayerStack& stack, int B, int max_positions);

  // x [B, d]: the layer-stack input of the token at position(); y [B, d] (written): the stack's output
  // there. Advances position() by one.
  void step(const float* x, float* y);
  int64_t position() const { return pos_; }
  int batch() const { return B_; }
  int window() const { return w_; }

 private:
  struct Layer {
    DeviceBuffer kvA, kvB;             // key/value caches of applications A and B
    DeviceBuffer X, S, Pin, Pnext, Y;  // accumulate only: window inputs, S_j, P_{j-1}, P_j, final Y_j
  };
  void close_window(int64_t j);

  const LayerStack& stack_;
  Backend& be_;
  int B_, w_, d_, cap_;
  bool accumulate_;
  int64_t pos_ = 0;
  std::vector<Layer> layers_;
  std::vector<float> alpha_;
  ChunkScratch scratch_;
  DeviceBuffer t1_, t2_, t3_;  // [B, d] step temporaries
};

}  // namespace rt
