// Gu & Dao's copy and selective-copy tasks, as DESIGN.md section 1 defines them.
//
//   alphabet A (default 16), M payload tokens (default 16), L noise tokens.
//   Token 0 is noise, A-1 is the recall marker, payload tokens are uniform in 1..A-2.
//   copy:            [M payload][L zeros][M markers]
//   selective-copy:  the M payload tokens at M sorted, distinct, uniformly random positions among the
//                    first M+L (an exact-uniform M-subset), zeros elsewhere, then the M markers.
//   target:          the payload in order, scored at the M marker positions (the last M).
//   sequence length: M + L + M.
//
// Random draws, per row in order: the M payload tokens (rng.int(1, A-2) each), then for
// selective-copy the M positions (Floyd's algorithm, M draws). The batch is a pure function of the
// generator's state and the options.

import type { Rng } from './rng.js';

export type CopyTask = 'copy' | 'selective-copy';

/** A batch of copy / selective-copy examples. */
export interface CopyBatch {
  /** Input tokens, [batch, seqLen] row-major, seqLen = M + L + M. */
  tokens: Int32Array;
  /** Targets, [batch, M] row-major: the payload in order, scored at the last M positions. */
  targets: Int32Array;
  batch: number;
  seqLen: number;
  M: number;
}

export interface CopyTaskOptions {
  task: CopyTask;
  /** Alphabet size A, >= 3 (default 16): 0 noise, 1..A-2 payload, A-1 marker. Also the vocabulary size. */
  alphabet?: number;
  /** Payload tokens to copy, >= 1 (default 16). */
  M?: number;
  /** Noise tokens L, >= 0. */
  noise: number;
}

/** CopyTaskOptions with the defaults filled in and checked. */
export interface ResolvedCopyTaskOptions {
  task: CopyTask;
  alphabet: number;
  M: number;
  noise: number;
}

/** The noise (padding) token. */
export const COPY_NOISE_TOKEN = 0;

/** The recall marker of an alphabet of size A: A - 1. */
export function copyMarkerToken(alphabet: number): number {
  return alphabet - 1;
}

const MAX_ELEMENTS = 2 ** 31 - 1;

function checkInt(name: string, v: unknown, min: number): number {
  if (typeof v !== 'number' || !Number.isSafeInteger(v) || v < min) {
    throw new RangeError(`${name}: expected an integer >= ${min}, got ${String(v)}`);
  }
  return v;
}

/** Fills in the defaults (alphabet 16, M 16) and validates every field. */
export function resolveCopyTaskOptions(opts: CopyTaskOptions): ResolvedCopyTaskOptions {
  if (opts === null || typeof opts !== 'object') throw new TypeError('copy task options: expected an object');
  const task = opts.task;
  if (task !== 'copy' && task !== 'selective-copy') {
    throw new RangeError(`copy task options.task: expected 'copy' or 'selective-copy', got ${String(task)}`);
  }
  const alphabet = checkInt('copy task options.alphabet', opts.alphabet ?? 16, 3);
  const M = checkInt('copy task options.M', opts.M ?? 16, 1);
  const noise = checkInt('copy task options.noise', opts.noise, 0);
  if (2 * M + noise > MAX_ELEMENTS) {
    throw new RangeError(`copy task options: sequence length M + noise + M = ${2 * M + noise} is too large`);
  }
  return { task, alphabet, M, noise };
}

/** The sequence length M + L + M (4128 for M = 16, L = 4096). */
export function copySeqLen(opts: Pick<CopyTaskOptions, 'M' | 'noise'>): number {
  if (opts === null || typeof opts !== 'object') throw new TypeError('copy task options: expected an object');
  const M = checkInt('copy task options.M', opts.M ?? 16, 1);
  const noise = checkInt('copy task options.noise', opts.noise, 0);
  return 2 * M + noise;
}

/**
 * Draws `batch` examples of the copy or selective-copy task from `rng` (which it advances).
 *
 * ```ts
 * const b = copyBatch(rng, 64, { task: 'selective-copy', noise: 4096 });
 * // b.tokens: Int32Array [64, 4128]; b.targets: Int32Array [64, 16]
 * ```
 */
export function copyBatch(rng: Rng, batch: number, opts: CopyTaskOptions): CopyBatch {
  const { task, alphabet, M, noise } = resolveCopyTaskOptions(opts);
  checkInt('copyBatch batch', batch, 1);
  const seqLen = 2 * M + noise;
  if (batch * seqLen > MAX_ELEMENTS) {
    throw new RangeError(`copyBatch batch: batch * seqLen = ${batch} * ${seqLen} exceeds ${MAX_ELEMENTS} tokens`);
  }
  const tokens = new Int32Array(batch * seqLen); // zero-filled: noise everywhere to begin with
  const targets = new Int32Array(batch * M);
  const marker = alphabet - 1;
  const payloadMax = alphabet - 2;
  const span = M + noise; // positions available to the payload
  const positions = task === 'selective-copy' ? new Int32Array(M) : null;
  const chosen = task === 'selective-copy' ? new Set<number>() : null;

  for (let b = 0; b < batch; b++) {
    const row = b * seqLen;
    const trow = b * M;
    for (let i = 0; i < M; i++) targets[trow + i] = rng.int(1, payloadMax);

    if (positions === null || chosen === null) {
      for (let i = 0; i < M; i++) tokens[row + i] = targets[trow + i]!;
    } else {
      // Floyd's algorithm: a uniformly random M-subset of [0, span), M draws, O(M) expected.
      chosen.clear();
      let k = 0;
      for (let j = span - M; j < span; j++) {
        const t = rng.int(0, j);
        const pick = chosen.has(t) ? j : t;
        chosen.add(pick);
        positions[k++] = pick;
      }
      positions.sort();
      for (let i = 0; i < M; i++) tokens[row + positions[i]!] = targets[trow + i]!;
    }
    tokens.fill(marker, row + span, row + seqLen);
  }
  return { tokens, targets, batch, seqLen, M };
}
