// Causal multi-head self-attention, forward and backward, as cpu/attention.cc (same probs layout, same
// dropout mask indices, dqkv written).
//
// Two paths, chosen by shape only:
//  - fused (window pairs: n = 2w, typically <= 64): one block per (batch, head) does scores, causal
//    softmax, dropout and the values in one kernel, everything in shared memory, float32 arithmetic;
//    backward likewise (dV, dP, the softmax backward, dQ and dK in one kernel). One launch per window
//    step each way.
//  - batched products (w = 0 over long sequences, or heads too large for shared memory): scores and the
//    value products go through cuda::gemm batched over (batch, head), with a row-wise softmax kernel in
//    between, writing straight into `probs` (the O(n^2) buffer the contract keeps for backward).
// RT_CUDA_ATTN_GEMM=1 forces the second path (for checking it on small shapes).
#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <string>

#include "core/rng.h"
#include "cuda/common.cuh"
#include "cuda/kernels.cuh"
#include "cuda/rng.cuh"

namespace rt::cuda {
namespace {

constexpr int kThreads = 256;

struct Geo {
  int B, n, d, H, hd, ld;  // ld = 3d
  float scale;
};

__device__ __forceinline__ float warp_max(float v) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
  return v;
}
__device__ __forceinline__ float warp_sum(float v) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  return v;
}

// Dropout multiplier of probability (bh, i, j): keep/(1-p), or 1 without dropout.
struct Mask {
  uint64_t key;
  int64_t threshold;
  float scale;
  bool on;
  __device__ __forceinline__ float operator()(uint64_t index) const {
    return !on ? 1.0f : keep(key, index, threshold) ? scale : 0.0f;
  }
};
Mask make_mask(float p, uint64_t seed, uint64_t stream_id) {
  Mask m{0, 0, 1.0f, p > 0.0f};
  if (m.on) {
    m.key = rng_key(seed, stream_id);
    m.threshold = keep_threshold(p);
    m.scale = 1.0f / (1.0f - p);
  }
  return m;
}

// Runs f(r, c) over the n x hd cells of a head, a warp along a row (lanes over its columns): no index
// division, coalesced global access, and the +1 row padding of the shared copies keeps column-wise reads
// of different rows in different banks. A head narrower than a warp (HD = 16, 8) takes 32 / HD rows per
// warp so that no lane idles. HD = 0: the head size is known only at run time.
template <int HD, class F>
__device__ __forceinline__ void for_cells(int n, int hd_rt, F f) {
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32, warps = blockDim.x / 32;
  if constexpr (HD > 0 && HD < 32 && 32 % HD == 0) {
    constexpr int RPW = 32 / HD;
    const int sub = lane / HD, c = lane % HD;
    for (int r0 = warp * RPW; r0 < n; r0 += warps * RPW)
      if (r0 + sub < n) f(r0 + sub, c);
  } else {
    const int hd = HD > 0 ? HD : hd_rt;
    for (int r = warp; r < n; r += warps)
      for (int c = lane; c < hd; c += 32) f(r, c);
  }
}

// Loads rows [0, n) of one head's columns of M [n, ld] matrices (src[m]) into shared [n][hd + 1] copies
// (dst[m]), lanes along a row's columns as in for_cells. Every read of a thread is issued before its first
// store: with a fixed trip count of U rows per thread the loads are independent, so their latencies overlap
// (the loop form left one global-memory latency per row in sequence, most of a short kernel's time).
template <int HD, int M>
__device__ __forceinline__ void load_heads(float* const (&dst)[M], const float* const (&src)[M], const int (&ld)[M], int n,
                                           int hd) {
  const int hp = hd + 1;
  if constexpr (HD > 0 && (HD % 32 == 0 || 32 % HD == 0)) {
    constexpr int RPW = HD < 32 ? 32 / HD : 1, CPL = HD < 32 ? 1 : HD / 32, U = 8;
    const int warp = threadIdx.x / 32, lane = threadIdx.x % 32, warps = blockDim.x / 32;
    const int sub = HD < 32 ? lane / HD : 0, c0 = HD < 32 ? lane % HD : lane, step = warps * RPW;
    for (int r0 = warp * RPW + sub; r0 < n; r0 += U * step) {
      float v[M][U][CPL];
#pragma unroll
      for (int m = 0; m < M; ++m)
#pragma unroll
        for (int u = 0; u < U; ++u)
#pragma unroll
          for (int q = 0; q < CPL; ++q) {
            const int r = r0 + u * step;
            v[m][u][q] = r < n ? __ldg(src[m] + static_cast<size_t>(r) * ld[m] + c0 + 32 * q) : 0.0f;
          }
#pragma unroll
      for (int m = 0; m < M; ++m)
#pragma unroll
        for (int u = 0; u < U; ++u)
#pragma unroll
          for (int q = 0; q < CPL; ++q) {
            const int r = r0 + u * step;
            if (r < n) dst[m][r * hp + c0 + 32 * q] = v[m][u][q];
          }
    }
  } else {
    for (int m = 0; m < M; ++m)
      for_cells<HD>(n, hd, [&](int r, int c) { dst[m][r * hp + c] = src[m][static_cast<size_t>(r) * ld[m] + c]; });
  }
}

// ------------------------------------------------------------------------------------------------
// Fused path.

size_t fused_forward_smem(int n, int hd) { return (3ull * n * (hd + 1) + static_cast<size_t>(n) * (n + 1)) * 4; }
size_t fused_backward_smem(int n, int hd) { return (2ull * n * (hd + 1) + 2ull * n * (n + 1)) * 4; }

template <int HD>
__global__ void __launch_bounds__(kThreads) attention_forward_fused(const float* __restrict__ qkv,
                                                                    float* __restrict__ probs, float* __restrict__ out,
                                                                    Geo g, Mask mask) {
  extern __shared__ float sm[];
  const int n = g.n, hd = HD > 0 ? HD : g.hd, hp = hd + 1, np = n + 1;
  float* Q = sm;
  float* K = Q + n * hp;
  float* V = K + n * hp;
  float* S = V + n * hp;
  const int bh = blockIdx.x, b = bh / g.H, h = bh % g.H;
  const float* base = qkv + static_cast<size_t>(b) * n * g.ld + h * hd;
  {
    float* const dst[3] = {Q, K, V};
    const float* const src[3] = {base, base + g.d, base + 2 * g.d};
    const int ld[3] = {g.ld, g.ld, g.ld};
    load_heads<HD, 3>(dst, src, ld, n, hd);
  }
  __syncthreads();

  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32, warps = blockDim.x / 32;
  // Scores of the causal pairs (j <= i), a warp per row.
  for (int i = warp; i < n; i += warps) {
    const float* q = Q + i * hp;
    for (int j = lane; j <= i; j += 32) {
      const float* k = K + j * hp;
      float s = 0.0f;
      for (int c = 0; c < hd; ++c) s = fmaf(q[c], k[c], s);
      S[i * np + j] = s * g.scale;
    }
  }
  __syncthreads();

  // Softmax per row (one warp a row); probs gets the undropped row, zeros past the diagonal; S keeps the
  // dropped probabilities for the values.
  for (int i = warp; i < n; i += warps) {
    float* srow = S + i * np;
    float mx = -INFINITY;
    for (int j = lane; j <= i; j += 32) mx = fmaxf(mx, srow[j]);
    mx = warp_max(mx);
    float sum = 0.0f;
    for (int j = lane; j <= i; j += 32) {
      const float e = expf(srow[j] - mx);
      srow[j] = e;
      sum += e;
    }
    const float inv = 1.0f / warp_sum(sum);
    float* prow = probs + (static_cast<size_t>(bh) * n + i) * n;
    const uint64_t mbase = (static_cast<uint64_t>(bh) * n + i) * n;
    for (int j = lane; j < n; j += 32) {
      const float pr = j <= i ? srow[j] * inv : 0.0f;
      prow[j] = pr;
      srow[j] = j <= i ? pr * mask(mbase + j) : 0.0f;
    }
  }
  __syncthreads();

  float* o = out + static_cast<size_t>(b) * n * g.d + h * hd;
  for_cells<HD>(n, hd, [&](int i, int c) {
    const float* srow = S + i * np;
    float acc = 0.0f;
    for (int j = 0; j <= i; ++j) acc = fmaf(srow[j], V[j * hp + c], acc);
    o[static_cast<size_t>(i) * g.d + c] = acc;
  });
}

template <int HD>
__global__ void __launch_bounds__(kThreads) attention_backward_fused(const float* __restrict__ qkv,
                                                                     const float* __restrict__ probs,
                                                                     const float* __restrict__ dout,
                                                                     float* __restrict__ dqkv, Geo g, Mask mask) {
  extern __shared__ float sm[];
  const int n = g.n, hd = HD > 0 ? HD : g.hd, hp = hd + 1, np = n + 1;
  float* X1 = sm;             // V, later Q
  float* X2 = X1 + n * hp;    // dO, later K
  float* P = X2 + n * hp;     // probabilities (before dropout)
  float* G = P + n * np;      // dropped probabilities, then dP, then dS
  const int bh = blockIdx.x, b = bh / g.H, h = bh % g.H;
  const float* base = qkv + static_cast<size_t>(b) * n * g.ld + h * hd;
  float* dbase = dqkv + static_cast<size_t>(b) * n * g.ld + h * hd;
  {
    float* const dst[2] = {X1, X2};
    const float* const src[2] = {base + 2 * g.d, dout + static_cast<size_t>(b) * n * g.d + h * hd};
    const int ld[2] = {g.ld, g.d};
    load_heads<HD, 2>(dst, src, ld, n, hd);
  }
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32, warps = blockDim.x / 32;
  const float* pg = probs + static_cast<size_t>(bh) * n * n;
  // The probabilities, U rows per warp per round with all reads issued first (as load_heads).
  constexpr int U = 8;
  for (int i0 = warp; i0 < n; i0 += U * warps)
    for (int j = lane; j < n; j += 32) {
      float pv[U];
#pragma unroll
      for (int u = 0; u < U; ++u) {
        const int i = i0 + u * warps;
        pv[u] = (i < n && j <= i) ? __ldg(pg + static_cast<size_t>(i) * n + j) : 0.0f;
      }
#pragma unroll
      for (int u = 0; u < U; ++u) {
        const int i = i0 + u * warps;
        if (i >= n) continue;
        P[i * np + j] = pv[u];
        if (mask.on) G[i * np + j] = j <= i ? pv[u] * mask((static_cast<uint64_t>(bh) * n + i) * n + j) : 0.0f;
      }
    }
  __syncthreads();
  const float* Pd = mask.on ? G : P;

  // dV[j] = sum_{i >= j} Pd[i][j] dO[i]
  for_cells<HD>(n, hd, [&](int j, int c) {
    float acc = 0.0f;
    for (int i = j; i < n; ++i) acc = fmaf(Pd[i * np + j], X2[i * hp + c], acc);
    dbase[static_cast<size_t>(j) * g.ld + 2 * g.d + c] = acc;
  });
  __syncthreads();

  // dP[i][j] = mask * (dO[i] . V[j]) for j <= i; zeros past the diagonal.
  for (int i = warp; i < n; i += warps) {
    const float* a = X2 + i * hp;
    for (int j = lane; j < n; j += 32) {
      float v = 0.0f;
      if (j <= i) {
        const float* vv = X1 + j * hp;
        for (int c = 0; c < hd; ++c) v = fmaf(a[c], vv[c], v);
        v *= mask((static_cast<uint64_t>(bh) * n + i) * n + j);
      }
      G[i * np + j] = v;
    }
  }
  __syncthreads();

  // dS = P * (dP - rowsum(dP * P)) * scale, one warp a row.
  for (int i = warp; i < n; i += warps) {
    float* grow = G + i * np;
    const float* prow = P + i * np;
    float t = 0.0f;
    for (int j = lane; j <= i; j += 32) t += grow[j] * prow[j];
    t = warp_sum(t);
    for (int j = lane; j <= i; j += 32) grow[j] = prow[j] * (grow[j] - t) * g.scale;
  }
  __syncthreads();

  {
    float* const dst[2] = {X1, X2};
    const float* const src[2] = {base, base + g.d};
    const int ld[2] = {g.ld, g.ld};
    load_heads<HD, 2>(dst, src, ld, n, hd);
  }
  __syncthreads();

  // dQ[r] = sum_{j <= r} dS[r][j] K[j];  dK[r] = sum_{i >= r} dS[i][r] Q[i]  (rows 0..n-1 of dQ, then of dK)
  for_cells<HD>(2 * n, hd, [&](int rr, int c) {
    float acc = 0.0f;
    if (rr < n) {
      const int r = rr;
      for (int j = 0; j <= r; ++j) acc = fmaf(G[r * np + j], X2[j * hp + c], acc);
      dbase[static_cast<size_t>(r) * g.ld + c] = acc;
    } else {
      const int r = rr - n;
      for (int i = r; i < n; ++i) acc = fmaf(G[i * np + r], X1[i * hp + c], acc);
      dbase[static_cast<size_t>(r) * g.ld + g.d + c] = acc;
    }
  });
}

// ------------------------------------------------------------------------------------------------
// Batched-product path: row kernels between the GEMMs.

// In place over each row i of probs [BH, n, n] holding scores: causal softmax (zeros past the diagonal);
// with dropout also writes the dropped row to pd.
__global__ void softmax_rows_kernel(float* probs, float* pd, long long rows, int n, Mask mask) {
  const long long row = static_cast<long long>(blockIdx.x) * (blockDim.x / 32) + threadIdx.x / 32;
  const int lane = threadIdx.x % 32;
  if (row >= rows) return;
  const int i = static_cast<int>(row % n);
  float* r = probs + row * n;
  float mx = -INFINITY;
  for (int j = lane; j <= i; j += 32) mx = fmaxf(mx, r[j]);
  mx = warp_max(mx);
  float sum = 0.0f;
  for (int j = lane; j <= i; j += 32) {
    const float e = expf(r[j] - mx);
    r[j] = e;
    sum += e;
  }
  const float inv = 1.0f / warp_sum(sum);
  const uint64_t mbase = static_cast<uint64_t>(row) * n;
  for (int j = lane; j < n; j += 32) {
    const float pr = j <= i ? r[j] * inv : 0.0f;
    r[j] = pr;
    if (pd) pd[row * n + j] = j <= i ? pr * mask(mbase + j) : 0.0f;
  }
}

// pd = probs * mask (zeros past the diagonal are already there).
__global__ void dropped_probs_kernel(const float* __restrict__ probs, float* __restrict__ pd, size_t total, Mask mask) {
  const size_t stride = static_cast<size_t>(gridDim.x) * blockDim.x;
  for (size_t i = blockIdx.x * static_cast<size_t>(blockDim.x) + threadIdx.x; i < total; i += stride)
    pd[i] = probs[i] * mask(i);
}

// In place over rows of G [BH, n, n] holding dP_drop = dO V^T: dS = P * (mask*G - rowsum(mask*G * P)) * scale,
// zeros past the diagonal.
__global__ void softmax_backward_rows_kernel(const float* __restrict__ probs, float* G, long long rows, int n,
                                             float scale, Mask mask) {
  const long long row = static_cast<long long>(blockIdx.x) * (blockDim.x / 32) + threadIdx.x / 32;
  const int lane = threadIdx.x % 32;
  if (row >= rows) return;
  const int i = static_cast<int>(row % n);
  float* gr = G + row * n;
  const float* pr = probs + row * n;
  const uint64_t mbase = static_cast<uint64_t>(row) * n;
  float t = 0.0f;
  for (int j = lane; j <= i; j += 32) {
    const float v = gr[j] * mask(mbase + j);
    gr[j] = v;
    t += v * pr[j];
  }
  t = warp_sum(t);
  for (int j = lane; j < n; j += 32) gr[j] = j <= i ? pr[j] * (gr[j] - t) * scale : 0.0f;
}

Geo check_geo(const char* who, int B, int n, int d, int H, float p) {
  const std::string w(who);
  RT_CHECK(B >= 0 && n >= 0, w + ": B and n must be >= 0, got B=" + std::to_string(B) + " n=" + std::to_string(n));
  RT_CHECK(H > 0 && d > 0 && d % H == 0, w + ": d must be a positive multiple of the head count H, got d=" +
                                             std::to_string(d) + " H=" + std::to_string(H));
  RT_CHECK(p >= 0.0f && p < 1.0f, w + ": dropout rate p must be in [0, 1), got " + std::to_string(p));
  RT_CHECK(static_cast<long long>(B) * H <= 65535, w + ": batch * heads must be at most 65535 on CUDA");
  const int hd = d / H;
  return Geo{B, n, d, H, hd, 3 * d, 1.0f / std::sqrt(static_cast<float>(hd))};
}

bool use_fused(const Geo& g) {
  static const bool force_gemm = [] {
    const char* e = std::getenv("RT_CUDA_ATTN_GEMM");
    return e && *e && std::string(e) != "0";
  }();
  if (force_gemm || g.n > 256) return false;
  const size_t need = std::max(fused_forward_smem(g.n, g.hd), fused_backward_smem(g.n, g.hd));
  return need <= limits().smem_optin;
}

// The fused kernels may take more than 48 KB of shared memory only after opting in, once per kernel.
template <int HD>
void launch_fused_forward(const Geo& g, const float* qkv, float* probs, float* out, const Mask& mask) {
  static const cudaError_t opt = cudaFuncSetAttribute(
      attention_forward_fused<HD>, cudaFuncAttributeMaxDynamicSharedMemorySize, static_cast<int>(limits().smem_optin));
  RT_CU(opt);
  attention_forward_fused<HD><<<g.B * g.H, kThreads, fused_forward_smem(g.n, g.hd), stream()>>>(qkv, probs, out, g, mask);
}
template <int HD>
void launch_fused_backward(const Geo& g, const float* qkv, const float* probs, const float* dout, float* dqkv,
                           const Mask& mask) {
  static const cudaError_t opt = cudaFuncSetAttribute(
      attention_backward_fused<HD>, cudaFuncAttributeMaxDynamicSharedMemorySize, static_cast<int>(limits().smem_optin));
  RT_CU(opt);
  attention_backward_fused<HD><<<g.B * g.H, kThreads, fused_backward_smem(g.n, g.hd), stream()>>>(qkv, probs, dout,
                                                                                                  dqkv, g, mask);
}

unsigned row_blocks(long long rows) { return static_cast<unsigned>((rows + 7) / 8); }

}  // namespace

void attention_forward(bool bf16, const float* qkv, float* probs, float* out, int B, int n, int d, int H, float p,
                       uint64_t seed, uint64_t stream_id) {
  const Geo g = check_geo("attention_forward", B, n, d, H, p);
  if (B == 0 || n == 0) return;
  const Mask mask = make_mask(p, seed, stream_id);
  const int BH = B * H;
  if (use_fused(g)) {
    // Head sizes of the usual configs get their own kernels (constant loop bounds, no idle lanes).
    switch (g.hd) {
      case 16: launch_fused_forward<16>(g, qkv, probs, out, mask); break;
      case 32: launch_fused_forward<32>(g, qkv, probs, out, mask); break;
      case 64: launch_fused_forward<64>(g, qkv, probs, out, mask); break;
      default: launch_fused_forward<0>(g, qkv, probs, out, mask); break;
    }
    RT_CU_LAUNCH("attention_forward (fused)");
    return;
  }
  const long long nn = static_cast<long long>(n) * n, rows = static_cast<long long>(BH) * n;
  Batch bt;
  bt.count = BH;
  bt.inner = H;
  // S = scale * Q K^T, straight into probs.
  bt.a = {static_cast<long long>(n) * g.ld, g.hd};
  bt.b = bt.a;
  bt.c = {H * nn, nn};
  gemm(bf16, false, true, n, n, g.hd, g.scale, qkv, g.ld, qkv + d, g.ld, 0.0f, probs, n, nullptr, &bt);
  Scratch pd;
  if (mask.on) pd = Scratch(static_cast<size_t>(BH) * nn * sizeof(float));
  RT_CHECK(row_blocks(rows) <= 0x7fffffffu, "attention_forward: too many rows");
  softmax_rows_kernel<<<row_blocks(rows), 256, 0, stream()>>>(probs, pd.f32(), rows, n, mask);
  RT_CU_LAUNCH("attention_forward softmax");
  // out = P_drop V
  bt.a = {H * nn, nn};
  bt.b = {static_cast<long long>(n) * g.ld, g.hd};
  bt.c = {static_cast<long long>(n) * d, g.hd};
  gemm(bf16, false, false, n, g.hd, n, 1.0f, mask.on ? pd.f32() : probs, n, qkv + 2 * d, g.ld, 0.0f, out, d, nullptr, &bt);
}

void attention_backward(bool bf16, const float* qkv, const float* probs, const float* dout, float* dqkv, int B, int n,
                        int d, int H, float p, uint64_t seed, uint64_t stream_id) {
  const Geo g = check_geo("attention_backward", B, n, d, H, p);
  if (B == 0 || n == 0) return;
  const Mask mask = make_mask(p, seed, stream_id);
  const int BH = B * H;
  if (use_fused(g)) {
    switch (g.hd) {
      case 16: launch_fused_backward<16>(g, qkv, probs, dout, dqkv, mask); break;
      case 32: launch_fused_backward<32>(g, qkv, probs, dout, dqkv, mask); break;
      case 64: launch_fused_backward<64>(g, qkv, probs, dout, dqkv, mask); break;
      default: launch_fused_backward<0>(g, qkv, probs, dout, dqkv, mask); break;
    }
    RT_CU_LAUNCH("attention_backward (fused)");
    return;
  }
  const long long nn = static_cast<long long>(n) * n, rows = static_cast<long long>(BH) * n;
  const long long qs = static_cast<long long>(n) * g.ld, os = static_cast<long long>(n) * d;
  Scratch pd, G(static_cast<size_t>(BH) * nn * sizeof(float));
  const float* Pd = probs;
  if (mask.on) {
    pd = Scratch(static_cast<size_t>(BH) * nn * sizeof(float));
    dropped_probs_kernel<<<blocks_for(static_cast<size_t>(BH) * nn, 256), 256, 0, stream()>>>(
        probs, pd.f32(), static_cast<size_t>(BH) * nn, mask);
    RT_CU_LAUNCH("attention_backward dropout");
    Pd = pd.f32();
  }
  Batch bt;
  bt.count = BH;
  bt.inner = H;
  // dV = P_drop^T dO
  bt.a = {H * nn, nn};
  bt.b = {os, g.hd};
  bt.c = {qs, g.hd};
  gemm(bf16, true, false, n, g.hd, n, 1.0f, Pd, n, dout, d, 0.0f, dqkv + 2 * d, g.ld, nullptr, &bt);
  // G = dO V^T, then the softmax backward in place.
  bt.a = {os, g.hd};
  bt.b = {qs, g.hd};
  bt.c = {H * nn, nn};
  gemm(bf16, false, true, n, n, g.hd, 1.0f, dout, d, qkv + 2 * d, g.ld, 0.0f, G.f32(), n, nullptr, &bt);
  softmax_backward_rows_kernel<<<row_blocks(rows), 256, 0, stream()>>>(probs, G.f32(), rows, n, g.scale, mask);
  RT_CU_LAUNCH("attention_backward softmax");
  // dQ = dS K;  dK = dS^T Q
  bt.a = {H * nn, nn};
  bt.b = {qs, g.hd};
  bt.c = {qs, g.hd};
  gemm(bf16, false, false, n, g.hd, n, 1.0f, G.f32(), n, qkv + d, g.ld, 0.0f, dqkv, g.ld, nullptr, &bt);
  gemm(bf16, true, false, n, g.hd, n, 1.0f, G.f32(), n, qkv, g.ld, 0.0f, dqkv + d, g.ld, nullptr, &bt);
}

}  // namespace rt::cuda
