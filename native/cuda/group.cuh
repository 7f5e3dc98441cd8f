// Thread groups of 256. The fused kernels (attention over a window pair, the block's row-local chains) are
// written for one group: a kernel of 256 threads is one group and synchronises with __syncthreads. A kernel
// of several groups (the one-kernel window walk of session 7, removed in session 8 as slower: see
// bench/cuda/NOTES.md) has each group wait on its own named barrier so that the others run on.
#pragma once

namespace rt::cuda {

constexpr int kGroup = 256;

// The thread's index within its group of G (G divides the block; the default is the 256 of the fused
// kernels), and a barrier over the group alone: named barrier 1 + the group's index (0 is __syncthreads').
template <int G = kGroup>
__device__ __forceinline__ int gtid() { return static_cast<int>(threadIdx.x) % G; }
template <int G = kGroup>
__device__ __forceinline__ int group_id() { return static_cast<int>(threadIdx.x) / G; }

template <int G = kGroup>
__device__ __forceinline__ void group_sync() {
  static_assert(G % 32 == 0, "a group is whole warps");
  // Not bar.sync: that is barrier.sync.aligned, which needs every thread of a warp to arrive together, and
  // the compiler does not reconverge a warp before an asm statement (after a divergent branch half a warp
  // could pass the barrier for the whole warp). barrier.sync counts each thread as it arrives.
  if (blockDim.x == G) __syncthreads();
  else asm volatile("barrier.sync %0, %1;" ::"r"(1 + group_id<G>()), "r"(G) : "memory");
}

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
