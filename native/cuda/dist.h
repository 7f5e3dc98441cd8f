// Data-parallel communication between processes, one GPU each, through NCCL loaded at run time
// (native/cuda/nccl.cu). A plain C++ header: the addon includes it without CUDA's or NCCL's headers.
// Every failure is an rt::Error that says what is missing or which rank stopped answering.
#pragma once
#include <atomic>
#include <cstddef>
#include <cstdint>
#include <mutex>
#include <string>
#include <vector>

namespace rt::dist {

constexpr size_t kUniqueIdBytes = 128;

// The loaded NCCL's version code (e.g. 22105 for 2.21.5); loads the library on first use.
int nccl_version();

// A fresh NCCL unique id (rank 0 makes it and hands it to the others out of band).
std::vector<uint8_t> unique_id();

// One member of a communicator of `nranks` processes, on this process's CUDA device (RT_CUDA_DEVICE).
// Collectives run on the CUDA backend's stream, so they are ordered with the kernels that made the data.
class Communicator {
 public:
  // Blocks until every rank has joined, or throws after `timeout_s` seconds (a rank that never came).
  Communicator(const uint8_t* id, size_t id_bytes, int nranks, int rank, double timeout_s);
  ~Communicator();
  Communicator(const Communicator&) = delete;
  Communicator& operator=(const Communicator&) = delete;

  struct Buffer {
    float* data;  // device memory
    size_t count;
  };
  // Replaces every buffer by its mean over the ranks. Buffers smaller than `bucket_bytes` are packed
  // together into buckets of about that size, so that many small gradients cost a few large transfers;
  // all buckets go in one NCCL group. Returns when the results are in place, or throws (and aborts the
  // communicator) when a rank fails or the collective takes longer than the timeout.
  void all_reduce_mean(const std::vector<Buffer>& buffers, size_t bucket_bytes);

  // Ends every operation in flight (a waiting all_reduce_mean throws) and frees the communicator.
  void abort() noexcept;
  // Frees the communicator after its work is done; throws when it is broken (then it is aborted).
  void destroy();

  int rank() const { return rank_; }
  int nranks() const { return nranks_; }
  bool alive() const;

 private:
  void wait_init();
  void wait_stream(const char* what);
  void check_async(const char* what);
  void fail(const std::string& msg);  // aborts, then throws

  void* comm_ = nullptr;  // ncclComm_t
  mutable std::mutex mu_;
  std::atomic<bool> aborted_{false};
  int rank_ = 0, nranks_ = 1;
  double timeout_s_ = 300;
  bool nonblocking_ = false;
  bool avg_ = false;
};

}  // namespace rt::dist
