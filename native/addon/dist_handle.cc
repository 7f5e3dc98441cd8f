// Node-API bindings of data-parallel communication (native/cuda/dist.h): the NCCL unique id, and
// CommHandle, one rank's communicator, whose allReduceMean averages gradients across processes.
//   ncclUniqueId() -> Uint8Array(128)           ncclVersion() -> number (e.g. 22105)
//   new CommHandle(id: Uint8Array(128), nranks, rank, timeoutMs = 300000)
//   .init() -> Promise<void>                    joins the other ranks (off the event loop, with the timeout)
//   .allReduceMean(tensors: Tensor[], bucketBytes = 25 MiB) -> Promise<void>
//   .abort()   .destroy()   .rank   .nranks   .busy
// The joining and every collective run on a libuv thread: the event loop stays free for the rendezvous's
// heartbeats while a rank waits for the others.
#include "addon/dist_handle.h"

#include <cmath>
#include <memory>
#include <string>
#include <vector>

#include "addon/async.h"
#include "addon/handles.h"
#include "core/error.h"
#ifdef RT_CUDA
#include "cuda/dist.h"
#endif

namespace rt::addon {
namespace {

constexpr const char* kNeedsCuda =
    "multi-GPU training needs the CUDA build of the addon (`npm run build:cuda`, then RT_CUDA_ADDON or build-cuda/) "
    "and NCCL (libnccl.so.2) at run time; this addon was built without CUDA";

[[maybe_unused]] int int_arg(const Napi::Value& v, const char* what, double lo, double hi) {
  if (!v.IsNumber()) throw Napi::TypeError::New(v.Env(), std::string(what) + ": expected an integer");
  double x = v.As<Napi::Number>().DoubleValue();
  if (!(x >= lo && x <= hi) || x != std::floor(x))
    throw Napi::RangeError::New(v.Env(), std::string(what) + ": expected an integer in [" + std::to_string(static_cast<long long>(lo)) +
                                             ", " + std::to_string(static_cast<long long>(hi)) + "], got " + v.ToString().Utf8Value());
  return static_cast<int>(x);
}

class CommHandle : public Napi::ObjectWrap<CommHandle> {
 public:
  static Napi::Function Init(Napi::Env env) {
    return DefineClass(env, "CommHandle",
                       {InstanceMethod<&CommHandle::Join>("init"), InstanceMethod<&CommHandle::AllReduceMean>("allReduceMean"),
                        InstanceMethod<&CommHandle::Abort>("abort"), InstanceMethod<&CommHandle::Destroy>("destroy"),
                        InstanceAccessor<&CommHandle::Rank>("rank"), InstanceAccessor<&CommHandle::NRanks>("nranks"),
                        InstanceAccessor<&CommHandle::Busy>("busy")});
  }

  explicit CommHandle(const Napi::CallbackInfo& info) : Napi::ObjectWrap<CommHandle>(info) {
    Napi::Env env = info.Env();
#ifndef RT_CUDA
    throw Napi::Error::New(env, kNeedsCuda);
#else
    if (!info[0].IsTypedArray() || info[0].As<Napi::TypedArray>().TypedArrayType() != napi_uint8_array ||
        info[0].As<Napi::Uint8Array>().ElementLength() != dist::kUniqueIdBytes)
      throw Napi::TypeError::New(env, "id: expected a Uint8Array of " + std::to_string(dist::kUniqueIdBytes) + " bytes (from ncclUniqueId())");
    Napi::Uint8Array id = info[0].As<Napi::Uint8Array>();
    id_.assign(id.Data(), id.Data() + id.ElementLength());
    nranks_ = int_arg(info[1], "nranks", 1, 65536);
    rank_ = int_arg(info[2], "rank", 0, nranks_ - 1);
    timeout_s_ = info[3].IsUndefined() ? 300.0 : int_arg(info[3], "timeoutMs", 1, 86400000) / 1000.0;
#endif
  }

 private:
  void Refuse(Napi::Env env, const char* op) {
    if (busy_) throw Napi::Error::New(env, std::string(op) + ": the communicator is busy with " + busy_what_ + "; await it first");
  }

  Napi::Value Join(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
#ifndef RT_CUDA
    throw Napi::Error::New(env, kNeedsCuda);
#else
    Refuse(env, "init");
    if (comm_ || joined_) throw Napi::Error::New(env, "init: already called");
    joined_ = true;
    busy_ = true;
    busy_what_ = "init";
    auto out = std::make_shared<std::shared_ptr<dist::Communicator>>();
    Ref();  // the handle outlives the work even if JavaScript drops it meanwhile
    std::vector<uint8_t> id = id_;
    int nranks = nranks_, rank = rank_;
    double timeout = timeout_s_;
    return PromiseWorker::Run(
        env, "rt:nccl-init",
        [=] { *out = std::make_shared<dist::Communicator>(id.data(), id.size(), nranks, rank, timeout); },
        [](Napi::Env e) -> Napi::Value { return e.Undefined(); },
        [this, out] {
          busy_ = false;
          comm_ = *out;
          Unref();
        });
#endif
  }

  Napi::Value AllReduceMean(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
#ifndef RT_CUDA
    throw Napi::Error::New(env, kNeedsCuda);
#else
    Refuse(env, "allReduceMean");
    if (!comm_ || !comm_->alive())
      throw Napi::Error::New(env, "allReduceMean: the communicator is not ready (call and await init() first) or was aborted/destroyed");
    if (!info[0].IsArray()) throw Napi::TypeError::New(env, "tensors: expected an array of float32 tensors");
    Napi::Array arr = info[0].As<Napi::Array>();
    std::vector<std::shared_ptr<Tensor>> ts;
    for (uint32_t i = 0; i < arr.Length(); ++i) {
      const std::string what = "tensors[" + std::to_string(i) + "]";
      auto t = TensorHandle::GetAny(arr.Get(i), what.c_str());
      if (t->dtype != DType::F32) throw Napi::TypeError::New(env, what + ": expected a float32 tensor, got " + dtype_name(t->dtype));
      ts.push_back(t);
    }
    double bucket = 25.0 * 1024 * 1024;
    if (!info[1].IsUndefined()) bucket = int_arg(info[1], "bucketBytes", 4, 2147483647.0);
    busy_ = true;
    busy_what_ = "an all-reduce";
    auto comm = comm_;
    Ref();
    const size_t bucket_bytes = static_cast<size_t>(bucket);
    return PromiseWorker::Run(
        env, "rt:all-reduce",
        [comm, ts, bucket_bytes] {
          // Host tensors (scalars such as the loss) travel through a device copy: NCCL reduces device memory.
          std::vector<std::shared_ptr<Tensor>> staged(ts.size());
          std::vector<dist::Communicator::Buffer> bufs;
          for (size_t i = 0; i < ts.size(); ++i) {
            staged[i] = ts[i]->device() == Device::CUDA ? ts[i] : ts[i]->to(Device::CUDA);
            bufs.push_back({staged[i]->f32(), staged[i]->numel()});
          }
          comm->all_reduce_mean(bufs, bucket_bytes);
          for (size_t i = 0; i < ts.size(); ++i)
            if (staged[i] != ts[i]) staged[i]->read_to_host(ts[i]->storage->data);
        },
        [](Napi::Env e) -> Napi::Value { return e.Undefined(); },
        [this] {
          busy_ = false;
          Unref();
        });
#endif
  }

  // Safe at any time, from the main thread: a collective waiting on another thread ends with an Error.
  void Abort(const Napi::CallbackInfo&) {
#ifdef RT_CUDA
    if (comm_) comm_->abort();
#endif
  }

  void Destroy(const Napi::CallbackInfo& info) {
#ifdef RT_CUDA
    Refuse(info.Env(), "destroy");
    if (!comm_) return;
    auto c = std::move(comm_);
    try {
      c->destroy();
    } catch (const Error& e) {
      throw Napi::Error::New(info.Env(), e.what());
    }
#else
    (void)info;
#endif
  }

  Napi::Value Rank(const Napi::CallbackInfo& info) { return Napi::Number::New(info.Env(), rank_); }
  Napi::Value NRanks(const Napi::CallbackInfo& info) { return Napi::Number::New(info.Env(), nranks_); }
  Napi::Value Busy(const Napi::CallbackInfo& info) { return Napi::Boolean::New(info.Env(), busy_); }

  int rank_ = 0, nranks_ = 1;
  double timeout_s_ = 300;
  bool busy_ = false, joined_ = false;
  std::string busy_what_;
  std::vector<uint8_t> id_;
#ifdef RT_CUDA
  std::shared_ptr<dist::Communicator> comm_;
#endif
};

Napi::Value UniqueId(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
#ifndef RT_CUDA
  throw Napi::Error::New(env, kNeedsCuda);
#else
  std::vector<uint8_t> id;
  try {
    id = dist::unique_id();
  } catch (const Error& e) {
    throw Napi::Error::New(env, e.what());
  }
  Napi::Uint8Array out = Napi::Uint8Array::New(env, id.size());
  std::copy(id.begin(), id.end(), out.Data());
  return out;
#endif
}

Napi::Value Version(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
#ifndef RT_CUDA
  throw Napi::Error::New(env, kNeedsCuda);
#else
  try {
    return Napi::Number::New(env, dist::nccl_version());
  } catch (const Error& e) {
    throw Napi::Error::New(env, e.what());
  }
#endif
}

}  // namespace

void InitDist(Napi::Env env, Napi::Object exports) {
  exports.Set("CommHandle", CommHandle::Init(env));
  exports.Set("ncclUniqueId", Napi::Function::New(env, UniqueId));
  exports.Set("ncclVersion", Napi::Function::New(env, Version));
}

}  // namespace rt::addon
