// Weight gradients on Hopper's warpgroup tensor cores (sm_90a only; built for that target alone, see
// CMakeLists.txt): dW[out, in] += dy^T x and db[out] += column sums of dy over many rows, for the shapes
// whose sides are at least one 192-wide tile (the char config's d = 384 products; weight_grad.cu's
// mma.sync kernel keeps the copy config's d = 96 ones, which it covers with one tile).
//
// Why: weight_grad.cu's kernel feeds mma.sync through ldmatrix from a bf16 copy it makes of each stage in
// shared memory, and on the char config it is bound by those instructions (493 GFLOP in 2.1 ms, ~235
// TFLOP/s). wgmma reads both operands from shared memory as they arrive: dy's rows (out along memory) and
// x's rows (in along memory) are MN-major operands for dW = dy^T x, which the instruction transposes itself
// (imm-trans 1), so each stage goes global -> shared by the copy engine (or, RT_CUDA_DW_TMA=0, by cp.async) into
// the 128B-swizzled MN-major layout and nothing else touches it. float32 operands are first cast to bf16 (the same
// values the mma.sync kernel rounded to), and a float32 dy's column sums are taken from its float32 values in that
// pass.
//
// A block owns a 192 x 192 tile of dW (three warpgroups of 64 out rows, m64n192k16: 96 accumulators a
// thread) and a chunk of the rows; 48 KB a stage (64 rows of both operands), four stages, loads two steps
// ahead, one group of products left in flight: 96 FLOPs per byte of shared-memory fill. The grid is
// (tiles) x (chunks) for one wave; partial tiles go to a workspace that weight_grad.cu's reduction sums in a
// fixed order, so the same inputs give the same bits. A bf16 dy's column sums come from the staged tiles:
// the tiles_n blocks that share a row of tiles each sum every tiles_n-th row of a stage.
#include <cuda.h>
#include <cuda_bf16.h>

#include <algorithm>
#include <cstdint>

#include "core/env.h"
#include "cuda/cluster.cuh"
#include "cuda/common.cuh"
#include "cuda/gemm_args.cuh"
#include "cuda/matmul_tma_sm90.cuh"
#include "cuda/twin.cuh"
#include "cuda/weight_grad_sm90.cuh"
#include "cuda/wgmma.cuh"

namespace rt::cuda {
namespace {

using gemm_detail::cp_async16;
using gemm_detail::cp_async_commit;
using gemm_detail::cp_async_wait;

constexpr int kT = 192;                        // tile side (out and in)
constexpr int kK = 64;                         // rows a stage
constexpr int kThreads = 384;                  // three warpgroups
constexpr int kAtom = 64 * 128;                // 64 columns x 64 rows of 128 bytes: one swizzle column block
constexpr int kOpBytes = kT * kK * 2;          // one operand's stage (three blocks)
constexpr int kStageBytes = 2 * kOpBytes;      // dy then x
constexpr int kStages = 4, kAhead = kStages - 2;
constexpr int kBars = kStages * kStageBytes;  // then (TMA) the stages' barriers
constexpr int kSmem = kBars + 64 + 1024;
constexpr int kChunks16 = kT / 8;              // 16-byte copies along a stage row of one operand

struct Args {
  const __nv_bfloat16* x;   // [rows, N]
  const __nv_bfloat16* dy;  // [rows, M]
  float* ws;                // [chunks][M][N] partial tiles
  float* ws_db;             // [chunks][tiles_n][M] partial column sums of dy, or null
  int rows, M, N, rpc, tiles_n;
};

// Byte offset of element (row k, column c) of a stage's operand: column block c / 64, 128-byte row k, its
// 16-byte chunk (c % 64) / 8 swizzled by k % 8.
__device__ __forceinline__ int at(int k, int c) {
  return (c >> 6) * kAtom + k * 128 + ((((c & 63) >> 3) ^ (k & 7)) << 4) + (c & 7) * 2;
}

// TMA (RT_CUDA_DW_TMA=1): each stage's six 64 x 64 boxes (three of dy's columns, three of x's) by the copy engine
// from thread 0, on the stage's barrier, rather than by every thread's 16-byte cp.async copies and their address
// arithmetic. at()'s layout is the engine's 128B swizzle of such a box (row k at 128 k, chunk c ^ (k % 8)), and rows
// past the last arrive as zeros, as cp.async's do; a chunk's rows are whole stages but the last chunk's, so no stage
// reaches into the next chunk. The same bytes in the same places: the same bits.
template <bool TMA>
__global__ void __launch_bounds__(kThreads, 1)
    dw_wgmma_kernel(Args g, const __grid_constant__ CUtensorMap map_dy, const __grid_constant__ CUtensorMap map_x) {
  extern __shared__ uint8_t smem_raw[];
  uint8_t* smem = reinterpret_cast<uint8_t*>((reinterpret_cast<uintptr_t>(smem_raw) + 1023) & ~uintptr_t{1023});
  const int tm = blockIdx.x / g.tiles_n, tn = blockIdx.x % g.tiles_n, chunk = blockIdx.y;
  const int m0 = tm * kT, n0 = tn * kT;
  const int kb = chunk * g.rpc, ke = min(g.rows, kb + g.rpc);
  const int nt = (ke - kb + kK - 1) / kK;  // the host makes every chunk non-empty
  const int tid = threadIdx.x, wg = tid >> 7;

  uint64_t* full = reinterpret_cast<uint64_t*>(smem + kBars);
  if constexpr (TMA) {
    if (tid == 0) {
      for (int s = 0; s < kStages; ++s) cluster::bar_init(full + s, 1);
      cluster::bar_init_fence();
    }
    __syncthreads();
  }
  auto issue = [&](int kt) {
    uint8_t* st = smem + (kt % kStages) * kStageBytes;
    const int r0 = kb + kt * kK;
    if constexpr (TMA) {
      if (tid == 0) {
        uint64_t* bar = full + kt % kStages;
        cluster::bar_expect(bar, kStageBytes);
#pragma unroll
        for (int b = 0; b < kT / 64; ++b) {
          cluster::tma_load_2d(st + b * kAtom, &map_dy, m0 + 64 * b, r0, bar);
          cluster::tma_load_2d(st + kOpBytes + b * kAtom, &map_x, n0 + 64 * b, r0, bar);
        }
      }
    } else {
#pragma unroll
      for (int i = 0; i < kK * kChunks16 / kThreads; ++i) {
        const int c = tid + kThreads * i, row = c / kChunks16, col = (c % kChunks16) * 8, r = r0 + row;
        const int off = at(row, col);
        const bool okd = r < ke && m0 + col < g.M, okx = r < ke && n0 + col < g.N;
        cp_async16(st + off, okd ? g.dy + static_cast<size_t>(r) * g.M + m0 + col : g.dy, okd);
        cp_async16(st + kOpBytes + off, okx ? g.x + static_cast<size_t>(r) * g.N + n0 + col : g.x, okx);
      }
    }
  };

  // db: thread tid sums columns 2 cp, 2 cp + 1 of dy's tile over rows tn + tiles_n (rg + 4 j) of each stage.
  const bool sum_db = g.ws_db != nullptr;
  const int cp = tid % (kT / 2), rg = tid / (kT / 2);
  float2 dbs = make_float2(0.0f, 0.0f);

  float acc[96];
#pragma unroll
  for (int e = 0; e < 96; ++e) acc[e] = 0.0f;
#pragma unroll
  for (int s = 0; s < kAhead; ++s) {
    if (s < nt) issue(s);
    if constexpr (!TMA) cp_async_commit();  // empty groups too: the waits count groups
  }
  for (int kt = 0; kt < nt; ++kt) {
    if constexpr (TMA) cluster::bar_wait(full + kt % kStages, (kt / kStages) & 1);  // step kt's stage has landed
    else cp_async_wait<kAhead - 1>();  // this thread's part of step kt has landed
    wgmma::fence_async_shared();
    // Everyone's part has; and everyone is past step kt - 1's wait, so the products of step kt - 2 are done
    // in every warpgroup and its stage, (kt + kAhead) % kStages, can be refilled.
    __syncthreads();
    if (kt + kAhead < nt) issue(kt + kAhead);
    if constexpr (!TMA) cp_async_commit();
    uint8_t* st = smem + (kt % kStages) * kStageBytes;
    if (sum_db) {
      for (int k = tn + g.tiles_n * rg; k < kK; k += 4 * g.tiles_n) {
        const float2 v = __bfloat1622float2(*reinterpret_cast<const __nv_bfloat162*>(st + at(k, 2 * cp)));
        dbs.x += v.x;
        dbs.y += v.y;
      }
    }
    const uint32_t sa = wgmma::smem_addr(st) + wg * kAtom, sb = wgmma::smem_addr(st + kOpBytes);
    wgmma::fence();
#pragma unroll
    for (int kk = 0; kk < kK / 16; ++kk)
      wgmma::m64n192k16<true>(acc, wgmma::smem_desc(sa + kk * 2048, kAtom), wgmma::smem_desc(sb + kk * 2048, kAtom), 1);
    wgmma::commit();
    wgmma::wait1();  // step kt - 1's products are done; step kt's run on while the next step is set up
  }
  wgmma::wait0();
  wgmma::pin(acc);
  if constexpr (!TMA) cp_async_wait<0>();  // (the copy engine's stages were each waited for in the loop)

  if (sum_db) {
    __syncthreads();  // every stage read; the shared memory becomes the reduction's
    float* red = reinterpret_cast<float*>(smem);  // [4][kT]
    red[rg * kT + 2 * cp] = dbs.x;
    red[rg * kT + 2 * cp + 1] = dbs.y;
    __syncthreads();
    if (tid < kT && m0 + tid < g.M) {
      const float s = red[tid] + red[kT + tid] + red[2 * kT + tid] + red[3 * kT + tid];
      g.ws_db[(static_cast<size_t>(chunk) * g.tiles_n + tn) * g.M + m0 + tid] = s;
    }
  }

  // The partial tile. m64nNk16's layout: warp w of the warpgroup holds rows 16 w + lane / 4 (+ 8 for
  // elements 2, 3 of each group of four), columns 8 j + 2 (lane % 4) (+ 1 for odd elements), j = element / 4.
  float* W = g.ws + static_cast<size_t>(chunk) * g.M * g.N;
  const int warp = (tid >> 5) & 3, lane = tid & 31;
  const int row = m0 + wg * 64 + warp * 16 + (lane >> 2), col = n0 + 2 * (lane & 3);
#pragma unroll
  for (int j = 0; j < 24; ++j)
#pragma unroll
    for (int h = 0; h < 2; ++h) {
      const int r = row + 8 * h, c = col + 8 * j;
      if (r < g.M && c < g.N)
        *reinterpret_cast<float2*>(W + static_cast<size_t>(r) * g.N + c) =
            make_float2(acc[4 * j + 2 * h], acc[4 * j + 2 * h + 1]);
    }
}

// A float32 dy [rows, cols] (cols a multiple of 4) to bf16, and its column sums over each 256 rows into
// part[chunk][cols] from the float32 values (none when part is null): 32 x 8 threads, four columns a thread.
constexpr int kColRows = 256;
__global__ void cast_colsum_kernel(const float* __restrict__ src, int rows, int cols, __nv_bfloat16* dst,
                                   float* part) {
  __shared__ float4 red[8][32];
  const int c = (blockIdx.x * 32 + threadIdx.x) * 4, r0 = blockIdx.y * kColRows, r1 = min(rows, r0 + kColRows);
  float4 s = make_float4(0.0f, 0.0f, 0.0f, 0.0f);
  if (c < cols) {
    for (int r = r0 + threadIdx.y; r < r1; r += 8) {
      const size_t i = static_cast<size_t>(r) * cols + c;
      const float4 v = *reinterpret_cast<const float4*>(src + i);
      const __nv_bfloat162 lo = __floats2bfloat162_rn(v.x, v.y), hi = __floats2bfloat162_rn(v.z, v.w);
      uint2 u;
      u.x = *reinterpret_cast<const uint32_t*>(&lo);
      u.y = *reinterpret_cast<const uint32_t*>(&hi);
      *reinterpret_cast<uint2*>(dst + i) = u;
      s.x += v.x;
      s.y += v.y;
      s.z += v.z;
      s.w += v.w;
    }
  }
  if (!part) return;
  red[threadIdx.y][threadIdx.x] = s;
  __syncthreads();
  if (threadIdx.y == 0 && c < cols) {
    float4 t = make_float4(0.0f, 0.0f, 0.0f, 0.0f);
    for (int k = 0; k < 8; ++k) t.x += red[k][threadIdx.x].x, t.y += red[k][threadIdx.x].y,
                                t.z += red[k][threadIdx.x].z, t.w += red[k][threadIdx.x].w;
    *reinterpret_cast<float4*>(part + static_cast<size_t>(blockIdx.y) * cols + c) = t;
  }
}

// Whether an sm_90a image of the kernel loads here, with its shared memory raised; once per process.
bool usable() {
  static const bool ok = [] {
    if (limits().cc != 90) return false;
    if (cudaFuncSetAttribute(dw_wgmma_kernel<false>, cudaFuncAttributeMaxDynamicSharedMemorySize, kSmem) == cudaSuccess &&
        cudaFuncSetAttribute(dw_wgmma_kernel<true>, cudaFuncAttributeMaxDynamicSharedMemorySize, kSmem) == cudaSuccess)
      return true;
    cudaGetLastError();
    return false;
  }();
  return ok;
}

}  // namespace

bool& sm90_flag() {
  static bool on = rt::env_switch("RT_CUDA_DW_WGMMA", true);
  return on;
}
void set_weight_grad_sm90(bool on) { sm90_flag() = on; }

// RT_CUDA_DW_TMA (set_weight_grad_sm90_tma; default on, =0 turns it off): the stages by the copy engine
// (dw_wgmma_kernel's TMA) rather than by the 384 threads' eight 16-byte cp.async copies each a stage and their
// addresses, beside the products. H100, session 26 (bench/results/cuda-ab-2026-12-05-s26e.log): the kernel 228 -> 167
// us a call by ncu (0.91 -> 0.67 ms a char step), the char step 7.09 -> 6.87 ms (medians of three). The same bytes
// land in the same places, so the same bits (kernels_check compares the two, each with its switch set: passed on an
// H200 in session 27, where a char step took 6.24 ms with it and 6.38 without).
bool& tma_flag() {
  static bool on = rt::env_switch("RT_CUDA_DW_TMA", true);
  return on;
}
void set_weight_grad_sm90_tma(bool on) { tma_flag() = on; }
bool weight_grad_sm90_tma() { return tma_flag(); }
long g_dw_tma_launches = 0;
long weight_grad_sm90_tma_launches() { return g_dw_tma_launches; }

bool weight_grad_sm90_takes(const void* x, const void* dy, int n, int in, int out) {
  if (!sm90_flag() || n <= 0 || in < kT || out < kT || in % 8 != 0 || out % 8 != 0) return false;
  return aligned16(x) && aligned16(dy) && usable();
}

void weight_grad_sm90(const void* x, bool x_half, const void* dy, bool dy_half, float* dW, float* db, int n, int in,
                      int out) {
  const int tiles_m = (out + kT - 1) / kT, tiles_n = (in + kT - 1) / kT, tiles = tiles_m * tiles_n;
  const int want = std::max(1, limits().sms / tiles);
  int rpc = (n + want - 1) / want;
  rpc = (rpc + kK - 1) / kK * kK;
  const int chunks = (n + rpc - 1) / rpc;
  RT_CHECK(chunks <= 65535, "linear_weight_grad: too many rows for one launch");

  Scratch xs(x_half ? 0 : static_cast<size_t>(n) * in * 2), dys(dy_half ? 0 : static_cast<size_t>(n) * out * 2);
  if (!x_half) to_bf16(static_cast<const float*>(x), static_cast<__nv_bfloat16*>(xs.get()), static_cast<size_t>(n) * in);
  // db's partial sums: from the staged bf16 tiles (chunks x tiles_n of them), or from a float32 dy as it is cast.
  const int col_chunks = (n + kColRows - 1) / kColRows;
  const int db_chunks = !db ? 0 : dy_half ? chunks * tiles_n : col_chunks;
  const size_t mn = static_cast<size_t>(out) * in, ws_floats = static_cast<size_t>(chunks) * mn;
  const size_t db_off = (ws_floats + 3) / 4 * 4;
  Scratch ws((db_off + static_cast<size_t>(db_chunks) * out) * sizeof(float));
  float* ws_db = db ? ws.f32() + db_off : nullptr;
  if (!dy_half) {
    cast_colsum_kernel<<<dim3((out / 4 + 31) / 32, col_chunks), dim3(32, 8), 0, stream()>>>(
        static_cast<const float*>(dy), n, out, static_cast<__nv_bfloat16*>(dys.get()), ws_db);
    RT_CU_LAUNCH("weight_grad_sm90 cast");
  }
  Args g{};
  g.x = x_half ? static_cast<const __nv_bfloat16*>(x) : static_cast<const __nv_bfloat16*>(xs.get());
  g.dy = dy_half ? static_cast<const __nv_bfloat16*>(dy) : static_cast<const __nv_bfloat16*>(dys.get());
  g.ws = ws.f32();
  g.ws_db = dy_half ? ws_db : nullptr;
  g.rows = n;
  g.M = out;
  g.N = in;
  g.rpc = rpc;
  g.tiles_n = tiles_n;
  const dim3 grid(static_cast<unsigned>(tiles), chunks);
  CUtensorMap map_dy{}, map_x{};
  if (tma_flag() && tma_map_bf16(&map_dy, g.dy, n, out, kK, 64) && tma_map_bf16(&map_x, g.x, n, in, kK, 64)) {
    dw_wgmma_kernel<true><<<grid, kThreads, kSmem, stream()>>>(g, map_dy, map_x);
    ++g_dw_tma_launches;
  } else {
    dw_wgmma_kernel<false><<<grid, kThreads, kSmem, stream()>>>(g, map_dy, map_x);
  }
  RT_CU_LAUNCH("weight_grad_sm90");
  weight_grad_reduce(g.ws, mn, chunks, ws_db, out, db_chunks, dW, db);
}

}  // namespace rt::cuda
