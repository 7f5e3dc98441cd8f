// One pre-LN transformer block T (DESIGN.md section 1), float64, forward and hand-written backward.
//
//   x1 = x  + c_proj(Attn(c_attn(LN1(x))))
//   y  = x1 + mlp.c_proj(act(c_fc(LN2(x1))))
//
// Single sequence of n tokens (row-major [n, d]); the caller loops over the batch. Linear weights are
// [out, in] like torch. No dropout. Slow and obvious on purpose.

import { gelu, geluGrad } from './erf.js'

export type Activation = 'gelu' | 'relu'

/**
 * Storage for activations. Float64Array is the reference; Float32Array only exists to estimate the
 * error a float32 implementation should have (every stored intermediate rounded to float32, sums in
 * float64). Never used as the reference itself.
 */
export type Vec = Float64Array | Float32Array
export type Alloc = (n: number) => Vec
export const alloc64: Alloc = (n) => new Float64Array(n)
export const alloc32: Alloc = (n) => new Float32Array(n)

export interface BlockWeights {
  ln1w: Vec
  ln1b: Vec | null
  attnW: Vec // [3d, d]
  attnB: Vec | null // [3d]
  projW: Vec // [d, d]
  projB: Vec | null
  ln2w: Vec
  ln2b: Vec | null
  fcW: Vec // [4d, d]
  fcB: Vec | null
  mprojW: Vec // [d, 4d]
  mprojB: Vec | null
}

/** Gradients of one block's weights; accumulated (+=) by blockBackward. Bias entries null without bias. */
export interface BlockGrads {
  ln1w: Float64Array
  ln1b: Float64Array | null
  attnW: Float64Array
  attnB: Float64Array | null
  projW: Float64Array
  projB: Float64Array | null
  ln2w: Float64Array
  ln2b: Float64Array | null
  fcW: Float64Array
  fcB: Float64Array | null
  mprojW: Float64Array
  mprojB: Float64Array | null
}

export interface BlockDims {
  d: number
  heads: number
  activation: Activation
}

export function zeroBlockGrads(d: number, bias: boolean): BlockGrads {
  const z = (n: number): Float64Array => new Float64Array(n)
  return {
    ln1w: z(d),
    ln1b: bias ? z(d) : null,
    attnW: z(3 * d * d),
    attnB: bias ? z(3 * d) : null,
    projW: z(d * d),
    projB: bias ? z(d) : null,
    ln2w: z(d),
    ln2b: bias ? z(d) : null,
    fcW: z(4 * d * d),
    fcB: bias ? z(4 * d) : null,
    mprojW: z(4 * d * d),
    mprojB: bias ? z(d) : null,
  }
}

// ---------------------------------------------------------------------------------------------
// Linear: y[i, o] = b[o] + sum_k x[i, k] W[o, k]

function linearForward(alloc: Alloc, x: Vec, n: number, nin: number, W: Vec, b: Vec | null, nout: number): Vec {
  const y = alloc(n * nout)
  for (let i = 0; i < n; i++) {
    for (let o = 0; o < nout; o++) {
      let s = b ? b[o] : 0
      for (let k = 0; k < nin; k++) s += x[i * nin + k] * W[o * nin + k]
      y[i * nout + o] = s
    }
  }
  return y
}

/** Returns dx (new array); dW += dy^T x; db += column sums of dy. */
function linearBackward(
  alloc: Alloc,
  x: Vec,
  n: number,
  nin: number,
  W: Vec,
  nout: number,
  dy: Vec,
  dW: Float64Array,
  db: Float64Array | null,
): Vec {
  const dx = alloc(n * nin)
  for (let i = 0; i < n; i++) {
    for (let k = 0; k < nin; k++) {
      let s = 0
      for (let o = 0; o < nout; o++) s += dy[i * nout + o] * W[o * nin + k]
      dx[i * nin + k] = s
    }
  }
  for (let o = 0; o < nout; o++) {
    for (let k = 0; k < nin; k++) {
      let s = 0
      for (let i = 0; i < n; i++) s += dy[i * nout + o] * x[i * nin + k]
      dW[o * nin + k] += s
    }
    if (db) {
      let s = 0
      for (let i = 0; i < n; i++) s += dy[i * nout + o]
      db[o] += s
    }
  }
  return dx
}

// ---------------------------------------------------------------------------------------------
// LayerNorm over the last dim, eps 1e-5, biased variance (torch).

const LN_EPS = 1e-5

interface LnCache {
  xhat: Float64Array // kept in float64 in both modes (it is recomputable; only y is "stored")
  rstd: Float64Array
}

function layerNormForward(alloc: Alloc, x: Vec, n: number, d: number, w: Vec, b: Vec | null): { y: Vec; cache: LnCache } {
  const y = alloc(n * d)
  const xhat = new Float64Array(n * d)
  const rstd = new Float64Array(n)
  for (let i = 0; i < n; i++) {
    let mean = 0
    for (let c = 0; c < d; c++) mean += x[i * d + c]
    mean /= d
    let v = 0
    for (let c = 0; c < d; c++) {
      const t = x[i * d + c] - mean
      v += t * t
    }
    v /= d
    const r = 1 / Math.sqrt(v + LN_EPS)
    rstd[i] = r
    for (let c = 0; c < d; c++) {
      const h = (x[i * d + c] - mean) * r
      xhat[i * d + c] = h
      y[i * d + c] = h * w[c] + (b ? b[c] : 0)
    }
  }
  return { y, cache: { xhat, rstd } }
}

/** Returns dx (new array); dw, db accumulated. */
function layerNormBackward(
  alloc: Alloc,
  cache: LnCache,
  n: number,
  d: number,
  w: Vec,
  dy: Vec,
  dw: Float64Array,
  db: Float64Array | null,
): Vec {
  const dx = alloc(n * d)
  const { xhat, rstd } = cache
  for (let i = 0; i < n; i++) {
    let meanG = 0 // mean of dxhat
    let meanGX = 0 // mean of dxhat * xhat
    for (let c = 0; c < d; c++) {
      const g = dy[i * d + c] * w[c]
      meanG += g
      meanGX += g * xhat[i * d + c]
      dw[c] += dy[i * d + c] * xhat[i * d + c]
      if (db) db[c] += dy[i * d + c]
    }
    meanG /= d
    meanGX /= d
    for (let c = 0; c < d; c++) {
      const g = dy[i * d + c] * w[c]
      dx[i * d + c] = rstd[i] * (g - meanG - xhat[i * d + c] * meanGX)
    }
  }
  return dx
}

// ---------------------------------------------------------------------------------------------
// Causal multi-head attention on qkv [n, 3d]: q, k, v in that order, head h owns columns
// h*hd .. h*hd+hd-1 of each; scale 1/sqrt(hd). Position i attends to 0..i.

function attentionForward(alloc: Alloc, qkv: Vec, n: number, d: number, H: number): { out: Vec; probs: Float64Array } {
  const hd = d / H
  const scale = 1 / Math.sqrt(hd)
  const out = alloc(n * d)
  const probs = new Float64Array(H * n * n)
  const row = new Float64Array(n)
  for (let h = 0; h < H; h++) {
    for (let i = 0; i < n; i++) {
      let mx = -Infinity
      for (let j = 0; j <= i; j++) {
        let s = 0
        for (let c = 0; c < hd; c++) s += qkv[i * 3 * d + h * hd + c] * qkv[j * 3 * d + d + h * hd + c]
        row[j] = s * scale
        if (row[j] > mx) mx = row[j]
      }
      let z = 0
      for (let j = 0; j <= i; j++) {
        row[j] = Math.exp(row[j] - mx)
        z += row[j]
      }
      for (let j = 0; j <= i; j++) probs[(h * n + i) * n + j] = row[j] / z
      for (let c = 0; c < hd; c++) {
        let s = 0
        for (let j = 0; j <= i; j++) s += probs[(h * n + i) * n + j] * qkv[j * 3 * d + 2 * d + h * hd + c]
        out[i * d + h * hd + c] = s
      }
    }
  }
  return { out, probs }
}

function attentionBackward(alloc: Alloc, qkv: Vec, probs: Float64Array, dout: Vec, n: number, d: number, H: number): Vec {
  const hd = d / H
  const scale = 1 / Math.sqrt(hd)
  const dqkv = new Float64Array(n * 3 * d)
  const dp = new Float64Array(n)
  for (let h = 0; h < H; h++) {
    for (let i = 0; i < n; i++) {
      const P = (j: number): number => probs[(h * n + i) * n + j]
      // d out_i = sum_j P_ij v_j
      let dot = 0
      for (let j = 0; j <= i; j++) {
        let s = 0
        for (let c = 0; c < hd; c++) {
          s += dout[i * d + h * hd + c] * qkv[j * 3 * d + 2 * d + h * hd + c]
          dqkv[j * 3 * d + 2 * d + h * hd + c] += P(j) * dout[i * d + h * hd + c]
        }
        dp[j] = s
        dot += P(j) * s
      }
      // softmax backward, then scores s_ij = scale * q_i . k_j
      for (let j = 0; j <= i; j++) {
        const ds = P(j) * (dp[j] - dot) * scale
        for (let c = 0; c < hd; c++) {
          dqkv[i * 3 * d + h * hd + c] += ds * qkv[j * 3 * d + d + h * hd + c]
          dqkv[j * 3 * d + d + h * hd + c] += ds * qkv[i * 3 * d + h * hd + c]
        }
      }
    }
  }
  const r = alloc(n * 3 * d)
  r.set(dqkv)
  return r
}

// ---------------------------------------------------------------------------------------------
// The block.

export interface BlockCache {
  n: number
  ln1: LnCache
  h1: Vec
  qkv: Vec
  probs: Float64Array
  att: Vec
  ln2: LnCache
  h2: Vec
  f: Vec // c_fc output, pre-activation
  g: Vec // activation output
}

export function blockForward(
  alloc: Alloc,
  dims: BlockDims,
  W: BlockWeights,
  x: Vec,
  n: number,
): { y: Vec; cache: BlockCache } {
  const { d, heads, activation } = dims
  const ln1 = layerNormForward(alloc, x, n, d, W.ln1w, W.ln1b)
  const qkv = linearForward(alloc, ln1.y, n, d, W.attnW, W.attnB, 3 * d)
  const { out: att, probs } = attentionForward(alloc, qkv, n, d, heads)
  const a = linearForward(alloc, att, n, d, W.projW, W.projB, d)
  const x1 = alloc(n * d)
  for (let i = 0; i < n * d; i++) x1[i] = x[i] + a[i]
  const ln2 = layerNormForward(alloc, x1, n, d, W.ln2w, W.ln2b)
  const f = linearForward(alloc, ln2.y, n, d, W.fcW, W.fcB, 4 * d)
  const g = alloc(n * 4 * d)
  for (let i = 0; i < n * 4 * d; i++) g[i] = activation === 'gelu' ? gelu(f[i]) : Math.max(f[i], 0)
  const m = linearForward(alloc, g, n, 4 * d, W.mprojW, W.mprojB, d)
  const y = alloc(n * d)
  for (let i = 0; i < n * d; i++) y[i] = x1[i] + m[i]
  return { y, cache: { n, ln1: ln1.cache, h1: ln1.y, qkv, probs, att, ln2: ln2.cache, h2: ln2.y, f, g } }
}

/** Returns dx; accumulates the weight gradients into G. */
export function blockBackward(
  alloc: Alloc,
  dims: BlockDims,
  W: BlockWeights,
  G: BlockGrads,
  cache: BlockCache,
  dy: Vec,
): Vec {
  const { d, heads, activation } = dims
  const { n } = cache
  // y = x1 + m
  const dg = linearBackward(alloc, cache.g, n, 4 * d, W.mprojW, d, dy, G.mprojW, G.mprojB)
  const df = alloc(n * 4 * d)
  for (let i = 0; i < n * 4 * d; i++) {
    const fi = cache.f[i]
    df[i] = dg[i] * (activation === 'gelu' ? geluGrad(fi) : fi > 0 ? 1 : 0)
  }
  const dh2 = linearBackward(alloc, cache.h2, n, d, W.fcW, 4 * d, df, G.fcW, G.fcB)
  const dx1ln = layerNormBackward(alloc, cache.ln2, n, d, W.ln2w, dh2, G.ln2w, G.ln2b)
  const dx1 = alloc(n * d)
  for (let i = 0; i < n * d; i++) dx1[i] = dy[i] + dx1ln[i]
  // x1 = x + a
  const datt = linearBackward(alloc, cache.att, n, d, W.projW, d, dx1, G.projW, G.projB)
  const dqkv = attentionBackward(alloc, cache.qkv, cache.probs, datt, n, d, heads)
  const dh1 = linearBackward(alloc, cache.h1, n, d, W.attnW, 3 * d, dqkv, G.attnW, G.attnB)
  const dxln = layerNormBackward(alloc, cache.ln1, n, d, W.ln1w, dh1, G.ln1w, G.ln1b)
  const dx = alloc(n * d)
  for (let i = 0; i < n * d; i++) dx[i] = dx1[i] + dxln[i]
  return dx
}
