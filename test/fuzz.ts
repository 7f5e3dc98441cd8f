// The fuzz runner shared by the property tests: a fixed seed, a bounded case count and time, a printed count.
import fc from 'fast-check'
import { expect } from 'vitest'

export const FUZZ_MS = Number(process.env.RT_FUZZ_MS ?? 3000)
export const SEED = process.env.RT_FUZZ_SEED === 'random' ? Date.now() : Number(process.env.RT_FUZZ_SEED ?? 20261128)

/** Runs a property for at most `ms` (and RT_FUZZ_RUNS cases), prints how many ran, fails with fast-check's report. */
export async function fuzz<T>(name: string, prop: fc.IAsyncProperty<T> | fc.IProperty<T>, ms = FUZZ_MS): Promise<number> {
  const t0 = performance.now()
  // At most RT_FUZZ_RUNS cases (default 5000) from the fixed seed: a faster machine never explores cases the
  // slower ones have not passed, so CI stays deterministic; raise it (and RT_FUZZ_MS) to explore.
  const runs = Number(process.env.RT_FUZZ_RUNS ?? 5000)
  const out = await fc.check(prop as fc.IAsyncProperty<T>, { numRuns: runs, seed: SEED, plugins: [fc.interruptAfterTimeLimit(ms)] })
  const dt = ((performance.now() - t0) / 1000).toFixed(1)
  console.log(`[fuzz] ${name}: ${out.numRuns} cases in ${dt} s (seed ${SEED})`)
  if (out.failed) {
    const cause = out.errorInstance instanceof Error ? out.errorInstance.stack ?? out.errorInstance.message : String(out.errorInstance)
    throw new Error(`${fc.defaultReportMessage(out) ?? name + ': failed'}\nCause: ${cause}`)
  }
  expect(out.numRuns).toBeGreaterThan(0)
  return out.numRuns
}
