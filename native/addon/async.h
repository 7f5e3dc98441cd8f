// A Promise-returning async worker: `execute` runs on a libuv thread (native errors become a rejected
// Promise with the native message), `complete` builds the JavaScript result back on the main thread.
// Whatever the lambdas capture (shared_ptr tensors) stays alive until the Promise settles.
#pragma once
#include <napi.h>

#include <functional>
#include <new>
#include <string>

namespace rt::addon {

class PromiseWorker : public Napi::AsyncWorker {
 public:
  using Work = std::function<void()>;
  using Complete = std::function<Napi::Value(Napi::Env)>;

  // Queues the work and returns its Promise. `settle` (optional) runs on the main thread either way.
  static Napi::Promise Run(Napi::Env env, const char* name, Work execute, Complete complete,
                           std::function<void()> settle = nullptr) {
    auto* w = new PromiseWorker(env, name, std::move(execute), std::move(complete), std::move(settle));
    Napi::Promise p = w->deferred_.Promise();
    w->Queue();
    return p;
  }

 protected:
  void Execute() override {
    try {
      execute_();
    } catch (const std::bad_alloc&) {
      SetError("out of memory: the operation's buffers did not fit; use a shorter sequence or a smaller batch");
    } catch (const std::exception& e) {
      SetError(e.what());
    }
  }
  void OnOK() override {
    if (settle_) settle_();
    try {
      deferred_.Resolve(complete_(Env()));
    } catch (const Napi::Error& e) {
      deferred_.Reject(e.Value());
    }
  }
  void OnError(const Napi::Error& e) override {
    if (settle_) settle_();
    deferred_.Reject(Napi::Error::New(Env(), e.Message()).Value());
  }

 private:
  PromiseWorker(Napi::Env env, const char* name, Work execute, Complete complete, std::function<void()> settle)
      : Napi::AsyncWorker(env, name), deferred_(Napi::Promise::Deferred::New(env)), execute_(std::move(execute)),
        complete_(std::move(complete)), settle_(std::move(settle)) {}

  Napi::Promise::Deferred deferred_;
  Work execute_;
  Complete complete_;
  std::function<void()> settle_;
};

}  // namespace rt::addon
