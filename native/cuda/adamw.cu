// AdamW over every parameter tensor at once, the mirror of cpu/adamw.cc: three launches per step whatever
// the number of tensors. The tensors are cut into chunks (a table in device memory); one launch sums the
// squared gradients per chunk (double), one thread adds the chunks in order and decides the clipping
// scale (or that the step is skipped: a non-finite norm), the bias corrections and the step count, and one
// launch updates every chunk, reading those from device memory. So the host never waits: the step count
// lives on the device, and the norm is read back behind the update only when the caller asks for it.
#include <algorithm>
#include <cmath>
#include <cstring>
#include <functional>
#include <memory>
#include <mutex>
#include <unordered_map>
#include <vector>

#include "cuda/common.cuh"
#include "cuda/kernels.cuh"
#include "cuda/readback.cuh"

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
  unsigned decay;  // whether weight decay applies: the table holds no learning rate, so it does not change
};

bool operator==(const Chunk& a, const Chunk& b) {
  return a.p == b.p && a.g == b.g && a.m == b.m && a.v == b.v && a.n == b.n && a.decay == b.decay;
}

struct Step {
  float lr, beta1, beta2, eps, shrink;  // shrink = 1 - lr * weight_decay, for decayed tensors
  double max_norm;
};

// What norm_kernel leaves for update_kernel and the host.
struct Decision {
  double norm;
  double scale;  // the gradient's clipping scale, or NaN: skip the update
  float step_size, inv_sqrt_bc2;
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

// The norm, then (when it is finite) the clipping scale, the bias corrections of step count + 1 (in double,
// as the CPU computes them) and the count advanced. One block, a fixed order (thread t sums parts t,
// t + kThreads, ...; then a tree), so the norm is the same in every run.
__global__ void __launch_bounds__(kThreads) norm_kernel(const double* __restrict__ part, int chunks, Step h,
                                                        int32_t* __restrict__ count, Decision* __restrict__ out) {
  double s = 0;
  for (int k = threadIdx.x; k < chunks; k += kThreads) s += part[k];
  s = block_sum(s);
  if (threadIdx.x) return;
  const double norm = sqrt(s);
  out->norm = norm;
  if (!isfinite(norm)) {
    out->scale = NAN;
    return;
  }
  const int32_t t = adamw_next_step(*count);
  const double bc1 = 1.0 - pow(static_cast<double>(h.beta1), static_cast<double>(t));
  const double bc2 = 1.0 - pow(static_cast<double>(h.beta2), static_cast<double>(t));
  out->scale = h.max_norm > 0 && norm > h.max_norm ? static_cast<double>(static_cast<float>(h.max_norm / (norm + 1e-6))) : 1.0;
  out->step_size = static_cast<float>(h.lr / bc1);
  out->inv_sqrt_bc2 = static_cast<float>(1.0 / sqrt(bc2));
  *count = t;
}

__global__ void __launch_bounds__(kThreads) update_kernel(const Chunk* __restrict__ chunks, Step h,
                                                          const Decision* __restrict__ dec) {
  const double scale_d = dec->scale;
  if (isnan(scale_d)) return;
  const float scale = static_cast<float>(scale_d), step_size = dec->step_size, inv_sqrt_bc2 = dec->inv_sqrt_bc2;
  const Chunk c = chunks[blockIdx.x];
  const float shrink = c.decay ? h.shrink : 1.0f;
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
    c.p[i] = p[k] * shrink - step_size * mk / (sqrtf(vk) * inv_sqrt_bc2 + h.eps);
  }
}

// The chunk table of the last step on each device, kept there: it changes only when the tensors do, and a
// copy from pageable memory may wait for the stream. The lock covers a whole step's queueing, so that no
// other step rewrites the table between this step's copy and its launches.
struct TableCache {
  std::vector<Chunk> host;
  Chunk* dev = nullptr;
  size_t capacity = 0;
};
std::mutex g_table_mu;
std::unordered_map<int, TableCache>& table_caches() {
  static auto* m = new std::unordered_map<int, TableCache>();  // never destroyed: no exit order
  return *m;
}

}  // namespace

std::function<AdamWResult()> adamw_step(const AdamWTensor* tensors, size_t count, const AdamWHyper& hp,
                                        double max_norm, int32_t* step_count) {
  std::vector<Chunk> chunks;
  for (size_t t = 0; t < count; ++t) {
    const AdamWTensor& x = tensors[t];
    for (size_t o = 0; o < x.n; o += kChunk)
      chunks.push_back({x.param + o, x.grad + o, x.m + o, x.v + o, static_cast<unsigned>(std::min(kChunk, x.n - o)),
                        x.decay ? 1u : 0u});
  }
  const Step h{hp.lr, hp.beta1, hp.beta2, hp.eps, 1.0f - hp.lr * hp.weight_decay, max_norm};
  const unsigned n = static_cast<unsigned>(chunks.size());
  Scratch part(sizeof(double) * std::max(n, 1u)), dec(sizeof(Decision));
  int dev = 0;
  RT_CU(cudaGetDevice(&dev));
  if (n == 0) {
    // No elements at all: the norm is 0 and the step counts, as on the CPU (CpuBackend::adamw_step).
    norm_kernel<<<1, kThreads, 0, stream()>>>(static_cast<double*>(part.get()), 0, h, step_count,
                                              static_cast<Decision*>(dec.get()));
    RT_CU_LAUNCH("adamw norm");
  } else {
    std::lock_guard<std::mutex> lock(g_table_mu);
    TableCache& tc = table_caches()[dev];
    if (tc.host != chunks) {
      tc.host.clear();  // (until the copy is queued)
      if (tc.capacity < n) {
        // cudaFree waits for the device: the old table may still be read by a queued step.
        if (tc.dev) RT_CU(cudaFree(tc.dev));
        tc.dev = nullptr;
        tc.capacity = 0;
        RT_CU(cudaMalloc(&tc.dev, sizeof(Chunk) * n));
        tc.capacity = n;
      }
      RT_CU(cudaMemcpyAsync(tc.dev, chunks.data(), sizeof(Chunk) * n, cudaMemcpyHostToDevice, stream()));
      tc.host = std::move(chunks);
    }
    sumsq_kernel<<<n, kThreads, 0, stream()>>>(tc.dev, static_cast<double*>(part.get()));
    RT_CU_LAUNCH("adamw sum of squares");
    norm_kernel<<<1, kThreads, 0, stream()>>>(static_cast<double*>(part.get()), static_cast<int>(n), h, step_count,
                                              static_cast<Decision*>(dec.get()));
    RT_CU_LAUNCH("adamw norm");
    update_kernel<<<n, kThreads, 0, stream()>>>(tc.dev, h, static_cast<const Decision*>(dec.get()));
    RT_CU_LAUNCH("adamw update");
  }
  auto rb = std::make_shared<Readback>(dec.get(), 2 * sizeof(double));
  return [rb] {
    double out[2];
    std::memcpy(out, rb->wait(), sizeof out);
    AdamWResult r;
    r.norm = out[0];
    r.skipped = std::isnan(out[1]);
    return r;
  };
}

}  // namespace rt::cuda
