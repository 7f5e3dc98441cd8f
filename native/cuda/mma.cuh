// The tensor-core primitive every bf16 product here is built on (matmul.cu's GEMM, block_fused.cu's fused
// chains): mma.sync.m16n8k16 with bf16 operands and float32 accumulation (sm_80 and later). Fragment
// layout, with g = lane / 4 and t = lane % 4: A (16x16, row-major) a0 = A[g][2t..2t+1], a1 = A[g+8][2t..],
// a2 = A[g][2t+8..], a3 = A[g+8][2t+8..]; B (16x8) b0 = B[2t..2t+1][g], b1 = B[2t+8..2t+9][g]; C (16x8)
// c0, c1 = C[g][2t], C[g][2t+1]; c2, c3 = C[g+8][2t], C[g+8][2t+1].
#pragma once
#include <cuda_bf16.h>

#include <cstdint>

namespace rt::cuda {

__device__ __forceinline__ uint32_t pack_bf16(float lo, float hi) {
  __nv_bfloat162 v = __floats2bfloat162_rn(lo, hi);  // lo in the low half: the element of lower index
  return *reinterpret_cast<uint32_t*>(&v);
}

// Four floats as four bf16 at p (8-byte aligned), one store.
__device__ __forceinline__ void store_bf16x4(__nv_bfloat16* p, float4 v) {
  uint2 u;
  u.x = pack_bf16(v.x, v.y);
  u.y = pack_bf16(v.z, v.w);
  *reinterpret_cast<uint2*>(p) = u;
}

__device__ __forceinline__ void mma_bf16(float (&c)[4], const uint32_t (&a)[4], const uint32_t (&b)[2]) {
  asm volatile(
      "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, {%0,%1,%2,%3};\n"
      : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]));
}

}  // namespace rt::cuda
