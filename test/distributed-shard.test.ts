// Batch sharding: rank r of W keeps rows [r*B/W, (r+1)*B/W) of the batch one process draws from the same
// seed, so the ranks' shards put together are exactly that batch; an uneven split is refused.
import { describe, expect, it } from 'vitest'
import { Rng } from '../src/data/rng.js'
import { shardBatch, shardRange } from '../src/distributed/shard.js'
import { CopyTaskData } from '../src/train/data.js'

describe('data-parallel batch sharding', () => {
  const data = new CopyTaskData({ task: 'selective-copy', noise: 12, M: 4, alphabet: 8 })

  for (const W of [1, 2, 4]) {
    it(`the union of ${W} shards is the single-process batch, in order`, () => {
      const B = 8
      const single = data.batch(new Rng(7), B, 'train', {})
      const tokens: number[] = []
      const targets: number[] = []
      for (let r = 0; r < W; r++) {
        // Every rank draws from its own Rng with the same seed, as the trainer does.
        const s = shardBatch(data.batch(new Rng(7), B, 'train', {}), r, W)
        expect(s.batch).toBe(B / W)
        expect(s.seqLen).toBe(single.seqLen)
        expect(s.tokens.length).toBe((B / W) * single.seqLen)
        tokens.push(...s.tokens)
        targets.push(...s.targets)
      }
      expect(tokens).toEqual([...single.tokens])
      expect(targets).toEqual([...single.targets])
    })
  }

  it('shards are disjoint row ranges covering the batch', () => {
    expect([0, 1, 2, 3].map((r) => shardRange(12, r, 4))).toEqual([[0, 3], [3, 6], [6, 9], [9, 12]])
  })

  it('refuses a batch that does not split evenly, naming the numbers', () => {
    expect(() => shardRange(10, 0, 4)).toThrow(/batchSize: 10 is not divisible by the number of GPUs \(world size 4\)/)
    expect(() => shardRange(8, 4, 4)).toThrow(/rank: expected an integer in \[0, 3\], got 4/)
    expect(() => shardRange(8, 0, 0)).toThrow(/worldSize: expected a positive integer/)
  })
})
