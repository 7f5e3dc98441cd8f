// Shared test helpers: a seeded PRNG, random inputs and weights, and the error measure.

import { type Params, type ReferenceConfig, parameterShapes } from './reference/index.js'

/** Small, fast, seeded PRNG (mulberry32) with a Box-Muller normal. Deterministic across runs. */
export class Rng {
  private s: number
  private spare: number | null = null
  constructor(seed: number) {
    this.s = (seed ^ 0x9e3779b9) >>> 0
    for (let i = 0; i < 4; i++) this.uniform() // decorrelate nearby seeds
  }
  /** Uniform in [0, 1). */
  uniform(): number {
    this.s = (this.s + 0x6d2b79f5) >>> 0
    let t = this.s
    t = Math.imul(t ^ (t >>> 15), t | 1)
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61)
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296
  }
  /** Uniform in [lo, hi). */
  range(lo: number, hi: number): number {
    return lo + (hi - lo) * this.uniform()
  }
  /** Integer in [0, n). */
  int(n: number): number {
    return Math.floor(this.uniform() * n)
  }
  normal(): number {
    if (this.spare !== null) {
      const v = this.spare
      this.spare = null
      return v
    }
    let u = 0
    while (u === 0) u = this.uniform()
    const v = this.uniform()
    const r = Math.sqrt(-2 * Math.log(u))
    this.spare = r * Math.sin(2 * Math.PI * v)
    return r * Math.cos(2 * Math.PI * v)
  }
}

/**
 * n normal values with standard deviation std and mean `mean`, rounded to float32 so that the native
 * layer (float32) and the float64 reference see exactly the same numbers.
 */
export function randn(rng: Rng, n: number, std = 1, mean = 0): Float64Array {
  const r = new Float64Array(n)
  for (let i = 0; i < n; i++) r[i] = Math.fround(mean + std * rng.normal())
  return r
}

/**
 * Random weights that make a test sensitive (far from the tiny training init): matrices N(0, 0.3^2),
 * LayerNorm weights uniform in 1 +- 0.2, biases (LayerNorm and Linear) N(0, 0.1^2). alpha[l] is layer
 * l's raw a (default 0.5). All values float32-representable. matrixStd overrides 0.3 (wide layers use
 * 0.3 * sqrt(8 / d) so that pre-activations keep the size they have at d = 8).
 */
export function randomParams(cfg: ReferenceConfig, rng: Rng, alpha: number[] = [], matrixStd = 0.3): Params {
  const p: Params = {}
  for (const { name, shape } of parameterShapes(cfg)) {
    const n = shape.reduce((a, b) => a * b, 1)
    let v: Float64Array
    if (name.endsWith('.alpha')) {
      const l = Number(/transformer\.h\.(\d+)\./.exec(name)?.[1] ?? 0)
      v = Float64Array.of(Math.fround(alpha[l] ?? 0.5))
    } else if (/ln_\d\.weight$/.test(name)) {
      v = new Float64Array(n)
      for (let i = 0; i < n; i++) v[i] = Math.fround(1 + rng.range(-0.2, 0.2))
    } else if (name.endsWith('.bias')) {
      v = randn(rng, n, 0.1)
    } else {
      v = randn(rng, n, matrixStd)
    }
    p[name] = v
  }
  return p
}

export function toFloat32Record(p: Params, only?: Iterable<string>): Record<string, Float32Array> {
  const r: Record<string, Float32Array> = {}
  for (const name of only ?? Object.keys(p)) {
    const v = p[name]
    if (v === undefined) throw new Error(`toFloat32Record: no ${name}`)
    r[name] = Float32Array.from(v)
  }
  return r
}

export function toFloat64Record(p: Record<string, Float32Array>): Params {
  const r: Params = {}
  for (const [name, v] of Object.entries(p)) r[name] = Float64Array.from(v)
  return r
}

/**
 * The error measure of every native-vs-reference comparison, per tensor:
 *
 *     relErr(native, ref) = max_i |native_i - ref_i| / max(max_i |ref_i|, 1e-6)
 *
 * (the largest absolute deviation, relative to the tensor's largest reference magnitude). NaN or a
 * size mismatch gives Infinity.
 */
export function relErr(native: ArrayLike<number>, ref: ArrayLike<number>): number {
  if (native.length !== ref.length) return Infinity
  let maxDiff = 0
  let maxRef = 0
  for (let i = 0; i < ref.length; i++) {
    const diff = Math.abs(native[i] - ref[i])
    if (!(diff <= maxDiff)) maxDiff = Number.isNaN(diff) ? Infinity : diff
    maxRef = Math.max(maxRef, Math.abs(ref[i]))
  }
  return maxDiff / Math.max(maxRef, 1e-6)
}

/** sum_i a_i b_i in float64. */
export function dot(a: ArrayLike<number>, b: ArrayLike<number>): number {
  let s = 0
  for (let i = 0; i < a.length; i++) s += a[i] * b[i]
  return s
}

/** Bitwise equality of two float32 arrays (NaN payloads and -0 included). */
export function sameBits(a: Float32Array, b: Float32Array): boolean {
  if (a.length !== b.length) return false
  const ua = new Uint32Array(a.buffer, a.byteOffset, a.length)
  const ub = new Uint32Array(b.buffer, b.byteOffset, b.length)
  for (let i = 0; i < ua.length; i++) if (ua[i] !== ub[i]) return false
  return true
}

/** Runs fn (sync or async) and returns the Error it throws or rejects with; fails if it succeeds. */
export async function caught(fn: () => unknown): Promise<Error> {
  try {
    await fn()
  } catch (e) {
    if (e instanceof Error) return e
    throw new Error(`threw a non-Error: ${String(e)}`)
  }
  throw new Error('expected an error, but the call succeeded')
}

/** Number of elements of a shape. */
export function numel(shape: readonly number[]): number {
  return shape.reduce((a, b) => a * b, 1)
}
