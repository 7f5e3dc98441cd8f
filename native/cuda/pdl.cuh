// Programmatic dependent launch (sm_90): a kernel launched with it (block_fused.cu's chains, LaunchEx) may be placed
// on the GPU while its predecessor in the stream still runs, and waits in pdl_wait() for that predecessor
// to finish and flush its writes. Whatever it reads before pdl_wait() must not be the predecessor's output.
// A kernel that may precede one calls pdl_trigger() to let it be placed early; without the call it is
// placed when this one ends. Both are no-ops below sm_90 and for kernels launched without the attribute.
#pragma once

#include <cuda_runtime.h>

#include <utility>

#include "core/env.h"
#include "cuda/common.cuh"

namespace rt::cuda {

__device__ __forceinline__ void pdl_wait() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  asm volatile("griddepcontrol.wait;\n" ::: "memory");
#endif
}

__device__ __forceinline__ void pdl_trigger() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  asm volatile("griddepcontrol.launch_dependents;\n" ::: "memory");
#endif
}

// The launch of a kernel with the programmatic-stream-serialization attribute (pdl) and, above one block,
// a cluster dimension: cudaLaunchKernelEx(&l.cfg, kernel, args...) on stream().
struct LaunchEx {
  cudaLaunchAttribute at[2] = {};
  cudaLaunchConfig_t cfg{};
  LaunchEx(dim3 grid, dim3 block, size_t smem, bool pdl, unsigned cluster) {
    unsigned n = 0;
    if (pdl) {
      at[n].id = cudaLaunchAttributeProgrammaticStreamSerialization;
      at[n++].val.programmaticStreamSerializationAllowed = 1;
    }
    if (cluster > 1) {
      at[n].id = cudaLaunchAttributeClusterDimension;
      at[n].val.clusterDim.x = cluster;
      at[n].val.clusterDim.y = at[n].val.clusterDim.z = 1;
      ++n;
    }
    cfg.gridDim = grid;
    cfg.blockDim = block;
    cfg.dynamicSmemBytes = smem;
    cfg.stream = stream();
    cfg.attrs = at;
    cfg.numAttrs = n;
  }
  LaunchEx(const LaunchEx&) = delete;  // cfg points into at
  LaunchEx& operator=(const LaunchEx&) = delete;
};

// Whether the unfused path's window kernels (the TMA products, LayerNorm, the activations, the glue, the
// operand casts, the tensor-core attention) are launched with PDL: RT_CUDA_PDL_ALL=1, off until measured
// (written in session 19 without a GPU). Why: a char train step is ~370 kernels with ~0.67 ms between them
// (session 17's ncu sum against the step), ~1.8 us a boundary; PDL places a kernel's blocks and runs its
// start (barriers, descriptor prefetch) while its predecessor finishes. Each of these kernels begins with
// pdl_wait() (then pdl_trigger()), before it reads or writes global memory, so that whatever runs it in
// whatever order gives the bits of plain launches. Session 6's PDL (the copy path's one-wave kernels) lost
// because early blocks doubled up on the SMs freed first; these kernels are either persistent with the
// grid the GPU holds at once or many waves, where placement does not set the work per SM.
inline int& pdl_all_set() {  // -1: as RT_CUDA_PDL_ALL says; else set_pdl_all's
  static int v = -1;
  return v;
}
inline bool pdl_all() {
  static const bool env = rt::env_switch("RT_CUDA_PDL_ALL", false);
  return (pdl_all_set() < 0 ? env : pdl_all_set() != 0) && limits().cc >= 90;
}
inline void set_pdl_all(bool on) { pdl_all_set() = on ? 1 : 0; }  // (kernels_check: both ways in one process)
// Launches made with PDL so far (kernels_check: that the chain it compares did take them).
inline long& pdl_launches() {
  static long n = 0;
  return n;
}

// Launches kernel k on stream(), with PDL where pdl_all(); then the launch's error check (name).
template <class... P, class... A>
void launch_window_kernel(const char* name, void (*k)(P...), dim3 grid, dim3 block, size_t smem, A&&... args) {
  if (pdl_all()) {
    const LaunchEx l(grid, block, smem, true, 1);
    const cudaError_t e = cudaLaunchKernelEx(&l.cfg, k, std::forward<A>(args)...);
    if (e != cudaSuccess) {
      (void)cudaGetLastError();  // (not left for the next launch's check)
      throw_cuda(e, name);
    }
    ++pdl_launches();
  } else {
    k<<<grid, block, smem, stream()>>>(std::forward<A>(args)...);
  }
  RT_CU_LAUNCH(name);
}

}  // namespace rt::cuda
