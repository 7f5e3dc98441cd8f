// The activations as device functors (activation.cu's elementwise kernels, block_fused.cu's epilogues), as
// cpu/activation.cc: the same special cases (gelu(-inf) = 0, not NaN; NaN propagates through relu).
// CUDA's normcdff is accurate in the negative tail, where 0.5 * (1 + erf(x / sqrt 2)) would cancel.
#pragma once

namespace rt::cuda {

struct Gelu {
  __device__ float operator()(float x) const {
    const float cdf = normcdff(x);
    return cdf == 0.0f ? 0.0f : x * cdf;
  }
};
struct GeluGrad {
  __device__ float operator()(float x, float g) const {
    const float cdf = normcdff(x);
    const float pdf = expf(-0.5f * x * x) * 0.398942280401432678f;
    return g * (pdf == 0.0f ? cdf : cdf + x * pdf);
  }
};
struct Relu {
  __device__ float operator()(float x) const { return x < 0.0f ? 0.0f : x; }
};
struct ReluGrad {
  __device__ float operator()(float x, float g) const { return x > 0.0f ? g : 0.0f; }
};

}  // namespace rt::cuda
