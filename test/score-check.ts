// What POST /v1/score must return for a text, from the offline forward: shared by the server's tests.
import { type RecurrentTransformer, Tensor } from '../src/index.js'

/** Sum over t of log softmax(logits[t])[ids[t + 1]], the logits those of model.logits() on the whole of ids. */
export async function referenceLogprob(model: RecurrentTransformer, ids: number[], vocabSize: number): Promise<number> {
  const x = Tensor.fromArray(ids, [1, ids.length], 'int32')
  const logits = (await model.logits(x, { positions: ids.length })).toArray()
  x.dispose()
  const V = vocabSize
  let sum = 0
  for (let t = 0; t + 1 < ids.length; t++) {
    let mx = -Infinity
    for (let v = 0; v < V; v++) mx = Math.max(mx, logits[t * V + v]!)
    let z = 0
    for (let v = 0; v < V; v++) z += Math.exp(logits[t * V + v]! - mx)
    sum += logits[t * V + ids[t + 1]!]! - mx - Math.log(z)
  }
  return sum
}
