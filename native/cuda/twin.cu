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
  Scratch buf;
  const float* src = nullptr;
  size_t n = 0;
  uint64_t op = 0;  // the operation that offered it
};
thread_local Pending t_pending;
thread_local uint64_t t_ops = 0;

bool twins_enabled() {
  static const bool on = rt::env_switch("RT_CUDA_TWIN", true) && limits().cc == 90;
  return on;
}

}  // namespace

void twin_count_op() { ++t_ops; }

__nv_bfloat16* twin_offer(bool bf16, const float* src, size_t n) {
  twin_forget();
  // The Hopper path takes products of at least a 128 x 128 tile per SM (K >= 64): a matrix of fewer than
  // 2^20 elements rarely feeds one. (The product checks the rest: rows of a multiple of 8 elements.)
  if (!bf16 || !twins_enabled() || n < (size_t{1} << 20)) return nullptr;
  t_pending.buf = Scratch(n * sizeof(__nv_bfloat16));
  t_pending.src = src;
  t_pending.n = n;
  t_pending.op = t_ops;
  return static_cast<__nv_bfloat16*>(t_pending.buf.get());
}

Scratch twin_claim(const float* src, size_t n) {
  Scratch out;
  if (t_pending.src && t_pending.src == src && t_pending.n == n && t_ops == t_pending.op + 1)
    out = std::move(t_pending.buf);
  twin_forget();
  return out;
}

void twin_forget() {
  t_pending.buf.reset();
  t_pending.src = nullptr;
}

}  // namespace rt::cuda
