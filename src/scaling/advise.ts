// The smallest efficient model for D tokens: a reference run's size scaled by (D / D_ref)^gamma at both
// ends of the gamma interval, turned into an `rt train` configuration (the width d that gives that many
// non-embedding parameters at the reference's depth and head size).
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { nonEmbeddingParams, type ScalingRecord } from './runs.js';
import { CHINCHILLA, gammaInterval, type GammaInterval } from './law.js';

/** The run that calibrates the advice: its size, its data, and the shape to keep. */
export interface ReferenceRun {
  /** Non-embedding parameters. */
  N: number;
  /** Training tokens seen. */
  D: number;
  d: number;
  heads: number;
  layers: number;
  window: number;
  seqLen: number;
  batch: number;
  bias: boolean;
  /** Where it came from. */
  source: string;
}

/**
 * Without a reference run: Chinchilla (70B parameters, 1.4T tokens), whose 70B counts embeddings; at
 * that size they are under 1% of the model, so the difference from a non-embedding count is negligible.
 */
export const CHINCHILLA_REFERENCE: Readonly<ReferenceRun> = Object.freeze({
  N: 70e9, D: 1.4e12, d: 8192, heads: 64, layers: 80, window: 0, seqLen: 2048, batch: 1536, bias: false, source: 'Chinchilla (Hoffmann et al. 2022): 70B parameters, 1.4T tokens',
});

/** Non-embedding parameters of one of our models: per layer 12d² (attention 4d², MLP 8d²) + LayerNorms + alpha, plus ln_f. */
export function modelNonEmbeddingParams(d: number, layers: number, bias = false): number {
  const perLayer = 12 * d * d + 2 * d + 1 + (bias ? 13 * d : 0);
  return layers * perLayer + d + (bias ? d : 0);
}

/** The width (a multiple of `multiple`) whose non-embedding count is nearest to N on a log scale. */
export function widthFor(N: number, layers: number, multiple: number, bias = false): number {
  if (!(N > 0)) throw new RangeError(`N: expected a positive parameter count, got ${N}`);
  const guess = Math.sqrt(N / (12 * layers));
  const lo = Math.max(multiple, Math.floor(guess / multiple) * multiple);
  const candidates = [lo, lo + multiple];
  const err = (d: number): number => Math.abs(Math.log(modelNonEmbeddingParams(d, layers, bias) / N));
  return candidates.reduce((a, b) => (err(b) < err(a) ? b : a));
}

export interface ModelSuggestion {
  gamma: number;
  /** Parameters the law asks for. */
  N: number;
  d: number;
  heads: number;
  layers: number;
  /** Non-embedding parameters of the suggested width (d is a multiple of the reference head size, so N moves in steps). */
  actualN: number;
  steps: number;
  /** `rt train` flags for this model (add --data and --tokenizer). */
  trainArgs: string[];
}

export interface Advice {
  D: number;
  reference: ReferenceRun;
  beta: number;
  betaSource: string;
  gamma: GammaInterval;
  /** gamma = 1 - beta (learning rate ∝ n/D). */
  fast: ModelSuggestion;
  /** gamma = 1 - 2·beta (learning rate ∝ sqrt(n/D)). */
  slow: ModelSuggestion;
  /** The larger of the two: big enough under either learning-rate rule. */
  recommended: ModelSuggestion;
}

function suggest(ref: ReferenceRun, D: number, gamma: number): ModelSuggestion {
  const N = ref.N * (D / ref.D) ** gamma;
  // Keep the reference's head size (d / heads) where it divides evenly, as width grows or shrinks.
  const headSize = Math.max(1, Math.round(ref.d / ref.heads));
  const d = widthFor(N, ref.layers, headSize, ref.bias);
  const heads = Math.max(1, Math.round(d / headSize));
  const steps = Math.max(1, Math.round(D / (ref.batch * ref.seqLen)));
  const trainArgs = [
    '--task', 'text', '--d', String(d), '--heads', String(heads), '--layers', String(ref.layers), '--window', String(ref.window),
    '--seq-len', String(ref.seqLen), '--batch', String(ref.batch), '--steps', String(steps),
    ...(ref.bias ? ['--bias'] : []),
  ];
  return { gamma, N, d, heads, layers: ref.layers, actualN: modelNonEmbeddingParams(d, ref.layers, ref.bias), steps, trainArgs };
}

export function advise(D: number, reference: ReferenceRun = CHINCHILLA_REFERENCE, beta: { value: number; source: string } = { value: CHINCHILLA.beta, source: 'Chinchilla (Hoffmann et al. 2022)' }): Advice {
  if (!(Number.isFinite(D) && D > 0)) throw new RangeError(`tokens: expected a positive token count, got ${D}`);
  if (!(beta.value > 0 && beta.value < 0.5)) throw new RangeError(`beta: expected a data exponent in (0, 0.5) so that gamma is positive, got ${beta.value}`);
  const gamma = gammaInterval(beta.value);
  const fast = suggest(reference, D, gamma.high);
  const slow = suggest(reference, D, gamma.low);
  return { D, reference, beta: beta.value, betaSource: beta.source, gamma, fast, slow, recommended: fast.N >= slow.N ? fast : slow };
}

function numberField(o: Record<string, unknown>, k: string, where: string): number {
  const v = o[k];
  if (typeof v !== 'number' || !Number.isFinite(v)) throw new Error(`${where}: expected a number in '${k}'`);
  return v;
}

/** A reference from a run folder: scaling.json (rt scaling sweep) or log.jsonl (rt train). */
export async function readReferenceRun(dir: string): Promise<ReferenceRun> {
  const rec = await readFile(join(dir, 'scaling.json'), 'utf8').catch(() => null);
  if (rec !== null) {
    const where = `${dir}/scaling.json`;
    let r: ScalingRecord;
    try {
      r = JSON.parse(rec) as ScalingRecord;
    } catch {
      throw new Error(`${where}: expected JSON`);
    }
    if (!r || typeof r !== 'object' || !r.model || typeof r.model !== 'object') throw new Error(`${where}: expected a scaling record with a 'model' object`);
    const m = r.model as unknown as Record<string, unknown>;
    return {
      N: numberField(r as unknown as Record<string, unknown>, 'N', where), D: numberField(r as unknown as Record<string, unknown>, 'D', where),
      d: numberField(m, 'd', where), heads: numberField(m, 'heads', where), layers: numberField(m, 'layers', where), window: numberField(m, 'window', where),
      seqLen: numberField(r as unknown as Record<string, unknown>, 'seqLen', where), batch: numberField(r as unknown as Record<string, unknown>, 'batch', where), bias: false, source: dir,
    };
  }
  const text = await readFile(join(dir, 'log.jsonl'), 'utf8').catch(() => {
    throw new Error(`--reference ${dir}: expected a run folder holding scaling.json or log.jsonl`);
  });
  const lines = text.split('\n').flatMap((l) => {
    try {
      return [JSON.parse(l) as Record<string, unknown>];
    } catch {
      return [];
    }
  });
  const config = lines.find((l) => l.type === 'config');
  const summary = [...lines].reverse().find((l) => l.type === 'summary');
  const where = `${dir}/log.jsonl`;
  if (!config || !summary) throw new Error(`${where}: expected a 'config' header and a 'summary' line (a finished rt train run)`);
  const model = (config.model ?? {}) as Record<string, unknown>;
  const flags = (config.flags ?? {}) as Record<string, unknown>;
  const seqLen = numberField(config, 'seqLen', where);
  const batch = Number(flags.batch ?? 64);
  return {
    N: nonEmbeddingParams(numberField(config, 'parameters', where), model),
    D: numberField(summary, 'samples', where) * seqLen,
    d: numberField(model, 'd', where),
    heads: numberField(model, 'heads', where),
    layers: numberField(model, 'layers', where),
    window: typeof model.window === 'number' ? model.window : 0,
    seqLen,
    batch: Number.isFinite(batch) && batch > 0 ? batch : 64,
    bias: model.bias === true,
    source: dir,
  };
}
