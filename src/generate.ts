// Streaming generation: an async iterator over sampled tokens, decoded incrementally so that memory per
// sequence stays O(layers * w * d) however long the text gets.
import { Rng } from './data/rng.js';
import type { RecurrentTransformer } from './model/transformer.js';

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
  let idx = Array.from({ length: V }, (_, i) => i);
  const topK = opts.topK ?? 0;
  if (topK > 0 && topK < V) {
    idx.sort((a, b) => logits[b]! - logits[a]!);
    idx = idx.slice(0, topK);
  }
  let mx = -Infinity;
  for (const i of idx) mx = Math.max(mx, logits[i]! / temperature);
  let probs = idx.map((i) => Math.exp(logits[i]! / temperature - mx));
  let sum = probs.reduce((a, b) => a + b, 0);
  probs = probs.map((p) => p / sum);
  const topP = opts.topP ?? 1;
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

/**
 * Generates a continuation of `prompt` (text with a tokenizer, or token ids) one token at a time:
 *
 *     for await (const t of generate(model, 'ROMEO:', { tokenizer, maxTokens: 200 })) process.stdout.write(t.text);
 */
export async function* generate(model: RecurrentTransformer, prompt: string | ArrayLike<number>, opts: GenerateOptions = {}): AsyncGenerator<GeneratedToken> {
  const maxTokens = opts.maxTokens ?? 256;
  check(maxTokens, 'maxTokens', (x) => Number.isInteger(x) && x >= 0, 'a non-negative integer');
  check(opts.temperature, 'temperature', (x) => Number.isFinite(x) && x >= 0, 'a number >= 0');
  check(opts.topK, 'topK', (x) => Number.isInteger(x) && x >= 0, 'a non-negative integer');
  check(opts.topP, 'topP', (x) => x > 0 && x <= 1, 'a number in (0, 1]');
  check(opts.seed, 'seed', (x) => Number.isSafeInteger(x) && x >= 0, 'a non-negative integer');
  const tok = opts.tokenizer;
  let ids: number[];
  if (typeof prompt === 'string') {
    if (!tok) throw new TypeError('prompt: a string prompt needs opts.tokenizer');
    ids = Array.from(tok.encode(prompt));
  } else {
    ids = Array.from(prompt);
  }
  if (ids.length === 0) throw new RangeError('prompt: must hold at least one token');
  const stopIds = new Set((opts.stop ?? []).filter((s): s is number => typeof s === 'number'));
  const stopText = (opts.stop ?? []).filter((s): s is string => typeof s === 'string' && s.length > 0);
  if (stopText.length && !tok) throw new TypeError('stop: string stop sequences need opts.tokenizer');

  const rng = new Rng(opts.seed ?? 0);
  const dec = model.decoder(1);
  const stream = tok?.decoder?.();
  let logits: Float32Array = new Float32Array(0);
  for (const id of ids) {
    if (opts.signal?.aborted) return;
    logits = await dec.step([id]);
  }
  // Text that could still turn into a stop sequence is held back until it cannot.
  let emitted = '';
  let pending = '';
  for (let n = 0; n < maxTokens; n++) {
    if (opts.signal?.aborted) return;
    const { token, logprob } = sampleToken(logits, rng, opts);
    if (stopIds.has(token)) break;
    pending += tok ? (stream ? stream.push(token) : tok.decode([token])) : '';
    const full = emitted + pending;
    let cut = -1;
    for (const s of stopText) {
      const at = full.indexOf(s, Math.max(0, emitted.length - s.length + 1));
      if (at >= 0 && (cut < 0 || at < cut)) cut = at;
    }
    if (cut >= 0) {
      const out = full.slice(emitted.length, cut);
      if (out) yield { token, text: out, logprob };
      return;
    }
    let hold = 0;
    for (const s of stopText) {
      for (let k = Math.min(s.length - 1, pending.length); k > hold; k--) {
        if (full.endsWith(s.slice(0, k))) {
          hold = k;
          break;
        }
      }
    }
    const out = pending.slice(0, pending.length - hold);
    emitted += out;
    pending = pending.slice(pending.length - hold);
    yield { token, text: out, logprob };
    if (n + 1 < maxTokens) logits = await dec.step([token]);
  }
  const rest = pending + (stream?.flush?.() ?? '');
  if (rest) yield { token: -1, text: rest, logprob: 0 };
}
