// What the GEMM kernels share (matmul.cu's mma.sync and WMMA kernels, matmul_sm90.cu's wgmma kernel,
// weight_grad.cu's cp.async tile loads): the launch arguments, where blockIdx.z puts a block (batch item or split of K), and the epilogue that writes
// one output element. Included by those two files only.
#pragma once
#include <cuda_runtime.h>

namespace rt::cuda::gemm_detail {

struct GemmArgs {
  int M, N, K;
  const float* A;
  const float* B;
  float* C;
  int lda, ldb, ldc;
  float alpha, beta;
  const float* bias;
  const float* res;  // added in the epilogue (ldc apart), or null
  int inner;
  long long a_o, a_i, b_o, b_i, c_o, c_i;
  int kchunk;  // reduction range per blockIdx.z when split over K (ws != null)
  float* ws;   // split-K partials [splits][M][N], or null
  bool vecA, vecB;  // 16-byte loads allowed along each operand's contiguous dimension
  bool c_half;      // C holds bf16 (rows of ldc elements behind the float pointer): the Hopper kernels only
  // An activation in the epilogue of a bf16 C, as activation.cu's passes apply it to C's rounded values:
  // kActGeluFast, kActRelu: act(C) written beside C (rows of ldc bf16 elements at act_out);
  // kActGeluGradFast, kActReluGrad: C becomes act'(x) C, x the activation's input at act_x (bf16, rows of ldc).
  // kActGeluBoth: GELU(C) written at act_out and GELU'(C) where C would go; kActMul: C becomes x C, x (at act_x)
  // the GELU'(f) that kActGeluBoth wrote (GemmAct::dgelu).
  // Only the TMA kernel's staged epilogue applies it (gemm_tma's act_applied says whether it did); every other
  // kernel ignores it.
  int act;
  void* act_out;
  const void* act_x;
};
constexpr int kActNone = 0, kActGeluFast = 1, kActRelu = 2, kActGeluGradFast = 3, kActReluGrad = 4, kActGeluBoth = 5,
              kActMul = 6;

// Where blockIdx.z puts this block: a batch item (offsets applied to A, B, C) or a split of K.
struct BlockRange {
  const float* A;
  const float* B;
  float* C;
  int kb, ke;
};
__device__ __forceinline__ BlockRange block_range(const GemmArgs& g) {
  BlockRange r{g.A, g.B, g.C, 0, g.K};
  const int z = blockIdx.z;
  if (g.ws) {
    r.kb = z * g.kchunk;
    r.ke = min(g.K, r.kb + g.kchunk);
  } else if (z) {
    const long long zo = z / g.inner, zi = z % g.inner;
    r.A += zo * g.a_o + zi * g.a_i;
    r.B += zo * g.b_o + zi * g.b_i;
    r.C += zo * g.c_o + zi * g.c_i;
  }
  return r;
}

// Writes one output element: to the split workspace, or alpha * v (+ bias) (+ beta * C) into C.
__device__ __forceinline__ void epilogue_store(const GemmArgs& g, float* C, int gr, int gc, float v) {
  if (g.ws) {
    g.ws[(static_cast<size_t>(blockIdx.z) * g.M + gr) * g.N + gc] = v;
    return;
  }
  float o = g.alpha * v;
  if (g.bias) o += g.bias[gc];
  if (g.res) o += g.res[static_cast<size_t>(gr) * g.ldc + gc];
  float* cp = C + static_cast<size_t>(gr) * g.ldc + gc;
  if (g.beta != 0.0f) o += g.beta * *cp;
  *cp = o;
}

// 16 bytes global -> shared without passing through registers; zeros when !ok (gmem is then not read).
__device__ __forceinline__ void cp_async16(void* smem, const void* gmem, bool ok) {
  const unsigned s = static_cast<unsigned>(__cvta_generic_to_shared(smem));
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(s), "l"(gmem), "r"(ok ? 16 : 0));
}
// 4 bytes, likewise (operands whose rows are not 16-byte aligned).
__device__ __forceinline__ void cp_async4(float* smem, const float* gmem, bool ok) {
  const unsigned s = static_cast<unsigned>(__cvta_generic_to_shared(smem));
  asm volatile("cp.async.ca.shared.global [%0], [%1], 4, %2;\n" ::"r"(s), "l"(gmem), "r"(ok ? 4 : 0));
}
__device__ __forceinline__ void cp_async_commit() { asm volatile("cp.async.commit_group;\n" ::); }
template <int N>
__device__ __forceinline__ void cp_async_wait() {
  asm volatile("cp.async.wait_group %0;\n" ::"n"(N));
}

// A ROWS x COLS tile of p (float32, or bf16 for weight_grad.cu's bf16 operands; row stride ld, contiguous
// along COLS) from (r0, c0) into shared memory with row stride SS elements, 16 bytes per copy when `vec`
// (clim then a multiple of 16 bytes' elements), else 4 bytes (float32 only); elements at rows >= rlim or
// columns >= clim become zeros (nothing is read for them). THREADS threads share the copies.
template <int ROWS, int COLS, int SS, int THREADS, class T>
__device__ __forceinline__ void load_tile_async(T* s, const T* __restrict__ p, int ld, int r0, int c0, int rlim,
                                                int clim, bool vec) {
  constexpr int E = 16 / sizeof(T), C4 = COLS / E, TOTAL = ROWS * C4, CH = (TOTAL + THREADS - 1) / THREADS;
  static_assert(COLS % E == 0, "a tile's rows must be whole 16-byte copies");
#pragma unroll
  for (int v = 0; v < CH; ++v) {
    const int idx = threadIdx.x + v * THREADS;
    if (TOTAL % THREADS != 0 && idx >= TOTAL) break;
    const int row = idx / C4, col = (idx % C4) * E, gr = r0 + row, gc = c0 + col;
    T* dst = s + row * SS + col;
    const T* src = p + static_cast<size_t>(gr) * ld + gc;
    if constexpr (sizeof(T) == 4) {
      if (!vec) {
#pragma unroll
        for (int e = 0; e < 4; ++e) {
          const bool ok = gr < rlim && gc + e < clim;
          cp_async4(dst + e, ok ? src + e : p, ok);
        }
        continue;
      }
    }
    const bool ok = gr < rlim && gc < clim;
    cp_async16(dst, ok ? src : p, ok);
  }
}

}  // namespace rt::cuda::gemm_detail
