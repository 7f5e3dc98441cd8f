// The fused kernels (attention over a window pair, the block's row-local chains) run in blocks of kGroup
// threads, and their device functions (attention_fused.cuh, block_tiles.cuh) are written for that block.
#pragma once

namespace rt::cuda {

constexpr int kGroup = 256;

// The thread's index in its block, as an int (index arithmetic stays signed).
__device__ __forceinline__ int tid() { return static_cast<int>(threadIdx.x); }

// Sum and maximum over a warp, every lane getting the result (the same xor tree in every kernel).
__device__ __forceinline__ float warp_sum(float v) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  return v;
}
__device__ __forceinline__ float warp_max(float v) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
  return v;
}

}  // namespace rt::cuda
