// The row-local chains of one block application, each as one kernel, for small d (the copy task's d = 96).
//
// Why: a window application of such a block is B * n = 4,096 rows of d = 96. Each of its ten-odd separate
// kernels is a few microseconds of arithmetic but 5-20 us of launch, pipeline fill and drain (the train step
// was ~3,000 dependent launches of 12 us each; bench/cuda/NOTES.md). Everything between two attentions
// touches one row at a time, so a block of threads can take 32 rows through LayerNorm, product, epilogue,
// LayerNorm, product ... with the rows in shared memory, and one application becomes five launches:
//
//   forward:  in_forward (ln_1, c_attn) | attention | out_forward (c_proj + residual, ln_2, c_fc, act,
//             c_proj + residual, with the dropouts)
//   backward: out_backward (the same chain's input gradients) | attention | in_backward (c_attn, ln_1)
//
// Each kernel writes exactly the buffers the separate ops write (the cache for the backward, the gradient
// stash for the one-per-layer weight products), with the same element-wise expressions and the same
// dropout masks (element r*d + c of rng(seed, stream*4 + 1 or 2)), so block.cc's other paths cannot tell.
//
// Products: every warp covers all 32 rows (two m16 tiles) and takes 16 output columns at a time. The
// activations come from shared memory, stored there already rounded to bf16 and padded 8 elements per row
// so that fragment reads are free of bank conflicts. The weights come straight from global memory (L2) in
// the packed copy pack_fused_weights makes once per layer pass: bf16, each matrix as [N][K] (the input
// gradient's ones transposed), so a fragment register is one aligned 32-bit load. d is a template
// argument: every loop has constant bounds and unrolls, which lets the compiler issue the weight loads of
// several k-steps ahead of their products (these kernels are latency-bound, not bandwidth-bound: a block
// reads 0.2 MB of weights per application at d = 96). Tiles come in with one float4 load per thread per
// 1,024 floats, all issued before the first use.
//
// F32 (the fp32 check mode) runs the same chains with float32 FMA instead of the tensor cores, accumulating
// in the same fragment layout from a float32 packed copy, so the fused kernels are checked at 1e-4 against
// the CPU too.
#include <algorithm>
#include <cstdlib>
#include <string>
#include <unordered_map>

#include "core/env.h"
#include "cuda/block_tiles.cuh"

namespace rt::cuda {
namespace {

using namespace tiles;

// One block of 256 threads per 32-row tile; ST: the weights staged in shared memory.
#define RT_TILE_KERNEL(NAME, ARGS)                                                       \
  template <bool F32, int D, bool ST>                                                   \
  __global__ void __launch_bounds__(kThreads) NAME##_kernel(ARGS a) {                   \
    extern __shared__ __align__(16) unsigned char smem[];                                \
    NAME##_tile<F32, D, ST>(a, static_cast<int>(blockIdx.x) * kTM, smem);                \
  }
RT_TILE_KERNEL(in_forward, InFwd)
RT_TILE_KERNEL(out_forward, OutFwd)
RT_TILE_KERNEL(out_backward, OutBwd)
RT_TILE_KERNEL(in_backward, InBwd)
#undef RT_TILE_KERNEL

// The chains are launched with programmatic dependent launch (pdl.cuh) on Hopper; RT_CUDA_PDL=0 turns it
// off, for timing. Why: a window is a few microseconds of work in each of ~8 dependent kernels, and each
// launch gap and each block's start (its weights staged from L2) otherwise sits on the critical path.
inline bool pdl_on() {
  static const bool on = rt::env_switch("RT_CUDA_PDL", true);
  return on && limits().cc >= 90;
}

// Blocks per cluster for the staged kernels (block_tiles.cuh's Staging multicasts their weights within one):
// RT_CUDA_CLUSTER (1, 2 or 4; default 4), where this file was built for sm_90a and runs on a 9.0 device.
int cluster_wanted() {
#ifdef RT_SM90A
  static const int n = [] {
    const char* e = std::getenv("RT_CUDA_CLUSTER");
    const int v = e && *e ? std::atoi(e) : 4;
    return v == 2 || v == 4 ? v : 1;
  }();
  return limits().cc == 90 ? n : 1;
#else
  return 1;
#endif
}

// The largest cluster, down from the one wanted, that divides the grid and lets it run in one wave (a
// cluster's blocks must share a GPC, so fewer blocks may fit at once in clusters than alone).
template <class Args, void (*K)(Args)>
int cluster_for(unsigned blocks, size_t smem) {
  static std::unordered_map<unsigned, int> chosen;  // by grid size
  const auto it = chosen.find(blocks);
  if (it != chosen.end()) return it->second;
  int cl = cluster_wanted();
  for (; cl > 1; cl /= 2) {
    if (blocks % cl) continue;
    const LaunchEx l(blocks, kThreads, smem, false, static_cast<unsigned>(cl));
    int fit = 0;
    if (cudaOccupancyMaxActiveClusters(&fit, K, &l.cfg) != cudaSuccess) {
      (void)cudaGetLastError();
      continue;
    }
    if (static_cast<unsigned>(fit) * cl >= blocks) break;
  }
  chosen.emplace(blocks, cl);
  return cl;
}

// Whether the chain launched next may follow pack_fused_weights directly: if so its predecessor may be the
// kernel writing its packed weights, and it stages them after pdl_wait() rather than before.
bool g_after_pack = true;

// Launches K over the rows, raising its shared-memory limit first when it needs more than the default 48 KB.
// With PDL a block asks for over half an SM's shared memory, so that the blocks placed while the
// predecessor still runs go one to an SM, as they would otherwise, instead of doubling up on the SMs freed
// first.
template <class Args, void (*K)(Args)>
void launch(const Args& args, size_t smem, const char* what, bool st) {
  static size_t raised = 48 * 1024;
  RT_CHECK(smem <= limits().smem_optin, std::string(what) + ": needs " + std::to_string(smem) +
                                            " bytes of shared memory, the GPU allows " +
                                            std::to_string(limits().smem_optin));
  Args a = args;
  const bool pdl = pdl_on();
  static const bool early = rt::env_switch("RT_CUDA_PDL_EARLY", true);
  a.early = pdl && early && !g_after_pack;
  g_after_pack = false;
  if (pdl) smem = std::max(smem, limits().smem_optin / 2 + 1024);
  if (smem > raised) {
    RT_CU(cudaFuncSetAttribute(K, cudaFuncAttributeMaxDynamicSharedMemorySize, static_cast<int>(smem)));
    raised = smem;
  }
  const unsigned blocks = (a.R + kTM - 1) / kTM;
  const int cl = st ? cluster_for<Args, K>(blocks, smem) : 1;
  const LaunchEx l(blocks, kThreads, smem, pdl, static_cast<unsigned>(cl));
  RT_CU(cudaLaunchKernelEx(&l.cfg, K, a));
  RT_CU_LAUNCH(what);
}

// Calls f.run<F32, D>() for the run-time precision and d (one of the fusable ones).
template <class F>
void dispatch(bool bf16, int d, const F& f) {
  auto by_d = [&](auto f32) {
    constexpr bool F32 = decltype(f32)::value;
    switch (d) {
      case 32: f.template run<F32, 32>(); break;
      case 64: f.template run<F32, 64>(); break;
      case 96: f.template run<F32, 96>(); break;
      case 128: f.template run<F32, 128>(); break;
      default: RT_CHECK(false, "fused block kernels: no instance for d = " + std::to_string(d));
    }
  };
  if (bf16) by_d(std::false_type());
  else by_d(std::true_type());
}

// The weights go through shared memory (bf16 only) when this GPU has room for them beside the tiles
// (d = 96 takes 219 KB in out_forward: an H100 or H200 has 227, an A100 163); RT_CUDA_STAGE=0 turns that
// off, for timing.
inline bool stage_on() {
  static const bool on = rt::env_switch("RT_CUDA_STAGE", true);
  return on;
}
constexpr size_t kSmemMax = 227 * 1024;  // the most any GPU we build for gives a block

#define RT_FUSED_LAUNCHER(NAME, ARGS, KERNEL)                                                         \
  struct NAME {                                                                                      \
    const ARGS& a;                                                                                   \
    template <bool F32, int D>                                                                       \
    void run() const {                                                                               \
      using S = Smem<F32, D>;                                                                        \
      if constexpr (!F32 && S::KERNEL##_st <= kSmemMax) {                                            \
        if (stage_on() && S::KERNEL##_st <= limits().smem_optin) {                                   \
          launch<ARGS, KERNEL##_kernel<F32, D, true>>(a, S::KERNEL##_st, "block_" #KERNEL, true);    \
          return;                                                                                    \
        }                                                                                            \
      }                                                                                              \
      launch<ARGS, KERNEL##_kernel<F32, D, false>>(a, S::KERNEL, "block_" #KERNEL, false);           \
    }                                                                                                \
  };
RT_FUSED_LAUNCHER(InForward, InFwd, in_forward)
RT_FUSED_LAUNCHER(OutForward, OutFwd, out_forward)
RT_FUSED_LAUNCHER(OutBackward, OutBwd, out_backward)
RT_FUSED_LAUNCHER(InBackward, InBwd, in_backward)
#undef RT_FUSED_LAUNCHER

}  // namespace

bool block_fusable(int d) { return d == 32 || d == 64 || d == 96 || d == 128; }

size_t fused_weights_floats(bool bf16, int d) {
  const size_t n = Packed::total(d);
  return bf16 ? (n + 1) / 2 : n;
}

void pack_fused_weights(bool bf16, const BlockShape& s, const BlockWeights& w, float* dst) {
  const size_t n = Packed::total(s.d);
  const unsigned blocks = blocks_for(n, 256, 1024);
  g_after_pack = true;
  if (bf16)
    pack_kernel<false><<<blocks, 256, 0, stream()>>>(reinterpret_cast<__nv_bfloat16*>(dst), w.attn_w, w.attn_proj_w,
                                                     w.fc_w, w.mlp_proj_w, s.d);
  else
    pack_kernel<true><<<blocks, 256, 0, stream()>>>(dst, w.attn_w, w.attn_proj_w, w.fc_w, w.mlp_proj_w, s.d);
  RT_CU_LAUNCH("pack_fused_weights");
}

void block_in_forward(bool bf16, const BlockShape& s, const BlockWeights& w, const BlockCache& c,
                      const WindowGlue* glue) {
  InFwd a{c.B * c.n, c.x, w.ln1_w, w.ln1_b, w.attn_b, w.packed, c.h1, c.mean1, c.rstd1, c.qkv};
  a.half = c.half;
  if (glue) {
    a.glue = *glue;
    a.n = c.n;
  }
  if (!a.R) return;
  dispatch(bf16, s.d, InForward{a});
}

// Under relu the out-chains need no f: relu'(f) is relu'(g) (g = relu(f) is positive exactly where f is,
// NaN and -0 included), and g is kept for c_proj's weight gradient anyway. f is [rows][4d] float32 written
// each window forward and read back each window backward (6.3 MB each way a window for the copy config).
// The layer then allocates none (Backend::block_keeps_f): out_forward writes f where the cache has one, and
// out_backward reads g where it has none. RT_CUDA_RELU_G=0 keeps f.
bool relu_from_g(const BlockShape& s) {
  static const bool on = rt::env_switch("RT_CUDA_RELU_G", true);
  return on && !s.gelu;
}

bool block_out_attention(bool bf16, const BlockShape& s, int n) {
  static const bool on = rt::env_switch("RT_CUDA_FUSED_ATTN", true);
  return on && kAttnFits && bf16 && block_fusable(s.d) && s.heads > 0 && s.d == kAttnHD * s.heads && n == 2 * kTM;
}

void block_out_forward(bool bf16, const BlockShape& s, const BlockWeights& w, const BlockCache& c, float* y) {
  OutFwd a{c.B * c.n, s.gelu, make_drop(c.p, c.seed, c.stream * 4 + 1), make_drop(c.p, c.seed, c.stream * 4 + 2),
                 c.att, c.x, w.attn_proj_b, w.ln2_w, w.ln2_b, w.fc_b, w.mlp_proj_b, w.packed,
                 c.x2, c.h2, c.mean2, c.rstd2, c.f, c.g, y};
  a.half = c.half;
  if (block_out_attention(bf16, s, c.n)) {
    a.qkv = c.qkv;
    a.probs = c.probs;
    a.amask = attn::make_mask(c.p, c.seed, c.stream * 4 + 0);
    a.scale = attn::geo_of(c.B, c.n, s.d, s.heads).scale;
    a.n = c.n;
  }
  if (!a.R) return;
  dispatch(bf16, s.d, OutForward{a});
}

int fused_row_blocks(int rows) { return (rows + kTM - 1) / kTM; }

void block_out_backward(bool bf16, const BlockShape& s, const BlockWeights& w, const BlockCache& c,
                        const BlockGradStash& st, float* dy, float* dx2, float* datt, const BackGlue* glue) {
  const bool drop = c.p > 0;
  OutBwd a{c.B * c.n, s.gelu, make_drop(c.p, c.seed, c.stream * 4 + 1), make_drop(c.p, c.seed, c.stream * 4 + 2),
           dy, c.f ? c.f : c.g, c.x2, c.mean2, c.rstd2, w.ln2_w, w.packed,
           (drop || st.dm != dy) ? st.dm : nullptr, st.dg, st.dh2, dx2, drop ? st.da : nullptr, datt};
  a.f_half = !c.f && c.half;
  a.dg_half = st.half;
  if (glue) {
    a.glue = *glue;
    a.n = c.n;
    a.dy_out = dy;
  }
  if (!a.R) return;
  dispatch(bf16, s.d, OutBackward{a});
}

void block_in_backward(bool bf16, const BlockShape& s, const BlockWeights& w, const BlockCache& c,
                       const BlockGradStash& st, const float* dx2, float* dx) {
  InBwd a{c.B * c.n, st.dqkv, c.x, c.mean1, c.rstd1, w.ln1_w, dx2, w.packed, st.dh1, dx};
  a.half = st.half;
  if (!a.R) return;
  dispatch(bf16, s.d, InBackward{a});
}

}  // namespace rt::cuda
