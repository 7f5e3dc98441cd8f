// Numerical faults during training, beyond test/train.test.ts (which covers a NaN that stays in the
// weights until maxBadSteps, and a diverging learning rate): a transient NaN in the loss and a
// non-finite gradient with a finite loss are each skipped with a 'skip' event naming the reason, the
// skipped step changes neither weights nor optimizer state, training goes on and finishes; bad steps
// that are not consecutive never trip maxBadSteps; consecutive ones stop training with a clear Error,
// and the model is left with its last good weights and still works.

import * as fs from 'node:fs'
import * as os from 'node:os'
import * as path from 'node:path'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { loadCheckpoint } from '../src/io/checkpoint.js'
import type { ModelConfig } from '../src/model/config.js'
import { RecurrentTransformer } from '../src/model/transformer.js'
import { Tensor } from '../src/tensor.js'
import { CopyTaskData } from '../src/train/data.js'
import { type TrainEvent, train } from '../src/train/trainer.js'
import { sameBits } from './helpers.js'

const data = new CopyTaskData({ task: 'copy', noise: 4, M: 2, alphabet: 6 })
const cfg: ModelConfig = { vocabSize: 6, d: 8, heads: 2, window: 2, variant: 'accumulate', maxLen: 8, head: { copy: 2 }, seed: 2 }

type Fault = 'loss' | 'grad'

/**
 * Trains with faults injected at the given steps (1-based): 'loss' puts a NaN in a weight just before
 * the step and takes it out right after the step is skipped (a transient NaN loss); 'grad' poisons one
 * gradient after lossAndGrad (a non-finite gradient norm with a finite loss).
 */
async function trainWithFaults(faults: Record<number, Fault>, steps: number, maxBadSteps: number, ckpt?: string) {
  const model = new RecurrentTransformer(cfg)
  const events: TrainEvent[] = []
  const snapshots = new Map<number, Record<string, Float32Array>>() // weights after each step
  snapshots.set(0, model.exportParameters())
  const ln = model.parameters().find((p) => p.name === 'transformer.ln_f.weight')!
  const lnGood = ln.value.toArray() as Float32Array
  const poisonWeight = (): void => {
    const v = Float32Array.from(lnGood)
    v[0] = NaN
    ln.value.handle().write(v) // importParameters refuses NaN; the handle does not
  }
  let step = 0 // the step about to run
  if (faults[1] === 'loss') poisonWeight()
  // A non-finite gradient after an otherwise normal lossAndGrad.
  const real = model.lossAndGrad.bind(model)
  model.lossAndGrad = async (tok: Tensor, tgt: Tensor, opts) => {
    const r = await real(tok, tgt, opts)
    if (faults[step + 1] === 'grad') {
      const g = model.parameters().find((p) => p.name === 'transformer.h.0.attn.c_attn.weight')!.grad
      const v = g.toArray() as Float32Array
      v[3] = Infinity
      g.handle().write(v)
    }
    return r
  }
  let error: unknown = null
  let result = null
  try {
    result = await train({
      model, data, steps, batchSize: 4, maxBadSteps, evalEvery: 1000, seed: 5,
      ...(ckpt ? { checkpoint: { path: ckpt } } : {}),
      onEvent: (e) => {
        events.push(e)
        if (e.type === 'step') {
          step = e.step
          if (faults[step] === 'loss') {
            // The skip of this step has been emitted: take the NaN out again.
            ln.value.handle().write(Float32Array.from(ln.value.toArray()).map((x, i) => (i === 0 ? lnGood[0]! : x)))
          }
          snapshots.set(step, model.exportParameters())
          if (faults[step + 1] === 'loss') {
            lnGood.set(ln.value.toArray() as Float32Array)
            poisonWeight()
          }
        }
      },
    })
  } catch (e) {
    error = e
  }
  return { model, events, snapshots, error, result }
}

function skips(events: TrainEvent[]): { step: number; reason: string }[] {
  return events.filter((e): e is Extract<TrainEvent, { type: 'skip' }> => e.type === 'skip').map(({ step, reason }) => ({ step, reason }))
}

function sameParams(a: Record<string, Float32Array>, b: Record<string, Float32Array>): boolean {
  return Object.keys(a).every((k) => sameBits(a[k]!, b[k]!))
}

describe('numerical faults in training', () => {
  let dir: string
  beforeAll(() => {
    dir = fs.mkdtempSync(path.join(os.tmpdir(), 'rt-numerics-'))
  })
  afterAll(() => {
    fs.rmSync(dir, { recursive: true, force: true })
  })

  it('a transient NaN loss and non-finite gradients are skipped with a reason; those steps change nothing; training finishes', async () => {
    const ck = path.join(dir, 'faults.safetensors')
    const { model, events, snapshots, error, result } = await trainWithFaults({ 3: 'loss', 6: 'grad', 7: 'grad', 10: 'loss' }, 12, 3, ck)
    try {
      expect(error).toBeNull()
      expect(result).toMatchObject({ step: 12, aborted: false })
      expect(skips(events)).toEqual([
        { step: 3, reason: 'non-finite loss' },
        { step: 6, reason: 'non-finite gradient norm' },
        { step: 7, reason: 'non-finite gradient norm' },
        { step: 10, reason: 'non-finite loss' },
      ])
      // The step event of a skipped step is still emitted (the loss or the norm shows why).
      const stepEvents = events.filter((e): e is Extract<TrainEvent, { type: 'step' }> => e.type === 'step')
      expect(stepEvents.map((e) => e.step)).toEqual([1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12])
      expect(Number.isNaN(stepEvents[2]!.loss)).toBe(true)
      expect(Number.isFinite(stepEvents[5]!.loss) && !Number.isFinite(stepEvents[5]!.gradNorm)).toBe(true)
      // Skipped steps leave the weights as they were (the NaN put in for step 3 and 10 was taken out).
      for (const s of [6, 7]) expect(sameParams(snapshots.get(s)!, snapshots.get(s - 1)!), `step ${s}`).toBe(true)
      // Good steps do move them, after the skips too.
      for (const s of [4, 8, 11, 12]) expect(sameParams(snapshots.get(s)!, snapshots.get(s - 1)!), `step ${s}`).toBe(false)
      // The optimizer counted only the good steps; the final weights are finite.
      const c = await loadCheckpoint(ck)
      expect(c.optimizer?.step).toBe(12 - 4)
      expect((c.training as { step: number; badSteps: number })).toMatchObject({ step: 12, badSteps: 0 })
      for (const [k, v] of Object.entries(model.exportParameters())) expect(v.every(Number.isFinite), k).toBe(true)
    } finally {
      model.dispose()
    }
  })

  it('bad steps that are not consecutive never reach maxBadSteps', async () => {
    const faults: Record<number, Fault> = { 2: 'grad', 3: 'grad', 5: 'loss', 6: 'grad', 8: 'grad', 9: 'loss' }
    const { model, events, error, result } = await trainWithFaults(faults, 10, 3)
    try {
      expect(error).toBeNull()
      expect(result).toMatchObject({ step: 10 })
      expect(skips(events).map((s) => s.step)).toEqual([2, 3, 5, 6, 8, 9])
    } finally {
      model.dispose()
    }
  })

  it('maxBadSteps consecutive bad steps (of either kind) stop training with a clear Error; the model keeps its last good weights and works', async () => {
    const { model, events, snapshots, error } = await trainWithFaults({ 4: 'grad', 5: 'loss', 6: 'grad' }, 20, 3)
    try {
      expect(error).toBeInstanceOf(Error)
      expect((error as Error).message).toBe('training stopped: 3 consecutive steps had a non-finite loss or gradient (maxBadSteps = 3)')
      expect(skips(events).map((s) => s.step)).toEqual([4, 5, 6])
      // Stopped right there: the step that trips the limit emits its skip, then the Error.
      expect(events.filter((e) => e.type === 'step').length).toBe(5)
      expect(events.at(-1)).toMatchObject({ type: 'skip', step: 6 })
      // Weights: those after step 3, the last good one (the NaN of step 5 was taken out again).
      expect(sameParams(model.exportParameters(), snapshots.get(3)!)).toBe(true)
      // The model still evaluates to a finite loss.
      const b = data.batch(new (await import('../src/data/rng.js')).Rng(1), 4, 'val', {})
      const tok = Tensor.fromArray(b.tokens, [b.batch, b.seqLen], 'int32')
      const tgt = Tensor.fromArray(b.targets, [b.batch, b.positions], 'int32')
      const r = await model.evaluate(tok, tgt)
      expect(Number.isFinite(r.loss)).toBe(true)
      tok.dispose()
      tgt.dispose()
    } finally {
      model.dispose()
    }
  })

  it('maxBadSteps = 1: the first bad step stops training', async () => {
    const { model, error, events } = await trainWithFaults({ 2: 'loss' }, 5, 1)
    try {
      expect((error as Error).message).toMatch(/1 consecutive steps .*maxBadSteps = 1/)
      expect(skips(events)).toEqual([{ step: 2, reason: 'non-finite loss' }])
    } finally {
      model.dispose()
    }
  })
})
