// The bf16 twins' handover (twin.cuh): one pending offer per thread, since each worker thread queues its
// own operations in order.
#include "core/env.h"
#include "cuda/twin.cuh"

#include <cstdint>
#include <cstdlib>
#include <string>

namespace rt::cuda {
namespace {

struct Pending {
  Scratch buf;                   // the twin's memory, where it is a scratch of its own
  __nv_bfloat16* p = nullptr;    // the twin
  const float* src = nullptr;
  size_t n = 0;
  uint64_t op = 0;  // the operation that offered it
  bool only = false;  // src's float32 values unwritten (twin_only)
};
thread_local Pending t_pending;
thread_local uint64_t t_ops = 0;

struct Keep {
  const float* src = nullptr;
  __nv_bfloat16* dst = nullptr;
  size_t n = 0;
  bool written = false;
  bool only = false;
};
thread_local Keep t_keep;

__global__ void to_bf16_kernel(const float* __restrict__ src, __nv_bfloat16* __restrict__ dst, size_t n) {
  for (size_t i = blockIdx.x * static_cast<size_t>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<size_t>(gridDim.x) * blockDim.x)
    dst[i] = __float2bfloat16_rn(src[i]);
}
__global__ void to_f32_kernel(const __nv_bfloat16* __restrict__ src, float* __restrict__ dst, size_t n) {
  for (size_t i = blockIdx.x * static_cast<size_t>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<size_t>(gridDim.x) * blockDim.x)
    dst[i] = __bfloat162float(src[i]);
}

// p, the twin of src's n floats, offered by the operation counted last.
void pend(__nv_bfloat16* p, const float* src, size_t n) {
  t_pending.p = p;
  t_pending.src = src;
  t_pending.n = n;
  t_pending.op = t_ops;
  t_pending.only = false;
}

bool twins_enabled() {
  static const bool on = rt::env_switch("RT_CUDA_TWIN", true) && limits().cc == 90;
  return on;
}

}  // namespace

void twin_count_op() { ++t_ops; }

__nv_bfloat16* twin_offer(bool bf16, const float* src, size_t n) {
  twin_forget();
  if (t_keep.src && t_keep.src == src && t_keep.n == n) {
    t_keep.written = true;
    pend(t_keep.dst, src, n);
    return t_keep.dst;
  }
  // The Hopper path takes products of at least a 128 x 128 tile per SM (K >= 64): a matrix of fewer than
  // 2^20 elements rarely feeds one. (The product checks the rest: rows of a multiple of 8 elements.)
  if (!bf16 || !twins_enabled() || n < (size_t{1} << 20)) return nullptr;
  t_pending.buf = Scratch(n * sizeof(__nv_bfloat16));
  pend(static_cast<__nv_bfloat16*>(t_pending.buf.get()), src, n);
  return t_pending.p;
}

Twin twin_claim(const float* src, size_t n) {
  Twin out;
  if (t_pending.src && t_pending.src == src && t_pending.n == n && t_ops == t_pending.op + 1) {
    out.owned = std::move(t_pending.buf);
    out.p = t_pending.p;
    out.only = t_pending.only;
  } else if (t_pending.only && t_pending.src == src) {
    // The layer asks for a bf16-only output just before the product that reads it (layer/block.cc).
    twin_forget();
    throw Error("internal: a product did not claim the bf16 values of its operand, whose float32 values are unwritten");
  }
  twin_forget();
  return out;
}

void twin_forget() {
  t_pending.buf.reset();
  t_pending.p = nullptr;
  t_pending.src = nullptr;
  t_pending.only = false;
}

bool twin_only(const float* src) {
  if (!t_keep.only || t_keep.src != src || !t_pending.src || t_pending.src != src || t_pending.p != t_keep.dst)
    return false;
  t_pending.only = true;
  return true;
}

void twin_keep_begin(const float* src, __nv_bfloat16* dst, size_t n, bool only) {
  t_keep = Keep{src, dst, n, false, only};
}

void twin_keep_end() {
  const Keep k = t_keep;
  t_keep = Keep{};
  if (k.written || !k.n) return;
  to_bf16(k.src, k.dst, k.n);
  // Offered to the next operation as if the producer had written it (the same count of operations).
  twin_forget();
  pend(k.dst, k.src, k.n);
}

void to_bf16(const float* src, __nv_bfloat16* dst, size_t n) {
  if (!n) return;
  to_bf16_kernel<<<blocks_for(n, 256, 4096), 256, 0, stream()>>>(src, dst, n);
  RT_CU_LAUNCH("to_bf16");
}

void to_f32(const __nv_bfloat16* src, float* dst, size_t n) {
  if (!n) return;
  to_f32_kernel<<<blocks_for(n, 256, 4096), 256, 0, stream()>>>(src, dst, n);
  RT_CU_LAUNCH("to_f32");
}

}  // namespace rt::cuda
