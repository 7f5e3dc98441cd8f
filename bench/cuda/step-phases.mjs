// Where a train step's wall time goes between the native calls: wraps the addon's calls that
// model.lossAndGrad and AdamW.step make (embedding, the layer stack's forward and backward, head +
// cross-entropy, the optimizer) with wall-clock timers, runs the config's train steps, and prints the median
// ms per call and per step, and what is left between the calls (JavaScript, promise hops). Calls that leave
// their results on the GPU resolve once queued, so the head and AdamW (which wait) carry the GPU time of
// the calls before them; RT_CUDA_SYNC=1 gives each call its own.
//   node bench/cuda/step-phases.mjs [--config char|copy|tiny] [--reps 10] [--device cuda]
import { parseArgs } from 'node:util';

import { CONFIGS, optimizerSteps, randomBatch } from './configs.mjs';

const { loadNative } = await import('../../dist/native.js');
const { RecurrentTransformer } = await import('../../dist/model/transformer.js');
const { AdamW } = await import('../../dist/optim/adamw.js');
const { Tensor } = await import('../../dist/tensor.js');
const { values: args } = parseArgs({ options: { config: { type: 'string', default: 'char' }, reps: { type: 'string', default: '10' }, device: { type: 'string', default: 'cuda' } } });

const c = CONFIGS[args.config];
const addon = loadNative(args.device);
const times = new Map();
const wrap = (obj, name, label = name) => {
  const f = obj[name];
  obj[name] = async function (...a) {
    const t0 = performance.now();
    try { return await f.apply(this, a); } finally { (times.get(label) ?? times.set(label, []).get(label)).push(performance.now() - t0); }
  };
};
for (const k of Object.keys(addon)) if (typeof addon[k] === 'function' && /Forward|Backward|Xent|adam|Adam|step|Step/.test(k)) wrap(addon, k);
// (the class's own methods are read-only: a subclass times them)
const timed = (label, f) => async (...a) => {
  const t0 = performance.now();
  try { return await f(...a); } finally { (times.get(label) ?? times.set(label, []).get(label)).push(performance.now() - t0); }
};
const Base = addon.LayerHandle;
addon.LayerHandle = class extends Base {
  forward(...a) { return timed('layer.forward', (...b) => super.forward(...b))(...a); }
  backward(...a) { return timed('layer.backward', (...b) => super.backward(...b))(...a); }
};

const model = new RecurrentTransformer({ ...c.model, seed: 1, device: args.device, precision: 'bf16' });
const opt = new AdamW(model.parameters(), model.decayMask(), { lr: 5e-4, maxGradNorm: 1 });
const { tokens, targets } = randomBatch(Tensor, c);
const steps = [];
const optimizer = optimizerSteps(opt);
for (let i = 0; i < 2 + Number(args.reps); i++) {
  if (i === 2) times.clear();
  const t0 = performance.now();
  model.zeroGrad();
  await model.lossAndGrad(tokens, targets, { seed: 1 });
  await optimizer.step();
  if (i >= 2) steps.push(performance.now() - t0);
}
await optimizer.finish();
const med = (a) => [...a].sort((x, y) => x - y)[Math.floor(a.length / 2)];
const step = steps.reduce((a, b) => a + b, 0) / steps.length;  // mean, as the per-call sums
let inCalls = 0;
for (const [k, v] of times) {
  const per = v.reduce((a, b) => a + b, 0) / steps.length;
  inCalls += per;
  console.log(JSON.stringify({ config: args.config, call: k, calls_per_step: v.length / steps.length, ms_per_step: +per.toFixed(3), ms_median_call: +med(v).toFixed(3) }));
}
console.log(JSON.stringify({ config: args.config, ms_step: +step.toFixed(3), ms_in_native_calls: +inCalls.toFixed(3), ms_between_calls: +(step - inCalls).toFixed(3) }));
