#include "core/env.h"
#include "cuda/profile.cuh"

#include <cuda_runtime.h>

#include <cstdio>
#include <cstdlib>
#include <map>
#include <mutex>
#include <string>
#include <vector>

#include "cuda/common.cuh"
#include "cuda/twin.cuh"

namespace rt::cuda {
namespace {

struct Rec {
  const char* name;
  cudaEvent_t a, b;
};
struct Total {
  double ms = 0;
  long long calls = 0;
};

struct Profile {
  std::mutex mu;
  std::vector<Rec> pending;
  std::vector<cudaEvent_t> pool;
  std::map<std::string, Total> totals;

  cudaEvent_t event() {
    if (!pool.empty()) {
      cudaEvent_t e = pool.back();
      pool.pop_back();
      return e;
    }
    cudaEvent_t e = nullptr;
    RT_CU(cudaEventCreate(&e));
    return e;
  }
  // Folds finished records into the totals (waits for the last one), so that memory stays bounded.
  void fold() {
    if (pending.empty()) return;
    cudaEventSynchronize(pending.back().b);
    for (const Rec& r : pending) {
      float ms = 0;
      if (cudaEventElapsedTime(&ms, r.a, r.b) == cudaSuccess) {
        Total& t = totals[r.name];
        t.ms += ms;
        t.calls += 1;
      }
      pool.push_back(r.a);
      pool.push_back(r.b);
    }
    pending.clear();
  }
  void print() {
    std::lock_guard<std::mutex> lock(mu);
    fold();
    std::string s = "{\"cuda_profile\": {";
    bool first = true;
    for (const auto& [name, t] : totals) {
      char buf[256];
      std::snprintf(buf, sizeof buf, "%s\"%s\": {\"ms\": %.3f, \"calls\": %lld}", first ? "" : ", ", name.c_str(), t.ms,
                    t.calls);
      s += buf;
      first = false;
    }
    s += "}}\n";
    std::fputs(s.c_str(), stderr);
  }
};

Profile* profile() {
  static Profile* p = [] {
    auto* q = new Profile();  // never destroyed: printed by the exit handler below
    std::atexit([] { profile()->print(); });
    return q;
  }();
  return p;
}

}  // namespace

bool profiling() {
  static const bool on = rt::env_switch("RT_CUDA_PROFILE", false);
  return on;
}

ProfScope::ProfScope(const char* name) {
  twin_count_op();
  if (!profiling()) return;
  Profile* p = profile();
  std::lock_guard<std::mutex> lock(p->mu);
  cudaEvent_t e = p->event();
  RT_CU(cudaEventRecord(e, stream()));
  name_ = name;
  start_ = e;
}

ProfScope::~ProfScope() {
  if (!start_) return;
  Profile* p = profile();
  std::lock_guard<std::mutex> lock(p->mu);
  cudaEvent_t e = p->event();
  if (cudaEventRecord(e, stream()) != cudaSuccess) return;
  p->pending.push_back(Rec{name_, static_cast<cudaEvent_t>(start_), e});
  if (p->pending.size() >= 8192) p->fold();
}

}  // namespace rt::cuda
