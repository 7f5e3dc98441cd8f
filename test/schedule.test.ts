// Learning-rate schedules (src/optim/schedule.ts): values at chosen steps computed by hand from the
// formulas, the paper's curriculum and LM rules, state round trips and validation.

import { describe, expect, it } from 'vitest'
import {
  AdaptiveLmLr,
  CurriculumLr,
  constantLr,
  lmAdaptiveLr,
  warmupCosine,
} from '../src/optim/schedule.js'

const close = (a: number, b: number) => expect(a).toBeCloseTo(b, 12)

describe('constantLr', () => {
  it('is constant', () => {
    const f = constantLr(3e-4)
    expect(f(0)).toBe(3e-4)
    expect(f(12345)).toBe(3e-4)
  })
  it('validates', () => {
    for (const bad of [0, -1, NaN, Infinity]) expect(() => constantLr(bad)).toThrow(/lr/)
    expect(() => constantLr(1e-3)(-1)).toThrow(/step/)
    expect(() => constantLr(1e-3)(NaN)).toThrow(/step/)
  })
})

describe('warmupCosine', () => {
  // lr 1e-3, minLr 1e-4, warmup 100, total 1100: decay over 1000 steps.
  const f = warmupCosine({ lr: 1e-3, warmup: 100, total: 1100, minLr: 1e-4 })

  it('warms up linearly from 0', () => {
    expect(f(0)).toBe(0)
    close(f(25), 2.5e-4)
    close(f(50), 5e-4) // warmup midpoint: lr / 2
    close(f(99), 9.9e-4)
  })

  it('follows the cosine from lr to minLr, then holds minLr', () => {
    close(f(100), 1e-3) // peak
    // quarter: progress 0.25, (1 + cos(pi/4)) / 2 = 0.8535533905932737
    close(f(350), 1e-4 + 9e-4 * 0.8535533905932737)
    close(f(600), 5.5e-4) // cosine midpoint: (lr + minLr) / 2
    close(f(1100), 1e-4) // end
    expect(f(1100)).toBe(1e-4)
    expect(f(50_000)).toBe(1e-4)
    let prev = Infinity
    for (let s = 100; s <= 1200; s += 7) {
      const v = f(s)
      expect(v).toBeLessThanOrEqual(prev)
      expect(v).toBeGreaterThanOrEqual(1e-4)
      prev = v
    }
  })

  it('defaults minLr to 0 and allows no warmup', () => {
    const g = warmupCosine({ lr: 2, warmup: 0, total: 10 })
    expect(g(0)).toBe(2)
    close(g(5), 1)
    expect(g(10)).toBe(0)
  })

  it('validates', () => {
    expect(() => warmupCosine({ lr: 0, warmup: 1, total: 2 })).toThrow(/lr/)
    expect(() => warmupCosine({ lr: 1, warmup: -1, total: 2 })).toThrow(/warmup/)
    expect(() => warmupCosine({ lr: 1, warmup: 1.5, total: 2 })).toThrow(/warmup/)
    expect(() => warmupCosine({ lr: 1, warmup: 5, total: 5 })).toThrow(/total/)
    expect(() => warmupCosine({ lr: 1, warmup: 1, total: 5, minLr: 2 })).toThrow(/minLr/)
    expect(() => warmupCosine({ lr: 1, warmup: 1, total: 5, minLr: -0.1 })).toThrow(/minLr/)
    expect(() => f(-1)).toThrow(/step/)
  })
})

describe('CurriculumLr (the paper rule for the noise-length curriculum)', () => {
  it('sets lr0 * (1 - 0.5 L / Lmax) at each length change below Lmax', () => {
    const s = new CurriculumLr({ lr0: 1e-3 })
    expect(s.current()).toBe(1e-3)
    close(s.onLengthChange(64, 4096), 1e-3 * (1 - 1 / 128)) // 9.921875e-4
    close(s.current(), 9.921875e-4)
    close(s.onLengthChange(1024, 4096), 8.75e-4)
    close(s.onLengthChange(2048, 4096), 7.5e-4)
    // Reaching Lmax leaves lr alone: the full-length rule takes over.
    close(s.onLengthChange(4096, 4096), 7.5e-4)
  })

  it('at full length applies lr0 * (1 - exp(-valLoss)) only when lower (monotone)', () => {
    const s = new CurriculumLr({ lr0: 1e-3 })
    s.onLengthChange(2048, 4096) // 7.5e-4
    close(s.onEval(2.0, true), 7.5e-4) // 1e-3 (1 - e^-2) = 8.6466e-4 is higher: ignored
    close(s.onEval(0.5, false), 7.5e-4) // not at full length: ignored
    close(s.onEval(0.5, true), 1e-3 * (1 - Math.exp(-0.5))) // 3.9347e-4
    close(s.onEval(1.0, true), 1e-3 * (1 - Math.exp(-0.5))) // 6.3212e-4 is higher: ignored
    close(s.onEval(0.1, true), 1e-3 * (1 - Math.exp(-0.1))) // 9.5163e-5
    expect(s.onEval(0, true)).toBe(0)
  })

  it('compounds the cuts, Lmax included, when asked (the author`s code), and round-trips the base rate', () => {
    const s = new CurriculumLr({ lr0: 1e-3, compound: true })
    let base = 1e-3
    for (const L of [256, 512, 1024, 2048, 4096]) {
      base *= 1 - (0.5 * L) / 4096
      close(s.onLengthChange(L, 4096), base)
    }
    close(base, 1e-3 * 0.96875 * 0.9375 * 0.875 * 0.75 * 0.5) // 2.98e-4: reaching Lmax halved it
    close(s.onEval(0.5, true), base * (1 - Math.exp(-0.5))) // the full-length rule scales the cut base
    close(s.onEval(2.0, true), base * (1 - Math.exp(-0.5))) // higher: ignored
    const t = new CurriculumLr({ lr0: 1e-3, compound: true })
    t.setState(JSON.parse(JSON.stringify(s.getState())))
    expect(t.current()).toBe(s.current())
    expect(t.onEval(0.1, true)).toBe(s.onEval(0.1, true))
    expect(() => new CurriculumLr({ lr0: 1e-3, compound: true }).setState({ lr: 1e-4 })).toThrow(/state\.base/)
    expect(() => new CurriculumLr({ lr0: 1e-3, compound: 'yes' as unknown as boolean })).toThrow(/compound/)
  })

  it('honours an optional floor, and round-trips its state', () => {
    const s = new CurriculumLr({ lr0: 1e-3, minLr: 1e-4 })
    close(s.onEval(0.01, true), 1e-4)
    const t = new CurriculumLr({ lr0: 1e-3, minLr: 1e-4 })
    t.setState(JSON.parse(JSON.stringify(s.getState())))
    expect(t.current()).toBe(s.current())
    expect(t.onEval(0.005, true)).toBe(s.onEval(0.005, true))
  })

  it('validates', () => {
    expect(() => new CurriculumLr({ lr0: 0 })).toThrow(/lr0/)
    expect(() => new CurriculumLr({ lr0: 1, minLr: 2 })).toThrow(/minLr/)
    const s = new CurriculumLr({ lr0: 1e-3 })
    expect(() => s.onLengthChange(5000, 4096)).toThrow(/\bL\b/)
    expect(() => s.onLengthChange(-1, 4096)).toThrow(/\bL\b/)
    expect(() => s.onLengthChange(10, 0)).toThrow(/Lmax/)
    expect(() => s.onEval(NaN, true)).toThrow(/valLoss/)
    expect(() => s.onEval(-1, true)).toThrow(/valLoss/)
    expect(() => s.onEval(1, 'yes' as unknown as boolean)).toThrow(/atFullLength/)
    expect(() => s.setState({ lr: -1 })).toThrow(/lr/)
  })
})

describe('the LM rule', () => {
  const f = lmAdaptiveLr({ lr0: 6e-4, target: 1.0, minLr: 6e-5 })

  it('is clip(lr0 * (1 - exp(target - valLoss)), minLr, lr0)', () => {
    close(f(3.0), 6e-4 * (1 - Math.exp(-2))) // 5.18799e-4, inside the clip range
    close(f(1.2), 6e-4 * (1 - Math.exp(-0.2))) // 1.08761e-4, inside
    expect(f(1.1)).toBe(6e-5) // 5.70975e-5 is below minLr: clipped
    expect(f(1.0)).toBe(6e-5) // 0: clipped
    expect(f(0.5)).toBe(6e-5) // negative: clipped
    expect(f(Infinity)).toBe(6e-4) // upper end
    expect(lmAdaptiveLr({ lr0: 1, target: 0 })(0)).toBe(0) // minLr defaults to 0
  })

  it('AdaptiveLmLr follows the rule (up and down) and round-trips its state', () => {
    const s = new AdaptiveLmLr({ lr0: 6e-4, target: 1.0, minLr: 6e-5 })
    expect(s.current()).toBe(6e-4)
    close(s.onEval(3.0), f(3.0))
    expect(s.onEval(1.1)).toBe(6e-5)
    close(s.onEval(1.2), f(1.2)) // not monotone: the rule sets, it does not only lower
    const t = new AdaptiveLmLr({ lr0: 6e-4, target: 1.0, minLr: 6e-5 })
    t.setState(s.getState())
    expect(t.current()).toBe(s.current())
  })

  it('validates', () => {
    expect(() => lmAdaptiveLr({ lr0: -1, target: 1 })).toThrow(/lr0/)
    expect(() => lmAdaptiveLr({ lr0: 1, target: NaN })).toThrow(/target/)
    expect(() => lmAdaptiveLr({ lr0: 1, target: 1, minLr: 1.5 })).toThrow(/minLr/)
    expect(() => f(NaN)).toThrow(/valLoss/)
    expect(() => new AdaptiveLmLr({ lr0: Infinity, target: 1 })).toThrow(/lr0/)
    expect(() => new AdaptiveLmLr({ lr0: 1, target: 1 }).onEval(-0.5)).toThrow(/valLoss/)
    expect(() => new AdaptiveLmLr({ lr0: 1, target: 1 }).setState({ lr: NaN })).toThrow(/lr/)
  })
})
