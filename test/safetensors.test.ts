// The safetensors reader and writer: round trips, spec compliance against hand-made bytes, every
// validation error, a mutation fuzz loop, and atomic writes that fail for real.
import { describe, it, expect, vi, afterEach } from 'vitest'
import * as fs from 'node:fs'
import * as fsp from 'node:fs/promises'
import * as os from 'node:os'
import * as path from 'node:path'

// A pass-through fs/promises whose `open` a test can intercept, to inject failures the machine cannot
// produce on demand (a full disk, a read-only file system). Everything else is the real module.
const hooks = vi.hoisted(() => ({
  open: null as null | ((real: (...a: unknown[]) => Promise<unknown>, ...args: unknown[]) => Promise<unknown>),
}))
vi.mock('node:fs/promises', async (importOriginal) => {
  const real = await importOriginal<typeof import('node:fs/promises')>()
  const open = (...args: unknown[]): Promise<unknown> =>
    hooks.open ? hooks.open(real.open as never, ...args) : (real.open as (...a: unknown[]) => Promise<unknown>)(...args)
  return { ...real, open, default: { ...real, open } }
})

import {
  decodeSafetensors,
  encodeSafetensors,
  fromFloat32,
  readSafetensorsFile,
  readSafetensorsFileSync,
  SafetensorsError,
  toFloat32,
  writeSafetensorsFileAtomic,
  writeSafetensorsFileAtomicSync,
  type SafeDType,
  type SafeTensorInput,
} from '../src/io/index.js'

afterEach(() => {
  hooks.open = null
})

/** mulberry32: a small seeded PRNG. */
function prng(seed: number): () => number {
  let s = seed >>> 0
  return () => {
    s = (s + 0x6d2b79f5) >>> 0
    let t = s
    t = Math.imul(t ^ (t >>> 15), t | 1)
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61)
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296
  }
}

async function tmpdir(): Promise<string> {
  return fsp.mkdtemp(path.join(os.tmpdir(), 'rt-safetensors-'))
}

const enc = new TextEncoder()

/** A file image from a header object or text and a data buffer, with a chosen length prefix. */
function craft(header: unknown, data: Uint8Array = new Uint8Array(0), opts: { length?: bigint; pad?: boolean } = {}): Uint8Array {
  let text = typeof header === 'string' ? header : JSON.stringify(header)
  if (opts.pad) while (enc.encode(text).length % 8 !== 0) text += ' '
  const h = enc.encode(text)
  const out = new Uint8Array(8 + h.length + data.length)
  new DataView(out.buffer).setBigUint64(0, opts.length ?? BigInt(h.length), true)
  out.set(h, 8)
  out.set(data, 8 + h.length)
  return out
}

function bytesOf(a: ArrayBufferView): Uint8Array {
  return new Uint8Array(a.buffer, a.byteOffset, a.byteLength)
}

function randomTensor(rand: () => number, dtype: SafeDType, shape: number[]): SafeTensorInput {
  const n = shape.reduce((a, b) => a * b, 1)
  const raw = new Uint8Array(n * ({ BOOL: 1, U8: 1, I8: 1, F8_E5M2: 1, F8_E4M3: 1, I16: 2, U16: 2, F16: 2, BF16: 2, I32: 4, U32: 4, F32: 4, F64: 8, I64: 8, U64: 8 } as const)[dtype])
  for (let i = 0; i < raw.length; i++) raw[i] = Math.floor(rand() * 256)
  const b = raw.buffer
  const data: ArrayBufferView = {
    BOOL: () => new Uint8Array(raw.map((x) => x & 1)),
    U8: () => new Uint8Array(b),
    I8: () => new Int8Array(b),
    F8_E5M2: () => new Uint8Array(b),
    F8_E4M3: () => new Uint8Array(b),
    I16: () => new Int16Array(b),
    U16: () => new Uint16Array(b),
    F16: () => new Uint16Array(b),
    BF16: () => new Uint16Array(b),
    I32: () => new Int32Array(b),
    U32: () => new Uint32Array(b),
    F32: () => new Float32Array(b),
    F64: () => new Float64Array(b),
    I64: () => new BigInt64Array(b),
    U64: () => new BigUint64Array(b),
  }[dtype]()
  return { dtype, shape, data }
}

describe('round trip', () => {
  const dtypes: SafeDType[] = ['F32', 'F64', 'I32', 'I64', 'U8', 'U16', 'U32', 'F16', 'BF16', 'I8', 'I16', 'U64', 'BOOL', 'F8_E4M3', 'F8_E5M2']
  const shapes = [[], [0], [3], [2, 0, 4], [2, 3], [1, 5, 3], [7, 1, 1, 2]]

  it('random tensors of every dtype and several shapes (0-d scalars, empty) come back bit for bit', () => {
    const rand = prng(1)
    const tensors: Record<string, SafeTensorInput> = {}
    dtypes.forEach((dt) => shapes.forEach((s, j) => (tensors[`${dt}.${j}`] = randomTensor(rand, dt, s))))
    const file = encodeSafetensors(tensors, { a: '1', 'ünïcode ✓': 'välue\n"quoted"' })
    const back = decodeSafetensors(file)
    expect(Object.keys(back.tensors).sort()).toEqual(Object.keys(tensors).sort())
    for (const [name, t] of Object.entries(tensors)) {
      const u = back.tensors[name]!
      expect(u.dtype).toBe(t.dtype)
      expect(u.shape).toEqual(t.shape)
      expect(u.data.constructor).toBe(t.data.constructor)
      expect(u.data.byteOffset % 8).toBe(0)
      expect(Array.from(bytesOf(u.data))).toEqual(Array.from(bytesOf(t.data)))
    }
    expect(back.metadata).toEqual({ a: '1', 'ünïcode ✓': 'välue\n"quoted"' })
  })

  it('floats are bit-exact: NaN payloads, -0, subnormals, infinities', () => {
    const bits = new Uint32Array([0x7fc00001, 0xffbfffff, 0x7f800001, 0x80000000, 0x00000001, 0x807fffff, 0x7f800000, 0xff800000, 0x3f800000])
    const f64bits = new BigUint64Array([0x7ff8000000000123n, 0x8000000000000000n, 1n, 0xfff0000000000000n])
    const back = decodeSafetensors(
      encodeSafetensors({
        f: { dtype: 'F32', shape: [bits.length], data: new Float32Array(bits.buffer) },
        d: { dtype: 'F64', shape: [f64bits.length], data: new Float64Array(f64bits.buffer) },
      }),
    )
    const f = back.tensors['f']!
    const d = back.tensors['d']!
    expect(f.dtype).toBe('F32')
    expect(Array.from(new Uint32Array(f.data.buffer))).toEqual(Array.from(bits))
    expect(Array.from(new BigUint64Array(d.data.buffer))).toEqual(Array.from(f64bits))
  })

  it('raw little-endian bytes are accepted as data for any dtype', () => {
    const x = new Float32Array([1.5, -2, 3.25])
    const a = encodeSafetensors({ x: { dtype: 'F32', shape: [3], data: x } })
    const b = encodeSafetensors({ x: { dtype: 'F32', shape: [3], data: new Uint8Array(x.buffer) } })
    expect(b).toEqual(a)
  })

  it('the same input gives the same bytes, whatever the key order', () => {
    const rand = prng(2)
    const t1 = randomTensor(rand, 'F32', [4, 4])
    const t2 = randomTensor(rand, 'U8', [3])
    const t3 = randomTensor(rand, 'I64', [2])
    const a = encodeSafetensors({ b: t1, a: t2, c: t3 }, { y: '2', x: '1' })
    const b = encodeSafetensors({ c: t3, a: t2, b: t1 }, { x: '1', y: '2' })
    expect(Buffer.from(a).equals(Buffer.from(b))).toBe(true)
    expect(Buffer.from(encodeSafetensors({ b: t1, a: t2, c: t3 }, { y: '2', x: '1' })).equals(Buffer.from(a))).toBe(true)
  })

  it('writes a spec-shaped file: LE length, padded header, contiguous offsets aligned to element size', () => {
    const file = encodeSafetensors({
      odd: { dtype: 'U8', shape: [3], data: new Uint8Array([1, 2, 3]) },
      w: { dtype: 'F32', shape: [2], data: new Float32Array([1, 2]) },
      h: { dtype: 'F16', shape: [1], data: new Uint16Array([0x3c00]) },
      big: { dtype: 'F64', shape: [1], data: new Float64Array([0.5]) },
    }, { format: 'pt' })
    const n = Number(new DataView(file.buffer).getBigUint64(0, true))
    expect(n % 8).toBe(0)
    const text = new TextDecoder().decode(file.subarray(8, 8 + n))
    expect(text[0]).toBe('{')
    expect(text.trimEnd().length).toBeGreaterThan(n - 8)
    expect(/^ *$/.test(text.slice(text.trimEnd().length))).toBe(true)
    const header = JSON.parse(text) as Record<string, { dtype: string; data_offsets: [number, number] }>
    expect(header['__metadata__']).toEqual({ format: 'pt' })
    const ranges = Object.entries(header)
      .filter(([k]) => k !== '__metadata__')
      .map(([, v]) => v)
      .sort((a, b) => a.data_offsets[0] - b.data_offsets[0])
    let at = 0
    const size: Record<string, number> = { U8: 1, F16: 2, F32: 4, F64: 8 }
    for (const r of ranges) {
      expect(r.data_offsets[0]).toBe(at)
      expect(r.data_offsets[0] % size[r.dtype]!).toBe(0)
      at = r.data_offsets[1]
    }
    expect(8 + n + at).toBe(file.length)
  })

  it('a 0-tensor file and metadata-only file round-trip', () => {
    expect(decodeSafetensors(encodeSafetensors({}))).toEqual({ tensors: {}, metadata: {} })
    expect(decodeSafetensors(encodeSafetensors({}, { k: 'v' }))).toEqual({ tensors: {}, metadata: { k: 'v' } })
  })

  it('decodes from an unaligned Uint8Array view into aligned arrays that do not alias the input', () => {
    const file = encodeSafetensors({ x: { dtype: 'F64', shape: [2], data: new Float64Array([1, -1]) } })
    const big = new Uint8Array(file.length + 3)
    big.set(file, 3)
    const view = big.subarray(3)
    const t = decodeSafetensors(view).tensors['x']!
    expect(Array.from(t.data as Float64Array)).toEqual([1, -1])
    expect(t.data.buffer).not.toBe(big.buffer)
  })

  it('encoder rejects bad inputs with clear messages', () => {
    const f = new Float32Array(4)
    expect(() => encodeSafetensors({ x: { dtype: 'F32', shape: [3], data: f } })).toThrow(/tensor "x": data has 4 elements but shape \[3\] needs 3/)
    expect(() => encodeSafetensors({ x: { dtype: 'F32', shape: [4], data: new Float64Array(4) } })).toThrow(/"x": data is a Float64Array but dtype F32 needs a Float32Array/)
    expect(() => encodeSafetensors({ x: { dtype: 'Q4' as SafeDType, shape: [4], data: f } })).toThrow(/"x": unknown dtype/)
    expect(() => encodeSafetensors({ x: { dtype: 'F32', shape: [-4], data: f } })).toThrow(/"x": shape\[0\]/)
    expect(() => encodeSafetensors({ x: { dtype: 'F32', shape: [5], data: new Uint8Array(4) } })).toThrow(/4 raw bytes but shape \[5\] of F32 needs 20/)
    expect(() => encodeSafetensors({ __metadata__: { dtype: 'F32', shape: [4], data: f } })).toThrow(/reserved/)
    expect(() => encodeSafetensors({}, { k: 3 as unknown as string })).toThrow(/metadata "k" is the number 3, expected a string/)
  })
})

describe('spec compliance: hand-made bytes', () => {
  it('decodes a file written byte by byte', () => {
    // Header written by hand, in an order our writer never uses, metadata last, no padding.
    const header =
      '{"b":{"dtype":"I64","shape":[],"data_offsets":[8,16]},' +
      '"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},' +
      '"h":{"dtype":"F16","shape":[1,2],"data_offsets":[16,20]},' +
      '"z":{"dtype":"BF16","shape":[2],"data_offsets":[20,24]},' +
      '"e":{"dtype":"U8","shape":[0,3],"data_offsets":[24,24]},' +
      '"__metadata__":{"format":"pt"}}'
    const h = Array.from(header, (c) => c.charCodeAt(0))
    const bytes = [
      h.length & 0xff, h.length >> 8, 0, 0, 0, 0, 0, 0, // u64 LE header length
      ...h,
      0x00, 0x00, 0xc0, 0x3f, //  1.5f  (0x3fc00000)
      0x00, 0x00, 0x00, 0xc0, // -2.0f  (0xc0000000)
      0xf9, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, // -7 as i64
      0x00, 0x3c, 0x00, 0xc0, // f16 1.0 (0x3c00), -2.0 (0xc000)
      0x80, 0x3f, 0x49, 0x40, // bf16 1.0 (0x3f80), 3.140625 (0x4049)
    ]
    expect(h.length).toBeLessThan(65536)
    const { tensors, metadata } = decodeSafetensors(new Uint8Array(bytes))
    expect(metadata).toEqual({ format: 'pt' })
    const a = tensors['a']!
    expect(a.dtype).toBe('F32')
    expect(a.shape).toEqual([2])
    expect(Array.from(a.data as Float32Array)).toEqual([1.5, -2])
    const b = tensors['b']!
    expect(b.shape).toEqual([])
    expect(Array.from(b.data as BigInt64Array)).toEqual([-7n])
    const hh = tensors['h']!
    expect(hh.dtype).toBe('F16')
    expect(Array.from(hh.data as Uint16Array)).toEqual([0x3c00, 0xc000])
    expect(Array.from(toFloat32(hh))).toEqual([1, -2])
    expect(Array.from(toFloat32(tensors['z']!))).toEqual([1, 3.140625])
    expect(tensors['e']!.shape).toEqual([0, 3])
    expect(tensors['e']!.data.length).toBe(0)
  })

  it('our writer puts the same values at the bytes the format prescribes', () => {
    const file = encodeSafetensors({ a: { dtype: 'F32', shape: [2], data: new Float32Array([1.5, -2]) } })
    const n = Number(new DataView(file.buffer).getBigUint64(0, true))
    expect(Array.from(file.subarray(8 + n))).toEqual([0x00, 0x00, 0xc0, 0x3f, 0x00, 0x00, 0x00, 0xc0])
    expect(JSON.parse(new TextDecoder().decode(file.subarray(8, 8 + n)))).toEqual({
      a: { dtype: 'F32', shape: [2], data_offsets: [0, 8] },
    })
  })
})

describe('F16 / BF16 conversions', () => {
  it('every F16 bit pattern survives f16 -> f32 -> f16, and known values convert', () => {
    const all = new Uint16Array(65536).map((_, i) => i)
    const f = toFloat32({ dtype: 'F16', data: all })
    expect(f[0x3c00]).toBe(1)
    expect(f[0x7bff]).toBe(65504)
    expect(f[0x0001]).toBe(2 ** -24)
    expect(f[0x7c00]).toBe(Infinity)
    expect(Number.isNaN(f[0x7e00])).toBe(true)
    expect(Object.is(f[0x8000], -0)).toBe(true)
    const back = fromFloat32(f, 'F16')
    expect(Buffer.from(back.buffer).equals(Buffer.from(all.buffer))).toBe(true)
  })

  it('float32 -> F16 rounds to nearest even and overflows to infinity', () => {
    const h = fromFloat32(new Float32Array([65520, 65519, 1 + 2 ** -11, 1 + 3 * 2 ** -11, 2 ** -25, 3 * 2 ** -26, 1e-10, -1e6]), 'F16')
    expect(Array.from(h)).toEqual([0x7c00, 0x7bff, 0x3c00, 0x3c02, 0x0000, 0x0001, 0x0000, 0xfc00])
  })

  it('float32 -> BF16 rounds to nearest even and keeps NaN a NaN', () => {
    const src = new Uint32Array([0x3f808000, 0x3f818000, 0x3f808001, 0x7f800001, 0x7fffffff])
    const h = fromFloat32(new Float32Array(src.buffer), 'BF16')
    expect(Array.from(h).slice(0, 3)).toEqual([0x3f80, 0x3f82, 0x3f81])
    expect(Number.isNaN(toFloat32({ dtype: 'BF16', data: h.subarray(3, 4) })[0])).toBe(true)
    expect(Number.isNaN(toFloat32({ dtype: 'BF16', data: h.subarray(4, 5) })[0])).toBe(true)
  })

  it('F8 and integer dtypes convert', () => {
    expect(Array.from(toFloat32({ dtype: 'F8_E4M3', data: new Uint8Array([0x38, 0x7e, 0x01, 0xb8]) }))).toEqual([1, 448, 2 ** -9, -1])
    expect(Array.from(toFloat32({ dtype: 'F8_E5M2', data: new Uint8Array([0x3c, 0x7b]) }))).toEqual([1, 57344])
    expect(Array.from(toFloat32({ dtype: 'I64', data: new BigInt64Array([-3n, 5n]) }))).toEqual([-3, 5])
    expect(Array.from(toFloat32({ dtype: 'I32', data: new Int32Array([-3, 5]) }))).toEqual([-3, 5])
  })
})

describe('validation', () => {
  const F32x2 = { dtype: 'F32', shape: [2], data_offsets: [0, 8] }
  const d8 = new Uint8Array(8)
  const cases: [string, () => Uint8Array, RegExp][] = [
    ['file shorter than 8 bytes', () => new Uint8Array(5), /too short: 5 bytes/],
    ['empty file', () => new Uint8Array(0), /too short: 0 bytes/],
    ['header length beyond the file', () => craft({ a: F32x2 }, d8, { length: 1000n }), /header length 1000 is larger than the rest of the file/],
    ['header length 2^60', () => craft({}, new Uint8Array(0), { length: 2n ** 60n }), /header length 1152921504606846976 is larger than the rest/],
    ['header length 2^64-1', () => craft({}, new Uint8Array(0), { length: 2n ** 64n - 1n }), /header length 18446744073709551615 is larger/],
    ['zero header length', () => craft('', d8), /header is empty/],
    ['header not UTF-8', () => { const f = craft('{"a\u00ff":1}'); f[11] = 0xff; f[12] = 0xfe; return f }, /header is not valid UTF-8/],
    ['header not beginning with {', () => craft(' {}'), /header must begin with '\{'/],
    ['header not JSON', () => craft('{"a": '), /header is not valid JSON/],
    ['header JSON with trailing garbage', () => craft('{} x'), /header is not valid JSON/],
    ['entry not an object', () => craft('{"a":1}'), /tensor "a": expected an object \{dtype, shape, data_offsets\}, got the number 1/],
    ['__metadata__ not an object', () => craft({ __metadata__: ['x'] }), /__metadata__ must be an object of strings, got an array/],
    ['__metadata__ value not a string', () => craft({ __metadata__: { k: 1 } }), /__metadata__ value of "k" is the number 1, expected a string/],
    ['__metadata__ null', () => craft({ __metadata__: null }), /__metadata__ must be an object of strings, got null/],
    ['entry missing dtype', () => craft({ a: { shape: [2], data_offsets: [0, 8] } }, d8), /tensor "a": missing field "dtype"/],
    ['entry missing shape', () => craft({ a: { dtype: 'F32', data_offsets: [0, 8] } }, d8), /tensor "a": missing field "shape"/],
    ['entry missing data_offsets', () => craft({ a: { dtype: 'F32', shape: [2] } }, d8), /tensor "a": missing field "data_offsets"/],
    ['entry an array', () => craft({ a: [1, 2] }, d8), /tensor "a": expected an object .* got an array/],
    ['unknown dtype', () => craft({ a: { ...F32x2, dtype: 'F128' } }, d8), /tensor "a": unknown dtype "F128"/],
    ['dtype not a string', () => craft({ a: { ...F32x2, dtype: 4 } }, d8), /tensor "a": dtype is the number 4, expected a string/],
    ['shape not an array', () => craft({ a: { ...F32x2, shape: 2 } }, d8), /tensor "a": shape is the number 2, expected an array/],
    ['negative dim', () => craft({ a: { ...F32x2, shape: [-2] } }, d8), /tensor "a": shape\[0\] is the number -2, expected a non-negative integer/],
    ['fractional dim', () => craft({ a: { ...F32x2, shape: [1, 2.5] } }, d8), /tensor "a": shape\[1\] is the number 2.5/],
    ['unsafe dim', () => craft({ a: { ...F32x2, shape: [2 ** 60] } }, d8), /tensor "a": shape\[0\] is the number 1152921504606847000/],
    ['string dim', () => craft({ a: { ...F32x2, shape: ['2'] } }, d8), /tensor "a": shape\[0\] is the string "2"/],
    ['huge product', () => craft({ a: { ...F32x2, shape: [2 ** 30, 2 ** 30, 2 ** 30] } }, d8), /tensor "a": shape \[.*\] is too large/],
    ['offsets not an array', () => craft({ a: { ...F32x2, data_offsets: 8 } }, d8), /tensor "a": data_offsets is the number 8, expected \[begin, end\]/],
    ['offsets of length 3', () => craft({ a: { ...F32x2, data_offsets: [0, 8, 8] } }, d8), /tensor "a": data_offsets is an array of length 3/],
    ['negative offset', () => craft({ a: { ...F32x2, data_offsets: [-8, 0] } }, d8), /tensor "a": data_offsets begin is the number -8/],
    ['fractional offset', () => craft({ a: { ...F32x2, data_offsets: [0, 7.5] } }, d8), /tensor "a": data_offsets end is the number 7.5/],
    ['begin > end', () => craft({ a: { ...F32x2, data_offsets: [8, 0] } }, d8), /tensor "a": data_offsets \[8, 0\] has begin > end/],
    ['end beyond the buffer', () => craft({ a: { ...F32x2, data_offsets: [0, 16] } }, d8), /tensor "a": data_offsets end 16 is beyond the data buffer \(8 bytes\)/],
    ['size != shape * dtype', () => craft({ a: { ...F32x2, shape: [3] } }, d8), /tensor "a": data_offsets \[0, 8\] span 8 bytes but shape \[3\] of F32 needs 12/],
    ['size != shape * dtype (F64)', () => craft({ a: { ...F32x2, dtype: 'F64' } }, d8), /span 8 bytes but shape \[2\] of F64 needs 16/],
    ['overlapping ranges', () => craft({ a: F32x2, b: { dtype: 'F32', shape: [1], data_offsets: [4, 8] } }, d8), /tensor "b": data_offsets \[4, 8\] overlap tensor "a" \[0, 8\]/],
    ['identical ranges', () => craft({ a: F32x2, b: F32x2 }, d8), /overlap tensor/],
    ['hole at the start', () => craft({ a: { dtype: 'F32', shape: [1], data_offsets: [4, 8] } }, d8), /hole in the data buffer: bytes \[0, 4\) belong to no tensor \(before tensor "a"\)/],
    ['hole in the middle', () => craft({ a: { dtype: 'U8', shape: [2], data_offsets: [0, 2] }, b: { dtype: 'U8', shape: [2], data_offsets: [4, 6] } }, d8.subarray(0, 6)), /hole in the data buffer: bytes \[2, 4\)/],
    ['trailing bytes', () => craft({ a: F32x2 }, new Uint8Array(12)), /4 trailing bytes after the last tensor/],
    ['trailing bytes, no tensors', () => craft({}, new Uint8Array(3)), /3 trailing bytes after the last tensor/],
    ['duplicate tensor name', () => craft(`{"a":${JSON.stringify(F32x2)},"a":${JSON.stringify(F32x2)}}`, d8), /duplicate tensor name "a" in header/],
    ['duplicate tensor name via escapes', () => craft(`{"a":${JSON.stringify(F32x2)},"\\u0061":${JSON.stringify(F32x2)}}`, d8), /duplicate tensor name "a"/],
    ['duplicate __metadata__', () => craft('{"__metadata__":{},"__metadata__":{}}'), /duplicate "__metadata__" in header/],
    ['duplicate metadata key', () => craft('{"__metadata__":{"k":"1","k":"2"}}'), /duplicate key "k" in __metadata__/],
    ['duplicate field in an entry', () => craft('{"a":{"dtype":"F32","dtype":"F32","shape":[2],"data_offsets":[0,8]}}', d8), /duplicate key "dtype" in header entry "a"/],
  ]
  for (const [name, make, re] of cases) {
    it(name, () => {
      let err: unknown
      try {
        decodeSafetensors(make())
      } catch (e) {
        err = e
      }
      expect(err).toBeInstanceOf(SafetensorsError)
      expect((err as Error).message).toMatch(re)
      expect((err as Error).message).toMatch(/^invalid safetensors data: /)
    })
  }

  it('maxHeaderBytes bounds the header length', () => {
    const f = encodeSafetensors({ a: { dtype: 'F32', shape: [2], data: new Float32Array(2) } })
    expect(() => decodeSafetensors(f, { maxHeaderBytes: 16 })).toThrow(/header length \d+ exceeds the limit of 16 bytes \(maxHeaderBytes\)/)
    expect(decodeSafetensors(f, { maxHeaderBytes: 1024 }).tensors['a']!.shape).toEqual([2])
  })

  it('a 2^60 header length in a large enough prefix errors at once, without allocating', () => {
    const t0 = performance.now()
    const f = craft({}, new Uint8Array(0), { length: 2n ** 60n })
    expect(() => decodeSafetensors(f, { maxHeaderBytes: Infinity })).toThrow(/larger than the rest of the file/)
    expect(performance.now() - t0).toBeLessThan(1000)
  })

  it('accepts spaces, keys in any order, duplicate-looking keys in different objects, and "__proto__" names', () => {
    const f = craft(
      '{ "__metadata__" : {"a":"dtype"},  "a":{"data_offsets":[0,4],"shape":[1],"dtype":"F32"},' +
        '"__proto__":{"dtype":"U8","shape":[2,2],"data_offsets":[4,8]} }   ',
      new Uint8Array([0, 0, 0x80, 0x3f, 1, 2, 3, 4]),
    )
    const { tensors, metadata } = decodeSafetensors(f)
    expect(Object.keys(tensors).sort()).toEqual(['__proto__', 'a'])
    expect(Object.getPrototypeOf(tensors)).toBe(Object.prototype)
    expect(Array.from(tensors['__proto__']!.data as Uint8Array)).toEqual([1, 2, 3, 4])
    expect(metadata).toEqual({ a: 'dtype' })
  })

  it('empty tensors may share an offset with a neighbour', () => {
    const f = craft(
      { e1: { dtype: 'F32', shape: [0], data_offsets: [0, 0] }, a: F32x2, e2: { dtype: 'I64', shape: [3, 0], data_offsets: [8, 8] } },
      d8,
    )
    const t = decodeSafetensors(f).tensors
    expect(t['e1']!.data.length).toBe(0)
    expect(t['e2']!.shape).toEqual([3, 0])
  })
})

describe('fuzz: mutated and truncated files', () => {
  it('decode either succeeds with consistent tensors or throws an Error, never hangs', () => {
    const rand = prng(12345)
    const base = encodeSafetensors(
      {
        'transformer.wte.weight': randomTensor(rand, 'F32', [5, 4]),
        'transformer.h.0.ln_1.bias': randomTensor(rand, 'F32', [4]),
        alpha: randomTensor(rand, 'F32', []),
        ids: randomTensor(rand, 'I64', [3]),
        h: randomTensor(rand, 'BF16', [2, 3]),
        empty: randomTensor(rand, 'U8', [0]),
      },
      { format: 'recurrent-transformer/1', config: '{"d":4}' },
    )
    const headerLen = Number(new DataView(base.buffer).getBigUint64(0, true))
    const special = Array.from('{}[]":,0123456789-.eE \\u', (c) => c.charCodeAt(0))
    const deadline = performance.now() + 4000
    let ok = 0
    let failed = 0
    let iterations = 0
    for (; iterations < 600 && performance.now() < deadline; iterations++) {
      let f = base.slice()
      const kind = Math.floor(rand() * 7)
      const edits = 1 + Math.floor(rand() * 4)
      for (let e = 0; e < edits; e++) {
        const inHeader = 8 + Math.floor(rand() * headerLen)
        const anywhere = Math.floor(rand() * f.length)
        switch (kind) {
          case 0: f[anywhere] = Math.floor(rand() * 256); break
          case 1: f[inHeader] = special[Math.floor(rand() * special.length)]!; break
          case 2: f[anywhere]! ^= 1 << Math.floor(rand() * 8); break
          case 3: f = f.slice(0, Math.floor(rand() * f.length)); break
          case 4: f[Math.floor(rand() * 8)] = Math.floor(rand() * 256); break
          case 5: { // insert or delete a byte in the header
            const g = new Uint8Array(f.length + (rand() < 0.5 ? 1 : -1))
            if (g.length > f.length) { g.set(f.subarray(0, inHeader)); g[inHeader] = special[Math.floor(rand() * special.length)]!; g.set(f.subarray(inHeader), inHeader + 1) }
            else { g.set(f.subarray(0, inHeader)); g.set(f.subarray(inHeader + 1), inHeader) }
            f = g
            break
          }
          default: { const g = new Uint8Array(f.length + 1 + Math.floor(rand() * 16)); g.set(f); f = g }
        }
      }
      try {
        const { tensors, metadata } = decodeSafetensors(f)
        ok++
        for (const v of Object.values(metadata)) expect(typeof v).toBe('string')
        for (const t of Object.values(tensors)) {
          for (const d of t.shape) expect(Number.isSafeInteger(d) && d >= 0).toBe(true)
          expect(t.data.length).toBe(t.shape.reduce((a, b) => a * b, 1))
        }
      } catch (e) {
        failed++
        expect(e).toBeInstanceOf(Error)
        expect((e as Error).message).toMatch(/^invalid safetensors data: /)
      }
    }
    console.log(`fuzz: ${iterations} iterations, ${ok} decoded, ${failed} rejected`)
    expect(iterations).toBeGreaterThanOrEqual(100)
    expect(failed).toBeGreaterThan(0)
    expect(ok + failed).toBe(iterations)
  })
})

describe('files', () => {
  it('write then read, async and sync; reading checks the file like decode does', async () => {
    const dir = await tmpdir()
    try {
      const p = path.join(dir, 'a.safetensors')
      const file = encodeSafetensors({ x: { dtype: 'F32', shape: [2, 2], data: new Float32Array([1, 2, 3, 4]) } }, { k: 'v' })
      await writeSafetensorsFileAtomic(p, file)
      const a = await readSafetensorsFile(p)
      expect(Array.from(a.tensors['x']!.data as Float32Array)).toEqual([1, 2, 3, 4])
      expect(a.metadata).toEqual({ k: 'v' })
      expect(readSafetensorsFileSync(p)).toEqual(a)
      writeSafetensorsFileAtomicSync(p, encodeSafetensors({}))
      expect((await readSafetensorsFile(p)).tensors).toEqual({})
      await fsp.writeFile(p, file.subarray(0, file.length - 1))
      await expect(readSafetensorsFile(p)).rejects.toThrow(new RegExp(`invalid safetensors file ${p.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')}: tensor "x": data_offsets end 16 is beyond the data buffer \\(15 bytes\\)`))
      await fsp.writeFile(p, craft({}, new Uint8Array(0), { length: 2n ** 60n }))
      await expect(readSafetensorsFile(p)).rejects.toThrow(/header length 1152921504606846976 is larger than the rest of the file/)
      await expect(readSafetensorsFile(path.join(dir, 'missing'))).rejects.toThrow(/cannot read safetensors file .*missing: no such file/)
      await expect(readSafetensorsFile(dir)).rejects.toThrow(/it is a directory/)
      expect(await fsp.readdir(dir)).toEqual(['a.safetensors'])
    } finally {
      await fsp.rm(dir, { recursive: true, force: true })
    }
  })
})

describe('atomic writes', () => {
  const OLD = new Uint8Array([1, 2, 3])
  const NEW = new Uint8Array(1 << 16).fill(7)

  it('replaces the target and leaves no temporary file', async () => {
    const dir = await tmpdir()
    try {
      const p = path.join(dir, 'ckpt.safetensors')
      await fsp.writeFile(p, OLD)
      await writeSafetensorsFileAtomic(p, NEW)
      expect(new Uint8Array(await fsp.readFile(p))).toEqual(NEW)
      expect(await fsp.readdir(dir)).toEqual(['ckpt.safetensors'])
    } finally {
      await fsp.rm(dir, { recursive: true, force: true })
    }
  })

  it('a failed rename (target is a directory) keeps the target and removes the temp file', async () => {
    const dir = await tmpdir()
    try {
      const p = path.join(dir, 'ckpt.safetensors')
      await fsp.mkdir(p)
      await fsp.writeFile(path.join(p, 'inside'), OLD)
      await expect(writeSafetensorsFileAtomic(p, NEW)).rejects.toThrow(/cannot write checkpoint .*ckpt\.safetensors: a directory is in the way/)
      expect(() => writeSafetensorsFileAtomicSync(p, NEW)).toThrow(/a directory is in the way/)
      expect(new Uint8Array(await fsp.readFile(path.join(p, 'inside')))).toEqual(OLD)
      expect(await fsp.readdir(dir)).toEqual(['ckpt.safetensors'])
    } finally {
      await fsp.rm(dir, { recursive: true, force: true })
    }
  })

  it('disk full in the middle of the write: old content intact, temp removed, clear error', async () => {
    const dir = await tmpdir()
    try {
      const p = path.join(dir, 'ckpt.safetensors')
      await fsp.writeFile(p, OLD)
      let tempSeen = ''
      hooks.open = async (real, ...args) => {
        const fh = (await real(...args)) as fsp.FileHandle
        if (!String(args[0]).includes('.tmp-')) return fh
        tempSeen = String(args[0])
        // Really write part of the data, then fail as a full disk does.
        return new Proxy(fh, {
          get(target, prop) {
            if (prop === 'writeFile') {
              return async (data: Uint8Array) => {
                await target.write(data.subarray(0, data.length >> 1))
                throw Object.assign(new Error('ENOSPC: no space left on device, write'), { code: 'ENOSPC' })
              }
            }
            const v = Reflect.get(target, prop) as unknown
            return typeof v === 'function' ? (v as (...a: unknown[]) => unknown).bind(target) : v
          },
        })
      }
      const err = await writeSafetensorsFileAtomic(p, NEW).catch((e: unknown) => e)
      expect(err).toBeInstanceOf(Error)
      expect((err as Error).message).toBe(`disk full while writing checkpoint ${p}: the previous checkpoint is intact`)
      expect((err as Error & { code?: string }).code).toBe('ENOSPC')
      expect(path.dirname(tempSeen)).toBe(dir)
      expect(path.basename(tempSeen)).toMatch(new RegExp(`^ckpt\\.safetensors\\.tmp-${process.pid}-[0-9a-f]+$`))
      expect(new Uint8Array(await fsp.readFile(p))).toEqual(OLD)
      expect(await fsp.readdir(dir)).toEqual(['ckpt.safetensors'])
    } finally {
      await fsp.rm(dir, { recursive: true, force: true })
    }
  })

  it('a read-only file system (EROFS) gives the read-only message', async () => {
    const dir = await tmpdir()
    try {
      const p = path.join(dir, 'ckpt.safetensors')
      hooks.open = async (real, ...args) => {
        if (String(args[0]).includes('.tmp-')) throw Object.assign(new Error('EROFS: read-only file system, open'), { code: 'EROFS' })
        return real(...args)
      }
      await expect(writeSafetensorsFileAtomic(p, NEW)).rejects.toThrow(`cannot write checkpoint ${p}: read-only or permission denied`)
      expect(await fsp.readdir(dir)).toEqual([])
    } finally {
      await fsp.rm(dir, { recursive: true, force: true })
    }
  })

  it('read-only directory (chmod 0o555), or, where chmod does not bind (root), a parent that is a file', async () => {
    const dir = await tmpdir()
    try {
      const ro = path.join(dir, 'ro')
      await fsp.mkdir(ro)
      const p = path.join(ro, 'ckpt.safetensors')
      await fsp.writeFile(p, OLD)
      await fsp.chmod(ro, 0o555)
      let chmodBinds = true
      try {
        fs.writeFileSync(path.join(ro, 'probe'), 'x')
        fs.rmSync(path.join(ro, 'probe'))
        chmodBinds = false
      } catch {
        /* the directory is read-only to us: the real test */
      }
      if (chmodBinds) {
        await expect(writeSafetensorsFileAtomic(p, NEW)).rejects.toThrow(`cannot write checkpoint ${p}: read-only or permission denied`)
        expect(() => writeSafetensorsFileAtomicSync(p, NEW)).toThrow(`cannot write checkpoint ${p}: read-only or permission denied`)
        expect(new Uint8Array(await fsp.readFile(p))).toEqual(OLD)
        expect(await fsp.readdir(ro)).toEqual(['ckpt.safetensors'])
      } else {
        console.warn(
          'atomic-write test: this process ignores directory permissions (running as root?), so chmod 0o555 ' +
            'cannot make a write fail; testing a real failure instead: a path whose parent is a regular file.',
        )
        await fsp.chmod(ro, 0o755)
        const notDir = path.join(dir, 'plain-file')
        await fsp.writeFile(notDir, OLD)
        const q = path.join(notDir, 'ckpt.safetensors')
        await expect(writeSafetensorsFileAtomic(q, NEW)).rejects.toThrow(`cannot write checkpoint ${q}: a parent of the path is not a directory`)
        expect(() => writeSafetensorsFileAtomicSync(q, NEW)).toThrow(`cannot write checkpoint ${q}: a parent of the path is not a directory`)
        expect(new Uint8Array(await fsp.readFile(notDir))).toEqual(OLD)
        expect((await fsp.readdir(dir)).sort()).toEqual(['plain-file', 'ro'])
      }
      const missing = path.join(dir, 'no-such-dir', 'ckpt.safetensors')
      await expect(writeSafetensorsFileAtomic(missing, NEW)).rejects.toThrow(/cannot write checkpoint .*: directory .*no-such-dir does not exist/)
    } finally {
      await fsp.chmod(path.join(dir, 'ro'), 0o755).catch(() => undefined)
      await fsp.rm(dir, { recursive: true, force: true })
    }
  })
})
