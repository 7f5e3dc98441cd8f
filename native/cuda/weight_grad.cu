// Weight gradients over many rows: dW[out, in] += dy^T x and db[out] += column sums of dy, with x [rows, in]
// and dy [rows, out] float32 in device memory (layer/block.cc's block_weight_grads: every window's rows of a
// layer at once, ~528k rows of d = 96 for the copy config, ~139k of d = 384 for char).
//
// Why a kernel of its own: these products do little arithmetic per byte. The copy config's four products
// read 3.45 GB of float32 operands per step for 117 GFLOP, ~36 FLOP per byte: at 4.3 TB/s of HBM the reads
// alone take ~0.8 ms, while the tensor cores need a fraction of that. So the floor is reading every operand
// byte once from HBM, and the work is keeping L2 -> SM traffic close to that: the general GEMM (128x128
// output tiles split over K) reads each row of x once per 128 output rows and each row of dy once per 128
// output columns (1.8 TB/s effective on the copy config), and its Hopper path first writes transposed bf16
// copies of both operands (4 bytes read + 2 written + 2 read again per element).
//
// Here a block owns an output tile as large as its registers hold (up to 384 x 96 or 192 x 192, 48 x 48 per
// warp) and a chunk of the rows. For the copy config one tile covers the whole dW, so x and dy each cross
// from L2 to an SM once. Rows stream global -> shared memory as float32 through cp.async, STAGES deep (~96
// KB in flight per SM: 4.3 TB/s x ~1.5 us of loaded latency / 132 SMs is ~50 KB), 16 rows per stage; each
// stage is converted to bf16 in shared memory once, in the same pass that sums db's columns from the float32
// values, and the tensor cores (mma.sync m16n8k16, fp32 accumulation) read it through ldmatrix.trans, which
// gives the row-pairs the fragments need from row-major data. The grid is (output tiles) x (row chunks),
// enough chunks for one wave; each block writes its partial tile (and db's partial sums) to a workspace and
// a second kernel sums the chunks in a fixed order into dW and db. No floating atomics: the same inputs
// give the same bits on the same device.
//
// RT_CUDA_DW=0 in the environment (read once) sends every product back to matmul.cu's GEMM.
#include <cuda_bf16.h>

#include <algorithm>
#include <array>
#include <cstdint>
#include <cstdlib>
#include <limits>
#include <string>

#include "core/env.h"
#include "cuda/common.cuh"
#include "cuda/gemm_args.cuh"
#include "cuda/kernels.cuh"
#include "cuda/mma.cuh"
#include "cuda/weight_grad_sm90.cuh"

namespace rt::cuda {
namespace {

using gemm_detail::cp_async16;
using gemm_detail::load_tile_async;
using gemm_detail::cp_async_commit;
using gemm_detail::cp_async_wait;

constexpr int kBK = 16;                      // rows per stage: one mma k-step
constexpr int kWarpTile = 48;                // each warp: 48 x 48 outputs (3 m16 x 6 n8 tiles, 72 accumulators)
constexpr size_t kInFlight = 96 * 1024;      // bytes of loads in flight per SM (see above)
constexpr size_t kSmemPerSM = 220 * 1024;    // what the blocks of one SM may take (H100/H200: 227 KB per block)

// WM x WN warps of 48 x 48: a BM x BN tile of dW (BM along out, BN along in). MINB blocks per SM. TY, TX:
// the element types of dy and x in memory (float, or __nv_bfloat16 for the layer's bf16 buffers:
// Backend::block_half), staged as they are and converted together.
template <int WM, int WN, int MINB, class TY = float, class TX = float>
struct WgTile {
  static constexpr int BM = WM * kWarpTile, BN = WN * kWarpTile, THREADS = WM * WN * 32;
  // bf16 rows padded by 8 elements: a stride of 16 * (6k + 1) bytes puts the 8 rows one ldmatrix reads in
  // 8 different 16-byte bank groups.
  static constexpr int SD = BM + 8, SX = BN + 8;
  static constexpr size_t DY_BYTES = kBK * BM * sizeof(TY);                 // dy [kBK][BM] as in memory
  static constexpr size_t STAGE_BYTES = DY_BYTES + kBK * BN * sizeof(TX);  // then x [kBK][BN]
  static constexpr int B16_BUF = kBK * (SD + SX);    // bf16 elements: dy [kBK][SD], then x [kBK][SX]
  static constexpr size_t B16_BYTES = 2 * B16_BUF * sizeof(__nv_bfloat16);  // two buffers
  static constexpr size_t want = 1 + (kInFlight + MINB * STAGE_BYTES - 1) / (MINB * STAGE_BYTES);
  static constexpr int STAGES = static_cast<int>(want < 3 ? 3 : want);
  static constexpr size_t SMEM = STAGES * STAGE_BYTES + B16_BYTES;
  // db's column sums: dy's columns in float4 groups, C4 of them, each summed by P threads over its rows.
  static constexpr int C4 = BM / 4, P = THREADS / C4 < kBK ? THREADS / C4 : kBK;
  static_assert(P >= 1, "a tile's dy columns must not outnumber its threads four to one");
  static_assert(P * BM * sizeof(float) <= STAGES * STAGE_BYTES, "db's reduction reuses the stages' shared memory");
  static_assert(SMEM * MINB <= kSmemPerSM, "stages do not fit the SM's shared memory");
};

struct WgArgs {
  const void* x;    // [rows, N], of WgTile's TX
  const void* dy;   // [rows, M], of its TY
  float* ws;        // [chunks][M][N] partial tiles
  float* ws_db;     // [chunks][M] partial column sums, or null
  int rows, M, N;   // M = out, N = in
  int rpc;          // rows per chunk (a multiple of kBK)
  int tiles_n;      // output tiles along N
  bool vec;         // 16-byte loads: M, N whole 16-byte copies and both operands 16-byte aligned
};

// Four consecutive elements as float (bf16 to float is exact).
__device__ __forceinline__ float4 load4(const float* p) { return *reinterpret_cast<const float4*>(p); }
__device__ __forceinline__ float4 load4(const __nv_bfloat16* p) {
  const uint2 u = *reinterpret_cast<const uint2*>(p);
  const float2 a = __bfloat1622float2(*reinterpret_cast<const __nv_bfloat162*>(&u.x));
  const float2 b = __bfloat1622float2(*reinterpret_cast<const __nv_bfloat162*>(&u.y));
  return make_float4(a.x, a.y, b.x, b.y);
}

__device__ __forceinline__ void ldsm_x4_trans(uint32_t (&r)[4], const __nv_bfloat16* p) {
  const unsigned s = static_cast<unsigned>(__cvta_generic_to_shared(p));
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0,%1,%2,%3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(s)
               : "memory");
}

template <int WM, int WN, int MINB, class TY, class TX>
__global__ void __launch_bounds__(WM * WN * 32, MINB) weight_grad_kernel(WgArgs g) {
  using T = WgTile<WM, WN, MINB, TY, TX>;
  constexpr int BM = T::BM, BN = T::BN, THREADS = T::THREADS, S = T::STAGES, SD = T::SD, SX = T::SX;
  constexpr int MI = kWarpTile / 16, NJ = kWarpTile / 16;  // m16 tiles, n16 pairs of n8 tiles per warp
  constexpr int C4 = T::C4, P = T::P, RP = (kBK + P - 1) / P;
  extern __shared__ __align__(16) unsigned char smem[];
  float* f32 = reinterpret_cast<float*>(smem);  // db's reduction, once the stages are done
  __nv_bfloat16* b16 = reinterpret_cast<__nv_bfloat16*>(smem + S * T::STAGE_BYTES);

  const int tm = blockIdx.x / g.tiles_n, tn = blockIdx.x % g.tiles_n, chunk = blockIdx.y;
  const int m0 = tm * BM, n0 = tn * BN;
  const int kb = chunk * g.rpc, ke = min(g.rows, kb + g.rpc);
  const int nt = (ke - kb + kBK - 1) / kBK;  // the host makes every chunk non-empty
  const int tid = threadIdx.x, warp = tid / 32, lane = tid % 32, wm = warp / WN, wn = warp % WN;

  auto stage_dy = [&](int s) { return reinterpret_cast<TY*>(smem + (s % S) * T::STAGE_BYTES); };
  auto stage_x = [&](int s) { return reinterpret_cast<TX*>(smem + (s % S) * T::STAGE_BYTES + T::DY_BYTES); };
  auto issue = [&](int s) {  // rows kb + s * kBK .. into slot s % S
    const int r0 = kb + s * kBK;
    load_tile_async<kBK, BM, BM, THREADS>(stage_dy(s), static_cast<const TY*>(g.dy), g.M, r0, m0, ke, g.M, g.vec);
    load_tile_async<kBK, BN, BN, THREADS>(stage_x(s), static_cast<const TX*>(g.x), g.N, r0, n0, ke, g.N, g.vec);
  };

  // Conversion: thread tid owns dy's columns 4 dc .. 4 dc + 3 (rows dp, dp + P, ..) for the whole chunk, so
  // db's sums come from the values it converts anyway; x is spread over all threads. (A bf16 operand is
  // converted to float and back: the same bf16, padded for ldmatrix.)
  const int dc = tid % C4, dp = tid / C4;
  float4 dbs = make_float4(0.0f, 0.0f, 0.0f, 0.0f);
  auto convert = [&](int s) {
    const TY* Df = stage_dy(s);
    const TX* Xf = stage_x(s);
    __nv_bfloat16* Db = b16 + (s & 1) * T::B16_BUF;
    __nv_bfloat16* Xb = Db + kBK * SD;
    if (dp < P) {
#pragma unroll
      for (int j = 0; j < RP; ++j) {
        const int r = dp + j * P;
        if (r < kBK) {
          const float4 v = load4(Df + r * BM + 4 * dc);
          dbs.x += v.x;
          dbs.y += v.y;
          dbs.z += v.z;
          dbs.w += v.w;
          store_bf16x4(Db + r * SD + 4 * dc, v);
        }
      }
    }
    constexpr int X4 = BN / 4, XT = kBK * X4, XV = (XT + THREADS - 1) / THREADS;
#pragma unroll
    for (int v = 0; v < XV; ++v) {
      const int idx = tid + v * THREADS;
      if (XT % THREADS != 0 && idx >= XT) break;
      const int r = idx / X4, c = (idx % X4) * 4;
      store_bf16x4(Xb + r * SX + c, load4(Xf + r * BN + c));
    }
  };

  // ldmatrix.x4.trans, lane l addressing row l % 8 of matrix l / 8. A = dy^T (m16 x k16) from Db[k][m]:
  // matrices (m0, k0) (m0 + 8, k0) (m0, k0 + 8) (m0 + 8, k0 + 8) are a0..a3. B = x (k16 x n16) from Xb[k][n]:
  // (k0, n0) (k0 + 8, n0) (k0, n0 + 8) (k0 + 8, n0 + 8) are b0, b1 of the first n8 tile, then of the second.
  const int lr = lane & 7, lq = lane >> 3;
  const int a_off = (lr + (lq >> 1) * 8) * SD + wm * kWarpTile + (lq & 1) * 8;
  const int b_off = (lr + (lq & 1) * 8) * SX + wn * kWarpTile + (lq >> 1) * 8;
  float acc[MI][2 * NJ][4];
#pragma unroll
  for (int i = 0; i < MI; ++i)
#pragma unroll
    for (int j = 0; j < 2 * NJ; ++j)
#pragma unroll
      for (int e = 0; e < 4; ++e) acc[i][j][e] = 0.0f;
  auto compute = [&](int s) {
    const __nv_bfloat16* Db = b16 + (s & 1) * T::B16_BUF;
    const __nv_bfloat16* Xb = Db + kBK * SD;
    uint32_t a[MI][4];
#pragma unroll
    for (int i = 0; i < MI; ++i) ldsm_x4_trans(a[i], Db + a_off + i * 16);
#pragma unroll
    for (int jj = 0; jj < NJ; ++jj) {
      uint32_t b[4];
      ldsm_x4_trans(b, Xb + b_off + jj * 16);
      const uint32_t b0[2] = {b[0], b[1]}, b1[2] = {b[2], b[3]};
#pragma unroll
      for (int i = 0; i < MI; ++i) {
        mma_bf16(acc[i][2 * jj], a[i], b0);
        mma_bf16(acc[i][2 * jj + 1], a[i], b1);
      }
    }
  };

  // Pipeline: at step kt, stage kt + 1 is converted (into bf16 buffer (kt + 1) % 2) while the tensor cores
  // read stage kt's buffer, and stage kt + S is loaded into the slot stage kt left. One barrier a step: it
  // publishes stage kt + 1's copy and stage kt's conversion, and retires the readers of both.
#pragma unroll
  for (int s = 0; s < S; ++s) {
    if (s < nt) issue(s);
    cp_async_commit();  // empty groups too: the waits count groups
  }
  cp_async_wait<S - 1>();
  __syncthreads();
  convert(0);
  for (int kt = 0; kt < nt; ++kt) {
    cp_async_wait<S - 2>();  // S + kt groups committed; stage kt + 1 is group kt + 1
    __syncthreads();
    if (kt + S < nt) issue(kt + S);
    cp_async_commit();
    if (kt + 1 < nt) convert(kt + 1);
    compute(kt);
  }
  cp_async_wait<0>();
  __syncthreads();  // the stages' shared memory becomes db's reduction area

  // db's partial sums: the tiles of the first column of tiles cover every dy column once.
  if (g.ws_db && tn == 0) {
    float* red = f32;  // [P][BM]
    if (dp < P) *reinterpret_cast<float4*>(red + dp * BM + 4 * dc) = dbs;
    __syncthreads();
    for (int m = tid; m < BM; m += THREADS) {
      if (m0 + m >= g.M) break;
      float s = 0.0f;
      for (int p = 0; p < P; ++p) s += red[p * BM + m];
      g.ws_db[static_cast<size_t>(chunk) * g.M + m0 + m] = s;
    }
  }

  // The partial tile. Thread (g, t) = (lane / 4, lane % 4) holds rows g, g + 8 and columns 2t, 2t + 1 of each
  // 16 x 8 accumulator tile; a quad writes 32 contiguous bytes.
  float* W = g.ws + static_cast<size_t>(chunk) * g.M * g.N;
  const int gq = lane >> 2, tq = lane & 3;
  const bool even = (g.N & 1) == 0;
#pragma unroll
  for (int i = 0; i < MI; ++i)
#pragma unroll
    for (int j = 0; j < 2 * NJ; ++j) {
      const int n = n0 + wn * kWarpTile + j * 8 + 2 * tq;
#pragma unroll
      for (int h = 0; h < 2; ++h) {
        const int m = m0 + wm * kWarpTile + i * 16 + gq + 8 * h;
        if (m >= g.M) continue;
        float* o = W + static_cast<size_t>(m) * g.N + n;
        if (even && n + 1 < g.N) {
          *reinterpret_cast<float2*>(o) = make_float2(acc[i][j][2 * h], acc[i][j][2 * h + 1]);
        } else {
          if (n < g.N) o[0] = acc[i][j][2 * h];
          if (n + 1 < g.N) o[1] = acc[i][j][2 * h + 1];
        }
      }
    }
}

// dst[e] += sum over chunks c of src[c * count + e], for dW (count = M N) and db (count = M) in one launch.
// A block takes 128 consecutive elements, 4 per lane; warp w sums its own contiguous range of chunks, then
// the 8 warps' sums are added in order. (Eight warps of float4 loads keep enough bytes in flight: a thread
// summing all ~130 chunks alone would leave the reduction latency-bound.)
__global__ void __launch_bounds__(256) weight_grad_reduce_kernel(const float* __restrict__ ws, size_t mn, int nb0,
                                                                 const float* __restrict__ ws_db, int m, int chunks_dw,
                                                                 int chunks_db, float* dW, float* db) {
  __shared__ float4 red[8][32];
  const bool is_db = static_cast<int>(blockIdx.x) >= nb0;
  const float* src = is_db ? ws_db : ws;
  const size_t count = is_db ? static_cast<size_t>(m) : mn;
  const int chunks = is_db ? chunks_db : chunks_dw;
  float* dst = is_db ? db : dW;
  const size_t base = static_cast<size_t>(is_db ? blockIdx.x - nb0 : blockIdx.x) * 128;
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const size_t e0 = base + 4 * lane;
  const int per = (chunks + 7) / 8, c0 = min(chunks, warp * per), c1 = min(chunks, c0 + per);
  float4 s = make_float4(0.0f, 0.0f, 0.0f, 0.0f);
  if (count % 4 == 0) {  // every chunk's slice then starts 16-byte aligned
    if (e0 < count) {
#pragma unroll 4
      for (int c = c0; c < c1; ++c) {
        const float4 v = __ldg(reinterpret_cast<const float4*>(src + c * count + e0));
        s.x += v.x;
        s.y += v.y;
        s.z += v.z;
        s.w += v.w;
      }
    }
  } else {
    for (int c = c0; c < c1; ++c) {
      const float* p = src + c * count + e0;
      if (e0 < count) s.x += p[0];
      if (e0 + 1 < count) s.y += p[1];
      if (e0 + 2 < count) s.z += p[2];
      if (e0 + 3 < count) s.w += p[3];
    }
  }
  red[warp][lane] = s;
  __syncthreads();
  if (threadIdx.x < 128) {
    const size_t e = base + threadIdx.x;
    if (e < count) {
      const float* r = reinterpret_cast<const float*>(&red[0][0]);
      float t = 0.0f;
      for (int w = 0; w < 8; ++w) t += r[w * 128 + threadIdx.x];
      dst[e] += t;
    }
  }
}

// ---- host side ----

struct Config {
  int bm, bn, threads, minb;
  size_t smem;
  void (*kernel)(WgArgs);
};
template <int WM, int WN, int MINB, class TY, class TX>
Config config() {
  using T = WgTile<WM, WN, MINB, TY, TX>;
  return Config{T::BM, T::BN, T::THREADS, MINB, T::SMEM, weight_grad_kernel<WM, WN, MINB, TY, TX>};
}
// The tiles on offer: 96 x 96 for d = 96 squares (two blocks per SM), 288 x 96 and 384 x 96 (96 x 384) to cover
// the copy config's other products whole, 192 x 192 for the char config (d = 384: fewest L2 re-reads per
// register), 192 x 96 / 96 x 192 in between.
// Each for the operand types: float32 both, or bf16 x, or bf16 both (Types).
constexpr int kConfigs = 7, kTypes = 3;
template <class TY, class TX>
std::array<Config, kConfigs> configs_of() {
  return {config<2, 2, 2, TY, TX>(), config<4, 2, 2, TY, TX>(), config<2, 4, 2, TY, TX>(), config<6, 2, 1, TY, TX>(),
          config<8, 2, 1, TY, TX>(), config<2, 8, 1, TY, TX>(), config<4, 4, 1, TY, TX>()};
}
const std::array<Config, kConfigs>& configs(int types) {
  using bf = __nv_bfloat16;
  static const std::array<std::array<Config, kConfigs>, kTypes> c = {configs_of<float, float>(), configs_of<float, bf>(),
                                                                    configs_of<bf, bf>()};
  return c[types];
}
// configs()'s index for the operand types (bf16 dy with float32 x has no instance: no caller has one).
int types_of(bool x_half, bool dy_half) { return dy_half ? 2 : x_half ? 1 : 0; }

// Blocks of each configuration one SM runs at once on this device (at most its MINB; 0: it does not fit).
std::array<int, kConfigs> resident_of(int types) {
  std::array<int, kConfigs> a{};
  const DeviceLimits& lim = limits();
  for (int i = 0; i < kConfigs; ++i) {
    const Config& c = configs(types)[i];
    if (lim.cc < 80 || c.smem > lim.smem_optin) continue;
    RT_CU(cudaFuncSetAttribute(c.kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, static_cast<int>(c.smem)));
    RT_CU(cudaFuncSetAttribute(c.kernel, cudaFuncAttributePreferredSharedMemoryCarveout,
                               static_cast<int>(cudaSharedmemCarveoutMaxShared)));
    int nb = 0;
    RT_CU(cudaOccupancyMaxActiveBlocksPerMultiprocessor(&nb, c.kernel, c.threads, c.smem));
    a[i] = std::min(nb, c.minb);
  }
  return a;
}
const std::array<int, kConfigs>& resident(int types) {
  static const std::array<std::array<int, kConfigs>, kTypes> r = [] {
    std::array<std::array<int, kConfigs>, kTypes> all{};
    for (int t = 0; t < kTypes; ++t) all[t] = resident_of(t);
    return all;
  }();
  return r[types];
}

struct Plan {
  const Config* c = nullptr;
  int tiles_m = 0, tiles_n = 0, chunks = 0, rpc = 0;
};

// The tile with the least traffic per row: floats read from L2 (each row of dy once per column of tiles, each
// row of x once per row of tiles) plus the padded multiply-adds, weighted at ~160 per float (an H200 SM's
// mma.sync rate against its share of L2 bandwidth). Then chunks for one wave of blocks.
Plan make_plan(int rows, int M, int N, int types = 0) {
  constexpr double kMacsPerFloat = 160.0;
  Plan p;
  double best = std::numeric_limits<double>::infinity();
  int best_res = 0;
  for (int i = 0; i < kConfigs; ++i) {
    const int res = resident(types)[i];
    if (res <= 0) continue;
    const Config& c = configs(types)[i];
    const long long tm = (M + c.bm - 1) / c.bm, tn = (N + c.bn - 1) / c.bn;
    const double l2 = static_cast<double>(tn) * M + static_cast<double>(tm) * N;
    const double macs = static_cast<double>(tm * tn) * c.bm * c.bn;
    const double cost = l2 + macs / kMacsPerFloat;
    if (cost < best) {
      best = cost;
      best_res = res;
      p.c = &c;
      p.tiles_m = static_cast<int>(tm);
      p.tiles_n = static_cast<int>(tn);
    }
  }
  if (!p.c) return p;
  const long long tiles = static_cast<long long>(p.tiles_m) * p.tiles_n;
  const long long slots = static_cast<long long>(best_res) * limits().sms;
  const long long want = std::max<long long>(1, slots / tiles);
  long long rpc = (rows + want - 1) / want;
  rpc = (rpc + kBK - 1) / kBK * kBK;
  p.rpc = static_cast<int>(rpc);
  p.chunks = static_cast<int>((rows + rpc - 1) / rpc);
  return p;
}

bool& enabled_flag() {
  static bool on = rt::env_switch("RT_CUDA_DW", true);
  return on;
}


}  // namespace

void set_weight_grad(bool on) { enabled_flag() = on; }

// The rule linear_backward applies: many rows for the size of dW (rows >= 8 max(in, out)), and partial tiles
// (chunks x out x in floats, written once and read once) within a quarter of the operand bytes, so that the
// second pass stays small. Both configs pass by far: copy 528k rows against ~51k at most (96 x 96: 264
// chunks), char 139k against ~13k.
bool weight_grad_preferred(int n, int in, int out) {
  if (!enabled_flag() || n <= 0 || in <= 0 || out <= 0) return false;
  if (static_cast<long long>(n) < 8LL * std::max(in, out)) return false;
  const Plan p = make_plan(n, out, in);
  if (!p.c) return false;
  return 4.0 * p.chunks * out * in <= static_cast<double>(n) * (in + out);
}

void linear_weight_grad(const float* x, const float* dy, float* dW, float* db, int n, int in, int out) {
  linear_weight_grad(x, false, dy, false, dW, db, n, in, out);
}

void linear_weight_grad(const void* x, bool x_half, const void* dy, bool dy_half, float* dW, float* db, int n, int in,
                        int out) {
  if (n <= 0) return;
  RT_CHECK(in > 0 && out > 0, "linear_weight_grad: in > 0 and out > 0 required");
  if (weight_grad_sm90_takes(x, dy, n, in, out)) {
    weight_grad_sm90(x, x_half, dy, dy_half, dW, db, n, in, out);
    return;
  }
  RT_CHECK(x_half || !dy_half, "linear_weight_grad: a bf16 dy needs a bf16 x (no other instance)");
  const bool half = x_half || dy_half;
  const bool vec4 = in % 4 == 0 && out % 4 == 0 && aligned16(x) && aligned16(dy);
  // bf16 operands are copied 16 bytes (8 elements) at a time only.
  RT_CHECK(!half || (vec4 && in % 8 == 0 && (!dy_half || out % 8 == 0)),
           "linear_weight_grad: bf16 operands need 16-byte aligned rows of a multiple of 8 elements");
  const int types = types_of(x_half, dy_half);
  const Plan p = make_plan(n, out, in, types);
  RT_CHECK(p.c != nullptr, "linear_weight_grad: no tile configuration fits this device");
  const size_t mn = static_cast<size_t>(out) * in;
  const size_t ws_floats = static_cast<size_t>(p.chunks) * mn, db_off = (ws_floats + 3) / 4 * 4;
  Scratch ws((db_off + (db ? static_cast<size_t>(p.chunks) * out : 0)) * sizeof(float));
  WgArgs g{};
  g.x = x;
  g.dy = dy;
  g.ws = ws.f32();
  g.ws_db = db ? ws.f32() + db_off : nullptr;
  g.rows = n;
  g.M = out;
  g.N = in;
  g.rpc = p.rpc;
  g.tiles_n = p.tiles_n;
  g.vec = vec4;
  const long long tiles = static_cast<long long>(p.tiles_m) * p.tiles_n;
  RT_CHECK(tiles < (1LL << 31) && p.chunks <= 65535, "linear_weight_grad: problem too large for one launch");
  p.c->kernel<<<dim3(static_cast<unsigned>(tiles), p.chunks), p.c->threads, p.c->smem, stream()>>>(g);
  RT_CU_LAUNCH("weight_grad");
  weight_grad_reduce(g.ws, mn, p.chunks, g.ws_db, out, p.chunks, dW, db);
}

void weight_grad_reduce(const float* ws, size_t mn, int chunks, const float* ws_db, int m, int chunks_db, float* dW,
                        float* db) {
  const int nb0 = static_cast<int>((mn + 127) / 128), nb1 = db ? (m + 127) / 128 : 0;
  weight_grad_reduce_kernel<<<nb0 + nb1, 256, 0, stream()>>>(ws, mn, nb0, ws_db, m, chunks, chunks_db, dW, db);
  RT_CU_LAUNCH("weight_grad_reduce");
}

}  // namespace rt::cuda
