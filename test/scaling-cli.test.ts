// `rt scaling ...` from the command line: output, files and errors.
import { spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { beforeAll, describe, expect, it } from 'vitest';
import { Rng } from '../src/data/rng.js';
import { CHINCHILLA, predictLoss } from '../src/scaling/law.js';
import { ensureCli, RT } from './cli-build.js';

const dir = mkdtempSync(join(tmpdir(), 'rt-scaling-cli-'));
const SENTENCE = 'to be or not to be, that is the question. ';
const rt = (args: string[]) => spawnSync(process.execPath, [RT, ...args], { cwd: dir, encoding: 'utf8', timeout: 110_000 });

beforeAll(() => {
  ensureCli();
  const rng = new Rng(5);
  const rows = ['params,tokens,loss'];
  for (const N of [1e7, 1e8, 1e9, 1e10]) for (const D of [1e9, 1e10, 1e11, 1e12]) rows.push(`${N},${D},${predictLoss(CHINCHILLA, N, D) * Math.exp(0.001 * rng.normal())}`);
  writeFileSync(join(dir, 'chinchilla.csv'), rows.join('\n') + '\n');
  writeFileSync(join(dir, 'corpus.txt'), SENTENCE.repeat(400));
}, 120_000);

describe('rt scaling', () => {
  it('fit prints the constants, the gamma interval and its assumptions, and writes the fit for advise', () => {
    const r = rt(['scaling', 'fit', 'chinchilla.csv', '--bootstrap', '40', '--out', 'fit.json']);
    expect(r.status, r.stderr).toBe(0);
    expect(r.stdout).toMatch(/beta {2}= 0\.2[78]\d*/);
    expect(r.stdout).toMatch(/gamma in \[1-2·beta, 1-beta\] = \[0\.4[3-5]\d*, 0\.7[12]\d*\]/);
    expect(r.stdout).toContain('assumptions behind gamma');
    const fit = JSON.parse(readFileSync(join(dir, 'fit.json'), 'utf8')) as { law: { beta: number }; observations: unknown[] };
    expect(fit.observations).toHaveLength(16);
    const a = rt(['scaling', 'advise', '--tokens', '1e9', '--fit', 'fit.json', '--json']);
    expect(a.status, a.stderr).toBe(0);
    const advice = JSON.parse(a.stdout) as { beta: number; gamma: { low: number; high: number } };
    expect(advice.beta).toBe(fit.law.beta);
    expect(advice.gamma.high).toBeCloseTo(1 - fit.law.beta, 12);
  });

  it('corpus prints one row per k; report writes an SVG', () => {
    const c = rt(['scaling', 'corpus', 'corpus.txt', '--ks', '1,8', '--min-tokens', '256', '--exact', '--json']);
    expect(c.status, c.stderr).toBe(0);
    const j = JSON.parse(c.stdout) as { exponents: Array<{ k: number; distinct: number }>; tokens: number };
    expect(SENTENCE.length).toBe(42);
    expect(j.tokens).toBe(42 * 400);
    // One sentence repeated: its 15 distinct characters, and 42 distinct 8-windows (one per phase).
    expect(j.exponents.map((e) => [e.k, e.distinct])).toEqual([[1, 15], [8, 42]]);
    const s = rt(['scaling', 'report', 'chinchilla.csv', '--out', 'fit.svg']);
    expect(s.status, s.stderr).toBe(0);
    expect(readFileSync(join(dir, 'fit.svg'), 'utf8')).toMatch(/^<svg[\s\S]*<\/svg>\n$/);
  });

  it('errors name the argument', () => {
    const cases: Array<[string[], RegExp]> = [
      [['scaling'], /rt scaling: expected fit, corpus, advise, sweep or report/],
      [['scaling', 'fit'], /expected run folders/],
      [['scaling', 'advise'], /--tokens D: required/],
      [['scaling', 'advise', '--tokens', '1e9', '--beta', '0.6'], /beta: expected a data exponent in \(0, 0.5\)/],
      [['scaling', 'report', 'chinchilla.csv', '--out', 'x.png'], /--out FILE.svg: required/],
      [['scaling', 'sweep'], /--data FILE: required/],
      [['scaling', 'corpus', 'corpus.txt', '--ks', '1,x'], /--ks: expected a comma-separated list of numbers/],
      [['scaling', 'corpus', '.'], /\.: expected a text file/],
      [['scaling', 'fit', 'nope'], /nope: no such run folder or CSV file/],
      [['scaling', 'fit', 'corpus.txt'], /corpus.txt: expected a header line and at least one row/],
      [['scaling', 'advise', '--tokens', '1e6', '--reference', '.'], /expected a run folder holding scaling.json or log.jsonl/],
      [['scaling', 'advise', '--tokens', '1e6', '--fit', 'corpus.txt'], /--fit corpus.txt: expected JSON/],
      [['scaling', 'sweep', '--data', 'corpus.txt', '--widths', '20'], /widths: expected a non-empty list of widths that are multiples of headSize 16/],
    ];
    for (const [args, re] of cases) {
      const r = rt(args);
      expect(r.status, args.join(' ')).toBe(2);
      expect(r.stderr, args.join(' ')).toMatch(re);
    }
  });
});
