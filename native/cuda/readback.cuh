// A few bytes of device memory read back without draining the stream: the copy goes into pinned host memory
// behind the work queued so far, with an event after it, and wait() blocks until that event, not until the
// stream is empty. Why: the head's loss is read at the end of lossAndGrad, after the backward is queued; a
// stream synchronization there left the GPU idle from the backward's last kernel until the optimizer's
// launches came (~0.3 ms of a 10 ms copy step), while waiting for the head alone lets the optimizer's host
// work overlap the backward.
#pragma once
#include <cstddef>

namespace rt::cuda {

class Readback {
 public:
  static constexpr size_t kMaxBytes = 64;
  Readback(const void* src, size_t bytes);  // queues the copy on stream(); bytes <= kMaxBytes
  ~Readback();
  Readback(const Readback&) = delete;
  Readback& operator=(const Readback&) = delete;
  // The bytes, once the copy (and the work queued before it) has run. Throws rt::Error on a device error.
  const void* wait();

  struct Slot;  // pinned bytes and their event (readback.cu)

 private:
  Slot* slot_;
};

}  // namespace rt::cuda
