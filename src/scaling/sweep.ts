// A grid of small recurrent language models (widths × fractions of a step budget) trained on one text
// file, each to its own fixed number of steps with a cosine schedule that ends at its last step (as
// Hoffmann et al. matched the schedule to the tokens), then evaluated once. Each run folder gets
// log.jsonl (rt train's header, evaluation and summary lines, so `rt report` reads it too) and
// scaling.json (what `rt scaling fit` reads).
import { appendFile, mkdir, readFile, writeFile } from 'node:fs/promises';
import { cpus, hostname } from 'node:os';
import { join } from 'node:path';
import { TextDataset } from '../data/text.js';
import { RecurrentTransformer } from '../model/transformer.js';
import type { Device } from '../native.js';
import { CharTokenizer } from '../tokenizer/index.js';
import { train, type TrainEvent } from '../train/trainer.js';
import type { ScalingRecord } from './runs.js';

export interface SweepOptions {
  /** A text file; tokenised by characters. */
  data: string;
  /** Output folder: one run folder per (width, fraction). */
  out: string;
  /** Model widths (default 32, 48, 64, 96). Heads = d / headSize. */
  widths?: readonly number[];
  /** Fractions of `steps` that the runs train for (default 0.25, 0.5, 1). */
  fractions?: readonly number[];
  /** The step budget of a fraction-1 run (default 400). */
  steps?: number;
  batch?: number;
  seqLen?: number;
  window?: number;
  layers?: number;
  headSize?: number;
  lr?: number;
  /** Evaluation batches at the end of each run (default 20). */
  evalBatches?: number;
  seed?: number;
  device?: Device;
  cacheDir?: string;
  /** Called when a run ends. */
  onRun?: (record: ScalingRecord, dir: string) => void;
  signal?: AbortSignal;
}

/** The run folder name of one grid point, e.g. d48-f0.5. */
export function sweepRunName(d: number, fraction: number): string {
  return `d${d}-f${fraction}`;
}

function checkList(v: readonly number[], name: string, ok: (x: number) => boolean, what: string): number[] {
  if (!Array.isArray(v) || v.length === 0 || !v.every(ok)) throw new RangeError(`${name}: expected a non-empty list of ${what}, got ${JSON.stringify(v)}`);
  return [...v];
}

function positiveInt(v: number, name: string): number {
  if (!Number.isSafeInteger(v) || v < 1) throw new RangeError(`${name}: expected a positive integer, got ${v}`);
  return v;
}

/** Runs the grid; returns the records in grid order. A run whose scaling.json exists is kept, not retrained. */
export async function runSweep(options: SweepOptions): Promise<ScalingRecord[]> {
  const headSize = positiveInt(options.headSize ?? 16, 'headSize');
  const widths = checkList(options.widths ?? [32, 48, 64, 96], 'widths', (d) => Number.isSafeInteger(d) && d >= headSize && d % headSize === 0, `widths that are multiples of headSize ${headSize}`);
  const fractions = checkList(options.fractions ?? [0.25, 0.5, 1], 'fractions', (f) => f > 0 && f <= 1, 'fractions in (0, 1]');
  const budget = positiveInt(options.steps ?? 400, 'steps');
  const batch = positiveInt(options.batch ?? 16, 'batch');
  const seqLen = positiveInt(options.seqLen ?? 64, 'seqLen');
  const window = options.window ?? 16;
  const layers = positiveInt(options.layers ?? 1, 'layers');
  const lr = options.lr ?? 2e-3;
  if (!(lr > 0)) throw new RangeError(`lr: expected a positive learning rate, got ${lr}`);
  const evalBatches = positiveInt(options.evalBatches ?? 20, 'evalBatches');
  const text = await readFile(options.data, 'utf8').catch(() => {
    throw new Error(`data: ${options.data}: expected a readable text file`);
  });
  const tokenizer = CharTokenizer.fromText(text);
  const data = await TextDataset.open({ source: options.data, tokenizer, seqLen, cacheDir: options.cacheDir ?? '.rt-cache' });
  const records: ScalingRecord[] = [];
  try {
    for (const d of widths) {
      for (const fraction of fractions) {
        if (options.signal?.aborted) return records;
        const dir = join(options.out, sweepRunName(d, fraction));
        const done = await readFile(join(dir, 'scaling.json'), 'utf8').catch(() => null);
        if (done !== null) {
          records.push(JSON.parse(done) as ScalingRecord);
          continue;
        }
        await mkdir(dir, { recursive: true });
        const steps = Math.max(1, Math.round(budget * fraction));
        const model = new RecurrentTransformer({
          vocabSize: tokenizer.vocabSize, d, heads: d / headSize, layers, window, maxLen: seqLen, head: 'lm',
          variant: 'forget', activation: 'gelu', dropout: 0, seed: options.seed ?? 0, ...(options.device ? { device: options.device } : {}),
        });
        try {
          const parameters = model.parameterCount();
          // Kaplan et al.'s N: the embeddings (wte, tied to the output head, and wpe) are left out.
          const N = model.parameters().filter((p) => p.name !== 'transformer.wte.weight' && p.name !== 'transformer.wpe.weight').reduce((n, p) => n + p.value.size, 0);
          const header = {
            type: 'config', name: `scaling-${sweepRunName(d, fraction)}`, task: 'text', preset: null, argv: process.argv.slice(2),
            flags: { d: String(d), heads: String(d / headSize), layers: String(layers), window: String(window), steps: String(steps), batch: String(batch), lr: String(lr), 'seq-len': String(seqLen) },
            model: model.config, device: model.device, parameters, nonEmbeddingParameters: N, seqLen, data: data.describe(),
            host: { hostname: hostname(), cpus: cpus().length, cpu: cpus()[0]?.model ?? null }, date: new Date().toISOString(),
          };
          const lines: string[] = [JSON.stringify(header)];
          const onEvent = (e: TrainEvent): void => {
            if (e.type === 'eval' || e.type === 'skip') lines.push(JSON.stringify(e));
          };
          const result = await train({
            model, data, steps, batchSize: batch,
            optimizer: { lr, weightDecay: 0, maxGradNorm: 1, betas: [0.9, 0.99] },
            schedule: { type: 'warmupCosine', warmup: Math.min(20, Math.floor(steps / 10)), total: steps, minLr: lr / 10 },
            evalEvery: steps, evalBatches, seed: options.seed ?? 0, onEvent, ...(options.signal ? { signal: options.signal } : {}),
          });
          if (result.aborted || !result.lastEval) return records;
          const ev = result.lastEval;
          const record: ScalingRecord = {
            format: 'recurrent-transformer/scaling-run', version: 1, N, parameters, D: result.samples * seqLen, loss: ev.loss, lossStderr: ev.lossStderr,
            steps: result.step, batch, seqLen, trainTokens: data.tokens('train'),
            model: { d, heads: d / headSize, layers, window, vocabSize: tokenizer.vocabSize }, lr, seconds: Number(result.seconds.toFixed(2)),
          };
          lines.push(JSON.stringify({
            type: 'summary', task: 'text', steps: result.step, samples: result.samples, flops: result.flops, seconds: record.seconds,
            accuracy: ev.accuracy, loss: ev.loss, lossStderr: ev.lossStderr, bestLoss: ev.loss, bestAccuracy: ev.accuracy, perplexity: Math.exp(ev.loss), aborted: false, checkpoint: null,
          }));
          await appendFile(join(dir, 'log.jsonl'), lines.map((l) => l + '\n').join(''));
          await writeFile(join(dir, 'scaling.json'), JSON.stringify(record, null, 2) + '\n');
          records.push(record);
          options.onRun?.(record, dir);
        } finally {
          model.dispose();
        }
      }
    }
  } finally {
    await data.close();
  }
  return records;
}
