// Warpgroup tensor-core instructions (wgmma, sm_90a only), shared by the Hopper kernels that feed them from
// shared memory: matmul_sm90.cu's GEMM (K-major operands) and weight_grad_sm90.cu's weight gradients
// (MN-major operands, transposed by the instruction). Included only by files built for sm_90a.
#pragma once
#include <cstdint>

#include "cuda/cluster.cuh"

namespace rt::cuda::wgmma {

using cluster::smem_addr;  // a shared-memory pointer as the 32-bit address the descriptors take

// Shared-memory matrix descriptor, by default with the 128B swizzle: start address; leading-dimension byte offset
// (unused by K-major swizzled layouts, 16 by convention; for MN-major ones, the distance between blocks of 64 bf16
// along M or N); stride byte offset (1024 for 128B: from one group of 8 rows, K-major, or of 8 K, MN-major, to the
// next); swizzle (the layout type: 1 the 128B swizzle, 2 the 64B one, whose 8 rows of 64 bytes take sbo 512).
__device__ __forceinline__ uint64_t smem_desc(uint32_t addr, uint32_t lbo = 16, uint32_t sbo = 1024,
                                              uint64_t swizzle = 1) {
  return static_cast<uint64_t>((addr & 0x3FFFF) >> 4) | (static_cast<uint64_t>((lbo & 0x3FFFF) >> 4) << 16) |
         (static_cast<uint64_t>(sbo >> 4) << 32) | (swizzle << 62);
}

__device__ __forceinline__ void fence() { asm volatile("wgmma.fence.sync.aligned;\n" ::: "memory"); }
__device__ __forceinline__ void commit() { asm volatile("wgmma.commit_group.sync.aligned;\n" ::: "memory"); }
__device__ __forceinline__ void wait0() { asm volatile("wgmma.wait_group.sync.aligned 0;\n" ::: "memory"); }
__device__ __forceinline__ void wait1() { asm volatile("wgmma.wait_group.sync.aligned 1;\n" ::: "memory"); }
// Shared memory written through the generic proxy (cp.async included) is visible to the tensor cores'
// async-proxy reads only after this, issued by the writing thread before the barrier.
__device__ __forceinline__ void fence_async_shared() { asm volatile("fence.proxy.async.shared::cta;\n" ::: "memory"); }

// Eight accumulator operands of a wgmma asm statement, d[i] .. d[i + 7], read and written.
#define RT_D8(i)                                                                                            \
  "+f"(d[i]), "+f"(d[i + 1]), "+f"(d[i + 2]), "+f"(d[i + 3]), "+f"(d[i + 4]), "+f"(d[i + 5]), "+f"(d[i + 6]), \
      "+f"(d[i + 7])

// d (64 floats per thread: a 64x128 float32 tile of the warpgroup) = A (64x16, desc a) * B (16x128, desc b)
// + d, or without the + d when accumulate is 0 (a tile's first product: no zeroing of d between products,
// which would make the compiler wait for the tensor cores there). Both operands K-major.
__device__ __forceinline__ void m64n128k16(float (&d)[64], uint64_t a, uint64_t b, int accumulate) {
  asm volatile(
      "{\n.reg .pred p;\nsetp.ne.b32 p, %66, 0;\n"
      "wgmma.mma_async.sync.aligned.m64n128k16.f32.bf16.bf16 {%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15, %16, %17, %18, %19, %20, %21, %22, %23, %24, %25, %26, %27, %28, %29, %30, %31, %32, %33, %34, %35, %36, %37, %38, %39, %40, %41, %42, %43, %44, %45, %46, %47, %48, %49, %50, %51, %52, %53, %54, %55, %56, %57, %58, %59, %60, %61, %62, %63}, %64, %65, p, 1, 1, 0, 0;\n}\n"
      : RT_D8(0), RT_D8(8), RT_D8(16), RT_D8(24), RT_D8(32), RT_D8(40), RT_D8(48), RT_D8(56)
      : "l"(a), "l"(b), "r"(accumulate));
}

// d (48 floats per thread: a 64x96 float32 tile of the warpgroup) = A (64x16) * B (16x96) (+ d), as above.
__device__ __forceinline__ void m64n96k16(float (&d)[48], uint64_t a, uint64_t b, int accumulate) {
  asm volatile(
      "{\n.reg .pred p;\nsetp.ne.b32 p, %50, 0;\n"
      "wgmma.mma_async.sync.aligned.m64n96k16.f32.bf16.bf16 {%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15, %16, %17, %18, %19, %20, %21, %22, %23, %24, %25, %26, %27, %28, %29, %30, %31, %32, %33, %34, %35, %36, %37, %38, %39, %40, %41, %42, %43, %44, %45, %46, %47}, %48, %49, p, 1, 1, 0, 0;\n}\n"
      : RT_D8(0), RT_D8(8), RT_D8(16), RT_D8(24), RT_D8(32), RT_D8(40)
      : "l"(a), "l"(b), "r"(accumulate));
}

// d (96 floats per thread: a 64x192 float32 tile of the warpgroup) = A (64x16) * B (16x192) (+ d), as above.
// MN: both operands MN-major (A stored along M, B along N: the instruction transposes them), else K-major.
template <bool MN = false>
__device__ __forceinline__ void m64n192k16(float (&d)[96], uint64_t a, uint64_t b, int accumulate) {
  asm volatile(
      "{\n.reg .pred p;\nsetp.ne.b32 p, %98, 0;\n"
      "wgmma.mma_async.sync.aligned.m64n192k16.f32.bf16.bf16 {%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15, %16, %17, %18, %19, %20, %21, %22, %23, %24, %25, %26, %27, %28, %29, %30, %31, %32, %33, %34, %35, %36, %37, %38, %39, %40, %41, %42, %43, %44, %45, %46, %47, %48, %49, %50, %51, %52, %53, %54, %55, %56, %57, %58, %59, %60, %61, %62, %63, %64, %65, %66, %67, %68, %69, %70, %71, %72, %73, %74, %75, %76, %77, %78, %79, %80, %81, %82, %83, %84, %85, %86, %87, %88, %89, %90, %91, %92, %93, %94, %95}, %96, %97, p, 1, 1, %99, %99;\n}\n"
      : RT_D8(0), RT_D8(8), RT_D8(16), RT_D8(24), RT_D8(32), RT_D8(40), RT_D8(48), RT_D8(56), RT_D8(64), RT_D8(72),
        RT_D8(80), RT_D8(88)
      : "l"(a), "l"(b), "r"(accumulate), "n"(MN ? 1 : 0));
}
#undef RT_D8

// Keeps the compiler from moving uses of the accumulators above the wait that completes them.
template <int N>
__device__ __forceinline__ void pin(float (&d)[N]) {
#pragma unroll
  for (int i = 0; i < N; ++i) asm volatile("" : "+f"(d[i])::"memory");
}

}  // namespace rt::cuda::wgmma
