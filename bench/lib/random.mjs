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
