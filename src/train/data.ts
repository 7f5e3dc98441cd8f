// What the trainer draws batches from. A task turns a seeded Rng (owned and checkpointed by the
// trainer) into batches of tokens and targets; the copy tasks also take the curriculum's noise length.
import { copyBatch, copySeqLen, resolveCopyTaskOptions, type CopyTaskOptions, type ResolvedCopyTaskOptions } from '../data/copy.js';
import type { Rng } from '../data/rng.js';

/** One batch: tokens [batch, seqLen]; targets [batch, positions], scored at the last `positions` tokens. */
export interface Batch {
  tokens: Int32Array;
  targets: Int32Array;
  batch: number;
  seqLen: number;
  positions: number;
}

export interface TrainData {
  /** Draws a batch. `noise` is the curriculum's current noise length, for tasks that have one. */
  batch(rng: Rng, size: number, split: 'train' | 'val', ctx: { noise?: number }): Batch;
  /** The full noise length, for tasks with a noise curriculum. */
  readonly maxNoise?: number;
  /** JSON description stored in checkpoints (enough to rebuild the task). */
  describe(): Record<string, unknown>;
}

/** Copy / selective copy (DESIGN.md section 1): fresh random sequences for every batch, train and val alike. */
export class CopyTaskData implements TrainData {
  readonly options: ResolvedCopyTaskOptions;

  constructor(opts: CopyTaskOptions) {
    this.options = resolveCopyTaskOptions(opts);
  }

  get maxNoise(): number {
    return this.options.noise;
  }

  /** Longest sequence the task produces (the model's maxLen must cover it). */
  get maxSeqLen(): number {
    return copySeqLen(this.options);
  }

  batch(rng: Rng, size: number, _split: 'train' | 'val', ctx: { noise?: number }): Batch {
    const b = copyBatch(rng, size, { ...this.options, noise: ctx.noise ?? this.options.noise });
    return { tokens: b.tokens, targets: b.targets, batch: b.batch, seqLen: b.seqLen, positions: b.M };
  }

  describe(): Record<string, unknown> {
    return { kind: 'copy', ...this.options };
  }
}
