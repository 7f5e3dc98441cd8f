// Node-API wrappers: TensorHandle (a native tensor seen from JavaScript) and LayerHandle (a layer stack
// whose forward and backward run as async workers off the event loop).
#pragma once
#include <napi.h>

#include <functional>
#include <memory>
#include <mutex>
#include <vector>

#include "core/sample.h"
#include "core/tensor.h"
#include "layer/decode.h"
#include "layer/recurrence.h"

namespace rt::addon {

class TensorHandle : public Napi::ObjectWrap<TensorHandle> {
 public:
  static Napi::Function Init(Napi::Env env);
  static Napi::Object Wrap(Napi::Env env, std::shared_ptr<Tensor> t);
  // The tensor behind a JS value, or a JS Error naming `what` when it is no live TensorHandle. Get() also
  // refuses device (CUDA) tensors: its callers run CPU code on the bytes. GetAny() takes any device.
  static std::shared_ptr<Tensor> Get(const Napi::Value& v, const char* what);
  static std::shared_ptr<Tensor> GetAny(const Napi::Value& v, const char* what);

  explicit TensorHandle(const Napi::CallbackInfo& info);
  void Finalize(Napi::Env env) override;

 private:
  Napi::Value Shape(const Napi::CallbackInfo& info);
  Napi::Value Dtype(const Napi::CallbackInfo& info);
  Napi::Value Disposed(const Napi::CallbackInfo& info);
  Napi::Value DeviceName(const Napi::CallbackInfo& info);
  Napi::Value To(const Napi::CallbackInfo& info);
  Napi::Value Read(const Napi::CallbackInfo& info);
  void Write(const Napi::CallbackInfo& info);
  void Zero(const Napi::CallbackInfo& info);
  void Free(const Napi::CallbackInfo& info);
  void Release(Napi::Env env);

  std::shared_ptr<Tensor> t_;
  int64_t accounted_ = 0;  // bytes reported to V8 as external memory
};

class LayerHandle : public Napi::ObjectWrap<LayerHandle> {
 public:
  static Napi::Function Init(Napi::Env env);
  explicit LayerHandle(const Napi::CallbackInfo& info);

  // The live stack (on any device), or a JS Error naming `op` when disposed or busy. Public for the decoder.
  std::shared_ptr<LayerStack> Live(const char* op);

 private:
  Napi::Value Run(Napi::Env env, std::function<std::shared_ptr<Tensor>()> work);
  Napi::Value Params(const Napi::CallbackInfo& info);
  Napi::Value Forward(const Napi::CallbackInfo& info);
  Napi::Value Backward(const Napi::CallbackInfo& info);
  void ZeroGrad(const Napi::CallbackInfo& info);
  void DropCache(const Napi::CallbackInfo& info);
  void Free(const Napi::CallbackInfo& info);
  Napi::Value Busy(const Napi::CallbackInfo& info);
  Napi::Value HasCache(const Napi::CallbackInfo& info);
  Napi::Value DeviceName(const Napi::CallbackInfo& info);
  // LayerHandle.cudaStatus(): {built, available, reason?, name?} without creating a layer.
  static Napi::Value CudaStatus(const Napi::CallbackInfo& info);

  std::shared_ptr<LayerStack> stack_;
  bool busy_ = false;
};

// Incremental decoding of B sequences through a model's layer stack, embedding and head: each step()
// takes B tokens and resolves with their next-token logits [B, V], holding O(layers * w * d) state.
class DecoderHandle : public Napi::ObjectWrap<DecoderHandle> {
 public:
  static Napi::Function Init(Napi::Env env);
  explicit DecoderHandle(const Napi::CallbackInfo& info);

 private:
  Napi::Value Step(const Napi::CallbackInfo& info);
  Napi::Value Position(const Napi::CallbackInfo& info);
  Napi::Value PositionOf(const Napi::CallbackInfo& info);
  void Reset(const Napi::CallbackInfo& info);
  int SlotArg(const Napi::CallbackInfo& info, size_t i);

  std::shared_ptr<LayerStack> stack_;
  std::shared_ptr<DecodeState> state_;
  std::shared_ptr<Tensor> wte_, wpe_, lnw_, lnb_, head_;
  // Steps may overlap when their slots do not (a server keeps one batch computing while it samples the
  // tokens of another). A slot in a step that has not settled is in inflight_; steps_ counts those steps.
  std::vector<char> inflight_;
  int steps_ = 0;
  // A device backend (CUDA) keeps one stream and its scratch per process: its steps take turns.
  std::shared_ptr<std::mutex> device_turn_ = std::make_shared<std::mutex>();
};

// The `sampling` argument of a decoder step and of sampleRows: one SampleParams per row, checked.
std::vector<SampleParams> sampling_arg(const Napi::Value& v, size_t rows);

// Per-environment constructors (worker threads each get their own).
struct AddonData {
  Napi::FunctionReference tensor_ctor;
  Napi::FunctionReference layer_ctor;
  Napi::FunctionReference decoder_ctor;
};

}  // namespace rt::addon
