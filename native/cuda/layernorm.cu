// LayerNorm over the last dimension, eps 1e-5, as cpu/layernorm.cc.
//
// Forward: one warp per row, two passes over the row (mean, then mean squared deviation: no
// E[x^2] - E[x]^2 cancellation), the row staying in L1 between passes.
// Both may also write a bf16 twin of their output (twin.cuh), for the product that reads it next; the forward
// may write that twin alone (a null y: twin_only).
// For the d that by_lanes lists, the row kernels read their rows into registers instead, every load issued
// before the first reduction: the loops to a run-time d keep only a few loads in flight, which left them
// waiting on DRAM latency well short of its bandwidth. A lane keeps the same elements (lane, lane + 32, ...)
// and adds them in the same order by the same expressions (one product's rounding made explicit, see the dx
// kernel), so the bits are the generic kernels' (and block_tiles.cuh's row_stats and tile_layernorm*).
// Backward: dx one warp per row (dx = dres + ..., dres = dx to accumulate); dw and db are sums over rows,
// done as per-chunk partial sums (256 rows per chunk, columns across threads so reads coalesce) and a
// second kernel that adds the chunks in order: deterministic, no atomics.
#include <cuda_bf16.h>

#include <string>
#include <type_traits>

#include "core/env.h"
#include "cuda/common.cuh"
#include "cuda/gemm_args.cuh"
#include "cuda/group.cuh"
#include "cuda/kernels.cuh"
#include "layer/backend.h"

namespace rt::cuda {
namespace {

constexpr float kEps = 1e-5f;
constexpr int kRowsPerBlock = 8;  // warps per block, one row each
constexpr int kChunk = 256;       // rows per partial sum of dw / db

// Element i of dy, float32 or bf16 (Backend::block_dh_half: the backward kernels read either, for the same
// bits from the same values).
__device__ __forceinline__ float dy_at(const float* __restrict__ dy, size_t i) { return dy[i]; }
__device__ __forceinline__ float dy_at(const __nv_bfloat16* __restrict__ dy, size_t i) { return __bfloat162float(dy[i]); }

__global__ void layernorm_forward_kernel(const float* __restrict__ x, const float* __restrict__ w,
                                         const float* __restrict__ b, float* __restrict__ y, float* __restrict__ mean,
                                         float* __restrict__ rstd, __nv_bfloat16* __restrict__ twin, int n, int d) {
  const int row = blockIdx.x * kRowsPerBlock + threadIdx.x / 32, lane = threadIdx.x % 32;
  if (row >= n) return;
  const float* xr = x + static_cast<size_t>(row) * d;
  float* yr = y ? y + static_cast<size_t>(row) * d : nullptr;
  float s = 0.0f;
  for (int j = lane; j < d; j += 32) s += xr[j];
  const float m = warp_sum(s) / d;
  float v = 0.0f;
  for (int j = lane; j < d; j += 32) {
    const float t = xr[j] - m;
    v += t * t;
  }
  const float rs = 1.0f / sqrtf(warp_sum(v) / d + kEps);
  if (lane == 0) {
    mean[row] = m;
    rstd[row] = rs;
  }
  __nv_bfloat16* tr = twin ? twin + static_cast<size_t>(row) * d : nullptr;
  for (int j = lane; j < d; j += 32) {
    const float o = b ? (xr[j] - m) * rs * w[j] + b[j] : (xr[j] - m) * rs * w[j];
    if (yr) yr[j] = o;
    if (tr) tr[j] = __float2bfloat16_rn(o);
  }
}

// dx = dres + (the LayerNorm's gradient); dres may be dx itself (accumulate: element j is read before it is
// written, by the same thread), so neither carries __restrict__; a null dres adds +0 (the bits of a dres of
// zeros, without their memset and read).
template <class TD>
__global__ void layernorm_backward_dx_kernel(const float* __restrict__ x, const float* __restrict__ w,
                                             const float* __restrict__ mean, const float* __restrict__ rstd,
                                             const TD* __restrict__ dy, const float* dres, float* dx,
                                             __nv_bfloat16* __restrict__ twin, int n, int d) {
  const int row = blockIdx.x * kRowsPerBlock + threadIdx.x / 32, lane = threadIdx.x % 32;
  if (row >= n) return;
  const float* xr = x + static_cast<size_t>(row) * d;
  const TD* gr = dy + static_cast<size_t>(row) * d;
  const float* rr = dres ? dres + static_cast<size_t>(row) * d : nullptr;
  float* dxr = dx + static_cast<size_t>(row) * d;
  const float m = mean[row], rs = rstd[row];
  float s1 = 0.0f, s2 = 0.0f;
  for (int j = lane; j < d; j += 32) {
    const float dyw = dy_at(gr, j) * w[j];
    s1 += dyw;
    s2 += dyw * ((xr[j] - m) * rs);
  }
  const float m1 = warp_sum(s1) / d, m2 = warp_sum(s2) / d;
  __nv_bfloat16* tr = twin ? twin + static_cast<size_t>(row) * d : nullptr;
  for (int j = lane; j < d; j += 32) {
    const float xh = (xr[j] - m) * rs;
    const float o = (rr ? rr[j] : 0.0f) + rs * (dy_at(gr, j) * w[j] - m1 - xh * m2);
    dxr[j] = o;
    if (tr) tr[j] = __float2bfloat16_rn(o);
  }
}

// Rows a warp of the register kernels takes: enough that a lane has 8 or more of x's loads in flight at
// small d.
template <int K>
constexpr int kWarpRows = (8 + K - 1) / K;

// The register kernels' second half: the warp's R rows from row0 (xv, each lane's elements lane + 32 k)
// normalized into y and its twin, their mean and rstd written.
template <int K, int R>
__device__ __forceinline__ void layernorm_rows_out(const float (&xv)[R][K], int row0, int lane, const float* __restrict__ w,
                                                   const float* __restrict__ b, float* __restrict__ y,
                                                   float* __restrict__ mean, float* __restrict__ rstd,
                                                   __nv_bfloat16* __restrict__ twin, int n) {
  constexpr int D = 32 * K;
#pragma unroll
  for (int q = 0; q < R; ++q) {
    const int row = row0 + q;
    if (row >= n) return;
    float s = 0.0f;
#pragma unroll
    for (int k = 0; k < K; ++k) s += xv[q][k];
    const float m = warp_sum(s) / D;
    float v = 0.0f;
#pragma unroll
    for (int k = 0; k < K; ++k) {
      const float t = xv[q][k] - m;
      v += t * t;
    }
    const float rs = 1.0f / sqrtf(warp_sum(v) / D + kEps);
    if (lane == 0) {
      mean[row] = m;
      rstd[row] = rs;
    }
    float* yr = y ? y + static_cast<size_t>(row) * D : nullptr;
    __nv_bfloat16* tr = twin ? twin + static_cast<size_t>(row) * D : nullptr;
#pragma unroll
    for (int k = 0; k < K; ++k) {
      const int j = lane + 32 * k;
      const float o = b ? (xv[q][k] - m) * rs * w[j] + b[j] : (xv[q][k] - m) * rs * w[j];
      if (yr) yr[j] = o;
      if (tr) tr[j] = __float2bfloat16_rn(o);
    }
  }
}

// layernorm_forward_kernel for d = 32 K, the warp's kWarpRows<K> rows in registers.
template <int K>
__global__ void __launch_bounds__(32 * kRowsPerBlock)
    layernorm_forward_rows_kernel(const float* __restrict__ x, const float* __restrict__ w, const float* __restrict__ b,
                                  float* __restrict__ y, float* __restrict__ mean, float* __restrict__ rstd,
                                  __nv_bfloat16* __restrict__ twin, int n) {
  constexpr int D = 32 * K, R = kWarpRows<K>;
  const int row0 = (blockIdx.x * kRowsPerBlock + threadIdx.x / 32) * R, lane = threadIdx.x % 32;
  float xv[R][K];
#pragma unroll
  for (int q = 0; q < R; ++q) {
    if (row0 + q >= n) break;
#pragma unroll
    for (int k = 0; k < K; ++k) xv[q][k] = x[static_cast<size_t>(row0 + q) * D + lane + 32 * k];
  }
  layernorm_rows_out<K, R>(xv, row0, lane, w, b, y, mean, rstd, twin, n);
}

// The same with the window glue (WindowGlue, layer/backend.h) in front: row t of element e of x [B][np][D] is
// S's row t (t < ns) or X's row t - ns, plus alpha times P's row t or t - ns, formed as the glue's batch forms
// it (one fused multiply-add, alpha read when the kernel runs), written to x and normalized from registers;
// rows t < ns also copy Ysrc's row t into Y's. The glue's pass over x and ln_1's read of it, in one.
template <int K>
__global__ void __launch_bounds__(32 * kRowsPerBlock)
    layernorm_forward_glue_rows_kernel(WindowGlue g, int np, float* __restrict__ x, const float* __restrict__ w,
                                       const float* __restrict__ b, float* __restrict__ y, float* __restrict__ mean,
                                       float* __restrict__ rstd, __nv_bfloat16* __restrict__ twin, int n) {
  constexpr int D = 32 * K, R = kWarpRows<K>;
  const int row0 = (blockIdx.x * kRowsPerBlock + threadIdx.x / 32) * R, lane = threadIdx.x % 32;
  const float al = g.P ? *g.alpha : 0.0f;
  float xv[R][K];
#pragma unroll
  for (int q = 0; q < R; ++q) {
    const int row = row0 + q;
    if (row >= n) break;
    const int e = row / np, t = row % np, tt = t < g.ns ? t : t - g.ns;
    const float* src = t < g.ns ? g.S + e * g.Ss + static_cast<size_t>(t) * D : g.X + e * g.Xs + static_cast<size_t>(tt) * D;
    const float* p = g.P ? g.P + e * g.Ps + static_cast<size_t>(tt) * D : nullptr;
#pragma unroll
    for (int k = 0; k < K; ++k) {
      const int j = lane + 32 * k;
      xv[q][k] = p ? fmaf(al, p[j], src[j]) : src[j];
    }
#pragma unroll
    for (int k = 0; k < K; ++k) x[static_cast<size_t>(row) * D + lane + 32 * k] = xv[q][k];
    if (g.Y && t < g.ns) {
      const float* ys = g.Ysrc + e * g.Ysrcs + static_cast<size_t>(t) * D;
      float* yd = g.Y + e * g.Ys + static_cast<size_t>(t) * D;
#pragma unroll
      for (int k = 0; k < K; ++k) yd[lane + 32 * k] = ys[lane + 32 * k];
    }
  }
  layernorm_rows_out<K, R>(xv, row0, lane, w, b, y, mean, rstd, twin, n);
}

// Where one row of the backward's output goes: dst (added to it where add), and its bf16 copy (or none).
struct RowOut {
  float* dst;
  __nv_bfloat16* twin;
  bool add;
};

// dx's row and its twin's.
struct DxOut {
  float* dx;
  __nv_bfloat16* twin;
  int d;
  __device__ RowOut at(int row) const {
    const size_t o = static_cast<size_t>(row) * d;
    return {dx + o, twin ? twin + o : nullptr, false};
  }
};

// BackScatter's places for row t of element e (np = ns + nx rows an element): t < ns to dy's row ns + t (and
// its twin's), t >= ns added to dX's row t - ns.
struct ScatterOut {
  BackScatter s;
  __nv_bfloat16* twin;
  int np, d;
  __device__ RowOut at(int row) const {
    const int e = row / np, t = row % np;
    if (t < s.ns) {
      const size_t o = e * s.dys + static_cast<size_t>(s.ns + t) * d;
      return {s.dy + o, twin ? twin + o : nullptr, false};
    }
    return {s.dX + e * s.dXs + static_cast<size_t>(t - s.ns) * d, nullptr, true};
  }
};

// A lane's sums of dy * xhat and of dy over the rows its warp takes, for its columns lane + 32 k: the
// LayerNorm's dw and db, left per block of rows (LnParts) by the dx kernels where asked (PARTS), in place of
// the pass over all rows that layernorm_backward_partial_kernel makes.
template <int K, bool PARTS>
struct PartSums {
  float w[K] = {}, b[K] = {};
  __device__ __forceinline__ void add(int k, float g, float xh) {
    w[k] += g * xh;
    b[k] += g;
  }
  // The block's sums (its warps' in order) into row `slot` of parts.w and parts.b. All its threads call it.
  __device__ void store(const LnParts& parts, int slot, int warp, int lane) const {
    constexpr int D = 32 * K;
    __shared__ float red[kRowsPerBlock][D];
    float* out[2] = {parts.w + static_cast<size_t>(slot) * D, parts.b + static_cast<size_t>(slot) * D};
    for (int h = 0; h < 2; ++h) {
#pragma unroll
      for (int k = 0; k < K; ++k) red[warp][lane + 32 * k] = h ? b[k] : w[k];
      __syncthreads();
      for (int c = threadIdx.x; c < D; c += blockDim.x) {
        float t = 0.0f;
#pragma unroll
        for (int q = 0; q < kRowsPerBlock; ++q) t += red[q][c];
        out[h][c] = t;
      }
      __syncthreads();
    }
  }
};
template <int K>
struct PartSums<K, false> {
  __device__ __forceinline__ void add(int, float, float) {}
};

// One row of layernorm_backward_rows from its values in registers (x, dy, dres: xv, gv, rv; a lane's elements
// lane + 32 k), its mean m and rstd rs.
template <int K, class Out, class Acc>
__device__ __forceinline__ void layernorm_backward_row(const float (&xv)[K], const float (&gv)[K], const float (&rv)[K],
                                                       float m, float rs, const float* __restrict__ w, int row, int lane,
                                                       const Out& out, Acc& acc) {
  constexpr int D = 32 * K;
  float s1 = 0.0f, s2 = 0.0f;
#pragma unroll
  for (int k = 0; k < K; ++k) {
    // Rounded on its own, as in layernorm_backward_dx_kernel, where it has two uses and ptxas leaves it
    // unfused. As a plain product it would also stand in for the second loop's dy * w, which there has
    // one use and is fused with - m1: other bits.
    const float dyw = __fmul_rn(gv[k], w[lane + 32 * k]);
    s1 += dyw;
    s2 += dyw * ((xv[k] - m) * rs);
  }
  const float m1 = warp_sum(s1) / D, m2 = warp_sum(s2) / D;
  const RowOut o = out.at(row);
#pragma unroll
  for (int k = 0; k < K; ++k) {
    const int j = lane + 32 * k;
    const float xh = (xv[k] - m) * rs;
    const float v = rv[k] + rs * (gv[k] * w[j] - m1 - xh * m2);
    // The glue's accumulating op: one fused multiply-add by 1 (axpy2d_batch_kernel), the same rounding.
    o.dst[j] = o.add ? __fadd_rn(o.dst[j], v) : v;
    if (o.twin) o.twin[j] = __float2bfloat16_rn(v);
    acc.add(k, gv[k], xh);
  }
}

// layernorm_backward_dx_kernel for d = 32 K, the warp's kWarpRows<K> rows of x, dy and dres in registers: all
// of dres is read before any of dx is written, so dres = dx still works. Each row's output goes where
// out.at(row) says (DxOut: dx, and its twin; ScatterOut: BackScatter's places), added there where it says so;
// acc adds the rows' dw and db terms (PartSums).
template <int K, class TD, class Out, class Acc>
__device__ __forceinline__ void layernorm_backward_rows(const float* __restrict__ x, const float* __restrict__ w,
                                                        const float* __restrict__ mean, const float* __restrict__ rstd,
                                                        const TD* __restrict__ dy, const float* dres, int row0, int lane,
                                                        int n, const Out& out, Acc& acc) {
  constexpr int D = 32 * K, R = kWarpRows<K>;
  float xv[R][K], gv[R][K], rv[R][K], ms[R], rss[R];
#pragma unroll
  for (int q = 0; q < R; ++q) {
    const int row = row0 + q;
    if (row >= n) break;
    ms[q] = mean[row];
    rss[q] = rstd[row];
#pragma unroll
    for (int k = 0; k < K; ++k) {
      const size_t i = static_cast<size_t>(row) * D + lane + 32 * k;
      xv[q][k] = x[i];
      gv[q][k] = dy_at(dy, i);
      rv[q][k] = dres ? dres[i] : 0.0f;
    }
  }
#pragma unroll
  for (int q = 0; q < R; ++q) {
    const int row = row0 + q;
    if (row >= n) return;
    layernorm_backward_row<K>(xv[q], gv[q], rv[q], ms[q], rss[q], w, row, lane, out, acc);
  }
}

// Rows a block of the dx kernels takes: kRowsPerBlock warps of kWarpRows<K> rows, one pass; with PARTS
// kPartPasses passes in turn (fewer blocks, so fewer partial sums to add up after).
constexpr int kPartPasses = 4;
template <int K, bool PARTS>
constexpr int kBlockRows = kRowsPerBlock * kWarpRows<K> * (PARTS ? kPartPasses : 1);
// Blocks an SM the dx kernels ask registers for: with PARTS, two (at d = 512 the scattering kernel took 140
// registers, one block an SM; now 128, no spills); without, none asked (0: the code as before, where a bound
// of 1 took d = 384's kernel from 64 registers to 70, four blocks an SM to three).
template <bool PARTS>
constexpr int kMinBlocks = PARTS ? 2 : 0;

// Block blk's rows through layernorm_backward_rows, and with PARTS their dw, db sums into row blk of parts.
template <int K, bool PARTS, class TD, class Out>
__device__ __forceinline__ void layernorm_backward_block(const float* __restrict__ x, const float* __restrict__ w,
                                                         const float* __restrict__ mean,
                                                         const float* __restrict__ rstd, const TD* __restrict__ dy,
                                                         const float* dres, int n, const Out& out, int blk,
                                                         const LnParts& parts) {
  constexpr int R = kWarpRows<K>, P = PARTS ? kPartPasses : 1;
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  PartSums<K, PARTS> acc;
#pragma unroll 1
  for (int p = 0; p < P; ++p)
    layernorm_backward_rows<K>(x, w, mean, rstd, dy, dres, ((blk * P + p) * kRowsPerBlock + warp) * R, lane, n, out,
                               acc);
  if constexpr (PARTS) acc.store(parts, blk, warp, lane);
}

// RT_CUDA_LN_PIPE (set_ln_pipe; default on, =0 off): the dx kernels with partial sums, one row a warp a pass, copy
// the next pass's rows of x, dres and dy into shared memory (cp.async) while a warp works on this pass's, and read
// mean and rstd a pass ahead. Why: without it each of the kPartPasses passes waits on DRAM's latency in turn. The
// same values through the same layernorm_backward_row: the same bits. Measured (session 32, H100, char): 19.76 us a
// call against 21.29 (ncu), a step 6.643 ms against 6.709 (medians of six alternated rounds, faster in five;
// bench/results/cuda-ab-2026-12-06-s32g.log). The rest of the gap to the bandwidth (~49 MB a call) is not latency
// between passes.
bool g_ln_pipe = rt::env_switch("RT_CUDA_LN_PIPE", true);

// Shared memory a warp of the pipelined kernels takes: two rows' x and dres (float32) and dy (TD).
template <int K, class TD>
constexpr int kPipeWarpBytes = 2 * (2 * 32 * K * 4 + 32 * K * static_cast<int>(sizeof(TD)));
template <int K, class TD>
constexpr int kPipeBlockBytes = kRowsPerBlock * kPipeWarpBytes<K, TD>;
template <int K, bool PARTS>
constexpr bool kPipes = PARTS && kWarpRows<K> == 1;

template <int K, bool PARTS, class TD, class Out>
__device__ __forceinline__ void layernorm_backward_block_pipe(const float* __restrict__ x, const float* __restrict__ w,
                                                              const float* __restrict__ mean,
                                                              const float* __restrict__ rstd, const TD* __restrict__ dy,
                                                              const float* dres, int n, const Out& out, int blk,
                                                              const LnParts& parts, unsigned char* sm) {
  static_assert(kPipes<K, PARTS>, "one row a warp a pass, with partial sums");
  constexpr int D = 32 * K, P = kPartPasses, kBuf = kPipeWarpBytes<K, TD> / 2;
  constexpr int kDyChunks = D * static_cast<int>(sizeof(TD)) / 16;
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  unsigned char* mine = sm + warp * kPipeWarpBytes<K, TD>;
  auto row_of = [&](int p) { return (blk * P + p) * kRowsPerBlock + warp; };
  float mn = 0.0f, rn = 0.0f;  // mean and rstd of the row fill(p) copies
  // Pass p's rows into buffer p % 2: x at 0, dres at 4D bytes, dy at 8D; one commit group (empty past n).
  auto fill = [&](int p) {
    const int row = row_of(p);
    unsigned char* b = mine + (p & 1) * kBuf;
    if (row < n) {
      const size_t o = static_cast<size_t>(row) * D;
#pragma unroll
      for (int c = lane; c < D / 4; c += 32) {
        gemm_detail::cp_async16(b + 16 * c, x + o + 4 * c, true);
        if (dres) gemm_detail::cp_async16(b + 4 * D + 16 * c, dres + o + 4 * c, true);
      }
      const unsigned char* g = reinterpret_cast<const unsigned char*>(dy + o);
#pragma unroll
      for (int c = lane; c < kDyChunks; c += 32) gemm_detail::cp_async16(b + 8 * D + 16 * c, g + 16 * c, true);
      mn = mean[row];
      rn = rstd[row];
    }
    gemm_detail::cp_async_commit();
  };
  PartSums<K, PARTS> acc;
  fill(0);
#pragma unroll 1
  for (int p = 0; p < P; ++p) {
    const float m = mn, rs = rn;
    if (p + 1 < P) fill(p + 1);
    else gemm_detail::cp_async_commit();
    gemm_detail::cp_async_wait<1>();
    __syncwarp();  // every lane's copies of pass p landed
    const int row = row_of(p);
    if (row < n) {
      const unsigned char* b = mine + (p & 1) * kBuf;
      const float* xs = reinterpret_cast<const float*>(b);
      const float* rsrc = reinterpret_cast<const float*>(b + 4 * D);
      const TD* gs = reinterpret_cast<const TD*>(b + 8 * D);
      float xv[K], gv[K], rv[K];
#pragma unroll
      for (int k = 0; k < K; ++k) {
        xv[k] = xs[lane + 32 * k];
        gv[k] = dy_at(gs, lane + 32 * k);
        rv[k] = dres ? rsrc[lane + 32 * k] : 0.0f;
      }
      layernorm_backward_row<K>(xv, gv, rv, m, rs, w, row, lane, out, acc);
    }
    __syncwarp();  // buffer p % 2 read by every lane before fill(p + 2) writes it
  }
  acc.store(parts, blk, warp, lane);
}

// layernorm_backward_block, or with PIPE layernorm_backward_block_pipe in the kernel's dynamic shared memory.
template <int K, bool PARTS, bool PIPE, class TD, class Out>
__device__ __forceinline__ void layernorm_backward_block_as(const float* __restrict__ x, const float* __restrict__ w,
                                                            const float* __restrict__ mean,
                                                            const float* __restrict__ rstd, const TD* __restrict__ dy,
                                                            const float* dres, int n, const Out& out, int blk,
                                                            const LnParts& parts) {
  if constexpr (PIPE) {
    extern __shared__ __align__(16) unsigned char ln_pipe[];
    layernorm_backward_block_pipe<K, PARTS>(x, w, mean, rstd, dy, dres, n, out, blk, parts, ln_pipe);
  } else {
    layernorm_backward_block<K, PARTS>(x, w, mean, rstd, dy, dres, n, out, blk, parts);
  }
}

template <int K, bool PARTS, class TD, bool PIPE = false>
__global__ void __launch_bounds__(32 * kRowsPerBlock, kMinBlocks<PARTS>)
    layernorm_backward_dx_rows_kernel(const float* __restrict__ x, const float* __restrict__ w,
                                      const float* __restrict__ mean, const float* __restrict__ rstd,
                                      const TD* __restrict__ dy, const float* dres, float* dx,
                                      __nv_bfloat16* __restrict__ twin, int n, LnParts parts) {
  layernorm_backward_block_as<K, PARTS, PIPE>(x, w, mean, rstd, dy, dres, n, DxOut{dx, twin, 32 * K}, blockIdx.x,
                                              parts);
}

// The same scattered as BackScatter says (n = B (ns + nx) rows), and in the blocks past ln_blocks, dY's rows
// t < ns copied into dy's rows t (and the twin), one row a warp: the window glue of the backward, in ln_1's pass.
template <int K, bool PARTS, class TD, bool PIPE = false>
__global__ void __launch_bounds__(32 * kRowsPerBlock, kMinBlocks<PARTS>)
    layernorm_backward_scatter_rows_kernel(const float* __restrict__ x, const float* __restrict__ w,
                                           const float* __restrict__ mean, const float* __restrict__ rstd,
                                           const TD* __restrict__ dy, const float* __restrict__ dres, BackScatter s,
                                           __nv_bfloat16* __restrict__ twin, int n, int ln_blocks, LnParts parts) {
  constexpr int D = 32 * K;
  const int lane = threadIdx.x % 32, np = s.ns + s.nx;
  if (static_cast<int>(blockIdx.x) < ln_blocks) {
    layernorm_backward_block_as<K, PARTS, PIPE>(x, w, mean, rstd, dy, dres, n, ScatterOut{s, twin, np, D}, blockIdx.x,
                                                parts);
    return;
  }
  const int r = (blockIdx.x - ln_blocks) * kRowsPerBlock + threadIdx.x / 32, B = n / np;
  if (r >= B * s.ns) return;
  const int e = r / s.ns, t = r % s.ns;
  const float* src = s.dY + e * s.dYs + static_cast<size_t>(t) * D;
  const size_t o = e * s.dys + static_cast<size_t>(t) * D;
  float v[K];
#pragma unroll
  for (int k = 0; k < K; ++k) v[k] = src[lane + 32 * k];
#pragma unroll
  for (int k = 0; k < K; ++k) {
    s.dy[o + lane + 32 * k] = v[k];
    if (twin) twin[o + lane + 32 * k] = __float2bfloat16_rn(v[k]);
  }
}

// Calls f(std::integral_constant<int, d / 32>()) where the register kernels have an instance for d; false
// where not.
template <class F>
bool by_lanes(int d, F&& f) {
  switch (d) {
    case 32: f(std::integral_constant<int, 1>()); return true;
    case 64: f(std::integral_constant<int, 2>()); return true;
    case 96: f(std::integral_constant<int, 3>()); return true;
    case 128: f(std::integral_constant<int, 4>()); return true;
    case 192: f(std::integral_constant<int, 6>()); return true;
    case 256: f(std::integral_constant<int, 8>()); return true;
    case 384: f(std::integral_constant<int, 12>()); return true;
    case 512: f(std::integral_constant<int, 16>()); return true;
    case 768: f(std::integral_constant<int, 24>()); return true;
    case 1024: f(std::integral_constant<int, 32>()); return true;
    default: return false;
  }
}

// part_w[chunk][c] = sum over the chunk's rows of dy * xhat; part_b likewise of dy. Thread row y adds rows
// r0 + y, r0 + y + 8, ... in turn. A whole chunk's loop has a fixed trip count, so many rows' loads go out
// ahead of the sums (the loop to n kept a few in flight), and its warp's 32 rows' mean and rstd are read once,
// lane l holding row l's, and shuffled round, leaving the load slots to x and dy. Lanes past d go along (the
// shuffles need the whole warp) on column d - 1, their sums unused.
template <class TD>
__global__ void layernorm_backward_partial_kernel(const float* __restrict__ x, const float* __restrict__ mean,
                                                  const float* __restrict__ rstd, const TD* __restrict__ dy,
                                                  float* __restrict__ part_w, float* __restrict__ part_b, int n,
                                                  int d) {
  __shared__ float rw[8][33], rb[8][33];
  const int c = blockIdx.x * 32 + threadIdx.x, r0 = blockIdx.y * kChunk, r1 = min(n, r0 + kChunk);
  float sw = 0.0f, sb = 0.0f;
  if (r1 - r0 == kChunk) {
    static_assert(kChunk == 8 * 32, "a full chunk is one row per lane of each warp");
    const int cc = min(c, d - 1);
    const float ml = mean[r0 + threadIdx.y + 8 * threadIdx.x], rl = rstd[r0 + threadIdx.y + 8 * threadIdx.x];
#pragma unroll
    for (int q = 0; q < 32; ++q) {
      const size_t i = static_cast<size_t>(r0 + threadIdx.y + 8 * q) * d + cc;
      const float g = dy_at(dy, i);
      sw += g * ((x[i] - __shfl_sync(0xffffffffu, ml, q)) * __shfl_sync(0xffffffffu, rl, q));
      sb += g;
    }
  } else if (c < d) {
    for (int r = r0 + threadIdx.y; r < r1; r += 8) {
      const size_t i = static_cast<size_t>(r) * d + c;
      const float g = dy_at(dy, i);
      sw += g * ((x[i] - mean[r]) * rstd[r]);
      sb += g;
    }
  }
  rw[threadIdx.y][threadIdx.x] = sw;
  rb[threadIdx.y][threadIdx.x] = sb;
  __syncthreads();
  if (threadIdx.y == 0 && c < d) {
    float tw = 0.0f, tb = 0.0f;
    for (int k = 0; k < 8; ++k) {
      tw += rw[k][threadIdx.x];
      tb += rb[k][threadIdx.x];
    }
    part_w[static_cast<size_t>(blockIdx.y) * d + c] = tw;
    part_b[static_cast<size_t>(blockIdx.y) * d + c] = tb;
  }
}

// Sums rows of partial sums per column: rows [g per, (g + 1) per) of pw and pb (up to `rows`) for group g =
// blockIdx.y, written to row g of ow and ob, or with add (one group) added to ow and ob (either may be null).
// A block per 32 columns, its 16 thread rows each taking every 16th row, then a fixed tree: deterministic, no
// atomics. One thread per column walking all rows took 78 us for the copy config's 2,080 chunks.
constexpr int kFinishRows = 16;
__global__ void __launch_bounds__(32 * kFinishRows)
    layernorm_parts_reduce_kernel(const float* __restrict__ pw, const float* __restrict__ pb, int rows, int per, int d,
                                  float* ow, float* ob, bool add) {
  __shared__ float rw[kFinishRows][33], rb[kFinishRows][33];
  const int c = blockIdx.x * 32 + threadIdx.x, g = blockIdx.y, r1 = min(rows, (g + 1) * per);
  float tw = 0.0f, tb = 0.0f;
  if (c < d)
    for (int r = g * per + threadIdx.y; r < r1; r += kFinishRows) {
      tw += pw[static_cast<size_t>(r) * d + c];
      tb += pb[static_cast<size_t>(r) * d + c];
    }
  rw[threadIdx.y][threadIdx.x] = tw;
  rb[threadIdx.y][threadIdx.x] = tb;
  __syncthreads();
  for (int h = kFinishRows / 2; h > 0; h >>= 1) {
    if (threadIdx.y < h) {
      rw[threadIdx.y][threadIdx.x] += rw[threadIdx.y + h][threadIdx.x];
      rb[threadIdx.y][threadIdx.x] += rb[threadIdx.y + h][threadIdx.x];
    }
    __syncthreads();
  }
  if (threadIdx.y || c >= d) return;
  if (add) {
    if (ow) ow[c] += rw[0][threadIdx.x];
    if (ob) ob[c] += rb[0][threadIdx.x];
  } else {
    ow[static_cast<size_t>(g) * d + c] = rw[0][threadIdx.x];
    ob[static_cast<size_t>(g) * d + c] = rb[0][threadIdx.x];
  }
}
void check(int n, int d, const char* who) {
  RT_CHECK(n >= 0 && d > 0, std::string(who) + ": n >= 0 and d > 0 required, got n=" + std::to_string(n) +
                                " d=" + std::to_string(d));
}

}  // namespace

void layernorm_forward(const float* x, const float* w, const float* b, float* y, float* mean, float* rstd, int n,
                       int d, __nv_bfloat16* twin) {
  check(n, d, "layernorm_forward");
  if (n == 0) return;
  RT_CHECK(y || twin, "layernorm_forward: no output");
  const bool rows = by_lanes(d, [&](auto k) {
    constexpr int K = decltype(k)::value, per_block = kRowsPerBlock * kWarpRows<K>;
    layernorm_forward_rows_kernel<K><<<(n + per_block - 1) / per_block, 32 * kRowsPerBlock, 0, stream()>>>(
        x, w, b, y, mean, rstd, twin, n);
  });
  if (!rows)
    layernorm_forward_kernel<<<(n + kRowsPerBlock - 1) / kRowsPerBlock, 32 * kRowsPerBlock, 0, stream()>>>(
        x, w, b, y, mean, rstd, twin, n, d);
  RT_CU_LAUNCH("layernorm_forward");
}

bool layernorm_glue_fits(int d) {
  return by_lanes(d, [](auto) {});
}

void layernorm_forward_glue(const WindowGlue& glue, float* x, int B, int np, const float* w, const float* b, float* y,
                            float* mean, float* rstd, int d, __nv_bfloat16* twin) {
  const int n = B * np;
  check(n, d, "layernorm_forward_glue");
  if (n == 0) return;
  RT_CHECK(y || twin, "layernorm_forward_glue: no output");
  RT_CHECK(glue.S && glue.X && glue.ns >= 0 && glue.ns <= np && (!glue.P || glue.alpha) && (!glue.Y || glue.Ysrc),
           "layernorm_forward_glue: S, X, 0 <= ns <= n, alpha with P and Ysrc with Y required");
  const bool rows = by_lanes(d, [&](auto k) {
    constexpr int K = decltype(k)::value, per_block = kRowsPerBlock * kWarpRows<K>;
    layernorm_forward_glue_rows_kernel<K><<<(n + per_block - 1) / per_block, 32 * kRowsPerBlock, 0, stream()>>>(
        glue, np, x, w, b, y, mean, rstd, twin, n);
  });
  RT_CHECK(rows, "layernorm_forward_glue: d = " + std::to_string(d) + " has no register kernel (layernorm_glue_fits)");
  RT_CU_LAUNCH("layernorm_forward_glue");
}

void layernorm_backward(const float* x, const float* w, const float* mean, const float* rstd, const float* dy,
                        float* dx, float* dw, float* db, int n, int d, bool dy_half) {
  layernorm_backward_res(x, w, mean, rstd, dy, dx, dx, dw, db, n, d, nullptr, dy_half);
}

namespace {
// The widest rows the dx kernels leave partial sums for: at d = 768 their registers (~190 a thread) leave one
// block an SM.
constexpr int kPartsMaxK = 16;

// The register kernels' launch for d = 32 K with or without parts: f(integral_constant K, bool_constant PARTS);
// false where d has no register kernel, or none with parts.
template <class F>
bool by_lanes_parts(int d, bool parts, F&& f) {
  bool ok = true;
  const bool lanes = by_lanes(d, [&](auto k) {
    if constexpr (decltype(k)::value <= kPartsMaxK) {
      if (parts) f(k, std::true_type());
      else f(k, std::false_type());
    } else {
      if (parts) ok = false;
      else f(k, std::false_type());
    }
  });
  return lanes && ok;
}

// f(dy) with dy as the type it holds: float32, or bf16 behind its float pointer (dy_half).
template <class F>
void by_dy(const float* dy, bool dy_half, F&& f) {
  if (dy_half) f(reinterpret_cast<const __nv_bfloat16*>(dy));
  else f(dy);
}

// The pipelined kernels where RT_CUDA_LN_PIPE asks and cp.async's 16-byte copies can take the rows.
template <class TD>
bool pipe_ok(const float* x, const float* dres, const TD* dy) {
  return g_ln_pipe &&
         (reinterpret_cast<uintptr_t>(x) | reinterpret_cast<uintptr_t>(dres) | reinterpret_cast<uintptr_t>(dy)) % 16 == 0;
}
// launch(pipe, smem) with pipe a std::true_type and smem the pipelined kernels' shared memory where they take the
// rows (kPipes, pipe_ok), else with std::false_type and 0.
template <int K, bool PARTS, class TD, class Launch>
void with_pipe(const float* x, const float* dres, const TD* dy, Launch&& launch) {
  if constexpr (kPipes<K, PARTS>) {
    if (pipe_ok(x, dres, dy)) {
      launch(std::true_type(), kPipeBlockBytes<K, TD>);
      return;
    }
  }
  launch(std::false_type(), 0);
}

template <class TD>
void layernorm_backward_as(const float* x, const float* w, const float* mean, const float* rstd, const TD* dy,
                           const float* dres, float* dx, float* dw, float* db, int n, int d, __nv_bfloat16* twin,
                           const LnParts& parts) {
  if (dx) {
    const bool rows = by_lanes_parts(d, parts.w != nullptr, [&](auto k, auto with_parts) {
      constexpr int K = decltype(k)::value;
      constexpr bool PARTS = decltype(with_parts)::value;
      constexpr int per_block = kBlockRows<K, PARTS>;
      const unsigned blocks = (n + per_block - 1) / per_block;
      with_pipe<K, PARTS>(x, dres, dy, [&](auto pipe, int smem) {
        constexpr auto kernel = layernorm_backward_dx_rows_kernel<K, PARTS, TD, decltype(pipe)::value>;
        if (smem) opt_in_smem<kernel>(smem);
        kernel<<<blocks, 32 * kRowsPerBlock, smem, stream()>>>(x, w, mean, rstd, dy, dres, dx, twin, n, parts);
      });
    });
    RT_CHECK(rows || !parts.w, "layernorm_backward: partial sums (LnParts) for d = " + std::to_string(d) +
                                   ", which has no kernel leaving them (layernorm_part_rows)");
    if (!rows)
      layernorm_backward_dx_kernel<<<(n + kRowsPerBlock - 1) / kRowsPerBlock, 32 * kRowsPerBlock, 0, stream()>>>(
          x, w, mean, rstd, dy, dres, dx, twin, n, d);
    RT_CU_LAUNCH("layernorm_backward dx");
  }
  if (dw || db) {
    const int chunks = (n + kChunk - 1) / kChunk;
    RT_CHECK(chunks <= 65535, "layernorm_backward: too many rows for one launch");
    Scratch part(2 * static_cast<size_t>(chunks) * d * sizeof(float));
    float* pw = part.f32();
    float* pb = pw + static_cast<size_t>(chunks) * d;
    layernorm_backward_partial_kernel<<<dim3((d + 31) / 32, chunks), dim3(32, 8), 0, stream()>>>(x, mean, rstd, dy, pw,
                                                                                                  pb, n, d);
    RT_CU_LAUNCH("layernorm_backward partial");
    layernorm_parts_reduce_kernel<<<dim3((d + 31) / 32, 1), dim3(32, kFinishRows), 0, stream()>>>(pw, pb, chunks, chunks,
                                                                                                  d, dw, db, true);
    RT_CU_LAUNCH("layernorm_backward finish");
  }
}
}  // namespace

void layernorm_backward_res(const float* x, const float* w, const float* mean, const float* rstd, const float* dy,
                            const float* dres, float* dx, float* dw, float* db, int n, int d, __nv_bfloat16* twin,
                            bool dy_half, LnParts parts) {
  check(n, d, "layernorm_backward");
  RT_CHECK(!parts.w || (dx && parts.b), "layernorm_backward: partial sums need dx and both of their rows");
  if (n == 0) return;
  by_dy(dy, dy_half, [&](auto g) { layernorm_backward_as(x, w, mean, rstd, g, dres, dx, dw, db, n, d, twin, parts); });
}

namespace {
template <class TD>
void layernorm_backward_scatter_as(const float* x, const float* w, const float* mean, const float* rstd, const TD* dy,
                                   const float* dres, const BackScatter& s, int n, int d, __nv_bfloat16* twin,
                                   const LnParts& parts) {
  const bool rows = by_lanes_parts(d, parts.w != nullptr, [&](auto k, auto with_parts) {
    constexpr int K = decltype(k)::value;
    constexpr bool PARTS = decltype(with_parts)::value;
    constexpr int per_block = kBlockRows<K, PARTS>;
    const int ln_blocks = (n + per_block - 1) / per_block, B = n / (s.ns + s.nx);
    const int copy_blocks = (B * s.ns + kRowsPerBlock - 1) / kRowsPerBlock;
    with_pipe<K, PARTS>(x, dres, dy, [&](auto pipe, int smem) {
      constexpr auto kernel = layernorm_backward_scatter_rows_kernel<K, PARTS, TD, decltype(pipe)::value>;
      if (smem) opt_in_smem<kernel>(smem);
      kernel<<<ln_blocks + copy_blocks, 32 * kRowsPerBlock, smem, stream()>>>(x, w, mean, rstd, dy, dres, s, twin, n,
                                                                               ln_blocks, parts);
    });
  });
  RT_CHECK(rows, "layernorm_backward_scatter: d = " + std::to_string(d) + " has no register kernel" +
                     (parts.w ? " leaving partial sums (layernorm_part_rows)" : " (layernorm_glue_fits)"));
  RT_CU_LAUNCH("layernorm_backward_scatter");
}

}  // namespace

void layernorm_backward_scatter(const float* x, const float* w, const float* mean, const float* rstd, const float* dy,
                                const float* dres, const BackScatter& s, int B, int d, __nv_bfloat16* twin,
                                bool dy_half, LnParts parts) {
  const int n = B * (s.ns + s.nx);
  check(n, d, "layernorm_backward_scatter");
  const size_t nd = static_cast<size_t>(s.ns) * d;
  RT_CHECK(s.dy && s.dY && (s.dX || !s.nx) && s.ns > 0 && s.nx >= 0 && s.dys >= 2 * nd && s.dYs >= nd &&
               s.dXs >= static_cast<size_t>(s.nx) * d,
           "layernorm_backward_scatter: dy, dY, dX (with nx), ns > 0 and strides holding their rows required");
  RT_CHECK(!parts.w || parts.b, "layernorm_backward_scatter: partial sums need both of their rows");
  if (n == 0) return;
  by_dy(dy, dy_half, [&](auto g) { layernorm_backward_scatter_as(x, w, mean, rstd, g, dres, s, n, d, twin, parts); });
}

void set_ln_pipe(bool on) { g_ln_pipe = on; }
bool ln_pipe() { return g_ln_pipe; }

bool ln_parts_wanted() {
  static const bool on = rt::env_switch("RT_CUDA_LN_PARTS", true);
  return on;
}

int layernorm_part_rows(int n, int d) {
  int rows = -1;
  by_lanes_parts(d, true, [&](auto k, auto) {
    constexpr int per_block = kBlockRows<decltype(k)::value, true>;
    rows = (n + per_block - 1) / per_block;
  });
  return rows;
}

void layernorm_parts_finish(LnParts parts, int rows, int d, float* dw, float* db) {
  RT_CHECK(parts.w && parts.b && dw && rows >= 0 && d > 0,
           "layernorm_parts_finish: both rows of partial sums, dw, rows >= 0 and d > 0 required");
  if (rows == 0) return;
  // Groups of 64 rows first (many blocks: the rows of a char step's windows are ~4,000), then the groups.
  constexpr int kPer = 64;
  const int groups = (rows + kPer - 1) / kPer;
  RT_CHECK(groups <= 65535, "layernorm_parts_finish: too many rows of partial sums");
  Scratch mid(2 * static_cast<size_t>(groups) * d * sizeof(float));
  float* mw = mid.f32();
  float* mb = mw + static_cast<size_t>(groups) * d;
  layernorm_parts_reduce_kernel<<<dim3((d + 31) / 32, groups), dim3(32, kFinishRows), 0, stream()>>>(
      parts.w, parts.b, rows, kPer, d, mw, mb, false);
  RT_CU_LAUNCH("layernorm_parts_finish groups");
  layernorm_parts_reduce_kernel<<<dim3((d + 31) / 32, 1), dim3(32, kFinishRows), 0, stream()>>>(mw, mb, groups, groups,
                                                                                                 d, dw, db, true);
  RT_CU_LAUNCH("layernorm_parts_finish");
}

}  // namespace rt::cuda
