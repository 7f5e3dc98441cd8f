// A float pointer behind which bf16 may live: the layer's bf16 buffers (Backend::block_half) travel in the
// same float* fields as float32 ones, with a flag that says which. Element offsets are then taken on the
// bf16 type. Shared by the fused chains (block_tiles.cuh) and the tensor-core attention (attention_mma.cuh).
#pragma once
#include <cuda_bf16.h>

#include <cstddef>

namespace rt::cuda {

__device__ __forceinline__ const float* elem_at(const float* p, bool half, size_t off) {
  return half ? reinterpret_cast<const float*>(reinterpret_cast<const __nv_bfloat16*>(p) + off) : p + off;
}

// Elements i, i + 1 as floats (bf16 to float is exact).
__device__ __forceinline__ float2 load2_as(const float* p, bool half, size_t i) {
  if (half) return __bfloat1622float2(*reinterpret_cast<const __nv_bfloat162*>(elem_at(p, true, i)));
  return __ldg(reinterpret_cast<const float2*>(p + i));
}

// Elements i .. i + 3 as floats.
__device__ __forceinline__ float4 load4_as(const float* p, bool half, size_t i) {
  if (!half) return __ldg(reinterpret_cast<const float4*>(p + i));
  const uint2 u = __ldg(reinterpret_cast<const uint2*>(elem_at(p, true, i)));
  const float2 a = __bfloat1622float2(*reinterpret_cast<const __nv_bfloat162*>(&u.x));
  const float2 b = __bfloat1622float2(*reinterpret_cast<const __nv_bfloat162*>(&u.y));
  return make_float4(a.x, a.y, b.x, b.y);
}

// Elements i, i + 1 written (rounded to bf16 where half).
__device__ __forceinline__ void store2_as(float* p, bool half, size_t i, float a, float b) {
  if (half) *reinterpret_cast<__nv_bfloat162*>(reinterpret_cast<__nv_bfloat16*>(p) + i) = __floats2bfloat162_rn(a, b);
  else *reinterpret_cast<float2*>(p + i) = make_float2(a, b);
}

}  // namespace rt::cuda
