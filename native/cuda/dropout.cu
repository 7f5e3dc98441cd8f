// Inverted dropout with the counter-based mask of core/rng.h: element i is kept when
// rng_uniform(rng_key(seed, stream), i) >= p, the same elements as on the CPU (bit for bit: the key is
// computed on the host, the draw on the device, both by core/rng.h), so a layer trained with dropout gives
// the same masks on either device. Backward regenerates the mask.
#include <string>

#include "core/rng.h"
#include "cuda/common.cuh"
#include "cuda/kernels.cuh"
#include "cuda/rng.cuh"

namespace rt::cuda {
namespace {

// y may alias x.
__global__ void dropout_kernel(const float* x, float* y, size_t n, MaskKey mk, int64_t threshold, float scale) {
  const size_t stride = static_cast<size_t>(gridDim.x) * blockDim.x;
  const uint64_t key = mk.get();
  for (size_t i = blockIdx.x * static_cast<size_t>(blockDim.x) + threadIdx.x; i < n; i += stride)
    y[i] = keep(key, i, threshold) ? x[i] * scale : 0.0f;
}

void apply(const float* x, float* y, size_t n, float p, uint64_t seed, uint64_t stream_id, const char* who) {
  RT_CHECK(p >= 0.0f && p < 1.0f, std::string(who) + ": dropout rate p must be in [0, 1), got " + std::to_string(p));
  if (!n) return;
  if (p == 0.0f) {
    if (x != y) RT_CU(cudaMemcpyAsync(y, x, n * sizeof(float), cudaMemcpyDeviceToDevice, stream()));
    return;
  }
  const float scale = 1.0f / (1.0f - p);  // the CPU's expression, so x * scale rounds the same way
  dropout_kernel<<<blocks_for(n, 256), 256, 0, stream()>>>(x, y, n, mask_key(seed, stream_id), keep_threshold(p), scale);
  RT_CU_LAUNCH(who);
}

}  // namespace

void dropout_forward(const float* x, float* y, size_t n, float p, uint64_t seed, uint64_t stream_id) {
  apply(x, y, n, p, seed, stream_id, "dropout_forward");
}

void dropout_backward(const float* dy, float* dx, size_t n, float p, uint64_t seed, uint64_t stream_id) {
  apply(dy, dx, n, p, seed, stream_id, "dropout_backward");
}

}  // namespace rt::cuda
