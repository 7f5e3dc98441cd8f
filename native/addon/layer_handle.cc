#include <cmath>
#include <functional>

#include "addon/async.h"
#include "addon/handles.h"
#include "core/error.h"
#include "layer/backend.h"

namespace rt::addon {
namespace {

double number_field(Napi::Object cfg, const char* key, double fallback) {
  Napi::Value v = cfg.Get(key);
  if (v.IsUndefined()) return fallback;
  if (!v.IsNumber()) throw Napi::TypeError::New(cfg.Env(), std::string("config.") + key + ": expected a number");
  return v.As<Napi::Number>().DoubleValue();
}

int int_field(Napi::Object cfg, const char* key, double fallback) {
  double v = number_field(cfg, key, fallback);
  if (!std::isfinite(v) || v != std::floor(v) || std::fabs(v) > 2147483647.0)
    throw Napi::TypeError::New(cfg.Env(), std::string("config.") + key + ": expected an integer, got " + std::to_string(v));
  return static_cast<int>(v);
}

bool bool_field(Napi::Object cfg, const char* key, bool fallback) {
  Napi::Value v = cfg.Get(key);
  if (v.IsUndefined()) return fallback;
  if (!v.IsBoolean()) throw Napi::TypeError::New(cfg.Env(), std::string("config.") + key + ": expected a boolean");
  return v.As<Napi::Boolean>().Value();
}

std::string string_field(Napi::Object cfg, const char* key, const char* fallback) {
  Napi::Value v = cfg.Get(key);
  if (v.IsUndefined()) return fallback;
  if (!v.IsString()) throw Napi::TypeError::New(cfg.Env(), std::string("config.") + key + ": expected a string");
  return v.As<Napi::String>().Utf8Value();
}

// The backend of a device; rt::Error (saying why) when the device cannot be used.
Backend& backend_for(const std::string& device, bool fp32) {
  if (device == "cpu") return cpu_backend();
#ifdef RT_CUDA
  return cuda_backend(fp32);
#else
  (void)fp32;
  throw Error("device 'cuda': this addon was built without CUDA (build it with `npm run build:cuda`)");
#endif
}

// The input on the stack's device: as is when it is there already, else a copy (uploaded or downloaded).
std::shared_ptr<Tensor> on_device(const std::shared_ptr<Tensor>& t, Device dev) {
  return t->device() == dev ? t : t->to(dev);
}

}  // namespace

Napi::Function LayerHandle::Init(Napi::Env env) {
  return DefineClass(env, "LayerHandle",
                     {InstanceMethod<&LayerHandle::Params>("params"), InstanceMethod<&LayerHandle::Forward>("forward"),
                      InstanceMethod<&LayerHandle::Backward>("backward"),
                      InstanceMethod<&LayerHandle::ZeroGrad>("zeroGrad"),
                      InstanceMethod<&LayerHandle::DropCache>("dropCache"), InstanceMethod<&LayerHandle::Free>("free"),
                      InstanceAccessor<&LayerHandle::Busy>("busy"), InstanceAccessor<&LayerHandle::HasCache>("hasCache"),
                      InstanceAccessor<&LayerHandle::DeviceName>("device"),
                      StaticMethod<&LayerHandle::CudaStatus>("cudaStatus")});
}

// new LayerHandle({d, heads, layers, window, accumulate, alphaInit, alphaLearnable, gelu, bias, dropout, seed,
//                  device: 'cpu' | 'cuda', precision: 'bf16' | 'fp32' (CUDA matrix products)})
LayerHandle::LayerHandle(const Napi::CallbackInfo& info) : Napi::ObjectWrap<LayerHandle>(info) {
  Napi::Env env = info.Env();
  if (info.Length() < 1 || !info[0].IsObject()) throw Napi::TypeError::New(env, "config: expected an object");
  Napi::Object o = info[0].As<Napi::Object>();
  LayerConfig c;
  c.d = int_field(o, "d", 0);
  c.heads = int_field(o, "heads", 0);
  c.layers = int_field(o, "layers", 1);
  c.window = int_field(o, "window", 0);
  c.accumulate = bool_field(o, "accumulate", false);
  c.alpha_init = static_cast<float>(number_field(o, "alphaInit", 0.5));
  c.alpha_learnable = bool_field(o, "alphaLearnable", true);
  c.gelu = bool_field(o, "gelu", true);
  c.bias = bool_field(o, "bias", false);
  c.dropout = static_cast<float>(number_field(o, "dropout", 0));
  double seed = number_field(o, "seed", 0);
  if (!(seed >= 0) || seed != std::floor(seed) || seed > 9007199254740991.0)
    throw Napi::TypeError::New(env, "config.seed: expected a non-negative integer");
  c.seed = static_cast<uint64_t>(seed);
  const std::string device = string_field(o, "device", "cpu");
  if (device != "cpu" && device != "cuda")
    throw Napi::TypeError::New(env, "config.device: expected 'cpu' or 'cuda', got '" + device + "'");
  const std::string precision = string_field(o, "precision", "bf16");
  if (precision != "bf16" && precision != "fp32")
    throw Napi::TypeError::New(env, "config.precision: expected 'bf16' or 'fp32', got '" + precision + "'");
  Backend* be = nullptr;
  try {
    be = &backend_for(device, precision == "fp32");
  } catch (const Error& e) {
    throw Napi::Error::New(env, e.what());  // no GPU, no driver, no CUDA build: not a bad argument
  }
  try {
    stack_ = std::make_shared<LayerStack>(c, *be);
  } catch (const std::bad_alloc&) {
    throw Napi::RangeError::New(env, "config: out of memory allocating the layer's weights");
  } catch (const Error& e) {
    throw Napi::RangeError::New(env, e.what());
  }
  size_t bytes = 0;
  for (auto& p : stack_->params()) bytes += 2 * p.value->numel() * 4;
  Napi::MemoryManagement::AdjustExternalMemory(env, static_cast<int64_t>(bytes));
}

std::shared_ptr<LayerStack> LayerHandle::Live(const char* op) {
  if (!stack_) throw Napi::Error::New(Env(), std::string(op) + ": the layer has been disposed");
  if (busy_)
    throw Napi::Error::New(Env(), std::string(op) +
                                      ": the layer is busy with a forward or backward pass; await it before calling again");
  return stack_;
}

Napi::Value LayerHandle::Params(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (!stack_) throw Napi::Error::New(env, "parameters: the layer has been disposed");
  auto& ps = stack_->params();
  Napi::Array out = Napi::Array::New(env, ps.size());
  for (size_t i = 0; i < ps.size(); ++i) {
    Napi::Object o = Napi::Object::New(env);
    o.Set("name", ps[i].name);
    o.Set("value", TensorHandle::Wrap(env, ps[i].value));
    o.Set("grad", TensorHandle::Wrap(env, ps[i].grad));
    out[i] = o;
  }
  return out;
}

// forward(x, training, seed, window, keep, checkFinite) -> Promise<TensorHandle>
Napi::Value LayerHandle::Forward(const Napi::CallbackInfo& info) {
  auto stack = Live("forward");
  auto x = TensorHandle::GetAny(info[0], "x");
  bool training = info[1].ToBoolean();
  double seed = info[2].IsNumber() ? info[2].As<Napi::Number>().DoubleValue() : 0;
  int window = info[3].IsNumber() ? info[3].As<Napi::Number>().Int32Value() : -1;
  bool keep = info[4].IsUndefined() ? true : info[4].ToBoolean().Value();
  bool check = info[5].IsUndefined() ? true : info[5].ToBoolean().Value();
  auto s = static_cast<uint64_t>(seed);
  return Run(info.Env(), [stack, x, training, s, window, keep, check] {
    auto y = stack->forward(*on_device(x, stack->backend().device()), training, s, window, keep, check);
    stack->backend().end_call();  // the result is a device tensor: resolve once it is queued
    return y;
  });
}

// Runs a layer operation off the event loop; the layer stays referenced and busy until it settles.
Napi::Value LayerHandle::Run(Napi::Env env, std::function<std::shared_ptr<Tensor>()> work) {
  auto result = std::make_shared<std::shared_ptr<Tensor>>();
  auto owner = std::make_shared<Napi::ObjectReference>(Napi::Persistent(Value()));
  busy_ = true;
  return PromiseWorker::Run(
      env, "rt:layer", [work, result] { *result = work(); },
      [result](Napi::Env e) -> Napi::Value { return TensorHandle::Wrap(e, std::move(*result)); },
      [this, owner] {
        busy_ = false;
        owner->Reset();
      });
}

Napi::Value LayerHandle::Backward(const Napi::CallbackInfo& info) {
  auto stack = Live("backward");
  auto dy = TensorHandle::GetAny(info[0], "dy");
  if (!stack->has_cache())
    throw Napi::Error::New(info.Env(),
                           "backward: no forward pass to differentiate; call forward (with gradients kept) before each backward");
  bool check = info[1].IsUndefined() ? true : info[1].ToBoolean().Value();
  return Run(info.Env(), [stack, dy, check] {
    auto dx = stack->backward(*on_device(dy, stack->backend().device()), check);
    stack->backend().end_call();
    return dx;
  });
}

void LayerHandle::ZeroGrad(const Napi::CallbackInfo& info) {
  try {
    Live("zeroGrad")->zero_grad();
  } catch (const Error& e) {
    throw Napi::Error::New(info.Env(), e.what());
  }
}

void LayerHandle::DropCache(const Napi::CallbackInfo&) { Live("dropActivations")->drop_cache(); }

void LayerHandle::Free(const Napi::CallbackInfo& info) {
  if (busy_) throw Napi::Error::New(info.Env(), "dispose: the layer is busy; await its forward or backward first");
  stack_.reset();
}

Napi::Value LayerHandle::Busy(const Napi::CallbackInfo& info) { return Napi::Boolean::New(info.Env(), busy_); }
Napi::Value LayerHandle::HasCache(const Napi::CallbackInfo& info) {
  return Napi::Boolean::New(info.Env(), stack_ && stack_->has_cache());
}

}  // namespace rt::addon

namespace rt::addon {

Napi::Value LayerHandle::DeviceName(const Napi::CallbackInfo& info) {
  if (!stack_) throw Napi::Error::New(info.Env(), "device: the layer has been disposed");
  return Napi::String::New(info.Env(), device_name(stack_->backend().device()));
}

// {built: whether this addon has the CUDA backend, available: whether a GPU answered, reason: why not,
//  name: the backend's name}. Starting CUDA happens here, so a missing driver shows up as `reason`.
Napi::Value LayerHandle::CudaStatus(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  Napi::Object o = Napi::Object::New(env);
#ifdef RT_CUDA
  o.Set("built", true);
  try {
    o.Set("name", cuda_backend().name());
    o.Set("available", true);
  } catch (const Error& e) {
    o.Set("available", false);
    o.Set("reason", e.what());
  }
#else
  o.Set("built", false);
  o.Set("available", false);
  o.Set("reason", "device 'cuda': this addon was built without CUDA (build it with `npm run build:cuda`)");
#endif
  return o;
}

}  // namespace rt::addon
