// LayerNorm over the last dimension, eps 1e-5.
//
// Forward uses two passes (mean, then the mean of squared deviations) rather than E[x^2] - E[x]^2,
// which cancels catastrophically when |mean| >> std. Row reductions use eight float lanes (GCC vector
// extensions; the build has no -ffast-math, so a plain float sum would not vectorize) combined in a
// fixed order, so every row's result is independent of the thread split.
//
// Backward: dx is per row; dw and db are sums over rows and are computed in a second pass split over
// columns, so each column is summed over rows in row order by one thread: the same bits for any thread
// count (a per-thread partial sum reduced at the end would depend on the split).
#include <algorithm>
#include <cmath>
#include <cstring>

#include "core/error.h"
#include "core/thread_pool.h"
#include "cpu/kernels.h"

namespace rt::cpu {
namespace {

// Without AVX enabled GCC warns that 32-byte vector arguments change the ABI; every function taking one
// here has internal linkage, so no ABI is crossed.
#pragma GCC diagnostic ignored "-Wpsabi"
// Small vector helpers must inline: at -O2 GCC otherwise calls them with vectors passed in memory.
#define RT_INLINE inline __attribute__((always_inline))
typedef float f8 __attribute__((vector_size(32)));
typedef float f4 __attribute__((vector_size(16)));
typedef double d4 __attribute__((vector_size(32), may_alias));
constexpr int kLanes = 8;
constexpr float kEps = 1e-5f;

RT_INLINE f8 load8(const float* p) {
  f8 v;
  std::memcpy(&v, p, sizeof v);
  return v;
}
RT_INLINE void store8(float* p, f8 v) { std::memcpy(p, &v, sizeof v); }

RT_INLINE float hsum(f8 v) {
  return ((v[0] + v[4]) + (v[1] + v[5])) + ((v[2] + v[6]) + (v[3] + v[7]));
}

size_t row_grain(int d) { return std::max<size_t>(1, 16384 / static_cast<size_t>(std::max(d, 1))); }

}  // namespace

void layernorm_forward(const float* x, const float* w, const float* b, float* y, float* mean, float* rstd, int n,
                       int d) {
  RT_CHECK(n >= 0 && d > 0, "layernorm_forward: n >= 0 and d > 0 required, got n=" + std::to_string(n) +
                                " d=" + std::to_string(d));
  parallel_for(n, row_grain(d), [&](size_t r0, size_t r1) {
    for (size_t r = r0; r < r1; ++r) {
      const float* xr = x + r * d;
      float* yr = y + r * d;
      f8 acc = {};
      int i = 0;
      for (; i + kLanes <= d; i += kLanes) acc += load8(xr + i);
      float s = hsum(acc);
      for (; i < d; ++i) s += xr[i];
      const float m = s / d;

      acc = f8{};
      i = 0;
      for (; i + kLanes <= d; i += kLanes) {
        const f8 t = load8(xr + i) - m;
        acc += t * t;
      }
      float v = hsum(acc);
      for (; i < d; ++i) v += (xr[i] - m) * (xr[i] - m);
      const float rs = 1.0f / std::sqrt(v / d + kEps);
      mean[r] = m;
      rstd[r] = rs;

      int j = 0;
      if (b) {
        for (; j + kLanes <= d; j += kLanes) store8(yr + j, (load8(xr + j) - m) * rs * load8(w + j) + load8(b + j));
        for (; j < d; ++j) yr[j] = (xr[j] - m) * rs * w[j] + b[j];
      } else {
        for (; j + kLanes <= d; j += kLanes) store8(yr + j, (load8(xr + j) - m) * rs * load8(w + j));
        for (; j < d; ++j) yr[j] = (xr[j] - m) * rs * w[j];
      }
    }
  });
}

void layernorm_backward(const float* x, const float* w, const float* mean, const float* rstd, const float* dy,
                        float* dx, float* dw, float* db, int n, int d) {
  RT_CHECK(n >= 0 && d > 0, "layernorm_backward: n >= 0 and d > 0 required, got n=" + std::to_string(n) +
                                " d=" + std::to_string(d));
  if (n == 0) return;
  if (dx) {
    parallel_for(n, row_grain(d), [&](size_t r0, size_t r1) {
      for (size_t r = r0; r < r1; ++r) {
        const float* xr = x + r * d;
        const float* gr = dy + r * d;
        float* dxr = dx + r * d;
        const float m = mean[r], rs = rstd[r];
        // mean(dy*w) and mean(dy*w*xhat) over the row.
        f8 a1 = {}, a2 = {};
        int i = 0;
        for (; i + kLanes <= d; i += kLanes) {
          const f8 dyw = load8(gr + i) * load8(w + i);
          const f8 xh = (load8(xr + i) - m) * rs;
          a1 += dyw;
          a2 += dyw * xh;
        }
        float s1 = hsum(a1), s2 = hsum(a2);
        for (; i < d; ++i) {
          const float dyw = gr[i] * w[i];
          s1 += dyw;
          s2 += dyw * ((xr[i] - m) * rs);
        }
        const float m1 = s1 / d, m2 = s2 / d;
        int j = 0;
        for (; j + kLanes <= d; j += kLanes) {
          const f8 xh = (load8(xr + j) - m) * rs;
          store8(dxr + j, load8(dxr + j) + rs * (load8(gr + j) * load8(w + j) - m1 - xh * m2));
        }
        for (; j < d; ++j) {
          const float xh = (xr[j] - m) * rs;
          dxr[j] += rs * (gr[j] * w[j] - m1 - xh * m2);
        }
      }
    });
  }
  if (dw || db) {
    // Column blocks of at most 256, accumulated in double: n can be B * 4128 rows.
    const size_t grain = std::max<size_t>(8, 16384 / static_cast<size_t>(n));
    parallel_for(d, grain, [&](size_t c0, size_t c1) {
      constexpr size_t kBlock = 256;
      alignas(32) double aw[kBlock], ab[kBlock];
      for (size_t cb = c0; cb < c1; cb += kBlock) {
        const size_t wdt = std::min(kBlock, c1 - cb);
        std::fill(aw, aw + wdt, 0.0);
        std::fill(ab, ab + wdt, 0.0);
        for (int r = 0; r < n; ++r) {
          const float* xr = x + static_cast<size_t>(r) * d + cb;
          const float* gr = dy + static_cast<size_t>(r) * d + cb;
          const float m = mean[r], rs = rstd[r];
          size_t j = 0;
          for (; j + 4 <= wdt; j += 4) {
            f4 g, xv;
            std::memcpy(&g, gr + j, sizeof g);
            std::memcpy(&xv, xr + j, sizeof xv);
            const f4 gx = g * ((xv - m) * rs);
            *reinterpret_cast<d4*>(aw + j) += __builtin_convertvector(gx, d4);
            *reinterpret_cast<d4*>(ab + j) += __builtin_convertvector(g, d4);
          }
          for (; j < wdt; ++j) {
            aw[j] += static_cast<double>(gr[j] * ((xr[j] - m) * rs));
            ab[j] += static_cast<double>(gr[j]);
          }
        }
        if (dw)
          for (size_t j = 0; j < wdt; ++j) dw[cb + j] += static_cast<float>(aw[j]);
        if (db)
          for (size_t j = 0; j < wdt; ++j) db[cb + j] += static_cast<float>(ab[j]);
      }
    });
  }
}

}  // namespace rt::cpu
