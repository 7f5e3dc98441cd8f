// `rt scaling fit|corpus|advise|sweep|report`: the paper's natural scaling law as a tool (docs/SCALING.md).
import { readFile, writeFile } from 'node:fs/promises';
import { advise, CHINCHILLA_REFERENCE, readReferenceRun, type Advice, type ModelSuggestion } from '../scaling/advise.js';
import { countCorpus, DEFAULT_WINDOW_LENGTHS, windowExponents, type CountMethod, type CorpusTokens } from '../scaling/corpus.js';
import { fitScalingLaw, type ScalingFit } from '../scaling/fit.js';
import { CHINCHILLA, GAMMA_ASSUMPTIONS, gammaInterval } from '../scaling/law.js';
import { readObservations, type ParamCount } from '../scaling/runs.js';
import { scalingSvg } from '../scaling/svg.js';
import { runSweep } from '../scaling/sweep.js';
import { int, num, str, UsageError, type Flags } from './args.js';

export const SCALING_HELP = `scaling  the paper's scaling law, N ∝ D^gamma (docs/SCALING.md):
  rt scaling fit RUN_DIR|FILE.csv... [--bootstrap 200 --params non-embedding|total --seed 0 --out FIT.json --json]
           fit L(N, D) = E + A/N^alpha + B/D^beta (Hoffmann et al.'s Huber fit) and gamma in [1-2·beta, 1-beta]
  rt scaling corpus FILE [--ks 1,2,4,8,16,32,64 --tokenizer char|gpt2 --exact --hll-precision 16 --min-tokens 1024 --limit N --json]
           distinct k-token windows n(D) on nested prefixes, fitted to n = K·D^h, beside the gamma interval
  rt scaling advise --tokens D [--reference RUN_DIR] [--fit FIT.json | --beta 0.28] [--json]
           the smallest efficient model for D tokens: N_ref·(D/D_ref)^gamma as rt train flags
  rt scaling sweep --data FILE [--out DIR (runs/scaling-<time>) --widths 32,48,64,96 --fractions 0.25,0.5,1
           --steps 400 --batch 16 --seq-len 64 --window 16 --layers 1 --head-size 16 --lr 2e-3 --device cpu|cuda]
           train the grid (char tokens), one run folder each with scaling.json, for rt scaling fit
  rt scaling report RUN_DIR|FILE.csv... --out FILE.svg   loss against N and D with the fitted surface`;

/**
 * Runs a step that reads or checks the user's input: its errors (a missing file, a malformed run, a bad
 * value) become usage errors, printed without a stack. `only` narrows that to one error class, for steps
 * that also do real work whose failures deserve a stack.
 */
async function input<T>(step: () => T | Promise<T>, only: new (...args: never[]) => Error = Error): Promise<T> {
  try {
    return await step();
  } catch (e) {
    if (e instanceof only && !(e instanceof UsageError)) throw new UsageError(e.message);
    throw e;
  }
}

function list(flags: Flags, name: string, fallback: readonly number[]): number[] {
  const v = flags[name];
  if (v === undefined) return [...fallback];
  const xs = typeof v === 'string' ? v.split(',').map((s) => Number(s.trim())) : [];
  if (xs.length === 0 || !xs.every(Number.isFinite)) throw new UsageError(`--${name}: expected a comma-separated list of numbers, got '${String(v)}'`);
  return xs;
}

function g(v: number, digits = 4): string {
  return Number.isFinite(v) ? v.toPrecision(digits) : String(v);
}

function printAssumptions(out: string[]): void {
  out.push('', 'assumptions behind gamma:');
  for (const a of GAMMA_ASSUMPTIONS) out.push(`  - ${a}`);
}

function fitText(fit: ScalingFit, count: ParamCount): string {
  const L = fit.law;
  const iv = fit.intervals;
  const ci = (k: keyof NonNullable<ScalingFit['intervals']>): string => (iv ? `   [${g(iv[k].low)}, ${g(iv[k].high)}]` : '');
  const out = [
    `fit of L(N, D) = E + A/N^alpha + B/D^beta to ${fit.points} runs (N = ${count} parameters, D = training tokens; Huber delta 1e-3 on log loss)`,
    iv ? `${Math.round(fit.bootstrap.confidence * 100)}% bootstrap intervals from ${fit.bootstrap.used} of ${fit.bootstrap.replicates} resamples` : 'no bootstrap intervals',
    `  E     = ${g(L.E)}${ci('E')}`,
    `  A     = ${g(L.A)}${ci('A')}`,
    `  B     = ${g(L.B)}${ci('B')}`,
    `  alpha = ${g(L.alpha)}${ci('alpha')}`,
    `  beta  = ${g(L.beta)}${ci('beta')}`,
    `  gamma in [1-2·beta, 1-beta] = [${g(fit.gamma.low, 3)}, ${g(fit.gamma.high, 3)}]` + (iv ? `   (low end ${g(iv.gammaLow.low, 3)}..${g(iv.gammaLow.high, 3)}, high end ${g(iv.gammaHigh.low, 3)}..${g(iv.gammaHigh.high, 3)})` : ''),
    `  Chinchilla for comparison: E 1.69, A 406.4, B 410.7, alpha 0.34, beta 0.28 -> gamma [0.44, 0.72]`,
    `  residuals (log loss): max |r| ${g(Math.max(...fit.residuals.map(Math.abs)), 3)}, objective ${g(fit.objective, 3)}`,
    `  tokens per parameter: ${g(10 ** fit.diagnostics.log10TokensPerParam.low, 3)} to ${g(10 ** fit.diagnostics.log10TokensPerParam.high, 3)}; corr(log N, log D) ${fit.diagnostics.correlationLogNLogD.toFixed(3)}`,
  ];
  printAssumptions(out);
  return out.join('\n') + '\n';
}

async function fitCommand(paths: string[], flags: Flags): Promise<number> {
  if (paths.length === 0) throw new UsageError('rt scaling fit: expected run folders (with scaling.json or log.jsonl) or CSV files of N, D, loss');
  const count = str(flags, 'params', ['non-embedding', 'total'] as const, 'non-embedding');
  const obs = await input(() => readObservations(paths, count));
  const fit = await input(() => fitScalingLaw(obs, { bootstrap: int(flags, 'bootstrap', 200), seed: int(flags, 'seed', 0) }), RangeError);
  for (const w of fit.diagnostics.warnings) process.stderr.write(`rt scaling fit: warning: ${w}\n`);
  const json = { ...fit, params: count, observations: obs, assumptions: GAMMA_ASSUMPTIONS };
  if (typeof flags.out === 'string') await writeFile(flags.out, JSON.stringify(json, null, 2) + '\n');
  process.stdout.write(flags.json ? JSON.stringify(json) + '\n' : fitText(fit, count));
  return 0;
}

async function corpusCommand(paths: string[], flags: Flags): Promise<number> {
  if (paths.length !== 1) throw new UsageError(`rt scaling corpus: expected one text file, got ${paths.length} arguments`);
  const tokens = str(flags, 'tokenizer', ['char', 'gpt2'] as const, 'char') as CorpusTokens;
  const method: CountMethod = flags.exact ? 'exact' : 'hll';
  const ks = list(flags, 'ks', DEFAULT_WINDOW_LENGTHS);
  const limit = int(flags, 'limit');
  const t0 = performance.now();
  const counts = await input(() => countCorpus(paths[0]!, {
    ks, method, tokens, precision: int(flags, 'hll-precision', 16), minTokens: int(flags, 'min-tokens', 1024), ...(limit !== undefined ? { maxTokens: limit } : {}),
  }));
  if (counts.prefixes.length < 2) throw new UsageError(`${paths[0]}: ${counts.tokens} tokens give fewer than 2 prefixes; lower --min-tokens`);
  const rows = windowExponents(counts);
  const gamma = gammaInterval(CHINCHILLA.beta);
  const seconds = (performance.now() - t0) / 1000;
  if (flags.json) {
    process.stdout.write(JSON.stringify({ file: paths[0], tokenizer: tokens, ...counts, exponents: rows, gamma, seconds, assumptions: GAMMA_ASSUMPTIONS }) + '\n');
    return 0;
  }
  const out = [
    `${paths[0]}: ${counts.tokens} ${tokens} tokens, ${counts.prefixes.length} nested prefixes (${counts.prefixes[0]!.D} to ${counts.tokens}), ` +
      (method === 'hll' ? `HyperLogLog counts (±${(100 * counts.relativeError).toFixed(1)}% each)` : 'exact counts') + `, ${seconds.toFixed(1)} s`,
    `distinct k-token windows n(D) fitted to K·D^h (h_last: slope over the last doubling); gamma from Chinchilla's beta: [${g(gamma.low, 3)}, ${g(gamma.high, 3)}]`,
    '     k   distinct(all)          K        h   h_last    r²   h in gamma interval',
    ...rows.map((r) => `${String(r.k).padStart(6)} ${String(Math.round(r.distinct)).padStart(15)} ${g(r.K, 3).padStart(10)} ${r.h.toFixed(3).padStart(8)} ${r.hLast.toFixed(3).padStart(8)} ${r.r2.toFixed(3).padStart(6)}   ${r.h >= gamma.low && r.h <= gamma.high ? 'yes' : r.h < gamma.low ? 'below' : 'above'}`),
  ];
  printAssumptions(out);
  process.stdout.write(out.join('\n') + '\n');
  return 0;
}

function suggestionText(label: string, s: ModelSuggestion): string {
  return `  ${label} (gamma ${g(s.gamma, 3)}): N ≈ ${g(s.N, 3)} -> d ${s.d}, ${s.heads} heads, ${s.layers} layer(s): ${g(s.actualN, 3)} non-embedding parameters, ${s.steps} steps\n      rt train ${s.trainArgs.join(' ')} --data FILE`;
}

async function adviseCommand(flags: Flags): Promise<number> {
  const D = num(flags, 'tokens');
  if (D === undefined || !(D > 0)) throw new UsageError('--tokens D: required, the number of training tokens (e.g. 1e9)');
  const ref = flags.reference;
  const reference = typeof ref === 'string' ? await input(() => readReferenceRun(ref)) : CHINCHILLA_REFERENCE;
  let beta = { value: CHINCHILLA.beta, source: "Chinchilla's published fit (Hoffmann et al. 2022)" };
  if (typeof flags.fit === 'string' && flags.beta !== undefined) throw new UsageError('--fit and --beta: give one, not both');
  if (typeof flags.fit === 'string') {
    const text = await readFile(flags.fit, 'utf8').catch(() => {
      throw new UsageError(`--fit ${String(flags.fit)}: no such file (write one with rt scaling fit --out FILE.json)`);
    });
    let f: { law?: { beta?: unknown } };
    try {
      f = JSON.parse(text) as { law?: { beta?: unknown } };
    } catch {
      throw new UsageError(`--fit ${flags.fit}: expected JSON (the file rt scaling fit --out writes)`);
    }
    if (typeof f.law?.beta !== 'number') throw new UsageError(`--fit ${flags.fit}: expected the JSON that rt scaling fit --out writes (law.beta missing)`);
    beta = { value: f.law.beta, source: `the fit in ${flags.fit}` };
  } else if (flags.beta !== undefined) {
    beta = { value: num(flags, 'beta', CHINCHILLA.beta), source: '--beta' };
  }
  let a: Advice;
  try {
    a = advise(D, reference, beta);
  } catch (e) {
    throw new UsageError((e as Error).message);
  }
  if (flags.json) {
    process.stdout.write(JSON.stringify({ ...a, assumptions: GAMMA_ASSUMPTIONS }) + '\n');
    return 0;
  }
  const out = [
    `efficient model for D = ${g(D, 3)} tokens, calibrated on ${reference.source}: N_ref ${g(reference.N, 3)} non-embedding parameters at D_ref ${g(reference.D, 3)} tokens`,
    `N = N_ref · (D / D_ref)^gamma, gamma in [1-2·beta, 1-beta] = [${g(a.gamma.low, 3)}, ${g(a.gamma.high, 3)}] with beta ${g(a.beta, 3)} from ${a.betaSource}`,
    suggestionText('fast learning-rate rule, n/D', a.fast),
    suggestionText('slow learning-rate rule, sqrt(n/D)', a.slow),
    `recommended: the ${a.recommended === a.fast ? 'fast' : 'slow'}-rule model (the larger of the two, enough under either rule): d ${a.recommended.d}, ${g(a.recommended.actualN, 3)} parameters`,
    'the reference must itself be efficient (just reaching your target loss at D_ref): the advice only moves it along N ∝ D^gamma',
  ];
  printAssumptions(out);
  process.stdout.write(out.join('\n') + '\n');
  return 0;
}

async function sweepCommand(flags: Flags): Promise<number> {
  const data = flags.data;
  if (typeof data !== 'string') throw new UsageError('--data FILE: required, a text file to train the grid on');
  const out = typeof flags.out === 'string' ? flags.out : `runs/scaling-${new Date().toISOString().replace(/[:.]/g, '-')}`;
  const window = int(flags, 'window');
  const device = flags.device !== undefined ? str(flags, 'device', ['cpu', 'cuda'] as const, 'cpu') : undefined;
  const controller = new AbortController();
  const onSignal = (): void => controller.abort();
  process.once('SIGINT', onSignal);
  const t0 = performance.now();
  try {
    const records = await input(() => runSweep({
      data,
      out,
      widths: list(flags, 'widths', [32, 48, 64, 96]),
      fractions: list(flags, 'fractions', [0.25, 0.5, 1]),
      steps: int(flags, 'steps', 400),
      batch: int(flags, 'batch', 16),
      seqLen: int(flags, 'seq-len', 64),
      layers: int(flags, 'layers', 1),
      headSize: int(flags, 'head-size', 16),
      lr: num(flags, 'lr', 2e-3),
      seed: int(flags, 'seed', 0),
      ...(window !== undefined ? { window } : {}),
      ...(device ? { device } : {}),
      ...(typeof flags.cache === 'string' ? { cacheDir: flags.cache } : {}),
      signal: controller.signal,
      onRun: (r, dir) => {
        const line = flags.json ? JSON.stringify({ dir, ...r }) : `${dir}: N ${r.N} (non-embedding), D ${r.D} tokens, ${r.steps} steps, val loss ${r.loss.toFixed(4)} ± ${r.lossStderr.toFixed(4)}, ${r.seconds.toFixed(1)} s`;
        process.stdout.write(line + '\n');
      },
    }), RangeError);
    if (!flags.json) process.stdout.write(`${records.length} runs in ${out} (${((performance.now() - t0) / 1000).toFixed(0)} s); next: rt scaling fit ${out}/*\n`);
    return 0;
  } finally {
    process.off('SIGINT', onSignal);
  }
}

async function reportCommand(paths: string[], flags: Flags): Promise<number> {
  if (paths.length === 0) throw new UsageError('rt scaling report: expected run folders or CSV files');
  if (typeof flags.out !== 'string' || !flags.out.endsWith('.svg')) throw new UsageError('--out FILE.svg: required, where to write the picture');
  const count = str(flags, 'params', ['non-embedding', 'total'] as const, 'non-embedding');
  const obs = await input(() => readObservations(paths, count));
  let fit: ScalingFit | null = null;
  if (obs.length >= 5) {
    fit = fitScalingLaw(obs, { bootstrap: 0 });
    for (const w of fit.diagnostics.warnings) process.stderr.write(`rt scaling report: warning: ${w}\n`);
  } else {
    process.stderr.write(`rt scaling report: ${obs.length} runs are too few to fit 5 constants: points only\n`);
  }
  const L = fit?.law;
  const title = L
    ? `L = ${g(L.E, 3)} + ${g(L.A, 3)}/N^${g(L.alpha, 3)} + ${g(L.B, 3)}/D^${g(L.beta, 3)}   (gamma in [${g(fit!.gamma.low, 3)}, ${g(fit!.gamma.high, 3)}], ${obs.length} runs)`
    : `${obs.length} runs`;
  await writeFile(flags.out, scalingSvg(obs, L ?? null, title));
  process.stdout.write(`${flags.out}\n`);
  return 0;
}

export async function scalingCommand(sub: string | undefined, positionals: string[], flags: Flags): Promise<number> {
  switch (sub) {
    case 'fit':
      return fitCommand(positionals, flags);
    case 'corpus':
      return corpusCommand(positionals, flags);
    case 'advise':
      return adviseCommand(flags);
    case 'sweep':
      return sweepCommand(flags);
    case 'report':
      return reportCommand(positionals, flags);
    default:
      throw new UsageError(`rt scaling: expected fit, corpus, advise, sweep or report, got '${String(sub)}' (try rt --help)`);
  }
}
