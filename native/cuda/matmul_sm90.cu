// Matrix products on Hopper (sm_90a only; this file is built for that target alone, see CMakeLists.txt):
// the same GEMM as matmul.cu (GemmArgs: float32 operands in memory, NN / NT / TN, split-K, bias / residual
// / beta epilogue) on warpgroup tensor-core instructions (wgmma), which issue a 64x128x16 product per
// instruction from shared memory and run asynchronously, where mma.sync needs every fragment loaded into
// registers by the issuing warp.
//
// Why the operands are first copied to bf16: at 128x128 tiles a block reads 32 float32 FLOPs per byte, so
// ~5 TB/s of L2 bandwidth caps a float32-fed kernel near 170 TFLOP/s whatever its instructions (the first
// version here, converting in registers on the way to shared memory, ran 48-91 TFLOP/s: bench/cuda/NOTES.md).
// So each operand is first written as a bf16 copy, K-major (its rows along K, padded to a multiple of 8
// with zeros), transposing where it is stored MN-major; the product then reads half the bytes, every tile
// goes global -> shared by cp.async without touching registers, and one kernel serves NN, NT and TN.
//
// A block computes a 128x128 tile of C with two warpgroups (rows 0-63 and 64-127), K 64 at a time through
// three shared-memory stages; two blocks share an SM. Tiles are stored as wgmma's "128B swizzle" K-major
// layout: 128-byte rows (64 bf16 of K), 16-byte chunk c of row r at c ^ (r % 8).
#include <cuda_bf16.h>

#include <algorithm>
#include <cstdint>
#include <cstdlib>
#include <string>

#include "core/env.h"
#include "cuda/common.cuh"
#include "cuda/gemm_args.cuh"
#include "cuda/kernels.cuh"
#include "cuda/matmul_sm90.cuh"
#include "cuda/matmul_tma_sm90.cuh"
#include "cuda/store_tile_sm90.cuh"
#include "cuda/wgmma.cuh"

namespace rt::cuda {
namespace {

using namespace gemm_detail;
using namespace wgmma;

constexpr int kBM = 128, kBN = 128, kBK = 64, kThreads = 256, kStages = 3;
constexpr int kTileBytes = 128 * kBK * 2;               // one operand's stage: 128 rows of 128 bytes
constexpr int kStageBytes = 2 * kTileBytes;             // A then B
constexpr int kSmem = kStages * kStageBytes + 1024;     // and slack to align the base to 1024 bytes

// dst[r][k] (R rows of Kp, Kp = K rounded up to 8) = bf16 of element (r, k): src[r * ld + k] when KC, else
// src[k * ld + r]; zeros for k >= K. KC: a thread per 8 elements of a row. Else a 32x32 tile transposed
// through shared memory, so that reads and writes are both along memory.
struct CastJob {
  const float* src;
  int ld, R, K, Kp;
  __nv_bfloat16* dst;
};

__device__ __forceinline__ void cast_k_at(const CastJob& c, size_t i) {
  const int chunks = c.Kp / 8;
  if (i >= static_cast<size_t>(c.R) * chunks) return;
  const int r = static_cast<int>(i / chunks), k0 = static_cast<int>(i % chunks) * 8;
  const float* p = c.src + static_cast<size_t>(r) * c.ld;
  __align__(16) __nv_bfloat16 v[8];
#pragma unroll
  for (int e = 0; e < 8; ++e) v[e] = __float2bfloat16_rn(k0 + e < c.K ? p[k0 + e] : 0.0f);
  *reinterpret_cast<uint4*>(c.dst + static_cast<size_t>(r) * c.Kp + k0) = *reinterpret_cast<const uint4*>(v);
}

// The tile at (r0, k0) of a transposing cast (blockDim 32 x 8); t: the block's shared tile.
__device__ __forceinline__ void cast_t_at(const CastJob& c, int r0, int k0, float (&t)[32][33]) {
  if (r0 >= c.R || k0 >= c.Kp) return;  // (whole blocks: the barrier below is the block's)
  const int tx = threadIdx.x, ty = threadIdx.y;
#pragma unroll
  for (int j = 0; j < 32; j += 8) {
    const int k = k0 + ty + j, r = r0 + tx;
    t[ty + j][tx] = k < c.K && r < c.R ? c.src[static_cast<size_t>(k) * c.ld + r] : 0.0f;
  }
  __syncthreads();
#pragma unroll
  for (int j = 0; j < 32; j += 8) {
    const int r = r0 + ty + j, k = k0 + tx;
    if (r < c.R && k < c.Kp) c.dst[static_cast<size_t>(r) * c.Kp + k] = __float2bfloat16_rn(t[tx][ty + j]);
  }
}

__global__ void cast_k_kernel(CastJob c) { cast_k_at(c, static_cast<size_t>(blockIdx.x) * blockDim.x + threadIdx.x); }
__global__ void cast_t_kernel(CastJob c) {
  __shared__ float t[32][33];
  cast_t_at(c, blockIdx.x * 32, blockIdx.y * 32, t);
}

// One ROWS x 64 stage of an operand's K-major bf16 copy (rows of Kp) into the swizzled tile, 16 bytes per
// copy; rows >= rlim and K >= ke read as zeros (ke is K, whose tail to Kp is zeros, or a split boundary, a
// multiple of 64).
template <int ROWS>
__device__ __forceinline__ void issue_rows(uint8_t* tile, const __nv_bfloat16* __restrict__ p, int Kp, int r0, int k0,
                                           int rlim, int ke) {
  static_assert(ROWS * 8 % kThreads == 0, "whole 16-byte chunks per thread");
#pragma unroll
  for (int i = 0; i < ROWS * 8 / kThreads; ++i) {
    const int c = threadIdx.x + kThreads * i, row = c >> 3, chunk = c & 7, r = r0 + row, k = k0 + chunk * 8;
    const bool ok = r < rlim && k < ke;
    cp_async16(tile + row * 128 + ((chunk ^ (row & 7)) << 4), ok ? p + static_cast<size_t>(r) * Kp + k : p, ok);
  }
}

// The wide variant: 128 x 192 tiles, one block an SM, five stages with the loads three steps ahead and one
// group of products left in flight while the next is issued (wait 1, not 0); the accumulator starts at
// zero. For M = 8192 rows and N = 384 (most of the char config's products) a 128 x 128 tile made 192 tiles
// for 132 SMs (two blocks on some, one on others); 128 x 192 makes 128, one wave, and reads 77 FLOPs per
// byte from L2 instead of 64.
constexpr int kWN = 192, kWStages = 5, kWAhead = kWStages - 2;
constexpr int kWTileB = kWN * kBK * 2;                  // B's stage: 192 rows of 128 bytes
constexpr int kWStageBytes = kTileBytes + kWTileB;
constexpr int kWSmem = kWStages * kWStageBytes + 1024;

// Block b takes tiles b, b + gridDim.x, ... of its blockIdx.z (batch item or split); with fewer blocks than
// tiles it is persistent, and the cp.async pipeline runs on across tile boundaries, so the next tile's first
// K steps are in flight while this one's epilogue stores. The char config's products with K = 384 (6 K
// steps a tile): a fresh block per tile spent about as long waiting for its first tiles and storing its last
// as multiplying.
template <bool CH>
__global__ void __launch_bounds__(kThreads, 2)
    gemm_wgmma_kernel(GemmArgs g, const __nv_bfloat16* __restrict__ A, const __nv_bfloat16* __restrict__ B, int Kp,
                      int tiles_n, int tiles) {
  extern __shared__ uint8_t smem_raw[];
  uint8_t* smem = reinterpret_cast<uint8_t*>((reinterpret_cast<uintptr_t>(smem_raw) + 1023) & ~uintptr_t{1023});
  const BlockRange br = block_range(g);
  const int wg = threadIdx.x >> 7;

  const int ntiles = br.ke > br.kb ? (br.ke - br.kb + kBK - 1) / kBK : 0;
  const int mine = tiles > static_cast<int>(blockIdx.x) ? (tiles - 1 - blockIdx.x) / gridDim.x + 1 : 0;
  // Where the block's i-th tile starts (one division per tile, none per K step).
  struct Pos {
    int m0, n0;
  };
  auto tile_at = [&](int i) {
    const int t = blockIdx.x + i * gridDim.x;
    return Pos{(t / tiles_n) * kBM, (t % tiles_n) * kBN};
  };

  float acc[64];
#pragma unroll
  for (int e = 0; e < 64; ++e) acc[e] = 0.0f;  // (read only by an empty reduction's store)
  auto store = [&](Pos p) { store_tile<CH ? 1 : 0>(g, br.C, p.m0 + wg * 64, p.n0, acc); };

  if (ntiles == 0) {  // an empty reduction still writes its tiles (bias, beta * C)
    for (int i = 0; i < mine; ++i) store(tile_at(i));
    return;
  }
  const int steps = mine * ntiles;
  // The loads run kStages - 1 steps ahead of the products, over tile boundaries: (tile, K step) of each.
  int ld_i = 0, ld_kt = 0;
  Pos ld = tile_at(0);
  auto issue_next = [&](int s) {
    uint8_t* st = smem + (s % kStages) * kStageBytes;
    const int k0 = br.kb + ld_kt * kBK;
    issue_rows<kBM>(st, A, Kp, ld.m0, k0, g.M, br.ke);
    issue_rows<kBN>(st + kTileBytes, B, Kp, ld.n0, k0, g.N, br.ke);
    if (++ld_kt == ntiles) {
      ld_kt = 0;
      if (++ld_i < mine) ld = tile_at(ld_i);
    }
  };
#pragma unroll
  for (int st = 0; st < kStages - 1; ++st) {
    if (st < steps) issue_next(st);
    cp_async_commit();  // empty groups too: the wait below counts groups
  }
  int kt = 0, tile = 0;
  Pos cur = tile_at(0);
  for (int s = 0; s < steps; ++s) {
    cp_async_wait<kStages - 2>();  // this thread's part of step s has landed
    fence_async_shared();
    __syncthreads();  // everyone's part, and everyone is past the products of step s - 1
    if (s + kStages - 1 < steps) issue_next(s + kStages - 1);  // into the stage step s - 1 used
    cp_async_commit();
    const uint32_t sa = smem_addr(smem + (s % kStages) * kStageBytes);
    const uint32_t abase = sa + wg * 64 * 128, bbase = sa + kTileBytes;
    fence();
#pragma unroll
    for (int kk = 0; kk < kBK / 16; ++kk)
      m64n128k16(acc, smem_desc(abase + kk * 32), smem_desc(bbase + kk * 32), kt > 0 || kk > 0);
    commit();
    wait0();
    pin(acc);
    if (++kt == ntiles) {  // the next tile's loads are already in flight while this one stores
      store(cur);
      kt = 0;
      if (++tile < mine) cur = tile_at(tile);
    }
  }
  cp_async_wait<0>();
}

template <bool CH>
__global__ void __launch_bounds__(kThreads, 1)
    gemm_wgmma_wide_kernel(GemmArgs g, const __nv_bfloat16* __restrict__ A, const __nv_bfloat16* __restrict__ B,
                           int Kp, int tiles_n) {
  extern __shared__ uint8_t smem_raw[];
  uint8_t* smem = reinterpret_cast<uint8_t*>((reinterpret_cast<uintptr_t>(smem_raw) + 1023) & ~uintptr_t{1023});
  const BlockRange br = block_range(g);
  const int wg = threadIdx.x >> 7;
  const int ntiles = br.ke > br.kb ? (br.ke - br.kb + kBK - 1) / kBK : 0;
  // One tile a block (a persistent loop would put the epilogue's reads of the accumulators inside the loop,
  // and the compiler then waits for the tensor cores at every step).
  const int m0 = (blockIdx.x / tiles_n) * kBM, n0 = (blockIdx.x % tiles_n) * kWN;
  float acc[96];
#pragma unroll
  for (int e = 0; e < 96; ++e) acc[e] = 0.0f;
  auto issue = [&](int kt) {
    uint8_t* st = smem + (kt % kWStages) * kWStageBytes;
    const int k0 = br.kb + kt * kBK;
    issue_rows<kBM>(st, A, Kp, m0, k0, g.M, br.ke);
    issue_rows<kWN>(st + kTileBytes, B, Kp, n0, k0, g.N, br.ke);
  };
#pragma unroll
  for (int st = 0; st < kWAhead; ++st) {
    if (st < ntiles) issue(st);
    cp_async_commit();
  }
  for (int kt = 0; kt < ntiles; ++kt) {
    cp_async_wait<kWAhead - 1>();  // this thread's part of step kt has landed
    fence_async_shared();
    // Everyone's part has; and everyone is past step kt - 1's wait, so the products of step kt - 2 are done
    // in both warpgroups and its stage, (kt + kWAhead) % kWStages, can be refilled.
    __syncthreads();
    if (kt + kWAhead < ntiles) issue(kt + kWAhead);
    cp_async_commit();
    const uint32_t sa = smem_addr(smem + (kt % kWStages) * kWStageBytes);
    const uint32_t abase = sa + wg * 64 * 128, bbase = sa + kTileBytes;
    fence();
#pragma unroll
    for (int kk = 0; kk < kBK / 16; ++kk)
      m64n192k16(acc, smem_desc(abase + kk * 32), smem_desc(bbase + kk * 32), 1);
    commit();
    wait1();  // step kt - 1's products are done; step kt's run on while the next step is set up
  }
  wait0();
  pin(acc);
  cp_async_wait<0>();
  store_tile<CH ? 1 : 0>(g, br.C, m0 + wg * 64, n0, acc);
}

// The bf16 K-major copy of an operand with R rows (M or N) over K: stored K-contiguous (kc) or not.
void cast(const CastJob& c, bool kc) {
  if (kc) {
    const size_t n = static_cast<size_t>(c.R) * (c.Kp / 8);
    cast_k_kernel<<<static_cast<unsigned>((n + 255) / 256), 256, 0, stream()>>>(c);
  } else {
    cast_t_kernel<<<dim3((c.R + 31) / 32, (c.Kp + 31) / 32), dim3(32, 8), 0, stream()>>>(c);
  }
  RT_CU_LAUNCH("gemm_wgmma cast");
}
void cast(const float* src, int ld, bool kc, int R, int K, int Kp, __nv_bfloat16* dst) {
  cast(CastJob{src, ld, R, K, Kp, dst}, kc);
}

// Whether this device can run the kernel (an sm_90a image loads), with its shared-memory limit raised;
// once per process.
bool usable() {
  static const bool ok = [] {
    if (cudaFuncSetAttribute(gemm_wgmma_kernel<false>, cudaFuncAttributeMaxDynamicSharedMemorySize, kSmem) ==
            cudaSuccess &&
        cudaFuncSetAttribute(gemm_wgmma_kernel<true>, cudaFuncAttributeMaxDynamicSharedMemorySize, kSmem) ==
            cudaSuccess)
      return true;
    cudaGetLastError();
    return false;
  }();
  return ok;
}

// The wide variant where the device gives a block its shared memory; RT_CUDA_WGMMA_WIDE=0 keeps the
// 128 x 128 kernel for every product (to compare the two in one build).
bool wide_usable() {
  static const bool ok = [] {
    if (!rt::env_switch("RT_CUDA_WGMMA_WIDE", true)) return false;
    if (cudaFuncSetAttribute(gemm_wgmma_wide_kernel<false>, cudaFuncAttributeMaxDynamicSharedMemorySize, kWSmem) ==
            cudaSuccess &&
        cudaFuncSetAttribute(gemm_wgmma_wide_kernel<true>, cudaFuncAttributeMaxDynamicSharedMemorySize, kWSmem) ==
            cudaSuccess)
      return true;
    cudaGetLastError();
    return false;
  }();
  return ok;
}

// A layer pass's bf16 copies of its weights (weight_copies_make), each in the layout cast() gives it as
// a product's B operand; gemm_sm90 takes one only for the same pointer, layout, shape and stride.
struct WeightCopy {
  const float* W;
  bool kc;
  int R, K, ld;
  const __nv_bfloat16* bf;
};
constexpr int kMaxCopies = 8;
thread_local WeightCopy t_copies[kMaxCopies];
thread_local int t_copy_count = 0;

const __nv_bfloat16* find_copy(const float* W, bool kc, int R, int K, int ld) {
  for (int i = 0; i < t_copy_count; ++i) {
    const WeightCopy& c = t_copies[i];
    if (c.W == W && c.kc == kc && c.R == R && c.K == K && c.ld == ld) return c.bf;
  }
  return nullptr;
}

// A weight W [out, in] as the B operand: forward y = x W^T (transposed: out rows over K = in, as stored),
// backward dx = dy W (in rows over K = out).
void copy_shape(bool backward, int out, int in, int* R, int* K) {
  *R = backward ? in : out;
  *K = backward ? out : in;
}

}  // namespace

bool gemm_sm90(bool transA, bool transB, dim3 grid, const GemmArgs& g, const __nv_bfloat16* A_twin,
               bool* act_applied) {
  *act_applied = false;
  if (!usable()) return false;  // no sm_90a image loads on this device: matmul.cu falls back
  const int Kp = (g.K + 7) / 8 * 8;
  const bool twin = A_twin && !transA && g.lda == g.K && Kp == g.K;
  const __nv_bfloat16* Bc = t_copy_count ? find_copy(g.B, transB, g.N, g.K, g.ldb) : nullptr;
  Scratch a(twin ? 0 : static_cast<size_t>(g.M) * Kp * 2), b(Bc ? 0 : static_cast<size_t>(g.N) * Kp * 2);
  const __nv_bfloat16* A = twin ? A_twin : static_cast<const __nv_bfloat16*>(a.get());
  const __nv_bfloat16* B = Bc ? Bc : static_cast<const __nv_bfloat16*>(b.get());
  if (!twin) cast(g.A, g.lda, !transA, g.M, g.K, Kp, static_cast<__nv_bfloat16*>(a.get()));
  if (!Bc) cast(g.B, g.ldb, transB, g.N, g.K, Kp, static_cast<__nv_bfloat16*>(b.get()));
  if (aligned16(A) && aligned16(B) && gemm_tma(g, A, B, Kp, static_cast<int>(grid.z), act_applied)) return true;
  // The wide kernel where it measured faster (bench/results/cuda-kernels-2026-12-04b.log): N up to two of
  // its tiles with a long reduction (char mlp c_proj forward and c_fc dx: N 384, K 1536: 141 -> 179 and
  // 140 -> 180 TFLOP/s); wider products with K = 384 ran slower on it (c_fc forward 164 -> 146), and so did
  // a train step with it everywhere (char 15.9 -> 16.9 ms).
  if (grid.z == 1 && g.N > kWN && g.N <= 2 * kWN && g.K > 512 && wide_usable()) {
    const int tn = (g.N + kWN - 1) / kWN;
    (g.c_half ? gemm_wgmma_wide_kernel<true> : gemm_wgmma_wide_kernel<false>)<<<tn * grid.y, kThreads, kWSmem,
                                                                                stream()>>>(g, A, B, Kp, tn);
    RT_CU_LAUNCH("gemm_wgmma (wide)");
    return true;
  }
  // Short reductions (K <= 512: the char config's K = 384 products, 6 K steps a tile) run persistent, two
  // blocks an SM taking the tiles in turn: measured 20-25% faster there, but 10-20% slower on long ones
  // (K = 1536, 4096), which keep a block per tile and the hardware's dynamic placement of blocks.
  const int tiles = static_cast<int>(grid.x * grid.y);
  const int slots = g.K <= 512 ? std::max(1, 2 * limits().sms / static_cast<int>(grid.z)) : tiles;
  const dim3 pgrid(static_cast<unsigned>(std::min(tiles, slots)), 1, grid.z);
  (g.c_half ? gemm_wgmma_kernel<true> : gemm_wgmma_kernel<false>)<<<pgrid, kThreads, kSmem, stream()>>>(
      g, A, B, Kp, static_cast<int>(grid.x), tiles);
  RT_CU_LAUNCH("gemm_wgmma");
  return true;
}

bool wgmma_enabled() {
  static const bool on = rt::env_switch("RT_CUDA_WGMMA", true);
  return on;
}

bool weight_copies_wanted() {
  static const bool on = rt::env_switch("RT_CUDA_WCOPY", true);
  return on && wgmma_enabled() && limits().cc == 90 && usable();
}

size_t weight_copies_floats(const int* out, const int* in, int count) {
  size_t bytes = 0;
  for (int i = 0; i < count; ++i) {
    size_t most = 0;
    for (bool backward : {false, true}) {
      int R, K;
      copy_shape(backward, out[i], in[i], &R, &K);
      most = std::max(most, static_cast<size_t>(R) * ((K + 7) / 8 * 8) * 2);
    }
    bytes += most;
  }
  return (bytes + 3) / 4;
}

void weight_copies_make(const float* const* W, const int* out, const int* in, int count, bool backward, float* dst) {
  RT_CHECK(count <= kMaxCopies, "weight_copies_make: at most " + std::to_string(kMaxCopies) + " matrices");
  t_copy_count = 0;
  auto* at = reinterpret_cast<__nv_bfloat16*>(dst);
  CastJob jobs[kMaxCopies];
  for (int i = 0; i < count; ++i) {
    int R, K;
    copy_shape(backward, out[i], in[i], &R, &K);
    const int Kp = (K + 7) / 8 * 8;
    // The layouts gemm_sm90 casts a weight to: K-contiguous (kc) as stored for the forward, transposed
    // for the backward. Each copy starts 16-byte aligned (R * Kp * 2 bytes is a multiple of 16).
    jobs[i] = {W[i], in[i], R, K, Kp, at};
    t_copies[t_copy_count++] = {W[i], !backward, R, K, in[i], at};
    at += static_cast<size_t>(R) * Kp;
  }
  // A launch a copy. (All of them in one launch, RT_CUDA_CAST_BATCH, was right on the H100 in session 23 but no
  // faster, char 7.45 ms without and 7.44 with; taken out in session 30.)
  for (int i = 0; i < count; ++i) cast(jobs[i], !backward);
}

void weight_copies_clear() noexcept { t_copy_count = 0; }

}  // namespace rt::cuda
