// The two train-step configs (and a tiny one for a dry run), and their random batch, shared by the
// CUDA benchmarks (bench-model.mjs, step-phases.mjs): the same model, tokens and targets in each.
export const CONFIGS = {
  copy: { B: 64, N: 4128, scored: 16, model: { vocabSize: 16, d: 96, heads: 6, window: 32, variant: 'accumulate', activation: 'relu', positional: false, head: { copy: 16 }, maxLen: 4128, dropout: 0 } },
  char: { B: 256, N: 256, scored: 256, model: { vocabSize: 65, d: 384, heads: 6, window: 16, variant: 'forget', activation: 'gelu', positional: true, head: 'lm', maxLen: 256, dropout: 0 } },
  tiny: { B: 2, N: 40, scored: 40, model: { vocabSize: 20, d: 32, heads: 4, window: 8, head: 'lm', maxLen: 40 } },
  // The char model on few positions but enough rows (192 x 32 a window pair) for the Hopper GEMM, its weight
  // copies and the paired attention heads: a short run under compute-sanitizer covers the char paths.
  charsmall: { B: 192, N: 32, scored: 32, model: { vocabSize: 65, d: 384, heads: 6, window: 16, variant: 'forget', activation: 'gelu', positional: true, head: 'lm', maxLen: 32, dropout: 0.1 } },
  // The copy model (fused chains, accumulate: the window glue in the chains, alpha's parts) on few positions,
  // with dropout, for compute-sanitizer.
  copysmall: { B: 4, N: 40, scored: 8, model: { vocabSize: 16, d: 96, heads: 6, window: 8, variant: 'accumulate', activation: 'relu', positional: false, head: { copy: 8 }, maxLen: 40, dropout: 0.1 } },
};

// Tokens [B, N] and targets [B, scored] from a fixed linear congruential sequence, as int32 Tensors.
export function randomBatch(Tensor, c) {
  let s = 12345;
  const next = (V) => { s = (Math.imul(s, 1664525) + 1013904223) >>> 0; return s % V; };
  const V = c.model.vocabSize;
  const tokens = Tensor.fromArray(Int32Array.from({ length: c.B * c.N }, () => next(V)), [c.B, c.N], 'int32');
  const targets = Tensor.fromArray(Int32Array.from({ length: c.B * c.scored }, () => next(V)), [c.B, c.scored], 'int32');
  return { tokens, targets };
}

// The optimizer step as src/train/trainer.ts takes it on the GPU: queued, its norm read after the next step's
// loss; RT_BENCH_WAIT_STEP=1 waits for each step instead (AdamW.step()), which leaves the GPU idle between
// steps. step() after each lossAndGrad; finish() reads the last queued step.
export function optimizerSteps(opt) {
  if (process.env.RT_BENCH_WAIT_STEP === '1') return { step: async () => { await opt.step(); }, finish: async () => {} };
  let pending = null;
  return {
    step: async () => {
      const last = pending;
      pending = await opt.queue();
      if (last && (await last.result()).skipped) throw new Error('bench: an optimizer step was skipped');
    },
    finish: async () => { await pending?.result(); },
  };
}
