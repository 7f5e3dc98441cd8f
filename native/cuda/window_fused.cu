// A layer's whole window walk (the forward of DESIGN.md section 1 for w > 0) as one kernel.
//
// Why: the per-application path (block_fused.cu and attention.cu, one launch per chain) is 4-5 dependent
// launches per window and the copy config has 130 windows, each kernel a few microseconds of work between
// launch, placement and an L2 round trip (bench/cuda/NOTES.md). The recurrences of the batch elements do not
// touch each other, so one block (or cluster) per batch element can walk all the windows of its element by
// itself: no grid-wide synchronisation, only a block or cluster barrier between the phases of an application.
//
// An element is two thread groups of 256 (group.cuh), each the group a block_fused.cu kernel has: in the
// row-local chains group g takes the element's rows [32 g, 32 g + 32) of the window pair (n <= 64: w <= 32);
// the attention runs a head per 64 threads (eight at once). The two groups are one block of 512 threads, or
// on sm_90 a cluster of two blocks of 256 (each with the whole register file of its SM; the phases are then
// separated by cluster barriers). Every phase is the same device function the per-application kernels
// run (block_tiles.cuh, attention_fused.cuh), on the same rows with the same row numbers, so the caches and
// the output are the same bits and the dropout masks the same draws. The glue between applications (the
// window pair's input, Y's rows) uses axpy2d's expressions.
//
// Where the rows live: with keep (training) the layer's arena, application k at its running offset and
// element b at its rows b n_k .. b n_k + n_k - 1, as block_forward writes them. Without keep the buffers hold
// one application of capacity nmax per element and applications of different n would overlap between
// elements that are at different windows; each element's pointers are then shifted so that its logical rows
// b n .. b n + n - 1 land on its own rows b nmax .. b nmax + n - 1 (row numbers, and with them the dropout
// indices, stay those of the per-application path). The application's output goes to scratch the same way.
#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <string>
#include <type_traits>

#include <cooperative_groups.h>

#include "cuda/attention_fused.cuh"
#include "cuda/block_tiles.cuh"
#include "cuda/kernels.cuh"

namespace rt::cuda {
namespace {

using namespace tiles;

constexpr int kBlock = 2 * kGroup;
constexpr int kMaxN = 2 * kTM;  // a window pair is at most two tiles
// Heads are small (the copy config's: 64 x 16): a head per two warps keeps all of them in flight at once,
// where a head per group of 256 would take them three at a time.
constexpr int kHeadGroup = 64, kHeadGroups = kBlock / kHeadGroup;
constexpr int kGlueU = 4;  // float4s per thread per pass of the glue: a pair of 64 rows of d <= 128 in one pass

// Row r, float4 column c of a [rows][D] array.
template <int D>
__device__ __forceinline__ const float4* row4(const float* base, int r, int c) {
  return reinterpret_cast<const float4*>(base + static_cast<size_t>(r) * D) + c;
}

struct WalkArgs {
  WindowWalk walk;  // as the layer gave it
  BlockWeights w;   // w.packed: the fused kernels' copy
  int m, nmax;      // windows; tokens per sequence of the largest application
  bool gelu;
  attn::Geo geo;    // n is set per application
  Drop drop;        // make_drop's threshold and scale; the key is set per application and stream
  size_t tile_stride, head_stride;  // shared memory of one group's tiles, of one head (walk_smem)
};

// Both CTAs of the element's cluster at one point, global writes before it visible after it (release /
// acquire at cluster scope). Clusters exist from sm_90; the host launches CL only there.
__device__ __forceinline__ void cluster_sync() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  cooperative_groups::this_cluster().sync();
#else
  __trap();
#endif
}

__device__ __forceinline__ int window_len(int k, int m, int N, int w) { return k < m - 1 ? w : N - (m - 1) * w; }

// Tokens per sequence of application k of m + 1 (recurrence.cc's app_lengths).
__device__ __forceinline__ int app_len(int k, int m, int N, int w) {
  if (k == 0) return window_len(0, m, N, w);
  if (k == m) return window_len(m - 1, m, N, w);
  return w + window_len(k, m, N, w);
}

// CL false: one block of 512 threads per element, its two groups of 256 on one SM. CL true: a cluster of
// two blocks of 256 per element, each group on its own SM as the per-application kernels have it, the
// phases separated by cluster barriers instead of __syncthreads. Either way the pair's 512 threads split
// the glue, group g takes tile g and the attention runs a head per 64 threads.
template <bool F32, int D, int HD, bool CL>
__global__ void __launch_bounds__(CL ? kGroup : kBlock) window_forward_kernel(WalkArgs a) {
  extern __shared__ __align__(16) unsigned char smem[];
  const WindowWalk& wk = a.walk;
  const BlockCache& c = wk.cache;  // base pointers
  const int b = CL ? blockIdx.x / 2 : blockIdx.x, g = CL ? blockIdx.x % 2 : group_id();
  const int tid = CL ? g * kGroup + threadIdx.x : threadIdx.x;  // over the pair's 512 threads
  auto phase = [] {
    if constexpr (CL) cluster_sync();
    else __syncthreads();
  };
  unsigned char* gsm = smem + (CL ? 0 : g * a.tile_stride);
  // The attention: one head per group of 64 threads (kHeadGroups of them in the pair), each in its own
  // shared memory; with CL block g's groups take heads g, g + 2, ...
  const int hg = group_id<kHeadGroup>();
  const int h0 = CL ? g + 2 * hg : hg, H = a.geo.H;
  float* hsm = reinterpret_cast<float*>(smem + hg * a.head_stride);
  const int m = a.m, w = wk.w, nmax = a.nmax;
  constexpr int D4 = D / 4;
  const size_t Nd = static_cast<size_t>(wk.N) * D;
  const float* Xb = wk.X + b * Nd;
  float* Yb = wk.Y + b * Nd;
  float* outb = wk.scratch + static_cast<size_t>(b) * nmax * D;  // this element's rows of the scratch
  size_t row0 = 0, prob0 = 0;  // application k's first row and first probability in the arena (keep)

  for (int k = 0; k <= m; ++k) {
    const int n = app_len(k, m, wk.N, w);
    // This element's view: logical row r of the application is at pointer + r * width.
    const size_t rows = wk.keep ? row0 : static_cast<size_t>(b) * (nmax - n);
    const size_t probs =
        wk.keep ? prob0 : static_cast<size_t>(b) * H * (static_cast<size_t>(nmax) * nmax - static_cast<size_t>(n) * n);
    float* x = c.x + rows * D;
    float* qkv = c.qkv + rows * 3 * D;
    float* att = c.att + rows * D;
    // The application's output y, logical rows onto this element's scratch rows.
    float* y = wk.scratch + (static_cast<ptrdiff_t>(b) * nmax - static_cast<ptrdiff_t>(b) * n) * D;
    const int r_first = b * n, r_end = b * n + n;
    float* xb = x + static_cast<size_t>(r_first) * D;

    // The application's input (recurrence.cc's forward_layer, this element's rows): float4s, each thread's
    // reads issued before its writes (a loop of load-then-store waits one L2 round trip per element).
    {
      const int soff = (k == 1 || (k == m && m == 1)) ? 0 : w;  // S: the previous output's second half (or all)
      const float* P = k <= 1 ? Xb : Yb + static_cast<size_t>(k - 2) * w * D;
      const float* Xk = Xb + static_cast<size_t>(k) * w * D;
      const bool mix = wk.accumulate && k > 0 && k < m;
      const int total = n * D4;
      for (int i0 = tid; i0 < total; i0 += kBlock * kGlueU) {
        float4 s[kGlueU], pv[kGlueU];
#pragma unroll
        for (int u = 0; u < kGlueU; ++u) {
          const int i = i0 + u * kBlock, r = i / D4, c = i % D4;
          if (i >= total) continue;
          const float4* src;
          if (k == 0) src = row4<D>(Xb, r, c);
          else if (k == m || r < w) src = row4<D>(outb, soff + r, c);
          else src = row4<D>(Xk, r - w, c);
          s[u] = __ldcg(src);
          if (mix) pv[u] = __ldcg(row4<D>(P, r < w ? r : r - w, c));
        }
#pragma unroll
        for (int u = 0; u < kGlueU; ++u) {
          const int i = i0 + u * kBlock;
          if (i >= total) continue;
          float4 v = s[u];
          if (mix) {  // axpy2d's y + alpha * x
            v.x += wk.alpha * pv[u].x;
            v.y += wk.alpha * pv[u].y;
            v.z += wk.alpha * pv[u].z;
            v.w += wk.alpha * pv[u].w;
          }
          reinterpret_cast<float4*>(xb)[i] = v;
        }
      }
    }
    phase();

    // Application k's dropout streams, as block_forward's: (layer << 32 | k) * 4 + 0, 1, 2.
    const uint64_t stream = ((wk.layer << 32) | static_cast<uint64_t>(k)) * 4;
    auto drop_of = [&](uint64_t s) {
      Drop d = a.drop;
      if (d.on) d.key = MaskKey{rng_key(wk.seed, stream + s), nullptr, 0};
      return d;
    };
    if (g * kTM < n) {
      const InFwd in{r_end, x, a.w.ln1_w, a.w.ln1_b, a.w.attn_b, a.w.packed, c.h1 + rows * D, c.mean1 + rows,
                     c.rstd1 + rows, qkv};
      in_forward_tile<F32, D, false>(in, r_first + g * kTM, gsm);
    }
    phase();

    {
      attn::Geo geo = a.geo;
      geo.n = n;
      const Drop d = drop_of(0);
      const attn::Mask mask{d.key, d.threshold, d.scale, d.on};
      for (int h = h0; h < H; h += kHeadGroups) {
        attn::forward_head<HD, kHeadGroup, false>(qkv, c.probs + probs, att, geo, mask, b, h, hsm);
        group_sync<kHeadGroup>();  // the next head reuses the group's shared memory
      }
    }
    phase();

    if (g * kTM < n) {
      const OutFwd out{r_end, a.gelu, drop_of(1), drop_of(2), att, x, a.w.attn_proj_b, a.w.ln2_w, a.w.ln2_b,
                       a.w.fc_b, a.w.mlp_proj_b, a.w.packed, c.x2 + rows * D, c.h2 + rows * D, c.mean2 + rows,
                       c.rstd2 + rows, c.f + rows * 4 * D, c.g + rows * 4 * D, y};
      out_forward_tile<F32, D, false>(out, r_first + g * kTM, gsm);
    }
    phase();

    // Y_{k-1} = Z[:, :w] (the last application: all of it)
    if (k > 0) {
      const int total = (k == m ? n : w) * D4;
      float4* Yk = reinterpret_cast<float4*>(Yb + static_cast<size_t>(k - 1) * w * D);
      const float4* o = reinterpret_cast<const float4*>(outb);
      for (int i0 = tid; i0 < total; i0 += kBlock * kGlueU) {
        float4 v[kGlueU];
#pragma unroll
        for (int u = 0; u < kGlueU; ++u)
          if (i0 + u * kBlock < total) v[u] = __ldcg(o + i0 + u * kBlock);
#pragma unroll
        for (int u = 0; u < kGlueU; ++u)
          if (i0 + u * kBlock < total) Yk[i0 + u * kBlock] = v[u];
      }
    }
    phase();  // Y's rows are the next application's P, written and read by different threads
    if (wk.keep) {
      row0 += static_cast<size_t>(wk.B) * n;
      prob0 += static_cast<size_t>(wk.B) * H * n * n;
    }
  }
}

struct WalkSmem {
  size_t tile_stride, head_stride, total;
};
WalkSmem walk_smem(bool bf16, int d, int nmax, int hd, int H, bool cluster) {
  auto tiles_smem = [&](auto f32) -> size_t {
    constexpr bool F = decltype(f32)::value;
    switch (d) {
      case 32: return std::max(Smem<F, 32>::out_forward, Smem<F, 32>::in_forward);
      case 64: return std::max(Smem<F, 64>::out_forward, Smem<F, 64>::in_forward);
      case 96: return std::max(Smem<F, 96>::out_forward, Smem<F, 96>::in_forward);
      default: return std::max(Smem<F, 128>::out_forward, Smem<F, 128>::in_forward);
    }
  };
  auto align16 = [](size_t n) { return (n + 15) / 16 * 16; };
  const size_t t = align16(bf16 ? tiles_smem(std::false_type()) : tiles_smem(std::true_type()));
  const size_t h = align16(attn::fused_forward_smem(nmax, hd));
  const int groups = cluster ? kHeadGroups / 2 : kHeadGroups;  // head groups per block
  return {t, h, std::max((cluster ? 1 : 2) * t, h * std::min(H, groups))};
}

template <bool F32, int D, int HD, bool CL>
void launch_walk(const WalkArgs& a, size_t smem) {
  auto* k = window_forward_kernel<F32, D, HD, CL>;
  static const cudaError_t opt =
      cudaFuncSetAttribute(k, cudaFuncAttributeMaxDynamicSharedMemorySize, static_cast<int>(limits().smem_optin));
  RT_CU(opt);
  if constexpr (CL) {
    cudaLaunchConfig_t cfg{};
    cfg.gridDim = dim3(2 * a.walk.B);
    cfg.blockDim = dim3(kGroup);
    cfg.dynamicSmemBytes = smem;
    cfg.stream = stream();
    cudaLaunchAttribute attr[1];
    attr[0].id = cudaLaunchAttributeClusterDimension;
    attr[0].val.clusterDim.x = 2;
    attr[0].val.clusterDim.y = 1;
    attr[0].val.clusterDim.z = 1;
    cfg.attrs = attr;
    cfg.numAttrs = 1;
    RT_CU(cudaLaunchKernelEx(&cfg, k, a));
  } else {
    k<<<a.walk.B, kBlock, smem, stream()>>>(a);
  }
  RT_CU_LAUNCH("window_forward");
}

template <bool F32, bool CL>
void launch_by_d(const WalkArgs& a, int d, int hd, size_t smem) {
  auto go = [&](auto dd) {
    constexpr int D = decltype(dd)::value;
    if (hd == 16) launch_walk<F32, D, 16, CL>(a, smem);
    else launch_walk<F32, D, 0, CL>(a, smem);
  };
  switch (d) {
    case 32: go(std::integral_constant<int, 32>()); break;
    case 64: go(std::integral_constant<int, 64>()); break;
    case 96: go(std::integral_constant<int, 96>()); break;
    default: go(std::integral_constant<int, 128>()); break;
  }
}

}  // namespace

bool window_forward(bool bf16, const BlockShape& s, const BlockWeights& w, const WindowWalk& walk) {
  // Off unless asked for (bench/cuda/NOTES.md, session 7): it matches the per-application path (bit for
  // bit in bf16) but is slower (28.6-28.8 against 26.2-26.8 ms per copy step), and in fp32
  // (RT_CUDA_WINDOW=all) compute-sanitizer racecheck still reports a shared-memory hazard not yet found.
  // RT_CUDA_WINDOW=1 turns it on for bf16, `all` for both precisions. Read at each call (one getenv per
  // layer forward), so that a check can compare both paths in one process.
  const char* e = std::getenv("RT_CUDA_WINDOW");
  const std::string mode = e ? e : "";
  const bool on = mode == "all" || (mode == "1" && bf16);
  if (!on || !w.packed || !block_fusable(s.d) || walk.w <= 0 || walk.w > kTM) return false;
  const int m = (walk.N + walk.w - 1) / walk.w, nmax = m == 1 ? walk.N : 2 * walk.w, hd = s.d / s.heads;
  // RT_CUDA_WINDOW_CLUSTER=1: a cluster of two blocks per element (sm_90 only). Compiled but not yet run
  // on a GPU (bench/cuda/NOTES.md, session 7), hence not the default.
  const char* ce = std::getenv("RT_CUDA_WINDOW_CLUSTER");
  const bool cluster = limits().cc >= 90 && ce && std::string(ce) == "1";
  const WalkSmem sm = walk_smem(bf16, s.d, nmax, hd, s.heads, cluster);
  if (nmax > kMaxN || sm.total > limits().smem_optin) return false;
  const WalkArgs a{walk, w, m, nmax, s.gelu, attn::geo_of(walk.B, 0, s.d, s.heads), make_drop(walk.p, 0, 0),
                   sm.tile_stride, sm.head_stride};
  const size_t smem = sm.total;
  if (cluster) {
    if (bf16) launch_by_d<false, true>(a, s.d, hd, smem);
    else launch_by_d<true, true>(a, s.d, hd, smem);
  } else {
    if (bf16) launch_by_d<false, false>(a, s.d, hd, smem);
    else launch_by_d<true, false>(a, s.d, hd, smem);
  }
  return true;
}

}  // namespace rt::cuda
