// Curriculum policies: the noise-length curriculum of the copy / selective-copy tasks and the random
// window widths of DESIGN.md section 1.
//
//   NoiseCurriculum: the noise length L starts at `start` and doubles (capped at `max`) each time the
//   validation loss falls below `threshold`. Pair it with CurriculumLr (src/optim/schedule.ts):
//
//       const ev = curriculum.onEval(valLoss);
//       if (ev.changed) lrRule.onLengthChange(ev.to, curriculum.max);
//       else lrRule.onEval(valLoss, curriculum.atMax);
//
//   sampleWindow / evalWindow: training draws the window width uniformly from [min, max] per step;
//   evaluation uses floor((min + max) / 2).

import type { Rng } from '../data/rng.js';

export interface CurriculumOptions {
  /** Lstart, the first noise length, an integer >= 1 (default min(32, max)). */
  start?: number;
  /** Lmax, the final noise length, an integer >= start. */
  max: number;
  /** The validation loss below which L doubles (default 0.3). */
  threshold?: number;
}

/** The checkpointable state of a NoiseCurriculum. */
export interface NoiseCurriculumState {
  length: number;
}

/** The outcome of NoiseCurriculum.onEval. */
export interface CurriculumStep {
  changed: boolean;
  from: number;
  to: number;
}

/**
 * The noise-length curriculum: L = start, then 2·start, 4·start, ... while the validation loss is
 * below the threshold, capped at max (the last step goes to max exactly when doubling would overshoot).
 */
export class NoiseCurriculum {
  readonly start: number;
  readonly max: number;
  readonly threshold: number;
  private L: number;

  constructor(opts: CurriculumOptions) {
    if (opts === null || typeof opts !== 'object') throw new TypeError('NoiseCurriculum: expected an options object');
    const max = opts.max;
    if (typeof max !== 'number' || !Number.isSafeInteger(max) || max < 1) {
      throw new RangeError(`NoiseCurriculum max: expected an integer >= 1, got ${String(max)}`);
    }
    const start = opts.start ?? Math.min(32, max);
    if (typeof start !== 'number' || !Number.isSafeInteger(start) || start < 1 || start > max) {
      throw new RangeError(`NoiseCurriculum start: expected an integer in [1, max = ${max}], got ${String(start)}`);
    }
    const threshold = opts.threshold ?? 0.3;
    if (typeof threshold !== 'number' || !Number.isFinite(threshold) || threshold <= 0) {
      throw new RangeError(`NoiseCurriculum threshold: expected a finite positive number, got ${String(threshold)}`);
    }
    this.start = start;
    this.max = max;
    this.threshold = threshold;
    this.L = start;
  }

  /** The current noise length L. */
  get length(): number {
    return this.L;
  }

  /** Whether L has reached max. */
  get atMax(): boolean {
    return this.L >= this.max;
  }

  /** After an evaluation: doubles L (capped at max) when valLoss < threshold and L < max. */
  onEval(valLoss: number): CurriculumStep {
    if (typeof valLoss !== 'number' || !(valLoss >= 0)) {
      throw new RangeError(`NoiseCurriculum.onEval valLoss: expected a non-negative number, got ${String(valLoss)}`);
    }
    const from = this.L;
    if (valLoss < this.threshold && from < this.max) {
      this.L = Math.min(2 * from, this.max);
      return { changed: true, from, to: this.L };
    }
    return { changed: false, from, to: from };
  }

  getState(): NoiseCurriculumState {
    return { length: this.L };
  }

  setState(state: NoiseCurriculumState): void {
    if (state === null || typeof state !== 'object') throw new TypeError('NoiseCurriculum state: expected an object { length }');
    const L = state.length;
    if (typeof L !== 'number' || !Number.isSafeInteger(L) || L < this.start || L > this.max) {
      throw new RangeError(
        `NoiseCurriculum state.length: expected an integer in [${this.start}, ${this.max}], got ${String(L)}`,
      );
    }
    this.L = L;
  }
}

/** An inclusive range of window widths. */
export interface WindowRange {
  min: number;
  max: number;
}

function checkRange(name: string, r: WindowRange): void {
  if (r === null || typeof r !== 'object') throw new TypeError(`${name}: expected a window range { min, max }`);
  const { min, max } = r;
  if (typeof min !== 'number' || !Number.isSafeInteger(min) || min < 0) {
    throw new RangeError(`${name} min: expected an integer >= 0, got ${String(min)}`);
  }
  if (typeof max !== 'number' || !Number.isSafeInteger(max) || max < min) {
    throw new RangeError(`${name} max: expected an integer >= min (${min}), got ${String(max)}`);
  }
}

/** A training window width: uniform integer in [min, max] (one rng.int draw). */
export function sampleWindow(rng: Rng, r: WindowRange): number {
  checkRange('sampleWindow', r);
  return rng.int(r.min, r.max);
}

/** The evaluation window width: floor((min + max) / 2). */
export function evalWindow(r: WindowRange): number {
  checkRange('evalWindow', r);
  return Math.floor((r.min + r.max) / 2);
}
