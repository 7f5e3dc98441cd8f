// The row-local chains of one block application, each as one kernel, for small d (the copy task's d = 96).
//
// Why: a window application of such a block is B * n = 4,096 rows of d = 96. Each of its ten-odd separate
// kernels is a few microseconds of arithmetic but 5-20 us of launch, pipeline fill and drain (the train step
// was ~3,000 dependent launches of 12 us each; bench/cuda/NOTES.md). Everything between two attentions
// touches one row at a time, so a block of threads can take 32 rows through LayerNorm, product, epilogue,
// LayerNorm, product ... with the rows in shared memory, and one application becomes five launches:
//
//   forward:  in_forward (ln_1, c_attn) | attention | out_forward (c_proj + residual, ln_2, c_fc, act,
//             c_proj + residual, with the dropouts)
//   backward: out_backward (the same chain's input gradients) | attention | in_backward (c_attn, ln_1)
//
// Each kernel writes exactly the buffers the separate ops write (the cache for the backward, the gradient
// stash for the one-per-layer weight products), with the same element-wise expressions and the same
// dropout masks (element r*d + c of rng(seed, stream*4 + 1 or 2)), so block.cc's other paths cannot tell.
//
// Products: every warp covers all 32 rows (two m16 tiles) and takes 16 output columns at a time; the
// activations come from shared memory (stored there already rounded to bf16, padded 8 elements per row so
// fragment reads are free of bank conflicts), the weights straight from global memory (L2: each block
// reads every weight once per application; at d = 96 that is 0.4 MB per block, about the cost of its
// arithmetic). F32 (the fp32 check mode) runs the same chains with float32 FMA instead of the tensor cores,
// accumulating in the same fragment layout, so the fused kernels are checked at 1e-4 against the CPU too.
#include <cuda_bf16.h>

#include <string>
#include <type_traits>

#include "core/rng.h"
#include "cuda/activation.cuh"
#include "cuda/common.cuh"
#include "cuda/kernels.cuh"
#include "cuda/mma.cuh"
#include "cuda/rng.cuh"
#include "layer/block.h"

namespace rt::cuda {
namespace {

constexpr int kTM = 32;  // rows per block
constexpr int kMT = kTM / 16;
constexpr int kWarps = 8;
constexpr int kThreads = kWarps * 32;
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

__device__ __forceinline__ float warp_sum(float v) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  return v;
}

// Dropout of element i with the key of one stream (rng.cuh): the same mask and scale as dropout.cu.
struct Drop {
  uint64_t key = 0;
  int64_t threshold = 0;
  float scale = 1.0f;
  bool on = false;
  __device__ __forceinline__ float operator()(float v, size_t i) const {
    if (!on) return v;
    return keep(key, i, threshold) ? v * scale : 0.0f;
  }
};
Drop make_drop(float p, uint64_t seed, uint64_t stream_id) {
  Drop d;
  if (p > 0.0f) {
    d.on = true;
    d.key = rng_key(seed, stream_id);
    d.threshold = keep_threshold(p);
    d.scale = 1.0f / (1.0f - p);
  }
  return d;
}

// acc = rows [0, 32) x columns [n0, n0 + 16) of A B, with A (32 x K) in shared memory, row stride lda, and
// B[k][n] = W[n*K + k] (WT false: W is a Linear's [N][K], the forward product) or W[k*N + n] (WT true: W is
// [K][N], the input gradient dy W).
template <bool F32, bool WT>
__device__ __forceinline__ void warp_gemm(float (&acc)[kMT][kNB][4], const Elem<F32>* A, int lda,
                                          const float* __restrict__ W, int K, int N, int n0) {
  const int lane = threadIdx.x & 31, gq = lane >> 2, tq = lane & 3;
#pragma unroll
  for (int i = 0; i < kMT; ++i)
#pragma unroll
    for (int j = 0; j < kNB; ++j)
#pragma unroll
      for (int e = 0; e < 4; ++e) acc[i][j][e] = 0.0f;
  if constexpr (!F32) {
#pragma unroll 2
    for (int k0 = 0; k0 < K; k0 += 16) {
      const int c = k0 + 2 * tq;
      uint32_t a[kMT][4], b[kNB][2];
#pragma unroll
      for (int i = 0; i < kMT; ++i) {
        const __nv_bfloat16* ar = A + (i * 16 + gq) * lda + c;
        a[i][0] = *reinterpret_cast<const uint32_t*>(ar);
        a[i][1] = *reinterpret_cast<const uint32_t*>(ar + 8 * lda);
        a[i][2] = *reinterpret_cast<const uint32_t*>(ar + 8);
        a[i][3] = *reinterpret_cast<const uint32_t*>(ar + 8 * lda + 8);
      }
#pragma unroll
      for (int j = 0; j < kNB; ++j) {
        const int n = n0 + j * 8 + gq;
        if constexpr (!WT) {
          const float* wr = W + static_cast<size_t>(n) * K + c;
          const float2 w0 = __ldg(reinterpret_cast<const float2*>(wr));
          const float2 w1 = __ldg(reinterpret_cast<const float2*>(wr + 8));
          b[j][0] = pack_bf16(w0.x, w0.y);
          b[j][1] = pack_bf16(w1.x, w1.y);
        } else {
          const float* wc = W + static_cast<size_t>(c) * N + n;
          b[j][0] = pack_bf16(__ldg(wc), __ldg(wc + N));
          b[j][1] = pack_bf16(__ldg(wc + 8 * static_cast<size_t>(N)), __ldg(wc + 9 * static_cast<size_t>(N)));
        }
      }
#pragma unroll
      for (int i = 0; i < kMT; ++i)
#pragma unroll
        for (int j = 0; j < kNB; ++j) mma_bf16(acc[i][j], a[i], b[j]);
    }
  } else {
    for (int k = 0; k < K; ++k) {
      float bv[kNB][2];
#pragma unroll
      for (int j = 0; j < kNB; ++j) {
        const int n = n0 + j * 8 + 2 * tq;
        bv[j][0] = WT ? W[static_cast<size_t>(k) * N + n] : W[static_cast<size_t>(n) * K + k];
        bv[j][1] = WT ? W[static_cast<size_t>(k) * N + n + 1] : W[static_cast<size_t>(n + 1) * K + k];
      }
#pragma unroll
      for (int i = 0; i < kMT; ++i) {
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

// The block's product of its 32 rows of A with every column of B, handing each result to
// epi(local row, column, value); the warps take 16 columns at a time.
template <bool F32, bool WT, class Epi>
__device__ __forceinline__ void cta_gemm(const Elem<F32>* A, int lda, const float* __restrict__ W, int K, int N,
                                         Epi&& epi) {
  const int lane = threadIdx.x & 31, gq = lane >> 2, tq = lane & 3, warp = threadIdx.x >> 5;
  for (int n0 = warp * 8 * kNB; n0 < N; n0 += kWarps * 8 * kNB) {
    float acc[kMT][kNB][4];
    warp_gemm<F32, WT>(acc, A, lda, W, K, N, n0);
#pragma unroll
    for (int i = 0; i < kMT; ++i)
#pragma unroll
      for (int j = 0; j < kNB; ++j)
#pragma unroll
        for (int e = 0; e < 4; ++e) epi(i * 16 + gq + (e >> 1) * 8, n0 + j * 8 + 2 * tq + (e & 1), acc[i][j][e]);
  }
}

// One row's mean and 1/std, by the same operations in the same order as layernorm.cu's forward kernel (so
// the same bits); the calling warp owns the row.
__device__ __forceinline__ void row_stats(const float* xr, int d, float& m, float& rs) {
  const int lane = threadIdx.x & 31;
  float s = 0.0f;
  for (int j = lane; j < d; j += 32) s += xr[j];
  m = warp_sum(s) / d;
  float v = 0.0f;
  for (int j = lane; j < d; j += 32) {
    const float t = xr[j] - m;
    v += t * t;
  }
  rs = 1.0f / sqrtf(warp_sum(v) / d + kEps);
}

// LayerNorm of row xr into hr (global) and ar (shared, for the next product).
template <bool F32>
__device__ __forceinline__ void row_layernorm(const float* xr, const float* __restrict__ w, const float* __restrict__ b,
                                              int d, float* hr, float* mean, float* rstd, Elem<F32>* ar) {
  const int lane = threadIdx.x & 31;
  float m, rs;
  row_stats(xr, d, m, rs);
  if (lane == 0) {
    *mean = m;
    *rstd = rs;
  }
  for (int j = lane; j < d; j += 32) {
    float v = (xr[j] - m) * rs * w[j];
    if (b) v += b[j];
    hr[j] = v;
    put<F32>(ar + j, v);
  }
}

// dx = dres + LayerNorm's input gradient for one row, from its output gradient g (layernorm.cu's
// expressions); calls out(j, dx_j) for each element.
template <class Out>
__device__ __forceinline__ void row_layernorm_backward(const float* xr, const float* __restrict__ w, float m, float rs,
                                                       const float* g, const float* dres, int d, Out&& out) {
  const int lane = threadIdx.x & 31;
  float s1 = 0.0f, s2 = 0.0f;
  for (int j = lane; j < d; j += 32) {
    const float dyw = g[j] * w[j];
    s1 += dyw;
    s2 += dyw * ((xr[j] - m) * rs);
  }
  const float m1 = warp_sum(s1) / d, m2 = warp_sum(s2) / d;
  for (int j = lane; j < d; j += 32) {
    const float xh = (xr[j] - m) * rs;
    out(j, dres[j] + rs * (g[j] * w[j] - m1 - xh * m2));
  }
}

// Zeros a shared row (rows past the last real one, so products read no stale values).
template <bool F32>
__device__ __forceinline__ void zero_row(Elem<F32>* ar, int d) {
  for (int j = threadIdx.x & 31; j < d; j += 32) put<F32>(ar + j, 0.0f);
}

struct InFwd {
  int R, d;
  const float *x, *ln_w, *ln_b, *W, *b;
  float *h, *mean, *rstd, *qkv;
};

template <bool F32>
__global__ void __launch_bounds__(kThreads) in_forward_kernel(InFwd a) {
  extern __shared__ __align__(16) unsigned char smem[];
  Elem<F32>* A = reinterpret_cast<Elem<F32>*>(smem);
  const int d = a.d, lda = d + kPad, r0 = blockIdx.x * kTM, warp = threadIdx.x >> 5;
  for (int lr = warp; lr < kTM; lr += kWarps) {
    const int r = r0 + lr;
    if (r >= a.R) {
      zero_row<F32>(A + lr * lda, d);
      continue;
    }
    const size_t o = static_cast<size_t>(r) * d;
    row_layernorm<F32>(a.x + o, a.ln_w, a.ln_b, d, a.h + o, a.mean + r, a.rstd + r, A + lr * lda);
  }
  __syncthreads();
  const int N = 3 * d;
  cta_gemm<F32, false>(A, lda, a.W, d, N, [&](int lr, int c, float v) {
    const int r = r0 + lr;
    if (r < a.R) a.qkv[static_cast<size_t>(r) * N + c] = a.b ? v + a.b[c] : v;
  });
}

struct OutFwd {
  int R, d;
  bool gelu;
  Drop drop1, drop2;
  const float *att, *x, *Wp, *bp, *ln_w, *ln_b, *Wfc, *bfc, *Wmp, *bmp;
  float *x2, *h2, *mean2, *rstd2, *f, *g, *y;
};

template <bool F32>
__global__ void __launch_bounds__(kThreads) out_forward_kernel(OutFwd a) {
  extern __shared__ __align__(16) unsigned char smem[];
  const int d = a.d, lda = d + kPad, ldg = 4 * d + kPad, r0 = blockIdx.x * kTM, warp = threadIdx.x >> 5;
  Elem<F32>* A = reinterpret_cast<Elem<F32>*>(smem);                    // [32][lda]: att, then h2
  float* X2 = reinterpret_cast<float*>(A + kTM * lda);                   // [32][d]
  Elem<F32>* G = reinterpret_cast<Elem<F32>*>(X2 + kTM * d);             // [32][ldg]
  for (int i = threadIdx.x; i < kTM * d; i += kThreads) {
    const int lr = i / d, j = i - lr * d, r = r0 + lr;
    put<F32>(A + lr * lda + j, r < a.R ? a.att[static_cast<size_t>(r) * d + j] : 0.0f);
  }
  __syncthreads();
  // x2 = x + dropout(c_proj(att))
  cta_gemm<F32, false>(A, lda, a.Wp, d, d, [&](int lr, int c, float v) {
    const int r = r0 + lr;
    float x2 = 0.0f;
    if (r < a.R) {
      const size_t i = static_cast<size_t>(r) * d + c;
      if (a.bp) v += a.bp[c];
      x2 = a.drop1(v, i) + a.x[i];
      a.x2[i] = x2;
    }
    X2[lr * d + c] = x2;
  });
  __syncthreads();
  for (int lr = warp; lr < kTM; lr += kWarps) {
    const int r = r0 + lr;
    if (r >= a.R) {
      zero_row<F32>(A + lr * lda, d);
      continue;
    }
    const size_t o = static_cast<size_t>(r) * d;
    row_layernorm<F32>(X2 + lr * d, a.ln_w, a.ln_b, d, a.h2 + o, a.mean2 + r, a.rstd2 + r, A + lr * lda);
  }
  __syncthreads();
  // f = c_fc(h2), g = act(f)
  const int F = 4 * d;
  cta_gemm<F32, false>(A, lda, a.Wfc, d, F, [&](int lr, int c, float v) {
    const int r = r0 + lr;
    float gv = 0.0f;
    if (r < a.R) {
      const size_t i = static_cast<size_t>(r) * F + c;
      if (a.bfc) v += a.bfc[c];
      a.f[i] = v;
      gv = a.gelu ? Gelu()(v) : Relu()(v);
      a.g[i] = gv;
    }
    put<F32>(G + lr * ldg + c, gv);
  });
  __syncthreads();
  // y = x2 + dropout(c_proj(g))
  cta_gemm<F32, false>(G, ldg, a.Wmp, F, d, [&](int lr, int c, float v) {
    const int r = r0 + lr;
    if (r >= a.R) return;
    const size_t i = static_cast<size_t>(r) * d + c;
    if (a.bmp) v += a.bmp[c];
    a.y[i] = a.drop2(v, i) + X2[lr * d + c];
  });
}

struct OutBwd {
  int R, d;
  bool gelu;
  Drop drop1, drop2;
  const float *dy, *f, *x2, *mean2, *rstd2, *ln_w, *Wmp, *Wfc, *Wp;
  float *dm, *dg, *dh2, *dx2, *da, *datt;  // dm, da: null when not written
};

template <bool F32>
__global__ void __launch_bounds__(kThreads) out_backward_kernel(OutBwd a) {
  extern __shared__ __align__(16) unsigned char smem[];
  const int d = a.d, lda = d + kPad, ldg = 4 * d + kPad, r0 = blockIdx.x * kTM, warp = threadIdx.x >> 5;
  Elem<F32>* A = reinterpret_cast<Elem<F32>*>(smem);         // [32][lda]: dm, then da
  float* DY = reinterpret_cast<float*>(A + kTM * lda);        // [32][d]: the block's dy (the residual's part)
  float* DH = DY + kTM * d;                                   // [32][d]: dh2
  Elem<F32>* G = reinterpret_cast<Elem<F32>*>(DH + kTM * d);  // [32][ldg]: dg
  for (int i = threadIdx.x; i < kTM * d; i += kThreads) {
    const int lr = i / d, j = i - lr * d, r = r0 + lr;
    float v = 0.0f, m = 0.0f;
    if (r < a.R) {
      const size_t gi = static_cast<size_t>(r) * d + j;
      v = a.dy[gi];
      m = a.drop2(v, gi);
      if (a.dm) a.dm[gi] = m;
    }
    DY[lr * d + j] = v;
    put<F32>(A + lr * lda + j, m);
  }
  __syncthreads();
  // dg = act'(f) * (dm W_mp)
  const int F = 4 * d;
  cta_gemm<F32, true>(A, lda, a.Wmp, d, F, [&](int lr, int c, float v) {
    const int r = r0 + lr;
    float gv = 0.0f;
    if (r < a.R) {
      const size_t i = static_cast<size_t>(r) * F + c;
      const float fv = a.f[i];
      gv = a.gelu ? GeluGrad()(fv, v) : ReluGrad()(fv, v);
      a.dg[i] = gv;
    }
    put<F32>(G + lr * ldg + c, gv);
  });
  __syncthreads();
  // dh2 = dg W_fc
  cta_gemm<F32, true>(G, ldg, a.Wfc, F, d, [&](int lr, int c, float v) {
    const int r = r0 + lr;
    if (r < a.R) a.dh2[static_cast<size_t>(r) * d + c] = v;
    DH[lr * d + c] = r < a.R ? v : 0.0f;
  });
  __syncthreads();
  // dx2 = dy + ln_2's input gradient; da = dropout'(dx2)
  for (int lr = warp; lr < kTM; lr += kWarps) {
    const int r = r0 + lr;
    Elem<F32>* ar = A + lr * lda;
    if (r >= a.R) {
      zero_row<F32>(ar, d);
      continue;
    }
    const size_t o = static_cast<size_t>(r) * d;
    row_layernorm_backward(a.x2 + o, a.ln_w, a.mean2[r], a.rstd2[r], DH + lr * d, DY + lr * d, d,
                           [&](int j, float v) {
                             a.dx2[o + j] = v;
                             const float dav = a.drop1(v, o + j);
                             if (a.da) a.da[o + j] = dav;
                             put<F32>(ar + j, dav);
                           });
  }
  __syncthreads();
  // datt = da W_p
  cta_gemm<F32, true>(A, lda, a.Wp, d, d, [&](int lr, int c, float v) {
    const int r = r0 + lr;
    if (r < a.R) a.datt[static_cast<size_t>(r) * d + c] = v;
  });
}

struct InBwd {
  int R, d;
  const float *dqkv, *x, *mean1, *rstd1, *ln_w, *W, *dres;
  float *dh1, *dx;
};

template <bool F32>
__global__ void __launch_bounds__(kThreads) in_backward_kernel(InBwd a) {
  extern __shared__ __align__(16) unsigned char smem[];
  const int d = a.d, Q = 3 * d, lda = Q + kPad, r0 = blockIdx.x * kTM, warp = threadIdx.x >> 5;
  Elem<F32>* A = reinterpret_cast<Elem<F32>*>(smem);   // [32][lda]: dqkv
  float* DH = reinterpret_cast<float*>(A + kTM * lda);  // [32][d]: dh1
  for (int i = threadIdx.x; i < kTM * Q; i += kThreads) {
    const int lr = i / Q, j = i - lr * Q, r = r0 + lr;
    put<F32>(A + lr * lda + j, r < a.R ? a.dqkv[static_cast<size_t>(r) * Q + j] : 0.0f);
  }
  __syncthreads();
  // dh1 = dqkv W_attn
  cta_gemm<F32, true>(A, lda, a.W, Q, d, [&](int lr, int c, float v) {
    const int r = r0 + lr;
    if (r < a.R) a.dh1[static_cast<size_t>(r) * d + c] = v;
    DH[lr * d + c] = r < a.R ? v : 0.0f;
  });
  __syncthreads();
  for (int lr = warp; lr < kTM; lr += kWarps) {
    const int r = r0 + lr;
    if (r >= a.R) continue;
    const size_t o = static_cast<size_t>(r) * d;
    row_layernorm_backward(a.x + o, a.ln_w, a.mean1[r], a.rstd1[r], DH + lr * d, a.dres + o, d,
                           [&](int j, float v) { a.dx[o + j] = v; });
  }
}

// Bytes of shared memory of each kernel.
size_t elem(bool bf16) { return bf16 ? 2 : 4; }
size_t in_forward_smem(bool bf16, int d) { return kTM * (d + kPad) * elem(bf16); }
size_t out_forward_smem(bool bf16, int d) {
  return kTM * (d + kPad) * elem(bf16) + kTM * d * 4 + kTM * (4 * d + kPad) * elem(bf16);
}
size_t out_backward_smem(bool bf16, int d) {
  return kTM * (d + kPad) * elem(bf16) + 2 * kTM * d * 4 + kTM * (4 * d + kPad) * elem(bf16);
}
size_t in_backward_smem(bool bf16, int d) { return kTM * (3 * d + kPad) * elem(bf16) + kTM * d * 4; }

// Launches K over the rows, raising its shared-memory limit first (once per size) when it needs more than
// the default 48 KB.
template <class Args, void (*K)(Args)>
void launch(const Args& a, size_t smem, const char* what) {
  static size_t raised = 48 * 1024;
  RT_CHECK(smem <= limits().smem_optin, std::string(what) + ": needs " + std::to_string(smem) +
                                            " bytes of shared memory, the GPU allows " +
                                            std::to_string(limits().smem_optin));
  if (smem > raised) {
    RT_CU(cudaFuncSetAttribute(K, cudaFuncAttributeMaxDynamicSharedMemorySize, static_cast<int>(smem)));
    raised = smem;
  }
  K<<<(a.R + kTM - 1) / kTM, kThreads, smem, stream()>>>(a);
  RT_CU_LAUNCH(what);
}

}  // namespace

bool block_fusable(int d) { return d >= 16 && d <= kMaxFusedD && d % 16 == 0; }

void block_in_forward(bool bf16, const BlockShape& s, const BlockWeights& w, const BlockCache& c) {
  InFwd a{c.B * c.n, s.d, c.x, w.ln1_w, w.ln1_b, w.attn_w, w.attn_b, c.h1, c.mean1, c.rstd1, c.qkv};
  if (!a.R) return;
  if (bf16) launch<InFwd, in_forward_kernel<false>>(a, in_forward_smem(true, s.d), "block_in_forward");
  else launch<InFwd, in_forward_kernel<true>>(a, in_forward_smem(false, s.d), "block_in_forward");
}

void block_out_forward(bool bf16, const BlockShape& s, const BlockWeights& w, const BlockCache& c, float* y) {
  OutFwd a{c.B * c.n, s.d, s.gelu, make_drop(c.p, c.seed, c.stream * 4 + 1), make_drop(c.p, c.seed, c.stream * 4 + 2),
           c.att, c.x, w.attn_proj_w, w.attn_proj_b, w.ln2_w, w.ln2_b, w.fc_w, w.fc_b, w.mlp_proj_w, w.mlp_proj_b,
           c.x2, c.h2, c.mean2, c.rstd2, c.f, c.g, y};
  if (!a.R) return;
  if (bf16) launch<OutFwd, out_forward_kernel<false>>(a, out_forward_smem(true, s.d), "block_out_forward");
  else launch<OutFwd, out_forward_kernel<true>>(a, out_forward_smem(false, s.d), "block_out_forward");
}

void block_out_backward(bool bf16, const BlockShape& s, const BlockWeights& w, const BlockCache& c,
                        const BlockGradStash& st, const float* dy, float* dx2, float* datt) {
  const bool drop = c.p > 0;
  OutBwd a{c.B * c.n, s.d, s.gelu, make_drop(c.p, c.seed, c.stream * 4 + 1), make_drop(c.p, c.seed, c.stream * 4 + 2),
           dy, c.f, c.x2, c.mean2, c.rstd2, w.ln2_w, w.mlp_proj_w, w.fc_w, w.attn_proj_w,
           (drop || st.dm != dy) ? st.dm : nullptr, st.dg, st.dh2, dx2, drop ? st.da : nullptr, datt};
  if (!a.R) return;
  if (bf16) launch<OutBwd, out_backward_kernel<false>>(a, out_backward_smem(true, s.d), "block_out_backward");
  else launch<OutBwd, out_backward_kernel<true>>(a, out_backward_smem(false, s.d), "block_out_backward");
}

void block_in_backward(bool bf16, const BlockShape& s, const BlockWeights& w, const BlockCache& c,
                       const BlockGradStash& st, const float* dx2, float* dx) {
  InBwd a{c.B * c.n, s.d, st.dqkv, c.x, c.mean1, c.rstd1, w.ln1_w, w.attn_w, dx2, st.dh1, dx};
  if (!a.R) return;
  if (bf16) launch<InBwd, in_backward_kernel<false>>(a, in_backward_smem(true, s.d), "block_in_backward");
  else launch<InBwd, in_backward_kernel<true>>(a, in_backward_smem(false, s.d), "block_in_backward");
}

}  // namespace rt::cuda
