// Inverted dropout with a counter-based mask: element i is kept when rng_uniform(key(seed, stream), i) >= p,
// so backward regenerates the mask instead of storing it, and the mask does not depend on how the work
// was split across threads.
#include <cstring>
#include <string>

#include "core/error.h"
#include "core/rng.h"
#include "core/thread_pool.h"
#include "cpu/kernels.h"
#include "cpu/simd.h"

namespace rt::cpu {
namespace {

using simd::f4;
using simd::i4;
using simd::u4;

constexpr size_t kGrain = 16384;

void check_p(float p, const char* who) {
  RT_CHECK(p >= 0.0f && p < 1.0f, std::string(who) + ": dropout rate p must be in [0, 1), got " + std::to_string(p));
}

// out[i] = in[i] * keep_i / (1 - p); in and out may alias.
//
// keep_i = rt::rng_uniform(key, i) >= p, bit-exact, four lanes at a time through simd::keep4 (see
// cpu/simd.h: the test stays in integers, ~1 ns per element against ~15 ns for the scalar form's coin-flip
// branch). kernels_check compares the result with rng_uniform element by element.
void apply_mask(const float* in, float* out, size_t n, float p, uint64_t seed, uint64_t stream) {
  if (p == 0.0f) {
    if (in != out) {
      parallel_for(n, 1 << 16, [&](size_t b, size_t e) { std::memcpy(out + b, in + b, (e - b) * sizeof(float)); });
    }
    return;
  }
  const uint64_t key = rng_key(seed, stream);
  const float scale = 1.0f / (1.0f - p);
  const int64_t threshold = simd::keep_threshold(p);
  parallel_for(n, kGrain, [&](size_t b, size_t e) {
    u4 z = simd::keep_counter(key, static_cast<uint64_t>(b));
    const f4 zero = {};
    auto block = [&](const float* src, float* dst) {
      const i4 keep = simd::keep4(z, threshold);
      simd::keep_step(z);
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
