// The fused block chains' device side (block_fused.cu's comment says what and why): shared-memory tiles
// of 32 rows, the products on the tensor cores from the packed bf16 weights (float32 FMA in the F32 check
// mode), and the four row-local chains of a block application as device functions over one tile, each run
// by one block of kThreads threads. block_fused.cu launches one block per tile.
#pragma once
#include <cuda_bf16.h>

#include <string>
#include <type_traits>

#include "core/rng.h"
#include "cuda/activation.cuh"
#include "cuda/attention_mma.cuh"
#include "cuda/cluster.cuh"
#include "cuda/common.cuh"
#include "cuda/gemm_args.cuh"
#include "cuda/group.cuh"
#include "cuda/kernels.cuh"
#include "cuda/mma.cuh"
#include "cuda/pdl.cuh"
#include "cuda/rng.cuh"
#include "layer/block.h"

namespace rt::cuda::tiles {


#ifndef RT_FUSED_TM
#define RT_FUSED_TM 32
#endif
constexpr int kTM = RT_FUSED_TM;  // rows per block (16 or 32; -DRT_FUSED_TM=16 builds the other, for timing)
constexpr int kMT = kTM / 16;
#ifndef RT_FUSED_WARPS
#define RT_FUSED_WARPS 16
#endif
// Warps per tile. 16 rather than 8: a block holds an SM alone (the staged weights fill its shared memory),
// and its chains are latency-bound, so twice the warps in flight hide twice the waits (ncu: 12% of the
// warp slots active, most cycles stalled on global loads). With 16, each product's work units are 16 rows
// by 16 columns instead of 32 by 16.
constexpr int kWarps = RT_FUSED_WARPS;
constexpr int kThreads = kWarps * 32;
constexpr int kUM = kWarps >= 16 ? 1 : kMT;  // m16 tiles per work unit of a product
constexpr int kMSplit = kMT / kUM;            // work units along the rows
static_assert(kTM % kWarps == 0, "rows must spread evenly over the warps (tile_layernorm_backward)");
constexpr int kNB = 2;   // n8 tiles per warp pass: 16 columns (d a multiple of 16 makes every N one of these)
constexpr int kPad = 8;  // elements of padding per shared row
constexpr float kEps = 1e-5f;  // layernorm.cu's

template <bool F32>
using Elem = typename std::conditional<F32, float, __nv_bfloat16>::type;

template <bool F32>
__device__ __forceinline__ void put(Elem<F32>* p, float v) {
  if constexpr (F32) *p = v;
  else *p = __float2bfloat16_rn(v);
}

template <bool F32>
__device__ __forceinline__ void put2(Elem<F32>* p, float a, float b) {
  put<F32>(p, a);
  put<F32>(p + 1, b);
}

// The packed copy (pack_fused_weights): offsets in elements of each [N][K] matrix. The forward's are the
// Linear weights as stored ([out][in]); the input gradient dy W reads W^T, stored as [in][out].
struct Packed {
  // Each matrix [N][K] with its rows padded by kPad (zeros), as a staged copy has them: one bulk copy moves
  // a whole matrix into shared memory (Staging).
  __host__ __device__ static constexpr size_t sz(int n, int k) { return static_cast<size_t>(n) * (k + kPad); }
  __host__ __device__ static constexpr size_t qkv(int) { return 0; }                               // [3d][d]
  __host__ __device__ static constexpr size_t proj(int d) { return sz(3 * d, d); }                 // [d][d]
  __host__ __device__ static constexpr size_t fc(int d) { return proj(d) + sz(d, d); }             // [4d][d]
  __host__ __device__ static constexpr size_t mproj(int d) { return fc(d) + sz(4 * d, d); }        // [d][4d]
  __host__ __device__ static constexpr size_t mproj_t(int d) { return mproj(d) + sz(d, 4 * d); }   // [4d][d]
  __host__ __device__ static constexpr size_t fc_t(int d) { return mproj_t(d) + sz(4 * d, d); }    // [d][4d]
  __host__ __device__ static constexpr size_t proj_t(int d) { return fc_t(d) + sz(d, 4 * d); }     // [d][d]
  __host__ __device__ static constexpr size_t qkv_t(int d) { return proj_t(d) + sz(d, d); }        // [d][3d]
  __host__ __device__ static constexpr size_t total(int d) { return qkv_t(d) + sz(d, 3 * d); }
};

template <bool F32>
__global__ void pack_kernel(Elem<F32>* __restrict__ dst, const float* __restrict__ qkv, const float* __restrict__ proj,
                            const float* __restrict__ fc, const float* __restrict__ mproj, int d) {
  const size_t total = Packed::total(d);
  for (size_t i = blockIdx.x * static_cast<size_t>(blockDim.x) + threadIdx.x; i < total;
       i += static_cast<size_t>(gridDim.x) * blockDim.x) {
    // which matrix, and its K; then row n, column k of it
    size_t o;
    int K, m;
    if (i < Packed::proj(d)) m = 0, o = Packed::qkv(d), K = d;
    else if (i < Packed::fc(d)) m = 1, o = Packed::proj(d), K = d;
    else if (i < Packed::mproj(d)) m = 2, o = Packed::fc(d), K = d;
    else if (i < Packed::mproj_t(d)) m = 3, o = Packed::mproj(d), K = 4 * d;
    else if (i < Packed::fc_t(d)) m = 4, o = Packed::mproj_t(d), K = d;
    else if (i < Packed::proj_t(d)) m = 5, o = Packed::fc_t(d), K = 4 * d;
    else if (i < Packed::qkv_t(d)) m = 6, o = Packed::proj_t(d), K = d;
    else m = 7, o = Packed::qkv_t(d), K = 3 * d;
    const size_t j = i - o, n = j / (K + kPad), k = j % (K + kPad);
    float v = 0.0f;
    if (k < static_cast<size_t>(K)) switch (m) {
        case 0: v = qkv[n * d + k]; break;
        case 1: v = proj[n * d + k]; break;
        case 2: v = fc[n * d + k]; break;
        case 3: v = mproj[n * 4 * d + k]; break;    // mproj is [d][4d]
        case 4: v = mproj[k * 4 * d + n]; break;    // mproj^T [4d][d]
        case 5: v = fc[k * d + n]; break;           // fc^T [d][4d]: fc is [4d][d]
        case 6: v = proj[k * d + n]; break;         // proj^T
        default: v = qkv[k * d + n]; break;         // qkv^T [d][3d]: qkv is [3d][d]
      }
    put<F32>(dst + i, v);
  }
}

// Dropout of element i with the key of one stream (rng.cuh): the same mask and scale as dropout.cu.
struct Drop {
  MaskKey key;
  int64_t threshold = 0;
  float scale = 1.0f;
  bool on = false;
  __device__ __forceinline__ float operator()(float v, size_t i) const {
    if (!on) return v;
    return keep(key.get(), i, threshold) ? v * scale : 0.0f;
  }
};
inline Drop make_drop(float p, uint64_t seed, uint64_t stream_id) {
  Drop d;
  if (p > 0.0f) {
    d.on = true;
    d.key = mask_key(seed, stream_id);
    d.threshold = keep_threshold(p);
    d.scale = 1.0f / (1.0f - p);
  }
  return d;
}

// A 32 x COLS tile of a dense [R][COLS] array of E (float32, or bf16 for BlockGradStash::half's) held in
// registers: load() issues every read (one 16-byte load per thread per 16 bytes x kThreads, rows past R
// read as zeros) before each() hands them out.
template <int COLS, class E = float>
struct Tile {
  static constexpr int kPer = 16 / sizeof(E);  // elements a load
  static_assert(COLS % kPer == 0, "rows of whole 16-byte loads");
  static constexpr int C4 = COLS / kPer, N4 = kTM * C4, T = (N4 + kThreads - 1) / kThreads;
  using V = typename std::conditional<sizeof(E) == 4, float4, uint4>::type;
  V v[T];
  // Through the read-only cache: no thread writes these arrays while the kernel runs.
  __device__ __forceinline__ void load(const E* __restrict__ src, int r0, int R) {
#pragma unroll
    for (int t = 0; t < T; ++t) {
      const int i = tid() + t * kThreads, lr = i / C4, r = r0 + lr;
      const V* p = reinterpret_cast<const V*>(src + static_cast<size_t>(r) * COLS) + i % C4;
      v[t] = (i < N4 && r < R) ? __ldg(p) : V{};
    }
  }
  // f(local row, first column, the loaded values)
  template <class F>
  __device__ __forceinline__ void each(F&& f) const {
#pragma unroll
    for (int t = 0; t < T; ++t) {
      const int i = tid() + t * kThreads;
      if (i < N4) f(i / C4, (i % C4) * kPer, v[t]);
    }
  }
};

// A bf16 tile's values as they are into shared bf16 [32][ld] rows (ld a multiple of 8).
template <int COLS>
__device__ __forceinline__ void store_tile_b16(const Tile<COLS, __nv_bfloat16>& t, __nv_bfloat16* dst, int ld) {
  t.each([&](int lr, int c, uint4 v) { *reinterpret_cast<uint4*>(dst + lr * ld + c) = v; });
}

// Stores a tile's values into shared [32][ld] rows.
template <bool F32, int COLS>
__device__ __forceinline__ void store_tile(const Tile<COLS>& t, Elem<F32>* dst, int ld) {
  t.each([&](int lr, int c, float4 v) {
    Elem<F32>* p = dst + lr * ld + c;
    put<F32>(p, v.x);
    put<F32>(p + 1, v.y);
    put<F32>(p + 2, v.z);
    put<F32>(p + 3, v.w);
  });
}
template <int COLS>
__device__ __forceinline__ void store_tile_f32(const Tile<COLS>& t, float* dst) {
  t.each([&](int lr, int c, float4 v) { *reinterpret_cast<float4*>(dst + lr * COLS + c) = v; });
}

// acc = rows [0, 32) x columns [n0, n0 + 16) of A W^T, with A (32 x K) in shared memory (row stride K + kPad)
// and W a packed [N][K] matrix (rows padded like A's) in global memory, or (SW) its copy staged in shared
// memory (Staging).
template <bool F32, int K, bool SW = false, int MT = kMT>
__device__ __forceinline__ void warp_gemm(float (&acc)[MT][kNB][4], const Elem<F32>* A,
                                          const Elem<F32>* __restrict__ W, int n0) {
  constexpr int lda = K + kPad, ldw = K + kPad;  // W's rows are padded in global memory too (Packed)
  const int lane = tid() & 31, gq = lane >> 2, tq = lane & 3;
#pragma unroll
  for (int i = 0; i < MT; ++i)
#pragma unroll
    for (int j = 0; j < kNB; ++j)
#pragma unroll
      for (int e = 0; e < 4; ++e) acc[i][j][e] = 0.0f;
  if constexpr (!F32) {
    // Fragments from shared memory by ldmatrix, one instruction where four 32-bit loads were (A's fragment,
    // and the staged B's two): the chains stalled on the shared-memory instruction queue (NOTES, session 12).
#pragma unroll
    for (int k0 = 0; k0 < K; k0 += 16) {
      uint32_t a[MT][4], b[kNB][2];
      static_assert(kNB == 2, "ldmatrix_b2 loads two n8 tiles");
      if constexpr (SW) {
        ldmatrix_b2(b, W, ldw, n0, k0);
      } else {
#pragma unroll
        for (int j = 0; j < kNB; ++j) {
          const unsigned int* wn =
              reinterpret_cast<const unsigned int*>(W + static_cast<size_t>(n0 + j * 8 + gq) * ldw + k0 + 2 * tq);
          b[j][0] = __ldg(wn);
          b[j][1] = __ldg(wn + 4);
        }
      }
#pragma unroll
      for (int i = 0; i < MT; ++i) ldmatrix_a(a[i], A, lda, i * 16, k0);
#pragma unroll
      for (int i = 0; i < MT; ++i)
#pragma unroll
        for (int j = 0; j < kNB; ++j) mma_bf16(acc[i][j], a[i], b[j]);
    }
  } else {
#pragma unroll 4
    for (int k = 0; k < K; ++k) {
      float bv[kNB][2];
#pragma unroll
      for (int j = 0; j < kNB; ++j) {
        const int n = n0 + j * 8 + 2 * tq;
        bv[j][0] = W[static_cast<size_t>(n) * ldw + k];
        bv[j][1] = W[static_cast<size_t>(n + 1) * ldw + k];
      }
#pragma unroll
      for (int i = 0; i < MT; ++i) {
        const float a0 = A[(i * 16 + gq) * lda + k], a1 = A[(i * 16 + gq + 8) * lda + k];
#pragma unroll
        for (int j = 0; j < kNB; ++j) {
          acc[i][j][0] = fmaf(a0, bv[j][0], acc[i][j][0]);
          acc[i][j][1] = fmaf(a0, bv[j][1], acc[i][j][1]);
          acc[i][j][2] = fmaf(a1, bv[j][0], acc[i][j][2]);
          acc[i][j][3] = fmaf(a1, bv[j][1], acc[i][j][3]);
        }
      }
    }
  }
}

// The block's product of its 32 rows of A with all N columns of W^T, handing each pair of results to
// epi(local row, column c (even), value at c, value at c + 1); each warp takes units of 16 columns by kUM m16
// tiles in turn.
template <bool F32, int K, int N, bool SW = false, class Epi>
__device__ __forceinline__ void cta_gemm(const Elem<F32>* A, const Elem<F32>* __restrict__ W, Epi&& epi) {
  static_assert(N % (8 * kNB) == 0, "N must be a multiple of 16");
  const int lane = tid() & 31, gq = lane >> 2, tq = lane & 3, warp = tid() >> 5;
  constexpr int lda = K + kPad;
  for (int u = warp; u < kMSplit * (N / 16); u += kWarps) {
    const int rb = (u % kMSplit) * kUM * 16, n0 = (u / kMSplit) * 8 * kNB;
    float acc[kUM][kNB][4];
    warp_gemm<F32, K, SW, kUM>(acc, A + rb * lda, W, n0);
#pragma unroll
    for (int i = 0; i < kUM; ++i)
#pragma unroll
      for (int j = 0; j < kNB; ++j)
#pragma unroll
        for (int h = 0; h < 2; ++h)
          epi(rb + i * 16 + gq + h * 8, n0 + j * 8 + 2 * tq, acc[i][j][2 * h], acc[i][j][2 * h + 1]);
  }
}

// Per-thread values for the output pairs a warp owns in cta_gemm's product of N columns, read ahead:
// PreRead<N, T>::read(pre) calls pre(local row, column) for every pair of every unit of the calling warp at
// once, and cta_gemm_pre hands them to epi as a fifth argument. Why: a global read the epilogue needs (the
// MLP's f in out_backward) is then in flight from the kernel's start, ahead of the weights' copies, instead
// of being issued unit by unit behind them (ncu, session 12: 12% of out_backward's stall samples).
template <int N, class T>
struct PreRead {
  static constexpr int kUnits = kMSplit * (N / 16), kPerWarp = (kUnits + kWarps - 1) / kWarps;
  T v[kPerWarp][kUM][kNB][2];
  template <class Pre>
  __device__ __forceinline__ void read(Pre&& pre) {
    const int lane = tid() & 31, gq = lane >> 2, tq = lane & 3, warp = tid() >> 5;
#pragma unroll
    for (int q = 0; q < kPerWarp; ++q) {
      const int u = warp + q * kWarps;
      if (u >= kUnits) break;
      const int rb = (u % kMSplit) * kUM * 16, n0 = (u / kMSplit) * 8 * kNB;
#pragma unroll
      for (int i = 0; i < kUM; ++i)
#pragma unroll
        for (int j = 0; j < kNB; ++j)
#pragma unroll
          for (int h = 0; h < 2; ++h) v[q][i][j][h] = pre(rb + i * 16 + gq + h * 8, n0 + j * 8 + 2 * tq);
    }
  }
};

template <bool F32, int K, int N, bool SW = false, class T, class Epi>
__device__ __forceinline__ void cta_gemm_pre(const Elem<F32>* A, const Elem<F32>* __restrict__ W,
                                             const PreRead<N, T>& pv, Epi&& epi) {
  static_assert(N % (8 * kNB) == 0, "N must be a multiple of 16");
  const int lane = tid() & 31, gq = lane >> 2, tq = lane & 3, warp = tid() >> 5;
  constexpr int lda = K + kPad;
#pragma unroll
  for (int q = 0; q < PreRead<N, T>::kPerWarp; ++q) {
    const int u = warp + q * kWarps;
    if (u >= PreRead<N, T>::kUnits) break;
    const int rb = (u % kMSplit) * kUM * 16, n0 = (u / kMSplit) * 8 * kNB;
    float acc[kUM][kNB][4];
    warp_gemm<F32, K, SW, kUM>(acc, A + rb * lda, W, n0);
#pragma unroll
    for (int i = 0; i < kUM; ++i)
#pragma unroll
      for (int j = 0; j < kNB; ++j)
#pragma unroll
        for (int h = 0; h < 2; ++h)
          epi(rb + i * 16 + gq + h * 8, n0 + j * 8 + 2 * tq, acc[i][j][2 * h], acc[i][j][2 * h + 1], pv.v[q][i][j][h]);
  }
}

// One row's mean and 1/std, by the same operations in the same order as layernorm.cu's forward kernel (so
// the same bits); the calling warp owns the row.
template <int D>
__device__ __forceinline__ void row_stats(const float* xr, float& m, float& rs) {
  const int lane = tid() & 31;
  float s = 0.0f;
#pragma unroll
  for (int j = lane; j < D; j += 32) s += xr[j];
  m = warp_sum(s) / D;
  float v = 0.0f;
#pragma unroll
  for (int j = lane; j < D; j += 32) {
    const float t = xr[j] - m;
    v += t * t;
  }
  rs = 1.0f / sqrtf(warp_sum(v) / D + kEps);
}

// Elements lane, lane + 32, ... of a [D] vector (a LayerNorm's weight or bias) in the calling lane's registers;
// a null vector holds zeros. Read at a kernel's start: read where the rows are normalized, they were waited
// for there (ncu, session 12: 17% of in_forward's stall samples on the first product with w).
template <int D>
struct LaneVec {
  float v[D / 32];
  __device__ __forceinline__ void load(const float* __restrict__ p) {
    const int lane = tid() & 31;
#pragma unroll
    for (int k = 0; k < D / 32; ++k) v[k] = p ? __ldg(p + lane + 32 * k) : 0.0f;
  }
};

// LayerNorm of the tile's rows (shared X, [32][D]) into h (global; bf16 where h_half), mean, rstd and A
// (shared, for the next product); A's rows past R become zeros. has_b: false without a bias.
template <bool F32, int D>
__device__ __forceinline__ void tile_layernorm(const float* X, const LaneVec<D>& w, const LaneVec<D>& b, bool has_b,
                                               int r0, int R, float* h, bool h_half, float* mean, float* rstd,
                                               Elem<F32>* A) {
  const int lane = tid() & 31, warp = tid() >> 5;
  for (int lr = warp; lr < kTM; lr += kWarps) {
    const int r = r0 + lr;
    Elem<F32>* ar = A + lr * (D + kPad);
    if (r >= R) {
#pragma unroll
      for (int j = lane; j < D; j += 32) put<F32>(ar + j, 0.0f);
      continue;
    }
    const float* xr = X + lr * D;
    float m, rs;
    row_stats<D>(xr, m, rs);
    if (lane == 0) {
      mean[r] = m;
      rstd[r] = rs;
    }
    const size_t at = static_cast<size_t>(r) * D;
#pragma unroll
    for (int k = 0; k < D / 32; ++k) {
      const int j = lane + 32 * k;
      float v = (xr[j] - m) * rs * w.v[k];
      if (has_b) v += b.v[k];
      if (h_half) reinterpret_cast<__nv_bfloat16*>(h)[at + j] = __float2bfloat16_rn(v);
      else h[at + j] = v;
      put<F32>(ar + j, v);
    }
  }
}

// dx = dres + LayerNorm's input gradient for each of the tile's rows (layernorm.cu's expressions), from
// shared X (the LayerNorm's input), G (its output gradient) and DR (dres), all [32][D]; out(r, local row,
// j, dx_j) for each element of the rows below R.
template <int D, class Out>
__device__ __forceinline__ void tile_layernorm_backward(const float* X, const float* G, const float* DR,
                                                        const LaneVec<D>& w, const float* __restrict__ mean,
                                                        const float* __restrict__ rstd, int r0, int R, Out&& out) {
  const int lane = tid() & 31, warp = tid() >> 5;
  constexpr int RPW = kTM / kWarps;
  float ms[RPW], rss[RPW];  // the statistics of the warp's rows, read together
#pragma unroll
  for (int q = 0; q < RPW; ++q) {
    const int r = r0 + warp + q * kWarps;
    ms[q] = r < R ? mean[r] : 0.0f;
    rss[q] = r < R ? rstd[r] : 0.0f;
  }
#pragma unroll
  for (int q = 0; q < RPW; ++q) {
    const int lr = warp + q * kWarps, r = r0 + lr;
    if (r >= R) continue;
    const float* xr = X + lr * D;
    const float* g = G + lr * D;
    const float m = ms[q], rs = rss[q];
    float s1 = 0.0f, s2 = 0.0f;
#pragma unroll
    for (int k = 0; k < D / 32; ++k) {
      const int j = lane + 32 * k;
      // Rounded on its own, as layernorm.cu's dx kernels round it (there it has two uses and stays unfused);
      // the second loop's g * w - m1 is one fused multiply-add in both.
      const float dyw = __fmul_rn(g[j], w.v[k]);
      s1 += dyw;
      s2 += dyw * ((xr[j] - m) * rs);
    }
    const float m1 = warp_sum(s1) / D, m2 = warp_sum(s2) / D;
#pragma unroll
    for (int k = 0; k < D / 32; ++k) {
      const int j = lane + 32 * k;
      const float xh = (xr[j] - m) * rs;
      out(r, lr, j, DR[lr * D + j] + rs * (g[j] * w.v[k] - m1 - xh * m2));
    }
  }
}

__device__ __forceinline__ void store2(float* p, float a, float b) { *reinterpret_cast<float2*>(p) = make_float2(a, b); }

// Bytes of a packed [N][K] bf16 matrix staged in shared memory, rows padded by kPad.
template <int K, int N>
constexpr size_t kStaged = static_cast<size_t>(N) * (K + kPad) * 2;

template <bool F32, int D>
struct Smem {
  static constexpr size_t E = sizeof(Elem<F32>);
  __host__ __device__ static constexpr size_t a(int cols) { return kTM * (cols + kPad) * E; }  // a product's input tile
  static constexpr size_t f = kTM * D * 4;                                    // a float32 [32][D] tile
  static constexpr size_t in_forward = f + a(D);
  static constexpr size_t out_forward = a(D) + f + a(4 * D);
  static constexpr size_t out_backward = a(D) + 3 * f + a(4 * D);
  static constexpr size_t in_backward = a(3 * D) + 3 * f;
  // With the weights staged (bf16 only): each kernel's matrices after its tiles. out_backward's first
  // region holds c_proj's transpose after the MLP's first matrix is done with.
  static constexpr size_t r1 = kStaged<D, 4 * D> > kStaged<D, D> ? kStaged<D, 4 * D> : kStaged<D, D>;
  static constexpr size_t in_forward_st = in_forward + kStaged<D, 3 * D>;
  static constexpr size_t out_forward_st = out_forward + kStaged<D, D> + kStaged<D, 4 * D> + kStaged<4 * D, D>;
  static constexpr size_t out_backward_st = out_backward + r1 + kStaged<4 * D, D>;
  static constexpr size_t in_backward_st = in_backward + kStaged<3 * D, D>;
};

// Copies a packed [N][K] bf16 matrix into shared memory (rows padded by kPad) with cp.async, as one commit
// group. Why: a kernel issues every matrix it needs at its start, so the weights stream in while its tiles
// are loaded and normalized, and each product then waits for shared memory instead of for L2 at every
// k-step (those waits were half the stall cycles of the chains; bench/cuda/NOTES.md, session 9).
template <int K, int N, class T>
__device__ __forceinline__ void stage_weights(T* dst, const T* __restrict__ W) {
  constexpr int C = static_cast<int>(Packed::sz(N, K) * sizeof(T) / 16);  // 16-byte chunks: rows padded alike
  constexpr int per = 16 / static_cast<int>(sizeof(T));
  for (int i = tid(); i < C; i += kThreads) gemm_detail::cp_async16(dst + i * per, W + i * per, true);
  gemm_detail::cp_async_commit();
}
template <bool ST, int N>
__device__ __forceinline__ void stage_wait() {
  if constexpr (ST) gemm_detail::cp_async_wait<N>();
}

// A kernel's staged weights (ST), NB matrices. On Hopper each matrix is one bulk copy (its rows are padded in
// global memory as in shared memory: Packed), issued by one thread and counted by an mbarrier; where the
// kernel runs in a cluster (sm_90a, block_fused.cu's launch) each block copies a 1/cl slice of every matrix to
// all the cluster's blocks (multicast), so L2 serves each matrix once a cluster. Below sm_90, cp.async
// copies by every thread, one commit group a matrix.
// Why: copying 175 KB by cp.async took ~11,000 instructions a block at d = 96 (the chains stalled on the
// shared-memory instruction queue), and one bulk copy a row was worse: the copy engine's cost is per copy
// (session 13: a cluster of four with one multicast a row slowed in_forward from 8.6 to 11.0 us).
template <bool ST, int NB>
struct Staging {
  unsigned cl = 1, rank = 0;
  uint64_t* bar = nullptr;
  __device__ __forceinline__ Staging() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
    if constexpr (ST) {
      __shared__ uint64_t bars[NB];
      bar = bars;
#if defined(__CUDA_ARCH_FEAT_SM90_ALL)  // elsewhere a block copies everything itself, even in a cluster
      cl = cluster::size();
      rank = cluster::rank();
#endif
    }
#endif
  }
  // Once, by every thread, before the first copy: the barriers initialised before any thread waits on them
  // and (cluster-wide) before any copy can reach them.
  __device__ __forceinline__ void begin() {
    if (!bar) return;
    if (tid() == 0) {
      for (int i = 0; i < NB; ++i) cluster::bar_init(bar + i);
      cluster::bar_init_fence();
    }
    if (cl > 1) cluster::sync();
    else __syncthreads();
  }
  // W (packed [N][K], rows padded) to dst, as matrix slot.
  template <int K, int N, class T>
  __device__ __forceinline__ void copy(T* dst, const T* __restrict__ W, int slot) {
    if (!bar) {
      stage_weights<K, N>(dst, W);
      return;
    }
    constexpr uint32_t bytes = static_cast<uint32_t>(Packed::sz(N, K) * sizeof(T));
    static_assert(bytes % 64 == 0, "slices of a quarter must be whole 16-byte units");
    if (tid() != 0) return;
    cluster::bar_expect(bar + slot, bytes);
    const uint32_t part = bytes / cl;
    unsigned char* d = reinterpret_cast<unsigned char*>(dst) + rank * part;
    const unsigned char* w = reinterpret_cast<const unsigned char*>(W) + rank * part;
    if (cl > 1) cluster::copy_multicast(d, w, part, bar + slot, static_cast<uint16_t>((1u << cl) - 1));
    else cluster::copy_bulk(d, w, part, bar + slot);
  }
  // Matrix slot is in shared memory; PENDING: how many cp.async groups were committed after its.
  template <int PENDING>
  __device__ __forceinline__ void wait(int slot) {
    if constexpr (ST) {
      if (bar) cluster::bar_wait(bar + slot, 0);
      else gemm_detail::cp_async_wait<PENDING>();
    }
  }
};

struct InFwd {
  int R;
  float* x;  // written first when glue.S is set (layer/backend.h's WindowGlue), read otherwise
  const float *ln_w, *ln_b, *b;
  const void* W;  // packed
  float *h, *mean, *rstd, *qkv;
  WindowGlue glue{};
  int n = 0;  // tokens per element, for glue
  bool early = false;  // stage the weights before pdl_wait() (block_fused.cu's launch says when)
  bool half = false;   // h and qkv are bf16 (BlockCache::half)
};

// a * x + y element by element, each a fused multiply-add: how the glue's axpy2d batch rounds them.
__device__ __forceinline__ float4 fma4(float a, float4 x, float4 y) {
  return make_float4(__fmaf_rn(a, x.x, y.x), __fmaf_rn(a, x.y, y.y), __fmaf_rn(a, x.z, y.z), __fmaf_rn(a, x.w, y.w));
}

// The tile of x that glue forms (WindowGlue): each element alpha * P + S (or X), one fused multiply-add as
// the glue's axpy2d batch computes it, written to x and kept in the tile; the Y copy of rows t < ns made on
// the way (with P's values where Ysrc is P); between() runs once the reads are issued. Why here: the batch
// was a launch of its own per window, 4.6 us of the copy step's ~90 us window (bench/cuda/NOTES.md, session 12).
template <int D, class Between>
__device__ __forceinline__ void glue_tile(Tile<D>& t, const WindowGlue& g, int n, float* __restrict__ x, int r0,
                                          int R, Between&& between) {
  using TL = Tile<D>;
  const bool y_is_p = g.Ysrc == g.P && g.Ysrcs == g.Ps;
  float4 s[TL::T], p[TL::T], q[TL::T];  // S or X; P; the Y copy's source
  const float4 zero = make_float4(0.0f, 0.0f, 0.0f, 0.0f);
  // Every read is issued before the first use.
#pragma unroll
  for (int k = 0; k < TL::T; ++k) {
    const int i = tid() + k * kThreads, lr = i / TL::C4, c = (i % TL::C4) * 4, r = r0 + lr;
    s[k] = p[k] = q[k] = zero;
    if (i >= TL::N4 || r >= R) continue;
    const int b = r / n, tk = r % n, row = tk < g.ns ? tk : tk - g.ns;
    const float* src = tk < g.ns ? g.S + b * g.Ss : g.X + b * g.Xs;
    s[k] = __ldg(reinterpret_cast<const float4*>(src + static_cast<size_t>(row) * D + c));
    if (g.P) p[k] = __ldg(reinterpret_cast<const float4*>(g.P + b * g.Ps + static_cast<size_t>(row) * D + c));
    if (g.Y && tk < g.ns && !y_is_p)
      q[k] = __ldg(reinterpret_cast<const float4*>(g.Ysrc + b * g.Ysrcs + static_cast<size_t>(tk) * D + c));
  }
  between();
  const float al = g.P ? *g.alpha : 0.0f;
#pragma unroll
  for (int k = 0; k < TL::T; ++k) {
    const int i = tid() + k * kThreads, lr = i / TL::C4, c = (i % TL::C4) * 4, r = r0 + lr;
    float4 v = zero;
    if (i < TL::N4 && r < R) {
      const int b = r / n, tk = r % n;
      v = s[k];
      if (g.P) v = fma4(al, p[k], v);
      *reinterpret_cast<float4*>(x + static_cast<size_t>(r) * D + c) = v;
      if (g.Y && tk < g.ns)
        *reinterpret_cast<float4*>(g.Y + b * g.Ys + static_cast<size_t>(tk) * D + c) = y_is_p ? p[k] : q[k];
    }
    t.v[k] = v;
  }
}

template <bool F32, int D, bool ST>
__device__ __forceinline__ void in_forward_tile(const InFwd& a, int r0, unsigned char* smem) {
  using S = Smem<F32, D>;
  float* X = reinterpret_cast<float*>(smem);                 // [32][D]: x
  Elem<F32>* A = reinterpret_cast<Elem<F32>*>(smem + S::f);  // [32][D + kPad]: h
  const Elem<F32>* W = static_cast<const Elem<F32>*>(a.W) + Packed::qkv(D);
  Elem<F32>* Ws = reinterpret_cast<Elem<F32>*>(smem + S::in_forward);
  LaneVec<D> lw, lb;
  Staging<ST, 1> st;
  auto stage = [&] {
    if constexpr (ST) {
      st.begin();
      st.template copy<D, 3 * D>(Ws, W, 0);
    }
  };
  if (a.early) stage();
  pdl_wait();
  pdl_trigger();
  {
    // Otherwise the tiles' loads go out before the weights' copies, which would queue ahead of them
    // (ncu, session 12: the chains' most-sampled stall was the first use of a tile, behind the weights).
    Tile<D> t;
    auto rest = [&] {
      lw.load(a.ln_w);
      lb.load(a.ln_b);
      if (!a.early) stage();
    };
    if (a.glue.S) {
      glue_tile(t, a.glue, a.n, a.x, r0, a.R, rest);
    } else {
      t.load(a.x, r0, a.R);
      rest();
    }
    store_tile_f32(t, X);
  }
  __syncthreads();
  tile_layernorm<F32, D>(X, lw, lb, a.ln_b != nullptr, r0, a.R, a.h, a.half, a.mean, a.rstd, A);
  st.template wait<0>(0);
  __syncthreads();
  cta_gemm<F32, D, 3 * D, ST>(A, ST ? Ws : W, [&](int lr, int c, float v0, float v1) {
    const int r = r0 + lr;
    if (r >= a.R) return;
    if (a.b) {
      v0 += a.b[c];
      v1 += a.b[c + 1];
    }
    store2_as(a.qkv, a.half, static_cast<size_t>(r) * 3 * D + c, v0, v1);
  });
}

struct OutFwd {
  int R;
  bool gelu;
  Drop drop1, drop2;
  float* att;  // read; written first when qkv is set
  const float *x, *bp, *ln_w, *ln_b, *bfc, *bmp;
  const void* W;  // packed
  float *x2, *h2, *mean2, *rstd2, *f, *g, *y;  // f: null when the layer keeps none (relu_from_g in block_fused.cu)
  bool early = false;
  bool half = false;  // h2, g and qkv are bf16 (BlockCache::half)
  // With qkv: the window's attention (head size kAttnHD, n = 2 kTM) computed here first (tile_attention).
  const float* qkv = nullptr;
  float* probs = nullptr;
  attn::Mask amask{};
  float scale = 0.0f;
  int n = 0;
};

constexpr int kAttnHD = 16;  // the head size out_forward's attention is built for (the copy config's)
constexpr bool kAttnFits = 2 * kTM == attn::kMmaN;  // two row blocks an element of n = 64 (not with RT_FUSED_TM=16)

// The attention of this block's 32 query rows (half of element b's n = 64), every head: the same
// computation as attention_mma.cuh's kernel (forward_rows_mma, same bits), writing probs and att as it does,
// and att as bf16 into A, the first product's input. Warp w takes head w % H, query tile 2 half + w / H;
// K and V of the keys those rows see are staged transposed for all heads at once in `scratch` (2 D kLdT
// bf16). Why here: a separate kernel per window was 7.8 us of the copy step's ~80 us a window, plus its
// launch, for a few thousand mma (bench/cuda/NOTES.md, session 13).
template <int D>
__device__ __forceinline__ void tile_attention(const OutFwd& a, int r0, __nv_bfloat16* A, int lda,
                                               __nv_bfloat16* scratch) {
  constexpr int HD = kAttnHD, H = D / HD, kTasks = 2 * H, ld = 3 * D, kLdT = attn::kLdT;
  static_assert(D % HD == 0 && kTasks <= kWarps, "one (head, query tile) a warp");
  static_assert(D > 0 && kAttnFits, "two row blocks an element of n = 64");
  const int n = a.n, b = r0 / n, half = (r0 - b * n) / kTM, keys = kTM * (half + 1);
  const int warp = tid() >> 5, lane = tid() & 31, gq = lane >> 2, tq = lane & 3;
  const bool active = warp < kTasks;
  const int h = warp % H, m = 2 * half + warp / H;
  const size_t qo = static_cast<size_t>(b) * n * ld;  // element b's rows of qkv (bf16 where a.half)
  __nv_bfloat16 *Kt = scratch, *Vt = scratch + D * kLdT;  // [D][kLdT]: K^T, V^T, head h from row h HD
  uint32_t qa[HD / 16][4];  // the warp's Q rows, read first so that the loads overlap
  if (active) attn::frags_a<HD>(qa, elem_at(a.qkv, a.half, qo + h * HD), ld, 16 * m, gq, tq, a.half);
  // Key pairs (j, j + 1) by four columns: two float4 loads, four bf16 pairs of transposed rows; a warp's
  // lanes take consecutive pairs, so its stores fall in consecutive words. Every load before the first store.
  constexpr int kPairs = kTM, kQuads = D / 4, kAll = 2 * kPairs * kQuads, kIt = (kAll + kThreads - 1) / kThreads;
  float4 v[kIt][2];
  int jj[kIt], cc[kIt];
  bool vok[kIt];
#pragma unroll
  for (int u = 0; u < kIt; ++u) {
    const int it = tid() + u * kThreads, mat = it / (kPairs * kQuads), rem = it - mat * (kPairs * kQuads);
    jj[u] = 2 * (rem % kPairs);
    cc[u] = mat * D + 4 * (rem / kPairs);  // K's columns, then V's
    vok[u] = it < kAll && jj[u] < keys;
    if (vok[u]) {
      const size_t o = qo + static_cast<size_t>(jj[u]) * ld + D + cc[u];
      v[u][0] = load4_as(a.qkv, a.half, o);
      v[u][1] = load4_as(a.qkv, a.half, o + ld);
    }
  }
#pragma unroll
  for (int u = 0; u < kIt; ++u)
    if (vok[u]) {
      uint32_t* d = reinterpret_cast<uint32_t*>(Kt + cc[u] * kLdT + jj[u]);  // Vt follows Kt: row D on is V^T
      const float4 x = v[u][0], y = v[u][1];
      d[0] = pack_bf16(x.x, y.x);
      d[kLdT / 2] = pack_bf16(x.y, y.y);
      d[kLdT] = pack_bf16(x.z, y.z);
      d[3 * kLdT / 2] = pack_bf16(x.w, y.w);
    }
  __syncthreads();
  if (active) {
    const int bh = b * H + h;
    attn::forward_rows_mma<HD, attn::kMmaN / 8>(
        qa, Kt + h * HD * kLdT, Vt + h * HD * kLdT, m, n, bh, a.scale, a.amask, a.probs,
        [&](const float (&o)[HD / 8][4], const int (&r)[2]) {
#pragma unroll
          for (int cn = 0; cn < HD / 8; ++cn)
#pragma unroll
            for (int hh = 0; hh < 2; ++hh) {
              const int c = h * HD + 8 * cn + 2 * tq;
              store2(a.att + (static_cast<size_t>(b) * n + r[hh]) * D + c, o[cn][2 * hh], o[cn][2 * hh + 1]);
              put2<false>(A + (r[hh] - half * kTM) * lda + c, o[cn][2 * hh], o[cn][2 * hh + 1]);
            }
        });
  }
  __syncthreads();  // scratch is X2 and G, written next
}

template <bool F32, int D, bool ST>
__device__ __forceinline__ void out_forward_tile(const OutFwd& a, int r0, unsigned char* smem) {
  using S = Smem<F32, D>;
  constexpr int F = 4 * D, lda = D + kPad, ldg = F + kPad;
  Elem<F32>* A = reinterpret_cast<Elem<F32>*>(smem);                          // [32][lda]: att, then h2
  float* X2 = reinterpret_cast<float*>(smem + S::a(D));                        // [32][D]: x, then x2
  Elem<F32>* G = reinterpret_cast<Elem<F32>*>(smem + S::a(D) + S::f);          // [32][ldg]: g
  const Elem<F32>* W = static_cast<const Elem<F32>*>(a.W);
  Elem<F32>* Wp = reinterpret_cast<Elem<F32>*>(smem + S::out_forward);
  Elem<F32>* Wf = reinterpret_cast<Elem<F32>*>(smem + S::out_forward + kStaged<D, D>);
  Elem<F32>* Wm = reinterpret_cast<Elem<F32>*>(smem + S::out_forward + kStaged<D, D> + kStaged<D, F>);
  LaneVec<D> lw, lb;
  Staging<ST, 3> st;
  auto stage = [&] {
    if constexpr (ST) {
      st.begin();
      st.template copy<D, D>(Wp, W + Packed::proj(D), 0);
      st.template copy<D, F>(Wf, W + Packed::fc(D), 1);
      st.template copy<F, D>(Wm, W + Packed::mproj(D), 2);
    }
  };
  if (a.early) stage();
  pdl_wait();
  pdl_trigger();
  constexpr bool attn_here = !F32 && kAttnFits;
  if constexpr (attn_here) {
    if (a.qkv) {
      Tile<D> t_x;
      t_x.load(a.x, r0, a.R);
      lw.load(a.ln_w);
      lb.load(a.ln_b);
      if (!a.early) stage();
      static_assert(2 * D * attn::kLdT * 2 <= S::f + S::a(4 * D), "X2 and G hold the attention's K^T, V^T");
      tile_attention<D>(a, r0, A, lda, reinterpret_cast<__nv_bfloat16*>(X2));  // X2 and G as its scratch
      store_tile_f32(t_x, X2);
    }
  }
  if (!attn_here || !a.qkv) {
    Tile<D> t_att, t_x;  // loaded before the weights are staged (in_forward_tile says why)
    t_att.load(a.att, r0, a.R);
    t_x.load(a.x, r0, a.R);
    lw.load(a.ln_w);
    lb.load(a.ln_b);
    if (!a.early) stage();
    store_tile<F32>(t_att, A, lda);
    store_tile_f32(t_x, X2);
  }
  st.template wait<2>(0);
  __syncthreads();
  // x2 = x + dropout(c_proj(att)), in place over x in X2 (each element read and written by one thread)
  cta_gemm<F32, D, D, ST>(A, ST ? Wp : W + Packed::proj(D), [&](int lr, int c, float v0, float v1) {
    const int r = r0 + lr;
    float* xs = X2 + lr * D + c;
    if (r >= a.R) return;  // X2's rows past R hold zeros from the tile load
    const size_t i = static_cast<size_t>(r) * D + c;
    if (a.bp) {
      v0 += a.bp[c];
      v1 += a.bp[c + 1];
    }
    const float x0 = a.drop1(v0, i) + xs[0], x1 = a.drop1(v1, i + 1) + xs[1];
    xs[0] = x0;
    xs[1] = x1;
    store2(a.x2 + i, x0, x1);
  });
  __syncthreads();
  tile_layernorm<F32, D>(X2, lw, lb, a.ln_b != nullptr, r0, a.R, a.h2, a.half, a.mean2, a.rstd2, A);
  st.template wait<1>(1);
  __syncthreads();
  // f = c_fc(h2), g = act(f)
  cta_gemm<F32, D, F, ST>(A, ST ? Wf : W + Packed::fc(D), [&](int lr, int c, float v0, float v1) {
    const int r = r0 + lr;
    float g0 = 0.0f, g1 = 0.0f;
    if (r < a.R) {
      const size_t i = static_cast<size_t>(r) * F + c;
      if (a.bfc) {
        v0 += a.bfc[c];
        v1 += a.bfc[c + 1];
      }
      if (a.f) store2(a.f + i, v0, v1);
      g0 = a.gelu ? Gelu()(v0) : Relu()(v0);
      g1 = a.gelu ? Gelu()(v1) : Relu()(v1);
      store2_as(a.g, a.half, i, g0, g1);
    }
    put2<F32>(G + lr * ldg + c, g0, g1);
  });
  st.template wait<0>(2);
  __syncthreads();
  // y = x2 + dropout(c_proj(g))
  cta_gemm<F32, F, D, ST>(G, ST ? Wm : W + Packed::mproj(D), [&](int lr, int c, float v0, float v1) {
    const int r = r0 + lr;
    if (r >= a.R) return;
    const size_t i = static_cast<size_t>(r) * D + c;
    if (a.bmp) {
      v0 += a.bmp[c];
      v1 += a.bmp[c + 1];
    }
    const float* xs = X2 + lr * D + c;
    store2(a.y + i, a.drop2(v0, i) + xs[0], a.drop2(v1, i + 1) + xs[1]);
  });
}

struct OutBwd {
  int R;
  bool gelu;
  Drop drop1, drop2;
  const float *dy, *f, *x2, *mean2, *rstd2, *ln_w;  // f: or g under relu (only its sign is used)
  const void* W;  // packed
  float *dm, *dg, *dh2, *dx2, *da, *datt;  // dm, da: null when not written
  BackGlue glue{};  // with glue.din: dy is formed as glue says and written to dy_out
  int n = 0;        // tokens per element, for glue
  float* dy_out = nullptr;
  bool early = false;
  bool f_half = false;   // f is the cache's g in bf16 (BlockCache::half)
  bool dg_half = false;  // dg is bf16 (BlockGradStash::half)
};

// out_backward's dy tile formed as glue says (layer/backend.h's BackGlue), each element as the glue's axpy2d
// batch computes it (alpha * din + dY, then + alpha * din's second-half row, as fused multiply-adds), written
// to dy and kept in the tile; dX's rows added on the way, and this thread's share of alpha's dot products
// (P's rows times din's, in double) returned. Why here: the batch was a launch of its own per window
// (bench/cuda/NOTES.md, session 12). between() runs once the reads are issued.
template <int D, class Between>
__device__ __forceinline__ double back_glue_tile(Tile<D>& t, const BackGlue& g, int n, float* __restrict__ dy,
                                                 int r0, int R, Between&& between) {
  using TL = Tile<D>;
  const float4 zero = make_float4(0.0f, 0.0f, 0.0f, 0.0f);
  float4 a0[TL::T], a1[TL::T], y0[TL::T], p[TL::T], x0[TL::T];  // din rows t and ns + t, dY, P, dX
  // Every read is issued before the first use.
#pragma unroll
  for (int k = 0; k < TL::T; ++k) {
    const int i = tid() + k * kThreads, lr = i / TL::C4, c = (i % TL::C4) * 4, r = r0 + lr;
    a0[k] = a1[k] = y0[k] = p[k] = x0[k] = zero;
    if (i >= TL::N4 || r >= R) continue;
    const int b = r / n, tk = r % n;
    const float* din = g.din + b * g.dins + c;
    if (tk >= g.ns) {
      a0[k] = __ldg(reinterpret_cast<const float4*>(din + static_cast<size_t>(tk - g.ns) * D));
      continue;
    }
    const size_t at = static_cast<size_t>(tk) * D + c;
    a0[k] = __ldg(reinterpret_cast<const float4*>(din + static_cast<size_t>(tk) * D));
    y0[k] = __ldg(reinterpret_cast<const float4*>(g.dY + b * g.dYs + at));
    if (g.P) p[k] = __ldg(reinterpret_cast<const float4*>(g.P + b * g.Ps + at));
    if (tk < g.nx) {
      a1[k] = __ldg(reinterpret_cast<const float4*>(din + static_cast<size_t>(g.ns + tk) * D));
      x0[k] = *reinterpret_cast<const float4*>(g.dX + b * g.dXs + at);
    }
  }
  between();
  const float al = g.alpha ? *g.alpha : 0.0f;
  double dot = 0.0;
#pragma unroll
  for (int k = 0; k < TL::T; ++k) {
    const int i = tid() + k * kThreads, lr = i / TL::C4, c = (i % TL::C4) * 4, r = r0 + lr;
    float4 v = zero;
    if (i < TL::N4 && r < R) {
      const int b = r / n, tk = r % n;
      v = a0[k];
      if (tk < g.ns) {
        const size_t at = static_cast<size_t>(tk) * D + c;
        const bool second = tk < g.nx;
        if (g.alpha) {
          v = fma4(al, a0[k], y0[k]);
          if (second) v = fma4(al, a1[k], v);
        } else {
          v = y0[k];
        }
        if (second) {
          const float4 x = x0[k], e = a1[k];
          *reinterpret_cast<float4*>(g.dX + b * g.dXs + at) = make_float4(x.x + e.x, x.y + e.y, x.z + e.z, x.w + e.w);
        }
        if (g.P) {
          const float4 q = p[k], u = a0[k], e = a1[k];
          dot += double(q.x) * u.x + double(q.y) * u.y + double(q.z) * u.z + double(q.w) * u.w;
          if (second) dot += double(q.x) * e.x + double(q.y) * e.y + double(q.z) * e.z + double(q.w) * e.w;
        }
      }
      *reinterpret_cast<float4*>(dy + static_cast<size_t>(r) * D + c) = v;
    }
    t.v[k] = v;
  }
  return dot;
}

template <bool F32, int D, bool ST>
__device__ __forceinline__ void out_backward_tile(const OutBwd& a, int r0, unsigned char* smem) {
  using S = Smem<F32, D>;
  constexpr int F = 4 * D, lda = D + kPad, ldg = F + kPad;
  Elem<F32>* A = reinterpret_cast<Elem<F32>*>(smem);                       // [32][lda]: dm, then da
  float* DY = reinterpret_cast<float*>(smem + S::a(D));                     // [32][D]: the block's dy
  float* DH = DY + kTM * D;                                                 // [32][D]: dh2
  float* X = DH + kTM * D;                                                  // [32][D]: x2
  Elem<F32>* G = reinterpret_cast<Elem<F32>*>(smem + S::a(D) + 3 * S::f);   // [32][ldg]: dg
  const Elem<F32>* W = static_cast<const Elem<F32>*>(a.W);
  Elem<F32>* W1 = reinterpret_cast<Elem<F32>*>(smem + S::out_backward);          // mproj^T, then proj^T
  Elem<F32>* W2 = reinterpret_cast<Elem<F32>*>(smem + S::out_backward + S::r1);  // fc^T
  Staging<ST, 2> st;
  auto stage = [&] {
    if constexpr (ST) {
      st.begin();
      st.template copy<D, F>(W1, W + Packed::mproj_t(D), 0);
      st.template copy<F, D>(W2, W + Packed::fc_t(D), 1);
    }
  };
  if (a.early) stage();
  pdl_wait();
  pdl_trigger();
  // f for dg = act'(f) * (dm W_mp), read with the tiles (PreRead says why)
  PreRead<F, float2> f_pre;
  f_pre.read([&](int lr, int c) {
    const int r = r0 + lr;
    return r < a.R ? load2_as(a.f, a.f_half, static_cast<size_t>(r) * F + c) : make_float2(0.0f, 0.0f);
  });
  LaneVec<D> lw;
  double dot = 0.0;  // with glue: this thread's share of alpha's gradient
  {
    Tile<D> t_dy, t_x;  // loaded before the weights are staged (in_forward_tile says why)
    auto rest = [&] {
      t_x.load(a.x2, r0, a.R);
      lw.load(a.ln_w);
      if (!a.early) stage();
    };
    if (a.glue.din) {
      dot = back_glue_tile(t_dy, a.glue, a.n, a.dy_out, r0, a.R, rest);
    } else {
      t_dy.load(a.dy, r0, a.R);
      rest();
    }
    store_tile_f32(t_dy, DY);
    store_tile_f32(t_x, X);
    t_dy.each([&](int lr, int c, float4 v) {
      const int r = r0 + lr;
      const size_t i = static_cast<size_t>(r) * D + c;
      float4 m = v;
      if (r < a.R) {
        m = make_float4(a.drop2(v.x, i), a.drop2(v.y, i + 1), a.drop2(v.z, i + 2), a.drop2(v.w, i + 3));
        if (a.dm) *reinterpret_cast<float4*>(a.dm + i) = m;
      }
      Elem<F32>* p = A + lr * lda + c;
      put<F32>(p, m.x);
      put<F32>(p + 1, m.y);
      put<F32>(p + 2, m.z);
      put<F32>(p + 3, m.w);
    });
  }
  __shared__ double dot_warp[kWarps];
  if (a.glue.parts) {  // a fixed tree: the same bits every run
    for (int o = 16; o > 0; o >>= 1) dot += __shfl_xor_sync(0xffffffffu, dot, o);
    if ((tid() & 31) == 0) dot_warp[tid() >> 5] = dot;
  }
  st.template wait<1>(0);
  __syncthreads();
  if (a.glue.parts && tid() == 0) {
    double s = 0.0;
    for (int w = 0; w < kWarps; ++w) s += dot_warp[w];
    a.glue.parts[blockIdx.x] = s;
  }
  // dg = act'(f) * (dm W_mp)
  cta_gemm_pre<F32, D, F, ST>(A, ST ? W1 : W + Packed::mproj_t(D), f_pre, [&](int lr, int c, float v0, float v1, float2 fv) {
    const int r = r0 + lr;
    float g0 = 0.0f, g1 = 0.0f;
    if (r < a.R) {
      const size_t i = static_cast<size_t>(r) * F + c;
      g0 = a.gelu ? GeluGrad()(fv.x, v0) : ReluGrad()(fv.x, v0);
      g1 = a.gelu ? GeluGrad()(fv.y, v1) : ReluGrad()(fv.y, v1);
      store2_as(a.dg, a.dg_half, i, g0, g1);
    }
    put2<F32>(G + lr * ldg + c, g0, g1);
  });
  st.template wait<0>(1);
  __syncthreads();
  // every warp is done with mproj^T; this block's own copy, by cp.async (a peer's could land early)
  if constexpr (ST) stage_weights<D, D>(W1, W + Packed::proj_t(D));
  // dh2 = dg W_fc
  cta_gemm<F32, F, D, ST>(G, ST ? W2 : W + Packed::fc_t(D), [&](int lr, int c, float v0, float v1) {
    const int r = r0 + lr;
    if (r < a.R) store2(a.dh2 + static_cast<size_t>(r) * D + c, v0, v1);
    store2(DH + lr * D + c, v0, v1);
  });
  __syncthreads();
  // dx2 = dy + ln_2's input gradient; da = dropout'(dx2); A's rows past R stay zeros from the dy tile
  tile_layernorm_backward<D>(X, DH, DY, lw, a.mean2, a.rstd2, r0, a.R, [&](int r, int lr, int j, float v) {
    const size_t i = static_cast<size_t>(r) * D + j;
    a.dx2[i] = v;
    const float dav = a.drop1(v, i);
    if (a.da) a.da[i] = dav;
    put<F32>(A + lr * lda + j, dav);
  });
  stage_wait<ST, 0>();
  __syncthreads();
  // datt = da W_p
  cta_gemm<F32, D, D, ST>(A, ST ? W1 : W + Packed::proj_t(D), [&](int lr, int c, float v0, float v1) {
    const int r = r0 + lr;
    if (r < a.R) store2(a.datt + static_cast<size_t>(r) * D + c, v0, v1);
  });
}

struct InBwd {
  int R;
  const float *dqkv, *x, *mean1, *rstd1, *ln_w, *dres;
  const void* W;  // packed
  float *dh1, *dx;
  bool early = false;
  bool half = false;  // dqkv is bf16 (BlockGradStash::half; bf16 chains only)
};

template <bool F32, int D, bool ST>
__device__ __forceinline__ void in_backward_tile(const InBwd& a, int r0, unsigned char* smem) {
  using S = Smem<F32, D>;
  constexpr int Q = 3 * D;
  const Elem<F32>* W = static_cast<const Elem<F32>*>(a.W) + Packed::qkv_t(D);
  Elem<F32>* Ws = reinterpret_cast<Elem<F32>*>(smem + S::in_backward);
  Elem<F32>* A = reinterpret_cast<Elem<F32>*>(smem);     // [32][Q + kPad]: dqkv
  float* DH = reinterpret_cast<float*>(smem + S::a(Q));  // [32][D]: dh1
  float* X = DH + kTM * D;                               // [32][D]: x
  float* DR = X + kTM * D;                               // [32][D]: dres (dx2)
  LaneVec<D> lw;
  Staging<ST, 1> st;
  auto stage = [&] {
    if constexpr (ST) {
      st.begin();
      st.template copy<Q, D>(Ws, W, 0);
    }
  };
  if (a.early) stage();
  pdl_wait();
  pdl_trigger();
  auto rest = [&](auto& t_x, auto& t_r) {
    t_x.load(a.x, r0, a.R);
    t_r.load(a.dres, r0, a.R);
    lw.load(a.ln_w);
    if (!a.early) stage();  // after the tiles' loads (in_forward_tile says why)
  };
  if (!F32 && a.half) {
    Tile<Q, __nv_bfloat16> t_q;
    Tile<D> t_x, t_r;
    t_q.load(reinterpret_cast<const __nv_bfloat16*>(a.dqkv), r0, a.R);
    rest(t_x, t_r);
    if constexpr (!F32) store_tile_b16(t_q, A, Q + kPad);
    store_tile_f32(t_x, X);
    store_tile_f32(t_r, DR);
  } else {
    Tile<Q> t_q;
    Tile<D> t_x, t_r;
    t_q.load(a.dqkv, r0, a.R);
    rest(t_x, t_r);
    store_tile<F32>(t_q, A, Q + kPad);
    store_tile_f32(t_x, X);
    store_tile_f32(t_r, DR);
  }
  st.template wait<0>(0);
  __syncthreads();
  // dh1 = dqkv W_attn
  cta_gemm<F32, Q, D, ST>(A, ST ? Ws : W, [&](int lr, int c, float v0, float v1) {
    const int r = r0 + lr;
    if (r < a.R) store2(a.dh1 + static_cast<size_t>(r) * D + c, v0, v1);
    store2(DH + lr * D + c, v0, v1);
  });
  __syncthreads();
  tile_layernorm_backward<D>(X, DH, DR, lw, a.mean1, a.rstd1, r0, a.R,
                             [&](int r, int, int j, float v) { a.dx[static_cast<size_t>(r) * D + j] = v; });
}

}  // namespace rt::cuda::tiles
