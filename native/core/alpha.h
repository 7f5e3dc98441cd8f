// The recurrence's alpha as it is used (DESIGN.md section 1): clamp(a, 0, 1) of the stored parameter, whose
// derivative passes the gradient inside [0, 1] and stops it outside. For the host and the device alike.
#pragma once
#include <cmath>

#include "core/hd.h"

namespace rt {

// fmaxf first: a NaN parameter gives 0, as std::min(1, std::max(0, a)) did.
RT_HD inline float alpha_used(float a) { return fminf(1.0f, fmaxf(0.0f, a)); }
RT_HD inline bool alpha_passes_grad(float a) { return a >= 0.0f && a <= 1.0f; }

}  // namespace rt
