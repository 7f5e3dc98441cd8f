// The CPU linear layer for few rows (native/cpu/linear_rows.cc, the decoder's shapes) against a float64
// reference on random inputs: every tile shape (rows not a multiple of 3, columns not a multiple of 4),
// with and without bias and residual, K short and long, and the sizes just past where it hands over to the
// GEMM (more than 32 rows, K not a multiple of 8), which must agree too.
import { describe, expect, it } from 'vitest';
import { loadNative } from '../src/native.js';
import { Rng } from './helpers.js';

type LinearForward = (x: Float32Array, W: Float32Array, b: Float32Array | null, res: Float32Array | null, n: number, inF: number, out: number, engine: 'auto' | 'gemm') => Float32Array;
const linearForward = (loadNative('cpu') as unknown as { linearForward: LinearForward }).linearForward;

function randn(rng: Rng, n: number): Float32Array {
  return Float32Array.from({ length: n }, () => rng.uniform() * 2 - 1);
}

/** Largest |got - want| / (1 + |want|) against the float64 product. */
function worst(got: Float32Array, x: Float32Array, W: Float32Array, b: Float32Array | null, res: Float32Array | null, n: number, inF: number, out: number): number {
  let w = 0;
  for (let r = 0; r < n; r++) {
    for (let j = 0; j < out; j++) {
      let s = 0;
      for (let k = 0; k < inF; k++) s += x[r * inF + k]! * W[j * inF + k]!;
      if (b) s += b[j]!;
      if (res) s += res[r * out + j]!;
      w = Math.max(w, Math.abs(got[r * out + j]! - s) / (1 + Math.abs(s)));
    }
  }
  return w;
}

describe('linear layer for few rows', () => {
  const shapes: [number, number, number][] = [
    [1, 8, 1], [1, 128, 384], [2, 16, 5], [3, 8, 4], [4, 24, 7], [5, 128, 128], [7, 512, 129], [8, 128, 512],
    [13, 64, 30], [31, 128, 384], [32, 512, 128], [33, 128, 130], [64, 128, 384], [6, 12, 10], [3, 20, 9],
  ];
  for (const [n, inF, out] of shapes) {
    for (const withB of [false, true]) {
      for (const withRes of [false, true]) {
        it(`n=${n} in=${inF} out=${out}${withB ? ' +bias' : ''}${withRes ? ' +res' : ''}`, () => {
          const rng = new Rng(n * 1000 + inF * 10 + out + (withB ? 1 : 0) + (withRes ? 2 : 0));
          const x = randn(rng, n * inF);
          const W = randn(rng, out * inF);
          const b = withB ? randn(rng, out) : null;
          const res = withRes ? randn(rng, n * out) : null;
          const got = linearForward(x, W, b, res, n, inF, out, 'auto');
          expect(worst(got, x, W, b, res, n, inF, out)).toBeLessThan(2e-6 * Math.sqrt(inF));
          const viaGemm = linearForward(x, W, b, res, n, inF, out, 'gemm');
          expect(worst(viaGemm, x, W, b, res, n, inF, out)).toBeLessThan(2e-6 * Math.sqrt(inF));
        });
      }
    }
  }

  it('gives the same bits on every call (no dependence on how the columns were split)', () => {
    const rng = new Rng(5);
    const [n, inF, out] = [29, 128, 512];
    const x = randn(rng, n * inF);
    const W = randn(rng, out * inF);
    const first = linearForward(x, W, null, null, n, inF, out, 'auto');
    for (let k = 0; k < 5; k++) expect(linearForward(x, W, null, null, n, inF, out, 'auto')).toEqual(first);
    // Each row alone gives the bits it had in the batch: a row's result does not depend on its tile.
    for (const r of [0, 1, 2, 27, 28]) {
      const one = linearForward(x.slice(r * inF, (r + 1) * inF), W, null, null, 1, inF, out, 'auto');
      expect(one).toEqual(first.slice(r * out, (r + 1) * out));
    }
  });
});
