// Small statistics helpers for the benchmarks.

/** Median of a non-empty list of numbers. */
export function median(xs) {
  if (xs.length === 0) throw new RangeError('median: empty list');
  const s = [...xs].sort((a, b) => a - b);
  const h = s.length >> 1;
  return s.length % 2 ? s[h] : (s[h - 1] + s[h]) / 2;
}

/** Rounds to `digits` decimals (for JSON output). */
export function round(x, digits = 2) {
  const f = 10 ** digits;
  return Math.round(x * f) / f;
}

/** Seconds per call of an async function: `warmup` untimed calls, then `reps` timed ones. */
export async function timeAsync(fn, { warmup = 1, reps = 3 } = {}) {
  for (let i = 0; i < warmup; i++) await fn();
  const times = [];
  for (let i = 0; i < reps; i++) {
    const t0 = process.hrtime.bigint();
    await fn();
    times.push(Number(process.hrtime.bigint() - t0) / 1e9);
  }
  return { median: median(times), min: Math.min(...times), times };
}
