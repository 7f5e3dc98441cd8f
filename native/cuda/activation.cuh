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
// Phi and the density for the bf16 mode's activations: erfc(|x| / sqrt 2) through Abramowitz & Stegun's
// formula 7.1.26 (erf's absolute error at most 1.5e-7, so Phi's at most 7.5e-8: four orders of magnitude below
// the bf16 rounding of the activation's output, which is what the next product reads), with exp(-x^2 / 2)
// shared by both. About 15 instructions where normcdff takes ~75: with it the char config's activation passes
// were bound by arithmetic, not memory. The fp32 mode keeps normcdff (a few ulp, relative, in the tail too).
struct PhiPdf {
  float cdf, pdf;
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
// Abramowitz & Stegun's coefficients halved (exactly: powers of two), so that Phi(-|x|) = t P(t) exp(-x^2 / 2) / 2
// is (t e) P'(t), two products after the polynomial rather than three; and exp(-x^2 / 2) as 2^(x^2 (-log2(e) / 2)),
// one product fewer than -x^2 / 2 then times log2(e). Two instructions of ~20 a value, in the products' GELU
// epilogues too (session 25); the roundings differ from the formula's order by a few ulp, well inside its 7.5e-8.
__device__ __forceinline__ PhiPdf phi_fast(float x) {
  const float z = fabsf(x) * 0.707106781186547524f;
  const float t = rcp_ge1(fmaf(0.3275911f, z, 1.0f));
  const float e = exp2_ftz(x * x * -0.721347520444481703f);
  const float p =
      fmaf(t, fmaf(t, fmaf(t, fmaf(t, 0.5307027145f, -0.7265760135f), 0.7107068705f), -0.142248368f), 0.127414796f);
  const float q = (t * e) * p;  // Phi(-|x|)
  return {x < 0.0f ? q : 1.0f - q, e * 0.398942280401432678f};
}
struct GeluFast {
  __device__ float operator()(float x) const {
    const float cdf = phi_fast(x).cdf;
    return cdf == 0.0f ? 0.0f : x * cdf;
  }
};
struct GeluGradFast {
  __device__ float operator()(float x, float g) const {
    const PhiPdf p = phi_fast(x);
    return g * (p.pdf == 0.0f ? p.cdf : p.cdf + x * p.pdf);
  }
};
struct Relu {
  __device__ float operator()(float x) const { return x < 0.0f ? 0.0f : x; }
};
struct ReluGrad {
  __device__ float operator()(float x, float g) const { return x > 0.0f ? g : 0.0f; }
};

}  // namespace rt::cuda
