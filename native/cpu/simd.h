// Private to native/cpu: the GCC/Clang vector-extension helpers shared by the element-wise kernels
// (activation.cc, attention.cc, dropout.cc). Header-only.
//
// Why vector extensions rather than plain loops: the build has no -ffast-math, so the auto-vectorizer
// leaves float reductions and anything with a data-dependent clamp scalar; and with vector types every
// element, tail included, goes through the same instructions, so a value never depends on where a
// thread's chunk boundary fell.
//
// Everything here is an `inline` function (external linkage, one definition program-wide) in
// rt::cpu::simd, deliberately not in an anonymous namespace: a header's anonymous namespace gives every
// including file its own copy, and an inline function elsewhere that used one would break the ODR.
// Every helper is also always_inline (RT_INLINE), so no call to one, and no vector argument, ever
// crosses a function boundary.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>

// Without AVX enabled (e.g. a build without -march=x86-64-v3) GCC warns that passing 32-byte vectors
// changes the ABI. No ABI is crossed: the helpers below are always inlined, and the kernel files that
// take vectors in their own functions give those internal linkage. The pragma is deliberately not
// popped, so that it also covers those functions in the including file.
#pragma GCC diagnostic ignored "-Wpsabi"

// Small vector helpers must inline: at -O2 GCC otherwise calls them with vectors passed in memory.
#define RT_INLINE inline __attribute__((always_inline))

namespace rt::cpu::simd {

typedef float f8 __attribute__((vector_size(32)));     // 8 floats (one AVX register)
typedef int32_t i8 __attribute__((vector_size(32)));   // 8 x int32: masks and bit patterns of f8
typedef uint64_t u4 __attribute__((vector_size(32)));  // 4 x uint64: counters of the dropout mask
typedef int64_t s4 __attribute__((vector_size(32)));   // 4 x int64
typedef int32_t i4 __attribute__((vector_size(16)));   // 4 x int32: the dropout keep mask
typedef float f4 __attribute__((vector_size(16)));     // 4 floats

// Unaligned load / store through memcpy (no alignment or aliasing assumptions; compiles to vmovups).
RT_INLINE f8 load8(const float* p) {
  f8 v;
  std::memcpy(&v, p, sizeof v);
  return v;
}
RT_INLINE void store8(float* p, f8 v) { std::memcpy(p, &v, sizeof v); }
RT_INLINE f8 splat(float s) { return f8{} + s; }

// Horizontal sum and max in a fixed order, so a reduction's result depends only on its lanes.
RT_INLINE float hsum(f8 v) { return ((v[0] + v[4]) + (v[1] + v[5])) + ((v[2] + v[6]) + (v[3] + v[7])); }
RT_INLINE float hmax(f8 v) {
  float m = v[0];
  for (int l = 1; l < 8; ++l) m = std::max(m, v[l]);
  return m;
}

// exp(x) for x <= 0, relative error ~4e-9 before float rounding, exactly 0 below -87.3 (where the
// result would be denormal) and for -inf. Range reduction x = n ln2 + r, |r| <= ln2/2, a degree-6
// polynomial fitted to exp on that interval (least squares on Chebyshev nodes, 1 + r fixed), then
// scaling by 2^n through the exponent bits.
RT_INLINE f8 exp_nonpos(f8 x) {
  const i8 under = x < splat(-87.3f);
  const f8 xc = under ? splat(-87.3f) : x;
  // Adding 1.5 * 2^23 rounds to the nearest integer in the low mantissa bits.
  const f8 nf = (xc * 1.44269504088896341f + 12582912.0f) - 12582912.0f;
  f8 r = xc - nf * 0.693145751953125f;  // ln2, high 17 bits: n * hi is exact for |n| < 128
  r = r - nf * 1.42860682030941723e-06f;  // ln2 - hi
  f8 p = splat(1.375140790e-03f);
  p = p * r + 8.368916341e-03f;
  p = p * r + 4.166953311e-02f;
  p = p * r + 1.666651846e-01f;
  p = p * r + 4.999998860e-01f;
  p = (p * r) * r + r + 1.0f;
  const i8 bits = (__builtin_convertvector(nf, i8) + 127) << 23;
  const f8 v = p * (f8)bits;
  return under ? splat(0.0f) : v;
}

// ---------------------------------------------------------------------------------------------------
// Dropout keep mask, four lanes at a time, bit-exact with core/rng.h: keep_i = rng_uniform(key, i) >= p.
//
// rng_uniform(key, i) is k / 2^24 with k = mix64(key + i * kRngGolden) >> 40, so u >= p  <=>
// k >= ceil(p * 2^24) (p * 2^24 is exact in double) and the test stays in integers. The scalar form
// branches on a coin flip (~15 ns per element at p = 0.5; this is ~1 ns). Any change to core/rng.h must
// be mirrored here: cpu/test/kernels_check.cc compares both users (dropout, attention) with rng_uniform
// element by element, so a mismatch fails the check.

inline constexpr uint64_t kRngGolden = 0x9E3779B97F4A7C15ULL;  // rng_uniform's index multiplier

// rt::mix64 on four lanes.
RT_INLINE u4 mix64x4(u4 z) {
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
  return z ^ (z >> 31);
}

// The integer threshold on k for a dropout rate p: keep <=> k >= keep_threshold(p).
RT_INLINE int64_t keep_threshold(float p) {
  return static_cast<int64_t>(std::ceil(static_cast<double>(p) * 16777216.0));
}

// The mix64 inputs of mask indices base .. base + 3; advance with keep_step().
RT_INLINE u4 keep_counter(uint64_t key, uint64_t base) { return key + (base + u4{0, 1, 2, 3}) * kRngGolden; }
RT_INLINE void keep_step(u4& z) { z += 4 * kRngGolden; }

// Lane l is all ones when the element of counter z[l] is kept, zero when dropped.
RT_INLINE i4 keep4(u4 z, int64_t threshold) {
  const s4 k = (s4)(mix64x4(z) >> 40);
  return __builtin_convertvector(k >= threshold, i4);
}

}  // namespace rt::cpu::simd
