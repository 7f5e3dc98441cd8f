// Axis scales and tick positions for the report's charts.

export type ScaleKind = 'linear' | 'log';

/** Maps data values in [d0, d1] to pixels in [r0, r1], linearly or in log10. */
export interface Scale {
  kind: ScaleKind;
  domain: [number, number];
  range: [number, number];
  map(v: number): number;
  ticks(): number[];
}

/** The domain of `values` for a scale: positive values only on a log scale; a single value is widened. */
export function extent(values: readonly number[], kind: ScaleKind): [number, number] | null {
  let lo = Infinity;
  let hi = -Infinity;
  for (const v of values) {
    if (!Number.isFinite(v) || (kind === 'log' && v <= 0)) continue;
    if (v < lo) lo = v;
    if (v > hi) hi = v;
  }
  if (lo > hi) return null;
  if (lo === hi) return kind === 'log' ? [lo / 2, hi * 2] : [lo - 1, hi + 1];
  return [lo, hi];
}

function niceStep(span: number, count: number): number {
  const raw = span / count;
  const p = 10 ** Math.floor(Math.log10(raw));
  const f = raw / p;
  return (f < 1.5 ? 1 : f < 3 ? 2 : f < 7 ? 5 : 10) * p;
}

/** Ticks of a linear scale: multiples of 1, 2 or 5 x 10^k, about `count` of them, inside the domain. */
export function linearTicks(lo: number, hi: number, count = 5): number[] {
  const step = niceStep(hi - lo, count);
  const out: number[] = [];
  // Multiples computed one by one (not summed) and rounded, so 3 x 0.2 prints as 0.6.
  for (let i = Math.ceil(lo / step - 1e-9); i <= Math.floor(hi / step + 1e-9); i++) out.push(Number((i * step).toPrecision(12)));
  return out;
}

/** Ticks of a log scale: the powers of ten inside the domain, with 2x and 5x when it spans 3 decades or less. */
export function logTicks(lo: number, hi: number): number[] {
  const k0 = Math.floor(Math.log10(lo));
  const k1 = Math.ceil(Math.log10(hi));
  const mult = k1 - k0 <= 3 ? [1, 2, 5] : [1];
  const out: number[] = [];
  for (let k = k0; k <= k1; k++) {
    for (const m of mult) {
      const v = m * 10 ** k;
      if (v >= lo * (1 - 1e-9) && v <= hi * (1 + 1e-9)) out.push(v);
    }
  }
  return out;
}

export function makeScale(kind: ScaleKind, domain: [number, number], range: [number, number]): Scale {
  const [d0, d1] = domain;
  const [r0, r1] = range;
  if (kind === 'log' && !(d0 > 0 && d1 > 0)) throw new RangeError(`makeScale domain: a log scale needs positive bounds, got [${d0}, ${d1}]`);
  if (!(d1 > d0)) throw new RangeError(`makeScale domain: expected lo < hi, got [${d0}, ${d1}]`);
  const t = kind === 'log' ? Math.log10 : (v: number) => v;
  const t0 = t(d0);
  const span = t(d1) - t0;
  return {
    kind,
    domain,
    range,
    map: (v: number) => r0 + ((t(v) - t0) / span) * (r1 - r0),
    ticks: () => (kind === 'log' ? logTicks(d0, d1) : linearTicks(d0, d1)),
  };
}

/** Short labels: 1.5k, 20M, 3G, 1.2P for large numbers; 0.05, 1.47 for small ones. */
export function formatTick(v: number): string {
  if (v === 0) return '0';
  const a = Math.abs(v);
  const units: Array<[number, string]> = [[1e18, 'E'], [1e15, 'P'], [1e12, 'T'], [1e9, 'G'], [1e6, 'M'], [1e3, 'k']];
  for (const [u, s] of units) if (a >= u) return `${trim(v / u)}${s}`;
  if (a >= 0.01) return trim(v);
  return v.toExponential(0);
}

function trim(v: number): string {
  return String(Number(v.toPrecision(3)));
}
