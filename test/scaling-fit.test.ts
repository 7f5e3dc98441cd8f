// The scaling-law fit must recover the law that generated its data: Chinchilla's own constants, with
// noise, go in; alpha, beta and the paper's gamma interval [0.44, 0.72] must come out.
import { describe, expect, it } from 'vitest';
import { Rng } from '../src/data/rng.js';
import { diagnose, fitScalingLaw, type Observation } from '../src/scaling/fit.js';
import { CHINCHILLA, gammaInterval, predictLoss } from '../src/scaling/law.js';

function chinchillaRuns(noise: number, seed: number): Observation[] {
  const rng = new Rng(seed);
  const out: Observation[] = [];
  // 10M to 100B parameters and 100M to 10T tokens, 7 × 7 runs: wider than Hoffmann et al.'s range, since
  // beta, E and B trade off against each other over a narrow range of D.
  for (let i = 0; i < 7; i++) {
    for (let j = 0; j < 7; j++) {
      const N = 1e7 * 10 ** (4 * i / 6);
      const D = 1e8 * 10 ** (5 * j / 6);
      out.push({ N, D, loss: predictLoss(CHINCHILLA, N, D) * Math.exp(noise * rng.normal()) });
    }
  }
  return out;
}

describe('gammaInterval', () => {
  it("gives the paper's [0.44, 0.72] from Chinchilla's beta", () => {
    const g = gammaInterval(CHINCHILLA.beta);
    expect(g.low).toBeCloseTo(0.44, 12);
    expect(g.high).toBeCloseTo(0.72, 12);
  });
});

describe('fitScalingLaw', () => {
  it('recovers Chinchilla from its own values with 0.2% noise', () => {
    const fit = fitScalingLaw(chinchillaRuns(0.002, 1), { bootstrap: 100, seed: 7 });
    console.log('recovered', JSON.stringify({ law: fit.law, gamma: fit.gamma, intervals: fit.intervals }));
    expect(fit.intervals).not.toBeNull();
    const iv = fit.intervals!;
    expect(iv.alpha.low).toBeLessThanOrEqual(CHINCHILLA.alpha);
    expect(iv.alpha.high).toBeGreaterThanOrEqual(CHINCHILLA.alpha);
    expect(iv.beta.low).toBeLessThanOrEqual(CHINCHILLA.beta);
    expect(iv.beta.high).toBeGreaterThanOrEqual(CHINCHILLA.beta);
    expect(Math.abs(fit.gamma.low - 0.44)).toBeLessThanOrEqual(0.02);
    expect(Math.abs(fit.gamma.high - 0.72)).toBeLessThanOrEqual(0.02);
    expect(Math.abs(fit.law.E - CHINCHILLA.E)).toBeLessThan(0.05);
    expect(fit.diagnostics.warnings).toEqual([]);
  });

  it('holds for other noise draws, and shrugs off a diverged run (the point of the Huber loss)', () => {
    for (const seed of [2, 3]) {
      const obs = chinchillaRuns(0.002, seed);
      // One run 30% worse than the law, as a diverged or mis-configured run would be.
      obs[17] = { ...obs[17]!, loss: obs[17]!.loss * 1.3 };
      const fit = fitScalingLaw(obs, { bootstrap: 0 });
      expect(Math.abs(fit.gamma.low - 0.44), `seed ${seed}`).toBeLessThanOrEqual(0.02);
      expect(Math.abs(fit.gamma.high - 0.72), `seed ${seed}`).toBeLessThanOrEqual(0.02);
      expect(Math.abs(fit.law.alpha - CHINCHILLA.alpha), `seed ${seed}`).toBeLessThan(0.02);
      // The outlier keeps its whole residual instead of dragging the surface towards it.
      expect(fit.residuals[17]!).toBeLessThan(-0.2);
    }
  });

  it('finds the exact law when there is no noise', () => {
    const fit = fitScalingLaw(chinchillaRuns(0, 0), { bootstrap: 0 });
    expect(fit.law.alpha).toBeCloseTo(CHINCHILLA.alpha, 3);
    expect(fit.law.beta).toBeCloseTo(CHINCHILLA.beta, 3);
    expect(fit.law.E).toBeCloseTo(CHINCHILLA.E, 3);
    expect(fit.law.A / CHINCHILLA.A).toBeCloseTo(1, 2);
    expect(fit.law.B / CHINCHILLA.B).toBeCloseTo(1, 2);
    expect(fit.intervals).toBeNull();
    expect(Math.max(...fit.residuals.map(Math.abs))).toBeLessThan(1e-5);
  });

  it('warns when tokens per parameter does not vary', () => {
    // Every run at 20 tokens per parameter: alpha and beta trade off.
    const obs = [1e7, 3e7, 1e8, 3e8, 1e9, 3e9].map((N) => ({ N, D: 20 * N, loss: predictLoss(CHINCHILLA, N, 20 * N) }));
    const d = diagnose(obs);
    expect(d.warnings.some((w) => w.includes('tokens per parameter spans only 0.00 decades'))).toBe(true);
    expect(d.correlationLogNLogD).toBeCloseTo(1, 9);
    const fit = fitScalingLaw(obs, { bootstrap: 0 });
    expect(fit.diagnostics.warnings.length).toBeGreaterThan(0);
  });

  it('rejects bad input with the argument named', () => {
    expect(() => fitScalingLaw([])).toThrow(/observations: expected at least 5 runs/);
    const obs = chinchillaRuns(0, 0).slice(0, 6);
    obs[2] = { ...obs[2]!, loss: -1, label: 'runs/x' };
    expect(() => fitScalingLaw(obs)).toThrow(/observations\[2\]\.loss \(runs\/x\): expected a positive finite loss/);
    expect(() => fitScalingLaw(chinchillaRuns(0, 0), { confidence: 2 })).toThrow(/confidence/);
  });
});
