// Reading a run's log.jsonl (written by `rt train`) into the curves `rt report` draws.
//
// Lines are JSON objects with a `type`: 'config' (the run's header), 'step', 'eval', 'curriculum',
// 'summary' (others are ignored). A resumed run appends to the same file and may repeat steps that
// were logged after its checkpoint: a step at or below one already seen replaces everything logged from
// that step on, as if the first attempt had stopped there. A line that is not JSON (a torn last line
// after a crash) is skipped and counted.
import { readFile } from 'node:fs/promises';
import { basename, join, resolve } from 'node:path';

/** One point of a curve. `flops` is NaN in logs written before FLOPs were counted. */
export interface MetricPoint {
  step: number;
  samples: number;
  flops: number;
  loss: number;
  accuracy: number;
  /** Wall time since the start of training (evaluations only; NaN otherwise). */
  seconds: number;
}

/** A change of the noise length (copy tasks), where it happened. */
export interface CurriculumMark {
  step: number;
  samples: number;
  flops: number;
  from: number;
  to: number;
}

export interface RunData {
  /** The run's name: its preset, else its task, else the folder's name. */
  name: string;
  dir: string;
  config: Record<string, unknown> | null;
  /** Training loss and accuracy at every step (one batch each: noisy). */
  train: MetricPoint[];
  /** Evaluations. */
  val: MetricPoint[];
  curriculum: CurriculumMark[];
  summary: Record<string, unknown> | null;
  /** Lines that were not JSON objects. */
  badLines: number;
}

function numberOr(v: unknown, fallback: number): number {
  return typeof v === 'number' && Number.isFinite(v) ? v : fallback;
}

function dropFrom<T extends { step: number }>(xs: T[], step: number): void {
  while (xs.length > 0 && xs[xs.length - 1]!.step >= step) xs.pop();
}

/** Parses the text of a log.jsonl. `dir` names the run when the log has no header. */
export function parseRunLog(text: string, dir: string): RunData {
  if (typeof text !== 'string') throw new TypeError('parseRunLog text: expected the contents of a log.jsonl');
  const run: RunData = { name: basename(dir), dir, config: null, train: [], val: [], curriculum: [], summary: null, badLines: 0 };
  // samples / flops after each step, to place curriculum marks (their events carry only the step).
  const at = new Map<number, { samples: number; flops: number }>();
  for (const line of text.split('\n')) {
    if (line.trim() === '') continue;
    let e: Record<string, unknown>;
    try {
      const v: unknown = JSON.parse(line);
      if (v === null || typeof v !== 'object' || Array.isArray(v)) throw new Error('not an object');
      e = v as Record<string, unknown>;
    } catch {
      run.badLines++;
      continue;
    }
    const step = numberOr(e.step, NaN);
    switch (e.type) {
      case 'config':
        if (run.config === null) {
          run.config = e;
          if (typeof e.name === 'string' && e.name !== '') run.name = e.name;
        }
        break;
      case 'step': {
        if (!Number.isFinite(step)) break;
        const last = run.train[run.train.length - 1];
        if (last && step <= last.step) {
          dropFrom(run.train, step);
          dropFrom(run.val, step);
          dropFrom(run.curriculum, step);
        }
        const p = { step, samples: numberOr(e.samples, NaN), flops: numberOr(e.flops, NaN), loss: numberOr(e.loss, NaN), accuracy: numberOr(e.accuracy, NaN), seconds: NaN };
        run.train.push(p);
        at.set(step, { samples: p.samples, flops: p.flops });
        break;
      }
      case 'eval':
        if (Number.isFinite(step)) {
          dropFrom(run.val, step);
          run.val.push({ step, samples: numberOr(e.samples, NaN), flops: numberOr(e.flops, NaN), loss: numberOr(e.loss, NaN), accuracy: numberOr(e.accuracy, NaN), seconds: numberOr(e.seconds, NaN) });
        }
        break;
      case 'curriculum':
        if (Number.isFinite(step)) {
          dropFrom(run.curriculum, step);
          const where = at.get(step);
          run.curriculum.push({ step, samples: where?.samples ?? NaN, flops: where?.flops ?? NaN, from: numberOr(e.from, NaN), to: numberOr(e.to, NaN) });
        }
        break;
      case 'summary':
        run.summary = e;
        break;
      default:
        break;
    }
  }
  return run;
}

/** Reads RUN_DIR/log.jsonl (or a log file given directly). */
export async function readRun(dirOrFile: string): Promise<RunData> {
  if (typeof dirOrFile !== 'string' || dirOrFile === '') throw new TypeError('readRun: expected a run folder or a log.jsonl path');
  const isFile = dirOrFile.endsWith('.jsonl');
  const file = isFile ? dirOrFile : join(dirOrFile, 'log.jsonl');
  let text: string;
  try {
    text = await readFile(file, 'utf8');
  } catch (e) {
    throw new Error(`run ${dirOrFile}: cannot read ${file} (${(e as Error).message})`);
  }
  const dir = isFile ? resolve(file, '..') : dirOrFile;
  return parseRunLog(text, dir);
}
