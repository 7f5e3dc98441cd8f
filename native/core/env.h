// The environment's on/off switches (RT_CUDA_GRAPH=0, RT_CUDA_SYNC=1, ...), read the same way everywhere.
#pragma once
#include <cstdlib>
#include <cstring>

namespace rt {

// "0" turns a switch off, any other value turns it on; unset or empty leaves it at `otherwise`. Callers
// keep the answer in a function-local static: each switch is read once per process.
inline bool env_switch(const char* name, bool otherwise) {
  const char* e = std::getenv(name);
  if (!e || !*e) return otherwise;
  return std::strcmp(e, "0") != 0;
}

// A non-negative integer setting; unset, empty or not a number leaves it at `otherwise`.
inline int env_int(const char* name, int otherwise) {
  const char* e = std::getenv(name);
  if (!e || !*e) return otherwise;
  char* end = nullptr;
  const long v = std::strtol(e, &end, 10);
  return *end || v < 0 || v > 1000000000L ? otherwise : static_cast<int>(v);
}

}  // namespace rt
