// Property tests (fast-check) of the addon's entry points on hostile input: tensors of random shapes,
// dtypes and data (negative, fractional, NaN, huge dims), disposed handles, layer configs (valid and
// not), forward/backward on mismatched or odd tensors, lossAndGrad with out-of-range tokens and
// targets, decoder steps with bad tokens, AdamW with mismatched parameters. Every call must end in a
// JavaScript Error or a correct result; afterwards the process is alive and a fresh valid forward
// gives the same bits as before the fuzzing. The last group calls the addon's functions directly
// (what src/ does for the user) with inconsistent tensors, each in a child process so that memory
// corruption cannot take the test runner down.
//
// Each property runs for a bounded time (RT_FUZZ_MS, default 3000 ms) and prints its count;
// RT_FUZZ_SEED picks the seed (default fixed, so CI sees the same cases; 'random' for exploration).

import { spawnSync } from 'node:child_process'
import * as path from 'node:path'
import { fileURLToPath } from 'node:url'
import fc from 'fast-check'
import { FUZZ_MS, SEED, fuzz } from './fuzz.js'
import { beforeAll, describe, expect, it } from 'vitest'
import { AdamW, RecurrentLayer, RecurrentTransformer, Tensor, nativeAllocatedBytes } from '../src/index.js'
import type { LayerConfig, ModelConfig, Parameter } from '../src/index.js'
import { sameBits } from './helpers.js'

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..')

type Outcome<T> = { ok: true; value: T } | { ok: false; error: Error }

/** Runs fn; a throw or rejection must be an Error with a message (anything else fails the property). */
async function attempt<T>(fn: () => T | Promise<T>): Promise<Outcome<T>> {
  try {
    return { ok: true, value: await fn() }
  } catch (e) {
    if (!(e instanceof Error)) throw new Error(`threw a non-Error: ${String(e)}`)
    if (e.name === 'AssertionError') throw e
    if (!(e.message.length > 0)) throw new Error('threw an Error without a message')
    return { ok: false, error: e }
  }
}

const tally = (): { ok: number; error: number; add: (o: Outcome<unknown>) => void; toString: () => string } => {
  const t = {
    ok: 0,
    error: 0,
    add(o: Outcome<unknown>) {
      if (o.ok) t.ok++
      else t.error++
    },
    toString: () => `${t.ok} accepted, ${t.error} refused with an Error`,
  }
  return t
}

function allFinite(a: ArrayLike<number>): boolean {
  for (let i = 0; i < a.length; i++) if (!Number.isFinite(a[i])) return false
  return true
}

// A dimension or scalar a user might pass by mistake.
const oddNumber = fc.oneof(
  fc.constantFrom(-1, -0, 0.5, 1.5, NaN, Infinity, -Infinity, 2 ** 31, 2 ** 32, 2 ** 32 + 2, 2 ** 53, 1e20, Number.MAX_SAFE_INTEGER + 2),
  fc.double(),
)
const oddValue = fc.oneof(oddNumber, fc.constantFrom('8', null, undefined, true, [], {}, 8n))
/** undefined most of the time, sometimes a value from arb. */
const rarely = <T>(arb: fc.Arbitrary<T>): fc.Arbitrary<T | undefined> => fc.oneof({ weight: 5, arbitrary: fc.constant(undefined) }, { weight: 1, arbitrary: arb })

// ---------------------------------------------------------------------------------------------------
// The reference: a fixed layer and model, and their outputs before any fuzzing.

const refLayerCfg: LayerConfig = { d: 8, heads: 2, layers: 2, window: 3, variant: 'accumulate', seed: 7, bias: true }
const refModelCfg: ModelConfig = { vocabSize: 11, d: 8, heads: 2, layers: 2, window: 3, variant: 'accumulate', maxLen: 16, seed: 3 }
const refX = Float32Array.from({ length: 2 * 7 * 8 }, (_, i) => Math.sin(i * 0.37))
const refTokens = Int32Array.from({ length: 2 * 9 }, (_, i) => (i * 7) % 11)
const refTargets = Int32Array.from({ length: 2 * 9 }, (_, i) => (i * 5 + 1) % 11)

async function referenceOutputs(): Promise<{ y: Float32Array; loss: number; grads: Record<string, Float32Array>; logits: Float32Array }> {
  const layer = new RecurrentLayer(refLayerCfg)
  const x = Tensor.fromArray(refX, [2, 7, 8])
  const y = await layer.forward(x)
  const out = y.toArray() as Float32Array
  for (const t of [x, y]) t.dispose()
  layer.dispose()
  const model = new RecurrentTransformer(refModelCfg)
  const tok = Tensor.fromArray(refTokens, [2, 9], 'int32')
  const tgt = Tensor.fromArray(refTargets, [2, 9], 'int32')
  model.zeroGrad()
  const r = await model.lossAndGrad(tok, tgt, { seed: 1 })
  const grads = Object.fromEntries(model.parameters().map((p) => [p.name, p.grad.toArray() as Float32Array]))
  const logits = await model.logits(tok)
  const lg = logits.toArray() as Float32Array
  for (const t of [tok, tgt, logits]) t.dispose()
  model.dispose()
  return { y: out, loss: r.loss, grads, logits: lg }
}

let reference: Awaited<ReturnType<typeof referenceOutputs>>
let bytesBefore = 0

beforeAll(async () => {
  reference = await referenceOutputs()
  bytesBefore = nativeAllocatedBytes()
})

// ---------------------------------------------------------------------------------------------------

describe('fuzz: tensors', () => {
  const dimArb = fc.oneof({ weight: 6, arbitrary: fc.integer({ min: 0, max: 6 }) }, { weight: 2, arbitrary: oddValue }, {
    weight: 1,
    arbitrary: fc.constantFrom(2 ** 20, 2 ** 30, 2 ** 35, 2 ** 52),
  })
  const shapeArb = fc.oneof({ weight: 9, arbitrary: fc.array(dimArb, { maxLength: 4 }) }, { weight: 1, arbitrary: oddValue })
  const dtypeArb = fc.oneof({ weight: 8, arbitrary: fc.constantFrom('float32', 'int32') }, { weight: 1, arbitrary: fc.constantFrom('float64', 'int64', '', 'Float32', undefined as unknown as string) })
  const elemArb = fc.oneof(fc.integer({ min: -1000, max: 1000 }), fc.double(), fc.constantFrom(NaN, Infinity, -0, 2 ** 31, -(2 ** 31) - 1, 0.5))
  const dataArb = fc.oneof(
    fc.array(elemArb, { maxLength: 40 }),
    fc.array(elemArb, { maxLength: 40 }).map((a) => Float32Array.from(a)),
    fc.array(fc.integer(), { maxLength: 40 }).map((a) => Int32Array.from(a)),
    fc.array(fc.integer({ min: 0, max: 255 }), { maxLength: 40 }).map((a) => Uint8Array.from(a)),
    fc.array(elemArb, { maxLength: 40 }).map((a) => Float64Array.from(a)),
    oddValue,
  )

  it('Tensor.fromArray and Tensor.zeros: a tensor holding exactly the data, or an Error', async () => {
    const t = tally()
    await fuzz(
      'Tensor.fromArray / zeros',
      fc.asyncProperty(shapeArb, dataArb, dtypeArb, fc.boolean(), async (shape, data, dtype, useData) => {
        // Shapes that are valid but would allocate gigabytes are not a hostile input, just a big one.
        if (Array.isArray(shape) && shape.every((d) => Number.isSafeInteger(d) && (d as number) >= 0)) {
          const n = (shape as number[]).reduce((a, b) => a * b, 1)
          fc.pre(n <= 1 << 20 || n > 2 ** 34)
        }
        const o = await attempt(() =>
          useData ? Tensor.fromArray(data as ArrayLike<number>, shape as number[], dtype as 'float32') : Tensor.zeros(shape as number[], dtype as 'float32'),
        )
        t.add(o)
        if (!o.ok) return
        const x = o.value
        try {
          expect(x.shape).toEqual((shape as number[]).map((d) => (d === 0 ? 0 : d))) // -0 becomes 0
          expect(x.dtype).toBe(dtype ?? 'float32')
          const got = x.toArray()
          expect(got.length).toBe(x.size)
          if (useData) {
            const want = x.dtype === 'float32' ? Float32Array.from(data as ArrayLike<number>) : Int32Array.from(data as ArrayLike<number>)
            if (x.dtype === 'float32') expect(sameBits(got as Float32Array, want as Float32Array)).toBe(true)
            else expect([...got]).toEqual([...want])
          } else {
            expect(got.every((v) => v === 0)).toBe(true)
          }
        } finally {
          x.dispose()
        }
        expect(x.disposed).toBe(true)
      }),
    )
    console.log(`[fuzz]   ${t}`)
    expect(t.ok).toBeGreaterThan(0)
    expect(t.error).toBeGreaterThan(0)
  })

  it('a disposed tensor is an Error wherever it is used, and dispose() is idempotent', async () => {
    const layer = new RecurrentLayer({ d: 4, heads: 1, window: 2 })
    const model = new RecurrentTransformer({ vocabSize: 5, d: 4, heads: 1, window: 2, maxLen: 8 })
    const x = Tensor.fromArray(new Float32Array(2 * 3 * 4), [2, 3, 4])
    const tok = Tensor.fromArray([1, 2, 3], [1, 3], 'int32')
    const tgt = Tensor.fromArray([1, 2, 3], [1, 3], 'int32')
    for (const t of [x, tok, tgt]) {
      t.dispose()
      t.dispose()
      expect(t.disposed).toBe(true)
    }
    const uses: (() => unknown)[] = [
      () => x.toArray(),
      () => x.to('cpu'),
      () => layer.forward(x),
      () => layer.backward(x),
      () => model.lossAndGrad(tok, Tensor.fromArray([1, 2, 3], [1, 3], 'int32')),
      () => model.evaluate(Tensor.fromArray([1, 2, 3], [1, 3], 'int32'), tgt),
      () => model.logits(tok),
    ]
    for (const fn of uses) {
      const o = await attempt(fn)
      expect(o.ok).toBe(false)
      if (!o.ok) expect(o.error.message).toMatch(/disposed|no forward pass/)
    }
    // The layer's and the model's parameters: disposed with their owner.
    const p = layer.parameters()[0]!
    layer.dispose()
    layer.dispose()
    expect(p.value.disposed).toBe(true)
    for (const fn of [() => layer.forward(Tensor.zeros([1, 2, 4])), () => layer.parameters(), () => layer.zeroGrad(), () => p.value.toArray()]) {
      const o = await attempt(fn)
      expect(o.ok).toBe(false)
    }
    model.dispose()
    for (const fn of [() => model.lossAndGrad(Tensor.zeros([1, 3], 'int32'), Tensor.zeros([1, 3], 'int32')), () => model.decoder(), () => model.zeroGrad()]) {
      const o = await attempt(fn)
      expect(o.ok).toBe(false)
      if (!o.ok) expect(o.error.message).toMatch(/disposed/)
    }
  })
})

// ---------------------------------------------------------------------------------------------------

describe('fuzz: layers', () => {
  const smallInt = (min: number, max: number): fc.Arbitrary<unknown> => fc.oneof({ weight: 8, arbitrary: fc.integer({ min, max }) }, { weight: 1, arbitrary: oddValue })
  const configArb = fc.record(
    {
      d: fc.oneof({ weight: 6, arbitrary: fc.constantFrom(1, 2, 4, 6, 8, 12) }, { weight: 1, arbitrary: fc.constantFrom(0, -4, 65537, 1e9, 2 ** 31) }, { weight: 1, arbitrary: oddValue }),
      heads: smallInt(0, 5),
      layers: fc.oneof({ weight: 6, arbitrary: fc.integer({ min: 1, max: 3 }) }, { weight: 1, arbitrary: fc.constantFrom(0, -1, 1025, 2 ** 31) }, { weight: 1, arbitrary: oddValue }),
      window: fc.oneof({ weight: 6, arbitrary: fc.integer({ min: 0, max: 6 }) }, { weight: 1, arbitrary: fc.constantFrom(-1, 2 ** 30 + 1, 2 ** 31, 2 ** 32) }, { weight: 1, arbitrary: oddValue }),
      variant: fc.oneof({ weight: 4, arbitrary: fc.constantFrom('forget', 'accumulate') }, { weight: 1, arbitrary: oddValue }),
      activation: fc.oneof({ weight: 4, arbitrary: fc.constantFrom('gelu', 'relu') }, { weight: 1, arbitrary: fc.constantFrom('tanh', '', 1) }),
      bias: fc.oneof({ weight: 4, arbitrary: fc.boolean() }, { weight: 1, arbitrary: oddValue }),
      dropout: fc.oneof({ weight: 4, arbitrary: fc.constantFrom(0, 0.1, 0.5) }, { weight: 1, arbitrary: fc.constantFrom(1, -0.1, 1.5, NaN) }),
      alpha: fc.option(fc.record({ init: fc.oneof(fc.double({ min: -2, max: 2, noNaN: true }), fc.constantFrom(NaN, Infinity)), learnable: fc.oneof(fc.boolean(), fc.constant('yes')) }), { nil: undefined }),
      seed: fc.oneof({ weight: 4, arbitrary: fc.nat() }, { weight: 1, arbitrary: oddValue }),
    },
    { requiredKeys: ['d', 'heads', 'window'] },
  )
  const callArb = fc.record({
    B: fc.oneof({ weight: 6, arbitrary: fc.integer({ min: 1, max: 3 }) }, { weight: 1, arbitrary: fc.constant(0) }),
    N: fc.oneof({ weight: 6, arbitrary: fc.integer({ min: 1, max: 9 }) }, { weight: 1, arbitrary: fc.constant(0) }),
    dDelta: fc.oneof({ weight: 6, arbitrary: fc.constant(0) }, { weight: 1, arbitrary: fc.integer({ min: -2, max: 2 }) }),
    rank: fc.oneof({ weight: 8, arbitrary: fc.constant(3) }, { weight: 1, arbitrary: fc.constantFrom(1, 2, 4) }),
    dtype: fc.oneof({ weight: 8, arbitrary: fc.constant('float32' as const) }, { weight: 1, arbitrary: fc.constant('int32' as const) }),
    poison: fc.oneof({ weight: 8, arbitrary: fc.constant(null) }, { weight: 1, arbitrary: fc.constantFrom(NaN, Infinity, -Infinity) }),
    window: fc.oneof({ weight: 4, arbitrary: fc.constant(undefined) }, { weight: 2, arbitrary: fc.integer({ min: 0, max: 10 }) }, { weight: 1, arbitrary: oddValue }),
    seed: fc.oneof({ weight: 4, arbitrary: fc.constant(undefined) }, { weight: 2, arbitrary: fc.nat() }, { weight: 1, arbitrary: oddValue }),
    training: fc.boolean(),
    grad: fc.boolean(),
    checkFinite: fc.option(fc.boolean(), { nil: undefined }),
    backward: fc.constantFrom('none', 'match', 'mismatch', 'twice'),
  })

  it('RecurrentLayer: any config is a working layer or an Error; forward/backward on odd tensors give a result of the right shape or an Error', async () => {
    const configs = tally()
    const calls = tally()
    await fuzz(
      'RecurrentLayer configs + forward/backward',
      fc.asyncProperty(configArb, fc.array(callArb, { minLength: 1, maxLength: 3 }), async (cfg, callList) => {
        const made = await attempt(() => new RecurrentLayer(cfg as LayerConfig))
        configs.add(made)
        if (!made.ok) return
        const layer = made.value
        try {
          const d = layer.config.d
          for (const c of callList) {
            const dim = Math.max(0, d + c.dDelta)
            const shape = c.rank === 3 ? [c.B, c.N, dim] : c.rank === 1 ? [c.B * c.N * dim] : c.rank === 2 ? [c.B * c.N, dim] : [1, c.B, c.N, dim]
            const n = shape.reduce((a, b) => a * b, 1)
            const data = Float32Array.from({ length: n }, (_, i) => Math.cos(i * 0.7))
            if (c.poison !== null && n > 0) data[n >> 1] = c.poison
            const x = Tensor.fromArray(c.dtype === 'int32' ? Int32Array.from(data.map((v) => (Number.isFinite(v) ? Math.round(v) : 0))) : data, shape, c.dtype)
            const o = await attempt(() =>
              layer.forward(x, { window: c.window as number, seed: c.seed as number, training: c.training, grad: c.grad, checkFinite: c.checkFinite }),
            )
            calls.add(o)
            x.dispose()
            if (!o.ok) continue
            const y = o.value
            expect(y.shape).toEqual([c.B, c.N, d])
            const finiteIn = c.poison === null
            if (finiteIn) expect(allFinite(y.toArray())).toBe(true)
            if (c.backward !== 'none') {
              const dyShape = c.backward === 'mismatch' ? [c.B, c.N + 1, d] : [c.B, c.N, d]
              const dy = Tensor.fromArray(new Float32Array(dyShape.reduce((a, b) => a * b, 1)).fill(0.5), dyShape)
              const b1 = await attempt(() => layer.backward(dy))
              calls.add(b1)
              if (b1.ok) {
                expect(c.grad && c.backward !== 'mismatch').toBe(true) // only a kept forward can be differentiated
                expect(b1.value.shape).toEqual([c.B, c.N, d])
                if (finiteIn) expect(allFinite(b1.value.toArray())).toBe(true)
                b1.value.dispose()
              }
              if (c.backward === 'twice') {
                const b2 = await attempt(() => layer.backward(dy))
                calls.add(b2)
                expect(b2.ok).toBe(false) // one backward per forward
              }
              dy.dispose()
            }
            y.dispose()
          }
        } finally {
          layer.dispose()
        }
      }),
    )
    console.log(`[fuzz]   configs: ${configs}; calls: ${calls}`)
    expect(configs.ok).toBeGreaterThan(0)
    expect(configs.error).toBeGreaterThan(0)
    expect(calls.ok).toBeGreaterThan(0)
    expect(calls.error).toBeGreaterThan(0)
  })

  it('a window option beyond 2^31 is an Error, not silently another window (2^32 used to run as window 0)', async () => {
    const layer = new RecurrentLayer({ d: 8, heads: 2, window: 2 })
    const x = Tensor.fromArray(Float32Array.from({ length: 40 }, (_, i) => Math.sin(i * 1.7)), [1, 5, 8])
    try {
      for (const w of [2 ** 32, 2 ** 31 + 3, 2 ** 40]) {
        const o = await attempt(() => layer.forward(x, { window: w }))
        expect(o.ok, `window ${w}`).toBe(false)
      }
      // The largest window the config accepts still works (it is one window over the whole sequence).
      const y = await layer.forward(x, { window: 2 ** 30 })
      const y0 = await layer.forward(x, { window: 5 })
      expect(sameBits(y.toArray() as Float32Array, y0.toArray() as Float32Array)).toBe(true)
    } finally {
      x.dispose()
      layer.dispose()
    }
  })
})

// ---------------------------------------------------------------------------------------------------

describe('fuzz: models', () => {
  const headArb = fc.oneof(fc.constant('lm' as const), fc.integer({ min: 1, max: 3 }).map((copy) => ({ copy })), fc.integer({ min: 2, max: 4 }).map((classify) => ({ classify })))
  const modelArb = fc.record({
    vocabSize: fc.integer({ min: 2, max: 12 }),
    window: fc.integer({ min: 0, max: 4 }),
    layers: fc.integer({ min: 1, max: 2 }),
    variant: fc.constantFrom('forget' as const, 'accumulate' as const),
    positional: fc.boolean(),
    maxLen: fc.integer({ min: 3, max: 10 }),
    head: headArb,
    seed: fc.nat(100),
  })
  const tokenArb = (V: number): fc.Arbitrary<number> => fc.oneof({ weight: 8, arbitrary: fc.integer({ min: 0, max: V - 1 }) }, { weight: 1, arbitrary: fc.constantFrom(-1, -2, V, V + 1, 2 ** 31 - 1, -(2 ** 31)) })

  it('lossAndGrad / evaluate / logits with out-of-range tokens and targets, odd shapes and options: a finite loss or an Error', async () => {
    const t = tally()
    await fuzz(
      'model lossAndGrad/evaluate/logits',
      fc.asyncProperty(
        modelArb,
        fc.record({
          B: fc.oneof({ weight: 8, arbitrary: fc.integer({ min: 1, max: 3 }) }, { weight: 1, arbitrary: fc.constant(0) }),
          N: fc.oneof({ weight: 8, arbitrary: fc.integer({ min: 1, max: 10 }) }, { weight: 1, arbitrary: fc.constantFrom(0, 11, 12) }),
          P: fc.oneof({ weight: 6, arbitrary: fc.constant(-1) }, { weight: 1, arbitrary: fc.integer({ min: 0, max: 13 }) }),
          tokenSeed: fc.nat(),
          badToken: rarely(fc.tuple(fc.nat(), fc.constantFrom(-1, -5, 99, 2 ** 31 - 1))),
          badTarget: rarely(fc.tuple(fc.nat(), fc.constantFrom(-2, -100, 99, 2 ** 31 - 1))),
          targetsDtype: fc.oneof({ weight: 8, arbitrary: fc.constant('int32' as const) }, { weight: 1, arbitrary: fc.constant('float32' as const) }),
          window: fc.oneof({ weight: 4, arbitrary: fc.constant(undefined) }, { weight: 2, arbitrary: fc.integer({ min: 0, max: 6 }) }, { weight: 1, arbitrary: oddValue }),
          seed: fc.oneof({ weight: 4, arbitrary: fc.constant(undefined) }, { weight: 2, arbitrary: fc.nat() }, { weight: 1, arbitrary: oddValue }),
          op: fc.constantFrom('lossAndGrad', 'evaluate', 'logits'),
          positions: fc.oneof({ weight: 4, arbitrary: fc.constant(undefined) }, { weight: 2, arbitrary: fc.integer({ min: -1, max: 14 }) }, { weight: 1, arbitrary: oddNumber }),
        }),
        async (mc, c) => {
          const model = new RecurrentTransformer({ ...mc, d: 8, heads: 2 })
          try {
            const V = mc.vocabSize
            const classes = typeof mc.head === 'object' && 'classify' in mc.head ? mc.head.classify : V
            const P = c.P === -1 ? model.scoredPositions(c.N) : c.P
            let s = c.tokenSeed
            const next = (m: number): number => {
              s = (Math.imul(s, 1103515245) + 12345) >>> 0
              return s % m
            }
            const tokens = Int32Array.from({ length: c.B * c.N }, () => next(V))
            const targets = Int32Array.from({ length: c.B * P }, () => (next(5) === 0 ? -1 : next(classes)))
            if (c.badToken && tokens.length) tokens[c.badToken[0] % tokens.length] = c.badToken[1]
            if (c.badTarget && targets.length) targets[c.badTarget[0] % targets.length] = c.badTarget[1]
            const tok = Tensor.fromArray(tokens, [c.B, c.N], 'int32')
            const tgt = Tensor.fromArray(c.targetsDtype === 'int32' ? targets : Float32Array.from(targets), [c.B, P], c.targetsDtype)
            const o = await attempt(async () => {
              if (c.op === 'logits') return model.logits(tok, { positions: c.positions as number, window: c.window as number })
              if (c.op === 'evaluate') return model.evaluate(tok, tgt, { window: c.window as number })
              model.zeroGrad()
              return model.lossAndGrad(tok, tgt, { window: c.window as number, seed: c.seed as number })
            })
            t.add(o)
            tok.dispose()
            tgt.dispose()
            if (!o.ok) return
            const valid = c.B >= 1 && c.N >= 1 && c.N <= (mc.positional ? mc.maxLen : Infinity) && tokens.every((v) => v >= 0 && v < V)
            expect(valid, 'a call with invalid tokens succeeded').toBe(true)
            if (o.value instanceof Tensor) {
              const Pl = (c.positions as number | undefined) ?? model.scoredPositions(c.N)
              expect(o.value.shape).toEqual([c.B, Pl, classes])
              expect(allFinite(o.value.toArray())).toBe(true)
              o.value.dispose()
            } else {
              expect(targets.every((v) => v === -1 || (v >= 0 && v < classes)), 'a call with out-of-range targets succeeded').toBe(true)
              expect(c.targetsDtype).toBe('int32')
              const r = o.value
              expect(Number.isFinite(r.loss)).toBe(true)
              expect(r.count).toBe(targets.filter((v) => v !== -1).length)
              expect(r.correct >= 0 && r.correct <= r.count).toBe(true)
              if (c.op === 'lossAndGrad') for (const p of model.parameters()) expect(allFinite(p.grad.toArray()), p.name).toBe(true)
            }
          } finally {
            model.dispose()
          }
        },
      ),
    )
    console.log(`[fuzz]   ${t}`)
    expect(t.ok).toBeGreaterThan(0)
    expect(t.error).toBeGreaterThan(0)
  })

  it('decoder: bad batch sizes, bad maxPositions and bad tokens are Errors; after them the decoder still decodes correctly', async () => {
    const model = new RecurrentTransformer({ vocabSize: 7, d: 8, heads: 2, window: 0, maxLen: 12, seed: 5 })
    const model2 = new RecurrentTransformer({ vocabSize: 7, d: 8, heads: 2, window: 2, variant: 'accumulate', maxLen: 12, seed: 5 })
    // The reference: logits of [3, 1, 4] step by step from a fresh decoder.
    const refSteps: Float32Array[] = []
    const ref = model.decoder(1)
    for (const tk of [3, 1, 4]) refSteps.push(await ref.step([tk]))
    const t = tally()
    try {
      await fuzz(
        'decoder construction + steps',
        fc.asyncProperty(
          fc.oneof({ weight: 4, arbitrary: fc.integer({ min: 1, max: 3 }) }, { weight: 1, arbitrary: fc.constantFrom(0, -1, 65537, 2 ** 31, 2 ** 32 + 1) }, { weight: 1, arbitrary: oddValue }),
          fc.oneof({ weight: 4, arbitrary: fc.constant(undefined) }, { weight: 2, arbitrary: fc.integer({ min: -2, max: 20 }) }, { weight: 1, arbitrary: fc.constantFrom(2 ** 32 + 3, 2 ** 31 - 1, 2 ** 40) }, { weight: 1, arbitrary: oddValue }),
          fc.boolean(),
          fc.array(
            fc.oneof(
              { weight: 6, arbitrary: fc.constant('good' as const) },
              { weight: 1, arbitrary: fc.array(fc.oneof(fc.integer({ min: -3, max: 10 }), oddNumber), { maxLength: 4 }) },
              { weight: 1, arbitrary: fc.constantFrom(null, 'abc', 3, new Float32Array(1), new Int32Array(0)) },
            ),
            { maxLength: 6 },
          ),
          async (batch, maxPositions, windowed, steps) => {
            const m = windowed ? model2 : model
            const made = await attempt(() => m.decoder(batch as number, maxPositions as number))
            t.add(made)
            if (!made.ok) return
            const dec = made.value
            expect(Number.isInteger(dec.batch) && dec.batch >= 1).toBe(true)
            for (const s of steps) {
              const before = dec.position
              const tokens = s === 'good' ? Array.from({ length: dec.batch }, (_, i) => (before + i) % 7) : (s as number[])
              const o = await attempt(() => dec.step(tokens as number[]))
              t.add(o)
              if (o.ok) {
                expect(o.value.length).toBe(dec.batch * 7)
                expect(allFinite(o.value)).toBe(true)
                expect(dec.position).toBe(before + 1)
              } else {
                expect(dec.position).toBe(before) // a refused step consumes nothing
              }
            }
          },
        ),
      )
      console.log(`[fuzz]   ${t}`)
      // Decoding still matches the reference after all that.
      const again = model.decoder(1)
      for (const [i, tk] of [3, 1, 4].entries()) expect(sameBits(await again.step([tk]), refSteps[i]!)).toBe(true)
    } finally {
      model.dispose()
      model2.dispose()
    }
    expect(t.ok).toBeGreaterThan(0)
    expect(t.error).toBeGreaterThan(0)
  })

  it('AdamW with mismatched or foreign parameters: an Error, and nothing is updated', async () => {
    const model = new RecurrentTransformer({ vocabSize: 5, d: 4, heads: 1, window: 2, maxLen: 6 })
    const params = model.parameters()
    const before = model.exportParameters()
    const t = tally()
    try {
      await fuzz(
        'AdamW with mismatched params',
        fc.asyncProperty(
          fc.constantFrom('tinyEps', 'hugeLr', 'betaRoundsToOne', 'decayLength', 'valueSize', 'gradSize', 'gradDtype', 'valueDtype', 'disposedGrad', 'lr', 'betas', 'eps', 'stepLr', 'loadState'),
          fc.nat(),
          oddValue,
          async (kind, pick, v) => {
            const i = pick % params.length
            const p = params[i]!
            const own: Tensor[] = []
            const tensor = (shape: number[], dtype: 'float32' | 'int32' = 'float32'): Tensor => {
              const x = Tensor.zeros(shape, dtype)
              own.push(x)
              return x
            }
            let list: Parameter[] = params
            let decay = model.decayMask()
            let opts: Record<string, unknown> = { lr: 1e-3 }
            if (kind === 'decayLength') decay = decay.slice(1)
            if (kind === 'valueSize') list = params.map((q, j) => (j === i ? { ...q, value: tensor([p.value.size + 1]) } : q))
            if (kind === 'gradSize') list = params.map((q, j) => (j === i ? { ...q, grad: tensor([p.value.size + 2]) } : q))
            if (kind === 'gradDtype') list = params.map((q, j) => (j === i ? { ...q, grad: tensor([...p.shape], 'int32') } : q))
            if (kind === 'valueDtype') list = params.map((q, j) => (j === i ? { ...q, value: tensor([...p.shape], 'int32') } : q))
            if (kind === 'disposedGrad') {
              const g = tensor([...p.shape])
              g.dispose()
              list = params.map((q, j) => (j === i ? { ...q, grad: g } : q))
            }
            // Valid as doubles, not as the float32 the update runs in: each made every weight NaN.
            if (kind === 'tinyEps') opts = { eps: 1e-50 }
            if (kind === 'hugeLr') opts = { lr: 1e300 }
            if (kind === 'betaRoundsToOne') opts = { betas: [0.9, 0.99999999] }
            if (kind === 'lr') opts = { lr: v }
            if (kind === 'betas') opts = { betas: [v, 0.9] }
            if (kind === 'eps') opts = { eps: v }
            const o = await attempt(async () => {
              const opt = new AdamW(list, decay, opts as never)
              try {
                if (kind === 'loadState') opt.loadState({ step: 1, m: { [p.name]: new Float32Array(p.value.size + 1) }, v: {} })
                await opt.step(kind === 'stepLr' ? (v as number) : undefined)
              } finally {
                opt.dispose()
              }
            })
            t.add(o)
            for (const x of own) x.dispose()
            const unset = v === undefined || v === null // ?? falls back to the default
            const valid =
              (kind === 'lr' && (unset || (typeof v === 'number' && Number.isFinite(v) && v > 0))) ||
              (kind === 'eps' && (unset || (typeof v === 'number' && Number.isFinite(v) && v > 0))) ||
              (kind === 'betas' && typeof v === 'number' && v >= 0 && Math.fround(v) < 1) ||
              (kind === 'stepLr' && (v === undefined || (typeof v === 'number' && Number.isFinite(v) && v >= 0)))
            if (!valid) expect(o.ok, `${kind} with ${String(v)} was accepted`).toBe(false)
          },
        ),
        Math.min(FUZZ_MS, 2000),
      )
      console.log(`[fuzz]   ${t}`)
      // fast-check's time limit can interrupt the property while its last optimizer step is still running
      // (the model refuses dispose() until then): let it finish first.
      for (let k = 0; k < 500 && params[0]!.lock?.busy; k++) await new Promise((r) => setTimeout(r, 10))
      // Every gradient is zero here, so even the accepted steps moved nothing but decayed weights; the
      // refused ones must not have touched anything: compare the non-decayed parameters bit for bit.
      const after = model.exportParameters()
      model.decayMask().forEach((decays, j) => {
        const name = params[j]!.name
        if (!decays) expect(sameBits(after[name]!, before[name]!), name).toBe(true)
      })
    } finally {
      model.dispose()
    }
  })
})

// ---------------------------------------------------------------------------------------------------

describe('after the fuzzing', () => {
  it('the process is alive, a fresh forward and a fresh training step give the reference bits, and no native memory leaked', async () => {
    const again = await referenceOutputs()
    expect(sameBits(again.y, reference.y)).toBe(true)
    expect(again.loss).toBe(reference.loss)
    expect(sameBits(again.logits, reference.logits)).toBe(true)
    for (const [k, g] of Object.entries(reference.grads)) expect(sameBits(again.grads[k]!, g), k).toBe(true)
    // Tensors dropped by refused calls were freed: what remains is at most the CPU backend's block cache.
    global.gc?.()
    const grown = nativeAllocatedBytes() - bytesBefore
    console.log(`[fuzz] native bytes: ${bytesBefore} before, ${nativeAllocatedBytes()} after (${grown >= 0 ? '+' : ''}${grown})`)
  })
})

// ---------------------------------------------------------------------------------------------------
// The addon's functions called directly with tensors that do not fit together. src/ never passes such
// tensors, but the addon is the layer that must turn bad input into an Error (DESIGN.md section 2):
// each case runs in a child process (memory corruption there cannot hit this runner) that must print
// an Error message and exit normally.

const DIRECT_CASES: Record<string, string> = {
  'embeddingBackward: token beyond dwte rows': `
    await A.embeddingBackward(T('int32', [1, 2], Int32Array.from([0, 100000])), T('float32', [1, 2, 16]), T('float32', [3, 16]), null, 0, 0)`,
  'embeddingBackward: negative token': `
    await A.embeddingBackward(T('int32', [1, 2], Int32Array.from([0, -100000])), T('float32', [1, 2, 16]), T('float32', [3, 16]), null, 0, 0)`,
  'headLogits: ln_f.weight shorter than d': `
    await A.headLogits(T('float32', [1, 2, 64]), T('float32', [2]), null, T('float32', [5, 64]), 1)`,
  'headLogits: ln_f.bias shorter than d': `
    await A.headLogits(T('float32', [1, 2, 64]), T('float32', [64]), T('float32', [2]), T('float32', [5, 64]), 1)`,
  'headXent: ln_f.bias shorter than d': `
    await A.headXent(T('float32', [1, 2, 64]), T('float32', [64]), T('float32', [1]), T('float32', [5, 64]), T('int32', [1, 1], Int32Array.from([1])), -1, null)`,
  'headXent: grads.dlnb shorter than d': `
    await A.headXent(T('float32', [1, 2, 64]), T('float32', [64]), T('float32', [64]), T('float32', [5, 64]), T('int32', [1, 1], Int32Array.from([1])), -1,
      { dlnw: T('float32', [64]), dlnb: T('float32', [1]), dW: T('float32', [5, 64]) })`,
  'DecoderHandle: wte narrower than the layer': `
    const L = new A.LayerHandle(layerCfg(64))
    const dec = new A.DecoderHandle(L, 1, 8, T('float32', [5, 2]), null, T('float32', [64]), null, T('float32', [5, 2]))
    await dec.step(Int32Array.from([1]))`,
  'DecoderHandle: rank-1 wte': `
    const L = new A.LayerHandle(layerCfg(16))
    const dec = new A.DecoderHandle(L, 1, 8, T('float32', [5]), null, T('float32', [16]), null, T('float32', [5, 16]))
    await dec.step(Int32Array.from([1]))`,
  'DecoderHandle: ln_f.weight shorter than d': `
    const L = new A.LayerHandle(layerCfg(64))
    const dec = new A.DecoderHandle(L, 1, 8, T('float32', [5, 64]), null, T('float32', [3]), null, T('float32', [5, 64]))
    await dec.step(Int32Array.from([1]))`,
  'DecoderHandle: wpe narrower than d': `
    const L = new A.LayerHandle(layerCfg(64))
    const dec = new A.DecoderHandle(L, 1, 8, T('float32', [5, 64]), T('float32', [8, 2]), T('float32', [64]), null, T('float32', [5, 64]))
    await dec.step(Int32Array.from([1]))`,
  'adamw: int32 gradient': `
    const p = T('float32', [4], Float32Array.from([1, 2, 3, 4]))
    const g = T('int32', [4], Int32Array.from([1, 1, 1, 1]))
    await A.adamw([p], [g], [T('float32', [4])], [T('float32', [4])], [false], T('int32', [1]), { lr: 0.1, beta1: 0.9, beta2: 0.999, eps: 1e-8, weightDecay: 0, maxNorm: 0 })`,
  'adamw: float32 step count': `
    const p = T('float32', [4], Float32Array.from([1, 2, 3, 4]))
    await A.adamw([p], [T('float32', [4])], [T('float32', [4])], [T('float32', [4])], [false], T('float32', [1]), { lr: 0.1, beta1: 0.9, beta2: 0.999, eps: 1e-8, weightDecay: 0, maxNorm: 0 })`,
  'adamw: step count of two elements': `
    const p = T('float32', [4], Float32Array.from([1, 2, 3, 4]))
    await A.adamw([p], [T('float32', [4])], [T('float32', [4])], [T('float32', [4])], [false], T('int32', [2]), { lr: 0.1, beta1: 0.9, beta2: 0.999, eps: 1e-8, weightDecay: 0, maxNorm: 0 })`,
  'adamw: no step count': `
    const p = T('float32', [4], Float32Array.from([1, 2, 3, 4]))
    await A.adamw([p], [T('float32', [4])], [T('float32', [4])], [T('float32', [4])], [false], { lr: 0.1, beta1: 0.9, beta2: 0.999, eps: 1e-8, weightDecay: 0, maxNorm: 0 })`,
  'adamwResult: the pending of a deferred headXent': `
    const h = await A.headXent(T('float32', [1, 2, 4]), T('float32', [4]), null, T('float32', [3, 4]), T('int32', [1, 2], Int32Array.from([0, 1])), -100, null, false, true)
    await A.adamwResult(h.pending)`,
  'xentResult: the pending of a deferred adamw': `
    const p = T('float32', [4], Float32Array.from([1, 2, 3, 4]))
    const r = await A.adamw([p], [T('float32', [4])], [T('float32', [4])], [T('float32', [4])], [false], T('int32', [1]), { lr: 0.1, beta1: 0.9, beta2: 0.999, eps: 1e-8, weightDecay: 0, maxNorm: 0 }, true)
    await A.xentResult(r.pending)`,
  'xentResult: not the pending of a deferred headXent': `
    await A.xentResult({ loss: 1 })`,
  'xentResult: nothing': `
    await A.xentResult()`,
  'embeddingForward: negative seed (float-to-integer cast)': `
    await A.embeddingForward(T('int32', [1, 2], Int32Array.from([0, 1])), T('float32', [3, 4]), null, 0.5, -1)`,
}

function runDirect(body: string): { status: number | null; signal: string | null; out: string } {
  const script = `
    const { createRequire } = require('node:module')
    const path = require('node:path')
    const root = ${JSON.stringify(ROOT)}
    const A = process.env.RT_ADDON_PATH ? require(path.resolve(process.env.RT_ADDON_PATH)) : require(path.join(root, 'node_modules/node-gyp-build'))(root)
    const T = (dt, shape, data) => new A.TensorHandle(dt, shape, data)
    const layerCfg = (d) => ({ d, heads: 1, layers: 1, window: 2, accumulate: false, alphaInit: 0.5, alphaLearnable: true, gelu: true, bias: false, dropout: 0, seed: 0, device: 'cpu', precision: 'fp32' })
    ;(async () => {
      ${body}
    })().then(() => console.log('RESULT: no error'), (e) => console.log('RESULT: ' + (e instanceof Error ? e.constructor.name + ': ' + e.message : 'non-Error ' + String(e))))
  `
  const r = spawnSync(process.execPath, ['-e', script], { encoding: 'utf8', timeout: 60_000, env: process.env })
  return { status: r.status, signal: r.signal, out: `${r.stdout}${r.stderr}` }
}

describe('direct addon calls with tensors that do not fit together (each in a child process)', () => {
  for (const [name, body] of Object.entries(DIRECT_CASES)) {
    it(`${name}: an Error, not a crash or a silent success`, () => {
      const r = runDirect(body)
      const result = /RESULT: (.*)/.exec(r.out)?.[1]
      const detail = `exit ${r.status ?? r.signal}; output:\n${r.out.slice(0, 3000)}`
      expect(r.out, detail).not.toMatch(/AddressSanitizer|runtime error:/)
      expect(r.status, detail).toBe(0)
      expect(result, detail).toMatch(/Error: /)
    })
  }
})
