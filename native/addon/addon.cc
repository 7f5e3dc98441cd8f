// Module entry: registers the handle classes and a few process-wide functions.
#include <chrono>
#include <vector>

#include "addon/dist_handle.h"
#include "addon/handles.h"
#include "addon/ops.h"
#include "core/error.h"
#include "core/thread_pool.h"
#include "cpu/kernels.h"

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
  InitOps(env, exports);
  InitDist(env, exports);
  return exports;
}

}  // namespace rt::addon

static Napi::Object InitModule(Napi::Env env, Napi::Object exports) { return rt::addon::Init(env, exports); }
NODE_API_MODULE(rt, InitModule)
