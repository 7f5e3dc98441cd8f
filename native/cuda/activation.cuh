// The activations as device functors (activation.cu's elementwise kernels, block_fused.cu's epilogues), as
// cpu/activation.cc: the same special cases (gelu(-inf) = 0, not NaN; NaN propagates through relu).
// CUDA's normcdff is accurate in the negative tail, where 0.5 * (1 + erf(x / sqrt 2)) would cancel.
#pragma once

namespace rt::cuda {

struct Gelu {
  __device__ float operator()(float x) const {
    const float cdf = normcdff(x);
    return cdf == 0.0f ? 0.0f : x * cdf;
  }
};
struct GeluGrad {
  __device__ float operator()(float x, float g) const {
    const float cdf = normcdff(x);
    const float pdf = expf(-0.5f * x * x) * 0.398942280401432678f;
    return g * (pdf == 0.0f ? cdf : cdf + x * pdf);
  }
};
// Phi's tail and the density for the bf16 mode's activations: Abramowitz & Stegun's formula 26.2.17, Phi(-|x|) =
// phi(x) t P(t), t = 1 / (1 + 0.2316419 |x|), P of degree 5 (absolute error at most 7.5e-8: four orders of magnitude
// below the bf16 rounding of the activation's output, which is what the next product reads), with the density
// phi(x) = 2^(x^2 (-log2(e) / 2) - log2(sqrt(2 pi))) shared by both: 11 instructions, where normcdff takes ~75 (with
// it the char config's activation passes were bound by arithmetic, not memory). The fp32 mode keeps normcdff (a few
// ulp, relative, in the tail too). Emulated in float32 against erfc on [-14, 14] (session 26): Phi within 2.5e-7,
// GELU within 3.4e-7 and its gradient within 2.9e-7, each a little inside 7.1.26's form that it replaces (2.9e-7,
// 4.2e-7, 3.1e-7), which took 2 and 3 instructions more a value (|x| / sqrt 2, the density's product apart).
struct TailPdf {
  float q, pdf;  // Phi(-|x|), phi(x)
};
// 1 / d for d >= 1 by the reciprocal unit alone: __fdividef's division also tests d for a denormal and scales it
// (four instructions more a value, in the products' epilogues too), which d >= 1 never is, so the same bits.
__device__ __forceinline__ float rcp_ge1(float d) {
  float r;
  asm("rcp.approx.ftz.f32 %0, %1;\n" : "=f"(r) : "f"(d));
  return r;
}
// 2^a by the unit, flushed to 0 where it is below 2^-126 rather than brought out as a denormal, which costs
// exp2f/__expf three instructions a value; in phi_fast that is |x| > 13.2, where Phi's tail and the density are then 0
// rather than below 1e-38.
__device__ __forceinline__ float exp2_ftz(float a) {
  float r;
  asm("ex2.approx.ftz.f32 %0, %1;\n" : "=f"(r) : "f"(a));
  return r;
}
__device__ __forceinline__ TailPdf phi_fast(float x) {
  const float t = rcp_ge1(fmaf(0.2316419f, fabsf(x), 1.0f));
  const float pdf = exp2_ftz(fmaf(x * x, -0.721347520444481703f, -1.32574806473615918f));
  const float p = fmaf(t, fmaf(t, fmaf(t, fmaf(t, 1.330274429f, -1.821255978f), 1.781477937f), -0.356563782f), 0.319381530f);
  return {(t * pdf) * p, pdf};
}
// |x| where it multiplies the tail or the density, taken at most 14: both are 0 from |x| > 13.2 (exp2_ftz), so for
// finite x the same values, and x = +-inf gives 0 rather than inf * 0.
__device__ __forceinline__ float abs_to_14(float x) { return fminf(fabsf(x), 14.0f); }
// x Phi(x) as relu(x) - |x| Phi(-|x|): one fused multiply-add, with neither Phi(x)'s select by the sign nor a test
// for x = -inf; gelu(-inf) = 0 and gelu(inf) = inf as before, NaN propagates through the tail.
// neg_abs: -abs_to_14(x), which GeluFast works out before phi_fast: in that order its PTX is the same as before
// GeluBothFast shared these two.
__device__ __forceinline__ float gelu_of(float x, float neg_abs, float q) { return fmaf(neg_abs, q, fmaxf(x, 0.0f)); }
// Phi(x) + x phi(x) as s = Phi(-|x|) - |x| phi(x) where x < 0, else 1 - s: one select, where Phi(x) took one and the
// density's test for x = +-inf another.
__device__ __forceinline__ float dgelu_of(float x, const TailPdf& p) {
  const float s = fmaf(-abs_to_14(x), p.pdf, p.q);
  return x < 0.0f ? s : 1.0f - s;
}
struct GeluFast {
  __device__ float operator()(float x) const {
    const float na = -abs_to_14(x);
    return gelu_of(x, na, phi_fast(x).q);
  }
};
struct GeluGradFast {
  __device__ float operator()(float x, float g) const { return g * dgelu_of(x, phi_fast(x)); }
};
// GELU and its derivative from one phi_fast, for the bf16 mode's c_fc when the layer keeps GELU'(f) rather than f
// (RT_CUDA_KEEP_DGELU): .x is GeluFast's value, .y GeluGradFast's at g = 1 (the same operations, so the same bits).
struct GeluBothFast {
  __device__ float2 operator()(float x) const {
    const TailPdf p = phi_fast(x);
    return make_float2(gelu_of(x, -abs_to_14(x), p.q), dgelu_of(x, p));
  }
};
// The gradient at GELU's input from GELU'(f) as kept (x) and the gradient at its output (g).
struct MulGrad {
  __device__ float operator()(float x, float g) const { return x * g; }
};
struct Relu {
  __device__ float operator()(float x) const { return x < 0.0f ? 0.0f : x; }
};
struct ReluGrad {
  __device__ float operator()(float x, float g) const { return x > 0.0f ? g : 0.0f; }
};

}  // namespace rt::cuda
