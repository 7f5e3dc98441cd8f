// The head, the mirror of cpu/softmax_xent.cc: final LayerNorm of the scored positions, logits through the
// tied (or classify) weight, softmax cross-entropy and its backward, chunked over rows so that logits
// never take more than kChunkFloats of device memory whatever B * P * V is.
//
// Per chunk: one GEMM for the logits, one kernel (a warp per row) for max / argmax / log-sum-exp / loss and
// the gradient written over the logits, two GEMMs for dW and dH. Losses are kept per row and summed in
// row order at the end (double), so the loss does not depend on the chunking or on scheduling.
#include <algorithm>
#include <string>

#include "core/env.h"
#include "cuda/common.cuh"
#include "cuda/kernels.cuh"
#include "cuda/matmul_sm90.cuh"

namespace rt::cuda {
namespace {

constexpr size_t kChunkFloats = size_t(1) << 25;  // 128 MB of logits at most

__global__ void xent_rows_kernel(float* __restrict__ z, const int32_t* __restrict__ targets, int rows, int V,
                                 int ignore_index, float inv_count, bool grad, double* __restrict__ row_loss,
                                 int* __restrict__ row_hit) {
  const int r = blockIdx.x * (blockDim.x / 32) + threadIdx.x / 32, lane = threadIdx.x % 32;
  if (r >= rows) return;
  float* zr = z + static_cast<size_t>(r) * V;
  float mx = -INFINITY;
  int arg = 0x7fffffff;
  for (int j = lane; j < V; j += 32) {
    const float v = zr[j];
    if (v > mx || (v == mx && j < arg)) { mx = v; arg = j; }  // the first maximum, like std::max_element
  }
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) {
    const float om = __shfl_xor_sync(0xffffffffu, mx, o);
    const int oa = __shfl_xor_sync(0xffffffffu, arg, o);
    if (om > mx || (om == mx && oa < arg)) { mx = om; arg = oa; }
  }
  double s = 0;
  for (int j = lane; j < V; j += 32) s += static_cast<double>(expf(zr[j] - mx));
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) s += __shfl_xor_sync(0xffffffffu, s, o);
  const int t = targets[r];
  const double lse = mx + log(s);
  if (lane == 0) {
    row_loss[r] = t == ignore_index ? 0.0 : lse - zr[t];
    row_hit[r] = t != ignore_index && arg == t;
  }
  if (!grad) return;
  __syncwarp();
  const float flse = static_cast<float>(lse);
  for (int j = lane; j < V; j += 32) {
    float g = t == ignore_index ? 0.0f : expf(zr[j] - flse) * inv_count;
    if (j == t) g -= inv_count;
    zr[j] = g;
  }
}

// Small vocabularies (V <= kLanes * kPer): kLanes lanes a row and its values read once into registers, so that a warp
// works out 32 / kLanes rows at once. The warp-a-row kernel above spent the char config's 65,536 rows of 65 logits
// 36 us (H100), each warp waiting on its shuffles, its double log and its loads one row at a time. The same
// operations as there on each value, so the same bits but for the double sum s, added in another order.
template <int kLanes, int kPer>
__global__ void xent_rows_small_kernel(float* __restrict__ z, const int32_t* __restrict__ targets, int rows, int V,
                                       int ignore_index, float inv_count, bool grad, double* __restrict__ row_loss,
                                       int* __restrict__ row_hit) {
  static_assert(kLanes >= 1 && kLanes <= 32 && (kLanes & (kLanes - 1)) == 0, "kLanes: a power of two up to 32");
  const int r = (blockIdx.x * blockDim.x + threadIdx.x) / kLanes, lane = threadIdx.x % kLanes;
  const bool live = r < rows;  // (no early return: the whole warp takes part in the shuffles)
  float* zr = z + static_cast<size_t>(live ? r : 0) * V;
  const int t = live ? targets[r] : ignore_index;
  float v[kPer];
  float mx = -INFINITY;
  int arg = 0x7fffffff;
#pragma unroll
  for (int k = 0; k < kPer; ++k) {
    const int j = lane + k * kLanes;
    v[k] = live && j < V ? zr[j] : -INFINITY;
    if (j < V && (v[k] > mx || (v[k] == mx && j < arg))) { mx = v[k]; arg = j; }
  }
#pragma unroll
  for (int o = kLanes / 2; o > 0; o >>= 1) {
    const float om = __shfl_xor_sync(0xffffffffu, mx, o);
    const int oa = __shfl_xor_sync(0xffffffffu, arg, o);
    if (om > mx || (om == mx && oa < arg)) { mx = om; arg = oa; }
  }
  double s = 0;
#pragma unroll
  for (int k = 0; k < kPer; ++k)
    if (lane + k * kLanes < V) s += static_cast<double>(expf(v[k] - mx));
#pragma unroll
  for (int o = kLanes / 2; o > 0; o >>= 1) s += __shfl_xor_sync(0xffffffffu, s, o);
  const unsigned live_lanes = __ballot_sync(0xffffffffu, live);
  if (!live) return;
  const double lse = mx + log(s);
  if (lane == 0) {
    row_loss[r] = t == ignore_index ? 0.0 : lse - zr[t];
    row_hit[r] = t != ignore_index && arg == t;
  }
  if (!grad) return;
  __syncwarp(live_lanes);  // (lane 0's read of zr[t] before the row is overwritten)
  const float flse = static_cast<float>(lse);
#pragma unroll
  for (int k = 0; k < kPer; ++k) {
    const int j = lane + k * kLanes;
    if (j >= V) break;
    float g = t == ignore_index ? 0.0f : expf(v[k] - flse) * inv_count;
    if (j == t) g -= inv_count;
    zr[j] = g;
  }
}
constexpr int kSmallLanes = 8, kSmallPer = 16;  // V <= 128: four rows a warp
// RT_CUDA_XENT_SMALL=0 keeps the warp-a-row kernel for every V (to compare the two in one build). H100: the char
// config's rows 23.0 against 36.3 us (ncu, session 30); a char step 6.94 ms with it, 6.95 without (session 29,
// within the A/B's noise).
bool small_rows() {
  static const bool on = rt::env_switch("RT_CUDA_XENT_SMALL", true);
  return on;
}

// Sums of the per-row losses and hits: thread t takes rows t, t + kTotalThreads, ... (coalesced; contiguous
// ranges per thread took the char config's 65,536 rows 70 us), then a fixed tree: the same bits every run.
constexpr int kTotalThreads = 1024;
__global__ void __launch_bounds__(kTotalThreads) xent_total_kernel(const double* __restrict__ row_loss,
                                                                  const int* __restrict__ row_hit, int rows,
                                                                  double* __restrict__ out) {
  __shared__ double loss[kTotalThreads], hits[kTotalThreads];
  double l = 0, h = 0;
  for (int r = threadIdx.x; r < rows; r += kTotalThreads) {
    l += row_loss[r];
    h += row_hit[r];
  }
  loss[threadIdx.x] = l;
  hits[threadIdx.x] = h;
  __syncthreads();
  for (int w = kTotalThreads / 2; w > 0; w >>= 1) {
    if (threadIdx.x < w) {
      loss[threadIdx.x] += loss[threadIdx.x + w];
      hits[threadIdx.x] += hits[threadIdx.x + w];
    }
    __syncthreads();
  }
  if (threadIdx.x == 0) {
    out[0] = loss[0];
    out[1] = hits[0];
  }
}

// H's bf16 copy, for the logits product to read instead of casting H itself (the Hopper path takes one; the same
// bits, one pass over H fewer: the char config's 100 MB read and 50 MB write); null where no product would read it.
__nv_bfloat16* h_twin(bool bf16, int R, int d, Scratch& buf) {
  if (!bf16 || d % 8 || limits().cc != 90 || !wgmma_enabled()) return nullptr;
  buf = Scratch(sizeof(__nv_bfloat16) * static_cast<size_t>(R) * d);
  return static_cast<__nv_bfloat16*>(buf.get());
}

// X [R, d] = the last P positions of each of B sequences of Y [B, N, d] (a strided copy), or Y itself.
const float* gather(const float* Y, int B, int N, int d, int P, Scratch& X) {
  if (P == N) return Y;
  X = Scratch(sizeof(float) * B * P * d);
  RT_CU(cudaMemcpy2DAsync(X.get(), sizeof(float) * P * d, Y + static_cast<size_t>(N - P) * d, sizeof(float) * N * d,
                          sizeof(float) * P * d, B, cudaMemcpyDeviceToDevice, stream()));
  return X.f32();
}

}  // namespace

void head_xent(bool bf16, const float* Y, const float* lnw, const float* lnb, const float* W, const int32_t* targets,
               int B, int N, int d, int V, int P, int ignore_index, int64_t count, float* dY, float* dlnw, float* dlnb,
               float* dW, double* totals) {
  const int R = B * P;
  Scratch Xs;
  const float* X = gather(Y, B, N, d, P, Xs);
  Scratch H(sizeof(float) * R * d), mean(sizeof(float) * R), rstd(sizeof(float) * R), H16s;
  __nv_bfloat16* H16 = h_twin(bf16, R, d, H16s);
  layernorm_forward(X, lnw, lnb, H.f32(), mean.f32(), rstd.f32(), R, d, H16);
  Scratch dH;
  if (dY) dH = Scratch(sizeof(float) * R * d);
  const int chunk = static_cast<int>(std::max<size_t>(1, std::min<size_t>(R, kChunkFloats / V)));
  Scratch logits(sizeof(float) * static_cast<size_t>(chunk) * V);
  Scratch row_loss(sizeof(double) * R), row_hit(sizeof(int) * R);
  const float inv_count = count ? 1.0f / static_cast<float>(count) : 0.0f;
  for (int r0 = 0; r0 < R; r0 += chunk) {
    const int rc = std::min(chunk, R - r0);
    const float* Hc = H.f32() + static_cast<size_t>(r0) * d;
    gemm(bf16, false, true, rc, V, d, 1.0f, Hc, d, W, d, 0.0f, logits.f32(), V, nullptr, nullptr, nullptr,
         H16 ? H16 + static_cast<size_t>(r0) * d : nullptr);
    double* rl = static_cast<double*>(row_loss.get()) + r0;
    int* rh = static_cast<int*>(row_hit.get()) + r0;
    if (V <= kSmallLanes * kSmallPer && small_rows()) {
      constexpr int rows_per_block = 256 / kSmallLanes;
      xent_rows_small_kernel<kSmallLanes, kSmallPer><<<(rc + rows_per_block - 1) / rows_per_block, 256, 0, stream()>>>(
          logits.f32(), targets + r0, rc, V, ignore_index, inv_count, dY != nullptr, rl, rh);
    } else {
      xent_rows_kernel<<<(rc + 7) / 8, 256, 0, stream()>>>(logits.f32(), targets + r0, rc, V, ignore_index, inv_count,
                                                          dY != nullptr, rl, rh);
    }
    RT_CU_LAUNCH("head softmax cross-entropy");
    // The head is a linear layer [d -> V] without bias: dH = dlogits W, dW += dlogits^T H (on weight_grad.cu's
    // kernel where its rule takes the shape: the char config's 65 x 384 over 65536 rows, 107 us as a split-K
    // product with a transposed operand, 60 on it).
    if (dY) linear_backward(bf16, Hc, W, logits.f32(), dH.f32() + static_cast<size_t>(r0) * d, dW, nullptr, rc, d, V);
  }
  xent_total_kernel<<<1, kTotalThreads, 0, stream()>>>(static_cast<double*>(row_loss.get()),
                                                       static_cast<int*>(row_hit.get()), R, totals);
  RT_CU_LAUNCH("head loss total");
  if (dY) {
    // The LayerNorm's dx written, not added to zeros (a null dres: no memset of dY and read of it back, 2 x 100 MB
    // a char step); only the positions before the scored ones are zeroed.
    float* dX = dY;
    Scratch dXs;
    if (P != N) {
      RT_CU(cudaMemset2DAsync(dY, sizeof(float) * N * d, 0, sizeof(float) * (N - P) * d, B, stream()));
      dXs = Scratch(sizeof(float) * R * d);
      dX = dXs.f32();
    }
    // ln_f's dw, db: as partial sums left by the dx kernel (RT_CUDA_LN_PARTS), or a pass of their own.
    const int part_rows = ln_parts_wanted() && dlnw ? layernorm_part_rows(R, d) : -1;
    if (part_rows > 0) {
      Scratch parts(2 * sizeof(float) * static_cast<size_t>(part_rows) * d);
      const LnParts lp{parts.f32(), parts.f32() + static_cast<size_t>(part_rows) * d};
      layernorm_backward_res(X, lnw, mean.f32(), rstd.f32(), dH.f32(), nullptr, dX, nullptr, nullptr, R, d, nullptr,
                             false, lp);
      layernorm_parts_finish(lp, part_rows, d, dlnw, dlnb);
    } else {
      layernorm_backward_res(X, lnw, mean.f32(), rstd.f32(), dH.f32(), nullptr, dX, dlnw, dlnb, R, d);
    }
    if (P != N)
      RT_CU(cudaMemcpy2DAsync(dY + static_cast<size_t>(N - P) * d, sizeof(float) * N * d, dX, sizeof(float) * P * d,
                              sizeof(float) * P * d, B, cudaMemcpyDeviceToDevice, stream()));
  }
}

void head_logits(bool bf16, const float* Y, const float* lnw, const float* lnb, const float* W, int B, int N, int d,
                 int V, int P, float* logits) {
  const int R = B * P;
  Scratch Xs;
  const float* X = gather(Y, B, N, d, P, Xs);
  Scratch H(sizeof(float) * R * d), mean(sizeof(float) * R), rstd(sizeof(float) * R), H16s;
  __nv_bfloat16* H16 = h_twin(bf16, R, d, H16s);
  layernorm_forward(X, lnw, lnb, H.f32(), mean.f32(), rstd.f32(), R, d, H16);
  gemm(bf16, false, true, R, V, d, 1.0f, H.f32(), d, W, d, 0.0f, logits, V, nullptr, nullptr, nullptr, H16);
}

}  // namespace rt::cuda
