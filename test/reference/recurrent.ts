// The sliding-window recurrence of DESIGN.md section 1 over a stack of L blocks, float64, with a
// hand-written reverse mode: gradients w.r.t. the input, every weight and each layer's raw alpha.
//
// w = 0: output = T(X) (plain transformer).
// w > 0: windows X_0 .. X_{m-1} of width w, m = ceil(N / w), the last of length N - (m-1)w.
//   forget:      S_0 = T(X_0); Z = T(concat(S_{k-1}, X_k)); Y_{k-1} = Z[:w]; S_k = Z[w:]; Y_{m-1} = T(S_{m-1})
//   accumulate:  P_0 = X_0; S_0 = T(X_0); A = alpha P_{k-1};
//                Z = T(concat(A + S_{k-1}, A[:|X_k|] + X_k)); Y_{k-1} = Z[:w]; S_k = Z[w:]; P_k = Y_{k-1};
//                Y_{m-1} = T(S_{m-1}),  alpha = clamp(a, 0, 1), d alpha / d a = 1 on [0, 1], 0 outside.
// Layer l applies the recurrence to the whole output sequence of layer l-1, with its own weights.
//
// Parameters are a Record<string, Float64Array> under the nanoGPT names the native layer exports.

import {
  type Activation,
  type Alloc,
  type BlockCache,
  type BlockDims,
  type BlockGrads,
  type BlockWeights,
  type Vec,
  alloc32,
  alloc64,
  blockBackward,
  blockForward,
  zeroBlockGrads,
} from './block.js'

export type Variant = 'forget' | 'accumulate'
export type { Activation } from './block.js'

export interface ReferenceConfig {
  d: number
  heads: number
  layers: number
  window: number
  variant: Variant
  activation: Activation
  bias: boolean
}

export type Params = Record<string, Float64Array>

export interface ReferenceOptions {
  /** Round every stored intermediate to float32 (error-budget studies only; not a reference). */
  simulateFloat32?: boolean
}

/** Names and shapes of the parameters of one stack, in nanoGPT naming, alpha included. */
export function parameterShapes(cfg: ReferenceConfig): { name: string; shape: number[] }[] {
  const { d } = cfg
  const out: { name: string; shape: number[] }[] = []
  for (let l = 0; l < cfg.layers; l++) {
    const p = `transformer.h.${l}.`
    const add = (name: string, shape: number[], isBias = false): void => {
      if (!isBias || cfg.bias) out.push({ name: p + name, shape })
    }
    add('ln_1.weight', [d])
    add('ln_1.bias', [d], true)
    add('attn.c_attn.weight', [3 * d, d])
    add('attn.c_attn.bias', [3 * d], true)
    add('attn.c_proj.weight', [d, d])
    add('attn.c_proj.bias', [d], true)
    add('ln_2.weight', [d])
    add('ln_2.bias', [d], true)
    add('mlp.c_fc.weight', [4 * d, d])
    add('mlp.c_fc.bias', [4 * d], true)
    add('mlp.c_proj.weight', [d, 4 * d])
    add('mlp.c_proj.bias', [d], true)
    add('alpha', [1])
  }
  return out
}

function getParam(params: Params, name: string, size: number): Float64Array {
  const v = params[name]
  if (v === undefined) throw new Error(`reference: missing parameter ${name}`)
  if (v.length !== size) throw new Error(`reference: parameter ${name} has ${v.length} values, expected ${size}`)
  return v
}

function layerWeights(cfg: ReferenceConfig, params: Params, l: number): BlockWeights {
  const { d, bias } = cfg
  const p = `transformer.h.${l}.`
  const w = (name: string, size: number): Float64Array => getParam(params, p + name, size)
  const b = (name: string, size: number): Float64Array | null => (bias ? getParam(params, p + name, size) : null)
  return {
    ln1w: w('ln_1.weight', d),
    ln1b: b('ln_1.bias', d),
    attnW: w('attn.c_attn.weight', 3 * d * d),
    attnB: b('attn.c_attn.bias', 3 * d),
    projW: w('attn.c_proj.weight', d * d),
    projB: b('attn.c_proj.bias', d),
    ln2w: w('ln_2.weight', d),
    ln2b: b('ln_2.bias', d),
    fcW: w('mlp.c_fc.weight', 4 * d * d),
    fcB: b('mlp.c_fc.bias', 4 * d),
    mprojW: w('mlp.c_proj.weight', 4 * d * d),
    mprojB: b('mlp.c_proj.bias', d),
  }
}

/** Raw a of layer l (0.5 when the record has no alpha, e.g. for the forget variant). */
function rawAlpha(params: Params, l: number): number {
  const v = params[`transformer.h.${l}.alpha`]
  return v === undefined ? 0.5 : v[0]
}

const clamp01 = (a: number): number => Math.min(Math.max(a, 0), 1)

// ---------------------------------------------------------------------------------------------
// One layer's recurrence on one sequence [N, d], with a tape for the backward pass.

interface LayerTape {
  N: number
  w: number // effective window (0 = plain)
  alpha: number // clamped
  /** caches of the T applications, in order: [0] is T(X_0) (or T(X) when w = 0), [k] is step k, last is Y_{m-1}. */
  caches: BlockCache[]
  /** P_{k-1} used at step k (accumulate only), index k-1. */
  P: Vec[]
}

function sliceRows(x: Vec, d: number, from: number, to: number): Vec {
  return x.slice(from * d, to * d)
}

function concatRows(alloc: Alloc, a: Vec, b: Vec): Vec {
  const r = alloc(a.length + b.length)
  r.set(a, 0)
  r.set(b, a.length)
  return r
}

function recurrenceForward(
  alloc: Alloc,
  cfg: ReferenceConfig,
  dims: BlockDims,
  W: BlockWeights,
  alpha: number,
  x: Vec,
  N: number,
): { y: Vec; tape: LayerTape } {
  const { d, window: w, variant } = cfg
  const T = (inp: Vec, n: number): { y: Vec; cache: BlockCache } => blockForward(alloc, dims, W, inp, n)
  const tape: LayerTape = { N, w, alpha, caches: [], P: [] }
  if (w === 0) {
    const r = T(x, N)
    tape.caches.push(r.cache)
    return { y: r.y, tape }
  }
  const m = Math.ceil(N / w)
  const y = alloc(N * d)
  const len = (k: number): number => Math.min(w, N - k * w)
  const X = (k: number): Vec => sliceRows(x, d, k * w, k * w + len(k))

  const r0 = T(X(0), len(0))
  tape.caches.push(r0.cache)
  let S = r0.y
  let P = X(0)
  for (let k = 1; k < m; k++) {
    const lk = len(k)
    let inp: Vec
    if (variant === 'forget') {
      inp = concatRows(alloc, S, X(k))
    } else {
      tape.P.push(P)
      const first = alloc(w * d)
      for (let i = 0; i < w * d; i++) first[i] = alpha * P[i] + S[i]
      const second = alloc(lk * d)
      const Xk = X(k)
      for (let i = 0; i < lk * d; i++) second[i] = alpha * P[i] + Xk[i]
      inp = concatRows(alloc, first, second)
    }
    const rk = T(inp, w + lk)
    tape.caches.push(rk.cache)
    const Yprev = sliceRows(rk.y, d, 0, w)
    y.set(Yprev, (k - 1) * w * d)
    S = sliceRows(rk.y, d, w, w + lk)
    P = Yprev
  }
  const rl = T(S, len(m - 1))
  tape.caches.push(rl.cache)
  y.set(rl.y, (m - 1) * w * d)
  return { y, tape }
}

/** Returns dx; accumulates block grads into G and returns d loss / d alpha (clamped alpha). */
function recurrenceBackward(
  alloc: Alloc,
  cfg: ReferenceConfig,
  dims: BlockDims,
  W: BlockWeights,
  G: BlockGrads,
  tape: LayerTape,
  dy: Vec,
): { dx: Vec; dalpha: number } {
  const { d, variant } = cfg
  const { N, w, alpha, caches } = tape
  const Tb = (cache: BlockCache, g: Vec): Vec => blockBackward(alloc, dims, W, G, cache, g)
  if (w === 0) return { dx: Tb(caches[0], dy), dalpha: 0 }
  const m = Math.ceil(N / w)
  const len = (k: number): number => Math.min(w, N - k * w)
  const dx = alloc(N * d)
  let dalpha = 0
  // dPextra[k]: gradient reaching P_k = Y_{k-1} through its use at step k+1 (accumulate only).
  const dPextra: (Vec | null)[] = new Array<Vec | null>(m).fill(null)

  // Y_{m-1} = T(S_{m-1})
  let dS = Tb(caches[m], sliceRows(dy, d, (m - 1) * w, N))
  for (let k = m - 1; k >= 1; k--) {
    const lk = len(k)
    // Z = T(inp); Y_{k-1} = Z[:w]; S_k = Z[w:]
    const dYprev = sliceRows(dy, d, (k - 1) * w, k * w)
    const extra = dPextra[k]
    if (extra) for (let i = 0; i < w * d; i++) dYprev[i] += extra[i]
    const dZ = concatRows(alloc, dYprev, dS)
    const dinp = Tb(caches[k], dZ)
    const dFirst = sliceRows(dinp, d, 0, w)
    const dSecond = sliceRows(dinp, d, w, w + lk)
    dx.set(dSecond, k * w * d) // d X_k
    dS = dFirst // d S_{k-1}
    if (variant === 'accumulate') {
      // A = alpha P_{k-1} feeds both halves: first fully, second on its first lk rows.
      const P = tape.P[k - 1]
      const dP = alloc(w * d)
      for (let i = 0; i < w * d; i++) {
        const dA = dFirst[i] + (i < lk * d ? dSecond[i] : 0)
        dP[i] = alpha * dA
        dalpha += P[i] * dA
      }
      dPextra[k - 1] = dP
    }
  }
  // S_0 = T(X_0) (and P_0 = X_0 for accumulate)
  const dX0 = Tb(caches[0], dS)
  const extra0 = dPextra[0]
  if (extra0) for (let i = 0; i < w * d; i++) dX0[i] += extra0[i]
  dx.set(dX0, 0)
  return { dx, dalpha }
}

// ---------------------------------------------------------------------------------------------
// The stack, batched.

export interface ReferenceResult {
  y: Float64Array
}

export interface ReferenceGradients {
  y: Float64Array
  dx: Float64Array
  /** Gradients under the parameter names, alpha included (w.r.t. the raw a, clamp gradient applied). */
  grads: Params
}

function checkShapes(cfg: ReferenceConfig, x: ArrayLike<number>, B: number, N: number): void {
  if (x.length !== B * N * cfg.d) throw new Error(`reference: x has ${x.length} values, expected ${B * N * cfg.d}`)
  if (cfg.d % cfg.heads !== 0) throw new Error('reference: heads must divide d')
  if (!(cfg.window >= 0 && Number.isInteger(cfg.window))) throw new Error('reference: bad window')
}

function run(
  cfg: ReferenceConfig,
  params: Params,
  x: ArrayLike<number>,
  B: number,
  N: number,
  dy: ArrayLike<number> | null,
  opts: ReferenceOptions,
): { y: Float64Array; dx: Float64Array | null; grads: Params | null } {
  checkShapes(cfg, x, B, N)
  const alloc = opts.simulateFloat32 ? alloc32 : alloc64
  const { d, layers } = cfg
  const dims: BlockDims = { d, heads: cfg.heads, activation: cfg.activation }
  const Ws = Array.from({ length: layers }, (_, l) => layerWeights(cfg, params, l))
  const rawA = Array.from({ length: layers }, (_, l) => rawAlpha(params, l))
  const Gs = Array.from({ length: layers }, () => zeroBlockGrads(d, cfg.bias))
  const dAlpha = new Float64Array(layers)
  const y = new Float64Array(B * N * d)
  const dx = new Float64Array(B * N * d)
  for (let b = 0; b < B; b++) {
    let h: Vec = alloc(N * d)
    for (let i = 0; i < N * d; i++) h[i] = x[b * N * d + i]
    const tapes: LayerTape[] = []
    for (let l = 0; l < layers; l++) {
      const r = recurrenceForward(alloc, cfg, dims, Ws[l], clamp01(rawA[l]), h, N)
      tapes.push(r.tape)
      h = r.y
    }
    y.set(h, b * N * d)
    if (dy) {
      let g: Vec = alloc(N * d)
      for (let i = 0; i < N * d; i++) g[i] = dy[b * N * d + i]
      for (let l = layers - 1; l >= 0; l--) {
        const r = recurrenceBackward(alloc, cfg, dims, Ws[l], Gs[l], tapes[l], g)
        dAlpha[l] += r.dalpha
        g = r.dx
      }
      dx.set(g, b * N * d)
    }
  }
  if (!dy) return { y, dx: null, grads: null }
  const grads: Params = {}
  for (let l = 0; l < layers; l++) {
    const p = `transformer.h.${l}.`
    const G = Gs[l]
    const put = (name: string, v: Float64Array | null): void => {
      if (v) grads[p + name] = v
    }
    put('ln_1.weight', G.ln1w)
    put('ln_1.bias', G.ln1b)
    put('attn.c_attn.weight', G.attnW)
    put('attn.c_attn.bias', G.attnB)
    put('attn.c_proj.weight', G.projW)
    put('attn.c_proj.bias', G.projB)
    put('ln_2.weight', G.ln2w)
    put('ln_2.bias', G.ln2b)
    put('mlp.c_fc.weight', G.fcW)
    put('mlp.c_fc.bias', G.fcB)
    put('mlp.c_proj.weight', G.mprojW)
    put('mlp.c_proj.bias', G.mprojB)
    const a = rawA[l]
    const clampGrad = a >= 0 && a <= 1 ? 1 : 0
    grads[p + 'alpha'] = Float64Array.of(cfg.variant === 'accumulate' && cfg.window > 0 ? dAlpha[l] * clampGrad : 0)
  }
  return { y, dx, grads }
}

/** Forward of the whole stack on x [B, N, d] (row-major). */
export function referenceForward(
  cfg: ReferenceConfig,
  params: Params,
  x: ArrayLike<number>,
  B: number,
  N: number,
  opts: ReferenceOptions = {},
): Float64Array {
  return run(cfg, params, x, B, N, null, opts).y
}

/** Forward, then backward of loss = sum(y * dy): gradients w.r.t. x, every weight and each raw alpha. */
export function referenceGradients(
  cfg: ReferenceConfig,
  params: Params,
  x: ArrayLike<number>,
  B: number,
  N: number,
  dy: ArrayLike<number>,
  opts: ReferenceOptions = {},
): ReferenceGradients {
  if (dy.length !== B * N * cfg.d) throw new Error('reference: dy has the wrong size')
  const r = run(cfg, params, x, B, N, dy, opts)
  return { y: r.y, dx: r.dx as Float64Array, grads: r.grads as Params }
}
