// Bad input becomes a JavaScript Error whose message names the problem; the process survives and a
// later valid forward/backward still works (checked after every group).

import { describe, expect, it } from 'vitest'
import { RecurrentLayer, Tensor } from '../src/index.js'
import type { LayerConfig } from '../src/index.js'
import { Rng, caught, randn } from './helpers.js'

const d = 8
const good: LayerConfig = { d, heads: 2, layers: 2, window: 3, variant: 'accumulate' }

function input(B = 2, N = 7, dim = d, rng = new Rng(1)): Tensor {
  return Tensor.fromArray(Float32Array.from(randn(rng, B * N * dim)), [B, N, dim])
}

/** A fresh layer still runs forward and backward, with finite results. */
async function stillWorks(): Promise<void> {
  const layer = new RecurrentLayer(good)
  const y = await layer.forward(input())
  const dx = await layer.backward(Tensor.fromArray(new Float32Array(2 * 7 * d).fill(1), [2, 7, d]))
  expect(y.shape).toEqual([2, 7, d])
  expect([...y.toArray()].every(Number.isFinite)).toBe(true)
  expect([...dx.toArray()].every(Number.isFinite)).toBe(true)
  layer.dispose()
}

/** fn must throw (synchronously or as a rejected Promise) an Error whose message matches re. */
async function expectError(fn: () => unknown, re: RegExp): Promise<void> {
  const e = await caught(fn)
  expect(e).toBeInstanceOf(Error)
  expect(e.message).toMatch(re)
}

describe('errors: forward input', () => {
  it('wrong rank', async () => {
    const layer = new RecurrentLayer(good)
    await expectError(() => layer.forward(Tensor.fromArray(new Float32Array(7 * d), [7, d])), /shape|rank/i)
    await expectError(() => layer.forward(Tensor.fromArray(new Float32Array(2 * 7 * d), [1, 2, 7, d])), /shape|rank/i)
    await expectError(() => layer.forward(Tensor.fromArray(new Float32Array(d), [d])), /shape|rank/i)
    layer.dispose()
    await stillWorks()
  })

  it('last dim != d', async () => {
    const layer = new RecurrentLayer(good)
    await expectError(() => layer.forward(input(2, 7, d + 1)), /shape|\bd\b|dim/i)
    await expectError(() => layer.forward(input(2, 7, d / 2)), /shape|\bd\b|dim/i)
    layer.dispose()
    await stillWorks()
  })

  it('int32 input', async () => {
    const layer = new RecurrentLayer(good)
    const x = Tensor.fromArray(new Int32Array(2 * 7 * d), [2, 7, d], 'int32')
    await expectError(() => layer.forward(x), /float32|dtype|int32/i)
    layer.dispose()
    await stillWorks()
  })

  it('NaN or Infinity in the input', async () => {
    const layer = new RecurrentLayer(good)
    for (const bad of [NaN, Infinity, -Infinity]) {
      const v = Float32Array.from(randn(new Rng(2), 2 * 7 * d))
      v[5 * d + 3] = bad
      await expectError(() => layer.forward(Tensor.fromArray(v, [2, 7, d])), /nan|finite|inf/i)
    }
    layer.dispose()
    await stillWorks()
  })

  it('a disposed tensor as input', async () => {
    const layer = new RecurrentLayer(good)
    const x = input()
    x.dispose()
    await expectError(() => layer.forward(x), /dispos/i)
    layer.dispose()
    await stillWorks()
  })

  it('not a tensor', async () => {
    const layer = new RecurrentLayer(good)
    // @ts-expect-error: deliberately wrong type
    await expectError(() => layer.forward(new Float32Array(2 * 7 * d)), /tensor/i)
    layer.dispose()
    await stillWorks()
  })

  it('bad per-call window', async () => {
    const layer = new RecurrentLayer(good)
    await expectError(() => layer.forward(input(), { window: -1 }), /window/)
    await expectError(() => layer.forward(input(), { window: 2.5 }), /window/)
    await expectError(() => layer.forward(input(), { window: NaN }), /window/)
    layer.dispose()
    await stillWorks()
  })
})

describe('errors: config', () => {
  const cases: [string, Partial<LayerConfig> & Record<string, unknown>, RegExp][] = [
    ['non-integer d', { d: 8.5 }, /\bd\b/],
    ['d = 0', { d: 0 }, /\bd\b/],
    ['d < 0', { d: -8 }, /\bd\b/],
    ['d not a number', { d: '8' as unknown as number }, /\bd\b/],
    ['absurd d = 1e9', { d: 1e9, heads: 1 }, /\bd\b|too large|size|memory/i],
    ['non-integer heads', { heads: 2.5 }, /heads/],
    ['heads = 0', { heads: 0 }, /heads/],
    ['heads not dividing d', { heads: 3 }, /heads/],
    ['non-integer layers', { layers: 1.5 }, /layers/],
    ['layers = 0', { layers: 0 }, /layers/],
    ['negative window', { window: -1 }, /window/],
    ['non-integer window', { window: 2.5 }, /window/],
    ['window missing', { window: undefined }, /window/],
    ['unknown variant', { variant: 'remember' as LayerConfig['variant'] }, /variant/],
    ['unknown activation', { activation: 'tanh' as LayerConfig['activation'] }, /activation/],
    ['dropout < 0', { dropout: -0.1 }, /dropout/],
    ['dropout = 1', { dropout: 1 }, /dropout/],
    ['dropout > 1', { dropout: 1.5 }, /dropout/],
    ['dropout NaN', { dropout: NaN }, /dropout/],
    ['alpha.init not finite', { alpha: { init: NaN } }, /alpha/],
  ]
  for (const [what, patch, re] of cases) {
    it(what, async () => {
      await expectError(() => new RecurrentLayer({ ...good, ...patch } as LayerConfig), re)
    })
  }
  it('the process is still alive after all of them', async () => {
    await stillWorks()
  })
})

describe('errors: backward', () => {
  it('backward without a forward', async () => {
    const layer = new RecurrentLayer(good)
    await expectError(() => layer.backward(input()), /forward/i)
    layer.dispose()
    await stillWorks()
  })

  it('backward after a forward with grad: false', async () => {
    const layer = new RecurrentLayer(good)
    await layer.forward(input(), { grad: false })
    await expectError(() => layer.backward(input()), /forward|grad/i)
    layer.dispose()
    await stillWorks()
  })

  it('a second backward for one forward', async () => {
    const layer = new RecurrentLayer(good)
    await layer.forward(input())
    await layer.backward(input())
    await expectError(() => layer.backward(input()), /forward/i)
    layer.dispose()
    await stillWorks()
  })

  it('backward with the wrong shape or dtype', async () => {
    const layer = new RecurrentLayer(good)
    await layer.forward(input(2, 7))
    await expectError(() => layer.backward(input(2, 6)), /shape|dy/i)
    await expectError(() => layer.backward(input(1, 7)), /shape|dy/i)
    await expectError(() => layer.backward(Tensor.fromArray(new Float32Array(2 * 7 * d), [2 * 7, d])), /shape|dy|rank/i)
    await expectError(
      () => layer.backward(Tensor.fromArray(new Int32Array(2 * 7 * d), [2, 7, d], 'int32')),
      /float32|dtype|int32/i,
    )
    // the cached forward survives the bad calls
    const dx = await layer.backward(input(2, 7))
    expect(dx.shape).toEqual([2, 7, d])
    layer.dispose()
    await stillWorks()
  })

  it('backward with a disposed dy', async () => {
    const layer = new RecurrentLayer(good)
    await layer.forward(input())
    const dy = input()
    dy.dispose()
    await expectError(() => layer.backward(dy), /dispos/i)
    layer.dispose()
    await stillWorks()
  })
})

describe('errors: disposed layer', () => {
  it('every method of a disposed layer throws, naming the disposal', async () => {
    const layer = new RecurrentLayer(good)
    const params = layer.exportParameters()
    layer.dispose()
    await expectError(() => layer.forward(input()), /dispos/i)
    await expectError(() => layer.backward(input()), /dispos/i)
    await expectError(() => layer.exportParameters(), /dispos/i)
    await expectError(() => layer.exportGradients(), /dispos/i)
    await expectError(() => layer.importParameters(params), /dispos/i)
    await expectError(() => layer.zeroGrad(), /dispos/i)
    await expectError(() => layer.parameters(), /dispos/i)
    expect(() => layer.dispose()).not.toThrow()
    await stillWorks()
  })

  it('disposing while a forward is in flight does not crash', async () => {
    const layer = new RecurrentLayer(good)
    const p = layer.forward(input(2, 64))
    let threw = false
    try {
      layer.dispose()
    } catch {
      threw = true // refusing is fine too
    }
    await Promise.allSettled([p])
    if (threw) {
      await p
      layer.dispose()
    }
    await stillWorks()
  })
})

describe('errors: absurd sizes', () => {
  it('Tensor.fromArray with a shape whose element count overflows', async () => {
    await expectError(() => Tensor.fromArray([1], [2 ** 31, 2 ** 31, 2 ** 31]), /shape|size|elements|overflow|large/i)
    await expectError(() => Tensor.fromArray([1], [2 ** 53, 2 ** 53]), /shape|size|elements|overflow|large/i)
    await expectError(() => Tensor.fromArray([1], [Number.MAX_SAFE_INTEGER, 3]), /shape|size|elements|overflow|large/i)
    await stillWorks()
  })

  it('config whose weights would not fit', async () => {
    await expectError(() => new RecurrentLayer({ d: 1e9, heads: 1, window: 1 }), /\bd\b|large|size|memory/i)
    await expectError(() => new RecurrentLayer({ d: 65536, heads: 1, layers: 1000, window: 1 }), /\bd\b|layers|large|size|memory|weights/i)
    await expectError(() => new RecurrentLayer({ d: 8, heads: 1, layers: 1e9, window: 1 }), /layers|large|size|memory|weights/i)
    await stillWorks()
  })
})

describe('errors: importParameters', () => {
  it('a missing name', async () => {
    const layer = new RecurrentLayer(good)
    const p = layer.exportParameters()
    const name = 'transformer.h.1.mlp.c_fc.weight'
    expect(p[name]).toBeDefined()
    delete p[name]
    await expectError(() => layer.importParameters(p), /transformer\.h\.1\.mlp\.c_fc\.weight/)
    layer.dispose()
    await stillWorks()
  })

  it('a wrong size, leaving the layer unchanged', async () => {
    const layer = new RecurrentLayer(good)
    const before = layer.exportParameters()
    const p = layer.exportParameters()
    p['transformer.h.0.ln_1.weight'] = new Float32Array(d).fill(3)
    p['transformer.h.0.attn.c_attn.weight'] = new Float32Array(3 * d * d - 1)
    await expectError(() => layer.importParameters(p), /transformer\.h\.0\.attn\.c_attn\.weight/)
    p['transformer.h.0.attn.c_attn.weight'] = new Float32Array(3 * d * d + 1)
    await expectError(() => layer.importParameters(p), /transformer\.h\.0\.attn\.c_attn\.weight/)
    const after = layer.exportParameters()
    expect([...after['transformer.h.0.ln_1.weight']]).toEqual([...before['transformer.h.0.ln_1.weight']])
    layer.dispose()
    await stillWorks()
  })

  it('a non-finite value', async () => {
    const layer = new RecurrentLayer(good)
    const p = layer.exportParameters()
    p['transformer.h.0.ln_2.weight'][2] = NaN
    await expectError(() => layer.importParameters(p), /ln_2\.weight|finite|nan/i)
    layer.dispose()
    await stillWorks()
  })
})

describe('errors: concurrency', () => {
  it('two forwards in flight on one layer: both succeed or one is refused as busy; never a crash', async () => {
    const layer = new RecurrentLayer(good)
    const r = await Promise.allSettled([layer.forward(input(2, 40)), layer.forward(input(2, 40))])
    for (const s of r) if (s.status === 'rejected') expect(String((s.reason as Error).message)).toMatch(/busy|in flight|progress|running/i)
    expect(r.some((s) => s.status === 'fulfilled')).toBe(true)
    layer.dispose()
    await stillWorks()
  })
})
