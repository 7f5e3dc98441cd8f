// Plain structs shared by the model's ops on every device (cpu/softmax_xent.cc, cpu/adamw.cc, their cuda/
// mirrors, the Backend interface and the addon): kept here so that neither kernel family includes the other.
#pragma once
#include <cstddef>
#include <cstdint>

#include "core/hd.h"

namespace rt {

// Partial sums of a LayerNorm's dw and db that a backward pass over some rows may leave in place of the sums
// themselves (Backend::layernorm_part_rows): w and b, rows of d floats each, where the pass writes its first.
struct LnParts {
  float* w = nullptr;
  float* b = nullptr;
};

// What the head's softmax cross-entropy reports.
struct XentResult {
  double loss = 0;       // mean over scored rows (0 when none)
  int64_t correct = 0;   // scored rows whose argmax equals the target
  int64_t count = 0;     // scored rows
};

struct AdamWHyper {
  float lr = 1e-3f, beta1 = 0.9f, beta2 = 0.999f, eps = 1e-8f, weight_decay = 0.0f;
  int64_t step = 1;         // 1-based, for bias correction (Backend::adamw_step sets it from its count)
  float grad_scale = 1.0f;  // multiplies the gradient first (global-norm clipping)
};

// The step an AdamW update applies after `count` applied steps: count + 1, held at the int32 range (the bias
// corrections are exactly 1 long before) and from 0 (a count is never negative, but one given is not trusted).
inline RT_HD int32_t adamw_next_step(int32_t count) {
  return count < 0 ? 1 : count < INT32_MAX ? count + 1 : INT32_MAX;
}

// One parameter tensor of an optimizer step (all four buffers of n floats on one device).
struct AdamWTensor {
  float* param;
  const float* grad;
  float* m;
  float* v;
  size_t n;
  bool decay;
};

// The global gradient norm before clipping; skipped when it was not finite (nothing was updated).
struct AdamWResult {
  double norm = 0;
  bool skipped = false;
};

}  // namespace rt
