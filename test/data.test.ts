// The seeded PRNG (src/data/rng.ts) and the copy / selective-copy generators (src/data/copy.ts,
// DESIGN.md section 1).

import { describe, expect, it } from 'vitest'
import { Rng } from '../src/data/rng.js'
import { copyBatch, copySeqLen, type CopyTaskOptions } from '../src/data/copy.js'

/** Pearson's chi-square statistic against equal expected counts. */
function chiSquare(counts: ArrayLike<number>): number {
  let total = 0
  for (let i = 0; i < counts.length; i++) total += counts[i]!
  const expected = total / counts.length
  let chi = 0
  for (let i = 0; i < counts.length; i++) chi += (counts[i]! - expected) ** 2 / expected
  return chi
}

function draws(rng: Rng, n: number): number[] {
  return Array.from({ length: n }, () => rng.nextU32())
}

function pearson(a: number[], b: number[]): number {
  const n = a.length
  const ma = a.reduce((s, x) => s + x, 0) / n
  const mb = b.reduce((s, x) => s + x, 0) / n
  let sab = 0
  let saa = 0
  let sbb = 0
  for (let i = 0; i < n; i++) {
    sab += (a[i]! - ma) * (b[i]! - mb)
    saa += (a[i]! - ma) ** 2
    sbb += (b[i]! - mb) ** 2
  }
  return sab / Math.sqrt(saa * sbb)
}

describe('Rng', () => {
  it('is xoshiro128** (reference outputs from the C implementation, state {1, 2, 3, 4})', () => {
    const r = Rng.fromState([1, 2, 3, 4])
    expect(draws(r, 10)).toEqual([
      11520, 0, 5927040, 70819200, 2031721883, 1637235492, 1287239034, 3734860849, 3729100597, 4258142804,
    ])
  })

  it('is deterministic for a seed', () => {
    expect(draws(new Rng(42), 1000)).toEqual(draws(new Rng(42), 1000))
    expect(new Rng().getState()).toEqual(new Rng(0).getState())
  })

  it('gives unrelated streams for seeds 0, 1, 2 and for seeds differing only in the high word', () => {
    const seeds = [0, 1, 2, 2 ** 32, 2 ** 52 + 1, Number.MAX_SAFE_INTEGER]
    const streams = seeds.map((s) => draws(new Rng(s), 2000))
    for (let i = 0; i < seeds.length; i++) {
      for (let j = i + 1; j < seeds.length; j++) {
        let same = 0
        for (let k = 0; k < 2000; k++) if (streams[i]![k] === streams[j]![k]) same++
        expect(same).toBe(0)
        expect(Math.abs(pearson(streams[i]!, streams[j]!))).toBeLessThan(0.1)
      }
    }
    // Avalanche: neighbouring seeds differ in about half of the bits of each output.
    let bits = 0
    let n = 0
    for (let s = 0; s < 200; s++) {
      const a = new Rng(s)
      const b = new Rng(s + 1)
      for (let k = 0; k < 8; k++) {
        let x = (a.nextU32() ^ b.nextU32()) >>> 0
        while (x) {
          bits += x & 1
          x >>>= 1
        }
        n++
      }
    }
    expect(bits / n).toBeGreaterThan(15)
    expect(bits / n).toBeLessThan(17)
  })

  it('resumes mid-stream bit for bit from getState (fromState, setState, through JSON)', () => {
    const r = new Rng(7)
    for (let i = 0; i < 537; i++) r.nextU32()
    r.normal()
    r.int(0, 1000)
    const saved = r.getState()
    expect(saved).toHaveLength(4)
    for (const w of saved) expect(Number.isInteger(w) && w >= 0 && w < 2 ** 32).toBe(true)
    const mixed = (g: Rng): number[] => {
      const out: number[] = []
      for (let i = 0; i < 200; i++) out.push(g.nextU32(), g.next(), g.int(-5, 5), g.normal(), g.int(0, 2 ** 40))
      return out
    }
    const expected = mixed(r)
    expect(mixed(Rng.fromState(saved))).toEqual(expected)
    expect(mixed(Rng.fromState(JSON.parse(JSON.stringify(saved)) as number[]))).toEqual(expected)
    const other = new Rng(999)
    other.setState(saved)
    expect(mixed(other)).toEqual(expected)
    // getState is a copy, not a view.
    saved[0] = 12345
    expect(r.getState()[0]).not.toBe(12345)
    // clone()
    const c = r.clone()
    expect(draws(c, 50)).toEqual(draws(r, 50))
  })

  it('validates seeds and states', () => {
    for (const bad of [-1, 1.5, 2 ** 53, NaN, Infinity]) expect(() => new Rng(bad)).toThrow(/seed/)
    expect(() => Rng.fromState([1, 2, 3])).toThrow(/state/)
    expect(() => Rng.fromState([1, 2, 3, 2 ** 32])).toThrow(/state\[3\]/)
    expect(() => Rng.fromState([1, 2, -1, 4])).toThrow(/state\[2\]/)
    expect(() => Rng.fromState([1.5, 2, 3, 4])).toThrow(/state\[0\]/)
    expect(() => Rng.fromState([0, 0, 0, 0])).toThrow(/all-zero/)
    expect(() => new Rng(1).fork(-1)).toThrow(/stream/)
  })

  it('next() is in [0, 1) with mean 1/2 and variance 1/12', () => {
    const r = new Rng(3)
    let s = 0
    let s2 = 0
    const n = 100_000
    let outside = 0
    for (let i = 0; i < n; i++) {
      const x = r.next()
      if (!(x >= 0 && x < 1)) outside++
      s += x
      s2 += x * x
    }
    expect(outside).toBe(0)
    const mean = s / n
    expect(Math.abs(mean - 0.5)).toBeLessThan(0.01)
    expect(Math.abs(s2 / n - mean * mean - 1 / 12)).toBeLessThan(0.003)
  })

  it('int(lo, hi) is inclusive and uniform (chi-square)', () => {
    const r = new Rng(11)
    const counts = new Array<number>(10).fill(0)
    let outside = 0
    for (let i = 0; i < 100_000; i++) {
      const v = r.int(3, 12)
      if (!(Number.isInteger(v) && v >= 3 && v <= 12)) outside++
      else counts[v - 3]!++
    }
    expect(outside).toBe(0)
    // 9 degrees of freedom: P(chi2 > 40) ~ 1e-5.
    expect(chiSquare(counts)).toBeLessThan(40)
    expect(r.int(7, 7)).toBe(7)
    const neg = new Set<number>()
    for (let i = 0; i < 1000; i++) neg.add(r.int(-2, 2))
    expect([...neg].sort((a, b) => a - b)).toEqual([-2, -1, 0, 1, 2])
  })

  it('int has no modulo bias (range 3 * 2^30 + 1: a biased x % range would favour the first third 2:1)', () => {
    const r = new Rng(5)
    const third = 2 ** 30
    const counts = [0, 0, 0]
    for (let i = 0; i < 60_000; i++) counts[Math.min(2, Math.floor(r.int(0, 3 * third) / third))]!++
    expect(chiSquare(counts)).toBeLessThan(25)
  })

  it('int covers ranges wider than 2^32 and validates its bounds', () => {
    const r = new Rng(9)
    let above = 0
    let s = 0
    const n = 20_000
    let outside = 0
    for (let i = 0; i < n; i++) {
      const v = r.int(0, 2 ** 40)
      if (!(Number.isInteger(v) && v >= 0 && v <= 2 ** 40)) outside++
      if (v >= 2 ** 32) above++
      s += v / 2 ** 40
    }
    expect(outside).toBe(0)
    expect(above).toBeGreaterThan(n * 0.98)
    expect(Math.abs(s / n - 0.5)).toBeLessThan(0.02)
    // Each algorithm's boundary (2^21 and 2^32 values), with a negative lower bound.
    for (const range of [2 ** 21 - 1, 2 ** 21, 2 ** 21 + 1, 2 ** 32 - 1, 2 ** 32, 2 ** 32 + 1]) {
      let bad = 0
      let top = 0
      for (let i = 0; i < 4000; i++) {
        const v = r.int(-7, -7 + range - 1)
        if (!(Number.isInteger(v) && v >= -7 && v <= range - 8)) bad++
        if (v >= -7 + range / 2) top++
      }
      expect(bad).toBe(0)
      expect(Math.abs(top / 4000 - 0.5)).toBeLessThan(0.05)
    }
    const w = r.int(-(2 ** 52), 2 ** 52 - 1)
    expect(Number.isSafeInteger(w)).toBe(true)
    expect(() => r.int(0, 2 ** 53)).toThrow(/hi/)
    expect(() => r.int(-(2 ** 52), 2 ** 52)).toThrow(/2\^53/)
    expect(() => r.int(5, 4)).toThrow(/lo <= hi/)
    expect(() => r.int(0.5, 4)).toThrow(/lo/)
    expect(() => r.int(0, NaN)).toThrow(/hi/)
  })

  it('normal() has mean 0 and variance 1', () => {
    const r = new Rng(13)
    let s = 0
    let s2 = 0
    let s4 = 0
    const n = 200_000
    let nonFinite = 0
    for (let i = 0; i < n; i++) {
      const x = r.normal()
      if (!Number.isFinite(x)) nonFinite++
      s += x
      s2 += x * x
      s4 += x ** 4
    }
    expect(nonFinite).toBe(0)
    expect(Math.abs(s / n)).toBeLessThan(0.01)
    expect(Math.abs(s2 / n - 1)).toBeLessThan(0.02)
    expect(Math.abs(s4 / n - 3)).toBeLessThan(0.1) // kurtosis of a Gaussian
  })

  it('fork(stream) is deterministic, leaves the parent alone, and gives independent streams', () => {
    const root = new Rng(2024)
    const before = root.getState()
    const a1 = draws(root.fork(1), 2000)
    expect(root.getState()).toEqual(before)
    expect(draws(root.fork(1), 2000)).toEqual(a1)
    expect(draws(Rng.fromState(before).fork(1), 2000)).toEqual(a1)
    const a2 = draws(root.fork(2), 2000)
    const a0 = draws(root.fork(0), 2000)
    const big = draws(root.fork(2 ** 32 + 1), 2000)
    const self = draws(root.clone(), 2000)
    const streams = [a0, a1, a2, big, self]
    for (let i = 0; i < streams.length; i++) {
      for (let j = i + 1; j < streams.length; j++) {
        let same = 0
        for (let k = 0; k < 2000; k++) if (streams[i]![k] === streams[j]![k]) same++
        expect(same).toBe(0)
        expect(Math.abs(pearson(streams[i]!, streams[j]!))).toBeLessThan(0.1)
      }
    }
    // A fork taken later (after the parent advanced) is a different stream.
    root.nextU32()
    expect(draws(root.fork(1), 100)).not.toEqual(a1.slice(0, 100))
    // A fork of a fork is fine and checkpointable too.
    const child = new Rng(1).fork(3).fork(4)
    const st = child.getState()
    expect(draws(child, 20)).toEqual(draws(Rng.fromState(st), 20))
  })
})

/**
 * Checks one batch against DESIGN.md's definition; returns the payload positions of each row.
 * Collects the first few violations and asserts once (expect() in a hot loop is slow).
 */
function checkBatch(b: ReturnType<typeof copyBatch>, opts: CopyTaskOptions, batch: number): number[][] {
  const A = opts.alphabet ?? 16
  const M = opts.M ?? 16
  const L = opts.noise
  const seqLen = M + L + M
  expect(b.batch).toBe(batch)
  expect(b.M).toBe(M)
  expect(b.seqLen).toBe(seqLen)
  expect(b.tokens).toBeInstanceOf(Int32Array)
  expect(b.targets).toBeInstanceOf(Int32Array)
  expect(b.tokens.length).toBe(batch * seqLen)
  expect(b.targets.length).toBe(batch * M)
  const errors: string[] = []
  const fail = (msg: string) => {
    if (errors.length < 5) errors.push(msg)
  }
  const allPositions: number[][] = []
  for (let r = 0; r < batch; r++) {
    const row = b.tokens.subarray(r * seqLen, (r + 1) * seqLen)
    const target = b.targets.subarray(r * M, (r + 1) * M)
    for (let i = 0; i < M; i++) {
      if (!(target[i]! >= 1 && target[i]! <= A - 2)) fail(`row ${r}: target[${i}] = ${target[i]} outside 1..${A - 2}`)
    }
    // The last M tokens are markers.
    for (let i = M + L; i < seqLen; i++) if (row[i] !== A - 1) fail(`row ${r}: token ${i} = ${row[i]}, not the marker`)
    // The first M + L hold exactly the payload, in order, and zeros elsewhere.
    const positions: number[] = []
    for (let i = 0; i < M + L; i++) {
      if (row[i] !== 0) {
        if (positions.length < M && row[i] !== target[positions.length]) {
          fail(`row ${r}: payload ${positions.length} at ${i} is ${row[i]}, target ${target[positions.length]}`)
        }
        positions.push(i)
      }
    }
    if (positions.length !== M) fail(`row ${r}: ${positions.length} non-zero tokens in the first M + L, expected ${M}`)
    if (opts.task === 'copy') {
      for (let i = 0; i < positions.length; i++) if (positions[i] !== i) fail(`row ${r}: copy payload not at the start`)
    }
    // Positions come from a left-to-right scan of [0, M + L): sorted, distinct and in range by construction.
    allPositions.push(positions)
  }
  expect(errors).toEqual([])
  return allPositions
}

describe('copy and selective-copy data', () => {
  it('copySeqLen is M + L + M', () => {
    expect(copySeqLen({ noise: 4096 })).toBe(4128)
    expect(copySeqLen({ M: 8, noise: 0 })).toBe(16)
    expect(copySeqLen({ task: 'copy', M: 3, noise: 10 } as CopyTaskOptions)).toBe(16)
  })

  const configs: CopyTaskOptions[] = [
    { task: 'copy', noise: 32 },
    { task: 'copy', alphabet: 10, M: 5, noise: 0 },
    { task: 'copy', alphabet: 3, M: 4, noise: 7 },
    { task: 'selective-copy', noise: 32 },
    { task: 'selective-copy', noise: 4096 },
    { task: 'selective-copy', alphabet: 8, M: 7, noise: 1 },
    { task: 'selective-copy', alphabet: 30, M: 50, noise: 3 },
    { task: 'selective-copy', M: 6, noise: 0 },
  ]
  for (const opts of configs) {
    it(`follows the definition: ${JSON.stringify(opts)}`, () => {
      const b = copyBatch(new Rng(1), 12, opts)
      checkBatch(b, opts, 12)
    })
  }

  it('an alphabet of 3 has the single payload token 1; selective copy with L = 0 is copy', () => {
    const b = copyBatch(new Rng(2), 4, { task: 'copy', alphabet: 3, M: 5, noise: 2 })
    expect([...b.targets].every((t) => t === 1)).toBe(true)
    const s = copyBatch(new Rng(3), 4, { task: 'selective-copy', M: 6, noise: 0 })
    const positions = checkBatch(s, { task: 'selective-copy', M: 6, noise: 0 }, 4)
    for (const p of positions) expect(p).toEqual([0, 1, 2, 3, 4, 5])
  })

  it('payload tokens are uniform over 1..A-2 (chi-square)', () => {
    const b = copyBatch(new Rng(4), 2000, { task: 'selective-copy', noise: 8 })
    const counts = new Array<number>(14).fill(0)
    for (const t of b.targets) counts[t - 1]!++
    // 13 degrees of freedom, 32000 draws: P(chi2 > 45) ~ 1e-5.
    expect(chiSquare(counts)).toBeLessThan(45)
  })

  it('selective-copy positions are uniform over M-subsets (M = 2 of 4: six subsets)', () => {
    const b = copyBatch(new Rng(5), 30_000, { task: 'selective-copy', M: 2, noise: 2 })
    const positions = checkBatch(b, { task: 'selective-copy', M: 2, noise: 2 }, 30_000)
    const index = new Map<string, number>()
    const counts = new Array<number>(6).fill(0)
    for (const p of positions) {
      const key = p.join(',')
      if (!index.has(key)) index.set(key, index.size)
      counts[index.get(key)!]!++
    }
    expect(index.size).toBe(6)
    // 5 degrees of freedom: P(chi2 > 30) ~ 1.5e-5.
    expect(chiSquare(counts)).toBeLessThan(30)
  })

  it('selective-copy positions cover the first M + L uniformly', () => {
    const M = 4
    const L = 12
    const b = copyBatch(new Rng(6), 20_000, { task: 'selective-copy', M, noise: L })
    const counts = new Array<number>(M + L).fill(0)
    for (const p of checkBatch(b, { task: 'selective-copy', M, noise: L }, 20_000)) for (const i of p) counts[i]!++
    // 15 degrees of freedom (slightly conservative for a sample without replacement).
    expect(chiSquare(counts)).toBeLessThan(50)
  })

  it('same seed, same batch; rows are drawn in sequence; different seeds differ', () => {
    const opts: CopyTaskOptions = { task: 'selective-copy', noise: 64 }
    const a = copyBatch(new Rng(8), 6, opts)
    const b = copyBatch(new Rng(8), 6, opts)
    expect(a.tokens).toEqual(b.tokens)
    expect(a.targets).toEqual(b.targets)
    const r = new Rng(8)
    const first = copyBatch(r, 2, opts)
    const rest = copyBatch(r, 4, opts)
    expect(Array.from(a.tokens)).toEqual([...first.tokens, ...rest.tokens])
    expect(Array.from(a.targets)).toEqual([...first.targets, ...rest.targets])
    const c = copyBatch(new Rng(9), 6, opts)
    expect(c.targets).not.toEqual(a.targets)
    // The generator state after a batch is reproducible too (resume between batches).
    const g = new Rng(10)
    copyBatch(g, 3, opts)
    const saved = g.getState()
    const next = copyBatch(g, 3, opts)
    expect(copyBatch(Rng.fromState(saved), 3, opts).tokens).toEqual(next.tokens)
  })

  it('validates options with errors naming the field', () => {
    const rng = new Rng(0)
    const bad = (batch: number, opts: unknown) => () => copyBatch(rng, batch, opts as CopyTaskOptions)
    expect(bad(1, { task: 'copy', alphabet: 2, noise: 4 })).toThrow(/alphabet/)
    expect(bad(1, { task: 'copy', alphabet: 3.5, noise: 4 })).toThrow(/alphabet/)
    expect(bad(1, { task: 'copy', M: 0, noise: 4 })).toThrow(/\bM\b/)
    expect(bad(1, { task: 'copy', M: 2.5, noise: 4 })).toThrow(/\bM\b/)
    expect(bad(1, { task: 'copy', noise: -1 })).toThrow(/noise/)
    expect(bad(1, { task: 'copy', noise: 1.5 })).toThrow(/noise/)
    expect(bad(1, { task: 'copy' })).toThrow(/noise/)
    expect(bad(1, { task: 'copy', noise: NaN })).toThrow(/noise/)
    expect(bad(1, { task: 'paste', noise: 4 })).toThrow(/task/)
    expect(bad(0, { task: 'copy', noise: 4 })).toThrow(/batch/)
    expect(bad(2.5, { task: 'copy', noise: 4 })).toThrow(/batch/)
    expect(bad(1, null)).toThrow(/options/)
    expect(bad(100_000, { task: 'copy', noise: 100_000 })).toThrow(/batch/)
    expect(() => copySeqLen({ noise: -2 })).toThrow(/noise/)
  })

  it('batch 64 at L = 4096 takes well under 5 ms', () => {
    for (const task of ['copy', 'selective-copy'] as const) {
      const rng = new Rng(12)
      const opts: CopyTaskOptions = { task, noise: 4096 }
      for (let i = 0; i < 5; i++) copyBatch(rng, 64, opts) // warm up the JIT
      const times: number[] = []
      for (let i = 0; i < 20; i++) {
        const t0 = performance.now()
        copyBatch(rng, 64, opts)
        times.push(performance.now() - t0)
      }
      times.sort((a, b) => a - b)
      const median = times[10]!
      console.log(`copyBatch(64, ${task}, L = 4096): median ${median.toFixed(3)} ms, max ${times[19]!.toFixed(3)} ms`)
      expect(median).toBeLessThan(50)
    }
  })
})
