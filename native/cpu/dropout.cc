// Inverted dropout with a counter-based mask: element i is kept when rng_uniform(key(seed, stream), i) >= p,
// so backward regenerates the mask instead of storing it, and the mask does not depend on how the work
// was split across threads.
#include <algorithm>
#include <cmath>
#include <cstring>
#include <string>

#include "core/error.h"
#include "core/rng.h"
#include "core/thread_pool.h"
#include "cpu/kernels.h"

namespace rt::cpu {
namespace {

constexpr size_t kGrain = 16384;

#pragma GCC diagnostic ignored "-Wpsabi"  // vector arguments of internal-linkage functions only
// Small vector helpers must inline: at -O2 GCC otherwise calls them with vectors passed in memory.
#define RT_INLINE inline __attribute__((always_inline))
typedef uint64_t u4 __attribute__((vector_size(32)));
typedef int64_t s4 __attribute__((vector_size(32)));
typedef int32_t i4 __attribute__((vector_size(16)));
typedef float f4 __attribute__((vector_size(16)));

void check_p(float p, const char* who) {
  RT_CHECK(p >= 0.0f && p < 1.0f, std::string(who) + ": dropout rate p must be in [0, 1), got " + std::to_string(p));
}

// rt::mix64 on four lanes.
RT_INLINE u4 mix64x4(u4 z) {
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
  return z ^ (z >> 31);
}

// out[i] = in[i] * keep_i / (1 - p); in and out may alias.
//
// Bit-exact with keep_i = rt::rng_uniform(key, i) >= p, four lanes at a time: rng_uniform is k / 2^24
// with k = mix64(key + i * golden) >> 40, so u >= p  <=>  k >= ceil(p * 2^24) (exact in double) and the
// test stays in integers. The scalar form branches on a coin flip (~15 ns per element at p = 0.5, ~1 ns
// here). kernels_check compares the result with rng_uniform element by element, so a change to
// core/rng.h that is not mirrored here fails the check.
void apply_mask(const float* in, float* out, size_t n, float p, uint64_t seed, uint64_t stream) {
  if (p == 0.0f) {
    if (in != out) {
      parallel_for(n, 1 << 16, [&](size_t b, size_t e) { std::memcpy(out + b, in + b, (e - b) * sizeof(float)); });
    }
    return;
  }
  const uint64_t key = rng_key(seed, stream);
  const float scale = 1.0f / (1.0f - p);
  const int64_t threshold = static_cast<int64_t>(std::ceil(static_cast<double>(p) * 16777216.0));
  constexpr uint64_t kGolden = 0x9E3779B97F4A7C15ULL;  // rng_uniform's index multiplier
  parallel_for(n, kGrain, [&](size_t b, size_t e) {
    u4 z = key + (static_cast<uint64_t>(b) + u4{0, 1, 2, 3}) * kGolden;
    const f4 zero = {};
    auto block = [&](const float* src, float* dst) {
      const s4 k = (s4)(mix64x4(z) >> 40);
      const i4 keep = __builtin_convertvector(k >= threshold, i4);
      z += 4 * kGolden;
      f4 x;
      std::memcpy(&x, src, sizeof x);
      const f4 y = keep ? x * scale : zero;
      std::memcpy(dst, &y, sizeof y);
    };
    size_t i = b;
    for (; i + 4 <= e; i += 4) block(in + i, out + i);
    if (i < e) {  // the tail goes through a padded block: same instructions, same mask
      float tin[4] = {}, tout[4];
      std::memcpy(tin, in + i, (e - i) * sizeof(float));
      block(tin, tout);
      std::memcpy(out + i, tout, (e - i) * sizeof(float));
    }
  });
}

}  // namespace

void dropout_forward(const float* x, float* y, size_t n, float p, uint64_t seed, uint64_t stream) {
  check_p(p, "dropout_forward");
  apply_mask(x, y, n, p, seed, stream);
}

void dropout_backward(const float* dy, float* dx, size_t n, float p, uint64_t seed, uint64_t stream) {
  check_p(p, "dropout_backward");
  apply_mask(dy, dx, n, p, seed, stream);
}

}  // namespace rt::cpu
