// erf in float64, accurate to a few ulp (checked against mpmath values in test/layer.test.ts).
//
// |x| < 3:  erf(x) = 2/sqrt(pi) * exp(-x^2) * sum_{n>=0} 2^n x^(2n+1) / (1*3*5*...*(2n+1))
//           (all terms positive, so no cancellation; converges for every x).
// |x| >= 3: erf(x) = 1 - erfc(x), erfc(x) = exp(-x^2)/sqrt(pi) / (x + (1/2)/(x + 1/(x + (3/2)/(x + ...))))
//           (Laplace continued fraction, evaluated bottom-up with a fixed depth).

const TWO_OVER_SQRT_PI = 1.1283791670955126 // 2/sqrt(pi)
const ONE_OVER_SQRT_PI = 0.5641895835477563 // 1/sqrt(pi)

function erfcContinuedFraction(x: number): number {
  // x >= 3
  let t = x
  for (let k = 160; k >= 1; k--) t = x + k / 2 / t
  return (Math.exp(-x * x) * ONE_OVER_SQRT_PI) / t
}

export function erf(x: number): number {
  if (Number.isNaN(x)) return NaN
  const ax = Math.abs(x)
  let r: number
  if (ax < 3) {
    const x2 = ax * ax
    let term = ax
    let sum = ax
    for (let n = 1; n < 500; n++) {
      term *= (2 * x2) / (2 * n + 1)
      sum += term
      if (term <= sum * 1e-17) break
    }
    r = TWO_OVER_SQRT_PI * Math.exp(-x2) * sum
  } else if (ax < 6.5) {
    r = 1 - erfcContinuedFraction(ax)
  } else {
    r = 1 // erfc(6.5) < 1e-19
  }
  return x < 0 ? -r : r
}

const INV_SQRT2 = 0.7071067811865476
const INV_SQRT_2PI = 0.3989422804014327

/** Exact gelu: 0.5 * x * (1 + erf(x / sqrt 2)). */
export function gelu(x: number): number {
  return 0.5 * x * (1 + erf(x * INV_SQRT2))
}

/** d gelu / dx = Phi(x) + x * phi(x). */
export function geluGrad(x: number): number {
  return 0.5 * (1 + erf(x * INV_SQRT2)) + x * INV_SQRT_2PI * Math.exp(-0.5 * x * x)
}
