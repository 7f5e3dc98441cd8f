// The byte-level BPE vocabulary and its merge loop (tiktoken's semantics).
//
// A piece (the UTF-8 bytes of one pre-token) starts as one part per byte. Repeatedly, among adjacent
// parts whose concatenated bytes are a mergeable token, the pair whose token has the lowest merge rank
// is merged (the leftmost on a tie) until no adjacent pair forms a token. A piece whose whole byte
// string is a token is that token directly (tiktoken's shortcut, kept for exact parity).
//
// Parts are always tokens, so "the concatenation of parts a and b is a token" is pair(a, b): a hash
// table of the tokens keyed by a polynomial hash of their bytes, where hash(a + b) follows from
// hash(a), hash(b) and len(b) without building the concatenation; candidates are compared byte by byte.
// Answers are memoised per (a, b), and pairs of single bytes sit in a direct 64K table.

const NO_RANK = 0x7fffffff;
/** Ranks must fit 21 bits (the heap packs rank and position into one double). */
const MAX_RANK = 1 << 21;
/** Polynomial hash of a byte string: h = h * HASH_BASE + byte (mod 2^32), from 0. */
const HASH_BASE = 0x01000193;

function hashBytes(bytes: Uint8Array, s: number, e: number): number {
  let h = 0;
  for (let k = s; k < e; k++) h = (Math.imul(h, HASH_BASE) + bytes[k]!) | 0;
  return h;
}

/** Table slot of a hash (mixed, so that the polynomial's low-quality bits do not cluster). */
function slotOf(h: number, shift: number): number {
  h = Math.imul(h ^ (h >>> 16), 0x85ebca6b);
  h = Math.imul(h ^ (h >>> 13), 0xc2b2ae35);
  return (h ^ (h >>> 16)) >>> shift;
}

/** Stored in the pair memo for "these two parts do not merge". */
const NO_PAIR = -2;
const UNKNOWN = -3;
/** The pair memo is cleared when it holds this many pairs. */
const MAX_MEMO = 1 << 19;
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
  /** All token bytes back to back: token id is flat[start[id], start[id] + len[id]); len 0: no token. */
  private readonly flat: Uint8Array;
  private readonly start: Int32Array;
  private readonly len: Int32Array;
  /** Polynomial hash of each token's bytes (see hashBytes), so that hash(a + b) comes from hash(a), hash(b). */
  private readonly hash: Int32Array;
  /** HASH_BASE ** k (mod 2^32) for k up to the longest token. */
  private readonly pow: Int32Array;
  /** Open-addressing table of token ids by hash (-1: empty). */
  private readonly table: Int32Array;
  private readonly tableShift: number;
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
    const V = tokens.length;
    this.ranks = new Int32Array(V).fill(NO_RANK);
    this.byteIds = new Int32Array(256).fill(-1);
    this.start = new Int32Array(V);
    this.len = new Int32Array(V);
    this.hash = new Int32Array(V);
    let ranksAreIds = true;
    let totalBytes = 0;
    let maxLen = 1;
    let count = 0;
    for (let id = 0; id < V; id++) {
      const t = tokens[id];
      if (t === null || t === undefined) continue;
      if (t.length === 0) throw new Error(`${what}: token ${id} is empty`);
      const rank = ranks === undefined ? id : ranks[id]!;
      if (!Number.isInteger(rank) || rank < 0 || rank >= MAX_RANK) {
        throw new Error(`${what}: token ${id} has merge rank ${rank}, expected an integer in [0, ${MAX_RANK})`);
      }
      if (rank !== id) ranksAreIds = false;
      this.ranks[id] = rank;
      this.start[id] = totalBytes;
      this.len[id] = t.length;
      this.hash[id] = hashBytes(t, 0, t.length);
      totalBytes += t.length;
      if (t.length > maxLen) maxLen = t.length;
      if (t.length === 1) this.byteIds[t[0]!] = id;
      count++;
    }
    this.ranksAreIds = ranksAreIds;
    for (let b = 0; b < 256; b++) {
      if (this.byteIds[b] === -1) throw new Error(`${what}: byte ${b} (0x${b.toString(16).padStart(2, '0')}) has no token; a byte-level BPE needs all 256`);
    }
    this.flat = new Uint8Array(totalBytes);
    for (let id = 0; id < V; id++) {
      const t = tokens[id];
      if (t != null) this.flat.set(t, this.start[id]!);
    }
    this.pow = new Int32Array(2 * maxLen + 1);
    this.pow[0] = 1;
    for (let k = 1; k < this.pow.length; k++) this.pow[k] = Math.imul(this.pow[k - 1]!, HASH_BASE);
    let bits = 8;
    while (1 << bits < count * 2) bits++;
    this.table = new Int32Array(1 << bits).fill(-1);
    this.tableShift = 32 - bits;
    for (let id = 0; id < V; id++) {
      if (this.len[id] === 0) continue;
      const same = this.find(this.hash[id]!, this.flat, this.start[id]!, this.start[id]! + this.len[id]!);
      if (same >= 0) throw new Error(`${what}: tokens ${same} and ${id} have the same bytes [${Array.from(tokens[id]!).join(', ')}]`);
      let s = slotOf(this.hash[id]!, this.tableShift);
      while (this.table[s] !== -1) s = (s + 1) & (this.table.length - 1);
      this.table[s] = id;
    }
    this.pairs = new PairTable(1 << 14);
  }

  /** The token with hash h whose bytes are bytes[s, e), or -1. */
  private find(h: number, bytes: Uint8Array, s: number, e: number): number {
    const table = this.table;
    const mask = table.length - 1;
    const n = e - s;
    for (let slot = slotOf(h, this.tableShift); ; slot = (slot + 1) & mask) {
      const id = table[slot]!;
      if (id < 0) return -1;
      if (this.hash[id] !== h || this.len[id] !== n) continue;
      const flat = this.flat;
      let p = this.start[id]!;
      let k = s;
      while (k < e && flat[p] === bytes[k]) {
        p++;
        k++;
      }
      if (k === e) return id;
    }
  }

  /** Id of the token whose bytes are exactly bytes[start, end), or -1. */
  lookup(bytes: Uint8Array, start: number, end: number): number {
    if (end - start >= this.pow.length) return -1; // longer than any token
    return this.find(hashBytes(bytes, start, end), bytes, start, end);
  }

  /** Number of ids (highest mergeable id + 1). */
  get size(): number {
    return this.tokens.length;
  }

  /**
   * The token that parts `a` and `b` merge into (the token whose bytes are a's followed by b's), or -1.
   * hash(a + b) = hash(a) * BASE^len(b) + hash(b); candidates are checked byte by byte. Memoised.
   */
  pair(a: number, b: number): number {
    const v = this.pairs.get(a, b);
    if (v !== -1) return v === NO_PAIR ? -1 : v;
    const la = this.len[a]!;
    const lb = this.len[b]!;
    const h = (Math.imul(this.hash[a]!, this.pow[lb]!) + this.hash[b]!) | 0;
    const table = this.table;
    const mask = table.length - 1;
    const flat = this.flat;
    let id = -1;
    for (let slot = slotOf(h, this.tableShift); ; slot = (slot + 1) & mask) {
      const c = table[slot]!;
      if (c < 0) break;
      if (this.hash[c] !== h || this.len[c] !== la + lb) continue;
      const pc = this.start[c]!;
      const pa = this.start[a]!;
      const pb = this.start[b]!;
      let k = 0;
      while (k < la && flat[pc + k] === flat[pa + k]) k++;
      if (k < la) continue;
      k = 0;
      while (k < lb && flat[pc + la + k] === flat[pb + k]) k++;
      if (k === lb) {
        id = c;
        break;
      }
    }
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
