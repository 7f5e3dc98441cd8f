#include "layer/decode.h"

#include <atomic>
#include <cstdlib>
#include <string>

#include "core/error.h"
#include "core/thread_pool.h"

namespace rt {
namespace {

// Rows per part when a step is split into parts (see step()). Fewer rows make more parts to share out
// when one core is busy elsewhere, but each part streams the block's weights (12 d^2 floats) through its
// core again and gives the GEMMs fewer rows to amortise their packing over.
// RT_DECODE_PART_ROWS overrides it (read at every step, so that a benchmark can compare sizes in one
// process; a getenv is nothing next to a step).
int part_rows() {
  const char* e = std::getenv("RT_DECODE_PART_ROWS");
  const int v = e ? std::atoi(e) : 0;
  return v > 0 ? v : 16;
}

// How many parts a step of S rows is split into: one (each op then splits itself across the threads, if
// it is large enough) unless the backend runs on this host's threads and there are rows for two parts.
// The split depends on S alone, not on the threads or on whether the step keeps to one thread (a serial
// step runs its parts one after another): every row then takes the same kernels (the few-rows linear
// layer, never the GEMM that a part of more than 32 rows would take), so a sequence's logits have the
// same bits whatever the batch around it, the thread count or the step's mode.
int decode_parts(bool host, int S) {
  const int rows = part_rows();
  if (!host || S < 2 * rows) return 1;
  return (S + rows - 1) / rows;
}

}  // namespace

DecodeState::DecodeState(const LayerStack& stack, int slots, int max_positions)
    : stack_(stack), be_(stack.backend()), slots_(slots), w_(stack.config().window), d_(stack.config().d),
      accumulate_(stack.config().accumulate) {
  RT_CHECK(slots >= 1, "batch: expected a positive integer, got " + std::to_string(slots));
  RT_CHECK(w_ > 0 || max_positions >= 1, "maxPositions: expected a positive integer for the plain transformer (window 0)");
  cap_ = w_ == 0 ? max_positions : 2 * w_;
  const size_t row = 3 * static_cast<size_t>(d_), wd = static_cast<size_t>(w_) * d_;
  const int L = stack.config().layers;
  layers_.resize(L);
  for (int l = 0; l < L; ++l) {
    Layer& s = layers_[l];
    s.kvA = DeviceBuffer(be_, static_cast<size_t>(slots) * cap_ * row);
    if (w_ > 0) s.kvB = DeviceBuffer(be_, static_cast<size_t>(slots) * w_ * row);
    if (accumulate_ && w_ > 0)
      for (DeviceBuffer* b : {&s.X, &s.S, &s.Pin, &s.Pnext, &s.Y}) *b = DeviceBuffer(be_, slots * wd);
    alpha_.push_back(stack.alpha(l));
  }
  pos_.assign(slots, 0);
}

void DecodeState::reset(int s) {
  RT_CHECK(s >= 0 && s < slots_, "slot: expected an index in [0, " + std::to_string(slots_) + "), got " + std::to_string(s));
  pos_[s] = 0;
}

void DecodeState::Part::ensure(Backend& be, size_t Sd) {
  if (bufs[0].size() >= Sd) return;
  for (DeviceBuffer& b : bufs) b = DeviceBuffer(be, Sd);
}

void DecodeState::step(const int* slots, int S, const float* x, float* y, bool serial) {
  Rows rows{slots, std::vector<int>(S), std::vector<int>(S), std::vector<int>(S), std::vector<int64_t>(S)};
  std::vector<char> seen(slots_, 0);
  for (int r = 0; r < S; ++r) {
    const int s = slots[r];
    RT_CHECK(s >= 0 && s < slots_ && !seen[s], "slots: expected distinct indices in [0, " + std::to_string(slots_) + ")");
    seen[s] = 1;
    const int64_t p = pos_[s];
    if (w_ == 0) {
      RT_CHECK(p < cap_, "generate: the plain transformer (window 0) keeps every position; " + std::to_string(cap_) +
                             " positions are used up (raise maxPositions)");
      rows.tA[r] = static_cast<int>(p);
    } else {
      rows.jw[r] = p / w_;
      rows.iw[r] = static_cast<int>(p % w_);
      rows.tA[r] = rows.jw[r] == 0 ? rows.iw[r] : w_ + rows.iw[r];
      rows.tB[r] = rows.iw[r];
    }
  }
  const int parts = decode_parts(be_.device() == Device::CPU, S);
  // Scratch for each part that may run at once: one when the parts run one after another.
  const int concurrent = serial ? 1 : parts;
  std::vector<std::unique_ptr<Part>> scratch;
  {
    std::lock_guard<std::mutex> lock(spare_mu_);
    while (static_cast<int>(scratch.size()) < concurrent && !spare_.empty()) {
      scratch.push_back(std::move(spare_.back()));
      spare_.pop_back();
    }
  }
  while (static_cast<int>(scratch.size()) < concurrent) scratch.push_back(std::make_unique<Part>());
  struct GiveBack {
    DecodeState& self;
    std::vector<std::unique_ptr<Part>>& scratch;
    ~GiveBack() {
      std::lock_guard<std::mutex> lock(self.spare_mu_);
      for (auto& p : scratch) self.spare_.push_back(std::move(p));
    }
  } give_back{*this, scratch};
  if (parts == 1) {
    step_rows(rows, 0, S, x, y, *scratch[0]);
    return;
  }
  if (serial) {
    for (int k = 0; k < parts; ++k) {
      const int r0 = static_cast<int>(static_cast<int64_t>(S) * k / parts);
      const int r1 = static_cast<int>(static_cast<int64_t>(S) * (k + 1) / parts);
      step_rows(rows, r0, r1, x + static_cast<size_t>(r0) * d_, y + static_cast<size_t>(r0) * d_, *scratch[0]);
    }
    return;
  }
  // Each part is a whole step of its own rows (every op serial on one thread), claimed by whichever
  // thread comes first. The alternative, each op split across the threads, meets at ~20 barriers per
  // step, and every barrier waits for the slowest thread: on a machine that also serves the HTTP side
  // (and here runs the load generator), a preempted thread stalls the whole step at each of them.
  // Parts finish in any order on any thread; each writes only its own rows and its own slots' state.
  std::atomic<int> next{0};
  parallel_for(static_cast<size_t>(num_threads()), 1, [&](size_t, size_t) {
    for (int k; (k = next.fetch_add(1, std::memory_order_relaxed)) < parts;) {
      const int r0 = static_cast<int>(static_cast<int64_t>(S) * k / parts);
      const int r1 = static_cast<int>(static_cast<int64_t>(S) * (k + 1) / parts);
      step_rows(rows, r0, r1, x + static_cast<size_t>(r0) * d_, y + static_cast<size_t>(r0) * d_, *scratch[k]);
    }
  });
}

void DecodeState::step_rows(const Rows& rows, int r0, int r1, const float* x, float* y, Part& part) {
  const BlockShape& sh = stack_.shape();
  const int S = r1 - r0;
  const int* slots = rows.slots + r0;
  const int *tA = rows.tA.data() + r0, *tB = rows.tB.data() + r0, *iw = rows.iw.data() + r0;
  const int64_t* jw = rows.jw.data() + r0;
  const size_t d = d_, wd = static_cast<size_t>(w_) * d, Sd = static_cast<size_t>(S) * d;
  part.ensure(be_, Sd);
  ChunkScratch& scratch = part.scratch;
  const float* in = x;
  for (size_t l = 0; l < layers_.size(); ++l) {
    Layer& L = layers_[l];
    const BlockWeights& W = stack_.weights(static_cast<int>(l));
    float* out = part.bufs[l % 2].get();
    float* tmp = part.bufs[2].get();
    if (w_ == 0) {
      block_rows(be_, sh, W, L.kvA.get(), cap_, slots, tA, S, in, out, scratch);
    } else {
      const float* a_in = in;
      if (accumulate_) {
        for (int r = 0; r < S; ++r) {
          const size_t at = slots[r] * wd + iw[r] * d;
          be_.copy(L.X.get() + at, in + r * d, d);
          // A's second half adds alpha * P_{j-1} (nothing in window 0, which has no prefix; Pin is not
          // written yet there, so it must not be read even with a zero factor: 0 * NaN is NaN).
          if (jw[r] >= 1) be_.axpy2d(tmp + r * d, d, alpha_[l], L.Pin.get() + at, d, in + r * d, d, 1, d);
          else be_.copy(tmp + r * d, in + r * d, d);
        }
        a_in = tmp;
      }
      // S_j[i], the new row of application A (kept for the window's close when accumulating).
      block_rows(be_, sh, W, L.kvA.get(), cap_, slots, tA, S, a_in, out, scratch);
      if (accumulate_)
        for (int r = 0; r < S; ++r) be_.copy(L.S.get() + slots[r] * wd + iw[r] * d, out + r * d, d);
      // Y_j[i] = T(S_j)[i], the new row of application B.
      be_.copy(tmp, out, Sd);
      block_rows(be_, sh, W, L.kvB.get(), w_, slots, tB, S, tmp, out, scratch);
    }
    in = out;
  }
  be_.copy(y, in, Sd);
  for (int r = 0; r < S; ++r) {
    if (w_ > 0 && iw[r] == w_ - 1) close_window(slots[r], jw[r], scratch);
    ++pos_[slots[r]];
  }
}

void DecodeState::close_window(int slot, int64_t j, ChunkScratch& scratch) {
  const BlockShape& sh = stack_.shape();
  const size_t d = d_, row = 3 * d, wd = static_cast<size_t>(w_) * d;
  const size_t kvA_at = static_cast<size_t>(slot) * cap_ * row, kvB_at = static_cast<size_t>(slot) * w_ * row;
  const size_t at = static_cast<size_t>(slot) * wd;
  if (!accumulate_) {
    // T([S_j, X_{j+1}]) starts with T(S_j): B's rows are A's prefix for the next window.
    for (Layer& L : layers_) be_.copy(L.kvA.get() + kvA_at, L.kvB.get() + kvB_at, w_ * row);
    return;
  }
  DeviceBuffer tmp(be_, wd);
  for (size_t l = 0; l < layers_.size(); ++l) {
    Layer& L = layers_[l];
    const BlockWeights& W = stack_.weights(static_cast<int>(l));
    const float a = alpha_[l];
    float *X = L.X.get() + at, *S = L.S.get() + at, *Pin = L.Pin.get() + at, *Pnext = L.Pnext.get() + at,
          *Y = L.Y.get() + at, *kvA = L.kvA.get() + kvA_at;
    if (l > 0) {
      // The layer below just produced its final outputs for window j: redo A's second half with them.
      be_.copy(X, layers_[l - 1].Y.get() + at, wd);
      if (j >= 1) be_.axpy2d(tmp.get(), wd, a, Pin, wd, X, wd, 1, wd);
      else be_.copy(tmp.get(), X, wd);
      block_chunk(be_, sh, W, kvA, cap_, 1, j == 0 ? 0 : w_, w_, tmp.get(), S, scratch);
    }
    // P_j is X_0 for j = 0, else Y_{j-1} (the previous prefix's output); A's next prefix is alpha P_j + S_j.
    const float* Pj = j == 0 ? X : Pnext;
    be_.axpy2d(tmp.get(), wd, a, Pj, wd, S, wd, 1, wd);
    block_chunk(be_, sh, W, kvA, cap_, 1, 0, w_, tmp.get(), Y, scratch);
    be_.copy(Pin, Pj, wd);
    be_.copy(Pnext, Y, wd);
  }
}

}  // namespace rt
