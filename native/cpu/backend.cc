// The CPU backend: host memory and the kernels of cpu/kernels.h, with the strided helpers the
// recurrence needs parallelised over rows.
#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <limits>
#include <mutex>
#include <string>
#include <unordered_map>
#include <vector>

#include "core/env.h"
#include "core/error.h"
#include "core/tensor.h"
#include "core/thread_pool.h"
#include "cpu/kernels.h"
#include "layer/backend.h"
#include "layer/block.h"

namespace rt {
namespace {

class CpuBackend final : public Backend {
 public:
  const char* name() const override { return "cpu"; }

  // Activation buffers come from a caching allocator: a training step allocates the same sizes every
  // time, and fresh pages from the OS cost a page fault and a zeroing per 4 KB (measured ~8% of a copy
  // step before this cache). Sizes are rounded up to classes (8 per power of two) so that steps with
  // random window widths reuse buffers too. A 64-byte header keeps each block's class; data stays
  // 64-byte aligned. The cache holds at most RT_CPU_CACHE_MB (default 2048) MB of free blocks.
  float* alloc(size_t n) override {
    const size_t bytes = size_class(n * sizeof(float));
    {
      std::lock_guard<std::mutex> lock(mu_);
      auto it = free_.find(bytes);
      if (it != free_.end() && !it->second.empty()) {
        char* raw = it->second.back();
        it->second.pop_back();
        cached_ -= bytes;
        return poisoned(reinterpret_cast<float*>(raw + 64), n);
      }
    }
    char* raw = static_cast<char*>(std::aligned_alloc(64, bytes + 64));
    if (!raw) {
      trim();
      raw = static_cast<char*>(std::aligned_alloc(64, bytes + 64));
    }
    if (!raw) throw Error("out of memory: could not allocate " + std::to_string(n * sizeof(float)) +
                          " bytes of layer activations (memory grows linearly in N; use a shorter sequence or batch)");
    *reinterpret_cast<size_t*>(raw) = bytes;
    note_allocation(static_cast<int64_t>(bytes));
    return poisoned(reinterpret_cast<float*>(raw + 64), n);
  }
  // RT_CPU_POISON=1: every buffer starts as NaN, so a kernel that reads what nobody wrote shows it (the
  // cache hands back blocks with old contents, which would otherwise make such a read depend on history).
  static float* poisoned(float* p, size_t n) {
    static const bool on = rt::env_switch("RT_CPU_POISON", false);
    if (on) std::fill(p, p + n, std::numeric_limits<float>::quiet_NaN());
    return p;
  }
  void release(float* p) override {
    if (!p) return;
    char* raw = reinterpret_cast<char*>(p) - 64;
    const size_t bytes = *reinterpret_cast<size_t*>(raw);
    {
      std::lock_guard<std::mutex> lock(mu_);
      if (cached_ + bytes <= cache_limit()) {
        free_[bytes].push_back(raw);
        cached_ += bytes;
        return;
      }
    }
    note_allocation(-static_cast<int64_t>(bytes));
    std::free(raw);
  }
  // Returns every cached block to the OS.
  void trim() {
    std::lock_guard<std::mutex> lock(mu_);
    for (auto& [bytes, blocks] : free_) {
      for (char* raw : blocks) {
        note_allocation(-static_cast<int64_t>(bytes));
        std::free(raw);
      }
      blocks.clear();
    }
    cached_ = 0;
  }
  void zero(float* p, size_t n) override {
    parallel_for(n, 1 << 16, [&](size_t a, size_t b) { std::memset(p + a, 0, (b - a) * sizeof(float)); });
  }
  void copy(float* dst, const float* src, size_t n) override {
    parallel_for(n, 1 << 16, [&](size_t a, size_t b) { std::memcpy(dst + a, src + a, (b - a) * sizeof(float)); });
  }
  void upload(float* dst, const float* host, size_t n) override { std::memcpy(dst, host, n * sizeof(float)); }
  void download(float* host, const float* src, size_t n) override { std::memcpy(host, src, n * sizeof(float)); }
  void axpy2d(float* dst, size_t ds, float alpha, const float* x, size_t xs, const float* y, size_t ys,
              size_t rows, size_t cols) override {
    parallel_for(rows, grain_rows(cols), [&](size_t r0, size_t r1) {
      for (size_t r = r0; r < r1; ++r) {
        float* o = dst + r * ds;
        const float* a = x + r * xs;
        if (y) {
          const float* c = y + r * ys;
          for (size_t j = 0; j < cols; ++j) o[j] = alpha * a[j] + c[j];
        } else if (alpha == 1.0f) {
          std::memcpy(o, a, cols * sizeof(float));
        } else {
          for (size_t j = 0; j < cols; ++j) o[j] = alpha * a[j];
        }
      }
    });
  }
  void acc2d(float* dst, size_t ds, float alpha, const float* x, size_t xs, size_t rows, size_t cols) override {
    parallel_for(rows, grain_rows(cols), [&](size_t r0, size_t r1) {
      for (size_t r = r0; r < r1; ++r) {
        float* o = dst + r * ds;
        const float* a = x + r * xs;
        for (size_t j = 0; j < cols; ++j) o[j] += alpha * a[j];
      }
    });
  }
  double dot2d(const float* a, size_t as, const float* b, size_t bs, size_t rows, size_t cols) override {
    // Serial on purpose: a fixed summation order keeps alpha's gradient bit-identical across runs and
    // thread counts, and this is O(w*d) per window step, negligible next to the GEMMs.
    double s = 0;
    for (size_t r = 0; r < rows; ++r) {
      const float* x = a + r * as;
      const float* y = b + r * bs;
      double row = 0;
      for (size_t j = 0; j < cols; ++j) row += static_cast<double>(x[j]) * y[j];
      s += row;
    }
    return s;
  }
  bool all_finite(const float* x, size_t n) override {
    for (size_t i = 0; i < n; ++i)
      if (!std::isfinite(x[i])) return false;
    return true;
  }

  void linear_forward(const float* x, const float* W, const float* b, float* y, int n, int in, int out) override {
    cpu::linear_forward(x, W, b, y, n, in, out);
  }
  // The residual goes into the same store as the product where the few-rows kernel applies (the
  // decoder's rows); elsewhere the interface's product-then-add.
  void linear_forward_res(const float* x, const float* W, const float* b, const float* res, float* y, int n, int in,
                          int out) override {
    if (cpu::linear_rows_fits(n, in, out)) cpu::linear_rows(x, W, b, res, y, n, in, out);
    else Backend::linear_forward_res(x, W, b, res, y, n, in, out);
  }
  void linear_backward(const float* x, const float* W, const float* dy, float* dx, float* dW, float* db, int n,
                       int in, int out) override {
    cpu::linear_backward(x, W, dy, dx, dW, db, n, in, out);
  }
  void layernorm_forward(const float* x, const float* w, const float* b, float* y, float* mean, float* rstd, int n,
                         int d) override {
    cpu::layernorm_forward(x, w, b, y, mean, rstd, n, d);
  }
  void layernorm_backward(const float* x, const float* w, const float* mean, const float* rstd, const float* dy,
                          float* dx, float* dw, float* db, int n, int d, bool dy_half) override {
    if (dy_half) throw Error("cpu layernorm_backward: a bf16 dy is not supported");
    cpu::layernorm_backward(x, w, mean, rstd, dy, dx, dw, db, n, d);
  }
  // RT_CPU_LN_BACK_GLUE=1: the recurrence's backward takes the path of a backend whose ln_1 scatters its input
  // gradient (here by the glue's batch after all, no faster), so that the CPU's tests check that path's plumbing
  // in layer/ against the plain one, bit for bit (test/layer-scatter.test.ts).
  bool block_ln_back_glue(const BlockShape&) const override {
    static const bool on = rt::env_switch("RT_CPU_LN_BACK_GLUE", false);
    return on;
  }
  void layernorm_backward_scatter(const float* x, const float* w, const float* mean, const float* rstd,
                                  const float* dy, const float* dres, const BackScatter& sc, int B, int d,
                                  bool dy_half, LnParts parts) override {
    layernorm_backward_scatter_by_glue(*this, x, w, mean, rstd, dy, dres, sc, B, d, dy_half, parts);
  }
  // RT_CPU_LN_PARTS=1 likewise for the LayerNorms' dw, db left per application (Backend's default: one row of
  // partial sums each, their whole sums), added up by layernorm_parts_finish.
  bool block_ln_parts(const BlockShape&) const override {
    static const bool on = rt::env_switch("RT_CPU_LN_PARTS", false);
    return on;
  }
  void attention_forward(const float* qkv, float* probs, float* out, int B, int n, int d, int H, float p,
                         uint64_t seed, uint64_t stream, bool qkv_half) override {
    if (qkv_half) throw Error("cpu attention_forward: a bf16 qkv is not supported");
    cpu::attention_forward(qkv, probs, out, B, n, d, H, p, seed, stream);
  }
  void attention_backward(const float* qkv, const float* probs, const float* dout, float* dqkv, int B, int n, int d,
                          int H, float p, uint64_t seed, uint64_t stream, bool qkv_half, bool dout_half) override {
    if (qkv_half || dout_half) throw Error("cpu attention_backward: bf16 qkv or dout is not supported");
    cpu::attention_backward(qkv, probs, dout, dqkv, B, n, d, H, p, seed, stream);
  }
  void attention_cached(const float* qkv, int cap, int B, int t0, int c, int d, int H, float* out) override {
    cpu::attention_cached(qkv, cap, B, t0, c, d, H, out);
  }
  void attention_cached_rows(const float* qkv, int cap, const int* slot, const int* t, int S, int d, int H,
                             float* out) override {
    cpu::attention_cached_rows(qkv, cap, slot, t, S, d, H, out);
  }
  void activation_forward(bool gelu, const float* x, float* y, size_t n, bool x_half) override {
    if (x_half) throw Error("cpu activation_forward: a bf16 input is not supported");
    gelu ? cpu::gelu_forward(x, y, n) : cpu::relu_forward(x, y, n);
  }
  void activation_backward(bool gelu, const float* x, const float* dy, float* dx, size_t n, bool x_half,
                           bool dy_half) override {
    if (x_half || dy_half) throw Error("cpu activation_backward: a bf16 input is not supported");
    gelu ? cpu::gelu_backward(x, dy, dx, n) : cpu::relu_backward(x, dy, dx, n);
  }
  void dropout_forward(const float* x, float* y, size_t n, float p, uint64_t seed, uint64_t stream) override {
    cpu::dropout_forward(x, y, n, p, seed, stream);
  }
  void dropout_backward(const float* dy, float* dx, size_t n, float p, uint64_t seed, uint64_t stream) override {
    cpu::dropout_backward(dy, dx, n, p, seed, stream);
  }
  void embedding_forward(const int32_t* tokens, const float* wte, const float* wpe, float* out, int B, int N, int d,
                         int V, float p, uint64_t seed, uint64_t stream) override {
    cpu::embedding_forward(tokens, wte, wpe, out, B, N, d, V, p, seed, stream);
  }
  void embedding_backward(const int32_t* tokens, const float* dout, float* dwte, float* dwpe, int B, int N, int d,
                          int, float p, uint64_t seed, uint64_t stream) override {
    cpu::embedding_backward(tokens, dout, dwte, dwpe, B, N, d, p, seed, stream);
  }
  std::function<XentResult()> head_xent(const float* Y, const float* lnw, const float* lnb, const float* W,
                                        const int32_t* targets, int B, int N, int d, int V, int P, int ignore_index,
                                        float* dY, float* dlnw, float* dlnb, float* dW, bool) override {
    const XentResult r = cpu::head_xent(Y, lnw, lnb, W, targets, B, N, d, V, P, ignore_index, dY, dlnw, dlnb, dW);
    return [r] { return r; };
  }
  void head_logits(const float* Y, const float* lnw, const float* lnb, const float* W, int B, int N, int d, int V, int P,
                   float* logits, bool) override {
    cpu::head_logits(Y, lnw, lnb, W, B, N, d, V, P, logits);
  }
  std::function<AdamWResult()> adamw_step(const std::vector<AdamWTensor>& tensors, AdamWHyper h, double max_norm,
                                          int32_t* count) override {
    AdamWResult r;
    double ss = 0;
    for (const AdamWTensor& t : tensors) ss += cpu::sum_squares(t.grad, t.n);
    r.norm = std::sqrt(ss);
    r.skipped = !std::isfinite(r.norm);
    if (!r.skipped) {
      h.step = adamw_next_step(*count);
      if (max_norm > 0 && r.norm > max_norm) h.grad_scale = static_cast<float>(max_norm / (r.norm + 1e-6));
      for (const AdamWTensor& t : tensors) cpu::adamw_update(t.param, t.grad, t.m, t.v, t.n, h, t.decay);
      *count = static_cast<int32_t>(h.step);
    }
    return [r] { return r; };
  }


 private:
  static size_t grain_rows(size_t cols) { return cols ? (1 << 15) / cols + 1 : 1; }
  static size_t size_class(size_t bytes) {
    if (bytes <= 4096) return (bytes + 63) / 64 * 64;
    size_t top = size_t(1) << (63 - __builtin_clzll(bytes));  // highest power of two <= bytes
    size_t step = top / 8;
    return (bytes + step - 1) / step * step;
  }
  static size_t cache_limit() {
    static const size_t limit = [] {
      const char* e = std::getenv("RT_CPU_CACHE_MB");
      long mb = e ? std::atol(e) : 2048;
      return static_cast<size_t>(mb < 0 ? 0 : mb) << 20;
    }();
    return limit;
  }
  std::mutex mu_;
  std::unordered_map<size_t, std::vector<char*>> free_;
  size_t cached_ = 0;
};

}  // namespace

Backend& cpu_backend() {
  static CpuBackend backend;
  return backend;
}

}  // namespace rt
