// The native sampler (native/core/sample.cc), which decoder steps run for the server and for generate():
// it must pick exactly the token sampleToken (the JavaScript reference) picks from the same logits and the
// same uniform draw, with the same log-probability, for plain, greedy, top-k and top-p sampling and their
// combinations, ties and -Infinity logits included; a step that samples must return the logits a plain
// step returns; bad settings must be refused naming the field and row.
import { describe, expect, it } from 'vitest';
import { CharTokenizer, RecurrentTransformer, Rng, SequenceSampler, generate, rowSampling, sampleRows, sampleToken } from '../src/index.js';

interface Setting {
  temperature?: number;
  topK?: number;
  topP?: number;
}

const SETTINGS: Setting[] = [
  {},
  { temperature: 0.7 },
  { temperature: 1.6 },
  { temperature: 0 },
  { topK: 1 },
  { topK: 5 },
  { topK: 5, temperature: 0.5 },
  { topP: 0.9 },
  { topP: 0.5, temperature: 1.3 },
  { topP: 1e-6 },
  { topK: 20, topP: 0.8 },
  { topK: 1000 }, // >= V: every token, the plain path
];

/** Rows of logits: gaussian, wide, with ties, with masked (-Infinity) entries. */
function makeRows(V: number, rows: number, rng: Rng): Float32Array {
  const out = new Float32Array(V * rows);
  for (let r = 0; r < rows; r++) {
    const kind = r % 4;
    for (let i = 0; i < V; i++) {
      const g = Math.sqrt(-2 * Math.log(1 - rng.next())) * Math.cos(2 * Math.PI * rng.next());
      let v = kind === 1 ? 8 * g : g;
      if (kind === 2) v = Math.round(g * 2) / 2; // many ties
      if (kind === 3 && i % 3 === 1) v = -Infinity;
      out[r * V + i] = v;
    }
  }
  return out;
}

describe('native sampling', () => {
  it('picks the token sampleToken picks, with the same logprob, for every setting', () => {
    const data = new Rng(42);
    let compared = 0;
    for (const V of [1, 2, 7, 96, 301]) {
      const rows = 40;
      const logits = makeRows(V, rows, data);
      for (const s of SETTINGS) {
        const sampling = rowSampling(rows);
        const want: { token: number; logprob: number }[] = [];
        for (let r = 0; r < rows; r++) {
          const seed = 1000 * V + r;
          want.push(sampleToken(logits.subarray(r * V, (r + 1) * V), new Rng(seed), s));
          // What SequenceSampler.prepare writes: the settings and the draw sampleToken makes (none if greedy).
          new SequenceSampler({ ...s, seed }).prepare(sampling, r);
        }
        const got = sampleRows(logits, V, sampling);
        for (let r = 0; r < rows; r++) {
          const w = want[r]!;
          expect(got.tokens[r], `V ${V} ${JSON.stringify(s)} row ${r}`).toBe(w.token);
          // libm's exp/log against V8's: equal to an ulp or so.
          expect(Math.abs(got.logprobs[r]! - w.logprob), `V ${V} ${JSON.stringify(s)} row ${r}`).toBeLessThanOrEqual(1e-12 * (1 + Math.abs(w.logprob)));
          compared++;
        }
      }
    }
    expect(compared).toBe(5 * SETTINGS.length * 40);
  });

  it('follows the softmax: the logprob is the float64 log-probability and frequencies match it', () => {
    const logits = Float32Array.from([0.1, 2.0, -1.0, 1.5, 0.3]);
    const n = 20000;
    const rows = new Float32Array(5 * n);
    for (let r = 0; r < n; r++) rows.set(logits, 5 * r);
    const sampling = rowSampling(n);
    const rng = new Rng(7);
    sampling.temperature.fill(0.8);
    for (let r = 0; r < n; r++) sampling.uniform[r] = rng.next();
    const got = sampleRows(rows, 5, sampling);
    const z = Array.from(logits, (v) => Math.exp(v / 0.8));
    const total = z.reduce((a, b) => a + b, 0);
    const counts = [0, 0, 0, 0, 0];
    for (let r = 0; r < n; r++) {
      const t = got.tokens[r]!;
      counts[t]!++;
      expect(Math.abs(got.logprobs[r]! - Math.log(z[t]! / total))).toBeLessThan(1e-12);
    }
    for (let i = 0; i < 5; i++) expect(Math.abs(counts[i]! / n - z[i]! / total)).toBeLessThan(0.015);
  });

  it('leaves rows with a negative temperature unsampled; greedy ignores the draw', () => {
    const logits = Float32Array.from([0, 3, 1, /* row 2 */ 5, 1, 5]);
    const sampling = rowSampling(2);
    sampling.temperature[1] = 0;
    sampling.uniform[1] = 0.99;
    const got = sampleRows(logits, 3, sampling);
    expect(Array.from(got.tokens)).toEqual([-1, 0]); // the first of two equal largest
    expect(Array.from(got.logprobs)).toEqual([0, 0]);
  });

  it('refuses bad settings naming the field and the row', () => {
    const logits = new Float32Array(6);
    const ok = () => {
      const s = rowSampling(2);
      s.temperature.fill(1);
      return s;
    };
    expect(() => sampleRows(logits, 4, ok())).toThrow(/logits: expected a whole number of rows of 4/);
    expect(() => sampleRows(logits, 0, ok())).toThrow(/vocab/);
    expect(() => sampleRows(new Float64Array(6) as unknown as Float32Array, 3, ok())).toThrow(/logits: expected a Float32Array/);
    const bad = (f: (s: ReturnType<typeof ok>) => void, re: RegExp) => {
      const s = ok();
      f(s);
      expect(() => sampleRows(logits, 3, s)).toThrow(re);
    };
    bad((s) => (s.topP[1] = 0), /sampling\.topP: value 0 at row 1 is not in \(0, 1\]/);
    bad((s) => (s.topP[0] = 1.5), /sampling\.topP: value 1\.5 at row 0/);
    bad((s) => (s.topK[1] = -2), /sampling\.topK: value -2 at row 1/);
    bad((s) => (s.uniform[0] = 1), /sampling\.uniform: value 1 at row 0 is not in \[0, 1\)/);
    bad((s) => (s.temperature[1] = NaN), /sampling\.temperature: value nan at row 1 is not finite/);
    bad((s) => (s.temperature[0] = Infinity), /sampling\.temperature.*row 0/);
    expect(() => sampleRows(logits, 3, { ...ok(), topK: new Float64Array(2) as unknown as Int32Array })).toThrow(/sampling\.topK: expected a Int32Array/);
    expect(() => sampleRows(logits, 3, { ...ok(), uniform: new Float64Array(3) })).toThrow(/sampling\.uniform: expected 2 values \(one per row\), got 3/);
    expect(() => sampleRows(logits, 3, null as never)).toThrow(/sampling: expected an object/);
  });
});

describe('Decoder.stepSample', () => {
  const cfg = { vocabSize: 23, d: 16, heads: 2, window: 4, maxLen: 64, seed: 3 };

  it('returns the logits stepSlots returns and the tokens sampleToken draws from them, serial or not', async () => {
    const model = new RecurrentTransformer(cfg);
    try {
      const a = model.decoder(4);
      const b = model.decoder(4);
      const c = model.decoder(4);
      const slots = [2, 0, 3];
      const data = new Rng(5);
      for (let step = 0; step < 11; step++) {
        const tokens = slots.map(() => Math.floor(data.next() * cfg.vocabSize));
        const sampling = rowSampling(3);
        const settings: Setting[] = [{ temperature: 0.9 }, { topK: 3 }, { topP: 0.7, temperature: 0 }];
        const samplers = settings.map((s, r) => new SequenceSampler({ ...s, seed: 100 * step + r }));
        samplers.forEach((s, r) => s.prepare(sampling, r));
        const want = await a.stepSlots(slots, tokens);
        const got = await b.stepSample(slots, tokens, sampling);
        const alone = await c.stepSample(slots, tokens, sampling, { serial: true });
        expect(got.logits).toEqual(want);
        expect(alone.logits).toEqual(want);
        for (let r = 0; r < 3; r++) {
          const w = sampleToken(want.subarray(r * cfg.vocabSize, (r + 1) * cfg.vocabSize), new Rng(100 * step + r), settings[r]!);
          expect(got.tokens[r]).toBe(w.token);
          expect(alone.tokens[r]).toBe(w.token);
          expect(Math.abs(got.logprobs[r]! - w.logprob)).toBeLessThanOrEqual(1e-12 * (1 + Math.abs(w.logprob)));
        }
      }
      const s = rowSampling(1);
      await expect(b.stepSample([1], [0], s, { serial: 'yes' as unknown as boolean })).rejects.toThrow(/serial: expected a boolean/);
      await expect(b.stepSample([1, 2], [0, 0], s)).rejects.toThrow(/sampling\.temperature: expected 2 values/);
    } finally {
      model.dispose();
    }
  });

  it('generate() gives the text of a JavaScript loop over stepSlots and SequenceSampler.next', async () => {
    const tok = CharTokenizer.fromText('to be or not to be, that is the question. ');
    const model = new RecurrentTransformer({ ...cfg, vocabSize: tok.vocabSize });
    try {
      for (const [seed, opts] of [[1, {}], [2, { temperature: 0.6, topK: 4 }], [3, { topP: 0.8 }], [4, { temperature: 0 }]] as const) {
        const o = { ...opts, seed, maxTokens: 30, tokenizer: tok };
        let got = '';
        for await (const t of generate(model, 'to be', o)) got += t.text;
        const dec = model.decoder(1);
        const sampler = new SequenceSampler(o);
        let logits = new Float32Array(0);
        for (const id of tok.encode('to be')) logits = await dec.stepSlots([0], [id]);
        let want = '';
        while (!sampler.done) {
          const t = sampler.next(logits);
          if (t === null) break;
          want += t.text;
          if (!sampler.done) logits = await dec.stepSlots([0], [t.token]);
        }
        want += sampler.flush();
        expect(got, `seed ${seed}`).toBe(want);
        expect(got.length).toBeGreaterThan(0);
      }
    } finally {
      model.dispose();
    }
  });
});
