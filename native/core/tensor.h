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

// Host memory for now; the CUDA backend adds device storage behind the same type.
struct Storage {
  void* data = nullptr;
  size_t bytes = 0;
  explicit Storage(size_t nbytes);
  ~Storage();
  Storage(const Storage&) = delete;
  Storage& operator=(const Storage&) = delete;
};

struct Tensor {
  std::shared_ptr<Storage> storage;
  std::vector<int64_t> shape;
  DType dtype = DType::F32;

  static std::shared_ptr<Tensor> create(DType dtype, std::vector<int64_t> shape);  // zero-filled
  size_t numel() const;
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

// Total memory held by native tensors and layer caches; reported to JS (soak tests, GC pressure).
int64_t allocated_bytes();
void note_allocation(int64_t delta);

}  // namespace rt
