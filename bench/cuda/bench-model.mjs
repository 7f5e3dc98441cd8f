// A whole train step on the GPU (model.lossAndGrad + AdamW.step: embedding, the layer stack forward and
// backward, head + cross-entropy, clipping and the fused optimizer), ours against the PyTorch peer of the
// same model on the same GPU (bench/peers/torch_model_cuda.py: eager fp32, bf16 autocast, bf16 + flash
// attention, torch.compile), run after ours, never at the same time. The two configs.
//
//   node bench/cuda/bench-model.mjs [--configs copy,char] [--reps 10] [--no-torch] [--torch-modes ...] [--out FILE.jsonl]
//
// Wall time per step, median of --reps after 2 warm-ups, random tokens already made. The optimizer step is
// taken as the trainer takes it (configs.mjs optimizerSteps: queued, its norm read after the next step's loss;
// RT_BENCH_WAIT_STEP=1 waits), so a step's time runs to the next step's start. FLOPs: the layer stack as
// bench/lib/flops.mjs counts it (the peer uses the same).
import { execFileSync } from 'node:child_process';
import { appendFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';

import { layerFlops } from '../lib/flops.mjs';
import { CONFIGS, optimizerSteps, randomBatch } from './configs.mjs';
import { median } from '../lib/stats.mjs';
import { printTable } from '../lib/table.mjs';

process.env.RT_DEVICE ??= 'cuda';
const { RecurrentTransformer } = await import('../../dist/model/transformer.js');
const { AdamW } = await import('../../dist/optim/adamw.js');
const { Tensor } = await import('../../dist/tensor.js');

const here = dirname(fileURLToPath(import.meta.url));
const { values: args } = parseArgs({
  options: {
    configs: { type: 'string', default: 'copy,char' },
    reps: { type: 'string', default: '10' },
    precisions: { type: 'string', default: 'bf16,fp32' },
    'no-torch': { type: 'boolean', default: false },
    'torch-modes': { type: 'string', default: 'fp32,bf16,bf16-sdpa,bf16-graph,compile' },
    out: { type: 'string' },
    python: { type: 'string', default: process.env.RT_TORCH_PYTHON ?? 'python3' },
  },
});
const reps = Number(args.reps);
const device = process.env.RT_BENCH_DEVICE ?? 'cuda';


const lines = [];
function emit(o) {
  lines.push(o);
  console.log(JSON.stringify(o));
  if (args.out) appendFileSync(args.out, JSON.stringify(o) + '\n');
}

async function timeOurs(name, c, precision) {
  const model = new RecurrentTransformer({ ...c.model, seed: 1, device, precision });
  const opt = new AdamW(model.parameters(), model.decayMask(), { lr: 5e-4, maxGradNorm: 1 });
  const { tokens, targets } = randomBatch(Tensor, c);
  const parts = { fwdbwd: [], opt: [] };
  const optimizer = optimizerSteps(opt);
  const step = async () => {
    const t0 = performance.now();
    model.zeroGrad();
    await model.lossAndGrad(tokens, targets, { seed: 1 });
    const t1 = performance.now();
    await optimizer.step();
    const t2 = performance.now();
    return [t2 - t0, t1 - t0, t2 - t1];
  };
  for (let i = 0; i < 2; i++) await step();
  const all = [];
  for (let i = 0; i < reps; i++) {
    const [t, a, b] = await step();
    all.push(t);
    parts.fwdbwd.push(a);
    parts.opt.push(b);
  }
  await optimizer.finish();
  tokens.dispose();
  targets.dispose();
  opt.dispose();
  model.dispose();
  const ms = median(all);
  const m = c.model;
  const flops = layerFlops({ B: c.B, N: c.N, d: m.d, heads: m.heads, w: m.window, layers: 1 });
  emit({
    impl: 'rt-cuda-model', config: name, precision, B: c.B, N: c.N, d: m.d, window: m.window, reps,
    ms_step: +ms.toFixed(3), ms_loss_and_grad: +median(parts.fwdbwd).toFixed(3), ms_optimizer: +median(parts.opt).toFixed(3),
    ms_all: all.map((t) => +t.toFixed(2)), tokens_per_s: Math.round((c.B * c.N) / (ms / 1e3)), gflops: +(flops / ms / 1e6).toFixed(1),
  });
}

function timeTorch(name) {
  const script = join(here, '..', 'peers', 'torch_model_cuda.py');
  let out;
  try {
    out = execFileSync(args.python, [script, '--configs', name, '--modes', args['torch-modes'], '--reps', String(reps)], {
      encoding: 'utf8', env: { ...process.env, PYTHONUNBUFFERED: '1' }, stdio: ['ignore', 'pipe', 'inherit'], timeout: 300_000,
    });
  } catch (e) {
    console.error(`torch peer failed for ${name}: ${e.message}`);
    out = e.stdout ?? '';
  }
  for (const line of String(out).split('\n')) if (line.startsWith('{')) emit(JSON.parse(line));
}

for (const name of args.configs.split(',')) {
  const c = CONFIGS[name];
  if (!c) throw new Error(`--configs: unknown config '${name}' (copy, char, tiny)`);
  for (const precision of args.precisions.split(',')) await timeOurs(name, c, precision);
  if (!args['no-torch']) timeTorch(name);
}

const rows = [];
for (const name of args.configs.split(',')) {
  const ours = lines.filter((l) => l.config === name && l.impl === 'rt-cuda-model');
  const torch = lines.filter((l) => l.config === name && l.impl === 'torch-cuda-model' && !l.error);
  for (const o of ours) rows.push([name, `ours ${o.precision}`, o.ms_step.toFixed(2), '', String(o.tokens_per_s), o.gflops.toFixed(0)]);
  for (const t of torch) {
    const o = ours.find((x) => x.precision === (t.mode === 'fp32' ? 'fp32' : 'bf16'));
    rows.push([name, `torch ${t.mode}`, t.ms_step.toFixed(2), o ? (t.ms_step / o.ms_step).toFixed(2) + 'x' : '', String(t.tokens_per_s), t.gflops.toFixed(0)]);
  }
}
printTable(['config', 'impl', 'ms/step', 'ours faster by', 'tokens/s', 'GFLOP/s'], rows);
console.log('(train step = lossAndGrad + AdamW step; speedup = torch ms / ours ms, fp32 against fp32, bf16 against the bf16 modes)');
