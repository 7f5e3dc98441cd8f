// Programmatic dependent launch (sm_90): a kernel launched with it (block_fused.cu's chains, LaunchEx) may be placed
// on the GPU while its predecessor in the stream still runs, and waits in pdl_wait() for that predecessor
// to finish and flush its writes. Whatever it reads before pdl_wait() must not be the predecessor's output.
// A kernel that may precede one calls pdl_trigger() to let it be placed early; without the call it is
// placed when this one ends. Both are no-ops below sm_90 and for kernels launched without the attribute.
#pragma once

#include <cuda_runtime.h>

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

}  // namespace rt::cuda
