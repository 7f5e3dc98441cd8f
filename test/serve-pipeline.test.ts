// The scheduler's batches in flight at once (src/serve/scheduler.ts): with enough sequences several decoder
// steps run together, over disjoint slots, and every request must still get exactly the text a
// sequential generate() gives it, and every score the log-probability of the offline forward, while
// requests join, finish and reuse slots in both batches. The addon must refuse a step or a reset that
// touches a slot already in a running step.
import { describe, expect, it } from 'vitest';
import { CharTokenizer, RecurrentTransformer, SequenceSampler, createServer, generate, type Decoder, type RowSampling } from '../src/index.js';
import { pipelineMinRowsFor, resolveSchedulerOptions, Scheduler } from '../src/serve/scheduler.js';
import { referenceLogprob } from './score-check.js';

const CORPUS = 'to be or not to be, that is the question. whether tis nobler in the mind to suffer. ';
const tok = CharTokenizer.fromText(CORPUS);

async function reference(model: RecurrentTransformer, prompt: string, maxTokens: number, seed: number, temperature?: number): Promise<string> {
  let text = '';
  for await (const t of generate(model, prompt, { tokenizer: tok, maxTokens, seed, temperature })) text += t.text;
  return text;
}

/** Wraps model.decoder so that the test sees how many steps were in flight at once. */
function countOverlap(model: RecurrentTransformer): { max: () => number } {
  const make = model.decoder.bind(model);
  let now = 0;
  let max = 0;
  model.decoder = (batch?: number, maxPositions?: number): Decoder => {
    const d = make(batch, maxPositions);
    const counted = async <T>(run: () => Promise<T>): Promise<T> => {
      max = Math.max(max, ++now);
      try {
        return await run();
      } finally {
        now--;
      }
    };
    return Object.assign(Object.create(Object.getPrototypeOf(d) as object) as Decoder, d, {
      stepSlots: (slots: ArrayLike<number>, tokens: Int32Array | number[]) => counted(() => d.stepSlots(slots, tokens)),
      stepSample: (slots: ArrayLike<number>, tokens: Int32Array | number[], sampling: RowSampling, options?: { serial?: boolean }) =>
        counted(() => d.stepSample(slots, tokens, sampling, options)),
    });
  };
  return { max: () => max };
}

describe('scheduler: several batches in flight', () => {
  it('70 requests on 48 slots: each text equals a sequential generate(); scores equal the offline forward', async () => {
    const model = new RecurrentTransformer({ vocabSize: tok.vocabSize, d: 16, heads: 2, window: 4, maxLen: 128, seed: 11 });
    try {
      const overlap = countOverlap(model);
      const scheduler = new Scheduler(model, { maxBatch: 48, maxQueue: 256 });
      const prompts = ['to be', 'that is', 'the question', 'whether', 'nobler in the mind', 'o', 'suffer', 'not to be'];
      const cases = Array.from({ length: 70 }, (_, i) => ({ prompt: prompts[i % prompts.length]!, maxTokens: 5 + ((i * 13) % 40), seed: 1000 + i, temperature: i % 4 === 3 ? 0 : undefined }));
      const scoreText = 'to be or not to be, that is the question';
      const results = await Promise.all([
        ...cases.map((c) =>
          scheduler.generate(Array.from(tok.encode(c.prompt)), new SequenceSampler({ maxTokens: c.maxTokens, seed: c.seed, temperature: c.temperature, tokenizer: tok })),
        ),
        scheduler.score(Array.from(tok.encode(scoreText))),
      ]);
      for (const [i, c] of cases.entries()) {
        const r = results[i]!;
        expect(r.kind).toBe('generate');
        if (r.kind === 'generate') expect(r.text, `request ${i}`).toBe(await reference(model, c.prompt, c.maxTokens, c.seed, c.temperature));
      }
      const scored = results[cases.length]!;
      const want = await referenceLogprob(model, Array.from(tok.encode(scoreText)), tok.vocabSize);
      expect(scored.kind === 'score' && Math.abs(scored.logprob - want)).toBeLessThan(1e-3 * (1 + Math.abs(want)));
      // Batches really overlapped, and never more than the scheduler's limit of three.
      expect(overlap.max()).toBeGreaterThanOrEqual(2);
      expect(overlap.max()).toBeLessThanOrEqual(3);
      expect(scheduler.active).toBe(0);
      expect(scheduler.queued).toBe(0);
      await scheduler.drain();
    } finally {
      model.dispose();
    }
  });

  it('a step or a reset that touches a slot of a running step is refused; disjoint steps both run', async () => {
    const model = new RecurrentTransformer({ vocabSize: 7, d: 8, heads: 2, window: 3, maxLen: 32, seed: 2 });
    try {
      const dec = model.decoder(4);
      const a = dec.stepSlots([0, 1], [1, 2]);
      await expect(async () => dec.stepSlots([1, 2], [3, 4])).rejects.toThrow(/slot 1 is already in a running step/);
      expect(() => dec.reset(0)).toThrow(/slot 0 is in a running step/);
      const b = dec.stepSlots([2, 3], [3, 4]);
      const [la, lb] = await Promise.all([a, b]);
      expect(la).toHaveLength(2 * 7);
      expect(lb).toHaveLength(2 * 7);
      for (let s = 0; s < 4; s++) expect(dec.positionOf(s)).toBe(1);
      // Settled: the slots are free again.
      dec.reset(0);
      await dec.stepSlots([0, 1, 2, 3], [1, 1, 1, 1]);
      // The same tokens one at a time give the same logits as the overlapping steps did.
      const ref = model.decoder(1);
      const one = await ref.step([3]);
      for (let v = 0; v < 7; v++) expect(Math.abs(lb[v]! - one[v]!)).toBeLessThan(1e-5);
    } finally {
      model.dispose();
    }
  });

  it('stats.stepMs counts a busy period that is still open (steps in flight without a pause)', async () => {
    const model = new RecurrentTransformer({ vocabSize: tok.vocabSize, d: 16, heads: 2, window: 4, maxLen: 256, seed: 5 });
    try {
      const scheduler = new Scheduler(model, { maxBatch: 64, maxQueue: 256 });
      const t0 = performance.now();
      const all = Promise.all(
        Array.from({ length: 64 }, (_, i) => scheduler.generate(Array.from(tok.encode('to be')), new SequenceSampler({ maxTokens: 150, seed: i, tokenizer: tok }))),
      );
      let prev = 0;
      let checked = 0;
      while (scheduler.active > 0) {
        await new Promise((r) => setTimeout(r, 5));
        // stats first, then the wall clock: the open period's end is read before wall's (the other order
        // failed under a loaded CPU by the time between the two reads).
        const { stepMs } = scheduler.stats;
        const wall = performance.now() - t0;
        if (scheduler.active === 0) break;
        // The first step went out with the first request: from then on the decoder is busy.
        expect(stepMs).toBeGreaterThan(0);
        expect(stepMs).toBeGreaterThanOrEqual(prev);
        expect(stepMs).toBeLessThanOrEqual(wall + 1);
        prev = stepMs;
        checked++;
      }
      await all;
      expect(checked).toBeGreaterThan(0);
      expect(scheduler.stats.stepMs).toBeLessThanOrEqual(performance.now() - t0 + 1);
    } finally {
      model.dispose();
    }
  });
});

describe('scheduler: threads, steps in flight, rows per batch', () => {
  /** Runs with UV_THREADPOOL_SIZE as given (undefined: unset), which the defaults read. */
  function withPool<T>(size: string | undefined, run: () => T): T {
    const saved = process.env.UV_THREADPOOL_SIZE;
    if (size === undefined) delete process.env.UV_THREADPOOL_SIZE;
    else process.env.UV_THREADPOOL_SIZE = size;
    try {
      return run();
    } finally {
      if (saved === undefined) delete process.env.UV_THREADPOOL_SIZE;
      else process.env.UV_THREADPOOL_SIZE = saved;
    }
  }

  it('defaults follow the threads: 2 threads keep 3 steps of >= 16 rows; more steps only as far as libuv\'s pool allows', () => {
    const base = { maxBatch: 64, maxQueue: 8 };
    withPool(undefined, () => {
      expect(resolveSchedulerOptions({ ...base, threads: 2 })).toEqual({ ...base, threads: 2, maxInFlight: 3, pipelineMinRows: 16 });
      expect(resolveSchedulerOptions({ ...base, threads: 1 })).toMatchObject({ maxInFlight: 2, pipelineMinRows: 16 });
      // libuv's default pool of 4: one thread stays free for other work.
      expect(resolveSchedulerOptions({ ...base, threads: 16 })).toMatchObject({ maxInFlight: 3, pipelineMinRows: 8 });
      // A CUDA model's steps take turns on the device: two threads' worth, whatever the CPU count.
      expect(resolveSchedulerOptions(base, 'cuda')).toMatchObject({ threads: 2, maxInFlight: 3, pipelineMinRows: 16 });
      // Given values are used as they are.
      expect(resolveSchedulerOptions({ ...base, threads: 16, maxInFlight: 9, pipelineMinRows: 2 })).toMatchObject({ threads: 16, maxInFlight: 9, pipelineMinRows: 2 });
    });
    withPool('18', () => expect(resolveSchedulerOptions({ ...base, threads: 16 })).toMatchObject({ maxInFlight: 17, pipelineMinRows: 8 }));
    withPool('6', () => expect(resolveSchedulerOptions({ ...base, threads: 16 })).toMatchObject({ maxInFlight: 5 }));
    withPool('1', () => expect(resolveSchedulerOptions({ ...base, threads: 4 })).toMatchObject({ maxInFlight: 1 }));
    expect([1, 2, 3, 4, 6, 16, 128].map(pipelineMinRowsFor)).toEqual([16, 16, 11, 8, 8, 8, 8]);
  });

  it('a bad value is a RangeError that names the option (Scheduler and createServer)', async () => {
    const model = new RecurrentTransformer({ vocabSize: tok.vocabSize, d: 8, heads: 2, window: 3, maxLen: 32, seed: 2 });
    try {
      const base = { maxBatch: 4, maxQueue: 4 };
      for (const [opts, re] of [
        [{ threads: 0 }, /^threads: expected an integer >= 1, got 0$/],
        [{ threads: 2.5 }, /^threads: expected an integer >= 1, got 2\.5$/],
        [{ maxInFlight: -1 }, /^maxInFlight: expected an integer >= 1, got -1$/],
        [{ pipelineMinRows: Number.NaN }, /^pipelineMinRows: expected an integer >= 1, got NaN$/],
        [{ maxBatch: 0 }, /^maxBatch: expected an integer >= 1, got 0$/],
        [{ maxQueue: -2 }, /^maxQueue: expected an integer >= 0, got -2$/],
      ] as const) {
        expect(() => new Scheduler(model, { ...base, ...opts }), JSON.stringify(opts)).toThrow(RangeError);
        expect(() => new Scheduler(model, { ...base, ...opts }), JSON.stringify(opts)).toThrow(re);
      }
      await expect(createServer({ model, tokenizer: tok, port: 0, threads: 0 })).rejects.toThrow(/^threads: expected an integer >= 1/);
      await expect(createServer({ model, tokenizer: tok, port: 0, maxInFlight: 1.5 })).rejects.toThrow(/^maxInFlight: /);
    } finally {
      model.dispose();
    }
  });

  for (const [name, opts, want] of [
    ['threads 1: two steps in flight', { threads: 1, pipelineMinRows: 4 }, 2],
    ['maxInFlight 5', { threads: 2, maxInFlight: 5, pipelineMinRows: 4 }, 5],
  ] as const) {
    it(`${name} (40 requests, batches of >= 4): exactly that many at the peak, the texts those of generate()`, async () => {
      const model = new RecurrentTransformer({ vocabSize: tok.vocabSize, d: 16, heads: 2, window: 4, maxLen: 128, seed: 13 });
      try {
        const overlap = countOverlap(model);
        const scheduler = new Scheduler(model, { maxBatch: 40, maxQueue: 64, ...opts });
        expect(scheduler.options.maxInFlight).toBe(want);
        const cases = Array.from({ length: 40 }, (_, i) => ({ prompt: ['to be', 'the question', 'o'][i % 3]!, maxTokens: 10 + ((i * 7) % 25), seed: 500 + i }));
        const results = await Promise.all(
          cases.map((c) => scheduler.generate(Array.from(tok.encode(c.prompt)), new SequenceSampler({ maxTokens: c.maxTokens, seed: c.seed, tokenizer: tok }))),
        );
        for (const [i, c] of cases.entries()) expect(results[i]!.text, `request ${i}`).toBe(await reference(model, c.prompt, c.maxTokens, c.seed));
        // 40 sequences make 10 batches of 4: the limit, not the sequences, is what stops more steps.
        expect(overlap.max()).toBe(want);
        expect(scheduler.stats.peakInFlight).toBe(want);
        const { steps, stepMs, inFlightMs } = scheduler.stats;
        expect(steps).toBeGreaterThan(0);
        // Steps overlapped: their summed times in flight exceed the time any was in flight.
        expect(inFlightMs).toBeGreaterThan(stepMs);
        expect(inFlightMs).toBeLessThanOrEqual(want * stepMs + 1);
      } finally {
        model.dispose();
      }
    });
  }
});
