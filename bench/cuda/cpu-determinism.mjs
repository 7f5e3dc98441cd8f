// The CPU model's gradient, computed 6 times in one process on the inputs of check-model.mjs's
// "copy accumulate relu nopos" case: prints loss, gradient norm and the largest max-rel difference from
// the first run. Every line should be identical (the CPU path is meant to give the same bits every run for
// a given thread count). Written to tell whether a check-model failure on the GPU machine came from the
// GPU or from the CPU reference.  node bench/cuda/cpu-determinism.mjs
// On the GPU machine the CPU model runs inside the CUDA build (RT_CUDA_ADDON), as in check-model.mjs.
if (process.env.RT_CUDA_ADDON) process.env.RT_DEVICE ??= 'cuda';
const { realisticParams, rng } = await import('../lib/random.mjs');
const { RecurrentTransformer } = await import('../../dist/model/transformer.js');
const { Tensor } = await import('../../dist/tensor.js');
const c = { name: 'copy accumulate relu nopos', cfg: { vocabSize: 16, d: 96, heads: 6, window: 32, variant: 'accumulate', activation: 'relu', positional: false, head: { copy: 16 }, maxLen: 400 }, B: 4, N: 300 };
const r = rng(c.name.length * 7919 + 1);
const m = new RecurrentTransformer({ ...c.cfg, seed: 3, device: 'cpu' });
const params = realisticParams(m.parameters(), r);
m.importParameters(params);
const V = c.cfg.vocabSize, P = m.scoredPositions(c.N);
const tokens = Tensor.fromArray(Int32Array.from({ length: c.B * c.N }, () => Math.floor(r() * V)), [c.B, c.N], 'int32');
const targets = Tensor.fromArray(Int32Array.from({ length: c.B * P }, () => Math.floor(r() * V)), [c.B, P], 'int32');
let first;
for (let t = 0; t < 6; t++) {
  const fresh = new RecurrentTransformer({ ...c.cfg, seed: 3, device: 'cpu' });
  fresh.importParameters(params);
  const l = await fresh.lossAndGrad(tokens, targets, { training: false, seed: 11 });
  const g = fresh.parameters().map((p) => p.grad.toArray());
  let n2 = 0; for (const a of g) for (const v of a) n2 += v * v;
  let diff = 0;
  if (first) for (let i = 0; i < g.length; i++) { let mx = 0, mr = 0; for (let j = 0; j < g[i].length; j++) { mx = Math.max(mx, Math.abs(g[i][j] - first[i][j])); mr = Math.max(mr, Math.abs(first[i][j])); } diff = Math.max(diff, mx / mr); }
  else first = g;
  console.log(t, l.loss, Math.sqrt(n2), diff.toExponential(2));
}
