// Multi-GPU training (issue 9) on the GPU machine, in stages that run as far as the GPUs allow:
//   nccl1    (1 GPU)  the real NCCL with one rank: version, a 128-byte unique id, init, all-reduce-mean of
//                     known tensors (device and host, packed into small buckets and one larger than a
//                     bucket) -> identical values; abort() then a refused call; destroy().
//   launch1  (1 GPU)  `rt train --gpus 1 --device cuda` against plain `rt train --device cuda`: the same losses,
//                     within the spread of two plain runs (the CUDA embedding gradient uses atomics).
//   ncclN    (N >= 2) N worker processes through launch(): all-reduce-mean of rank-dependent tensors ->
//                     the exact mean on every rank; bus bandwidth of a 256 MB all-reduce.
//   curve    (N >= 2) fp32 loss curve of 1 GPU with batch B against N GPUs with B (B/N each): max
//                     difference; throughput (tokens/s, median of the step events) and the scaling ratio.
//
//   RT_CUDA_ADDON=/tmp/rt.node node bench/cuda/check-dist.mjs [--out FILE.jsonl] [--gpus N] [--steps 200]
// Prints JSON lines (and appends them to --out), then a table; exits 1 when a check fails, 2 without a GPU.
import { spawnSync } from 'node:child_process';
import { appendFileSync, mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';

const ROOT = join(dirname(fileURLToPath(import.meta.url)), '..', '..');
const RT = join(ROOT, 'dist', 'cli', 'rt.js');
const { loadNative, cudaStatus } = await import('../../dist/native.js');

// ---- worker mode (started by launch() in the ncclN stage) ----
if (process.argv[2] === '--worker') {
  const { initProcessGroup } = await import('../../dist/distributed/process-group.js');
  const addon = loadNative('cuda');
  const pg = await initProcessGroup({ backend: 'nccl', timeoutMs: 60_000 });
  const r = pg.rank, W = pg.worldSize;
  const sizes = [1, 3, 1000, 4096, 1 << 20, 7 << 20];  // the last two over a 4 MiB bucket
  const out = { rank: r, worldSize: W, exact: true, maxErr: 0 };
  const fake = sizes.map((n, i) => {
    const data = new Float32Array(n);
    for (let k = 0; k < n; k++) data[k] = (r + 1) * (i + 1) + (k % 17);  // sums are exact in fp32
    const host = new addon.TensorHandle('float32', [n], data);
    const dev = host.to('cuda');
    host.free();
    return { name: `t${i}`, grad: { handle: () => dev, size: n }, dev };
  });
  await pg.allReduceMean(fake.map((f) => ({ name: f.name, shape: [f.grad.size], value: null, grad: f.grad })), [r]);
  fake.forEach((f, i) => {
    const got = f.dev.read();
    const meanRank = (W + 1) / 2;
    for (let k = 0; k < got.length; k++) {
      const want = meanRank * (i + 1) + (k % 17);
      const err = Math.abs(got[k] - want);
      if (err > 0) out.exact = false;
      out.maxErr = Math.max(out.maxErr, err);
    }
  });
  // Bus bandwidth of one 256 MB all-reduce (NCCL's busBw = algBw * 2 (W - 1) / W), median of 5.
  const big = new addon.TensorHandle('float32', [64 << 20]).to('cuda');
  const p = [{ name: 'big', shape: [64 << 20], value: null, grad: { handle: () => big, size: 64 << 20 } }];
  const times = [];
  for (let i = 0; i < 6; i++) {
    const t0 = performance.now();
    await pg.allReduceMean(p, [0]);
    times.push((performance.now() - t0) / 1000);
  }
  const t = times.slice(1).sort((a, b) => a - b)[2];
  out.allReduce256MB_s = t;
  out.busGBps = ((256e6 / t) * 2 * (W - 1)) / W / 1e9;
  process.stdout.write('RESULT ' + JSON.stringify(out) + '\n');
  pg.destroy();
  process.exit(0);
}

const { values: args } = parseArgs({ options: { out: { type: 'string' }, gpus: { type: 'string' }, steps: { type: 'string', default: '200' } } });
const results = [];
let failed = false;
function report(o) {
  results.push(o);
  if (o.ok === false) failed = true;
  const line = JSON.stringify({ bench: 'check-dist', date: new Date().toISOString(), ...o });
  console.log(line);
  if (args.out) appendFileSync(args.out, line + '\n');
}

const status = cudaStatus();
console.log(`cuda: ${JSON.stringify(status)}`);
if (!status.available) process.exit(2);
const smi = spawnSync('nvidia-smi', ['--query-gpu=name', '--format=csv,noheader'], { encoding: 'utf8' });
const gpus = Number(args.gpus ?? ((smi.stdout || '').trim().split('\n').filter(Boolean).length || 1));
console.log(`gpus: ${gpus}; NCCL_NVLS_ENABLE=${process.env.NCCL_NVLS_ENABLE ?? '(unset: launch() sets 0)'}`);

// ---- nccl1 ----
try {
  const addon = loadNative('cuda');
  const version = addon.ncclVersion();
  const id = addon.ncclUniqueId();
  const comm = new addon.CommHandle(id, 1, 0, 30_000);
  await comm.init();
  const sizes = [5, 1, 300, 2048, 70_000];
  const tensors = sizes.map((n, i) => {
    const data = Float32Array.from({ length: n }, (_, k) => Math.fround(Math.sin(k + i) * 3));
    const h = new addon.TensorHandle('float32', [n], data);
    return { want: data, t: i === 1 ? h : h.to('cuda') };  // one stays on the host: staged through the GPU
  });
  await comm.allReduceMean(tensors.map((x) => x.t), 4096);  // small buckets: packing, and one oversized
  const identical = tensors.every(({ want, t }) => t.read().every((v, k) => Object.is(v, want[k])));
  comm.abort();
  let refused = '';
  try {
    await comm.allReduceMean([tensors[0].t]);
  } catch (e) {
    refused = e.message;
  }
  report({ stage: 'nccl1', ok: id.length === 128 && identical && /aborted|not ready/.test(refused), version, idBytes: id.length, identical, afterAbort: refused });
} catch (e) {
  report({ stage: 'nccl1', ok: false, error: e.message });
}

// ---- launch1 and curve: rt train runs ----
const dir = mkdtempSync(join(tmpdir(), 'rt-check-dist-'));
function train(name, extra) {
  const base = ['train', '--json', '--device', 'cuda', '--precision', 'fp32', '--task', 'copy', '--noise', '256', '--M', '16', '--d', '96', '--heads', '6', '--window', '32',
    '--no-curriculum', '--batch', '32', '--steps', args.steps, '--eval-every', '50', '--seed', '1', '--out', join(dir, name)];
  const t0 = performance.now();
  const r = spawnSync(process.execPath, [RT, ...base, ...extra], { encoding: 'utf8', timeout: 580_000, env: { ...process.env, RT_DIST_TIMEOUT_MS: '120000' } });
  const events = r.stdout.split('\n').filter((l) => l.startsWith('{')).map((l) => JSON.parse(l));
  const steps = events.filter((e) => e.type === 'step');
  const tps = steps.slice(5).map((e) => e.tokensPerSec).sort((a, b) => a - b);
  return { code: r.status, stderr: r.stderr.slice(-2000), losses: steps.map((e) => e.loss), tokensPerSec: tps[tps.length >> 1] ?? 0, seconds: (performance.now() - t0) / 1000 };
}
const maxDiff = (a, b) => a.reduce((m, x, i) => Math.max(m, Math.abs(x - (b[i] ?? NaN))), 0);

const one = train('g0', []);
// Two plain runs first: on CUDA the token-embedding gradient is summed with atomics (reproducible to
// rounding, not to the bit), and over many steps that alone can move the loss curve. --gpus 1 must stay
// within that run-to-run spread (or 1e-5 when the plain runs agree exactly). Seen on 2026-12-03 without
// this baseline: --gpus 1 differed from one plain run by up to 2.1e-2.
const again = train('g0b', []);
const g1 = train('g1', ['--gpus', '1']);
{
  const noise = maxDiff(one.losses, again.losses);
  const d = maxDiff(one.losses, g1.losses);
  const ok = one.code === 0 && again.code === 0 && g1.code === 0 && one.losses.length === Number(args.steps) && d <= Math.max(1e-5, 2 * noise);
  report({ stage: 'launch1', ok, maxLossDiff: d, plainRunToRun: noise, plainCode: one.code, launchedCode: g1.code, stderr: g1.code ? g1.stderr : undefined });
}

// ---- ncclN and curve: only with several GPUs ----
for (const n of [2, 4, 8].filter((k) => k <= gpus)) {
  const { launch } = await import('../../dist/distributed/launcher.js');
  let text = '';
  const res = await launch({ gpus: n, script: fileURLToPath(import.meta.url), args: ['--worker'], stdio: 'pipe', timeoutMs: 120_000, onSpawn: (_r, c) => {
    c.stdout.on('data', (d) => (text += d));
    c.stderr.on('data', (d) => process.stderr.write(d));
  } });
  const rs = text.split('\n').filter((l) => l.startsWith('RESULT ')).map((l) => JSON.parse(l.slice(7)));
  report({ stage: `nccl${n}`, ok: res.code === 0 && rs.length === n && rs.every((x) => x.exact), launch: res.message ?? 'ok', ranks: rs });

  const multi = train(`g${n}`, ['--gpus', String(n)]);
  const d = maxDiff(one.losses, multi.losses);
  report({
    stage: `curve${n}`,
    // fp32 with the same data: only the order of the gradient sums differs, so the curves stay within
    // rounding for many steps (drift grows slowly; 1e-3 over 200 steps is generous).
    ok: multi.code === 0 && multi.losses.length === one.losses.length && d < 1e-3,
    maxLossDiff: d,
    lossAtEnd: { gpus1: one.losses.at(-1), [`gpus${n}`]: multi.losses.at(-1) },
    tokensPerSec: { gpus1: Math.round(one.tokensPerSec), [`gpus${n}`]: Math.round(multi.tokensPerSec) },
    scaling: multi.tokensPerSec / one.tokensPerSec,
    idealScaling: n,
    stderr: multi.code ? multi.stderr : undefined,
  });
}
if (gpus < 2) report({ stage: 'multi-gpu', ok: true, skipped: `1 GPU here: nccl2/curve2 (and 4, 8) run on nvidia-h200-x2/x4 with the same command` });

console.log('\nstage        ok     detail');
for (const r of results) console.log(`${r.stage.padEnd(12)} ${String(r.ok).padEnd(6)} ${r.error ?? r.skipped ?? (r.maxLossDiff !== undefined ? `max loss diff ${r.maxLossDiff.toExponential(2)}${r.scaling ? `, scaling ${r.scaling.toFixed(2)}x of ${r.idealScaling}` : ''}` : r.version ? `NCCL ${r.version}` : r.launch ?? '')}`);
process.exit(failed ? 1 : 0);
