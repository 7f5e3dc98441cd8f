// The byte-level BPE vocabulary and its merge loop (tiktoken's semantics).
//
// A piece (the UTF-8 bytes of one pre-token) starts as one part per byte. Repeatedly, among adjacent
// parts whose concatenated bytes are a mergeable token, the pair whose token has the lowest merge rank
// is merged (the leftmost on a tie) until no adjacent pair forms a token. A piece whose whole byte
// string is a token is that token directly (tiktoken's shortcut, kept for exact parity).
//
// "The concatenation is a token" is answered by a pair table (left id, right id) -> merged id built
// once: every split of every mergeable token into two mergeable tokens. Parts are always tokens, so
// this is the same test as looking the concatenated bytes up, without building byte strings.

const NO_RANK = 0x7fffffff;
/** Ranks must fit 21 bits (the heap packs rank and position into one double). */
const MAX_RANK = 1 << 21;
/** Stored in the pair memo for "these two parts do not merge". */
const NO_PAIR = -2;
const UNKNOWN = -3;
/** The pair memo is cleared when it holds this many pairs. */
const MAX_MEMO = 1 << 22;
/** Pieces longer than this (in bytes) use the heap-based merge; shorter ones rescan for the minimum. */
const SCAN_LIMIT = 48;

/**
 * Open-addressing hash table (linear probing) from (a, b), two non-negative int32, to an int32 value.
 * Each slot is 4 consecutive int32 (a, b, value, unused) so a probe touches one cache line; the table
 * doubles when half full.
 */
class PairTable {
  private slots: Int32Array;
  private mask: number;
  private shift: number;
  size = 0;

  constructor(expected = 16) {
    let bits = 4;
    while (1 << bits < expected * 2) bits++;
    this.slots = new Int32Array(4 << bits).fill(-1);
    this.mask = (1 << bits) - 1;
    this.shift = 32 - bits;
  }

  get(a: number, b: number): number {
    const slots = this.slots;
    const mask = this.mask;
    let s = (Math.imul(a, 0x9e3779b1) ^ Math.imul(b + 0x7f4a7c15, 0x85ebca77)) >>> this.shift;
    for (;;) {
      const o = s << 2;
      const ka = slots[o]!;
      if (ka === a && slots[o + 1] === b) return slots[o + 2]!;
      if (ka === -1) return -1;
      s = (s + 1) & mask;
    }
  }

  /** Inserts unless present; returns the value now stored. */
  setIfAbsent(a: number, b: number, v: number): number {
    const slots = this.slots;
    let s = (Math.imul(a, 0x9e3779b1) ^ Math.imul(b + 0x7f4a7c15, 0x85ebca77)) >>> this.shift;
    for (;;) {
      const o = s << 2;
      const ka = slots[o]!;
      if (ka === -1) {
        slots[o] = a;
        slots[o + 1] = b;
        slots[o + 2] = v;
        if (++this.size * 2 > this.mask + 1) this.grow();
        return v;
      }
      if (ka === a && slots[o + 1] === b) return slots[o + 2]!;
      s = (s + 1) & this.mask;
    }
  }

  clear(): void {
    this.slots.fill(-1);
    this.size = 0;
  }

  private grow(): void {
    const old = this.slots;
    const bits = 32 - this.shift + 1;
    this.slots = new Int32Array(4 << bits).fill(-1);
    this.mask = (1 << bits) - 1;
    this.shift = 32 - bits;
    this.size = 0;
    for (let o = 0; o < old.length; o += 4) if (old[o] !== -1) this.setIfAbsent(old[o]!, old[o + 1]!, old[o + 2]!);
  }
}

/**
 * The mergeable vocabulary: token bytes by id, a merge rank per id (lower merges first), and the
 * derived lookup structures. Immutable once built; shared between tokenizers built from the same data.
 */
export class BpeVocab {
  /** Bytes of each mergeable token, by id (null: no mergeable token has that id). */
  readonly tokens: readonly (Uint8Array | null)[];
  /** Merge rank by id (NO_RANK where there is no mergeable token). */
  readonly ranks: Int32Array;
  /** Id of each single byte. */
  readonly byteIds: Int32Array;
  /** Memo of pair(a, b): the merged id, or NO_PAIR. */
  private readonly pairs: PairTable;
  /** Byte trie of the tokens: (node, byte) -> child node; root is node 0. */
  private readonly trie: PairTable;
  /** Token id ending at each trie node, or -1. */
  private readonly nodeToken: Int32Array;
  /** Trie node of each token id, or -1. */
  private readonly tokenNode: Int32Array;
  /** Whether every rank equals its id (tiktoken files, GPT-2, trained tokenizers). */
  readonly ranksAreIds: boolean;

  /** pair() of byte values (b0 << 8 | b1), UNKNOWN until first needed. */
  private readonly bytePairs = new Int32Array(1 << 16).fill(UNKNOWN);

  // Scratch for the merge loops (grown on demand).
  private prio = new Int32Array(64);
  private merged = new Int32Array(64);
  private next = new Int32Array(0);
  private prev = new Int32Array(0);
  private heap = new Float64Array(0);

  /**
   * @param tokens bytes by id (null for ids that are not mergeable tokens: gaps, special tokens)
   * @param ranks merge rank by id; defaults to the id itself
   */
  constructor(tokens: readonly (Uint8Array | null)[], ranks?: ArrayLike<number>, what = 'BPE vocabulary') {
    this.tokens = tokens;
    this.ranks = new Int32Array(tokens.length).fill(NO_RANK);
    this.byteIds = new Int32Array(256).fill(-1);
    let ranksAreIds = true;
    let totalBytes = 0;
    for (let id = 0; id < tokens.length; id++) {
      const t = tokens[id];
      if (t === null || t === undefined) continue;
      if (t.length === 0) throw new Error(`${what}: token ${id} is empty`);
      totalBytes += t.length;
    }
    this.trie = new PairTable(tokens.length * 2);
    const nodeToken = new Int32Array(totalBytes + 1).fill(-1);
    const tokenNode = new Int32Array(tokens.length).fill(-1);
    let nodes = 1;
    for (let id = 0; id < tokens.length; id++) {
      const t = tokens[id];
      if (t === null || t === undefined) continue;
      const rank = ranks === undefined ? id : ranks[id]!;
      if (!Number.isInteger(rank) || rank < 0 || rank >= MAX_RANK) {
        throw new Error(`${what}: token ${id} has merge rank ${rank}, expected an integer in [0, ${MAX_RANK})`);
      }
      if (rank !== id) ranksAreIds = false;
      this.ranks[id] = rank;
      let node = 0;
      for (let k = 0; k < t.length; k++) {
        const child = this.trie.setIfAbsent(node, t[k]!, nodes);
        if (child === nodes) nodes++;
        node = child;
      }
      if (nodeToken[node] !== -1) throw new Error(`${what}: tokens ${nodeToken[node]} and ${id} have the same bytes [${Array.from(t).join(', ')}]`);
      nodeToken[node] = id;
      tokenNode[id] = node;
      if (t.length === 1) this.byteIds[t[0]!] = id;
    }
    this.nodeToken = nodeToken;
    for (let b = 0; b < 256; b++) {
      if (this.byteIds[b] === -1) throw new Error(`${what}: byte ${b} (0x${b.toString(16).padStart(2, '0')}) has no token; a byte-level BPE needs all 256`);
    }
    this.ranksAreIds = ranksAreIds;
    this.tokenNode = tokenNode;
    this.pairs = new PairTable(1 << 14);
  }

  /** Id of the token whose bytes are exactly bytes[start, end), or -1. */
  lookup(bytes: Uint8Array, start: number, end: number): number {
    let node = 0;
    for (let k = start; k < end; k++) {
      node = this.trie.get(node, bytes[k]!);
      if (node < 0) return -1;
    }
    return this.nodeToken[node]!;
  }

  /** Number of ids (highest mergeable id + 1). */
  get size(): number {
    return this.tokens.length;
  }

  /**
   * The token that parts `a` and `b` merge into (the token whose bytes are a's followed by b's), or -1.
   * Answered by walking the trie from a's node along b's bytes, and memoised.
   */
  pair(a: number, b: number): number {
    const v = this.pairs.get(a, b);
    if (v !== -1) return v === NO_PAIR ? -1 : v;
    let node = this.tokenNode[a]!;
    const tb = this.tokens[b]!;
    for (let k = 0; k < tb.length && node >= 0; k++) node = this.trie.get(node, tb[k]!);
    const id = node < 0 ? -1 : this.nodeToken[node]!;
    if (this.pairs.size >= MAX_MEMO) this.pairs.clear();
    this.pairs.setIfAbsent(a, b, id < 0 ? NO_PAIR : id);
    return id;
  }

  /**
   * BPE of `bytes[0, n)` into `out` (room for n ids); returns the number of ids. n >= 1.
   */
  encode(bytes: Uint8Array, n: number, out: Int32Array): number {
    if (n === 1) {
      out[0] = this.byteIds[bytes[0]!]!;
      return 1;
    }
    const len = n <= SCAN_LIMIT ? this.mergeScan(bytes, n, out) : this.mergeHeap(bytes, n, out);
    if (len === 1) return 1;
    // tiktoken's shortcut: a piece whose bytes are one token is that token, even where the merges
    // would not reach it. Checked only now: a single part already is that token.
    const whole = this.lookup(bytes, 0, n);
    if (whole >= 0) {
      out[0] = whole;
      return 1;
    }
    return len;
  }

  /** pair() of two single bytes, through a 64K-entry table filled on demand. */
  private bytePair(b0: number, b1: number): number {
    const k = (b0 << 8) | b1;
    let m = this.bytePairs[k]!;
    if (m === UNKNOWN) {
      m = this.pair(this.byteIds[b0]!, this.byteIds[b1]!);
      this.bytePairs[k] = m;
    }
    return m;
  }

  /** Short pieces: keep parts in an array and rescan for the lowest rank after each merge. */
  private mergeScan(bytes: Uint8Array, n: number, ids: Int32Array): number {
    if (this.prio.length < n) {
      this.prio = new Int32Array(n * 2);
      this.merged = new Int32Array(n * 2);
    }
    const prio = this.prio;
    const merged = this.merged;
    const ranks = this.ranks;
    const byteIds = this.byteIds;
    for (let i = 0; i < n; i++) ids[i] = byteIds[bytes[i]!]!;
    for (let i = 0; i < n - 1; i++) {
      const m = this.bytePair(bytes[i]!, bytes[i + 1]!);
      merged[i] = m;
      prio[i] = m < 0 ? NO_RANK : ranks[m]!;
    }
    let len = n;
    while (len > 1) {
      let best = NO_RANK;
      let bi = -1;
      for (let i = 0; i < len - 1; i++) {
        if (prio[i]! < best) {
          best = prio[i]!;
          bi = i;
        }
      }
      if (bi < 0) break;
      ids[bi] = merged[bi]!;
      for (let k = bi + 1; k < len - 1; k++) {
        ids[k] = ids[k + 1]!;
        prio[k] = prio[k + 1]!;
        merged[k] = merged[k + 1]!;
      }
      len--;
      if (bi > 0) {
        const m = this.pair(ids[bi - 1]!, ids[bi]!);
        merged[bi - 1] = m;
        prio[bi - 1] = m < 0 ? NO_RANK : ranks[m]!;
      }
      if (bi < len - 1) {
        const m = this.pair(ids[bi]!, ids[bi + 1]!);
        merged[bi] = m;
        prio[bi] = m < 0 ? NO_RANK : ranks[m]!;
      }
    }
    return len;
  }

  /**
   * Long pieces: parts in a doubly linked list over byte positions, candidate pairs in a binary
   * min-heap keyed by (rank, position of the left part) with lazy deletion (an entry is checked
   * against the current parts when it is popped). O(n log n) instead of O(n^2).
   */
  private mergeHeap(bytes: Uint8Array, n: number, out: Int32Array): number {
    if (this.next.length < n) {
      this.next = new Int32Array(n * 2);
      this.prev = new Int32Array(n * 2);
      this.heap = new Float64Array(n * 8);
    }
    const next = this.next;
    const prev = this.prev;
    const ids = out; // ids[i]: token of the part starting at byte i (valid while i is a part start)
    const ranks = this.ranks;
    let heap = this.heap;
    let size = 0;
    const SCALE = 4294967296; // key = rank * 2^32 + position: exact in a double for rank < 2^21
    const push = (key: number): void => {
      if (size === heap.length) {
        const bigger = new Float64Array(heap.length * 2);
        bigger.set(heap);
        heap = bigger;
        this.heap = bigger;
      }
      let i = size++;
      while (i > 0) {
        const p = (i - 1) >> 1;
        if (heap[p]! <= key) break;
        heap[i] = heap[p]!;
        i = p;
      }
      heap[i] = key;
    };
    const pop = (): number => {
      const top = heap[0]!;
      const last = heap[--size]!;
      let i = 0;
      for (;;) {
        let c = 2 * i + 1;
        if (c >= size) break;
        if (c + 1 < size && heap[c + 1]! < heap[c]!) c++;
        if (heap[c]! >= last) break;
        heap[i] = heap[c]!;
        i = c;
      }
      if (size > 0) heap[i] = last;
      return top;
    };
    for (let i = 0; i < n; i++) {
      ids[i] = this.byteIds[bytes[i]!]!;
      next[i] = i + 1;
      prev[i] = i - 1;
    }
    for (let i = 0; i < n - 1; i++) {
      const m = this.bytePair(bytes[i]!, bytes[i + 1]!);
      if (m >= 0) push(ranks[m]! * SCALE + i);
    }
    const dead = -2;
    while (size > 0) {
      const key = pop();
      const rank = Math.floor(key / SCALE);
      const i = key - rank * SCALE;
      if (prev[i] === dead) continue;
      const j = next[i]!;
      if (j >= n) continue;
      const m = this.pair(ids[i]!, ids[j]!);
      if (m < 0 || ranks[m] !== rank) continue; // stale
      ids[i] = m;
      const k = next[j]!;
      next[i] = k;
      if (k < n) prev[k] = i;
      prev[j] = dead;
      const p = prev[i]!;
      if (p >= 0) {
        const mp = this.pair(ids[p]!, m);
        if (mp >= 0) push(ranks[mp]! * SCALE + p);
      }
      if (k < n) {
        const mk = this.pair(m, ids[k]!);
        if (mk >= 0) push(ranks[mk]! * SCALE + i);
      }
    }
    let len = 0;
    for (let i = 0; i < n; i = next[i]!) ids[len++] = ids[i]!;
    return len;
  }

  /**
   * BPE of `bytes` using only tokens of rank < maxRank (and without the whole-piece shortcut); used
   * to recover the merge that produced a token. Returns the ids.
   */
  encodeBelowRank(bytes: Uint8Array, maxRank: number): number[] {
    const ids = Array.from(bytes, (b) => this.byteIds[b]!);
    for (;;) {
      let best = maxRank;
      let bi = -1;
      let bm = -1;
      for (let i = 0; i + 1 < ids.length; i++) {
        const m = this.pair(ids[i]!, ids[i + 1]!);
        if (m >= 0 && this.ranks[m]! < best) {
          best = this.ranks[m]!;
          bi = i;
          bm = m;
        }
      }
      if (bi < 0) return ids;
      ids.splice(bi, 2, bm);
    }
  }
}
