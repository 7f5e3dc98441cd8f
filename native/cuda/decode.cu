// Attention for c new query rows against a key/value cache, as cpu/decode.cc (inference only). One block
// per (batch, head, new row); keys are taken in chunks of kChunk with a running maximum and sum (online
// softmax), so shared memory stays fixed whatever the cache length (w = 0 keeps maxPositions rows).
#include <cmath>
#include <string>

#include "cuda/common.cuh"
#include "cuda/kernels.cuh"

namespace rt::cuda {
namespace {

constexpr int kThreads = 128;
constexpr int kChunk = 1024;

__device__ __forceinline__ float block_reduce(float v, float* red, bool is_max) {
  const int lane = threadIdx.x % 32, warp = threadIdx.x / 32;
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) {
    const float u = __shfl_xor_sync(0xffffffffu, v, o);
    v = is_max ? fmaxf(v, u) : v + u;
  }
  __syncthreads();  // red is reused between calls
  if (lane == 0) red[warp] = v;
  __syncthreads();
  float r = red[0];
  for (int k = 1; k < kThreads / 32; ++k) r = is_max ? fmaxf(r, red[k]) : r + red[k];
  return r;
}

// smem: s[kChunk], q[hd], acc[hd]
__global__ void __launch_bounds__(kThreads) attention_cached_kernel(const float* __restrict__ qkv, int cap, int t0,
                                                                    int c, int d, int H, float scale,
                                                                    float* __restrict__ out) {
  extern __shared__ float sm[];
  __shared__ float red[kThreads / 32];
  const int hd = d / H, bh = blockIdx.x, b = bh / H, h = bh % H, r = blockIdx.y, t = t0 + r;
  const size_t row = 3 * static_cast<size_t>(d);
  const float* base = qkv + static_cast<size_t>(b) * cap * row;
  float* s = sm;
  float* q = s + kChunk;
  float* acc = q + hd;
  for (int e = threadIdx.x; e < hd; e += kThreads) {
    q[e] = base[t * row + h * hd + e];
    acc[e] = 0.0f;
  }
  __syncthreads();
  float m = -INFINITY, l = 0.0f;
  for (int j0 = 0; j0 <= t; j0 += kChunk) {
    const int jn = min(kChunk, t + 1 - j0);
    float mx = -INFINITY;
    for (int j = threadIdx.x; j < jn; j += kThreads) {
      const float* k = base + (j0 + j) * row + d + h * hd;
      float v = 0.0f;
      for (int e = 0; e < hd; ++e) v = fmaf(q[e], k[e], v);
      s[j] = v * scale;
      mx = fmaxf(mx, s[j]);
    }
    const float mnew = fmaxf(m, block_reduce(mx, red, true));
    float sum = 0.0f;
    for (int j = threadIdx.x; j < jn; j += kThreads) sum += (s[j] = expf(s[j] - mnew));
    sum = block_reduce(sum, red, false);  // also orders the s[] writes before the reads below
    const float corr = expf(m - mnew);    // 0 on the first chunk (m = -inf)
    l = l * corr + sum;
    for (int e = threadIdx.x; e < hd; e += kThreads) {
      float a = acc[e] * corr;
      for (int j = 0; j < jn; ++j) a = fmaf(s[j], base[(j0 + j) * row + 2 * d + h * hd + e], a);
      acc[e] = a;
    }
    m = mnew;
    __syncthreads();  // s[] is rewritten by the next chunk
  }
  float* o = out + (static_cast<size_t>(b) * c + r) * d + h * hd;
  const float inv = 1.0f / l;
  for (int e = threadIdx.x; e < hd; e += kThreads) o[e] = acc[e] * inv;
}

}  // namespace

void attention_cached(const float* qkv, int cap, int B, int t0, int c, int d, int H, float* out) {
  RT_CHECK(B >= 0 && c >= 0 && t0 >= 0 && t0 + c <= cap, "attention_cached: rows " + std::to_string(t0) + ".." +
                                                              std::to_string(t0 + c) + " outside the cache of " +
                                                              std::to_string(cap));
  RT_CHECK(H > 0 && d % H == 0, "attention_cached: d must be a multiple of H");
  RT_CHECK(static_cast<long long>(B) * H <= 0x7fffffff && c <= 65535, "attention_cached: too many rows for one launch");
  if (B == 0 || c == 0) return;
  const int hd = d / H;
  const size_t smem = (kChunk + 2 * static_cast<size_t>(hd)) * sizeof(float);
  RT_CHECK(smem <= 48 * 1024, "attention_cached: head size " + std::to_string(hd) + " too large");
  attention_cached_kernel<<<dim3(B * H, c), kThreads, smem, stream()>>>(qkv, cap, t0, c, d, H,
                                                                        1.0f / std::sqrt(static_cast<float>(hd)), out);
  RT_CU_LAUNCH("attention_cached");
}

}  // namespace rt::cuda
