// Incremental decoding must equal the offline forward of every prefix: the streaming recurrence
// (native/layer/decode.cc) against model.logits() on the prefix, for both variants, several windows
// (including w = 1, windows that do not divide the length, and w = 0), and stacked layers.
import { describe, expect, it } from 'vitest';
import { RecurrentTransformer, Tensor, type Variant } from '../src/index.js';
import { Rng } from './helpers.js';

async function maxStreamingError(variant: Variant, window: number, layers: number, seed: number): Promise<number> {
  const rng = new Rng(seed);
  const rand = (): number => rng.uniform();
  const V = 7;
  const m = new RecurrentTransformer({ vocabSize: V, d: 8, heads: 2, layers, window, variant, maxLen: 16, alpha: { init: 0.6 }, bias: seed % 2 === 0 });
  try {
    const p = m.exportParameters();
    for (const k of Object.keys(p)) if (!k.endsWith('alpha')) p[k] = p[k]!.map((v) => v + (rand() - 0.5));
    m.importParameters(p);
    const N = 13;
    const B = 2;
    const toks = Array.from({ length: B * N }, () => Math.floor(rand() * V));
    const dec = m.decoder(B);
    let worst = 0;
    for (let t = 0; t < N; t++) {
      const step = await dec.step([toks[t]!, toks[N + t]!]);
      expect(dec.position).toBe(t + 1);
      const prefix = [...toks.slice(0, t + 1), ...toks.slice(N, N + t + 1)];
      const x = Tensor.fromArray(prefix, [B, t + 1], 'int32');
      const ref = (await m.logits(x, { positions: 1 })).toArray();
      x.dispose();
      let scale = 1e-6;
      for (const v of ref) scale = Math.max(scale, Math.abs(v));
      for (let i = 0; i < ref.length; i++) worst = Math.max(worst, Math.abs(ref[i]! - step[i]!) / scale);
    }
    return worst;
  } finally {
    m.dispose();
  }
}

describe('incremental decoding equals the offline forward of each prefix', () => {
  for (const variant of ['forget', 'accumulate'] as const) {
    for (const window of [0, 1, 3, 4]) {
      for (const layers of [1, 2]) {
        it(`${variant} w=${window} layers=${layers}`, async () => {
          expect(await maxStreamingError(variant, window, layers, 17 * window + layers)).toBeLessThan(1e-4);
        });
      }
    }
  }

  it('refuses tokens outside the vocabulary and positions past maxLen', async () => {
    const m = new RecurrentTransformer({ vocabSize: 5, d: 8, heads: 2, window: 2, maxLen: 3 });
    const dec = m.decoder(1);
    await expect(async () => dec.step([5])).rejects.toThrow(/outside the vocabulary/);
    for (let i = 0; i < 3; i++) await dec.step([1]);
    await expect(async () => dec.step([1])).rejects.toThrow(/maxLen 3/);
    m.dispose();
  });

  it('state does not grow with the number of tokens decoded', async () => {
    const { nativeAllocatedBytes } = await import('../src/index.js');
    const m = new RecurrentTransformer({ vocabSize: 5, d: 16, heads: 2, window: 4, positional: false, maxLen: 8, variant: 'accumulate' });
    const dec = m.decoder(1);
    for (let i = 0; i < 50; i++) await dec.step([i % 5]);
    const after50 = nativeAllocatedBytes();
    for (let i = 0; i < 500; i++) await dec.step([i % 5]);
    expect(nativeAllocatedBytes()).toBe(after50);
    expect(dec.position).toBe(550);
    m.dispose();
  });
});

describe('continuous batching: slots at different positions', () => {
  for (const variant of ['forget', 'accumulate'] as const) {
    for (const window of [0, 3]) {
      it(`${variant} w=${window}: interleaved slots with resets equal independent single-sequence decoders`, async () => {
        const rng = new Rng(99 + window);
        const V = 6;
        const m = new RecurrentTransformer({ vocabSize: V, d: 8, heads: 2, layers: 2, window, variant, maxLen: 40, alpha: { init: 0.7 } });
        const p = m.exportParameters();
        for (const k of Object.keys(p)) if (!k.endsWith('alpha')) p[k] = p[k]!.map((v) => v + (rng.uniform() - 0.5));
        m.importParameters(p);
        const slots = 3;
        const dec = m.decoder(slots);
        // Each slot's own token stream; a slot is reset after a random number of tokens and starts a new one.
        const streams: number[][] = [[], [], []];
        let refs: (ReturnType<typeof m.decoder> | null)[] = [m.decoder(1), m.decoder(1), m.decoder(1)];
        for (let step = 0; step < 30; step++) {
          const active = [0, 1, 2].filter(() => rng.uniform() < 0.8);
          if (active.length === 0) continue;
          const toks = active.map(() => Math.floor(rng.uniform() * V));
          const got = await dec.stepSlots(active, toks);
          for (let r = 0; r < active.length; r++) {
            const s = active[r]!;
            streams[s]!.push(toks[r]!);
            const want = await refs[s]!.step([toks[r]!]);
            for (let v = 0; v < V; v++) expect(Math.abs(got[r * V + v]! - want[v]!)).toBeLessThan(1e-4 * (1 + Math.abs(want[v]!)));
            expect(dec.positionOf(s)).toBe(streams[s]!.length);
            if (rng.uniform() < 0.1) {
              dec.reset(s);
              streams[s] = [];
              refs[s] = m.decoder(1);
            }
          }
        }
        refs = [];
        m.dispose();
      });
    }
  }

  it('refuses repeated or out-of-range slots', async () => {
    const m = new RecurrentTransformer({ vocabSize: 5, d: 8, heads: 2, window: 2, maxLen: 8 });
    const dec = m.decoder(2);
    await expect(async () => dec.stepSlots([0, 0], [1, 2])).rejects.toThrow(/distinct/);
    await expect(async () => dec.stepSlots([2], [1])).rejects.toThrow(/slots/);
    expect(() => dec.reset(5)).toThrow(/slot/);
    m.dispose();
  });
});
