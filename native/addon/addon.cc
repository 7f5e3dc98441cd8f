// Module entry: registers the handle classes and a few process-wide functions.
#include <chrono>
#include <string>
#include <vector>

#include "addon/dist_handle.h"
#include "addon/handles.h"
#include "addon/ops.h"
#include "core/error.h"
#include "core/thread_pool.h"
#include "cpu/kernels.h"
#include "layer/backend.h"

namespace rt::addon {
namespace {

Napi::Value Info(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  Napi::Object o = Napi::Object::New(env);
  o.Set("gemm", cpu::gemm_backend());
  o.Set("threads", num_threads());
  o.Set("devices", Napi::Array::New(env, 0));
  return o;
}

Napi::Value AllocatedBytes(const Napi::CallbackInfo& info) {
  return Napi::Number::New(info.Env(), static_cast<double>(allocated_bytes()));
}

// Seconds per call of the GEMM the layer uses (C = A * B, row-major, M x K times K x N), for benchmarks
// that report our kernels as a fraction of it. Blocking: a benchmark helper, not an API.
Napi::Value BenchSgemm(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  auto arg = [&](int i, const char* name) {
    if (!info[i].IsNumber()) throw Napi::TypeError::New(env, std::string(name) + ": expected a positive integer");
    int v = info[i].As<Napi::Number>().Int32Value();
    if (v <= 0 || v > 16384) throw Napi::RangeError::New(env, std::string(name) + ": expected an integer in [1, 16384]");
    return v;
  };
  int M = arg(0, "M"), N = arg(1, "N"), K = arg(2, "K"), reps = arg(3, "reps");
  std::vector<float> A(size_t(M) * K, 0.5f), B(size_t(K) * N, 0.25f), C(size_t(M) * N);
  cpu::gemm(false, false, M, N, K, 1.0f, A.data(), K, B.data(), N, 0.0f, C.data(), N);  // warm-up
  auto t0 = std::chrono::steady_clock::now();
  for (int r = 0; r < reps; ++r) cpu::gemm(false, false, M, N, K, 1.0f, A.data(), K, B.data(), N, 0.0f, C.data(), N);
  std::chrono::duration<double> dt = std::chrono::steady_clock::now() - t0;
  return Napi::Number::New(env, dt.count() / reps);
}

// linearForward(x, W, b | null, res | null, n, in, out, engine) -> Float32Array [n, out]: the CPU linear
// layer y = x W^T + b + res on plain Float32Arrays, through the backend's dispatch ('auto': the few-rows
// kernel where it applies) or the GEMM alone ('gemm'), so that tests can hold both to a float64
// reference. Blocking: a test helper, not an API.
Napi::Value LinearForward(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  auto f32 = [&](int i, const char* name, bool optional) -> const float* {
    if (optional && (info[i].IsNull() || info[i].IsUndefined())) return nullptr;
    if (!info[i].IsTypedArray() || info[i].As<Napi::TypedArray>().TypedArrayType() != napi_float32_array)
      throw Napi::TypeError::New(env, std::string(name) + ": expected a Float32Array");
    return info[i].As<Napi::Float32Array>().Data();
  };
  auto len = [&](int i) { return info[i].As<Napi::Float32Array>().ElementLength(); };
  auto dim = [&](int i, const char* name) {
    if (!info[i].IsNumber()) throw Napi::TypeError::New(env, std::string(name) + ": expected a positive integer");
    const int v = info[i].As<Napi::Number>().Int32Value();
    if (v < 1 || v > 1 << 16) throw Napi::RangeError::New(env, std::string(name) + ": expected an integer in [1, 65536]");
    return v;
  };
  const int n = dim(4, "n"), in = dim(5, "in"), out = dim(6, "out");
  const float *x = f32(0, "x", false), *W = f32(1, "W", false), *b = f32(2, "b", true), *res = f32(3, "res", true);
  const bool gemm_only = info[7].IsString() && info[7].As<Napi::String>().Utf8Value() == "gemm";
  if (len(0) != size_t(n) * in || len(1) != size_t(out) * in || (b && len(2) != size_t(out)) ||
      (res && len(3) != size_t(n) * out))
    throw Napi::RangeError::New(env, "linearForward: expected x [n*in], W [out*in], b [out], res [n*out]");
  auto y = Napi::Float32Array::New(env, size_t(n) * out);
  if (gemm_only) {
    for (int r = 0; r < n; ++r)
      for (int j = 0; j < out; ++j) y[size_t(r) * out + j] = b ? b[j] : 0.0f;
    cpu::gemm(false, true, n, out, in, 1.0f, x, in, W, in, b ? 1.0f : 0.0f, y.Data(), out);
    if (res)
      for (size_t i = 0; i < size_t(n) * out; ++i) y[i] += res[i];
  } else if (res) {
    cpu_backend().linear_forward_res(x, W, b, res, y.Data(), n, in, out);
  } else {
    cpu_backend().linear_forward(x, W, b, y.Data(), n, in, out);
  }
  return y;
}

// sampleRows(logits: Float32Array [rows * vocab], vocab, sampling) -> {tokens: Int32Array, logprobs:
// Float64Array}: the sampler a decoder step runs (core/sample.h), on logits given directly, so that tests
// can hold it to src/generate.ts's sampleToken. Blocking; the work is a few exponentials per logit.
Napi::Value SampleRows(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (!info[0].IsTypedArray() || info[0].As<Napi::TypedArray>().TypedArrayType() != napi_float32_array)
    throw Napi::TypeError::New(env, "logits: expected a Float32Array");
  auto logits = info[0].As<Napi::Float32Array>();
  if (!info[1].IsNumber()) throw Napi::TypeError::New(env, "vocab: expected a positive integer");
  const double vocab = info[1].As<Napi::Number>().DoubleValue();
  if (!(vocab >= 1 && vocab <= (1 << 30) && vocab == static_cast<int>(vocab)))
    throw Napi::RangeError::New(env, "vocab: expected an integer in [1, 2^30]");
  const int V = static_cast<int>(vocab);
  if (logits.ElementLength() % V != 0)
    throw Napi::RangeError::New(env, "logits: expected a whole number of rows of " + std::to_string(V) + " values, got " +
                                         std::to_string(logits.ElementLength()));
  const size_t rows = logits.ElementLength() / V;
  std::vector<SampleParams> p = sampling_arg(info[2], rows);
  std::vector<Sampled> out(rows);
  sample_rows(logits.Data(), static_cast<int>(rows), V, p.data(), out.data());
  auto tokens = Napi::Int32Array::New(env, rows);
  auto logprobs = Napi::Float64Array::New(env, rows);
  for (size_t r = 0; r < rows; ++r) {
    tokens[r] = out[r].token;
    logprobs[r] = out[r].logprob;
  }
  Napi::Object o = Napi::Object::New(env);
  o.Set("tokens", tokens);
  o.Set("logprobs", logprobs);
  return o;
}

}  // namespace

Napi::Object Init(Napi::Env env, Napi::Object exports) {
  auto* data = new AddonData();
  data->tensor_ctor = Napi::Persistent(TensorHandle::Init(env));
  data->layer_ctor = Napi::Persistent(LayerHandle::Init(env));
  data->decoder_ctor = Napi::Persistent(DecoderHandle::Init(env));
  env.SetInstanceData<AddonData>(data);
  exports.Set("TensorHandle", data->tensor_ctor.Value());
  exports.Set("LayerHandle", data->layer_ctor.Value());
  exports.Set("DecoderHandle", data->decoder_ctor.Value());
  exports.Set("info", Napi::Function::New(env, Info));
  exports.Set("allocatedBytes", Napi::Function::New(env, AllocatedBytes));
  exports.Set("benchSgemm", Napi::Function::New(env, BenchSgemm));
  exports.Set("linearForward", Napi::Function::New(env, LinearForward));
  exports.Set("sampleRows", Napi::Function::New(env, SampleRows));
  InitOps(env, exports);
  InitDist(env, exports);
  return exports;
}

}  // namespace rt::addon

static Napi::Object InitModule(Napi::Env env, Napi::Object exports) { return rt::addon::Init(env, exports); }
NODE_API_MODULE(rt, InitModule)
