// Flag parsing helpers for the `rt` command: typed values with errors that name the flag.
export type Flags = Record<string, string | boolean | undefined>;

export function num(flags: Flags, name: string, fallback: number): number;
export function num(flags: Flags, name: string, fallback?: number): number | undefined;
export function num(flags: Flags, name: string, fallback?: number): number | undefined {
  const v = flags[name];
  if (v === undefined) return fallback;
  const n = typeof v === 'string' ? Number(v) : NaN;
  if (!Number.isFinite(n)) throw new UsageError(`--${name}: expected a number, got '${String(v)}'`);
  return n;
}

export function int(flags: Flags, name: string, fallback: number): number;
export function int(flags: Flags, name: string, fallback?: number): number | undefined;
export function int(flags: Flags, name: string, fallback?: number): number | undefined {
  const n = num(flags, name, fallback);
  if (n !== undefined && !Number.isSafeInteger(n)) throw new UsageError(`--${name}: expected an integer, got '${String(flags[name])}'`);
  return n;
}

/** An optional integer flag that must be >= 1 when given. */
export function positiveInt(flags: Flags, name: string): number | undefined {
  const n = int(flags, name);
  if (n !== undefined && n < 1) throw new UsageError(`--${name}: expected an integer >= 1, got '${String(flags[name])}'`);
  return n;
}

export function str<T extends string>(flags: Flags, name: string, choices: readonly T[], fallback: T): T {
  const v = flags[name];
  if (v === undefined) return fallback;
  if (typeof v !== 'string' || !(choices as readonly string[]).includes(v)) {
    throw new UsageError(`--${name}: expected one of ${choices.join(', ')}, got '${String(v)}'`);
  }
  return v as T;
}

export function pair(flags: Flags, name: string): [number, number] | undefined {
  const v = flags[name];
  if (v === undefined) return undefined;
  const parts = typeof v === 'string' ? v.split(/[,:]/).map(Number) : [];
  if (parts.length !== 2 || !parts.every(Number.isSafeInteger)) throw new UsageError(`--${name}: expected MIN,MAX integers, got '${String(v)}'`);
  return [parts[0]!, parts[1]!];
}

/** A mistake on the command line: printed without a stack trace, exit code 2. */
export class UsageError extends Error {
  override name = 'UsageError';
}
