// GELU (exact, through the normal CDF) and ReLU, forward and backward, as cpu/activation.cc: the same
// special cases (gelu(-inf) = 0, not NaN; NaN propagates through relu). CUDA's normcdff is accurate in
// the negative tail, where 0.5 * (1 + erf(x / sqrt 2)) would cancel. Memory-bound: one grid-stride pass,
// which may also write a bf16 twin of its output (twin.cuh) for the product that reads it next, or that
// twin alone (a null float32 output: twin_only). x and dy may be bf16 (x_half, dy_half: the bf16 mode's c_fc
// output and the gradient at the activation's output, which the products wrote rounded so that the passes
// read half the bytes).
#include <cuda_bf16.h>

#include <cstdint>

#include "cuda/activation.cuh"
#include "cuda/common.cuh"
#include "cuda/kernels.cuh"
#include "cuda/mma.cuh"

namespace rt::cuda {
namespace {

// Four elements per thread and step through 16-byte loads and stores where every pointer allows (the
// char config's 8192 x 1536 activations: scalar accesses reached ~2 TB/s of the ~4 TB/s a pass can have);
// the last n % 4 elements, or all of them when a pointer is not 16-byte aligned, one at a time.
__device__ __forceinline__ size_t tid() { return blockIdx.x * static_cast<size_t>(blockDim.x) + threadIdx.x; }
__device__ __forceinline__ size_t nthreads() { return static_cast<size_t>(gridDim.x) * blockDim.x; }

// Elements 4i .. 4i + 3, and element i, of a float32 or bf16 input.
__device__ __forceinline__ float4 load4(const float* x, size_t i) { return reinterpret_cast<const float4*>(x)[i]; }
__device__ __forceinline__ float4 load4(const __nv_bfloat16* x, size_t i) {
  const uint2 u = reinterpret_cast<const uint2*>(x)[i];
  const float2 a = __bfloat1622float2(*reinterpret_cast<const __nv_bfloat162*>(&u.x));
  const float2 b = __bfloat1622float2(*reinterpret_cast<const __nv_bfloat162*>(&u.y));
  return make_float4(a.x, a.y, b.x, b.y);
}
__device__ __forceinline__ float load1(const float* x, size_t i) { return x[i]; }
__device__ __forceinline__ float load1(const __nv_bfloat16* x, size_t i) { return __bfloat162float(x[i]); }

template <class TX, class F>
__global__ void map1_kernel(const TX* __restrict__ x, float* __restrict__ y, __nv_bfloat16* __restrict__ twin,
                            size_t n, bool vec, F f) {
  size_t i0 = 0;
  if (vec) {
    const size_t n4 = n / 4;
    for (size_t i = tid(); i < n4; i += nthreads()) {
      const float4 v = load4(x, i);
      const float4 o = make_float4(f(v.x), f(v.y), f(v.z), f(v.w));
      if (y) reinterpret_cast<float4*>(y)[i] = o;
      if (twin) store_bf16x4(twin + 4 * i, o);
    }
    i0 = n4 * 4;
  }
  for (size_t i = i0 + tid(); i < n; i += nthreads()) {
    const float o = f(load1(x, i));
    if (y) y[i] = o;
    if (twin) twin[i] = __float2bfloat16_rn(o);
  }
}

// dx may alias dy (element i is read before it is written, by the same thread).
template <class TX, class TD, class F>
__global__ void map2_kernel(const TX* __restrict__ x, const TD* dy, float* dx, __nv_bfloat16* __restrict__ twin,
                            size_t n, bool vec, F f) {
  size_t i0 = 0;
  if (vec) {
    const size_t n4 = n / 4;
    for (size_t i = tid(); i < n4; i += nthreads()) {
      const float4 v = load4(x, i), g = load4(dy, i);
      const float4 o = make_float4(f(v.x, g.x), f(v.y, g.y), f(v.z, g.z), f(v.w, g.w));
      if (dx) reinterpret_cast<float4*>(dx)[i] = o;
      if (twin) store_bf16x4(twin + 4 * i, o);
    }
    i0 = n4 * 4;
  }
  for (size_t i = i0 + tid(); i < n; i += nthreads()) {
    const float o = f(load1(x, i), load1(dy, i));
    if (dx) dx[i] = o;
    if (twin) twin[i] = __float2bfloat16_rn(o);
  }
}


// g = GELU(f) and f = GELU'(f) in place, both bf16 (gelu_forward_dact): four elements a step where both pointers allow.
__global__ void gelu_dact_kernel(__nv_bfloat16* f, __nv_bfloat16* __restrict__ g, size_t n, bool vec) {
  size_t i0 = 0;
  if (vec) {
    const size_t n4 = n / 4;
    for (size_t i = tid(); i < n4; i += nthreads()) {
      const float4 v = load4(f, i);
      const float2 a = GeluBothFast()(v.x), b = GeluBothFast()(v.y), c = GeluBothFast()(v.z), d = GeluBothFast()(v.w);
      store_bf16x4(g + 4 * i, make_float4(a.x, b.x, c.x, d.x));
      store_bf16x4(f + 4 * i, make_float4(a.y, b.y, c.y, d.y));
    }
    i0 = n4 * 4;
  }
  for (size_t i = i0 + tid(); i < n; i += nthreads()) {
    const float2 o = GeluBothFast()(__bfloat162float(f[i]));
    g[i] = __float2bfloat16_rn(o.x);
    f[i] = __float2bfloat16_rn(o.y);
  }
}

// x: float32, or bf16 behind the float pointer where x_half.
bool x_aligned(const float* x, bool x_half) {
  return x_half ? (reinterpret_cast<uintptr_t>(x) & 7) == 0 : aligned16(x);
}

template <class F>
void map1(const float* x, float* y, size_t n, __nv_bfloat16* twin, bool x_half, const char* what) {
  if (!n) return;
  RT_CHECK(y || twin, std::string(what) + ": no output");
  const bool vec = x_aligned(x, x_half) && aligned16(y) && (!twin || (reinterpret_cast<uintptr_t>(twin) & 7) == 0);
  const unsigned blocks = blocks_for(vec ? (n + 3) / 4 : n, 256);
  if (x_half) map1_kernel<<<blocks, 256, 0, stream()>>>(reinterpret_cast<const __nv_bfloat16*>(x), y, twin, n, vec, F());
  else map1_kernel<<<blocks, 256, 0, stream()>>>(x, y, twin, n, vec, F());
  RT_CU_LAUNCH(what);
}
template <class F, class TX>
void map2_as(const TX* x, const float* dy, bool dy_half, float* dx, size_t n, __nv_bfloat16* twin, unsigned blocks,
             bool vec) {
  if (dy_half)
    map2_kernel<<<blocks, 256, 0, stream()>>>(x, reinterpret_cast<const __nv_bfloat16*>(dy), dx, twin, n, vec, F());
  else map2_kernel<<<blocks, 256, 0, stream()>>>(x, dy, dx, twin, n, vec, F());
}
template <class F>
void map2(const float* x, const float* dy, float* dx, size_t n, __nv_bfloat16* twin, bool x_half, bool dy_half,
          const char* what) {
  if (!n) return;
  RT_CHECK(dx || twin, std::string(what) + ": no output");
  const bool vec = x_aligned(x, x_half) && x_aligned(dy, dy_half) && aligned16(dx) &&
                   (!twin || (reinterpret_cast<uintptr_t>(twin) & 7) == 0);
  const unsigned blocks = blocks_for(vec ? (n + 3) / 4 : n, 256);
  if (x_half) map2_as<F>(reinterpret_cast<const __nv_bfloat16*>(x), dy, dy_half, dx, n, twin, blocks, vec);
  else map2_as<F>(x, dy, dy_half, dx, n, twin, blocks, vec);
  RT_CU_LAUNCH(what);
}

}  // namespace

void gelu_forward(const float* x, float* y, size_t n, __nv_bfloat16* twin, bool fast, bool x_half) {
  fast ? map1<GeluFast>(x, y, n, twin, x_half, "gelu_forward") : map1<Gelu>(x, y, n, twin, x_half, "gelu_forward");
}
void gelu_backward(const float* x, const float* dy, float* dx, size_t n, __nv_bfloat16* twin, bool fast, bool x_half,
                   bool dy_half) {
  fast ? map2<GeluGradFast>(x, dy, dx, n, twin, x_half, dy_half, "gelu_backward")
       : map2<GeluGrad>(x, dy, dx, n, twin, x_half, dy_half, "gelu_backward");
}
void gelu_forward_dact(__nv_bfloat16* f, __nv_bfloat16* g, size_t n) {
  if (!n) return;
  RT_CHECK(f && g, "gelu_forward_dact: f and g must be given");
  const bool vec = (reinterpret_cast<uintptr_t>(f) & 7) == 0 && (reinterpret_cast<uintptr_t>(g) & 7) == 0;
  gelu_dact_kernel<<<blocks_for(vec ? (n + 3) / 4 : n, 256), 256, 0, stream()>>>(f, g, n, vec);
  RT_CU_LAUNCH("gelu_forward_dact");
}
void mul_backward(const float* x, const float* dy, float* dx, size_t n, __nv_bfloat16* twin, bool x_half,
                  bool dy_half) {
  map2<MulGrad>(x, dy, dx, n, twin, x_half, dy_half, "mul_backward");
}
void relu_forward(const float* x, float* y, size_t n, __nv_bfloat16* twin, bool x_half) {
  map1<Relu>(x, y, n, twin, x_half, "relu_forward");
}
void relu_backward(const float* x, const float* dy, float* dx, size_t n, __nv_bfloat16* twin, bool x_half,
                   bool dy_half) {
  map2<ReluGrad>(x, dy, dx, n, twin, x_half, dy_half, "relu_backward");
}

}  // namespace rt::cuda
