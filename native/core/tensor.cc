#include "core/tensor.h"

#include <atomic>
#include <cstdlib>
#include <cstring>
#include <new>

#include "core/error.h"

namespace rt {

static std::atomic<int64_t> g_allocated{0};

int64_t allocated_bytes() { return g_allocated.load(); }
void note_allocation(int64_t delta) { g_allocated += delta; }

#ifndef RT_CUDA
// A build without the CUDA backend: device memory cannot exist, and asking for it says why.
namespace cuda_mem {
[[noreturn]] static void no_cuda() {
  throw Error("device 'cuda': this addon was built without CUDA (build it with `npm run build:cuda`)");
}
void* alloc(size_t) { no_cuda(); }
void release(void*) noexcept {}
void copy(void*, Device, const void*, Device, size_t) { no_cuda(); }
void zero(void*, size_t) { no_cuda(); }
}  // namespace cuda_mem
#endif

Storage::Storage(size_t nbytes, Device dev) : bytes(nbytes), device(dev) {
  if (dev == Device::CUDA) {
    if (!nbytes) return;
    data = cuda_mem::alloc(nbytes);
    try {
      cuda_mem::zero(data, nbytes);
    } catch (...) {
      cuda_mem::release(data);
      throw;
    }
    return;
  }
  // 64-byte alignment: whole AVX-512 lines for the kernels, and OpenBLAS likes it.
  size_t rounded = (nbytes + 63) / 64 * 64;
  data = rounded ? std::aligned_alloc(64, rounded) : nullptr;
  if (rounded && !data)
    throw Error("out of memory: could not allocate " + std::to_string(nbytes) + " bytes for a tensor");
  if (rounded) std::memset(data, 0, rounded);
  note_allocation(static_cast<int64_t>(nbytes));
}

Storage::~Storage() {
  if (device == Device::CUDA) {
    cuda_mem::release(data);
    return;
  }
  std::free(data);
  note_allocation(-static_cast<int64_t>(bytes));
}

size_t checked_numel(const std::vector<int64_t>& shape, const std::string& what) {
  int64_t n = 1;
  for (int64_t s : shape) {
    RT_CHECK(s >= 0, what + ": dimensions must be non-negative integers, got " + std::to_string(s));
    if (s != 0 && n > kMaxElements / s)
      throw Error(what + ": too many elements (more than 2^34); check the shape");
    n *= s;
  }
  return static_cast<size_t>(n);
}

std::shared_ptr<Tensor> Tensor::create(DType dtype, std::vector<int64_t> shape, Device device) {
  auto t = std::make_shared<Tensor>();
  size_t n = checked_numel(shape, "tensor shape");
  t->dtype = dtype;
  t->shape = std::move(shape);
  t->storage = std::make_shared<Storage>(n * dtype_size(dtype), device);
  return t;
}

std::shared_ptr<Tensor> Tensor::to(Device dev) const {
  auto t = create(dtype, shape, dev);
  const size_t bytes = numel() * dtype_size(dtype);
  if (bytes == 0) return t;
  if (dev == Device::CPU && device() == Device::CPU)
    std::memcpy(t->storage->data, storage->data, bytes);
  else
    cuda_mem::copy(t->storage->data, dev, storage->data, device(), bytes);
  return t;
}

void Tensor::read_to_host(void* dst) const {
  const size_t bytes = numel() * dtype_size(dtype);
  if (bytes == 0) return;
  if (device() == Device::CPU)
    std::memcpy(dst, storage->data, bytes);
  else
    cuda_mem::copy(dst, Device::CPU, storage->data, device(), bytes);
}

void Tensor::write_from_host(const void* src) {
  const size_t bytes = numel() * dtype_size(dtype);
  if (bytes == 0) return;
  if (device() == Device::CPU)
    std::memcpy(storage->data, src, bytes);
  else
    cuda_mem::copy(storage->data, device(), src, Device::CPU, bytes);
}

void Tensor::fill_zero() {
  const size_t bytes = numel() * dtype_size(dtype);
  if (bytes == 0) return;
  if (device() == Device::CPU)
    std::memset(storage->data, 0, bytes);
  else
    cuda_mem::zero(storage->data, bytes);
}

size_t Tensor::numel() const {
  size_t n = 1;
  for (int64_t s : shape) n *= static_cast<size_t>(s);
  return n;
}

std::string Tensor::shape_string() const {
  std::string s = "[";
  for (size_t i = 0; i < shape.size(); ++i) s += (i ? ", " : "") + std::to_string(shape[i]);
  return s + "]";
}

}  // namespace rt
