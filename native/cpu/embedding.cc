#include <cstring>
#include <string>

#include "core/error.h"
#include "core/rng.h"
#include "core/thread_pool.h"
#include "cpu/kernels.h"

namespace rt::cpu {

void embedding_forward(const int32_t* tokens, const float* wte, const float* wpe, float* out, int B, int N, int d,
                       int V, float p, uint64_t seed, uint64_t stream) {
  const size_t rows = static_cast<size_t>(B) * N;
  for (size_t i = 0; i < rows; ++i)
    if (tokens[i] < 0 || tokens[i] >= V)
      throw Error("tokens: value " + std::to_string(tokens[i]) + " at index " + std::to_string(i) +
                  " is outside the vocabulary [0, " + std::to_string(V) + ")");
  const uint64_t key = rng_key(seed, stream);
  const float keep_scale = p > 0 ? 1.0f / (1.0f - p) : 1.0f;
  parallel_for(rows, 64, [&](size_t r0, size_t r1) {
    for (size_t r = r0; r < r1; ++r) {
      const float* e = wte + static_cast<size_t>(tokens[r]) * d;
      const float* pe = wpe ? wpe + (r % N) * d : nullptr;
      float* o = out + r * d;
      for (int j = 0; j < d; ++j) o[j] = e[j] + (pe ? pe[j] : 0.0f);
      if (p > 0)
        for (int j = 0; j < d; ++j) o[j] = rng_uniform(key, r * d + j) >= p ? o[j] * keep_scale : 0.0f;
    }
  });
}

void embedding_backward(const int32_t* tokens, const float* dout, float* dwte, float* dwpe, int B, int N, int d,
                        float p, uint64_t seed, uint64_t stream) {
  const size_t rows = static_cast<size_t>(B) * N;
  const uint64_t key = rng_key(seed, stream);
  const float keep_scale = p > 0 ? 1.0f / (1.0f - p) : 1.0f;
  // Columns are split across threads: no two threads touch one gradient entry, and each entry is summed
  // in token order, so the result is the same for any thread count.
  parallel_for(static_cast<size_t>(d), 8, [&](size_t c0, size_t c1) {
    for (size_t r = 0; r < rows; ++r) {
      const float* g = dout + r * d;
      float* we = dwte + static_cast<size_t>(tokens[r]) * d;
      float* pe = dwpe ? dwpe + (r % N) * d : nullptr;
      for (size_t j = c0; j < c1; ++j) {
        float v = g[j];
        if (p > 0) v = rng_uniform(key, r * d + j) >= p ? v * keep_scale : 0.0f;
        we[j] += v;
        if (pe) pe[j] += v;
      }
    }
  });
}

}  // namespace rt::cpu
