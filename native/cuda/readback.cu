#include "cuda/readback.cuh"

#include <mutex>
#include <string>
#include <unordered_map>
#include <vector>

#include "cuda/common.cuh"

namespace rt::cuda {

// Pinned bytes and an event, reused: cudaMallocHost and cudaEventCreate cost far more than a read, and
// cudaMallocHost may synchronize the device. Kept per device (an event belongs to one).
struct Readback::Slot {
  int device = 0;
  void* host = nullptr;
  cudaEvent_t ev = nullptr;
};

namespace {
std::mutex g_mu;
std::unordered_map<int, std::vector<Readback::Slot*>>& free_slots() {
  static auto* m = new std::unordered_map<int, std::vector<Readback::Slot*>>();  // never destroyed: no exit order
  return *m;
}
void give_back(Readback::Slot* s) {
  std::lock_guard<std::mutex> lock(g_mu);
  free_slots()[s->device].push_back(s);
}
}  // namespace

Readback::Readback(const void* src, size_t bytes) : slot_(nullptr) {
  RT_CHECK(bytes <= kMaxBytes, "Readback: at most " + std::to_string(kMaxBytes) + " bytes");
  int dev = 0;
  RT_CU(cudaGetDevice(&dev));
  {
    std::lock_guard<std::mutex> lock(g_mu);
    auto& v = free_slots()[dev];
    if (!v.empty()) {
      slot_ = v.back();
      v.pop_back();
    }
  }
  if (!slot_) {
    auto* s = new Slot();
    s->device = dev;
    cudaError_t e = cudaMallocHost(&s->host, kMaxBytes);
    if (e == cudaSuccess) e = cudaEventCreateWithFlags(&s->ev, cudaEventDisableTiming);
    if (e != cudaSuccess) {
      if (s->host) cudaFreeHost(s->host);
      delete s;
      throw_cuda(e, "Readback (pinned memory, event)");
    }
    slot_ = s;
  }
  cudaError_t e = bytes ? cudaMemcpyAsync(slot_->host, src, bytes, cudaMemcpyDeviceToHost, stream()) : cudaSuccess;
  if (e == cudaSuccess) e = cudaEventRecord(slot_->ev, stream());
  if (e != cudaSuccess) {
    // Nothing of this slot's is in flight: the copy or the event was refused.
    give_back(slot_);
    slot_ = nullptr;
    throw_cuda(e, "Readback (copy)");
  }
}

Readback::~Readback() {
  if (!slot_) return;
  // A copy still in flight into this slot would land in the next user's bytes: wait for it (at once where,
  // as usual, wait() ran first).
  cudaEventSynchronize(slot_->ev);
  give_back(slot_);
}

const void* Readback::wait() {
  RT_CU(cudaEventSynchronize(slot_->ev));
  return slot_->host;
}

}  // namespace rt::cuda
