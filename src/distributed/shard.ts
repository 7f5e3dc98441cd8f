// Batch sharding for data parallelism: every rank draws the batch a single-process run would draw from the
// same seeded Rng, and keeps its contiguous block of rows. The union over the ranks is that batch exactly,
// and every rank's Rng stays in the same state, so a checkpoint does not depend on the world size.
import type { Batch } from '../train/data.js';

function checkRank(rank: number, worldSize: number): void {
  if (!Number.isSafeInteger(worldSize) || worldSize < 1) throw new RangeError(`worldSize: expected a positive integer, got ${String(worldSize)}`);
  if (!Number.isSafeInteger(rank) || rank < 0 || rank >= worldSize) {
    throw new RangeError(`rank: expected an integer in [0, ${worldSize - 1}], got ${String(rank)}`);
  }
}

/** Rows [start, end) of a batch of `batchSize` that rank `rank` of `worldSize` trains on. */
export function shardRange(batchSize: number, rank: number, worldSize: number): [number, number] {
  checkRank(rank, worldSize);
  if (!Number.isSafeInteger(batchSize) || batchSize < 1) throw new RangeError(`batchSize: expected a positive integer, got ${String(batchSize)}`);
  if (batchSize % worldSize !== 0) {
    // Unequal shards would weight the ranks' mean gradients unequally: the average would not be the
    // full batch's gradient.
    throw new RangeError(`batchSize: ${batchSize} is not divisible by the number of GPUs (world size ${worldSize}); use a multiple of ${worldSize}`);
  }
  const per = batchSize / worldSize;
  return [rank * per, (rank + 1) * per];
}

/** This rank's rows of `b` (copies; `b` is left as it is). */
export function shardBatch(b: Batch, rank: number, worldSize: number): Batch {
  if (worldSize === 1) return b;
  const [start, end] = shardRange(b.batch, rank, worldSize);
  return {
    tokens: b.tokens.slice(start * b.seqLen, end * b.seqLen),
    targets: b.targets.slice(start * b.positions, end * b.positions),
    batch: end - start,
    seqLen: b.seqLen,
    positions: b.positions,
  };
}
