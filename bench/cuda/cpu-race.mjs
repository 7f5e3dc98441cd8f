// Is the CPU layer deterministic? One layer config (default: the layer check's case that failed now and
// then on the GPU machine's 16-core CPU: accumulate, w 32, N 100, B 3, d 96, 6 heads, relu), the same
// weights and input, forward + backward --reps times; every run's y, dx and gradients compared bit for bit
// with the first. Prints how many runs differed and in which tensors.
//   node bench/cuda/cpu-race.mjs [--reps 200] [--variant accumulate] [--activation relu]
import { parseArgs } from 'node:util';

import { rng } from '../lib/random.mjs';

// On the GPU machine the CUDA build (RT_CUDA_ADDON) is the one addon, its CPU backend the one tested, as in
// check.mjs; without a GPU the CPU build serves.
process.env.RT_DEVICE ??= 'cuda';
const { RecurrentLayer } = await import('../../dist/model/layer.js');
const { Tensor } = await import('../../dist/tensor.js');
const { values: args } = parseArgs({ options: {
  reps: { type: 'string', default: '200' }, variant: { type: 'string', default: 'accumulate' },
  activation: { type: 'string', default: 'relu' }, window: { type: 'string', default: '32' },
  N: { type: 'string', default: '100' }, B: { type: 'string', default: '3' }, d: { type: 'string', default: '96' },
} });
const B = Number(args.B), N = Number(args.N), d = Number(args.d);
const r = rng(7);
const uniform = (n, lo, hi) => Float32Array.from({ length: n }, () => lo + (hi - lo) * r());
const cfg = { d, heads: 6, layers: 1, window: Number(args.window), variant: args.variant, activation: args.activation, seed: 7, device: 'cpu' };
const layer = new RecurrentLayer(cfg);
const params = {};
for (const p of layer.parameters()) {
  const n = p.value.size;
  if (p.name.endsWith('alpha')) params[p.name] = p.value.toArray();
  else if (/ln_\d\.weight$/.test(p.name)) params[p.name] = uniform(n, 0.8, 1.2);
  else params[p.name] = uniform(n, -1 / Math.sqrt(p.shape[1]), 1 / Math.sqrt(p.shape[1]));
}
layer.importParameters(params);
const x = Tensor.fromArray(uniform(B * N * d, -1, 1), [B, N, d]);
const R = Tensor.fromArray(uniform(B * N * d, -1, 1), [B, N, d]);
let first;
let bad = 0;
const where = {};
for (let i = 0; i < Number(args.reps); i++) {
  layer.zeroGrad?.();
  const y = await layer.forward(x, { training: false, seed: 99 });
  const dx = await layer.backward(R);
  const got = { y: y.toArray(), dx: dx.toArray(), ...layer.exportGradients() };
  y.dispose();
  dx.dispose();
  if (!first) { first = got; continue; }
  let differs = false;
  for (const [k, v] of Object.entries(got)) {
    const f = first[k];
    let n = 0;
    for (let j = 0; j < v.length; j++) if (v[j] !== f[j] && !(Number.isNaN(v[j]) && Number.isNaN(f[j]))) n++;
    if (n) { differs = true; where[k] = (where[k] ?? 0) + 1; }
  }
  if (differs) bad++;
}
console.log(JSON.stringify({ check: 'cpu_determinism', cfg: { ...cfg, B, N }, threads: process.env.RT_NUM_THREADS ?? 'all',
  coretype: process.env.OPENBLAS_CORETYPE ?? 'auto', reps: Number(args.reps), runs_differing: bad, tensors: where }));
