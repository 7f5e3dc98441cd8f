// Errors raised by native code. Kernels and the recurrence throw rt::Error; the addon layer turns it into
// a JavaScript Error, so nothing below addon/ ever aborts the process on bad input.
#pragma once
#include <stdexcept>
#include <string>

namespace rt {

struct Error : std::runtime_error {
  explicit Error(const std::string& msg) : std::runtime_error(msg) {}
};

}  // namespace rt

#define RT_CHECK(cond, msg)                       \
  do {                                            \
    if (!(cond)) throw ::rt::Error(std::string(msg)); \
  } while (0)
