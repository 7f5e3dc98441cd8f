// The decoder's cached attention (native/cpu/decode.cc) scores keys four at a time and sums values in
// passes of up to 32 columns. Windows long enough for several groups of four keys plus a remainder, and
// head widths that leave a partial pass (40 = 32 + 8) or need two (64), must give the offline forward's
// logits at every step.
import { describe, expect, it } from 'vitest';
import { RecurrentTransformer, Tensor } from '../src/index.js';

describe('cached attention: groups of keys, passes over value columns', () => {
  for (const [d, heads, window] of [[80, 2, 7], [64, 1, 9], [96, 4, 5]] as const) {
    it(`d=${d} heads=${heads} (head width ${d / heads}) window ${window}: each step equals the offline forward`, async () => {
      const V = 9, N = 2 * window + 5, B = 2;
      const m = new RecurrentTransformer({ vocabSize: V, d, heads, layers: 1, window, maxLen: 64, seed: d + window });
      try {
        // Weights of order 1, so that attention is far from uniform.
        const p = m.exportParameters();
        let k = 0;
        for (const name of Object.keys(p)) if (!name.endsWith('alpha')) p[name] = p[name]!.map((v) => v + Math.sin(2 + k++ * 0.37) * 0.3);
        m.importParameters(p);
        const toks = Array.from({ length: B * N }, (_, i) => (i * 7 + 2) % V);
        const dec = m.decoder(B);
        let worst = 0;
        for (let t = 0; t < N; t++) {
          const got = await dec.stepSlots([1, 0], [toks[t]!, toks[N + t]!]);
          const x = Tensor.fromArray([...toks.slice(0, t + 1), ...toks.slice(N, N + t + 1)], [B, t + 1], 'int32');
          const want = (await m.logits(x, { positions: 1 })).toArray();
          x.dispose();
          let scale = 1e-6;
          for (const v of want) scale = Math.max(scale, Math.abs(v));
          for (let i = 0; i < want.length; i++) worst = Math.max(worst, Math.abs(want[i]! - got[i]!) / scale);
        }
        expect(worst).toBeLessThan(1e-4);
      } finally {
        m.dispose();
      }
    });
  }
});
