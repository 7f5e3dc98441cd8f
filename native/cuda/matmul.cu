// Matrix products on the GPU: our own tensor-core GEMM (bf16 operands, float32 accumulation, through
// WMMA, so one source compiles for sm_80 and sm_90), a plain float32 GEMM for exact checks, and the
// Linear layer's forward and backward over them. Builds with -DRT_CUBLAS=ON hand most products to cuBLAS
// instead (gemm_cublas below).
//
// Operands stay float32 in device memory (the master copy); tiles are converted to bf16 on their way into
// shared memory, so no separate cast pass or bf16 copy of the weights exists. Each block loads its next
// tile into registers while the tensor cores work on the current one.
//
// Tiles: 128x128 (8 warps, 64x32 each) when the product has enough of them to fill the GPU twice over,
// else 64x64 (4 warps, 32x32 each). Products with few output tiles and a long reduction (the weight
// gradients dW = dy^T x, K = thousands of tokens) are split over K: each split writes its partial tile to a
// workspace and a second kernel sums the splits in order, adding into C. No atomics: the same inputs give
// the same bits. In bf16, linear_backward hands weight gradients over many rows (dW = dy^T x with rows >>
// in, out) to weight_grad.cu instead, which reads each operand once.
#include <cuda_bf16.h>
#include <mma.h>

#include <algorithm>
#include <cstdint>
#include <cstdlib>
#include <string>
#include <type_traits>

#include "core/env.h"
#include "cuda/common.cuh"
#include "cuda/gemm_args.cuh"
#include "cuda/twin.cuh"
#include "cuda/kernels.cuh"
#include "cuda/matmul_sm90.cuh"
#include "cuda/mma.cuh"
#include "cuda/profile.cuh"

#ifdef RT_CUBLAS
#include <cublas_v2.h>

#include <mutex>
#endif

namespace rt::cuda {
namespace {

using namespace nvcuda;
using namespace gemm_detail;

// A ROWS x COLS tile in the operand's stored orientation (contiguous along COLS), held in registers as
// float4 between the global load and the bf16 store to shared memory.
template <int ROWS, int COLS, int THREADS>
struct TileLoader {
  static_assert((ROWS * COLS) % (4 * THREADS) == 0, "tile must split into float4 per thread");
  static constexpr int V = ROWS * COLS / (4 * THREADS);
  static constexpr int C4 = COLS / 4;
  float4 r[V];

  __device__ __forceinline__ void load(const float* __restrict__ p, int ld, int r0, int c0, int rlim, int clim,
                                       bool vec) {
#pragma unroll
    for (int v = 0; v < V; ++v) {
      const int idx = threadIdx.x + v * THREADS;
      const int gr = r0 + idx / C4, gc = c0 + (idx % C4) * 4;
      float4 x = make_float4(0.0f, 0.0f, 0.0f, 0.0f);
      if (gr < rlim) {
        const float* src = p + static_cast<size_t>(gr) * ld + gc;
        if (vec) {
          // clim is a multiple of 4 on this path, so a float4 is either wholly inside or wholly out.
          if (gc < clim) x = __ldg(reinterpret_cast<const float4*>(src));
        } else {
          if (gc < clim) x.x = src[0];
          if (gc + 1 < clim) x.y = src[1];
          if (gc + 2 < clim) x.z = src[2];
          if (gc + 3 < clim) x.w = src[3];
        }
      }
      r[v] = x;
    }
  }

  __device__ __forceinline__ void store(__nv_bfloat16* s, int lds) const {
#pragma unroll
    for (int v = 0; v < V; ++v) {
      const int idx = threadIdx.x + v * THREADS;
      const int row = idx / C4, col = (idx % C4) * 4;
      store_bf16x4(s + row * lds + col, r[v]);
    }
  }
};

// Shared memory holds two stages of tiles: while the tensor cores read one, the next is being stored,
// so each step needs one barrier. No register cap (a 2-blocks-per-SM cap made the 8-warp tile spill).
template <int BM, int BN, int WM, int WN, bool TA, bool TB>
__global__ void __launch_bounds__(WM * WN * 32) gemm_bf16_kernel(GemmArgs g) {
  constexpr int BK = 32, PAD = 8, THREADS = WM * WN * 32;
  constexpr int WTM = BM / WM, WTN = BN / WN, FM = WTM / 16, FN = WTN / 16;
  // Shared tiles keep each operand's global orientation (so global loads stay coalesced); WMMA reads
  // them as row- or column-major fragments. Rows are padded by 16 bytes against bank conflicts.
  constexpr int AR = TA ? BK : BM, AC = TA ? BM : BK, LDA_S = AC + PAD;
  constexpr int BR = TB ? BN : BK, BC = TB ? BK : BN, LDB_S = BC + PAD;
  constexpr int A_BYTES = AR * LDA_S * 2, B_BYTES = BR * LDB_S * 2, STAGE = A_BYTES + B_BYTES;
  constexpr int LDST = 20;  // epilogue: each warp stages one 16x16 float fragment at a time
  constexpr int ST_BYTES = (THREADS / 32) * 16 * LDST * 4;
  constexpr int SMEM = 2 * STAGE > ST_BYTES ? 2 * STAGE : ST_BYTES;
  static_assert(A_BYTES % 32 == 0 && STAGE % 32 == 0, "tiles must stay 32-byte aligned for WMMA");
  __shared__ __align__(128) unsigned char smem[SMEM];
  const BlockRange br = block_range(g);
  const int m0 = blockIdx.y * BM, n0 = blockIdx.x * BN;
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const int wm = warp / WN, wn = warp % WN;

  using LayoutA = typename std::conditional<TA, wmma::col_major, wmma::row_major>::type;
  using LayoutB = typename std::conditional<TB, wmma::col_major, wmma::row_major>::type;
  wmma::fragment<wmma::accumulator, 16, 16, 16, float> acc[FM][FN];
#pragma unroll
  for (int i = 0; i < FM; ++i)
#pragma unroll
    for (int j = 0; j < FN; ++j) wmma::fill_fragment(acc[i][j], 0.0f);

  TileLoader<AR, AC, THREADS> la;
  TileLoader<BR, BC, THREADS> lb;
  auto load = [&](int k0) {
    if (TA) la.load(br.A, g.lda, k0, m0, br.ke, g.M, g.vecA);
    else la.load(br.A, g.lda, m0, k0, g.M, br.ke, g.vecA);
    if (TB) lb.load(br.B, g.ldb, n0, k0, g.N, br.ke, g.vecB);
    else lb.load(br.B, g.ldb, k0, n0, br.ke, g.N, g.vecB);
  };

  auto As = [&](int stage) { return reinterpret_cast<__nv_bfloat16*>(smem + stage * STAGE); };
  auto Bs = [&](int stage) { return reinterpret_cast<__nv_bfloat16*>(smem + stage * STAGE + A_BYTES); };
  if (br.kb < br.ke) {
    load(br.kb);
    la.store(As(0), LDA_S);
    lb.store(Bs(0), LDB_S);
  }
  __syncthreads();
  int stage = 0;
  for (int k0 = br.kb; k0 < br.ke; k0 += BK, stage ^= 1) {
    const bool more = k0 + BK < br.ke;
    if (more) load(k0 + BK);  // global loads in flight while the tensor cores run
    const __nv_bfloat16* a = As(stage);
    const __nv_bfloat16* b = Bs(stage);
#pragma unroll
    for (int kk = 0; kk < BK; kk += 16) {
      wmma::fragment<wmma::matrix_a, 16, 16, 16, __nv_bfloat16, LayoutA> fa[FM];
      wmma::fragment<wmma::matrix_b, 16, 16, 16, __nv_bfloat16, LayoutB> fb[FN];
#pragma unroll
      for (int i = 0; i < FM; ++i) {
        const int m = wm * WTM + i * 16;
        wmma::load_matrix_sync(fa[i], TA ? a + kk * LDA_S + m : a + m * LDA_S + kk, LDA_S);
      }
#pragma unroll
      for (int j = 0; j < FN; ++j) {
        const int n = wn * WTN + j * 16;
        wmma::load_matrix_sync(fb[j], TB ? b + n * LDB_S + kk : b + kk * LDB_S + n, LDB_S);
      }
#pragma unroll
      for (int i = 0; i < FM; ++i)
#pragma unroll
        for (int j = 0; j < FN; ++j) wmma::mma_sync(acc[i][j], fa[i], fb[j], acc[i][j]);
    }
    if (more) {  // the other stage was last read before the previous barrier
      la.store(As(stage ^ 1), LDA_S);
      lb.store(Bs(stage ^ 1), LDB_S);
    }
    __syncthreads();
  }

  // The loop ended on a barrier: the tiles' shared memory becomes the epilogue's staging area.
  float* st = reinterpret_cast<float*>(smem) + warp * 16 * LDST;
#pragma unroll
  for (int i = 0; i < FM; ++i)
#pragma unroll
    for (int j = 0; j < FN; ++j) {
      wmma::store_matrix_sync(st, acc[i][j], LDST, wmma::mem_row_major);
      __syncwarp();
      const int rb = m0 + wm * WTM + i * 16, cb = n0 + wn * WTN + j * 16;
#pragma unroll
      for (int e = lane; e < 256; e += 32) {
        const int r = e >> 4, c = e & 15;
        if (rb + r < g.M && cb + c < g.N) epilogue_store(g, br.C, rb + r, cb + c, st[r * LDST + c]);
      }
      __syncwarp();
    }
}

// ------------------------------------------------------------------------------------------------
// The default bf16 kernel: mma.sync.m16n8k16 (sm_80 and later) with the fragments built in registers.
// Tiles travel global -> shared memory as float32 through cp.async (no registers, no conversion pass),
// STAGES deep, so the copy of tile k+STAGES-1 overlaps the products of tile k. Each thread then reads its
// fragment elements from shared memory as float (pairs where they are adjacent) and packs them into bf16
// pairs (one cvt.rn.bf16x2 per pair) right before the mma. Shared rows are padded so that these reads are
// free of bank conflicts (stride = 8 mod 32 words for pair reads, 4 mod 32 for single reads).

template <int BM, int BN, int WM, int WN, int STAGES, bool TA, bool TB>
struct MmaTile {
  static constexpr int BK = 32, THREADS = WM * WN * 32;
  static constexpr int AR = TA ? BK : BM, AC = TA ? BM : BK, SA = TA ? BM + 4 : BK + 8;
  static constexpr int BR = TB ? BN : BK, BC = TB ? BK : BN, SB = TB ? BK + 8 : BN + 4;
  static constexpr int A_FLOATS = AR * SA, B_FLOATS = BR * SB, STAGE = A_FLOATS + B_FLOATS;
  static constexpr size_t SMEM = static_cast<size_t>(STAGES) * STAGE * sizeof(float);
};

// MINB: blocks per SM the register allocation must allow (more warps to hide latency, at the cost of
// registers; 1 leaves the compiler free).
template <int BM, int BN, int WM, int WN, int STAGES, int MINB, bool TA, bool TB>
__global__ void __launch_bounds__(WM * WN * 32, MINB) gemm_mma_kernel(GemmArgs g) {
  using T = MmaTile<BM, BN, WM, WN, STAGES, TA, TB>;
  constexpr int BK = T::BK, THREADS = T::THREADS, SA = T::SA, SB = T::SB;
  constexpr int WTM = BM / WM, WTN = BN / WN, MI = WTM / 16, NI = WTN / 8;
  extern __shared__ __align__(16) float smem[];
  const BlockRange br = block_range(g);
  const int m0 = blockIdx.y * BM, n0 = blockIdx.x * BN;
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const int wm = warp / WN, wn = warp % WN, gq = lane >> 2, tq = lane & 3;

  float acc[MI][NI][4];
#pragma unroll
  for (int i = 0; i < MI; ++i)
#pragma unroll
    for (int j = 0; j < NI; ++j)
#pragma unroll
      for (int e = 0; e < 4; ++e) acc[i][j][e] = 0.0f;

  const int ntiles = br.ke > br.kb ? (br.ke - br.kb + BK - 1) / BK : 0;
  auto issue = [&](int kt) {
    float* As = smem + (kt % STAGES) * T::STAGE;
    float* Bs = As + T::A_FLOATS;
    const int k0 = br.kb + kt * BK;
    if (TA) load_tile_async<T::AR, T::AC, SA, THREADS>(As, br.A, g.lda, k0, m0, br.ke, g.M, g.vecA);
    else load_tile_async<T::AR, T::AC, SA, THREADS>(As, br.A, g.lda, m0, k0, g.M, br.ke, g.vecA);
    if (TB) load_tile_async<T::BR, T::BC, SB, THREADS>(Bs, br.B, g.ldb, n0, k0, g.N, br.ke, g.vecB);
    else load_tile_async<T::BR, T::BC, SB, THREADS>(Bs, br.B, g.ldb, k0, n0, br.ke, g.N, g.vecB);
  };
#pragma unroll
  for (int st = 0; st < STAGES - 1; ++st) {
    if (st < ntiles) issue(st);
    cp_async_commit();  // empty groups too: the wait below counts groups
  }
  for (int kt = 0; kt < ntiles; ++kt) {
    cp_async_wait<STAGES - 2>();  // tile kt has landed (this thread's part) ...
    __syncthreads();              // ... everyone's, and everyone is done with tile kt-1's stage
    if (kt + STAGES - 1 < ntiles) issue(kt + STAGES - 1);
    cp_async_commit();
    const float* As = smem + (kt % STAGES) * T::STAGE;
    const float* Bs = As + T::A_FLOATS;
#pragma unroll
    for (int kk = 0; kk < BK; kk += 16) {
      uint32_t a[MI][4], b[NI][2];
      const int c = kk + 2 * tq;
#pragma unroll
      for (int i = 0; i < MI; ++i) {
        const int r = wm * WTM + i * 16 + gq;
        if (!TA) {
          const float2 x0 = *reinterpret_cast<const float2*>(As + r * SA + c);
          const float2 x1 = *reinterpret_cast<const float2*>(As + (r + 8) * SA + c);
          const float2 x2 = *reinterpret_cast<const float2*>(As + r * SA + c + 8);
          const float2 x3 = *reinterpret_cast<const float2*>(As + (r + 8) * SA + c + 8);
          a[i][0] = pack_bf16(x0.x, x0.y);
          a[i][1] = pack_bf16(x1.x, x1.y);
          a[i][2] = pack_bf16(x2.x, x2.y);
          a[i][3] = pack_bf16(x3.x, x3.y);
        } else {
          a[i][0] = pack_bf16(As[c * SA + r], As[(c + 1) * SA + r]);
          a[i][1] = pack_bf16(As[c * SA + r + 8], As[(c + 1) * SA + r + 8]);
          a[i][2] = pack_bf16(As[(c + 8) * SA + r], As[(c + 9) * SA + r]);
          a[i][3] = pack_bf16(As[(c + 8) * SA + r + 8], As[(c + 9) * SA + r + 8]);
        }
      }
#pragma unroll
      for (int j = 0; j < NI; ++j) {
        const int n = wn * WTN + j * 8 + gq;
        if (TB) {
          const float2 y0 = *reinterpret_cast<const float2*>(Bs + n * SB + c);
          const float2 y1 = *reinterpret_cast<const float2*>(Bs + n * SB + c + 8);
          b[j][0] = pack_bf16(y0.x, y0.y);
          b[j][1] = pack_bf16(y1.x, y1.y);
        } else {
          b[j][0] = pack_bf16(Bs[c * SB + n], Bs[(c + 1) * SB + n]);
          b[j][1] = pack_bf16(Bs[(c + 8) * SB + n], Bs[(c + 9) * SB + n]);
        }
      }
#pragma unroll
      for (int i = 0; i < MI; ++i)
#pragma unroll
        for (int j = 0; j < NI; ++j) mma_bf16(acc[i][j], a[i], b[j]);
    }
  }
  cp_async_wait<0>();

  // Each thread owns rows gq and gq + 8, columns 2tq and 2tq + 1 of every 16x8 accumulator tile.
#pragma unroll
  for (int i = 0; i < MI; ++i)
#pragma unroll
    for (int j = 0; j < NI; ++j) {
      const int r = m0 + wm * WTM + i * 16 + gq, cc = n0 + wn * WTN + j * 8 + 2 * tq;
#pragma unroll
      for (int e = 0; e < 4; ++e) {
        const int gr = r + (e >> 1) * 8, gc = cc + (e & 1);
        if (gr < g.M && gc < g.N) epilogue_store(g, br.C, gr, gc, acc[i][j][e]);
      }
    }
}

// Plain float32: 64x64 tiles, 16-deep, each of 256 threads owns a 4x4 block of outputs.
template <bool TA, bool TB>
__global__ void __launch_bounds__(256) gemm_f32_kernel(GemmArgs g) {
  constexpr int BM = 64, BN = 64, BK = 16;
  __shared__ __align__(16) float As[BK][BM + 4];
  __shared__ __align__(16) float Bs[BK][BN + 4];
  const BlockRange br = block_range(g);
  const int m0 = blockIdx.y * BM, n0 = blockIdx.x * BN;
  const int tid = threadIdx.x, tx = tid % 16, ty = tid / 16;
  float acc[4][4] = {};
  for (int k0 = br.kb; k0 < br.ke; k0 += BK) {
#pragma unroll
    for (int e = 0; e < 4; ++e) {
      const int idx = tid + e * 256;
      int m, k;
      if (TA) { k = idx / BM; m = idx % BM; } else { m = idx / BK; k = idx % BK; }
      const int gm = m0 + m, gk = k0 + k;
      float v = 0.0f;
      if (gm < g.M && gk < br.ke) v = TA ? br.A[static_cast<size_t>(gk) * g.lda + gm] : br.A[static_cast<size_t>(gm) * g.lda + gk];
      As[k][m] = v;
      int n;
      if (TB) { n = idx / BK; k = idx % BK; } else { k = idx / BN; n = idx % BN; }
      const int gn = n0 + n, gk2 = k0 + k;
      v = 0.0f;
      if (gn < g.N && gk2 < br.ke) v = TB ? br.B[static_cast<size_t>(gn) * g.ldb + gk2] : br.B[static_cast<size_t>(gk2) * g.ldb + gn];
      Bs[k][n] = v;
    }
    __syncthreads();
#pragma unroll
    for (int k = 0; k < BK; ++k) {
      const float4 a = *reinterpret_cast<const float4*>(&As[k][ty * 4]);
      const float4 b = *reinterpret_cast<const float4*>(&Bs[k][tx * 4]);
      const float av[4] = {a.x, a.y, a.z, a.w}, bv[4] = {b.x, b.y, b.z, b.w};
#pragma unroll
      for (int i = 0; i < 4; ++i)
#pragma unroll
        for (int j = 0; j < 4; ++j) acc[i][j] = fmaf(av[i], bv[j], acc[i][j]);
    }
    __syncthreads();
  }
#pragma unroll
  for (int i = 0; i < 4; ++i)
#pragma unroll
    for (int j = 0; j < 4; ++j) {
      const int gr = m0 + ty * 4 + i, gc = n0 + tx * 4 + j;
      if (gr < g.M && gc < g.N) epilogue_store(g, br.C, gr, gc, acc[i][j]);
    }
}

// C = alpha * (sum over splits of ws) (+ bias) (+ beta * C), splits summed in order.
__global__ void splitk_reduce_kernel(const float* __restrict__ ws, int splits, int M, int N, float alpha, float beta,
                                     const float* __restrict__ bias, const float* res, float* C, int ldc) {
  const size_t total = static_cast<size_t>(M) * N, stride = static_cast<size_t>(gridDim.x) * blockDim.x;
  for (size_t i = blockIdx.x * static_cast<size_t>(blockDim.x) + threadIdx.x; i < total; i += stride) {
    float s = 0.0f;
    for (int z = 0; z < splits; ++z) s += ws[z * total + i];
    const int r = static_cast<int>(i / N), c = static_cast<int>(i % N);
    float o = alpha * s;
    if (bias) o += bias[c];
    if (res) o += res[static_cast<size_t>(r) * ldc + c];
    float* cp = C + static_cast<size_t>(r) * ldc + c;
    if (beta != 0.0f) o += beta * *cp;
    *cp = o;
  }
}

// out[c] += sum over rows of x[r, c], rows in chunks (partials in a workspace, then summed in order).
constexpr int kColChunk = 256;
__global__ void colsum_partial_kernel(const float* __restrict__ x, int rows, int cols, float* __restrict__ part) {
  __shared__ float red[8][33];
  const int c = blockIdx.x * 32 + threadIdx.x, r0 = blockIdx.y * kColChunk;
  const int r1 = min(rows, r0 + kColChunk);
  float s = 0.0f;
  if (c < cols)
    for (int r = r0 + threadIdx.y; r < r1; r += 8) s += x[static_cast<size_t>(r) * cols + c];
  red[threadIdx.y][threadIdx.x] = s;
  __syncthreads();
  if (threadIdx.y == 0 && c < cols) {
    float t = 0.0f;
    for (int k = 0; k < 8; ++k) t += red[k][threadIdx.x];
    part[static_cast<size_t>(blockIdx.y) * cols + c] = t;
  }
}
__global__ void chunk_sums_kernel(const float* __restrict__ part, int chunks, int cols, float* out) {
  const int c = blockIdx.x * blockDim.x + threadIdx.x;
  if (c >= cols) return;
  float s = 0.0f;
  for (int k = 0; k < chunks; ++k) s += part[static_cast<size_t>(k) * cols + c];
  out[c] += s;
}

// Which kernel a product runs on (set_gemm_kernel: for benchmarks and checks).
GemmKernel g_kernel = GemmKernel::Auto;

template <int BM, int BN, int WM, int WN, int STAGES, int MINB, bool TA, bool TB>
void launch_mma(dim3 grid, const GemmArgs& g) {
  using T = MmaTile<BM, BN, WM, WN, STAGES, TA, TB>;
  constexpr auto kernel = gemm_mma_kernel<BM, BN, WM, WN, STAGES, MINB, TA, TB>;
  opt_in_smem<kernel>(static_cast<int>(T::SMEM));  // past 48 KB of dynamic shared memory
  kernel<<<grid, T::THREADS, T::SMEM, stream()>>>(g);
}

template <bool TA, bool TB>
void launch(bool bf16, GemmKernel k, dim3 grid, const GemmArgs& g, const char* what) {
  cudaStream_t s = stream();
  if (!bf16) gemm_f32_kernel<TA, TB><<<grid, 256, 0, s>>>(g);
  else if (k == GemmKernel::WmmaBig) gemm_bf16_kernel<128, 128, 2, 4, TA, TB><<<grid, 256, 0, s>>>(g);
  else if (k == GemmKernel::WmmaSmall) gemm_bf16_kernel<64, 64, 2, 2, TA, TB><<<grid, 128, 0, s>>>(g);
  else if (k == GemmKernel::MmaBig) launch_mma<128, 128, 2, 4, 3, 1, TA, TB>(grid, g);
  else if (k == GemmKernel::MmaBig2) launch_mma<128, 128, 2, 4, 2, 2, TA, TB>(grid, g);
  else if (k == GemmKernel::MmaSmall2) launch_mma<64, 64, 2, 2, 2, 4, TA, TB>(grid, g);
  else launch_mma<64, 64, 2, 2, 3, 1, TA, TB>(grid, g);
  RT_CU_LAUNCH(what);
}

#ifdef RT_CUBLAS
// Builds with -DRT_CUBLAS=ON (a toolkit with cuBLAS; not CI's) hand the products without a bias epilogue or
// two-level batch to cuBLAS: fp32 operands in memory either way, bf16 tensor cores with fp32 accumulation
// (CUBLAS_COMPUTE_32F_FAST_16BF) in bf16 mode, plain fp32 (no TF32) in fp32 mode. RT_CUBLAS=0 in the
// environment turns it off at run time (to compare the two in one build).
bool cublas_enabled() {
  static const bool on = rt::env_switch("RT_CUBLAS", true);
  return on;
}

void check_cublas(cublasStatus_t s, const char* what) {
  if (s != CUBLAS_STATUS_SUCCESS)
    throw Error(std::string("cuBLAS error in ") + what + ": " + cublasGetStatusString(s));
}

// Row-major C = op(A) op(B) is column-major C^T = op(B)^T op(A)^T: the operands swap, the flags stay.
void gemm_cublas(bool bf16, bool tA, bool tB, int M, int N, int K, float alpha, const float* A, int lda,
                 const float* B, int ldb, float beta, float* C, int ldc, const Batch* batch) {
  static std::mutex mu;  // one handle, used from the addon's worker threads one call at a time
  static cublasHandle_t handle = [] {
    cublasHandle_t h = nullptr;
    check_cublas(cublasCreate(&h), "cublasCreate");
    return h;
  }();
  std::lock_guard<std::mutex> lock(mu);
  check_cublas(cublasSetStream(handle, stream()), "cublasSetStream");
  const cublasOperation_t opB = tB ? CUBLAS_OP_T : CUBLAS_OP_N, opA = tA ? CUBLAS_OP_T : CUBLAS_OP_N;
  const cublasComputeType_t compute = bf16 ? CUBLAS_COMPUTE_32F_FAST_16BF : CUBLAS_COMPUTE_32F;
  if (!batch || batch->count == 1) {
    check_cublas(cublasGemmEx(handle, opB, opA, N, M, K, &alpha, B, CUDA_R_32F, ldb, A, CUDA_R_32F, lda, &beta, C,
                              CUDA_R_32F, ldc, compute, CUBLAS_GEMM_DEFAULT),
                 "cublasGemmEx");
  } else {
    check_cublas(cublasGemmStridedBatchedEx(handle, opB, opA, N, M, K, &alpha, B, CUDA_R_32F, ldb, batch->b.outer, A,
                                            CUDA_R_32F, lda, batch->a.outer, &beta, C, CUDA_R_32F, ldc, batch->c.outer,
                                            batch->count, compute, CUBLAS_GEMM_DEFAULT),
                 "cublasGemmStridedBatchedEx");
  }
}
#endif

}  // namespace

bool wgmma_half_wave() {
  static const bool on = rt::env_switch("RT_CUDA_WGMMA_HALF_WAVE", true);
  return on && wgmma_enabled();
}

void gemm(bool bf16, bool tA, bool tB, int M, int N, int K, float alpha, const float* A, int lda, const float* B,
          int ldb, float beta, float* C, int ldc, const float* bias, const Batch* batch, const float* res,
          const __nv_bfloat16* A_twin, bool C_half, const GemmAct* act) {
  if (M <= 0 || N <= 0) return;
  RT_CHECK(!C_half || (ldc == N && beta == 0.0f && !res && !batch),
           "cuda gemm: a bf16 C needs ldc == N, beta 0, no residual and no batch");
  RT_CHECK(!act || (C_half && (act->x || act->out)), "cuda gemm: an activation needs a bf16 C and its input or output");
  RT_CHECK(!act || !act->dgelu || act->gelu, "cuda gemm: dgelu (GELU's derivative kept) is for GELU only");
  RT_CHECK(!(tA && tB), "cuda gemm: transposing both operands is not supported");
  // A given as its bf16 twin alone (Twin::only): rows of K, as the Hopper kernel reads it; any other kernel
  // gets its float32 values back first (A_f32).
  RT_CHECK(A || (A_twin && !tA && lda == K && !batch), "cuda gemm: A is null without a bf16 twin of K-long rows");
  Scratch A_f32;
  auto float_A = [&](GemmArgs& g) {
    if (g.A) return;
    A_f32 = Scratch(static_cast<size_t>(M) * K * sizeof(float));
    to_f32(A_twin, A_f32.f32(), static_cast<size_t>(M) * K);
    g.A = A_f32.f32();
    g.vecA = K % 4 == 0;
  };
  const int count = batch ? batch->count : 1;
  if (count <= 0) return;
#ifdef RT_CUBLAS
  if (cublas_enabled() && A && !C_half && !bias && !res && g_kernel == GemmKernel::Auto && K > 0 && (!batch || batch->inner <= 1)) {
    gemm_cublas(bf16, tA, tB, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc, batch);
    return;
  }
#endif
  GemmArgs g{};
  g.M = M; g.N = N; g.K = std::max(K, 0);
  g.A = A; g.B = B; g.C = C;
  g.lda = lda; g.ldb = ldb; g.ldc = ldc;
  g.alpha = alpha; g.beta = beta; g.bias = bias;
  RT_CHECK(!res || !batch || batch->count == 1, "cuda gemm: a residual is supported for a single product only");
  RT_CHECK(!res || res != C || beta == 0.0f, "cuda gemm: res may alias C only when beta == 0");
  g.res = res;
  g.inner = batch ? std::max(batch->inner, 1) : 1;
  if (batch) {
    g.a_o = batch->a.outer; g.a_i = batch->a.inner;
    g.b_o = batch->b.outer; g.b_i = batch->b.inner;
    g.c_o = batch->c.outer; g.c_i = batch->c.inner;
  }
  auto strides4 = [](const Strides& s) { return s.outer % 4 == 0 && s.inner % 4 == 0; };
  g.vecA = aligned16(A) && lda % 4 == 0 && (tA ? M : K) % 4 == 0 && (!batch || strides4(batch->a));
  g.vecB = aligned16(B) && ldb % 4 == 0 && (tB ? K : N) % 4 == 0 && (!batch || strides4(batch->b));

  const int sms = limits().sms;
  auto tiles = [&](int bm, int bn) { return static_cast<long long>((M + bm - 1) / bm) * ((N + bn - 1) / bn); };
  // Split K when the output alone cannot fill the GPU and the reduction is long (weight gradients).
  auto split_for = [&](long long t) {
    if (count != 1 || t >= sms || g.K < 512) return 1;
    return static_cast<int>(std::min<long long>({(2LL * sms + t - 1) / t, g.K / 256, 32}));
  };
  // Measured on the H200 (bench/cuda/NOTES.md): 128x128 tiles with two stages and two blocks per SM are
  // fastest whenever they give at least one block per SM (splits included); else 64x64 tiles.
  GemmKernel k = g_kernel;
  // RT_CUDA_WGMMA_HALF_WAVE (wgmma_half_wave; default on, =0 turns it off; H100, 2026-12-05 session 23: char 7.64 ->
  // 7.44 ms a step): on the Hopper path, unsplit, from half a wave of 128 x 128 tiles up (reductions up to 2,048
  // long). The char config's first and last window applications (4,096 rows) have attn c_proj's forward and input
  // gradient at 96 such tiles, which took the 64 x 64 mma.sync kernel, 21 us each (57 TFLOP/s; session 20's ncu),
  // where a whole window's take ~6 on the TMA kernel; and their K = 1152 and 1536 products were split in three,
  // reduced by a pass of their own (11 us each) and cast to bf16 after.
  const long long t128 = tiles(128, 128);
  const bool half_wave = k == GemmKernel::Auto && bf16 && count == 1 && g.K > 0 && g.K <= 2048 && 2 * t128 >= sms &&
                         t128 < sms && limits().cc == 90 && wgmma_half_wave();
  if (k == GemmKernel::Auto || k == GemmKernel::Wmma) {
    const bool big = t128 * count * split_for(t128) >= sms || half_wave;
    if (k == GemmKernel::Auto) k = big ? GemmKernel::MmaBig2 : GemmKernel::MmaSmall;
    else k = big ? GemmKernel::WmmaBig : GemmKernel::WmmaSmall;
    if (k == GemmKernel::MmaBig2 && g_kernel == GemmKernel::Auto && wgmma_enabled()) k = GemmKernel::Wgmma;
  }
  if (k == GemmKernel::Wgmma && !(bf16 && count == 1 && limits().cc == 90)) k = GemmKernel::MmaBig2;
  const bool big = k == GemmKernel::MmaBig || k == GemmKernel::MmaBig2 || k == GemmKernel::WmmaBig ||
                   k == GemmKernel::Wgmma;
  const int bm = bf16 && big ? 128 : 64, bn = bm;
  int splits = half_wave ? 1 : split_for(tiles(bm, bn));
  if (splits > 1) {
    const int q = k == GemmKernel::Wgmma ? 64 : 32;  // whole K tiles of the kernel
    const int chunk = ((g.K + splits - 1) / splits + q - 1) / q * q;
    splits = (g.K + chunk - 1) / chunk;
    g.kchunk = chunk;
  }
  Scratch ws;
  if (splits > 1) {
    ws = Scratch(static_cast<size_t>(splits) * M * N * sizeof(float));
    g.ws = ws.f32();
  }
  dim3 grid((N + bn - 1) / bn, (M + bm - 1) / bm, splits > 1 ? splits : count);
  RT_CHECK(grid.y <= 65535 && grid.z <= 65535, "cuda gemm: problem too large for one launch (M = " +
                                                    std::to_string(M) + ", batch = " + std::to_string(count) + ")");
  // gemm_sm90 reads A_twin where its rows are whole multiples of 8 (Kp == K), else casts A itself.
  if (!A && !(k == GemmKernel::Wgmma && K % 8 == 0)) float_A(g);
  // A bf16 C from the Hopper kernel's epilogue (unsplit), else through a float32 scratch cast afterwards.
  Scratch C_f32;
  auto float_C = [&] {
    g.c_half = false;
    C_f32 = Scratch(static_cast<size_t>(M) * N * sizeof(float));
    g.C = C_f32.f32();
  };
  g.c_half = C_half && k == GemmKernel::Wgmma && splits == 1;
  if (C_half && !g.c_half) float_C();
  if (act && g.c_half) {
    if (act->x) g.act = act->dgelu ? kActMul : act->gelu ? kActGeluGradFast : kActReluGrad;
    else g.act = act->dgelu ? kActGeluBoth : act->gelu ? kActGeluFast : kActRelu;
    g.act_out = act->out;
    g.act_x = act->x;
  }
  bool act_applied = false;
  if (!(k == GemmKernel::Wgmma && gemm_sm90(tA, tB, grid, g, A_twin, &act_applied))) {
    float_A(g);
    if (g.c_half) float_C();  // no sm_90a image after all
    if (k == GemmKernel::Wgmma) k = GemmKernel::MmaBig2;  // same tiles, same split
    if (!tA && !tB) launch<false, false>(bf16, k, grid, g, "gemm_nn");
    else if (!tA && tB) launch<false, true>(bf16, k, grid, g, "gemm_nt");
    else launch<true, false>(bf16, k, grid, g, "gemm_tn");
  }
  if (splits > 1) {
    splitk_reduce_kernel<<<blocks_for(static_cast<size_t>(M) * N, 256), 256, 0, stream()>>>(
        g.ws, splits, M, N, alpha, beta, bias, res, g.C, ldc);
    RT_CU_LAUNCH("gemm splitk_reduce");
  }
  if (C_half && !g.c_half) to_bf16(g.C, reinterpret_cast<__nv_bfloat16*>(C), static_cast<size_t>(M) * N);
  // Where no epilogue applied the activation: activation.cu's pass over the bf16 C, for the same bits (the
  // backward's reads C from a copy, to write C).
  if (act && !act_applied) {
    const size_t n = static_cast<size_t>(M) * N;
    if (act->x) {
      Scratch dy(n * sizeof(__nv_bfloat16));
      RT_CU(cudaMemcpyAsync(dy.get(), C, n * sizeof(__nv_bfloat16), cudaMemcpyDeviceToDevice, stream()));
      const float* x = reinterpret_cast<const float*>(act->x);
      auto* out = reinterpret_cast<__nv_bfloat16*>(C);
      if (act->dgelu) mul_backward(x, dy.f32(), nullptr, n, out, true, true);
      else if (act->gelu) gelu_backward(x, dy.f32(), nullptr, n, out, true, true, true);
      else relu_backward(x, dy.f32(), nullptr, n, out, true, true);
    } else if (act->dgelu) {
      gelu_forward_dact(reinterpret_cast<__nv_bfloat16*>(C), act->out, n);
    } else if (act->gelu) {
      gelu_forward(C, nullptr, n, act->out, true, true);
    } else {
      relu_forward(C, nullptr, n, act->out, true);
    }
  }
}

void set_gemm_kernel(GemmKernel k) { g_kernel = k; }

void linear_forward(bool bf16, const float* x, const float* W, const float* b, float* y, int n, int in, int out,
                    const float* res, const __nv_bfloat16* x_twin, bool y_half) {
  gemm(bf16, false, true, n, out, in, 1.0f, x, in, W, in, 0.0f, y, out, b, nullptr, res, x_twin, y_half);
}

void linear_forward_act(bool bf16, const float* x, const float* W, const float* b, float* y, int n, int in, int out,
                        const __nv_bfloat16* x_twin, const GemmAct& act) {
  gemm(bf16, false, true, n, out, in, 1.0f, x, in, W, in, 0.0f, y, out, b, nullptr, nullptr, x_twin, true, &act);
}

void linear_backward_dx_act(bool bf16, const float* W, const float* dy, float* dx, int n, int in, int out,
                            const __nv_bfloat16* dy_twin, const __nv_bfloat16* x, bool gelu, bool dgelu) {
  const GemmAct act{nullptr, gelu, x, dgelu};
  gemm(bf16, false, false, n, in, out, 1.0f, dy, out, W, in, 0.0f, dx, in, nullptr, nullptr, nullptr, dy_twin, true, &act);
}

void linear_backward(bool bf16, const float* x, const float* W, const float* dy, float* dx, float* dW, float* db,
                     int n, int in, int out, const __nv_bfloat16* dy_twin, bool dx_half) {
  if (n <= 0) return;
  RT_CHECK(dy || (!dW && !db), "linear_backward: dW and db need dy's float32 values");
  if (dx) {
    RT_PROF("linear_backward/dx");
    gemm(bf16, false, false, n, in, out, 1.0f, dy, out, W, in, 0.0f, dx, in, nullptr, nullptr, nullptr, dy_twin, dx_half);
  }
  if (dW) {
    RT_PROF("linear_backward/dW");
    if (bf16 && weight_grad_preferred(n, in, out)) {
      linear_weight_grad(x, dy, dW, db, n, in, out);  // db from the same reads of dy
      return;
    }
    gemm(bf16, true, false, out, in, n, 1.0f, dy, out, x, in, 1.0f, dW, in);
  }
  if (db) {
    RT_PROF("linear_backward/db");
    const int chunks = (n + kColChunk - 1) / kColChunk;
    Scratch part(static_cast<size_t>(chunks) * out * sizeof(float));
    colsum_partial_kernel<<<dim3((out + 31) / 32, chunks), dim3(32, 8), 0, stream()>>>(dy, n, out, part.f32());
    RT_CU_LAUNCH("linear_backward colsum");
    add_chunk_sums(part.f32(), chunks, out, db);
  }
}

void add_chunk_sums(const float* part, int chunks, int count, float* dst) {
  if (count <= 0) return;
  chunk_sums_kernel<<<(count + 255) / 256, 256, 0, stream()>>>(part, chunks, count, dst);
  RT_CU_LAUNCH("add_chunk_sums");
}

}  // namespace rt::cuda
