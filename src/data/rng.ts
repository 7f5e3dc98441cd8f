// Seeded pseudo-random numbers for data generation, window sampling and anything else on the
// TypeScript side that must be reproducible and resumable bit for bit.
//
// Generator: xoshiro128** 1.1 (Blackman & Vigna), 128 bits of state in four 32-bit words, period
// 2^128 - 1, written with Math.imul so every step stays in 32-bit integer arithmetic.
//
// Seeding: a seed is a non-negative safe integer. Its low and high 32-bit halves and two constants
// form a 4-word vector that goes through eight rounds of the ChaCha quarter round (with a round
// constant added each round). That mix is a bijection on 128 bits, so distinct seeds give distinct
// states, and neighbouring seeds (0, 1, 2, ...) give unrelated streams. `fork(stream)` mixes the
// current state with the stream number the same way, under different constants.

const TWO_32 = 4294967296;
const TWO_53 = 9007199254740992;
const TWO_M32 = 1 / TWO_32;

function rotl(x: number, k: number): number {
  return (x << k) | (x >>> (32 - k));
}

// Scratch for mix(): four int32 words.
const W = new Int32Array(4);

/** Eight ChaCha quarter rounds over W with a round constant: a bijection on 128 bits. */
function mix(): void {
  let a = W[0]!;
  let b = W[1]!;
  let c = W[2]!;
  let d = W[3]!;
  for (let r = 0; r < 8; r++) {
    a = (a + Math.imul(r + 1, 0x9e3779b9)) | 0;
    a = (a + b) | 0; d = rotl(d ^ a, 16);
    c = (c + d) | 0; b = rotl(b ^ c, 12);
    a = (a + b) | 0; d = rotl(d ^ a, 8);
    c = (c + d) | 0; b = rotl(b ^ c, 7);
    // Rotate the roles so that every word takes every position.
    const t = a;
    a = b;
    b = c;
    c = d;
    d = t;
  }
  W[0] = a;
  W[1] = b;
  W[2] = c;
  W[3] = d;
}

function checkSafeNonNegative(name: string, v: unknown): number {
  if (typeof v !== 'number' || !Number.isSafeInteger(v) || v < 0) {
    throw new RangeError(`${name}: expected a non-negative safe integer, got ${String(v)}`);
  }
  return v;
}

/**
 * A seeded, forkable, checkpointable PRNG (xoshiro128**).
 *
 * ```ts
 * const rng = new Rng(42);
 * rng.int(1, 6);            // a die roll
 * const data = rng.fork(1); // an independent stream for the data pipeline
 * const saved = rng.getState();
 * // ... later, bit for bit:
 * const resumed = Rng.fromState(saved);
 * ```
 */
export class Rng {
  // State as int32 words (V8 keeps them as small integers).
  private s0 = 0;
  private s1 = 0;
  private s2 = 0;
  private s3 = 0;

  /** @param seed a non-negative safe integer (default 0). */
  constructor(seed = 0) {
    checkSafeNonNegative('Rng seed', seed);
    W[0] = seed | 0; // low 32 bits (seed < 2^53, so `| 0` keeps exactly the low word)
    W[1] = Math.floor(seed / TWO_32) | 0;
    W[2] = 0x243f6a88; // pi's fraction digits, as domain constants
    W[3] = 0x85a308d3 | 0;
    mix();
    this.load();
  }

  private load(): void {
    this.s0 = W[0]!;
    this.s1 = W[1]!;
    this.s2 = W[2]!;
    this.s3 = W[3]!;
    // The all-zero state is the one fixed point of xoshiro; the mix reaches it with probability
    // 2^-128, but never let it happen.
    if ((this.s0 | this.s1 | this.s2 | this.s3) === 0) this.s3 = 1;
  }

  /** A uniform 32-bit unsigned integer, in [0, 2^32). */
  nextU32(): number {
    const s0 = this.s0;
    const s1 = this.s1;
    let s2 = this.s2;
    let s3 = this.s3;
    const result = Math.imul(rotl(Math.imul(s1, 5), 7), 9);
    const t = s1 << 9;
    s2 ^= s0;
    s3 ^= s1;
    this.s1 = s1 ^ s2;
    this.s0 = s0 ^ s3;
    this.s2 = s2 ^ t;
    this.s3 = rotl(s3, 11);
    return result >>> 0;
  }

  /** A uniform float in [0, 1) with 53 random bits (two 32-bit draws). */
  next(): number {
    const hi = this.nextU32() >>> 5; // 27 bits
    const lo = this.nextU32() >>> 6; // 26 bits
    return (hi * 67108864 + lo) / TWO_53;
  }

  /**
   * A uniform integer in [lo, hi], both inclusive, without modulo bias. `lo` and `hi` must be safe
   * integers with lo <= hi and hi - lo < 2^53.
   *
   * - up to 2^21 values: Lemire's multiply-and-reject on one 32-bit draw (exact in doubles, almost
   *   never a second draw, no division on the fast path);
   * - up to 2^32 values: the top bits of a 32-bit draw, rejected when not below the range;
   * - beyond: the same on 53-bit draws.
   */
  int(lo: number, hi: number): number {
    if (!Number.isSafeInteger(lo)) throw new RangeError(`Rng.int lo: expected a safe integer, got ${String(lo)}`);
    if (!Number.isSafeInteger(hi)) throw new RangeError(`Rng.int hi: expected a safe integer, got ${String(hi)}`);
    if (hi < lo) throw new RangeError(`Rng.int: expected lo <= hi, got lo = ${lo}, hi = ${hi}`);
    const span = hi - lo; // exact whenever it is below 2^53
    if (span > TWO_53 - 1) throw new RangeError(`Rng.int: hi - lo must be below 2^53, got lo = ${lo}, hi = ${hi}`);
    const range = span + 1;
    if (range <= 2097152) {
      // m = x * range < 2^53 is exact; floor(m / 2^32) is the candidate, m mod 2^32 decides rejection.
      // (Division and multiplication by 2^32 are exact; `%` on doubles would be a slow fmod call.)
      let m = this.nextU32() * range;
      let q = Math.floor(m * TWO_M32);
      let low = m - q * TWO_32;
      if (low < range) {
        const threshold = (TWO_32 - range) % range; // 2^32 mod range (rare path)
        while (low < threshold) {
          m = this.nextU32() * range;
          q = Math.floor(m * TWO_M32);
          low = m - q * TWO_32;
        }
      }
      return lo + q;
    }
    if (range <= TWO_32) {
      const shift = Math.clz32(span); // span >= 2^21 here, so 1 <= 32 - shift <= 32
      for (;;) {
        const x = shift === 0 ? this.nextU32() : this.nextU32() >>> shift;
        if (x < range) return lo + x;
      }
    }
    const limit = TWO_53 - (TWO_53 % range);
    for (;;) {
      const u = (this.nextU32() >>> 11) * TWO_32 + this.nextU32(); // uniform in [0, 2^53)
      if (u < limit) return lo + (u % range);
    }
  }

  /**
   * A standard normal deviate (Box-Muller, cosine branch; two uniform draws per call, no cached
   * spare, so the state is just the four words).
   */
  normal(): number {
    const u1 = 1 - this.next(); // (0, 1]
    const u2 = this.next();
    return Math.sqrt(-2 * Math.log(u1)) * Math.cos(2 * Math.PI * u2);
  }

  /**
   * An independent generator derived from the current state and `stream` (a non-negative safe
   * integer). It does not advance this generator: the same state and stream give the same child,
   * different streams give unrelated children.
   */
  fork(stream: number): Rng {
    checkSafeNonNegative('Rng.fork stream', stream);
    const child = new Rng(0); // constructed first: its seeding also uses the scratch W
    W[0] = this.s0 ^ (stream | 0) ^ 0x13198a2e;
    W[1] = this.s1 ^ (Math.floor(stream / TWO_32) | 0) ^ 0x03707344;
    W[2] = this.s2 ^ (0xa4093822 | 0);
    W[3] = this.s3 ^ 0x299f31d0;
    mix();
    child.load();
    return child;
  }

  /** A copy of this generator, in the same state. */
  clone(): Rng {
    return Rng.fromState(this.getState());
  }

  /** The state: four unsigned 32-bit integers (JSON-safe). */
  getState(): number[] {
    return [this.s0 >>> 0, this.s1 >>> 0, this.s2 >>> 0, this.s3 >>> 0];
  }

  /** Restores a state from getState(); the stream continues exactly where it was saved. */
  setState(state: readonly number[]): void {
    if (!Array.isArray(state) || state.length !== 4) {
      throw new TypeError('Rng state: expected an array of 4 unsigned 32-bit integers');
    }
    for (let i = 0; i < 4; i++) {
      const v = state[i];
      if (typeof v !== 'number' || !Number.isInteger(v) || v < 0 || v >= TWO_32) {
        throw new RangeError(`Rng state[${i}]: expected an unsigned 32-bit integer, got ${String(v)}`);
      }
    }
    if ((state[0]! | state[1]! | state[2]! | state[3]!) === 0) {
      throw new RangeError('Rng state: the all-zero state is not a valid xoshiro128** state');
    }
    this.s0 = state[0]! | 0;
    this.s1 = state[1]! | 0;
    this.s2 = state[2]! | 0;
    this.s3 = state[3]! | 0;
  }

  /** A generator in the given state (from getState()). */
  static fromState(state: readonly number[]): Rng {
    const r = new Rng(0);
    r.setState(state);
    return r;
  }
}
