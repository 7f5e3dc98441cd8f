#include <algorithm>
#include <cmath>
#include <vector>

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

// One query row against keys/values 0..t of one cached sequence (`base`), one head. `s` has room for
// round_up(t + 1, 8) floats. Head widths that are a multiple of 8 (the usual 32, 64, 128) go through
// 8-lane vectors: the dot products, the softmax and the weighted sum of values (scalar, this took ~15% of
// a 64-sequence step of a d-128 model; ~10% vectorized, its loads of the caches dominate); other widths
// take the scalar loop.
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
  float mx = -INFINITY;
  for (int j = 0; j < n; ++j) {
    const float* k = base + j * row + d + h * hd;
    f8 acc = {};
    for (int e = 0; e < hd; e += kLanes) acc += load8(q + e) * load8(k + e);
    s[j] = hsum(acc) * scale;
    mx = std::max(mx, s[j]);
  }
  // Softmax in 8-lane blocks; lanes past n hold -inf, whose exp is exactly 0.
  const int blocks = (n + kLanes - 1) / kLanes * kLanes;
  for (int j = n; j < blocks; ++j) s[j] = -INFINITY;
  f8 sum = {};
  for (int j = 0; j < blocks; j += kLanes) {
    const f8 e = exp_nonpos(load8(s + j) - mx);
    sum += e;
    store8(s + j, e);
  }
  const float inv = 1.0f / hsum(sum);
  for (int e0 = 0; e0 < hd; e0 += kLanes) {
    f8 acc = {};
    for (int j = 0; j < n; ++j) acc += splat(s[j]) * load8(base + j * row + 2 * d + h * hd + e0);
    store8(o + e0, acc * inv);
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
