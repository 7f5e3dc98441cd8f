// The fused window walk (native/cuda/window_fused.cu, one launch per layer forward) against the
// per-application path (RT_CUDA_WINDOW=all against 0), on the GPU, in one process: the walk runs the same
// device functions on the same rows, so forward outputs, input gradients and every parameter gradient (the
// backward reads the walk's caches) must agree bit for bit in bf16 and to 1e-5 in fp32 (below), with and without dropout,
// with the activations kept (training) or one reused cache (inference, `grad: false`).
//
//   node bench/cuda/check-window.mjs [--quick]   (--quick: two small cases, for compute-sanitizer)
//
// Prints one line per case and `check-window: N passed, N failed`; exit status 1 on any failure.
import { realisticParams, rng } from '../lib/random.mjs';

process.env.RT_DEVICE = 'cuda';
const { RecurrentLayer } = await import('../../dist/model/layer.js');
const { Tensor } = await import('../../dist/tensor.js');

const uniform = (r, n, lo, hi) => Float32Array.from({ length: n }, () => lo + (hi - lo) * r());
const cases = [
  { d: 96, heads: 6, window: 32, N: 300, B: 5, variant: 'accumulate', activation: 'relu', dropout: 0.05 },
  { d: 96, heads: 6, window: 32, N: 300, B: 5, variant: 'accumulate', activation: 'relu', dropout: 0 },
  { d: 96, heads: 6, window: 32, N: 20, B: 3, variant: 'accumulate', activation: 'relu', dropout: 0.05 },
  { d: 64, heads: 4, window: 16, N: 77, B: 4, variant: 'forget', activation: 'gelu', dropout: 0.1 },
  { d: 32, heads: 4, window: 3, N: 11, B: 2, variant: 'accumulate', activation: 'gelu', dropout: 0, layers: 2, bias: true },
  { d: 128, heads: 4, window: 32, N: 100, B: 3, variant: 'forget', activation: 'gelu', dropout: 0.1 },
  { d: 32, heads: 2, window: 1, N: 9, B: 2, variant: 'accumulate', activation: 'relu', dropout: 0.1 },
];

// Elements that differ in any bit, and max |a - b| / max |b|.
function same(a, b) {
  let diff = 0;
  let worst = 0;
  let scale = 1e-30;
  for (let i = 0; i < a.length; i++) {
    scale = Math.max(scale, Math.abs(b[i]));
    if (Object.is(a[i], b[i])) continue;
    diff++;
    worst = Math.max(worst, Number.isNaN(a[i] - b[i]) ? Infinity : Math.abs(a[i] - b[i]));
  }
  return { diff, rel: worst / scale };
}

async function run(cfg, precision, walk, grad, x, R, params) {
  process.env.RT_CUDA_WINDOW = walk ? 'all' : '0';
  const layer = new RecurrentLayer({ ...cfg, device: 'cuda', precision, seed: 7 });
  layer.importParameters(params);
  const out = {};
  const y = await layer.forward(x, { training: cfg.dropout > 0, seed: 99, grad });
  out.y = y.toArray();
  if (grad) {
    const dx = await layer.backward(R);
    out.dx = dx.toArray();
    for (const [name, g] of Object.entries(layer.exportGradients())) out[name] = g;
    dx.dispose();
  }
  y.dispose();
  layer.dispose();
  return out;
}

let passed = 0;
let failed = 0;
const quick = process.argv.includes('--quick');
for (const [i, c] of cases.entries()) {
  if (quick && i !== 2 && i !== 4) continue;
  const cfg = { layers: 1, bias: false, ...c };
  const { B, N } = cfg;
  delete cfg.B;
  delete cfg.N;
  const r = rng(500 + i);
  const probe = new RecurrentLayer({ ...cfg, device: 'cpu' });
  const params = realisticParams(probe.parameters(), r);
  probe.dispose();
  const x = Tensor.fromArray(uniform(r, B * N * cfg.d, -1, 1), [B, N, cfg.d]);
  const R = Tensor.fromArray(uniform(r, B * N * cfg.d, -1, 1), [B, N, cfg.d]);
  for (const precision of ['bf16', 'fp32']) {
    for (const grad of [true, false]) {
      const a = await run(cfg, precision, true, grad, x, R, params);
      const b = await run(cfg, precision, false, grad, x, R, params);
      const diffs = Object.keys(b).map((k) => [k, same(a[k], b[k])]).filter(([, s]) => s.diff > 0);
      // fp32: inlined into another kernel, a device function's a * b + c may be contracted into an FMA
      // differently, so the last bit may differ; far below check.mjs's 1e-4 against the CPU.
      const bad = diffs.filter(([k, s]) => precision === 'bf16' || s.rel > 1e-5);
      const ok = bad.length === 0 && Object.keys(a).length === Object.keys(b).length;
      ok ? passed++ : failed++;
      const label = `${cfg.variant} d=${cfg.d} H=${cfg.heads} w=${cfg.window} N=${N} B=${B} L=${cfg.layers} ${cfg.activation} p=${cfg.dropout}`;
      console.log(`${ok ? 'ok  ' : 'FAIL'} ${precision} ${grad ? 'train' : 'infer'} ${label.padEnd(64)} ${Object.keys(b).length} tensors` +
        (diffs.length === 0 ? ' identical' : ` differ: ${diffs.map(([k, s]) => `${k} (${s.diff}, max-rel ${s.rel.toExponential(1)})`).join(', ')}`));
    }
  }
  x.dispose();
  R.dispose();
}
console.log(`check-window: ${passed} passed, ${failed} failed`);
process.exit(failed ? 1 : 0);
