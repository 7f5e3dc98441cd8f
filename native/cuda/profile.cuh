// RT_CUDA_PROFILE=1 in the environment: GPU time per named operation, from CUDA events recorded on the one
// stream around each backend call, printed at process exit as one JSON line on stderr
// ({"cuda_profile": {name: {"ms": total, "calls": n}}}). Off, a scope costs one branch. Events measure the
// stream's time from the start marker to the end marker: kernels plus any idle gaps between the launches
// inside one operation (which is what a launch-bound operation costs).
#pragma once

namespace rt::cuda {

bool profiling();

class ProfScope {
 public:
  explicit ProfScope(const char* name);
  ~ProfScope();
  ProfScope(const ProfScope&) = delete;
  ProfScope& operator=(const ProfScope&) = delete;

 private:
  const char* name_ = nullptr;
  void* start_ = nullptr;  // cudaEvent_t, kept opaque so that this header needs no CUDA include
};

}  // namespace rt::cuda

#define RT_PROF_CAT2(a, b) a##b
#define RT_PROF_CAT(a, b) RT_PROF_CAT2(a, b)
#define RT_PROF(name) ::rt::cuda::ProfScope RT_PROF_CAT(rt_prof_, __LINE__)(name)
