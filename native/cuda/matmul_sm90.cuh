// The Hopper GEMM of matmul_sm90.cu, called by matmul.cu's gemm() for single (unbatched) bf16 products on a
// compute-capability 9.0 GPU, with a grid of 128x128 output tiles (z: the splits of K, if any); gemm() keeps
// batches away. Returns false, having launched nothing, when no sm_90a image loads on this device, and
// matmul.cu then uses its mma.sync kernel with the same tiles.
#pragma once
#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include "cuda/gemm_args.cuh"

namespace rt::cuda {
// A_twin: A's bf16 K-major copy already made (twin.cuh; not transposed, lda == K, K a multiple of 8).
// act_applied: whether g.act's output was written too (only the TMA kernel writes it; else the caller does).
bool gemm_sm90(bool transA, bool transB, dim3 grid, const gemm_detail::GemmArgs& g, const __nv_bfloat16* A_twin,
               bool* act_applied);
// RT_CUDA_WGMMA=0 in the environment keeps gemm()'s Auto choice off this kernel (to compare in one build).
bool wgmma_enabled();
// gemm()'s Auto choice of this kernel, unsplit, for products of half a wave to a wave of 128 x 128 tiles
// (RT_CUDA_WGMMA_HALF_WAVE, default on; =0 turns it off), where wgmma_enabled().
bool wgmma_half_wave();

// Weight copies (Backend::weight_copies_begin): the bf16 copies of `count` weights W[i] [out[i], in[i]] in
// the layout the forward's products (backward false) or the backward's dx products read them as B, made
// into dst (weight_copies_floats floats, enough for either layout) and used by gemm_sm90 on this thread, in
// place of casting those operands, until weight_copies_clear. Wanted: on a Hopper GPU with its kernel
// usable, unless RT_CUDA_WCOPY=0.
bool weight_copies_wanted();
size_t weight_copies_floats(const int* out, const int* in, int count);
void weight_copies_make(const float* const* W, const int* out, const int* in, int count, bool backward, float* dst);
void weight_copies_clear() noexcept;
}  // namespace rt::cuda
