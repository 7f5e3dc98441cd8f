// The encode cache: pre-token (a slice of the text being encoded) -> its token ids.
//
// A JavaScript Map keyed by `text.slice(i, j)` spends most of its time allocating and hashing the
// substring. This table hashes the code units in place and keeps its own copy of each key, so a hit
// allocates nothing. Bounded: when it holds `capacity` pieces it is emptied and refills.

/** Returned by `get` when the piece is not cached. */
export const MISS = -0x80000000;

export class PieceCache {
  /** Per slot: hash, key offset in `chars`, key length (0: empty), value. */
  private slots: Int32Array;
  private mask: number;
  private chars: Uint16Array;
  private charsLen = 0;
  /** Ids of pieces with several tokens: count, then the ids; a value < 0 is -(offset + 1) here. */
  pool: Int32Array;
  private poolLen = 0;
  private count = 0;
  readonly capacity: number;

  constructor(capacity: number) {
    this.capacity = capacity;
    let bits = 10;
    while (1 << bits < capacity * 2 && bits < 30) bits++;
    this.slots = new Int32Array(4 << Math.min(bits, 12));
    this.mask = (this.slots.length >> 2) - 1;
    this.chars = new Uint16Array(1 << 14);
    this.pool = new Int32Array(1 << 12);
  }

  /** Hash of text[i, j) (any well-mixed 32-bit value). */
  static hash(text: string, i: number, j: number): number {
    let h = 0x811c9dc5 ^ (j - i);
    for (let k = i; k < j; k++) h = Math.imul(h ^ text.charCodeAt(k), 0x01000193);
    h ^= h >>> 15;
    h = Math.imul(h, 0x2c1b3c6d);
    return h ^ (h >>> 13);
  }

  /** The cached value of text[i, j) (with hash h): an id >= 0, -(pool offset + 1), or MISS. */
  get(text: string, i: number, j: number, h: number): number {
    const slots = this.slots;
    const chars = this.chars;
    const len = j - i;
    let s = h & this.mask;
    for (;;) {
      const o = s << 2;
      const l = slots[o + 2]!;
      if (l === 0) return MISS;
      if (l === len && slots[o] === h) {
        let off = slots[o + 1]!;
        let k = i;
        while (k < j && chars[off] === text.charCodeAt(k)) {
          off++;
          k++;
        }
        if (k === j) return slots[o + 3]!;
      }
      s = (s + 1) & this.mask;
    }
  }

  /** Caches text[i, j) (hash h, not cached yet) -> ids[0, n). */
  set(text: string, i: number, j: number, h: number, ids: Int32Array, n: number): void {
    if (this.count >= this.capacity) this.clear();
    const len = j - i;
    let value: number;
    if (n === 1) value = ids[0]!;
    else {
      if (this.poolLen + n + 1 > this.pool.length) this.pool = grow(this.pool, this.poolLen + n + 1) as Int32Array;
      this.pool[this.poolLen] = n;
      this.pool.set(ids.subarray(0, n), this.poolLen + 1);
      value = -this.poolLen - 1;
      this.poolLen += n + 1;
    }
    if (this.charsLen + len > this.chars.length) this.chars = grow(this.chars, this.charsLen + len) as Uint16Array;
    const chars = this.chars;
    const off = this.charsLen;
    for (let k = 0; k < len; k++) chars[off + k] = text.charCodeAt(i + k);
    this.charsLen += len;
    if ((this.count + 1) * 2 > this.mask + 1) this.rehash();
    this.put(h, off, len, value);
    this.count++;
  }

  clear(): void {
    this.slots.fill(0);
    this.charsLen = 0;
    this.poolLen = 0;
    this.count = 0;
  }

  private put(h: number, off: number, len: number, value: number): void {
    const slots = this.slots;
    let s = h & this.mask;
    while (slots[(s << 2) + 2] !== 0) s = (s + 1) & this.mask;
    const o = s << 2;
    slots[o] = h;
    slots[o + 1] = off;
    slots[o + 2] = len;
    slots[o + 3] = value;
  }

  private rehash(): void {
    const old = this.slots;
    this.slots = new Int32Array(old.length * 2);
    this.mask = (this.slots.length >> 2) - 1;
    for (let o = 0; o < old.length; o += 4) if (old[o + 2] !== 0) this.put(old[o]!, old[o + 1]!, old[o + 2]!, old[o + 3]!);
  }
}

function grow(a: Int32Array | Uint16Array, need: number): Int32Array | Uint16Array {
  let cap = a.length * 2;
  while (cap < need) cap *= 2;
  const b = a instanceof Int32Array ? new Int32Array(cap) : new Uint16Array(cap);
  b.set(a);
  return b;
}
