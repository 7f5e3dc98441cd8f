// Token (+ position) embedding with dropout, the mirror of cpu/embedding.cc. Tokens arrive in device
// memory (the backend copies them from the host).
//
// Forward is elementwise and gives the CPU's bits (same sums, same dropout mask, index (b*N+t)*d+j).
// Backward: the position gradient is a sum over the batch per (t, j), done by one thread per entry in the
// CPU's order (same bits). The token gradient scatters B*N rows into V rows: rows are summed in shared
// memory per block when the whole [V, d] table fits there (small vocabularies: copy tasks, characters,
// pixels), else with atomics straight into global memory. Either way the order of float additions into
// one entry varies from run to run: the token gradient is reproducible to rounding, not to the bit.
#include <string>

#include "core/rng.h"
#include "cuda/common.cuh"
#include "cuda/kernels.cuh"
#include "cuda/rng.cuh"

namespace rt::cuda {
namespace {

struct Drop {
  uint64_t key;
  int64_t threshold;
  float scale;
  bool on;
  __device__ __forceinline__ float operator()(float v, size_t i) const {
    return on ? (keep(key, i, threshold) ? v * scale : 0.0f) : v;
  }
};

Drop make_drop(float p, uint64_t seed, uint64_t stream_id) {
  RT_CHECK(p >= 0.0f && p < 1.0f, "embedding: dropout rate p must be in [0, 1), got " + std::to_string(p));
  return Drop{rng_key(seed, stream_id), keep_threshold(p), p > 0 ? 1.0f / (1.0f - p) : 1.0f, p > 0};
}

__global__ void embedding_forward_kernel(const int32_t* __restrict__ tok, const float* __restrict__ wte,
                                         const float* __restrict__ wpe, float* __restrict__ out, size_t rows, int N,
                                         int d, Drop drop) {
  const size_t total = rows * d, stride = static_cast<size_t>(gridDim.x) * blockDim.x;
  for (size_t i = blockIdx.x * static_cast<size_t>(blockDim.x) + threadIdx.x; i < total; i += stride) {
    const size_t r = i / d;
    const int j = static_cast<int>(i - r * d);
    float v = wte[static_cast<size_t>(tok[r]) * d + j] + (wpe ? wpe[(r % N) * d + j] : 0.0f);
    out[i] = drop(v, i);
  }
}

// dwpe[t, j] += sum over b of dropout'(dout[b, t, j]), in b order.
__global__ void position_backward_kernel(const float* __restrict__ dout, float* __restrict__ dwpe, int B, int N, int d,
                                         Drop drop) {
  const size_t total = static_cast<size_t>(N) * d, stride = static_cast<size_t>(gridDim.x) * blockDim.x;
  for (size_t e = blockIdx.x * static_cast<size_t>(blockDim.x) + threadIdx.x; e < total; e += stride) {
    float acc = dwpe[e];
    for (int b = 0; b < B; ++b) {
      const size_t i = static_cast<size_t>(b) * total + e;
      acc += drop(dout[i], i);
    }
    dwpe[e] = acc;
  }
}

// Each block owns a contiguous range of rows; with kShared its [V, d] partial sums live in shared memory
// and are added to dwte once per block.
template <bool kShared>
__global__ void token_backward_kernel(const int32_t* __restrict__ tok, const float* __restrict__ dout,
                                      float* __restrict__ dwte, size_t rows, int d, int V, size_t rows_per_block,
                                      Drop drop) {
  extern __shared__ float part[];
  const size_t table = static_cast<size_t>(V) * d;
  if constexpr (kShared) {
    for (size_t k = threadIdx.x; k < table; k += blockDim.x) part[k] = 0.0f;
    __syncthreads();
  }
  const size_t r0 = blockIdx.x * rows_per_block;
  const size_t r1 = r0 + rows_per_block < rows ? r0 + rows_per_block : rows;
  for (size_t i = r0 * d + threadIdx.x; i < r1 * d; i += blockDim.x) {
    const size_t r = i / d;
    const int j = static_cast<int>(i - r * d);
    const float v = drop(dout[i], i);
    if (v == 0.0f) continue;
    float* dst = kShared ? part : dwte;
    atomicAdd(dst + static_cast<size_t>(tok[r]) * d + j, v);
  }
  if constexpr (kShared) {
    __syncthreads();
    for (size_t k = threadIdx.x; k < table; k += blockDim.x)
      if (part[k] != 0.0f) atomicAdd(dwte + k, part[k]);
  }
}

}  // namespace

void embedding_forward(const int32_t* tokens, const float* wte, const float* wpe, float* out, int B, int N, int d,
                       float p, uint64_t seed, uint64_t stream_id) {
  const Drop drop = make_drop(p, seed, stream_id);
  const size_t rows = static_cast<size_t>(B) * N;
  if (!rows || !d) return;
  embedding_forward_kernel<<<blocks_for(rows * d, 256), 256, 0, stream()>>>(tokens, wte, wpe, out, rows, N, d, drop);
  RT_CU_LAUNCH("embedding_forward");
}

void embedding_backward(const int32_t* tokens, const float* dout, float* dwte, float* dwpe, int B, int N, int d, int V,
                        float p, uint64_t seed, uint64_t stream_id) {
  const Drop drop = make_drop(p, seed, stream_id);
  const size_t rows = static_cast<size_t>(B) * N;
  if (!rows || !d) return;
  if (dwpe) {
    position_backward_kernel<<<blocks_for(static_cast<size_t>(N) * d, 256), 256, 0, stream()>>>(dout, dwpe, B, N, d, drop);
    RT_CU_LAUNCH("embedding_backward (positions)");
  }
  const size_t table_bytes = static_cast<size_t>(V) * d * sizeof(float);
  // Enough blocks to fill the GPU a few times over, each with a table's worth of rows or more, so that
  // flushing the shared table costs less than the rows it summed.
  const size_t want_blocks = static_cast<size_t>(limits().sms) * 4;
  if (table_bytes <= 96 * 1024 && rows >= want_blocks * V) {
    const size_t rpb = (rows + want_blocks - 1) / want_blocks;
    const unsigned blocks = static_cast<unsigned>((rows + rpb - 1) / rpb);
    static bool configured = false;
    if (!configured) {
      RT_CU(cudaFuncSetAttribute(token_backward_kernel<true>, cudaFuncAttributeMaxDynamicSharedMemorySize, 96 * 1024));
      configured = true;
    }
    token_backward_kernel<true><<<blocks, 512, table_bytes, stream()>>>(tokens, dout, dwte, rows, d, V, rpb, drop);
  } else {
    const size_t rpb = 16;
    token_backward_kernel<false><<<static_cast<unsigned>((rows + rpb - 1) / rpb), 256, 0, stream()>>>(
        tokens, dout, dwte, rows, d, V, rpb, drop);
  }
  RT_CU_LAUNCH("embedding_backward (tokens)");
}

}  // namespace rt::cuda
