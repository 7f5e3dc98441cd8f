#include "layer/decode.h"

#include <string>

#include "core/error.h"

namespace rt {

DecodeState::DecodeState(const LayerStack& stack, int B, int max_positions)
    : stack_(stack), be_(stack.backend()), B_(B), w_(stack.config().window), d_(stack.config().d),
      accumulate_(stack.config().accumulate) {
  RT_CHECK(B >= 1, "batch: expected a positive integer, got " + std::to_string(B));
  RT_CHECK(w_ > 0 || max_positions >= 1, "maxPositions: expected a positive integer for the plain transformer (window 0)");
  cap_ = w_ == 0 ? max_positions : 2 * w_;
  const size_t Bd = static_cast<size_t>(B) * d_, row = 3 * static_cast<size_t>(d_);
  const int L = stack.config().layers;
  layers_.resize(L);
  for (int l = 0; l < L; ++l) {
    Layer& s = layers_[l];
    s.kvA = DeviceBuffer(be_, static_cast<size_t>(B) * cap_ * row);
    if (w_ > 0) s.kvB = DeviceBuffer(be_, static_cast<size_t>(B) * w_ * row);
    if (accumulate_ && w_ > 0) {
      for (DeviceBuffer* b : {&s.X, &s.S, &s.Pin, &s.Pnext, &s.Y}) *b = DeviceBuffer(be_, Bd * w_);
    }
    alpha_.push_back(stack.alpha(l));
  }
  t1_ = DeviceBuffer(be_, Bd);
  t2_ = DeviceBuffer(be_, Bd);
  t3_ = DeviceBuffer(be_, Bd);
}

void DecodeState::step(const float* x, float* y) {
  const BlockShape& sh = stack_.shape();
  const size_t d = d_, wd = static_cast<size_t>(w_) * d;
  if (w_ == 0)
    RT_CHECK(pos_ < cap_, "generate: the plain transformer (window 0) keeps every position; " + std::to_string(cap_) +
                              " positions are used up (raise maxPositions)");
  const float* in = x;
  float* bufs[2] = {t1_.get(), t2_.get()};
  const int64_t j = w_ ? pos_ / w_ : 0;
  const int i = w_ ? static_cast<int>(pos_ % w_) : 0;
  for (size_t l = 0; l < layers_.size(); ++l) {
    Layer& s = layers_[l];
    const BlockWeights& W = stack_.weights(static_cast<int>(l));
    float* out = bufs[l % 2];
    if (w_ == 0) {
      block_chunk(be_, sh, W, s.kvA.get(), cap_, B_, static_cast<int>(pos_), 1, in, out, scratch_);
    } else {
      const float* a_in = in;
      if (accumulate_) {
        be_.axpy2d(s.X.get() + i * d, wd, 1.0f, in, d, nullptr, 0, B_, d);
        if (j >= 1) {  // A's second half adds alpha * P_{j-1}
          be_.axpy2d(t3_.get(), d, alpha_[l], s.Pin.get() + i * d, wd, in, d, B_, d);
          a_in = t3_.get();
        }
      }
      // S_j[i], the new row of application A (kept for the window's close when accumulating).
      block_chunk(be_, sh, W, s.kvA.get(), cap_, B_, j == 0 ? i : w_ + i, 1, a_in, out, scratch_);
      if (accumulate_) be_.axpy2d(s.S.get() + i * d, wd, 1.0f, out, d, nullptr, 0, B_, d);
      // Y_j[i] = T(S_j)[i], the new row of application B.
      be_.copy(t3_.get(), out, static_cast<size_t>(B_) * d);
      block_chunk(be_, sh, W, s.kvB.get(), w_, B_, i, 1, t3_.get(), out, scratch_);
    }
    in = out;
  }
  be_.copy(y, in, static_cast<size_t>(B_) * d);
  if (w_ > 0 && i == w_ - 1) close_window(j);
  ++pos_;
}

void DecodeState::close_window(int64_t j) {
  const BlockShape& sh = stack_.shape();
  const size_t d = d_, row = 3 * d, wd = static_cast<size_t>(w_) * d;
  if (!accumulate_) {
    // T([S_j, X_{j+1}]) starts with T(S_j): B's rows are A's prefix for the next window.
    for (Layer& s : layers_)
      be_.axpy2d(s.kvA.get(), cap_ * row, 1.0f, s.kvB.get(), w_ * row, nullptr, 0, B_, w_ * row);
    return;
  }
  for (size_t l = 0; l < layers_.size(); ++l) {
    Layer& s = layers_[l];
    const BlockWeights& W = stack_.weights(static_cast<int>(l));
    const float a = alpha_[l];
    if (l > 0) {
      // The layer below just produced its final outputs for window j: redo A's second half with them.
      be_.copy(s.X.get(), layers_[l - 1].Y.get(), B_ * wd);
      const float* in2 = s.X.get();
      DeviceBuffer tmp;
      if (j >= 1) {
        tmp = DeviceBuffer(be_, B_ * wd);
        be_.axpy2d(tmp.get(), wd, a, s.Pin.get(), wd, s.X.get(), wd, B_, wd);
        in2 = tmp.get();
      }
      block_chunk(be_, sh, W, s.kvA.get(), cap_, B_, j == 0 ? 0 : w_, w_, in2, s.S.get(), scratch_);
    }
    // P_j is X_0 for j = 0, else Y_{j-1} (the previous prefix's output).
    const float* Pj = j == 0 ? s.X.get() : s.Pnext.get();
    DeviceBuffer prefix(be_, B_ * wd);
    be_.axpy2d(prefix.get(), wd, a, Pj, wd, s.S.get(), wd, B_, wd);
    // A's prefix for window j+1; its outputs are the final Y_j.
    block_chunk(be_, sh, W, s.kvA.get(), cap_, B_, 0, w_, prefix.get(), s.Y.get(), scratch_);
    be_.copy(s.Pin.get(), Pj, B_ * wd);
    be_.copy(s.Pnext.get(), s.Y.get(), B_ * wd);
  }
}

}  // namespace rt
