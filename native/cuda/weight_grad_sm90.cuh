// The weight gradients on Hopper's warpgroup tensor cores (weight_grad_sm90.cu, built for sm_90a alone),
// called by weight_grad.cu's linear_weight_grad for the shapes it serves; and the reduction of partial tiles
// both files' kernels share (weight_grad.cu).
#pragma once
#include <cstddef>

namespace rt::cuda {

// Whether weight_grad_sm90 takes dW[out, in] += dy^T x (x [n, in], dy [n, out], each float32 or bf16, at
// those addresses): on a compute-capability 9.0 GPU whose sm_90a image loads, both sides at least one of its
// 192-wide tiles and multiples of 8 elements, operands 16-byte aligned, unless RT_CUDA_DW_WGMMA=0.
bool weight_grad_sm90_takes(const void* x, const void* dy, int n, int in, int out);
// For checks and benchmarks: as RT_CUDA_DW_WGMMA=0 (false) or its default (true), from now on.
void set_weight_grad_sm90(bool on);
// For checks and benchmarks: as RT_CUDA_DW_TMA=0 (false) or its default (true), from now on; and how many launches
// took the copy engine's stages.
void set_weight_grad_sm90_tma(bool on);
bool weight_grad_sm90_tma();
long weight_grad_sm90_tma_launches();
void weight_grad_sm90(const void* x, bool x_half, const void* dy, bool dy_half, float* dW, float* db, int n, int in,
                      int out);

// dW[e] += sum over c < chunks of ws[c * mn + e], and db[m] += sum over c < chunks_db of ws_db[c * m + ...],
// each in a fixed order (one launch; db may be null).
void weight_grad_reduce(const float* ws, size_t mn, int chunks, const float* ws_db, int m, int chunks_db, float* dW,
                        float* db);

}  // namespace rt::cuda
