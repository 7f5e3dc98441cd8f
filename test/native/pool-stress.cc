// Stress of the thread pool (native/core/thread_pool.cc), built by test/thread-pool.test.ts with
// ThreadSanitizer: many small jobs of varying chunk counts back to back, some calling parallel_for again
// from inside a chunk. Every item must be covered exactly once, and no chunk may run after its
// parallel_for returned (each job's flag is set on return and checked at the start and end of each chunk).
// Prints "late L bad B" and exits non-zero if either is not 0. Before session 10 the pool failed this:
// a worker could claim a phantom chunk of the next job (ThreadSanitizer: data races, heap-use-after-free).
//   pool-stress JOBS NESTED
#include <atomic>
#include <cstdio>
#include <cstdlib>
#include <memory>
#include <vector>

#include "core/thread_pool.h"

static std::atomic<long> late{0}, bad{0};
static bool nested = false;

static void job(int n, size_t grain, int depth) {
  auto finished = std::make_shared<std::atomic<bool>>(false);
  std::vector<int> mark(n, 0);
  rt::parallel_for(n, grain, [&, finished](size_t b, size_t e) {
    if (finished->load()) late++;
    for (size_t i = b; i < e; ++i) mark[i]++;
    if (nested && depth == 0 && b % 3 == 0) job(8, 1, 1);
    for (volatile int k = 0; k < 200; k = k + 1) {
    }
    if (finished->load()) late++;
  });
  finished->store(true);
  for (int i = 0; i < n; ++i)
    if (mark[i] != 1) bad++;
}

int main(int argc, char** argv) {
  const int jobs = argc > 1 ? std::atoi(argv[1]) : 20000;
  nested = argc > 2 && std::atoi(argv[2]) != 0;
  for (int id = 1; id <= jobs; ++id) job(1 + id % 64, 1 + id % 5, 0);
  std::printf("late %ld bad %ld threads %d\n", late.load(), bad.load(), rt::num_threads());
  return late || bad ? 1 : 0;
}
