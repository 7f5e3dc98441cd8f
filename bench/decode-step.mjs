#!/usr/bin/env node
// The batched decoder step alone, as `rt serve` calls it: one token for each of S slots of a decoder
// made for 64 (the serve bench's model: d 128, heads 4, window 16, 1 layer, char vocabulary of 96), at
// S = 1, 8, 64. Each slot restarts after 49 tokens (the serve bench's 17 prompt + 32 generated), with the
// slots' positions staggered so that window edges fall on different steps, as under load.
//
// Beside each step time it prints the step's FLOPs (two applications of the block per layer, A and B, plus
// the head) and the time the addon's GEMM takes for the same products on their own (the sgemm floor), so
// that what the step spends outside the matrix products shows. One JSON line per S; --save appends them
// to bench/results/decode-step-<date>.jsonl.
//
//   node bench/decode-step.mjs [--S 1,8,64] [--ms 1500] [--rounds 3] [--save | --out FILE] [--label TEXT]
//
// --label tags every line (e.g. the commit measured), --out appends to FILE instead of the dated file.
import { appendFileSync, mkdirSync } from 'node:fs';
import { cpus, loadavg } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { median, round } from './lib/stats.mjs';

const here = dirname(fileURLToPath(import.meta.url));
const { values: f } = parseArgs({
  options: { S: { type: 'string' }, 'part-rows': { type: 'string' }, out: { type: 'string' }, label: { type: 'string' }, ms: { type: 'string' }, rounds: { type: 'string' }, save: { type: 'boolean' } },
});
const sizes = (f.S ?? '1,8,64').split(',').map(Number);
const msPerRound = Number(f.ms ?? 1500);
const rounds = Number(f.rounds ?? 3);
// --part-rows 8,16,0: RT_DECODE_PART_ROWS values compared in this one process (0: the built-in size),
// each measured in turn inside every round so that load from elsewhere falls on all alike.
const partRows = (f['part-rows'] ?? '0').split(',').map(Number);
const rt = await import(join(here, '..', 'dist', 'index.js'));

const cfg = { vocabSize: 96, d: 128, heads: 4, window: 16, layers: 1, maxLen: 512, seed: 1 };
const model = new rt.RecurrentTransformer(cfg);
const decoder = model.decoder(64);
const RESTART = 49;

/** Milliseconds per step at S slots over about `ms` ms (median of 20-step batches). */
async function stepMs(S, ms) {
  const slots = Int32Array.from({ length: S }, (_, i) => i);
  const tokens = new Int32Array(S);
  // Stagger: slot i starts at position i % RESTART.
  for (let i = 0; i < S; i++) decoder.reset(i);
  for (let k = 0; k < RESTART; k++) {
    const some = slots.filter((s) => s % RESTART > k);
    if (some.length) await decoder.stepSlots(some, new Int32Array(some.length));
  }
  const batches = [];
  const end = performance.now() + ms;
  while (performance.now() < end) {
    const t0 = performance.now();
    for (let k = 0; k < 20; k++) {
      for (let i = 0; i < S; i++) {
        if (decoder.positionOf(i) >= RESTART) decoder.reset(i);
        tokens[i] = (k * 7 + i) % cfg.vocabSize;
      }
      await decoder.stepSlots(slots, tokens);
    }
    batches.push((performance.now() - t0) / 20);
  }
  return median(batches);
}

const d = cfg.d;
/** [M, N, K] of every product of one step at S rows: c_attn, attn c_proj, c_fc, mlp c_proj twice, the head. */
const products = (S) => [
  ...Array(2).fill([[S, 3 * d, d], [S, d, d], [S, 4 * d, d], [S, d, 4 * d]]).flat(),
  [S, cfg.vocabSize, d],
];
const gemmMs = (S) => {
  let s = 0;
  for (const [M, N, K] of products(S)) s += Math.min(...[0, 1, 2].map(() => rt.benchSgemm(M, N, K, 2000)));
  return s * 1e3;
};
const flops = (S) => products(S).reduce((a, [M, N, K]) => a + 2 * M * N * K, 0);

const setPartRows = (p) => {
  if (p > 0) process.env.RT_DECODE_PART_ROWS = String(p);
  else delete process.env.RT_DECODE_PART_ROWS;
};
await stepMs(64, 300); // warm-up: the pool, the allocator's cache
const key = (S, p) => `${S}/${p}`;
const times = new Map();
for (let r = 0; r < rounds; r++) {
  for (const S of sizes) {
    for (const p of partRows) {
      setPartRows(p);
      const k = key(S, p);
      times.set(k, [...(times.get(k) ?? []), await stepMs(S, msPerRound)]);
    }
  }
}
setPartRows(0);
const out = [];
for (const S of sizes) for (const p of partRows) {
  const t = times.get(key(S, p));
  const g = gemmMs(S);
  out.push({
    bench: 'decode-step', ...(f.label ? { label: f.label } : {}), S, part_rows: p || 'default', step_ms: round(median(t), 4), step_ms_rounds: t.map((x) => round(x, 4)),
    us_per_row: round((median(t) * 1e3) / S, 2), mflop: round(flops(S) / 1e6, 2),
    gflops: round(flops(S) / (median(t) * 1e6), 1), gemm_alone_ms: round(g, 4),
    model: { d, heads: cfg.heads, window: cfg.window, layers: cfg.layers, vocab: cfg.vocabSize },
    threads: rt.nativeInfo().threads, gemm: rt.nativeInfo().gemm, cpus: cpus().length, loadavg_1m: round(loadavg()[0], 2),
  });
}
for (const o of out) {
  const base = out.find((b) => b.S === Math.min(...sizes) && b.part_rows === o.part_rows);
  o.time_ratio_vs_min = round(o.step_ms / base.step_ms, 2);
  const line = JSON.stringify(o);
  console.log(line);
  if (f.out) appendFileSync(f.out, line + '\n');
  else if (f.save) {
    mkdirSync(join(here, 'results'), { recursive: true });
    appendFileSync(join(here, 'results', `decode-step-${new Date().toISOString().slice(0, 10)}.jsonl`), line + '\n');
  }
}
model.dispose();
