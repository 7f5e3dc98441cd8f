// Fits L(N, D) = E + A/N^alpha + B/D^beta to (N, D, loss) observations the way Hoffmann et al. 2022
// (approach 3) did: minimise the Huber loss (delta 1e-3) of log-sum-exp(a - alpha·log N, b - beta·log D, e)
// - log L over a grid of starting points, with A = e^a, B = e^b, E = e^e; then bootstrap the runs for
// confidence intervals.
//
// Optimiser: ml-levenberg-marquardt (mljs, typed, maintained) where Hoffmann used L-BFGS. A Huber
// objective is not a sum of squares, so it is minimised by iteratively reweighted least squares with one
// Levenberg-Marquardt solve (analytic Jacobian) per reweighting: the same minimum, reached by another
// route. The full 4,500-point grid is scored first and only the best starts are refined: refining all of
// them costs minutes per bootstrap replicate for the same minimum.
import { levenbergMarquardt } from 'ml-levenberg-marquardt';
import { Rng } from '../data/rng.js';
import { gammaInterval, type GammaInterval, type ScalingLaw } from './law.js';

/** One training run reduced to what the law needs. */
export interface Observation {
  /** Parameters (the sweep records non-embedding parameters; see docs/SCALING.md). */
  N: number;
  /** Training tokens seen. */
  D: number;
  /** Final validation loss, nats per token. */
  loss: number;
  /** Where it came from (a run folder or a CSV line), for messages. */
  label?: string;
}

export interface FitOptions {
  /** Huber threshold on log-loss residuals (Hoffmann et al.: 1e-3). */
  delta?: number;
  /** Bootstrap replicates for the confidence intervals; 0 skips them (default 200). */
  bootstrap?: number;
  /** Two-sided coverage of the percentile intervals (default 0.95). */
  confidence?: number;
  /** How many of the best grid starts Levenberg-Marquardt refines (default 24). */
  refine?: number;
  /** Levenberg-Marquardt iterations per reweighting (default 10; the reweighting loop does the rest). */
  maxIterations?: number;
  seed?: number;
}

export interface Interval {
  low: number;
  high: number;
}

export interface ScalingFit {
  law: ScalingLaw;
  /** [1 - 2·beta, 1 - beta] at the fitted beta. */
  gamma: GammaInterval;
  /** Mean Huber loss of the log residuals at the optimum. */
  objective: number;
  /** log(predicted) - log(observed) per observation, in the input order. */
  residuals: number[];
  points: number;
  /** Percentile bootstrap intervals; null when `bootstrap` is 0 or too few replicates succeeded. */
  intervals: {
    E: Interval;
    A: Interval;
    B: Interval;
    alpha: Interval;
    beta: Interval;
    gammaLow: Interval;
    gammaHigh: Interval;
  } | null;
  bootstrap: { replicates: number; used: number; confidence: number };
  diagnostics: FitDiagnostics;
}

export interface FitDiagnostics {
  distinctN: number;
  distinctD: number;
  /** log10 of tokens per parameter over the observations. */
  log10TokensPerParam: Interval;
  /** Correlation of log N with log D: near ±1 the two exponents trade off against each other. */
  correlationLogNLogD: number;
  /** Why the exponents may not be identified; empty when nothing looks wrong. */
  warnings: string[];
}

// theta = [a, b, e, alpha, beta]. The bounds keep exp() finite and the exponents meaningful.
const MIN = [-20, -20, -5, 0, 0];
const MAX = [60, 60, 3, 3, 3];

/** Hoffmann et al.'s grid of starting points: 6 × 6 × 5 × 5 × 5 = 4,500. */
function hoffmannGrid(): number[][] {
  const out: number[][] = [];
  for (const a of [0, 5, 10, 15, 20, 25])
    for (const b of [0, 5, 10, 15, 20, 25])
      for (const e of [-1, -0.5, 0, 0.5, 1])
        for (const alpha of [0, 0.5, 1, 1.5, 2])
          for (const beta of [0, 0.5, 1, 1.5, 2]) out.push([a, b, e, alpha, beta]);
  return out;
}

interface Prepared {
  logN: Float64Array;
  logD: Float64Array;
  logL: Float64Array;
}

function prepare(obs: readonly Observation[], idx: readonly number[]): Prepared {
  const n = idx.length;
  const p: Prepared = { logN: new Float64Array(n), logD: new Float64Array(n), logL: new Float64Array(n) };
  idx.forEach((j, i) => {
    const o = obs[j]!;
    p.logN[i] = Math.log(o.N);
    p.logD[i] = Math.log(o.D);
    p.logL[i] = Math.log(o.loss);
  });
  return p;
}

/** The residual r = LSE - log L at point i and the softmax weights of the three terms (for the Jacobian). */
function residual(t: readonly number[], p: Prepared, i: number, w?: Float64Array): number {
  const x0 = t[0]! - t[3]! * p.logN[i]!;
  const x1 = t[1]! - t[4]! * p.logD[i]!;
  const x2 = t[2]!;
  const m = Math.max(x0, x1, x2);
  const e0 = Math.exp(x0 - m);
  const e1 = Math.exp(x1 - m);
  const e2 = Math.exp(x2 - m);
  const s = e0 + e1 + e2;
  if (w) {
    w[0] = e0 / s;
    w[1] = e1 / s;
    w[2] = e2 / s;
  }
  return m + Math.log(s) - p.logL[i]!;
}

function huber(r: number, delta: number): number {
  const a = Math.abs(r);
  return a <= delta ? 0.5 * r * r : delta * (a - 0.5 * delta);
}

function objective(t: readonly number[], p: Prepared, delta: number): number {
  let s = 0;
  for (let i = 0; i < p.logN.length; i++) s += huber(residual(t, p, i), delta);
  return s / p.logN.length;
}

/** One weighted least-squares solve: minimises sum(omega_i · r_i²) from `start`. */
function weightedLeastSquares(start: readonly number[], p: Prepared, omega: Float64Array, maxIterations: number): number[] {
  const n = p.logN.length;
  const x = Array.from({ length: n }, (_, i) => i);
  const y = new Array<number>(n).fill(0);
  const s = omega.map(Math.sqrt);
  const w = new Float64Array(3);
  const result = levenbergMarquardt(
    { x, y },
    (t) => (i) => s[i]! * residual(t, p, i),
    {
      initialValues: start.map((v, k) => Math.min(Math.max(v, MIN[k]!), MAX[k]!)),
      minValues: MIN,
      maxValues: MAX,
      maxIterations,
      // The library stops once the sum of squares falls below errorTolerance and only keeps a step that
      // improves by more than it: with log-loss residuals of 1e-3 the default (1e-7) stops far too early.
      errorTolerance: 0,
      jacobianFunction: (t) => (i) => {
        residual(t, p, i, w);
        const g = s[i]!;
        return [g * w[0]!, g * w[1]!, g * w[2]!, -g * w[0]! * p.logN[i]!, -g * w[1]! * p.logD[i]!];
      },
    },
  );
  return result.parameterValues;
}

/**
 * Minimises the Huber objective from `start` by iteratively reweighted least squares: weights
 * min(1, delta/|r|) turn the Huber loss into a quadratic that majorises it at the current point, so each
 * Levenberg-Marquardt solve cannot raise the objective (a majorise-minimise scheme). Feeding the Huber
 * loss to Levenberg-Marquardt as sqrt(2H) residuals instead fails: the Gauss-Newton step of a square-root
 * residual overshoots by a factor of two and the solver stalls at its start.
 */
function refine(start: readonly number[], p: Prepared, delta: number, maxIterations: number): number[] {
  const n = p.logN.length;
  const omega = new Float64Array(n);
  let theta = start.map((v, k) => Math.min(Math.max(v, MIN[k]!), MAX[k]!));
  let f = objective(theta, p, delta);
  for (let outer = 0; outer < 200; outer++) {
    for (let i = 0; i < n; i++) {
      const a = Math.abs(residual(theta, p, i));
      omega[i] = a <= delta ? 1 : delta / a;
    }
    const next = weightedLeastSquares(theta, p, omega, maxIterations);
    const g = objective(next, p, delta);
    if (!(g < f)) break;
    const done = f - g <= 1e-10 * f;
    theta = next;
    f = g;
    if (done) break;
  }
  return theta;
}

function minimise(p: Prepared, starts: readonly (readonly number[])[], delta: number, opts: Required<Pick<FitOptions, 'refine' | 'maxIterations'>>): number[] {
  const scored = starts.map((s) => ({ s, f: objective(s, p, delta) })).filter((x) => Number.isFinite(x.f));
  scored.sort((u, v) => u.f - v.f);
  let best: number[] | null = null;
  let bestF = Infinity;
  for (const { s } of scored.slice(0, opts.refine)) {
    const t = refine(s, p, delta, opts.maxIterations);
    const f = objective(t, p, delta);
    if (f < bestF) {
      bestF = f;
      best = t;
    }
  }
  if (!best) throw new Error('scaling fit: no starting point gave a finite objective (are the losses positive and finite?)');
  return best;
}

function toLaw(t: readonly number[]): ScalingLaw {
  return { A: Math.exp(t[0]!), B: Math.exp(t[1]!), E: Math.exp(t[2]!), alpha: t[3]!, beta: t[4]! };
}

function percentile(sorted: readonly number[], q: number): number {
  const pos = q * (sorted.length - 1);
  const lo = Math.floor(pos);
  const hi = Math.min(lo + 1, sorted.length - 1);
  return sorted[lo]! + (pos - lo) * (sorted[hi]! - sorted[lo]!);
}

function interval(xs: number[], confidence: number): Interval {
  const s = [...xs].sort((a, b) => a - b);
  return { low: percentile(s, (1 - confidence) / 2), high: percentile(s, (1 + confidence) / 2) };
}

function distinct(xs: readonly number[]): number {
  return new Set(xs.map((x) => x.toPrecision(6))).size;
}

function correlation(x: readonly number[], y: readonly number[]): number {
  const n = x.length;
  const mx = x.reduce((a, b) => a + b, 0) / n;
  const my = y.reduce((a, b) => a + b, 0) / n;
  let sxy = 0;
  let sxx = 0;
  let syy = 0;
  for (let i = 0; i < n; i++) {
    sxy += (x[i]! - mx) * (y[i]! - my);
    sxx += (x[i]! - mx) ** 2;
    syy += (y[i]! - my) ** 2;
  }
  return sxx === 0 || syy === 0 ? 1 : sxy / Math.sqrt(sxx * syy);
}

/** Minimum spread of log10(D/N) below which alpha and beta trade off against each other. */
export const MIN_TOKENS_PER_PARAM_DECADES = 0.5;

/** What the design of the runs lets the fit identify, before any fitting. */
export function diagnose(obs: readonly Observation[]): FitDiagnostics {
  const logN = obs.map((o) => Math.log(o.N));
  const logD = obs.map((o) => Math.log(o.D));
  const ratio = obs.map((o) => Math.log10(o.D / o.N));
  const distinctN = distinct(obs.map((o) => o.N));
  const distinctD = distinct(obs.map((o) => o.D));
  const log10TokensPerParam = { low: Math.min(...ratio), high: Math.max(...ratio) };
  const correlationLogNLogD = correlation(logN, logD);
  const warnings: string[] = [];
  if (obs.length < 10) warnings.push(`only ${obs.length} runs for 5 parameters: expect wide intervals`);
  if (distinctN < 3) warnings.push(`only ${distinctN} distinct model size(s): alpha (the parameter exponent) is not identified`);
  if (distinctD < 3) warnings.push(`only ${distinctD} distinct token count(s): beta (the data exponent) is not identified`);
  const spread = log10TokensPerParam.high - log10TokensPerParam.low;
  if (spread < MIN_TOKENS_PER_PARAM_DECADES) {
    warnings.push(
      `tokens per parameter spans only ${spread.toFixed(2)} decades (${(10 ** log10TokensPerParam.low).toPrecision(3)} to ${(10 ** log10TokensPerParam.high).toPrecision(3)}): ` +
        `vary it by at least ${MIN_TOKENS_PER_PARAM_DECADES} decades (train each size on several data fractions) or alpha and beta trade off`,
    );
  }
  if (Math.abs(correlationLogNLogD) > 0.95) warnings.push(`log N and log D are correlated (r = ${correlationLogNLogD.toFixed(3)}): the two exponents cannot be told apart`);
  return { distinctN, distinctD, log10TokensPerParam, correlationLogNLogD, warnings };
}

function checkObservations(obs: readonly Observation[]): void {
  if (!Array.isArray(obs)) throw new TypeError('observations: expected an array of {N, D, loss}');
  if (obs.length < 5) throw new RangeError(`observations: expected at least 5 runs to fit 5 constants (E, A, B, alpha, beta), got ${obs.length}`);
  obs.forEach((o, i) => {
    const where = o.label ? ` (${o.label})` : '';
    if (!(Number.isFinite(o.N) && o.N > 0)) throw new RangeError(`observations[${i}].N${where}: expected a positive parameter count, got ${o.N}`);
    if (!(Number.isFinite(o.D) && o.D > 0)) throw new RangeError(`observations[${i}].D${where}: expected a positive token count, got ${o.D}`);
    if (!(Number.isFinite(o.loss) && o.loss > 0)) throw new RangeError(`observations[${i}].loss${where}: expected a positive finite loss, got ${o.loss}`);
  });
}

function positive(v: number | undefined, name: string, fallback: number, integer: boolean): number {
  if (v === undefined) return fallback;
  if (!Number.isFinite(v) || v < 0 || (integer && !Number.isSafeInteger(v))) throw new RangeError(`${name}: expected a non-negative ${integer ? 'integer' : 'number'}, got ${v}`);
  return v;
}

/** Fits the law to the observations, with bootstrap intervals. Synchronous: a few seconds at most. */
export function fitScalingLaw(obs: readonly Observation[], options: FitOptions = {}): ScalingFit {
  checkObservations(obs);
  const delta = positive(options.delta, 'delta', 1e-3, false);
  if (delta === 0) throw new RangeError('delta: expected a positive Huber threshold, got 0');
  const replicates = positive(options.bootstrap, 'bootstrap', 200, true);
  const confidence = options.confidence ?? 0.95;
  if (!(confidence > 0 && confidence < 1)) throw new RangeError(`confidence: expected a number in (0, 1), got ${confidence}`);
  const opt = { refine: Math.max(1, positive(options.refine, 'refine', 24, true)), maxIterations: Math.max(1, positive(options.maxIterations, 'maxIterations', 10, true)) };
  const all = obs.map((_, i) => i);
  const grid = hoffmannGrid();
  const p = prepare(obs, all);
  const best = minimise(p, grid, delta, opt);
  const law = toLaw(best);
  const residuals = all.map((i) => residual(best, p, i));

  const samples: number[][] = [];
  const rng = new Rng(options.seed ?? 0);
  for (let r = 0; r < replicates; r++) {
    const idx = all.map(() => rng.int(0, obs.length - 1));
    // A resample with fewer than five distinct runs cannot pin down five constants: it would only add noise.
    if (new Set(idx).size < 5) continue;
    const q = prepare(obs, idx);
    // The full fit's optimum is the natural start; a few grid points guard against a replicate whose
    // minimum moved to another basin.
    samples.push(minimise(q, [best, ...grid], delta, { refine: 3, maxIterations: opt.maxIterations }));
  }
  let intervals: ScalingFit['intervals'] = null;
  if (samples.length >= 20) {
    const col = (k: number, f: (v: number) => number = (v) => v): number[] => samples.map((s) => f(s[k]!));
    intervals = {
      A: interval(col(0, Math.exp), confidence),
      B: interval(col(1, Math.exp), confidence),
      E: interval(col(2, Math.exp), confidence),
      alpha: interval(col(3), confidence),
      beta: interval(col(4), confidence),
      gammaLow: interval(col(4, (b) => 1 - 2 * b), confidence),
      gammaHigh: interval(col(4, (b) => 1 - b), confidence),
    };
  }
  const diagnostics = diagnose(obs);
  const names = ['A', 'B', 'E', 'alpha', 'beta'] as const;
  names.forEach((name, k) => {
    if (best[k]! <= MIN[k]! + 1e-6 || best[k]! >= MAX[k]! - 1e-6) {
      const value = k < 3 ? Math.exp(best[k]!) : best[k]!;
      // E on its floor is the usual case for small runs: far above the irreducible loss, the data cannot tell E from B/D^beta.
      diagnostics.warnings.push(`${name} ended on its bound (${value.toPrecision(4)}): the runs do not constrain it` + (k === 2 ? ', and E, B and beta trade off against each other' : ''));
    }
  });
  if (intervals && intervals.beta.high - intervals.beta.low > 0.3) {
    diagnostics.warnings.push(`beta's ${Math.round(confidence * 100)}% interval is ${(intervals.beta.high - intervals.beta.low).toFixed(2)} wide: gamma is not pinned down by these runs`);
  }
  return {
    law,
    gamma: gammaInterval(law.beta),
    objective: objective(best, p, delta),
    residuals,
    points: obs.length,
    intervals,
    bootstrap: { replicates, used: samples.length, confidence },
    diagnostics,
  };
}
