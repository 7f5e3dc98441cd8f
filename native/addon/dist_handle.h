#pragma once
#include <napi.h>

namespace rt::addon {
// Registers ncclUniqueId(), ncclVersion() and the CommHandle class (data-parallel training) on `exports`.
// In a build without CUDA they exist and throw an Error that says what is needed.
void InitDist(Napi::Env env, Napi::Object exports);
}  // namespace rt::addon
