// npm run bench:soak — a memory soak: trains a tiny copy-task model for many small steps (10,000 by
// default) through the public train() loop, with random window widths, dropout and a checkpoint every
// 1000 steps, and samples the process RSS, the V8 heap and the addon's allocation counter
// (nativeAllocatedBytes) every N steps, after a full collection. Prints one JSON line per sample, then a
// summary with the least-squares slope of each after the warm-up (bytes/step) and a verdict: no growth
// when the native slope is under --native-threshold (the counter is exact: any tensor kept per step
// shows), the V8 heap slope under --heap-threshold and the RSS slope under --rss-threshold (RSS moves by
// a few MB either way as the allocators keep and return pages, so its threshold is loose: a leak of
// 1 KB per step still crosses it). Exit status 1 on growth. --inject-leak keeps one 1 KB tensor per step
// alive, to check that the soak sees a leak. The summary is appended to bench/results/soak-<date>.jsonl.
//
// Flags: --steps 10000  --every 100  --warmup 0.2 (fraction of the steps, or a step count >= 1)
//        --native-threshold 1  --heap-threshold 128  --rss-threshold 1024  (bytes/step)
//        --no-save  --threads N  --inject-leak
import { appendFileSync, mkdirSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import * as v8 from 'node:v8';
import * as vm from 'node:vm';

const here = dirname(fileURLToPath(import.meta.url));
const { values: f } = parseArgs({
  options: {
    steps: { type: 'string' }, every: { type: 'string' }, warmup: { type: 'string' },
    'rss-threshold': { type: 'string' }, 'native-threshold': { type: 'string' }, 'heap-threshold': { type: 'string' },
    'no-save': { type: 'boolean' }, threads: { type: 'string' }, 'inject-leak': { type: 'boolean' },
  },
});
if (f.threads) process.env.RT_NUM_THREADS = f.threads;
const steps = Number(f.steps ?? 10_000);
const every = Number(f.every ?? 100);
const warmupArg = Number(f.warmup ?? 0.2);
const warmup = warmupArg < 1 ? Math.round(steps * warmupArg) : warmupArg;
const rssThreshold = Number(f['rss-threshold'] ?? 1024);
const nativeThreshold = Number(f['native-threshold'] ?? 1);
const heapThreshold = Number(f['heap-threshold'] ?? 128);
for (const [k, v] of Object.entries({ steps, every, warmup, rssThreshold, nativeThreshold, heapThreshold })) {
  if (!Number.isFinite(v) || v < 0) throw new Error(`soak: --${k} must be a non-negative number`);
}

// A real collection before each sample, so the slopes show what is kept, not what is pending.
v8.setFlagsFromString('--expose-gc');
const gc = vm.runInNewContext('gc');

const rt = await import(join(here, '..', 'dist', 'index.js'));
const { RecurrentTransformer, CopyTaskData, Tensor, train, nativeAllocatedBytes, nativeInfo } = rt;
const leaked = [];

const dir = mkdtempSync(join(tmpdir(), 'rt-soak-'));
const data = new CopyTaskData({ task: 'copy', noise: 8, M: 4, alphabet: 8 });
const config = { vocabSize: 8, d: 16, heads: 2, layers: 1, windowRange: [2, 6], variant: 'accumulate', dropout: 0.1, maxLen: data.maxSeqLen, head: { copy: 4 }, seed: 1 };
const model = new RecurrentTransformer(config);

const samples = [];
function sample(step) {
  gc();
  const m = process.memoryUsage();
  const s = { type: 'sample', step, rss: m.rss, heapUsed: m.heapUsed, external: m.external, native: nativeAllocatedBytes() };
  samples.push(s);
  console.log(JSON.stringify(s));
}

/** Least-squares slope of y against x. */
function slope(points) {
  const n = points.length;
  if (n < 2) return 0;
  let sx = 0, sy = 0;
  for (const [x, y] of points) { sx += x; sy += y; }
  const mx = sx / n, my = sy / n;
  let num = 0, den = 0;
  for (const [x, y] of points) { num += (x - mx) * (y - my); den += (x - mx) ** 2; }
  return den ? num / den : 0;
}

const t0 = performance.now();
sample(0);
let lastLoss = NaN;
const result = await train({
  model, data, steps, batchSize: 8, optimizer: { lr: 3e-3, maxGradNorm: 1 },
  curriculum: false, evalEvery: 1000, evalBatches: 1, seed: 3,
  checkpoint: { path: join(dir, 'soak.safetensors'), every: 1000 },
  onEvent: (e) => {
    if (e.type === 'step') {
      lastLoss = e.loss;
      if (f['inject-leak']) leaked.push(Tensor.zeros([256]));
      if (e.step % every === 0) sample(e.step);
    }
  },
});
const seconds = (performance.now() - t0) / 1000;
model.dispose();
rmSync(dir, { recursive: true, force: true });

const after = samples.filter((s) => s.step >= warmup);
const fit = (key) => slope(after.map((s) => [s.step, s[key]]));
const rssSlope = fit('rss');
const nativeSlope = fit('native');
const heapSlope = fit('heapUsed');
const growth = rssSlope > rssThreshold || nativeSlope > nativeThreshold || heapSlope > heapThreshold;
const summary = {
  type: 'summary', date: new Date().toISOString(), steps: result.step, seconds: Math.round(seconds * 10) / 10,
  stepsPerSec: Math.round(result.step / seconds), samples: samples.length, warmupSteps: warmup,
  rssSlope: Math.round(rssSlope * 100) / 100, nativeSlope: Math.round(nativeSlope * 100) / 100, heapSlope: Math.round(heapSlope * 100) / 100,
  rssFirst: after[0]?.rss, rssLast: after.at(-1)?.rss, nativeFirst: after[0]?.native, nativeLast: after.at(-1)?.native,
  nativeMax: Math.max(...after.map((s) => s.native)), thresholds: { rss: rssThreshold, native: nativeThreshold, heap: heapThreshold },
  injectedLeak: Boolean(f['inject-leak']),
  lastLoss, gemm: nativeInfo().gemm, threads: nativeInfo().threads, node: process.version,
  verdict: growth ? 'GROWTH' : 'no growth',
};
console.log(JSON.stringify(summary));
if (!f['no-save'] && !f['inject-leak']) {
  const out = join(here, 'results');
  mkdirSync(out, { recursive: true });
  appendFileSync(join(out, `soak-${summary.date.slice(0, 10)}.jsonl`), JSON.stringify(summary) + '\n');
}
process.exitCode = growth ? 1 : 0;
