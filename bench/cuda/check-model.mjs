// The whole CUDA model against the CPU model: loss, hits, every parameter gradient after lossAndGrad,
// every weight after an AdamW step (weight decay and clipping on), evaluate() and logits(), on random
// weights, tokens and targets, for the three heads (lm, copy, classify), both variants, positions on and
// off, dropout on and off (the masks are the same on both devices), ignored targets; and, for the lm
// heads, every step's logits of the incremental decoder on the device against the CPU's.
//
//   RT_CUDA_POISON=1 node bench/cuda/check-model.mjs [--precision fp32,bf16] [--out FILE.jsonl]
//
// RT_CUDA_POISON=1 makes the CUDA allocator fill every block it hands out with NaN bytes, so an output
// that a kernel forgets to write, or a buffer read before it is written, shows up as NaN here.
// Errors per tensor: max-rel (fp32, limit 1e-4) and norm-rel (bf16, limit 2e-2) as in check.mjs. bf16 relu
// cases are judged on the loss (see check.mjs for why their gradients differ by a few percent).
import { appendFileSync } from 'node:fs';
import { parseArgs } from 'node:util';

import { realisticParams, rng } from '../lib/random.mjs';

process.env.RT_DEVICE = 'cuda';
const { RecurrentTransformer } = await import('../../dist/model/transformer.js');
const { AdamW } = await import('../../dist/optim/adamw.js');
const { Tensor } = await import('../../dist/tensor.js');
const { cudaStatus } = await import('../../dist/native.js');

// --cases SUBSTR runs only the cases whose name contains SUBSTR (under compute-sanitizer, say).
const { values: args } = parseArgs({ options: { precision: { type: 'string', default: 'fp32,bf16' }, cases: { type: 'string', default: '' }, out: { type: 'string' } } });
const LIMIT = { fp32: 1e-4, bf16: 2e-2 };
const target = process.env.RT_CHECK_DEVICE ?? 'cuda';  // 'cpu': a dry run without a GPU
const status = cudaStatus();
console.log(`cuda: ${JSON.stringify(status)}`);
if (target === 'cuda' && !status.available) process.exit(2);


const CASES = [
  { name: 'lm forget gelu pos', cfg: { vocabSize: 65, d: 64, heads: 4, window: 8, variant: 'forget', activation: 'gelu', maxLen: 64 }, B: 3, N: 45 },
  { name: 'lm forget gelu pos drop', cfg: { vocabSize: 65, d: 64, heads: 4, window: 8, variant: 'forget', activation: 'gelu', maxLen: 64, dropout: 0.1 }, B: 3, N: 45, training: true },
  { name: 'lm plain w=0 2 layers bias', cfg: { vocabSize: 50, d: 32, heads: 2, window: 0, layers: 2, bias: true, maxLen: 40 }, B: 2, N: 33 },
  { name: 'copy accumulate relu nopos', cfg: { vocabSize: 16, d: 96, heads: 6, window: 32, variant: 'accumulate', activation: 'relu', positional: false, head: { copy: 16 }, maxLen: 400 }, B: 4, N: 300 },
  { name: 'copy accumulate gelu nopos drop', cfg: { vocabSize: 16, d: 96, heads: 6, window: 32, variant: 'accumulate', activation: 'gelu', positional: false, head: { copy: 16 }, maxLen: 400, dropout: 0.05 }, B: 4, N: 300, training: true },
  // Unfused (d = 256 has no fused chains): the LayerNorm paths behind RT_CUDA_LN_BACK_GLUE and RT_CUDA_LN_PARTS.
  { name: 'lm forget unfused d=256', cfg: { vocabSize: 65, d: 256, heads: 4, window: 8, variant: 'forget', activation: 'gelu', maxLen: 64 }, B: 3, N: 45 },
  { name: 'classify forget gelu', cfg: { vocabSize: 256, d: 48, heads: 3, window: 16, head: { classify: 10 }, maxLen: 100 }, B: 5, N: 100 },
  { name: 'lm ignored targets, big vocab', cfg: { vocabSize: 3000, d: 64, heads: 4, window: 4, maxLen: 32 }, B: 2, N: 19, ignore: true },
];

function errors(a, b) {
  let maxAbs = 0, maxRef = 0, dn = 0, rn = 0, nan = false;
  for (let i = 0; i < a.length; i++) {
    if (!Number.isFinite(b[i])) nan = true;
    const e = Math.abs(a[i] - b[i]);
    maxAbs = Math.max(maxAbs, e);
    maxRef = Math.max(maxRef, Math.abs(a[i]));
    dn += e * e;
    rn += a[i] * a[i];
  }
  if (nan) return { max: Infinity, norm: Infinity };
  return { max: maxAbs / (maxRef || 1), norm: Math.sqrt(dn) / (Math.sqrt(rn) || 1) };
}

let failed = 0, passed = 0;
for (const precision of args.precision.split(',')) {
  for (const c of CASES.filter((k) => k.name.includes(args.cases))) {
    const r = rng(c.name.length * 7919 + (precision === 'fp32' ? 1 : 2));
    const cpu = new RecurrentTransformer({ ...c.cfg, seed: 3, device: 'cpu' });
    const gpu = new RecurrentTransformer({ ...c.cfg, seed: 3, device: target, precision });
    const params = realisticParams(cpu.parameters(), r);
    cpu.importParameters(params);
    gpu.importParameters(params);
    const V = c.cfg.vocabSize;
    const P = cpu.scoredPositions(c.N);
    const classes = c.cfg.head?.classify ?? V;
    const tokens = Tensor.fromArray(Int32Array.from({ length: c.B * c.N }, () => Math.floor(r() * V)), [c.B, c.N], 'int32');
    const targets = Tensor.fromArray(
      Int32Array.from({ length: c.B * P }, (_, i) => (c.ignore && i % 3 === 0 ? -1 : Math.floor(r() * classes))),
      [c.B, P], 'int32');
    const opts = { training: c.training ?? false, seed: 11 };
    const lc = await cpu.lossAndGrad(tokens, targets, opts);
    const lg = await gpu.lossAndGrad(tokens, targets, opts);
    const errs = { loss: Math.abs(lc.loss - lg.loss) / Math.abs(lc.loss) };
    const hitsEqual = lc.count === lg.count;
    const cps = cpu.parameters(), gps = gpu.parameters();
    for (let i = 0; i < cps.length; i++) {
      const e = errors(cps[i].grad.toArray(), gps[i].grad.toArray());
      errs[`d ${cps[i].name}`] = precision === 'fp32' ? e.max : e.norm;
    }
    // The optimizer is checked on the same gradients: Adam's first step moves each weight by about
    // lr * sign(g), so rounding-level gradient differences near zero would otherwise show as lr-sized ones.
    for (let i = 0; i < cps.length; i++) gps[i].grad.handle().write(cps[i].grad.toArray());
    const hyper = { lr: 1e-2, weightDecay: 0.1, maxGradNorm: 0.5 };
    const oc = new AdamW(cpu.parameters(), cpu.decayMask(), hyper);
    const og = new AdamW(gpu.parameters(), gpu.decayMask(), hyper);
    const sc = await oc.step(), sg = await og.step();
    errs['grad norm'] = Math.abs(sc.gradNorm - sg.gradNorm) / sc.gradNorm;
    // Three more steps as the trainer queues them (AdamW.queue: the step count on the device, the norms read
    // last), the middle one skipped for a NaN gradient: each must report as the CPU's, and the third must use
    // bias correction t = 3 (the skip not counted).
    const grads = cps.map((p) => p.grad.toArray());
    const queued = [];
    for (const bad of [false, true, false]) {
      for (let i = 0; i < cps.length; i++) {
        const g = Float32Array.from(grads[i], (x) => x * (bad ? 1 : 0.5));
        if (bad && i === 0) g[0] = NaN;
        cps[i].grad.handle().write(g);
        gps[i].grad.handle().write(g);
      }
      queued.push([await oc.step(), await og.queue()]);
    }
    let queuedErr = 0;
    for (const [c, q] of queued) {
      const g = await q.result();
      queuedErr = Math.max(queuedErr, c.skipped !== g.skipped ? Infinity : c.skipped ? 0 : Math.abs(c.gradNorm - g.gradNorm) / c.gradNorm);
    }
    errs['queued steps: norms, skip'] = queuedErr;
    errs['step count (3)'] = oc.stepCount === 3 && og.stepCount === 3 ? 0 : Infinity;
    for (let i = 0; i < cps.length; i++) {
      const e = errors(cps[i].value.toArray(), gps[i].value.toArray());
      errs[`w ${cps[i].name}`] = precision === 'fp32' ? e.max : e.norm;
    }
    const ec = await cpu.evaluate(tokens, targets), eg = await gpu.evaluate(tokens, targets);
    errs['eval loss'] = Math.abs(ec.loss - eg.loss) / Math.abs(ec.loss);
    const xc = await cpu.logits(tokens), xg = await gpu.logits(tokens);
    const le = errors(xc.toArray(), xg.toArray());
    errs.logits = precision === 'fp32' ? le.max : le.norm;
    // Incremental decoding on the device (lm heads): two sequences, 1.5 windows and more, every step's logits.
    if (!c.cfg.head || c.cfg.head === 'lm') {
      const dc = cpu.decoder(2, 64), dg = gpu.decoder(2, 64);
      let worst = 0;
      for (let t = 0; t < Math.min(c.N, 40); t++) {
        const toks = [Math.floor(r() * V), Math.floor(r() * V)];
        const a = await dc.step(toks), b = await dg.step(toks);
        const e = errors(a, b);
        worst = Math.max(worst, precision === 'fp32' ? e.max : e.norm);
      }
      errs['decode logits'] = worst;
    }
    for (const t of [xc, xg, tokens, targets]) t.dispose();
    oc.dispose(); og.dispose(); cpu.dispose(); gpu.dispose();

    const judged = Object.entries(errs).filter(([k]) => !(precision === 'bf16' && c.cfg.activation === 'relu' && k.startsWith('d ')) && !k.endsWith('alpha'));
    const worst = judged.reduce((m, [k, v]) => (v > m[1] ? [k, v] : m), ['', 0]);
    const ok = hitsEqual && worst[1] <= LIMIT[precision];
    ok ? passed++ : failed++;
    const line = { case: c.name, precision, ok, worst: worst[0], worstErr: +worst[1].toExponential(2), loss: lc.loss, errs };
    console.log(`${ok ? 'ok  ' : 'FAIL'} ${precision} ${c.name.padEnd(34)} worst ${worst[1].toExponential(2)} (${worst[0]}) loss ${lc.loss.toFixed(4)} / ${lg.loss.toFixed(4)} norm ${sc.gradNorm.toFixed(4)} / ${sg.gradNorm.toFixed(4)}`);
    if (args.out) appendFileSync(args.out, JSON.stringify(line) + '\n');
  }
}
console.log(`check-model: ${passed} passed, ${failed} failed`);
process.exit(failed ? 1 : 0);
