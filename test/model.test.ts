// RecurrentTransformer (embedding + recurrent stack + ln_f + head, native float32) against the float64
// reference of test/reference/model.ts: parameter names and counts, loss and every gradient, logits,
// evaluate(), dropout, and bad input.
//
// Error measure, per tensor (as in test/layer.test.ts, see test/helpers.ts):
//
//     relErr(native, ref) = max_i |native_i - ref_i| / max(max_i |ref_i|, 1e-6)
//
// and every comparison must satisfy relErr <= 1e-4 (TOL). The loss is compared relatively.

import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import type { ModelConfig } from '../src/model/config.js'
import { IGNORE_INDEX, RecurrentTransformer } from '../src/model/transformer.js'
import { AdamW } from '../src/optim/adamw.js'
import { Tensor } from '../src/tensor.js'
import { Rng, caught, randn, randomParams, relErr, sameBits, toFloat32Record } from './helpers.js'
import type { Params } from './reference/index.js'
import {
  IGNORE,
  type ModelReferenceConfig,
  type RefHead,
  headClasses,
  modelParameterShapes,
  referenceModel,
  scoredPositions,
} from './reference/model.js'

const TOL = 1e-4

// ---------------------------------------------------------------------------------------------
// Helpers.

function nativeConfig(cfg: ModelReferenceConfig, extra: Partial<ModelConfig> = {}): ModelConfig {
  return {
    vocabSize: cfg.vocabSize,
    d: cfg.d,
    heads: cfg.heads,
    layers: cfg.layers,
    window: cfg.window,
    variant: cfg.variant,
    positional: cfg.positional,
    maxLen: cfg.maxLen,
    activation: cfg.activation,
    bias: cfg.bias,
    head: cfg.head,
    dropout: 0,
    seed: 3,
    ...extra,
  }
}

/** Random weights that make the check sensitive: embeddings and head N(0, 0.3^2), stack as randomParams. */
function randomModelParams(cfg: ModelReferenceConfig, rng: Rng, alphas: number[] = []): Params {
  const p: Params = randomParams(cfg, rng, alphas)
  for (const { name, shape } of modelParameterShapes(cfg)) {
    if (p[name]) continue
    const n = shape.reduce((a, b) => a * b, 1)
    if (name === 'transformer.ln_f.weight') {
      p[name] = new Float64Array(n)
      for (let i = 0; i < n; i++) p[name][i] = Math.fround(1 + rng.range(-0.2, 0.2))
    } else if (name === 'transformer.ln_f.bias') {
      p[name] = randn(rng, n, 0.1)
    } else {
      p[name] = randn(rng, n, 0.3)
    }
  }
  return p
}

/** tokens [B, N] uniform over the vocabulary; targets [B, P] with ~25% IGNORE (at least one scored). */
function randomBatch(cfg: ModelReferenceConfig, rng: Rng, B: number, N: number): { tokens: Int32Array; targets: Int32Array; P: number } {
  const P = scoredPositions(cfg.head, N)
  const C = headClasses(cfg)
  const tokens = new Int32Array(B * N)
  for (let i = 0; i < tokens.length; i++) tokens[i] = rng.int(cfg.vocabSize)
  const targets = new Int32Array(B * P)
  for (let i = 0; i < targets.length; i++) targets[i] = rng.uniform() < 0.25 ? IGNORE : rng.int(C)
  targets[0] = rng.int(C)
  return { tokens, targets, P }
}

function makeModel(cfg: ModelReferenceConfig, params: Params, extra: Partial<ModelConfig> = {}): RecurrentTransformer {
  const model = new RecurrentTransformer(nativeConfig(cfg, extra))
  model.importParameters(toFloat32Record(params))
  return model
}

function grads(model: RecurrentTransformer): Record<string, Float32Array> {
  return Object.fromEntries(model.parameters().map((p) => [p.name, p.grad.toArray() as Float32Array]))
}

async function step(
  model: RecurrentTransformer,
  tokens: Int32Array,
  targets: Int32Array,
  B: number,
  N: number,
  P: number,
  opts: Parameters<RecurrentTransformer['lossAndGrad']>[2] = {},
): Promise<{ loss: number; correct: number; count: number; grads: Record<string, Float32Array> }> {
  const tok = Tensor.fromArray(tokens, [B, N], 'int32')
  const tgt = Tensor.fromArray(targets, [B, P], 'int32')
  try {
    model.zeroGrad()
    const r = await model.lossAndGrad(tok, tgt, opts)
    return { ...r, grads: grads(model) }
  } finally {
    tok.dispose()
    tgt.dispose()
  }
}

function headName(h: RefHead): string {
  return h === 'lm' ? 'lm' : 'copy' in h ? `copy${h.copy}` : `classify${h.classify}`
}

function caseName(cfg: ModelReferenceConfig, B: number, N: number): string {
  return (
    `${headName(cfg.head)} ${cfg.variant} w=${cfg.window} L=${cfg.layers} ${cfg.activation} ` +
    `${cfg.bias ? 'bias' : 'nobias'} ${cfg.positional ? 'pos' : 'nopos'} B=${B} N=${N}`
  )
}

function baseCfg(over: Partial<ModelReferenceConfig> = {}): ModelReferenceConfig {
  return {
    vocabSize: 11,
    maxLen: 16,
    positional: true,
    head: 'lm',
    d: 8,
    heads: 2,
    layers: 1,
    window: 3,
    variant: 'accumulate',
    activation: 'gelu',
    bias: false,
    ...over,
  }
}

// ---------------------------------------------------------------------------------------------
// 1. Parameter names and counts.

describe('model: parameters', () => {
  it('parameterCount of the paper copy model (d 96, w 32, accumulate, maxLen 4128) is 508,705', () => {
    const m = new RecurrentTransformer({
      vocabSize: 16,
      d: 96,
      heads: 6,
      layers: 1,
      window: 32,
      variant: 'accumulate',
      maxLen: 4128,
      head: { copy: 16 },
    })
    try {
      expect(m.parameterCount()).toBe(508_705)
      expect(m.parameters().reduce((n, p) => n + p.value.size, 0)).toBe(508_705)
    } finally {
      m.dispose()
    }
  })

  it('parameterCount of the char model (V 65, d 384, w 16, maxLen 256) is 1,893,889', () => {
    const m = new RecurrentTransformer({ vocabSize: 65, d: 384, heads: 6, layers: 1, window: 16, maxLen: 256 })
    try {
      expect(m.parameterCount()).toBe(1_893_889)
    } finally {
      m.dispose()
    }
  })

  it('nanoGPT names and shapes, tied lm head, untied classify head, decay mask on 2-D weights', () => {
    const heads: RefHead[] = ['lm', { copy: 4 }, { classify: 5 }]
    for (const head of heads) {
      for (const bias of [false, true]) {
        for (const positional of [false, true]) {
          const cfg = baseCfg({ head, bias, positional, layers: 2 })
          const m = new RecurrentTransformer(nativeConfig(cfg))
          try {
            const got = m.parameters().map((p) => ({ name: p.name, shape: [...p.shape] }))
            expect(got, `${headName(head)} bias=${bias} pos=${positional}`).toEqual(modelParameterShapes(cfg))
            const names = got.map((p) => p.name)
            expect(names).not.toContain('lm_head.weight')
            expect(names.includes('head.weight')).toBe(typeof head === 'object' && 'classify' in head)
            expect(names.includes('transformer.ln_f.bias')).toBe(bias)
            expect(names.includes('transformer.wpe.weight')).toBe(positional)
            expect(m.decayMask()).toEqual(m.parameters().map((p) => p.shape.length === 2))
            expect(Object.keys(m.exportParameters())).toEqual(names)
            expect(m.parameterCount()).toBe(got.reduce((n, p) => n + p.shape.reduce((a, b) => a * b, 1), 0))
          } finally {
            m.dispose()
          }
        }
      }
    }
  })

  it('the initial weights follow the design: LayerNorm 1, embeddings ~N(0, 0.02), c_proj scaled', () => {
    const m = new RecurrentTransformer({ vocabSize: 64, d: 64, heads: 4, layers: 2, window: 8, maxLen: 128, bias: true })
    try {
      const p = m.exportParameters()
      const std = (a: Float32Array): number => Math.sqrt(a.reduce((s, x) => s + x * x, 0) / a.length)
      expect(p['transformer.ln_f.weight'].every((x) => x === 1)).toBe(true)
      expect(p['transformer.ln_f.bias'].every((x) => x === 0)).toBe(true)
      const near = (name: string, want: number): void => {
        expect(Math.abs(std(p[name]) / want - 1), name).toBeLessThan(0.06)
      }
      near('transformer.wte.weight', 0.02)
      near('transformer.wpe.weight', 0.02)
      near('transformer.h.0.attn.c_attn.weight', 0.02)
      near('transformer.h.1.mlp.c_fc.weight', 0.02)
      // c_proj weights: 0.02 / sqrt(2 L), L = 2 layers.
      near('transformer.h.0.attn.c_proj.weight', 0.01)
      near('transformer.h.1.mlp.c_proj.weight', 0.01)
      expect(p['transformer.h.0.ln_1.weight'].every((x) => x === 1)).toBe(true)
      expect(p['transformer.h.0.attn.c_attn.bias'].every((x) => x === 0)).toBe(true)
      expect(p['transformer.h.0.alpha'][0]).toBe(0.5)
      // Same seed, same weights; another seed, other weights.
      const m2 = new RecurrentTransformer({ vocabSize: 64, d: 64, heads: 4, layers: 2, window: 8, maxLen: 128, bias: true })
      const m3 = new RecurrentTransformer({ vocabSize: 64, d: 64, heads: 4, layers: 2, window: 8, maxLen: 128, bias: true, seed: 1 })
      try {
        expect(sameBits(m2.exportParameters()['transformer.wte.weight'], p['transformer.wte.weight'])).toBe(true)
        expect(sameBits(m3.exportParameters()['transformer.wte.weight'], p['transformer.wte.weight'])).toBe(false)
      } finally {
        m2.dispose()
        m3.dispose()
      }
    } finally {
      m.dispose()
    }
  })
})

// ---------------------------------------------------------------------------------------------
// 2. The reference checks itself: central finite differences in float64.

describe('model reference: finite differences', () => {
  const cases: { cfg: ModelReferenceConfig; B: number; N: number; alphas: number[] }[] = [
    { cfg: baseCfg({ head: 'lm', window: 3, variant: 'accumulate', layers: 2, bias: true }), B: 2, N: 7, alphas: [0.4, 0.65] },
    { cfg: baseCfg({ head: { copy: 3 }, window: 1, variant: 'forget', positional: false }), B: 2, N: 5, alphas: [] },
    { cfg: baseCfg({ head: { classify: 5 }, window: 0, variant: 'accumulate', bias: true }), B: 3, N: 4, alphas: [] },
  ]
  for (const [ci, { cfg, B, N, alphas }] of cases.entries()) {
    it(caseName(cfg, B, N), () => {
      const rng = new Rng(100 + ci)
      const params = randomModelParams(cfg, rng, alphas)
      const { tokens, targets } = randomBatch(cfg, rng, B, N)
      const ref = referenceModel(cfg, params, tokens, targets, B, N, { grad: true })
      expect(Number.isFinite(ref.loss)).toBe(true)
      const h = 1e-5
      const problems: string[] = []
      for (const { name, shape } of modelParameterShapes(cfg)) {
        const v = params[name]
        const g = ref.grads![name]
        const rowLimit = name === 'transformer.wpe.weight' ? N * cfg.d : v.length
        const idx = new Set<number>()
        for (let k = 0; k < Math.min(6, rowLimit); k++) idx.add(rng.int(rowLimit))
        if (name === 'transformer.wte.weight') idx.add(tokens[0] * cfg.d + 1) // a row the embedding uses
        const fd: number[] = []
        const an: number[] = []
        for (const i of idx) {
          const old = v[i]
          v[i] = old + h
          const lp = referenceModel(cfg, params, tokens, targets, B, N).loss
          v[i] = old - h
          const lm = referenceModel(cfg, params, tokens, targets, B, N).loss
          v[i] = old
          fd.push((lp - lm) / (2 * h))
          an.push(g[i])
        }
        const e = relErr(an, fd)
        if (!(e <= 1e-6) && Math.max(...fd.map(Math.abs)) > 1e-9) problems.push(`${name} [${shape}]: relErr ${e.toExponential(2)}`)
      }
      // The gradient beyond the used positions of wpe is exactly zero.
      if (cfg.positional) expect(ref.grads!['transformer.wpe.weight'].subarray(N * cfg.d).every((x) => x === 0)).toBe(true)
      expect(problems).toEqual([])
    })
  }

  it('ignored targets do not count; all ignored gives loss 0 and zero gradients', () => {
    const cfg = baseCfg({ head: 'lm' })
    const rng = new Rng(7)
    const params = randomModelParams(cfg, rng)
    const { tokens, targets } = randomBatch(cfg, rng, 2, 5)
    const r = referenceModel(cfg, params, tokens, targets, 2, 5)
    expect(r.count).toBe(targets.filter((t) => t !== IGNORE).length)
    const none = referenceModel(cfg, params, tokens, new Int32Array(10).fill(IGNORE), 2, 5, { grad: true })
    expect(none.loss).toBe(0)
    expect(none.count).toBe(0)
    for (const g of Object.values(none.grads!)) expect(g.every((x) => x === 0)).toBe(true)
  })
})

// ---------------------------------------------------------------------------------------------
// 3. Native vs reference: loss, every gradient, logits, evaluate.

interface Case {
  cfg: ModelReferenceConfig
  B: number
  N: number
  alphas: number[]
  seed: number
}

function grid(): Case[] {
  const out: Case[] = []
  const rng = new Rng(2024)
  let seed = 0
  for (const head of ['lm', 'copy', 'classify'] as const) {
    for (const window of [0, 1, 3]) {
      for (const variant of ['forget', 'accumulate'] as const) {
        for (const layers of [1, 2]) {
          for (const [bias, positional] of [
            [false, true],
            [true, false],
            [true, true],
            [false, false],
          ] as const) {
            // Keep the grid a reasonable size: all heads, windows, variants and layer counts, and the
            // bias / positional combinations spread over the rest.
            if ((seed++ + layers) % 2 === 1 && !(bias && positional)) continue
            const N = 2 + rng.int(12) // 2..13
            const h: RefHead = head === 'lm' ? 'lm' : head === 'copy' ? { copy: 1 + rng.int(N) } : { classify: 2 + rng.int(6) }
            const cfg = baseCfg({ head: h, window, variant, layers, bias, positional, activation: rng.uniform() < 0.5 ? 'gelu' : 'relu' })
            const alphas = Array.from({ length: layers }, () => Math.fround(rng.range(0.15, 0.85)))
            out.push({ cfg, B: 1 + rng.int(3), N, alphas, seed })
          }
        }
      }
    }
  }
  return out
}

async function compareCase({ cfg, B, N, alphas, seed }: Case, opts: { callWindow?: number } = {}): Promise<void> {
  const rng = new Rng(seed * 7919 + 1)
  const params = randomModelParams(cfg, rng, alphas)
  const { tokens, targets, P } = randomBatch(cfg, rng, B, N)
  const refCfg = opts.callWindow === undefined ? cfg : { ...cfg, window: opts.callWindow }
  const ref = referenceModel(refCfg, params, tokens, targets, B, N, { grad: true })
  const model = makeModel(cfg, params)
  const problems: string[] = []
  try {
    const nat = await step(model, tokens, targets, B, N, P, { window: opts.callWindow })
    const lossErr = Math.abs(nat.loss - ref.loss) / Math.max(Math.abs(ref.loss), 1e-6)
    if (!(lossErr <= TOL)) problems.push(`loss ${nat.loss} vs ${ref.loss} (rel ${lossErr.toExponential(2)})`)
    if (nat.count !== ref.count) problems.push(`count ${nat.count} vs ${ref.count}`)
    if (nat.correct !== ref.correct) problems.push(`correct ${nat.correct} vs ${ref.correct}`)
    const names = Object.keys(nat.grads)
    const expected = modelParameterShapes(cfg).map((s) => s.name)
    if (names.join() !== expected.join()) problems.push(`names ${names.join()} vs ${expected.join()}`)
    for (const name of expected) {
      const e = relErr(nat.grads[name] ?? [], ref.grads![name])
      if (!(e <= TOL)) problems.push(`${name}: relErr ${e.toExponential(2)}`)
    }

    // logits(): the scored positions' logits.
    const tok = Tensor.fromArray(tokens, [B, N], 'int32')
    const tgt = Tensor.fromArray(targets, [B, P], 'int32')
    try {
      const lt = await model.logits(tok, { window: opts.callWindow })
      expect(lt.shape).toEqual([B, P, headClasses(cfg)])
      const le = relErr(lt.toArray(), ref.logits)
      if (!(le <= TOL)) problems.push(`logits: relErr ${le.toExponential(2)}`)
      lt.dispose()
      // evaluate(): same loss as lossAndGrad (no dropout), gradients untouched.
      const before = grads(model)
      const ev = await model.evaluate(tok, tgt, { window: opts.callWindow })
      if (ev.loss !== nat.loss) problems.push(`evaluate loss ${ev.loss} != lossAndGrad loss ${nat.loss}`)
      if (ev.count !== nat.count || ev.correct !== nat.correct) problems.push('evaluate count/correct differ')
      const after = grads(model)
      for (const name of names) if (!sameBits(before[name], after[name])) problems.push(`evaluate changed ${name}'s gradient`)
    } finally {
      tok.dispose()
      tgt.dispose()
    }
  } finally {
    model.dispose()
  }
  expect(problems).toEqual([])
}

describe('model vs float64 reference: loss, every gradient, logits, evaluate', () => {
  const cases = grid()
  it('the grid covers every head, window, variant, layer count, bias and positional setting', () => {
    const keys = new Set(cases.map((c) => `${headName(c.cfg.head).replace(/\d+/, '')} ${c.cfg.window} ${c.cfg.variant} ${c.cfg.layers}`))
    expect(keys.size).toBe(3 * 3 * 2 * 2)
    for (const b of [false, true]) for (const p of [false, true]) expect(cases.some((c) => c.cfg.bias === b && c.cfg.positional === p)).toBe(true)
  })
  for (const c of cases) {
    it(caseName(c.cfg, c.B, c.N), async () => {
      await compareCase(c)
    })
  }

  it('a window override per call (config w=3, called with w=1 and w=0)', async () => {
    const c: Case = { cfg: baseCfg({ head: 'lm', window: 3, layers: 2 }), B: 2, N: 10, alphas: [0.3, 0.7], seed: 999 }
    await compareCase(c, { callWindow: 1 })
    await compareCase(c, { callWindow: 0 })
  })

  it('raw alpha outside [0, 1] is clamped, its gradient is exactly 0', async () => {
    const c: Case = { cfg: baseCfg({ head: { copy: 3 }, window: 2, layers: 2 }), B: 2, N: 9, alphas: [1.3, -0.2], seed: 77 }
    await compareCase(c)
    const rng = new Rng(c.seed * 7919 + 1)
    const params = randomModelParams(c.cfg, rng, c.alphas)
    const { tokens, targets, P } = randomBatch(c.cfg, rng, c.B, c.N)
    const model = makeModel(c.cfg, params)
    try {
      const r = await step(model, tokens, targets, c.B, c.N, P)
      expect(r.grads['transformer.h.0.alpha'][0]).toBe(0)
      expect(r.grads['transformer.h.1.alpha'][0]).toBe(0)
    } finally {
      model.dispose()
    }
  })

  it('all targets ignored: loss 0, count 0, zero gradients, no NaN', async () => {
    const cfg = baseCfg({ head: 'lm' })
    const model = makeModel(cfg, randomModelParams(cfg, new Rng(5)))
    try {
      const r = await step(model, new Int32Array([1, 2, 3, 4, 5, 6]), new Int32Array(6).fill(IGNORE_INDEX), 2, 3, 3)
      expect(r.loss).toBe(0)
      expect(r.count).toBe(0)
      expect(r.correct).toBe(0)
      for (const [name, g] of Object.entries(r.grads)) expect(g.every((x) => x === 0), name).toBe(true)
    } finally {
      model.dispose()
    }
  })

  it('the loss lossAndGrad reads after queuing the backward is the one evaluate reads at once, bit for bit', async () => {
    const cfg = baseCfg({ head: 'lm', window: 2, layers: 2 })
    const rng = new Rng(23)
    const model = makeModel(cfg, randomModelParams(cfg, rng))
    const { tokens, targets, P } = randomBatch(cfg, rng, 2, 7)
    const tok = Tensor.fromArray(tokens, [2, 7], 'int32')
    const tgt = Tensor.fromArray(targets, [2, P], 'int32')
    try {
      const a = await model.lossAndGrad(tok, tgt, { training: false })
      const b = await model.evaluate(tok, tgt)
      expect(Number.isFinite(a.loss)).toBe(true)
      expect(a).toEqual(b)
    } finally {
      tok.dispose()
      tgt.dispose()
      model.dispose()
    }
  })

  it('a non-finite loss comes with non-finite gradients, and AdamW then skips the step', async () => {
    const cfg = baseCfg({ head: 'lm' })
    const rng = new Rng(17)
    const params = randomModelParams(cfg, rng)
    const record = toFloat32Record(params)
    // Weights that overflow the logits (importParameters takes finite values only).
    record['transformer.ln_f.weight'] = record['transformer.ln_f.weight'].map(() => 3e38)
    record['transformer.wte.weight'] = record['transformer.wte.weight'].map((x) => x * 1e3)
    const model = new RecurrentTransformer(nativeConfig(cfg))
    model.importParameters(record)
    const opt = new AdamW(model.parameters(), model.decayMask(), { lr: 1e-2 })
    try {
      const { tokens, targets, P } = randomBatch(cfg, rng, 2, 6)
      const r = await step(model, tokens, targets, 2, 6, P)
      expect(Number.isFinite(r.loss)).toBe(false)
      expect(Object.values(r.grads).some((g) => g.some((x) => !Number.isFinite(x)))).toBe(true)
      const before = model.parameters().map((p) => p.value.toArray().slice())
      const info = await opt.step()
      expect(info.skipped).toBe(true)
      model.parameters().forEach((p, i) => expect(sameBits(p.value.toArray() as Float32Array, before[i] as Float32Array), p.name).toBe(true))
    } finally {
      opt.dispose()
      model.dispose()
    }
  })

  it('gradients accumulate across calls until zeroGrad', async () => {
    const cfg = baseCfg({ head: { classify: 4 }, bias: true })
    const rng = new Rng(11)
    const model = makeModel(cfg, randomModelParams(cfg, rng))
    try {
      const { tokens, targets, P } = randomBatch(cfg, rng, 2, 6)
      const once = await step(model, tokens, targets, 2, 6, P)
      const tok = Tensor.fromArray(tokens, [2, 6], 'int32')
      const tgt = Tensor.fromArray(targets, [2, P], 'int32')
      await model.lossAndGrad(tok, tgt, { training: false })
      tok.dispose()
      tgt.dispose()
      const twice = grads(model)
      for (const name of Object.keys(once.grads)) {
        const doubled = once.grads[name].map((x) => 2 * x)
        expect(relErr(twice[name], doubled), name).toBeLessThanOrEqual(1e-6)
      }
    } finally {
      model.dispose()
    }
  })

  it('logits({positions}) gives the last `positions` rows; the lm head scores every position', async () => {
    const cfg = baseCfg({ head: 'lm', window: 2 })
    const rng = new Rng(12)
    const params = randomModelParams(cfg, rng)
    const { tokens, targets } = randomBatch(cfg, rng, 2, 7)
    const ref = referenceModel(cfg, params, tokens, targets, 2, 7)
    const model = makeModel(cfg, params)
    const tok = Tensor.fromArray(tokens, [2, 7], 'int32')
    try {
      const all = await model.logits(tok)
      expect(all.shape).toEqual([2, 7, 11])
      expect(relErr(all.toArray(), ref.logits)).toBeLessThanOrEqual(TOL)
      const last3 = await model.logits(tok, { positions: 3 })
      expect(last3.shape).toEqual([2, 3, 11])
      const want = new Float64Array(2 * 3 * 11)
      for (let b = 0; b < 2; b++) want.set(ref.logits.subarray((b * 7 + 4) * 11, (b * 7 + 7) * 11), b * 33)
      expect(relErr(last3.toArray(), want)).toBeLessThanOrEqual(TOL)
      all.dispose()
      last3.dispose()
    } finally {
      tok.dispose()
      model.dispose()
    }
  })
})

// ---------------------------------------------------------------------------------------------
// 4. Dropout.

describe('model: dropout', () => {
  const cfg = baseCfg({ head: 'lm', window: 3, layers: 2, bias: true, activation: 'gelu' })
  const B = 2
  const N = 9
  let params: Params
  let batch: { tokens: Int32Array; targets: Int32Array; P: number }
  let model: RecurrentTransformer
  beforeAll(() => {
    const rng = new Rng(31)
    params = randomModelParams(cfg, rng, [0.4, 0.6])
    batch = randomBatch(cfg, rng, B, N)
    model = makeModel(cfg, params, { dropout: 0.2 })
  })
  afterAll(() => model.dispose())

  it('same seed: identical loss and gradient bits; another seed: a different loss', async () => {
    const { tokens, targets, P } = batch
    const a = await step(model, tokens, targets, B, N, P, { training: true, seed: 42 })
    const b = await step(model, tokens, targets, B, N, P, { training: true, seed: 42 })
    const c = await step(model, tokens, targets, B, N, P, { training: true, seed: 43 })
    expect(Object.is(a.loss, b.loss)).toBe(true)
    for (const name of Object.keys(a.grads)) expect(sameBits(a.grads[name], b.grads[name]), name).toBe(true)
    expect(c.loss).not.toBe(a.loss)
    const off = await step(model, tokens, targets, B, N, P, { training: false, seed: 42 })
    expect(off.loss).not.toBe(a.loss)
  })

  it('training false: no dropout, bit-identical to the same weights with dropout 0', async () => {
    const { tokens, targets, P } = batch
    const zero = makeModel(cfg, params, { dropout: 0 })
    try {
      const a = await step(model, tokens, targets, B, N, P, { training: false, seed: 5 })
      const b = await step(zero, tokens, targets, B, N, P, { training: true, seed: 9 })
      expect(Object.is(a.loss, b.loss)).toBe(true)
      for (const name of Object.keys(a.grads)) expect(sameBits(a.grads[name], b.grads[name]), name).toBe(true)
      // And it is the reference's (dropout-free) loss.
      const ref = referenceModel(cfg, params, tokens, targets, B, N)
      expect(Math.abs(a.loss - ref.loss) / ref.loss).toBeLessThanOrEqual(TOL)
      // evaluate() never drops out.
      const tok = Tensor.fromArray(tokens, [B, N], 'int32')
      const tgt = Tensor.fromArray(targets, [B, P], 'int32')
      expect((await model.evaluate(tok, tgt)).loss).toBe(a.loss)
      tok.dispose()
      tgt.dispose()
    } finally {
      zero.dispose()
    }
  })

  it('the gradient with dropout matches a directional finite difference of the loss (same seed)', async () => {
    const { tokens, targets, P } = batch
    const seed = 1234
    const base = await step(model, tokens, targets, B, N, P, { training: true, seed })
    const rng = new Rng(8)
    const plus: Record<string, Float32Array> = {}
    const minus: Record<string, Float32Array> = {}
    const eps = 2e-3
    let predicted = 0
    for (const [name, v] of Object.entries(params)) {
      const p = new Float32Array(v.length)
      const m = new Float32Array(v.length)
      for (let i = 0; i < v.length; i++) {
        const u = rng.normal()
        p[i] = v[i] + eps * u
        m[i] = v[i] - eps * u
        predicted += base.grads[name][i] * (p[i] - m[i]) // the actual float32 step, not eps * u
      }
      plus[name] = p
      minus[name] = m
    }
    try {
      model.importParameters(plus)
      const lp = (await step(model, tokens, targets, B, N, P, { training: true, seed })).loss
      model.importParameters(minus)
      const lm = (await step(model, tokens, targets, B, N, P, { training: true, seed })).loss
      const actual = lp - lm
      expect(Math.abs(predicted)).toBeGreaterThan(1e-3)
      expect(Math.abs(actual - predicted) / Math.abs(predicted)).toBeLessThan(0.02)
    } finally {
      model.importParameters(toFloat32Record(params))
    }
  })
})

// ---------------------------------------------------------------------------------------------
// 5. Bad input: clear Errors, and the model keeps working.

describe('model: bad input', () => {
  const cfg = baseCfg({ head: { copy: 3 }, window: 2, maxLen: 8 })
  const B = 2
  const N = 6
  const P = 3
  let model: RecurrentTransformer
  let tokens: Int32Array
  let targets: Int32Array
  let baseline: { loss: number; grads: Record<string, Float32Array> }

  beforeAll(async () => {
    const rng = new Rng(41)
    const params = randomModelParams(cfg, rng)
    model = makeModel(cfg, params)
    const b = randomBatch(cfg, rng, B, N)
    tokens = b.tokens
    targets = b.targets.map((t) => (t === IGNORE ? 1 : t))
    baseline = await step(model, tokens, targets, B, N, P)
  })
  afterAll(() => model.dispose())

  async function expectStillWorks(): Promise<void> {
    const r = await step(model, tokens, targets, B, N, P)
    expect(Object.is(r.loss, baseline.loss)).toBe(true)
    for (const name of Object.keys(r.grads)) expect(sameBits(r.grads[name], baseline.grads[name]), name).toBe(true)
  }

  /** Runs lossAndGrad and evaluate on the bad input: both reject with an Error matching `re`. */
  async function expectBad(tok: Tensor, tgt: Tensor, re: RegExp): Promise<void> {
    try {
      model.zeroGrad()
      const e1 = await caught(() => model.lossAndGrad(tok, tgt))
      expect(e1.message).toMatch(re)
      // A failed call leaves no partial gradient behind.
      for (const p of model.parameters()) expect((p.grad.toArray() as Float32Array).every((x) => x === 0), p.name).toBe(true)
      const e2 = await caught(() => model.evaluate(tok, tgt))
      expect(e2.message).toMatch(re)
    } finally {
      tok.dispose()
      tgt.dispose()
    }
    await expectStillWorks()
  }

  const goodTargets = (): Tensor => Tensor.fromArray(targets, [B, P], 'int32')

  it('a token outside the vocabulary (V and -1)', async () => {
    for (const bad of [cfg.vocabSize, -1, 1000]) {
      const t = tokens.slice()
      t[7] = bad
      await expectBad(Tensor.fromArray(t, [B, N], 'int32'), goodTargets(), /token/i)
      const t2 = Tensor.fromArray(t, [B, N], 'int32')
      const e = await caught(() => model.logits(t2))
      t2.dispose()
      expect(e.message).toMatch(/vocabulary|outside/i)
    }
  })

  it('float32 tokens', async () => {
    await expectBad(Tensor.fromArray(tokens, [B, N], 'float32'), goodTargets(), /tokens/)
  })

  it('a sequence longer than maxLen with position embeddings', async () => {
    const long = new Int32Array(B * 9).fill(1)
    await expectBad(Tensor.fromArray(long, [B, 9], 'int32'), goodTargets(), /maxLen/)
  })

  it('without position embeddings, sequences longer than maxLen are fine', async () => {
    const m = new RecurrentTransformer(nativeConfig({ ...cfg, positional: false }))
    const tok = Tensor.fromArray(new Int32Array(2 * 20).fill(2), [2, 20], 'int32')
    const tgt = Tensor.fromArray(new Int32Array(2 * 3).fill(1), [2, 3], 'int32')
    try {
      const r = await m.lossAndGrad(tok, tgt)
      expect(Number.isFinite(r.loss)).toBe(true)
      expect(r.count).toBe(6)
    } finally {
      tok.dispose()
      tgt.dispose()
      m.dispose()
    }
  })

  it('targets of the wrong batch size, rank or dtype', async () => {
    const tok = (): Tensor => Tensor.fromArray(tokens, [B, N], 'int32')
    await expectBad(tok(), Tensor.fromArray(new Int32Array(3 * P).fill(1), [3, P], 'int32'), /targets/)
    await expectBad(tok(), Tensor.fromArray(new Int32Array(B * P).fill(1), [B, P, 1], 'int32'), /targets/)
    await expectBad(tok(), Tensor.fromArray(new Int32Array(B * P).fill(1), [B * P], 'int32'), /targets/)
    await expectBad(tok(), Tensor.fromArray(new Float32Array(B * P).fill(1), [B, P], 'float32'), /targets/)
    await expectBad(tok(), Tensor.fromArray(new Int32Array(B * (N + 1)).fill(1), [B, N + 1], 'int32'), /targets/)
  })

  it('targets whose length is not the number of positions the head scores', async () => {
    // The copy head scores the last M = 3 positions: targets [B, 2] or [B, 4] do not fit it.
    const tok = (): Tensor => Tensor.fromArray(tokens, [B, N], 'int32')
    await expectBad(tok(), Tensor.fromArray(new Int32Array(B * 2).fill(1), [B, 2], 'int32'), /targets/)
    await expectBad(tok(), Tensor.fromArray(new Int32Array(B * 4).fill(1), [B, 4], 'int32'), /targets/)
  })

  it('targets out of range (V, -2) that are not the ignore index', async () => {
    for (const bad of [cfg.vocabSize, -2, 99]) {
      const t = targets.slice()
      t[4] = bad
      await expectBad(Tensor.fromArray(tokens, [B, N], 'int32'), Tensor.fromArray(t, [B, P], 'int32'), /targets/)
    }
  })

  it('classify: a target >= the number of classes', async () => {
    const c = baseCfg({ head: { classify: 4 } })
    const m = new RecurrentTransformer(nativeConfig(c))
    const tok = Tensor.fromArray(new Int32Array(2 * 5).fill(1), [2, 5], 'int32')
    const tgt = Tensor.fromArray(new Int32Array([1, 4]), [2, 1], 'int32')
    try {
      const e = await caught(() => m.lossAndGrad(tok, tgt))
      expect(e.message).toMatch(/targets/)
      expect(e.message).toMatch(/4/)
    } finally {
      tok.dispose()
      tgt.dispose()
      m.dispose()
    }
  })

  it('a disposed model and disposed tensors', async () => {
    const m = new RecurrentTransformer(nativeConfig(cfg))
    const tok = Tensor.fromArray(tokens, [B, N], 'int32')
    const tgt = goodTargets()
    tgt.dispose()
    expect((await caught(() => m.lossAndGrad(tok, tgt))).message).toMatch(/targets.*dispos/)
    m.dispose()
    expect((await caught(() => m.lossAndGrad(tok, goodTargets()))).message).toMatch(/dispos/)
    expect((await caught(() => m.evaluate(tok, goodTargets()))).message).toMatch(/dispos/)
    tok.dispose()
  })

  it('importParameters rejects a missing name and a wrong size, and changes nothing', async () => {
    const good = model.exportParameters()
    const missing = { ...good }
    delete (missing as Record<string, Float32Array>)['transformer.ln_f.weight']
    expect((await caught(() => model.importParameters(missing))).message).toMatch(/transformer\.ln_f\.weight/)
    const short = { ...good, 'transformer.wte.weight': new Float32Array(3) }
    expect((await caught(() => model.importParameters(short))).message).toMatch(/transformer\.wte\.weight/)
    const now = model.exportParameters()
    for (const name of Object.keys(good)) expect(sameBits(now[name], good[name]), name).toBe(true)
    await expectStillWorks()
  })

  it('importParameters rejects a non-finite value in any parameter (stack and model-level alike)', async () => {
    const good = model.exportParameters()
    const accepted: string[] = []
    for (const name of Object.keys(good)) {
      for (const bad of [NaN, Infinity]) {
        const values = { ...good, [name]: good[name].map((x, i) => (i === good[name].length - 1 ? bad : x)) }
        try {
          model.importParameters(values)
          accepted.push(`${name} = ${bad}`)
        } catch (e) {
          expect((e as Error).message).toContain(name)
        }
        model.importParameters(good)
      }
    }
    expect(accepted).toEqual([])
    await expectStillWorks()
  })
})
