// What the training loop needs from data parallelism, and nothing else: who this rank is, and a way to
// average the gradients (plus a few scalars: the loss, the accuracy, a stop vote) over the ranks.
import type { Parameter } from '../model/layer.js';

export interface GradientSync {
  readonly rank: number;
  readonly worldSize: number;
  /**
   * Replaces every parameter's gradient by its mean over the ranks, and resolves with the mean of
   * `scalars` (every rank passes the same number of them). All ranks must call it at the same point.
   */
  allReduceMean(params: readonly Parameter[], scalars: readonly number[]): Promise<number[]>;
}
