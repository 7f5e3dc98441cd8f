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

// A claimed twin: its bf16 elements (get(), null if none) and, where it was a scratch of its own, that.
// only: the producer wrote no float32 values (twin_only), so the product must read these.
struct Twin {
  Scratch owned;
  const __nv_bfloat16* p = nullptr;
  bool only = false;
  const void* get() const { return p; }
};

// The twin of the n floats from src if the operation just before offered exactly that, else none; forgets
// the offer either way. The caller keeps the Twin until its product is queued.
Twin twin_claim(const float* src, size_t n);

// A twin kept (Backend::keep_bf16_begin / _end, for the weight products at the end of a layer's backward):
// the one operation between begin and end that writes src (n floats) offers dst as its twin, whatever the
// device or size, and end() casts src into dst itself if that operation wrote none. The offer stands for the
// operation after, as any other. only: nothing but the next operation, a product that claims the twin, reads
// src's float32 values, so a producer may skip writing them (twin_only).
void twin_keep_begin(const float* src, __nv_bfloat16* dst, size_t n, bool only = false);
void twin_keep_end();
// Whether the producer that was just offered a twin of src may write the twin alone (a kept twin begun with
// only); the offer then tells its claimant so (Twin::only).
bool twin_only(const float* src);
// The float32 output y a producer writes beside the twin tw it was offered (null: none offered): none (null)
// where it may write the twin alone.
inline float* float_output(const __nv_bfloat16* tw, float* y) { return tw && twin_only(y) ? nullptr : y; }

// n elements converted on stream(), for bf16 copies no kernel wrote as it went (and back, for the kernels
// that read only float32).
void to_bf16(const float* src, __nv_bfloat16* dst, size_t n);
void to_f32(const __nv_bfloat16* src, float* dst, size_t n);

// Drops an unclaimed offer (a graph recording starts or ends: a twin never crosses it).
void twin_forget();

// Counts backend operations on this thread (ProfScope's constructor calls it).
void twin_count_op();

}  // namespace rt::cuda
