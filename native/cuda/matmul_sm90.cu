// Matrix products on Hopper (sm_90a only; this file is built for that target alone, see CMakeLists.txt):
// the same GEMM as matmul.cu (GemmArgs: float32 operands in memory, any of NN / NT / TN, batches, split-K,
// bias / residual / beta epilogue) on warpgroup tensor-core instructions (wgmma), which issue a 64x128x16
// product per instruction from shared memory and run asynchronously, where mma.sync needs every fragment
// loaded into registers by the issuing warp. matmul.cu's mma.sync kernel reaches 85-120 TFLOP/s on the
// char shapes, cuBLAS 430-615 (bench/cuda/NOTES.md).
//
// A block computes a 128x128 tile of C with two warpgroups (rows 0-63 and 64-127), walking K 64 at a time
// through two shared-memory stages. The operands are float32 in memory, so they cannot go to shared memory
// by the copy engine (TMA) as they are: each thread loads its part of the next tile into registers (float4)
// while the tensor cores work on the current one, converts to bf16 and stores it in the layout wgmma reads:
// K-major, 128-byte rows (64 bf16 of K), 16-byte chunks swizzled by the row (chunk c of row r at c ^ (r % 8)),
// which is the "128B swizzle" of the instruction's shared-memory descriptor. An operand stored K-contiguous
// (A of NN/NT, B of NT) is copied row by row; one stored MN-contiguous (A of TN, B of NN/TN) is transposed on
// the way: each thread reads 8 rows of K x 4 columns and writes 4 rows of 8 K.
//
// Which kernel runs is decided in matmul.cu (gemm_sm90_usable): compute capability 9.0 and 16-byte loads.
#include <cuda_bf16.h>

#include <cstdint>

#include "cuda/common.cuh"
#include "cuda/gemm_args.cuh"
#include "cuda/kernels.cuh"
#include "cuda/matmul_sm90.cuh"

namespace rt::cuda {
namespace {

using namespace gemm_detail;

constexpr int kBM = 128, kBN = 128, kBK = 64, kThreads = 256;
constexpr int kTileBytes = 128 * kBK * 2;        // one operand's stage: 128 rows of 128 bytes
constexpr int kStageBytes = 2 * kTileBytes;      // A then B
constexpr int kSmem = 2 * kStageBytes + 1024;    // two stages, and slack to align the base to 1024 bytes

__device__ __forceinline__ uint32_t smem_u32(const void* p) {
  return static_cast<uint32_t>(__cvta_generic_to_shared(p));
}

// Shared-memory matrix descriptor: start address, leading-dimension byte offset (unused by K-major swizzled
// layouts; 16 by convention), stride byte offset 1024 (from one 8-row group to the next), 128B swizzle.
__device__ __forceinline__ uint64_t smem_desc(uint32_t addr) {
  return static_cast<uint64_t>((addr & 0x3FFFF) >> 4) | (static_cast<uint64_t>(16 >> 4) << 16) |
         (static_cast<uint64_t>(1024 >> 4) << 32) | (1ull << 62);
}

__device__ __forceinline__ void wgmma_fence() { asm volatile("wgmma.fence.sync.aligned;\n" ::: "memory"); }
__device__ __forceinline__ void wgmma_commit() { asm volatile("wgmma.commit_group.sync.aligned;\n" ::: "memory"); }
__device__ __forceinline__ void wgmma_wait0() { asm volatile("wgmma.wait_group.sync.aligned 0;\n" ::: "memory"); }
// Ordinary shared-memory stores become visible to the tensor cores' (async proxy) reads only after this.
__device__ __forceinline__ void fence_async_shared() { asm volatile("fence.proxy.async.shared::cta;\n" ::: "memory"); }

// d (64 floats per thread: a 64x128 float32 tile of the warpgroup) += A (64x16, desc a) * B (16x128, desc b).
__device__ __forceinline__ void wgmma_m64n128k16(float (&d)[64], uint64_t a, uint64_t b) {
  asm volatile(
      "{\n.reg .pred p;\nsetp.ne.b32 p, %66, 0;\n"
      "wgmma.mma_async.sync.aligned.m64n128k16.f32.bf16.bf16 {%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15, %16, %17, %18, %19, %20, %21, %22, %23, %24, %25, %26, %27, %28, %29, %30, %31, %32, %33, %34, %35, %36, %37, %38, %39, %40, %41, %42, %43, %44, %45, %46, %47, %48, %49, %50, %51, %52, %53, %54, %55, %56, %57, %58, %59, %60, %61, %62, %63}, %64, %65, p, 1, 1, 0, 0;\n}\n"
      : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3]), "+f"(d[4]), "+f"(d[5]), "+f"(d[6]), "+f"(d[7]),
        "+f"(d[8]), "+f"(d[9]), "+f"(d[10]), "+f"(d[11]), "+f"(d[12]), "+f"(d[13]), "+f"(d[14]), "+f"(d[15]),
        "+f"(d[16]), "+f"(d[17]), "+f"(d[18]), "+f"(d[19]), "+f"(d[20]), "+f"(d[21]), "+f"(d[22]), "+f"(d[23]),
        "+f"(d[24]), "+f"(d[25]), "+f"(d[26]), "+f"(d[27]), "+f"(d[28]), "+f"(d[29]), "+f"(d[30]), "+f"(d[31]),
        "+f"(d[32]), "+f"(d[33]), "+f"(d[34]), "+f"(d[35]), "+f"(d[36]), "+f"(d[37]), "+f"(d[38]), "+f"(d[39]),
        "+f"(d[40]), "+f"(d[41]), "+f"(d[42]), "+f"(d[43]), "+f"(d[44]), "+f"(d[45]), "+f"(d[46]), "+f"(d[47]),
        "+f"(d[48]), "+f"(d[49]), "+f"(d[50]), "+f"(d[51]), "+f"(d[52]), "+f"(d[53]), "+f"(d[54]), "+f"(d[55]),
        "+f"(d[56]), "+f"(d[57]), "+f"(d[58]), "+f"(d[59]), "+f"(d[60]), "+f"(d[61]), "+f"(d[62]), "+f"(d[63])
      : "l"(a), "l"(b), "r"(1));
}

// Keeps the compiler from moving uses of the accumulators above the wait that completes them.
__device__ __forceinline__ void pin(float (&d)[64]) {
#pragma unroll
  for (int i = 0; i < 64; ++i) asm volatile("" : "+f"(d[i])::"memory");
}

__device__ __forceinline__ float4 ldg4(const float* p, bool ok) {
  return ok ? __ldg(reinterpret_cast<const float4*>(p)) : make_float4(0.f, 0.f, 0.f, 0.f);
}
__device__ __forceinline__ uint32_t pack(float lo, float hi) {
  __nv_bfloat162 v = __floats2bfloat162_rn(lo, hi);
  return *reinterpret_cast<uint32_t*>(&v);
}
template <int J>
__device__ __forceinline__ float comp(const float4& v) {
  return J == 0 ? v.x : J == 1 ? v.y : J == 2 ? v.z : v.w;
}

// One operand's 128 x 64 (rows x K) tile in registers on its way to shared memory: 8 float4 per thread.
// Element (r, k) of the operand is p[r * ld + k] when KC (K contiguous), else p[k * ld + r]. Rows >= rlim
// and k >= klim read as zero (both multiples of 4 on this path, so a float4 is wholly in or out).
template <bool KC>
struct Operand {
  float4 v[8];

  __device__ __forceinline__ void load(const float* __restrict__ p, int ld, int r0, int k0, int rlim, int klim) {
    if (KC) {
      // Chunk c = thread + 256 i: row c / 8, K 8 (c % 8) .. +7 (two float4).
#pragma unroll
      for (int i = 0; i < 4; ++i) {
        const int c = threadIdx.x + kThreads * i, r = r0 + (c >> 3), k = k0 + (c & 7) * 8;
        const float* src = p + static_cast<size_t>(r) * ld + k;
        v[2 * i] = ldg4(src, r < rlim && k < klim);
        v[2 * i + 1] = ldg4(src + 4, r < rlim && k + 4 < klim);
      }
    } else {
      // Thread: K rows 8 kg .. 8 kg + 7 of columns 4 mg .. 4 mg + 3; the 8 threads of a quarter-warp take
      // the 8 kg of one mg, so their shared-memory stores below fall in 8 different chunks (no conflict).
      const int lane = threadIdx.x & 31, kg = lane & 7, mg = (lane >> 3) + 4 * (threadIdx.x >> 5);
      const int r = r0 + 4 * mg;
#pragma unroll
      for (int e = 0; e < 8; ++e) {
        const int k = k0 + 8 * kg + e;
        v[e] = ldg4(p + static_cast<size_t>(k) * ld + r, r < rlim && k < klim);
      }
    }
  }

  // bf16, K-major, 128B-swizzled, into the 16 KB tile at `tile` (1024-byte aligned).
  __device__ __forceinline__ void store(uint8_t* tile) const {
    if (KC) {
#pragma unroll
      for (int i = 0; i < 4; ++i) {
        const int c = threadIdx.x + kThreads * i, row = c >> 3, chunk = c & 7;
        const float4 a = v[2 * i], b = v[2 * i + 1];
        const uint4 u = make_uint4(pack(a.x, a.y), pack(a.z, a.w), pack(b.x, b.y), pack(b.z, b.w));
        *reinterpret_cast<uint4*>(tile + row * 128 + ((chunk ^ (row & 7)) << 4)) = u;
      }
    } else {
      const int lane = threadIdx.x & 31, kg = lane & 7, mg = (lane >> 3) + 4 * (threadIdx.x >> 5);
      store_col<0>(tile, kg, 4 * mg);
      store_col<1>(tile, kg, 4 * mg + 1);
      store_col<2>(tile, kg, 4 * mg + 2);
      store_col<3>(tile, kg, 4 * mg + 3);
    }
  }

  template <int J>
  __device__ __forceinline__ void store_col(uint8_t* tile, int kg, int row) const {
    const uint4 u = make_uint4(pack(comp<J>(v[0]), comp<J>(v[1])), pack(comp<J>(v[2]), comp<J>(v[3])),
                               pack(comp<J>(v[4]), comp<J>(v[5])), pack(comp<J>(v[6]), comp<J>(v[7])));
    *reinterpret_cast<uint4*>(tile + row * 128 + ((kg ^ (row & 7)) << 4)) = u;
  }
};

// AK: A stored K-contiguous (not transposed); BK: B stored K-contiguous (transposed, N x K).
template <bool AK, bool BK>
__global__ void __launch_bounds__(kThreads, 1) gemm_wgmma_kernel(GemmArgs g) {
  extern __shared__ uint8_t smem_raw[];
  uint8_t* smem = reinterpret_cast<uint8_t*>((reinterpret_cast<uintptr_t>(smem_raw) + 1023) & ~uintptr_t{1023});
  const BlockRange br = block_range(g);
  const int m0 = blockIdx.y * kBM, n0 = blockIdx.x * kBN, wg = threadIdx.x >> 7;

  float acc[64];
#pragma unroll
  for (int i = 0; i < 64; ++i) acc[i] = 0.0f;

  Operand<AK> a;
  Operand<BK> b;
  const int ntiles = br.ke > br.kb ? (br.ke - br.kb + kBK - 1) / kBK : 0;
  auto load = [&](int kt) {
    const int k0 = br.kb + kt * kBK;
    a.load(br.A, g.lda, m0, k0, g.M, br.ke);
    b.load(br.B, g.ldb, n0, k0, g.N, br.ke);
  };
  auto store = [&](int stage) {
    a.store(smem + stage * kStageBytes);
    b.store(smem + stage * kStageBytes + kTileBytes);
    fence_async_shared();
  };
  if (ntiles > 0) {
    load(0);
    store(0);
  }
  __syncthreads();
  for (int kt = 0; kt < ntiles; ++kt) {
    const int s = kt & 1;
    if (kt + 1 < ntiles) load(kt + 1);  // in flight while the tensor cores work on stage s
    const uint32_t abase = smem_u32(smem + s * kStageBytes) + wg * 64 * 128;
    const uint32_t bbase = smem_u32(smem + s * kStageBytes + kTileBytes);
    wgmma_fence();
#pragma unroll
    for (int kk = 0; kk < kBK / 16; ++kk) wgmma_m64n128k16(acc, smem_desc(abase + kk * 32), smem_desc(bbase + kk * 32));
    wgmma_commit();
    // Stage s ^ 1 was last read by the products of iteration kt - 1, complete since its wait.
    if (kt + 1 < ntiles) store(s ^ 1);
    wgmma_wait0();
    pin(acc);
    __syncthreads();
  }

  // Accumulator layout of m64nNk16: warp w of the warpgroup holds rows 16 w + lane / 4 (+ 8 for elements
  // 2, 3 of each group of four), columns 8 j + 2 (lane % 4) (+ 1 for odd elements), j = element / 4.
  const int warp = (threadIdx.x >> 5) & 3, lane = threadIdx.x & 31;
  const int row = m0 + wg * 64 + warp * 16 + (lane >> 2), col = n0 + 2 * (lane & 3);
#pragma unroll
  for (int j = 0; j < 16; ++j)
#pragma unroll
    for (int e = 0; e < 4; ++e) {
      const int gr = row + (e >> 1) * 8, gc = col + 8 * j + (e & 1);
      if (gr < g.M && gc < g.N) epilogue_store(g, br.C, gr, gc, acc[4 * j + e]);
    }
}

template <bool AK, bool BK>
bool launch(dim3 grid, const GemmArgs& g) {
  auto kernel = gemm_wgmma_kernel<AK, BK>;
  static const cudaError_t opt = cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, kSmem);
  if (opt != cudaSuccess) {  // no sm_90a image for this device: matmul.cu falls back
    cudaGetLastError();
    return false;
  }
  kernel<<<grid, kThreads, kSmem, stream()>>>(g);
  RT_CU_LAUNCH("gemm_wgmma");
  return true;
}

}  // namespace

bool gemm_sm90(bool transA, bool transB, int bm, int bn, dim3 grid, const GemmArgs& g) {
  if (bm != kBM || bn != kBN) return false;
  if (!transA && !transB) return launch<true, false>(grid, g);
  if (!transA && transB) return launch<true, true>(grid, g);
  return launch<false, false>(grid, g);
}

}  // namespace rt::cuda
