// Deterministic uniform numbers in [0, 1) (mulberry32) for the GPU checks: the same inputs in every run,
// on every machine, without the package's own RNG (the checks must not depend on what they check).
export function rng(seed) {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

// Random weights of a realistic scale for a model's parameter list (the init's 0.02 makes every logit
// nearly equal): alpha in [0.3, 0.7), LayerNorm gains in [0.8, 1.2), biases in [-0.1, 0.1), matrices
// uniform with std ~ 1/sqrt(3 fan_in). r is an rng() above; the draws follow the parameters' order.
export function realisticParams(parameters, r) {
  const params = {};
  for (const p of parameters) {
    const n = p.value.size;
    if (p.name.endsWith('alpha')) params[p.name] = Float32Array.of(0.3 + 0.4 * r());
    else if (/ln_(\d|f)\.weight$/.test(p.name)) params[p.name] = Float32Array.from({ length: n }, () => 0.8 + 0.4 * r());
    else if (p.name.endsWith('.bias')) params[p.name] = Float32Array.from({ length: n }, () => 0.2 * r() - 0.1);
    else {
      const a = 1 / Math.sqrt(p.shape[1] ?? 1);
      params[p.name] = Float32Array.from({ length: n }, () => a * (2 * r() - 1));
    }
  }
  return params;
}
