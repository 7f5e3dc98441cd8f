// Counter-based random numbers: the value at (seed, stream, index) is a pure function of the three, so
// dropout masks are the same whatever the thread split, and backward regenerates them instead of
// storing them (no mask memory, bit-for-bit determinism).
#pragma once
#include <cstdint>

#include "core/hd.h"  // callable from CUDA kernels too (cuda/rng.cuh): the GPU draws the CPU's bits

namespace rt {

// SplitMix64 finaliser over a combined key: statistically good enough for dropout, and a few cycles.
RT_HD inline uint64_t mix64(uint64_t z) {
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
  return z ^ (z >> 31);
}

RT_HD inline uint64_t rng_key(uint64_t seed, uint64_t stream) {
  return mix64(seed * 0x9E3779B97F4A7C15ULL + mix64(stream + 0x632BE59BD9B4E019ULL));
}

// Uniform in [0, 1) with 24 random bits, from the key of (seed, stream) and an element index.
RT_HD inline float rng_uniform(uint64_t key, uint64_t index) {
  return static_cast<float>(mix64(key + index * 0x9E3779B97F4A7C15ULL) >> 40) * (1.0f / 16777216.0f);
}

}  // namespace rt
