// One persistent thread pool for every CPU kernel, GEMMs included.
//
// Why our own pool rather than OpenMP: the prebuilt .node must depend only on libc/libstdc++/libm/libgcc_s
// (libgomp would be one more shared library to ship), and OpenMP next to OpenBLAS's own pthreads
// oversubscribes the cores: after each sgemm OpenBLAS's workers spin for a while and steal the core our
// next kernel needs. So OpenBLAS runs single-threaded and we split each GEMM across this pool ourselves:
// one set of threads, no oversubscription, and the split is deterministic (same bits every run).
//
// Dispatch protocol. A job is published as (generation, chunk count, next chunk) packed into one 64-bit
// atomic, so a chunk is claimed with a single compare-exchange that also proves the job is still the one
// the claimer read its description from. The count must be in the same word: with it stored apart, a
// worker that read the finished job's state (G, count_G) could read the next job's larger count (stored,
// but not yet published by the state word), see count_G < count_G+1, and win its compare-exchange on the
// still unchanged (G, count_G): a phantom chunk of the next job, run twice and counted once too often, so
// that job's caller returned while a chunk still ran (found by ThreadSanitizer; on 16 cores it showed as
// wrong results and crashes in 1-2% of layer steps, bench/cuda/NOTES.md session 10). Consequences:
//  - the caller never waits for a worker that is asleep or descheduled: if nobody else shows up, the
//    caller claims every chunk itself and returns as soon as they are done;
//  - a worker that wakes late can never run a chunk of a job that has already finished, nor mix the
//    description of one job with the chunk index of another.
// Chunk boundaries are a function of (n, grain, num_threads()) only; which thread runs which chunk is
// left to timing, which is harmless because chunks write disjoint results.
//
// Lifetime: the pool is created on first use and intentionally leaked (never destroyed, threads never
// joined). Node may tear down static objects while a libuv worker thread is still inside a kernel, and a
// destructor that joins would then either deadlock or pull the pool out from under that thread. The
// workers hold no resources that need releasing; the OS reclaims them at exit, when they are asleep on
// a condition variable that nobody destroys.
#include "thread_pool.h"

#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <cstdlib>
#include <exception>
#include <mutex>
#include <system_error>
#include <thread>
#include <vector>

#ifdef __linux__
#include <sched.h>
#endif
#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#define RT_CPU_RELAX() _mm_pause()
#else
#define RT_CPU_RELAX() std::this_thread::yield()
#endif

namespace rt {
namespace {

using Body = std::function<void(size_t, size_t)>;

constexpr int kMaxThreads = 256;
// The state word: next chunk in the low kChunkBits, the job's chunk count in the next kChunkBits, the
// generation in the rest (40 bits). Both fields hold up to 4095 >= kMaxThreads chunks.
constexpr int kChunkBits = 12;
constexpr int kGenShift = 2 * kChunkBits;
constexpr uint64_t kChunkMask = (uint64_t(1) << kChunkBits) - 1;
static_assert(kMaxThreads <= kChunkMask, "a chunk count must fit its field");

// How long an idle worker spins before it sleeps. A window step issues ~20 kernels of 10-500 µs with
// a little serial glue in between; spinning across that glue saves a futex wake-up (~5-50 µs on a VM)
// per kernel, while a worker that spins after the last kernel of a call wastes at most this long.
constexpr auto kSpinTime = std::chrono::microseconds(200);
// How long the caller spins for stragglers before it starts yielding its core to them.
constexpr auto kCallerSpinTime = std::chrono::microseconds(50);

int read_num_threads() {
  int n = 0;
  if (const char* s = std::getenv("RT_NUM_THREADS")) {
    char* end = nullptr;
    long v = std::strtol(s, &end, 10);
    if (end != s && v > 0) n = static_cast<int>(std::min<long>(v, kMaxThreads));
  }
  if (n <= 0) {
#ifdef __linux__
    // The CPUs this process may run on (taskset, cpusets, containers), not every CPU of the host:
    // more threads than that only take turns on the same cores.
    cpu_set_t set;
    if (sched_getaffinity(0, sizeof set, &set) == 0) n = CPU_COUNT(&set);
#endif
    if (n <= 0) n = static_cast<int>(std::thread::hardware_concurrency());
  }
  return std::max(1, std::min(n, kMaxThreads));
}

// Set while a thread executes chunks of a pooled job, so that a nested parallel_for on that thread runs
// serially instead of trying to re-enter the pool (a std::mutex must not be try_locked by its owner).
thread_local bool t_in_pool = false;

inline void chunk_bounds(size_t n, size_t nchunks, size_t c, size_t* b, size_t* e) {
  // Balanced split: chunk sizes differ by at most one item.
  const size_t q = n / nchunks, r = n % nchunks;
  *b = c * q + std::min(c, r);
  *e = *b + q + (c < r ? 1 : 0);
}

class Pool {
 public:
  explicit Pool(int nthreads) {
    workers_.reserve(nthreads - 1);
    // If the OS refuses a thread, carry on with fewer: the caller claims whatever chunks nobody else
    // does, so a smaller pool is only slower, never wrong.
    try {
      for (int i = 1; i < nthreads; ++i) workers_.emplace_back([this] { worker_loop(); });
    } catch (const std::system_error&) {
    }
  }

  // Returns false when the pool is busy; the caller then runs the chunks itself.
  bool run(size_t n, size_t nchunks, const Body& body) {
    std::unique_lock<std::mutex> dispatch(dispatch_mutex_, std::try_to_lock);
    if (!dispatch.owns_lock()) return false;

    const uint64_t gen = ++generation_;
    // The description is published with relaxed stores; the release store of state_ below orders them
    // before any claim of this generation.
    body_.store(&body, std::memory_order_relaxed);
    n_.store(n, std::memory_order_relaxed);
    done_.store(0, std::memory_order_relaxed);
    error_ = nullptr;
    state_.store((gen << kGenShift) | (static_cast<uint64_t>(nchunks) << kChunkBits), std::memory_order_seq_cst);

    // Dekker pairing with the worker's `sleepers_++` then predicate check: either we see the sleeper and
    // notify under the mutex, or it sees the new state before it sleeps. Skipping the lock when nobody
    // sleeps keeps back-to-back dispatches to a spinning worker free of syscalls.
    if (sleepers_.load(std::memory_order_seq_cst) > 0) {
      std::lock_guard<std::mutex> lk(sleep_mutex_);
      sleep_cv_.notify_all();
    }

    t_in_pool = true;
    work_on(gen);
    t_in_pool = false;

    // Wait for chunks claimed by workers. They are running (they claimed after we published), so this
    // is short; yield eventually in case the VM descheduled one of them.
    const auto t0 = std::chrono::steady_clock::now();
    unsigned spins = 0;
    while (done_.load(std::memory_order_acquire) < nchunks) {
      if (++spins < 64 || std::chrono::steady_clock::now() - t0 < kCallerSpinTime) {
        RT_CPU_RELAX();
      } else {
        std::this_thread::yield();
      }
    }
    if (error_) std::rethrow_exception(error_);
    return true;
  }

 private:
  // Claims and runs chunks of generation `gen` until none are left (or the job has moved on).
  void work_on(uint64_t gen) {
    for (;;) {
      uint64_t s = state_.load(std::memory_order_acquire);
      if ((s >> kGenShift) != gen) return;
      const size_t c = s & kChunkMask, nchunks = (s >> kChunkBits) & kChunkMask;
      if (c >= nchunks) return;
      const Body* body = body_.load(std::memory_order_relaxed);
      const size_t n = n_.load(std::memory_order_relaxed);
      // Success proves the job was still `gen` with chunk c unclaimed, hence not finished, hence the
      // description read above belongs to it.
      if (!state_.compare_exchange_weak(s, s + 1, std::memory_order_acq_rel, std::memory_order_relaxed))
        continue;
      size_t b, e;
      chunk_bounds(n, nchunks, c, &b, &e);
      try {
        (*body)(b, e);
      } catch (...) {
        std::lock_guard<std::mutex> lk(error_mutex_);
        if (!error_) error_ = std::current_exception();
      }
      done_.fetch_add(1, std::memory_order_release);
    }
  }

  void worker_loop() {
    t_in_pool = true;
    uint64_t seen = 0;
    for (;;) {
      uint64_t gen = state_.load(std::memory_order_acquire) >> kGenShift;
      if (gen == seen) {
        const auto t0 = std::chrono::steady_clock::now();
        unsigned spins = 0;
        while ((gen = state_.load(std::memory_order_acquire) >> kGenShift) == seen) {
          RT_CPU_RELAX();
          // Reading the clock costs ~20 ns; check it only every so often.
          if ((++spins & 255) == 0 && std::chrono::steady_clock::now() - t0 > kSpinTime) break;
        }
        if (gen == seen) {
          std::unique_lock<std::mutex> lk(sleep_mutex_);
          sleepers_.fetch_add(1, std::memory_order_seq_cst);
          sleep_cv_.wait(lk, [&] {
            return (state_.load(std::memory_order_seq_cst) >> kGenShift) != seen;
          });
          sleepers_.fetch_sub(1, std::memory_order_relaxed);
          gen = state_.load(std::memory_order_acquire) >> kGenShift;
        }
      }
      seen = gen;
      work_on(gen);
    }
  }

  std::vector<std::thread> workers_;

  std::mutex dispatch_mutex_;
  uint64_t generation_ = 0;  // only touched under dispatch_mutex_

  std::atomic<uint64_t> state_{0};
  std::atomic<const Body*> body_{nullptr};
  std::atomic<size_t> n_{0};
  std::atomic<size_t> done_{0};

  std::mutex error_mutex_;
  std::exception_ptr error_;

  std::mutex sleep_mutex_;
  std::condition_variable sleep_cv_;
  std::atomic<int> sleepers_{0};
};

Pool& pool() {
  // Leaked on purpose: see the lifetime note at the top of the file.
  static Pool* p = new Pool(num_threads());
  return *p;
}

}  // namespace

int num_threads() {
  static const int n = read_num_threads();
  return n;
}

SerialScope::SerialScope() : saved_(t_in_pool) { t_in_pool = true; }
SerialScope::~SerialScope() { t_in_pool = saved_; }

void parallel_for(size_t n, size_t grain, const std::function<void(size_t, size_t)>& body) {
  if (n == 0) return;
  if (grain == 0) grain = 1;
  const size_t nt = static_cast<size_t>(num_threads());
  const size_t nchunks = std::max<size_t>(1, std::min(nt, n / grain));
  if (nchunks == 1) {
    // A single chunk runs outside the pool so that parallel_for calls inside it can still use the pool
    // (one attention head, one GEMM per head, ...).
    body(0, n);
    return;
  }
  if (!t_in_pool && pool().run(n, nchunks, body)) return;
  // Busy or nested: the same chunks, in order, on this thread, so results do not depend on whether the
  // pool was free.
  for (size_t c = 0; c < nchunks; ++c) {
    size_t b, e;
    chunk_bounds(n, nchunks, c, &b, &e);
    body(b, e);
  }
}

}  // namespace rt
