#include <cmath>
#include <vector>

#include "core/thread_pool.h"
#include "cpu/kernels.h"

namespace rt::cpu {

void adamw_update(float* param, const float* grad, float* m, float* v, size_t n, const AdamWHyper& h, bool decay) {
  // Bias corrections in double, like torch (1 - beta2^t cancels badly in float32 for beta2 near 1).
  const double bc1 = 1.0 - std::pow(static_cast<double>(h.beta1), static_cast<double>(h.step));
  const double bc2 = 1.0 - std::pow(static_cast<double>(h.beta2), static_cast<double>(h.step));
  const float step_size = static_cast<float>(h.lr / bc1);
  const float inv_sqrt_bc2 = static_cast<float>(1.0 / std::sqrt(bc2));
  const float shrink = decay ? 1.0f - h.lr * h.weight_decay : 1.0f;
  parallel_for(n, 1 << 14, [&](size_t a, size_t b) {
    for (size_t i = a; i < b; ++i) {
      const float g = grad[i] * h.grad_scale;
      m[i] = h.beta1 * m[i] + (1.0f - h.beta1) * g;
      v[i] = h.beta2 * v[i] + (1.0f - h.beta2) * g * g;
      // torch.optim.AdamW's order: decay the weight, then the Adam step with eps outside the sqrt.
      param[i] = param[i] * shrink - step_size * m[i] / (std::sqrt(v[i]) * inv_sqrt_bc2 + h.eps);
    }
  });
}

double sum_squares(const float* x, size_t n) {
  // Fixed blocks summed in a fixed order: the thread split never changes the bits.
  constexpr size_t kBlock = 1 << 14;
  const size_t blocks = (n + kBlock - 1) / kBlock;
  std::vector<double> partial(blocks);
  parallel_for(blocks, 1, [&](size_t b0, size_t b1) {
    for (size_t b = b0; b < b1; ++b) {
      double s = 0;
      const size_t end = std::min(n, (b + 1) * kBlock);
      for (size_t i = b * kBlock; i < end; ++i) s += static_cast<double>(x[i]) * x[i];
      partial[b] = s;
    }
  });
  double s = 0;
  for (double p : partial) s += p;
  return s;
}

}  // namespace rt::cpu
