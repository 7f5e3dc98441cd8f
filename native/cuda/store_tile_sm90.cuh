// The Hopper GEMMs' epilogue (matmul_sm90.cu's cp.async kernels and matmul_tma_sm90.cu's TMA kernel): a
// warpgroup's wgmma accumulators through GemmArgs' epilogue (split-K workspace, alpha, bias, residual, beta)
// into float32 C, or rounded into a bf16 C. Included by files built for sm_90a only.
#pragma once
#include <cuda_bf16.h>

#include <cstdint>

#include "cuda/gemm_args.cuh"

namespace rt::cuda::gemm_detail {

// The bias under columns gc and, where `two`, gc + 1 (else 0 in .y); zeros where there is none or gc is past N.
// Loaded apart from its use so that the staged epilogue can ask for a box's values ahead of it.
__device__ __forceinline__ float2 bias_pair(const GemmArgs& g, int gc, bool two) {
  return g.bias && gc < g.N ? make_float2(__ldg(g.bias + gc), two ? __ldg(g.bias + gc + 1) : 0.0f)
                            : make_float2(0.0f, 0.0f);
}

// alpha v + bias (b, from bias_pair: zeros where there is none) for two columns: the first two of the epilogue's
// terms, one fused multiply-add each (before session 26 a multiply, a test of g.bias and an add). Where alpha is 1 (the
// model's products) the same bits as before; else alpha v is no longer rounded before the bias is added.
__device__ __forceinline__ float2 epilogue_scaled_b(const GemmArgs& g, float v0, float v1, float2 b) {
  return make_float2(fmaf(v0, g.alpha, b.x), fmaf(v1, g.alpha, b.y));
}

// alpha v + bias (+ the residual where RES) for columns gc and, where `two`, gc + 1 of row gr (inside C): the
// values of an unsplit product's outputs before beta C, in the order every Hopper epilogue adds them.
// epilogue_value_b: with the bias's two values already loaded (b, from bias_pair).
template <bool RES>
__device__ __forceinline__ float2 epilogue_value_b(const GemmArgs& g, int gr, int gc, float v0, float v1, bool two,
                                                   float2 b) {
  float2 o = epilogue_scaled_b(g, v0, v1, b);
  if (RES && g.res) {
    const float* r = g.res + static_cast<size_t>(gr) * g.ldc + gc;
    o.x += r[0];
    o.y += two ? r[1] : 0.0f;
  }
  return o;
}
template <bool RES>
__device__ __forceinline__ float2 epilogue_value(const GemmArgs& g, int gr, int gc, float v0, float v1, bool two) {
  return epilogue_value_b<RES>(g, gr, gc, v0, v1, two, bias_pair(g, gc, two));
}

// epilogue_value<true> with the bias's (b, from bias_pair) and the residual's two values already loaded (rv: rv.y 0
// where !two), for a product that has one (store_tile_staged's PRE): the same operations in the same order.
__device__ __forceinline__ float2 epilogue_value_res(const GemmArgs& g, float v0, float v1, float2 b, float2 rv) {
  float2 o = epilogue_scaled_b(g, v0, v1, b);
  o.x += rv.x;
  o.y += rv.y;
  return o;
}

// A bf16 C (GemmArgs::c_half: unsplit, no residual, beta 0): one or two outputs from column gc of row gr,
// rounded after alpha and the bias, as one 4-byte store where the address allows.
__device__ __forceinline__ void epilogue_half(const GemmArgs& g, float* C, int gr, int gc, float v0, float v1, bool two) {
  __nv_bfloat16* p = reinterpret_cast<__nv_bfloat16*>(C) + static_cast<size_t>(gr) * g.ldc + gc;
  const float2 o = epilogue_value<false>(g, gr, gc, v0, v1, two);
  const float o0 = o.x, o1 = o.y;
  if (two && (reinterpret_cast<uintptr_t>(p) & 3) == 0) {
    *reinterpret_cast<__nv_bfloat162*>(p) = __floats2bfloat162_rn(o0, o1);
  } else {
    p[0] = __float2bfloat16_rn(o0);
    if (two) p[1] = __float2bfloat16_rn(o1);
  }
}

// Two float32 outputs side by side (columns gc, gc + 1 of row gr, both inside C) through the epilogue, as one
// 8-byte store where the address allows (the accumulator layout gives each thread column pairs).
__device__ __forceinline__ void epilogue_store2(const GemmArgs& g, float* C, int gr, int gc, float v0, float v1) {
  float* p;
  float o0 = v0, o1 = v1;
  if (g.ws) {
    p = g.ws + (static_cast<size_t>(blockIdx.z) * g.M + gr) * g.N + gc;
  } else {
    const float2 o = epilogue_value<true>(g, gr, gc, v0, v1, true);
    o0 = o.x, o1 = o.y;
    p = C + static_cast<size_t>(gr) * g.ldc + gc;
    if (g.beta != 0.0f) o0 += g.beta * p[0], o1 += g.beta * p[1];
  }
  if ((reinterpret_cast<uintptr_t>(p) & 7) == 0) {
    *reinterpret_cast<float2*>(p) = make_float2(o0, o1);
  } else {
    p[0] = o0;
    p[1] = o1;
  }
}

// A warpgroup's 64 x (N / 2) accumulator tile into C from (m0, n0) through the epilogue. Layout of m64nNk16:
// warp w of the warpgroup holds rows 16 w + lane / 4 (+ 8 for elements 2, 3 of each group of four), columns
// 8 j + 2 (lane % 4) (+ 1 for odd elements), j = element / 4.
// EPI: 0, float32 C; 1, bf16 C (GemmArgs::c_half). A template parameter: a runtime branch here slowed every
// product by 10-25% (session 15).
template <int EPI, int N>
__device__ __forceinline__ void store_tile(const GemmArgs& g, float* C, int m0, int n0, const float (&acc)[N]) {
  const int warp = (threadIdx.x >> 5) & 3, lane = threadIdx.x & 31;
  const int row = m0 + warp * 16 + (lane >> 2), col = n0 + 2 * (lane & 3);
#pragma unroll
  for (int j = 0; j < N / 4; ++j)
#pragma unroll
    for (int h = 0; h < 2; ++h) {
      const int gr = row + h * 8, gc = col + 8 * j;
      const float v0 = acc[4 * j + 2 * h], v1 = acc[4 * j + 2 * h + 1];
      if (gr >= g.M || gc >= g.N) continue;
      if constexpr (EPI == 1) epilogue_half(g, C, gr, gc, v0, v1, gc + 1 < g.N);
      else if (gc + 1 < g.N) epilogue_store2(g, C, gr, gc, v0, v1);
      else epilogue_store(g, C, gr, gc, v0);
    }
}

}  // namespace rt::cuda::gemm_detail
