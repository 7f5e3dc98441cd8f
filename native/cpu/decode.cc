#include <algorithm>
#include <cmath>
#include <vector>

#include "core/thread_pool.h"
#include "cpu/kernels.h"

namespace rt::cpu {

void attention_cached(const float* qkv, int cap, int B, int t0, int c, int d, int H, float* out) {
  const int hd = d / H;
  const float scale = 1.0f / std::sqrt(static_cast<float>(hd));
  const size_t row = 3 * static_cast<size_t>(d);
  parallel_for(static_cast<size_t>(B) * H, 1, [&](size_t a, size_t b) {
    std::vector<float> s(t0 + c);
    for (size_t bh = a; bh < b; ++bh) {
      const int bi = static_cast<int>(bh / H), h = static_cast<int>(bh % H);
      const float* base = qkv + static_cast<size_t>(bi) * cap * row;
      for (int r = 0; r < c; ++r) {
        const int t = t0 + r;
        const float* q = base + t * row + h * hd;
        float mx = -INFINITY;
        for (int j = 0; j <= t; ++j) {
          const float* k = base + j * row + d + h * hd;
          float acc = 0;
          for (int e = 0; e < hd; ++e) acc += q[e] * k[e];
          s[j] = acc * scale;
          mx = std::max(mx, s[j]);
        }
        float sum = 0;
        for (int j = 0; j <= t; ++j) sum += (s[j] = std::exp(s[j] - mx));
        const float inv = 1.0f / sum;
        float* o = out + (static_cast<size_t>(bi) * c + r) * d + h * hd;
        std::fill(o, o + hd, 0.0f);
        for (int j = 0; j <= t; ++j) {
          const float* v = base + j * row + 2 * d + h * hd;
          const float pj = s[j] * inv;
          for (int e = 0; e < hd; ++e) o[e] += pj * v[e];
        }
      }
    }
  });
}

}  // namespace rt::cpu
