#include <algorithm>
#include <cmath>
#include <vector>

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
using simd::hsum;
using simd::load8;
using simd::splat;
using simd::store8;

constexpr int kLanes = 8;

// a * b + c, fused where the build has FMA (the build is ISO C++, so the compiler does not contract it).
RT_INLINE f8 fma8(f8 a, f8 b, f8 c) {
#ifdef __FMA__
  return (f8)_mm256_fmadd_ps((__m256)a, (__m256)b, (__m256)c);
#else
  return a * b + c;
#endif
}

#ifdef __AVX__
// The four sums of four 8-lane vectors, in order.
RT_INLINE __m128 sum4(f8 a, f8 b, f8 c, f8 d) {
  const __m256 t = _mm256_hadd_ps(_mm256_hadd_ps((__m256)a, (__m256)b), _mm256_hadd_ps((__m256)c, (__m256)d));
  return _mm_add_ps(_mm256_castps256_ps128(t), _mm256_extractf128_ps(t, 1));
}
#endif

// o[0 .. 8*NV) = inv * sum_j p[j] * v[j*row ..]: NV accumulators held across the whole pass over the keys.
template <int NV>
RT_INLINE void weigh_values(const float* v, size_t row, const float* p, int n, float inv, float* o) {
  f8 acc[NV] = {};
  for (int j = 0; j < n; ++j) {
    const f8 pj = splat(p[j]);
    const float* vj = v + j * row;
    for (int c = 0; c < NV; ++c) acc[c] = fma8(pj, load8(vj + c * kLanes), acc[c]);
  }
  for (int c = 0; c < NV; ++c) store8(o + c * kLanes, acc[c] * inv);
}

// One query row against keys/values 0..t of one cached sequence (`base`), one head. `s` has room for
// round_up(t + 1, 8) floats. Head widths that are a multiple of 8 (the usual 32, 64, 128) go through
// 8-lane vectors: the dot products, the softmax and the weighted sum of values (scalar, this took ~15% of
// a 64-sequence step of a d-128 model; ~10% vectorized with a horizontal sum per key and a pass over the
// values per 8 columns, which the code below avoids); other widths take the scalar loop.
void attend_row(const float* base, int t, int d, int hd, int h, float scale, float* s, float* o) {
  const size_t row = 3 * static_cast<size_t>(d);
  const float* q = base + t * row + h * hd;
  const int n = t + 1;
  if (hd % kLanes != 0) {
    float mx = -INFINITY;
    for (int j = 0; j < n; ++j) {
      const float* k = base + j * row + d + h * hd;
      float acc = 0;
      for (int e = 0; e < hd; ++e) acc += q[e] * k[e];
      s[j] = acc * scale;
      mx = std::max(mx, s[j]);
    }
    float sum = 0;
    for (int j = 0; j < n; ++j) sum += (s[j] = std::exp(s[j] - mx));
    const float inv = 1.0f / sum;
    std::fill(o, o + hd, 0.0f);
    for (int j = 0; j < n; ++j) {
      const float* v = base + j * row + 2 * d + h * hd;
      const float pj = s[j] * inv;
      for (int e = 0; e < hd; ++e) o[e] += pj * v[e];
    }
    return;
  }
  // Scores four keys at a time: one accumulator per key, reduced together at the end (two horizontal adds
  // and one add of halves), where a horizontal sum per key cost more than its dot product.
  float mx = -INFINITY;
  int j = 0;
#ifdef __AVX__
  for (; j + 4 <= n; j += 4) {
    const float* k0 = base + j * row + d + h * hd;
    f8 a0 = {}, a1 = {}, a2 = {}, a3 = {};
    for (int e = 0; e < hd; e += kLanes) {
      const f8 qv = load8(q + e);
      a0 = fma8(qv, load8(k0 + e), a0);
      a1 = fma8(qv, load8(k0 + row + e), a1);
      a2 = fma8(qv, load8(k0 + 2 * row + e), a2);
      a3 = fma8(qv, load8(k0 + 3 * row + e), a3);
    }
    const __m128 s4 = _mm_mul_ps(sum4(a0, a1, a2, a3), _mm_set1_ps(scale));
    _mm_storeu_ps(s + j, s4);
    mx = std::max(mx, std::max(std::max(s[j], s[j + 1]), std::max(s[j + 2], s[j + 3])));
  }
#endif
  for (; j < n; ++j) {
    const float* k = base + j * row + d + h * hd;
    f8 acc = {};
    for (int e = 0; e < hd; e += kLanes) acc = fma8(load8(q + e), load8(k + e), acc);
    s[j] = hsum(acc) * scale;
    mx = std::max(mx, s[j]);
  }
  // Softmax in 8-lane blocks; lanes past n hold -inf, whose exp is exactly 0.
  const int blocks = (n + kLanes - 1) / kLanes * kLanes;
  for (int i = n; i < blocks; ++i) s[i] = -INFINITY;
  f8 sum = {};
  for (int i = 0; i < blocks; i += kLanes) {
    const f8 e = exp_nonpos(load8(s + i) - mx);
    sum += e;
    store8(s + i, e);
  }
  const float inv = 1.0f / hsum(sum);
  // The weighted sum of values: up to 32 columns of the head per pass over the keys, so that each value
  // row is read once per pass rather than once per 8 columns.
  const float* v = base + 2 * d + h * hd;
  for (int e0 = 0; e0 < hd; e0 += 4 * kLanes) {
    switch (std::min(4, (hd - e0) / kLanes)) {
      case 1: weigh_values<1>(v + e0, row, s, n, inv, o + e0); break;
      case 2: weigh_values<2>(v + e0, row, s, n, inv, o + e0); break;
      case 3: weigh_values<3>(v + e0, row, s, n, inv, o + e0); break;
      default: weigh_values<4>(v + e0, row, s, n, inv, o + e0); break;
    }
  }
}

}  // namespace

void attention_cached_rows(const float* qkv, int cap, const int* slot, const int* t, int S, int d, int H, float* out) {
  const int hd = d / H;
  const float scale = 1.0f / std::sqrt(static_cast<float>(hd));
  const size_t seq = static_cast<size_t>(cap) * 3 * d;
  parallel_for(static_cast<size_t>(S) * H, 1, [&](size_t a, size_t b) {
    std::vector<float> s(cap + kLanes);
    for (size_t rh = a; rh < b; ++rh) {
      const int r = static_cast<int>(rh / H), h = static_cast<int>(rh % H);
      attend_row(qkv + slot[r] * seq, t[r], d, hd, h, scale, s.data(), out + static_cast<size_t>(r) * d + h * hd);
    }
  });
}

void attention_cached(const float* qkv, int cap, int B, int t0, int c, int d, int H, float* out) {
  const int hd = d / H;
  const float scale = 1.0f / std::sqrt(static_cast<float>(hd));
  parallel_for(static_cast<size_t>(B) * H, 1, [&](size_t a, size_t b) {
    std::vector<float> s(t0 + c + kLanes);
    for (size_t bh = a; bh < b; ++bh) {
      const int bi = static_cast<int>(bh / H), h = static_cast<int>(bh % H);
      const float* base = qkv + static_cast<size_t>(bi) * cap * 3 * d;
      for (int r = 0; r < c; ++r)
        attend_row(base, t0 + r, d, hd, h, scale, s.data(), out + (static_cast<size_t>(bi) * c + r) * d + h * hd);
    }
  });
}

}  // namespace rt::cpu
