// What every CUDA kernel file shares: turning CUDA errors into rt::Error (never an abort), the one stream
// all work is queued on, and the device's limits. Included by .cu files only.
#pragma once
#include <cuda_runtime.h>

#include <cstddef>
#include <cstdint>

#include "core/error.h"

namespace rt::cuda {

// Throws rt::Error("CUDA error in <call>: <cudaGetErrorString>"). A kernel fault (illegal address) leaves
// the CUDA context unusable; the message then says so, and the process must restart to use the GPU.
[[noreturn]] void throw_cuda(cudaError_t e, const char* call);

// The stream every kernel and copy of this addon is queued on (created at first use, on device 0 or
// RT_CUDA_DEVICE). One stream orders everything: buffers handed back to the caching allocator can be
// reused at once, because whatever reads them next is queued behind whatever wrote them.
cudaStream_t stream();

struct DeviceLimits {
  int sms = 0;                 // multiprocessors
  size_t smem_optin = 0;       // largest dynamic shared memory a block may ask for
  int cc = 0;                  // compute capability, major * 10 + minor (90: Hopper)
};
const DeviceLimits& limits();

// Whether a pointer allows 16-byte vector loads and stores.
inline bool aligned16(const void* p) { return (reinterpret_cast<uintptr_t>(p) & 15) == 0; }

// Scratch device memory from the caching allocator (stream-ordered, uninitialised), freed on scope exit.
class Scratch {
 public:
  Scratch() = default;
  explicit Scratch(size_t bytes);
  ~Scratch();
  Scratch(const Scratch&) = delete;
  Scratch& operator=(const Scratch&) = delete;
  Scratch(Scratch&& o) noexcept : p_(o.p_) { o.p_ = nullptr; }
  Scratch& operator=(Scratch&& o) noexcept {
    if (this != &o) {
      reset();
      p_ = o.p_;
      o.p_ = nullptr;
    }
    return *this;
  }
  void reset();
  void* get() const { return p_; }
  float* f32() const { return static_cast<float*>(p_); }

 private:
  void* p_ = nullptr;
};

}  // namespace rt::cuda

#define RT_CU(call)                                                        \
  do {                                                                     \
    cudaError_t rt_cu_err_ = (call);                                       \
    if (rt_cu_err_ != cudaSuccess) ::rt::cuda::throw_cuda(rt_cu_err_, #call); \
  } while (0)

// After a launch: a bad configuration shows up here; a fault inside the kernel at the next synchronisation.
#define RT_CU_LAUNCH(name) ::rt::cuda::check_launch(name)

namespace rt::cuda {
inline void check_launch(const char* name) {
  cudaError_t e = cudaGetLastError();
  if (e != cudaSuccess) throw_cuda(e, name);
}
// The opt-in past 48 KB of dynamic shared memory for Kernel, once (a flag per kernel: its address is the template
// argument, where kernels of one signature would share a flag by type).
template <auto Kernel>
void opt_in_smem(int bytes) {
  static const cudaError_t e = cudaFuncSetAttribute(Kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, bytes);
  RT_CU(e);
}
// Blocks for n items with `threads` per block, capped so that grid-stride loops cover the rest.
inline unsigned blocks_for(size_t n, unsigned threads, unsigned cap = 65535u * 4) {
  size_t b = (n + threads - 1) / threads;
  if (b < 1) b = 1;
  return static_cast<unsigned>(b < cap ? b : cap);
}
}  // namespace rt::cuda
