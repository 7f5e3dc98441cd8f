// Reading runs and CSVs, the advice, the sweep's records and the SVG report.
import { mkdtempSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { Rng } from '../src/data/rng.js';
import { advise, CHINCHILLA_REFERENCE, modelNonEmbeddingParams, readReferenceRun, widthFor, type ReferenceRun } from '../src/scaling/advise.js';
import { fitScalingLaw } from '../src/scaling/fit.js';
import { CHINCHILLA, predictLoss } from '../src/scaling/law.js';
import { parseObservationsCsv, readObservations, readRunObservation } from '../src/scaling/runs.js';
import { scalingSvg } from '../src/scaling/svg.js';
import { runSweep } from '../src/scaling/sweep.js';

const tmp = (): string => mkdtempSync(join(tmpdir(), 'rt-scaling-'));

describe('observations', () => {
  it('parses a CSV with named columns in any order', () => {
    const obs = parseObservationsCsv('# comment\nloss,tokens,params\n3.5,1e9,1e8\n3.1 , 2e9, 2e8\n', 'x.csv');
    expect(obs).toEqual([
      { N: 1e8, D: 1e9, loss: 3.5, label: 'x.csv:2' },
      { N: 2e8, D: 2e9, loss: 3.1, label: 'x.csv:3' },
    ]);
    expect(() => parseObservationsCsv('n,loss\n1,2\n', 'y.csv')).toThrow(/y.csv: expected a column for the training tokens/);
    expect(() => parseObservationsCsv('n,d,loss\n1,x,2\n', 'z.csv')).toThrow(/z.csv line 2: expected numbers/);
  });

  it("reads an rt train log: non-embedding N, D = samples x seqLen", async () => {
    const dir = tmp();
    const model = { vocabSize: 65, d: 32, maxLen: 64, positional: true, head: 'lm', layers: 1 };
    const log = [
      { type: 'config', task: 'text', model, parameters: 20000, seqLen: 64 },
      { type: 'step', step: 1, loss: 4 },
      { type: 'summary', samples: 1000, loss: 2.5 },
    ].map((o) => JSON.stringify(o)).join('\n') + '\n{"torn';
    writeFileSync(join(dir, 'log.jsonl'), log);
    const o = await readRunObservation(dir);
    expect(o).toEqual({ N: 20000 - 65 * 32 - 64 * 32, D: 64000, loss: 2.5, label: dir });
    expect((await readRunObservation(dir, 'total')).N).toBe(20000);
    const empty = tmp();
    await expect(readRunObservation(empty)).rejects.toThrow(/expected a run folder holding scaling.json or log.jsonl/);
    await expect(readObservations([join(empty, 'nope')])).rejects.toThrow(/no such run folder or CSV file/);
  });
});

describe('advise', () => {
  const ref: ReferenceRun = { N: 1e5, D: 1e6, d: 96, heads: 6, layers: 1, window: 16, seqLen: 64, batch: 16, bias: false, source: 'test' };

  it('scales the reference by (D/D_ref)^gamma at both ends of the interval', () => {
    const a = advise(1e8, ref);
    expect(a.gamma.low).toBeCloseTo(0.44, 12);
    expect(a.gamma.high).toBeCloseTo(0.72, 12);
    expect(a.fast.N).toBeCloseTo(1e5 * 100 ** 0.72, 3);
    expect(a.slow.N).toBeCloseTo(1e5 * 100 ** 0.44, 3);
    expect(a.recommended).toBe(a.fast);
    // d stays a multiple of the reference's head size (16), and its N is the nearest such width's.
    expect(a.fast.d % 16).toBe(0);
    const others = [a.fast.d - 16, a.fast.d + 16].map((d) => Math.abs(Math.log(modelNonEmbeddingParams(d, 1) / a.fast.N)));
    expect(Math.abs(Math.log(a.fast.actualN / a.fast.N))).toBeLessThanOrEqual(Math.min(...others));
    expect(a.fast.steps).toBe(Math.round(1e8 / (16 * 64)));
    expect(a.fast.trainArgs).toContain('--d');
    // Less data than the reference: the slow rule's model is then the larger.
    const less = advise(1e4, ref);
    expect(less.recommended).toBe(less.slow);
    expect(less.slow.N).toBeGreaterThan(less.fast.N);
  });

  it("reproduces Chinchilla's own size at Chinchilla's own data", () => {
    const a = advise(CHINCHILLA_REFERENCE.D);
    expect(a.fast.N).toBeCloseTo(70e9, -3);
    expect(a.slow.N).toBeCloseTo(70e9, -3);
    // 80 layers of 12·d² reach 70B at d ≈ 8,540; widths move in steps of the head size, 128.
    expect(a.fast.d % 128).toBe(0);
    expect(Math.abs(a.fast.actualN / 70e9 - 1)).toBeLessThan(0.03);
  });

  it('rejects bad input', () => {
    expect(() => advise(-1, ref)).toThrow(/tokens: expected a positive token count/);
    expect(() => advise(1e6, ref, { value: 0.7, source: 'x' })).toThrow(/beta: expected a data exponent in \(0, 0.5\)/);
    expect(() => widthFor(0, 1, 16)).toThrow(/N: expected a positive parameter count/);
  });
});

describe('runSweep', () => {
  it('trains the grid and records N and D that the fit and advice read back', async () => {
    const dir = tmp();
    const rng = new Rng(1);
    const words = ['the', 'king', 'and', 'queen', 'of', 'a', 'land', 'far', 'away', 'said'];
    writeFileSync(join(dir, 'text.txt'), Array.from({ length: 6000 }, () => words[rng.int(0, words.length - 1)]).join(' '));
    const out = join(dir, 'runs');
    const seen: string[] = [];
    const records = await runSweep({
      data: join(dir, 'text.txt'), out, widths: [16, 32], fractions: [0.5, 1], steps: 12, batch: 4, seqLen: 32, window: 8,
      evalBatches: 2, cacheDir: join(dir, 'cache'), onRun: (_, d) => seen.push(d),
    });
    expect(records.map((r) => [r.model.d, r.steps])).toEqual([[16, 6], [16, 12], [32, 6], [32, 12]]);
    for (const r of records) {
      expect(r.D).toBe(r.steps * 4 * 32);
      expect(r.N).toBe(modelNonEmbeddingParams(r.model.d, 1));
      expect(r.parameters - r.N).toBe(r.model.vocabSize * r.model.d + 32 * r.model.d);
      expect(r.loss).toBeGreaterThan(0);
    }
    expect(seen).toEqual(['d16-f0.5', 'd16-f1', 'd32-f0.5', 'd32-f1'].map((n) => join(out, n)));
    // Both readers agree: scaling.json, and the log.jsonl that rt train's readers understand.
    const viaJson = await readRunObservation(seen[1]!);
    writeFileSync(join(dir, 'copy.jsonl'), readFileSync(join(seen[1]!, 'log.jsonl')));
    mkdirSync(join(dir, 'logonly'));
    writeFileSync(join(dir, 'logonly', 'log.jsonl'), readFileSync(join(seen[1]!, 'log.jsonl')));
    const viaLog = await readRunObservation(join(dir, 'logonly'));
    expect(viaLog.N).toBe(viaJson.N);
    expect(viaLog.D).toBe(viaJson.D);
    expect(viaLog.loss).toBeCloseTo(viaJson.loss, 12);
    const ref = await readReferenceRun(seen[3]!);
    expect(ref).toMatchObject({ N: records[3]!.N, D: records[3]!.D, d: 32, heads: 2, layers: 1, window: 8, seqLen: 32, batch: 4 });
    // A second call keeps the finished runs instead of training them again.
    const again = await runSweep({ data: join(dir, 'text.txt'), out, widths: [16, 32], fractions: [0.5, 1], steps: 12, batch: 4, seqLen: 32, window: 8, evalBatches: 2, cacheDir: join(dir, 'cache') });
    expect(again).toEqual(records);
    await expect(runSweep({ data: join(dir, 'text.txt'), out, widths: [20] })).rejects.toThrow(/widths: expected a non-empty list of widths that are multiples of headSize 16/);
  });
});

describe('scalingSvg', () => {
  it('draws both panels, one point per run and one fitted curve per group', () => {
    const obs = [];
    for (const N of [1e6, 1e7, 1e8]) for (const D of [1e8, 1e9]) obs.push({ N, D, loss: predictLoss(CHINCHILLA, N, D), label: `N${N}` });
    const fit = fitScalingLaw(obs, { bootstrap: 0 });
    const svg = scalingSvg(obs, fit.law, 'test <fit>');
    expect(svg.startsWith('<svg')).toBe(true);
    expect(svg.match(/<circle /g)!.length).toBe(2 * obs.length);
    expect(svg.match(/<polyline /g)!.length).toBe(2 + 3);
    expect(svg).toContain('test &lt;fit&gt;');
    expect(scalingSvg(obs, null, 'points').match(/<polyline /g)).toBeNull();
  });
});
