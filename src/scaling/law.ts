// The scaling law L(N, D) = E + A/N^alpha + B/D^beta and the paper's exponent interval for an efficient
// model, N ∝ D^gamma with gamma in [1 - 2·beta, 1 - beta] (Kausik, arXiv 2402.14746, as reconstructed in
// docs/SCALING.md).

/** The five constants of L(N, D) = E + A/N^alpha + B/D^beta (loss in nats per token). */
export interface ScalingLaw {
  /** Irreducible loss: the entropy of the text that no model removes. */
  E: number;
  A: number;
  B: number;
  alpha: number;
  beta: number;
}

/** Hoffmann et al. 2022 ("Chinchilla"), approach 3: the published fit, on MassiveText. */
export const CHINCHILLA: Readonly<ScalingLaw> = Object.freeze({ E: 1.69, A: 406.4, B: 410.7, alpha: 0.34, beta: 0.28 });

/** The exponent interval of an efficient model's size in its data, N ∝ D^gamma. */
export interface GammaInterval {
  /** 1 - 2·beta: learning rate ∝ sqrt(n/D) (the slow rule). */
  low: number;
  /** 1 - beta: learning rate ∝ n/D (the fast rule). */
  high: number;
}

/**
 * The assumptions under which the interval holds, printed with every result that uses it: a tool that
 * hides them would pass a reconstruction off as a theorem.
 */
export const GAMMA_ASSUMPTIONS: readonly string[] = [
  'loss = E + A/N^alpha + B/D^beta, and the excess over E (the entropic error) is what an efficient model must bring down',
  'in an efficient model (the fewest parameters reaching the target loss) the data term B/D^beta is the bottleneck',
  'the parameters must hold the n unique sequences that training fixes: n/D per sequence (fast learning rate) gives n ∝ D^(1-beta), sqrt(n/D) (slow learning rate) gives n ∝ D^(1-2·beta)',
  'parameters grow in proportion to n, so N ∝ D^gamma with gamma in [1-2·beta, 1-beta]; with Chinchilla\'s beta = 0.28 that is [0.44, 0.72]',
  'this derivation is our reconstruction of the paper\'s argument, not a quotation of it',
];

export function gammaInterval(beta: number): GammaInterval {
  if (!Number.isFinite(beta)) throw new RangeError(`beta: expected a finite number, got ${beta}`);
  return { low: 1 - 2 * beta, high: 1 - beta };
}

/** L(N, D). N and D must be positive. */
export function predictLoss(law: ScalingLaw, N: number, D: number): number {
  if (!(N > 0)) throw new RangeError(`N: expected a positive parameter count, got ${N}`);
  if (!(D > 0)) throw new RangeError(`D: expected a positive token count, got ${D}`);
  return law.E + law.A / N ** law.alpha + law.B / D ** law.beta;
}
