#pragma once
#include <napi.h>

namespace rt::addon {
// Registers embeddingForward, embeddingBackward, headXent, xentResult, headLogits and adamw on `exports`.
void InitOps(Napi::Env env, Napi::Object exports);
}  // namespace rt::addon
