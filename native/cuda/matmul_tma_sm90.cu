// Matrix products on Hopper fed by the tensor copy engine (TMA), warp-specialized (sm_90a only; built for that
// target alone, see CMakeLists.txt). The same products as matmul_sm90.cu's cp.async kernels, on the same bf16
// K-major operand copies, with the same epilogue (store_tile_sm90.cuh).
//
// Why: the cp.async kernels move every 16-byte chunk of a stage with an instruction of each of 256 threads,
// then stop the whole block at a barrier and wait for the tensor cores at every 64-deep K step (session 15:
// ~190 TFLOP/s on 128 x 128 tiles, ~245 on 128 x 192). Here one thread of a producer warp asks the copy
// engine for a stage's two boxes, which land already in wgmma's 128B-swizzled layout and count themselves on
// the stage's "full" mbarrier; the two consumer warpgroups (rows 0-63 and 64-127 of the tile) wait on that
// barrier alone, keep one group of products in flight, and hand a stage back through its "empty" barrier.
// The producer runs ahead over tile boundaries, so the next tile's stages load while a tile is stored.
//
// Clusters sharing each B box by multicast (every block of 2 or 4 along M loading 1/CM of it) were built
// and measured slower on every product (session 16: the char window's products 255 -> 152 TFLOP/s at CM = 2,
// 103 at CM = 4), and so were one block an SM with six stages (198) and 128 x 256 tiles (133).
#include <cuda.h>
#include <cuda_bf16.h>
#include <cudaTypedefs.h>

#include <algorithm>
#include <cstdint>

#include "core/env.h"
#include "cuda/activation.cuh"
#include "cuda/cluster.cuh"
#include "cuda/common.cuh"
#include "cuda/gemm_args.cuh"
#include "cuda/matmul_tma_sm90.cuh"
#include "cuda/mma.cuh"
#include "cuda/store_tile_sm90.cuh"
#include "cuda/wgmma.cuh"

namespace rt::cuda {
namespace {

using namespace gemm_detail;
using namespace wgmma;

constexpr int kBM = 128, kConsumers = 256, kThreads = kConsumers + 32;
// The K a stage holds: 64, rows of 128 bytes (the 128B swizzle). (Other stages and boxes tried: below, before
// RT_CUDA_RES_PREFETCH.)
constexpr int kBK = 64;

// One consumer warp's staged output box: 16 rows x 32 bytes.
constexpr int kChunk = 512;

// The kernel's diagnostic variants, each leaving one part of a product out to show what that part costs
// (kernels_check --gemm-diag, in its own build with RT_GEMM_DIAG; the addon has kDiagNone alone). The values
// they write are not the product's.
// kDiagNoStores: the staged epilogue without the engine's stores (its values, boxes and fences kept);
// kDiagNoEpilogue: no epilogue at all; kDiagNoMma: no tensor-core products (C from zero accumulators);
// kDiagNoLoads: the producer completes each stage's barrier without loading it (the products read stale bytes).
// kDiagNoFence: the staged epilogue without the proxy fence before each box's store (the engine may then read
// a box before its values: a timing, not a product).
constexpr int kDiagNone = 0, kDiagNoStores = 1, kDiagNoEpilogue = 2, kDiagNoMma = 3, kDiagNoLoads = 4, kDiagNoFence = 5;

template <int BN, int STAGES>
struct Layout {
  static constexpr int kATile = kBM * kBK * 2;  // A's stage: 128 rows of 128 bytes
  static constexpr int kBTile = BN * kBK * 2;
  static constexpr int kStage = kATile + kBTile;  // a multiple of 1024: every box starts swizzle-aligned
  static_assert(kATile % 1024 == 0 && kStage % 1024 == 0, "stages and B's box 1024-aligned (the swizzles' atoms)");
  static constexpr int kBars = STAGES * kStage;   // then full[STAGES], empty[STAGES]
  static constexpr int kStaging = kBars + 1024;   // then two output boxes per consumer warp
  static constexpr int kSmem = kStaging + 8 * 2 * kChunk + 1024;  // and slack to align the base to 1024 bytes
};

// The epilogues with an activation (store_tile_staged): those that write act(C) through map_g (4 GELU, 5 ReLU, 8 GELU
// with GELU'(C) where C goes: RT_CUDA_KEEP_DGELU) and those that read x's tile (6 GELU', 7 ReLU', 9 x C with x GELU'(f)).
template <int EPI>
constexpr bool kGEpi = EPI == 4 || EPI == 5 || EPI == 8;
template <int EPI>
constexpr bool kXEpi = EPI == 6 || EPI == 7 || EPI == 9;

// x's tile in the epilogue of the activation's backward (EPI 6, 7, 9): the stage after a tile's K steps holds the
// tile's 128 rows of x, as boxes of kXCols columns: on 128-wide tiles two boxes of 64 (rows of 128 bytes, 128B
// swizzle: 32 KB, the stage's bytes), on 96-wide ones (RT_CUDA_TMA_X96) three of 32 (rows of 64 bytes, 64B
// swizzle: 24 KB of the stage's 28). Either way the lanes' reads of a row's 16-byte chunks spread over the banks.
template <int BN>
struct XTile {
  static_assert(BN == 128 || BN == 96, "x's tile fills a stage at 128 x 128 and 128 x 96 only");
  static constexpr int kCols = BN == 128 ? 64 : 32, kBoxes = BN / kCols, kRowBytes = kCols * 2;
  static constexpr int kBoxBytes = 128 * kRowBytes, kBytes = kBoxes * kBoxBytes;
};

// The staging boxes' words by shared-memory instructions at 32-bit addresses. Through the generic pointers the
// block's aligned base gives (its address space lost in the integer cast), every write was a generic st and every
// read back a generic ld, waited for on the long scoreboard, and each such store could alias the bias, which was
// then loaded again after it.
__device__ __forceinline__ void sts32(uint32_t a, uint32_t v) {
  asm volatile("st.shared.b32 [%0], %1;\n" ::"r"(a), "r"(v) : "memory");
}
__device__ __forceinline__ void sts64(uint32_t a, float2 v) {
  asm volatile("st.shared.v2.f32 [%0], {%1, %2};\n" ::"r"(a), "f"(v.x), "f"(v.y) : "memory");
}
__device__ __forceinline__ uint32_t lds32(uint32_t a) {
  uint32_t v;
  asm volatile("ld.shared.b32 %0, [%1];\n" : "=r"(v) : "r"(a) : "memory");
  return v;
}
__device__ __forceinline__ float2 bf16x2_float2(uint32_t u) {
  return __bfloat1622float2(*reinterpret_cast<const __nv_bfloat162*>(&u));
}

// A warp's next staging box (of its two, by its count `boxes`), once the engine's store from it two boxes back
// has read it.
__device__ __forceinline__ uint8_t* take_box(uint8_t* box0, int& boxes) {
  uint8_t* box = box0 + (boxes++ & 1) * kChunk;
  if ((threadIdx.x & 31) == 0) cluster::tma_store_wait_read<1>();
  __syncwarp();
  return box;
}
// The warp's filled box out to columns from x, rows from row0, by the copy engine through map.
// NOSTORE (a diagnostic build's kDiagNoStores): everything but the engine's store itself.
template <bool NOSTORE = false, bool NOFENCE = false>
__device__ __forceinline__ void put_box(const CUtensorMap* map, int x, int row0, const uint8_t* box) {
  if constexpr (!NOFENCE) fence_async_shared();
  __syncwarp();
  if (!NOSTORE && (threadIdx.x & 31) == 0) {
    cluster::tma_store_2d(map, x, row0, box);
    cluster::tma_store_commit();
  }
}

// With store_tile_staged's PRE on 192-wide tiles, before a tile's K steps: the warpgroup's 64 rows of the residual
// under its tile asked into L2 (one prefetch per 128-byte line, the warpgroup's 128 threads in turn), so that the
// epilogue's loads ahead of their boxes find them there rather than in DRAM. That is mlp c_proj forward, whose
// residual x2 c_fc's 50 MB of outputs have likely pushed out of L2. A hint: nothing waits for it, and the values
// are read as before. (On 96-wide tiles, at their 96 registers, it spilled 28 bytes a thread.)
template <int BN>
__device__ __forceinline__ void prefetch_res_l2(const GemmArgs& g, int r0, int c0) {
  constexpr int kPerRow = BN * 4 / 128, kLines = 64 * kPerRow;
  static_assert(BN * 4 % 128 == 0, "whole lines a row");
#pragma unroll
  for (int k = 0; k < (kLines + 127) / 128; ++k) {
    const int l = (threadIdx.x & 127) + 128 * k;
    const int r = r0 + l / kPerRow, c = c0 + (l % kPerRow) * 32;
    if (l < kLines && r < g.M && c < g.N)
      asm volatile("prefetch.global.L2 [%0];\n" ::"l"(g.res + static_cast<size_t>(r) * g.ldc + c));
  }
}

// Each of the warpgroup's accumulator pairs in wgmma's layout: f(e, gr, gc, two, b) for acc[e] and acc[e + 1], row gr
// (m0 + 16 warp + r + 8 h), columns gc (n0 + 8 j + 2 q) and, where `two`, gc + 1, b the bias under them (bias_pair).
template <int BN, typename F>
__device__ __forceinline__ void for_acc_pairs(const GemmArgs& g, int m0, int n0, F&& f) {
  const int warp = (threadIdx.x >> 5) & 3, lane = threadIdx.x & 31, r = lane >> 2, q = lane & 3;
  const int row0 = m0 + warp * 16;
#pragma unroll
  for (int j = 0; j < BN / 8; ++j) {
    const int gc = n0 + 8 * j + 2 * q;
    const bool two = gc + 1 < g.N;
    const float2 b = bias_pair(g, gc, two);
#pragma unroll
    for (int h = 0; h < 2; ++h) f(4 * j + 2 * h, row0 + r + 8 * h, gc, two, b);
  }
}

// kResAcc, before a tile's K steps: the warpgroup's accumulators start as residual + bias (zeros outside C), and the
// products are added onto them. Every value's load is in flight at once, their latency under the first stages'
// copies, where the epilogue's loads waited box by box (session 24: mlp c_proj 42 us, 34 with PRE, against 15 without
// an epilogue). The sum is (res + bias) + the products in wgmma's order, not (products + bias) + res: the same terms,
// other roundings (so not the cp.async kernels' bits: kernels_check compares it within float32's rounding). alpha is 1
// (launch_epi).
template <int BN>
__device__ __forceinline__ void acc_from_res(const GemmArgs& g, int m0, int n0, float (&acc)[BN / 2]) {
  for_acc_pairs<BN>(g, m0, n0, [&](int e, int gr, int gc, bool two, float2 b) {
    const float* p = g.res + static_cast<size_t>(gr) * g.ldc + gc;
    const bool in = gr < g.M && gc < g.N;
    acc[e] = in ? p[0] + b.x : 0.0f;
    acc[e + 1] = in && two ? p[1] + b.y : 0.0f;
  });
}

// A warpgroup's 64 x BN accumulator tile (from (m0, n0)) through the epilogue (alpha, bias, residual; no
// split, beta 0) into C by the copy engine: each warp writes its 16 rows 32 bytes of columns at a time (8
// float32 or 16 bf16) into one of its two staging boxes and lane 0 stores the box (rows and columns outside C
// are dropped by the engine), so the warp goes on while the stores drain. Writing the accumulators straight
// to global memory cost as much as the products themselves for K = 384 (an 8-row by 32-byte pattern per
// instruction, the warps stalled on it): session 16, 35 -> 13 us for the char config's c_attn product
// without the stores.
// EPI: 2, float32 C; 3, bf16 C; 4 and 5, bf16 C and act(C) (GELU through phi_fast, ReLU) by map_g, C's boxes
// followed by act(C)'s from the same rounded values (what activation.cu's pass would read back), so that
// c_fc's activation costs its stores and not a pass of its own; 6 and 7, bf16 C holding
// act'(x) times the rounded values (GELU's, ReLU's), x from fx: the activation's backward in mlp c_proj's dx
// product, which then stores df and not dg, and no pass reads dg back. 8: as 4, but GELU'(C) goes where C would
// (its boxes after each GELU box, not before all of them), GELU(C) beside it; 9: as 6, x C with x that GELU'(f) (GemmAct::dgelu: one multiply, not GELU').
// fx (EPI 6, 7, 9): the shared-memory address of the warpgroup's 64 rows of x's 128 x BN tile, as the producer
// loaded it into a stage (XTile: 64- or 32-column boxes of 128 rows, swizzled so that a warp's 8 rows by 16 bytes
// per load hit distinct banks).
// boxes: the warp's count of boxes stored so far (which of the two is next, across tiles).
// RES: where a float32 C's residual comes in (kResLoads, kResPrefetch, kResAcc; PRE is kResPrefetch). With kResAcc
// the accumulators already hold it and the bias (acc_from_res), and the boxes take them as they are.
// PRE (EPI 2 with a residual; RT_CUDA_RES_PREFETCH): each box's residual values loaded kResAhead boxes ahead, so
// that their latency runs under the boxes before. Loaded in the epilogue's own order, each box's waited for in
// turn (take_box's wait is a barrier to the compiler), a residual product's tile of 8 to 24 boxes a warp spent
// a global load's latency on each (session 16: attn c_proj 15.5 us against 7.4 without its epilogue, mlp c_proj
// 23.9 against 14.7). The same values, added in the same order: the same bits.
// PRE's boxes ahead: on 192-wide tiles (one block an SM) five, on 96-wide ones (two blocks an SM) two: 164 and 95
// registers (of 168 and 96), without spills (six on 192-wide tiles spilled 32 bytes).
template <int BN>
constexpr int kResAhead = BN == 192 ? 5 : 2;
// Where a float32 C's residual (and bias) comes in: loaded in the epilogue box by box (kResLoads), kResAhead boxes
// ahead (kResPrefetch: PRE), or into the accumulators before the tile's K steps (kResAcc: acc_from_res), so that
// the products add onto it and the epilogue only stores.
constexpr int kResLoads = 0, kResPrefetch = 1, kResAcc = 2;
// The bias a box ahead where its registers fit: not on 128-wide tiles, where at the 96-register cap of two blocks
// an SM it made the float32 and activation epilogues spill 56-80 bytes a thread; not beside the residual's boxes
// ahead (PRE), whose registers those are.
template <int BN, bool PRE>
constexpr bool kBiasAhead = BN != 128 && !PRE;
template <int EPI, int BN, int RES = kResLoads, bool NOSTORE = false, bool NOFENCE = false>
__device__ __forceinline__ void store_tile_staged(const GemmArgs& g, const CUtensorMap* map_c, const CUtensorMap* map_g,
                                                  int m0, int n0, const float (&acc)[BN / 2], uint8_t* staging,
                                                  int& boxes, uint32_t fx) {
  constexpr bool HALF = EPI >= 3;
  constexpr bool PRE = RES == kResPrefetch, IN_ACC = RES == kResAcc;
  static_assert(RES == kResLoads || EPI == 2, "the residual's prefetch or start is for a float32 C (EPI 2)");
  const int warp = (threadIdx.x >> 5) & 3, lane = threadIdx.x & 31, r = lane >> 2, q = lane & 3;
  const int row0 = m0 + warp * 16;
  uint8_t* box0 = staging + (threadIdx.x >> 5) * 2 * kChunk;
  constexpr int J = HALF ? 2 : 1;  // accumulator column groups (8 columns) per box
  constexpr int C = BN / 8 / J;    // boxes
  // PRE: box c's residual values for rows r and r + 8 (zeros outside C, and in the second where gc + 1 is past N,
  // as epilogue_value reads them); fully unrolled, so registers, live from their load to their box.
  float2 res[PRE ? C : 1][2];
  auto load_res = [&](int c) {
    const int gc = n0 + 8 * c + 2 * q;
#pragma unroll
    for (int h = 0; h < 2; ++h) {
      const int gr = row0 + r + 8 * h;
      const float* p = g.res + static_cast<size_t>(gr) * g.ldc + gc;
      res[c][h] = gr < g.M && gc < g.N ? make_float2(p[0], gc + 1 < g.N ? p[1] : 0.0f) : make_float2(0.0f, 0.0f);
    }
  };
  if constexpr (PRE) {
#pragma unroll
    for (int c = 0; c < kResAhead<BN> && c < C; ++c) load_res(c);
  }
  // The bias under box c's columns (the same for both its rows), asked for one box ahead (kBiasAhead): its load's
  // latency runs under the box before rather than in each box's chain of store, fence and copy.
  constexpr bool kAhead = kBiasAhead<BN, PRE> && !IN_ACC;
  float2 bias[2][J];
  auto load_bias = [&](int c) {
#pragma unroll
    for (int jj = 0; jj < J; ++jj) {
      const int gc = n0 + 8 * (c * J + jj) + 2 * q;
      bias[c & 1][jj] = bias_pair(g, gc, gc + 1 < g.N);
    }
  };
  // Pair (jj, h)'s element within a box of 16 rows by 8 J columns.
  auto box_elem = [&](int jj, int h) { return (r + 8 * h) * 8 * J + 8 * jj + 2 * q; };
  // Output pair (jj, h) of box c through the epilogue. Outside C the engine drops the elements, so the value there is
  // whatever the registers give; only where it reads the residual from memory (a float32 C's, box by box) is the
  // test needed. Without it elsewhere each pair is 2-3 instructions shorter (the tests and the selects: session 26).
  auto value = [&](int c, int jj, int h) -> float2 {
    const int j = c * J + jj, gc = n0 + 8 * j + 2 * q, gr = row0 + r + 8 * h;
    const float v0 = acc[4 * j + 2 * h], v1 = acc[4 * j + 2 * h + 1];
    if constexpr (IN_ACC) return make_float2(v0, v1);
    else if constexpr (PRE) return epilogue_value_res(g, v0, v1, bias[c & 1][jj], res[c][h]);
    else if constexpr (HALF) return epilogue_value_b<false>(g, gr, gc, v0, v1, gc + 1 < g.N, bias[c & 1][jj]);
    else
      return gr < g.M && gc < g.N ? epilogue_value_b<true>(g, gr, gc, v0, v1, gc + 1 < g.N, bias[c & 1][jj])
                                  : make_float2(0.0f, 0.0f);
  };
  // EPI 4 to 7: C's rounded pairs (bf16x2) kept for the activation's boxes, which follow all of C's: by then the
  // accumulators are dead and the activation's chains have their registers. Box by box, each act box right after its
  // C box and read back from it, the 96-register kernels ran the activation one value at a time, every MUFU and FFMA
  // waited for in turn (session 26's SASS). EPI 6, 7 store no C box of their own: act'(x) C goes where C would.
  constexpr bool LATE = EPI >= 4;
  uint32_t pk[LATE ? C : 1][J][2];
  if constexpr (kAhead) load_bias(0);
#pragma unroll
  for (int c = 0; c < C; ++c) {
    if constexpr (PRE) {
      if (c + kResAhead<BN> < C) load_res(c + kResAhead<BN>);
    }
    if constexpr (!IN_ACC) {
      if (!kAhead) load_bias(c);
      else if (c + 1 < C) load_bias(c + 1);
    }
    if constexpr (kXEpi<EPI> || EPI == 8) {  // (act'(x) C's or GELU'(C)'s boxes after all of C's values: below)
#pragma unroll
      for (int jj = 0; jj < J; ++jj)
#pragma unroll
        for (int h = 0; h < 2; ++h) {
          const float2 o = value(c, jj, h);
          pk[c][jj][h] = pack_bf16(o.x, o.y);
        }
      continue;
    }
    uint8_t* box = take_box(box0, boxes);
    const uint32_t sbox = smem_addr(box);
#pragma unroll
    for (int jj = 0; jj < J; ++jj) {
#pragma unroll
      for (int h = 0; h < 2; ++h) {
        const float2 o = value(c, jj, h);
        const int e = box_elem(jj, h);
        if constexpr (HALF) {
          const uint32_t v = pack_bf16(o.x, o.y);
          sts32(sbox + e * 2, v);
          if constexpr (LATE) pk[c][jj][h] = v;
        } else {
          sts64(sbox + e * 4, o);
        }
      }
    }
    put_box<NOSTORE, NOFENCE>(map_c, n0 + c * 8 * J, row0, box);
  }
  if constexpr (LATE) {
    // act(C)'s boxes (EPI 4, 5, 8: through map_g into act_out) or act'(x) C's (6, 7, 9: through map_c into C) from
    // the rounded values kept in pk. For act'(x): row 16 warp + r + 8 h of the warpgroup's x, its 16-byte chunks
    // where the swizzle put them (outside C the engine filled zeros). EPI 8: each GELU box, then its GELU' box into C
    // (both from one phi_fast, the derivative's pairs held in dk meanwhile).
#pragma unroll
    for (int c = 0; c < C; ++c) {
      uint8_t* box = take_box(box0, boxes);
      const uint32_t sbox = smem_addr(box);
      uint32_t dk[EPI == 8 ? J : 1][2];
#pragma unroll
      for (int jj = 0; jj < J; ++jj)
#pragma unroll
        for (int h = 0; h < 2; ++h) {
          const int j = c * J + jj, e = box_elem(jj, h);
          const float2 v = bf16x2_float2(pk[c][jj][h]);
          float2 a;
          if constexpr (EPI == 8) {
            const float2 x = GeluBothFast()(v.x), y = GeluBothFast()(v.y);
            a = make_float2(x.x, y.x);
            dk[jj][h] = pack_bf16(x.y, y.y);
          } else if constexpr (EPI == 4) {
            a = make_float2(GeluFast()(v.x), GeluFast()(v.y));
          } else if constexpr (EPI == 5) {
            a = make_float2(Relu()(v.x), Relu()(v.y));
          } else {
            // 128-wide: chunk j & 7 of a 128-byte row at (j & 7) ^ r (row & 7 == r); 96-wide: chunk j & 3 of a
            // 64-byte row at (j & 3) ^ (r >> 1) (the 64B swizzle XORs address bits 7-8, (row >> 1) & 3 == (r >> 1) & 3)
            using X = XTile<BN>;
            constexpr int kChunks = X::kRowBytes / 16;
            const int chunk = BN == 128 ? (j & 7) ^ r : (j & 3) ^ ((r >> 1) & 3);
            const uint32_t xp =
                fx + (j / kChunks) * X::kBoxBytes + (warp * 16 + r + 8 * h) * X::kRowBytes + (chunk << 4) + 4 * q;
            const float2 x = bf16x2_float2(lds32(xp));
            if constexpr (EPI == 6) a = make_float2(GeluGradFast()(x.x, v.x), GeluGradFast()(x.y, v.y));
            else if constexpr (EPI == 9) a = make_float2(MulGrad()(x.x, v.x), MulGrad()(x.y, v.y));
            else a = make_float2(ReluGrad()(x.x, v.x), ReluGrad()(x.y, v.y));
          }
          sts32(sbox + e * 2, pack_bf16(a.x, a.y));
        }
      if constexpr (kGEpi<EPI>) put_box<NOSTORE, NOFENCE>(map_g, n0 + c * 8 * J, row0, box);
      else put_box<NOSTORE, NOFENCE>(map_c, n0 + c * 8 * J, row0, box);
      if constexpr (EPI == 8) {
        uint8_t* dbox = take_box(box0, boxes);
        const uint32_t sd = smem_addr(dbox);
#pragma unroll
        for (int jj = 0; jj < J; ++jj)
#pragma unroll
          for (int h = 0; h < 2; ++h) sts32(sd + box_elem(jj, h) * 2, dk[jj][h]);
        put_box<NOSTORE, NOFENCE>(map_c, n0 + c * 8 * J, row0, dbox);
      }
    }
  }
}

// Named barriers 1 and 2 between the producer warp and the eight consumer warps, each arriving or syncing
// whole: the producer warp arrives after it saw x's stage complete, so the consumers' reads after their sync
// are ordered after the copy's writes. x's tile for tile i is announced on 1 + i % 2. Two barriers, so that the
// announcement for tile i + 1 cannot land in the phase of tile i's; the producer cannot reach tile i + 2's
// before every consumer has passed tile i's, since x's stage for tile i + 2 is at least STAGES + 1 stages on
// in the ring (2 (nk + 1) >= 4 > 3 = STAGES, the kernels' with x's tile): its load waited for tile i's x stage to
// be handed back.
// The id comes in a register, so ptxas counts all 16 barriers as used, which allows at most 4 blocks an SM (2
// run). Immediate ids, chosen by a branch on the tile's parity, made it spill ~750 bytes a thread.
__device__ __forceinline__ void named_sync(int id) {
  asm volatile("barrier.cta.sync %0, %1;\n" ::"r"(id), "n"(kThreads) : "memory");
}
__device__ __forceinline__ void named_arrive(int id) {
  asm volatile("barrier.cta.arrive %0, %1;\n" ::"r"(id), "n"(kThreads) : "memory");
}

template <int BN>
__device__ __forceinline__ void mma_k16(float (&acc)[BN / 2], uint64_t a, uint64_t b, int accumulate) {
  if constexpr (BN == 128) m64n128k16(acc, a, b, accumulate);
  else if constexpr (BN == 96) m64n96k16(acc, a, b, accumulate);
  else m64n192k16<false>(acc, a, b, accumulate);
}

// Block b takes tiles b, b + gridDim.x, ... (row tile t / tiles_n, column tile t % tiles_n: consecutive
// tiles share their rows of A, which stay in L2). EPI: 0, 1 store_tile's (float32, bf16 C); 2 to 7
// store_tile_staged's, through map_c (and map_g: act(C)'s map for 4 and 5, x's for 6 and 7, whose tile the
// producer loads after each tile's K steps into the next stage, which the consumers hand back after their
// epilogue).
template <int BN, int STAGES, int MINB, int EPI, int RES, int DIAG>
__global__ void __launch_bounds__(kThreads, MINB)
    gemm_tma_kernel(const __grid_constant__ CUtensorMap map_a, const __grid_constant__ CUtensorMap map_b,
                    const __grid_constant__ CUtensorMap map_c, const __grid_constant__ CUtensorMap map_g, GemmArgs g,
                    int tiles_n, int tiles) {
  using L = Layout<BN, STAGES>;
  extern __shared__ uint8_t smem_raw[];
  uint8_t* smem = reinterpret_cast<uint8_t*>((reinterpret_cast<uintptr_t>(smem_raw) + 1023) & ~uintptr_t{1023});
  uint64_t* full = reinterpret_cast<uint64_t*>(smem + L::kBars);
  uint64_t* empty = full + STAGES;
  const BlockRange br = block_range(g);
  const int nk = br.ke > br.kb ? (br.ke - br.kb + kBK - 1) / kBK : 0;
  const int mine = tiles > static_cast<int>(blockIdx.x) ? (tiles - 1 - blockIdx.x) / gridDim.x + 1 : 0;

  if (threadIdx.x == 0) {
    for (int s = 0; s < STAGES; ++s) {
      cluster::bar_init(full + s, 1);
      cluster::bar_init(empty + s, 8);  // every consumer warp
    }
    cluster::bar_init_fence();
  }
  __syncthreads();

  auto tile_m0 = [&](int i) { return (blockIdx.x + i * gridDim.x) / tiles_n * kBM; };
  auto tile_n0 = [&](int i) { return (blockIdx.x + i * gridDim.x) % tiles_n * BN; };

  if (threadIdx.x >= kConsumers) {  // the producer warp: one thread issues every copy
    // With x's tiles (EPI 6, 7, 9) the whole warp walks the ring, so that it arrives at the named barrier whole:
    // a lone thread's arrival waits for the rest of its warp, which must then not sit at a reconvergence point
    // waiting for that thread. Else the other 31 lanes leave at once.
    constexpr bool kWholeWarp = kXEpi<EPI>;
    const bool leader = threadIdx.x == kConsumers;
    if ((kWholeWarp || leader) && nk > 0) {
      int s = 0;
      uint32_t ph = 0;
      for (int i = 0; i < mine; ++i) {
        const int m0 = tile_m0(i), n0 = tile_n0(i);
        for (int kt = 0; kt < nk; ++kt) {
          cluster::bar_wait(empty + s, ph ^ 1);  // a fresh barrier's "previous" phase counts as complete
          if constexpr (DIAG == kDiagNoLoads) {
            if (leader) cluster::bar_arrive(full + s);
          } else if (leader) {
            cluster::bar_expect(full + s, L::kStage);
            uint8_t* st = smem + s * L::kStage;
            const int k = br.kb + kt * kBK;
            cluster::tma_load_2d(st, &map_a, k, m0, full + s);
            cluster::tma_load_2d(st + L::kATile, &map_b, k, n0, full + s);
          }
          if (++s == STAGES) s = 0, ph ^= 1;
        }
        if constexpr (kXEpi<EPI>) {  // the epilogue's x tile, into the next stage (XTile: at most a stage's bytes)
          static_assert(STAGES == 3 && XTile<BN>::kBytes <= L::kStage, "x's tile in one stage of a 3-stage ring (named_sync)");
          cluster::bar_wait(empty + s, ph ^ 1);
          if constexpr (DIAG == kDiagNoLoads) {
            if (leader) cluster::bar_arrive(full + s);
          } else if (leader) {
            using X = XTile<BN>;
            cluster::bar_expect(full + s, X::kBytes);
            uint8_t* st = smem + s * L::kStage;
#pragma unroll
            for (int b = 0; b < X::kBoxes; ++b)
              cluster::tma_load_2d(st + b * X::kBoxBytes, &map_g, n0 + b * X::kCols, m0, full + s);
          }
          cluster::bar_wait(full + s, ph);
          __syncwarp();
          named_arrive(1 + (i & 1));
          if (++s == STAGES) s = 0, ph ^= 1;
        }
      }
    }
  } else {
    const int wg = threadIdx.x >> 7, lane = threadIdx.x & 31;
    auto release = [&](int s) {  // a consumer warp hands stage s back to the producer
      if (lane == 0) cluster::bar_arrive(empty + s);
    };
    float acc[BN / 2];
#pragma unroll
    for (int e = 0; e < BN / 2; ++e) acc[e] = 0.0f;  // (read only by an empty reduction's store)
    if constexpr (DIAG == kDiagNoMma) {  // values ptxas cannot know (else it folds the accumulators to zeros)
      if (g.M < 0) {
#pragma unroll
        for (int e = 0; e < BN / 2; ++e) acc[e] = br.C[e * kThreads + threadIdx.x];
      }
    }
    int s = 0, boxes = 0;
    uint32_t ph = 0;
    for (int i = 0; i < mine; ++i) {
      const int m0 = tile_m0(i), n0 = tile_n0(i);
      // The first product of a tile ignores the accumulators (scale-d 0), but its instruction reads them: without
      // fresh values here the last tile's stay live through its epilogue, whose activation boxes (EPI 4 to 7) need
      // those registers for C's kept values (store_tile_staged's pk) once each has been stored.
      if constexpr (EPI >= 4 && DIAG != kDiagNoMma) {
#pragma unroll
        for (int e = 0; e < BN / 2; ++e) acc[e] = 0.0f;
      }
      if constexpr (RES == kResPrefetch && BN == 192) prefetch_res_l2<BN>(g, m0 + wg * 64, n0);
      if constexpr (RES == kResAcc) acc_from_res<BN>(g, m0 + wg * 64, n0, acc);
      int prev = -1;
      for (int kt = 0; kt < nk; ++kt) {
        cluster::bar_wait(full + s, ph);
        const uint32_t sa = smem_addr(smem + s * L::kStage);
        const uint32_t abase = sa + wg * 64 * (kBK * 2), bbase = sa + L::kATile;
        fence();
        if constexpr (DIAG != kDiagNoMma) {
          // (the k-th 16 of K starts 32 k bytes into the stage's 128-byte rows: the 128B swizzle applies to the
          // address the tensor cores form)
#pragma unroll
          for (int kk = 0; kk < kBK / 16; ++kk)
            mma_k16<BN>(acc, smem_desc(abase + kk * 32), smem_desc(bbase + kk * 32),
                        RES == kResAcc || kt > 0 || kk > 0);
        }
        commit();
        wait1();  // the previous step's products are done: its stage goes back
        if (prev >= 0) release(prev);
        prev = s;
        if (++s == STAGES) s = 0, ph ^= 1;
      }
      wait0();
      if (prev >= 0) release(prev);
      pin(acc);
      uint32_t fx = 0;
      if constexpr (kXEpi<EPI>) {
        // The producer waits for x's stage and says so through a named barrier: a wait loop here, between
        // the products and the epilogue, made ptxas spill ~400 bytes a thread.
        named_sync(1 + (i & 1));
        // The stage's phase is complete by now (the producer saw it before arriving); one test of it, not a loop,
        // gives these threads' reads of the copy's bytes the barrier's acquire themselves.
        cluster::bar_test(full + s, ph);
        fx = smem_addr(smem + s * L::kStage + wg * 64 * XTile<BN>::kRowBytes);
      }
      if constexpr (DIAG == kDiagNoEpilogue) {
        // a use of the accumulators that never runs (without one ptxas drops the products with their results)
        if (g.M < 0) {
#pragma unroll
          for (int e = 0; e < BN / 2; ++e) br.C[e * kThreads + threadIdx.x] = acc[e];
        }
      } else if constexpr (EPI >= 2) {
        store_tile_staged<EPI, BN, RES, DIAG == kDiagNoStores, DIAG == kDiagNoFence>(
            g, &map_c, &map_g, m0 + wg * 64, n0, acc, smem + L::kStaging, boxes, fx);
      } else {
        store_tile<EPI>(g, br.C, m0 + wg * 64, n0, acc);
      }
      if constexpr (kXEpi<EPI>) {  // x's stage back to the producer, once every lane has read its part
        __syncwarp();
        release(s);
        if (++s == STAGES) s = 0, ph ^= 1;
      }
    }
    if (EPI >= 2 && lane == 0) cluster::tma_store_wait_all();
  }
}

// cuTensorMapEncodeTiled from the driver (the runtime is linked statically and libcuda is not: the entry point
// is looked up at run time); null where the driver has none.
PFN_cuTensorMapEncodeTiled_v12000 encoder() {
  static const PFN_cuTensorMapEncodeTiled_v12000 fn = [] {
    void* p = nullptr;
    cudaDriverEntryPointQueryResult q{};
    if (cudaGetDriverEntryPointByVersion("cuTensorMapEncodeTiled", &p, 12000, cudaEnableDefault, &q) != cudaSuccess ||
        q != cudaDriverEntryPointSuccess) {
      cudaGetLastError();
      return static_cast<PFN_cuTensorMapEncodeTiled_v12000>(nullptr);
    }
    return reinterpret_cast<PFN_cuTensorMapEncodeTiled_v12000>(p);
  }();
  return fn;
}

// The map of a K-major bf16 operand copy: R rows of Kp elements, read in boxes of bk (64 or 32) K by `rows`,
// swizzled 128B for 64 (as wgmma's descriptors expect: the operands' stages) and 64B for 32; also x's tile
// (XTile's boxes: 32 columns on 96-wide tiles).
bool encode(CUtensorMap* map, const __nv_bfloat16* p, int R, int Kp, int rows, int bk = 64) {
  const cuuint64_t dims[2] = {static_cast<cuuint64_t>(Kp), static_cast<cuuint64_t>(R)};
  const cuuint64_t strides[1] = {static_cast<cuuint64_t>(Kp) * 2};
  const cuuint32_t box[2] = {static_cast<cuuint32_t>(bk), static_cast<cuuint32_t>(rows)};
  const cuuint32_t estrides[2] = {1, 1};
  return encoder()(map, CU_TENSOR_MAP_DATA_TYPE_BFLOAT16, 2, const_cast<__nv_bfloat16*>(p), dims, strides, box, estrides,
                   CU_TENSOR_MAP_INTERLEAVE_NONE, bk == 64 ? CU_TENSOR_MAP_SWIZZLE_128B : CU_TENSOR_MAP_SWIZZLE_64B,
                   CU_TENSOR_MAP_L2_PROMOTION_L2_256B, CU_TENSOR_MAP_FLOAT_OOB_FILL_NONE) == CUDA_SUCCESS;
}

// The map of an output (M rows of N, ld apart; float32 or bf16 `half`) in store_tile_staged's boxes: a warp's 16
// rows of 32 bytes. False where the copy engine cannot address it (p or a row stride not 16-byte aligned).
bool encode_c(CUtensorMap* map, const void* p, bool half, int ld, const GemmArgs& g) {
  const int esz = half ? 2 : 4;
  if (!aligned16(p) || (static_cast<size_t>(ld) * esz) % 16 != 0) return false;
  const cuuint64_t dims[2] = {static_cast<cuuint64_t>(g.N), static_cast<cuuint64_t>(g.M)};
  const cuuint64_t strides[1] = {static_cast<cuuint64_t>(ld) * esz};
  const cuuint32_t box[2] = {static_cast<cuuint32_t>(32 / esz), 16};
  const cuuint32_t estrides[2] = {1, 1};
  return encoder()(map, half ? CU_TENSOR_MAP_DATA_TYPE_BFLOAT16 : CU_TENSOR_MAP_DATA_TYPE_FLOAT32, 2, const_cast<void*>(p),
                   dims, strides, box, estrides, CU_TENSOR_MAP_INTERLEAVE_NONE, CU_TENSOR_MAP_SWIZZLE_NONE,
                   CU_TENSOR_MAP_L2_PROMOTION_NONE, CU_TENSOR_MAP_FLOAT_OOB_FILL_NONE) == CUDA_SUCCESS;
}

long g_launches = 0, g_act_launches = 0, g_res_acc_launches = 0, g_x96_launches = 0;
#ifdef RT_GEMM_DIAG
cudaFuncAttributes g_last_attrs{};  // the kernel launched last: its registers and local (spilled) bytes
#endif

// mc, mg: the maps of C and act(C) (encode_c) for the staged epilogues (EPI 2 to 5; mg 4 and 5).
template <int BN, int STAGES, int MINB, int EPI, int RES = kResLoads, int DIAG = kDiagNone>
bool launch(const GemmArgs& g, const __nv_bfloat16* A, const __nv_bfloat16* B, int Kp, int splits,
            const CUtensorMap& mc, const CUtensorMap& mg) {
  using L = Layout<BN, STAGES>;
  auto kernel = gemm_tma_kernel<BN, STAGES, MINB, EPI, RES, DIAG>;
  // Per instantiation, once: the shared-memory limit raised, and how many blocks fit the GPU at once (the
  // grid is persistent: as many blocks as run together, each taking tiles in turn).
  static const int resident = [&] {
    int n = 0;
    if (cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, L::kSmem) != cudaSuccess ||
        cudaOccupancyMaxActiveBlocksPerMultiprocessor(&n, kernel, kThreads, L::kSmem) != cudaSuccess) {
      cudaGetLastError();
      return 0;
    }
    return n * limits().sms;
  }();
  if (resident <= 0) return false;
  CUtensorMap ma, mb;
  if (!encode(&ma, A, g.M, Kp, kBM, kBK) || !encode(&mb, B, g.N, Kp, BN, kBK)) return false;
  const int tiles_n = (g.N + BN - 1) / BN, tiles = tiles_n * ((g.M + kBM - 1) / kBM);
  const dim3 grid(static_cast<unsigned>(std::max(1, std::min(tiles, resident / splits))), 1, static_cast<unsigned>(splits));
  kernel<<<grid, kThreads, L::kSmem, stream()>>>(ma, mb, mc, mg, g, tiles_n, tiles);
  RT_CU_LAUNCH("gemm_tma");
#ifdef RT_GEMM_DIAG
  static const cudaFuncAttributes attrs = [&] {
    cudaFuncAttributes a{};
    if (cudaFuncGetAttributes(&a, kernel) != cudaSuccess) cudaGetLastError();
    return a;
  }();
  g_last_attrs = attrs;
#endif
  ++g_launches;
  if (EPI >= 4) ++g_act_launches;
  if (RES == kResAcc) ++g_res_acc_launches;
  if (kXEpi<EPI> && BN == 96) ++g_x96_launches;
  return true;
}

// Whether the staged epilogue is on (set_tma_store; RT_CUDA_TMA_STORE=0 turns it off). Session 17: the char
// window's products 263 -> 336 TFLOP/s, a char train step 10.31-10.37 -> 9.06-9.13 ms, the same bits.
bool g_tma_store = rt::env_switch("RT_CUDA_TMA_STORE", true);

// Tried on the staged epilogue and the stages, found no faster on a GPU and taken out in session 30 (README,
// "Devices"): the boxes stored by the warps' lanes rather than the copy engine (RT_CUDA_LANE_STORE: a char step
// 8.39 against 8.18 ms, H200 session 19, though the products alone were 3-6% faster), a warpgroup's 64-row boxes,
// a quarter of the engine's stores (RT_CUDA_TMA_TEAM: 7.44 against 7.34, H100 session 23), stages of 32 K, twice
// as many in the same bytes (RT_CUDA_TMA_BK32: 7.73 against 7.34; every product of a char window slower, c_attn
// 19.7 -> 25.6 us), a bf16 C's boxes 64 bytes wide on 192-wide tiles (RT_CUDA_TMA_BOX64: 6.73 against 6.65,
// H200 session 25), and on 192-wide tiles the residual asked into L2 before the K steps and added to the
// accumulators after them (RT_CUDA_RES_END: 7.21 against 7.20, H100 session 26; mlp c_proj 34.2 against 33.4 us a
// window).

// RT_CUDA_RES_PREFETCH (set_res_prefetch; default on, =0 turns it off; H100, 2026-12-05 session 23: char 7.66 -> 7.44
// ms; mlp c_proj 41.8 -> 29.0 us, attn c_proj 15.7 -> 13.7 by --gemm-diag): a float32 C's residual values loaded
// ahead of their boxes in the staged epilogue (store_tile_staged's PRE), on 96- and 192-wide tiles: the char config's
// attn c_proj and mlp c_proj forward, with their residual stream.
bool g_res_prefetch = rt::env_switch("RT_CUDA_RES_PREFETCH", true);

// RT_CUDA_RES_ACC (set_res_acc; default on, =0 turns it off): a float32 C's residual and bias as the accumulators'
// starting values (acc_from_res), on every tile width, ahead of the prefetch: the products add onto them and the
// epilogue only stores. Not the same bits as the epilogue's sum (another order of the same terms).
bool g_res_acc = rt::env_switch("RT_CUDA_RES_ACC", true);

// RT_CUDA_TMA_X96 (set_tma_x96; default 1, =0 turns it off; H100, 2026-12-05 session 23: char 7.49 -> 7.44 ms, copy
// 9.91 -> 9.71; mlp c_proj dx 48.7 -> 46.5 us by --gemm-diag): the activation's backward in the product (EPI 6, 7:
// mlp c_proj's dx with GELU's or ReLU's gradient) on 128 x 96 tiles rather than 128 x 128, x's tile as three
// 32-column boxes (XTile). Why: at 128 x 128 these kernels hold 64 accumulators a thread under the 96-register cap of
// two blocks an SM, and ptxas spills: EPI 6 328 bytes of stores and 332 of loads a thread, EPI 7 104 and 108 (since
// 00de567; 124 / 0 before). At 128 x 96 (48 accumulators) they spill nothing. The same bits.
// 1 (the default) takes only those two there; 2 every act_x product, EPI 9 too, the product that multiplies by a kept
// GELU' (RT_CUDA_KEEP_DGELU), which does not spill at 128 x 128 (93 registers): --gemm-diag on an H100 (session 30,
// bench/results/cuda-gemm-2026-12-06-s30c.log) timed it 31.7 us a char window there against 33.6 on 96-wide tiles,
// and a char step took 6.83 ms with 1 against 6.91 with 2 (H100, session 31, medians of ten alternated rounds, 1
// faster in nine; copy 9.86 against 9.89: bench/results/cuda-ab-2026-12-06-s31b.log).
int g_tma_x96 = rt::env_int("RT_CUDA_TMA_X96", 1);

// RT_CUDA_TMA_BN96 (set_tma_bn96): 1, the default, 128 x 96 tiles where they leave the SMs less uneven work than
// 128 x 128 ones (tiles_per_sm_span); 0 never; 2 for every product the 192-wide rule does not take
// (kernels_check). H200, session 19 (s19b): a char step 8.18 ms against 8.37 with 0; c_attn's product alone
// 26.1 against 29.1 us. Why: the char config's N = 384, K = 384 products make 192 tiles of
// 128 x 128 for 264 slots, so 60 SMs take two tiles and 72 one (73% of an even spread); 128 x 96 makes 256,
// two on 124 SMs, each three quarters the work. c_attn's 576 tiles spread 5 or 4 an SM; 96-wide, 768 spread
// 6 or 5, less work in all at the busiest SM (576 columns against 640).
int g_tma_bn96 = rt::env_int("RT_CUDA_TMA_BN96", 1);

// The busiest SM's share of a product on BN-wide tiles, in tile columns times tiles (a block's tiles are
// consecutive strides of the grid, and the grid's blocks spread evenly over the SMs).
long tiles_per_sm_span(const GemmArgs& g, int bn) {
  const long tiles = static_cast<long>((g.M + kBM - 1) / kBM) * ((g.N + bn - 1) / bn), sms = limits().sms;
  return (tiles + sms - 1) / sms * bn;
}

#ifdef RT_GEMM_DIAG
int g_diag = kDiagNone;
#endif

// The staged product, or a diagnostic build's variant of it where one is asked for.
template <int BN, int STAGES, int MINB, int EPI, int RES = kResLoads>
bool launch_staged(const GemmArgs& g, const __nv_bfloat16* A, const __nv_bfloat16* B, int Kp, int splits,
                   const CUtensorMap& mc, const CUtensorMap& mg) {
#ifdef RT_GEMM_DIAG
  constexpr int kDiagRes = RES == kResPrefetch ? kResLoads : RES;
  switch (g_diag) {  // (the engine's stores, no residual prefetch; the residual in the accumulators where asked)
    case kDiagNoStores: return launch<BN, STAGES, MINB, EPI, kDiagRes, kDiagNoStores>(g, A, B, Kp, splits, mc, mg);
    case kDiagNoEpilogue: return launch<BN, STAGES, MINB, EPI, kDiagRes, kDiagNoEpilogue>(g, A, B, Kp, splits, mc, mg);
    case kDiagNoMma: return launch<BN, STAGES, MINB, EPI, kDiagRes, kDiagNoMma>(g, A, B, Kp, splits, mc, mg);
    case kDiagNoLoads: return launch<BN, STAGES, MINB, EPI, kDiagRes, kDiagNoLoads>(g, A, B, Kp, splits, mc, mg);
    case kDiagNoFence: return launch<BN, STAGES, MINB, EPI, kDiagRes, kDiagNoFence>(g, A, B, Kp, splits, mc, mg);
    default: break;
  }
#endif
  return launch<BN, STAGES, MINB, EPI, RES>(g, A, B, Kp, splits, mc, mg);
}

// The staged epilogue where it is on, C is unsplit, beta is 0 and the copy engine can address C; else the
// direct one. g.act is applied (*act_applied) where the staged epilogue runs on a bf16 C and the engine can
// address act_out (act_x, on 128-wide tiles, or 96-wide ones with RT_CUDA_TMA_X96) too; else the product runs
// without it.
template <int BN, int STAGES, int MINB>
bool launch_epi(const GemmArgs& g, const __nv_bfloat16* A, const __nv_bfloat16* B, int Kp, int splits, bool* act_applied) {
  CUtensorMap mc{}, mg{};
  const bool staged = g_tma_store && !g.ws && g.beta == 0.0f && encode_c(&mc, g.C, g.c_half, g.ldc, g);
  const bool backward = g.act == kActGeluGradFast || g.act == kActReluGrad || g.act == kActMul;
  const bool forward = g.act == kActGeluFast || g.act == kActRelu || g.act == kActGeluBoth;
  int epi = (staged ? 2 : 0) + (g.c_half ? 1 : 0);
  // x's tile fills a stage at BN = 128 and 96 only (XTile); K > 0 so that the producer runs (it loads x); x read
  // as an operand copy is (M rows of N, in XTile's boxes of 128 rows, swizzled as the epilogue reads them)
  constexpr bool kXTile = BN == 128 || BN == 96;
  if (kXTile && backward && staged && g.c_half && g.K > 0 && g.ldc == g.N && g.N % 8 == 0 && aligned16(g.act_x) &&
      encode(&mg, static_cast<const __nv_bfloat16*>(g.act_x), g.M, g.N, 128, XTile<kXTile ? BN : 128>::kCols))
    epi = g.act == kActGeluGradFast ? 6 : g.act == kActMul ? 9 : 7;
  else if (forward && staged && g.c_half && encode_c(&mg, g.act_out, true, g.ldc, g))
    epi = g.act == kActGeluFast ? 4 : g.act == kActGeluBoth ? 8 : 5;
  bool launched = false;
  switch (epi) {
    case 0: launched = launch<BN, STAGES, MINB, 0>(g, A, B, Kp, splits, mc, mg); break;
    case 1: launched = launch<BN, STAGES, MINB, 1>(g, A, B, Kp, splits, mc, mg); break;
    case 2:
      // (the residual into the accumulators takes precedence over its prefetch; alpha 1, so that it adds onto the
      // products unscaled)
      if (g_res_acc && g.res && g.alpha == 1.0f) {
        launched = launch_staged<BN, STAGES, MINB, 2, kResAcc>(g, A, B, Kp, splits, mc, mg);
        break;
      }
      // (not on 128-wide tiles: there the prefetched values spilled 560-912 bytes a thread at 96 registers)
      if constexpr (BN != 128) {
        if (g_res_prefetch && g.res) {
          launched = launch_staged<BN, STAGES, MINB, 2, kResPrefetch>(g, A, B, Kp, splits, mc, mg);
          break;
        }
      }
      launched = launch_staged<BN, STAGES, MINB, 2, kResLoads>(g, A, B, Kp, splits, mc, mg);
      break;
    case 3: launched = launch_staged<BN, STAGES, MINB, 3>(g, A, B, Kp, splits, mc, mg); break;
    case 4: launched = launch_staged<BN, STAGES, MINB, 4>(g, A, B, Kp, splits, mc, mg); break;
    case 5: launched = launch_staged<BN, STAGES, MINB, 5>(g, A, B, Kp, splits, mc, mg); break;
    case 8: launched = launch_staged<BN, STAGES, MINB, 8>(g, A, B, Kp, splits, mc, mg); break;
    default:
      if constexpr (kXTile)
        launched = epi == 6   ? launch_staged<BN, STAGES, MINB, 6>(g, A, B, Kp, splits, mc, mg)
                   : epi == 9 ? launch_staged<BN, STAGES, MINB, 9>(g, A, B, Kp, splits, mc, mg)
                              : launch_staged<BN, STAGES, MINB, 7>(g, A, B, Kp, splits, mc, mg);
  }
  *act_applied = launched && epi >= 4;  // (4 to 9)
  return launched;
}

}  // namespace

namespace {
bool g_tma = rt::env_switch("RT_CUDA_GEMM_TMA", true);
}  // namespace

bool tma_map_bf16(CUtensorMap* map, const __nv_bfloat16* p, int R, int Kp, int rows, int bk) {
  return encoder() && aligned16(p) && (static_cast<size_t>(Kp) * 2) % 16 == 0 && encode(map, p, R, Kp, rows, bk);
}
void set_tma_gemm(bool on) { g_tma = on; }
void set_tma_store(bool on) { g_tma_store = on; }
void set_res_prefetch(bool on) { g_res_prefetch = on; }
void set_res_acc(bool on) { g_res_acc = on; }
bool res_acc() { return g_res_acc; }
long res_acc_launches() { return g_res_acc_launches; }
bool res_prefetch() { return g_res_prefetch; }
void set_tma_bn96(int mode) { g_tma_bn96 = mode; }
void set_tma_x96(int mode) { g_tma_x96 = mode; }
int tma_x96() { return g_tma_x96; }
long tma_x96_launches() { return g_x96_launches; }
int tma_bn96() { return g_tma_bn96; }
bool tma_store() { return g_tma_store; }
long tma_launches() { return g_launches; }
#ifdef RT_GEMM_DIAG
void set_tma_diag(int mode) { g_diag = mode; }
void tma_last_kernel(int* regs, int* local_bytes) {
  *regs = g_last_attrs.numRegs;
  *local_bytes = static_cast<int>(g_last_attrs.localSizeBytes);
}
#endif
long tma_act_launches() { return g_act_launches; }

bool gemm_tma(const GemmArgs& g, const __nv_bfloat16* A, const __nv_bfloat16* B, int Kp, int splits,
              bool* act_applied) {
  *act_applied = false;
  if (!g_tma || !encoder()) return false;
  // Products up to two 192-wide column tiles with a long reduction (the char config's N = 384, K = 1536 and
  // 1152 ones): 128 x 192 tiles, one block an SM, five stages. Else 128 x 128 or (tiles_per_sm_span) 128 x 96,
  // two blocks an SM, three stages.
  if (splits == 1 && g.N > 128 && g.N <= 384 && g.K > 512)
    return launch_epi<192, 5, 1>(g, A, B, Kp, splits, act_applied);
  // (the activation's backward by its own switch: x's tile in three boxes there)
  if (g_tma_bn96 && splits == 1 && !g.act_x &&
      (g_tma_bn96 == 2 || tiles_per_sm_span(g, 96) < tiles_per_sm_span(g, 128)))
    return launch_epi<96, 3, 2>(g, A, B, Kp, splits, act_applied);
  // (only where the staged epilogue would apply the activation: launch_epi checks the rest)
  if (g_tma_x96 && (g.act != kActMul || g_tma_x96 == 2) && splits == 1 && g.act_x && g_tma_store && !g.ws &&
      g.beta == 0.0f && g.c_half)
    return launch_epi<96, 3, 2>(g, A, B, Kp, splits, act_applied);
  return launch_epi<128, 3, 2>(g, A, B, Kp, splits, act_applied);
}

}  // namespace rt::cuda
