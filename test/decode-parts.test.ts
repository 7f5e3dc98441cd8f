// A wide decoder step is split into parts of rows that run on different threads (native/layer/decode.cc).
// Each part must give the same logits as a decoder of one sequence fed the same tokens, whatever the part
// size (RT_DECODE_PART_ROWS, read at every step), with slots at different positions, window closes falling
// inside parts, and slots reset between steps.
import { afterEach, describe, expect, it } from 'vitest';
import { RecurrentTransformer, nativeInfo, rowSampling } from '../src/index.js';
import { Rng } from './helpers.js';

const SLOTS = 48;

afterEach(() => {
  delete process.env.RT_DECODE_PART_ROWS;
});

async function worstAgainstSingles(variant: 'forget' | 'accumulate', window: number, partRows: number | undefined): Promise<number> {
  if (partRows === undefined) delete process.env.RT_DECODE_PART_ROWS;
  else process.env.RT_DECODE_PART_ROWS = String(partRows);
  const rng = new Rng(7 + window + (partRows ?? 0));
  const V = 11;
  const m = new RecurrentTransformer({ vocabSize: V, d: 16, heads: 2, layers: 2, window, variant, maxLen: 64, alpha: { init: 0.7 }, bias: true });
  try {
    const p = m.exportParameters();
    for (const k of Object.keys(p)) if (!k.endsWith('alpha')) p[k] = p[k]!.map((v) => v + (rng.uniform() - 0.5));
    m.importParameters(p);
    const dec = m.decoder(SLOTS);
    let refs = Array.from({ length: SLOTS }, () => m.decoder(1));
    let worst = 0;
    for (let step = 0; step < 20; step++) {
      // Most slots every step (so that the step is wide enough to split), in a shuffled order.
      const active = Array.from({ length: SLOTS }, (_, i) => i).filter(() => rng.uniform() < 0.9);
      for (let i = active.length - 1; i > 0; i--) {
        const j = Math.floor(rng.uniform() * (i + 1));
        [active[i], active[j]] = [active[j]!, active[i]!];
      }
      const toks = active.map(() => Math.floor(rng.uniform() * V));
      const got = await dec.stepSlots(active, toks);
      for (let r = 0; r < active.length; r++) {
        const s = active[r]!;
        const want = await refs[s]!.step([toks[r]!]);
        for (let v = 0; v < V; v++) worst = Math.max(worst, Math.abs(got[r * V + v]! - want[v]!) / (1 + Math.abs(want[v]!)));
        expect(dec.positionOf(s)).toBe(refs[s]!.position);
        if (rng.uniform() < 0.05) {
          dec.reset(s);
          refs[s] = m.decoder(1);
        }
      }
    }
    refs = [];
    return worst;
  } finally {
    m.dispose();
  }
}

describe('a wide decoder step split into parts of rows', () => {
  it('runs on more than one thread here (or the split is not exercised)', () => {
    if (nativeInfo().threads < 2) console.warn('decode-parts: one thread only; the steps below run as a single part');
    expect(nativeInfo().threads).toBeGreaterThanOrEqual(1);
  });
  for (const variant of ['forget', 'accumulate'] as const) {
    for (const window of [0, 3]) {
      for (const partRows of [undefined, 5, 1000]) {
        it(`${variant} w=${window}, ${partRows ?? 'default'} rows per part: equals one decoder per sequence`, async () => {
          expect(await worstAgainstSingles(variant, window, partRows)).toBeLessThan(1e-4);
        });
      }
    }
  }

  // A step that keeps to one thread (the server's, with several in flight) runs its parts one after
  // another: the same parts, so the same bits as the pooled step, and every row through the few-rows
  // kernels (one part of 40 rows would take the GEMM, whose bits differ).
  for (const variant of ['forget', 'accumulate'] as const) {
    it(`${variant}: a serial wide step gives the bits of the pooled one, and each row those of a narrow step`, async () => {
      const rng = new Rng(3);
      const V = 13;
      const m = new RecurrentTransformer({ vocabSize: V, d: 16, heads: 2, layers: 2, window: 3, variant, maxLen: 64, alpha: { init: 0.6 } });
      try {
        const pooled = m.decoder(SLOTS);
        const serial = m.decoder(SLOTS);
        const narrow = m.decoder(SLOTS);
        for (let step = 0; step < 9; step++) {
          const active = Array.from({ length: SLOTS }, (_, i) => i).filter(() => rng.uniform() < 0.85);
          const toks = active.map(() => Math.floor(rng.uniform() * V));
          const a = await pooled.stepSlots(active, toks);
          const b = await serial.stepSample(active, toks, rowSampling(active.length), { serial: true });
          expect(active.length).toBeGreaterThan(32);
          expect(b.logits).toEqual(a);
          // The same rows fed in steps of at most 16 rows: one part each.
          for (let r0 = 0; r0 < active.length; r0 += 16) {
            const c = await narrow.stepSlots(active.slice(r0, r0 + 16), toks.slice(r0, r0 + 16));
            expect(c).toEqual(a.subarray(r0 * V, Math.min(active.length, r0 + 16) * V));
          }
        }
      } finally {
        m.dispose();
      }
    });
  }

  // The serve bench's model: every row of a wide step, pooled or serial, has the bits of the same sequence
  // decoded alone (the head included: a GEMM over all the step's rows gave every row other bits from 21
  // rows on), so a request's tokens cannot depend on the batch it shared.
  it('every row of a wide step has the bits of a lone decoder (d 128, 96 tokens)', async () => {
    const m = new RecurrentTransformer({ vocabSize: 96, d: 128, heads: 4, window: 16, layers: 1, maxLen: 64, seed: 1 });
    try {
      for (const [S, serial] of [[21, false], [40, false], [40, true], [64, true]] as const) {
        const dec = m.decoder(64);
        const slots = Array.from({ length: S }, (_, i) => i);
        const alone = slots.map(() => m.decoder(1));
        for (let step = 0; step < 3; step++) {
          const toks = slots.map((i) => (i * 7 + step * 3) % 96);
          const got = (await dec.stepSample(slots, toks, rowSampling(S), { serial })).logits;
          for (let r = 0; r < S; r++) expect(got.subarray(r * 96, (r + 1) * 96), `S ${S} serial ${serial} row ${r}`).toEqual(await alone[r]!.step([toks[r]!]));
        }
      }
    } finally {
      m.dispose();
    }
  });
});
