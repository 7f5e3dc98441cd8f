// FLOPs per sample (src/model/flops.ts) against counts done by hand, against the benchmarks' layer
// count (bench/lib/flops.mjs), and the trainer's cumulative count in its events.

import * as fsp from 'node:fs/promises'
import * as os from 'node:os'
import * as path from 'node:path'
import { describe, expect, it } from 'vitest'
import { applicationLengths, flopsPerSample } from '../src/model/flops.js'
import { RecurrentTransformer } from '../src/model/transformer.js'
import { CopyTaskData } from '../src/train/data.js'
import { type TrainEvent, train } from '../src/train/trainer.js'
// @ts-expect-error: plain JavaScript module without type declarations
import { layerFlops } from '../bench/lib/flops.mjs'

describe('flopsPerSample', () => {
  it('matches a hand count: d 8, 2 heads, N 10, w 4, lm head over a vocabulary of 5', () => {
    // Windows: m = ceil(10 / 4) = 3, r = 2; applications of T to 4, 8, 6 and 2 tokens.
    // Products: 24 * d^2 = 1536 per token, 20 tokens = 30720. Attention: 2 n (n+1) d = 16 n (n+1):
    // 16 * (20 + 72 + 42 + 6) = 2240. Layer forward 32960. Head: 2 * 8 * 5 per position * 10 = 800.
    expect(applicationLengths(10, 4)).toEqual([4, 8, 6, 2])
    const f = flopsPerSample({ d: 8, heads: 2, window: 4, vocabSize: 5, head: 'lm' }, 10)
    expect(f).toEqual({ layers: 32960, head: 800, forward: 33760, training: 101280 })
  })

  it('plain transformer (w 0), one window (w >= N: T(T(X))), L layers, copy and classify heads', () => {
    // w 0, N 10, d 8: 1536 * 10 + 16 * 10 * 11 = 17120 per layer.
    expect(flopsPerSample({ d: 8, heads: 2, layers: 2, window: 0, vocabSize: 5 }, 10).layers).toBe(2 * 17120)
    expect(flopsPerSample({ d: 8, heads: 2, window: 16, vocabSize: 5 }, 10).layers).toBe(2 * 17120)
    expect(flopsPerSample({ d: 8, heads: 2, window: 0, vocabSize: 5, head: { copy: 3 } }, 10).head).toBe(2 * 8 * 5 * 3)
    expect(flopsPerSample({ d: 8, heads: 2, window: 0, vocabSize: 256, head: { classify: 4 } }, 10).head).toBe(2 * 8 * 4)
    // w divides N: 4 windows of 4 -> 4, 8, 8, 8, 4 tokens.
    expect(applicationLengths(16, 4)).toEqual([4, 8, 8, 8, 4])
  })

  it('agrees with bench/lib/flops.mjs for the layer stack (fwd + bwd = training minus the head)', () => {
    for (const [N, d, heads, w, layers] of [[256, 384, 6, 16, 1], [4128, 96, 6, 32, 1], [784, 128, 4, 0, 4], [1000, 64, 4, 33, 3], [5, 8, 2, 7, 1]]) {
      const f = flopsPerSample({ d, heads, layers, window: w, vocabSize: 65 }, N)
      expect(3 * f.layers).toBe(layerFlops({ B: 1, N, d, heads, w, layers }))
    }
  })

  it('refuses bad configs, naming the field', () => {
    expect(() => flopsPerSample({ d: 10, heads: 3, window: 4, vocabSize: 5 }, 10)).toThrow(/model\.heads: must divide d/)
    expect(() => flopsPerSample({ d: 8, heads: 2, window: -1, vocabSize: 5 }, 10)).toThrow(/model\.window: expected an integer >= 0/)
    expect(() => flopsPerSample({ d: 8, heads: 2, window: 4, vocabSize: 5 }, 0)).toThrow(/seqLen: expected an integer >= 1/)
  })
})

describe('the trainer counts cumulative training FLOPs', () => {
  it('adds batch x training FLOPs at each step`s sequence length (curriculum) and window (random widths)', async () => {
    const data = new CopyTaskData({ task: 'copy', noise: 16, M: 4, alphabet: 8 })
    const model = new RecurrentTransformer({ vocabSize: 8, d: 16, heads: 2, windowRange: [2, 9], variant: 'accumulate', maxLen: data.maxSeqLen, head: { copy: 4 } })
    const events: TrainEvent[] = []
    try {
      // A curriculum threshold no loss reaches at first and one every loss reaches later: noise 4 -> 8 -> 16.
      const r = await train({
        model, data, steps: 12, batchSize: 3, optimizer: { lr: 1e-3 }, evalEvery: 4, evalBatches: 1, seed: 1,
        curriculum: { start: 4, threshold: 100 }, onEvent: (e) => events.push(e),
      })
      const steps = events.filter((e): e is Extract<TrainEvent, { type: 'step' }> => e.type === 'step')
      expect(new Set(steps.map((s) => s.noise))).toEqual(new Set([4, 8, 16]))
      expect(new Set(steps.map((s) => s.window)).size).toBeGreaterThan(1)
      let total = 0
      for (const s of steps) {
        total += 3 * flopsPerSample({ ...model.config, window: s.window }, 4 + s.noise! + 4).training
        expect(s.flops).toBe(total)
      }
      expect(r.flops).toBe(total)
      const evals = events.filter((e): e is Extract<TrainEvent, { type: 'eval' }> => e.type === 'eval')
      expect(evals.map((e) => e.flops)).toEqual([4, 8, 12].map((k) => steps[k - 1]!.flops))
    } finally {
      model.dispose()
    }
  })

  it('a resumed run continues the count from its checkpoint', async () => {
    const dir = await fsp.mkdtemp(path.join(os.tmpdir(), 'rt-flops-test-'))
    const data = new CopyTaskData({ task: 'copy', noise: 8, M: 4, alphabet: 8 })
    const cfg = { vocabSize: 8, d: 16, heads: 2, windowRange: [2, 9] as [number, number], variant: 'accumulate' as const, maxLen: data.maxSeqLen, head: { copy: 4 } }
    const run = async (steps: number, resumeFrom?: string) => {
      const model = new RecurrentTransformer(cfg)
      const flops: number[] = []
      try {
        const ck = path.join(dir, `ck-${steps}-${resumeFrom ? 'b' : 'a'}.safetensors`)
        await train({ model, data, steps, batchSize: 2, evalEvery: 100, seed: 4, curriculum: false, resumeFrom, checkpoint: { path: ck }, onEvent: (e) => { if (e.type === 'step') flops.push(e.flops) } })
        return { flops, ck }
      } finally {
        model.dispose()
      }
    }
    try {
      const whole = await run(8)
      const first = await run(4)
      const rest = await run(8, first.ck)
      expect(first.flops).toEqual(whole.flops.slice(0, 4))
      expect(rest.flops).toEqual(whole.flops.slice(4))
    } finally {
      await fsp.rm(dir, { recursive: true, force: true })
    }
  })
})
