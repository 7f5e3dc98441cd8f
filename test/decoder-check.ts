// The incremental decoder against the offline forward, shared by the tests of its attention paths.
import { type RecurrentTransformer, Tensor } from '../src/index.js'

/** Adds sin(phase + k * step) * amp to every weight but alpha: weights of order 1, so that attention is far from uniform. */
export function perturbWeights(m: RecurrentTransformer, phase: number, step: number, amp: number): void {
  const p = m.exportParameters()
  let k = 0
  for (const name of Object.keys(p)) if (!name.endsWith('alpha')) p[name] = p[name]!.map((v) => v + Math.sin(phase + k++ * step) * amp)
  m.importParameters(p)
}

/**
 * Decodes B sequences of N tokens (sequence b is toks[b*N .. b*N + N), in decoder slot slots[b]) one step
 * at a time and returns the worst difference of a step's logits from the offline forward of the prefixes,
 * relative to the largest logit.
 */
export async function worstDecoderError(m: RecurrentTransformer, toks: number[], B: number, N: number, slots: number[]): Promise<number> {
  const dec = m.decoder(B)
  let worst = 0
  for (let t = 0; t < N; t++) {
    const got = await dec.stepSlots(slots, Array.from({ length: B }, (_, b) => toks[b * N + t]!))
    const x = Tensor.fromArray(Array.from({ length: B }, (_, b) => toks.slice(b * N, b * N + t + 1)).flat(), [B, t + 1], 'int32')
    const want = (await m.logits(x, { positions: 1 })).toArray()
    x.dispose()
    let scale = 1e-6
    for (const v of want) scale = Math.max(scale, Math.abs(v))
    for (let i = 0; i < want.length; i++) worst = Math.max(worst, Math.abs(want[i]! - got[i]!) / scale)
  }
  return worst
}
