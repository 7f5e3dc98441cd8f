// One persistent thread pool for every CPU kernel, GEMMs included.
//
// Why our own pool rather than OpenMP: the prebuilt .node must depend only on libc/libstdc++/libm/libgcc_s
// (libgomp would be one more shared library to ship), and OpenMP next to OpenBLAS's own pthreads
// oversubscribes the cores: after each sgemm OpenBLAS's workers spin for a while and steal the core our
// next kernel needs. So OpenBLAS runs single-threaded and we split each GEMM across this pool ourselves:
// one set of threads, no oversubscription, and the split is deterministic (same bits every run).
#pragma once
#include <cstddef>
#include <functional>

namespace rt {

// Number of threads parallel_for uses (RT_NUM_THREADS, else the hardware concurrency).
int num_threads();

// Runs body(begin, end) over [0, n) in contiguous chunks of at least `grain` items, on the pool's threads
// and the caller's. Chunk boundaries depend only on n, grain and num_threads(), never on timing. When the
// pool is busy (a call from another thread, or a nested call) the work runs serially on the caller.
void parallel_for(size_t n, size_t grain, const std::function<void(size_t, size_t)>& body);

// While one is alive, parallel_for on this thread runs every chunk here, in order, as it does inside a pool
// job. For work that is itself one of several running at once on threads of their own (two decoder steps
// in flight), where splitting it again would only make the threads wait on each other.
class SerialScope {
 public:
  SerialScope();
  ~SerialScope();
  SerialScope(const SerialScope&) = delete;
  SerialScope& operator=(const SerialScope&) = delete;

 private:
  bool saved_;
};

}  // namespace rt
