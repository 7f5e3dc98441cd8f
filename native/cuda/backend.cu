// The CUDA backend: rt::Backend over device memory and the kernels of cuda/kernels.cuh, plus what the
// rest of the addon needs from the GPU (the device memory behind rt::Tensor, cuda_mem in core/tensor.h).
//
// - Start-up is lazy: the addon loads on machines without a driver or GPU, and the first use throws
//   rt::Error saying why (cudaErrorInsufficientDriver, no device, too old a GPU).
// - One stream orders all work. The caching allocator hands a released block to the next request at
//   once: whatever the new owner queues runs after whatever the old owner queued. Host reads synchronise.
// - Memory comes from cudaMalloc in size classes (8 per power of two) and is kept for reuse: a training
//   step allocates the same activation sizes every time. When cudaMalloc fails the cache is returned to
//   the driver and the allocation retried once before an "out of GPU memory" error.
// - CUDA graphs (Backend::graph_begin .. graph_end): while a graph is recorded, every block the allocator
//   hands out is marked as that graph's; releasing it then does not make it free, since each replay writes
//   it again. graph_destroy frees the blocks already released and hands the others back to their holders.
//   A recording is the recording thread's alone: that thread's stream() is its own capture stream, and the
//   marking of blocks and the masks' seed are per thread, so that work other threads queue meanwhile (a
//   tensor read from JavaScript, another model) runs as usual and stays out of the graph.
#include <cuda_runtime.h>

#include <algorithm>
#include <atomic>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <type_traits>
#include <unordered_map>
#include <vector>

#include "core/env.h"
#include "core/error.h"
#include "core/tensor.h"
#include "cuda/common.cuh"
#include "cpu/kernels.h"
#include "cuda/kernels.cuh"
#include "cuda/matmul_sm90.cuh"
#include "cuda/readback.cuh"
#include "cuda/upload.cuh"
#include "cuda/profile.cuh"
#include "cuda/twin.cuh"
#include "layer/backend.h"
#include "layer/block.h"

namespace rt {
namespace cuda {
namespace {

bool sticky(cudaError_t e) {
  switch (e) {
    case cudaErrorIllegalAddress:
    case cudaErrorLaunchFailure:
    case cudaErrorMisalignedAddress:
    case cudaErrorIllegalInstruction:
    case cudaErrorHardwareStackError:
    case cudaErrorInvalidPc:
    case cudaErrorAssert:
      return true;
    default:
      return false;
  }
}

struct Runtime {
  int device = 0;
  cudaStream_t stream = nullptr;
  DeviceLimits lim;
  std::string error;  // why the GPU cannot be used; empty when it can
};

Runtime* start() {
  auto* r = new Runtime();  // never destroyed: CUDA may be torn down before static destructors run
  auto fail = [&](const std::string& why) {
    cudaGetLastError();
    r->error = "device 'cuda': " + why;
    return r;
  };
  int count = 0;
  cudaError_t e = cudaGetDeviceCount(&count);
  if (e != cudaSuccess)
    return fail(std::string("no usable CUDA driver or GPU (") + cudaGetErrorName(e) + ": " + cudaGetErrorString(e) +
                ")");
  if (count == 0) return fail("no CUDA GPU found");
  if (const char* env = std::getenv("RT_CUDA_DEVICE")) r->device = std::atoi(env);
  if (r->device < 0 || r->device >= count)
    return fail("RT_CUDA_DEVICE=" + std::to_string(r->device) + " but there are " + std::to_string(count) + " GPUs");
  cudaDeviceProp prop{};
  if ((e = cudaGetDeviceProperties(&prop, r->device)) != cudaSuccess)
    return fail(std::string("cudaGetDeviceProperties: ") + cudaGetErrorString(e));
  if (prop.major < 8)
    return fail(std::string("GPU '") + prop.name + "' has compute capability " + std::to_string(prop.major) + "." +
                std::to_string(prop.minor) + "; this build needs 8.0 or newer (bf16 tensor cores)");
  if ((e = cudaSetDevice(r->device)) != cudaSuccess) return fail(std::string("cudaSetDevice: ") + cudaGetErrorString(e));
  if ((e = cudaStreamCreateWithFlags(&r->stream, cudaStreamNonBlocking)) != cudaSuccess)
    return fail(std::string("cudaStreamCreate: ") + cudaGetErrorString(e));
  r->lim.sms = prop.multiProcessorCount;
  r->lim.smem_optin = prop.sharedMemPerBlockOptin;
  r->lim.cc = prop.major * 10 + prop.minor;
  return r;
}

// The runtime, ready on the calling thread (a thread's current device defaults to 0).
Runtime& runtime() {
  static Runtime* r = start();
  if (!r->error.empty()) throw Error(r->error);
  thread_local bool set = false;
  if (!set) {
    RT_CU(cudaSetDevice(r->device));
    set = true;
  }
  return *r;
}

size_t size_class(size_t bytes) {
  if (bytes <= 4096) return (bytes + 255) / 256 * 256;
  size_t top = size_t(1) << (63 - __builtin_clzll(bytes));
  size_t step = top / 8;
  return (bytes + step - 1) / step * step;
}

// The graph being recorded by this thread (0: none), its seed and its capture stream.
thread_local int t_pinning = 0;
thread_local const uint64_t* t_capture_seed = nullptr;
thread_local cudaStream_t t_capture_stream = nullptr;
thread_local bool t_capturing = false;
thread_local int t_recording = 0;

class Allocator {
 public:
  void* alloc(size_t bytes) {
    Runtime& r = runtime();
    const size_t cls = size_class(bytes ? bytes : 1);
    {
      std::lock_guard<std::mutex> lock(mu_);
      auto it = free_.find(cls);
      if (it != free_.end() && !it->second.empty()) {
        void* p = it->second.back();
        it->second.pop_back();
        live_[p] = cls;
        if (t_pinning) graph_of_[p] = Pin{t_pinning, false};
        return poisoned(r, p, cls);
      }
    }
    void* p = nullptr;
    cudaError_t e = cudaMalloc(&p, cls);
    if (e == cudaErrorMemoryAllocation) {
      cudaGetLastError();
      trim(r);
      e = cudaMalloc(&p, cls);
    }
    if (e == cudaErrorMemoryAllocation) {
      cudaGetLastError();
      size_t free_b = 0, total_b = 0;
      cudaMemGetInfo(&free_b, &total_b);
      throw Error("out of GPU memory: could not allocate " + std::to_string(bytes) + " bytes (" +
                  std::to_string(free_b >> 20) + " MiB free of " + std::to_string(total_b >> 20) +
                  " MiB; training memory grows linearly in N: use a shorter sequence or batch)");
    }
    if (e != cudaSuccess) throw_cuda(e, "cudaMalloc");
    {
      std::lock_guard<std::mutex> lock(mu_);
      live_[p] = cls;
      if (t_pinning) graph_of_[p] = Pin{t_pinning, false};
    }
    return poisoned(r, p, cls);
  }

  void release(void* p) noexcept {
    if (!p) return;
    std::lock_guard<std::mutex> lock(mu_);
    auto it = live_.find(p);
    if (it == live_.end()) return;  // not ours: never free what we did not allocate
    auto g = graph_of_.find(p);
    if (g != graph_of_.end()) {  // a graph's: free only when the graph goes
      g->second.released = true;
      return;
    }
    free_[it->second].push_back(p);
    live_.erase(it);
  }

  // Blocks this thread is handed from now until pin_end() belong to graph `id` (> 0).
  void pin_begin(int id) { t_pinning = id; }
  void pin_end() { t_pinning = 0; }
  // Graph `id` is gone: its released blocks become free, the others ordinary blocks of their holders.
  void unpin(int id) noexcept {
    std::lock_guard<std::mutex> lock(mu_);
    for (auto it = graph_of_.begin(); it != graph_of_.end();) {
      if (it->second.id != id) {
        ++it;
        continue;
      }
      if (it->second.released) {
        auto l = live_.find(it->first);
        free_[l->second].push_back(it->first);
        live_.erase(l);
      }
      it = graph_of_.erase(it);
    }
  }

 private:
  // RT_CUDA_POISON=1 (checks only): every block handed out is filled with 0xff bytes, a NaN in every float,
  // so that a kernel reading memory nobody wrote, or leaving part of an output unwritten, is caught.
  static void* poisoned(Runtime& r, void* p, size_t bytes) {
    static const bool on = rt::env_switch("RT_CUDA_POISON", false);
    if (on) RT_CU(cudaMemsetAsync(p, 0xff, bytes, stream()));
    return p;
  }
  // Returns every cached block to the driver, after the stream has finished with them.
  void trim(Runtime& r) {
    cudaStreamSynchronize(r.stream);
    std::lock_guard<std::mutex> lock(mu_);
    for (auto& kv : free_) {
      for (void* p : kv.second) cudaFree(p);
      kv.second.clear();
    }
  }
  struct Pin {
    int id;
    bool released;
  };
  std::mutex mu_;
  std::unordered_map<size_t, std::vector<void*>> free_;
  std::unordered_map<void*, size_t> live_;
  std::unordered_map<void*, Pin> graph_of_;
};

Allocator& allocator() {
  static Allocator* a = new Allocator();
  return *a;
}

// ---- the strided helpers of rt::Backend ----

// Dot products in double, in a fixed order (the same bits every run, like the CPU): kDotBlocks blocks of
// kDotThreads each take a contiguous range of rows of a product, then one warp adds the partials in a fixed
// tree. No 64-bit division per element: rows outer, columns across the threads.
constexpr int kDotThreads = 256, kDotBlocks = 64;
constexpr int kDotParts = 2 * kDotBlocks;  // a DotPairOp's partials: its first product's, then its second's
// Block blockIdx.x (< kDotBlocks) of product d: its partial into *part.
__device__ void dot_block(const Dot2dArgs& d, double* part) {
  __shared__ double red[kDotThreads / 32];
  const size_t r0 = d.rows * blockIdx.x / kDotBlocks, r1 = d.rows * (blockIdx.x + 1) / kDotBlocks;
  double s = 0;
  for (size_t r = r0; r < r1; ++r) {
    const float* a = d.a + r * d.as;
    const float* b = d.b + r * d.bs;
    for (size_t c = threadIdx.x; c < d.cols; c += kDotThreads) s += static_cast<double>(a[c]) * b[c];
  }
  // Warps first, then the eight warp sums: a fixed order, so the same bits every run.
  for (int o = 16; o > 0; o >>= 1) s += __shfl_xor_sync(0xffffffffu, s, o);
  if ((threadIdx.x & 31) == 0) red[threadIdx.x >> 5] = s;
  __syncthreads();
  if (threadIdx.x == 0) {
    double t = 0;
    for (int w = 0; w < kDotThreads / 32; ++w) t += red[w];
    *part = t;
  }
}
// A DotPairOp's value from its kDotParts partials, in lane 0 of the calling warp: each lane two partials of
// each product, then a fixed xor tree (it was one thread, 4 us).
__device__ double dot_pair_value(const double* part) {
  static_assert(kDotBlocks == 64, "two partials a lane");
  const int lane = threadIdx.x & 31;
  double s[2];
  for (int p = 0; p < 2; ++p) {
    s[p] = part[p * kDotBlocks + lane] + part[p * kDotBlocks + lane + 32];
    for (int o = 16; o > 0; o >>= 1) s[p] += __shfl_xor_sync(0xffffffffu, s[p], o);
  }
  return s[0] + s[1];
}
__global__ void dot_finish_kernel(const double* part, double* out) {
  const double s = dot_pair_value(part);
  if (threadIdx.x == 0) *out = s;
}
// Backend::alpha_grad_parts: the warps take a slot each, kDotThreads slots at a time, then one thread adds
// them in order of slot; then the `count` doubles at `more`, each thread a contiguous range, added in order
// of thread.
__global__ void __launch_bounds__(kDotThreads)
    alpha_grad_parts_kernel(float* grad, const float* st, const double* parts, int slots, const double* more,
                            int count) {
  __shared__ double value[kDotThreads];
  double dalpha = 0;
  for (int j0 = 0; j0 < slots; j0 += kDotThreads) {
    const int n = min(slots - j0, kDotThreads);
    for (int j = threadIdx.x >> 5; j < n; j += kDotThreads / 32) {
      const double v = dot_pair_value(parts + static_cast<size_t>(j0 + j) * kDotParts);
      if ((threadIdx.x & 31) == 0) value[j] = v;
    }
    __syncthreads();
    if (threadIdx.x == 0)
      for (int j = 0; j < n; ++j) dalpha += value[j];
    __syncthreads();
  }
  const int per = (count + kDotThreads - 1) / kDotThreads, j1 = min(count, (threadIdx.x + 1) * per);
  double s = 0;
  for (int j = threadIdx.x * per; j < j1; ++j) s += more[j];
  value[threadIdx.x] = s;
  __syncthreads();
  if (threadIdx.x == 0) {
    for (int j = 0; j < kDotThreads; ++j) dalpha += value[j];
    if (alpha_passes_grad(st[0])) *grad += static_cast<float>(dalpha);
  }
}

// axpy2d, acc2d and Backend::axpy2d_batch, one kernel: blockIdx.y picks the op; dst[r*ds + c] =
// alpha * x[r*xs + c] + (acc ? dst : y ? y[r*ys + c] : 0) (+ alpha * x2[r*x2s + c]), dst may alias x or y
// (same element); and where the op has a twin (axpy2d_batch_twin), that value rounded to bf16 at the same
// place of it. Strides and cols in units of V floats (V = 4 when every stride and pointer allows
// float4). With a dot pair, the two rows of blocks past the ops are its products' (kDotBlocks blocks each).
constexpr int kAxpyThreads = 256;
static_assert(kAxpyThreads == kDotThreads, "dot_block runs in the batch's blocks");
struct AxpyBatch {
  Axpy2dOp op[Backend::kMaxAxpyBatch];
  int ops;
  DotPairOp dot;
};
template <int V>
__global__ void __launch_bounds__(kAxpyThreads) axpy2d_batch_kernel(AxpyBatch b) {
  using T = typename std::conditional<V == 4, float4, float>::type;
  if (static_cast<int>(blockIdx.y) >= b.ops) {
    const int p = blockIdx.y - b.ops;
    if (blockIdx.x < kDotBlocks) dot_block(b.dot.d[p], b.dot.part + p * kDotBlocks + blockIdx.x);
    return;
  }
  const Axpy2dOp& o = b.op[blockIdx.y];
  const size_t total = o.rows * o.cols, stride = static_cast<size_t>(gridDim.x) * blockDim.x;
  const float al = o.scale ? o.alpha * *o.scale : o.alpha;
  for (size_t i = blockIdx.x * static_cast<size_t>(blockDim.x) + threadIdx.x; i < total; i += stride) {
    const size_t r = i / o.cols, c = i % o.cols;
    const T a = reinterpret_cast<const T*>(o.x)[r * o.xs + c];
    T& d = reinterpret_cast<T*>(o.dst)[r * o.ds + c];
    if constexpr (V == 4) {
      float4 v = o.acc ? d : (o.y ? reinterpret_cast<const float4*>(o.y)[r * o.ys + c] : make_float4(0, 0, 0, 0));
      // Fused multiply-adds written out: left to the compiler, the product shared with the branch without y
      // was rounded on its own for .x alone, so the glue inside ln_1's kernel (layernorm_forward_glue) and the
      // fused chains' glue (fma4), one fused multiply-add an element, differed from it in the last bit.
      if (o.acc || o.y) {
        v.x = __fmaf_rn(al, a.x, v.x); v.y = __fmaf_rn(al, a.y, v.y);
        v.z = __fmaf_rn(al, a.z, v.z); v.w = __fmaf_rn(al, a.w, v.w);
      } else {
        v = make_float4(al * a.x, al * a.y, al * a.z, al * a.w);
      }
      if (o.x2) {
        const float4 e = reinterpret_cast<const float4*>(o.x2)[r * o.x2s + c];
        v.x = __fmaf_rn(al, e.x, v.x); v.y = __fmaf_rn(al, e.y, v.y);
        v.z = __fmaf_rn(al, e.z, v.z); v.w = __fmaf_rn(al, e.w, v.w);
      }
      d = v;
      if (o.twin) {
        const __nv_bfloat162 lo = __floats2bfloat162_rn(v.x, v.y), hi = __floats2bfloat162_rn(v.z, v.w);
        uint2 u;
        u.x = *reinterpret_cast<const uint32_t*>(&lo);
        u.y = *reinterpret_cast<const uint32_t*>(&hi);
        reinterpret_cast<uint2*>(o.twin)[r * o.ds + c] = u;
      }
    } else {
      float v = o.acc ? __fmaf_rn(al, a, d) : (o.y ? __fmaf_rn(al, a, o.y[r * o.ys + c]) : al * a);
      if (o.x2) v = __fmaf_rn(al, o.x2[r * o.x2s + c], v);
      d = v;
      if (o.twin) static_cast<__nv_bfloat16*>(o.twin)[r * o.ds + c] = __float2bfloat16_rn(v);
    }
  }
}

__global__ void all_finite_kernel(const float* x, size_t n, int* bad) {
  const size_t stride = static_cast<size_t>(gridDim.x) * blockDim.x;
  for (size_t i = blockIdx.x * static_cast<size_t>(blockDim.x) + threadIdx.x; i < n; i += stride)
    if (!isfinite(x[i])) {
      *bad = 1;
      return;
    }
}

bool vec4(const void* p, size_t stride) { return aligned16(p) && stride % 4 == 0; }

void memcpy_kind(void* dst, const void* src, size_t bytes, cudaMemcpyKind kind) {
  if (!bytes) return;
  cudaStream_t s = stream();
  RT_CU(cudaMemcpyAsync(dst, src, bytes, kind, s));
  if (kind == cudaMemcpyDeviceToHost) RT_CU(cudaStreamSynchronize(s));
}

// Profile names of the block's four products, told apart by shape.
const char* linear_name(bool fwd, int in, int out) {
  if (out == 3 * in) return fwd ? "linear_forward.c_attn" : "linear_backward.c_attn";
  if (out == 4 * in) return fwd ? "linear_forward.c_fc" : "linear_backward.c_fc";
  if (in == 4 * out) return fwd ? "linear_forward.mlp_proj" : "linear_backward.mlp_proj";
  if (in == out) return fwd ? "linear_forward.attn_proj" : "linear_backward.attn_proj";
  return fwd ? "linear_forward.other" : "linear_backward.other";
}

__global__ void set_seed_kernel(uint64_t* dst, uint64_t seed) { *dst = seed; }
__global__ void alpha_state_kernel(float* st, const float* param) {
  const float a = *param;
  st[0] = a;
  st[1] = alpha_used(a);
}

struct Graph {
  cudaGraphExec_t exec = nullptr;
  int id = 0;
};

// On by default (bit-identical and 8-9% faster on the copy config: bench/cuda/NOTES.md, session 8);
// RT_CUDA_GRAPH=0 turns graphs off, and RT_CUDA_PROFILE keeps them off, since the profile's events sit
// between the kernels a graph would run back to back.
bool graphs_wanted() {
  static const bool on = rt::env_switch("RT_CUDA_GRAPH", true) && !profiling();
  return on;
}

class CudaBackend final : public Backend {
 public:
  // RT_CUDA_FUSED=0 turns the fused block chains off (block_fused.cu), for A/B timings and checks.
  explicit CudaBackend(bool fp32) : fp32_(fp32) {
    fused_ = rt::env_switch("RT_CUDA_FUSED", true);
  }
  const char* name() const override { return fp32_ ? "cuda-fp32" : "cuda"; }
  Device device() const override { return Device::CUDA; }
  void synchronize() override { RT_CU(cudaStreamSynchronize(stream())); }
  void end_call() override {
    static const bool sync = rt::env_switch("RT_CUDA_SYNC", false);
    if (sync) synchronize();
    else RT_CU(cudaPeekAtLastError());  // a failed launch still fails its own call
  }

  void alpha_state(float* st, const float* param) override {
    alpha_state_kernel<<<1, 1, 0, stream()>>>(st, param);
    RT_CU_LAUNCH("alpha_state");
  }
  void alpha_grad_parts(float* grad, const float* st, const double* parts, int slots, const double* more = nullptr,
                        int count = 0) override {
    alpha_grad_parts_kernel<<<1, kDotThreads, 0, stream()>>>(grad, st, parts, slots, more, count);
    RT_CU_LAUNCH("alpha_grad_parts");
  }
  void set_seed(uint64_t* dst, uint64_t seed) override {
    set_seed_kernel<<<1, 1, 0, stream()>>>(dst, seed);
    RT_CU_LAUNCH("set_seed");
  }

  bool graphs() const override { return graphs_wanted(); }
  void graph_begin(const uint64_t* seed) override {
    RT_CHECK(!t_recording, "graph_begin: a graph is already being recorded");
    cuda::twin_forget();  // an offer never crosses a recording's start or end
    static std::atomic<int> next_id{0};
    t_recording = ++next_id;
    if (!t_capture_stream) RT_CU(cudaStreamCreateWithFlags(&t_capture_stream, cudaStreamNonBlocking));
    allocator().pin_begin(t_recording);
    t_capture_seed = seed;
    // Relaxed: the recording may cudaMalloc (a first-time block size); nothing else runs on its stream.
    const cudaError_t e = cudaStreamBeginCapture(t_capture_stream, cudaStreamCaptureModeRelaxed);
    if (e == cudaSuccess) t_capturing = true;
    if (e != cudaSuccess) {
      t_capture_seed = nullptr;
      allocator().pin_end();
      allocator().unpin(t_recording);
      t_recording = 0;
      throw_cuda(e, "cudaStreamBeginCapture");
    }
  }
  void* graph_end() override {
    RT_CHECK(t_recording, "graph_end: no graph is being recorded");
    cuda::twin_forget();
    cudaGraph_t g = nullptr;
    cudaError_t e = cudaStreamEndCapture(t_capture_stream, &g);
    t_capturing = false;
    t_capture_seed = nullptr;
    allocator().pin_end();
    const int id = t_recording;
    t_recording = 0;
    cudaGraphExec_t exec = nullptr;
    size_t nodes = 0;
    if (e == cudaSuccess) e = cudaGraphGetNodes(g, nullptr, &nodes);
    if (e == cudaSuccess) e = cudaGraphInstantiate(&exec, g, 0);
    if (g) cudaGraphDestroy(g);
    if (e != cudaSuccess) {
      allocator().unpin(id);
      throw_cuda(e, "recording a CUDA graph");
    }
    // RT_CUDA_GRAPH_LOG=1: a line per recording (bench/cuda/check-graph.mjs counts them).
    static const bool log = rt::env_switch("RT_CUDA_GRAPH_LOG", false);
    if (log) std::fprintf(stderr, "rt: CUDA graph recorded (id %d, %zu nodes)\n", id, nodes);
    return new Graph{exec, id};
  }
  void graph_abort() noexcept override {
    if (!t_recording) return;
    cuda::twin_forget();
    cudaGraph_t g = nullptr;
    cudaStreamEndCapture(t_capture_stream, &g);
    t_capturing = false;
    if (g) cudaGraphDestroy(g);
    cudaGetLastError();
    t_capture_seed = nullptr;
    allocator().pin_end();
    allocator().unpin(t_recording);
    t_recording = 0;
  }
  void graph_launch(void* graph) override {
    RT_PROF("graph_launch");
    RT_CU(cudaGraphLaunch(static_cast<Graph*>(graph)->exec, stream()));
  }
  void graph_destroy(void* graph) noexcept override {
    if (!graph) return;
    Graph* g = static_cast<Graph*>(graph);
    // Its last replay may still run: the executable outlives it. (The memory could go at once: whoever gets
    // it next queues work on the same stream, after the replay.)
    cudaStreamSynchronize(stream());
    cudaGraphExecDestroy(g->exec);
    allocator().unpin(g->id);
    delete g;
  }

  float* alloc(size_t n) override { return n ? static_cast<float*>(allocator().alloc(n * sizeof(float))) : nullptr; }
  void release(float* p) override { allocator().release(p); }
  void zero(float* p, size_t n) override {
    RT_PROF("zero");
    if (n) RT_CU(cudaMemsetAsync(p, 0, n * sizeof(float), stream()));
  }
  void copy(float* dst, const float* src, size_t n) override {
    RT_PROF("copy");
    if (dst != src) memcpy_kind(dst, src, n * sizeof(float), cudaMemcpyDeviceToDevice);
  }
  void upload(float* dst, const float* host, size_t n) override {
    RT_PROF("upload");
    memcpy_kind(dst, host, n * sizeof(float), cudaMemcpyHostToDevice);
  }
  void download(float* host, const float* src, size_t n) override {
    RT_PROF("download");
    memcpy_kind(host, src, n * sizeof(float), cudaMemcpyDeviceToHost);
  }

  void axpy2d(float* dst, size_t ds, float alpha, const float* x, size_t xs, const float* y, size_t ys, size_t rows,
              size_t cols) override {
    RT_PROF("axpy2d");
    if (!rows || !cols) return;
    if (!y && alpha == 1.0f) {  // a (strided) copy: one call to the copy engine
      if (dst == x && ds == xs) return;
      if (rows == 1) {
        RT_CU(cudaMemcpyAsync(dst, x, cols * 4, cudaMemcpyDeviceToDevice, stream()));
        return;
      }
      if (ds >= cols && xs >= cols) {
        RT_CU(cudaMemcpy2DAsync(dst, ds * 4, x, xs * 4, cols * 4, rows, cudaMemcpyDeviceToDevice, stream()));
        return;
      }
    }
    const Axpy2dOp op{dst, ds, alpha, x, xs, y, ys, rows, cols, false};
    run_axpy(&op, 1);
  }
  void acc2d(float* dst, size_t ds, float alpha, const float* x, size_t xs, size_t rows, size_t cols) override {
    RT_PROF("acc2d");
    const Axpy2dOp op{dst, ds, alpha, x, xs, nullptr, 0, rows, cols, true};
    run_axpy(&op, 1);
  }
  void axpy2d_batch(const Axpy2dOp* ops, int count, const DotPairOp* dot) override {
    axpy2d_batch_twin(ops, count, dot, nullptr, 0);
  }
  // src null: no twin (and no offer, so one pending from the operation before is left alone).
  void axpy2d_batch_twin(const Axpy2dOp* ops, int count, const DotPairOp* dot, const float* src,
                         size_t n) override {
    RT_PROF("axpy2d_batch");
    RT_CHECK(count >= 0 && count <= kMaxAxpyBatch, "axpy2d_batch: count must be in [0, 4], got " + std::to_string(count));
    auto inside = [&](const Axpy2dOp& a) {
      return src && a.rows && a.cols && a.dst >= src && a.dst + (a.rows - 1) * a.ds + a.cols <= src + n;
    };
    // The twin is offered only where the ops inside the range write all of it (the glue's ops are disjoint):
    // an offer marks the kept copy written, so a gap would stay stale rather than be cast.
    size_t covered = 0;
    for (int i = 0; i < count; ++i)
      if (inside(ops[i])) covered += ops[i].rows * ops[i].cols;
    __nv_bfloat16* tw = covered == n && n ? cuda::twin_offer(!fp32_, src, n) : nullptr;
    Axpy2dOp o[kMaxAxpyBatch];
    for (int i = 0; i < count; ++i) {
      o[i] = ops[i];
      if (tw && inside(o[i])) o[i].twin = tw + (o[i].dst - src);
    }
    run_axpy(o, count, dot);
  }
  int dot_parts() const override { return kDotParts; }
  // One launch of axpy2d_batch_kernel over the ops (float4 when every op allows it), empty ops dropped, and
  // the dot pair's products.
  static void run_axpy(const Axpy2dOp* ops, int count, const DotPairOp* dot = nullptr) {
    AxpyBatch b{};
    bool v4 = true;
    size_t most = 0;
    int n = 0;
    for (int i = 0; i < count; ++i) {
      const Axpy2dOp& o = ops[i];
      if (!o.rows || !o.cols) continue;
      b.op[n++] = o;
      v4 = v4 && o.cols % 4 == 0 && vec4(o.dst, o.ds) && vec4(o.x, o.xs) && (o.acc || !o.y || vec4(o.y, o.ys)) &&
           (!o.x2 || vec4(o.x2, o.x2s)) && (!o.twin || (reinterpret_cast<uintptr_t>(o.twin) & 7) == 0);
      most = std::max(most, o.rows * o.cols);
    }
    if (!n && !dot) return;
    if (v4)
      for (int i = 0; i < n; ++i) {
        Axpy2dOp& o = b.op[i];
        o.ds /= 4;
        o.xs /= 4;
        o.ys /= 4;
        o.x2s /= 4;
        o.cols /= 4;
      }
    b.ops = n;
    if (dot) b.dot = *dot;
    const dim3 grid(std::max(blocks_for(v4 ? most / 4 : most, kAxpyThreads), dot ? unsigned(kDotBlocks) : 1u),
                    n + (dot ? 2 : 0));
    if (v4) axpy2d_batch_kernel<4><<<grid, kAxpyThreads, 0, stream()>>>(b);
    else axpy2d_batch_kernel<1><<<grid, kAxpyThreads, 0, stream()>>>(b);
    RT_CU_LAUNCH("axpy2d_batch");
  }
  double dot2d(const float* a, size_t as, const float* b, size_t bs, size_t rows, size_t cols) override {
    RT_PROF("dot2d");
    if (!rows || !cols) return 0.0;
    Scratch part(sizeof(double) * kDotParts), out(sizeof(double));
    const DotPairOp dot{{{a, as, b, bs, rows, cols}, {a, as, b, bs, 0, 0}}, static_cast<double*>(part.get())};
    run_axpy(nullptr, 0, &dot);
    dot_finish_kernel<<<1, 32, 0, stream()>>>(dot.part, static_cast<double*>(out.get()));
    RT_CU_LAUNCH("dot2d finish");
    double s = 0;
    memcpy_kind(&s, out.get(), sizeof s, cudaMemcpyDeviceToHost);
    return s;
  }
  bool all_finite(const float* x, size_t n) override {
    RT_PROF("all_finite");
    if (!n) return true;
    Scratch flag(sizeof(int));
    RT_CU(cudaMemsetAsync(flag.get(), 0, sizeof(int), stream()));
    all_finite_kernel<<<blocks_for(n, 256, 4096), 256, 0, stream()>>>(x, n, static_cast<int*>(flag.get()));
    RT_CU_LAUNCH("all_finite");
    int bad = 0;
    memcpy_kind(&bad, flag.get(), sizeof bad, cudaMemcpyDeviceToHost);
    return bad == 0;
  }

  // The products take the bf16 twin of their A operand from the operation just before, if it wrote one
  // (twin.cuh): x forward, dy for dx.
  void linear_forward(const float* x, const float* W, const float* b, float* y, int n, int in, int out) override {
    linear_forward_res(x, W, b, nullptr, y, n, in, out);
  }
  void linear_backward(const float* x, const float* W, const float* dy, float* dx, float* dW, float* db, int n, int in,
                       int out) override {
    linear_backward_as(x, W, dy, dx, dW, db, n, in, out, false);
  }
  // dx_half: dx written as bf16 (linear_backward_dx_half).
  void linear_backward_as(const float* x, const float* W, const float* dy, float* dx, float* dW, float* db, int n,
                          int in, int out, bool dx_half) {
    RT_PROF(linear_name(false, in, out));
    const cuda::Twin tw = cuda::twin_claim(dy, static_cast<size_t>(n) * out);
    cuda::linear_backward(!fp32_, x, W, tw.only ? nullptr : dy, dx, dW, db, n, in, out,
                          static_cast<const __nv_bfloat16*>(tw.get()), dx_half);
  }
  void linear_forward_res(const float* x, const float* W, const float* b, const float* res, float* y, int n, int in,
                          int out) override {
    linear_forward_as(x, W, b, res, y, n, in, out, false);
  }
  // y_half: y written as bf16 (linear_forward_half).
  void linear_forward_as(const float* x, const float* W, const float* b, const float* res, float* y, int n, int in, int out,
               bool y_half) {
    RT_PROF(linear_name(true, in, out));
    const cuda::Twin tw = cuda::twin_claim(x, static_cast<size_t>(n) * in);
    cuda::linear_forward(!fp32_, tw.only ? nullptr : x, W, b, y, n, in, out, res,
                         static_cast<const __nv_bfloat16*>(tw.get()), y_half);
  }
  void layernorm_forward(const float* x, const float* w, const float* b, float* y, float* mean, float* rstd, int n,
                         int d) override {
    RT_PROF("layernorm_forward");
    __nv_bfloat16* tw = cuda::twin_offer(!fp32_, y, static_cast<size_t>(n) * d);
    cuda::layernorm_forward(x, w, b, cuda::float_output(tw, y), mean, rstd, n, d, tw);
  }
  void layernorm_backward(const float* x, const float* w, const float* mean, const float* rstd, const float* dy,
                          float* dx, float* dw, float* db, int n, int d, bool dy_half) override {
    RT_PROF("layernorm_backward");
    cuda::layernorm_backward(x, w, mean, rstd, dy, dx, dw, db, n, d, dy_half);
  }
  void layernorm_backward_res(const float* x, const float* w, const float* mean, const float* rstd, const float* dy,
                              const float* dres, float* dx, float* dw, float* db, int n, int d, bool dy_half,
                              LnParts parts) override {
    RT_PROF("layernorm_backward");
    __nv_bfloat16* tw = dx ? cuda::twin_offer(!fp32_, dx, static_cast<size_t>(n) * d) : nullptr;
    cuda::layernorm_backward_res(x, w, mean, rstd, dy, dres, dx, dw, db, n, d, tw, dy_half, parts);
  }
  // The LayerNorms' dw, db left by their per-window backward passes (RT_CUDA_LN_PARTS, default on; =0 turns it
  // off: H100, session 23, char 7.64 -> 7.44 ms a step): no pass of its own over all rows' x and dy (0.21 ms a
  // char step by session 20's ncu, for ln_1, ln_2 and the head's ln_f, which takes the same switch in
  // softmax_xent.cu).
  bool block_ln_parts(const BlockShape& s) const override {
    return cuda::ln_parts_wanted() && !fused_block(s) && cuda::layernorm_part_rows(1, s.d) > 0;
  }
  int layernorm_part_rows(int n, int d) const override { return cuda::layernorm_part_rows(n, d); }
  void layernorm_parts_finish(LnParts parts, int rows, int d, float* dw, float* db) override {
    RT_PROF("layernorm_backward");
    cuda::layernorm_parts_finish(parts, rows, d, dw, db);
  }
  // The block's four matrices as [out, in] (the fused chains have their own packed copy).
  struct BlockMatrices {
    const float* W[4];
    int out[4], in[4];
  };
  static BlockMatrices matrices(const BlockShape& s, const BlockWeights& w) {
    const int d = s.d;
    return {{w.attn_w, w.attn_proj_w, w.fc_w, w.mlp_proj_w}, {3 * d, d, 4 * d, d}, {d, d, d, 4 * d}};
  }
  size_t weight_copies_size(const BlockShape& s) const override {
    if (fp32_ || fused_block(s) || !cuda::weight_copies_wanted()) return 0;
    const BlockMatrices m = matrices(s, BlockWeights{});
    return cuda::weight_copies_floats(m.out, m.in, 4);
  }
  void weight_copies_begin(const BlockShape& s, const BlockWeights& w, bool backward, float* dst) override {
    RT_PROF("weight_copies");
    const BlockMatrices m = matrices(s, w);
    cuda::weight_copies_make(m.W, m.out, m.in, 4, backward, dst);
  }
  void weight_copies_end() noexcept override { cuda::weight_copies_clear(); }
  bool fused_block(const BlockShape& s) const override { return fused_ && cuda::block_fusable(s.d); }
  size_t fused_weights_size(const BlockShape& s) const override { return cuda::fused_weights_floats(!fp32_, s.d); }
  int fused_parts(int rows) const override { return cuda::fused_row_blocks(rows); }
  void pack_fused_weights(const BlockShape& s, const BlockWeights& w, float* dst) override {
    RT_PROF("pack_fused_weights");
    cuda::pack_fused_weights(!fp32_, s, w, dst);
  }
  void block_in_forward(const BlockShape& s, const BlockWeights& w, const BlockCache& c,
                        const WindowGlue* glue) override {
    RT_PROF("block_in_forward");
    cuda::block_in_forward(!fp32_, s, w, c, glue);
  }
  bool block_keeps_f(const BlockShape& s) const override { return !(fused_block(s) && cuda::relu_from_g(s)); }
  // bf16 operands for the weight kernel (weight_grad.cu): rows of whole 16-byte loads, sm_80 on.
  bool bf16_operands(const BlockShape& s) const { return !fp32_ && s.d % 8 == 0 && cuda::limits().cc >= 80; }
  // The unfused bf16 path keeps its products' bf16 copies for the weight products (RT_CUDA_KEEP_BF16=0: none).
  bool block_keeps_bf16(const BlockShape& s) const override {
    static const bool on = rt::env_switch("RT_CUDA_KEEP_BF16", true);
    return on && !fused_block(s) && bf16_operands(s);
  }
  // Not operations of their own (no RT_PROF): the twin offered in between stands for the next operation.
  // The products read a bf16-only operand as it is on the Hopper path (elsewhere they would cast it back to
  // float32 first: only the Hopper path leaves float32 values unwritten). RT_CUDA_BF16_ONLY=0: never.
  bool bf16_only() const {
    static const bool on = rt::env_switch("RT_CUDA_BF16_ONLY", true);
    return on && !fp32_ && cuda::limits().cc == 90 && cuda::wgmma_enabled();
  }
  void keep_bf16_begin(const float* src, void* dst, size_t n, bool only) override {
    cuda::twin_keep_begin(src, static_cast<__nv_bfloat16*>(dst), n, only && bf16_only());
  }
  bool block_bf16_only(const BlockShape& s) const override { return block_keeps_bf16(s) && bf16_only(); }
  // RT_CUDA_QKV_HALF=0: qkv in float32 on the unfused path.
  bool block_qkv_half(const BlockShape& s, const std::vector<int>& n) const override {
    static const bool on = rt::env_switch("RT_CUDA_QKV_HALF", true);
    if (!on || !bf16_only() || fused_block(s) || !bf16_operands(s)) return false;
    for (const int nk : n)
      if (!cuda::attention_writes_twin(true, nk, s.d, s.heads)) return false;
    return true;
  }
  void linear_backward_dx_half(const float* W, const float* dy, float* dx, int n, int in, int out) override {
    linear_backward_as(nullptr, W, dy, dx, nullptr, nullptr, n, in, out, true);
  }
  // RT_CUDA_F_HALF=0: f and dg in float32 on the unfused path.
  bool block_f_half(const BlockShape& s) const override {
    static const bool on = rt::env_switch("RT_CUDA_F_HALF", true);
    return on && block_bf16_only(s);
  }
  void linear_forward_half(const float* x, const float* W, const float* b, float* y, int n, int in,
                           int out) override {
    linear_forward_as(x, W, b, nullptr, y, n, in, out, true);
  }
  // The forward's window glue in ln_1's pass; RT_CUDA_LN_GLUE=0 keeps the glue's own pass. On by default since
  // session 20 (with FC_ACT, FC_DACT and ATTN_PERSIST: see block_fc_act).
  bool block_ln_glue(const BlockShape& s) const override {
    static const bool on = rt::env_switch("RT_CUDA_LN_GLUE", true);
    return on && !fused_block(s) && cuda::layernorm_glue_fits(s.d);
  }
  void layernorm_forward_glue(const WindowGlue& glue, float* x, int B, int n, const float* w, const float* b, float* y,
                              float* mean, float* rstd, int d) override {
    RT_PROF("layernorm_forward");
    __nv_bfloat16* tw = cuda::twin_offer(!fp32_, y, static_cast<size_t>(B) * n * d);
    cuda::layernorm_forward_glue(glue, x, B, n, w, b, cuda::float_output(tw, y), mean, rstd, d, tw);
  }
  // The backward's window glue in ln_1's pass (RT_CUDA_LN_BACK_GLUE=1; off: no faster on the H100 in
  // session 23, char 7.42 ms without and 7.44 with): din is neither written nor read back, nor its bf16 copy
  // written, which no product took.
  bool block_ln_back_glue(const BlockShape& s) const override {
    static const bool on = rt::env_switch("RT_CUDA_LN_BACK_GLUE", false);
    return on && !fused_block(s) && cuda::layernorm_glue_fits(s.d);
  }
  void layernorm_backward_scatter(const float* x, const float* w, const float* mean, const float* rstd,
                                  const float* dy, const float* dres, const BackScatter& sc, int B, int d,
                                  bool dy_half, LnParts parts) override {
    RT_PROF("layernorm_backward");
    // dy's copy where the layer keeps one (without dropout, dm is dy), and only where the rows fill dy (as
    // axpy2d_batch_twin: no gap may pass for written).
    const size_t n = static_cast<size_t>(B) * sc.dys;
    const bool whole = sc.dys == 2 * static_cast<size_t>(sc.ns) * d;
    __nv_bfloat16* tw = sc.dy16 && whole ? cuda::twin_offer(!fp32_, sc.dy, n) : nullptr;
    cuda::layernorm_backward_scatter(x, w, mean, rstd, dy, dres, sc, B, d, tw, dy_half, parts);
  }
  // dm's bf16 copy kept too; RT_CUDA_KEEP_DM=0 does without. H200, session 19 (s19b): a char step 8.18 ms
  // against 8.37 without (medians of five, alternated).
  bool block_keeps_dm(const BlockShape& s) const override {
    static const bool on = rt::env_switch("RT_CUDA_KEEP_DM", true);
    return on && block_keeps_bf16(s);
  }
  // The attention's output gradient in bf16; RT_CUDA_DATT_HALF=0 keeps float32. s19b: 8.18 against 8.39 ms.
  bool block_datt_half(const BlockShape& s) const override {
    static const bool on = rt::env_switch("RT_CUDA_DATT_HALF", true);
    return on && block_f_half(s);
  }
  // dh1 and dh2 in bf16; RT_CUDA_DH_HALF=0 keeps float32. s19b: 8.18 against 8.41 ms.
  bool block_dh_half(const BlockShape& s) const override {
    static const bool on = rt::env_switch("RT_CUDA_DH_HALF", true);
    return on && block_f_half(s);
  }
  // The fused activation products' output: the bf16 copy alone of dst (n floats) that keep_bf16_begin(dst, ...,
  // only) asked for, which they write in place of dst; GELU in its bf16-mode form only.
  __nv_bfloat16* only_twin(float* dst, size_t n, bool gelu, const char* who) {
    __nv_bfloat16* t = cuda::twin_offer(!fp32_, dst, n);
    RT_CHECK(t && !cuda::float_output(t, dst),
             std::string(who) + ": its output is written as a bf16 copy alone (keep_bf16_begin with only)");
    RT_CHECK(!gelu || gelu_fast(), std::string(who) + ": GELU is fused in its bf16-mode form only");
    return t;
  }
  // Where the product epilogues may take the activation: f in bf16 and, for GELU, its bf16-mode form.
  bool act_fusable(const BlockShape& s) const { return block_f_half(s) && (!s.gelu || gelu_fast()); }
  // c_fc's product writes the activation too (the TMA kernel's staged epilogue); RT_CUDA_FC_ACT=0 runs the
  // activation's pass. In session 19 the products took 0.49 ms more a char step (ncu, with FC_DACT) and the
  // passes' 0.79 ms went, but the step did not change (8.18 ms both ways): the optimizer's wait drained the GPU
  // every step. With that gone (session 20, H200, three rounds alternated,
  // bench/results/cuda-model-2026-12-05b-peer.log), a char step 7.74 ms with none of FC_ACT, FC_DACT,
  // ATTN_PERSIST and LN_GLUE, 7.68 with the two activations, 7.51 with all four: on by default since.
  bool block_fc_act(const BlockShape& s) const override {
    static const bool on = rt::env_switch("RT_CUDA_FC_ACT", true);
    return on && act_fusable(s);
  }
  void linear_forward_act_half(const float* x, const float* W, const float* b, float* y, float* act_y, int n, int in,
                               int out, bool gelu, bool dgelu) override {
    RT_PROF(linear_name(true, in, out));
    const cuda::Twin tw = cuda::twin_claim(x, static_cast<size_t>(n) * in);
    __nv_bfloat16* at = only_twin(act_y, static_cast<size_t>(n) * out, gelu, "linear_forward_act_half");
    cuda::linear_forward_act(!fp32_, tw.only ? nullptr : x, W, b, y, n, in, out,
                             static_cast<const __nv_bfloat16*>(tw.get()), cuda::GemmAct{at, gelu, nullptr, dgelu});
  }
  // mlp c_proj's dx product applies the activation's backward in its epilogue (reading f there) and writes df,
  // not dg; RT_CUDA_FC_DACT=0 runs the pass. On by default since session 20 (see block_fc_act).
  bool block_fc_dact(const BlockShape& s) const override {
    static const bool on = rt::env_switch("RT_CUDA_FC_DACT", true);
    return on && act_fusable(s);
  }
  void linear_backward_dx_act_half(const float* W, const float* dy, const float* x, float* dx, int n, int in, int out,
                                   bool gelu, bool dgelu) override {
    RT_PROF(linear_name(false, in, out));
    const cuda::Twin tw = cuda::twin_claim(dy, static_cast<size_t>(n) * out);
    __nv_bfloat16* dt = only_twin(dx, static_cast<size_t>(n) * in, gelu, "linear_backward_dx_act_half");
    cuda::linear_backward_dx_act(!fp32_, W, tw.only ? nullptr : dy, reinterpret_cast<float*>(dt), n, in, out,
                                 static_cast<const __nv_bfloat16*>(tw.get()), reinterpret_cast<const __nv_bfloat16*>(x),
                                 gelu, dgelu);
  }
  // RT_CUDA_KEEP_DGELU (on; =0 keeps f): f's buffer keeps GELU'(f), which c_fc's epilogue works out beside GELU(f)
  // from the same phi_fast (two instructions more a value), so that mlp c_proj's dx epilogue multiplies rather than
  // running phi_fast again (two MUFU and ~12 FMA a value: 36.0 against 17.9 us a char window without an epilogue,
  // session 27's H200; a char step 6.94 against 6.98 ms, session 29's H100). df's bits change: GELU'(f) is rounded
  // to bf16 before the product with dg.
  bool block_keeps_dgelu(const BlockShape& s) const override {
    static const bool on = rt::env_switch("RT_CUDA_KEEP_DGELU", true);
    return on && s.gelu && block_fc_act(s) && block_fc_dact(s);
  }
  void keep_bf16_end() override { cuda::twin_keep_end(); }
  // The bf16 chains round h1, qkv, h2, g, dg and dqkv to bf16 as the products would (RT_CUDA_HALF=0: float32).
  bool block_half(const BlockShape& s) const override {
    static const bool on = rt::env_switch("RT_CUDA_HALF", true);
    return on && fused_block(s) && bf16_operands(s);
  }
  void linear_weight_grad(const void* x, bool x_half, const void* dy, bool dy_half, float* dW, float* db, int n,
                          int in, int out) override {
    if (!x_half && !dy_half) {
      Backend::linear_weight_grad(x, false, dy, false, dW, db, n, in, out);
      return;
    }
    RT_PROF(linear_name(false, in, out));
    cuda::linear_weight_grad(x, x_half, dy, dy_half, dW, db, n, in, out);
  }
  // The fused path's attention: nothing claims a twin of att or dqkv there (the chains read them whole).
  void block_attention_forward(const BlockShape& s, const BlockCache& c) override {
    RT_PROF("attention_forward");
    cuda::attention_forward(!fp32_, c.qkv, c.probs, c.att, c.B, c.n, s.d, s.heads, c.p, c.seed, c.stream * 4 + 0,
                            nullptr, c.half);
  }
  void block_attention_backward(const BlockShape& s, const BlockCache& c, const BlockGradStash& st,
                                const float* datt) override {
    RT_PROF("attention_backward");
    if (st.half)
      cuda::attention_backward_bf16(!fp32_, c.qkv, c.probs, datt, reinterpret_cast<__nv_bfloat16*>(st.dqkv), c.B, c.n,
                                    s.d, s.heads, c.p, c.seed, c.stream * 4 + 0, c.half);
    else
      cuda::attention_backward(!fp32_, c.qkv, c.probs, datt, st.dqkv, c.B, c.n, s.d, s.heads, c.p, c.seed,
                               c.stream * 4 + 0, nullptr, c.half);
  }
  bool block_out_attention(const BlockShape& s, const BlockCache& c) const override {
    return cuda::block_out_attention(!fp32_, s, c.n);
  }
  void block_out_forward(const BlockShape& s, const BlockWeights& w, const BlockCache& c, float* y) override {
    RT_PROF("block_out_forward");
    cuda::block_out_forward(!fp32_, s, w, c, y);
  }
  void block_out_backward(const BlockShape& s, const BlockWeights& w, const BlockCache& c, const BlockGradStash& st,
                          float* dy, float* dx2, float* datt, const BackGlue* glue) override {
    RT_PROF("block_out_backward");
    cuda::block_out_backward(!fp32_, s, w, c, st, dy, dx2, datt, glue);
  }
  void block_in_backward(const BlockShape& s, const BlockWeights& w, const BlockCache& c, const BlockGradStash& st,
                         const float* dx2, float* dx) override {
    RT_PROF("block_in_backward");
    cuda::block_in_backward(!fp32_, s, w, c, st, dx2, dx);
  }
  bool attention_recomputes_probs(const BlockShape& s, int n) const override {
    return cuda::attention_recomputes_probs(!fp32_, n, s.d, s.heads);
  }
  void attention_forward(const float* qkv, float* probs, float* out, int B, int n, int d, int H, float p, uint64_t seed,
                         uint64_t stream_id, bool qkv_half) override {
    RT_PROF("attention_forward");
    __nv_bfloat16* tw = cuda::attention_writes_twin(!fp32_, n, d, H)
                            ? cuda::twin_offer(!fp32_, out, static_cast<size_t>(B) * n * d)
                            : nullptr;
    cuda::attention_forward(!fp32_, qkv, probs, cuda::float_output(tw, out), B, n, d, H, p, seed,
                            stream_id, tw, qkv_half);
  }
  void attention_backward(const float* qkv, const float* probs, const float* dout, float* dqkv, int B, int n, int d,
                          int H, float p, uint64_t seed, uint64_t stream_id, bool qkv_half, bool dout_half) override {
    RT_PROF("attention_backward");
    __nv_bfloat16* tw = cuda::attention_writes_twin(!fp32_, n, d, H)
                            ? cuda::twin_offer(!fp32_, dqkv, static_cast<size_t>(B) * n * 3 * d)
                            : nullptr;
    cuda::attention_backward(!fp32_, qkv, probs, dout, cuda::float_output(tw, dqkv), B, n, d, H, p,
                             seed, stream_id, tw, qkv_half, dout_half);
  }
  void attention_cached(const float* qkv, int cap, int B, int t0, int c, int d, int H, float* out) override {
    RT_PROF("attention_cached");
    cuda::attention_cached(qkv, cap, B, t0, c, d, H, out);
  }
  // The bf16 mode's GELU through phi_fast (RT_CUDA_GELU_FAST=0: normcdff, as the fp32 mode).
  bool gelu_fast() const {
    static const bool on = rt::env_switch("RT_CUDA_GELU_FAST", true);
    return on && !fp32_;
  }
  void activation_forward(bool gelu, const float* x, float* y, size_t n, bool x_half) override {
    RT_PROF("activation_forward");
    __nv_bfloat16* tw = cuda::twin_offer(!fp32_, y, n);
    float* out = cuda::float_output(tw, y);
    gelu ? cuda::gelu_forward(x, out, n, tw, gelu_fast(), x_half) : cuda::relu_forward(x, out, n, tw, x_half);
  }
  void activation_backward(bool gelu, const float* x, const float* dy, float* dx, size_t n, bool x_half,
                           bool dy_half) override {
    RT_PROF("activation_backward");
    __nv_bfloat16* tw = cuda::twin_offer(!fp32_, dx, n);
    float* out = cuda::float_output(tw, dx);
    // A bf16 dy's buffer holds half the bytes a float32 dx would (dx is dy on the layer's path): only its twin.
    RT_CHECK(!dy_half || (tw && !out), "activation_backward: a bf16 dy needs its output as the bf16 copy alone");
    gelu ? cuda::gelu_backward(x, dy, out, n, tw, gelu_fast(), x_half, dy_half)
         : cuda::relu_backward(x, dy, out, n, tw, x_half, dy_half);
  }
  void dropout_forward(const float* x, float* y, size_t n, float p, uint64_t seed, uint64_t stream_id) override {
    RT_PROF("dropout_forward");
    cuda::dropout_forward(x, y, n, p, seed, stream_id);
  }
  void dropout_backward(const float* dy, float* dx, size_t n, float p, uint64_t seed, uint64_t stream_id) override {
    RT_PROF("dropout_backward");
    cuda::dropout_backward(dy, dx, n, p, seed, stream_id);
  }

  void embedding_forward(const int32_t* tokens, const float* wte, const float* wpe, float* out, int B, int N, int d,
                         int V, float p, uint64_t seed, uint64_t stream_id) override {
    RT_PROF("embedding_forward");
    (void)V;  // the caller has checked every token against V
    Scratch tok = upload_ints(tokens, static_cast<size_t>(B) * N);
    cuda::embedding_forward(static_cast<const int32_t*>(tok.get()), wte, wpe, out, B, N, d, p, seed, stream_id);
  }
  void embedding_backward(const int32_t* tokens, const float* dout, float* dwte, float* dwpe, int B, int N, int d,
                          int V, float p, uint64_t seed, uint64_t stream_id) override {
    RT_PROF("embedding_backward");
    Scratch tok = upload_ints(tokens, static_cast<size_t>(B) * N);
    cuda::embedding_backward(static_cast<const int32_t*>(tok.get()), dout, dwte, dwpe, B, N, d, V, p, seed, stream_id);
  }
  std::function<XentResult()> head_xent(const float* Y, const float* lnw, const float* lnb, const float* W,
                                        const int32_t* targets, int B, int N, int d, int V, int P, int ignore_index,
                                        float* dY, float* dlnw, float* dlnb, float* dW, bool fp32) override {
    RT_PROF("head_xent");
    RT_CHECK(P >= 1 && P <= N, "head: scored positions must be in [1, N], got " + std::to_string(P));
    const int64_t count = cpu::count_scored(targets, B * P, V, ignore_index);
    Scratch tg = upload_ints(targets, static_cast<size_t>(B) * P);
    Scratch totals(2 * sizeof(double));
    cuda::head_xent(!(fp32 || fp32_), Y, lnw, lnb, W, static_cast<const int32_t*>(tg.get()), B, N, d, V, P, ignore_index,
                    count, dY, dlnw, dlnb, dW, static_cast<double*>(totals.get()));
    // Read behind the head only: the backward queued after it need not finish first (readback.cuh).
    // RT_CUDA_READBACK=0 reads after the whole stream instead, for timing.
    static const bool behind_head = rt::env_switch("RT_CUDA_READBACK", true);
    auto rb = behind_head ? std::make_shared<cuda::Readback>(totals.get(), 2 * sizeof(double)) : nullptr;
    auto kept = behind_head ? nullptr : std::make_shared<Scratch>(std::move(totals));
    return [rb, kept, count] {
      double t[2];
      if (rb) std::memcpy(t, rb->wait(), sizeof t);
      else memcpy_kind(t, kept->get(), sizeof t, cudaMemcpyDeviceToHost);
      XentResult res;
      res.count = count;
      res.loss = count ? t[0] / count : 0.0;
      res.correct = static_cast<int64_t>(t[1]);
      return res;
    };
  }
  void head_logits(const float* Y, const float* lnw, const float* lnb, const float* W, int B, int N, int d, int V, int P,
                   float* logits, bool fp32) override {
    RT_PROF("head_logits");
    RT_CHECK(P >= 1 && P <= N, "head: scored positions must be in [1, N], got " + std::to_string(P));
    cuda::head_logits(!(fp32 || fp32_), Y, lnw, lnb, W, B, N, d, V, P, logits);
  }
  std::function<AdamWResult()> adamw_step(const std::vector<AdamWTensor>& tensors, AdamWHyper h, double max_norm,
                                          int32_t* count) override {
    RT_PROF("adamw_step");
    return cuda::adamw_step(tensors.data(), tensors.size(), h, max_norm, count);
  }

 private:
  // Through pinned memory (upload.cuh), so that the host does not wait for the stream to reach the copy;
  // RT_CUDA_PINNED_UPLOAD=0 copies from the caller's pageable memory, for timing.
  static Scratch upload_ints(const int32_t* host, size_t n) {
    static const bool pinned = rt::env_switch("RT_CUDA_PINNED_UPLOAD", true);
    Scratch d(n * sizeof(int32_t));
    if (pinned) upload_async(d.get(), host, n * sizeof(int32_t));
    else memcpy_kind(d.get(), host, n * sizeof(int32_t), cudaMemcpyHostToDevice);
    return d;
  }
  bool fp32_;
  bool fused_;
};

}  // namespace

void throw_cuda(cudaError_t e, const char* call) {
  std::string msg = std::string("CUDA error in ") + call + ": " + cudaGetErrorString(e) + " (" + cudaGetErrorName(e) + ")";
  if (sticky(e)) msg += "; the GPU context is now unusable: restart the process to use the GPU again";
  else cudaGetLastError();  // clear a non-sticky error so the next call starts clean
  throw Error(msg);
}

cudaStream_t stream() { return t_capturing ? t_capture_stream : runtime().stream; }
const uint64_t* capture_seed() { return t_capture_seed; }
const DeviceLimits& limits() { return runtime().lim; }

Scratch::Scratch(size_t bytes) : p_(bytes ? allocator().alloc(bytes) : nullptr) {}
Scratch::~Scratch() { reset(); }
void Scratch::reset() {
  allocator().release(p_);
  p_ = nullptr;
}

}  // namespace cuda

namespace cuda_mem {
void* alloc(size_t bytes) { return cuda::allocator().alloc(bytes); }
void release(void* p) noexcept { cuda::allocator().release(p); }
void copy(void* dst, Device dd, const void* src, Device sd, size_t bytes) {
  const cudaMemcpyKind kind = dd == Device::CUDA ? (sd == Device::CUDA ? cudaMemcpyDeviceToDevice : cudaMemcpyHostToDevice)
                                                 : (sd == Device::CUDA ? cudaMemcpyDeviceToHost : cudaMemcpyHostToHost);
  cuda::memcpy_kind(dst, src, bytes, kind);
}
void zero(void* p, size_t bytes) {
  if (bytes) RT_CU(cudaMemsetAsync(p, 0, bytes, cuda::stream()));
}
}  // namespace cuda_mem

Backend& cuda_backend(bool fp32) {
  static const bool env_fp32 = rt::env_switch("RT_CUDA_FP32", false);
  cuda::runtime();  // throws, naming the reason, when there is no usable GPU
  static cuda::CudaBackend* bf16_backend = new cuda::CudaBackend(false);
  static cuda::CudaBackend* fp32_backend = new cuda::CudaBackend(true);
  return (fp32 || env_fp32) ? static_cast<Backend&>(*fp32_backend) : static_cast<Backend&>(*bf16_backend);
}

}  // namespace rt
