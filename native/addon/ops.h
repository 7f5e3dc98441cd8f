#pragma once
#include <napi.h>

namespace rt::addon {
// Registers embeddingForward, embeddingBackward, headXent, xentResult, headLogits, adamw and adamwResult on `exports`.
void InitOps(Napi::Env env, Napi::Object exports);
}  // namespace rt::addon
