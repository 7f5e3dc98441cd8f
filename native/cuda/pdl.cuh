// Programmatic dependent launch (sm_90): a kernel launched with it (block_fused.cu's chains) may be placed
// on the GPU while its predecessor in the stream still runs, and waits in pdl_wait() for that predecessor
// to finish and flush its writes. Whatever it reads before pdl_wait() must not be the predecessor's output.
// A kernel that may precede one calls pdl_trigger() to let it be placed early; without the call it is
// placed when this one ends. Both are no-ops below sm_90 and for kernels launched without the attribute.
#pragma once

#include <cuda_runtime.h>

#include <utility>

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

// Launches k on stream(), with the programmatic-stream-serialization attribute when pdl.
template <class... P, class... A>
void launch_pdl(bool pdl, void (*k)(P...), dim3 grid, dim3 block, size_t smem, A&&... args) {
  if (!pdl) {
    k<<<grid, block, smem, stream()>>>(std::forward<A>(args)...);
    return;
  }
  cudaLaunchAttribute at{};
  at.id = cudaLaunchAttributeProgrammaticStreamSerialization;
  at.val.programmaticStreamSerializationAllowed = 1;
  cudaLaunchConfig_t cfg{};
  cfg.gridDim = grid;
  cfg.blockDim = block;
  cfg.dynamicSmemBytes = smem;
  cfg.stream = stream();
  cfg.attrs = &at;
  cfg.numAttrs = 1;
  RT_CU(cudaLaunchKernelEx(&cfg, k, std::forward<A>(args)...));
}

}  // namespace rt::cuda
