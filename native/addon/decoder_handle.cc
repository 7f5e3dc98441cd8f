#include <algorithm>
#include <cmath>
#include <cstdio>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

#include "addon/async.h"
#include "addon/handles.h"
#include "core/error.h"
#include "core/sample.h"
#include "core/thread_pool.h"
#include "cpu/kernels.h"
#include "layer/backend.h"

namespace rt::addon {

Napi::Function DecoderHandle::Init(Napi::Env env) {
  return DefineClass(env, "DecoderHandle",
                     {InstanceMethod<&DecoderHandle::Step>("step"), InstanceMethod<&DecoderHandle::Reset>("reset"),
                      InstanceMethod<&DecoderHandle::PositionOf>("positionOf"),
                      InstanceAccessor<&DecoderHandle::Position>("position")});
}

namespace {
// The tables live where the layer stack does (the model keeps them together).
std::shared_ptr<Tensor> table_on(const Napi::Value& v, const char* what, Device dev) {
  auto t = TensorHandle::GetAny(v, what);
  if (t->device() != dev)
    throw Napi::TypeError::New(v.Env(), std::string(what) + ": is on '" + device_name(t->device()) + "' but the layer stack is on '" +
                                            device_name(dev) + "'");
  return t;
}
std::shared_ptr<Tensor> optional(const Napi::Value& v, const char* what, Device dev) {
  return v.IsNull() || v.IsUndefined() ? nullptr : table_on(v, what, dev);
}
}  // namespace

// sampling {temperature: Float64Array, topK: Int32Array, topP: Float64Array, uniform: Float64Array}, one
// value of each per row: the settings of sample_row (core/sample.h), checked here so that a bad value is a
// JavaScript error naming the field and the row, never a token out of range.
std::vector<SampleParams> sampling_arg(const Napi::Value& v, size_t rows) {
  Napi::Env env = v.Env();
  if (!v.IsObject()) throw Napi::TypeError::New(env, "sampling: expected an object {temperature, topK, topP, uniform}");
  Napi::Object o = v.As<Napi::Object>();
  auto typed = [&](const char* name, napi_typedarray_type type, const char* type_name) {
    Napi::Value f = o.Get(name);
    if (!f.IsTypedArray() || f.As<Napi::TypedArray>().TypedArrayType() != type)
      throw Napi::TypeError::New(env, std::string("sampling.") + name + ": expected a " + type_name);
    if (f.As<Napi::TypedArray>().ElementLength() != rows)
      throw Napi::RangeError::New(env, std::string("sampling.") + name + ": expected " + std::to_string(rows) +
                                           " values (one per row), got " + std::to_string(f.As<Napi::TypedArray>().ElementLength()));
    return f;
  };
  auto temperature = typed("temperature", napi_float64_array, "Float64Array").As<Napi::Float64Array>();
  auto top_k = typed("topK", napi_int32_array, "Int32Array").As<Napi::Int32Array>();
  auto top_p = typed("topP", napi_float64_array, "Float64Array").As<Napi::Float64Array>();
  auto uniform = typed("uniform", napi_float64_array, "Float64Array").As<Napi::Float64Array>();
  std::vector<SampleParams> p(rows);
  auto bad = [&](const char* name, size_t r, double value, const char* expected) {
    char text[32];
    std::snprintf(text, sizeof text, "%.17g", value);
    return Napi::RangeError::New(env, std::string("sampling.") + name + ": value " + text + " at row " +
                                          std::to_string(r) + " is not " + expected);
  };
  for (size_t r = 0; r < rows; ++r) {
    p[r].temperature = temperature[r];
    p[r].top_k = top_k[r];
    p[r].top_p = top_p[r];
    p[r].u = uniform[r];
    if (!(std::isfinite(p[r].temperature) || p[r].temperature < 0))
      throw bad("temperature", r, p[r].temperature, "finite (>= 0, or < 0 for a row that is not sampled)");
    if (p[r].temperature < 0) continue;
    if (p[r].top_k < 0) throw bad("topK", r, p[r].top_k, "a non-negative integer");
    if (!(p[r].top_p > 0 && p[r].top_p <= 1)) throw bad("topP", r, p[r].top_p, "in (0, 1]");
    if (!(p[r].u >= 0 && p[r].u < 1)) throw bad("uniform", r, p[r].u, "in [0, 1)");
  }
  return p;
}

// new DecoderHandle(layer, batch, maxPositions, wte, wpe | null, lnw, lnb | null, headW)
DecoderHandle::DecoderHandle(const Napi::CallbackInfo& info) : Napi::ObjectWrap<DecoderHandle>(info) {
  Napi::Env env = info.Env();
  auto data = env.GetInstanceData<AddonData>();
  if (!info[0].IsObject() || !info[0].As<Napi::Object>().InstanceOf(data->layer_ctor.Value()))
    throw Napi::TypeError::New(env, "decoder: expected the model's layer stack");
  stack_ = LayerHandle::Unwrap(info[0].As<Napi::Object>())->Live("decoder");
  if (!info[1].IsNumber() || !info[2].IsNumber()) throw Napi::TypeError::New(env, "decoder: expected batch and maxPositions numbers");
  const int B = info[1].As<Napi::Number>().Int32Value(), maxPos = info[2].As<Napi::Number>().Int32Value();
  const Device dev = stack_->backend().device();
  wte_ = table_on(info[3], "wte", dev);
  wpe_ = optional(info[4], "wpe", dev);
  lnw_ = table_on(info[5], "ln_f.weight", dev);
  lnb_ = optional(info[6], "ln_f.bias", dev);
  head_ = table_on(info[7], "head weight", dev);
  if (B < 1 || B > 1 << 16) throw Napi::RangeError::New(env, "batch: expected an integer in [1, 65536]");
  // The step reads these as float32 tables of the stack's width: check before any row is read.
  const int64_t d = stack_->config().d;
  auto table = [&](const std::shared_ptr<Tensor>& t, const char* what, bool matrix) {
    if (!t) return;
    const bool ok = t->dtype == DType::F32 && (matrix ? t->shape.size() == 2 && t->shape[1] == d && t->shape[0] >= 1
                                                       : t->shape.size() == 1 && t->shape[0] == d);
    if (!ok)
      throw Napi::RangeError::New(env, std::string(what) + ": expected a float32 tensor of shape " +
                                           (matrix ? "[rows, " + std::to_string(d) + "]" : "[" + std::to_string(d) + "]") +
                                           ", got " + t->shape_string());
  };
  table(wte_, "wte", true);
  table(wpe_, "wpe", true);
  table(lnw_, "ln_f.weight", false);
  table(lnb_, "ln_f.bias", false);
  table(head_, "head weight", true);
  try {
    state_ = std::make_shared<DecodeState>(*stack_, B, maxPos);
    inflight_.assign(B, 0);
  } catch (const Error& e) {
    throw Napi::RangeError::New(env, e.what());
  }
}

Napi::Value DecoderHandle::Position(const Napi::CallbackInfo& info) {
  return Napi::Number::New(info.Env(), static_cast<double>(state_->position(0)));
}

int DecoderHandle::SlotArg(const Napi::CallbackInfo& info, size_t i) {
  if (!info[i].IsNumber()) throw Napi::TypeError::New(info.Env(), "slot: expected an integer");
  int s = info[i].As<Napi::Number>().Int32Value();
  if (s < 0 || s >= state_->slots())
    throw Napi::RangeError::New(info.Env(), "slot: expected an index in [0, " + std::to_string(state_->slots()) + "), got " + std::to_string(s));
  return s;
}

Napi::Value DecoderHandle::PositionOf(const Napi::CallbackInfo& info) {
  return Napi::Number::New(info.Env(), static_cast<double>(state_->position(SlotArg(info, 0))));
}

void DecoderHandle::Reset(const Napi::CallbackInfo& info) {
  const int s = SlotArg(info, 0);
  if (inflight_[s])
    throw Napi::Error::New(info.Env(), "decoder: slot " + std::to_string(s) + " is in a running step; await it before resetting the slot");
  state_->reset(s);
}

// step(tokens: Int32Array, slots?: Int32Array, sampling?, serial?: boolean) -> Promise<Float32Array [S * V]>:
// one token for each listed slot (all slots, in order, when `slots` is omitted), each at its own position. With
// `sampling` (see sampling_arg) the step also samples each row's next token where it computed the logits,
// off the event loop, and resolves with {logits, tokens: Int32Array [S], logprobs: Float64Array [S]}.
Napi::Value DecoderHandle::Step(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (!info[0].IsTypedArray() || info[0].As<Napi::TypedArray>().TypedArrayType() != napi_int32_array)
    throw Napi::TypeError::New(env, "tokens: expected an Int32Array");
  auto ta = info[0].As<Napi::Int32Array>();
  const int S = static_cast<int>(ta.ElementLength());
  std::vector<int32_t> tokens(ta.Data(), ta.Data() + S);
  std::vector<int> slots(S);
  if (info.Length() > 1 && !info[1].IsUndefined()) {
    if (!info[1].IsTypedArray() || info[1].As<Napi::TypedArray>().TypedArrayType() != napi_int32_array)
      throw Napi::TypeError::New(env, "slots: expected an Int32Array");
    auto sa = info[1].As<Napi::Int32Array>();
    if (static_cast<int>(sa.ElementLength()) != S)
      throw Napi::RangeError::New(env, "slots: expected one slot per token (" + std::to_string(S) + "), got " + std::to_string(sa.ElementLength()));
    std::vector<char> seen(state_->slots(), 0);
    for (int r = 0; r < S; ++r) {
      const int s = sa[r];
      if (s < 0 || s >= state_->slots() || seen[s])
        throw Napi::RangeError::New(env, "slots: expected distinct indices in [0, " + std::to_string(state_->slots()) + ")");
      seen[s] = 1;
      slots[r] = s;
    }
  } else {
    if (S != state_->slots())
      throw Napi::RangeError::New(env, "tokens: expected " + std::to_string(state_->slots()) + " tokens (one per sequence), got " + std::to_string(S));
    for (int r = 0; r < S; ++r) slots[r] = r;
  }
  if (S == 0) throw Napi::RangeError::New(env, "tokens: expected at least one token");
  for (int r = 0; r < S; ++r)
    if (inflight_[slots[r]])
      throw Napi::Error::New(env, "decoder: slot " + std::to_string(slots[r]) +
                                      " is already in a running step; await it first (overlapping steps need disjoint slots)");
  bool own_thread_arg = false;
  if (info.Length() > 3 && !info[3].IsUndefined()) {
    if (!info[3].IsBoolean()) throw Napi::TypeError::New(env, "serial: expected a boolean");
    own_thread_arg = info[3].As<Napi::Boolean>().Value();
  }
  std::vector<SampleParams> sample;
  const bool sampling = info.Length() > 2 && !info[2].IsUndefined() && !info[2].IsNull();
  if (sampling) sample = sampling_arg(info[2], static_cast<size_t>(S));
  const int d = static_cast<int>(wte_->shape[1]), V = static_cast<int>(head_->shape[0]);
  const int vocab = static_cast<int>(wte_->shape[0]);
  // Checked here, not in the kernels: a GPU lookup of a bad token would read out of bounds, not throw.
  for (int r = 0; r < S; ++r)
    if (tokens[r] < 0 || tokens[r] >= vocab)
      throw Napi::RangeError::New(env, "tokens: value " + std::to_string(tokens[r]) + " at index " + std::to_string(r) +
                                           " is outside the vocabulary [0, " + std::to_string(vocab) + ")");
  std::vector<int64_t> pos(S);
  for (int r = 0; r < S; ++r) {
    pos[r] = state_->position(slots[r]);
    if (wpe_ && pos[r] >= wpe_->shape[0])
      throw Napi::RangeError::New(env, "generate: position " + std::to_string(pos[r]) + " is past the model's maxLen " +
                                           std::to_string(wpe_->shape[0]) + " (learned position embeddings end there)");
  }
  auto logits = std::make_shared<std::vector<float>>(static_cast<size_t>(S) * V);
  auto sampled = std::make_shared<std::vector<Sampled>>(sampling ? S : 0);
  auto state = state_;
  auto stack = stack_;
  auto wte = wte_, wpe = wpe_, lnw = lnw_, lnb = lnb_, head = head_;
  for (int r = 0; r < S; ++r) inflight_[slots[r]] = 1;
  // A step submitted while another is in flight will run beside it: each then keeps to its own thread
  // rather than both splitting across the pool, where each would wait at every barrier for a thread the
  // other (or this process's event loop) holds. The first of a pair started alone and may use the pool.
  // `serial` asks for that from the start: a caller that keeps several steps in flight knows that the one
  // it submits while none happens to be running will soon have company (at 64 clients of the serve bench,
  // such steps splitting across the pool cost about a quarter of the server's CPU per request).
  const bool serial = steps_++ > 0 || own_thread_arg;
  auto device_turn = device_turn_;
  auto self = std::make_shared<Napi::ObjectReference>(Napi::Persistent(Value()));
  return PromiseWorker::Run(
      env, "rt:decode",
      [=] {
        // Everything through the stack's backend, so a CUDA model decodes on the GPU and only the logits
        // come back. The position embedding is a second lookup (positions as indices into wpe), added.
        const bool host = stack->backend().device() == Device::CPU;
        std::unique_lock<std::mutex> turn(*device_turn, std::defer_lock);
        if (!host) turn.lock();
        std::optional<SerialScope> own_thread;
        if (serial && host) own_thread.emplace();
        Backend& be = stack->backend();
        const size_t Sd = static_cast<size_t>(S) * d;
        DeviceBuffer x(be, Sd), y(be, Sd), out(be, static_cast<size_t>(S) * V);
        be.embedding_forward(tokens.data(), wte->f32(), nullptr, x.get(), S, 1, d, vocab, 0.0f, 0, 0);
        if (wpe) {
          std::vector<int32_t> at(pos.begin(), pos.end());
          DeviceBuffer pe(be, Sd);
          be.embedding_forward(at.data(), wpe->f32(), nullptr, pe.get(), S, 1, d, static_cast<int>(wpe->shape[0]), 0.0f, 0, 0);
          be.acc2d(x.get(), d, 1.0f, pe.get(), d, S, d);
        }
        state->step(slots.data(), S, x.get(), y.get(), own_thread.has_value());
        // On the host in chunks that the CPU head computes row by row (the same bits for a sequence whatever
        // the batch; see cpu::head_logits).
        const int chunk = host ? cpu::kLinearRowsMax : S;
        for (int r0 = 0; r0 < S; r0 += chunk) {
          const int n = std::min(chunk, S - r0);
          be.head_logits(y.get() + static_cast<size_t>(r0) * d, lnw->f32(), lnb ? lnb->f32() : nullptr, head->f32(), n, 1, d, V,
                         1, out.get() + static_cast<size_t>(r0) * V, false);
        }
        be.download(logits->data(), out.get(), static_cast<size_t>(S) * V);
        if (sampling) sample_rows(logits->data(), S, V, sample.data(), sampled->data());
      },
      [logits, sampled, sampling](Napi::Env e) -> Napi::Value {
        auto arr = Napi::Float32Array::New(e, logits->size());
        std::copy(logits->begin(), logits->end(), arr.Data());
        if (!sampling) return arr;
        const size_t n = sampled->size();
        auto tokens = Napi::Int32Array::New(e, n);
        auto logprobs = Napi::Float64Array::New(e, n);
        for (size_t r = 0; r < n; ++r) {
          tokens[r] = (*sampled)[r].token;
          logprobs[r] = (*sampled)[r].logprob;
        }
        Napi::Object o = Napi::Object::New(e);
        o.Set("logits", arr);
        o.Set("tokens", tokens);
        o.Set("logprobs", logprobs);
        return o;
      },
      [this, self, slots] {
        for (int s : slots) inflight_[s] = 0;
        --steps_;
        self->Reset();
      });
}

}  // namespace rt::addon
