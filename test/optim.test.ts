// AdamW (one native call per step) against a hand-written float64 AdamW with torch.optim.AdamW
// semantics, on a real model's parameters:
//
//     norm = ||g||_2 over every tensor; non-finite -> skip the step, nothing changes
//     g *= maxNorm / (norm + 1e-6)     when maxNorm > 0 and norm > maxNorm (torch clip_grad_norm_)
//     t += 1
//     p *= 1 - lr * wd                 (2-D weights only, nanoGPT's decay groups)
//     m = b1 m + (1 - b1) g;  v = b2 v + (1 - b2) g^2
//     p -= lr / (1 - b1^t) * m / (sqrt(v) / sqrt(1 - b2^t) + eps)
//
// Comparisons: relErr (test/helpers.ts) <= 1e-6 per tensor.

import { afterEach, beforeEach, describe, expect, it } from 'vitest'
import { RecurrentTransformer } from '../src/model/transformer.js'
import type { Parameter } from '../src/model/layer.js'
import { AdamW, type AdamWOptions } from '../src/optim/adamw.js'
import { Tensor } from '../src/tensor.js'
import { Rng, caught, relErr, sameBits } from './helpers.js'

const TOL = 1e-6

class RefAdamW {
  m: Float64Array[]
  v: Float64Array[]
  t = 0
  constructor(
    public p: Float64Array[],
    private decay: boolean[],
    private h: Required<AdamWOptions>,
  ) {
    this.m = p.map((x) => new Float64Array(x.length))
    this.v = p.map((x) => new Float64Array(x.length))
  }
  step(g: Float64Array[], lr = this.h.lr): { norm: number; skipped: boolean } {
    let ss = 0
    for (const gi of g) for (const x of gi) ss += x * x
    const norm = Math.sqrt(ss)
    if (!Number.isFinite(norm)) return { norm, skipped: true }
    const scale = this.h.maxGradNorm > 0 && norm > this.h.maxGradNorm ? this.h.maxGradNorm / (norm + 1e-6) : 1
    this.t++
    const [b1, b2] = this.h.betas
    const bc1 = 1 - b1 ** this.t
    const bc2 = 1 - b2 ** this.t
    this.p.forEach((p, k) => {
      const m = this.m[k]
      const v = this.v[k]
      for (let i = 0; i < p.length; i++) {
        const gi = g[k][i] * scale
        if (this.decay[k]) p[i] *= 1 - lr * this.h.weightDecay
        m[i] = b1 * m[i] + (1 - b1) * gi
        v[i] = b2 * v[i] + (1 - b2) * gi * gi
        p[i] -= ((lr / bc1) * m[i]) / (Math.sqrt(v[i]) / Math.sqrt(bc2) + this.h.eps)
      }
    })
    return { norm, skipped: false }
  }
}

const DEFAULTS: Required<AdamWOptions> = { lr: 1e-3, betas: [0.9, 0.999], eps: 1e-8, weightDecay: 0, maxGradNorm: 0 }

function newModel(): RecurrentTransformer {
  // bias: true gives 1-D tensors besides LayerNorm weights; classify gives an untied 2-D head.weight.
  return new RecurrentTransformer({
    vocabSize: 11,
    d: 8,
    heads: 2,
    layers: 2,
    window: 2,
    variant: 'accumulate',
    maxLen: 12,
    bias: true,
    head: { classify: 5 },
    seed: 4,
  })
}

const values = (ps: Parameter[]): Float32Array[] => ps.map((p) => p.value.toArray() as Float32Array)

/** Writes one random gradient per tensor, scales spread over 1e-3 .. 10; returns them (float32 values). */
function writeRandomGrads(ps: Parameter[], rng: Rng, scale = 1): Float64Array[] {
  return ps.map((p) => {
    const s = scale * 10 ** rng.range(-3, 1)
    const g = new Float32Array(p.value.size)
    for (let i = 0; i < g.length; i++) g[i] = s * rng.normal()
    p.grad.handle().write(g)
    return Float64Array.from(g)
  })
}

function expectClose(native: ArrayLike<number>[], ref: ArrayLike<number>[], names: string[], what: string, tol = TOL): void {
  const bad: string[] = []
  native.forEach((a, k) => {
    const e = relErr(a, ref[k])
    if (!(e <= tol)) bad.push(`${what} ${names[k]}: relErr ${e.toExponential(2)}`)
  })
  expect(bad).toEqual([])
}

describe('AdamW vs float64 AdamW (torch semantics)', () => {
  let model: RecurrentTransformer
  let ps: Parameter[]
  let names: string[]
  beforeEach(() => {
    model = newModel()
    ps = model.parameters()
    names = ps.map((p) => p.name)
  })
  afterEach(() => model.dispose())

  it('5 steps with random gradients, weight decay, betas, eps and per-step lr', async () => {
    const h: Required<AdamWOptions> = { lr: 1e-2, betas: [0.8, 0.95], eps: 1e-6, weightDecay: 0.1, maxGradNorm: 0 }
    const opt = new AdamW(ps, model.decayMask(), h)
    const ref = new RefAdamW(values(ps).map((v) => Float64Array.from(v)), model.decayMask(), h)
    const rng = new Rng(1)
    const lrs = [undefined, 3e-3, undefined, 2e-2, 1e-2]
    try {
      for (const lr of lrs) {
        const g = writeRandomGrads(ps, rng)
        const r = await opt.step(lr)
        const rr = ref.step(g, lr)
        expect(r.skipped).toBe(false)
        expect(Math.abs(r.gradNorm - rr.norm) / rr.norm).toBeLessThanOrEqual(1e-12)
        expectClose(values(ps), ref.p, names, 'param')
      }
      expect(opt.stepCount).toBe(5)
      const s = opt.state()
      expect(s.step).toBe(5)
      expectClose(names.map((n) => s.m[n]), ref.m, names, 'm')
      expectClose(names.map((n) => s.v[n]), ref.v, names, 'v')
    } finally {
      opt.dispose()
    }
  })

  it('3 steps on the gradients of lossAndGrad, default hyper-parameters', async () => {
    const opt = new AdamW(ps, model.decayMask())
    expect([opt.lr, opt.betas, opt.eps, opt.weightDecay, opt.maxGradNorm]).toEqual([1e-3, [0.9, 0.999], 1e-8, 0, 0])
    const ref = new RefAdamW(values(ps).map((v) => Float64Array.from(v)), model.decayMask(), DEFAULTS)
    const rng = new Rng(2)
    try {
      for (let s = 0; s < 3; s++) {
        const tokens = Int32Array.from({ length: 4 * 9 }, () => rng.int(11))
        const targets = Int32Array.from({ length: 4 }, () => rng.int(5))
        const tok = Tensor.fromArray(tokens, [4, 9], 'int32')
        const tgt = Tensor.fromArray(targets, [4, 1], 'int32')
        model.zeroGrad()
        await model.lossAndGrad(tok, tgt)
        tok.dispose()
        tgt.dispose()
        const g = ps.map((p) => Float64Array.from(p.grad.toArray()))
        expect(g.some((x) => x.some((y) => y !== 0))).toBe(true)
        await opt.step()
        ref.step(g)
        expectClose(values(ps), ref.p, names, 'param')
      }
    } finally {
      opt.dispose()
    }
  })

  it('weight decay applies to 2-D weights only (zero gradients: a pure decay step)', async () => {
    const decay = model.decayMask()
    expect(decay).toEqual(ps.map((p) => p.shape.length === 2))
    expect(decay.some((x) => x) && decay.some((x) => !x)).toBe(true)
    const before = values(ps)
    const opt = new AdamW(ps, decay, { lr: 0.05, weightDecay: 0.2 })
    try {
      for (const p of ps) p.grad.handle().zero()
      const r = await opt.step()
      expect(r).toEqual({ gradNorm: 0, skipped: false })
      const after = values(ps)
      ps.forEach((p, k) => {
        if (decay[k]) {
          const want = Float64Array.from(before[k], (x) => x * (1 - 0.05 * 0.2))
          expect(relErr(after[k], want), p.name).toBeLessThanOrEqual(TOL)
          expect(sameBits(after[k], before[k]), p.name).toBe(false)
        } else {
          expect(sameBits(after[k], before[k]), p.name).toBe(true)
        }
      })
    } finally {
      opt.dispose()
    }
  })

  it('an all-false decay mask leaves every weight alone under zero gradients', async () => {
    const before = values(ps)
    const opt = new AdamW(ps, ps.map(() => false), { lr: 0.05, weightDecay: 0.2 })
    try {
      for (const p of ps) p.grad.handle().zero()
      await opt.step()
      values(ps).forEach((a, k) => expect(sameBits(a, before[k]), names[k]).toBe(true))
    } finally {
      opt.dispose()
    }
  })

  it('global-norm clipping scales the gradient to exactly maxGradNorm (torch: max / (norm + 1e-6))', async () => {
    const maxGradNorm = 0.5
    const h: Required<AdamWOptions> = { ...DEFAULTS, lr: 1e-2, maxGradNorm }
    const opt = new AdamW(ps, model.decayMask(), h)
    const ref = new RefAdamW(values(ps).map((v) => Float64Array.from(v)), model.decayMask(), h)
    const rng = new Rng(3)
    try {
      const g = writeRandomGrads(ps, rng, 3)
      const norm = Math.sqrt(g.reduce((s, x) => s + x.reduce((a, y) => a + y * y, 0), 0))
      expect(norm).toBeGreaterThan(10 * maxGradNorm)
      const r = await opt.step()
      ref.step(g)
      expect(Math.abs(r.gradNorm - norm) / norm).toBeLessThanOrEqual(1e-12) // reported before clipping
      // After one step m = (1 - b1) * clipped g: its norm is maxGradNorm, its direction g's.
      const s = opt.state()
      let ss = 0
      for (const n of names) for (const x of s.m[n]) ss += (x / 0.1) ** 2
      expect(Math.abs(Math.sqrt(ss) - maxGradNorm) / maxGradNorm).toBeLessThanOrEqual(TOL)
      expectClose(names.map((n) => s.m[n]), ref.m, names, 'm')
      expectClose(values(ps), ref.p, names, 'param')
      // Below the threshold, nothing is scaled.
      const small = writeRandomGrads(ps, rng, 1e-4)
      const n2 = Math.sqrt(small.reduce((a, x) => a + x.reduce((b, y) => b + y * y, 0), 0))
      expect(n2).toBeLessThan(maxGradNorm)
      const r2 = await opt.step()
      ref.step(small)
      expect(Math.abs(r2.gradNorm - n2) / n2).toBeLessThanOrEqual(1e-12)
      const s2 = opt.state()
      expectClose(names.map((n) => s2.m[n]), ref.m, names, 'm')
      expectClose(values(ps), ref.p, names, 'param')
    } finally {
      opt.dispose()
    }
  })

  it('a NaN or infinite gradient skips the step: nothing changes, the step count stays', async () => {
    const h: Required<AdamWOptions> = { ...DEFAULTS, lr: 1e-2, weightDecay: 0.1, maxGradNorm: 1 }
    const opt = new AdamW(ps, model.decayMask(), h)
    const ref = new RefAdamW(values(ps).map((v) => Float64Array.from(v)), model.decayMask(), h)
    const rng = new Rng(4)
    try {
      ref.step(writeRandomGrads(ps, rng))
      await opt.step()
      for (const bad of [NaN, Infinity, -Infinity]) {
        const pBefore = values(ps)
        const sBefore = opt.state()
        const g = writeRandomGrads(ps, rng)
        const k = 3
        const gk = Float32Array.from(g[k])
        gk[2] = bad
        ps[k].grad.handle().write(gk)
        const r = await opt.step()
        expect(r.skipped).toBe(true)
        expect(Number.isFinite(r.gradNorm)).toBe(false)
        expect(opt.stepCount).toBe(1)
        values(ps).forEach((a, i) => expect(sameBits(a, pBefore[i]), names[i]).toBe(true))
        const sAfter = opt.state()
        expect(sAfter.step).toBe(1)
        for (const n of names) {
          expect(sameBits(sAfter.m[n], sBefore.m[n]), n).toBe(true)
          expect(sameBits(sAfter.v[n], sBefore.v[n]), n).toBe(true)
        }
      }
      // The next good step is step 2 (bias correction included).
      ref.step(writeRandomGrads(ps, rng))
      const r = await opt.step()
      expect(r.skipped).toBe(false)
      expect(opt.stepCount).toBe(2)
      expectClose(values(ps), ref.p, names, 'param')
    } finally {
      opt.dispose()
    }
  })

  it('queue(): queued steps, their results read late and out of order, give step()\'s bits; a skip between them does not count', async () => {
    const h: Required<AdamWOptions> = { lr: 1e-2, betas: [0.8, 0.95], eps: 1e-6, weightDecay: 0.1, maxGradNorm: 3 }
    const a = new AdamW(ps, model.decayMask(), h)
    const other = newModel()
    const ps2 = other.parameters()
    const b = new AdamW(ps2, other.decayMask(), h)
    const ref = new RefAdamW(values(ps).map((v) => Float64Array.from(v)), model.decayMask(), h)
    const rng = new Rng(9)
    const lrs = [undefined, 3e-3, 2e-2, undefined, 1e-2]
    try {
      const pending = []
      const expected: { norm: number; skipped: boolean }[] = []
      for (const [i, lr] of lrs.entries()) {
        const g = writeRandomGrads(ps, rng)
        if (i === 2) {
          // Step 3's gradient is not finite: it is skipped, and step 4 applies bias correction t = 3.
          const gk = Float32Array.from(g[1])
          gk[0] = NaN
          ps[1].grad.handle().write(gk)
          g[1] = Float64Array.from(gk)
        }
        ps2.forEach((p, k) => p.grad.handle().write(Float32Array.from(g[k])))
        pending.push(await a.queue(lr))
        const rb = await b.step(lr)
        const rr = ref.step(g, lr)
        expected.push(rr)
        expect(rb.skipped).toBe(rr.skipped)
      }
      // Read in reverse order, one twice.
      const got = []
      for (let i = pending.length - 1; i >= 0; i--) got[i] = await pending[i].result()
      expect(await pending[1].result()).toEqual(got[1])
      expect(got.map((r) => r.skipped)).toEqual([false, false, true, false, false])
      got.forEach((r, i) => {
        if (expected[i].skipped) expect(Number.isFinite(r.gradNorm)).toBe(false)
        else expect(Math.abs(r.gradNorm - expected[i].norm) / expected[i].norm).toBeLessThanOrEqual(1e-12)
      })
      expect(a.stepCount).toBe(4)
      expect(a.state().step).toBe(4)
      expectClose(values(ps), ref.p, names, 'param')
      const va = values(ps)
      values(ps2).forEach((x, k) => expect(sameBits(x, va[k]), names[k]).toBe(true))
    } finally {
      a.dispose()
      b.dispose()
      other.dispose()
    }
  })

  it('state() / loadState() round trip: a restored optimizer continues bit for bit', async () => {
    const h: AdamWOptions = { lr: 1e-2, betas: [0.9, 0.99], weightDecay: 0.05, maxGradNorm: 2 }
    const a = new AdamW(ps, model.decayMask(), h)
    const other = newModel()
    const b = new AdamW(other.parameters(), other.decayMask(), h)
    const rng = new Rng(5)
    try {
      for (let s = 0; s < 3; s++) {
        writeRandomGrads(ps, rng)
        await a.step()
      }
      const state = a.state()
      expect(state.step).toBe(3)
      // state() is a copy: changing it does not touch the optimizer.
      state.m[names[0]].fill(123)
      expect(a.state().m[names[0]][0]).not.toBe(123)
      const fresh = a.state()
      other.importParameters(model.exportParameters())
      b.loadState(fresh)
      expect(b.stepCount).toBe(3)
      const rb = b.state()
      for (const n of names) {
        expect(sameBits(rb.m[n], fresh.m[n]), n).toBe(true)
        expect(sameBits(rb.v[n], fresh.v[n]), n).toBe(true)
      }
      for (let s = 0; s < 2; s++) {
        const g = writeRandomGrads(ps, rng)
        other.parameters().forEach((p, k) => p.grad.handle().write(Float32Array.from(g[k])))
        const ra = await a.step()
        const rb2 = await b.step()
        expect(rb2).toEqual(ra)
      }
      const pa = model.exportParameters()
      const pb = other.exportParameters()
      for (const n of names) expect(sameBits(pa[n], pb[n]), n).toBe(true)
      const sa = a.state()
      const sb = b.state()
      for (const n of names) expect(sameBits(sa.m[n], sb.m[n]) && sameBits(sa.v[n], sb.v[n]), n).toBe(true)
    } finally {
      a.dispose()
      b.dispose()
      other.dispose()
    }
  })

  it('loadState rejects missing or wrong-sized moments and a bad step, naming the parameter', async () => {
    const opt = new AdamW(ps, model.decayMask())
    try {
      const s = opt.state()
      const n = names[4]
      const missing = { ...s, m: { ...s.m } }
      delete missing.m[n]
      expect((await caught(() => opt.loadState(missing))).message).toContain(n)
      const wrong = { ...s, v: { ...s.v, [n]: new Float32Array(1) } }
      expect((await caught(() => opt.loadState(wrong))).message).toContain(n)
      expect((await caught(() => opt.loadState({ ...s, step: -1 }))).message).toMatch(/step/)
      expect((await caught(() => opt.loadState({ ...s, step: 1.5 }))).message).toMatch(/step/)
    } finally {
      opt.dispose()
    }
  })

  it('bad hyper-parameters are errors that name them', async () => {
    const d = model.decayMask()
    expect((await caught(() => new AdamW(ps, d, { lr: 0 }))).message).toMatch(/lr/)
    expect((await caught(() => new AdamW(ps, d, { lr: NaN }))).message).toMatch(/lr/)
    expect((await caught(() => new AdamW(ps, d, { betas: [1, 0.9] }))).message).toMatch(/betas/)
    expect((await caught(() => new AdamW(ps, d, { betas: [0.9, -0.1] }))).message).toMatch(/betas/)
    expect((await caught(() => new AdamW(ps, d, { eps: 0 }))).message).toMatch(/eps/)
    expect((await caught(() => new AdamW(ps, d, { weightDecay: -1 }))).message).toMatch(/weightDecay/)
    expect((await caught(() => new AdamW(ps, d, { maxGradNorm: -1 }))).message).toMatch(/maxGradNorm/)
    expect((await caught(() => new AdamW(ps, d.slice(1)))).message).toMatch(/decay/)
    const opt = new AdamW(ps, d)
    try {
      expect((await caught(() => opt.step(-1))).message).toMatch(/lr/)
      expect((await caught(() => opt.step(Infinity))).message).toMatch(/lr/)
      expect(opt.stepCount).toBe(0)
    } finally {
      opt.dispose()
    }
  })
})
