#include "cuda/upload.cuh"

#include <cstring>
#include <mutex>
#include <string>
#include <unordered_map>
#include <vector>

#include "cuda/common.cuh"

namespace rt::cuda {
namespace {

// Pinned buffers, each with the event recorded after its last copy: a buffer is reused once that copy has
// run. cudaMallocHost is slow and may synchronize the device, so buffers are kept (a few per device: a step
// has a handful of uploads in flight at most).
struct Staging {
  void* host = nullptr;
  size_t capacity = 0;
  cudaEvent_t ev = nullptr;
  bool used = false;  // the event has been recorded
};

constexpr size_t kMinBytes = size_t(1) << 20;
constexpr size_t kMaxBuffers = 8;

std::mutex g_mu;
std::unordered_map<int, std::vector<Staging>>& pools() {
  static auto* m = new std::unordered_map<int, std::vector<Staging>>();  // never destroyed: no exit order
  return *m;
}

bool idle(const Staging& s) {
  if (!s.used) return true;
  const cudaError_t e = cudaEventQuery(s.ev);
  if (e == cudaErrorNotReady) return false;
  RT_CU(e);
  return true;
}

}  // namespace

void upload_async(void* dst, const void* src, size_t bytes) {
  if (!bytes) return;
  cudaStreamCaptureStatus capturing = cudaStreamCaptureStatusNone;
  RT_CU(cudaStreamIsCapturing(stream(), &capturing));
  if (capturing != cudaStreamCaptureStatusNone) {
    // A captured copy would read the staging buffer at every replay: not what an upload means.
    throw Error("upload_async: called while a CUDA graph is being captured");
  }
  int dev = 0;
  RT_CU(cudaGetDevice(&dev));
  std::lock_guard<std::mutex> lock(g_mu);
  std::vector<Staging>& pool = pools()[dev];
  Staging* s = nullptr;
  for (Staging& c : pool)
    if (c.capacity >= bytes && idle(c)) {
      s = &c;
      break;
    }
  if (!s && pool.size() >= kMaxBuffers) {
    // All busy or too small (never in a train step's few uploads): wait for the first one, grown if need be.
    Staging& c = pool.front();
    if (c.used) RT_CU(cudaEventSynchronize(c.ev));
    if (c.capacity < bytes) {
      RT_CU(cudaFreeHost(c.host));
      c.host = nullptr;
      c.capacity = 0;
      RT_CU(cudaMallocHost(&c.host, bytes));
      c.capacity = bytes;
    }
    s = &c;
  }
  if (!s) {
    Staging c;
    const size_t cap = bytes > kMinBytes ? bytes : kMinBytes;
    RT_CU(cudaMallocHost(&c.host, cap));
    cudaError_t e = cudaEventCreateWithFlags(&c.ev, cudaEventDisableTiming);
    if (e != cudaSuccess) {
      cudaFreeHost(c.host);
      throw_cuda(e, "upload_async (event)");
    }
    c.capacity = cap;
    pool.push_back(c);
    s = &pool.back();
  }
  std::memcpy(s->host, src, bytes);
  RT_CU(cudaMemcpyAsync(dst, s->host, bytes, cudaMemcpyHostToDevice, stream()));
  RT_CU(cudaEventRecord(s->ev, stream()));
  s->used = true;
}

}  // namespace rt::cuda
