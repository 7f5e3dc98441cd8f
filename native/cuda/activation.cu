// GELU (exact, through the normal CDF) and ReLU, forward and backward, as cpu/activation.cc: the same
// special cases (gelu(-inf) = 0, not NaN; NaN propagates through relu). CUDA's normcdff is accurate in
// the negative tail, where 0.5 * (1 + erf(x / sqrt 2)) would cancel. Memory-bound: one grid-stride pass.
#include "cuda/activation.cuh"
#include "cuda/common.cuh"
#include "cuda/kernels.cuh"

namespace rt::cuda {
namespace {

template <class F>
__global__ void map1_kernel(const float* __restrict__ x, float* __restrict__ y, size_t n, F f) {
  const size_t stride = static_cast<size_t>(gridDim.x) * blockDim.x;
  for (size_t i = blockIdx.x * static_cast<size_t>(blockDim.x) + threadIdx.x; i < n; i += stride) y[i] = f(x[i]);
}

// dx may alias dy (element i is read before it is written, by the same thread).
template <class F>
__global__ void map2_kernel(const float* __restrict__ x, const float* dy, float* dx, size_t n, F f) {
  const size_t stride = static_cast<size_t>(gridDim.x) * blockDim.x;
  for (size_t i = blockIdx.x * static_cast<size_t>(blockDim.x) + threadIdx.x; i < n; i += stride) dx[i] = f(x[i], dy[i]);
}

template <class F>
void map1(const float* x, float* y, size_t n, const char* what) {
  if (!n) return;
  map1_kernel<<<blocks_for(n, 256), 256, 0, stream()>>>(x, y, n, F());
  RT_CU_LAUNCH(what);
}
template <class F>
void map2(const float* x, const float* dy, float* dx, size_t n, const char* what) {
  if (!n) return;
  map2_kernel<<<blocks_for(n, 256), 256, 0, stream()>>>(x, dy, dx, n, F());
  RT_CU_LAUNCH(what);
}

}  // namespace

void gelu_forward(const float* x, float* y, size_t n) { map1<Gelu>(x, y, n, "gelu_forward"); }
void gelu_backward(const float* x, const float* dy, float* dx, size_t n) { map2<GeluGrad>(x, dy, dx, n, "gelu_backward"); }
void relu_forward(const float* x, float* y, size_t n) { map1<Relu>(x, y, n, "relu_forward"); }
void relu_backward(const float* x, const float* dy, float* dx, size_t n) { map2<ReluGrad>(x, dy, dx, n, "relu_backward"); }

}  // namespace rt::cuda
