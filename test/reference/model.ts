// Float64 reference of the whole model (DESIGN.md section 1): token embedding (+ learned position
// embedding), the recurrent layer stack (./recurrent.ts), the final LayerNorm ln_f, and a head:
//
//   lm:        logits at every position, W = wte (tied)
//   copy M:    logits at the last M positions, W = wte (tied)
//   classify:  logits at the last position, W = head.weight (untied, [C, d])
//
// loss = mean over the non-ignored targets of cross-entropy(logits, target); targets equal to
// IGNORE (-1) are not scored. The gradient of wte sums the embedding's and the tied head's parts.
// Test-only code; slow and obvious on purpose. No dropout.

import { type Params, type ReferenceConfig, parameterShapes, referenceForward, referenceGradients } from './recurrent.js'

export const IGNORE = -1

export type RefHead = 'lm' | { copy: number } | { classify: number }

export interface ModelReferenceConfig extends ReferenceConfig {
  vocabSize: number
  maxLen: number
  positional: boolean
  head: RefHead
}

/** Names and shapes of every model parameter, in the model's order (wte, wpe, stack, ln_f, head). */
export function modelParameterShapes(cfg: ModelReferenceConfig): { name: string; shape: number[] }[] {
  const { d } = cfg
  const out: { name: string; shape: number[] }[] = [{ name: 'transformer.wte.weight', shape: [cfg.vocabSize, d] }]
  if (cfg.positional) out.push({ name: 'transformer.wpe.weight', shape: [cfg.maxLen, d] })
  out.push(...parameterShapes(cfg))
  out.push({ name: 'transformer.ln_f.weight', shape: [d] })
  if (cfg.bias) out.push({ name: 'transformer.ln_f.bias', shape: [d] })
  if (typeof cfg.head === 'object' && 'classify' in cfg.head) out.push({ name: 'head.weight', shape: [cfg.head.classify, d] })
  return out
}

/** Scored positions per sequence of n tokens. */
export function scoredPositions(head: RefHead, n: number): number {
  if (head === 'lm') return n
  return 'copy' in head ? head.copy : 1
}

/** Number of classes of the head's logits. */
export function headClasses(cfg: ModelReferenceConfig): number {
  return typeof cfg.head === 'object' && 'classify' in cfg.head ? cfg.head.classify : cfg.vocabSize
}

export interface ModelReferenceResult {
  loss: number
  correct: number
  count: number
  /** Logits of the scored positions, [B, P, classes]. */
  logits: Float64Array
  /** Gradients of the mean loss under the parameter names (only when asked for). */
  grads?: Params
}

const LN_EPS = 1e-5

function get(params: Params, name: string, size: number): Float64Array {
  const v = params[name]
  if (v === undefined) throw new Error(`model reference: missing parameter ${name}`)
  if (v.length !== size) throw new Error(`model reference: ${name} has ${v.length} values, expected ${size}`)
  return v
}

/**
 * Forward (and, with `grad`, backward) of the whole model on tokens [B, N] and targets [B, P]
 * (P = the head's scored positions).
 */
export function referenceModel(
  cfg: ModelReferenceConfig,
  params: Params,
  tokens: ArrayLike<number>,
  targets: ArrayLike<number>,
  B: number,
  N: number,
  opts: { grad?: boolean } = {},
): ModelReferenceResult {
  const { d, vocabSize: V } = cfg
  const P = scoredPositions(cfg.head, N)
  const C = headClasses(cfg)
  if (tokens.length !== B * N) throw new Error('model reference: tokens has the wrong size')
  if (targets.length !== B * P) throw new Error('model reference: targets has the wrong size')
  if (cfg.positional && N > cfg.maxLen) throw new Error('model reference: N exceeds maxLen')
  const wte = get(params, 'transformer.wte.weight', V * d)
  const wpe = cfg.positional ? get(params, 'transformer.wpe.weight', cfg.maxLen * d) : null
  const lnw = get(params, 'transformer.ln_f.weight', d)
  const lnb = cfg.bias ? get(params, 'transformer.ln_f.bias', d) : null
  const classify = typeof cfg.head === 'object' && 'classify' in cfg.head
  const W = classify ? get(params, 'head.weight', C * d) : wte

  // Embedding.
  const x = new Float64Array(B * N * d)
  for (let r = 0; r < B * N; r++) {
    const t = tokens[r]
    if (!(Number.isInteger(t) && t >= 0 && t < V)) throw new Error(`model reference: token ${t} out of range`)
    const n = r % N
    for (let c = 0; c < d; c++) x[r * d + c] = wte[t * d + c] + (wpe ? wpe[n * d + c] : 0)
  }
  const y = referenceForward(cfg, params, x, B, N)

  // Final LayerNorm of the scored rows, logits, loss.
  const R = B * P
  const xs = new Float64Array(R * d) // gathered rows of y
  const xhat = new Float64Array(R * d)
  const h = new Float64Array(R * d)
  const rstd = new Float64Array(R)
  for (let b = 0; b < B; b++) {
    for (let i = 0; i < P; i++) {
      const row = b * P + i
      const src = (b * N + (N - P + i)) * d
      let mean = 0
      for (let c = 0; c < d; c++) mean += y[src + c]
      mean /= d
      let v = 0
      for (let c = 0; c < d; c++) v += (y[src + c] - mean) ** 2
      v /= d
      const rs = 1 / Math.sqrt(v + LN_EPS)
      rstd[row] = rs
      for (let c = 0; c < d; c++) {
        xs[row * d + c] = y[src + c]
        const xh = (y[src + c] - mean) * rs
        xhat[row * d + c] = xh
        h[row * d + c] = xh * lnw[c] + (lnb ? lnb[c] : 0)
      }
    }
  }
  const logits = new Float64Array(R * C)
  for (let r = 0; r < R; r++) {
    for (let k = 0; k < C; k++) {
      let s = 0
      for (let c = 0; c < d; c++) s += h[r * d + c] * W[k * d + c]
      logits[r * C + k] = s
    }
  }
  let count = 0
  for (let r = 0; r < R; r++) {
    const t = targets[r]
    if (t === IGNORE) continue
    if (!(Number.isInteger(t) && t >= 0 && t < C)) throw new Error(`model reference: target ${t} out of range`)
    count++
  }
  let lossSum = 0
  let correct = 0
  const dlogits = new Float64Array(R * C)
  for (let r = 0; r < R; r++) {
    const t = targets[r]
    if (t === IGNORE) continue
    const z = logits.subarray(r * C, (r + 1) * C)
    let mx = -Infinity
    let arg = 0
    for (let k = 0; k < C; k++) {
      if (z[k] > mx) {
        mx = z[k]
        arg = k
      }
    }
    let s = 0
    for (let k = 0; k < C; k++) s += Math.exp(z[k] - mx)
    const lse = mx + Math.log(s)
    lossSum += lse - z[t]
    if (arg === t) correct++
    for (let k = 0; k < C; k++) dlogits[r * C + k] = Math.exp(z[k] - lse) / count
    dlogits[r * C + t] -= 1 / count
  }
  const loss = count ? lossSum / count : 0
  if (!opts.grad) return { loss, correct, count, logits }

  // Backward: head, ln_f, stack, embedding.
  const grads: Params = {}
  for (const { name, shape } of modelParameterShapes(cfg)) grads[name] = new Float64Array(shape.reduce((a, b) => a * b, 1))
  const dW = classify ? grads['head.weight'] : grads['transformer.wte.weight']
  const dh = new Float64Array(R * d)
  for (let r = 0; r < R; r++) {
    for (let k = 0; k < C; k++) {
      const g = dlogits[r * C + k]
      if (g === 0) continue
      for (let c = 0; c < d; c++) {
        dW[k * d + c] += g * h[r * d + c]
        dh[r * d + c] += g * W[k * d + c]
      }
    }
  }
  const dlnw = grads['transformer.ln_f.weight']
  const dlnb = cfg.bias ? grads['transformer.ln_f.bias'] : null
  const dy = new Float64Array(B * N * d)
  for (let b = 0; b < B; b++) {
    for (let i = 0; i < P; i++) {
      const row = b * P + i
      let meanG = 0
      let meanGX = 0
      for (let c = 0; c < d; c++) {
        const g = dh[row * d + c] * lnw[c]
        meanG += g
        meanGX += g * xhat[row * d + c]
        dlnw[c] += dh[row * d + c] * xhat[row * d + c]
        if (dlnb) dlnb[c] += dh[row * d + c]
      }
      meanG /= d
      meanGX /= d
      const dst = (b * N + (N - P + i)) * d
      for (let c = 0; c < d; c++) {
        const g = dh[row * d + c] * lnw[c]
        dy[dst + c] = rstd[row] * (g - meanG - xhat[row * d + c] * meanGX)
      }
    }
  }
  const st = referenceGradients(cfg, params, x, B, N, dy)
  for (const [name, g] of Object.entries(st.grads)) grads[name] = g
  const dwte = grads['transformer.wte.weight']
  const dwpe = cfg.positional ? grads['transformer.wpe.weight'] : null
  for (let r = 0; r < B * N; r++) {
    const t = tokens[r]
    const n = r % N
    for (let c = 0; c < d; c++) {
      dwte[t * d + c] += st.dx[r * d + c]
      if (dwpe) dwpe[n * d + c] += st.dx[r * d + c]
    }
  }
  return { loss, correct, count, logits, grads }
}
