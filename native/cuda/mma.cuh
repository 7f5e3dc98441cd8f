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

// Four 8x8 bf16 matrices from shared memory in one instruction (sm_75 and later): lane l gives the address
// of row l % 8 of matrix l / 8 (16 bytes, 16-byte aligned), and register i of every lane receives its
// elements of matrix i in the fragment layout above (row l / 4, columns 2(l % 4) and + 1). Why: one
// instruction instead of four 32-bit shared loads per fragment; the chains and the attention were waiting
// on the shared-memory instruction queue (ncu: mio_throttle and short_scoreboard stalls).
__device__ __forceinline__ void ldmatrix_x4(uint32_t (&r)[4], const void* p) {
  const uint32_t a = static_cast<uint32_t>(__cvta_generic_to_shared(p));
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0,%1,%2,%3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(a));
}

// The A fragment of rows [r0, r0 + 16) and columns [k0, k0 + 16) of a row-major bf16 matrix in shared memory
// (row stride ld elements, a multiple of 8).
__device__ __forceinline__ void ldmatrix_a(uint32_t (&a)[4], const __nv_bfloat16* M, int ld, int r0, int k0) {
  const int l = threadIdx.x & 31;
  ldmatrix_x4(a, M + (r0 + (l & 7) + ((l >> 3) & 1) * 8) * ld + k0 + (l >> 4) * 8);
}

// The B fragments of two n8 tiles, n rows [n0, n0 + 16), k columns [k0, k0 + 16), of a matrix held as [n][k]
// (row-major, row stride ld, a multiple of 8) in shared memory: b[j] for rows n0 + 8j.
__device__ __forceinline__ void ldmatrix_b2(uint32_t (&b)[2][2], const __nv_bfloat16* M, int ld, int n0, int k0) {
  const int l = threadIdx.x & 31;
  uint32_t r[4];
  ldmatrix_x4(r, M + (n0 + (l & 7) + (l >> 4) * 8) * ld + k0 + ((l >> 3) & 1) * 8);
  b[0][0] = r[0];
  b[0][1] = r[1];
  b[1][0] = r[2];
  b[1][1] = r[3];
}

__device__ __forceinline__ void mma_bf16(float (&c)[4], const uint32_t (&a)[4], const uint32_t (&b)[2]) {
  asm volatile(
      "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, {%0,%1,%2,%3};\n"
      : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]));
}

}  // namespace rt::cuda
