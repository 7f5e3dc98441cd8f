// CUDA graphs (native/layer/recurrence.cc): the same training steps and evaluations run with graphs
// (RT_CUDA_GRAPH=1) and without (RT_CUDA_GRAPH=0), each in its own process, must give the same bits: every loss, every
// parameter gradient of every step, the weights after every AdamW step (so each replay must read the weights,
// alpha and dropout seed of its own step), and evaluate()'s losses. A step's shape is recorded at its second
// call and replayed from the third; the cases switch shapes and come back, so that a shape is recorded twice
// (after its graph was dropped for two others) and replayed after another shape's recording.
//
//   node bench/cuda/check-graph.mjs [--precision fp32,bf16] [--out FILE.jsonl]
//   (internally: node bench/cuda/check-graph.mjs --child FILE.json, once per mode)
//
// RT_CUDA_GRAPH_LOG=1 in the graph child's environment prints a line per recorded graph: the table shows how
// many graphs each run recorded, so a run that never used one cannot pass for a check.
//
// The token embedding's gradient was summed with atomics until session 11 (large vocabularies still are:
// cuda/embedding.cu), so its bits varied from run to run with or without graphs (the first call of this
// check showed it): the embeddings (outside the layer stack, never in a graph) are left out of the optimizer
// and of the comparison, so that every other tensor can be compared bit for bit. A second run without graphs
// shows that this baseline is itself deterministic.
import { spawnSync } from 'node:child_process';
import { appendFileSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';

import { realisticParams, rng } from '../lib/random.mjs';

const { values: args } = parseArgs({
  options: { precision: { type: 'string', default: 'fp32,bf16' }, child: { type: 'string' }, out: { type: 'string' } },
});

const CASES = [
  { name: 'copy accumulate relu drop', cfg: { vocabSize: 16, d: 96, heads: 6, window: 32, variant: 'accumulate', activation: 'relu', head: { copy: 16 }, maxLen: 400, dropout: 0.1 }, B: 4, Ns: [300, 300, 300, 200, 200, 300, 300, 100, 100, 300] },
  { name: 'lm forget gelu drop', cfg: { vocabSize: 65, d: 64, heads: 4, window: 8, variant: 'forget', activation: 'gelu', maxLen: 64, dropout: 0.1 }, B: 3, Ns: [45, 45, 45, 45, 30, 30, 45] },
  { name: 'lm plain w=0 2 layers bias', cfg: { vocabSize: 50, d: 32, heads: 2, window: 0, layers: 2, bias: true, maxLen: 40, dropout: 0.1 }, B: 2, Ns: [33, 33, 33, 33] },
  // Unfused forget with register LayerNorm kernels (d = 256): where RT_CUDA_LN_BACK_GLUE and RT_CUDA_LN_PARTS act,
  // without dropout (dm's bf16 copy handed from the scatter to the product) and with.
  { name: 'lm forget gelu d256 (unfused)', cfg: { vocabSize: 65, d: 256, heads: 4, window: 8, variant: 'forget', activation: 'gelu', maxLen: 64 }, B: 3, Ns: [45, 45, 45, 30, 30, 45] },
  { name: 'lm forget gelu d256 (unfused) drop', cfg: { vocabSize: 65, d: 256, heads: 4, window: 8, variant: 'forget', activation: 'gelu', maxLen: 64, dropout: 0.1 }, B: 3, Ns: [45, 45, 30, 45] },
  { name: 'classify accumulate gelu d48 (unfused) drop', cfg: { vocabSize: 256, d: 48, heads: 3, window: 16, variant: 'accumulate', head: { classify: 10 }, maxLen: 100, dropout: 0.1 }, B: 5, Ns: [100, 100, 100, 100] },
];

const b64 = (a) => Buffer.from(a.buffer, a.byteOffset, a.byteLength).toString('base64');

// RT_CHECK_DEVICE=cpu: a dry run of this script without a GPU (no graphs there: it reports 0 recorded).
const device = process.env.RT_CHECK_DEVICE ?? 'cuda';

async function child(out) {
  process.env.RT_DEVICE = device;
  const { RecurrentTransformer } = await import('../../dist/model/transformer.js');
  const { AdamW } = await import('../../dist/optim/adamw.js');
  const { Tensor } = await import('../../dist/tensor.js');
  const results = {};
  for (const precision of args.precision.split(',')) {
    for (const c of CASES) {
      const r = rng(c.name.length * 131 + (precision === 'fp32' ? 1 : 2));
      const model = new RecurrentTransformer({ ...c.cfg, seed: 3, device, ...(device === 'cuda' ? { precision } : {}) });
      model.importParameters(realisticParams(model.parameters(), r));
      const keep = model.parameters().map((p) => !/^transformer\.w[tp]e\./.test(p.name));
      const opt = new AdamW(model.parameters().filter((_, i) => keep[i]), model.decayMask().filter((_, i) => keep[i]), { lr: 1e-3, maxGradNorm: 1, weightDecay: 0.1 });
      const names = model.parameters().filter((_, i) => keep[i]).map((p) => p.name);
      const V = c.cfg.vocabSize;
      const classes = c.cfg.head?.classify ?? V;
      const rec = [];
      for (let s = 0; s < c.Ns.length; s++) {
        const N = c.Ns[s];
        const P = model.scoredPositions(N);
        const tokens = Tensor.fromArray(Int32Array.from({ length: c.B * N }, () => Math.floor(r() * V)), [c.B, N], 'int32');
        const targets = Tensor.fromArray(Int32Array.from({ length: c.B * P }, () => Math.floor(r() * classes)), [c.B, P], 'int32');
        model.zeroGrad();
        const l = await model.lossAndGrad(tokens, targets, { training: true, seed: 100 + s });
        const grads = model.parameters().filter((_, i) => keep[i]).map((p) => b64(p.grad.toArray()));
        await opt.step();
        const e = await model.evaluate(tokens, targets);
        rec.push({ N, loss: l.loss, correct: l.correct, grads, evalLoss: e.loss });
        tokens.dispose();
        targets.dispose();
      }
      const weights = Object.entries(model.exportParameters()).filter(([k]) => names.includes(k)).map(([, v]) => b64(v));
      results[`${precision} ${c.name}`] = { rec, weights, names };
      model.dispose();
    }
  }
  writeFileSync(out, JSON.stringify(results));
}

if (args.child) {
  await child(args.child);
} else {
  const here = fileURLToPath(import.meta.url);
  const files = { off: join(tmpdir(), 'rt-graph-off.json'), on: join(tmpdir(), 'rt-graph-on.json'), off2: join(tmpdir(), 'rt-graph-off2.json') };
  const logs = {};
  for (const [mode, file] of Object.entries(files)) {
    const env = { ...process.env, RT_CUDA_GRAPH: mode === 'on' ? '1' : '0', RT_CUDA_GRAPH_LOG: '1' };
    const argv = [here, '--child', file, '--precision', args.precision];
    const r = spawnSync(process.execPath, argv, { env, encoding: 'utf8', maxBuffer: 1 << 26 });
    if (r.status !== 0) {
      console.log(`check-graph: the child with graphs ${mode} failed (status ${r.status})\n${r.stdout}${r.stderr}`);
      process.exit(1);
    }
    logs[mode] = r.stderr;
  }
  const off = JSON.parse(readFileSync(files.off, 'utf8'));
  const on = JSON.parse(readFileSync(files.on, 'utf8'));
  const off2 = JSON.parse(readFileSync(files.off2, 'utf8'));
  let passed = 0, failed = 0;
  for (const [label, other] of [['graphs', on], ['again without', off2]]) {
  for (const name of Object.keys(off)) {
    const a = off[name], b = other[name];
    const diffs = [];
    a.rec.forEach((s, i) => {
      const t = b.rec[i];
      if (s.loss !== t.loss) diffs.push(`step ${i} loss ${s.loss} / ${t.loss}`);
      if (s.correct !== t.correct) diffs.push(`step ${i} hits`);
      if (s.evalLoss !== t.evalLoss) diffs.push(`step ${i} eval ${s.evalLoss} / ${t.evalLoss}`);
      const g = a.names.filter((_, k) => s.grads[k] !== t.grads[k]);
      if (g.length) diffs.push(`step ${i} grads of ${g.join(', ')}`);
    });
    const w = a.weights.filter((x, k) => x !== b.weights[k]).length;
    if (w) diffs.push(`${w} final weights`);
    const ok = diffs.length === 0;
    ok ? passed++ : failed++;
    const line = `${ok ? 'ok  ' : 'FAIL'} ${label.padEnd(14)} ${name.padEnd(50)} ${a.rec.length} steps ${ok ? 'identical' : diffs.slice(0, 3).join('; ')}`;
    console.log(line);
    if (args.out) appendFileSync(args.out, JSON.stringify({ check: 'graph', against: label, name, ok, diffs }) + '\n');
  }
  }
  const recorded = (logs.on.match(/CUDA graph recorded/g) ?? []).length;
  const recordedOff = (logs.off.match(/CUDA graph recorded/g) ?? []).length + (logs.off2.match(/CUDA graph recorded/g) ?? []).length;
  console.log(`check-graph: ${passed} passed, ${failed} failed; graphs recorded: ${recorded} with graphs on, ${recordedOff} off`);
  if (failed || recorded === 0 || recordedOff !== 0) process.exitCode = 1;
}
