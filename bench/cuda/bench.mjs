// Forward + backward of one recurrent layer on the GPU, ours against the PyTorch peer on the same GPU
// (bench/peers/torch_layer_cuda.py, run as a child process after ours, never at the same time), for the
// issue's two configs. Prints JSON lines, then a table: ms per forward+backward, speedup, GFLOP/s.
//
//   node bench/cuda/bench.mjs [--configs copy,char] [--reps 10] [--no-torch] [--out FILE.jsonl]
//
// Timing: one forward (activations kept) then one backward with dy = R (the gradient of
// loss = sum(y * R), what the peer differentiates), inputs already on the GPU, median of --reps after two
// warm-ups. RT_CUDA_SYNC=1 (set here unless given) makes each call resolve after the GPU has finished (by
// default a layer call resolves once queued), so wall time is GPU time plus launch overhead per call.
// FLOPs as bench/lib/flops.mjs counts them.
import { execFileSync } from 'node:child_process';
import { appendFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';

import { layerFlops } from '../lib/flops.mjs';
import { printTable } from '../lib/table.mjs';

process.env.RT_DEVICE = 'cuda';
process.env.RT_CUDA_SYNC ??= '1';
const { RecurrentLayer } = await import('../../dist/model/layer.js');
const { Tensor } = await import('../../dist/tensor.js');

const here = dirname(fileURLToPath(import.meta.url));
const { values: args } = parseArgs({
  options: {
    configs: { type: 'string', default: 'copy,char' },
    reps: { type: 'string', default: '10' },
    'no-torch': { type: 'boolean', default: false },
    out: { type: 'string' },
    python: { type: 'string', default: process.env.RT_TORCH_PYTHON ?? 'python3' },
  },
});
const reps = Number(args.reps);

// The configs: the copy task (noise 4096 -> N = 16 + 4096 + 16) and tiny-Shakespeare chars.
const CONFIGS = {
  copy: { B: 64, N: 4128, d: 96, heads: 6, layers: 1, window: 32, variant: 'accumulate', activation: 'relu' },
  char: { B: 256, N: 256, d: 384, heads: 6, layers: 1, window: 16, variant: 'forget', activation: 'gelu' },
  tiny: { B: 2, N: 40, d: 32, heads: 4, layers: 1, window: 8, variant: 'forget', activation: 'gelu' },  // dry runs
};
// RT_BENCH_DEVICE=cpu times the CPU layer instead: a dry run of this script where there is no GPU.
const device = process.env.RT_BENCH_DEVICE ?? 'cuda';

const median = (a) => [...a].sort((x, y) => x - y)[Math.floor(a.length / 2)];
const lines = [];
function emit(o) {
  lines.push(o);
  console.log(JSON.stringify(o));
  if (args.out) appendFileSync(args.out, JSON.stringify(o) + '\n');
}

function randomTensor(n, shape, seed) {
  let s = seed >>> 0;
  const a = new Float32Array(n);
  for (let i = 0; i < n; i++) {
    s = (Math.imul(s, 1664525) + 1013904223) >>> 0;
    a[i] = s / 2 ** 31 - 1;
  }
  return Tensor.fromArray(a, shape);
}

async function timeOurs(name, c, precision) {
  const layer = new RecurrentLayer({
    d: c.d, heads: c.heads, layers: c.layers, window: c.window, variant: c.variant, activation: c.activation,
    seed: 1, device, precision,
  });
  const shape = [c.B, c.N, c.d];
  const hx = randomTensor(c.B * c.N * c.d, shape, 1);
  const hR = randomTensor(c.B * c.N * c.d, shape, 2);
  const x = hx.to(device);
  const R = hR.to(device);
  hx.dispose();
  hR.dispose();
  const step = async () => {
    const t0 = performance.now();
    const y = await layer.forward(x);
    const t1 = performance.now();
    const dx = await layer.backward(R);
    const t2 = performance.now();
    y.dispose();
    dx.dispose();
    return [t2 - t0, t1 - t0];
  };
  for (let i = 0; i < 2; i++) await step();
  const all = [];
  const fwd = [];
  for (let i = 0; i < reps; i++) {
    const [t, f] = await step();
    all.push(t);
    fwd.push(f);
  }
  let inference = [];
  for (let i = 0; i < Math.max(3, reps / 2); i++) {
    const t0 = performance.now();
    (await layer.forward(x, { grad: false })).dispose();
    inference.push(performance.now() - t0);
  }
  x.dispose();
  R.dispose();
  layer.dispose();
  const ms = median(all);
  const flops = layerFlops({ B: c.B, N: c.N, d: c.d, heads: c.heads, w: c.window, layers: c.layers });
  emit({
    impl: 'rt-cuda', config: name, precision, ...c, reps, ms_fwd_bwd: +ms.toFixed(3), ms_fwd: +median(fwd).toFixed(3),
    ms_fwd_nograd: +median(inference).toFixed(3), ms_all: all.map((t) => +t.toFixed(2)),
    gflops: +(flops / ms / 1e6).toFixed(1), tokens_per_s: Math.round((c.B * c.N) / (ms / 1e3)),
  });
}

function timeTorch(name, c) {
  const script = join(here, '..', 'peers', 'torch_layer_cuda.py');
  const argv = [script, '--d', c.d, '--heads', c.heads, '--window', c.window, '--batch', c.B, '--N', c.N, '--layers', c.layers,
    '--variant', c.variant, '--activation', c.activation, '--reps', reps, '--modes', 'fp32,bf16,bf16-sdpa'].map(String);
  let out;
  try {
    out = execFileSync(args.python, argv, { encoding: 'utf8', env: { ...process.env, PYTHONUNBUFFERED: '1' }, stdio: ['ignore', 'pipe', 'inherit'] });
  } catch (e) {
    console.error(`torch peer failed for ${name}: ${e.message}`);
    return;
  }
  for (const line of out.split('\n')) {
    if (!line.startsWith('{')) continue;
    emit({ ...JSON.parse(line), config: name });
  }
}

for (const name of args.configs.split(',')) {
  const c = CONFIGS[name];
  if (!c) throw new Error(`--configs: unknown config '${name}' (copy, char)`);
  for (const precision of ['bf16', 'fp32']) await timeOurs(name, c, precision);
  if (!args['no-torch']) timeTorch(name, c);
}

// The table: each of ours against each torch mode of the same config.
const rows = [];
for (const name of args.configs.split(',')) {
  const ours = lines.filter((l) => l.config === name && l.impl === 'rt-cuda');
  const torch = lines.filter((l) => l.config === name && l.impl === 'torch-cuda');
  for (const o of ours) {
    rows.push([name, `ours ${o.precision}`, o.ms_fwd_bwd.toFixed(2), '', o.gflops.toFixed(0)]);
  }
  for (const t of torch) {
    const best = ours.find((o) => o.precision === (t.mode === 'fp32' ? 'fp32' : 'bf16'));
    const speed = best ? (t.ms_fwd_bwd / best.ms_fwd_bwd).toFixed(2) + 'x' : '';
    rows.push([name, `torch ${t.mode}`, t.ms_fwd_bwd.toFixed(2), speed, t.gflops.toFixed(0)]);
  }
}
printTable(['config', 'impl', 'ms fwd+bwd', 'ours faster by', 'GFLOP/s'], rows);
console.log('(speedup = torch ms / ours ms, ours in the same precision: fp32 against fp32, bf16 against bf16 modes)');
