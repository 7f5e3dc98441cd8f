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

// While a CUDA graph is being recorded (Backend::graph_begin), the seed every mask draws from: one uint64 in
// device memory, written before each replay. Null otherwise. Defined in backend.cu.
const uint64_t* capture_seed();

// The key of one stream's mask: rng_key(seed, stream) from the host, or, recorded into a graph, computed by
// the kernel from the seed in device memory, so that each replay draws the masks of that step's seed (the
// same bits as the host's: core/rng.h is compiled for both).
struct MaskKey {
  uint64_t key = 0;
  const uint64_t* seed = nullptr;
  uint64_t stream = 0;
  __device__ __forceinline__ uint64_t get() const { return seed ? rng_key(*seed, stream) : key; }
};
inline MaskKey mask_key(uint64_t seed, uint64_t stream_id) {
  if (const uint64_t* s = capture_seed()) return MaskKey{0, s, stream_id};
  return MaskKey{rng_key(seed, stream_id), nullptr, 0};
}

}  // namespace rt::cuda
