// How fast a corpus keeps producing new token windows: the number n(D) of distinct windows of k tokens
// in the first D tokens, on nested prefixes D = minTokens·2^j (and the whole corpus), fitted to
// n(D) = K·D^h. The paper's efficient model needs parameters in proportion to the unique sequences that
// training meets, so h is the corpus's own counterpart of gamma.
//
// One pass, streaming; each k keeps either a HyperLogLog (bounded memory, the default) or an exact set of
// 53-bit window hashes. Windows are hashed with two rolling polynomial hashes mod 2^32 (different odd
// multipliers), each finished by a 32-bit mixer: 64 bits of hash (exact mode keeps 53). Polynomial hashes
// mod 2^32 are not universal (strings built for it, like Thue-Morse sequences, collide), but on text a
// collision among a few hundred million windows is unlikely, and the HyperLogLog's own error is far larger.
import { createReadStream } from 'node:fs';
import { stat } from 'node:fs/promises';
import { chunkSplitPoint } from '../data/text.js';
import { BpeTokenizer } from '../tokenizer/index.js';
import { HyperLogLog, mix32 } from './hll.js';

export type CountMethod = 'hll' | 'exact';
/** 'char': Unicode code points (a char tokenizer up to relabelling); 'gpt2': GPT-2 BPE ids. */
export type CorpusTokens = 'char' | 'gpt2';

export const DEFAULT_WINDOW_LENGTHS: readonly number[] = [1, 2, 4, 8, 16, 32, 64];

export interface WindowCounterOptions {
  /** Window lengths k (default 1, 2, 4, ..., 64). */
  ks?: readonly number[];
  method?: CountMethod;
  /** HyperLogLog precision: 2^p registers per k (default 16: 0.4% standard error, 64 KiB). */
  precision?: number;
  /** The first prefix measured; later ones double (default 1024 tokens). */
  minTokens?: number;
}

/** n(D) for every k at one prefix length D. */
export interface PrefixCount {
  D: number;
  /** distinct[i] is the number of distinct windows of length ks[i] in the first D tokens. */
  distinct: number[];
}

export interface WindowCounts {
  ks: number[];
  method: CountMethod;
  /** Expected relative standard error of each count (0 when exact, up to hash collisions). */
  relativeError: number;
  tokens: number;
  prefixes: PrefixCount[];
}

const P1 = 0x01000193; // odd multipliers: invertible mod 2^32, so the rolling update can remove a token
const P2 = 0x9e3779b1;
const TWO_21 = 2097152;

interface KState {
  k: number;
  h1: number;
  h2: number;
  /** P^k mod 2^32: the weight of the token that leaves the window. */
  pk1: number;
  pk2: number;
  hll: HyperLogLog | null;
  set: Set<number> | null;
}

function powMod32(p: number, k: number): number {
  let r = 1;
  for (let i = 0; i < k; i++) r = Math.imul(r, p);
  return r;
}

/** Streams tokens in and records n(D) at each doubling of D. */
export class WindowCounter {
  readonly ks: number[];
  readonly method: CountMethod;
  readonly #states: KState[];
  readonly #ring: Int32Array;
  readonly #prefixes: PrefixCount[] = [];
  #tokens = 0;
  #next: number;
  readonly #relativeError: number;

  constructor(options: WindowCounterOptions = {}) {
    const ks = [...(options.ks ?? DEFAULT_WINDOW_LENGTHS)];
    if (ks.length === 0 || !ks.every((k) => Number.isSafeInteger(k) && k >= 1 && k <= 4096)) {
      throw new RangeError(`ks: expected window lengths that are integers in [1, 4096], got ${JSON.stringify(options.ks)}`);
    }
    this.ks = [...new Set(ks)].sort((a, b) => a - b);
    this.method = options.method ?? 'hll';
    if (this.method !== 'hll' && this.method !== 'exact') throw new RangeError(`method: expected 'hll' or 'exact', got ${String(this.method)}`);
    const minTokens = options.minTokens ?? 1024;
    if (!Number.isSafeInteger(minTokens) || minTokens < 1) throw new RangeError(`minTokens: expected a positive integer, got ${minTokens}`);
    this.#next = minTokens;
    const precision = options.precision ?? 16;
    this.#states = this.ks.map((k) => ({
      k,
      h1: 0,
      h2: 0,
      pk1: powMod32(P1, k),
      pk2: powMod32(P2, k),
      hll: this.method === 'hll' ? new HyperLogLog(precision) : null,
      set: this.method === 'exact' ? new Set<number>() : null,
    }));
    this.#relativeError = this.method === 'hll' ? this.#states[0]!.hll!.relativeError : 0;
    this.#ring = new Int32Array(this.ks[this.ks.length - 1]!);
  }

  get tokens(): number {
    return this.#tokens;
  }

  /** Feeds the next tokens (non-negative integer ids). */
  push(tokens: ArrayLike<number>): void {
    const ring = this.#ring;
    const R = ring.length;
    for (let j = 0; j < tokens.length; j++) {
      // +1: a window of zeros must not hash like an empty one.
      const t = (tokens[j]! + 1) | 0;
      const pos = this.#tokens;
      for (const s of this.#states) {
        const out = pos >= s.k ? ring[(pos - s.k) % R]! : 0;
        s.h1 = (Math.imul(s.h1, P1) + t - Math.imul(out, s.pk1)) | 0;
        s.h2 = (Math.imul(s.h2, P2) + t - Math.imul(out, s.pk2)) | 0;
        if (pos + 1 >= s.k) {
          const a = mix32(s.h1 ^ s.k);
          const b = mix32((s.h2 + Math.imul(s.k, 0x27d4eb2d)) | 0);
          if (s.hll) s.hll.add(a, b);
          else s.set!.add(a * TWO_21 + (b >>> 11));
        }
      }
      ring[pos % R] = t;
      this.#tokens = pos + 1;
      if (this.#tokens === this.#next) {
        this.#snapshot();
        this.#next *= 2;
      }
    }
  }

  #snapshot(): void {
    this.#prefixes.push({ D: this.#tokens, distinct: this.#states.map((s) => (s.hll ? s.hll.count() : s.set!.size)) });
  }

  /** The counts so far; the whole stream is the last prefix. */
  result(): WindowCounts {
    if (this.#prefixes.at(-1)?.D !== this.#tokens && this.#tokens > 0) this.#snapshot();
    return { ks: [...this.ks], method: this.method, relativeError: this.#relativeError, tokens: this.#tokens, prefixes: this.#prefixes.map((p) => ({ D: p.D, distinct: [...p.distinct] })) };
  }
}

/** A power law n = K·D^h fitted by least squares on log n against log D. */
export interface PowerLawFit {
  K: number;
  h: number;
  /** Coefficient of determination in log space. */
  r2: number;
  /** The slope between the last two prefixes: where the curve is heading, as windows saturate. */
  hLast: number;
  points: number;
}

export function fitPowerLaw(D: readonly number[], n: readonly number[]): PowerLawFit {
  if (D.length !== n.length) throw new RangeError(`fitPowerLaw: D and n must have the same length, got ${D.length} and ${n.length}`);
  const pts = D.map((d, i) => [d, n[i]!] as const).filter(([d, v]) => d > 0 && v > 0);
  if (pts.length < 2) throw new RangeError(`fitPowerLaw: expected at least 2 points with D > 0 and n > 0, got ${pts.length}`);
  const x = pts.map(([d]) => Math.log(d));
  const y = pts.map(([, v]) => Math.log(v));
  const m = x.length;
  const mx = x.reduce((a, b) => a + b, 0) / m;
  const my = y.reduce((a, b) => a + b, 0) / m;
  let sxy = 0;
  let sxx = 0;
  let syy = 0;
  for (let i = 0; i < m; i++) {
    sxy += (x[i]! - mx) * (y[i]! - my);
    sxx += (x[i]! - mx) ** 2;
    syy += (y[i]! - my) ** 2;
  }
  if (sxx === 0) throw new RangeError('fitPowerLaw: every point has the same D');
  const h = sxy / sxx;
  const r2 = syy === 0 ? 1 : (sxy * sxy) / (sxx * syy);
  const hLast = (y[m - 1]! - y[m - 2]!) / (x[m - 1]! - x[m - 2]!);
  return { K: Math.exp(my - h * mx), h, r2, hLast, points: m };
}

/** One row per k: the fitted exponent of the corpus. */
export interface WindowExponent extends PowerLawFit {
  k: number;
  /** Distinct windows in the whole corpus. */
  distinct: number;
}

export function windowExponents(counts: WindowCounts): WindowExponent[] {
  const D = counts.prefixes.map((p) => p.D);
  return counts.ks.map((k, i) => {
    const n = counts.prefixes.map((p) => p.distinct[i]!);
    return { k, distinct: n[n.length - 1] ?? 0, ...fitPowerLaw(D, n) };
  });
}

export interface CountCorpusOptions extends WindowCounterOptions {
  tokens?: CorpusTokens;
  /** Stop after this many tokens (default: the whole file). */
  maxTokens?: number;
}

/** Streams a text file through the counter: memory stays bounded (HLL) whatever the file's size. */
export async function countCorpus(path: string, options: CountCorpusOptions = {}): Promise<WindowCounts> {
  const s = await stat(path).catch(() => null);
  if (!s?.isFile()) throw new Error(`${path}: expected a text file`);
  const kind = options.tokens ?? 'char';
  if (kind !== 'char' && kind !== 'gpt2') throw new RangeError(`tokens: expected 'char' or 'gpt2', got ${String(kind)}`);
  const maxTokens = options.maxTokens ?? Infinity;
  const counter = new WindowCounter(options);
  const bpe = kind === 'gpt2' ? BpeTokenizer.gpt2() : null;
  const decoder = new TextDecoder('utf-8');
  let carry = '';
  const feed = (text: string): void => {
    let ids: ArrayLike<number>;
    if (bpe) ids = bpe.encodeOrdinary(text);
    else {
      const cps: number[] = [];
      for (const ch of text) cps.push(ch.codePointAt(0)!);
      ids = cps;
    }
    const room = maxTokens - counter.tokens;
    counter.push(ids.length > room ? Array.prototype.slice.call(ids, 0, room) as number[] : ids);
  };
  for await (const chunk of createReadStream(path, { highWaterMark: 1 << 20 })) {
    const text = carry + decoder.decode(chunk as Buffer, { stream: true });
    // BPE merges never cross the cut that chunkSplitPoint picks, so chunked ids equal whole-file ids;
    // a code point is whole once decoded, but a surrogate pair must not be split either.
    const cut = chunkSplitPoint(text);
    carry = text.slice(cut);
    feed(text.slice(0, cut));
    if (counter.tokens >= maxTokens) break;
  }
  if (counter.tokens < maxTokens) feed(carry + decoder.decode());
  return counter.result();
}
