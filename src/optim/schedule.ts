// Learning-rate schedules.
//
// Step schedules are plain functions `(step) => lr`: constantLr, warmupCosine.
// The paper's (arXiv 2402.14746) evaluation-driven rules are small stateful classes with
// getState()/setState() so that a trainer can checkpoint and resume them:
//   - CurriculumLr, for the copy / selective-copy noise-length curriculum:
//       at each change of the noise length L < Lmax:  lr = lr0 * (1 - 0.5 * L / Lmax)
//       at full length, after each evaluation:        lr = lr0 * (1 - exp(-valLoss)), only if lower
//     or, compounding as the author's code for the copy tasks does (copy_sel_copy/recur.py), lr0 itself
//     becomes lr0 * (1 - 0.5 * L / Lmax) at each change, Lmax included, and the full-length rule uses it.
//   - AdaptiveLmLr (and the pure lmAdaptiveLr), for language modelling:
//       lr = clip(lr0 * (1 - exp(target - valLoss)), minLr, lr0)

/** A learning rate as a function of the optimizer step (0-based). */
export type LrSchedule = (step: number) => number;

function checkLr(name: string, v: unknown): number {
  if (typeof v !== 'number' || !Number.isFinite(v) || v <= 0) {
    throw new RangeError(`${name}: expected a finite positive number, got ${String(v)}`);
  }
  return v;
}

function checkMinLr(name: string, v: unknown, lr: number): number {
  if (typeof v !== 'number' || !Number.isFinite(v) || v < 0 || v > lr) {
    throw new RangeError(`${name}: expected a finite number in [0, ${lr}], got ${String(v)}`);
  }
  return v;
}

function checkStep(v: unknown): number {
  if (typeof v !== 'number' || !Number.isFinite(v) || v < 0) {
    throw new RangeError(`step: expected a finite non-negative number, got ${String(v)}`);
  }
  return v;
}

function checkLoss(name: string, v: unknown): number {
  // A cross-entropy: non-negative; +Infinity is tolerated (it only means "as high as possible").
  if (typeof v !== 'number' || !(v >= 0)) {
    throw new RangeError(`${name}: expected a non-negative number, got ${String(v)}`);
  }
  return v;
}

function checkOptions(name: string, o: unknown): void {
  if (o === null || typeof o !== 'object') throw new TypeError(`${name}: expected an options object`);
}

/** The same learning rate at every step. */
export function constantLr(lr: number): LrSchedule {
  checkLr('constantLr lr', lr);
  return (step: number) => {
    checkStep(step);
    return lr;
  };
}

export interface WarmupCosineOptions {
  /** Peak learning rate, reached at step `warmup`. */
  lr: number;
  /** Warmup steps, an integer >= 0: lr * step / warmup for step < warmup. */
  warmup: number;
  /** The step at which the cosine reaches minLr, an integer > warmup. */
  total: number;
  /** Final learning rate, in [0, lr] (default 0); held from step `total` on. */
  minLr?: number;
}

/**
 * Linear warmup from 0 to `lr` over `warmup` steps, then a half cosine from `lr` down to `minLr` at
 * step `total`, and `minLr` after:
 *
 *     step < warmup:          lr * step / warmup
 *     warmup <= step < total: minLr + (lr - minLr) * (1 + cos(pi * (step - warmup) / (total - warmup))) / 2
 *     step >= total:          minLr
 */
export function warmupCosine(opts: WarmupCosineOptions): LrSchedule {
  checkOptions('warmupCosine', opts);
  const lr = checkLr('warmupCosine lr', opts.lr);
  const { warmup, total } = opts;
  if (typeof warmup !== 'number' || !Number.isSafeInteger(warmup) || warmup < 0) {
    throw new RangeError(`warmupCosine warmup: expected an integer >= 0, got ${String(warmup)}`);
  }
  if (typeof total !== 'number' || !Number.isSafeInteger(total) || total <= warmup) {
    throw new RangeError(`warmupCosine total: expected an integer > warmup (${warmup}), got ${String(total)}`);
  }
  const minLr = checkMinLr('warmupCosine minLr', opts.minLr ?? 0, lr);
  const decay = total - warmup;
  return (step: number) => {
    checkStep(step);
    if (step < warmup) return (lr * step) / warmup;
    if (step >= total) return minLr;
    const progress = (step - warmup) / decay;
    return minLr + (lr - minLr) * 0.5 * (1 + Math.cos(Math.PI * progress));
  };
}

/** The checkpointable state of CurriculumLr and AdaptiveLmLr. */
export interface LrState {
  lr: number;
  /** CurriculumLr with `compound`: the base rate after the cuts so far. */
  base?: number;
}

function checkState(name: string, s: unknown): number {
  if (s === null || typeof s !== 'object') throw new TypeError(`${name}: expected an object { lr }`);
  const lr = (s as { lr?: unknown }).lr;
  if (typeof lr !== 'number' || !Number.isFinite(lr) || lr < 0) {
    throw new RangeError(`${name}.lr: expected a finite non-negative number, got ${String(lr)}`);
  }
  return lr;
}

export interface CurriculumLrOptions {
  /** The base learning rate lr0 (the rate before any curriculum step). */
  lr0: number;
  /** A floor for the full-length rule, in [0, lr0] (default 0, the paper's rule). */
  minLr?: number;
  /**
   * Compound the cuts, as the author's code does: each change of length multiplies the base rate by
   * (1 - 0.5 L / Lmax), reaching Lmax too, and the full-length rule scales the base rate so cut (0.3 lr0 after
   * the steps 128 -> 4096). Default false: every cut is taken from lr0, and reaching Lmax cuts nothing.
   */
  compound?: boolean;
}

/**
 * The paper's learning-rate rule for the noise-length curriculum (copy / selective copy).
 *
 * - Starts at lr0.
 * - `onLengthChange(L, Lmax)`, called when the curriculum moves to noise length L: for L < Lmax,
 *   lr = lr0 * (1 - 0.5 * L / Lmax). Reaching L = Lmax leaves lr as it is; from there on the
 *   full-length rule decides.
 * - `onEval(valLoss, atFullLength)`: at full length, lr = max(minLr, lr0 * (1 - exp(-valLoss))), applied
 *   only when lower than the current lr, so lr never rises at full length. Below full length, no change.
 */
export class CurriculumLr {
  readonly lr0: number;
  readonly minLr: number;
  readonly compound: boolean;
  private lr: number;
  private base: number;

  constructor(opts: CurriculumLrOptions) {
    checkOptions('CurriculumLr', opts);
    this.lr0 = checkLr('CurriculumLr lr0', opts.lr0);
    this.minLr = checkMinLr('CurriculumLr minLr', opts.minLr ?? 0, this.lr0);
    if (opts.compound !== undefined && typeof opts.compound !== 'boolean') {
      throw new TypeError(`CurriculumLr compound: expected a boolean, got ${String(opts.compound)}`);
    }
    this.compound = opts.compound ?? false;
    this.lr = this.lr0;
    this.base = this.lr0;
  }

  /** The curriculum moved to noise length L (of Lmax); returns the learning rate now in force. */
  onLengthChange(L: number, Lmax: number): number {
    if (typeof Lmax !== 'number' || !Number.isSafeInteger(Lmax) || Lmax < 1) {
      throw new RangeError(`CurriculumLr.onLengthChange Lmax: expected an integer >= 1, got ${String(Lmax)}`);
    }
    if (typeof L !== 'number' || !Number.isSafeInteger(L) || L < 0 || L > Lmax) {
      throw new RangeError(`CurriculumLr.onLengthChange L: expected an integer in [0, ${Lmax}], got ${String(L)}`);
    }
    if (this.compound) {
      this.base *= 1 - (0.5 * L) / Lmax;
      this.lr = this.base;
    } else if (L < Lmax) {
      this.lr = this.lr0 * (1 - (0.5 * L) / Lmax);
    }
    return this.lr;
  }

  /** After an evaluation; returns the learning rate now in force. */
  onEval(valLoss: number, atFullLength: boolean): number {
    checkLoss('CurriculumLr.onEval valLoss', valLoss);
    if (typeof atFullLength !== 'boolean') {
      throw new TypeError(`CurriculumLr.onEval atFullLength: expected a boolean, got ${String(atFullLength)}`);
    }
    if (atFullLength) {
      const candidate = Math.max(this.minLr, this.base * (1 - Math.exp(-valLoss)));
      if (candidate < this.lr) this.lr = candidate;
    }
    return this.lr;
  }

  /** The learning rate in force. */
  current(): number {
    return this.lr;
  }

  getState(): LrState {
    return this.compound ? { lr: this.lr, base: this.base } : { lr: this.lr };
  }

  setState(state: LrState): void {
    this.lr = checkState('CurriculumLr state', state);
    if (this.compound) {
      const base = (state as { base?: unknown }).base;
      if (typeof base !== 'number' || !Number.isFinite(base) || base < 0 || base > this.lr0) {
        throw new RangeError(`CurriculumLr state.base: expected a number in [0, ${this.lr0}], got ${String(base)}`);
      }
      this.base = base;
    }
  }
}

export interface LmAdaptiveLrOptions {
  /** The maximum (initial) learning rate. */
  lr0: number;
  /** The target validation loss: at valLoss <= target the rate is minLr. */
  target: number;
  /** The floor, in [0, lr0] (default 0). */
  minLr?: number;
}

interface ResolvedLmOptions {
  lr0: number;
  target: number;
  minLr: number;
}

function resolveLm(name: string, opts: LmAdaptiveLrOptions): ResolvedLmOptions {
  checkOptions(name, opts);
  const lr0 = checkLr(`${name} lr0`, opts.lr0);
  const target = opts.target;
  if (typeof target !== 'number' || !Number.isFinite(target)) {
    throw new RangeError(`${name} target: expected a finite number, got ${String(target)}`);
  }
  const minLr = checkMinLr(`${name} minLr`, opts.minLr ?? 0, lr0);
  return { lr0, target, minLr };
}

function lmRule(o: ResolvedLmOptions, valLoss: number): number {
  const lr = o.lr0 * (1 - Math.exp(o.target - valLoss));
  return Math.min(o.lr0, Math.max(o.minLr, lr));
}

/**
 * The paper's language-modelling rule as a pure function of the validation loss:
 * `clip(lr0 * (1 - exp(target - valLoss)), minLr, lr0)`.
 */
export function lmAdaptiveLr(opts: LmAdaptiveLrOptions): (valLoss: number) => number {
  const o = resolveLm('lmAdaptiveLr', opts);
  return (valLoss: number) => lmRule(o, checkLoss('lmAdaptiveLr valLoss', valLoss));
}

/** The LM rule with state: starts at lr0; each evaluation sets lr = lmAdaptiveLr(opts)(valLoss). */
export class AdaptiveLmLr {
  readonly lr0: number;
  readonly target: number;
  readonly minLr: number;
  private lr: number;

  constructor(opts: LmAdaptiveLrOptions) {
    const o = resolveLm('AdaptiveLmLr', opts);
    this.lr0 = o.lr0;
    this.target = o.target;
    this.minLr = o.minLr;
    this.lr = o.lr0;
  }

  /** After an evaluation; returns the new learning rate. */
  onEval(valLoss: number): number {
    checkLoss('AdaptiveLmLr.onEval valLoss', valLoss);
    this.lr = lmRule(this, valLoss);
    return this.lr;
  }

  current(): number {
    return this.lr;
  }

  getState(): LrState {
    return { lr: this.lr };
  }

  setState(state: LrState): void {
    this.lr = checkState('AdaptiveLmLr state', state);
  }
}
