// FLOP counts for the benchmarks. bench/peers/torch_layer.py (flops_fwd_bwd) mirrors layerFlops():
// keep the two in step.
//
// One application of the transformer layer T to n tokens, batch B, width d, H heads (hd = d / H):
//
//   matrix products   2 * B * n * (3d² + d² + 4d² + 4d²) = 24 * B * n * d²
//                     (c_attn d->3d, attention c_proj d->d, c_fc d->4d, mlp c_proj 4d->d)
//   attention         2 * B * H * (n (n + 1) / 2) * hd * 2
//                     (causal Q·Kᵀ and P·V: only the n(n+1)/2 unmasked pairs count)
//
// Forward + backward = 3 × forward (the backward of a product costs two products). LayerNorm,
// softmax, activation and residual adds are not counted (they are O(B n d) memory-bound work).
//
// The recurrence (DESIGN.md section 1) with N tokens and window w, m = ceil(N / w) windows, the last
// one of r = N - (m - 1) w tokens:
//   w = 0          one application to N tokens
//   m = 1          two applications to N tokens: T(T(X_0))
//   otherwise      T(X_0): w tokens; k = 1 .. m-2: 2w tokens; k = m-1: w + r tokens;
//                  Y_{m-1} = T(S_{m-1}): r tokens   (r = w when w divides N)
// L layers multiply the count by L. Forget and accumulate cost the same (the alpha·P adds are not
// counted).

/** FLOPs of one forward application of T to n tokens. */
export function applicationFlopsForward({ B, n, d, heads }) {
  const hd = d / heads;
  const matmul = 2 * B * n * (3 * d * d + d * d + 4 * d * d + 4 * d * d);
  const attention = 2 * B * heads * ((n * (n + 1)) / 2) * hd * 2;
  return matmul + attention;
}

/** Token counts n of the applications of T that one recurrent layer makes over N tokens. */
export function applicationLengths(N, w) {
  if (w === 0) return [N];
  const m = Math.ceil(N / w);
  if (m === 1) return [N, N];
  const r = N - (m - 1) * w;
  const lengths = [w];
  for (let k = 1; k < m - 1; k++) lengths.push(2 * w);
  lengths.push(w + r, r);
  return lengths;
}

/**
 * FLOPs of forward + backward through `layers` recurrent layers.
 * @param {{B:number, N:number, d:number, heads:number, w:number, layers?:number}} c
 */
export function layerFlops({ B, N, d, heads, w, layers = 1 }) {
  let total = 0;
  for (const n of applicationLengths(N, w)) total += 3 * applicationFlopsForward({ B, n, d, heads });
  return layers * total;
}

/** FLOPs of one C(M×N) = A(M×K)·B(K×N) product. */
export function gemmFlops(M, N, K) {
  return 2 * M * N * K;
}
