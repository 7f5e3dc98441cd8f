// The fused attention over a window pair (n <= 256), one (batch element, head) per group of 256 threads:
// scores, causal softmax, dropout and the values in one pass over shared memory, float32 arithmetic;
// backward likewise. attention.cu runs one block of kGroup threads per (element, head). Same probs layout
// and dropout mask indices as cpu/attention.cc.
#pragma once
#include <cmath>
#include <cstdint>

#include "core/rng.h"
#include "cuda/group.cuh"
#include "cuda/rng.cuh"

namespace rt::cuda::attn {


struct Geo {
  int B, n, d, H, hd, ld;  // ld = 3d
  float scale;
  bool qkv_half = false;  // qkv holds bf16 (the tensor-core kernels only: BlockCache::half)
};

// B elements of n tokens, d split into H heads, scores scaled by 1 / sqrt(d / H); qkv rows 3d wide.
inline Geo geo_of(int B, int n, int d, int H) {
  const int hd = d / H;
  return Geo{B, n, d, H, hd, 3 * d, 1.0f / std::sqrt(static_cast<float>(hd))};
}

// Row i of causal scores, by one warp: exp(s_j - max) in place for j <= i; returns 1 / their sum. Both
// attention paths' softmax (the fused head, attention.cu's row kernel).
__device__ __forceinline__ float causal_exp_row(float* r, int i, int lane) {
  float mx = -INFINITY;
  for (int j = lane; j <= i; j += 32) mx = fmaxf(mx, r[j]);
  mx = warp_max(mx);
  float sum = 0.0f;
  for (int j = lane; j <= i; j += 32) {
    const float e = expf(r[j] - mx);
    r[j] = e;
    sum += e;
  }
  return 1.0f / warp_sum(sum);
}

// Dropout multiplier of probability (bh, i, j): keep/(1-p), or 1 without dropout.
struct Mask {
  MaskKey key;
  int64_t threshold;
  float scale;
  bool on;
  __device__ __forceinline__ float operator()(uint64_t index) const {
    return !on ? 1.0f : keep(key.get(), index, threshold) ? scale : 0.0f;
  }
};
inline Mask make_mask(float p, uint64_t seed, uint64_t stream_id) {
  Mask m{MaskKey{}, 0, 1.0f, p > 0.0f};
  if (m.on) {
    m.key = mask_key(seed, stream_id);
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
  const int warp = tid() / 32, lane = tid() % 32, warps = kGroup / 32;
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
    const int warp = tid() / 32, lane = tid() % 32, warps = kGroup / 32;
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
            const float* p = src[m] + static_cast<size_t>(r) * ld[m] + c0 + 32 * q;
            v[m][u][q] = r < n ? __ldg(p) : 0.0f;
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

__host__ __device__ inline size_t fused_forward_smem(int n, int hd) { return (3ull * n * (hd + 1) + static_cast<size_t>(n) * (n + 1)) * 4; }
__host__ __device__ inline size_t fused_backward_smem(int n, int hd) { return (2ull * n * (hd + 1) + 2ull * n * (n + 1)) * 4; }

// One (batch element b, head h) of the forward, by one block of kGroup threads, in `sm` (fused_forward_smem).
template <int HD>
__device__ __forceinline__ void forward_head(const float* __restrict__ qkv, float* __restrict__ probs,
                                             float* __restrict__ out, const Geo& g, const Mask& mask, int b, int h,
                                             float* sm) {
  const int n = g.n, hd = HD > 0 ? HD : g.hd, hp = hd + 1, np = n + 1;
  float* Q = sm;
  float* K = Q + n * hp;
  float* V = K + n * hp;
  float* S = V + n * hp;
  const int bh = b * g.H + h;
  const float* base = qkv + static_cast<size_t>(b) * n * g.ld + h * hd;
  {
    float* const dst[3] = {Q, K, V};
    const float* const src[3] = {base, base + g.d, base + 2 * g.d};
    const int ld[3] = {g.ld, g.ld, g.ld};
    load_heads<HD, 3>(dst, src, ld, n, hd);
  }
  __syncthreads();

  const int warp = tid() / 32, lane = tid() % 32, warps = kGroup / 32;
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
    const float inv = causal_exp_row(srow, i, lane);
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

// One (batch element b, head h) of the backward, by one block of kGroup threads, in `sm` (fused_backward_smem).
template <int HD>
__device__ __forceinline__ void backward_head(const float* __restrict__ qkv, const float* __restrict__ probs,
                                              const float* __restrict__ dout, float* __restrict__ dqkv, const Geo& g,
                                              const Mask& mask, int b, int h, float* sm) {
  const int n = g.n, hd = HD > 0 ? HD : g.hd, hp = hd + 1, np = n + 1;
  float* X1 = sm;             // V, later Q
  float* X2 = X1 + n * hp;    // dO, later K
  float* P = X2 + n * hp;     // probabilities (before dropout)
  float* G = P + n * np;      // dropped probabilities, then dP, then dS
  const int bh = b * g.H + h;
  const float* base = qkv + static_cast<size_t>(b) * n * g.ld + h * hd;
  float* dbase = dqkv + static_cast<size_t>(b) * n * g.ld + h * hd;
  {
    float* const dst[2] = {X1, X2};
    const float* const src[2] = {base + 2 * g.d, dout + static_cast<size_t>(b) * n * g.d + h * hd};
    const int ld[2] = {g.ld, g.d};
    load_heads<HD, 2>(dst, src, ld, n, hd);
  }
  const int warp = tid() / 32, lane = tid() % 32, warps = kGroup / 32;
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

}  // namespace rt::cuda::attn
