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
bool gemm_sm90(bool transA, bool transB, dim3 grid, const gemm_detail::GemmArgs& g, const __nv_bfloat16* A_twin);
}  // namespace rt::cuda
