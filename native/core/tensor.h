// A tensor owned by native code: typed storage shared between JavaScript handles and the models that
// use it (a parameter stays alive while its layer lives, even after its JS handle is disposed; an input
// stays alive while an async worker reads it).
#pragma once
#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

namespace rt {

enum class DType { F32, I32 };

inline size_t dtype_size(DType) { return 4; }
inline const char* dtype_name(DType t) { return t == DType::F32 ? "float32" : "int32"; }

// Where a tensor's bytes live. CPU memory is plain host memory; CUDA memory is device memory of the CUDA
// backend (only in a build with RT_CUDA; elsewhere asking for it throws rt::Error).
enum class Device { CPU, CUDA };
inline const char* device_name(Device d) { return d == Device::CPU ? "cpu" : "cuda"; }

// Zero-filled bytes on one device. Host storage is 64-byte aligned; device storage comes from the CUDA
// backend's caching allocator and is stream-ordered with the backend's kernels.
struct Storage {
  void* data = nullptr;
  size_t bytes = 0;
  Device device = Device::CPU;
  explicit Storage(size_t nbytes, Device dev = Device::CPU);
  ~Storage();
  Storage(const Storage&) = delete;
  Storage& operator=(const Storage&) = delete;
};

struct Tensor {
  std::shared_ptr<Storage> storage;
  std::vector<int64_t> shape;
  DType dtype = DType::F32;

  static std::shared_ptr<Tensor> create(DType dtype, std::vector<int64_t> shape,
                                        Device device = Device::CPU);  // zero-filled
  size_t numel() const;
  Device device() const { return storage->device; }
  // A copy of this tensor on `device` (a new tensor even when it is already there).
  std::shared_ptr<Tensor> to(Device device) const;
  // Whole-tensor copies between this tensor (any device) and host memory of numel() elements.
  void read_to_host(void* dst) const;
  void write_from_host(const void* src);
  void fill_zero();
  float* f32() { return static_cast<float*>(storage->data); }
  const float* f32() const { return static_cast<const float*>(storage->data); }
  int32_t* i32() { return static_cast<int32_t*>(storage->data); }
  std::string shape_string() const;
};

// Largest element count we accept for one tensor: beyond it a request is a mistake, not a workload,
// and must fail with a clear error before any allocation is attempted.
constexpr int64_t kMaxElements = int64_t(1) << 34;

// Product of dims with overflow and range checks; `what` names the argument in the error.
size_t checked_numel(const std::vector<int64_t>& shape, const std::string& what);

// Device memory of the CUDA build (implemented in cuda/backend.cu; in a build without CUDA each throws
// rt::Error saying so). Copies and memsets are ordered on the CUDA backend's stream; a copy to the host
// returns once the bytes are there.
namespace cuda_mem {
void* alloc(size_t bytes);
void release(void* p) noexcept;
void copy(void* dst, Device dst_dev, const void* src, Device src_dev, size_t bytes);
void zero(void* p, size_t bytes);
}  // namespace cuda_mem

// Total host memory held by native tensors and layer caches; reported to JS (soak tests, GC pressure).
// Device memory is not counted here.
int64_t allocated_bytes();
void note_allocation(int64_t delta);

}  // namespace rt
