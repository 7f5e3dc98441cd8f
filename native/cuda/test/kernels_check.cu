// Standalone check of the CUDA kernels against the CPU kernels (no Node): every kernel of
// cuda/kernels.cuh on random inputs, odd shapes included, in float32 and bf16, plus the dropout mask bit
// for bit; then one JSON line of timings (GEMM TFLOP/s on the layer's shapes, attention, layernorm), and the
// weight gradients of one step (weight_grad.cu against RT_CUDA_DW=0's path: a line per product, one JSON line).
// Exit status 0 when every check passes. Built by bench/cuda/run.sh (nvcc, static cudart).
//   kernels_check [--no-bench | --weight-grad]   (--weight-grad: only weight_grad.cu's checks and timing)
//
// Error metric: max |gpu - cpu| / max |cpu| over the tensor (error relative to the tensor's scale).
// Limits: float32 paths 2e-5 (summation order only), bf16 products 1e-2 (8-bit mantissas).
#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <execinfo.h>
#include <unistd.h>

#include <algorithm>
#include <csignal>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "core/env.h"
#include "core/error.h"
#include "cuda/attention_mma.cuh"
#include "cpu/kernels.h"
#include "cuda/common.cuh"
#include "cuda/kernels.cuh"
#include "cuda/matmul_sm90.cuh"
#include "cuda/matmul_tma_sm90.cuh"
#include "cuda/twin.cuh"
#include "cuda/weight_grad_sm90.cuh"
#ifndef RT_CUDA
#define RT_CUDA  // layer/backend.h declares cuda_backend() in CUDA builds only
#endif
#include "layer/backend.h"

using std::vector;
typedef vector<float> VF;

static int g_failed = 0, g_passed = 0;
static double g_worst_f32 = 0, g_worst_bf16 = 0;

static void expect_le(double v, double limit, const std::string& what) {
  if (v <= limit && !std::isnan(v)) {
    ++g_passed;
  } else {
    ++g_failed;
    std::printf("FAIL %s: %.3g (limit %.3g)\n", what.c_str(), v, limit);
  }
}

static VF randv(size_t n, uint32_t seed, float lo = -1.0f, float hi = 1.0f) {
  std::mt19937 g(seed);
  std::uniform_real_distribution<float> u(lo, hi);
  VF v(n);
  for (auto& x : v) x = u(g);
  return v;
}

static double rel(const VF& got, const VF& want) {
  double m = 0, s = 1e-20;
  for (size_t i = 0; i < want.size(); ++i) {
    const double d = std::fabs(static_cast<double>(got[i]) - want[i]);
    if (std::isnan(d)) return NAN;
    m = std::max(m, d);
    s = std::max(s, std::fabs(static_cast<double>(want[i])));
  }
  return m / s;
}

static void check(const VF& got, const VF& want, bool bf16, const std::string& what, double bf16_limit = 1e-2) {
  const double e = rel(got, want);
  (bf16 ? g_worst_bf16 : g_worst_f32) = std::max(bf16 ? g_worst_bf16 : g_worst_f32, std::isnan(e) ? 1e9 : e);
  expect_le(e, bf16 ? bf16_limit : 2e-5, what + (bf16 ? " [bf16]" : " [f32]"));
}

// Device buffer filled from / read back to host vectors; poisoned with NaN when made empty, so that an
// element a kernel should have written but did not shows up as NaN. Each fill waits for the device: a
// cudaMemcpy from pageable memory may return before its DMA lands, and the kernels run on the backend's
// non-blocking stream, which does not wait for it (a late NaN fill once overwrote a GEMM's output here).
struct Dev {
  float* p = nullptr;
  size_t n = 0;
  explicit Dev(size_t n_) : n(n_) {
    RT_CU(cudaMalloc(&p, std::max<size_t>(n, 1) * 4));
    VF nan(n, NAN);
    if (n) RT_CU(cudaMemcpy(p, nan.data(), n * 4, cudaMemcpyHostToDevice));
    RT_CU(cudaDeviceSynchronize());
  }
  explicit Dev(const VF& v) : Dev(v.size()) {
    if (n) RT_CU(cudaMemcpy(p, v.data(), n * 4, cudaMemcpyHostToDevice));
    RT_CU(cudaDeviceSynchronize());
  }
  ~Dev() { cudaFree(p); }
  Dev(const Dev&) = delete;  // owns p: a copy would free it twice
  Dev& operator=(const Dev&) = delete;
  VF get() const {
    RT_CU(cudaStreamSynchronize(rt::cuda::stream()));
    VF v(n);
    if (n) RT_CU(cudaMemcpy(v.data(), p, n * 4, cudaMemcpyDeviceToHost));
    return v;
  }
};

// A bf16 device buffer, poisoned (NaN bits) when made, as Dev.
struct DevBf {
  __nv_bfloat16* p = nullptr;
  size_t n = 0;
  explicit DevBf(size_t n_) : n(n_) {
    RT_CU(cudaMalloc(&p, std::max<size_t>(n, 1) * 2));
    RT_CU(cudaMemset(p, 0xff, std::max<size_t>(n, 1) * 2));  // NaN bits: an unwritten element fails
    RT_CU(cudaDeviceSynchronize());  // (as Dev: the memset runs on the legacy stream)
  }
  ~DevBf() { cudaFree(p); }
  DevBf(const DevBf&) = delete;
  DevBf& operator=(const DevBf&) = delete;
  std::vector<uint16_t> get() const {
    RT_CU(cudaStreamSynchronize(rt::cuda::stream()));
    std::vector<uint16_t> v(n);
    RT_CU(cudaMemcpy(v.data(), p, n * 2, cudaMemcpyDeviceToHost));
    return v;
  }
};

static std::string shape(int a, int b, int c) {
  return std::to_string(a) + "x" + std::to_string(b) + "x" + std::to_string(c);
}

struct KernelName {
  rt::cuda::GemmKernel k;
  const char* name;
  bool tma = true;  // Wgmma: matmul_tma_sm90.cu's kernel, else matmul_sm90.cu's cp.async ones
};
static void use(const KernelName& kn) {
  rt::cuda::set_gemm_kernel(kn.k);
  rt::cuda::set_tma_gemm(kn.tma);
}
static const KernelName kKernels[] = {{rt::cuda::GemmKernel::MmaBig, "mma128"},
                                      {rt::cuda::GemmKernel::MmaSmall, "mma64"},
                                      {rt::cuda::GemmKernel::MmaBig2, "mma128s2"},
                                      {rt::cuda::GemmKernel::MmaSmall2, "mma64s2"},
                                      {rt::cuda::GemmKernel::WmmaBig, "wmma128"},
                                      {rt::cuda::GemmKernel::WmmaSmall, "wmma64"},
                                      {rt::cuda::GemmKernel::Wgmma, "wgmma"},
                                      {rt::cuda::GemmKernel::Wgmma, "wgmma-cpasync", false}};

static void check_gemm() {
  struct Case { bool ta, tb; int M, N, K; float beta; };
  const Case cases[] = {
      {false, true, 1, 1, 1, 0}, {false, true, 33, 17, 5, 0}, {false, true, 130, 290, 96, 0},
      {false, false, 64, 96, 288, 0}, {false, false, 7, 13, 3, 1}, {true, false, 288, 96, 4096, 1},
      {true, false, 37, 19, 1003, 1}, {true, false, 1152, 384, 2048, 1}, {false, true, 2048, 1152, 384, 0},
      {false, false, 257, 129, 130, 0.5f},
      // Edges of the wgmma kernel's 128x128x64 tiles with every operand 16-byte loadable (its path).
      {false, false, 200, 132, 100, 0}, {false, true, 300, 260, 36, 0.5f}, {true, false, 132, 100, 1000, 1},
      {true, false, 4, 8, 4, 0}, {false, true, 1000, 4, 68, 0},
      // The wide Hopper kernel (N >= 384, no split: 128x192 tiles): tails in M, N and K, each orientation.
      {false, true, 300, 400, 100, 0.5f}, {false, false, 260, 777, 136, 0}, {true, false, 200, 384, 72, 1},
  };
  for (const KernelName& kn : kKernels)
  for (const Case& c : cases)
    for (bool bf16 : {false, true}) {
      if (!bf16 && kn.k != rt::cuda::GemmKernel::MmaBig) continue;  // one float32 kernel
      use(kn);
      const int lda = c.ta ? c.M : c.K, ldb = c.tb ? c.K : c.N;
      VF A = randv(static_cast<size_t>(c.ta ? c.K : c.M) * lda, 1), B = randv(static_cast<size_t>(c.tb ? c.N : c.K) * ldb, 2);
      VF C = randv(static_cast<size_t>(c.M) * c.N, 3), want = C;
      rt::cpu::gemm(c.ta, c.tb, c.M, c.N, c.K, 0.7f, A.data(), lda, B.data(), ldb, c.beta, want.data(), c.N);
      Dev dA(A), dB(B), dC(c.beta != 0 ? C : VF(C.size(), NAN));
      rt::cuda::gemm(bf16, c.ta, c.tb, c.M, c.N, c.K, 0.7f, dA.p, lda, dB.p, ldb, c.beta, dC.p, c.N);
      check(dC.get(), want, bf16, std::string("gemm ") + kn.name + " " + (c.ta ? "T" : "N") + (c.tb ? "T " : "N ") +
                                      shape(c.M, c.N, c.K));
    }
  use({rt::cuda::GemmKernel::Auto, "auto"});
  // Auto between half a wave and a wave of 128x128 tiles (the char config's first and last windows), short and
  // long reductions, bf16: with RT_CUDA_WGMMA_HALF_WAVE on (wgmma_half_wave) on the TMA kernel, unsplit (one
  // launch of it), else where the rule sends them.
  {
    const bool half_wave = rt::cuda::limits().cc == 90 && rt::cuda::wgmma_half_wave();
    for (const Case& c : {Case{false, true, 4096, 384, 384, 0}, Case{false, false, 4096, 384, 1536, 0.5f}}) {
      const int lda = c.ta ? c.M : c.K, ldb = c.tb ? c.K : c.N;
      VF A = randv(static_cast<size_t>(c.M) * lda, 5), B = randv(static_cast<size_t>(c.tb ? c.N : c.K) * ldb, 6);
      VF C = randv(static_cast<size_t>(c.M) * c.N, 7), want = C;
      rt::cpu::gemm(c.ta, c.tb, c.M, c.N, c.K, 0.7f, A.data(), lda, B.data(), ldb, c.beta, want.data(), c.N);
      Dev dA(A), dB(B), dC(c.beta != 0 ? C : VF(C.size(), NAN));
      const long launched = rt::cuda::tma_launches();
      rt::cuda::gemm(true, c.ta, c.tb, c.M, c.N, c.K, 0.7f, dA.p, lda, dB.p, ldb, c.beta, dC.p, c.N);
      const std::string what = std::string("gemm auto ") + (c.tb ? "NT " : "NN ") + shape(c.M, c.N, c.K);
      check(dC.get(), want, true, what);
      if (half_wave)
        expect_le(rt::cuda::tma_launches() - launched == 1 ? 0 : 1, 0, what + " on the TMA kernel (RT_CUDA_WGMMA_HALF_WAVE)");
    }
  }
  // Operands at odd offsets and odd leading dimensions: the element-wise (non-16-byte) load paths.
  for (const KernelName& kn : kKernels) {
    use(kn);
    const int M = 70, N = 45, K = 67;
    VF A = randv(1 + static_cast<size_t>(M) * K, 51), B = randv(1 + static_cast<size_t>(N) * K, 52);
    VF want(static_cast<size_t>(M) * N);
    rt::cpu::gemm(false, true, M, N, K, 1.0f, A.data() + 1, K, B.data() + 1, K, 0.0f, want.data(), N);
    Dev dA(A), dB(B), dC(want.size());
    rt::cuda::gemm(true, false, true, M, N, K, 1.0f, dA.p + 1, K, dB.p + 1, K, 0.0f, dC.p, N);
    check(dC.get(), want, true, std::string("gemm ") + kn.name + " NT unaligned " + shape(M, N, K));
  }
  use({rt::cuda::GemmKernel::Auto, "auto"});
  // A residual added in the epilogue (C = alpha AB + bias + res): separate and in place, with and without
  // split-K, on every bf16 kernel and in float32.
  for (const KernelName& kn : kKernels)
    for (bool bf16 : {false, true}) {
      if (!bf16 && kn.k != rt::cuda::GemmKernel::MmaBig) continue;
      use(kn);
      struct RC { bool ta; int M, N, K; bool in_place; };
      for (const RC& c : {RC{false, 130, 290, 96, false}, RC{false, 77, 64, 40, true}, RC{true, 288, 96, 4096, false},
                          RC{false, 4096, 384, 1536, false}}) {
        const int lda = c.ta ? c.M : c.K, ldb = c.N;
        VF A = randv(static_cast<size_t>(c.ta ? c.K : c.M) * lda, 61), B = randv(static_cast<size_t>(c.K) * ldb, 62);
        VF bias = randv(c.N, 63), R = randv(static_cast<size_t>(c.M) * c.N, 64), want = R;
        rt::cpu::gemm(c.ta, false, c.M, c.N, c.K, 0.5f, A.data(), lda, B.data(), ldb, 1.0f, want.data(), c.N);
        for (int r = 0; r < c.M; ++r)
          for (int j = 0; j < c.N; ++j) want[static_cast<size_t>(r) * c.N + j] += bias[j];
        Dev dA(A), dB(B), db(bias), dR(R), dC(VF(R.size(), NAN));
        float* out = c.in_place ? dR.p : dC.p;
        rt::cuda::gemm(bf16, c.ta, false, c.M, c.N, c.K, 0.5f, dA.p, lda, dB.p, ldb, 0.0f, out, c.N, db.p, nullptr, dR.p);
        check(c.in_place ? dR.get() : dC.get(), want, bf16, std::string("gemm+res ") + kn.name + (c.ta ? " TN " : " NN ") +
                                                           shape(c.M, c.N, c.K) + (c.in_place ? " in place" : ""));
      }
    }
  use({rt::cuda::GemmKernel::Auto, "auto"});
  // Batched over (batch, head) with two-level strides, as the attention's long path uses it.
  for (bool bf16 : {false, true}) {
    const int Bb = 3, H = 2, n = 40, hd = 8, d = H * hd, ld = 3 * d;
    VF qkv = randv(static_cast<size_t>(Bb) * n * ld, 4);
    VF want(static_cast<size_t>(Bb) * H * n * n);
    for (int b = 0; b < Bb; ++b)
      for (int h = 0; h < H; ++h)
        rt::cpu::gemm(false, true, n, n, hd, 1.0f, qkv.data() + b * n * ld + h * hd, ld, qkv.data() + b * n * ld + d + h * hd,
                      ld, 0.0f, want.data() + (b * H + h) * n * n, n);
    Dev dq(qkv), dout(want.size());
    rt::cuda::Batch bt;
    bt.count = Bb * H;
    bt.inner = H;
    bt.a = {static_cast<long long>(n) * ld, hd};
    bt.b = bt.a;
    bt.c = {static_cast<long long>(H) * n * n, static_cast<long long>(n) * n};
    rt::cuda::gemm(bf16, false, true, n, n, hd, 1.0f, dq.p, ld, dq.p + d, ld, 0.0f, dout.p, n, nullptr, &bt);
    check(dout.get(), want, bf16, "gemm batched QK^T");
  }
}

static void check_linear() {
  for (bool bf16 : {false, true})
    for (int n : {1, 37, 512}) {
      const int in = 24, out = 40;
      VF x = randv(static_cast<size_t>(n) * in, 5), W = randv(static_cast<size_t>(out) * in, 6), b = randv(out, 7);
      VF dy = randv(static_cast<size_t>(n) * out, 8), dW0 = randv(W.size(), 9), db0 = randv(out, 10);
      VF y(static_cast<size_t>(n) * out), dx(x.size()), dW = dW0, db = db0;
      rt::cpu::linear_forward(x.data(), W.data(), b.data(), y.data(), n, in, out);
      rt::cpu::linear_backward(x.data(), W.data(), dy.data(), dx.data(), dW.data(), db.data(), n, in, out);
      Dev gx(x), gW(W), gb(b), gdy(dy), gy(y.size()), gdx(dx.size()), gdW(dW0), gdb(db0);
      rt::cuda::linear_forward(bf16, gx.p, gW.p, gb.p, gy.p, n, in, out);
      rt::cuda::linear_backward(bf16, gx.p, gW.p, gdy.p, gdx.p, gdW.p, gdb.p, n, in, out);
      const std::string s = " n=" + std::to_string(n);
      check(gy.get(), y, bf16, "linear y" + s);
      check(gdx.get(), dx, bf16, "linear dx" + s);
      check(gdW.get(), dW, bf16, "linear dW" + s);
      check(gdb.get(), db, false, "linear db" + s);
      // The residual in the epilogue: y = x W^T + b + res (fresh output buffer, NaN-filled).
      VF r = randv(y.size(), 11), yr(y.size());
      for (size_t i = 0; i < y.size(); ++i) yr[i] = y[i] + r[i];
      Dev gres(r), gyr(y.size());
      rt::cuda::linear_forward(bf16, gx.p, gW.p, gb.p, gyr.p, n, in, out, gres.p);
      check(gyr.get(), yr, bf16, "linear y+res" + s);
      // Weight gradients alone (dx null), as the recurrence's deferred products call it.
      Dev gdW2(dW0), gdb2(db0);
      rt::cuda::linear_backward(bf16, gx.p, gW.p, gdy.p, nullptr, gdW2.p, gdb2.p, n, in, out);
      check(gdW2.get(), dW, bf16, "linear dW (dx null)" + s);
      check(gdb2.get(), db, false, "linear db (dx null)" + s);
    }
}

// dW += dy^T x and db += column sums of dy through weight_grad.cu's kernel: the copy config's and the char
// config's product shapes, odd sizes (the element-wise load path, tails of every tile), rows that no chunk
// size divides, unaligned operands; dW and db accumulated into non-zero values, db left out too. The first
// cases go through linear_backward, whose rule must pick the kernel at those sizes; the rest call it directly.
static void check_weight_grad() {
  struct Case { int n, in, out; bool db, direct, unaligned; };
  const Case cases[] = {
      // linear_backward, rows past the rule's threshold (copy: ~51k rows at most; char: 8 max(in, out))
      {70001, 96, 288, true, false, false}, {70001, 96, 384, false, false, false},
      {70001, 384, 96, true, false, false}, {70001, 96, 96, true, false, false},
      {13001, 384, 1536, true, false, false}, {12400, 1536, 384, false, false, false},
      // direct
      {4003, 96, 288, true, true, false}, {4096, 96, 384, true, true, false}, {4000, 384, 96, false, true, false},
      {4000, 96, 96, true, true, false}, {3001, 384, 1152, true, true, false}, {2500, 384, 1536, true, true, false},
      {2500, 1536, 384, true, true, false}, {2000, 384, 384, false, true, false},
      {1001, 70, 100, true, true, false}, {777, 100, 70, false, true, false}, {1003, 100, 68, true, true, false},
      {33, 17, 200, true, true, false}, {5, 3, 7, true, true, false}, {1, 1, 1, true, true, false},
      {3000, 500, 200, true, true, false}, {3000, 96, 96, true, true, true}, {2001, 384, 96, true, true, true},
      // weight_grad_sm90.cu's tiles (192 x 192) cut by both sides, and its rows' tail
      {2999, 200, 328, true, true, false}, {4001, 392, 200, false, true, false}, {12345, 576, 1160, true, true, false},
  };
  // On a Hopper GPU the char config's shapes go to the wgmma kernel (so the cases above check it there).
  if (rt::cuda::limits().cc == 90) {
    Dev a(64), b(64);
    for (const int out : {1152, 384, 1536})
      expect_le(rt::cuda::weight_grad_sm90_takes(a.p, b.p, 139264, 384, out) ? 0 : 1, 0,
                "weight_grad_sm90 takes in=384 out=" + std::to_string(out));
    expect_le(rt::cuda::weight_grad_sm90_takes(a.p, b.p, 139264, 1536, 384) ? 0 : 1, 0,
              "weight_grad_sm90 takes in=1536 out=384");
    expect_le(rt::cuda::weight_grad_sm90_takes(a.p, b.p, 528000, 96, 288) ? 1 : 0, 0,
              "weight_grad_sm90 leaves d = 96 (copy) to weight_grad.cu");
  }
  for (const Case& c : cases) {
    const std::string s = " n=" + std::to_string(c.n) + " in=" + std::to_string(c.in) + " out=" + std::to_string(c.out) +
                          (c.db ? "" : " no db") + (c.direct ? "" : " (linear_backward)") + (c.unaligned ? " unaligned" : "");
    if (!c.direct)
      expect_le(rt::cuda::weight_grad_preferred(c.n, c.in, c.out) ? 0 : 1, 0, "weight_grad rule picks" + s);
    const int o = c.unaligned ? 1 : 0;  // operands one float off 16-byte alignment
    VF x = randv(o + static_cast<size_t>(c.n) * c.in, 71), dy = randv(o + static_cast<size_t>(c.n) * c.out, 72);
    VF dW0 = randv(static_cast<size_t>(c.out) * c.in, 73), db0 = randv(c.out, 74), dW = dW0, db = db0;
    rt::cpu::linear_backward(x.data() + o, x.data() + o, dy.data() + o, nullptr, dW.data(), c.db ? db.data() : nullptr,
                             c.n, c.in, c.out);
    Dev gx(x), gdy(dy), gdW(dW0), gdb(db0);
    if (c.direct)
      rt::cuda::linear_weight_grad(gx.p + o, gdy.p + o, gdW.p, c.db ? gdb.p : nullptr, c.n, c.in, c.out);
    else
      rt::cuda::linear_backward(true, gx.p + o, nullptr, gdy.p + o, nullptr, gdW.p, c.db ? gdb.p : nullptr, c.n, c.in,
                                c.out);
    const VF got = gdW.get();
    check(got, dW, true, "weight_grad dW" + s);
    if (c.db) check(gdb.get(), db, false, "weight_grad db" + s);
    // Same inputs, same bits.
    if (c.direct && c.n >= 1000) {
      Dev gdW2(dW0), gdb2(db0);
      rt::cuda::linear_weight_grad(gx.p + o, gdy.p + o, gdW2.p, c.db ? gdb2.p : nullptr, c.n, c.in, c.out);
      const VF again = gdW2.get();
      expect_le(std::memcmp(again.data(), got.data(), got.size() * 4) == 0 ? 0 : 1, 0, "weight_grad deterministic" + s);
    }
  }
  // RT_CUDA_DW=0's path (set_weight_grad(false)): linear_backward back on the GEMM at a size the rule takes.
  {
    const int n = 70001, in = 96, out = 288;
    VF x = randv(static_cast<size_t>(n) * in, 75), dy = randv(static_cast<size_t>(n) * out, 76);
    VF dW0 = randv(static_cast<size_t>(out) * in, 77), db0 = randv(out, 78), dW = dW0, db = db0;
    rt::cpu::linear_backward(x.data(), x.data(), dy.data(), nullptr, dW.data(), db.data(), n, in, out);
    rt::cuda::set_weight_grad(false);
    expect_le(rt::cuda::weight_grad_preferred(n, in, out) ? 1 : 0, 0, "weight_grad off: the rule declines");
    Dev gx(x), gdy(dy), gdW(dW0), gdb(db0);
    rt::cuda::linear_backward(true, gx.p, nullptr, gdy.p, nullptr, gdW.p, gdb.p, n, in, out);
    check(gdW.get(), dW, true, "linear_backward dW, weight_grad off");
    check(gdb.get(), db, false, "linear_backward db, weight_grad off");
    rt::cuda::set_weight_grad(true);
  }
}

static void check_layernorm() {
  for (int d : {5, 96, 384})
    for (bool bias : {false, true}) {
      const int n = 300;
      VF x = randv(static_cast<size_t>(n) * d, 11, -2, 3), w = randv(d, 12), b = randv(d, 13), dy = randv(x.size(), 14);
      VF dx0 = randv(x.size(), 15), dw0 = randv(d, 16), db0 = randv(d, 17);
      VF y(x.size()), mean(n), rstd(n), dx = dx0, dw = dw0, db = db0;
      rt::cpu::layernorm_forward(x.data(), w.data(), bias ? b.data() : nullptr, y.data(), mean.data(), rstd.data(), n, d);
      rt::cpu::layernorm_backward(x.data(), w.data(), mean.data(), rstd.data(), dy.data(), dx.data(), dw.data(),
                                  bias ? db.data() : nullptr, n, d);
      Dev gx(x), gw(w), gb(b), gy(y.size()), gm(n), gr(n), gdy(dy), gdx(dx0), gdw(dw0), gdb(db0);
      rt::cuda::layernorm_forward(gx.p, gw.p, bias ? gb.p : nullptr, gy.p, gm.p, gr.p, n, d);
      rt::cuda::layernorm_backward(gx.p, gw.p, gm.p, gr.p, gdy.p, gdx.p, gdw.p, bias ? gdb.p : nullptr, n, d);
      const std::string s = " d=" + std::to_string(d) + (bias ? " bias" : "");
      check(gy.get(), y, false, "layernorm y" + s);
      check(gm.get(), mean, false, "layernorm mean" + s);
      check(gr.get(), rstd, false, "layernorm rstd" + s);
      check(gdx.get(), dx, false, "layernorm dx" + s);
      check(gdw.get(), dw, false, "layernorm dw" + s);
      if (bias) check(gdb.get(), db, false, "layernorm db" + s);
      // dx = dres + ... into a fresh (NaN-filled) buffer: the same numbers as accumulating into dres.
      Dev gdres(dx0), gdx2(dx0.size()), gdw2(dw0), gdb2(db0);
      rt::cuda::layernorm_backward_res(gx.p, gw.p, gm.p, gr.p, gdy.p, gdres.p, gdx2.p, gdw2.p, bias ? gdb2.p : nullptr,
                                       n, d);
      check(gdx2.get(), dx, false, "layernorm_backward_res dx" + s);
      check(gdw2.get(), dw, false, "layernorm_backward_res dw" + s);
      if (bias) check(gdb2.get(), db, false, "layernorm_backward_res db" + s);
      check(gdres.get(), dx0, false, "layernorm_backward_res leaves dres" + s);
    }
}

static void check_attention() {
  struct Case { int B, n, d, H; float p; };
  // n <= 256 runs fused, n = 300 through the batched products; in bf16, n a multiple of 16 up to 64 with a
  // head of 16, 32 or 64 takes the tensor-core kernels (attention_mma.cuh; n <= 32 two heads a block).
  const Case cases[] = {{2, 1, 8, 2, 0},     {2, 5, 12, 3, 0},       {3, 32, 96, 6, 0},   {2, 64, 384, 6, 0},
                        {2, 33, 16, 2, 0.2f}, {2, 64, 96, 6, 0.2f},  {2, 48, 64, 2, 0.1f}, {1, 16, 32, 1, 0},
                        {1, 300, 32, 2, 0},   {2, 300, 32, 4, 0.1f},
                        // n <= 32 with an even B H: two heads a block (PAIR), hd 64 with dropout and hd 32.
                        {2, 32, 128, 2, 0.2f}, {4, 16, 64, 2, 0}};
  for (const Case& c : cases)
    for (bool bf16 : {false, true}) {
      const size_t nq = static_cast<size_t>(c.B) * c.n * 3 * c.d, no = static_cast<size_t>(c.B) * c.n * c.d;
      const size_t np = static_cast<size_t>(c.B) * c.H * c.n * c.n;
      VF qkv = randv(nq, 21, -2, 2), dout = randv(no, 22);
      VF probs(np), out(no), dqkv(nq);
      rt::cpu::attention_forward(qkv.data(), probs.data(), out.data(), c.B, c.n, c.d, c.H, c.p, 7, 9);
      rt::cpu::attention_backward(qkv.data(), probs.data(), dout.data(), dqkv.data(), c.B, c.n, c.d, c.H, c.p, 7, 9);
      Dev gq(qkv), gp(np), go(no), gdo(dout), gdq(nq);
      rt::cuda::attention_forward(bf16, gq.p, gp.p, go.p, c.B, c.n, c.d, c.H, c.p, 7, 9);
      rt::cuda::attention_backward(bf16, gq.p, gp.p, gdo.p, gdq.p, c.B, c.n, c.d, c.H, c.p, 7, 9);
      const bool lowp = bf16 && (c.n > 256 || rt::cuda::attn::mma_fits(c.n, c.d / c.H));  // the tensor-core paths
      const std::string s = " B=" + std::to_string(c.B) + " n=" + std::to_string(c.n) + " d=" + std::to_string(c.d) +
                            " H=" + std::to_string(c.H) + (c.p > 0 ? " dropout" : "");
      // bf16 scores: an error of 2^-9 |s| in an exponent moves a probability by that fraction.
      check(gp.get(), probs, lowp, "attention probs" + s, 3e-2);
      check(go.get(), out, lowp, "attention out" + s, 3e-2);
      check(gdq.get(), dqkv, lowp, "attention dqkv" + s, 3e-2);
    }
}

static void check_activation_dropout() {
  const size_t n = 100003;
  VF x = randv(n, 31, -6, 6), dy = randv(n, 32);
  x[0] = -INFINITY;
  x[1] = 40.0f;
  for (bool gelu : {true, false}) {
    VF y(n), dx(n);
    gelu ? rt::cpu::gelu_forward(x.data(), y.data(), n) : rt::cpu::relu_forward(x.data(), y.data(), n);
    gelu ? rt::cpu::gelu_backward(x.data(), dy.data(), dx.data(), n) : rt::cpu::relu_backward(x.data(), dy.data(), dx.data(), n);
    Dev gx(x), gdy(dy), gy(n), gdx(n);
    gelu ? rt::cuda::gelu_forward(gx.p, gy.p, n) : rt::cuda::relu_forward(gx.p, gy.p, n);
    gelu ? rt::cuda::gelu_backward(gx.p, gdy.p, gdx.p, n) : rt::cuda::relu_backward(gx.p, gdy.p, gdx.p, n);
    check(gy.get(), y, false, gelu ? "gelu y" : "relu y");
    check(gdx.get(), dx, false, gelu ? "gelu dx" : "relu dx");
    if (!gelu) continue;
    // The bf16 mode's GELU (phi_fast): Phi within 7.5e-8, so y within ~|x| 7.5e-8 and dx within a few 1e-7
    // (|x| <= 6, |dy| <= 1), whatever the sign; -inf and 40 as exactly.
    Dev fy(n), fdx(n);
    rt::cuda::gelu_forward(gx.p, fy.p, n, nullptr, true);
    rt::cuda::gelu_backward(gx.p, gdy.p, fdx.p, n, nullptr, true);
    const VF a = fy.get(), b = fdx.get();
    double ey = 0, edx = 0;
    for (size_t i = 0; i < n; ++i) {
      ey = std::max(ey, std::isnan(a[i]) ? 1e9 : std::fabs(static_cast<double>(a[i]) - y[i]));
      edx = std::max(edx, std::isnan(b[i]) ? 1e9 : std::fabs(static_cast<double>(b[i]) - dx[i]));
    }
    expect_le(ey, 1e-6, "gelu fast y: largest absolute error");
    expect_le(edx, 1e-6, "gelu fast dx: largest absolute error");
    expect_le(a[0] == 0.0f && a[1] == 40.0f ? 0 : 1, 0, "gelu fast y at -inf and 40");
  }
  for (float p : {0.0f, 0.1f, 0.5f}) {
    VF y(n), dx(n);
    rt::cpu::dropout_forward(x.data() + 2, y.data(), n - 2, p, 123, 456);
    rt::cpu::dropout_backward(dy.data(), dx.data(), n, p, 123, 457);
    Dev gx(VF(x.begin() + 2, x.end())), gdy(dy), gy(n - 2), gdx(n);
    rt::cuda::dropout_forward(gx.p, gy.p, n - 2, p, 123, 456);
    rt::cuda::dropout_backward(gdy.p, gdx.p, n, p, 123, 457);
    VF a = gy.get(), b = gdx.get();
    bool same = std::memcmp(a.data(), y.data(), (n - 2) * 4) == 0 && std::memcmp(b.data(), dx.data(), n * 4) == 0;
    expect_le(same ? 0 : 1, 0, "dropout bit-identical to the CPU, p=" + std::to_string(p));
  }
}

static void check_decode() {
  struct Case { int B, cap, t0, c, d, H; };
  const Case cases[] = {{2, 8, 0, 8, 8, 2}, {3, 64, 10, 1, 96, 6}, {1, 3000, 2500, 3, 32, 2}};
  for (const Case& c : cases) {
    const size_t nq = static_cast<size_t>(c.B) * c.cap * 3 * c.d, no = static_cast<size_t>(c.B) * c.c * c.d;
    VF qkv = randv(nq, 41, -2, 2), out(no);
    rt::cpu::attention_cached(qkv.data(), c.cap, c.B, c.t0, c.c, c.d, c.H, out.data());
    Dev gq(qkv), go(no);
    rt::cuda::attention_cached(gq.p, c.cap, c.B, c.t0, c.c, c.d, c.H, go.p);
    check(go.get(), out, false, "attention_cached cap=" + std::to_string(c.cap) + " t0=" + std::to_string(c.t0));
  }
}

// ---- timings ----

template <class F>
static double time_ms(F f, int reps = 20) {
  cudaStream_t s = rt::cuda::stream();
  for (int i = 0; i < 3; ++i) f();
  cudaEvent_t a, b;
  cudaEventCreate(&a);
  cudaEventCreate(&b);
  cudaEventRecord(a, s);
  for (int i = 0; i < reps; ++i) f();
  cudaEventRecord(b, s);
  cudaEventSynchronize(b);
  float ms = 0;
  cudaEventElapsedTime(&ms, a, b);
  cudaEventDestroy(a);
  cudaEventDestroy(b);
  return ms / reps;
}

static void bench() {
  std::string json = "{\"bench\":\"cuda_kernels\",\"unit\":\"gemm TFLOP/s, others us\"";
  // The layer's products for the char config (R = 256 * 32 tokens, d = 384) and the copy config
  // (R = 64 * 64, d = 96): forward (NT), dx (NN), dW (TN).
  struct G { const char* name; bool ta, tb; int M, N, K; };
  const G gs[] = {{"char_qkv_fwd", false, true, 8192, 1152, 384}, {"char_fc_fwd", false, true, 8192, 1536, 384},
                  {"char_proj2_fwd", false, true, 8192, 384, 1536}, {"char_fc_dx", false, false, 8192, 384, 1536},
                  {"char_fc_dW", true, false, 1536, 384, 8192}, {"copy_fc_fwd", false, true, 4096, 384, 96},
                  {"copy_fc_dW", true, false, 384, 96, 4096}, {"big_4096", false, true, 4096, 4096, 4096}};
  const KernelName variants[] = {{rt::cuda::GemmKernel::Auto, "auto"}, kKernels[0], kKernels[1], kKernels[2],
                                 kKernels[3], kKernels[4], kKernels[6], kKernels[7]};
  for (const G& g : gs) {
    const int lda = g.ta ? g.M : g.K, ldb = g.tb ? g.K : g.N;
    Dev A(randv(static_cast<size_t>(g.ta ? g.K : g.M) * lda, 1)), B(randv(static_cast<size_t>(g.tb ? g.N : g.K) * ldb, 2));
    Dev C(randv(static_cast<size_t>(g.M) * g.N, 3));
    for (const KernelName& kn : variants) {
      use(kn);
      const double ms = time_ms([&] { rt::cuda::gemm(true, g.ta, g.tb, g.M, g.N, g.K, 1.0f, A.p, lda, B.p, ldb, 0.0f, C.p, g.N); });
      char buf[160];
      std::snprintf(buf, sizeof buf, ",\"%s_%s\":%.1f", g.name, kn.name, 2.0 * g.M * g.N * g.K / ms / 1e9);
      json += buf;
    }
    use({rt::cuda::GemmKernel::Auto, "auto"});
    const double ms = time_ms([&] { rt::cuda::gemm(false, g.ta, g.tb, g.M, g.N, g.K, 1.0f, A.p, lda, B.p, ldb, 0.0f, C.p, g.N); });
    char buf[160];
    std::snprintf(buf, sizeof buf, ",\"%s_f32\":%.1f", g.name, 2.0 * g.M * g.N * g.K / ms / 1e9);
    json += buf;
  }
  struct A { const char* name; int B, n, d, H; };
  const A as[] = {{"attn_char", 256, 32, 384, 6}, {"attn_copy", 64, 64, 96, 6}};
  for (const A& a : as) {
    const size_t nq = static_cast<size_t>(a.B) * a.n * 3 * a.d, no = static_cast<size_t>(a.B) * a.n * a.d;
    Dev q(randv(nq, 5)), p(static_cast<size_t>(a.B) * a.H * a.n * a.n), o(no), dO(randv(no, 6)), dq(nq);
    const double f = time_ms([&] { rt::cuda::attention_forward(true, q.p, p.p, o.p, a.B, a.n, a.d, a.H, 0, 1, 2); });
    const double b = time_ms([&] { rt::cuda::attention_backward(true, q.p, p.p, dO.p, dq.p, a.B, a.n, a.d, a.H, 0, 1, 2); });
    char buf[160];
    std::snprintf(buf, sizeof buf, ",\"%s_fwd_us\":%.1f,\"%s_bwd_us\":%.1f", a.name, f * 1e3, a.name, b * 1e3);
    json += buf;
  }
  {
    const int n = 8192, d = 384;
    Dev x(randv(static_cast<size_t>(n) * d, 7)), w(randv(d, 8)), y(static_cast<size_t>(n) * d), m(n), r(n), dy(randv(static_cast<size_t>(n) * d, 9)),
        dx(static_cast<size_t>(n) * d), dw(d);
    const double f = time_ms([&] { rt::cuda::layernorm_forward(x.p, w.p, nullptr, y.p, m.p, r.p, n, d); });
    const double b = time_ms([&] { rt::cuda::layernorm_backward(x.p, w.p, m.p, r.p, dy.p, dx.p, dw.p, nullptr, n, d); });
    char buf[160];
    std::snprintf(buf, sizeof buf, ",\"ln_8192x384_fwd_us\":%.1f,\"ln_8192x384_bwd_us\":%.1f", f * 1e3, b * 1e3);
    json += buf;
  }
  std::printf("%s}\n", json.c_str());
}

// The weight gradients of one step's block_weight_grads (rows = every window's rows of a layer), with db:
// weight_grad.cu's kernel against RT_CUDA_DW=0's path (the GEMM, split over K, plus the column-sum
// kernels). GB/s counts the operands once: rows x (in + out) x 4 bytes, the floor's traffic.
__global__ void fill_uniform(float* p, size_t n, uint32_t seed) {
  for (size_t i = blockIdx.x * static_cast<size_t>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<size_t>(gridDim.x) * blockDim.x) {
    uint32_t h = static_cast<uint32_t>(i) * 0x9E3779B1u ^ static_cast<uint32_t>(i >> 32) ^ seed;
    h ^= h >> 16;
    h *= 0x7feb352du;
    h ^= h >> 15;
    h *= 0x846ca68bu;
    h ^= h >> 16;
    p[i] = static_cast<float>(h >> 8) * (2.0f / 16777216.0f) - 1.0f;
  }
}

static void bench_weight_grad() {
  struct Prod { int in, out; };
  struct Cfg { const char* name; int rows; Prod p[4]; };
  const Cfg cfgs[] = {{"copy", 528000, {{96, 288}, {96, 96}, {96, 384}, {384, 96}}},
                      {"char", 139000, {{384, 1152}, {384, 384}, {384, 1536}, {1536, 384}}}};
  std::string json = "{\"bench\":\"weight_grad\",\"unit\":\"us\"";
  for (const Cfg& c : cfgs) {
    int max_in = 0, max_out = 0;
    for (const Prod& p : c.p) max_in = std::max(max_in, p.in), max_out = std::max(max_out, p.out);
    Dev x(static_cast<size_t>(c.rows) * max_in), dy(static_cast<size_t>(c.rows) * max_out);
    Dev dW(randv(static_cast<size_t>(max_in) * max_out, 81)), db(randv(max_out, 82));
    fill_uniform<<<1024, 256, 0, rt::cuda::stream()>>>(x.p, x.n, 1);
    fill_uniform<<<1024, 256, 0, rt::cuda::stream()>>>(dy.p, dy.n, 2);
    DevBf xb(x.n), dyb(dy.n);  // the operands as a train step holds them (bf16 buffers)
    rt::cuda::to_bf16(x.p, xb.p, x.n);
    rt::cuda::to_bf16(dy.p, dyb.p, dy.n);
    RT_CU(cudaStreamSynchronize(rt::cuda::stream()));
    double tot_new = 0, tot_old = 0, tot_bytes = 0;
    for (const Prod& p : c.p) {
      auto run = [&] { rt::cuda::linear_backward(true, x.p, nullptr, dy.p, nullptr, dW.p, db.p, c.rows, p.in, p.out); };
      rt::cuda::set_weight_grad(true);
      const bool taken = rt::cuda::weight_grad_preferred(c.rows, p.in, p.out);
      const double t_new = time_ms(run, 10) * 1e3;
      // weight_grad.cu's mma.sync kernel where weight_grad_sm90.cu takes the shape (RT_CUDA_DW_WGMMA=0)
      const bool sm90 = rt::cuda::weight_grad_sm90_takes(x.p, dy.p, c.rows, p.in, p.out);
      rt::cuda::set_weight_grad_sm90(false);
      const double t_mma = sm90 ? time_ms(run, 10) * 1e3 : t_new;
      rt::cuda::set_weight_grad_sm90(true);
      rt::cuda::set_weight_grad(false);
      const double t_old = time_ms(run, 10) * 1e3;
      rt::cuda::set_weight_grad(true);
      if (sm90) {
        auto run_b = [&] {
          rt::cuda::linear_weight_grad(xb.p, true, dyb.p, true, dW.p, db.p, c.rows, p.in, p.out);
        };
        const double t_b = time_ms(run_b, 10) * 1e3;
        rt::cuda::set_weight_grad_sm90(false);
        const double t_bm = time_ms(run_b, 10) * 1e3;
        rt::cuda::set_weight_grad_sm90(true);
        const double tf = 2.0 * c.rows * p.in * p.out / 1e12;
        std::printf("weight_grad %s in %4d out %4d, float32 operands: wgmma %8.1f us %5.0f TFLOP/s | mma.sync %8.1f us "
                    "%5.0f TFLOP/s | %.2fx\n",
                    c.name, p.in, p.out, t_new, tf / t_new * 1e6, t_mma, tf / t_mma * 1e6, t_mma / t_new);
        std::printf("weight_grad %s in %4d out %4d, bf16 operands:    wgmma %8.1f us %5.0f TFLOP/s | mma.sync %8.1f us "
                    "%5.0f TFLOP/s | %.2fx\n",
                    c.name, p.in, p.out, t_b, tf / t_b * 1e6, t_bm, tf / t_bm * 1e6, t_bm / t_b);
      }
      const double bytes = static_cast<double>(c.rows) * (p.in + p.out) * 4;
      tot_new += t_new;
      tot_old += t_old;
      tot_bytes += bytes;
      std::printf("weight_grad %s rows %d in %4d out %4d (%.0f MB): %s %8.1f us %6.0f GB/s | RT_CUDA_DW=0 %8.1f us %6.0f GB/s | %.2fx\n",
                  c.name, c.rows, p.in, p.out, bytes / 1e6, taken ? "new" : "n/a", t_new, bytes / t_new / 1e3, t_old,
                  bytes / t_old / 1e3, t_old / t_new);
      char buf[200];
      std::snprintf(buf, sizeof buf, ",\"%s_%dx%d_new\":%.1f,\"%s_%dx%d_old\":%.1f", c.name, p.in, p.out, t_new, c.name,
                    p.in, p.out, t_old);
      json += buf;
    }
    std::printf("weight_grad %s total (%.2f GB): new %.1f us %.0f GB/s | RT_CUDA_DW=0 %.1f us %.0f GB/s | %.2fx\n", c.name,
                tot_bytes / 1e9, tot_new, tot_bytes / tot_new / 1e3, tot_old, tot_bytes / tot_old / 1e3, tot_old / tot_new);
    char buf[160];
    std::snprintf(buf, sizeof buf, ",\"%s_total_new\":%.1f,\"%s_total_old\":%.1f", c.name, tot_new, c.name, tot_old);
    json += buf;
  }
  std::printf("%s}\n", json.c_str());
}

// The recurrence's window glue on the CUDA backend (layer/backend.h): one axpy2d_batch of four ops (x2, y,
// acc and scale among them) plus a dot pair, in the float4 and the scalar path; then the dot pairs of many
// windows (more than one kernel block's worth of slots) summed by alpha_grad_parts, and dot2d.
static void check_glue() {
  rt::Backend& be = rt::cuda_backend(true);
  const size_t rows = 5, ds = 64;
  const VF x = randv(rows * ds, 61), y = randv(rows * ds, 62), x2 = randv(rows * ds, 63), d0 = randv(rows * ds, 64);
  const size_t dr = 200, dc = 70, dstr = 80, slots = 300, parts = static_cast<size_t>(be.dot_parts());
  const VF A = randv(dr * dstr + 2 * slots, 65), Bm = randv(dr * dstr + 2 * slots, 66);
  Dev gA(A), gB(Bm), gparts(2 * parts * slots);
  double* part = reinterpret_cast<double*>(gparts.p);
  auto dot_of = [&](size_t j) {
    return rt::DotPairOp{{{gA.p + j, dstr, gB.p + 2 * j, dstr, dr, dc}, {gA.p, dstr, gB.p + j, dstr, 3, 11}},
                         part + j * parts};
  };
  auto dot_want = [&](size_t j) {
    double s = 0;
    for (size_t r = 0; r < dr; ++r)
      for (size_t c = 0; c < dc; ++c) s += static_cast<double>(A[j + r * dstr + c]) * Bm[2 * j + r * dstr + c];
    for (size_t r = 0; r < 3; ++r)
      for (size_t c = 0; c < 11; ++c) s += static_cast<double>(A[r * dstr + c]) * Bm[j + r * dstr + c];
    return s;
  };
  const float alpha = 0.75f;
  Dev scale(VF{alpha});
  for (size_t cols : {size_t(12), size_t(13)}) {  // float4, scalar
    Dev gx(x), gy(y), gx2(x2), gd(d0);
    // Four disjoint column ranges of dst: acc + x2, y + x2, plain + x2, y alone.
    const rt::Axpy2dOp ops[4] = {
        {gd.p, ds, 1.0f, gx.p, ds, nullptr, 0, rows, cols, true, scale.p, gx2.p, ds},
        {gd.p + 16, ds, 1.0f, gx.p + 16, ds, gy.p + 16, ds, rows, cols, false, scale.p, gx2.p + 16, ds},
        {gd.p + 32, ds, 0.5f, gx.p + 32, ds, nullptr, 0, rows, cols, false, nullptr, gx2.p + 32, ds},
        {gd.p + 48, ds, 1.0f, gx.p + 48, ds, gy.p + 48, ds, rows, cols, false}};
    VF want = d0;
    for (size_t r = 0; r < rows; ++r)
      for (size_t c = 0; c < cols; ++c) {
        const size_t i = r * ds + c;
        want[i] = want[i] + alpha * x[i] + alpha * x2[i];
        want[i + 16] = alpha * x[i + 16] + y[i + 16] + alpha * x2[i + 16];
        want[i + 32] = 0.5f * x[i + 32] + 0.5f * x2[i + 32];
        want[i + 48] = x[i + 48] + y[i + 48];
      }
    const rt::DotPairOp dot = dot_of(0);
    be.axpy2d_batch(ops, 4, &dot);
    check(gd.get(), want, false, "glue axpy2d_batch x2 cols=" + std::to_string(cols));
  }
  for (size_t j = 1; j < slots; ++j) {
    const rt::DotPairOp dot = dot_of(j);
    be.axpy2d_batch(nullptr, 0, &dot);
  }
  double dalpha = 0;
  for (size_t j = 0; j < slots; ++j) dalpha += dot_want(j);
  for (float a : {0.5f, 1.5f}) {  // inside the clamp, outside (no gradient)
    Dev st(VF{a, std::min(a, 1.0f)}), grad(VF{0.25f});
    be.alpha_grad_parts(grad.p, st.p, part, static_cast<int>(slots));
    const double want = a <= 1.0f ? 0.25f + static_cast<float>(dalpha) : 0.25f;
    expect_le(std::fabs(grad.get()[0] - want) / std::fabs(want), 1e-6, "glue alpha_grad_parts alpha=" + std::to_string(a));
  }
  const double d = be.dot2d(gA.p, dstr, gB.p, dstr, dr, dc);
  double dw = 0;
  for (size_t r = 0; r < dr; ++r)
    for (size_t c = 0; c < dc; ++c) dw += static_cast<double>(A[r * dstr + c]) * Bm[r * dstr + c];
  expect_le(std::fabs(d - dw) / std::fabs(dw), 1e-12, "glue dot2d");
}

// The bf16 twins (twin.cuh): each producer's twin is exactly the bf16 rounding of its float32 output, bit for
// bit (vector and scalar paths, the tensor-core attention both ways), and a product fed a twin gives the same
// bits as one that casts its A operand itself (the Hopper path; elsewhere the twin is ignored, as asserted
// by the same comparison).
static uint16_t bf16_bits(float f) {  // round to nearest even, as __float2bfloat16_rn (no NaNs here)
  uint32_t u;
  std::memcpy(&u, &f, 4);
  return static_cast<uint16_t>((u + 0x7fffu + ((u >> 16) & 1u)) >> 16);
}
static void expect_twin(const Dev& f32, const DevBf& tw, const std::string& what) {
  const VF v = f32.get();
  const std::vector<uint16_t> t = tw.get();
  size_t bad = 0;
  for (size_t i = 0; i < v.size(); ++i) bad += t[i] != bf16_bits(v[i]);
  expect_le(static_cast<double>(bad), 0, "twin " + what + " (elements differing)");
}
static void check_twins() {
  for (size_t n : {size_t{100003}, size_t{4096} * 384}) {  // 100003: the scalar tail
    VF x = randv(n, 41, -4, 4), dy = randv(n, 42);
    Dev gx(x), gdy(dy), gy(n), gdx(n);
    DevBf t1(n), t2(n);
    rt::cuda::gelu_forward(gx.p, gy.p, n, t1.p);
    rt::cuda::gelu_backward(gx.p, gdy.p, gdx.p, n, t2.p);
    expect_twin(gy, t1, "gelu_forward n=" + std::to_string(n));
    expect_twin(gdx, t2, "gelu_backward n=" + std::to_string(n));
  }
  {
    const int n = 4099, d = 384;
    VF x = randv(static_cast<size_t>(n) * d, 43, -3, 3), w = randv(d, 44), dy = randv(static_cast<size_t>(n) * d, 45);
    VF res = randv(static_cast<size_t>(n) * d, 46);
    Dev gx(x), gw(w), gy(static_cast<size_t>(n) * d), gm(n), gr(n), gdy(dy), gres(res), gdx(static_cast<size_t>(n) * d);
    DevBf t1(static_cast<size_t>(n) * d), t2(static_cast<size_t>(n) * d);
    rt::cuda::layernorm_forward(gx.p, gw.p, nullptr, gy.p, gm.p, gr.p, n, d, t1.p);
    rt::cuda::layernorm_backward_res(gx.p, gw.p, gm.p, gr.p, gdy.p, gres.p, gdx.p, nullptr, nullptr, n, d, t2.p);
    expect_twin(gy, t1, "layernorm_forward");
    expect_twin(gdx, t2, "layernorm_backward");
  }
  {
    const int B = 8, n = 32, d = 384, H = 6;
    const size_t nq = static_cast<size_t>(B) * n * 3 * d, no = static_cast<size_t>(B) * n * d;
    expect_le(rt::cuda::attention_writes_twin(true, n, d, H) ? 0 : 1, 0, "attention_writes_twin n=32 d=384 H=6");
    Dev gq(randv(nq, 47, -2, 2)), gp(static_cast<size_t>(B) * H * n * n), go(no), gdo(randv(no, 48)), gdq(nq);
    DevBf t1(no), t2(nq);
    rt::cuda::attention_forward(true, gq.p, gp.p, go.p, B, n, d, H, 0.1f, 7, 9, t1.p);
    rt::cuda::attention_backward(true, gq.p, gp.p, gdo.p, gdq.p, B, n, d, H, 0.1f, 7, 9, t2.p);
    expect_twin(go, t1, "attention_forward");
    expect_twin(gdq, t2, "attention_backward");
  }
  // The char config's forward product with a bias and a residual in the epilogue (the wide Hopper kernel
  // under Auto), against the CPU.
  {
    const int n = 8192, in = 384, out = 384;
    VF x = randv(static_cast<size_t>(n) * in, 53), W = randv(static_cast<size_t>(out) * in, 54), b = randv(out, 55);
    VF res = randv(static_cast<size_t>(n) * out, 56), want(static_cast<size_t>(n) * out);
    rt::cpu::linear_forward(x.data(), W.data(), b.data(), want.data(), n, in, out);
    for (size_t i = 0; i < want.size(); ++i) want[i] += res[i];
    Dev gx(x), gW(W), gb(b), gres(res), gy(want.size());
    rt::cuda::linear_forward(true, gx.p, gW.p, gb.p, gy.p, n, in, out, gres.p);
    check(gy.get(), want, true, "linear_forward bias + residual " + shape(n, out, in));
  }
  // Products: forward (NT) and dx (NN) shapes of the char config, with and without a twin of A.
  struct G { bool tb; int M, N, K; };
  for (const G& g : {G{true, 8192, 384, 384}, G{false, 8192, 384, 1536}, G{true, 4096, 1152, 384}}) {
    const size_t na = static_cast<size_t>(g.M) * g.K, nb = static_cast<size_t>(g.N) * g.K;
    VF a = randv(na, 49), b = randv(nb, 50);
    Dev ga(a), gb(b), c1(static_cast<size_t>(g.M) * g.N), c2(static_cast<size_t>(g.M) * g.N), scratch(na);
    DevBf ta(na);
    // The twin of A, made by a producer: relu of A (A has both signs) written with its twin.
    rt::cuda::relu_forward(ga.p, scratch.p, na, ta.p);
    const int ldb = g.tb ? g.K : g.N;
    rt::cuda::gemm(true, false, g.tb, g.M, g.N, g.K, 1.0f, scratch.p, g.K, gb.p, ldb, 0.0f, c1.p, g.N);
    rt::cuda::gemm(true, false, g.tb, g.M, g.N, g.K, 1.0f, scratch.p, g.K, gb.p, ldb, 0.0f, c2.p, g.N, nullptr, nullptr,
                   nullptr, ta.p);
    const VF v1 = c1.get(), v2 = c2.get();
    size_t bad = 0;
    for (size_t i = 0; i < v1.size(); ++i) bad += std::memcmp(&v1[i], &v2[i], 4) != 0 || std::isnan(v1[i]);
    expect_le(static_cast<double>(bad), 0, "gemm with A's twin = without, " + shape(g.M, g.N, g.K));
  }
}

// The bf16 buffers of Backend::block_half. weight_grad.cu with bf16 x (and dy) gives the same bits as with
// float32 operands holding the same bf16 values (the kernel rounds float32 to bf16 on chip, and db sums the
// same float values in the same order); attention_backward_bf16 writes the bf16 copy the float32 kernel's
// twin is, on the tensor-core path and through the float32 scratch elsewhere (n = 37); and the attention
// reads a bf16 qkv as it would the same values in float32.
static VF rounded(const VF& v) {
  VF r(v.size());
  for (size_t i = 0; i < v.size(); ++i) {
    const uint32_t u = static_cast<uint32_t>(bf16_bits(v[i])) << 16;
    std::memcpy(&r[i], &u, 4);
  }
  return r;
}
static void upload_bf16(DevBf& d, const VF& v) {
  std::vector<uint16_t> b(v.size());
  for (size_t i = 0; i < v.size(); ++i) b[i] = bf16_bits(v[i]);
  RT_CU(cudaMemcpy(d.p, b.data(), b.size() * 2, cudaMemcpyHostToDevice));
  RT_CU(cudaDeviceSynchronize());
}
// The activations from a bf16 x and dy (Backend::block_f_half: c_fc's output and the gradient at the
// activation's output kept rounded) give the same bits as from float32 ones holding the same values: GELU
// (normcdff and phi_fast) and ReLU, forward and backward, through the 16-byte path and, one element in (not
// 8-byte aligned), the scalar one; a twin written alongside too.
static void check_activation_half_input() {
  const size_t n = 100003;
  VF x = rounded(randv(n, 131, -6, 6));
  x[5] = -INFINITY;
  const VF dy = rounded(randv(n, 132));
  DevBf hx(n), hdy(n);
  upload_bf16(hx, x);
  upload_bf16(hdy, dy);
  Dev gx(x), gdy(dy);
  for (int kind = 0; kind < 3; ++kind)  // GELU exact, GELU fast, ReLU
    for (size_t off : {size_t{0}, size_t{1}}) {
      const size_t m = n - off;
      const float* fx = gx.p + off;
      const float* bx = reinterpret_cast<const float*>(hx.p + off);
      Dev y1(m), y2(m), d1(m), d2(m);
      DevBf t1(m), t2(m);
      for (int v = 0; v < 2; ++v) {
        const float* xin = v ? bx : fx;
        const float* dyin = v ? reinterpret_cast<const float*>(hdy.p + off) : gdy.p + off;
        Dev& y = v ? y2 : y1;
        Dev& d = v ? d2 : d1;
        DevBf& t = v ? t2 : t1;
        if (kind < 2) {
          rt::cuda::gelu_forward(xin, y.p, m, t.p, kind == 1, v == 1);
          rt::cuda::gelu_backward(xin, dyin, d.p, m, nullptr, kind == 1, v == 1, v == 1);
        } else {
          rt::cuda::relu_forward(xin, y.p, m, t.p, v == 1);
          rt::cuda::relu_backward(xin, dyin, d.p, m, nullptr, v == 1, v == 1);
        }
      }
      const VF a1 = y1.get(), a2 = y2.get(), b1 = d1.get(), b2 = d2.get();
      const std::vector<uint16_t> c1 = t1.get(), c2 = t2.get();
      const bool same = std::memcmp(a1.data(), a2.data(), m * 4) == 0 && std::memcmp(b1.data(), b2.data(), m * 4) == 0 &&
                        c1 == c2;
      expect_le(same ? 0 : 1, 0,
                std::string(kind == 0 ? "gelu" : kind == 1 ? "gelu fast" : "relu") +
                    " from bf16 x and dy = from their float32 values, forward, twin and backward" +
                    (off ? " (unaligned)" : ""));
    }
}

// Backend::keep_bf16_begin / _end around one operation: its twin lands in the kept buffer (an activation,
// which writes one), or a cast makes it there (a copy, which writes none); either way bf16(src) exactly.
static void check_keep_bf16() {
  rt::Backend& be = rt::cuda_backend(false);
  const size_t n = size_t{3} << 19;
  Dev gx(randv(n, 97, -2, 2)), gy(n), gz(n);
  DevBf k1(n), k2(n);
  be.keep_bf16_begin(gy.p, k1.p, n, false);
  be.activation_forward(true, gx.p, gy.p, n);
  be.keep_bf16_end();
  be.keep_bf16_begin(gz.p, k2.p, n, false);
  be.copy(gz.p, gx.p, n);
  be.keep_bf16_end();
  expect_twin(gy, k1, "kept bf16 copy, written by the operation");
  expect_twin(gz, k2, "kept bf16 copy, cast after the operation");
}

// keep_bf16_begin(only): on the Hopper path the activation writes its kept twin alone (its float32 output
// stays as it was: poisoned), and the product right after reads the twin, giving the bits of the same
// product fed the float32 output and its twin; forward (c_proj's x) and backward (c_fc's dy for dx). And
// gemm() with A given only as bf16 on the other kernels (mma.sync, cast back to float32) against float32 A.
static void check_bf16_only() {
  rt::Backend& be = rt::cuda_backend(false);
  const int rows = 1024, in = 1536, out = 384;
  const size_t n = static_cast<size_t>(rows) * in;
  const bool hopper = rt::cuda::limits().cc == 90 && rt::cuda::wgmma_enabled();
  Dev gx(randv(n, 98, -2, 2)), gdy(randv(n, 99)), W(randv(static_cast<size_t>(out) * in, 100, -0.05f, 0.05f)),
      b(randv(out, 101)), Wt(randv(static_cast<size_t>(in) * out, 102, -0.05f, 0.05f));
  for (const bool backward : {false, true}) {
    Dev y_ref(n), y_only(n), o_ref(static_cast<size_t>(rows) * out), o_only(static_cast<size_t>(rows) * out);
    DevBf k_ref(n), k_only(n);
    for (const bool only : {false, true}) {
      Dev& y = only ? y_only : y_ref;
      DevBf& k = only ? k_only : k_ref;
      Dev& o = only ? o_only : o_ref;
      be.keep_bf16_begin(y.p, k.p, n, only);
      if (backward) be.activation_backward(true, gx.p, gdy.p, y.p, n);
      else be.activation_forward(true, gx.p, y.p, n);
      be.keep_bf16_end();
      // forward: o = y W^T + b (W [out, in]); backward: o = dx of a layer [out -> in] = y Wt (Wt [in, out])
      if (backward) be.linear_backward(nullptr, Wt.p, y.p, o.p, nullptr, nullptr, rows, out, in);
      else be.linear_forward(y.p, W.p, b.p, o.p, rows, in, out);
    }
    const std::string s = backward ? " (activation backward, dx product)" : " (activation forward, product)";
    expect_twin(y_ref, k_only, "bf16-only output" + s);
    const VF yo = y_only.get();
    size_t written = 0;
    for (float v : yo) written += !std::isnan(v);
    expect_le(static_cast<double>(hopper ? written : 0), 0, "bf16-only: float32 output left unwritten" + s);
    const VF a = o_ref.get(), c = o_only.get();
    expect_le(std::memcmp(a.data(), c.data(), a.size() * 4) == 0 ? 0 : 1, 0, "bf16-only: the product's bits" + s);
  }
  // gemm() with A null on the mma.sync kernel: A's twin cast back, against A's float32 values rounded.
  {
    const int M = 512, N = 256, K = 384;
    const VF A = rounded(randv(static_cast<size_t>(M) * K, 103)), B = randv(static_cast<size_t>(N) * K, 104);
    Dev gA(A), gB(B), c1(static_cast<size_t>(M) * N), c2(static_cast<size_t>(M) * N);
    DevBf tw(A.size());
    upload_bf16(tw, A);
    rt::cuda::set_gemm_kernel(rt::cuda::GemmKernel::MmaBig2);
    rt::cuda::gemm(true, false, true, M, N, K, 1.0f, gA.p, K, gB.p, K, 0.0f, c1.p, N);
    rt::cuda::gemm(true, false, true, M, N, K, 1.0f, nullptr, K, gB.p, K, 0.0f, c2.p, N, nullptr, nullptr, nullptr, tw.p);
    use({rt::cuda::GemmKernel::Auto, "auto"});
    const VF a = c1.get(), c = c2.get();
    expect_le(std::memcmp(a.data(), c.data(), a.size() * 4) == 0 ? 0 : 1, 0, "gemm: A only as bf16 on mma.sync");
  }
  // gemm() writing a bf16 C (c_attn's qkv, Backend::block_qkv_half): the rounding of the float32 C, bit for bit,
  // from the Hopper kernels' epilogue (K = 384: the 128 x 128 kernel; K = 1536, N = 384: the 128 x 192 one; with
  // a bias; N odd for the single-element tail) and through the float32 scratch of the other kernels.
  struct CCase { int N, K; };
  const KernelName ckernels[] = {{rt::cuda::GemmKernel::Auto, "Auto"},
                                 {rt::cuda::GemmKernel::Auto, "Auto, cp.async", false},
                                 {rt::cuda::GemmKernel::MmaBig2, "mma.sync"}};
  for (const KernelName& kn : ckernels)
    for (const CCase cc : {CCase{1152, 384}, CCase{333, 384}, CCase{384, 1536}}) {
      const int M = 4096, N = cc.N, K = cc.K;
      Dev gA(randv(static_cast<size_t>(M) * K, 105)), gB(randv(static_cast<size_t>(N) * K, 106)), gb(randv(N, 107));
      Dev cf(static_cast<size_t>(M) * N);
      DevBf ch(static_cast<size_t>(M) * N);
      use(kn);
      rt::cuda::gemm(true, false, true, M, N, K, 1.0f, gA.p, K, gB.p, K, 0.0f, cf.p, N, gb.p);
      rt::cuda::gemm(true, false, true, M, N, K, 1.0f, gA.p, K, gB.p, K, 0.0f, reinterpret_cast<float*>(ch.p), N, gb.p,
                     nullptr, nullptr, nullptr, true);
      use({rt::cuda::GemmKernel::Auto, "auto"});
      expect_twin(cf, ch, "gemm bf16 C, N=" + std::to_string(N) + " K=" + std::to_string(K) +
                              " (" + kn.name + ")");
    }
}

// The TMA products' epilogue and tile modes (set_tma_store, set_tma_bn96, ...), set for a check and put back as the
// process had them when it ends.
struct ProductModes {
  const bool staged = rt::cuda::tma_store(), prefetch = rt::cuda::res_prefetch();
  const int x96 = rt::cuda::tma_x96();
  const bool res_acc = rt::cuda::res_acc();
  const int bn96 = rt::cuda::tma_bn96();
  static void set(bool staged_, int bn96_, bool prefetch_ = false, int x96_ = 0, bool res_acc_ = false) {
    rt::cuda::set_tma_store(staged_);
    rt::cuda::set_tma_bn96(bn96_);
    rt::cuda::set_res_prefetch(prefetch_);
    rt::cuda::set_tma_x96(x96_);
    rt::cuda::set_res_acc(res_acc_);
  }
  ~ProductModes() { set(staged, bn96, prefetch, x96, res_acc); }
};

// matmul_tma_sm90.cu's kernel against matmul_sm90.cu's cp.async ones on the same bf16 operands: the same
// products in the same K order into float32 accumulators, so the same bits (both tile shapes, row and column
// tails, a bias and a residual, a split reduction, a bf16 C), with the TMA kernel's direct epilogue and its
// staged one (set_tma_store).
static void check_tma_bits() {
  if (!(rt::cuda::limits().cc == 90 && rt::cuda::wgmma_enabled())) return;
  struct Case { int M, N, K; bool bias, res, half; };
  const ProductModes process;
  for (const int bn96 : {0, 2})  // 128-wide tiles (192 where the rule says); 96-wide for all it does not
  // the direct epilogue (0), the staged one by the engine (1), that with the residual's values loaded ahead (2,
  // RT_CUDA_RES_PREFETCH: on 96- and 192-wide tiles), and with the residual and bias as the accumulators' start (3,
  // RT_CUDA_RES_ACC): not the same bits (another order of the same sums), so within float32's rounding
  for (const int mode : {0, 1, 2, 3}) {
    const bool res_acc = mode == 3;
    ProductModes::set(mode > 0, bn96, mode == 2, false, res_acc);
    for (const Case c : {Case{8192, 1152, 384, true, false, true}, Case{8192, 384, 1536, true, true, false},
                         Case{8192, 384, 1152, false, false, false}, Case{1000, 300, 200, true, true, false},
                         Case{333, 1000, 4000, false, false, false}, Case{96, 96, 8192, false, false, false},
                         Case{4096, 384, 384, true, true, false}, Case{130, 130, 8, false, false, true},
                         Case{5000, 2000, 100, true, false, true},
                         // residuals without a bias, and on 192-wide tiles with row, column and K tails (the
                         // residual prefetch's tiles, mode 2): 8000 rows, so that 128 x 128 tiles fill the
                         // SMs and gemm() does not split K (1000 rows did, and took the direct epilogue)
                         Case{4096, 384, 384, false, true, false}, Case{8000, 300, 600, true, true, false},
                         Case{8000, 300, 600, false, true, false},
                         // a bf16 C on 192-wide tiles
                         Case{8192, 384, 1536, false, false, true}}) {
      const VF a = rounded(randv(static_cast<size_t>(c.M) * c.K, 121));
      DevBf A(a.size());
      upload_bf16(A, a);
      Dev W(randv(static_cast<size_t>(c.N) * c.K, 122)), b(randv(c.N, 123)), r(randv(static_cast<size_t>(c.M) * c.N, 124));
      Dev C0(static_cast<size_t>(c.M) * c.N), C1(static_cast<size_t>(c.M) * c.N);
      // (the Hopper kernels asked for by name: Auto gives products too small to fill the GPU to others)
      const long launched = rt::cuda::tma_launches(), started = rt::cuda::res_acc_launches();
      for (int v = 0; v < 2; ++v) {
        use({rt::cuda::GemmKernel::Wgmma, "wgmma", v == 0});
        rt::cuda::gemm(true, false, true, c.M, c.N, c.K, 1.0f, nullptr, c.K, W.p, c.K, 0.0f, (v ? C1 : C0).p, c.N,
                       c.bias ? b.p : nullptr, nullptr, c.res ? r.p : nullptr, A.p, c.half);
      }
      const std::string how = std::string(mode == 0   ? ""
                                          : mode == 1 ? ", staged epilogue"
                                          : mode == 2 ? ", staged epilogue, residual loaded ahead"
                                                      : ", staged epilogue, residual in the accumulators") +
                              (bn96 ? ", 96-wide tiles" : "");
      expect_le(std::labs(rt::cuda::tma_launches() - launched - 1), 0,
                "gemm TMA kernel launched, not a fallback " + shape(c.M, c.N, c.K) + how);
      // the residual in the accumulators wherever the staged epilogue runs on a float32 C with one: C unsplit (gemm()
      // splits K >= 512 when 128 x 128 tiles do not fill the SMs) and its rows 16-byte aligned (else the engine
      // cannot address it)
      const bool split = static_cast<long>((c.M + 127) / 128) * ((c.N + 127) / 128) < rt::cuda::limits().sms && c.K >= 512;
      const bool aligned = c.N * (c.half ? 2 : 4) % 16 == 0;
      const long want_acc = res_acc && c.res && !c.half && !split && aligned ? 1 : 0;
      // the launch count over the two products (the TMA one's, as the rule above says it runs)
      expect_le(std::labs(rt::cuda::res_acc_launches() - started - want_acc), 0,
                std::string("gemm TMA kernel ") + (want_acc ? "with" : "without") + " the residual in the accumulators " +
                    shape(c.M, c.N, c.K) + how);
      use({rt::cuda::GemmKernel::Auto, "auto"});
      const VF x = C0.get(), y = C1.get();
      const size_t bytes = static_cast<size_t>(c.M) * c.N * (c.half ? 2 : 4);
      if (want_acc) {
        // (res + bias) + the products against (the products + bias) + res: the largest difference against the
        // largest output, float32's rounding over K / 16 steps of the sum (a residual left out would be ~1)
        double worst = 0, top = 0;
        for (size_t i = 0; i < x.size(); ++i)
          worst = std::max(worst, std::fabs(static_cast<double>(x[i]) - y[i])), top = std::max(top, std::fabs(static_cast<double>(y[i])));
        expect_le(worst / std::max(top, 1e-30), 1e-5,
                  "gemm TMA vs cp.async, within float32 rounding " + shape(c.M, c.N, c.K) + how);
      } else {
        expect_le(std::memcmp(x.data(), y.data(), bytes) == 0 ? 0 : 1, 0,
                  "gemm TMA vs cp.async, same bits " + shape(c.M, c.N, c.K) + (c.half ? " bf16 C" : "") + how);
      }
    }
  }
}

// The window glue writing a twin of what it writes into a range (Backend::axpy2d_batch_twin, kept as
// block_backward keeps dm's), in the float4 and the scalar path. Where its ops inside the range write all of
// it, the twin holds each op's values rounded to bf16, written by the ops themselves: the float32 range is
// zeroed before keep_bf16_end, whose cast would copy the zeros. Where they leave a gap, the glue offers
// nothing and the cast fills the kept copy (the zeros), so no stale gap can be taken for written.
static void check_glue_twin() {
  rt::Backend& be = rt::cuda_backend(false);
  const size_t rows = 5;
  for (const size_t cols : {size_t(12), size_t(13)})
    for (const bool gap : {false, true}) {
      const size_t ds = cols, n = rows * ds;  // whole rows: ops of whole rows cover the range
      const VF x = randv(n, 71), y = randv(n, 72), d0 = randv(2 * n, 73);
      Dev gx(x), gy(y), gd(d0);
      DevBf tw(n);
      // Rows 0-1 and 2-4 (or 2-3: a gap) of the range, and one op past it.
      const rt::Axpy2dOp ops[3] = {{gd.p, ds, 1.0f, gx.p, ds, gy.p, ds, 2, cols, false},
                                   {gd.p + 2 * ds, ds, 0.5f, gx.p + 2 * ds, ds, nullptr, 0, gap ? 2u : 3u, cols, true},
                                   {gd.p + n, ds, 1.0f, gx.p, ds, nullptr, 0, rows, cols, false}};
      be.keep_bf16_begin(gd.p, tw.p, n, false);
      be.axpy2d_batch_twin(ops, 3, nullptr, gd.p, n);
      const VF out = gd.get();
      RT_CU(cudaStreamSynchronize(rt::cuda::stream()));
      RT_CU(cudaMemset(gd.p, 0, n * 4));
      RT_CU(cudaDeviceSynchronize());
      be.keep_bf16_end();
      const std::vector<uint16_t> t = tw.get();
      size_t bad = 0;
      for (size_t i = 0; i < n; ++i) bad += t[i] != (gap ? uint16_t{0} : bf16_bits(out[i]));
      expect_le(static_cast<double>(bad), 0,
                std::string("axpy2d_batch_twin: ") +
                    (gap ? "ops leaving a gap offer no twin (the cast fills it)" : "the twin written by the ops") +
                    " cols=" + std::to_string(cols));
    }
}

// ln_1 with the window glue in its pass (cuda::layernorm_forward_glue, RT_CUDA_LN_GLUE): the bits of the glue's
// batch (glue_ops) then layernorm_forward, for x, Y's copy, y, its twin, mean and rstd; forget (no P, with Y)
// and accumulate (P, alpha, no Y), d = 384 and 96, a partial last block of rows.
static void check_layernorm_glue() {
  rt::Backend& be = rt::cuda_backend(false);
  for (const int d : {384, 96})
    for (const bool acc : {false, true}) {
      const int B = 37, ns = 16, np = 32, n = B * np;
      const size_t Ss = static_cast<size_t>(np) * d, Xs = 5 * static_cast<size_t>(np) * d;  // strides past a row block
      Dev S(randv(B * Ss, 161)), X(randv(B * Xs, 162)), P(randv(B * Ss, 163)), alpha(VF{0.625f}),
          Ysrc(randv(B * Ss, 164)), w(randv(d, 165)), bb(randv(d, 166));
      rt::WindowGlue g;
      g.S = S.p + ns * d;  // as the recurrence's: the second half of the previous output
      g.Ss = Ss;
      g.X = X.p + 3 * d;
      g.Xs = Xs;
      g.ns = ns;
      if (acc) {
        g.P = P.p;
        g.Ps = Ss;
        g.alpha = alpha.p;
      }
      Dev Y1(B * Ss), Y2(B * Ss), x1(static_cast<size_t>(n) * d), x2(x1.n), y1(x1.n), y2(x1.n), m1(n), m2(n), r1(n), r2(n);
      DevBf t1(x1.n), t2(x1.n);
      if (!acc) {
        g.Ysrc = Ysrc.p;
        g.Ysrcs = Ss;
        g.Y = Y1.p;
        g.Ys = Ss;
      }
      // The glue as WindowGlue documents it, one axpy2d batch (as layer/block.cc's glue_ops, not linked here).
      const size_t nd = static_cast<size_t>(np) * d, nsd = static_cast<size_t>(ns) * d;
      rt::Axpy2dOp ops[3];
      int count = 0;
      if (acc) {
        ops[count++] = {x1.p, nd, 1.0f, g.P, g.Ps, g.S, g.Ss, size_t(B), nsd, false, g.alpha};
        ops[count++] = {x1.p + nsd, nd, 1.0f, g.P, g.Ps, g.X, g.Xs, size_t(B), nd - nsd, false, g.alpha};
      } else {
        ops[count++] = {x1.p, nd, 1.0f, g.S, g.Ss, nullptr, 0, size_t(B), nsd, false};
        ops[count++] = {x1.p + nsd, nd, 1.0f, g.X, g.Xs, nullptr, 0, size_t(B), nd - nsd, false};
        ops[count++] = {g.Y, g.Ys, 1.0f, g.Ysrc, g.Ysrcs, nullptr, 0, size_t(B), nsd, false};
      }
      be.axpy2d_batch(ops, count);
      rt::cuda::layernorm_forward(x1.p, w.p, bb.p, y1.p, m1.p, r1.p, n, d, t1.p);
      if (!acc) g.Y = Y2.p;
      rt::cuda::layernorm_forward_glue(g, x2.p, B, np, w.p, bb.p, y2.p, m2.p, r2.p, d, t2.p);
      auto same = [](const Dev& a, const Dev& b) {
        const VF u = a.get(), v = b.get();
        return std::memcmp(u.data(), v.data(), u.size() * 4) == 0;
      };
      const bool ok = same(x1, x2) && same(y1, y2) && same(m1, m2) && same(r1, r2) && t1.get() == t2.get() &&
                      (acc || same(Y1, Y2));
      expect_le(ok ? 0 : 1, 0, std::string("layernorm_forward_glue = the glue's batch then layernorm_forward, ") +
                                   (acc ? "accumulate" : "forget with Y") + " d=" + std::to_string(d));
    }
}

// ln_1's backward with the backward's window glue in its pass (Backend::layernorm_backward_scatter,
// RT_CUDA_LN_BACK_GLUE): the bits of layernorm_backward_res into din and then BackGlue's batch (glue_ops, forget:
// no alpha) with dy's bf16 copy kept, for dy (all of it, both halves), its twin and dX (added to); dy float32
// and bf16, d = 384 and 96, a full next window and a short one (nx < ns), a partial last block of rows.
static void check_layernorm_back_glue() {
  rt::Backend& be = rt::cuda_backend(false);
  for (const int d : {384, 96})
    for (const int nx : {16, 7})
      for (const int variant : {0, 1, 2}) {  // dy float32, bf16, bf16 with partial sums left (RT_CUDA_LN_PARTS)
        const bool half = variant > 0, with_parts = variant == 2;
        const int B = 37, ns = 16, np = ns + nx, n = B * np;
        const size_t nd = static_cast<size_t>(n) * d, Nd = 9 * static_cast<size_t>(ns) * d;  // dY, dX: rows of a sequence
        const size_t dys = 2 * static_cast<size_t>(ns) * d, Rd = B * dys;
        const VF x = randv(nd, 171, -2, 3), w = randv(d, 172), b = randv(d, 173), dh = rounded(randv(nd, 174));
        Dev gx(x), gw(w), gb(b), gy(nd), gm(n), gr(n), gdh(dh), gres(randv(nd, 175)), gdY(randv(B * Nd, 176));
        DevBf hdh(nd);
        upload_bf16(hdh, dh);
        rt::cuda::layernorm_forward(gx.p, gw.p, gb.p, gy.p, gm.p, gr.p, n, d);
        const float* dy = half ? reinterpret_cast<const float*>(hdh.p) : gdh.p;
        const VF dX0 = randv(B * Nd, 177), dy0 = randv(Rd, 178);
        Dev din(nd), dX1(dX0), dX2(dX0), dy1(dy0), dy2(dy0);
        DevBf t1(Rd), t2(Rd);
        // As recurrence.cc: dX's rows of window k at an offset into a sequence, dY's of window k-2.
        const size_t dX_at = 2 * static_cast<size_t>(ns) * d, dY_at = 3 * static_cast<size_t>(d);
        rt::cuda::layernorm_backward_res(gx.p, gw.p, gm.p, gr.p, dy, gres.p, din.p, nullptr, nullptr, n, d, nullptr, half);
        const size_t nsd = static_cast<size_t>(ns) * d, nxd = static_cast<size_t>(nx) * d;
        const rt::Axpy2dOp ops[3] = {
            {dX1.p + dX_at, Nd, 1.0f, din.p + nsd, nd / B, nullptr, 0, size_t(B), nxd, true},
            {dy1.p + nsd, dys, 1.0f, din.p, nd / B, nullptr, 0, size_t(B), dys - nsd, false},
            {dy1.p, dys, 1.0f, gdY.p + dY_at, Nd, nullptr, 0, size_t(B), nsd, false}};
        be.keep_bf16_begin(dy1.p, t1.p, Rd, false);
        be.axpy2d_batch_twin(ops, 3, nullptr, dy1.p, Rd);
        be.keep_bf16_end();
        rt::BackScatter sc;
        sc.dy = dy2.p;
        sc.dys = dys;
        sc.dY = gdY.p + dY_at;
        sc.dYs = Nd;
        sc.dX = dX2.p + dX_at;
        sc.dXs = Nd;
        sc.ns = ns;
        sc.nx = nx;
        sc.dy16 = t2.p;
        const int part_rows = with_parts ? rt::cuda::layernorm_part_rows(n, d) : 0;
        Dev parts(2 * static_cast<size_t>(std::max(part_rows, 1)) * d);
        const rt::LnParts lp = with_parts ? rt::LnParts{parts.p, parts.p + static_cast<size_t>(part_rows) * d} : rt::LnParts{};
        be.keep_bf16_begin(dy2.p, t2.p, Rd, false);
        be.layernorm_backward_scatter(gx.p, gw.p, gm.p, gr.p, dy, gres.p, sc, B, d, half, lp);
        be.keep_bf16_end();
        auto same = [](const Dev& u, const Dev& v) {
          const VF a = u.get(), c = v.get();
          return std::memcmp(a.data(), c.data(), a.size() * 4) == 0;
        };
        const bool ok = same(dy1, dy2) && same(dX1, dX2) && t1.get() == t2.get();
        expect_le(ok ? 0 : 1, 0,
                  "layernorm_backward_scatter = layernorm_backward_res then the glue's batch (dy, twin, dX) d=" +
                      std::to_string(d) + " nx=" + std::to_string(nx) + (half ? " bf16 dy" : "") +
                      (with_parts ? ", leaving partial sums" : ""));
      }
}

// The LayerNorm backward with no dres (the head's ln_f, which has no residual to add) gives the bits of a dres of
// zeros: the register kernel (d = 384) and the generic one (d = 100), dx and its twin.
static void check_layernorm_null_dres() {
  for (const int d : {384, 100}) {
    const int n = 777;
    const size_t nd = static_cast<size_t>(n) * d;
    const VF x = randv(nd, 191, -2, 3), w = randv(d, 192), b = randv(d, 193), dy = randv(nd, 194);
    Dev gx(x), gw(w), gb(b), gy(nd), gm(n), gr(n), gdy(dy), zeros(VF(nd, 0.0f)), dx1(nd), dx2(nd);
    DevBf t1(nd), t2(nd);
    rt::cuda::layernorm_forward(gx.p, gw.p, gb.p, gy.p, gm.p, gr.p, n, d);
    rt::cuda::layernorm_backward_res(gx.p, gw.p, gm.p, gr.p, gdy.p, zeros.p, dx1.p, nullptr, nullptr, n, d, t1.p);
    rt::cuda::layernorm_backward_res(gx.p, gw.p, gm.p, gr.p, gdy.p, nullptr, dx2.p, nullptr, nullptr, n, d, t2.p);
    const VF a = dx1.get(), c = dx2.get();
    const bool same = std::memcmp(a.data(), c.data(), a.size() * 4) == 0 && t1.get() == t2.get();
    expect_le(same ? 0 : 1, 0, "layernorm_backward without dres = with a dres of zeros, dx and twin d=" + std::to_string(d));
  }
}

// A layer pass's bf16 weight copies (weight_copies_make, one launch for all since session 21): each the bf16
// bits of its weight, K-contiguous as stored for the forward and transposed for the backward, rows padded with
// zeros to a multiple of 8; the char block's four shapes and one with both sides odd.
static void check_weight_copies() {
  if (!(rt::cuda::limits().cc == 90 && rt::cuda::wgmma_enabled())) return;
  const int count = 5, out[count] = {1152, 384, 1536, 384, 65}, in[count] = {384, 384, 384, 1536, 100};
  std::vector<std::unique_ptr<Dev>> W;  // (Dev owns its memory and has no move: not in a vector by value)
  std::vector<VF> w;
  const float* ptr[count];
  for (int i = 0; i < count; ++i) {
    w.push_back(randv(static_cast<size_t>(out[i]) * in[i], 201 + i));
    W.push_back(std::make_unique<Dev>(w.back()));
    ptr[i] = W.back()->p;
  }
  for (const bool backward : {false, true}) {
    const size_t floats = rt::cuda::weight_copies_floats(out, in, count);
    Dev dst(floats);
    rt::cuda::weight_copies_make(ptr, out, in, count, backward, dst.p);
    const VF got = dst.get();
    rt::cuda::weight_copies_clear();
    const auto* bits = reinterpret_cast<const uint16_t*>(got.data());
    size_t at = 0, bad = 0;
    for (int i = 0; i < count; ++i) {
      const int R = backward ? in[i] : out[i], K = backward ? out[i] : in[i], Kp = (K + 7) / 8 * 8;
      for (int r = 0; r < R; ++r)
        for (int k = 0; k < Kp; ++k) {
          const float v = k >= K ? 0.0f : backward ? w[i][static_cast<size_t>(k) * in[i] + r] : w[i][static_cast<size_t>(r) * in[i] + k];
          bad += bits[at + static_cast<size_t>(r) * Kp + k] != bf16_bits(v);
        }
      at += static_cast<size_t>(R) * Kp;
    }
    expect_le(static_cast<double>(bad), 0, std::string("weight_copies_make: the weights' bf16 bits, ") +
                                               (backward ? "transposed (backward)" : "as stored (forward)"));
  }
}

// The head (ln_f, logits through W, softmax cross-entropy and its backward) against cpu::head_xent: the loss, the
// hits, dY (written, zero before the scored positions), and dlnw, dlnb, dW (added to). Since session 21 the
// LayerNorm's dx is written without a dres and the logits product reads H's bf16 copy. All positions scored
// (d = 384, V = 65: the char head) and the last P (d = 96, V = 16: the copy head), ignored targets among them,
// float32 and bf16, and with RT_CUDA_LN_PARTS on (the default) the partial sums' path for ln_f.
static void check_head_xent() {
  struct Case { int B, N, d, V, P; };
  // (272 x 64 rows: 136 tiles of 128 rows, so that the logits product takes the Hopper path, which reads H's copy)
  // (V = 65 and 16 take the kernel of a few lanes a row, V = 300 the warp-a-row one)
  for (const Case c : {Case{272, 64, 384, 65, 64}, Case{8, 50, 96, 16, 7}, Case{6, 40, 64, 300, 33}})
    for (const bool bf16 : {false, true}) {
      const int R = c.B * c.P, ignore = -100;
      const size_t nY = static_cast<size_t>(c.B) * c.N * c.d;
      const VF Y = randv(nY, 211, -2, 2), lnw = randv(c.d, 212, 0.5f, 1.5f), lnb = randv(c.d, 213),
               W = randv(static_cast<size_t>(c.V) * c.d, 214, -0.2f, 0.2f), dlnw0 = randv(c.d, 215),
               dlnb0 = randv(c.d, 216), dW0 = randv(W.size(), 217);
      std::vector<int32_t> tgt(R);
      std::mt19937 g(static_cast<uint32_t>(c.V * 13 + c.d));
      for (auto& t : tgt) t = g() % 11 == 0 ? ignore : static_cast<int32_t>(g() % c.V);
      VF dY(nY, NAN), dlnw = dlnw0, dlnb = dlnb0, dW = dW0;
      const rt::XentResult r = rt::cpu::head_xent(Y.data(), lnw.data(), lnb.data(), W.data(), tgt.data(), c.B, c.N, c.d,
                                                  c.V, c.P, ignore, dY.data(), dlnw.data(), dlnb.data(), dW.data());
      int32_t* gt = nullptr;
      double* totals = nullptr;
      RT_CU(cudaMalloc(&gt, R * sizeof(int32_t)));
      RT_CU(cudaMalloc(&totals, 2 * sizeof(double)));
      RT_CU(cudaMemcpy(gt, tgt.data(), R * sizeof(int32_t), cudaMemcpyHostToDevice));
      RT_CU(cudaDeviceSynchronize());
      Dev gY(Y), glnw(lnw), glnb(lnb), gW(W), gdY(nY), gdlnw(dlnw0), gdlnb(dlnb0), gdW(dW0);
      rt::cuda::head_xent(bf16, gY.p, glnw.p, glnb.p, gW.p, gt, c.B, c.N, c.d, c.V, c.P, ignore, r.count, gdY.p, gdlnw.p,
                          gdlnb.p, gdW.p, totals);
      double t[2];
      RT_CU(cudaStreamSynchronize(rt::cuda::stream()));  // (the backend's stream does not order a plain copy)
      RT_CU(cudaMemcpy(t, totals, sizeof t, cudaMemcpyDeviceToHost));
      RT_CU(cudaFree(gt));
      RT_CU(cudaFree(totals));
      const std::string what = "head_xent B=" + std::to_string(c.B) + " N=" + std::to_string(c.N) + " P=" +
                               std::to_string(c.P) + " d=" + std::to_string(c.d) + " V=" + std::to_string(c.V);
      expect_le(std::fabs(t[0] / static_cast<double>(r.count) - r.loss) / r.loss, bf16 ? 1e-2 : 1e-5,
                what + " loss" + (bf16 ? " [bf16]" : " [f32]"));
      // (argmax hits may flip on near-ties under bf16 rounding: a few rows in thousands)
      expect_le(std::fabs(t[1] - static_cast<double>(r.correct)), bf16 ? 0.002 * r.count + 3 : 1,
                what + " hits" + (bf16 ? " [bf16]" : " [f32]"));
      check(gdY.get(), dY, bf16, what + " dY", 2e-2);  // (bf16 logits and dlogits: check-model's limit)
      // The gradients added, compared as added (the starting values would hide their errors).
      auto added = [](VF v, const VF& v0) {
        for (size_t i = 0; i < v.size(); ++i) v[i] -= v0[i];
        return v;
      };
      // (bf16: from dH and dlogits of bf16 products, as check-model's limit allows)
      check(added(gdlnw.get(), dlnw0), added(dlnw, dlnw0), bf16, what + " dlnw", 2e-2);
      check(added(gdlnb.get(), dlnb0), added(dlnb, dlnb0), bf16, what + " dlnb", 2e-2);
      check(added(gdW.get(), dW0), added(dW, dW0), bf16, what + " dW", 2e-2);
      if (bf16 && c.P == c.N) {
        // The logits from H's bf16 copy (head_logits, as head_xent makes them) = ln_f then the product casting H
        // itself: the same bits.
        const size_t nl = static_cast<size_t>(R) * c.V;
        Dev L1(nl), L2(nl), H(nY), m(R), rs(R);
        rt::cuda::head_logits(true, gY.p, glnw.p, glnb.p, gW.p, c.B, c.N, c.d, c.V, c.P, L1.p);
        rt::cuda::layernorm_forward(gY.p, glnw.p, glnb.p, H.p, m.p, rs.p, R, c.d);
        rt::cuda::gemm(true, false, true, R, c.V, c.d, 1.0f, H.p, c.d, gW.p, c.d, 0.0f, L2.p, c.V);
        const VF a = L1.get(), b = L2.get();
        expect_le(std::memcmp(a.data(), b.data(), nl * 4) == 0 ? 0 : 1, 0,
                  what + " logits from H's bf16 copy: the bits of the product's own cast");
      }
    }
}

// An AdamW step over tensors of no elements (or none at all) counts as an applied step with norm 0, as on the
// CPU (CpuBackend::adamw_step): the device step count advances, from 5 to 6 and then to 7.
static void check_adamw_empty() {
  int32_t* count = nullptr;
  RT_CU(cudaMalloc(&count, sizeof(int32_t)));
  const int32_t five = 5;
  RT_CU(cudaMemcpy(count, &five, sizeof five, cudaMemcpyHostToDevice));
  RT_CU(cudaDeviceSynchronize());  // (as Dev: the backend's stream does not wait for the legacy one)
  Dev p(VF{1.0f}), g(VF{2.0f}), m(VF{0.0f}), v(VF{0.0f});
  const rt::AdamWTensor empty{p.p, g.p, m.p, v.p, 0, true};
  rt::AdamWHyper h;
  h.lr = 0.1f;
  const rt::AdamWResult a = rt::cuda::adamw_step(&empty, 1, h, 1.0, count)();
  const rt::AdamWResult b = rt::cuda::adamw_step(nullptr, 0, h, 1.0, count)();
  int32_t after = 0;
  RT_CU(cudaMemcpy(&after, count, sizeof after, cudaMemcpyDeviceToHost));
  RT_CU(cudaFree(count));
  const bool ok = a.norm == 0 && !a.skipped && b.norm == 0 && !b.skipped && after == 7 && p.get()[0] == 1.0f;
  expect_le(ok ? 0 : 1, 0, "adamw over no elements: norm 0, not skipped, the count advanced (5 -> 7), nothing else");
}

// The BackScatter of the LayerNorm backward tests: dy of 2 ns rows an element (sdy), dX and dY strided (np rows an
// element, ns of them scattered to dy).
static rt::BackScatter test_scatter(const Dev& sdy, const Dev& sdX, const Dev& sdY, int ns, int np, int d) {
  const size_t dys = 2 * static_cast<size_t>(ns) * d;
  rt::BackScatter sc;
  sc.dy = sdy.p;
  sc.dys = dys;
  sc.dY = sdY.p;
  sc.dYs = dys;
  sc.dX = sdX.p;
  sc.dXs = static_cast<size_t>(np - ns) * d;
  sc.ns = ns;
  sc.nx = np - ns;
  return sc;
}

// The LayerNorm's dw and db left as partial sums by the dx kernels over three runs of rows (as windows'
// applications: LnParts, RT_CUDA_LN_PARTS), added up by layernorm_parts_finish: the sums of the pass over all
// rows to float32 rounding, dx the same bits as without; plain and scattered (one run through
// layernorm_backward_scatter), dy float32 and bf16, d = 384, 96, 512 (the widest with partial sums) and 32 (8
// rows a warp), runs with partial blocks.
static void check_layernorm_parts() {
  for (const int d : {384, 96, 512, 32})
    for (const bool half : {false, true}) {
      const int ns = 16, np = 32, Bs = 37;
      const int runs[3] = {Bs * np, 1000, 8}, N = runs[0] + runs[1] + runs[2];
      const size_t Nd = static_cast<size_t>(N) * d;
      const VF x = randv(Nd, 181, -2, 3), w = randv(d, 182), b = randv(d, 183), dh = rounded(randv(Nd, 184));
      const VF dres = randv(Nd, 185), dw0 = randv(d, 186), db0 = randv(d, 187);
      Dev gx(x), gw(w), gb(b), gy(Nd), gm(N), gr(N), gdh(dh), gres(dres);
      DevBf hdh(Nd);
      upload_bf16(hdh, dh);
      rt::cuda::layernorm_forward(gx.p, gw.p, gb.p, gy.p, gm.p, gr.p, N, d);
      auto dy_at = [&](size_t row) {
        return half ? reinterpret_cast<const float*>(hdh.p + row * d) : gdh.p + row * d;
      };
      Dev dx1(Nd), dx2(Nd), dw1(dw0), db1(db0), dw2(dw0), db2(db0);
      rt::cuda::layernorm_backward_res(gx.p, gw.p, gm.p, gr.p, dy_at(0), gres.p, dx1.p, dw1.p, db1.p, N, d, nullptr, half);
      int rows = 0;
      for (const int n : runs) rows += rt::cuda::layernorm_part_rows(n, d);
      Dev pw(static_cast<size_t>(rows) * d), pb(pw.n);
      // The first run scattered (dy of 2 ns rows an element, dX and dY strided), its dx rebuilt from there for
      // the comparison: rows t < ns from dy's rows ns + t, rows t >= ns from dX (zeroed, so added to nothing).
      const size_t dys = 2 * static_cast<size_t>(ns) * d;
      Dev sdy(Bs * dys), sdX(static_cast<size_t>(Bs) * (np - ns) * d), sdY(randv(Bs * dys, 188));
      RT_CU(cudaMemset(sdX.p, 0, sdX.n * 4));
      const rt::BackScatter sc = test_scatter(sdy, sdX, sdY, ns, np, d);
      size_t row = 0;
      int at = 0;
      for (int i = 0; i < 3; ++i) {
        const int n = runs[i];
        const rt::LnParts parts{pw.p + static_cast<size_t>(at) * d, pb.p + static_cast<size_t>(at) * d};
        if (i == 0)
          rt::cuda::layernorm_backward_scatter(gx.p, gw.p, gm.p, gr.p, dy_at(0), gres.p, sc, Bs, d, nullptr, half, parts);
        else
          rt::cuda::layernorm_backward_res(gx.p + row * d, gw.p, gm.p + row, gr.p + row, dy_at(row), gres.p + row * d,
                                           dx2.p + row * d, nullptr, nullptr, n, d, nullptr, half, parts);
        row += n;
        at += rt::cuda::layernorm_part_rows(n, d);
      }
      rt::cuda::layernorm_parts_finish({pw.p, pb.p}, rows, d, dw2.p, db2.p);
      const VF sy = sdy.get(), sX = sdX.get();
      VF a = dx1.get(), c = dx2.get();
      for (int e = 0; e < Bs; ++e)
        for (int t = 0; t < np; ++t)
          for (int j = 0; j < d; ++j)
            c[(static_cast<size_t>(e) * np + t) * d + j] =
                t < ns ? sy[e * dys + static_cast<size_t>(ns + t) * d + j] : sX[(static_cast<size_t>(e) * (np - ns) + t - ns) * d + j];
      const std::string s = " d=" + std::to_string(d) + (half ? " bf16 dy" : "");
      expect_le(std::memcmp(a.data(), c.data(), a.size() * 4) == 0 ? 0 : 1, 0,
                "layernorm backward leaving partial sums: dx the same bits" + s);
      // (rel is NaN where a partial row went unwritten: the rows start as NaN, and expect_le fails on NaN)
      expect_le(rel(dw2.get(), dw1.get()), 1e-5, "layernorm partial sums (LnParts) then layernorm_parts_finish: dw" + s);
      expect_le(rel(db2.get(), db1.get()), 1e-5, "layernorm partial sums (LnParts) then layernorm_parts_finish: db" + s);
    }
}

// The pipelined LayerNorm dx kernels (RT_CUDA_LN_PIPE: the next pass's rows copied into shared memory while a
// warp works on this pass's) give the bits of the register kernels: dx (dres apart, dres = dx, no dres), its twin
// and the partial sums, plain and scattered (layernorm_backward_scatter), dy float32 and bf16, d = 384, 256 and 512,
// runs ending in partial blocks and passes; and rows not 16-byte aligned take the register kernels.
static void check_layernorm_pipe() {
  const bool process = rt::cuda::ln_pipe();
  for (const int d : {384, 256, 512})
    for (const bool half : {false, true}) {
      const int ns = 16, np = 32, Bs = 37, n2 = 1000, N = Bs * np + n2;
      const size_t Nd = static_cast<size_t>(N) * d, n2d = static_cast<size_t>(n2) * d;
      const VF x = randv(Nd, 191, -2, 3), w = randv(d, 192), b = randv(d, 193), dh = rounded(randv(Nd, 194));
      const VF dres = randv(Nd, 195);
      Dev gx(x), gw(w), gb(b), gy(Nd), gm(N), gr(N), gdh(dh), gres(dres);
      DevBf hdh(Nd);
      upload_bf16(hdh, dh);
      rt::cuda::layernorm_forward(gx.p, gw.p, gb.p, gy.p, gm.p, gr.p, N, d);
      const float* dy = half ? reinterpret_cast<const float*>(hdh.p) : gdh.p;
      const size_t off = static_cast<size_t>(Bs) * np * d;  // the plain run's first row
      const int r1 = rt::cuda::layernorm_part_rows(Bs * np, d), r2 = rt::cuda::layernorm_part_rows(n2, d);
      struct Got { VF dx, dxa, dx0, sdy, sdX, pw, pb; std::vector<uint16_t> tw; };
      auto run = [&](bool pipe) {
        rt::cuda::set_ln_pipe(pipe);
        const size_t dys = 2 * static_cast<size_t>(ns) * d;
        Dev sdy(Bs * dys), sdX(static_cast<size_t>(Bs) * (np - ns) * d), sdY(randv(Bs * dys, 198));
        RT_CU(cudaMemset(sdX.p, 0, sdX.n * 4));
        const rt::BackScatter sc = test_scatter(sdy, sdX, sdY, ns, np, d);
        Dev pw(static_cast<size_t>(r1 + 3 * r2) * d), pb(pw.n), dx(n2d), dxa(randv(n2d, 199)), dx0(n2d);
        DevBf tw(n2d);
        rt::cuda::layernorm_backward_scatter(gx.p, gw.p, gm.p, gr.p, dy, gres.p, sc, Bs, d, nullptr, half, {pw.p, pb.p});
        auto parts = [&](int k) {
          const size_t at = static_cast<size_t>(r1 + k * r2) * d;
          return rt::LnParts{pw.p + at, pb.p + at};
        };
        const float* dyp = half ? reinterpret_cast<const float*>(hdh.p + off) : gdh.p + off;
        rt::cuda::layernorm_backward_res(gx.p + off, gw.p, gm.p + Bs * np, gr.p + Bs * np, dyp, gres.p + off, dx.p,
                                         nullptr, nullptr, n2, d, tw.p, half, parts(0));
        rt::cuda::layernorm_backward_res(gx.p + off, gw.p, gm.p + Bs * np, gr.p + Bs * np, dyp, dxa.p, dxa.p, nullptr,
                                         nullptr, n2, d, nullptr, half, parts(1));
        rt::cuda::layernorm_backward_res(gx.p + off, gw.p, gm.p + Bs * np, gr.p + Bs * np, dyp, nullptr, dx0.p, nullptr,
                                         nullptr, n2, d, nullptr, half, parts(2));
        rt::cuda::set_ln_pipe(process);
        return Got{dx.get(), dxa.get(), dx0.get(), sdy.get(), sdX.get(), pw.get(), pb.get(), tw.get()};
      };
      const Got a = run(false), c = run(true);
      auto same = [](const VF& u, const VF& v) { return u.size() == v.size() && std::memcmp(u.data(), v.data(), u.size() * 4) == 0; };
      const std::string what = " d=" + std::to_string(d) + (half ? " bf16 dy" : "");
      expect_le(same(a.dx, c.dx) && a.tw == c.tw ? 0 : 1, 0, "layernorm backward pipelined = register kernel: dx, twin" + what);
      expect_le(same(a.dxa, c.dxa) ? 0 : 1, 0, "layernorm backward pipelined = register kernel: dres = dx" + what);
      expect_le(same(a.dx0, c.dx0) ? 0 : 1, 0, "layernorm backward pipelined = register kernel: no dres" + what);
      expect_le(same(a.sdy, c.sdy) && same(a.sdX, c.sdX) ? 0 : 1, 0,
                "layernorm backward pipelined = register kernel: scattered dy, dX" + what);
      expect_le(same(a.pw, c.pw) && same(a.pb, c.pb) ? 0 : 1, 0,
                "layernorm backward pipelined = register kernel: partial sums" + what);
    }
  // x off 16-byte alignment: the register kernel, the same values.
  {
    const int n = 300, d = 384;
    const size_t nd = static_cast<size_t>(n) * d;
    const VF x = randv(nd, 201, -2, 3), w = randv(d, 202), b = randv(d, 203), dy = randv(nd, 204);
    VF xs(nd + 1, 0.0f);
    std::copy(x.begin(), x.end(), xs.begin() + 1);
    Dev gx(x), gxs(xs), gw(w), gb(b), gy(nd), gm(n), gr(n), gdy(dy), dx1(nd), dx2(nd);
    rt::cuda::layernorm_forward(gx.p, gw.p, gb.p, gy.p, gm.p, gr.p, n, d);
    const int rows = rt::cuda::layernorm_part_rows(n, d);
    Dev p1(static_cast<size_t>(rows) * d), q1(p1.n), p2(p1.n), q2(p1.n);
    rt::cuda::set_ln_pipe(false);
    rt::cuda::layernorm_backward_res(gx.p, gw.p, gm.p, gr.p, gdy.p, nullptr, dx1.p, nullptr, nullptr, n, d, nullptr,
                                     false, {p1.p, q1.p});
    rt::cuda::set_ln_pipe(true);
    rt::cuda::layernorm_backward_res(gxs.p + 1, gw.p, gm.p, gr.p, gdy.p, nullptr, dx2.p, nullptr, nullptr, n, d, nullptr,
                                     false, {p2.p, q2.p});
    rt::cuda::set_ln_pipe(process);
    const VF a = dx1.get(), c = dx2.get(), e = p1.get(), f = p2.get();
    expect_le(std::memcmp(a.data(), c.data(), a.size() * 4) == 0 && std::memcmp(e.data(), f.data(), e.size() * 4) == 0
                  ? 0 : 1, 0, "layernorm backward pipelined: x off 16-byte alignment, the register kernel's bits");
  }
}

// The LayerNorm backward from a bf16 dy (Backend::block_dh_half) gives the bits of a float32 dy holding the same
// values: dx, its twin, and dw, db over rows with a partial chunk; the register kernel (d = 384) and the
// generic one (d = 100).
static void check_layernorm_half_dy() {
  for (const int d : {384, 100}) {
    const int n = 1000;
    const VF x = randv(static_cast<size_t>(n) * d, 151, -2, 3), w = randv(d, 152), b = randv(d, 153);
    const VF dy = rounded(randv(x.size(), 154)), dres = randv(x.size(), 155), dw0 = randv(d, 156), db0 = randv(d, 157);
    Dev gx(x), gw(w), gb(b), gy(x.size()), gm(n), gr(n), gdy(dy), gres(dres);
    DevBf hdy(dy.size());
    upload_bf16(hdy, dy);
    rt::cuda::layernorm_forward(gx.p, gw.p, gb.p, gy.p, gm.p, gr.p, n, d);
    Dev dx1(x.size()), dx2(x.size()), dw1(dw0), dw2(dw0), db1(db0), db2(db0);
    DevBf t1(x.size()), t2(x.size());
    rt::cuda::layernorm_backward_res(gx.p, gw.p, gm.p, gr.p, gdy.p, gres.p, dx1.p, dw1.p, db1.p, n, d, t1.p);
    rt::cuda::layernorm_backward_res(gx.p, gw.p, gm.p, gr.p, reinterpret_cast<const float*>(hdy.p), gres.p, dx2.p, dw2.p,
                                     db2.p, n, d, t2.p, true);
    const VF a1 = dx1.get(), a2 = dx2.get(), w1 = dw1.get(), w2 = dw2.get(), b1 = db1.get(), b2 = db2.get();
    const bool same = std::memcmp(a1.data(), a2.data(), a1.size() * 4) == 0 && t1.get() == t2.get() &&
                      std::memcmp(w1.data(), w2.data(), w1.size() * 4) == 0 &&
                      std::memcmp(b1.data(), b2.data(), b1.size() * 4) == 0;
    expect_le(same ? 0 : 1, 0, "layernorm_backward from a bf16 dy = from its float32 values, dx, twin, dw, db d=" +
                                   std::to_string(d));
  }
}

// The activations in the TMA product's epilogue (gemm's act): the same bits as the product alone followed by
// activation.cu's pass over its bf16 output. Forward (c_fc, Backend::linear_forward_act_half): C and act(C);
// backward (mlp c_proj's dx, linear_backward_dx_act_half): act'(x) times the rounded product. With dgelu
// (RT_CUDA_KEEP_DGELU) the forward's C is GELU'(C) (gelu_forward_dact's bits) and the backward's x times the rounded
// product (mul_backward's). Staged, the
// fused kernel must have launched where the shape allows it (the backward on 128- or, with RT_CUDA_TMA_X96,
// 96-wide tiles: not the 192-wide K = 1536 shape); with the staged epilogue off, the pass does it. Shapes: the char config's, row and column
// tails, and a product on 192-wide tiles.
static void check_gemm_act() {
  if (!(rt::cuda::limits().cc == 90 && rt::cuda::wgmma_enabled())) return;
  struct Case { int M, N, K; };
  const ProductModes process;
  // 128-wide tiles; the forward on 96-wide ones; the backward on 96-wide ones (RT_CUDA_TMA_X96: x's tile in three
  // 32-column boxes), where it evaluates act' (1, the default) and also where it multiplies by a kept GELU' (2)
  for (const int tiles : {0, 1, 2, 3})
  // staged by the engine; the direct epilogue (the pass)
  for (const int mode : {1, 0}) {
    const bool staged = mode > 0;
    const int bn96 = tiles == 1 ? 2 : 0;
    const int x96 = tiles == 2 ? 1 : tiles == 3 ? 2 : 0;
    ProductModes::set(staged, bn96, false, x96);
    // 4096 x 1536 over K = 64 and 96: one and two K steps, more tiles than blocks (the ring at its tightest, both
    // named barriers); N = 296: x's second 64-column box wholly past N (on 96-wide tiles the last tile's second and
    // third 32-column boxes)
    for (const Case c : {Case{8192, 1536, 384}, Case{1000, 328, 200}, Case{777, 2000, 96}, Case{8192, 384, 1536},
                         Case{4096, 1536, 64}, Case{4096, 1536, 96}, Case{2048, 296, 200}})
      for (const bool backward : {false, true})
        for (const int kind : {0, 1, 2}) {  // GELU, ReLU, GELU with its derivative kept (dgelu)
          const bool gelu = kind != 1, dgelu = kind == 2;
          if (x96 && !backward) continue;  // (the forward as at tiles 0: the switch is the backward's)
          if (x96 == 2 && !dgelu) continue;  // (act' as at x96 1: mode 2 moves only the multiply)
          const size_t mn = static_cast<size_t>(c.M) * c.N;
          const VF a = rounded(randv(static_cast<size_t>(c.M) * c.K, 141, -2, 2));
          DevBf A(a.size()), X(mn), C0(mn), C1(mn), G0(mn), G1(mn);
          upload_bf16(A, a);
          upload_bf16(X, rounded(randv(mn, 144, -4, 4)));
          Dev W(randv(static_cast<size_t>(c.N) * c.K, 142, -0.2f, 0.2f)), b(randv(c.N, 143));
          // forward: C = A W^T + b (W: N x K); backward: C = A W (W: K x N), no bias
          auto product = [&](DevBf& C, const rt::cuda::GemmAct* act) {
            rt::cuda::gemm(true, false, !backward, c.M, c.N, c.K, 1.0f, nullptr, c.K, W.p, backward ? c.N : c.K, 0.0f,
                           reinterpret_cast<float*>(C.p), c.N, backward ? nullptr : b.p, nullptr, nullptr, A.p, true, act);
          };
          use({rt::cuda::GemmKernel::Wgmma, "wgmma"});
          const long launched = rt::cuda::tma_launches(), fused = rt::cuda::tma_act_launches(),
                     narrow = rt::cuda::tma_x96_launches();
          product(C0, nullptr);
          const float* c0 = reinterpret_cast<const float*>(C0.p);
          const float* x = reinterpret_cast<const float*>(X.p);
          DevBf D(dgelu && !backward ? mn : 1);  // the pass's GELU'(C), from a copy of C
          if (dgelu && !backward) {
            RT_CU(cudaMemcpyAsync(D.p, C0.p, mn * 2, cudaMemcpyDeviceToDevice, rt::cuda::stream()));
            rt::cuda::gelu_forward_dact(D.p, G0.p, mn);
          } else if (backward) {
            if (dgelu) rt::cuda::mul_backward(x, c0, nullptr, mn, G0.p, true, true);
            else if (gelu) rt::cuda::gelu_backward(x, c0, nullptr, mn, G0.p, true, true, true);
            else rt::cuda::relu_backward(x, c0, nullptr, mn, G0.p, true, true);
          } else if (gelu) {
            rt::cuda::gelu_forward(c0, nullptr, mn, G0.p, true, true);
          } else {
            rt::cuda::relu_forward(c0, nullptr, mn, G0.p, true);
          }
          // gelu_forward_dact's GELU and GELU' against the passes without the derivative kept (GELU' as the gradient
          // of a 1): the same bits from its one phi_fast. Once a shape: the passes do not depend on the product's
          // mode or tiles.
          if (dgelu && !backward && tiles == 0 && mode == 0) {
            DevBf E(mn), F(mn);
            const Dev ones(VF(mn, 1.0f));
            rt::cuda::gelu_forward(c0, nullptr, mn, E.p, true, true);
            rt::cuda::gelu_backward(c0, ones.p, nullptr, mn, F.p, true, true, false);
            expect_le(E.get() == G0.get() ? 0 : 1, 0, "gelu_forward_dact: GELU's bits = gelu_forward's " + shape(c.M, c.N, c.K));
            expect_le(F.get() == D.get() ? 0 : 1, 0,
                      "gelu_forward_dact: GELU''s bits = gelu_backward's of a 1 " + shape(c.M, c.N, c.K));
          }
          const rt::cuda::GemmAct act{backward ? nullptr : G1.p, gelu, backward ? X.p : nullptr, dgelu};
          product(C1, &act);
          // (gemm_tma's rule: 192-wide tiles for 128 < N <= 384 with K > 512; none of these is split over K)
          const bool wide = c.N > 128 && c.N <= 384 && c.K > 512, want = staged && !(backward && wide);
          const std::string what = std::string(backward ? " backward" : " forward") +
                                   (dgelu ? " gelu (derivative kept) " : gelu ? " gelu " : " relu ") +
                                   shape(c.M, c.N, c.K) +
                                   (mode == 0 ? ", through the pass" : ", staged epilogue") +
                                   (bn96 ? ", 96-wide tiles" : "") +
                                   (x96 ? ", the backward on 96-wide tiles (x96 " + std::to_string(x96) + ")" : "");
          expect_le(std::labs(rt::cuda::tma_launches() - launched - 2), 0, "gemm with act: the TMA kernel launched" + what);
          expect_le(std::labs(rt::cuda::tma_act_launches() - fused - (want ? 1 : 0)), 0,
                    std::string("gemm with act: ") + (want ? "applied in the epilogue" : "left to the pass") + what);
          // RT_CUDA_TMA_X96: the backward's fused product on 96-wide tiles wherever it is fused (not split)
          const bool on96 = x96 && backward && want && (!dgelu || x96 == 2);
          expect_le(std::labs(rt::cuda::tma_x96_launches() - narrow - (on96 ? 1 : 0)), 0,
                    std::string("gemm with act: ") + (on96 ? "on 96-wide tiles" : "not on 96-wide tiles") + what);
          use({rt::cuda::GemmKernel::Auto, "auto"});
          if (backward) {  // C1 holds act'(x) C: the pass's output
            expect_le(C1.get() == G0.get() ? 0 : 1, 0, "gemm with act: act'(x) C's bits = the pass's" + what);
          } else if (dgelu) {
            expect_le(D.get() == C1.get() ? 0 : 1, 0, "gemm with act: GELU'(C)'s bits = the pass's" + what);
            expect_le(G0.get() == G1.get() ? 0 : 1, 0, "gemm with act: act(C)'s bits = the pass's" + what);
          } else {
            expect_le(C0.get() == C1.get() ? 0 : 1, 0, "gemm with act: C's bits" + what);
            expect_le(G0.get() == G1.get() ? 0 : 1, 0, "gemm with act: act(C)'s bits = the pass's" + what);
          }
        }
  }
}

// The attention backward from a bf16 dout (Backend::block_datt_half) gives the bits of a float32 dout holding the
// same values: dqkv and its twin, on the tensor-core kernel (the char config's window pair, two heads a block;
// the copy config's) with and without dropout, and through the float32 copy on a shape it does not take (n = 40).
static void check_attention_half_dout() {
  struct Case { int B, n, d, H; float p; };
  for (const Case c : {Case{64, 32, 384, 6, 0.0f}, Case{64, 32, 384, 6, 0.1f}, Case{16, 64, 96, 6, 0.0f},
                       Case{8, 40, 64, 4, 0.0f}})
    for (const bool qh : {false, true}) {
      const size_t nq = static_cast<size_t>(c.B) * c.n * 3 * c.d, no = static_cast<size_t>(c.B) * c.n * c.d;
      const VF qkv = rounded(randv(nq, 201)), dout = rounded(randv(no, 202));
      Dev gq(qkv), gp(static_cast<size_t>(c.B) * c.H * c.n * c.n), go(no), gdo(dout), d1(nq), d2(nq);
      DevBf hq(nq), hdo(no), t1(nq), t2(nq);
      upload_bf16(hq, qkv);
      upload_bf16(hdo, dout);
      const float* q = qh ? reinterpret_cast<const float*>(hq.p) : gq.p;
      const bool twins = rt::cuda::attention_writes_twin(true, c.n, c.d, c.H);
      rt::cuda::attention_forward(true, q, gp.p, go.p, c.B, c.n, c.d, c.H, c.p, 5, 6, nullptr, qh);
      rt::cuda::attention_backward(true, q, gp.p, gdo.p, d1.p, c.B, c.n, c.d, c.H, c.p, 5, 6, twins ? t1.p : nullptr, qh);
      rt::cuda::attention_backward(true, q, gp.p, reinterpret_cast<const float*>(hdo.p), d2.p, c.B, c.n, c.d, c.H, c.p, 5,
                                   6, twins ? t2.p : nullptr, qh, true);
      const VF a = d1.get(), b = d2.get();
      const bool same = std::memcmp(a.data(), b.data(), a.size() * 4) == 0 && (!twins || t1.get() == t2.get());
      expect_le(same ? 0 : 1, 0,
                "attention_backward from a bf16 dout = from its float32 values B=" + std::to_string(c.B) +
                    " n=" + std::to_string(c.n) + " d=" + std::to_string(c.d) + " p=" + std::to_string(c.p) +
                    (qh ? " bf16 qkv" : "") + (twins ? " (tensor cores, twin)" : " (float32 copy)"));
    }
}

// The persistent tensor-core attention (RT_CUDA_ATTN_PERSIST, forward_heads_persist, backward_heads_persist)
// gives the bits of the kernels of a block a unit: probs, out and its twin from a bf16 qkv; dqkv and its twin
// from a bf16 qkv and dout; with and without dropout; two heads a block (n <= 32, the char config's) and one
// (the copy config's n = 64), a window shorter than the pair's rows (n = 16), units that do not fill the last
// round; one block an SM (many units a block) and three.
static void check_attention_persist() {
  struct Case { int B, n, d, H; float p; };
  const int process = rt::cuda::attn_persist(), async = rt::cuda::attn_async(), stages = rt::cuda::attn_stages();
  rt::cuda::set_attn_async(0, stages);  // the forward's persistent kernel, not the cp.async one that takes its calls
  for (const Case c : {Case{256, 32, 384, 6, 0.0f}, Case{64, 32, 384, 6, 0.1f}, Case{16, 64, 96, 6, 0.0f},
                       Case{8, 16, 128, 2, 0.1f}, Case{5, 32, 128, 2, 0.0f}, Case{7, 48, 128, 4, 0.0f}})
    for (const int per_sm : {1, 3}) {
      if (!rt::cuda::attention_writes_twin(true, c.n, c.d, c.H)) continue;
      const size_t nq = static_cast<size_t>(c.B) * c.n * 3 * c.d, no = static_cast<size_t>(c.B) * c.n * c.d;
      const size_t np = static_cast<size_t>(c.B) * c.H * c.n * c.n;
      DevBf hq(nq), t0(no), t1(no);
      upload_bf16(hq, rounded(randv(nq, 211)));
      Dev p0(np), p1(np), o0(no), o1(no);
      const float* q = reinterpret_cast<const float*>(hq.p);
      rt::cuda::set_attn_persist(0);
      rt::cuda::attention_forward(true, q, p0.p, o0.p, c.B, c.n, c.d, c.H, c.p, 3, 4, t0.p, true);
      rt::cuda::set_attn_persist(per_sm);
      rt::cuda::attention_forward(true, q, p1.p, o1.p, c.B, c.n, c.d, c.H, c.p, 3, 4, t1.p, true);
      rt::cuda::set_attn_persist(process);
      const VF a = p0.get(), b = p1.get(), x = o0.get(), y = o1.get();
      const bool same = std::memcmp(a.data(), b.data(), a.size() * 4) == 0 &&
                        std::memcmp(x.data(), y.data(), x.size() * 4) == 0 && t0.get() == t1.get();
      const std::string what = " persistent = a block a unit, B=" + std::to_string(c.B) + " n=" + std::to_string(c.n) +
                               " d=" + std::to_string(c.d) + " H=" + std::to_string(c.H) + " p=" + std::to_string(c.p) +
                               ", " + std::to_string(per_sm) + " blocks an SM";
      expect_le(same ? 0 : 1, 0, "attention_forward" + what);
      DevBf hdo(no), u0(nq), u1(nq);
      upload_bf16(hdo, rounded(randv(no, 212)));
      Dev g0(nq), g1(nq);
      const float* dout = reinterpret_cast<const float*>(hdo.p);
      rt::cuda::set_attn_persist(0);
      rt::cuda::attention_backward(true, q, p0.p, dout, g0.p, c.B, c.n, c.d, c.H, c.p, 3, 4, u0.p, true, true);
      rt::cuda::set_attn_persist(per_sm);
      rt::cuda::attention_backward(true, q, p0.p, dout, g1.p, c.B, c.n, c.d, c.H, c.p, 3, 4, u1.p, true, true);
      rt::cuda::set_attn_persist(process);
      const VF e = g0.get(), f = g1.get();
      const bool same_b = std::memcmp(e.data(), f.data(), e.size() * 4) == 0 && u0.get() == u1.get();
      expect_le(same_b ? 0 : 1, 0, "attention_backward" + what);
    }
  rt::cuda::set_attn_async(async, stages);
}

// The cp.async forward (RT_CUDA_ATTN_ASYNC, forward_heads_async) gives the bits of the kernel of a block a unit:
// probs, out and its twin, the shapes of check_attention_persist, with 2 and 3 stages, one block an SM (many units
// a block, every stage reused) and two; and a qkv that is not 16-byte aligned goes to the other kernels.
static void check_attention_async() {
  struct Case { int B, n, d, H; float p; };
  const int persist = rt::cuda::attn_persist(), async = rt::cuda::attn_async(), stages = rt::cuda::attn_stages();
  for (const Case c : {Case{256, 32, 384, 6, 0.0f}, Case{64, 32, 384, 6, 0.1f}, Case{16, 64, 96, 6, 0.0f},
                       Case{8, 16, 128, 2, 0.1f}, Case{5, 32, 128, 2, 0.0f}, Case{7, 48, 128, 4, 0.0f},
                       Case{9, 64, 192, 6, 0.1f}})
    for (const int st : {2, 3})
      for (const int per_sm : {1, 2}) {
        if (!rt::cuda::attention_writes_twin(true, c.n, c.d, c.H)) continue;
        const size_t nq = static_cast<size_t>(c.B) * c.n * 3 * c.d, no = static_cast<size_t>(c.B) * c.n * c.d;
        const size_t np = static_cast<size_t>(c.B) * c.H * c.n * c.n;
        DevBf hq(nq), t0(no), t1(no);
        const VF qv = rounded(randv(nq, 213));
        upload_bf16(hq, qv);
        Dev p0(np), p1(np), o0(no), o1(no);
        const float* q = reinterpret_cast<const float*>(hq.p);
        rt::cuda::set_attn_async(0, stages);
        rt::cuda::set_attn_persist(0);
        rt::cuda::attention_forward(true, q, p0.p, o0.p, c.B, c.n, c.d, c.H, c.p, 3, 4, t0.p, true);
        rt::cuda::set_attn_persist(persist);
        rt::cuda::set_attn_async(per_sm, st);
        rt::cuda::attention_forward(true, q, p1.p, o1.p, c.B, c.n, c.d, c.H, c.p, 3, 4, t1.p, true);
        rt::cuda::set_attn_async(async, stages);
        const VF a = p0.get(), b = p1.get(), x = o0.get(), y = o1.get();
        const bool same = std::memcmp(a.data(), b.data(), a.size() * 4) == 0 &&
                          std::memcmp(x.data(), y.data(), x.size() * 4) == 0 && t0.get() == t1.get();
        expect_le(same ? 0 : 1, 0,
                  "attention_forward cp.async = a block a unit, B=" + std::to_string(c.B) + " n=" + std::to_string(c.n) +
                      " d=" + std::to_string(c.d) + " H=" + std::to_string(c.H) + " p=" + std::to_string(c.p) + ", " +
                      std::to_string(st) + " stages, " + std::to_string(per_sm) + " blocks an SM");
      }
  // A qkv 8 bytes past 16-byte alignment: the async kernel is passed over, the values still right.
  {
    const Case c{16, 32, 384, 6, 0.0f};
    const size_t nq = static_cast<size_t>(c.B) * c.n * 3 * c.d, no = static_cast<size_t>(c.B) * c.n * c.d;
    const size_t np = static_cast<size_t>(c.B) * c.H * c.n * c.n;
    const VF qv = rounded(randv(nq, 214));
    DevBf h0(nq), h1(nq + 8), t0(no), t1(no);
    upload_bf16(h0, qv);
    VF shifted(nq + 8, 0.0f);
    std::copy(qv.begin(), qv.end(), shifted.begin() + 4);
    upload_bf16(h1, shifted);
    Dev p0(np), p1(np), o0(no), o1(no);
    rt::cuda::set_attn_async(0, stages);
    rt::cuda::attention_forward(true, reinterpret_cast<const float*>(h0.p), p0.p, o0.p, c.B, c.n, c.d, c.H, c.p, 3, 4,
                                t0.p, true);
    rt::cuda::set_attn_async(1, 3);
    rt::cuda::attention_forward(true, reinterpret_cast<const float*>(h1.p + 4), p1.p, o1.p, c.B, c.n, c.d, c.H, c.p, 3,
                                4, t1.p, true);
    rt::cuda::set_attn_async(async, stages);
    const VF a = p0.get(), b = p1.get();
    expect_le(std::memcmp(a.data(), b.data(), a.size() * 4) == 0 && t0.get() == t1.get() ? 0 : 1, 0,
              "attention_forward cp.async: a qkv off 16-byte alignment gives the same bits by the other kernels");
  }
}

// The backward with probs null recomputes the probabilities (probs_rows_mma) with the bits the forward wrote: dqkv
// and its twin the same as from the forward's probs, on the kernel of a block a unit (float32 and bf16 qkv and dout)
// and the persistent one (one and three blocks an SM); the forward with probs null gives out and its twin unchanged
// (block a unit, persistent, cp.async); and a null probs where the float32 kernels would run is refused.
static void check_attention_recompute() {
  struct Case { int B, n, d, H; float p; };
  const int persist = rt::cuda::attn_persist(), async = rt::cuda::attn_async(), stages = rt::cuda::attn_stages();
  for (const Case c : {Case{256, 32, 384, 6, 0.0f}, Case{64, 32, 384, 6, 0.1f}, Case{16, 64, 96, 6, 0.0f},
                       Case{16, 64, 96, 6, 0.1f}, Case{8, 16, 128, 2, 0.1f}, Case{5, 32, 128, 2, 0.0f},
                       Case{7, 48, 128, 4, 0.1f}, Case{9, 64, 192, 6, 0.0f}}) {
    if (!rt::cuda::attention_recomputes_probs(true, c.n, c.d, c.H)) {
      expect_le(1, 0, "attention_recomputes_probs for a tensor-core shape n=" + std::to_string(c.n));
      continue;
    }
    const size_t nq = static_cast<size_t>(c.B) * c.n * 3 * c.d, no = static_cast<size_t>(c.B) * c.n * c.d;
    const size_t np = static_cast<size_t>(c.B) * c.H * c.n * c.n;
    const VF qv = rounded(randv(nq, 221)), dv = rounded(randv(no, 222));
    Dev fq(qv), fdo(dv), pr(np);
    DevBf hq(nq), hdo(no);
    upload_bf16(hq, qv);
    upload_bf16(hdo, dv);
    const std::string shape = " B=" + std::to_string(c.B) + " n=" + std::to_string(c.n) + " d=" + std::to_string(c.d) +
                              " H=" + std::to_string(c.H) + " p=" + std::to_string(c.p);
    struct Fwd { int persist, async; };
    for (const Fwd f : {Fwd{0, 0}, Fwd{2, 0}, Fwd{0, 3}}) {
      Dev o0(no), o1(no);
      DevBf t0(no), t1(no);
      const float* q = reinterpret_cast<const float*>(hq.p);
      rt::cuda::set_attn_persist(f.persist);
      rt::cuda::set_attn_async(f.async, stages);
      rt::cuda::attention_forward(true, q, pr.p, o0.p, c.B, c.n, c.d, c.H, c.p, 7, 8, t0.p, true);
      rt::cuda::attention_forward(true, q, nullptr, o1.p, c.B, c.n, c.d, c.H, c.p, 7, 8, t1.p, true);
      const VF a = o0.get(), b = o1.get();
      expect_le(std::memcmp(a.data(), b.data(), a.size() * 4) == 0 && t0.get() == t1.get() ? 0 : 1, 0,
                "attention_forward without probs = with" + shape + " persist " + std::to_string(f.persist) +
                    " async " + std::to_string(f.async));
    }
    rt::cuda::set_attn_async(async, stages);
    struct Bwd { int persist; bool qh, dh; };
    for (const Bwd k : {Bwd{0, false, false}, Bwd{0, true, false}, Bwd{0, true, true}, Bwd{1, true, true},
                        Bwd{3, true, true}}) {
      const float* q = k.qh ? reinterpret_cast<const float*>(hq.p) : fq.p;
      const float* dout = k.dh ? reinterpret_cast<const float*>(hdo.p) : fdo.p;
      Dev g0(nq), g1(nq);
      DevBf u0(nq), u1(nq);
      rt::cuda::set_attn_persist(k.persist);
      rt::cuda::attention_backward(true, q, pr.p, dout, g0.p, c.B, c.n, c.d, c.H, c.p, 7, 8, u0.p, k.qh, k.dh);
      rt::cuda::attention_backward(true, q, nullptr, dout, g1.p, c.B, c.n, c.d, c.H, c.p, 7, 8, u1.p, k.qh, k.dh);
      const VF e = g0.get(), f = g1.get();
      expect_le(std::memcmp(e.data(), f.data(), e.size() * 4) == 0 && u0.get() == u1.get() ? 0 : 1, 0,
                "attention_backward recomputing probs = from the forward's" + shape + " persist " +
                    std::to_string(k.persist) + (k.qh ? " bf16 qkv" : "") + (k.dh ? " bf16 dout" : ""));
    }
    rt::cuda::set_attn_persist(persist);
  }
  // n = 40 is no tensor-core shape: the float32 kernels need probs, and a null one is refused with a message.
  {
    const Case c{4, 40, 64, 4, 0.0f};
    const size_t nq = static_cast<size_t>(c.B) * c.n * 3 * c.d, no = static_cast<size_t>(c.B) * c.n * c.d;
    Dev q(randv(nq, 223)), o(no), dq(nq);
    expect_le(rt::cuda::attention_recomputes_probs(true, c.n, c.d, c.H) ? 1 : 0, 0,
              "attention_recomputes_probs is false for n=40");
    for (const bool fwd : {true, false}) {
      std::string msg;
      try {
        if (fwd) rt::cuda::attention_forward(true, q.p, nullptr, o.p, c.B, c.n, c.d, c.H, c.p, 1, 2);
        else rt::cuda::attention_backward(true, q.p, nullptr, o.p, dq.p, c.B, c.n, c.d, c.H, c.p, 1, 2);
      } catch (const std::exception& e) {
        msg = e.what();
      }
      expect_le(msg.find("probs is null") != std::string::npos ? 0 : 1, 0,
                std::string(fwd ? "attention_forward" : "attention_backward") + " refuses a null probs for n=40: '" +
                    msg + "'");
    }
  }
}

static void check_half_buffers() {
  check_tma_bits();
  check_gemm_act();
  check_attention_half_dout();
  check_attention_persist();
  check_attention_async();
  check_attention_recompute();
  check_layernorm_half_dy();
  check_glue_twin();
  check_layernorm_glue();
  check_layernorm_back_glue();
  check_layernorm_parts();
  check_layernorm_pipe();
  check_adamw_empty();
  check_layernorm_null_dres();
  check_weight_copies();
  check_head_xent();
  check_activation_half_input();
  check_keep_bf16();
  check_bf16_only();
  struct Case { int n, in, out; bool dy_half; };
  for (const Case c : {Case{4003, 96, 288, true}, Case{4096, 96, 384, true}, Case{4000, 384, 96, false},
                       Case{70001, 96, 288, false}, Case{3001, 384, 1152, true}, Case{8, 8, 16, true},
                       Case{2999, 200, 328, true}, Case{3001, 1536, 384, false}}) {
    const std::string s = " n=" + std::to_string(c.n) + " in=" + std::to_string(c.in) + " out=" + std::to_string(c.out) +
                          (c.dy_half ? " (x, dy bf16)" : " (x bf16)");
    const VF x = rounded(randv(static_cast<size_t>(c.n) * c.in, 91));
    const VF dyf = randv(static_cast<size_t>(c.n) * c.out, 92), dy = c.dy_half ? rounded(dyf) : dyf;
    const VF dW0 = randv(static_cast<size_t>(c.out) * c.in, 93), db0 = randv(c.out, 94);
    VF dW = dW0, db = db0;
    rt::cpu::linear_backward(x.data(), x.data(), dy.data(), nullptr, dW.data(), db.data(), c.n, c.in, c.out);
    Dev gx(x), gdy(dy), fW(dW0), fb(db0), hW(dW0), hb(db0);
    DevBf hx(x.size()), hdy(c.dy_half ? dy.size() : 0);
    upload_bf16(hx, x);
    if (c.dy_half) upload_bf16(hdy, dy);
    rt::cuda::linear_weight_grad(gx.p, gdy.p, fW.p, fb.p, c.n, c.in, c.out);
    rt::cuda::linear_weight_grad(hx.p, true, c.dy_half ? static_cast<const void*>(hdy.p) : gdy.p, c.dy_half, hW.p, hb.p,
                                 c.n, c.in, c.out);
    const VF a = fW.get(), b = hW.get(), da = fb.get(), dbh = hb.get();
    check(b, dW, true, "weight_grad bf16 operands dW" + s);
    check(dbh, db, false, "weight_grad bf16 operands db" + s);
    // weight_grad_sm90.cu sums a bf16 dy's columns from its staged tiles and a float32 one's as it casts it:
    // the same values in another order, so there db is held to the tolerance above, not to the bits.
    const bool db_bits = !c.dy_half || !rt::cuda::weight_grad_sm90_takes(hx.p, hdy.p, c.n, c.in, c.out);
    expect_le(std::memcmp(a.data(), b.data(), a.size() * 4) == 0 &&
                      (!db_bits || std::memcmp(da.data(), dbh.data(), da.size() * 4) == 0)
                  ? 0 : 1, 0, std::string("weight_grad bf16 operands: the bits of float32 ones") + (db_bits ? "" : " (dW)") + s);
    const void* hdy_or_f = c.dy_half ? static_cast<const void*>(hdy.p) : gdy.p;
    if (rt::cuda::weight_grad_sm90_takes(hx.p, hdy_or_f, c.n, c.in, c.out)) {
      // The stages by the copy engine (RT_CUDA_DW_TMA): the same bytes in the same places, so cp.async's bits. Each
      // side with its switch set here (hW above ran with the process's default, which is the copy engine's).
      Dev cW(dW0), cb(db0), tW(dW0), tb(db0);
      const bool was = rt::cuda::weight_grad_sm90_tma();
      rt::cuda::set_weight_grad_sm90_tma(false);
      rt::cuda::linear_weight_grad(hx.p, true, hdy_or_f, c.dy_half, cW.p, cb.p, c.n, c.in, c.out);
      const long before = rt::cuda::weight_grad_sm90_tma_launches();
      rt::cuda::set_weight_grad_sm90_tma(true);
      rt::cuda::linear_weight_grad(hx.p, true, hdy_or_f, c.dy_half, tW.p, tb.p, c.n, c.in, c.out);
      rt::cuda::set_weight_grad_sm90_tma(was);
      const VF ca = cW.get(), cdb = cb.get(), ta = tW.get(), tdb = tb.get();
      expect_le(rt::cuda::weight_grad_sm90_tma_launches() > before ? 0 : 1, 0, "weight_grad_sm90 TMA stages launched" + s);
      const bool same = std::memcmp(ta.data(), ca.data(), ca.size() * 4) == 0 &&
                        std::memcmp(tdb.data(), cdb.data(), cdb.size() * 4) == 0;
      expect_le(same ? 0 : 1, 0, "weight_grad_sm90 TMA stages: the bits of cp.async's" + s);
    }
  }
  for (const int n : {64, 32, 37}) {
    const int B = 6, d = 96, H = 6;
    const size_t nq = static_cast<size_t>(B) * n * 3 * d, no = static_cast<size_t>(B) * n * d;
    Dev gq(randv(nq, 95, -2, 2)), gp(static_cast<size_t>(B) * H * n * n), go(no), gdo(randv(no, 96)), gdq(nq);
    DevBf tw(nq), half(nq);
    const bool mma = rt::cuda::attention_writes_twin(true, n, d, H);
    rt::cuda::attention_forward(true, gq.p, gp.p, go.p, B, n, d, H, 0.1f, 7, 9);
    rt::cuda::attention_backward(true, gq.p, gp.p, gdo.p, gdq.p, B, n, d, H, 0.1f, 7, 9, mma ? tw.p : nullptr);
    rt::cuda::attention_backward_bf16(true, gq.p, gp.p, gdo.p, half.p, B, n, d, H, 0.1f, 7, 9);
    const std::string s = " n=" + std::to_string(n) + (mma ? " (tensor cores)" : " (through float32)");
    expect_twin(gdq, half, "attention_backward_bf16" + s);
    if (mma) {
      const std::vector<uint16_t> a = tw.get(), b = half.get();
      expect_le(a == b ? 0 : 1, 0, "attention_backward_bf16 = the float32 kernel's twin" + s);
    }
    // A bf16 qkv (BlockCache::half): the bits of a float32 qkv holding the same values, both ways.
    const VF qr = rounded(gq.get());
    Dev gqr(qr), p1(static_cast<size_t>(B) * H * n * n), p2(p1.n), o1(no), o2(no), d1(nq), d2(nq);
    DevBf hq(nq);
    upload_bf16(hq, qr);
    const float* hqf = reinterpret_cast<const float*>(hq.p);
    rt::cuda::attention_forward(true, gqr.p, p1.p, o1.p, B, n, d, H, 0.1f, 7, 9);
    rt::cuda::attention_forward(true, hqf, p2.p, o2.p, B, n, d, H, 0.1f, 7, 9, nullptr, true);
    rt::cuda::attention_backward(true, gqr.p, p1.p, gdo.p, d1.p, B, n, d, H, 0.1f, 7, 9);
    rt::cuda::attention_backward(true, hqf, p1.p, gdo.p, d2.p, B, n, d, H, 0.1f, 7, 9, nullptr, true);
    const VF a1 = p1.get(), a2 = p2.get(), b1 = o1.get(), b2 = o2.get(), c1 = d1.get(), c2 = d2.get();
    expect_le(std::memcmp(a1.data(), a2.data(), a1.size() * 4) == 0 && std::memcmp(b1.data(), b2.data(), b1.size() * 4) == 0
                  ? 0 : 1, 0, "attention_forward from a bf16 qkv = from its float32 values" + s);
    expect_le(std::memcmp(c1.data(), c2.data(), c1.size() * 4) == 0 ? 0 : 1, 0,
              "attention_backward from a bf16 qkv = from its float32 values" + s);
  }
}

// Embedding: the forward bit-identical to the CPU's (dropout included); the backward's gradients against the
// CPU's, and the token gradient bit-identical between two runs where the table fits a block (V * d small),
// the atomic path's to rounding. Shapes: the copy config's table, the char config's with positions, an odd
// width (no 16-byte path), a vocabulary too large for shared memory, and positions enough for the one-pass kernel
// (N >= the SMs: the char config's and an odd one, two positions a block) and too few (N = 37). Without dropout
// the position gradient is the CPU's sum in the CPU's order, so its bits.
static void check_embedding() {
  struct Case { int B, N, d, V; bool pos; float p; };
  for (const Case c : {Case{8, 300, 96, 16, false, 0.0f}, Case{4, 256, 384, 65, true, 0.1f}, Case{3, 37, 6, 11, true, 0.0f},
                       Case{2, 100, 64, 5000, false, 0.2f}, Case{19, 301, 50, 7, true, 0.0f}}) {
    const size_t rows = static_cast<size_t>(c.B) * c.N, n = rows * c.d;
    std::vector<int32_t> tok(rows);
    std::mt19937 g(static_cast<uint32_t>(c.V * 7 + c.d));
    for (auto& t : tok) t = static_cast<int32_t>(g() % c.V);
    const VF wte = randv(static_cast<size_t>(c.V) * c.d, 51), wpe = randv(static_cast<size_t>(c.N) * c.d, 52),
             dout = randv(n, 53);
    VF y(n), dwte(wte.size(), 0.0f), dwpe(wpe.size(), 0.0f);
    rt::cpu::embedding_forward(tok.data(), wte.data(), c.pos ? wpe.data() : nullptr, y.data(), c.B, c.N, c.d, c.V, c.p, 9, 3);
    rt::cpu::embedding_backward(tok.data(), dout.data(), dwte.data(), c.pos ? dwpe.data() : nullptr, c.B, c.N, c.d, c.p, 9, 3);
    int32_t* gt = nullptr;
    RT_CU(cudaMalloc(&gt, rows * sizeof(int32_t)));
    RT_CU(cudaMemcpy(gt, tok.data(), rows * sizeof(int32_t), cudaMemcpyHostToDevice));
    RT_CU(cudaDeviceSynchronize());
    Dev gwte(wte), gwpe(wpe), gy(n), gdout(dout);
    rt::cuda::embedding_forward(gt, gwte.p, c.pos ? gwpe.p : nullptr, gy.p, c.B, c.N, c.d, c.p, 9, 3);
    const std::string what = "embedding B=" + std::to_string(c.B) + " N=" + std::to_string(c.N) + " d=" +
                             std::to_string(c.d) + " V=" + std::to_string(c.V) + " p=" + std::to_string(c.p);
    const VF yg = gy.get();
    expect_le(std::memcmp(yg.data(), y.data(), n * 4) == 0 ? 0 : 1, 0, what + " forward bit-identical to the CPU");
    VF first;
    for (int run = 0; run < 2; ++run) {
      Dev gdwte(VF(wte.size(), 0.0f)), gdwpe(VF(wpe.size(), 0.0f));
      rt::cuda::embedding_backward(gt, gdout.p, gdwte.p, c.pos ? gdwpe.p : nullptr, c.B, c.N, c.d, c.V, c.p, 9, 3);
      const VF a = gdwte.get();
      if (run == 0) {
        check(a, dwte, false, what + " dwte");
        if (c.pos) {
          const VF gp = gdwpe.get();
          check(gp, dwpe, false, what + " dwpe");
          if (c.p == 0.0f)
            expect_le(std::memcmp(gp.data(), dwpe.data(), gp.size() * 4) == 0 ? 0 : 1, 0, what + " dwpe bit-identical to the CPU");
        }
        first = a;
      } else if (static_cast<size_t>(c.V) * c.d * 4 <= 200 * 1024) {  // the shared-table path
        expect_le(std::memcmp(a.data(), first.data(), a.size() * 4) == 0 ? 0 : 1, 0, what + " dwte the same bits twice");
      }
    }
    RT_CU(cudaFree(gt));
  }
}

// The char config's window products with bf16 operands as the layer feeds them (A its kept bf16 copy, B a
// weight copy: no casts timed), on matmul_tma_sm90.cu's kernel against matmul_sm90.cu's cp.async ones, plus a
// large square product, and the TMA kernel again with its staged epilogue; one JSON line.
static void bench_hopper_gemm() {
  if (!(rt::cuda::limits().cc == 90 && rt::cuda::wgmma_enabled())) return;
  struct G { const char* name; int M, N, K; };
  const G gs[] = {{"qkv_fwd", 8192, 1152, 384},  {"proj_fwd", 8192, 384, 384},   {"fc_fwd", 8192, 1536, 384},
                  {"proj2_fwd", 8192, 384, 1536}, {"qkv_dx", 8192, 384, 1152},   {"big_4096", 4096, 4096, 4096}};
  std::string json = "{\"bench\":\"hopper_gemm\",\"unit\":\"TFLOP/s\"";
  double flops_all = 0, ms_all[3] = {0, 0, 0};
  const bool process = rt::cuda::tma_store();
  for (const G& g : gs) {
    const VF a = rounded(randv(static_cast<size_t>(g.M) * g.K, 111));
    DevBf A(a.size());
    upload_bf16(A, a);
    Dev W(randv(static_cast<size_t>(g.N) * g.K, 112, -0.05f, 0.05f)), C(static_cast<size_t>(g.M) * g.N);
    const int out = g.N, in = g.K;
    Dev copies(rt::cuda::weight_copies_floats(&out, &in, 1));
    const float* w = W.p;
    rt::cuda::weight_copies_make(&w, &out, &in, 1, false, copies.p);
    double ms[3];  // the TMA kernel, the cp.async ones, the TMA kernel with its staged epilogue
    for (int v = 0; v < 3; ++v) {
      use({rt::cuda::GemmKernel::Auto, "auto", v != 1});
      rt::cuda::set_tma_store(v == 2);
      ms[v] = time_ms([&] {
        rt::cuda::gemm(true, false, true, g.M, g.N, g.K, 1.0f, nullptr, g.K, W.p, g.K, 0.0f, C.p, g.N, nullptr, nullptr,
                       nullptr, A.p);
      });
    }
    use({rt::cuda::GemmKernel::Auto, "auto"});
    rt::cuda::set_tma_store(process);
    rt::cuda::weight_copies_clear();
    const double f = 2.0 * g.M * g.N * g.K;
    if (std::strcmp(g.name, "big_4096") != 0)
      flops_all += f, ms_all[0] += ms[0], ms_all[1] += ms[1], ms_all[2] += ms[2];
    char buf[320];
    std::snprintf(buf, sizeof buf,
                  ",\"%s_tma\":%.1f,\"%s_cpasync\":%.1f,\"%s_staged\":%.1f,\"%s_us_tma\":%.2f,\"%s_us_cpasync\":%.2f,\"%s_us_staged\":%.2f",
                  g.name, f / ms[0] / 1e9, g.name, f / ms[1] / 1e9, g.name, f / ms[2] / 1e9, g.name, ms[0] * 1e3, g.name,
                  ms[1] * 1e3, g.name, ms[2] * 1e3);
    json += buf;
  }
  char buf[200];
  std::snprintf(buf, sizeof buf, ",\"window_tma\":%.1f,\"window_cpasync\":%.1f,\"window_staged\":%.1f,\"ratio\":%.3f}",
                flops_all / ms_all[0] / 1e9, flops_all / ms_all[1] / 1e9, flops_all / ms_all[2] / 1e9,
                ms_all[1] / ms_all[0]);
  std::printf("%s%s\n", json.c_str(), buf);
}

// What each part of the char window's Hopper products costs (--gemm-diag; a build with RT_GEMM_DIAG, as
// bench/cuda/build-check.sh makes): the eight products a window runs, as the layer asks for them (A's bf16 copy,
// the weights' bf16 copies made once, bf16 or float32 C, the residual, GELU in the epilogue both ways), each timed
// as it is, then in matmul_tma_sm90.cu's diagnostic variants (without the copy engine's stores, without the
// epilogue, without the tensor-core products, without the operand loads, without the proxy fence), with the
// residual's prefetch, with the activation's backward on 96-wide tiles (RT_CUDA_TMA_X96: mlp_proj_dx alone) and with
// the residual in the accumulators (alone, without the stores, without the epilogue). Session 16 measured the K = 384
// products at 2.4-2.7x their time without their stores, and neither the lanes' stores nor more staging boxes moved
// that: this says which part the time is in. (The columns of the switches taken out in session 30, lanes, team,
// bk32, acc_box64 and res_end, went with them.) One JSON line a product (us a call, and whether every call of every
// variant ran on the TMA kernel), then a table.
static void bench_gemm_diag() {
#ifdef RT_GEMM_DIAG
  if (!(rt::cuda::limits().cc == 90 && rt::cuda::wgmma_enabled())) {
    std::printf("gemm-diag: needs a compute-capability 9.0 GPU with the Hopper kernels\n");
    return;
  }
  // act: 0 none, 1 GELU of C beside it (c_fc), 2 C times GELU'(x) (mlp c_proj's dx); 3 and 4 the same with GELU's
  // derivative kept (RT_CUDA_KEEP_DGELU: GELU'(C) where C goes; x C); no biases (the char config's layers have none)
  struct P { const char* name; int M, N, K; bool backward, half, res; int act; };
  const P ps[] = {{"c_attn", 8192, 1152, 384, false, true, false, 0},   {"attn_proj", 8192, 384, 384, false, false, true, 0},
                  {"c_fc_gelu", 8192, 1536, 384, false, true, false, 1}, {"mlp_proj", 8192, 384, 1536, false, false, true, 0},
                  {"mlp_proj_dx", 8192, 1536, 384, true, true, false, 2}, {"attn_proj_dx", 8192, 384, 384, true, true, false, 0},
                  {"c_attn_dx", 8192, 384, 1152, true, true, false, 0},  {"c_fc_dx", 8192, 384, 1536, true, true, false, 0},
                  {"c_fc_dgelu", 8192, 1536, 384, false, true, false, 3}, {"mlp_proj_dx_mul", 8192, 1536, 384, true, true, false, 4}};
  const char* names[] = {"as_is",        "no_stores", "no_epilogue", "no_mma",      "no_loads", "res_prefetch",
                         "x96",          "no_fence",  "res_acc",     "acc_nostore", "acc_noepi"};
  constexpr int kModes = 11, kReps = 20;
  const ProductModes process;
  std::string table = "gemm-diag (us a call; the char window's products, 8192 rows)\nproduct          TFLOP/s";
  for (const char* n : names) table += " " + std::string(12 - std::min<size_t>(12, std::strlen(n)), ' ') + n;
  table += "\n";
  for (const P& p : ps) {
    const size_t mk = static_cast<size_t>(p.M) * p.K, mn = static_cast<size_t>(p.M) * p.N;
    DevBf A(mk), X(mn), G(mn), Ch(p.half ? mn : 1);
    upload_bf16(A, rounded(randv(mk, 161, -2, 2)));
    upload_bf16(X, rounded(randv(mn, 162, -4, 4)));
    Dev W(randv(static_cast<size_t>(p.N) * p.K, 163, -0.05f, 0.05f)), Cf(p.half ? 1 : mn), R(p.res ? mn : 1);
    // W: [out, in] as the layer holds it; forward C = A W^T (out = N), backward dx = A W (out = K)
    const int out = p.backward ? p.K : p.N, in = p.backward ? p.N : p.K;
    Dev copies(rt::cuda::weight_copies_floats(&out, &in, 1));
    const float* w = W.p;
    rt::cuda::weight_copies_make(&w, &out, &in, 1, p.backward, copies.p);
    const bool fwd_act = p.act == 1 || p.act == 3, bwd_act = p.act == 2 || p.act == 4;
    const rt::cuda::GemmAct act{fwd_act ? G.p : nullptr, true, bwd_act ? X.p : nullptr, p.act >= 3};
    float* C = p.half ? reinterpret_cast<float*>(Ch.p) : Cf.p;
    auto product = [&] {
      rt::cuda::gemm(true, false, !p.backward, p.M, p.N, p.K, 1.0f, nullptr, p.K, W.p, p.backward ? p.N : p.K, 0.0f, C,
                     p.N, nullptr, nullptr, p.res ? R.p : nullptr, A.p, p.half, p.act ? &act : nullptr);
    };
    double us[kModes];
    int regs[kModes], local[kModes];
    bool all_tma = true, x96_ran = true;
    for (int m = 0; m < kModes; ++m) {
      ProductModes::set(true, process.bn96, m == 5, m == 6 ? 2 : 0, m >= 8);
      // (no_fence: diagnostic variant 5; acc_nostore, acc_noepi: 1, no stores, and 2, no epilogue, with the residual
      // in the accumulators)
      rt::cuda::set_tma_diag(m <= 4 ? m : m == 7 ? 5 : m == 9 ? 1 : m == 10 ? 2 : 0);
      const long before = rt::cuda::tma_launches(), before96 = rt::cuda::tma_x96_launches();
      us[m] = time_ms(product, kReps) * 1e3;
      all_tma = all_tma && rt::cuda::tma_launches() - before == kReps + 3;  // time_ms: 3 warm-up calls
      if (m == 6 && bwd_act) x96_ran = rt::cuda::tma_x96_launches() - before96 == kReps + 3;
      rt::cuda::tma_last_kernel(&regs[m], &local[m]);  // (the variants' registers differ: see NOTES, session 22)
    }
    rt::cuda::set_tma_diag(0);
    rt::cuda::weight_copies_clear();
    RT_CU(cudaStreamSynchronize(rt::cuda::stream()));
    const double tflops = 2.0 * p.M * p.N * p.K / (us[0] * 1e-6) / 1e12;
    std::string json = std::string("{\"bench\":\"gemm_diag\",\"product\":\"") + p.name + "\",\"M\":" + std::to_string(p.M) +
                       ",\"N\":" + std::to_string(p.N) + ",\"K\":" + std::to_string(p.K);
    char buf[192];
    for (int m = 0; m < kModes; ++m) {
      std::snprintf(buf, sizeof buf, ",\"us_%s\":%.2f", names[m], us[m]);
      json += buf;
    }
    for (int m = 0; m < kModes; ++m) {
      std::snprintf(buf, sizeof buf, ",\"regs_%s\":%d,\"local_bytes_%s\":%d", names[m], regs[m], names[m], local[m]);
      json += buf;
    }
    std::snprintf(buf, sizeof buf, ",\"tflops_as_is\":%.1f,\"all_tma\":%s,\"x96_ran\":%s}", tflops,
                  all_tma ? "true" : "false", x96_ran ? "true" : "false");
    std::printf("%s%s\n", json.c_str(), buf);
    std::snprintf(buf, sizeof buf, "%-16s %7.1f", p.name, tflops);
    table += buf;
    for (int m = 0; m < kModes; ++m) {
      std::snprintf(buf, sizeof buf, " %12.2f", us[m]);
      table += buf;
    }
    table += all_tma ? "" : "  (not every call on the TMA kernel)";
    table += x96_ran ? "\n" : "  (x96: not on 96-wide tiles)\n";
    std::snprintf(buf, sizeof buf, "%-16s %7s", "  regs/local", "");
    table += buf;
    for (int m = 0; m < kModes; ++m) {
      std::snprintf(buf, sizeof buf, " %7d/%4d", regs[m], local[m]);
      table += buf;
    }
    table += "\n";
  }
  std::printf("%s", table.c_str());
#else
  std::printf("gemm-diag: this kernels_check was built without RT_GEMM_DIAG (bench/cuda/build-check.sh defines it)\n");
#endif
}

// A crash in the host code prints its stack (addresses resolve with addr2line -f -e kernels_check) before the
// process ends, since stdout into a pipe is lost with its buffer.
static void on_crash(int sig) {
  void* frames[64];
  const int n = backtrace(frames, 64);
  std::fflush(stdout);
  const char msg[] = "kernels_check: crashed; stack:\n";
  (void)!write(2, msg, sizeof msg - 1);
  backtrace_symbols_fd(frames, n, 2);
  _exit(128 + sig);
}

int main(int argc, char** argv) {
  static char alt[1 << 16];  // the handler's own stack, so that a stack overflow reports too
  stack_t ss{};
  ss.ss_sp = alt;
  ss.ss_size = sizeof alt;
  sigaltstack(&ss, nullptr);
  struct sigaction sa{};
  sa.sa_handler = on_crash;
  sa.sa_flags = SA_ONSTACK;
  for (int sig : {SIGSEGV, SIGBUS, SIGABRT, SIGILL, SIGFPE}) sigaction(sig, &sa, nullptr);
  try {
    cudaDeviceProp prop{};
    RT_CU(cudaGetDeviceProperties(&prop, 0));
    std::printf("device: %s, %d SMs, %zu KB smem opt-in\n", prop.name, prop.multiProcessorCount,
                prop.sharedMemPerBlockOptin / 1024);
    // --weight-grad: only weight_grad.cu's checks and timing (a quick look at that kernel).
    const std::string arg = argc >= 2 ? argv[1] : "";
    const bool dw_only = arg == "--weight-grad";
    if (arg == "--hopper-gemm") {  // only the Hopper products' timing (after a check of the same shapes above)
      bench_hopper_gemm();
      return 0;
    }
    if (arg == "--gemm-diag") {  // only the char window's products, part by part
      bench_gemm_diag();
      return 0;
    }
    if (!dw_only) {
      check_gemm();
      check_linear();
    }
    check_weight_grad();
    if (!dw_only) {
      check_layernorm();
      check_attention();
      check_activation_dropout();
      check_decode();
      check_glue();
      check_twins();
      check_half_buffers();
      check_embedding();
    }
    std::printf("kernels_check: %d passed, %d failed; worst rel. error f32 %.2e, bf16 %.2e\n", g_passed, g_failed,
                g_worst_f32, g_worst_bf16);
    if (arg != "--no-bench") {
      if (!dw_only) bench(), bench_hopper_gemm();
      bench_weight_grad();
    }
  } catch (const std::exception& e) {
    std::printf("kernels_check: error: %s\n", e.what());
    return 2;
  }
  return g_failed ? 1 : 0;
}
