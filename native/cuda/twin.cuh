// bf16 twins: a kernel that writes a float32 matrix the next matrix product reads as its A operand (the
// LayerNorm, the activations) also writes a bf16 copy of it, laid out as the Hopper GEMM reads its operands
// (K-major rows, no padding), and the product takes that copy instead of making its own in a separate cast
// pass (matmul_sm90.cu). Each such pass read the float32 matrix once more and cost a launch: for the char
// config ~1 ms a train step, against half that for the twins' extra bf16 writes.
//
// The handover is only between two consecutive backend operations: the producing operation offers, and the
// very next one may claim (each operation opens one ProfScope, whose count twin_claim checks), so nothing can
// have written the float32 matrix in between. Off with RT_CUDA_TWIN=0, in fp32 mode, and on GPUs other
// than compute capability 9.0 (the only ones whose products read twins).
#pragma once
#include <cuda_bf16.h>

#include "cuda/common.cuh"

namespace rt::cuda {

// Where a producer writes the bf16 copy of its output, the n floats from src (a row-major matrix with rows
// of whole length, whatever its shape): null (write none) when twins are off or the matrix is too small for
// a product to take the Hopper path.
__nv_bfloat16* twin_offer(bool bf16, const float* src, size_t n);

// The twin of the n floats from src if the operation just before offered exactly that, else an empty
// Scratch; forgets the offer either way. The caller keeps the Scratch until its product is queued.
Scratch twin_claim(const float* src, size_t n);

// Drops an unclaimed offer (a graph recording starts or ends: a twin never crosses it).
void twin_forget();

// Counts backend operations on this thread (ProfScope's constructor calls it).
void twin_count_op();

}  // namespace rt::cuda
