// AdamW over every parameter tensor at once, the mirror of cpu/adamw.cc: three launches per step whatever
// the number of tensors. The tensors are cut into chunks (a table in device memory); one launch sums the
// squared gradients per chunk (double), one thread adds the chunks in order and decides the clipping
// scale (or that the step is skipped: a non-finite norm), and one launch updates every chunk, reading that
// decision from device memory, so the host waits only once, for the norm it reports.
#include <algorithm>
#include <cmath>
#include <vector>

#include "cuda/common.cuh"
#include "cuda/kernels.cuh"

namespace rt::cuda {
namespace {

// Small chunks, many blocks: a step's few million parameters are a ~50 MB stream, ~15 us at HBM speed,
// but only if every SM has loads in flight (65536-element chunks gave the char config 34 blocks, 230 us).
constexpr size_t kChunk = size_t(1) << 12;
constexpr int kThreads = 256;
constexpr int kPerThread = kChunk / kThreads;  // 16: each thread's loads issued together

struct Chunk {
  float* p;
  const float* g;
  float* m;
  float* v;
  unsigned n;
  float shrink;  // 1 - lr * weight_decay for decayed tensors, else 1
};

struct Step {
  float beta1, beta2, step_size, inv_sqrt_bc2, eps;
  double max_norm;
};

// The sum of every thread's v over a block of kThreads, in a fixed tree (the same bits every run), for
// every thread.
__device__ double block_sum(double v) {
  __shared__ double red[kThreads];
  red[threadIdx.x] = v;
  __syncthreads();
  for (int w = kThreads / 2; w > 0; w >>= 1) {
    if (threadIdx.x < w) red[threadIdx.x] += red[threadIdx.x + w];
    __syncthreads();
  }
  return red[0];
}

__global__ void __launch_bounds__(kThreads) sumsq_kernel(const Chunk* __restrict__ chunks, double* __restrict__ part) {
  const Chunk c = chunks[blockIdx.x];
  double s = 0;
  for (unsigned i = threadIdx.x; i < c.n; i += kThreads) s += static_cast<double>(c.g[i]) * c.g[i];
  s = block_sum(s);
  if (threadIdx.x == 0) part[blockIdx.x] = s;
}

// state[0] = the norm; state[1] = the gradient scale, or NaN to skip the update. One block, a fixed order
// (thread t sums parts t, t + kThreads, ...; then a tree), so the norm is the same in every run.
__global__ void __launch_bounds__(kThreads) norm_kernel(const double* __restrict__ part, int chunks, double max_norm,
                                                        double* __restrict__ state) {
  double s = 0;
  for (int k = threadIdx.x; k < chunks; k += kThreads) s += part[k];
  s = block_sum(s);
  if (threadIdx.x) return;
  const double norm = sqrt(s);
  state[0] = norm;
  state[1] = isfinite(norm) ? (max_norm > 0 && norm > max_norm ? static_cast<double>(static_cast<float>(max_norm / (norm + 1e-6))) : 1.0)
                            : NAN;
}

__global__ void __launch_bounds__(kThreads) update_kernel(const Chunk* __restrict__ chunks, Step h,
                                                          const double* __restrict__ state) {
  const double scale_d = state[1];
  if (isnan(scale_d)) return;
  const float scale = static_cast<float>(scale_d);
  const Chunk c = chunks[blockIdx.x];
  // All loads first: the stores could alias the next element's loads as far as the compiler knows, which
  // would otherwise serialise one element's four loads after the previous element's three stores.
  float g[kPerThread], m[kPerThread], v[kPerThread], p[kPerThread];
#pragma unroll
  for (int k = 0; k < kPerThread; ++k) {
    const unsigned i = threadIdx.x + k * kThreads;
    if (i < c.n) g[k] = c.g[i], m[k] = c.m[i], v[k] = c.v[i], p[k] = c.p[i];
  }
#pragma unroll
  for (int k = 0; k < kPerThread; ++k) {
    const unsigned i = threadIdx.x + k * kThreads;
    if (i >= c.n) break;
    const float gs = g[k] * scale;
    const float mk = h.beta1 * m[k] + (1.0f - h.beta1) * gs;
    const float vk = h.beta2 * v[k] + (1.0f - h.beta2) * gs * gs;
    c.m[i] = mk;
    c.v[i] = vk;
    c.p[i] = p[k] * c.shrink - h.step_size * mk / (sqrtf(vk) * h.inv_sqrt_bc2 + h.eps);
  }
}

}  // namespace

double adamw_step(const AdamWTensor* tensors, size_t count, const AdamWHyper& hp, double max_norm, bool* skipped) {
  std::vector<Chunk> chunks;
  for (size_t t = 0; t < count; ++t) {
    const AdamWTensor& x = tensors[t];
    const float shrink = x.decay ? 1.0f - hp.lr * hp.weight_decay : 1.0f;
    for (size_t o = 0; o < x.n; o += kChunk)
      chunks.push_back({x.param + o, x.grad + o, x.m + o, x.v + o, static_cast<unsigned>(std::min(kChunk, x.n - o)), shrink});
  }
  *skipped = false;
  if (chunks.empty()) return 0.0;
  // Bias corrections in double on the host, as the CPU does.
  const double bc1 = 1.0 - std::pow(static_cast<double>(hp.beta1), static_cast<double>(hp.step));
  const double bc2 = 1.0 - std::pow(static_cast<double>(hp.beta2), static_cast<double>(hp.step));
  const Step h{hp.beta1, hp.beta2, static_cast<float>(hp.lr / bc1), static_cast<float>(1.0 / std::sqrt(bc2)), hp.eps,
               max_norm};
  const unsigned n = static_cast<unsigned>(chunks.size());
  Scratch table(sizeof(Chunk) * n), part(sizeof(double) * n), state(sizeof(double) * 2);
  RT_CU(cudaMemcpyAsync(table.get(), chunks.data(), sizeof(Chunk) * n, cudaMemcpyHostToDevice, stream()));
  const Chunk* tab = static_cast<const Chunk*>(table.get());
  sumsq_kernel<<<n, kThreads, 0, stream()>>>(tab, static_cast<double*>(part.get()));
  RT_CU_LAUNCH("adamw sum of squares");
  norm_kernel<<<1, kThreads, 0, stream()>>>(static_cast<double*>(part.get()), static_cast<int>(n), max_norm,
                                     static_cast<double*>(state.get()));
  RT_CU_LAUNCH("adamw norm");
  update_kernel<<<n, kThreads, 0, stream()>>>(tab, h, static_cast<double*>(state.get()));
  RT_CU_LAUNCH("adamw update");
  double out[2];
  RT_CU(cudaMemcpyAsync(out, state.get(), sizeof out, cudaMemcpyDeviceToHost, stream()));
  RT_CU(cudaStreamSynchronize(stream()));
  *skipped = std::isnan(out[1]);
  return out[0];
}

}  // namespace rt::cuda
