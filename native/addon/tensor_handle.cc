#include <cstdlib>
#include <cstring>
#include <string>

#include "addon/handles.h"
#include "core/error.h"

namespace rt::addon {

Napi::Function TensorHandle::Init(Napi::Env env) {
  return DefineClass(env, "TensorHandle",
                     {InstanceAccessor<&TensorHandle::Shape>("shape"), InstanceAccessor<&TensorHandle::Dtype>("dtype"),
                      InstanceAccessor<&TensorHandle::Disposed>("disposed"),
                      InstanceAccessor<&TensorHandle::DeviceName>("device"), InstanceMethod<&TensorHandle::To>("to"),
                      InstanceMethod<&TensorHandle::Read>("read"),
                      InstanceMethod<&TensorHandle::Write>("write"),
                      InstanceMethod<&TensorHandle::Zero>("zero"), InstanceMethod<&TensorHandle::Free>("free")});
}

Napi::Object TensorHandle::Wrap(Napi::Env env, std::shared_ptr<Tensor> t) {
  auto* holder = new std::shared_ptr<Tensor>(std::move(t));
  auto ext = Napi::External<std::shared_ptr<Tensor>>::New(env, holder);
  Napi::Object obj = env.GetInstanceData<AddonData>()->tensor_ctor.New({ext});
  return obj;
}

std::shared_ptr<Tensor> TensorHandle::Get(const Napi::Value& v, const char* what) {
  auto t = GetAny(v, what);
  if (t->device() != Device::CPU)
    throw Napi::TypeError::New(v.Env(), std::string(what) + ": is a tensor on '" + device_name(t->device()) +
                                            "', and this operation runs on the CPU; copy it first with tensor.to('cpu')");
  return t;
}

std::shared_ptr<Tensor> TensorHandle::GetAny(const Napi::Value& v, const char* what) {
  Napi::Env env = v.Env();
  if (!v.IsObject() || !v.As<Napi::Object>().InstanceOf(env.GetInstanceData<AddonData>()->tensor_ctor.Value()))
    throw Napi::TypeError::New(env, std::string(what) + ": expected a Tensor");
  auto* h = TensorHandle::Unwrap(v.As<Napi::Object>());
  if (!h->t_) throw Napi::Error::New(env, std::string(what) + ": the tensor has been disposed");
  return h->t_;
}

// What V8 is told a tensor holds outside its heap, so that host tensors dropped without dispose() get
// collected under memory pressure. GPU tensors are left out: every reported rise counts toward V8's next
// full collection, and a train step makes and disposes several 100 MB GPU tensors, so reporting them cost
// a Mark-Compact in every step (~2 ms of a 15 ms step on the H200: bench/cuda/NOTES.md, session 10).
// Dropped GPU tensors are still freed when collected; RT_ACCOUNT_DEVICE_MEMORY=1 reports them too.
static int64_t accounted_bytes(const Tensor& t) {
  static const bool device = [] {
    const char* e = std::getenv("RT_ACCOUNT_DEVICE_MEMORY");
    return e && std::string(e) == "1";
  }();
  if (t.device() != Device::CPU && !device) return 0;
  return static_cast<int64_t>(t.numel() * 4);
}

// new TensorHandle(External) adopts a native tensor; new TensorHandle(dtype, shape, data?) makes one.
TensorHandle::TensorHandle(const Napi::CallbackInfo& info) : Napi::ObjectWrap<TensorHandle>(info) {
  Napi::Env env = info.Env();
  if (info.Length() == 1 && info[0].IsExternal()) {
    auto* holder = info[0].As<Napi::External<std::shared_ptr<Tensor>>>().Data();
    t_ = std::move(*holder);
    delete holder;
  } else {
    if (info.Length() < 2 || !info[0].IsString() || !info[1].IsArray())
      throw Napi::TypeError::New(env, "TensorHandle: expected (dtype, shape[, data])");
    std::string dt = info[0].As<Napi::String>();
    if (dt != "float32" && dt != "int32")
      throw Napi::TypeError::New(env, "dtype: expected 'float32' or 'int32', got '" + dt + "'");
    DType dtype = dt == "float32" ? DType::F32 : DType::I32;
    Napi::Array arr = info[1].As<Napi::Array>();
    std::vector<int64_t> shape;
    for (uint32_t i = 0; i < arr.Length(); ++i) {
      Napi::Value s = arr[i];
      double v = s.IsNumber() ? s.As<Napi::Number>().DoubleValue() : -1;
      if (!(v >= 0) || v != static_cast<double>(static_cast<int64_t>(v)) || v > 9e15)
        throw Napi::TypeError::New(env, "shape[" + std::to_string(i) + "]: expected a non-negative integer");
      shape.push_back(static_cast<int64_t>(v));
    }
    try {
      size_t n = checked_numel(shape, "shape");
      if (info.Length() >= 3 && !info[2].IsUndefined()) {
        if (!info[2].IsTypedArray()) throw Napi::TypeError::New(env, "data: expected a typed array");
        auto ta = info[2].As<Napi::TypedArray>();
        auto want = dtype == DType::F32 ? napi_float32_array : napi_int32_array;
        if (ta.TypedArrayType() != want)
          throw Napi::TypeError::New(env, std::string("data: expected a ") +
                                              (dtype == DType::F32 ? "Float32Array" : "Int32Array"));
        if (ta.ElementLength() != n)
          throw Napi::RangeError::New(env, "data: has " + std::to_string(ta.ElementLength()) +
                                               " elements but the shape needs " + std::to_string(n));
        t_ = Tensor::create(dtype, shape);
        const char* src = static_cast<const char*>(ta.ArrayBuffer().Data()) + ta.ByteOffset();
        if (n) std::memcpy(t_->storage->data, src, n * 4);  // an empty tensor has no storage to copy into
      } else {
        t_ = Tensor::create(dtype, shape);
      }
    } catch (const Error& e) {
      throw Napi::RangeError::New(env, e.what());
    }
  }
  accounted_ = accounted_bytes(*t_);
  if (accounted_) Napi::MemoryManagement::AdjustExternalMemory(env, accounted_);
}

// Collected without dispose(): give V8 its external-memory figure back; the storage itself goes when its
// last owner (this handle, a layer, a running worker) lets go.
void TensorHandle::Finalize(Napi::Env env) { Release(env); }

void TensorHandle::Release(Napi::Env env) {
  if (!t_) return;
  t_.reset();
  Napi::MemoryManagement::AdjustExternalMemory(env, -accounted_);
  accounted_ = 0;
}

Napi::Value TensorHandle::Shape(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (!t_) throw Napi::Error::New(env, "tensor: the tensor has been disposed");
  Napi::Array a = Napi::Array::New(env, t_->shape.size());
  for (size_t i = 0; i < t_->shape.size(); ++i) a[i] = Napi::Number::New(env, static_cast<double>(t_->shape[i]));
  return a;
}

Napi::Value TensorHandle::Dtype(const Napi::CallbackInfo& info) {
  if (!t_) throw Napi::Error::New(info.Env(), "tensor: the tensor has been disposed");
  return Napi::String::New(info.Env(), dtype_name(t_->dtype));
}

Napi::Value TensorHandle::Disposed(const Napi::CallbackInfo& info) { return Napi::Boolean::New(info.Env(), !t_); }

Napi::Value TensorHandle::DeviceName(const Napi::CallbackInfo& info) {
  if (!t_) throw Napi::Error::New(info.Env(), "tensor: the tensor has been disposed");
  return Napi::String::New(info.Env(), device_name(t_->device()));
}

// to('cpu' | 'cuda') -> a new TensorHandle holding a copy on that device (synchronous).
Napi::Value TensorHandle::To(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (!t_) throw Napi::Error::New(env, "tensor: the tensor has been disposed");
  std::string dev = info[0].IsString() ? info[0].As<Napi::String>().Utf8Value() : "";
  if (dev != "cpu" && dev != "cuda") throw Napi::TypeError::New(env, "device: expected 'cpu' or 'cuda', got '" + dev + "'");
  try {
    return Wrap(env, t_->to(dev == "cpu" ? Device::CPU : Device::CUDA));
  } catch (const Error& e) {
    throw Napi::Error::New(env, e.what());
  }
}

Napi::Value TensorHandle::Read(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (!t_) throw Napi::Error::New(env, "tensor: the tensor has been disposed");
  size_t n = t_->numel();
  auto buf = Napi::ArrayBuffer::New(env, n * 4);
  try {
    t_->read_to_host(buf.Data());  // a device tensor is copied back, after the work queued before it
  } catch (const Error& e) {
    throw Napi::Error::New(env, e.what());
  }
  if (t_->dtype == DType::F32) return Napi::Float32Array::New(env, n, buf, 0);
  return Napi::Int32Array::New(env, n, buf, 0);
}

void TensorHandle::Write(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (!t_) throw Napi::Error::New(env, "tensor: the tensor has been disposed");
  if (info.Length() < 1 || !info[0].IsTypedArray()) throw Napi::TypeError::New(env, "data: expected a typed array");
  auto ta = info[0].As<Napi::TypedArray>();
  auto want = t_->dtype == DType::F32 ? napi_float32_array : napi_int32_array;
  if (ta.TypedArrayType() != want) throw Napi::TypeError::New(env, "data: typed array type does not match the tensor's dtype");
  if (ta.ElementLength() != t_->numel())
    throw Napi::RangeError::New(env, "data: has " + std::to_string(ta.ElementLength()) + " elements, the tensor " +
                                         std::to_string(t_->numel()));
  try {
    t_->write_from_host(static_cast<const char*>(ta.ArrayBuffer().Data()) + ta.ByteOffset());
  } catch (const Error& e) {
    throw Napi::Error::New(env, e.what());
  }
}

void TensorHandle::Zero(const Napi::CallbackInfo& info) {
  if (!t_) throw Napi::Error::New(info.Env(), "tensor: the tensor has been disposed");
  try {
    t_->fill_zero();
  } catch (const Error& e) {
    throw Napi::Error::New(info.Env(), e.what());
  }
}

void TensorHandle::Free(const Napi::CallbackInfo& info) { Release(info.Env()); }

}  // namespace rt::addon
