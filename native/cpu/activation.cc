// GELU (exact, erf form) and ReLU, forward and backward.
//
// libm's erff/expf are scalar calls that the compiler cannot vectorize without -ffast-math, which we do
// not build with; on the MLP's 4d-wide activations they would cost more than the GEMMs around them. So
// the normal CDF Phi(x) = (1 + erf(x / sqrt 2)) / 2 is evaluated in float, branch-free, as
//
//   |x| >= 1:  Phi(-|x|) = erfc(z) / 2,  erfc(z) = exp(-z^2) * R(t),  t = 1 / (1 + z/2),  z = |x| / sqrt 2
//   |x| <  1:  Phi(x) = 1/2 + x * Q(x^2)
//
// R is fitted (weighted least squares on 1500 Chebyshev nodes in t, weights ~exp(-z^2) so that the fit
// minimises the absolute error of erfc) to erfc(z) * exp(z^2) over all z >= 0 (t in (0, 1]), in the form
// R = t * (1/(2 sqrt pi) + 2t * T(2t - 1)) with T of degree 8: R(0) = 0 and R'(0) are exact, so the
// tail has the right asymptote. In exact arithmetic the error is below 3e-11 absolute (4e-5 relative to
// erfc, up to z = 12). Q, degree 5, is fitted the same way on [0, 1] (error 1.4e-10). In float the
// error of Phi is below 1e-7 absolute (erf: 2e-7), close to the rounding of Phi itself;
// cpu/test/kernels_check.cc measures it against std::erf in double. Working with erfc keeps Phi
// accurate in the negative tail, where gelu(x) = x * Phi(x) is tiny, and exp(-z^2) = exp(-x^2/2) is the
// Gaussian density the backward needs anyway.
//
// The code is written with GCC/Clang vector extensions (8 floats; the helpers, exp_nonpos included, are
// in cpu/simd.h) rather than left to the auto-vectorizer: GCC sees that the underflow clamp makes the
// whole expression constant for x < -87, turns that into a branch, and then (with -ftrapping-math, the
// default) cannot if-convert it back, so a scalar loop stays scalar. Vector types also let every
// element, tail included, go through the same instructions, so a value never depends on where a
// thread's chunk boundary fell.
#include <cstring>

#if defined(__AVX__)
#include <immintrin.h>
#endif

#include "core/thread_pool.h"
#include "cpu/kernels.h"
#include "cpu/simd.h"

namespace rt::cpu {
namespace {

using simd::exp_nonpos;
using simd::f8;
using simd::i8;
using simd::load8;
using simd::splat;
using simd::store8;

constexpr size_t kLanes = 8;
constexpr size_t kGrain = 16384;

// Phi(x) for |x| < 1: the odd series 1/2 + x Q(x^2), Q of degree 5 fitted on [0, 1] (error 1.4e-10).
RT_INLINE f8 normal_cdf_near0(f8 x) {
  const f8 x2 = x * x;
  f8 q = splat(-7.550370172e-06f);
  q = q * x2 + 1.132013227e-04f;
  q = q * x2 - 1.186045845e-03f;
  q = q * x2 + 9.973199943e-03f;
  q = q * x2 - 6.649033820e-02f;
  q = q * x2 + 3.989422791e-01f;
  return 0.5f + x * q;
}

// Every lane of a comparison's mask set.
RT_INLINE bool all_lanes(i8 m) {
#ifdef __AVX__
  return _mm256_movemask_ps((__m256)m) == 0xff;
#else
  int all = -1;
  for (int l = 0; l < 8; ++l) all &= m[l];
  return all != 0;
#endif
}

// Returns Phi(x) and writes the standard normal density phi(x) = exp(-x^2/2)/sqrt(2 pi) to *pdf.
RT_INLINE f8 normal_cdf(f8 x, f8* pdf) {
  const i8 xb = (i8)x;
  const i8 ab = xb & 0x7fffffff;
  const f8 z = (f8)ab * 0.707106781186547524f;
  const f8 t = 1.0f / (1.0f + 0.5f * z);
  // R(t) = t * (1/(2 sqrt pi) + 2t * T(u)), T a degree-8 polynomial in u = 2t - 1. The centred variable
  // keeps T's coefficients small and decreasing; the same fit written as a polynomial in t has
  // alternating coefficients summing to ~4 in magnitude, which cost 1.7e-7 of float rounding near x = 0.
  const f8 u = 2.0f * t - 1.0f;
  f8 T = splat(6.478880107e-05f);
  T = T * u - 4.037591470e-04f;
  T = T * u + 7.544678192e-04f;
  T = T * u + 8.583890689e-04f;
  T = T * u - 4.124652278e-03f;
  T = T * u - 6.628630117e-03f;
  T = T * u + 2.485159325e-02f;
  T = T * u + 1.148838476e-01f;
  T = T * u + 2.286965591e-01f;
  // The constant pins R'(0) = 1/(2 sqrt pi): erfc(z) exp(z^2) ~ 1/(z sqrt pi) as z -> inf; and R(0) = 0.
  const f8 r = t * (0.282094791773878143f + (2.0f * t) * T);
  const f8 e = exp_nonpos(-(z * z));
  const f8 half_erfc = 0.5f * e * r;  // = Phi(-|x|)
  *pdf = e * 0.398942280401432678f;
  // Near 0 the rounding of t (R has slope ~2.3 in t there) leaves ~1.7e-7 in Phi; for |x| < 1 use the
  // odd series instead.
  const f8 near0 = normal_cdf_near0(x);
  const f8 far = xb < 0 ? half_erfc : 1.0f - half_erfc;
  return (f8)ab < 1.0f ? near0 : far;
}

RT_INLINE f8 gelu8(f8 x) {
  // Eight values all inside (-1, 1), common in an MLP's hidden layer: only the series is needed, and
  // the lanes get the bits the full evaluation below would give them (it selects the same series there,
  // where Phi > 0.15). NaN takes the full path.
  const f8 ax = (f8)((i8)x & 0x7fffffff);
  if (all_lanes(ax < 1.0f)) return x * normal_cdf_near0(x);
  f8 pdf;
  const f8 cdf = normal_cdf(x, &pdf);
  // Far in the negative tail cdf is exactly 0; returning 0 there keeps -inf from becoming NaN.
  return cdf == 0.0f ? splat(0.0f) : x * cdf;
}

RT_INLINE f8 gelu_grad8(f8 x) {
  f8 pdf;
  const f8 cdf = normal_cdf(x, &pdf);
  return pdf == 0.0f ? cdf : cdf + x * pdf;
}

// Applies f to [b, e) eight at a time; the tail goes through a zero-padded buffer so it is computed by
// exactly the same instructions.
template <class F>
RT_INLINE void map1(const float* x, float* y, size_t b, size_t e, F f) {
  size_t i = b;
  for (; i + kLanes <= e; i += kLanes) store8(y + i, f(load8(x + i)));
  if (i < e) {
    float in[kLanes] = {}, out[kLanes];
    std::memcpy(in, x + i, (e - i) * sizeof(float));
    store8(out, f(load8(in)));
    std::memcpy(y + i, out, (e - i) * sizeof(float));
  }
}

template <class F>
RT_INLINE void map2(const float* x, const float* dy, float* dx, size_t b, size_t e, F f) {
  size_t i = b;
  for (; i + kLanes <= e; i += kLanes) store8(dx + i, f(load8(x + i), load8(dy + i)));
  if (i < e) {
    float in[kLanes] = {}, g[kLanes] = {}, out[kLanes];
    std::memcpy(in, x + i, (e - i) * sizeof(float));
    std::memcpy(g, dy + i, (e - i) * sizeof(float));
    store8(out, f(load8(in), load8(g)));
    std::memcpy(dx + i, out, (e - i) * sizeof(float));
  }
}

// Function objects rather than lambdas: GCC honours always_inline on their operator(), and at -O2 it
// would otherwise call the per-vector lambda out of line.
struct Gelu {
  RT_INLINE f8 operator()(f8 x) const { return gelu8(x); }
};
struct GeluGrad {
  RT_INLINE f8 operator()(f8 x, f8 g) const { return g * gelu_grad8(x); }
};
struct Relu {
  // x < 0 rather than x > 0 so that NaN propagates, as in PyTorch.
  RT_INLINE f8 operator()(f8 x) const { return x < 0.0f ? splat(0.0f) : x; }
};
struct ReluGrad {
  RT_INLINE f8 operator()(f8 x, f8 g) const { return x > 0.0f ? g : splat(0.0f); }
};

}  // namespace

void gelu_forward(const float* x, float* y, size_t n) {
  parallel_for(n, kGrain, [&](size_t b, size_t e) { map1(x, y, b, e, Gelu()); });
}

void gelu_backward(const float* x, const float* dy, float* dx, size_t n) {
  parallel_for(n, kGrain, [&](size_t b, size_t e) { map2(x, dy, dx, b, e, GeluGrad()); });
}

void relu_forward(const float* x, float* y, size_t n) {
  parallel_for(n, kGrain, [&](size_t b, size_t e) { map1(x, y, b, e, Relu()); });
}

void relu_backward(const float* x, const float* dy, float* dx, size_t n) {
  parallel_for(n, kGrain, [&](size_t b, size_t e) { map2(x, dy, dx, b, e, ReluGrad()); });
}

}  // namespace rt::cpu
