// Reads the observations that the fit needs from run folders (`scaling.json` written by `rt scaling
// sweep`, else the header and summary lines of an `rt train` log.jsonl) or from a CSV of N, D, loss.
import { readFile, stat } from 'node:fs/promises';
import { join } from 'node:path';
import type { Observation } from './fit.js';

/** What `rt scaling sweep` writes into each run folder as scaling.json. */
export interface ScalingRecord {
  format: 'recurrent-transformer/scaling-run';
  version: 1;
  /** Non-embedding parameters: every parameter except the token and position embeddings (Kaplan et al.'s N). */
  N: number;
  /** All parameters, embeddings included (Hoffmann et al. count these). */
  parameters: number;
  /** Training tokens seen: steps × batch × sequence length. */
  D: number;
  /** Final validation loss (nats per token) and its standard error over the evaluation batches. */
  loss: number;
  lossStderr: number;
  steps: number;
  batch: number;
  seqLen: number;
  /** Tokens in the training split: D above it means the run repeated data. */
  trainTokens: number;
  model: { d: number; heads: number; layers: number; window: number; vocabSize: number };
  lr: number;
  seconds: number;
}

/** Which N a reader takes from a run: non-embedding (the default) or all parameters. */
export type ParamCount = 'non-embedding' | 'total';

function finite(v: unknown): number | undefined {
  return typeof v === 'number' && Number.isFinite(v) ? v : undefined;
}

/** Non-embedding parameters of an `rt train` model config: total minus wte (V×d) and wpe (maxLen×d). */
export function nonEmbeddingParams(parameters: number, model: Record<string, unknown>): number {
  const V = finite(model.vocabSize);
  const d = finite(model.d);
  const maxLen = finite(model.maxLen) ?? 0;
  if (V === undefined || d === undefined) throw new Error('model config: expected vocabSize and d to count the embeddings');
  return parameters - V * d - (model.positional === false ? 0 : maxLen * d);
}

/** One run folder as an observation. */
export async function readRunObservation(dir: string, count: ParamCount = 'non-embedding'): Promise<Observation> {
  const rec = await readFile(join(dir, 'scaling.json'), 'utf8').catch(() => null);
  if (rec !== null) {
    let r: Partial<ScalingRecord>;
    try {
      r = JSON.parse(rec) as Partial<ScalingRecord>;
    } catch {
      throw new Error(`${dir}/scaling.json: expected JSON`);
    }
    const N = finite(count === 'total' ? r.parameters : r.N);
    const D = finite(r.D);
    const loss = finite(r.loss);
    if (N === undefined || D === undefined || loss === undefined) throw new Error(`${dir}/scaling.json: expected numbers N, parameters, D and loss`);
    return { N, D, loss, label: dir };
  }
  const text = await readFile(join(dir, 'log.jsonl'), 'utf8').catch(() => {
    throw new Error(`${dir}: expected a run folder holding scaling.json or log.jsonl (from rt scaling sweep or rt train)`);
  });
  let config: Record<string, unknown> | null = null;
  let summary: Record<string, unknown> | null = null;
  for (const line of text.split('\n')) {
    if (!line.trim()) continue;
    let o: unknown;
    try {
      o = JSON.parse(line);
    } catch {
      continue; // a torn last line after a crash
    }
    if (o && typeof o === 'object') {
      const rec2 = o as Record<string, unknown>;
      if (rec2.type === 'config') config = rec2;
      else if (rec2.type === 'summary') summary = rec2;
    }
  }
  if (!config || !summary) throw new Error(`${dir}/log.jsonl: expected a 'config' header and a 'summary' line (a finished rt train run)`);
  const parameters = finite(config.parameters);
  const seqLen = finite(config.seqLen);
  const samples = finite(summary.samples);
  const loss = finite(summary.loss);
  const model = config.model && typeof config.model === 'object' ? (config.model as Record<string, unknown>) : null;
  if (parameters === undefined || seqLen === undefined || !model) throw new Error(`${dir}/log.jsonl: the header lacks parameters, seqLen or model`);
  if (samples === undefined || loss === undefined) throw new Error(`${dir}/log.jsonl: the summary lacks samples or a final validation loss`);
  if (model.head !== 'lm') throw new Error(`${dir}: a scaling fit needs language-model runs (head 'lm'), got task ${String(config.task)}`);
  const N = count === 'total' ? parameters : nonEmbeddingParams(parameters, model);
  return { N, D: samples * seqLen, loss, label: dir };
}

/** Columns a CSV may use for each quantity (first match wins; case-insensitive). */
const COLUMNS = {
  N: ['n', 'params', 'parameters', 'non_embedding_params'],
  D: ['d', 'tokens', 'data'],
  loss: ['loss', 'final_loss', 'val_loss'],
} as const;

/** A CSV with a header naming N (or params), D (or tokens) and loss; other columns are ignored. */
export function parseObservationsCsv(text: string, source = 'CSV'): Observation[] {
  const lines = text.split(/\r?\n/).filter((l) => l.trim() && !l.trimStart().startsWith('#'));
  if (lines.length < 2) throw new Error(`${source}: expected a header line and at least one row`);
  const header = lines[0]!.split(',').map((h) => h.trim().toLowerCase());
  const col = (names: readonly string[], what: string): number => {
    const i = header.findIndex((h) => names.includes(h));
    if (i < 0) throw new Error(`${source}: expected a column for ${what} (one of ${names.join(', ')}), got ${header.join(', ')}`);
    return i;
  };
  const iN = col(COLUMNS.N, 'the parameter count');
  const iD = col(COLUMNS.D, 'the training tokens');
  const iL = col(COLUMNS.loss, 'the final loss');
  return lines.slice(1).map((line, k) => {
    const cells = line.split(',').map((c) => Number(c.trim()));
    const [N, D, loss] = [cells[iN], cells[iD], cells[iL]];
    if (![N, D, loss].every((v) => v !== undefined && Number.isFinite(v))) throw new Error(`${source} line ${k + 2}: expected numbers in columns ${header[iN]}, ${header[iD]}, ${header[iL]}, got '${line}'`);
    return { N: N!, D: D!, loss: loss!, label: `${source}:${k + 2}` };
  });
}

/** Every argument is a run folder or a .csv file. */
export async function readObservations(paths: readonly string[], count: ParamCount = 'non-embedding'): Promise<Observation[]> {
  const out: Observation[] = [];
  for (const p of paths) {
    const s = await stat(p).catch(() => null);
    if (!s) throw new Error(`${p}: no such run folder or CSV file`);
    if (s.isFile()) out.push(...parseObservationsCsv(await readFile(p, 'utf8'), p));
    else out.push(await readRunObservation(p, count));
  }
  return out;
}
