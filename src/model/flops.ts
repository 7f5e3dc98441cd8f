// FLOP counts per sample, for plotting curves against compute and for the results table. The layer
// count is bench/lib/flops.mjs's (keep the two in step); this module adds the head and L layers.
//
// One forward application of the transformer layer T to n tokens (width d, hd = d / heads):
//
//   matrix products   2 n (3d² + d² + 4d² + 4d²) = 24 n d²
//                     (c_attn d->3d, attention c_proj d->d, c_fc d->4d, mlp c_proj 4d->d)
//   attention         2 · heads · n(n+1)/2 · hd · 2 = 2 n (n+1) d
//                     (causal Q·Kᵀ and P·V over the n(n+1)/2 unmasked pairs only)
//
// The recurrence over N tokens with window w (m = ceil(N / w) windows, the last of r = N - (m-1) w):
//   w = 0       one application to N tokens (the plain transformer)
//   m = 1       two applications to N tokens: T(T(X_0))
//   otherwise   w, then 2w for k = 1 .. m-2, then w + r, then r tokens
// L layers multiply this by L. Forget and accumulate cost the same (alpha · P adds are not counted).
//
// Head (on top of ln_f), 2 · d · outputs per scored position: lm d -> V at all N positions, copy d -> V
// at the last M, classify d -> C at the last one.
//
// Not counted: embedding lookups (gathers), LayerNorm, softmax, activations, residual adds and dropout
// (O(N d) memory-bound work), and the optimizer. Training = 3 x forward (a product's backward is two
// products); inference = one forward over the sample.
import type { HeadConfig } from './config.js';

/** What the count needs from a model config. */
export interface FlopsModel {
  d: number;
  heads: number;
  layers?: number;
  /** Window width (0 = plain transformer). For random widths pass the width of the step. */
  window: number;
  vocabSize: number;
  head?: HeadConfig;
}

/** FLOPs of one sample, split by where they go. */
export interface FlopsPerSample {
  /** The layer stack's forward pass. */
  layers: number;
  /** The head's forward pass. */
  head: number;
  /** One forward pass over the sample (= inference). */
  forward: number;
  /** Forward + backward (3 x forward). */
  training: number;
}

function checkInt(name: string, v: unknown, min: number): number {
  if (typeof v !== 'number' || !Number.isSafeInteger(v) || v < min) throw new RangeError(`${name}: expected an integer >= ${min}, got ${String(v)}`);
  return v;
}

/** FLOPs of one forward application of T to n tokens of one sample. */
export function applicationFlops(n: number, d: number): number {
  checkInt('applicationFlops n', n, 0);
  checkInt('applicationFlops d', d, 1);
  return 24 * n * d * d + 2 * n * (n + 1) * d;
}

/** Token counts of the applications of T that one recurrent layer makes over N tokens with window w. */
export function applicationLengths(N: number, w: number): number[] {
  checkInt('applicationLengths N', N, 1);
  checkInt('applicationLengths w', w, 0);
  if (w === 0) return [N];
  const m = Math.ceil(N / w);
  if (m === 1) return [N, N];
  const r = N - (m - 1) * w;
  const lengths = [w];
  for (let k = 1; k < m - 1; k++) lengths.push(2 * w);
  lengths.push(w + r, r);
  return lengths;
}

/** Outputs x scored positions of the head, for a sequence of N tokens. */
function headFlops(model: FlopsModel, N: number): number {
  const head = model.head ?? 'lm';
  if (head === 'lm') return 2 * model.d * model.vocabSize * N;
  if ('copy' in head) return 2 * model.d * model.vocabSize * Math.min(head.copy, N);
  return 2 * model.d * head.classify;
}

/** FLOPs per sample of `seqLen` tokens: the layers, the head, forward (inference) and training. */
export function flopsPerSample(model: FlopsModel, seqLen: number): FlopsPerSample {
  if (model === null || typeof model !== 'object') throw new TypeError('flopsPerSample model: expected { d, heads, layers, window, vocabSize, head }');
  const d = checkInt('flopsPerSample model.d', model.d, 1);
  const heads = checkInt('flopsPerSample model.heads', model.heads, 1);
  if (d % heads !== 0) throw new RangeError(`flopsPerSample model.heads: must divide d (d = ${d}, heads = ${heads})`);
  const L = checkInt('flopsPerSample model.layers', model.layers ?? 1, 1);
  checkInt('flopsPerSample model.vocabSize', model.vocabSize, 1);
  const N = checkInt('flopsPerSample seqLen', seqLen, 1);
  let perLayer = 0;
  for (const n of applicationLengths(N, checkInt('flopsPerSample model.window', model.window, 0))) perLayer += applicationFlops(n, d);
  const layers = L * perLayer;
  const head = headFlops(model, N);
  const forward = layers + head;
  return { layers, head, forward, training: 3 * forward };
}
