// The model's non-layer ops, one Node-API call each, each running off the event loop: embedding,
// the head with its fused softmax cross-entropy, and the optimizer step (clipping included).
#include <cmath>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "addon/async.h"
#include "addon/handles.h"
#include "addon/ops.h"
#include "core/error.h"
#include "cpu/kernels.h"
#include "layer/backend.h"

namespace rt::addon {
namespace {

using TensorPtr = std::shared_ptr<Tensor>;

void expect(Napi::Env env, bool ok, const std::string& msg) {
  if (!ok) throw Napi::RangeError::New(env, msg);
}

TensorPtr f32(const Napi::Value& v, const char* what, size_t rank) {
  auto t = TensorHandle::GetAny(v, what);
  if (t->dtype != DType::F32 || t->shape.size() != rank)
    throw Napi::TypeError::New(v.Env(), std::string(what) + ": expected a float32 tensor of rank " + std::to_string(rank) +
                                            ", got " + dtype_name(t->dtype) + " " + t->shape_string());
  return t;
}

TensorPtr i32(const Napi::Value& v, const char* what, size_t rank) {
  auto t = TensorHandle::Get(v, what);
  if (t->dtype != DType::I32 || t->shape.size() != rank)
    throw Napi::TypeError::New(v.Env(), std::string(what) + ": expected an int32 tensor of rank " + std::to_string(rank) +
                                            ", got " + dtype_name(t->dtype) + " " + t->shape_string());
  return t;
}

TensorPtr optional_f32(const Napi::Value& v, const char* what, size_t rank) {
  return v.IsNull() || v.IsUndefined() ? nullptr : f32(v, what, rank);
}

double number(const Napi::Value& v, const char* what) {
  if (!v.IsNumber()) throw Napi::TypeError::New(v.Env(), std::string(what) + ": expected a number");
  return v.As<Napi::Number>().DoubleValue();
}

float* ptr(const TensorPtr& t) { return t ? t->f32() : nullptr; }

// Numbers that become C++ integers or rates: checked here, because a cast of NaN or of a value out of
// range is undefined behaviour, not an error.
float rate(const Napi::Value& v, const char* what) {
  double x = number(v, what);
  if (!(x >= 0 && x < 1)) throw Napi::RangeError::New(v.Env(), std::string(what) + ": expected a number in [0, 1)");
  return static_cast<float>(x);
}

uint64_t seed_of(const Napi::Value& v) {
  double x = number(v, "seed");
  if (!(x >= 0 && x <= 9007199254740991.0) || x != static_cast<double>(static_cast<int64_t>(x)))
    throw Napi::RangeError::New(v.Env(), "seed: expected a non-negative safe integer");
  return static_cast<uint64_t>(x);
}

int integer(const Napi::Value& v, const char* what, double lo, double hi) {
  double x = number(v, what);
  if (!(x >= lo && x <= hi) || x != static_cast<double>(static_cast<int64_t>(x)))
    throw Napi::RangeError::New(v.Env(), std::string(what) + ": expected an integer in [" + std::to_string(static_cast<int64_t>(lo)) +
                                             ", " + std::to_string(static_cast<int64_t>(hi)) + "]");
  return static_cast<int>(x);
}

// A hyper-parameter that the kernels use as a float.
float real(const Napi::Value& v, const char* what) {
  double x = number(v, what);
  if (!(std::fabs(x) <= 3.4e38)) throw Napi::RangeError::New(v.Env(), std::string(what) + ": expected a finite float32 number");
  return static_cast<float>(x);
}

// A LayerNorm weight or bias (or its gradient) of the model width.
void expect_width(Napi::Env env, const TensorPtr& t, int64_t d, const char* what) {
  if (t && (t->shape.size() != 1 || t->shape[0] != d))
    throw Napi::RangeError::New(env, std::string(what) + ": expected shape [" + std::to_string(d) + "], got " + t->shape_string());
}

// Tokens index rows of a table: every one must be in [0, V).
void check_tokens(const Tensor& tok, int64_t V) {
  const int32_t* t = static_cast<const int32_t*>(tok.storage->data);
  const size_t n = tok.numel();
  // A branch-free pass first (it vectorises: the copy config's 264k tokens in ~40 us against ~85), and
  // the search for the first bad one only when there is one. (unsigned: negatives compare as huge.)
  uint32_t bad = 0;
  for (size_t i = 0; i < n; ++i) bad |= static_cast<uint32_t>(static_cast<uint32_t>(t[i]) >= static_cast<uint64_t>(V));
  if (!bad) return;
  for (size_t i = 0; i < n; ++i)
    if (t[i] < 0 || t[i] >= V)
      throw Error("tokens: value " + std::to_string(t[i]) + " at index " + std::to_string(i) + " is outside the vocabulary [0, " +
                  std::to_string(V) + ")");
}

// The backend every float tensor of one call lives on: they must share a device (tokens and targets are
// host tensors whatever the device: JavaScript makes them, and the backend copies them over).
Backend& backend_of(Napi::Env env, std::initializer_list<const TensorPtr*> ts, bool fp32 = false) {
  const Tensor* first = nullptr;
  for (const TensorPtr* t : ts) {
    if (!*t) continue;
    if (!first) first = t->get();
    else if ((*t)->device() != first->device())
      throw Napi::TypeError::New(env, std::string("tensors on different devices ('") + device_name(first->device()) +
                                          "' and '" + device_name((*t)->device()) + "'): move them to one device first");
  }
  if (!first || first->device() == Device::CPU) return cpu_backend();
#ifdef RT_CUDA
  try {
    return cuda_backend(fp32);
  } catch (const Error& e) {
    throw Napi::Error::New(env, e.what());
  }
#else
  (void)fp32;
  throw Napi::Error::New(env, "a tensor is on 'cuda' but this build of the addon has no CUDA backend");
#endif
}

bool flag(const Napi::Value& v) { return !v.IsUndefined() && !v.IsNull() && v.ToBoolean(); }

// The embedding's dropout stream, apart from every (layer, application, site) stream of the layer stack.
constexpr uint64_t kEmbeddingStream = ~uint64_t(0);

// embeddingForward(tokens [B,N] i32, wte [V,d], wpe [maxLen,d] | null, p, seed) -> Promise<Tensor [B,N,d]>
Napi::Value EmbeddingForward(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  auto tok = i32(info[0], "tokens", 2);
  auto wte = f32(info[1], "wte", 2);
  auto wpe = optional_f32(info[2], "wpe", 2);
  float p = rate(info[3], "dropout");
  auto seed = seed_of(info[4]);
  const int B = tok->shape[0], N = tok->shape[1], V = wte->shape[0], d = wte->shape[1];
  expect(env, B >= 1 && N >= 1, "tokens: expected shape [batch >= 1, N >= 1], got " + tok->shape_string());
  if (wpe) {
    expect(env, wpe->shape[1] == d, "wpe: expected width " + std::to_string(d) + ", got " + wpe->shape_string());
    expect(env, N <= wpe->shape[0], "tokens: sequence length " + std::to_string(N) + " exceeds the model's maxLen " +
                                        std::to_string(wpe->shape[0]));
  }
  Backend* be = &backend_of(env, {&wte, &wpe});
  auto out = std::make_shared<TensorPtr>();
  return PromiseWorker::Run(
      env, "rt:embedding",
      [=] {
        check_tokens(*tok, V);
        *out = Tensor::create(DType::F32, {B, N, d}, be->device());
        be->embedding_forward(tok->i32(), wte->f32(), ptr(wpe), (*out)->f32(), B, N, d, V, p, seed, kEmbeddingStream);
        be->end_call();
      },
      [out](Napi::Env e) -> Napi::Value { return TensorHandle::Wrap(e, *out); });
}

// embeddingBackward(tokens, dout [B,N,d], dwte, dwpe | null, p, seed) -> Promise<undefined>
Napi::Value EmbeddingBackward(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  auto tok = i32(info[0], "tokens", 2);
  auto dout = f32(info[1], "dout", 3);
  auto dwte = f32(info[2], "dwte", 2);
  auto dwpe = optional_f32(info[3], "dwpe", 2);
  float p = rate(info[4], "dropout");
  auto seed = seed_of(info[5]);
  const int B = tok->shape[0], N = tok->shape[1], d = dwte->shape[1];
  expect(env, dout->shape[0] == B && dout->shape[1] == N && dout->shape[2] == d,
         "dout: expected shape [" + std::to_string(B) + ", " + std::to_string(N) + ", " + std::to_string(d) + "], got " +
             dout->shape_string());
  if (dwpe) expect(env, dwpe->shape[0] >= N && dwpe->shape[1] == d, "dwpe: shape " + dwpe->shape_string() + " does not fit");
  Backend* be = &backend_of(env, {&dout, &dwte, &dwpe});
  return PromiseWorker::Run(
      env, "rt:embedding-backward",
      [=] {
        check_tokens(*tok, dwte->shape[0]);
        be->embedding_backward(tok->i32(), dout->f32(), dwte->f32(), ptr(dwpe), B, N, d, static_cast<int>(dwte->shape[0]), p,
                               seed, kEmbeddingStream);
        be->end_call();
      },
      [](Napi::Env e) -> Napi::Value { return e.Undefined(); });
}

// headXent(Y [B,N,d], lnw, lnb | null, W [V,d], targets [B,P] i32, ignoreIndex, grads | null, fp32, defer)
//   grads = {dlnw, dlnb | null, dW} -> Promise<{loss, correct, count, dY?}>; with defer, the Promise resolves
//   once the work is queued, with {dY?, pending} instead of the numbers, which xentResult(pending) reads.
using XentRead = std::function<XentResult()>;
// A pending is an External holding a function of one type: the tag tells a head's from an optimizer's (or
// any other External), which the cast below would otherwise take on trust.
constexpr napi_type_tag kXentTag = {0x8f3a6c1e52d04b97ULL, 0xa1c2e3f405162738ULL};
constexpr napi_type_tag kAdamWTag = {0x3d7b9e2a41c65f08ULL, 0xb4d6f8091a2b3c4dULL};

template <typename F>
Napi::External<F> wrap_pending(Napi::Env env, F&& f, const napi_type_tag& tag) {
  auto ext = Napi::External<F>::New(env, new F(std::move(f)), [](Napi::Env, F* p) { delete p; });
  ext.TypeTag(&tag);
  return ext;
}

template <typename F>
F unwrap_pending(const Napi::Value& v, const napi_type_tag& tag, const char* what) {
  if (!v.IsExternal() || !v.As<Napi::External<F>>().CheckTypeTag(&tag))
    throw Napi::TypeError::New(v.Env(), what);
  return *v.As<Napi::External<F>>().Data();
}

// The numbers of a head's or an optimizer step's result, as the JavaScript objects carry them.
void set_numbers(Napi::Object& o, const XentResult& r) {
  o.Set("loss", r.loss);
  o.Set("correct", static_cast<double>(r.correct));
  o.Set("count", static_cast<double>(r.count));
}
void set_numbers(Napi::Object& o, const AdamWResult& r) {
  o.Set("norm", r.norm);
  o.Set("skipped", r.skipped);
}

// xentResult / adamwResult: a deferred call's numbers, read off the event loop (the read waits for the device).
template <typename R>
Napi::Value read_pending(const Napi::CallbackInfo& info, const napi_type_tag& tag, const char* what, const char* name) {
  using Read = std::function<R()>;
  const Read read = unwrap_pending<Read>(info[0], tag, what);
  auto res = std::make_shared<R>();
  return PromiseWorker::Run(
      info.Env(), name, [read, res] { *res = read(); },
      [res](Napi::Env e) -> Napi::Value {
        Napi::Object o = Napi::Object::New(e);
        set_numbers(o, *res);
        return o;
      });
}
Napi::Value HeadXent(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  auto Y = f32(info[0], "y", 3);
  auto lnw = f32(info[1], "ln_f.weight", 1);
  auto lnb = optional_f32(info[2], "ln_f.bias", 1);
  auto W = f32(info[3], "head weight", 2);
  auto tg = i32(info[4], "targets", 2);
  int ignore = integer(info[5], "ignoreIndex", -2147483648.0, 2147483647.0);
  const int B = Y->shape[0], N = Y->shape[1], d = Y->shape[2], V = W->shape[0], P = tg->shape[1];
  expect(env, W->shape[1] == d, "head: weights do not match the model width " + std::to_string(d));
  expect_width(env, lnw, d, "ln_f.weight");
  expect_width(env, lnb, d, "ln_f.bias");
  expect(env, tg->shape[0] == B && P >= 1 && P <= N,
         "targets: expected shape [" + std::to_string(B) + ", P] with 1 <= P <= " + std::to_string(N) + ", got " +
             tg->shape_string());
  TensorPtr dlnw, dlnb, dW;
  bool grad = info[6].IsObject();
  if (grad) {
    Napi::Object g = info[6].As<Napi::Object>();
    dlnw = f32(g.Get("dlnw"), "grads.dlnw", 1);
    dlnb = optional_f32(g.Get("dlnb"), "grads.dlnb", 1);
    dW = f32(g.Get("dW"), "grads.dW", 2);
    expect(env, dW->numel() == W->numel(), "grads.dW: shape does not match the head weight");
    expect_width(env, dlnw, d, "grads.dlnw");
    expect_width(env, dlnb, d, "grads.dlnb");
    expect(env, !dlnb == !lnb, "grads.dlnb: given exactly when ln_f.bias is");
  }
  const bool fp32 = flag(info[7]);
  const bool defer = flag(info[8]);
  Backend* be = &backend_of(env, {&Y, &lnw, &lnb, &W, &dlnw, &dlnb, &dW}, fp32);
  auto res = std::make_shared<XentResult>();
  auto read = std::make_shared<XentRead>();
  auto dY = std::make_shared<TensorPtr>();
  return PromiseWorker::Run(
      env, "rt:head",
      [=] {
        if (grad) *dY = Tensor::create(DType::F32, {B, N, d}, be->device());
        *read = be->head_xent(Y->f32(), lnw->f32(), ptr(lnb), W->f32(), tg->i32(), B, N, d, V, P, ignore,
                              grad ? (*dY)->f32() : nullptr, ptr(dlnw), ptr(dlnb), ptr(dW), fp32);
        if (defer) be->end_call();
        else *res = (*read)();  // (the read waits for the device)
      },
      [res, read, dY, defer](Napi::Env e) -> Napi::Value {
        Napi::Object o = Napi::Object::New(e);
        if (defer) {
          o.Set("pending", wrap_pending(e, std::move(*read), kXentTag));
        } else {
          set_numbers(o, *res);
        }
        if (*dY) o.Set("dY", TensorHandle::Wrap(e, *dY));
        return o;
      });
}

// xentResult(pending) -> Promise<{loss, correct, count}>: the numbers of a deferred headXent, once its work
// (and whatever was queued after it) has run.
Napi::Value XentResultOf(const Napi::CallbackInfo& info) {
  return read_pending<XentResult>(info, kXentTag, "xentResult: expected the `pending` of a deferred headXent",
                                  "rt:head-result");
}

// headLogits(Y, lnw, lnb | null, W, P) -> Promise<Tensor [B,P,V]>
Napi::Value HeadLogits(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  auto Y = f32(info[0], "y", 3);
  auto lnw = f32(info[1], "ln_f.weight", 1);
  auto lnb = optional_f32(info[2], "ln_f.bias", 1);
  auto W = f32(info[3], "head weight", 2);
  const int B = Y->shape[0], N = Y->shape[1], d = Y->shape[2], V = W->shape[0];
  int P = integer(info[4], "positions", 1, N);
  expect(env, W->shape[1] == d, "head: weights do not match the model width");
  expect_width(env, lnw, d, "ln_f.weight");
  expect_width(env, lnb, d, "ln_f.bias");
  expect(env, P >= 1 && P <= N, "positions: expected 1..N, got " + std::to_string(P));
  const bool fp32 = flag(info[5]);
  Backend* be = &backend_of(env, {&Y, &lnw, &lnb, &W}, fp32);
  auto out = std::make_shared<TensorPtr>();
  return PromiseWorker::Run(
      env, "rt:logits",
      [=] {
        *out = Tensor::create(DType::F32, {B, P, V}, be->device());
        be->head_logits(Y->f32(), lnw->f32(), ptr(lnb), W->f32(), B, N, d, V, P, (*out)->f32(), fp32);
        be->end_call();
      },
      [out](Napi::Env e) -> Napi::Value { return TensorHandle::Wrap(e, *out); });
}

// adamw(params[], grads[], m[], v[], decay[], count, {lr, beta1, beta2, eps, weightDecay, maxNorm}, defer)
//   -> Promise<{norm, skipped}>. The global gradient norm is computed first; a non-finite norm skips the
//   update (nothing changes); maxNorm > 0 scales the gradients to at most that norm. `count` is an int32
//   tensor of one element beside the parameters: the steps applied so far, which the step reads for its bias
//   corrections and advances unless it skips. With defer, the Promise resolves once the step is queued, with
//   {pending}, which adamwResult(pending) reads: on a device nothing waits for the step until then.
using AdamWRead = std::function<AdamWResult()>;
Napi::Value AdamW(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  for (int i = 0; i < 5; ++i)
    if (!info[i].IsArray()) throw Napi::TypeError::New(env, "adamw: expected arrays of params, grads, m, v and decay flags");
  Napi::Array ps = info[0].As<Napi::Array>(), gs = info[1].As<Napi::Array>(), ms = info[2].As<Napi::Array>(),
              vs = info[3].As<Napi::Array>(), ds = info[4].As<Napi::Array>();
  const uint32_t n = ps.Length();
  expect(env, gs.Length() == n && ms.Length() == n && vs.Length() == n && ds.Length() == n,
         "adamw: params, grads, m, v and decay must have the same length");
  std::vector<TensorPtr> P(n), G(n), M(n), Vv(n);
  std::vector<char> decay(n);
  for (uint32_t i = 0; i < n; ++i) {
    P[i] = TensorHandle::GetAny(ps.Get(i), "params[i]");
    G[i] = TensorHandle::GetAny(gs.Get(i), "grads[i]");
    M[i] = TensorHandle::GetAny(ms.Get(i), "m[i]");
    Vv[i] = TensorHandle::GetAny(vs.Get(i), "v[i]");
    decay[i] = ds.Get(i).ToBoolean();
    for (const TensorPtr& t : {P[i], G[i], M[i], Vv[i]}) {
      if (t->dtype != DType::F32) throw Napi::TypeError::New(env, "adamw: tensor " + std::to_string(i) + " must be float32");
      if (t->device() != P[0]->device())
        throw Napi::TypeError::New(env, "adamw: tensor " + std::to_string(i) + " is on '" + device_name(t->device()) +
                                            "', the others on '" + device_name(P[0]->device()) + "'");
    }
    const size_t k = P[i]->numel();
    expect(env, G[i]->numel() == k && M[i]->numel() == k && Vv[i]->numel() == k,
           "adamw: tensor " + std::to_string(i) + " has mismatched sizes");
  }
  TensorPtr count = TensorHandle::GetAny(info[5], "count");
  if (count->dtype != DType::I32 || count->numel() != 1)
    throw Napi::TypeError::New(env, "count: expected an int32 tensor of one element, got " + std::string(dtype_name(count->dtype)) +
                                        " " + count->shape_string());
  if (n && count->device() != P[0]->device())
    throw Napi::TypeError::New(env, std::string("count: is on '") + device_name(count->device()) + "', the parameters on '" +
                                        device_name(P[0]->device()) + "'");
  Backend* be = n ? &backend_of(env, {&P[0]}) : &cpu_backend();
  if (!info[6].IsObject()) throw Napi::TypeError::New(env, "adamw: expected hyper-parameters");
  Napi::Object h = info[6].As<Napi::Object>();
  AdamWHyper hp;
  hp.lr = real(h.Get("lr"), "lr");
  hp.beta1 = real(h.Get("beta1"), "beta1");
  hp.beta2 = real(h.Get("beta2"), "beta2");
  hp.eps = real(h.Get("eps"), "eps");
  hp.weight_decay = real(h.Get("weightDecay"), "weightDecay");
  double max_norm = number(h.Get("maxNorm"), "maxNorm");
  const bool defer = flag(info[7]);
  auto res = std::make_shared<AdamWResult>();
  auto read = std::make_shared<AdamWRead>();
  return PromiseWorker::Run(
      env, "rt:adamw",
      [=] {
        std::vector<AdamWTensor> ts;
        ts.reserve(P.size());
        for (size_t i = 0; i < P.size(); ++i)
          ts.push_back({P[i]->f32(), G[i]->f32(), M[i]->f32(), Vv[i]->f32(), P[i]->numel(), decay[i] != 0});
        *read = be->adamw_step(ts, hp, max_norm, count->i32());
        if (defer) be->end_call();
        else *res = (*read)();  // (the read waits for the device)
      },
      [res, read, defer](Napi::Env e) -> Napi::Value {
        Napi::Object o = Napi::Object::New(e);
        if (defer) {
          o.Set("pending", wrap_pending(e, std::move(*read), kAdamWTag));
        } else {
          set_numbers(o, *res);
        }
        return o;
      });
}

// adamwResult(pending) -> Promise<{norm, skipped}>: the numbers of a deferred adamw, once it has run.
Napi::Value AdamWResultOf(const Napi::CallbackInfo& info) {
  return read_pending<AdamWResult>(info, kAdamWTag, "adamwResult: expected the `pending` of a deferred adamw",
                                   "rt:adamw-result");
}

}  // namespace

void InitOps(Napi::Env env, Napi::Object exports) {
  exports.Set("embeddingForward", Napi::Function::New(env, EmbeddingForward));
  exports.Set("embeddingBackward", Napi::Function::New(env, EmbeddingBackward));
  exports.Set("headXent", Napi::Function::New(env, HeadXent));
  exports.Set("xentResult", Napi::Function::New(env, XentResultOf));
  exports.Set("headLogits", Napi::Function::New(env, HeadLogits));
  exports.Set("adamw", Napi::Function::New(env, AdamW));
  exports.Set("adamwResult", Napi::Function::New(env, AdamWResultOf));
}

}  // namespace rt::addon
