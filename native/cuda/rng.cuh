// The device side of core/rng.h: the same SplitMix64 finaliser, so that a dropout mask drawn on the GPU
// is bit-for-bit the CPU's. The key (rng_key(seed, stream)) is computed on the host with core/rng.h and
// passed in; only the per-element draw runs here. cuda/test/kernels_check.cu compares the two.
#pragma once
#include <cmath>
#include <cstdint>

namespace rt::cuda {

__device__ __forceinline__ uint64_t mix64(uint64_t z) {
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
  return z ^ (z >> 31);
}

// rng_uniform(key, i) >= p  <=>  (mix64(key + i * golden) >> 40) >= ceil(p * 2^24): the comparison in
// integers, exact (p * 2^24 is exact in double), as the CPU's vectorised mask does.
__device__ __forceinline__ bool keep(uint64_t key, uint64_t index, int64_t threshold) {
  return static_cast<int64_t>(mix64(key + index * 0x9E3779B97F4A7C15ULL) >> 40) >= threshold;
}

inline int64_t keep_threshold(float p) {
  return static_cast<int64_t>(std::ceil(static_cast<double>(p) * 16777216.0));
}

}  // namespace rt::cuda
