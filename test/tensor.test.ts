// Tensor: construction, round trips, copies, disposal, shape checks.

import { describe, expect, it } from 'vitest'
import { Tensor } from '../src/index.js'
import { caught } from './helpers.js'

describe('Tensor', () => {
  it('float32 round trip: values, shape, size, dtype, device', () => {
    const data = [1.5, -2, 3.25, 0, -0.125, 1e-3]
    const t = Tensor.fromArray(data, [2, 3], 'float32')
    expect(t.shape).toEqual([2, 3])
    expect(t.size).toBe(6)
    expect(t.dtype).toBe('float32')
    expect(t.device).toBe('cpu')
    expect(t.disposed).toBe(false)
    const out = t.toArray()
    expect(out).toBeInstanceOf(Float32Array)
    expect([...out]).toEqual(data.map(Math.fround))
    t.dispose()
  })

  it('float32 is the default dtype; values are rounded to float32; a Float32Array round-trips bit for bit', () => {
    const t = Tensor.fromArray([0.1, 1 / 3], [2])
    expect(t.dtype).toBe('float32')
    expect([...t.toArray()]).toEqual([Math.fround(0.1), Math.fround(1 / 3)])
    const f = new Float32Array([3.4028234663852886e38, -1.401298464324817e-45, 123.456, -0])
    const u = Tensor.fromArray(f, [1, 4, 1])
    expect(u.shape).toEqual([1, 4, 1])
    const back = u.toArray() as Float32Array
    expect(new Uint32Array(back.buffer, back.byteOffset, 4)).toEqual(new Uint32Array(f.buffer))
    t.dispose()
    u.dispose()
  })

  it('int32 round trip, extremes included', () => {
    const data = new Int32Array([0, 1, -1, 2147483647, -2147483648, 42, -7, 1000000])
    const t = Tensor.fromArray(data, [2, 2, 2], 'int32')
    expect(t.dtype).toBe('int32')
    expect(t.shape).toEqual([2, 2, 2])
    expect(t.size).toBe(8)
    const out = t.toArray()
    expect(out).toBeInstanceOf(Int32Array)
    expect([...out]).toEqual([...data])
    const u = Tensor.fromArray([3, -4, 5], [3], 'int32')
    expect([...u.toArray()]).toEqual([3, -4, 5])
    t.dispose()
    u.dispose()
  })

  it('copies its data: mutating the source (or the shape array, or a toArray result) afterwards changes nothing', () => {
    const src = new Float32Array([1, 2, 3, 4])
    const shape = [2, 2]
    const t = Tensor.fromArray(src, shape)
    src[0] = 100
    src.fill(-1)
    shape[0] = 4
    expect([...t.toArray()]).toEqual([1, 2, 3, 4])
    expect(t.shape).toEqual([2, 2])
    expect(t.size).toBe(4)
    const out = t.toArray()
    out[1] = 55
    expect([...t.toArray()]).toEqual([1, 2, 3, 4])
    const plain = [5, 6]
    const u = Tensor.fromArray(plain, [2], 'int32')
    plain[0] = 9
    expect([...u.toArray()]).toEqual([5, 6])
    t.dispose()
    u.dispose()
  })

  it('dispose: disposed becomes true, toArray throws, dispose is idempotent', async () => {
    const t = Tensor.fromArray([1, 2, 3], [3])
    t.dispose()
    expect(t.disposed).toBe(true)
    const e = await caught(() => t.toArray())
    expect(e.message).toMatch(/dispos/i)
    expect(() => t.dispose()).not.toThrow()
    // other tensors are unaffected
    const u = Tensor.fromArray([4, 5], [2])
    expect([...u.toArray()]).toEqual([4, 5])
    u.dispose()
  })

  it('shape / data size mismatch throws, naming the sizes', () => {
    expect(() => Tensor.fromArray([1, 2, 3, 4, 5], [2, 3])).toThrow(/5|6|shape|elements/)
    expect(() => Tensor.fromArray([1, 2, 3, 4, 5, 6, 7], [2, 3], 'int32')).toThrow(/7|6|shape|elements/)
    expect(() => Tensor.fromArray(new Float32Array(4), [5])).toThrow(/4|5|shape|elements/)
  })

  it('bad shapes and dtypes throw', () => {
    expect(() => Tensor.fromArray([1, 2], [-2])).toThrow(/shape/)
    expect(() => Tensor.fromArray([1, 2], [2.5])).toThrow(/shape/)
    expect(() => Tensor.fromArray([1, 2], [NaN])).toThrow(/shape/)
    // @ts-expect-error: not a dtype
    expect(() => Tensor.fromArray([1, 2], [2], 'float64')).toThrow(/dtype/)
    expect(() => Tensor.fromArray([1.5, 2], [2], 'int32')).toThrow(/int/)
  })
})
