// The training loop: batches, random window widths, the noise curriculum, learning-rate rules,
// evaluation with standard errors, NaN-safe steps, checkpoints and resume, AbortSignal. Every step
// is a few native calls (model.lossAndGrad, optimizer.step) that run off the event loop.
import { Rng } from '../data/rng.js';
import { checkSameWeights } from '../distributed/consistency.js';
import { shardBatch, shardRange } from '../distributed/shard.js';
import type { GradientSync } from '../distributed/sync.js';
import { loadCheckpoint, saveCheckpoint } from '../io/checkpoint.js';
import { flopsPerSample } from '../model/flops.js';
import type { RecurrentTransformer } from '../model/transformer.js';
import { AdamW, type AdamWOptions, type PendingStep } from '../optim/adamw.js';
import { AdaptiveLmLr, CurriculumLr, constantLr, warmupCosine, type LrState } from '../optim/schedule.js';
import { Tensor } from '../tensor.js';
import { NoiseCurriculum, evalWindow, sampleWindow, type CurriculumOptions } from './curriculum.js';
import type { Batch, TrainData } from './data.js';

/** How the learning rate moves. 'curriculum' and 'lm' are the paper's rules, driven by evaluations. */
export type ScheduleOptions =
  | { type: 'constant' }
  | { type: 'warmupCosine'; warmup: number; total?: number; minLr?: number }
  | { type: 'curriculum'; minLr?: number; compound?: boolean }
  | { type: 'lm'; target: number; minLr?: number };

export interface TrainOptions {
  model: RecurrentTransformer;
  data: TrainData;
  /** Steps to run in total (a resumed run continues up to this count). */
  steps: number;
  batchSize: number;
  optimizer?: AdamWOptions;
  /** Default: 'curriculum' when a curriculum is given, else 'constant'. */
  schedule?: ScheduleOptions;
  /** Noise-length curriculum for the copy tasks (max defaults to the task's noise length). */
  curriculum?: Partial<CurriculumOptions> | false;
  evalEvery?: number;
  evalBatches?: number;
  seed?: number;
  signal?: AbortSignal;
  onEvent?: (e: TrainEvent) => void;
  /** Write a checkpoint here every `every` steps (default: at each evaluation), at the end and on abort. */
  checkpoint?: { path: string; every?: number };
  /** Resume from this checkpoint (model, optimizer, curriculum, schedule and RNG state). */
  resumeFrom?: string;
  /** Stop early once an evaluation at full curriculum length reaches these. */
  stopAt?: { accuracy?: number; loss?: number };
  /** Stored in checkpoints (JSON) so that one file is enough to generate text. */
  tokenizer?: unknown;
  /** Consecutive non-finite steps tolerated before training stops with an error (default 20). */
  maxBadSteps?: number;
  /**
   * Data parallelism (a ProcessGroup from initProcessGroup()): every rank draws the full batch of
   * `batchSize` from the shared seed and trains on its rows, gradients are averaged before each optimizer
   * step, evaluations are sharded and averaged, and only rank 0 writes checkpoints. The checkpoint does
   * not depend on the number of ranks, so a run can resume on a different number of GPUs.
   */
  distributed?: GradientSync;
  /**
   * Queue each optimizer step and report it (its `step` event, with the gradient norm, or its `skip`) only
   * after the next step's loss: the GPU then goes from one step to the next without waiting for JavaScript
   * (the char config's step 7.65 ms against 8.20: bench/RESULTS.md). Events then come one step after their
   * work, and an abort that fires at a step's event drops the next step (its random draws put back, so a resume
   * repeats it) and stops after the step that fired it, as without. Default: on for a model on 'cuda'; on the
   * CPU the step is done when it is queued, and there is nothing to overlap.
   */
  overlapSteps?: boolean;
}

export type TrainEvent =
  | { type: 'step'; step: number; loss: number; accuracy: number; lr: number; gradNorm: number; tokensPerSec: number; window: number; noise?: number; samples: number; flops: number }
  | {
      type: 'eval'; step: number; loss: number; lossStderr: number; accuracy: number; accuracyStderr: number; window: number; noise?: number; samples: number; flops: number; seconds: number;
      /** Accumulate models: each layer's alpha = clamp(a, 0, 1) at this evaluation. */
      alpha?: number[];
    }
  | { type: 'curriculum'; step: number; from: number; to: number; lr: number }
  | { type: 'skip'; step: number; reason: string }
  | { type: 'checkpoint'; step: number; path: string };

export interface EvalResult {
  loss: number;
  lossStderr: number;
  accuracy: number;
  accuracyStderr: number;
}

export interface TrainResult {
  step: number;
  samples: number;
  /** Training FLOPs so far (src/model/flops.ts: 3 x forward of every training sample; evaluation not counted). */
  flops: number;
  seconds: number;
  lastEval: EvalResult | null;
  aborted: boolean;
  stoppedEarly: boolean;
}

/** Everything beyond weights and moments that a resumed run needs to continue bit for bit. */
interface TrainingState {
  step: number;
  samples: number;
  /** Cumulative training FLOPs (absent in checkpoints written before it was counted). */
  flops?: number;
  seconds: number;
  rng: { data: number[]; eval: number[]; window: number[] };
  curriculum: { length: number } | null;
  lr: LrState | null;
  badSteps: number;
}

function positiveInt(v: unknown, name: string): number {
  if (typeof v !== 'number' || !Number.isSafeInteger(v) || v < 1) throw new RangeError(`${name}: expected a positive integer, got ${String(v)}`);
  return v;
}

function meanStderr(xs: number[]): [number, number] {
  const n = xs.length;
  const mean = xs.reduce((a, b) => a + b, 0) / n;
  if (n < 2) return [mean, 0];
  const variance = xs.reduce((a, b) => a + (b - mean) ** 2, 0) / (n - 1);
  return [mean, Math.sqrt(variance / n)];
}

function batchTensors(b: Batch): [Tensor, Tensor] {
  return [Tensor.fromArray(b.tokens, [b.batch, b.seqLen], 'int32'), Tensor.fromArray(b.targets, [b.batch, b.positions], 'int32')];
}

/** Trains `model` on `data`; resolves when the steps are done, the run stops early, or `signal` aborts. */
export async function train(opts: TrainOptions): Promise<TrainResult> {
  const { model, data } = opts;
  const steps = positiveInt(opts.steps, 'steps');
  const batchSize = positiveInt(opts.batchSize, 'batchSize');
  const evalEvery = positiveInt(opts.evalEvery ?? 100, 'evalEvery');
  const evalBatches = positiveInt(opts.evalBatches ?? 4, 'evalBatches');
  const maxBad = positiveInt(opts.maxBadSteps ?? 20, 'maxBadSteps');
  const seed = opts.seed ?? 0;
  if (!Number.isSafeInteger(seed) || seed < 0) throw new RangeError(`seed: expected a non-negative integer, got ${String(seed)}`);
  const emit = opts.onEvent ?? (() => {});
  const cfg = model.config;
  const dist = opts.distributed;
  if (dist) shardRange(batchSize, dist.rank, dist.worldSize);  // batchSize must split evenly: fail now
  const shard = (b: Batch): Batch => (dist ? shardBatch(b, dist.rank, dist.worldSize) : b);

  const optimizer = new AdamW(model.parameters(), model.decayMask(), opts.optimizer);
  const root = new Rng(seed);
  const rngData = root.fork(1);
  const rngEval = root.fork(2);
  const rngWindow = root.fork(3);

  const curriculum =
    opts.curriculum === false || opts.curriculum === undefined || data.maxNoise === undefined
      ? null
      : new NoiseCurriculum({ max: opts.curriculum.max ?? data.maxNoise, start: opts.curriculum.start, threshold: opts.curriculum.threshold });
  const schedule = opts.schedule ?? (curriculum ? { type: 'curriculum' as const } : { type: 'constant' as const });
  const lr0 = optimizer.lr;
  let lrRule: CurriculumLr | AdaptiveLmLr | null = null;
  let lrAt: (step: number) => number;
  switch (schedule.type) {
    case 'constant':
      lrAt = constantLr(lr0);
      break;
    case 'warmupCosine':
      lrAt = warmupCosine({ lr: lr0, warmup: schedule.warmup, total: schedule.total ?? steps, minLr: schedule.minLr ?? lr0 / 10 });
      break;
    case 'curriculum': {
      if (!curriculum) throw new RangeError("schedule 'curriculum': needs a noise curriculum (a copy task with curriculum options)");
      const r = new CurriculumLr({ lr0, minLr: schedule.minLr, compound: schedule.compound });
      lrRule = r;
      lrAt = () => r.current();
      break;
    }
    case 'lm': {
      const r = new AdaptiveLmLr({ lr0, target: schedule.target, minLr: schedule.minLr });
      lrRule = r;
      lrAt = () => r.current();
      break;
    }
    default:
      throw new RangeError(`schedule.type: unknown '${String((schedule as { type: unknown }).type)}'`);
  }

  let state: TrainingState = { step: 0, samples: 0, flops: 0, seconds: 0, rng: { data: [], eval: [], window: [] }, curriculum: null, lr: null, badSteps: 0 };
  if (opts.resumeFrom) {
    const ck = await loadCheckpoint(opts.resumeFrom);
    model.importParameters(ck.params);
    if (!ck.optimizer) throw new Error(`resumeFrom: checkpoint ${opts.resumeFrom} has no optimizer state`);
    optimizer.loadState({ step: ck.optimizer.step, m: ck.optimizer.m, v: ck.optimizer.v });
    const t = ck.training as TrainingState | undefined;
    if (!t || typeof t.step !== 'number') throw new Error(`resumeFrom: checkpoint ${opts.resumeFrom} has no training state`);
    state = { ...t, flops: t.flops ?? 0 };
    rngData.setState(t.rng.data);
    rngEval.setState(t.rng.eval);
    rngWindow.setState(t.rng.window);
    if (curriculum && t.curriculum) curriculum.setState(t.curriculum);
    if (lrRule && t.lr) lrRule.setState(t.lr);
  }

  const saveTo = async (path: string): Promise<void> => {
    if (dist && dist.rank !== 0) return;
    const opt = optimizer.state();
    const training: TrainingState = {
      ...state,
      rng: { data: rngData.getState(), eval: rngEval.getState(), window: rngWindow.getState() },
      curriculum: curriculum ? curriculum.getState() : null,
      lr: lrRule ? lrRule.getState() : null,
    };
    const params = model.exportParameters();
    await saveCheckpoint(path, {
      params,
      shapes: Object.fromEntries(model.parameters().map((p) => [p.name, [...p.shape]])),
      config: { model: cfg, data: data.describe() },
      tied: !(typeof cfg.head === 'object' && 'classify' in cfg.head),
      optimizer: { step: opt.step, m: opt.m, v: opt.v, hyper: { ...opts.optimizer } },
      training,
      tokenizer: opts.tokenizer,
    });
    emit({ type: 'checkpoint', step: state.step, path });
  };

  const evaluate = async (): Promise<EvalResult> => {
    const noise = curriculum?.length;
    const window = cfg.windowRange ? evalWindow({ min: cfg.windowRange[0], max: cfg.windowRange[1] }) : cfg.window;
    const losses: number[] = [];
    const accs: number[] = [];
    for (let i = 0; i < evalBatches; i++) {
      const [tok, tgt] = batchTensors(shard(data.batch(rngEval, batchSize, 'val', { noise })));
      try {
        const r = await model.evaluate(tok, tgt, { window });
        losses.push(r.loss);
        accs.push(r.count ? r.correct / r.count : 0);
      } finally {
        tok.dispose();
        tgt.dispose();
      }
    }
    if (dist) {
      // Every rank gets the same numbers, so curriculum and learning-rate decisions agree everywhere.
      const m = await dist.allReduceMean([], [...losses, ...accs]);
      losses.splice(0, losses.length, ...m.slice(0, evalBatches));
      accs.splice(0, accs.length, ...m.slice(evalBatches));
    }
    const [loss, lossStderr] = meanStderr(losses);
    const [accuracy, accuracyStderr] = meanStderr(accs);
    // alpha is the one learnt choice between forgetting and accumulating; its course is what to look at
    // when a long-range task stalls.
    const alpha = cfg.variant === 'accumulate'
      ? model.parameters().filter((p) => p.name.endsWith('.alpha')).map((p) => Math.min(1, Math.max(0, p.value.toArray()[0]!)))
      : undefined;
    emit({ type: 'eval', step: state.step, loss, lossStderr, accuracy, accuracyStderr, window, noise, samples: state.samples, flops: state.flops ?? 0, seconds: state.seconds, ...(alpha ? { alpha } : {}) });
    return { loss, lossStderr, accuracy, accuracyStderr };
  };

  let lastEval: EvalResult | null = null;
  // The last step's report (its gradient norm, a skip): made once the next step is queued, or before
  // anything that reads the state (an evaluation, a checkpoint, the end).
  const overlap = opts.overlapSteps ?? model.device === 'cuda';
  let unreported: (() => Promise<void>) | null = null;
  const flushReport = async (): Promise<void> => {
    const report = unreported;
    unreported = null;
    if (report) await report();
  };
  let aborted = false;
  let stoppedEarly = false;
  const started = performance.now() - state.seconds * 1000;
  // With several ranks, an abort is voted on at each step so that every rank stops after the same step.
  let stopVote = false;
  try {
    if (dist) await checkSameWeights(model.parameters(), dist);
    while (state.step < steps) {
      if (dist ? stopVote : opts.signal?.aborted) {
        aborted = true;
        break;
      }
      // (Put back if this step is dropped for an abort seen at the last step's report, below.)
      const drawn = { data: rngData.getState(), window: rngWindow.getState() };
      const noise = curriculum?.length;
      const window = cfg.windowRange ? sampleWindow(rngWindow, { min: cfg.windowRange[0], max: cfg.windowRange[1] }) : cfg.window;
      const full = data.batch(rngData, batchSize, 'train', { noise });
      const b = shard(full);
      const [tok, tgt] = batchTensors(b);
      const t0 = performance.now();
      const lr = lrAt(state.step);
      model.zeroGrad();
      let r;
      let queued: PendingStep | null;
      let loss: number;
      let accuracy: number;
      try {
        // A per-step dropout seed: resuming at step s reproduces the masks of an uninterrupted run.
        r = await model.lossAndGrad(tok, tgt, { training: true, seed: (seed * 1_000_003 + state.step) % Number.MAX_SAFE_INTEGER, window });
        loss = r.loss;
        accuracy = r.count ? r.correct / r.count : 0;
        if (dist) {
          const m = await dist.allReduceMean(model.parameters(), [loss, accuracy, opts.signal?.aborted ? 1 : 0]);
          [loss, accuracy] = [m[0]!, m[1]!];
          stopVote = m[2]! > 0;
        }
        // The last step's report comes only now: its optimizer step was queued, not waited for, so the GPU
        // went on to this step's work at once. Its norm is known by now (this step's loss came after it).
        await flushReport();
        // An abort fired at that report stops the run after that step, as without the deferral: this step's
        // gradients are dropped, and the random draws it made are put back, so that a resume repeats them.
        if (overlap && !dist && opts.signal?.aborted) {
          rngData.setState(drawn.data);
          rngWindow.setState(drawn.window);
          aborted = true;
          break;
        }
        queued = Number.isFinite(loss) ? await optimizer.queue(lr) : null;
      } finally {
        tok.dispose();
        tgt.dispose();
      }
      state.step++;
      state.samples += full.batch;
      // Counted at this step's sequence length and window: the curriculum and random widths change both.
      state.flops = (state.flops ?? 0) + full.batch * flopsPerSample({ ...cfg, window }, b.seqLen).training;
      state.seconds = (performance.now() - started) / 1000;
      const dt = (performance.now() - t0) / 1000;
      const event = { step: state.step, loss, accuracy, lr, tokensPerSec: (full.batch * full.seqLen) / dt, window, noise, samples: state.samples, flops: state.flops };
      unreported = async () => {
        const info = queued ? await queued.result() : { gradNorm: NaN, skipped: true };
        if (info.skipped) {
          state.badSteps++;
          emit({ type: 'skip', step: event.step, reason: Number.isFinite(event.loss) ? 'non-finite gradient norm' : 'non-finite loss' });
          if (state.badSteps >= maxBad) throw new Error(`training stopped: ${state.badSteps} consecutive steps had a non-finite loss or gradient (maxBadSteps = ${maxBad})`);
        } else {
          state.badSteps = 0;
        }
        emit({ type: 'step', ...event, gradNorm: info.gradNorm });
      };
      const evalNow = state.step % evalEvery === 0 || state.step === steps;
      const saveNow = opts.checkpoint?.every !== undefined && state.step % opts.checkpoint.every === 0;
      if (!overlap || evalNow || saveNow) await flushReport();

      if (evalNow) {
        lastEval = await evaluate();
        if (curriculum) {
          const ev = curriculum.onEval(lastEval.loss);
          if (ev.changed) {
            const newLr = (lrRule as CurriculumLr | null)?.onLengthChange?.(ev.to, curriculum.max) ?? lrAt(state.step);
            emit({ type: 'curriculum', step: state.step, from: ev.from, to: ev.to, lr: newLr });
          } else if (lrRule instanceof CurriculumLr) {
            lrRule.onEval(lastEval.loss, curriculum.atMax);
          }
        } else if (lrRule instanceof AdaptiveLmLr) {
          lrRule.onEval(lastEval.loss);
        }
        const full = !curriculum || (curriculum.atMax && lastEval !== null);
        const stop = opts.stopAt;
        if (stop && full && (stop.accuracy === undefined || lastEval.accuracy >= stop.accuracy) && (stop.loss === undefined || lastEval.loss <= stop.loss)) {
          stoppedEarly = true;
        }
        if (opts.checkpoint && opts.checkpoint.every === undefined) await saveTo(opts.checkpoint.path);
        if (stoppedEarly) break;
      }
      if (saveNow) await saveTo(opts.checkpoint!.path);
    }
    await flushReport();
    if (opts.checkpoint) await saveTo(opts.checkpoint.path);
  } finally {
    optimizer.dispose();
  }
  return { step: state.step, samples: state.samples, flops: state.flops ?? 0, seconds: state.seconds, lastEval, aborted, stoppedEarly };
}
