// The decoder's cached attention (native/cpu/decode.cc) scores keys four at a time and sums values in
// passes of up to 32 columns. Windows long enough for several groups of four keys plus a remainder, and
// head widths that leave a partial pass (40 = 32 + 8) or need two (64), must give the offline forward's
// logits at every step.
import { describe, expect, it } from 'vitest';
import { RecurrentTransformer } from '../src/index.js';
import { perturbWeights, worstDecoderError } from './decoder-check.js';

describe('cached attention: groups of keys, passes over value columns', () => {
  for (const [d, heads, window] of [[80, 2, 7], [64, 1, 9], [96, 4, 5]] as const) {
    it(`d=${d} heads=${heads} (head width ${d / heads}) window ${window}: each step equals the offline forward`, async () => {
      const V = 9, N = 2 * window + 5, B = 2;
      const m = new RecurrentTransformer({ vocabSize: V, d, heads, layers: 1, window, maxLen: 64, seed: d + window });
      try {
        perturbWeights(m, 2, 0.37, 0.3);
        const toks = Array.from({ length: B * N }, (_, i) => (i * 7 + 2) % V);
        const worst = await worstDecoderError(m, toks, B, N, [1, 0]);
        expect(worst).toBeLessThan(1e-4);
      } finally {
        m.dispose();
      }
    });
  }
});
