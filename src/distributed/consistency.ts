// Data parallelism assumes every rank starts from the same weights (the same seed, or the same checkpoint);
// PyTorch's DDP broadcasts rank 0's weights to make sure. Here each rank builds its own model, so the start
// is checked instead: two checksums of all weights, averaged over the ranks, must equal this rank's own.
import type { Parameter } from '../model/layer.js';
import type { GradientSync } from './sync.js';

function checksums(params: readonly Parameter[]): [number, number] {
  let sum = 0;
  let weighted = 0;
  for (const p of params) {
    const v = p.value.toArray();
    for (let i = 0; i < v.length; i++) {
      sum += v[i]!;
      weighted += v[i]! * ((i % 13) + 1);
    }
  }
  return [sum, weighted];
}

/** Throws on every rank when the ranks' weights differ (the all-reduce keeps them in step). */
export async function checkSameWeights(params: readonly Parameter[], sync: GradientSync): Promise<void> {
  if (sync.worldSize === 1) return;
  // float32 on the wire: compare at float32 precision, with room for the rounding of the mean.
  const mine = checksums(params).map((x) => Math.fround(x));
  const mean = await sync.allReduceMean([], mine);
  const same = mine.every((x, i) => Math.abs(mean[i]! - x) <= 1e-5 * Math.max(1, Math.abs(x)));
  // Every rank learns the verdict of all: a second reduction of the local verdicts.
  const [allSame] = await sync.allReduceMean([], [same ? 1 : 0]);
  if (allSame !== 1) {
    throw new Error(
      `distributed: the ranks start from different weights (rank ${sync.rank} ${same ? 'agrees with the mean' : 'differs'}); ` +
        'build the model with the same config and seed on every rank, or resume all ranks from the same checkpoint',
    );
  }
}
