// The noise-length curriculum and the random window widths (src/train/curriculum.ts).

import { describe, expect, it } from 'vitest'
import { Rng } from '../src/data/rng.js'
import { CurriculumLr } from '../src/optim/schedule.js'
import { NoiseCurriculum, evalWindow, sampleWindow } from '../src/train/curriculum.js'

describe('NoiseCurriculum', () => {
  it('doubles 32 -> 64 -> ... -> max while the loss is below the threshold, then stays', () => {
    const c = new NoiseCurriculum({ max: 4096 })
    expect(c.length).toBe(32)
    expect(c.threshold).toBe(0.3)
    expect(c.atMax).toBe(false)
    const seen = [c.length]
    while (!c.atMax) {
      const ev = c.onEval(0.1)
      expect(ev.changed).toBe(true)
      expect(ev.from).toBe(seen[seen.length - 1])
      expect(ev.to).toBe(c.length)
      seen.push(c.length)
    }
    expect(seen).toEqual([32, 64, 128, 256, 512, 1024, 2048, 4096])
    expect(c.onEval(0)).toEqual({ changed: false, from: 4096, to: 4096 })
    expect(c.length).toBe(4096)
  })

  it('does not change at or above the threshold', () => {
    const c = new NoiseCurriculum({ max: 1024 })
    expect(c.onEval(0.3)).toEqual({ changed: false, from: 32, to: 32 })
    expect(c.onEval(2.5)).toEqual({ changed: false, from: 32, to: 32 })
    expect(c.onEval(Infinity).changed).toBe(false)
    expect(c.onEval(0.29).to).toBe(64)
  })

  it('caps the last step at max when doubling would overshoot', () => {
    const c = new NoiseCurriculum({ start: 32, max: 100 })
    expect(c.onEval(0.1).to).toBe(64)
    expect(c.onEval(0.1)).toEqual({ changed: true, from: 64, to: 100 })
    expect(c.atMax).toBe(true)
    expect(c.onEval(0.1)).toEqual({ changed: false, from: 100, to: 100 })
  })

  it('honours start and threshold; the default start is min(32, max)', () => {
    const c = new NoiseCurriculum({ start: 5, max: 40, threshold: 1 })
    const seq = [c.length]
    while (!c.atMax) seq.push(c.onEval(0.9).to)
    expect(seq).toEqual([5, 10, 20, 40])
    const small = new NoiseCurriculum({ max: 20 })
    expect(small.length).toBe(20)
    expect(small.atMax).toBe(true)
  })

  it('round-trips its state', () => {
    const c = new NoiseCurriculum({ max: 4096 })
    c.onEval(0.1)
    c.onEval(0.1)
    const d = new NoiseCurriculum({ max: 4096 })
    d.setState(JSON.parse(JSON.stringify(c.getState())))
    expect(d.length).toBe(128)
    expect(d.onEval(0.1)).toEqual(c.onEval(0.1))
  })

  it('validates', () => {
    expect(() => new NoiseCurriculum({ max: 0 })).toThrow(/max/)
    expect(() => new NoiseCurriculum({ max: 10.5 })).toThrow(/max/)
    expect(() => new NoiseCurriculum({ start: 64, max: 32 })).toThrow(/start/)
    expect(() => new NoiseCurriculum({ start: 0, max: 32 })).toThrow(/start/)
    expect(() => new NoiseCurriculum({ max: 32, threshold: 0 })).toThrow(/threshold/)
    expect(() => new NoiseCurriculum({ max: 32, threshold: NaN })).toThrow(/threshold/)
    const c = new NoiseCurriculum({ max: 64 })
    expect(() => c.onEval(NaN)).toThrow(/valLoss/)
    expect(() => c.setState({ length: 128 })).toThrow(/length/)
    expect(() => c.setState({ length: 16 })).toThrow(/length/)
  })

  it('composes with CurriculumLr', () => {
    const c = new NoiseCurriculum({ max: 256 })
    const lr = new CurriculumLr({ lr0: 1e-3 })
    const step = (loss: number): number => {
      const ev = c.onEval(loss)
      return ev.changed ? lr.onLengthChange(ev.to, c.max) : lr.onEval(loss, c.atMax)
    }
    expect(step(0.1)).toBeCloseTo(1e-3 * (1 - 0.5 * 64 / 256), 15) // 64
    expect(step(0.5)).toBeCloseTo(8.75e-4, 15) // above threshold, not at max: unchanged
    expect(step(0.1)).toBeCloseTo(7.5e-4, 15) // 128
    expect(step(0.1)).toBeCloseTo(7.5e-4, 15) // 256 = max: unchanged
    expect(step(0.2)).toBeCloseTo(1e-3 * (1 - Math.exp(-0.2)), 15) // full length: lowered
  })
})

describe('window widths', () => {
  it('sampleWindow is uniform over [min, max] and covers it', () => {
    const rng = new Rng(1)
    const r = { min: 4, max: 12 }
    const counts = new Array<number>(9).fill(0)
    let outside = 0
    for (let i = 0; i < 45_000; i++) {
      const w = sampleWindow(rng, r)
      if (!(Number.isInteger(w) && w >= 4 && w <= 12)) outside++
      else counts[w - 4]!++
    }
    expect(outside).toBe(0)
    for (const n of counts) expect(n).toBeGreaterThan(4500)
    for (const n of counts) expect(n).toBeLessThan(5500)
    expect(sampleWindow(rng, { min: 7, max: 7 })).toBe(7)
    // Reproducible from the generator's state.
    const a = new Rng(3)
    const b = new Rng(3)
    for (let i = 0; i < 100; i++) expect(sampleWindow(a, r)).toBe(sampleWindow(b, r))
  })

  it('evalWindow is the floor midpoint', () => {
    expect(evalWindow({ min: 4, max: 12 })).toBe(8)
    expect(evalWindow({ min: 4, max: 11 })).toBe(7)
    expect(evalWindow({ min: 1, max: 2 })).toBe(1)
    expect(evalWindow({ min: 16, max: 16 })).toBe(16)
    expect(evalWindow({ min: 0, max: 0 })).toBe(0)
  })

  it('validates', () => {
    const rng = new Rng(0)
    expect(() => sampleWindow(rng, { min: 5, max: 4 })).toThrow(/max/)
    expect(() => sampleWindow(rng, { min: -1, max: 4 })).toThrow(/min/)
    expect(() => evalWindow({ min: 1.5, max: 4 })).toThrow(/min/)
    expect(() => evalWindow({ min: 1, max: NaN })).toThrow(/max/)
  })
})
