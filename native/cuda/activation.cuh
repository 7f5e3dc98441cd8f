// The activations as device functors, shared by the elementwise kernels (activation.cu) and the GEMM
// epilogue that fuses them into c_fc's forward and mlp c_proj's input gradient (matmul.cu).
#pragma once

namespace rt::cuda {

struct Gelu {
  __device__ __forceinline__ float operator()(float x) const {
    const float cdf = normcdff(x);
    return cdf == 0.0f ? 0.0f : x * cdf;
  }
};
struct GeluGrad {
  __device__ __forceinline__ float operator()(float x, float g) const {
    const float cdf = normcdff(x);
    const float pdf = expf(-0.5f * x * x) * 0.398942280401432678f;
    return g * (pdf == 0.0f ? cdf : cdf + x * pdf);
  }
};
struct Relu {
  __device__ __forceinline__ float operator()(float x) const { return x < 0.0f ? 0.0f : x; }
};
struct ReluGrad {
  __device__ __forceinline__ float operator()(float x, float g) const { return x > 0.0f ? g : 0.0f; }
};

// act: 1 gelu, 2 relu.
__device__ __forceinline__ float act_forward(int act, float x) { return act == 1 ? Gelu()(x) : Relu()(x); }
__device__ __forceinline__ float act_backward(int act, float x, float g) {
  return act == 1 ? GeluGrad()(x, g) : ReluGrad()(x, g);
}

}  // namespace rt::cuda
