// RecurrentLayer (native, float32) against the float64 TypeScript reference of DESIGN.md section 1,
// plus the reference's own self-checks (finite differences), causality, determinism and dropout.
//
// Error measure, per tensor (output y, input gradient dx, every weight gradient, each alpha gradient):
//
//     relErr(native, ref) = max_i |native_i - ref_i| / max(max_i |ref_i|, 1e-6)
//
// and every comparison must satisfy relErr <= 1e-4 (TOL below).
//
// The native API is imported dynamically inside the native describe blocks, so the reference's
// self-checks run (and pass) even when the addon is not built.

import { beforeAll, describe, expect, it } from 'vitest'
import type * as Api from '../src/index.js'
import {
  Rng,
  dot,
  randn,
  randomParams,
  relErr,
  sameBits,
  toFloat32Record,
  toFloat64Record,
} from './helpers.js'
import {
  type Activation,
  type Params,
  type ReferenceConfig,
  type Variant,
  erf,
  gelu,
  geluGrad,
  parameterShapes,
  referenceForward,
  referenceGradients,
} from './reference/index.js'

const TOL = 1e-4

type ApiModule = typeof Api
type LayerConfig = ConstructorParameters<ApiModule['RecurrentLayer']>[0]

function caseName(cfg: ReferenceConfig, N: number, alphas?: number[]): string {
  const v = cfg.window === 0 ? `plain(${cfg.variant})` : cfg.variant
  const a = cfg.variant === 'accumulate' && cfg.window > 0 && alphas ? ` alpha=[${alphas.join(',')}]` : ''
  return (
    `${v} w=${cfg.window} N=${N} d=${cfg.d} heads=${cfg.heads} ${cfg.activation} ` +
    `${cfg.bias ? 'bias' : 'nobias'} layers=${cfg.layers}${a}`
  )
}

// =============================================================================================
// 1. The reference on its own.

describe('reference: erf and gelu', () => {
  // erf values from mpmath at 40 digits.
  const table: [number, number][] = [
    [-4.2, -0.9999999971445058],
    [-3.0, -0.9999779095030014],
    [-2.5, -0.999593047982555],
    [-1.0, -0.8427007929497149],
    [-0.3, -0.3286267594591274],
    [0, 0],
    [1e-9, 1.1283791670955127e-9],
    [0.001, 0.0011283787909692365],
    [0.25, 0.27632639016823696],
    [0.5, 0.5204998778130465],
    [0.9, 0.7969082124228322],
    [1.5, 0.9661051464753108],
    [2.0, 0.9953222650189527],
    [2.75, 0.9998993780778803],
    [2.9999, 0.9999778955735178],
    [3.0001, 0.9999779234241298],
    [3.7, 0.9999998328489421],
    [4.5, 0.9999999998033839],
    [5.5, 0.9999999999999927],
    [6.3, 1.0],
  ]
  it('erf matches mpmath to ~1e-15 relative', () => {
    for (const [x, e] of table) {
      const err = Math.abs(erf(x) - e) / Math.max(Math.abs(e), 1e-300)
      expect(err, `erf(${x})`).toBeLessThan(2e-15)
    }
  })
  it('erf is odd, monotone and continuous across its branch point', () => {
    expect(erf(-1.7)).toBe(-erf(1.7))
    let prev = -1
    for (let x = -7; x <= 7; x += 0.001) {
      const v = erf(x)
      expect(v).toBeGreaterThanOrEqual(prev)
      prev = v
    }
    expect(Math.abs(erf(3 - 1e-12) - erf(3 + 1e-12))).toBeLessThan(1e-15)
  })
  it('gelu derivative matches central differences', () => {
    for (let x = -6; x <= 6; x += 0.37) {
      const h = 1e-5
      const fd = (gelu(x + h) - gelu(x - h)) / (2 * h)
      expect(Math.abs(fd - geluGrad(x))).toBeLessThan(1e-9)
    }
    expect(gelu(1)).toBeCloseTo(0.8413447460685429, 15)
  })
})

describe('reference: hand-checkable recurrences (all matrices zero, so T is the identity)', () => {
  // With every Linear weight and bias zero, T(x) = x. Then forget gives y = x, and accumulate with
  // w = 1, N = 3 gives rows (1+a)x0, (2a+a^2)x0 + x1, (a+a^2)x0 + x2; with w = 2, N = 3 (partial last
  // window, A[:1] added to it): (1+a)x0, (1+a)x1, a x0 + x2.
  const d = 4
  function identityParams(cfg: ReferenceConfig, alpha: number): Params {
    const p = randomParams(cfg, new Rng(5), [alpha])
    for (const [name, v] of Object.entries(p)) if (/attn\.|mlp\./.test(name)) v.fill(0)
    return p
  }
  const x = randn(new Rng(6), 3 * d)
  const row = (r: number): Float64Array => x.slice(r * d, r * d + d)
  const comb = (...terms: [number, Float64Array][]): number[] => {
    const out = new Array<number>(d).fill(0)
    for (const [c, v] of terms) for (let i = 0; i < d; i++) out[i] += c * v[i]
    return out
  }
  const base: ReferenceConfig = { d, heads: 2, layers: 1, window: 1, variant: 'forget', activation: 'gelu', bias: true }
  it('forget is the identity', () => {
    for (const window of [0, 1, 2, 3, 5]) {
      const cfg = { ...base, window }
      const y = referenceForward(cfg, identityParams(cfg, 0.5), x, 1, 3)
      expect(relErr(y, x)).toBeLessThan(1e-15)
    }
  })
  it('accumulate, w = 1', () => {
    const a = 0.5
    const cfg: ReferenceConfig = { ...base, variant: 'accumulate', window: 1 }
    const y = referenceForward(cfg, identityParams(cfg, a), x, 1, 3)
    const want = [
      ...comb([1 + a, row(0)]),
      ...comb([2 * a + a * a, row(0)], [1, row(1)]),
      ...comb([a + a * a, row(0)], [1, row(2)]),
    ]
    expect(relErr(y, want)).toBeLessThan(1e-15)
  })
  it('accumulate, w = 2, partial last window', () => {
    const a = 0.25 // exactly representable in float32, like every parameter randomParams makes
    const cfg: ReferenceConfig = { ...base, variant: 'accumulate', window: 2 }
    const y = referenceForward(cfg, identityParams(cfg, a), x, 1, 3)
    const want = [...comb([1 + a, row(0)]), ...comb([1 + a, row(1)]), ...comb([a, row(0)], [1, row(2)])]
    expect(relErr(y, want)).toBeLessThan(1e-15)
  })
})

describe('reference: structural identities', () => {
  const d = 8
  const B = 2
  const cfgs: ReferenceConfig[] = [
    { d, heads: 2, layers: 1, window: 3, variant: 'forget', activation: 'gelu', bias: true },
    { d, heads: 4, layers: 1, window: 8, variant: 'accumulate', activation: 'relu', bias: false },
  ]
  it('m = 1 (w >= N) gives T(T(X)) for both variants', () => {
    for (const base of cfgs) {
      const N = 5
      const rng = new Rng(11)
      const p = randomParams(base, rng, [0.7])
      const x = randn(rng, B * N * d)
      const plain = { ...base, window: 0 }
      const tt = referenceForward(plain, p, referenceForward(plain, p, x, B, N), B, N)
      for (const window of [5, 8, 100]) {
        const y = referenceForward({ ...base, window }, p, x, B, N)
        expect(relErr(y, tt)).toBe(0)
      }
    }
  })
  it('accumulate with alpha clamped to 0 is forget; alpha is clamped at 1', () => {
    const N = 11
    const base: ReferenceConfig = { d, heads: 2, layers: 2, window: 3, variant: 'forget', activation: 'gelu', bias: true }
    const rng = new Rng(12)
    const p = randomParams(base, rng)
    const x = randn(rng, B * N * d)
    const withAlpha = (a: number[]): Params => {
      const q: Params = { ...p }
      a.forEach((v, l) => {
        q[`transformer.h.${l}.alpha`] = Float64Array.of(v)
      })
      return q
    }
    const yf = referenceForward(base, p, x, B, N)
    const acc = { ...base, variant: 'accumulate' as Variant }
    expect(relErr(referenceForward(acc, withAlpha([-0.2, -3]), x, B, N), yf)).toBe(0)
    expect(relErr(referenceForward(acc, withAlpha([0, 0]), x, B, N), yf)).toBe(0)
    const y1 = referenceForward(acc, withAlpha([1, 1]), x, B, N)
    expect(relErr(referenceForward(acc, withAlpha([1.3, 7]), x, B, N), y1)).toBe(0)
    expect(relErr(y1, yf)).toBeGreaterThan(1e-3)
  })
  it('is causal: output p depends on inputs 0..p only', () => {
    for (const variant of ['forget', 'accumulate'] as Variant[]) {
      for (const window of [0, 1, 3]) {
        const N = 10
        const cfg: ReferenceConfig = { d, heads: 2, layers: 2, window, variant, activation: 'gelu', bias: true }
        const rng = new Rng(13 + window)
        const p = randomParams(cfg, rng, [0.6, 0.4])
        const x = randn(rng, N * d)
        const y = referenceForward(cfg, p, x, 1, N)
        for (const pos of [1, 4, 9]) {
          const x2 = x.slice()
          x2[pos * d + 3] += 0.5
          const y2 = referenceForward(cfg, p, x2, 1, N)
          expect(relErr(y2.subarray(0, pos * d), y.subarray(0, pos * d))).toBe(0)
          expect(relErr(y2.subarray(pos * d, pos * d + d), y.subarray(pos * d, pos * d + d))).toBeGreaterThan(1e-6)
        }
      }
    }
  })
})

describe('reference backward vs finite differences', () => {
  // Central differences in float64 on EVERY entry of the input, every weight and each alpha;
  // loss = sum(y * R). Tolerance relErr <= 1e-6 per tensor.
  interface FdCase {
    cfg: ReferenceConfig
    N: number
    alphas: number[]
  }
  const d = 4
  const mk = (
    variant: Variant,
    window: number,
    N: number,
    heads: number,
    activation: Activation,
    bias: boolean,
    layers: number,
    alphas: number[],
  ): FdCase => ({ cfg: { d, heads, layers, window, variant, activation, bias }, N, alphas })
  const cases: FdCase[] = [
    mk('forget', 3, 7, 2, 'gelu', true, 2, [0.5, 0.5]), // partial last window, 2 layers
    mk('accumulate', 3, 7, 2, 'relu', false, 2, [0.3, 0.8]),
    mk('accumulate', 1, 4, 1, 'gelu', true, 1, [0.6]), // w = 1
    mk('accumulate', 2, 5, 2, 'gelu', false, 2, [-0.2, 1.3]), // alpha outside [0, 1]: gradient 0
    mk('accumulate', 2, 6, 1, 'relu', true, 2, [0.3, -0.2]), // exact multiple, mixed alphas
    mk('forget', 1, 3, 1, 'relu', false, 1, [0.5]),
    mk('forget', 0, 5, 2, 'gelu', true, 2, [0.5, 0.5]), // plain
    mk('accumulate', 4, 3, 2, 'gelu', true, 1, [0.7]), // m = 1: T(T(X))
    mk('accumulate', 2, 5, 2, 'gelu', true, 2, [0.45, 0.9]),
  ]
  const B = 2
  for (const c of cases) {
    it(caseName(c.cfg, c.N, c.alphas), () => {
      const rng = new Rng(1000 + c.N * 7 + c.cfg.window)
      const params = randomParams(c.cfg, rng, c.alphas)
      const n = B * c.N * d
      const x = randn(rng, n)
      const R = randn(rng, n)
      const an = referenceGradients(c.cfg, params, x, B, c.N, R)
      const loss = (p: Params, xx: Float64Array): number => dot(referenceForward(c.cfg, p, xx, B, c.N), R)
      const h = 1e-5
      const errs: Record<string, number> = {}
      const fdx = new Float64Array(n)
      for (let i = 0; i < n; i++) {
        const xp = x.slice()
        const xm = x.slice()
        xp[i] += h
        xm[i] -= h
        fdx[i] = (loss(params, xp) - loss(params, xm)) / (2 * h)
      }
      errs.dx = relErr(fdx, an.dx)
      expect(Object.keys(an.grads).sort()).toEqual(parameterShapes(c.cfg).map((s) => s.name).sort())
      for (const [name, v] of Object.entries(params)) {
        const fd = new Float64Array(v.length)
        for (let i = 0; i < v.length; i++) {
          const save = v[i]
          v[i] = save + h
          const lp = loss(params, x)
          v[i] = save - h
          const lm = loss(params, x)
          v[i] = save
          fd[i] = (lp - lm) / (2 * h)
        }
        errs[name] = relErr(fd, an.grads[name])
      }
      const bad = Object.entries(errs).filter(([, e]) => !(e <= 1e-6))
      expect(bad).toEqual([])
      // alpha: exactly 0 outside [0, 1] (and for forget / m = 1), non-zero inside when it is used
      for (let l = 0; l < c.cfg.layers; l++) {
        const g = an.grads[`transformer.h.${l}.alpha`][0]
        const used = c.cfg.variant === 'accumulate' && c.cfg.window > 0 && c.N > c.cfg.window
        if (used && c.alphas[l] >= 0 && c.alphas[l] <= 1) expect(Math.abs(g)).toBeGreaterThan(1e-6)
        else expect(Math.abs(g)).toBe(0)
      }
    })
  }
})

// =============================================================================================
// 2. The native layer.

let api: ApiModule
async function loadApi(): Promise<ApiModule> {
  api ??= await import('../src/index.js')
  return api
}

interface NativeRun {
  y: Float32Array
  /** output of a second forward with grad: false (the inference path, no activations kept) */
  yNoGrad: Float32Array
  dx: Float32Array
  grads: Record<string, Float32Array>
  names: string[]
}

function nativeConfig(cfg: ReferenceConfig, extra: Partial<LayerConfig> = {}): LayerConfig {
  return {
    d: cfg.d,
    heads: cfg.heads,
    layers: cfg.layers,
    window: cfg.window,
    variant: cfg.variant,
    activation: cfg.activation,
    bias: cfg.bias,
    dropout: 0,
    seed: 1,
    ...extra,
  }
}

/** Fresh native layer with `params` imported (only the names it exports), one forward + backward. */
async function runNative(
  cfg: ReferenceConfig,
  params: Params,
  x: Float64Array,
  R: Float64Array,
  B: number,
  N: number,
  opts: { layer?: Partial<LayerConfig>; forward?: Parameters<Api.RecurrentLayer['forward']>[1] } = {},
): Promise<NativeRun> {
  const { RecurrentLayer, Tensor } = await loadApi()
  const layer = new RecurrentLayer(nativeConfig(cfg, opts.layer))
  try {
    const names = Object.keys(layer.exportParameters())
    layer.importParameters(toFloat32Record(params, names))
    const xt = Tensor.fromArray(Float32Array.from(x), [B, N, cfg.d])
    const yt = await layer.forward(xt, opts.forward)
    expect(yt.shape).toEqual([B, N, cfg.d])
    expect(yt.dtype).toBe('float32')
    const dyt = Tensor.fromArray(Float32Array.from(R), [B, N, cfg.d])
    const dxt = await layer.backward(dyt)
    expect(dxt.shape).toEqual([B, N, cfg.d])
    const grads = layer.exportGradients()
    const yng = await layer.forward(xt, { ...opts.forward, grad: false })
    const run: NativeRun = {
      y: yt.toArray() as Float32Array,
      yNoGrad: yng.toArray() as Float32Array,
      dx: dxt.toArray() as Float32Array,
      grads,
      names,
    }
    for (const t of [xt, yt, dyt, dxt, yng]) t.dispose()
    return run
  } finally {
    layer.dispose()
  }
}

const isAlpha = (name: string): boolean => name.endsWith('.alpha')
const alphaUsed = (cfg: ReferenceConfig): boolean => cfg.variant === 'accumulate' && cfg.window > 0

/**
 * Compares one native run with the reference: y, dx and every gradient within TOL; the parameter
 * names are the nanoGPT ones (alpha may be absent only where it is unused); the alpha gradient is
 * exactly 0 when the raw alpha lies outside [0, 1].
 */
async function compareCase(
  cfg: ReferenceConfig,
  B: number,
  N: number,
  alphas: number[],
  seed: number,
  opts: { forwardWindow?: number } = {},
): Promise<void> {
  const rng = new Rng(seed)
  const params = randomParams(cfg, rng, alphas, 0.3 * Math.sqrt(Math.min(1, 8 / cfg.d)))
  const x = randn(rng, B * N * cfg.d)
  const R = randn(rng, B * N * cfg.d)
  const nat = await runNative(cfg, params, x, R, B, N, {
    forward: opts.forwardWindow === undefined ? undefined : { window: opts.forwardWindow },
  })
  const refCfg = opts.forwardWindow === undefined ? cfg : { ...cfg, window: opts.forwardWindow }
  const ref = referenceGradients(refCfg, params, x, B, N, R)

  const problems: string[] = []
  const expected = parameterShapes(cfg).map((s) => s.name)
  for (const name of expected) {
    if (!nat.names.includes(name) && !(isAlpha(name) && !alphaUsed(refCfg)))
      problems.push(`exportParameters lacks ${name}`)
  }
  for (const name of nat.names) if (!expected.includes(name)) problems.push(`unexpected parameter ${name}`)

  const errs: Record<string, number> = {
    y: relErr(nat.y, ref.y),
    'y (forward with grad: false)': relErr(nat.yNoGrad, ref.y),
    dx: relErr(nat.dx, ref.dx),
  }
  for (const name of nat.names) {
    const g = nat.grads[name]
    const r = ref.grads[name]
    if (r === undefined) continue
    if (g === undefined) {
      problems.push(`exportGradients lacks ${name}`)
      continue
    }
    errs[name] = relErr(g, r)
    if (isAlpha(name)) {
      const l = Number(/\.h\.(\d+)\./.exec(name)?.[1])
      const a = alphas[l] ?? 0.5
      if ((a < 0 || a > 1 || !alphaUsed(refCfg)) && g[0] !== 0) problems.push(`${name} grad is ${g[0]}, expected exactly 0 (raw a = ${a})`)
    }
  }
  const bad = Object.entries(errs).filter(([, e]) => !(e <= TOL))
  if (bad.length > 0) {
    // Context for the report: what an ideal float32 implementation would score on the same tensors.
    const sim = referenceGradients(refCfg, params, x, B, N, R, { simulateFloat32: true })
    const simErr = (k: string): number =>
      k.startsWith('y') ? relErr(sim.y, ref.y) : k === 'dx' ? relErr(sim.dx, ref.dx) : relErr(sim.grads[k], ref.grads[k])
    for (const [k, e] of bad) problems.push(`${k}: relErr ${e.toExponential(2)} > ${TOL} (float32-simulated reference: ${simErr(k).toExponential(2)})`)
  }
  expect(problems).toEqual([])
}

describe('native layer vs float64 reference: full grid', () => {
  beforeAll(async () => {
    await loadApi()
  })
  const d = 8
  const B = 2
  // raw alpha per case and layer cycles through values inside and outside [0, 1]
  const ALPHAS = [0.3, 0.8, -0.2, 1.3]
  let index = 0
  const variants: Variant[] = ['forget', 'accumulate']
  const acts: Activation[] = ['gelu', 'relu']
  for (const window of [1, 3, 8, 0]) {
    for (const variant of variants) {
      for (const N of [1, 5, 8, 17]) {
        for (const heads of [1, 4]) {
          for (const activation of acts) {
            for (const bias of [true, false]) {
              for (const layers of [1, 2]) {
                const cfg: ReferenceConfig = { d, heads, layers, window, variant, activation, bias }
                const i = index++
                const alphas = Array.from({ length: layers }, (_, l) => ALPHAS[(i + l) % ALPHAS.length])
                it(caseName(cfg, N, alphas), async () => {
                  await compareCase(cfg, B, N, alphas, 20000 + i)
                })
              }
            }
          }
        }
      }
    }
  }
})

describe('native layer vs float64 reference: alpha and the clamp', () => {
  const d = 8
  const B = 2
  const pairs: number[][] = [
    [0.3, 0.8],
    [0.8, 0.3],
    [-0.2, 1.3],
    [1.3, -0.2],
    [0.3, -0.2],
    [1.3, 0.8],
    [0, 1], // the boundary belongs to [0, 1]: gradient 1 there
  ]
  let i = 0
  for (const alphas of pairs) {
    for (const window of [1, 3]) {
      for (const N of [5, 17]) {
        const cfg: ReferenceConfig = { d, heads: 2, layers: 2, window, variant: 'accumulate', activation: 'gelu', bias: true }
        const seed = 30000 + i++
        it(caseName(cfg, N, alphas), async () => {
          await compareCase(cfg, B, N, alphas, seed)
        })
      }
    }
  }
  it('alpha { learnable: false } keeps alpha fixed at init, gradient zero or absent', async () => {
    const { RecurrentLayer, Tensor } = await loadApi()
    const cfg: ReferenceConfig = { d, heads: 2, layers: 2, window: 3, variant: 'accumulate', activation: 'gelu', bias: false }
    const N = 10
    const rng = new Rng(31)
    const params = randomParams(cfg, rng, [0.7, 0.7])
    const x = randn(rng, B * N * d)
    const R = randn(rng, B * N * d)
    const layer = new RecurrentLayer(nativeConfig(cfg, { alpha: { init: 0.7, learnable: false } }))
    const exported = layer.exportParameters()
    const names = Object.keys(exported)
    for (const name of names.filter(isAlpha)) expect(exported[name][0]).toBeCloseTo(0.7, 6)
    layer.importParameters(toFloat32Record(params, names))
    const y = await layer.forward(Tensor.fromArray(Float32Array.from(x), [B, N, d]))
    const dx = await layer.backward(Tensor.fromArray(Float32Array.from(R), [B, N, d]))
    const ref = referenceGradients(cfg, params, x, B, N, R)
    expect(relErr(y.toArray(), ref.y)).toBeLessThanOrEqual(TOL)
    expect(relErr(dx.toArray(), ref.dx)).toBeLessThanOrEqual(TOL)
    const grads = layer.exportGradients()
    for (const name of Object.keys(grads).filter(isAlpha)) expect(grads[name][0]).toBe(0)
    layer.dispose()
  })
})

describe('native layer vs float64 reference: other shapes and options', () => {
  it.each([
    ['forget', 6, 33],
    ['accumulate', 6, 33],
    ['accumulate', 8, 16],
    ['forget', 0, 21],
  ] as [Variant, number, number][])('larger: %s w=%i N=%i d=64 heads=8 layers=2 B=3', async (variant, window, N) => {
    const cfg: ReferenceConfig = { d: 64, heads: 8, layers: 2, window, variant, activation: 'gelu', bias: true }
    await compareCase(cfg, 3, N, [0.4, 0.65], 40000 + window + N)
  })

  it.each([
    ['forget', 5],
    ['accumulate', 5],
    ['accumulate', 0],
    ['forget', 1],
  ] as [Variant, number][])('forward opts.window overrides config.window (%s, layer w=3, call w=%i)', async (variant, w) => {
    const cfg: ReferenceConfig = { d: 8, heads: 2, layers: 2, window: 3, variant, activation: 'relu', bias: true }
    await compareCase(cfg, 2, 13, [0.6, 0.35], 41000 + w, { forwardWindow: w })
  })

  it('parameter names and shapes follow nanoGPT', async () => {
    const { RecurrentLayer } = await loadApi()
    for (const bias of [false, true]) {
      for (const variant of ['forget', 'accumulate'] as Variant[]) {
        const cfg: ReferenceConfig = { d: 8, heads: 2, layers: 3, window: 2, variant, activation: 'gelu', bias }
        const layer = new RecurrentLayer(nativeConfig(cfg))
        const got = new Map(layer.parameters().map((p) => [p.name, p.shape] as [string, number[]]))
        const want = parameterShapes(cfg)
        for (const { name, shape } of want) {
          if (isAlpha(name) && variant === 'forget' && !got.has(name)) continue
          expect(got.get(name), name).toEqual(shape)
        }
        expect([...got.keys()].filter((n) => !want.some((w) => w.name === n))).toEqual([])
        const exp = layer.exportParameters()
        expect(Object.keys(exp).sort()).toEqual([...got.keys()].sort())
        for (const { name, shape } of want) if (exp[name]) expect(exp[name].length).toBe(shape.reduce((a, b) => a * b, 1))
        layer.dispose()
      }
    }
  })

  it('initialisation follows DESIGN: LN weight 1, biases 0, alpha 0.5, N(0, 0.02), c_proj 0.02/sqrt(2L)', async () => {
    const { RecurrentLayer } = await loadApi()
    const L = 2
    const layer = new RecurrentLayer({ d: 64, heads: 4, layers: L, window: 4, variant: 'accumulate', bias: true, seed: 3 })
    const p = layer.exportParameters()
    const std = (v: Float32Array): number => Math.sqrt(dot(v, v) / v.length)
    const mean = (v: Float32Array): number => v.reduce((a, b) => a + b, 0) / v.length
    for (let l = 0; l < L; l++) {
      const h = `transformer.h.${l}.`
      for (const n of ['ln_1.weight', 'ln_2.weight']) expect([...p[h + n]].every((v) => v === 1), n).toBe(true)
      for (const n of ['ln_1.bias', 'ln_2.bias', 'attn.c_attn.bias', 'attn.c_proj.bias', 'mlp.c_fc.bias', 'mlp.c_proj.bias'])
        expect([...p[h + n]].every((v) => v === 0), n).toBe(true)
      expect(p[h + 'alpha'][0]).toBeCloseTo(0.5, 7)
      for (const n of ['attn.c_attn.weight', 'mlp.c_fc.weight']) {
        expect(std(p[h + n]), n).toBeGreaterThan(0.02 * 0.95)
        expect(std(p[h + n]), n).toBeLessThan(0.02 * 1.05)
        expect(Math.abs(mean(p[h + n])), n).toBeLessThan(0.002)
      }
      for (const n of ['attn.c_proj.weight', 'mlp.c_proj.weight']) {
        const s = 0.02 / Math.sqrt(2 * L)
        expect(std(p[h + n]), n).toBeGreaterThan(s * 0.93)
        expect(std(p[h + n]), n).toBeLessThan(s * 1.07)
      }
    }
    // same seed, same init; another seed, another init
    const again = new RecurrentLayer({ d: 64, heads: 4, layers: L, window: 4, variant: 'accumulate', bias: true, seed: 3 })
    const other = new RecurrentLayer({ d: 64, heads: 4, layers: L, window: 4, variant: 'accumulate', bias: true, seed: 4 })
    const w = 'transformer.h.1.mlp.c_fc.weight'
    expect(sameBits(again.exportParameters()[w], p[w])).toBe(true)
    expect(sameBits(other.exportParameters()[w], p[w])).toBe(false)
    for (const x of [layer, again, other]) x.dispose()
  })

  it('the resolved config fills the defaults', async () => {
    const { RecurrentLayer } = await loadApi()
    const layer = new RecurrentLayer({ d: 8, heads: 2, window: 3 })
    expect(layer.config).toMatchObject({
      d: 8,
      heads: 2,
      layers: 1,
      window: 3,
      variant: 'forget',
      activation: 'gelu',
      bias: false,
      dropout: 0,
      seed: 0,
    })
    expect(layer.config.alpha).toMatchObject({ init: 0.5, learnable: true })
    layer.dispose()
  })

  it('all-zero matrices make T the identity: accumulate w=1 and w=2 give the hand-computed rows', async () => {
    const { RecurrentLayer, Tensor } = await loadApi()
    const d = 4
    const x = randn(new Rng(7), 3 * d)
    const row = (r: number): Float64Array => x.slice(r * d, r * d + d)
    const comb = (...terms: [number, Float64Array][]): number[] => {
      const out = new Array<number>(d).fill(0)
      for (const [c, v] of terms) for (let i = 0; i < d; i++) out[i] += c * v[i]
      return out
    }
    const a = 0.5
    const want: Record<number, number[]> = {
      1: [...comb([1 + a, row(0)]), ...comb([2 * a + a * a, row(0)], [1, row(1)]), ...comb([a + a * a, row(0)], [1, row(2)])],
      2: [...comb([1 + a, row(0)]), ...comb([1 + a, row(1)]), ...comb([a, row(0)], [1, row(2)])],
    }
    for (const window of [1, 2]) {
      const layer = new RecurrentLayer({ d, heads: 2, window, variant: 'accumulate', bias: true })
      const p = layer.exportParameters()
      for (const [name, v] of Object.entries(p)) if (/attn\.|mlp\./.test(name)) v.fill(0)
      layer.importParameters(p)
      const y = await layer.forward(Tensor.fromArray(Float32Array.from(x), [1, 3, d]))
      expect(relErr(y.toArray(), want[window]), `w=${window}`).toBeLessThan(1e-6)
      layer.dispose()
    }
  })

  it('backward accumulates weight gradients; zeroGrad clears them; parameters() grads match exportGradients', async () => {
    const { RecurrentLayer, Tensor } = await loadApi()
    const cfg: ReferenceConfig = { d: 8, heads: 2, layers: 2, window: 3, variant: 'accumulate', activation: 'gelu', bias: true }
    const N = 7
    const rng = new Rng(50)
    const params = randomParams(cfg, rng, [0.4, 0.6])
    const x = Float32Array.from(randn(rng, 2 * N * 8))
    const R = Float32Array.from(randn(rng, 2 * N * 8))
    const layer = new RecurrentLayer(nativeConfig(cfg))
    const names = Object.keys(layer.exportParameters())
    layer.importParameters(toFloat32Record(params, names))
    const step = async (): Promise<void> => {
      await layer.forward(Tensor.fromArray(x, [2, N, 8]))
      await layer.backward(Tensor.fromArray(R, [2, N, 8]))
    }
    await step()
    const g1 = layer.exportGradients()
    for (const p of layer.parameters()) expect(sameBits(p.grad.toArray() as Float32Array, g1[p.name]), p.name).toBe(true)
    await step()
    const g2 = layer.exportGradients()
    for (const name of Object.keys(g1)) {
      const twice = g1[name].map((v) => 2 * v)
      expect(relErr(g2[name], twice), name).toBeLessThan(1e-6)
    }
    layer.zeroGrad()
    for (const [name, g] of Object.entries(layer.exportGradients())) expect([...g].every((v) => v === 0), name).toBe(true)
    await step()
    const g3 = layer.exportGradients()
    for (const name of Object.keys(g1)) expect(sameBits(g3[name], g1[name]), name).toBe(true)
    // the layer's parameter values are the imported ones
    const exported = toFloat64Record(layer.exportParameters())
    for (const name of names) expect(relErr(exported[name], params[name]), name).toBe(0)
    layer.dispose()
  })
})

describe('native layer: causality', () => {
  const d = 8
  const B = 2
  const N = 13
  const configs: [Variant, number][] = [
    ['forget', 1],
    ['forget', 3],
    ['accumulate', 1],
    ['accumulate', 3],
    ['forget', 0],
  ]
  for (const [variant, window] of configs) {
    it(`${window === 0 ? 'plain' : variant} w=${window} layers=2: changing position p leaves outputs < p bit-identical and changes p`, async () => {
      const { RecurrentLayer, Tensor } = await loadApi()
      const cfg: ReferenceConfig = { d, heads: 2, layers: 2, window, variant, activation: 'gelu', bias: true }
      const rng = new Rng(60 + window)
      const layer = new RecurrentLayer(nativeConfig(cfg))
      layer.importParameters(toFloat32Record(randomParams(cfg, rng, [0.6, 0.3]), Object.keys(layer.exportParameters())))
      const x = Float32Array.from(randn(rng, B * N * d))
      const fwd = async (v: Float32Array): Promise<Float32Array> =>
        (await layer.forward(Tensor.fromArray(v, [B, N, d]))).toArray() as Float32Array
      const y = await fwd(x)
      const ps = [1 + rng.int(N - 1), 1 + rng.int(N - 1), N - 1]
      for (const p of ps) {
        const x2 = x.slice()
        for (let c = 0; c < d; c++) x2[p * d + c] += rng.normal() // batch element 0 only
        const y2 = await fwd(x2)
        expect(sameBits(y2.subarray(0, p * d), y.subarray(0, p * d)), `b=0 positions < ${p}`).toBe(true)
        expect(sameBits(y2.subarray(p * d, p * d + d), y.subarray(p * d, p * d + d)), `b=0 position ${p}`).toBe(false)
        expect(sameBits(y2.subarray(N * d), y.subarray(N * d)), 'batch element 1 untouched').toBe(true)
      }
      layer.dispose()
    })
  }
})

describe('native layer: determinism and dropout', () => {
  const d = 8
  const B = 2
  const N = 10
  const variants: Variant[] = ['forget', 'accumulate']

  for (const variant of variants) {
    it(`${variant}: same seed gives identical bits (two calls, two fresh layers); another seed differs`, async () => {
      const { RecurrentLayer, Tensor } = await loadApi()
      const cfg: LayerConfig = { d, heads: 2, layers: 2, window: 3, variant, dropout: 0.1, seed: 7 }
      const a = new RecurrentLayer(cfg)
      const b = new RecurrentLayer(cfg)
      const rng = new Rng(70)
      const x = Float32Array.from(randn(rng, B * N * d))
      const R = Float32Array.from(randn(rng, B * N * d))
      const run = async (layer: Api.RecurrentLayer, seed: number): Promise<{ y: Float32Array; dx: Float32Array }> => {
        const y = (await layer.forward(Tensor.fromArray(x, [B, N, d]), { training: true, seed })).toArray() as Float32Array
        const dx = (await layer.backward(Tensor.fromArray(R, [B, N, d]))).toArray() as Float32Array
        return { y, dx }
      }
      const a1 = await run(a, 42)
      const a2 = await run(a, 42)
      const b1 = await run(b, 42)
      expect(sameBits(a1.y, a2.y)).toBe(true)
      expect(sameBits(a1.y, b1.y)).toBe(true)
      expect(sameBits(a1.dx, a2.dx)).toBe(true)
      expect(sameBits(a1.dx, b1.dx)).toBe(true)
      const ga = a.exportGradients() // two backwards accumulated
      b.zeroGrad()
      await run(b, 42)
      await run(b, 42)
      const gb = b.exportGradients()
      for (const name of Object.keys(ga)) expect(sameBits(ga[name], gb[name]), name).toBe(true)
      const c1 = await run(a, 43)
      expect(sameBits(c1.y, a1.y)).toBe(false)
      // dropout is actually active in training mode
      const ev = (await a.forward(Tensor.fromArray(x, [B, N, d]), { training: false })).toArray() as Float32Array
      expect(sameBits(ev, a1.y)).toBe(false)
      a.dispose()
      b.dispose()
    })

    it(`${variant}: training:false with dropout 0.1 equals dropout 0 (forward and backward, bit for bit)`, async () => {
      const { RecurrentLayer, Tensor } = await loadApi()
      const cfg: ReferenceConfig = { d, heads: 2, layers: 2, window: 3, variant, activation: 'gelu', bias: true }
      const rng = new Rng(80)
      const params = randomParams(cfg, rng, [0.5, 0.7])
      const x = Float32Array.from(randn(rng, B * N * d))
      const R = Float32Array.from(randn(rng, B * N * d))
      const outs: { y: Float32Array; dx: Float32Array; g: Record<string, Float32Array> }[] = []
      for (const [dropout, training] of [
        [0.1, false],
        [0, false],
        [0, true],
      ] as [number, boolean][]) {
        const layer = new RecurrentLayer(nativeConfig(cfg, { dropout }))
        layer.importParameters(toFloat32Record(params, Object.keys(layer.exportParameters())))
        const y = (await layer.forward(Tensor.fromArray(x, [B, N, d]), { training, seed: 5 })).toArray() as Float32Array
        const dx = (await layer.backward(Tensor.fromArray(R, [B, N, d]))).toArray() as Float32Array
        outs.push({ y, dx, g: layer.exportGradients() })
        layer.dispose()
      }
      for (const o of outs.slice(1)) {
        expect(sameBits(o.y, outs[0].y)).toBe(true)
        expect(sameBits(o.dx, outs[0].dx)).toBe(true)
        for (const name of Object.keys(outs[0].g)) expect(sameBits(o.g[name], outs[0].g[name]), name).toBe(true)
      }
    })

    it(`${variant}: with dropout 0.1 in training, the input gradient matches finite differences of the same-seed forward`, async () => {
      const { RecurrentLayer, Tensor } = await loadApi()
      const cfg: ReferenceConfig = { d, heads: 2, layers: 2, window: 3, variant, activation: 'gelu', bias: true }
      const rng = new Rng(90)
      const layer = new RecurrentLayer(nativeConfig(cfg, { dropout: 0.1 }))
      layer.importParameters(toFloat32Record(randomParams(cfg, rng, [0.5, 0.7]), Object.keys(layer.exportParameters())))
      const x = randn(rng, B * N * d)
      const R = randn(rng, B * N * d)
      const seed = 1234
      const loss = async (v: Float64Array, s: number): Promise<number> => {
        const y = await layer.forward(Tensor.fromArray(Float32Array.from(v), [B, N, d]), { training: true, seed: s })
        return dot(y.toArray(), R)
      }
      await loss(x, seed)
      const dx = (await layer.backward(Tensor.fromArray(Float32Array.from(R), [B, N, d]))).toArray()
      for (let trial = 0; trial < 3; trial++) {
        const v = randn(rng, B * N * d)
        const h = 1e-3
        const shifted = (sgn: number): Float64Array => x.map((xi, i) => xi + sgn * h * v[i])
        const analytic = dot(dx, v)
        const fd = ((await loss(shifted(1), seed)) - (await loss(shifted(-1), seed))) / (2 * h)
        expect(Math.abs(fd - analytic) / Math.abs(analytic), `fd ${fd} vs analytic ${analytic}`).toBeLessThan(1e-2)
        // control: the forward under other masks has another gradient, so the check above is sensitive
        const other = ((await loss(shifted(1), seed + 1)) - (await loss(shifted(-1), seed + 1))) / (2 * h)
        expect(Math.abs(other - analytic) / Math.abs(analytic)).toBeGreaterThan(1e-2)
      }
      layer.dispose()
    })
  }
})
