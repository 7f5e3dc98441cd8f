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

Storage::Storage(size_t nbytes) : bytes(nbytes) {
  // 64-byte alignment: whole AVX-512 lines for the kernels, and OpenBLAS likes it.
  size_t rounded = (nbytes + 63) / 64 * 64;
  data = rounded ? std::aligned_alloc(64, rounded) : nullptr;
  if (rounded && !data)
    throw Error("out of memory: could not allocate " + std::to_string(nbytes) + " bytes for a tensor");
  if (rounded) std::memset(data, 0, rounded);
  note_allocation(static_cast<int64_t>(nbytes));
}

Storage::~Storage() {
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

std::shared_ptr<Tensor> Tensor::create(DType dtype, std::vector<int64_t> shape) {
  auto t = std::make_shared<Tensor>();
  size_t n = checked_numel(shape, "tensor shape");
  t->dtype = dtype;
  t->shape = std::move(shape);
  t->storage = std::make_shared<Storage>(n * dtype_size(dtype));
  return t;
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
