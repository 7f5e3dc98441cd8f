// Distinct-window counting: the HyperLogLog against exact counts, and the power-law fit against corpora
// whose n(D) is known in closed form.
import { mkdtempSync, writeFileSync, existsSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { Rng } from '../src/data/rng.js';
import { countCorpus, fitPowerLaw, WindowCounter, windowExponents } from '../src/scaling/corpus.js';
import { HyperLogLog, mix32 } from '../src/scaling/hll.js';

const SHAKESPEARE = join(import.meta.dirname, '../../shared/data/tinyshakespeare.txt');

describe('HyperLogLog', () => {
  it('counts distinct items within a few standard errors, small and large', () => {
    for (const n of [100, 5000, 200_000]) {
      const h = new HyperLogLog(14);
      // Every item twice: duplicates must not count.
      for (let rep = 0; rep < 2; rep++) for (let i = 0; i < n; i++) h.add(mix32(i), mix32(i ^ 0x5bd1e995));
      const rel = Math.abs(h.count() / n - 1);
      expect(rel, `n = ${n}: estimate ${h.count()}`).toBeLessThan(4 * h.relativeError);
    }
  });

  it('rejects a bad precision', () => {
    expect(() => new HyperLogLog(2)).toThrow(/precision: expected an integer in \[4, 18\], got 2/);
  });
});

describe('WindowCounter', () => {
  it('matches exact counts by brute force on random text', () => {
    const rng = new Rng(3);
    const tokens = Array.from({ length: 20_000 }, () => rng.int(0, 3));
    const ks = [1, 2, 3, 5, 8, 13];
    const exact = new WindowCounter({ ks, method: 'exact', minTokens: 1000 });
    const hll = new WindowCounter({ ks, method: 'hll', minTokens: 1000 });
    // Pushed in uneven pieces: windows must run across the pieces.
    for (let i = 0; i < tokens.length; i += 777) {
      exact.push(tokens.slice(i, i + 777));
      hll.push(tokens.slice(i, i + 777));
    }
    const e = exact.result();
    const h = hll.result();
    expect(e.prefixes.map((p) => p.D)).toEqual([1000, 2000, 4000, 8000, 16000, 20000]);
    for (const [pi, p] of e.prefixes.entries()) {
      ks.forEach((k, ki) => {
        const seen = new Set<string>();
        for (let i = 0; i + k <= p.D; i++) seen.add(tokens.slice(i, i + k).join(','));
        expect(p.distinct[ki], `k ${k}, D ${p.D}`).toBe(seen.size);
        expect(Math.abs(h.prefixes[pi]!.distinct[ki]! / seen.size - 1)).toBeLessThan(4 * h.relativeError + 1e-9);
      });
    }
    // 4 symbols: every 1- and 2-window appears early; 13-windows are nearly all distinct.
    expect(e.prefixes.at(-1)!.distinct[0]).toBe(4);
    expect(e.prefixes.at(-1)!.distinct[1]).toBe(16);
  });

  it('rejects bad window lengths', () => {
    expect(() => new WindowCounter({ ks: [0] })).toThrow(/ks: expected window lengths/);
    expect(() => new WindowCounter({ method: 'bogus' as never })).toThrow(/method: expected 'hll' or 'exact'/);
  });
});

describe('fitPowerLaw', () => {
  it('recovers K and h of an exact power law', () => {
    const D = [1e3, 2e3, 4e3, 8e3, 16e3];
    const f = fitPowerLaw(D, D.map((d) => 3 * d ** 0.6));
    expect(f.h).toBeCloseTo(0.6, 10);
    expect(f.K).toBeCloseTo(3, 8);
    expect(f.r2).toBeCloseTo(1, 10);
    expect(f.hLast).toBeCloseTo(0.6, 10);
  });

  it('gives h = 1 on text whose windows are all distinct and h -> 0 on a periodic one', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'rt-scaling-'));
    // 20,000 different code points: every window of every length is new, so n(D) = D - k + 1.
    const unique = Array.from({ length: 20_000 }, (_, i) => String.fromCodePoint(0x4e00 + i)).join('');
    writeFileSync(join(dir, 'u.txt'), unique);
    const u = windowExponents(await countCorpus(join(dir, 'u.txt'), { ks: [1, 4], method: 'exact', minTokens: 500 }));
    expect(u[0]!.h).toBeCloseTo(1, 6);
    expect(u[1]!.h).toBeGreaterThan(0.999);
    writeFileSync(join(dir, 'p.txt'), 'abcdefg'.repeat(5000));
    const p = windowExponents(await countCorpus(join(dir, 'p.txt'), { ks: [1, 4], method: 'exact', minTokens: 500 }));
    expect(p[0]!.h).toBe(0);
    expect(p[0]!.distinct).toBe(7);
    expect(p[1]!.distinct).toBe(7);
  });

  it('rejects too few points', () => {
    expect(() => fitPowerLaw([1], [1])).toThrow(/at least 2 points/);
  });
});

if (!existsSync(SHAKESPEARE)) console.warn(`scaling-corpus.test: ${SHAKESPEARE} is absent; the tiny Shakespeare tests are skipped`);
describe.skipIf(!existsSync(SHAKESPEARE))('tiny Shakespeare', () => {
  it('streams the corpus: exact and HyperLogLog agree, h rises with k', async () => {
    const ks = [1, 2, 4, 8];
    const exact = await countCorpus(SHAKESPEARE, { ks, method: 'exact', maxTokens: 300_000 });
    const hll = await countCorpus(SHAKESPEARE, { ks, method: 'hll', maxTokens: 300_000 });
    expect(exact.tokens).toBe(300_000);
    exact.prefixes.at(-1)!.distinct.forEach((n, i) => expect(Math.abs(hll.prefixes.at(-1)!.distinct[i]! / n - 1)).toBeLessThan(4 * hll.relativeError));
    const h = windowExponents(exact).map((r) => r.h);
    for (let i = 1; i < h.length; i++) expect(h[i]!).toBeGreaterThan(h[i - 1]!);
    expect(exact.prefixes.at(-1)!.distinct[0]).toBeLessThanOrEqual(65);
  });
});

