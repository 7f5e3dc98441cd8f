// Token (+ position) embedding with dropout, the mirror of cpu/embedding.cc. Tokens arrive in device
// memory (the backend copies them from the host).
//
// Forward is elementwise and gives the CPU's bits (same sums, same dropout mask, index (b*N+t)*d+j).
// Backward: the position gradient is a sum over the batch per (t, j), done by one thread per entry in the
// CPU's order (same bits). The token gradient scatters B*N rows into V rows. When a [V, d] table fits in a
// block's shared memory (small vocabularies: copy tasks, characters, pixels), thread j of a block owns
// column j of the table and adds the block's rows into it in row order, and a second kernel adds the
// blocks' tables in block order: no atomics, the same bits every run on a given GPU. Larger vocabularies
// scatter with atomics into global memory, reproducible to rounding only. With positions, a table that fits and
// at least a position an SM, one kernel does both sums in one read of dout (embedding_backward_fused_kernel).
#include <algorithm>
#include <cstdint>
#include <string>

#include "core/env.h"
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

// Four elements a thread step when d % 4 == 0 (16-byte loads and stores), with 32-bit indices where the
// output fits: a 64-bit division per element held the copy config's 25M-element forward at ~90 us.
template <typename I, bool kVec>
__global__ void embedding_forward_kernel(const int32_t* __restrict__ tok, const float* __restrict__ wte,
                                         const float* __restrict__ wpe, float* __restrict__ out, I rows, I N, I d,
                                         Drop drop) {
  constexpr int E = kVec ? 4 : 1;
  const I q = d / E, total = rows * q, stride = static_cast<I>(gridDim.x) * blockDim.x;
  for (I u = static_cast<I>(blockIdx.x) * blockDim.x + threadIdx.x; u < total; u += stride) {
    const I r = u / q, j = (u - r * q) * E;
    const float* te = wte + static_cast<size_t>(tok[r]) * d + j;
    const float* pe = wpe ? wpe + static_cast<size_t>(r % N) * d + j : nullptr;
    const size_t i = static_cast<size_t>(r) * d + j;
    if constexpr (kVec) {
      float4 v = *reinterpret_cast<const float4*>(te);
      if (pe) {
        const float4 w = *reinterpret_cast<const float4*>(pe);
        v.x += w.x, v.y += w.y, v.z += w.z, v.w += w.w;
      }
      *reinterpret_cast<float4*>(out + i) = make_float4(drop(v.x, i), drop(v.y, i + 1), drop(v.z, i + 2), drop(v.w, i + 3));
    } else {
      out[i] = drop(*te + (pe ? *pe : 0.0f), i);
    }
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

// Thread (j, g) of a block owns column j of group g's [V, d] table in shared memory and adds group g's
// share of the block's rows into it in row order, eight rows' loads at a time (one at a time, each row
// waited for its global load); the block then writes the sum of its groups' tables, in group order, to
// ws[blockIdx.x]. blockDim = (a multiple of 32 >= d, groups).
constexpr int kBatch = 8;
__global__ void token_partial_kernel(const int32_t* __restrict__ tok, const float* __restrict__ dout,
                                     float* __restrict__ ws, size_t rows, int d, int V, size_t rows_per_block,
                                     Drop drop) {
  extern __shared__ float part[];
  const int table = V * d, groups = blockDim.y, g = threadIdx.y, j = threadIdx.x;
  const int tid = threadIdx.y * blockDim.x + threadIdx.x, nthreads = blockDim.x * blockDim.y;
  for (int k = tid; k < table * groups; k += nthreads) part[k] = 0.0f;
  __syncthreads();
  const size_t b0 = blockIdx.x * rows_per_block, b1 = min(rows, b0 + rows_per_block);
  const size_t per = (b1 - b0 + groups - 1) / groups;
  const size_t r0 = min(b1, b0 + g * per), r1 = min(b1, r0 + per);
  float* mine = part + static_cast<size_t>(g) * table;
  if (j < d)
    for (size_t r = r0; r < r1; r += kBatch) {
      int t[kBatch];
      float v[kBatch];
#pragma unroll
      for (int u = 0; u < kBatch; ++u)
        if (r + u < r1) {
          const size_t i = (r + u) * d + j;
          t[u] = tok[r + u];
          v[u] = drop(dout[i], i);
        }
#pragma unroll
      for (int u = 0; u < kBatch; ++u)
        if (r + u < r1) mine[t[u] * d + j] += v[u];
    }
  __syncthreads();
  float* out = ws + static_cast<size_t>(blockIdx.x) * table;
  for (int k = tid; k < table; k += nthreads) {
    float sum = part[k];
    for (int q = 1; q < groups; ++q) sum += part[static_cast<size_t>(q) * table + k];
    out[k] = sum;
  }
}

// Positions and tokens in one pass over dout, read once where the two kernels above read it twice (the char
// config's 100 MB dout: 97 us for both). Block k owns positions [t0, t1) and thread j column j of the block's
// [V, d] table; for each of its positions it runs down the batch in b order, so dwpe's sums are
// position_backward_kernel's (the CPU's order) and the table's adds go in (t, b) order. The block then writes its
// table to ws[blockIdx.x]. blockDim = a multiple of 32 >= d.
__global__ void embedding_backward_fused_kernel(const int32_t* __restrict__ tok, const float* __restrict__ dout,
                                                float* __restrict__ dwpe, float* __restrict__ ws, int B, int N, int d,
                                                int V, int positions_per_block, Drop drop) {
  extern __shared__ float part[];
  const int table = V * d, j = threadIdx.x;
  for (int k = j; k < table; k += blockDim.x) part[k] = 0.0f;
  __syncthreads();
  const int t0 = blockIdx.x * positions_per_block, t1 = min(N, t0 + positions_per_block);
  constexpr int kRows = 2 * kBatch;  // rows' loads in flight a thread: one block of 384 threads or two an SM
  if (j < d)
    for (int t = t0; t < t1; ++t) {
      const size_t e = static_cast<size_t>(t) * d + j;
      float acc = dwpe[e];
      for (int b = 0; b < B; b += kRows) {
        int k[kRows];
        float v[kRows];
#pragma unroll
        for (int u = 0; u < kRows; ++u)
          if (b + u < B) {
            const size_t r = static_cast<size_t>(b + u) * N + t, i = r * d + j;
            k[u] = tok[r];
            v[u] = drop(dout[i], i);
          }
#pragma unroll
        for (int u = 0; u < kRows; ++u)
          if (b + u < B) {
            acc += v[u];
            part[k[u] * d + j] += v[u];
          }
      }
      dwpe[e] = acc;
    }
  __syncthreads();
  float* out = ws + static_cast<size_t>(blockIdx.x) * table;
  for (int k = j; k < table; k += blockDim.x) out[k] = part[k];
}

constexpr size_t kSmemMax = 200 * 1024;  // a block's shared memory on H100/H200 is 227 KB

// The blocks an SM that a kernel adding rows into [V, d] tables in shared memory gets at `threads` threads and `smem`
// bytes, two at most: each block's table is added up again by chunk_sums (the copy config's 6 KB tables at the
// occupancy limit made 2,772 of them, and that sum took 48 us). 0 where the kernel cannot run so (a device that
// gives less than kSmemMax, A100's 163 KB: the caller takes another path). raised: whether the kernel's limit has
// been raised to kSmemMax yet (once a kernel).
template <typename Kernel>
int table_blocks_per_sm(Kernel kernel, bool& raised, int threads, size_t smem) {
  if (smem > kSmemMax || threads > 1024) return 0;
  if (!raised) {
    if (cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, kSmemMax) != cudaSuccess)
      cudaGetLastError();
    raised = true;
  }
  int per_sm = 0;
  if (cudaOccupancyMaxActiveBlocksPerMultiprocessor(&per_sm, kernel, threads, smem) != cudaSuccess) {
    cudaGetLastError();
    return 0;
  }
  return std::min(per_sm, 2);
}

// Large vocabularies: each block a range of rows, atomics into dwte.
__global__ void token_backward_atomic_kernel(const int32_t* __restrict__ tok, const float* __restrict__ dout,
                                             float* __restrict__ dwte, size_t rows, int d, size_t rows_per_block,
                                             Drop drop) {
  const size_t r0 = blockIdx.x * rows_per_block;
  const size_t r1 = r0 + rows_per_block < rows ? r0 + rows_per_block : rows;
  for (size_t i = r0 * d + threadIdx.x; i < r1 * d; i += blockDim.x) {
    const size_t r = i / d;
    const int j = static_cast<int>(i - r * d);
    const float v = drop(dout[i], i);
    if (v != 0.0f) atomicAdd(dwte + static_cast<size_t>(tok[r]) * d + j, v);
  }
}

}  // namespace

void embedding_forward(const int32_t* tokens, const float* wte, const float* wpe, float* out, int B, int N, int d,
                       float p, uint64_t seed, uint64_t stream_id) {
  const Drop drop = make_drop(p, seed, stream_id);
  const size_t rows = static_cast<size_t>(B) * N;
  if (!rows || !d) return;
  const bool vec = d % 4 == 0 && aligned16(wte) && (!wpe || aligned16(wpe)) && aligned16(out);
  const size_t units = rows * d / (vec ? 4 : 1);
  const unsigned blocks = blocks_for(units, 256);
  if (rows * d < (size_t{1} << 31)) {
    const unsigned R = static_cast<unsigned>(rows), n = static_cast<unsigned>(N), w = static_cast<unsigned>(d);
    if (vec) embedding_forward_kernel<unsigned, true><<<blocks, 256, 0, stream()>>>(tokens, wte, wpe, out, R, n, w, drop);
    else embedding_forward_kernel<unsigned, false><<<blocks, 256, 0, stream()>>>(tokens, wte, wpe, out, R, n, w, drop);
  } else {
    const size_t n = static_cast<size_t>(N), w = static_cast<size_t>(d);
    if (vec) embedding_forward_kernel<size_t, true><<<blocks, 256, 0, stream()>>>(tokens, wte, wpe, out, rows, n, w, drop);
    else embedding_forward_kernel<size_t, false><<<blocks, 256, 0, stream()>>>(tokens, wte, wpe, out, rows, n, w, drop);
  }
  RT_CU_LAUNCH("embedding_forward");
}

void embedding_backward(const int32_t* tokens, const float* dout, float* dwte, float* dwpe, int B, int N, int d, int V,
                        float p, uint64_t seed, uint64_t stream_id) {
  const Drop drop = make_drop(p, seed, stream_id);
  const size_t rows = static_cast<size_t>(B) * N;
  if (!rows || !d) return;
  const size_t table = static_cast<size_t>(V) * d, table_bytes = table * sizeof(float);
  const int width = (d + 31) / 32 * 32;
  // RT_CUDA_EMB_ONEPASS=0 keeps the two kernels below (to compare the two in one build). H100: the char config's
  // backward 55.0 us against 52.5 + 44.6 (ncu, session 30); a char step 6.94 ms with it, 6.91 without (session 29,
  // within the A/B's spread of ~0.05 a round).
  static const bool one_pass = rt::env_switch("RT_CUDA_EMB_ONEPASS", true);
  if (one_pass && dwpe && N >= limits().sms) {
    static bool fused_raised = false;
    if (const int per_sm = table_blocks_per_sm(embedding_backward_fused_kernel, fused_raised, width, table_bytes)) {
      // Each block a run of positions, every position in some block.
      const int want = limits().sms * per_sm;
      const int ppb = (N + want - 1) / want, blocks = (N + ppb - 1) / ppb;
      Scratch ws(static_cast<size_t>(blocks) * table_bytes);
      embedding_backward_fused_kernel<<<blocks, width, table_bytes, stream()>>>(tokens, dout, dwpe, ws.f32(), B, N, d,
                                                                                 V, ppb, drop);
      RT_CU_LAUNCH("embedding_backward (positions and token tables)");
      add_chunk_sums(ws.f32(), blocks, static_cast<int>(table), dwte);  // the tables, in block order
      return;
    }
  }
  if (dwpe) {
    position_backward_kernel<<<blocks_for(static_cast<size_t>(N) * d, 256), 256, 0, stream()>>>(dout, dwpe, B, N, d, drop);
    RT_CU_LAUNCH("embedding_backward (positions)");
  }
  // Row groups a block, each with its own table (more rows in flight per SM), within 48 KB or one table.
  const int groups = static_cast<int>(std::max<size_t>(1, std::min<size_t>({8, 1024 / static_cast<size_t>(width),
                                                                               48 * 1024 / std::max<size_t>(table_bytes, 1)})));
  const size_t smem = groups * table_bytes;
  static bool partial_raised = false;
  if (const int per_sm = table_blocks_per_sm(token_partial_kernel, partial_raised, width * groups, smem)) {
    const size_t want = static_cast<size_t>(limits().sms) * per_sm;
    const size_t rpb = std::max<size_t>(32, (rows + want - 1) / want);
    const int blocks = static_cast<int>((rows + rpb - 1) / rpb);
    Scratch ws(static_cast<size_t>(blocks) * table_bytes);
    token_partial_kernel<<<blocks, dim3(width, groups), smem, stream()>>>(tokens, dout, ws.f32(), rows, d, V, rpb, drop);
    RT_CU_LAUNCH("embedding_backward (token tables)");
    add_chunk_sums(ws.f32(), blocks, static_cast<int>(table), dwte);  // the tables, in block order
  } else {
    const size_t rpb = 16;
    token_backward_atomic_kernel<<<static_cast<unsigned>((rows + rpb - 1) / rpb), 256, 0, stream()>>>(
        tokens, dout, dwte, rows, d, rpb, drop);
    RT_CU_LAUNCH("embedding_backward (tokens)");
  }
}

}  // namespace rt::cuda
