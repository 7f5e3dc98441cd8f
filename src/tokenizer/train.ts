// Byte-level BPE training.
//
// The corpus is pre-tokenised and reduced to its distinct words with their counts. Pair frequencies
// are counted over the distinct words, weighted by count. Each step merges the most frequent pair
// everywhere it occurs and updates the counts incrementally: an index from each pair to the words
// that contain it gives the words to rewrite, and only their pairs change. The most frequent pair
// comes from a max-heap with lazy deletion (entries whose count is out of date are skipped).
//
// Tie-breaking (deterministic): the highest count wins; among equal counts the pair with the smaller
// left id, then the smaller right id.

import { bytesKey, concatBytes, utf8Encode } from './bytes.js';
import { GPT2_PATTERN, splitterFor } from './pretokenize.js';

export interface TrainBpeOptions {
  /** Special tokens, given the last ids in this order; occurrences in the corpus are cut out first. */
  specialTokens?: readonly string[];
  /** Pre-tokenisation pattern (default GPT-2's). */
  pattern?: string;
  /** A pair is merged only if it occurs at least this often (default 2). */
  minFrequency?: number;
  /** Called after every merge with the number of ordinary tokens so far and the target. */
  onProgress?: (tokens: number, target: number) => void;
}

export interface TrainBpeResult {
  /** Ordinary tokens by id: bytes 0..255, then one per merge. */
  tokens: Uint8Array[];
  /** The merges in order: [left id, right id, result id]. */
  merges: [number, number, number][];
}

function escapeRegExp(s: string): string {
  return s.replace(/[\\^$.*+?()[\]{}|/-]/g, '\\$&');
}

/** Binary max-heap of (count, key); ties: smaller key first. */
class PairHeap {
  private counts: number[] = [];
  private keys: number[] = [];

  get size(): number {
    return this.counts.length;
  }

  private above(c1: number, k1: number, c2: number, k2: number): boolean {
    return c1 > c2 || (c1 === c2 && k1 < k2);
  }

  push(count: number, key: number): void {
    const counts = this.counts;
    const keys = this.keys;
    let i = counts.length;
    counts.push(count);
    keys.push(key);
    while (i > 0) {
      const p = (i - 1) >> 1;
      if (!this.above(count, key, counts[p]!, keys[p]!)) break;
      counts[i] = counts[p]!;
      keys[i] = keys[p]!;
      i = p;
    }
    counts[i] = count;
    keys[i] = key;
  }

  topCount(): number {
    return this.counts[0]!;
  }

  topKey(): number {
    return this.keys[0]!;
  }

  pop(): void {
    const counts = this.counts;
    const keys = this.keys;
    const lc = counts.pop()!;
    const lk = keys.pop()!;
    const n = counts.length;
    if (n === 0) return;
    let i = 0;
    for (;;) {
      let c = 2 * i + 1;
      if (c >= n) break;
      if (c + 1 < n && this.above(counts[c + 1]!, keys[c + 1]!, counts[c]!, keys[c]!)) c++;
      if (!this.above(counts[c]!, keys[c]!, lc, lk)) break;
      counts[i] = counts[c]!;
      keys[i] = keys[c]!;
      i = c;
    }
    counts[i] = lc;
    keys[i] = lk;
  }
}

export function trainBpe(corpus: string | Iterable<string>, vocabSize: number, options: TrainBpeOptions = {}): TrainBpeResult {
  const specials = options.specialTokens ?? [];
  if (new Set(specials).size !== specials.length) throw new Error('train: specialTokens has duplicates');
  for (const s of specials) if (typeof s !== 'string' || s === '') throw new Error('train: special tokens must be non-empty strings');
  if (!Number.isInteger(vocabSize) || vocabSize < 256 + specials.length) {
    throw new Error(`train: vocabSize must be an integer >= 256 + the number of special tokens (${256 + specials.length}), got ${vocabSize}`);
  }
  if (vocabSize > 1 << 21) throw new Error(`train: vocabSize must be at most ${1 << 21}, got ${vocabSize}`);
  const minFrequency = options.minFrequency ?? 2;
  if (!(minFrequency >= 1)) throw new Error(`train: minFrequency must be >= 1, got ${minFrequency}`);
  const target = vocabSize - specials.length;
  const splitter = splitterFor(options.pattern ?? GPT2_PATTERN);
  const specialRe = specials.length > 0 ? new RegExp([...specials].sort((a, b) => b.length - a.length).map(escapeRegExp).join('|'), 'g') : null;

  // 1. Distinct words and their counts.
  const wordCounts = new Map<string, number>();
  const texts: Iterable<string> = typeof corpus === 'string' ? [corpus] : corpus;
  let index = 0;
  for (const text of texts) {
    if (typeof text !== 'string') throw new Error(`train: corpus item ${index} is not a string`);
    index++;
    const count = (a: number, b: number): void => {
      const w = text.slice(a, b);
      wordCounts.set(w, (wordCounts.get(w) ?? 0) + 1);
    };
    let start = 0;
    if (specialRe !== null) {
      specialRe.lastIndex = 0;
      for (let m = specialRe.exec(text); m !== null; m = specialRe.exec(text)) {
        splitter.split(text, start, m.index, count);
        start = m.index + m[0].length;
      }
    }
    splitter.split(text, start, text.length, count);
  }

  // 2. Words as symbol sequences (ids 0..255 = bytes).
  const words: Int32Array[] = [];
  const lens: number[] = [];
  const freq: number[] = [];
  for (const [w, c] of wordCounts) {
    const b = utf8Encode(w);
    if (b.length < 2) continue; // no pairs, nothing to learn
    words.push(Int32Array.from(b));
    lens.push(b.length);
    freq.push(c);
  }
  wordCounts.clear();

  // 3. Pair counts and the pair -> words index. key = left * K + right.
  const K = target;
  const pairCount = new Map<number, number>();
  const where = new Map<number, number[]>();
  for (let w = 0; w < words.length; w++) {
    const sym = words[w]!;
    const c = freq[w]!;
    for (let i = 0; i + 1 < sym.length; i++) {
      const key = sym[i]! * K + sym[i + 1]!;
      pairCount.set(key, (pairCount.get(key) ?? 0) + c);
      let list = where.get(key);
      if (list === undefined) where.set(key, (list = []));
      if (list[list.length - 1] !== w) list.push(w);
    }
  }
  const heap = new PairHeap();
  for (const [key, c] of pairCount) heap.push(c, key);

  // 4. Merges.
  const tokens: Uint8Array[] = [];
  const byBytes = new Map<string, number>();
  for (let b = 0; b < 256; b++) {
    tokens.push(Uint8Array.of(b));
    byBytes.set(String.fromCharCode(b), b);
  }
  const merges: [number, number, number][] = [];
  const stamp = new Int32Array(words.length).fill(-1);
  const delta = new Map<number, number>();
  let step = 0;
  while (tokens.length < target) {
    while (heap.size > 0 && pairCount.get(heap.topKey()) !== heap.topCount()) heap.pop(); // stale
    if (heap.size === 0 || heap.topCount() < minFrequency) break;
    const key = heap.topKey();
    heap.pop();
    const a = Math.floor(key / K);
    const b = key - a * K;
    const bytes = concatBytes(tokens[a]!, tokens[b]!);
    const bk = bytesKey(bytes);
    let id = byBytes.get(bk);
    if (id === undefined) {
      // A byte string reached by two different merges keeps one id.
      id = tokens.length;
      tokens.push(bytes);
      byBytes.set(bk, id);
    }
    merges.push([a, b, id]);

    const list = where.get(key) ?? [];
    where.delete(key);
    delta.clear();
    for (const w of list) {
      if (stamp[w] === step) continue;
      stamp[w] = step;
      const sym = words[w]!;
      const len = lens[w]!;
      let found = false;
      for (let i = 0; i + 1 < len; i++) {
        if (sym[i] === a && sym[i + 1] === b) {
          found = true;
          break;
        }
      }
      if (!found) continue; // stale index entry
      const c = freq[w]!;
      for (let i = 0; i + 1 < len; i++) {
        const k = sym[i]! * K + sym[i + 1]!;
        delta.set(k, (delta.get(k) ?? 0) - c);
      }
      let o = 0;
      for (let i = 0; i < len; ) {
        if (i + 1 < len && sym[i] === a && sym[i + 1] === b) {
          sym[o++] = id;
          i += 2;
        } else sym[o++] = sym[i++]!;
      }
      lens[w] = o;
      for (let i = 0; i + 1 < o; i++) {
        const l = sym[i]!;
        const r = sym[i + 1]!;
        const k = l * K + r;
        delta.set(k, (delta.get(k) ?? 0) + c);
        if (l === id || r === id) {
          // Only pairs with the new token are new to this word.
          let wl = where.get(k);
          if (wl === undefined) where.set(k, (wl = []));
          if (wl[wl.length - 1] !== w) wl.push(w);
        }
      }
    }
    for (const [k, d] of delta) {
      if (d === 0) continue;
      const n = (pairCount.get(k) ?? 0) + d;
      if (n <= 0) {
        pairCount.delete(k);
        where.delete(k);
      } else {
        pairCount.set(k, n);
        heap.push(n, k);
      }
    }
    step++;
    options.onProgress?.(tokens.length, target);
  }
  return { tokens, merges };
}
