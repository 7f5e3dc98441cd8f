// Streaming generation: an async iterator over sampled tokens, decoded incrementally so that memory per
// sequence stays O(layers * w * d) however long the text gets.
import { Rng } from './data/rng.js';
import type { RecurrentTransformer } from './model/transformer.js';
import { loadNative, type RowSampling, type SampledRows } from './native.js';

export type { RowSampling, SampledRows } from './native.js';

/** What generate() needs from a tokenizer (CharTokenizer and BpeTokenizer both fit). */
export interface TextCodec {
  encode(text: string): ArrayLike<number>;
  decode(ids: ArrayLike<number>): string;
  /** A streaming decoder that holds back incomplete UTF-8 sequences (optional). */
  decoder?(): { push(id: number): string; flush?(): string };
}

export interface GenerateOptions {
  /** Tokens to generate (default 256). */
  maxTokens?: number;
  /** Softmax temperature; 0 = greedy (default 1). */
  temperature?: number;
  /** Sample only among the k most likely tokens (0 = all). */
  topK?: number;
  /** Nucleus sampling: the smallest set of tokens whose probability reaches p (1 = all). */
  topP?: number;
  seed?: number;
  /** Stop when the generated text contains one of these strings (needs a tokenizer) or emits one of these token ids. */
  stop?: (string | number)[];
  signal?: AbortSignal;
  /** Turns a string prompt into tokens and tokens into text. */
  tokenizer?: TextCodec;
}

export interface GeneratedToken {
  /** The sampled token id; -1 for the last item when it only flushes text held back at the end. */
  token: number;
  /** Text this token completes (may be '' while a multi-byte character is incomplete). */
  text: string;
  /** Natural log of the sampled token's probability under the temperature-scaled distribution. */
  logprob: number;
}

function check(v: number | undefined, name: string, ok: (x: number) => boolean, what: string): void {
  if (v !== undefined && (typeof v !== 'number' || !ok(v))) throw new RangeError(`${name}: expected ${what}, got ${String(v)}`);
}

/** Samples a token from logits (in place scratch is allocated per call; vocabularies are small next to the model). */
export function sampleToken(logits: ArrayLike<number>, rng: Rng, opts: { temperature?: number; topK?: number; topP?: number }): { token: number; logprob: number } {
  const V = logits.length;
  const temperature = opts.temperature ?? 1;
  if (temperature === 0) {
    let best = 0;
    for (let i = 1; i < V; i++) if (logits[i]! > logits[best]!) best = i;
    return { token: best, logprob: 0 };
  }
  const topK = opts.topK ?? 0;
  const topP = opts.topP ?? 1;
  if ((topK === 0 || topK >= V) && topP >= 1) {
    // Plain sampling, the common case: two passes over the logits, nothing allocated (the server calls
    // this once per token per sequence).
    let mx = -Infinity;
    for (let i = 0; i < V; i++) mx = Math.max(mx, logits[i]! / temperature);
    let total = 0;
    for (let i = 0; i < V; i++) total += Math.exp(logits[i]! / temperature - mx);
    let u = rng.next() * total;
    let pick = V - 1;
    for (let i = 0; i < V; i++) {
      u -= Math.exp(logits[i]! / temperature - mx);
      if (u < 0) {
        pick = i;
        break;
      }
    }
    return { token: pick, logprob: logits[pick]! / temperature - mx - Math.log(total) };
  }
  let idx = Array.from({ length: V }, (_, i) => i);
  if (topK > 0 && topK < V) {
    idx.sort((a, b) => logits[b]! - logits[a]!);
    idx = idx.slice(0, topK);
  }
  let mx = -Infinity;
  for (const i of idx) mx = Math.max(mx, logits[i]! / temperature);
  let probs = idx.map((i) => Math.exp(logits[i]! / temperature - mx));
  let sum = probs.reduce((a, b) => a + b, 0);
  probs = probs.map((p) => p / sum);
  if (topP < 1) {
    const order = probs.map((_, k) => k).sort((a, b) => probs[b]! - probs[a]!);
    const keep: number[] = [];
    let acc = 0;
    for (const k of order) {
      keep.push(k);
      acc += probs[k]!;
      if (acc >= topP) break;
    }
    idx = keep.map((k) => idx[k]!);
    probs = keep.map((k) => probs[k]!);
    sum = probs.reduce((a, b) => a + b, 0);
    probs = probs.map((p) => p / sum);
  }
  let u = rng.next();
  for (let k = 0; k < idx.length; k++) {
    u -= probs[k]!;
    if (u < 0 || k === idx.length - 1) return { token: idx[k]!, logprob: Math.log(probs[k]!) };
  }
  throw new Error('unreachable');
}

/** Per-row sampling settings for `rows` rows, every row marked "not sampled" (temperature -1). */
export function rowSampling(rows: number): RowSampling {
  return { temperature: new Float64Array(rows).fill(-1), topK: new Int32Array(rows), topP: new Float64Array(rows).fill(1), uniform: new Float64Array(rows) };
}

/**
 * Samples every row of `logits` ([rows * vocab], row-major) in native code with per-row settings: the
 * computation a decoder step's stepSample runs, equal to sampleToken for the same uniform draws.
 */
export function sampleRows(logits: Float32Array, vocab: number, sampling: RowSampling): SampledRows {
  return loadNative('cpu').sampleRows(logits, vocab, sampling);
}

/** Checks generation options; throws a RangeError/TypeError naming the bad one. */
export function checkGenerateOptions(opts: GenerateOptions): void {
  check(opts.maxTokens, 'maxTokens', (x) => Number.isInteger(x) && x >= 0, 'a non-negative integer');
  check(opts.temperature, 'temperature', (x) => Number.isFinite(x) && x >= 0, 'a number >= 0');
  check(opts.topK, 'topK', (x) => Number.isInteger(x) && x >= 0, 'a non-negative integer');
  check(opts.topP, 'topP', (x) => x > 0 && x <= 1, 'a number in (0, 1]');
  check(opts.seed, 'seed', (x) => Number.isSafeInteger(x) && x >= 0, 'a non-negative integer');
  if (opts.stop !== undefined && (!Array.isArray(opts.stop) || !opts.stop.every((s) => typeof s === 'string' || (Number.isInteger(s) && s >= 0)))) {
    throw new TypeError('stop: expected an array of strings and token ids');
  }
  const stopText = (opts.stop ?? []).filter((s) => typeof s === 'string' && s.length > 0);
  if (stopText.length && !opts.tokenizer) throw new TypeError('stop: string stop sequences need a tokenizer');
}

/** The prompt as token ids (a string needs the tokenizer). */
export function promptIds(prompt: string | ArrayLike<number>, tokenizer: TextCodec | undefined): number[] {
  let ids: number[];
  if (typeof prompt === 'string') {
    if (!tokenizer) throw new TypeError('prompt: a string prompt needs a tokenizer');
    ids = Array.from(tokenizer.encode(prompt));
  } else {
    ids = Array.from(prompt);
  }
  if (ids.length === 0) throw new RangeError('prompt: must hold at least one token');
  return ids;
}

/**
 * One sequence's sampling state: draws tokens from successive logits, turns them into text through the
 * streaming decoder, and holds back text that could still become a stop sequence. generate() and the
 * server's continuous-batching scheduler both drive it.
 */
export class SequenceSampler {
  readonly maxTokens: number;
  #opts: GenerateOptions;
  #rng: Rng;
  #tok: TextCodec | undefined;
  #stream: { push(id: number): string; flush?(): string } | undefined;
  #stopIds: Set<number>;
  #stopText: string[];
  #emitted = '';
  #pending = '';
  #count = 0;
  /** No further token should be sampled (maxTokens reached, or a stop token or sequence seen). */
  done = false;
  /** The sequence ended on a stop string: the last token's text stops before it (and may be empty). */
  stopped = false;

  constructor(opts: GenerateOptions) {
    checkGenerateOptions(opts);
    this.#opts = opts;
    this.maxTokens = opts.maxTokens ?? 256;
    this.#rng = new Rng(opts.seed ?? 0);
    this.#tok = opts.tokenizer;
    this.#stream = this.#tok?.decoder?.();
    this.#stopIds = new Set((opts.stop ?? []).filter((s): s is number => typeof s === 'number'));
    this.#stopText = (opts.stop ?? []).filter((s): s is string => typeof s === 'string' && s.length > 0);
    if (this.maxTokens === 0) this.done = true;
  }

  /** Tokens sampled so far. */
  get count(): number {
    return this.#count;
  }

  /**
   * Samples the next token from `logits`. Returns what to emit (possibly empty text) or null when the
   * sequence ended on a stop token; sets `done` when no further token should be sampled.
   */
  next(logits: ArrayLike<number>): GeneratedToken | null {
    const { token, logprob } = sampleToken(logits, this.#rng, this.#opts);
    return this.accept(token, logprob);
  }

  /**
   * Writes this sequence's settings for its next token into row `row` of `sampling`, with the uniform draw
   * sampleToken would make (none when greedy), for a native sampler (Decoder.stepSample); the token it
   * picks then goes to accept(). next(logits) is the same two halves in JavaScript.
   */
  prepare(sampling: RowSampling, row: number): void {
    const temperature = this.#opts.temperature ?? 1;
    sampling.temperature[row] = temperature;
    sampling.topK[row] = this.#opts.topK ?? 0;
    sampling.topP[row] = this.#opts.topP ?? 1;
    sampling.uniform[row] = temperature === 0 ? 0 : this.#rng.next();
  }

  /** Takes the token sampled for this sequence (from prepare()'s settings); returns what next() would. */
  accept(token: number, logprob: number): GeneratedToken | null {
    this.#count++;
    if (this.#stopIds.has(token)) {
      this.done = true;
      return null;
    }
    this.#pending += this.#tok ? (this.#stream ? this.#stream.push(token) : this.#tok.decode([token])) : '';
    const full = this.#emitted + this.#pending;
    let cut = -1;
    for (const s of this.#stopText) {
      const at = full.indexOf(s, Math.max(0, this.#emitted.length - s.length + 1));
      if (at >= 0 && (cut < 0 || at < cut)) cut = at;
    }
    if (cut >= 0) {
      this.done = true;
      this.stopped = true;
      this.#pending = '';
      return { token, text: full.slice(this.#emitted.length, cut), logprob };
    }
    let hold = 0;
    for (const s of this.#stopText) {
      for (let k = Math.min(s.length - 1, this.#pending.length); k > hold; k--) {
        if (full.endsWith(s.slice(0, k))) {
          hold = k;
          break;
        }
      }
    }
    const out = this.#pending.slice(0, this.#pending.length - hold);
    this.#emitted += out;
    this.#pending = this.#pending.slice(this.#pending.length - hold);
    if (this.#count >= this.maxTokens) this.done = true;
    return { token, text: out, logprob };
  }

  /** Text held back at the end (a partial stop sequence that never completed, an unfinished character). */
  flush(): string {
    const rest = this.#pending + (this.#stream?.flush?.() ?? '');
    this.#pending = '';
    return rest;
  }
}

/**
 * Generates a continuation of `prompt` (text with a tokenizer, or token ids) one token at a time:
 *
 *     for await (const t of generate(model, 'ROMEO:', { tokenizer, maxTokens: 200 })) process.stdout.write(t.text);
 */
export async function* generate(model: RecurrentTransformer, prompt: string | ArrayLike<number>, opts: GenerateOptions = {}): AsyncGenerator<GeneratedToken> {
  const sampler = new SequenceSampler(opts);
  const ids = promptIds(prompt, opts.tokenizer);
  const dec = model.decoder(1);
  // The prompt but its last token; each later step feeds one token and samples the next where the logits
  // are computed (the sampler the server's scheduler uses, so both give the same tokens for a seed).
  for (let i = 0; i + 1 < ids.length; i++) {
    if (opts.signal?.aborted) return;
    await dec.step([ids[i]!]);
  }
  const sampling = rowSampling(1);
  let token = ids[ids.length - 1]!;
  while (!sampler.done) {
    if (opts.signal?.aborted) return;
    sampler.prepare(sampling, 0);
    const r = await dec.stepSample([0], [token], sampling);
    const t = sampler.accept(r.tokens[0]!, r.logprobs[0]!);
    if (t === null) break;
    if (t.text || !sampler.stopped) yield t;
    token = t.token;
  }
  const rest = sampler.flush();
  if (rest) yield { token: -1, text: rest, logprob: 0 };
}
