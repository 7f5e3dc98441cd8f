// NCCL, loaded at run time: libnccl.so.2 (or RT_NCCL_LIBRARY) is opened with dlopen at the first
// multi-GPU call, so the addon builds and loads where NCCL is absent and only a run that asks for more than
// one GPU says that it is missing. The functions are looked up under the names of nccl_api.h.
//
// Waiting never blocks forever: a communicator is made non-blocking where NCCL allows it (2.14+), and
// every wait (joining, a collective) polls the stream and ncclCommGetAsyncError with a deadline; past it,
// or when NCCL reports a broken peer, the communicator is aborted (ncclCommAbort ends the kernels still
// waiting for the missing rank) and the caller gets an rt::Error naming the rank and the cause.
#include <dlfcn.h>

#include <chrono>
#include <cstdlib>
#include <cstring>
#include <string>
#include <thread>

#include "core/error.h"
#include "cuda/common.cuh"
#include "cuda/dist.h"
#include "cuda/nccl_api.h"

namespace rt::dist {
namespace {

struct Api {
  std::string error;  // why NCCL cannot be used; empty when it can
  int version = 0;
  nccl::GetVersionFn get_version = nullptr;
  nccl::GetUniqueIdFn get_unique_id = nullptr;
  nccl::CommInitRankFn init_rank = nullptr;
  nccl::CommInitRankConfigFn init_rank_config = nullptr;  // optional (2.14+)
  nccl::AllReduceFn all_reduce = nullptr;
  nccl::GroupFn group_start = nullptr;
  nccl::GroupFn group_end = nullptr;
  nccl::CommFn destroy = nullptr;
  nccl::CommFn abort = nullptr;
  nccl::GetErrorStringFn error_string = nullptr;
  nccl::CommGetAsyncErrorFn async_error = nullptr;
};

Api* load() {
  auto* a = new Api();  // never freed: NCCL may run threads until the process ends
  const char* env = std::getenv("RT_NCCL_LIBRARY");
  const std::string path = env && *env ? env : "libnccl.so.2";
  const std::string hint = env && *env ? "check RT_NCCL_LIBRARY" : "install NCCL 2.x (libnccl2) or set RT_NCCL_LIBRARY to the path of libnccl.so.2";
  void* lib = dlopen(path.c_str(), RTLD_NOW | RTLD_LOCAL);
  if (!lib) {
    const char* why = dlerror();
    a->error = "multi-GPU training needs NCCL, but " + path + " could not be loaded (" + (why ? why : "unknown error") + "); " + hint;
    return a;
  }
  auto sym = [&](const char* name, bool required) -> void* {
    void* p = dlsym(lib, name);
    if (!p && required && a->error.empty())
      a->error = "multi-GPU training needs NCCL 2.4 or newer, but " + path + " has no symbol " + name + "; " + hint;
    return p;
  };
  a->get_version = reinterpret_cast<nccl::GetVersionFn>(sym("ncclGetVersion", true));
  a->get_unique_id = reinterpret_cast<nccl::GetUniqueIdFn>(sym("ncclGetUniqueId", true));
  a->init_rank = reinterpret_cast<nccl::CommInitRankFn>(sym("ncclCommInitRank", true));
  a->init_rank_config = reinterpret_cast<nccl::CommInitRankConfigFn>(sym("ncclCommInitRankConfig", false));
  a->all_reduce = reinterpret_cast<nccl::AllReduceFn>(sym("ncclAllReduce", true));
  a->group_start = reinterpret_cast<nccl::GroupFn>(sym("ncclGroupStart", true));
  a->group_end = reinterpret_cast<nccl::GroupFn>(sym("ncclGroupEnd", true));
  a->destroy = reinterpret_cast<nccl::CommFn>(sym("ncclCommDestroy", true));
  a->abort = reinterpret_cast<nccl::CommFn>(sym("ncclCommAbort", true));
  a->error_string = reinterpret_cast<nccl::GetErrorStringFn>(sym("ncclGetErrorString", true));
  a->async_error = reinterpret_cast<nccl::CommGetAsyncErrorFn>(sym("ncclCommGetAsyncError", true));
  if (!a->error.empty()) return a;
  if (a->get_version(&a->version) != nccl::Success) a->error = "NCCL: ncclGetVersion failed (" + path + ")";
  return a;
}

Api& api() {
  static Api* a = load();
  if (!a->error.empty()) throw Error(a->error);
  return *a;
}

std::string describe(nccl::Result r) {
  const char* s = api().error_string ? api().error_string(r) : nullptr;
  return std::string(s ? s : "unknown NCCL error") + " (ncclResult " + std::to_string(static_cast<int>(r)) + ")";
}

void check(nccl::Result r, const char* call) {
  if (r != nccl::Success && r != nccl::InProgress) throw Error(std::string("NCCL: ") + call + " failed: " + describe(r));
}

using Clock = std::chrono::steady_clock;

// Polling waits: short sleeps at first (an all-reduce of a small model takes tens of microseconds), growing
// to 1 ms so that a long wait costs no CPU.
class Backoff {
 public:
  void pause() {
    std::this_thread::sleep_for(std::chrono::microseconds(us_));
    if (us_ < 1000) us_ *= 2;
  }

 private:
  int us_ = 20;
};

__global__ void scale_kernel(float* x, size_t n, float s) {
  const size_t stride = static_cast<size_t>(gridDim.x) * blockDim.x;
  for (size_t i = blockIdx.x * static_cast<size_t>(blockDim.x) + threadIdx.x; i < n; i += stride) x[i] *= s;
}

}  // namespace

int nccl_version() { return api().version; }

std::vector<uint8_t> unique_id() {
  Api& a = api();
  nccl::UniqueId id;
  check(a.get_unique_id(&id), "ncclGetUniqueId");
  return std::vector<uint8_t>(reinterpret_cast<uint8_t*>(id.internal), reinterpret_cast<uint8_t*>(id.internal) + sizeof id);
}

Communicator::Communicator(const uint8_t* id, size_t id_bytes, int nranks, int rank, double timeout_s)
    : rank_(rank), nranks_(nranks), timeout_s_(timeout_s) {
  RT_CHECK(id_bytes == kUniqueIdBytes, "id: expected " + std::to_string(kUniqueIdBytes) + " bytes, got " + std::to_string(id_bytes));
  RT_CHECK(nranks >= 1, "nranks: expected an integer >= 1, got " + std::to_string(nranks));
  RT_CHECK(rank >= 0 && rank < nranks, "rank: expected an integer in [0, " + std::to_string(nranks - 1) + "], got " + std::to_string(rank));
  RT_CHECK(timeout_s > 0, "timeout: expected a positive number of seconds");
  Api& a = api();
  cuda::stream();  // the CUDA runtime, on this thread's device (RT_CUDA_DEVICE): NCCL binds to it
  avg_ = a.version >= nccl::kAvgSince;
  nccl::UniqueId uid;
  std::memcpy(uid.internal, id, kUniqueIdBytes);
  nccl::Comm_t c = nullptr;
  if (a.init_rank_config && a.version >= nccl::kNonBlockingSince) {
    nccl::Config cfg{sizeof(nccl::Config), nccl::kConfigMagic, static_cast<unsigned>(nccl::kConfigVersion), 0,
                     nccl::kConfigUndefInt, nccl::kConfigUndefInt, nccl::kConfigUndefInt, nullptr};
    nccl::Result r = a.init_rank_config(&c, nranks, uid, rank, &cfg);
    comm_ = c;
    nonblocking_ = true;
    if (r != nccl::Success && r != nccl::InProgress) {
      abort();
      check(r, "ncclCommInitRankConfig");
    }
    wait_init();
  } else {
    // NCCL before 2.14 has no non-blocking communicators: joining cannot time out here, but the TCP
    // rendezvous that came before it has already seen every rank alive.
    check(a.init_rank(&c, nranks, uid, rank), "ncclCommInitRank");
    comm_ = c;
  }
}

Communicator::~Communicator() { abort(); }

bool Communicator::alive() const {
  std::lock_guard<std::mutex> lock(mu_);
  return comm_ != nullptr && !aborted_;
}

void Communicator::fail(const std::string& msg) {
  abort();
  throw Error(msg);
}

void Communicator::check_async(const char* what) {
  nccl::Result state = nccl::Success;
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (aborted_ || !comm_) throw Error(std::string("NCCL ") + what + ": the communicator was aborted");
    api().async_error(static_cast<nccl::Comm_t>(comm_), &state);
  }
  if (state != nccl::Success && state != nccl::InProgress)
    fail(std::string("NCCL ") + what + " failed on rank " + std::to_string(rank_) + ": " + describe(state) +
         " (another rank has probably stopped)");
}

void Communicator::wait_init() {
  const auto deadline = Clock::now() + std::chrono::duration<double>(timeout_s_);
  Backoff backoff;
  for (;;) {
    nccl::Result state = nccl::Success;
    {
      std::lock_guard<std::mutex> lock(mu_);
      if (aborted_ || !comm_) throw Error("NCCL init: the communicator was aborted");
      api().async_error(static_cast<nccl::Comm_t>(comm_), &state);
    }
    if (state == nccl::Success) return;
    if (state != nccl::InProgress) fail("NCCL init failed on rank " + std::to_string(rank_) + ": " + describe(state));
    if (Clock::now() > deadline)
      fail("NCCL init: rank " + std::to_string(rank_) + " waited " + std::to_string(static_cast<int>(timeout_s_)) + " s for all " +
           std::to_string(nranks_) + " ranks to join; a rank is missing or stuck");
    backoff.pause();
  }
}

void Communicator::wait_stream(const char* what) {
  const auto deadline = Clock::now() + std::chrono::duration<double>(timeout_s_);
  cudaStream_t s = cuda::stream();
  Backoff backoff;
  for (;;) {
    cudaError_t e = cudaStreamQuery(s);
    if (e == cudaSuccess) return;
    if (e != cudaErrorNotReady) cuda::throw_cuda(e, what);
    check_async(what);
    if (Clock::now() > deadline)
      fail(std::string("NCCL ") + what + ": rank " + std::to_string(rank_) + " waited more than " +
           std::to_string(static_cast<int>(timeout_s_)) + " s for the other ranks; a rank is missing or stuck (the communicator was aborted)");
    backoff.pause();
  }
}

void Communicator::all_reduce_mean(const std::vector<Buffer>& buffers, size_t bucket_bytes) {
  Api& a = api();
  cudaStream_t s = cuda::stream();
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (aborted_ || !comm_) throw Error("allReduceMean: the communicator was aborted or destroyed");
  }
  // One rank still goes through NCCL (bench/cuda/check-dist.mjs checks the whole path on one GPU); the
  // trainer does not call it with one rank.
  const size_t cap = bucket_bytes / sizeof(float) ? bucket_bytes / sizeof(float) : 1;

  // Buckets: a large buffer is reduced in place; runs of small ones are packed into scratch buffers.
  struct Bucket {
    float* data;
    size_t count;
    size_t first, last;  // buffers [first, last) packed into it; empty when in place
  };
  std::vector<Bucket> buckets;
  std::vector<cuda::Scratch> packs;
  size_t i = 0;
  while (i < buffers.size()) {
    if (!buffers[i].count) {
      ++i;
      continue;
    }
    if (buffers[i].count >= cap) {
      buckets.push_back({buffers[i].data, buffers[i].count, 0, 0});
      ++i;
      continue;
    }
    size_t j = i, total = 0;
    while (j < buffers.size() && buffers[j].count < cap && total + buffers[j].count <= cap) total += buffers[j++].count;
    if (j == i + 1) {
      buckets.push_back({buffers[i].data, buffers[i].count, 0, 0});
    } else {
      packs.emplace_back(total * sizeof(float));
      float* p = packs.back().f32();
      size_t off = 0;
      for (size_t k = i; k < j; ++k) {
        if (buffers[k].count)
          RT_CU(cudaMemcpyAsync(p + off, buffers[k].data, buffers[k].count * sizeof(float), cudaMemcpyDeviceToDevice, s));
        off += buffers[k].count;
      }
      buckets.push_back({p, total, i, j});
    }
    i = j;
  }

  nccl::Result first_error = nccl::Success;
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (aborted_ || !comm_) throw Error("allReduceMean: the communicator was aborted");
    auto comm = static_cast<nccl::Comm_t>(comm_);
    check(a.group_start(), "ncclGroupStart");
    for (const Bucket& b : buckets) {
      nccl::Result r = a.all_reduce(b.data, b.data, b.count, nccl::Float32, avg_ ? nccl::Avg : nccl::Sum, comm, s);
      if (r != nccl::Success && r != nccl::InProgress && first_error == nccl::Success) first_error = r;
    }
    nccl::Result r = a.group_end();
    if (r != nccl::Success && r != nccl::InProgress && first_error == nccl::Success) first_error = r;
  }
  if (first_error != nccl::Success) fail("NCCL ncclAllReduce failed on rank " + std::to_string(rank_) + ": " + describe(first_error));
  if (nonblocking_) {
    // A non-blocking group is queued on the stream once the communicator's state leaves ncclInProgress.
    const auto deadline = Clock::now() + std::chrono::duration<double>(timeout_s_);
    Backoff backoff;
    for (;;) {
      nccl::Result state = nccl::Success;
      {
        std::lock_guard<std::mutex> lock(mu_);
        if (aborted_ || !comm_) throw Error("allReduceMean: the communicator was aborted");
        a.async_error(static_cast<nccl::Comm_t>(comm_), &state);
      }
      if (state == nccl::Success) break;
      if (state != nccl::InProgress) fail("NCCL all-reduce failed on rank " + std::to_string(rank_) + ": " + describe(state));
      if (Clock::now() > deadline) fail("NCCL all-reduce: rank " + std::to_string(rank_) + " could not queue the collective within the timeout");
      backoff.pause();
    }
  }
  if (!avg_) {
    const float inv = 1.0f / static_cast<float>(nranks_);
    for (const Bucket& b : buckets) {
      scale_kernel<<<cuda::blocks_for(b.count, 256), 256, 0, s>>>(b.data, b.count, inv);
      RT_CU_LAUNCH("all-reduce scale");
    }
  }
  for (const Bucket& b : buckets) {
    size_t off = 0;
    for (size_t k = b.first; k < b.last; ++k) {
      if (buffers[k].count)
        RT_CU(cudaMemcpyAsync(buffers[k].data, b.data + off, buffers[k].count * sizeof(float), cudaMemcpyDeviceToDevice, s));
      off += buffers[k].count;
    }
  }
  wait_stream("all-reduce");
}

void Communicator::abort() noexcept {
  std::lock_guard<std::mutex> lock(mu_);
  if (!comm_) return;
  aborted_ = true;
  try {
    api().abort(static_cast<nccl::Comm_t>(comm_));
  } catch (...) {
  }
  comm_ = nullptr;
}

void Communicator::destroy() {
  std::unique_lock<std::mutex> lock(mu_);
  if (!comm_) return;
  nccl::Result state = nccl::Success;
  api().async_error(static_cast<nccl::Comm_t>(comm_), &state);
  if (state != nccl::Success && state != nccl::InProgress) {
    lock.unlock();
    fail("NCCL destroy: the communicator is broken: " + describe(state));
  }
  nccl::Result r = api().destroy(static_cast<nccl::Comm_t>(comm_));
  comm_ = nullptr;
  if (r != nccl::Success && r != nccl::InProgress) throw Error("NCCL: ncclCommDestroy failed: " + describe(r));
}

}  // namespace rt::dist
