// Sampling and streaming generation: greedy/top-k/top-p semantics, seeded determinism, stop sequences
// held back exactly, maxTokens, abort, and text that equals the tokenizer's decode of the ids.
import { describe, expect, it } from 'vitest';
import { CharTokenizer } from '../src/tokenizer/index.js';
import { RecurrentTransformer, Rng, generate, sampleToken } from '../src/index.js';

const logits = Float32Array.from([0.1, 2.0, -1.0, 1.5, 0.3]);

describe('sampleToken', () => {
  it('temperature 0, topK 1 and a tiny topP all pick the argmax', () => {
    const rng = new Rng(3);
    expect(sampleToken(logits, rng, { temperature: 0 }).token).toBe(1);
    for (let i = 0; i < 20; i++) expect(sampleToken(logits, rng, { topK: 1 }).token).toBe(1);
    for (let i = 0; i < 20; i++) expect(sampleToken(logits, rng, { topP: 1e-6 }).token).toBe(1);
  });

  it('topK 2 samples only the two best; frequencies follow the renormalised softmax', () => {
    const rng = new Rng(5);
    const counts = [0, 0, 0, 0, 0];
    const n = 20000;
    for (let i = 0; i < n; i++) counts[sampleToken(logits, rng, { topK: 2 }).token]!++;
    expect(counts[0]! + counts[2]! + counts[4]!).toBe(0);
    const p1 = Math.exp(2.0) / (Math.exp(2.0) + Math.exp(1.5));
    expect(Math.abs(counts[1]! / n - p1)).toBeLessThan(0.015);
  });

  it('temperature scales the distribution and logprob is its log-probability', () => {
    const rng = new Rng(9);
    const r = sampleToken(logits, rng, { temperature: 0.5 });
    const z = Array.from(logits, (v) => Math.exp(v / 0.5));
    const total = z.reduce((a, b) => a + b, 0);
    expect(r.logprob).toBeCloseTo(Math.log(z[r.token]! / total), 6);
  });

  it('the same seed gives the same draws', () => {
    const a = new Rng(11);
    const b = new Rng(11);
    for (let i = 0; i < 50; i++) expect(sampleToken(logits, a, {}).token).toBe(sampleToken(logits, b, {}).token);
  });
});

describe('generate', () => {
  const text = 'to be or not to be, that is the question. ';
  const tok = CharTokenizer.fromText(text);
  const model = new RecurrentTransformer({ vocabSize: tok.vocabSize, d: 16, heads: 2, window: 4, maxLen: 512, seed: 7 });

  async function collect(prompt: string, opts: Parameters<typeof generate>[2]): Promise<{ text: string; tokens: number[] }> {
    let out = '';
    const tokens: number[] = [];
    for await (const t of generate(model, prompt, { tokenizer: tok, ...opts })) {
      out += t.text;
      if (t.token >= 0) tokens.push(t.token);
      expect(t.logprob).toBeLessThanOrEqual(0);
    }
    return { text: out, tokens };
  }

  it('yields maxTokens tokens whose text is the decode of their ids, deterministic per seed', async () => {
    const a = await collect('to be', { maxTokens: 40, seed: 1 });
    expect(a.tokens).toHaveLength(40);
    expect(a.text).toBe(tok.decode(a.tokens));
    const b = await collect('to be', { maxTokens: 40, seed: 1 });
    expect(b.text).toBe(a.text);
    const c = await collect('to be', { maxTokens: 40, seed: 2 });
    expect(c.text).not.toBe(a.text);
  });

  it('stops before a stop sequence and never emits any part of it', async () => {
    const full = await collect('that', { maxTokens: 60, temperature: 0 });
    // A stop string taken from the middle of the greedy continuation.
    const stop = full.text.slice(20, 23);
    const cut = full.text.indexOf(stop);
    const stopped = await collect('that', { maxTokens: 60, temperature: 0, stop: [stop] });
    expect(stopped.text).toBe(full.text.slice(0, cut));
  });

  it('stops at a stop token id and honours an AbortSignal', async () => {
    const full = await collect('not', { maxTokens: 30, temperature: 0 });
    const stopId = full.tokens[10]!;
    const first = full.tokens.indexOf(stopId);
    const stopped = await collect('not', { maxTokens: 30, temperature: 0, stop: [stopId] });
    expect(stopped.tokens).toEqual(full.tokens.slice(0, first));
    const controller = new AbortController();
    let n = 0;
    for await (const _ of generate(model, 'not', { tokenizer: tok, maxTokens: 100, signal: controller.signal })) {
      if (++n === 5) controller.abort();
    }
    expect(n).toBe(5);
  });

  it('rejects bad options with errors naming them', async () => {
    const run = async (o: Parameters<typeof generate>[2]) => {
      for await (const _ of generate(model, 'to', { tokenizer: tok, ...o })) break;
    };
    await expect(run({ temperature: -1 })).rejects.toThrow(/temperature/);
    await expect(run({ topP: 0 })).rejects.toThrow(/topP/);
    await expect(run({ maxTokens: 1.5 })).rejects.toThrow(/maxTokens/);
    await expect(async () => {
      for await (const _ of generate(model, 'to')) break;
    }).rejects.toThrow(/tokenizer/);
  });
});
