// Causal multi-head self-attention, forward and backward, as cpu/attention.cc (same probs layout, same
// dropout mask indices, dqkv written).
//
// Two paths, chosen by shape only:
//  - fused (window pairs: n = 2w, typically <= 64): one block per (batch, head) does scores, causal
//    softmax, dropout and the values in one kernel, everything in shared memory, float32 arithmetic;
//    backward likewise (dV, dP, the softmax backward, dQ and dK in one kernel). One launch per window
//    step each way.
//  - batched products (w = 0 over long sequences, or heads too large for shared memory): scores and the
//    value products go through cuda::gemm batched over (batch, head), with a row-wise softmax kernel in
//    between, writing straight into `probs` (the O(n^2) buffer the contract keeps for backward).
// RT_CUDA_ATTN_GEMM=1 forces the second path (for checking it on small shapes).
#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <string>
#include <type_traits>

#include "core/env.h"
#include "core/rng.h"
#include "cuda/common.cuh"
#include "cuda/attention_fused.cuh"
#include "cuda/attention_mma.cuh"
#include "cuda/kernels.cuh"
#include "cuda/twin.cuh"
#include "cuda/pdl.cuh"
#include "cuda/rng.cuh"

namespace rt::cuda {
namespace {

constexpr int kThreads = kGroup;
using attn::Geo;
using attn::Mask;
using attn::make_mask;
using attn::fused_forward_smem;
using attn::fused_backward_smem;

template <int HD>
__global__ void __launch_bounds__(kThreads) attention_forward_fused(const float* __restrict__ qkv,
                                                                    float* __restrict__ probs, float* __restrict__ out,
                                                                    Geo g, Mask mask) {
  extern __shared__ float sm[];
  attn::forward_head<HD>(qkv, probs, out, g, mask, blockIdx.x / g.H, blockIdx.x % g.H, sm);
}

template <int HD>
__global__ void __launch_bounds__(kThreads) attention_backward_fused(const float* __restrict__ qkv,
                                                                     const float* __restrict__ probs,
                                                                     const float* __restrict__ dout,
                                                                     float* __restrict__ dqkv, Geo g, Mask mask) {
  extern __shared__ float sm[];
  attn::backward_head<HD>(qkv, probs, dout, dqkv, g, mask, blockIdx.x / g.H, blockIdx.x % g.H, sm);
}

// The (element, head) a block's threads take: blockIdx.x, or with PAIR (n <= 32, B H even) 2 blockIdx.x
// and 2 blockIdx.x + 1, one per half of the block.
template <bool PAIR>
__device__ __forceinline__ int head_of_block() {
  return PAIR ? 2 * blockIdx.x + attn::HeadThreads<true>::sub() : blockIdx.x;
}

template <int HD, bool PAIR>
__global__ void __launch_bounds__(attn::kMmaThreads) attention_forward_mma(const float* __restrict__ qkv,
                                                                           float* __restrict__ probs,
                                                                           float* __restrict__ out,
                                                                           __nv_bfloat16* __restrict__ twin, Geo g,
                                                                           Mask mask) {
  pdl_trigger();  // out_forward's blocks may take the SMs this grid leaves (pdl.cuh)
  const int bh = head_of_block<PAIR>();
  attn::forward_head_mma<HD, PAIR>(qkv, probs, out, twin, g, mask, bh / g.H, bh % g.H);
}

// DH: dout holds bf16 (attention_backward's dout_half). A template parameter: as a run-time flag it took the
// char config's instantiation from 80 registers a thread to 84, which the allocator rounds to 88: five blocks
// an SM instead of six, and its 768 blocks in two waves.
template <int HD, bool PAIR, bool DH>
__global__ void __launch_bounds__(attn::kMmaThreads) attention_backward_mma(const float* __restrict__ qkv,
                                                                            const float* __restrict__ probs,
                                                                            const float* __restrict__ dout,
                                                                            float* __restrict__ dqkv,
                                                                            __nv_bfloat16* __restrict__ twin, Geo g,
                                                                            Mask mask) {
  pdl_trigger();  // in_backward's blocks likewise
  const int bh = head_of_block<PAIR>();
  attn::backward_head_mma<HD, PAIR, DH>(qkv, probs, dout, dqkv, twin, g, mask, bh / g.H, bh % g.H);
}

// forward_heads_persist's kernel: `units` (element, head) units (pairs with PAIR) over a grid of a few blocks an SM.
template <int HD, bool PAIR>
__global__ void __launch_bounds__(attn::kMmaThreads) attention_forward_mma_persist(const float* __restrict__ qkv,
                                                                                   float* __restrict__ probs,
                                                                                   float* __restrict__ out,
                                                                                   __nv_bfloat16* __restrict__ twin,
                                                                                   Geo g, Mask mask, int units) {
  attn::forward_heads_persist<HD, PAIR>(qkv, probs, out, twin, g, mask, units);
}

// forward_heads_async's kernel: the same walk, S stages of dynamic shared memory.
template <int HD, bool PAIR, int S>
__global__ void __launch_bounds__(attn::kMmaThreads) attention_forward_mma_async(const float* __restrict__ qkv,
                                                                                 float* __restrict__ probs,
                                                                                 float* __restrict__ out,
                                                                                 __nv_bfloat16* __restrict__ twin,
                                                                                 Geo g, Mask mask, int units) {
  extern __shared__ __align__(16) __nv_bfloat16 attn_stages[];
  attn::forward_heads_async<HD, PAIR, S>(qkv, probs, out, twin, g, mask, units, attn_stages);
}

// backward_heads_persist's kernel, likewise (qkv and dout bf16).
template <int HD, bool PAIR>
__global__ void __launch_bounds__(attn::kMmaThreads) attention_backward_mma_persist(const float* __restrict__ qkv,
                                                                                    const float* __restrict__ probs,
                                                                                    const float* __restrict__ dout,
                                                                                    float* __restrict__ dqkv,
                                                                                    __nv_bfloat16* __restrict__ twin,
                                                                                    Geo g, Mask mask, int units) {
  attn::backward_heads_persist<HD, PAIR>(qkv, probs, dout, dqkv, twin, g, mask, units);
}

// RT_CUDA_ATTN_PERSIST=N (set_attn_persist): the forward of a bf16 qkv, and the backward of a bf16 qkv and dout,
// by the persistent kernels with N blocks an SM (0: the kernels of a block a unit). Two by default since
// session 20: the kernels shrank in session 19 (ncu: backward 37.3 -> 31.1 us a window, forward 18.3 -> 16.4),
// but a char step did not while the optimizer's wait drained the GPU every step; with that gone, a char step
// 7.51 ms with this, the fused activations and LN_GLUE against 7.68 with the activations alone (H200, three
// rounds alternated: bench/results/cuda-model-2026-12-05b-peer.log).
int g_attn_persist = rt::env_int("RT_CUDA_ATTN_PERSIST", 2);
// RT_CUDA_ATTN_ASYNC=N (set_attn_async): the forward of a bf16 qkv by forward_heads_async instead of the persistent
// kernel, N blocks an SM (0: off), RT_CUDA_ATTN_STAGES (2 or 3) stages each. Three blocks of two stages by default
// since session 32 (H100, char: the kernel 15.67 us a window against 16.93, ncu, and 14.94 once its copies lost
// their run-time divisions; a step 6.665 ms against 6.720, medians of four alternated rounds; two blocks of three
// stages 17.12 us, one block 6.80 ms a step: bench/results/cuda-ab-2026-12-06-s32b.log, cuda-ncu-2026-12-06-s32c.log,
// cuda-ab-2026-12-06-s32f.log). The backward likewise was no faster than its persistent kernel (33.39 against 33.49
// us; bench/cuda/NOTES.md, session 32) and went out again.
int g_attn_async = rt::env_int("RT_CUDA_ATTN_ASYNC", 3);
int g_attn_stages = rt::env_int("RT_CUDA_ATTN_STAGES", 2);

// attention_forward_mma_async<HD, PAIR, S> over `units` units, g_attn_async blocks an SM.
template <int HD, bool PAIR, int S>
void launch_forward_async(const float* qkv, float* probs, float* out, __nv_bfloat16* twin, const Geo& g,
                          const Mask& mask, int units) {
  constexpr int smem = attn::async_forward_smem<HD, S>();
  opt_in_smem<attention_forward_mma_async<HD, PAIR, S>>(smem);
  const unsigned grid = static_cast<unsigned>(std::min(units, g_attn_async * limits().sms));
  attention_forward_mma_async<HD, PAIR, S><<<grid, attn::kMmaThreads, smem, stream()>>>(qkv, probs, out, twin, g, mask,
                                                                                      units);
}

// The tensor-core kernels take bf16 window pairs of the shapes they are written for (attention_mma.cuh);
// RT_CUDA_ATTN_MMA=0 keeps every shape on the float32 kernels, for timing and checking.
bool use_mma(bool bf16, const Geo& g) {
  static const bool off = !rt::env_switch("RT_CUDA_ATTN_MMA", true);
  return bf16 && !off && attn::mma_fits(g.n, g.hd);
}

// Two heads a block for window pairs of at most 32 (attention_mma.cuh); RT_CUDA_ATTN_PAIR=0 keeps one.
bool pair_heads(const Geo& g, int BH) {
  static const bool on = rt::env_switch("RT_CUDA_ATTN_PAIR", true);
  return on && g.n <= 32 && BH % 2 == 0;
}

// f(std::true_type) or f(std::false_type): a run-time flag as a template parameter.
template <class F>
void by_bool(bool b, F&& f) {
  if (b) f(std::true_type());
  else f(std::false_type());
}

template <class F>
void by_hd(int hd, F&& f) {
  switch (hd) {
    case 16: f(std::integral_constant<int, 16>()); break;
    case 32: f(std::integral_constant<int, 32>()); break;
    default: f(std::integral_constant<int, 64>()); break;
  }
}

// ------------------------------------------------------------------------------------------------
// Batched-product path: row kernels between the GEMMs.

// In place over each row i of probs [BH, n, n] holding scores: causal softmax (zeros past the diagonal);
// with dropout also writes the dropped row to pd.
__global__ void softmax_rows_kernel(float* probs, float* pd, long long rows, int n, Mask mask) {
  const long long row = static_cast<long long>(blockIdx.x) * (blockDim.x / 32) + threadIdx.x / 32;
  const int lane = threadIdx.x % 32;
  if (row >= rows) return;
  const int i = static_cast<int>(row % n);
  float* r = probs + row * n;
  const float inv = attn::causal_exp_row(r, i, lane);
  const uint64_t mbase = static_cast<uint64_t>(row) * n;
  for (int j = lane; j < n; j += 32) {
    const float pr = j <= i ? r[j] * inv : 0.0f;
    r[j] = pr;
    if (pd) pd[row * n + j] = j <= i ? pr * mask(mbase + j) : 0.0f;
  }
}

// pd = probs * mask (zeros past the diagonal are already there).
__global__ void dropped_probs_kernel(const float* __restrict__ probs, float* __restrict__ pd, size_t total, Mask mask) {
  const size_t stride = static_cast<size_t>(gridDim.x) * blockDim.x;
  for (size_t i = blockIdx.x * static_cast<size_t>(blockDim.x) + threadIdx.x; i < total; i += stride)
    pd[i] = probs[i] * mask(i);
}

// In place over rows of G [BH, n, n] holding dP_drop = dO V^T: dS = P * (mask*G - rowsum(mask*G * P)) * scale,
// zeros past the diagonal.
__global__ void softmax_backward_rows_kernel(const float* __restrict__ probs, float* G, long long rows, int n,
                                             float scale, Mask mask) {
  const long long row = static_cast<long long>(blockIdx.x) * (blockDim.x / 32) + threadIdx.x / 32;
  const int lane = threadIdx.x % 32;
  if (row >= rows) return;
  const int i = static_cast<int>(row % n);
  float* gr = G + row * n;
  const float* pr = probs + row * n;
  const uint64_t mbase = static_cast<uint64_t>(row) * n;
  float t = 0.0f;
  for (int j = lane; j <= i; j += 32) {
    const float v = gr[j] * mask(mbase + j);
    gr[j] = v;
    t += v * pr[j];
  }
  t = warp_sum(t);
  for (int j = lane; j < n; j += 32) gr[j] = j <= i ? pr[j] * (gr[j] - t) * scale : 0.0f;
}

Geo check_geo(const char* who, int B, int n, int d, int H, float p) {
  const std::string w(who);
  RT_CHECK(B >= 0 && n >= 0, w + ": B and n must be >= 0, got B=" + std::to_string(B) + " n=" + std::to_string(n));
  RT_CHECK(H > 0 && d > 0 && d % H == 0, w + ": d must be a positive multiple of the head count H, got d=" +
                                             std::to_string(d) + " H=" + std::to_string(H));
  RT_CHECK(p >= 0.0f && p < 1.0f, w + ": dropout rate p must be in [0, 1), got " + std::to_string(p));
  RT_CHECK(static_cast<long long>(B) * H <= 65535, w + ": batch * heads must be at most 65535 on CUDA");
  return attn::geo_of(B, n, d, H);
}

bool use_fused(const Geo& g) {
  static const bool force_gemm = rt::env_switch("RT_CUDA_ATTN_GEMM", false);
  if (force_gemm || g.n > 256) return false;
  const size_t need = std::max(fused_forward_smem(g.n, g.hd), fused_backward_smem(g.n, g.hd));
  return need <= limits().smem_optin;
}

// The fused kernels may take more than 48 KB of shared memory only after opting in (opt_in_smem: once per kernel).
template <int HD>
void launch_fused_forward(const Geo& g, const float* qkv, float* probs, float* out, const Mask& mask) {
  opt_in_smem<attention_forward_fused<HD>>(static_cast<int>(limits().smem_optin));
  attention_forward_fused<HD><<<g.B * g.H, kThreads, fused_forward_smem(g.n, g.hd), stream()>>>(qkv, probs, out, g, mask);
}
template <int HD>
void launch_fused_backward(const Geo& g, const float* qkv, const float* probs, const float* dout, float* dqkv,
                           const Mask& mask) {
  opt_in_smem<attention_backward_fused<HD>>(static_cast<int>(limits().smem_optin));
  attention_backward_fused<HD><<<g.B * g.H, kThreads, fused_backward_smem(g.n, g.hd), stream()>>>(qkv, probs, dout,
                                                                                                  dqkv, g, mask);
}

unsigned row_blocks(long long rows) { return static_cast<unsigned>((rows + 7) / 8); }

// A float32 copy of count bf16 values (behind a float pointer: a bf16 qkv or dout), for the kernels other than
// the tensor-core ones, which read bf16 as it is.
Scratch f32_copy(const float* half, size_t count) {
  Scratch f(count * sizeof(float));
  to_f32(reinterpret_cast<const __nv_bfloat16*>(half), f.f32(), count);
  return f;
}
Scratch qkv_f32(const float* qkv, int B, int n, int d) { return f32_copy(qkv, static_cast<size_t>(B) * n * 3 * d); }

}  // namespace

void set_attn_persist(int blocks_per_sm) { g_attn_persist = blocks_per_sm; }
int attn_persist() { return g_attn_persist; }
void set_attn_async(int blocks_per_sm, int stages) {
  RT_CHECK(stages == 2 || stages == 3, "set_attn_async: stages must be 2 or 3, got " + std::to_string(stages));
  g_attn_async = blocks_per_sm;
  g_attn_stages = stages;
}
int attn_async() { return g_attn_async; }
int attn_stages() { return g_attn_stages; }

bool attention_writes_twin(bool bf16, int n, int d, int H) {
  return H > 0 && d > 0 && d % H == 0 && use_mma(bf16, attn::geo_of(1, n, d, H));
}
// RT_CUDA_ATTN_KEEP_PROBS=1: the layer keeps every window's probs for its backward, as before session 33. By default
// the tensor-core shapes recompute them (probs_rows_mma), the same bits: on an H100 (ncu, us a window) the char
// forward 12.32 against 13.81 and backward 33.23 against 34.58, the copy backward 11.26 against 11.47 and its out
// chain 19.44 against 19.91; a step's medians char 6.565 against 6.615 ms, copy 9.785 against 9.97; a bench run's GPU
// memory copy 4,803 against 5,635 MiB, char 6,323 against 6,419 (bench/results/cuda-ab-2026-12-06-s33b.log,
// cuda-ncu-2026-12-06-s33c.log).
bool g_attn_keep_probs = rt::env_switch("RT_CUDA_ATTN_KEEP_PROBS", false);
void set_attn_keep_probs(bool keep) { g_attn_keep_probs = keep; }
bool attention_recomputes_probs(bool bf16, int n, int d, int H) {
  return !g_attn_keep_probs && attention_writes_twin(bf16, n, d, H);
}

void attention_forward(bool bf16, const float* qkv, float* probs, float* out, int B, int n, int d, int H, float p,
                       uint64_t seed, uint64_t stream_id, __nv_bfloat16* twin, bool qkv_half) {
  Geo g = check_geo("attention_forward", B, n, d, H, p);
  if (B == 0 || n == 0) return;
  if (qkv_half && !use_mma(bf16, g)) {
    const Scratch f = qkv_f32(qkv, B, n, d);
    attention_forward(bf16, f.f32(), probs, out, B, n, d, H, p, seed, stream_id, twin);
    return;
  }
  g.qkv_half = qkv_half;
  const Mask mask = make_mask(p, seed, stream_id);
  const int BH = B * H;
  RT_CHECK(out || (twin && use_mma(bf16, g)), "attention_forward: out is null where no bf16 copy is written");
  RT_CHECK(probs || use_mma(bf16, g),
           "attention_forward: probs is null for a window whose backward cannot recompute them (n = " +
               std::to_string(n) + ", head size " + std::to_string(g.hd) + ")");
  if (use_mma(bf16, g)) {
    by_hd(g.hd, [&](auto hd) {
      constexpr int HD = decltype(hd)::value;
      by_bool(pair_heads(g, BH), [&](auto pair) {
        constexpr bool PAIR = decltype(pair)::value;
        const int units = PAIR ? BH / 2 : BH;
        // cp.async's 16-byte copies: every row and head of a 16-byte aligned qkv is (hd a multiple of 16).
        if (qkv_half && g_attn_async > 0 && reinterpret_cast<uintptr_t>(qkv) % 16 == 0) {
          if (g_attn_stages == 2) launch_forward_async<HD, PAIR, 2>(qkv, probs, out, twin, g, mask, units);
          else launch_forward_async<HD, PAIR, 3>(qkv, probs, out, twin, g, mask, units);
        } else if (qkv_half && g_attn_persist > 0) {
          const unsigned grid = static_cast<unsigned>(std::min(units, g_attn_persist * limits().sms));
          attention_forward_mma_persist<HD, PAIR><<<grid, attn::kMmaThreads, 0, stream()>>>(qkv, probs, out, twin, g, mask,
                                                                                             units);
        } else {
          attention_forward_mma<HD, PAIR><<<units, attn::kMmaThreads, 0, stream()>>>(qkv, probs, out, twin, g, mask);
        }
      });
    });
    RT_CU_LAUNCH("attention_forward (mma)");
    return;
  }
  if (use_fused(g)) {
    // Head sizes of the usual configs get their own kernels (constant loop bounds, no idle lanes).
    switch (g.hd) {
      case 16: launch_fused_forward<16>(g, qkv, probs, out, mask); break;
      case 32: launch_fused_forward<32>(g, qkv, probs, out, mask); break;
      case 64: launch_fused_forward<64>(g, qkv, probs, out, mask); break;
      default: launch_fused_forward<0>(g, qkv, probs, out, mask); break;
    }
    RT_CU_LAUNCH("attention_forward (fused)");
    return;
  }
  const long long nn = static_cast<long long>(n) * n, rows = static_cast<long long>(BH) * n;
  Batch bt;
  bt.count = BH;
  bt.inner = H;
  // S = scale * Q K^T, straight into probs.
  bt.a = {static_cast<long long>(n) * g.ld, g.hd};
  bt.b = bt.a;
  bt.c = {H * nn, nn};
  gemm(bf16, false, true, n, n, g.hd, g.scale, qkv, g.ld, qkv + d, g.ld, 0.0f, probs, n, nullptr, &bt);
  Scratch pd;
  if (mask.on) pd = Scratch(static_cast<size_t>(BH) * nn * sizeof(float));
  RT_CHECK(row_blocks(rows) <= 0x7fffffffu, "attention_forward: too many rows");
  softmax_rows_kernel<<<row_blocks(rows), 256, 0, stream()>>>(probs, pd.f32(), rows, n, mask);
  RT_CU_LAUNCH("attention_forward softmax");
  // out = P_drop V
  bt.a = {H * nn, nn};
  bt.b = {static_cast<long long>(n) * g.ld, g.hd};
  bt.c = {static_cast<long long>(n) * d, g.hd};
  gemm(bf16, false, false, n, g.hd, n, 1.0f, mask.on ? pd.f32() : probs, n, qkv + 2 * d, g.ld, 0.0f, out, d, nullptr, &bt);
}

void attention_backward_bf16(bool bf16, const float* qkv, const float* probs, const float* dout,
                             __nv_bfloat16* dqkv, int B, int n, int d, int H, float p, uint64_t seed,
                             uint64_t stream_id, bool qkv_half) {
  if (attention_writes_twin(bf16, n, d, H)) {
    attention_backward(bf16, qkv, probs, dout, nullptr, B, n, d, H, p, seed, stream_id, dqkv, qkv_half);
    return;
  }
  const size_t count = static_cast<size_t>(B) * n * 3 * d;
  Scratch f(count * sizeof(float));
  attention_backward(bf16, qkv, probs, dout, f.f32(), B, n, d, H, p, seed, stream_id, nullptr, qkv_half);
  to_bf16(f.f32(), dqkv, count);
}

void attention_backward(bool bf16, const float* qkv, const float* probs, const float* dout, float* dqkv, int B, int n,
                        int d, int H, float p, uint64_t seed, uint64_t stream_id, __nv_bfloat16* twin, bool qkv_half,
                        bool dout_half) {
  Geo g = check_geo("attention_backward", B, n, d, H, p);
  if (B == 0 || n == 0) return;
  if ((qkv_half || dout_half) && !use_mma(bf16, g)) {
    const Scratch f = qkv_half ? qkv_f32(qkv, B, n, d) : Scratch();
    const Scratch o = dout_half ? f32_copy(dout, static_cast<size_t>(B) * n * d) : Scratch();
    attention_backward(bf16, qkv_half ? f.f32() : qkv, probs, dout_half ? o.f32() : dout, dqkv, B, n, d, H, p, seed,
                       stream_id, twin);
    return;
  }
  g.qkv_half = qkv_half;
  const Mask mask = make_mask(p, seed, stream_id);
  const int BH = B * H;
  RT_CHECK(dqkv || (twin && use_mma(bf16, g)), "attention_backward: dqkv is null where no bf16 copy is written");
  RT_CHECK(probs || use_mma(bf16, g),
           "attention_backward: probs is null for a window it cannot recompute them for (n = " + std::to_string(n) +
               ", head size " + std::to_string(g.hd) + ")");
  if (use_mma(bf16, g)) {
    by_hd(g.hd, [&](auto hd) {
      constexpr int HD = decltype(hd)::value;
      by_bool(pair_heads(g, BH), [&](auto pair) {
        constexpr bool PAIR = decltype(pair)::value;
        const int units = PAIR ? BH / 2 : BH;
        if (qkv_half && dout_half && g_attn_persist > 0) {
          const unsigned grid = static_cast<unsigned>(std::min(units, g_attn_persist * limits().sms));
          attention_backward_mma_persist<HD, PAIR><<<grid, attn::kMmaThreads, 0, stream()>>>(qkv, probs, dout, dqkv, twin,
                                                                                              g, mask, units);
          return;
        }
        by_bool(dout_half, [&](auto dh) {
          constexpr bool DH = decltype(dh)::value;
          attention_backward_mma<HD, PAIR, DH><<<units, attn::kMmaThreads, 0, stream()>>>(qkv, probs, dout, dqkv, twin, g,
                                                                                           mask);
        });
      });
    });
    RT_CU_LAUNCH("attention_backward (mma)");
    return;
  }
  if (use_fused(g)) {
    switch (g.hd) {
      case 16: launch_fused_backward<16>(g, qkv, probs, dout, dqkv, mask); break;
      case 32: launch_fused_backward<32>(g, qkv, probs, dout, dqkv, mask); break;
      case 64: launch_fused_backward<64>(g, qkv, probs, dout, dqkv, mask); break;
      default: launch_fused_backward<0>(g, qkv, probs, dout, dqkv, mask); break;
    }
    RT_CU_LAUNCH("attention_backward (fused)");
    return;
  }
  const long long nn = static_cast<long long>(n) * n, rows = static_cast<long long>(BH) * n;
  const long long qs = static_cast<long long>(n) * g.ld, os = static_cast<long long>(n) * d;
  Scratch pd, G(static_cast<size_t>(BH) * nn * sizeof(float));
  const float* Pd = probs;
  if (mask.on) {
    pd = Scratch(static_cast<size_t>(BH) * nn * sizeof(float));
    dropped_probs_kernel<<<blocks_for(static_cast<size_t>(BH) * nn, 256), 256, 0, stream()>>>(
        probs, pd.f32(), static_cast<size_t>(BH) * nn, mask);
    RT_CU_LAUNCH("attention_backward dropout");
    Pd = pd.f32();
  }
  Batch bt;
  bt.count = BH;
  bt.inner = H;
  // dV = P_drop^T dO
  bt.a = {H * nn, nn};
  bt.b = {os, g.hd};
  bt.c = {qs, g.hd};
  gemm(bf16, true, false, n, g.hd, n, 1.0f, Pd, n, dout, d, 0.0f, dqkv + 2 * d, g.ld, nullptr, &bt);
  // G = dO V^T, then the softmax backward in place.
  bt.a = {os, g.hd};
  bt.b = {qs, g.hd};
  bt.c = {H * nn, nn};
  gemm(bf16, false, true, n, n, g.hd, 1.0f, dout, d, qkv + 2 * d, g.ld, 0.0f, G.f32(), n, nullptr, &bt);
  softmax_backward_rows_kernel<<<row_blocks(rows), 256, 0, stream()>>>(probs, G.f32(), rows, n, g.scale, mask);
  RT_CU_LAUNCH("attention_backward softmax");
  // dQ = dS K;  dK = dS^T Q
  bt.a = {H * nn, nn};
  bt.b = {qs, g.hd};
  bt.c = {qs, g.hd};
  gemm(bf16, false, false, n, g.hd, n, 1.0f, G.f32(), n, qkv + d, g.ld, 0.0f, dqkv, g.ld, nullptr, &bt);
  gemm(bf16, true, false, n, g.hd, n, 1.0f, G.f32(), n, qkv, g.ld, 0.0f, dqkv + d, g.ld, nullptr, &bt);
}

}  // namespace rt::cuda
