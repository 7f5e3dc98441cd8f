// The device side of dropout masks: core/rng.h's SplitMix64 (compiled for the device too), so that a mask
// drawn on the GPU is bit-for-bit the CPU's. The key (rng_key(seed, stream)) is usually computed on the host
// and passed in; the per-element draw runs here. cuda/test/kernels_check.cu compares the two.
#pragma once
#include <cmath>
#include <cstdint>

#include "core/rng.h"

namespace rt::cuda {

// rng_uniform(key, i) >= p  <=>  (mix64(key + i * golden) >> 40) >= ceil(p * 2^24): the comparison in
// integers, exact (p * 2^24 is exact in double), as the CPU's vectorised mask does.
__device__ __forceinline__ bool keep(uint64_t key, uint64_t index, int64_t threshold) {
  return static_cast<int64_t>(mix64(key + index * 0x9E3779B97F4A7C15ULL) >> 40) >= threshold;
}

inline int64_t keep_threshold(float p) {
  return static_cast<int64_t>(std::ceil(static_cast<double>(p) * 16777216.0));
}

}  // namespace rt::cuda
