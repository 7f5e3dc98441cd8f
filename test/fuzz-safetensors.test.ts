// Property tests (fast-check) of the safetensors reader and the checkpoint loader on hostile input:
// random files, then the same files truncated, with a huge or wrong header length, offsets that overlap
// or run past the end, unknown dtypes, bad shapes, duplicate names, NaN in the data, and random byte
// flips. Every case must either decode to tensors consistent with their shapes or throw an Error, and
// never hang. Each property runs for a bounded time (RT_FUZZ_MS, default 3000 ms) and prints its count;
// RT_FUZZ_SEED picks the seed (default fixed, so CI sees the same cases; 'random' for exploration).

import * as fs from 'node:fs'
import * as os from 'node:os'
import * as path from 'node:path'
import fc from 'fast-check'
import { FUZZ_MS, SEED, fuzz } from './fuzz.js'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import {
  SAFE_DTYPES,
  decodeSafetensors,
  dtypeSize,
  encodeSafetensors,
  readSafetensorsFile,
  readSafetensorsFileSync,
  type SafeDType,
  type SafeTensorInput,
} from '../src/io/safetensors.js'
import { decodeCheckpoint, encodeCheckpoint, loadCheckpoint, OPTIMIZER_PREFIX, type CheckpointData } from '../src/io/checkpoint.js'

/** A case slower than this counts as a hang (generous: the sanitizer build is slow). */
const CASE_LIMIT_MS = 2000

function product(shape: readonly number[]): number {
  return shape.reduce((a, b) => a * b, 1)
}

/** Checks a decode that succeeded: shapes, element counts and byte counts agree; the tensors tile the data. */
function checkDecoded(decoded: ReturnType<typeof decodeSafetensors>, fileLength: number): void {
  let bytes = 0
  for (const [name, t] of Object.entries(decoded.tensors)) {
    expect(SAFE_DTYPES, name).toContain(t.dtype)
    expect(Array.isArray(t.shape), name).toBe(true)
    for (const d of t.shape) expect(Number.isSafeInteger(d) && d >= 0, `${name} dim ${d}`).toBe(true)
    expect(t.data.length, name).toBe(product(t.shape))
    expect(t.data.byteLength, name).toBe(product(t.shape) * dtypeSize(t.dtype))
    bytes += t.data.byteLength
  }
  expect(bytes).toBeLessThanOrEqual(fileLength)
  for (const [k, v] of Object.entries(decoded.metadata)) expect(typeof v, `metadata ${k}`).toBe('string')
}

/** decode() must return consistent tensors or throw an Error (never something else), quickly. */
function decodeOrError(bytes: Uint8Array): 'ok' | 'error' {
  const t0 = performance.now()
  let result: 'ok' | 'error'
  try {
    const d = decodeSafetensors(bytes)
    checkDecoded(d, bytes.length)
    result = 'ok'
  } catch (e) {
    if (!(e instanceof Error)) throw new Error(`decodeSafetensors threw a non-Error: ${String(e)}`)
    if (e.name === 'AssertionError') throw e
    expect(e.message.length).toBeGreaterThan(0)
    result = 'error'
  }
  const dt = performance.now() - t0
  if (dt > CASE_LIMIT_MS) throw new Error(`decodeSafetensors took ${dt.toFixed(0)} ms on a ${bytes.length}-byte input`)
  return result
}

// ---------------------------------------------------------------------------------------------------
// Arbitraries

const dtypeArb = fc.constantFrom(...SAFE_DTYPES)
const shapeArb = fc.array(fc.integer({ min: 0, max: 5 }), { maxLength: 3 })
const nameArb = fc.oneof(
  fc.string({ maxLength: 12 }),
  fc.string({ unit: 'binary', maxLength: 6 }),
  fc.constantFrom('a', 'b', '__proto__', 'constructor', 'toString', '__metadata__x', OPTIMIZER_PREFIX + 'exp_avg.a'),
)

/** A valid file: up to 5 tensors of random dtypes, shapes and bytes, with optional metadata. */
const validFileArb = fc
  .record({
    tensors: fc.uniqueArray(
      fc.record({ name: nameArb, dtype: dtypeArb, shape: shapeArb, seed: fc.integer() }),
      { maxLength: 5, selector: (t) => t.name },
    ),
    metadata: fc.option(fc.dictionary(fc.string({ maxLength: 8 }), fc.string({ maxLength: 16 }), { maxKeys: 3 }), { nil: undefined }),
  })
  .filter((f) => f.tensors.every((t) => t.name !== '__metadata__'))
  .map((f) => {
    const tensors: Record<string, SafeTensorInput> = {}
    for (const t of f.tensors) {
      const n = product(t.shape) * dtypeSize(t.dtype as SafeDType)
      const data = new Uint8Array(n)
      let s = t.seed >>> 0
      for (let i = 0; i < n; i++) {
        s = (Math.imul(s, 1664525) + 1013904223) >>> 0
        data[i] = s >>> 24
      }
      Object.defineProperty(tensors, t.name, { value: { dtype: t.dtype, shape: t.shape, data }, enumerable: true })
    }
    return encodeSafetensors(tensors, f.metadata)
  })

function headerOf(bytes: Uint8Array): { n: number; json: string } {
  const n = Number(new DataView(bytes.buffer, bytes.byteOffset, 8).getBigUint64(0, true))
  return { n, json: new TextDecoder().decode(bytes.subarray(8, 8 + n)) }
}

/** The file with its header replaced by `json` (length prefix updated), data kept. */
function withHeader(bytes: Uint8Array, json: string): Uint8Array {
  const { n } = headerOf(bytes)
  const h = new TextEncoder().encode(json)
  const data = bytes.subarray(Math.min(8 + n, bytes.length))
  const out = new Uint8Array(8 + h.length + data.length)
  new DataView(out.buffer).setBigUint64(0, BigInt(h.length), true)
  out.set(h, 8)
  out.set(data, 8 + h.length)
  return out
}

const hostileNumber = fc.oneof(
  fc.integer({ min: -5, max: 300 }),
  fc.constantFrom(-1, -0, 0.5, 1e308, 2 ** 53, 2 ** 53 + 2, 2 ** 64, Number.MAX_SAFE_INTEGER, 1e21),
  fc.constantFrom('1', null, true, [], {}, '9007199254740993'),
)

/** One header-level mutation (JSON edited, then written back with a matching length prefix). */
type HeaderMutation = (header: Record<string, unknown>, keys: string[], pick: number, v: unknown) => string | null
const headerMutations: Record<string, HeaderMutation> = {
  offsets: (h, keys, pick, v) => {
    if (!keys.length) return null
    const e = h[keys[pick % keys.length]!] as { data_offsets: unknown[] }
    e.data_offsets[pick % 2] = v
    return JSON.stringify(h)
  },
  overlap: (h, keys, pick) => {
    if (keys.length < 2) return null
    const a = h[keys[pick % keys.length]!] as { data_offsets: number[] }
    const b = h[keys[(pick + 1) % keys.length]!] as { data_offsets: number[] }
    b.data_offsets = [...a.data_offsets]
    return JSON.stringify(h)
  },
  shiftOffsets: (h, keys, pick, v) => {
    if (!keys.length) return null
    const e = h[keys[pick % keys.length]!] as { data_offsets: number[] }
    const delta = typeof v === 'number' && Number.isFinite(v) ? Math.trunc(v) % 64 : 1
    e.data_offsets = [e.data_offsets[0]! + delta, e.data_offsets[1]! + delta]
    return JSON.stringify(h)
  },
  dtype: (h, keys, pick, v) => {
    if (!keys.length) return null
    ;(h[keys[pick % keys.length]!] as Record<string, unknown>).dtype = typeof v === 'number' ? ['F128', 'f32', '', 'F32 ', 'Q4'][pick % 5] : v
    return JSON.stringify(h)
  },
  swapDtype: (h, keys, pick) => {
    if (!keys.length) return null
    ;(h[keys[pick % keys.length]!] as Record<string, unknown>).dtype = SAFE_DTYPES[pick % SAFE_DTYPES.length]
    return JSON.stringify(h)
  },
  shape: (h, keys, pick, v) => {
    if (!keys.length) return null
    const e = h[keys[pick % keys.length]!] as { shape: unknown[] }
    if (pick % 3 === 0) e.shape = [v]
    else if (pick % 3 === 1) e.shape = [...e.shape, v]
    else e.shape = [2 ** 31, 2 ** 31, 2 ** 31, 4]
    return JSON.stringify(h)
  },
  missingField: (h, keys, pick) => {
    if (!keys.length) return null
    const e = h[keys[pick % keys.length]!] as Record<string, unknown>
    delete e[['dtype', 'shape', 'data_offsets'][pick % 3]!]
    return JSON.stringify(h)
  },
  duplicateName: (h, keys, pick) => {
    if (!keys.length) return null
    const k = keys[pick % keys.length]!
    const text = JSON.stringify(h)
    // The same key twice in the top-level object (JSON.parse would keep the last one silently).
    return text.slice(0, -1) + `,${JSON.stringify(k)}:${JSON.stringify(h[k])}}`
  },
  duplicateMetadataKey: (h) => `{"__metadata__":{"a":"1","a":"2"}${Object.keys(h).length ? ',' + JSON.stringify(h).slice(1) : '}'}`,
  metadataValue: (h, _keys, _pick, v) => {
    h['__metadata__'] = { k: v }
    return JSON.stringify(h)
  },
  metadataShape: (h, _keys, pick, v) => {
    h['__metadata__'] = pick % 2 ? [v] : v
    return JSON.stringify(h)
  },
  notObject: (_h, _keys, pick) => ['[]', '"x"', '1', 'null', '{', '{"a":', '{} x', ' {}', '\u00ff{}'][pick % 9]!,
  entryNotObject: (h, keys, pick, v) => {
    if (!keys.length) return null
    h[keys[pick % keys.length]!] = v
    return JSON.stringify(h)
  },
  deepNesting: (h, _keys, pick) => {
    const depth = 1000 + (pick % 5000)
    h['__metadata__'] = { x: 'y' }
    return JSON.stringify(h).slice(0, -1) + `,"deep":${'['.repeat(depth)}${']'.repeat(depth)}}`
  },
}

const mutationArb = fc.oneof(
  // Truncation anywhere.
  fc.record({ kind: fc.constant('truncate' as const), at: fc.nat() }),
  // A header length that lies: huge, zero, off by a little, past the end.
  fc.record({
    kind: fc.constant('headerLength' as const),
    value: fc.oneof(
      fc.bigInt({ min: 0n, max: (1n << 64n) - 1n }),
      fc.constantFrom(0n, 1n, 2n ** 60n, 2n ** 53n + 1n, 2n ** 63n, (1n << 64n) - 1n, 100_000_001n),
      fc.integer({ min: -16, max: 16 }).map((d) => BigInt(d)),
    ),
    relative: fc.boolean(),
  }),
  // Random bytes overwritten (header or data).
  fc.record({ kind: fc.constant('flip' as const), at: fc.array(fc.tuple(fc.nat(), fc.integer({ min: 0, max: 255 })), { minLength: 1, maxLength: 8 }) }),
  // Bytes appended (trailing data) or inserted into the data.
  fc.record({ kind: fc.constant('append' as const), extra: fc.uint8Array({ minLength: 1, maxLength: 16 }) }),
  // Structured header edits.
  fc.record({
    kind: fc.constant('header' as const),
    which: fc.constantFrom(...Object.keys(headerMutations)),
    pick: fc.nat(),
    value: hostileNumber,
  }),
  // NaN / Inf patterns written over float data: must decode (the reader does not judge values).
  fc.record({ kind: fc.constant('nan' as const), at: fc.nat(), pattern: fc.constantFrom(0x7fc00000, 0x7f800001, 0xff800000, 0x7f800000, 0xffffffff) }),
)
type Mutation = typeof mutationArb extends fc.Arbitrary<infer M> ? M : never

function mutate(file: Uint8Array, m: Mutation): Uint8Array {
  const b = Uint8Array.from(file)
  if (b.length < 8 && m.kind !== 'append' && m.kind !== 'flip' && m.kind !== 'truncate') return b
  switch (m.kind) {
    case 'truncate':
      return b.subarray(0, m.at % (b.length + 1))
    case 'headerLength': {
      const cur = new DataView(b.buffer).getBigUint64(0, true)
      let v = m.relative ? cur + m.value : m.value
      if (v < 0n) v = 0n
      if (v >= 1n << 64n) v = (1n << 64n) - 1n
      new DataView(b.buffer).setBigUint64(0, v, true)
      return b
    }
    case 'flip':
      if (b.length === 0) return b
      for (const [at, v] of m.at) b[at % b.length] = v
      return b
    case 'append': {
      const out = new Uint8Array(b.length + m.extra.length)
      out.set(b)
      out.set(m.extra, b.length)
      return out
    }
    case 'header': {
      let h: Record<string, unknown>
      try {
        h = JSON.parse(headerOf(b).json) as Record<string, unknown>
      } catch {
        return b // an earlier mutation broke the header already
      }
      if (h === null || typeof h !== 'object' || Array.isArray(h)) return b
      const keys = Object.keys(h).filter((k) => k !== '__metadata__')
      let text: string | null
      try {
        text = headerMutations[m.which]!(h, keys, m.pick, m.value)
      } catch {
        return b // the mutation does not apply to this header (an earlier one changed its layout)
      }
      return text === null ? b : withHeader(b, text)
    }
    case 'nan': {
      const { n } = headerOf(b)
      const dataStart = 8 + n
      const room = b.length - dataStart
      if (room < 4) return b
      const at = dataStart + (m.at % (room - 3))
      new DataView(b.buffer).setUint32(at, m.pattern, true)
      return b
    }
  }
}

// ---------------------------------------------------------------------------------------------------

describe('fuzz: safetensors decoding', () => {
  it('valid random files decode back to exactly what was written', async () => {
    await fuzz(
      'valid files round-trip',
      fc.property(validFileArb, (file) => {
        const d = decodeSafetensors(file)
        checkDecoded(d, file.length)
        // Re-encoding the decoded tensors gives the same bytes (the writer is deterministic).
        const again = encodeSafetensors(
          Object.fromEntries(Object.entries(d.tensors).map(([k, t]) => [k, { dtype: t.dtype, shape: t.shape, data: t.data }])),
          d.metadata,
        )
        expect(Buffer.from(again).equals(Buffer.from(file))).toBe(true)
      }),
      Math.min(FUZZ_MS, 2000),
    )
  })

  it('mutated files (truncated, lying header length, bad offsets/dtypes/shapes, duplicates, NaN, flips) decode or throw an Error', async () => {
    const outcomes = { ok: 0, error: 0 }
    const kinds = new Map<string, number>()
    await fuzz(
      'mutated files',
      fc.property(validFileArb, fc.array(mutationArb, { minLength: 1, maxLength: 3 }), (file, ms) => {
        let b = file
        for (const m of ms) {
          b = mutate(b, m)
          const k = m.kind === 'header' ? `header.${m.which}` : m.kind
          kinds.set(k, (kinds.get(k) ?? 0) + 1)
        }
        outcomes[decodeOrError(b)]++
      }),
    )
    console.log(`[fuzz]   outcomes: ${outcomes.ok} decoded, ${outcomes.error} rejected; mutations: ${[...kinds].map(([k, n]) => `${k}=${n}`).join(' ')}`)
    // The corpus exercises both sides.
    expect(outcomes.error).toBeGreaterThan(0)
    expect(outcomes.ok).toBeGreaterThan(0)
  })

  it('specific hostile cases: each one is a clear Error', () => {
    const base = encodeSafetensors({ a: { dtype: 'F32', shape: [2], data: new Float32Array([1, 2]) }, b: { dtype: 'I8', shape: [3], data: new Int8Array(3) } })
    const cases: [string, Uint8Array, RegExp][] = [
      ['empty', new Uint8Array(0), /too short/],
      ['7 bytes', new Uint8Array(7), /too short/],
      ['header length 2^64-1', mutate(base, { kind: 'headerLength', value: (1n << 64n) - 1n, relative: false }), /header length/],
      ['header length 0', mutate(base, { kind: 'headerLength', value: 0n, relative: false }), /header is empty/],
      ['duplicate tensor', mutate(base, { kind: 'header', which: 'duplicateName', pick: 0, value: 0 }), /duplicate/],
      ['duplicate metadata key', mutate(base, { kind: 'header', which: 'duplicateMetadataKey', pick: 0, value: 0 }), /duplicate key "a" in __metadata__/],
      ['overlap', mutate(base, { kind: 'header', which: 'overlap', pick: 0, value: 0 }), /overlap|span|hole|trailing/],
      ['end past buffer', mutate(base, { kind: 'header', which: 'offsets', pick: 1, value: 1e6 }), /beyond the data buffer/],
      ['negative offset', mutate(base, { kind: 'header', which: 'offsets', pick: 0, value: -1 }), /non-negative integer/],
      ['fractional offset', mutate(base, { kind: 'header', which: 'offsets', pick: 0, value: 0.5 }), /non-negative integer/],
      ['unsafe offset', mutate(base, { kind: 'header', which: 'offsets', pick: 1, value: 2 ** 53 + 2 }), /non-negative integer|beyond/],
      ['unknown dtype', mutate(base, { kind: 'header', which: 'dtype', pick: 0, value: 'F128' }), /unknown dtype/],
      ['huge shape', mutate(base, { kind: 'header', which: 'shape', pick: 2, value: 0 }), /too large|span/],
      ['header not an object', mutate(base, { kind: 'header', which: 'notObject', pick: 0, value: 0 }), /begin with|object/],
      ['truncated data', base.subarray(0, base.length - 1), /beyond|trailing|span|hole/],
      ['trailing bytes', mutate(base, { kind: 'append', extra: Uint8Array.of(1) }), /trailing/],
    ]
    for (const [name, bytes, re] of cases) {
      let err: unknown = null
      try {
        decodeSafetensors(bytes)
      } catch (e) {
        err = e
      }
      expect(err, name).toBeInstanceOf(Error)
      expect((err as Error).message, name).toMatch(re)
    }
  })

  it('deeply nested JSON in the header is an Error, not a stack overflow of the process', () => {
    const base = encodeSafetensors({ a: { dtype: 'F32', shape: [1], data: new Float32Array([1]) } })
    for (const depth of [10_000, 200_000]) {
      const bytes = withHeader(base, `{"x":${'['.repeat(depth)}${']'.repeat(depth)},` + headerOf(base).json.slice(1))
      const r = decodeOrError(bytes)
      expect(r).toBe('error')
    }
  })
})

// ---------------------------------------------------------------------------------------------------

describe('fuzz: checkpoints', () => {
  let dir: string
  beforeAll(() => {
    dir = fs.mkdtempSync(path.join(os.tmpdir(), 'rt-fuzz-ckpt-'))
  })
  afterAll(() => {
    fs.rmSync(dir, { recursive: true, force: true })
  })

  // A small, valid checkpoint: parameters, optimizer moments, training state and a tokenizer.
  function checkpoint(seed: number): Uint8Array {
    const rnd = (n: number): Float32Array => Float32Array.from({ length: n }, (_, i) => Math.sin(seed + i))
    const shapes = { 'transformer.wte.weight': [4, 2], 'transformer.h.0.ln_1.weight': [2], 'transformer.h.0.alpha': [1] }
    const params = Object.fromEntries(Object.entries(shapes).map(([k, s]) => [k, rnd(product(s))]))
    const data: CheckpointData = {
      params,
      shapes,
      config: { model: { vocabSize: 4, d: 2 } },
      tied: true,
      optimizer: { step: 3, m: Object.fromEntries(Object.entries(params).map(([k, v]) => [k, v.map((x) => x / 2)])), v: Object.fromEntries(Object.entries(params).map(([k, v]) => [k, v.map((x) => x * x)])), hyper: { lr: 1e-3 } },
      training: { step: 3, rng: { data: [1, 2] } },
      tokenizer: { type: 'char', version: 1, chars: 'abcd' },
    }
    return encodeCheckpoint(data)
  }

  /** A decoded checkpoint is self-consistent: every parameter has a shape of its size; moments match. */
  function checkCheckpoint(c: CheckpointData): void {
    for (const [name, p] of Object.entries(c.params)) {
      expect(p, name).toBeInstanceOf(Float32Array)
      const s = c.shapes[name]
      expect(Array.isArray(s), `shape of ${name}`).toBe(true)
      expect(p.length, name).toBe(product(s!))
    }
    if (c.optimizer) {
      expect(Number.isFinite(c.optimizer.step)).toBe(true)
      for (const [name, m] of [...Object.entries(c.optimizer.m), ...Object.entries(c.optimizer.v)]) {
        expect(m, name).toBeInstanceOf(Float32Array)
      }
    }
  }

  const metadataMutation = fc.record({
    key: fc.constantFrom('format', 'config', 'tied', 'optimizer', 'training', 'tokenizer'),
    value: fc.oneof(
      fc.string({ maxLength: 12 }),
      fc.constantFrom('{', 'null', '[]', '{"step":"x"}', '{"step":1e400}', 'true', 'recurrent-transformer/2', '{"step":-1}', '"x"', '1'),
      fc.jsonValue({ maxDepth: 2 }).map((v) => JSON.stringify(v)),
    ),
    drop: fc.boolean(),
  })

  function withMetadata(bytes: Uint8Array, key: string, value: string, drop: boolean): Uint8Array {
    const { json } = headerOf(bytes)
    const h = JSON.parse(json) as Record<string, Record<string, unknown>>
    const md = { ...(h['__metadata__'] ?? {}) }
    if (drop) delete md[key]
    else md[key] = value
    h['__metadata__'] = md
    return withHeader(bytes, JSON.stringify(h))
  }

  it('decodeCheckpoint on mutated checkpoints (bytes and metadata): a consistent CheckpointData or an Error', async () => {
    const outcomes = { ok: 0, error: 0 }
    await fuzz(
      'mutated checkpoints (in memory)',
      fc.property(fc.integer(), fc.option(metadataMutation, { nil: undefined }), fc.array(mutationArb, { maxLength: 2 }), fc.boolean(), (seed, md, ms, strict) => {
        let b = checkpoint(seed)
        if (md) b = withMetadata(b, md.key, md.value, md.drop)
        for (const m of ms) b = mutate(b, m)
        try {
          checkCheckpoint(decodeCheckpoint(b, { strict, config: strict ? undefined : { fallback: true } }))
          outcomes.ok++
        } catch (e) {
          if (!(e instanceof Error)) throw new Error(`decodeCheckpoint threw a non-Error: ${String(e)}`)
          if (e.name === 'AssertionError') throw e
          outcomes.error++
        }
      }),
    )
    console.log(`[fuzz]   outcomes: ${outcomes.ok} loaded, ${outcomes.error} rejected`)
    expect(outcomes.ok).toBeGreaterThan(0)
    expect(outcomes.error).toBeGreaterThan(0)
  })

  it('loadCheckpoint (files) on mutated checkpoints: a consistent CheckpointData or an Error; the sync reader agrees', async () => {
    let i = 0
    const outcomes = { ok: 0, error: 0 }
    await fuzz(
      'mutated checkpoint files',
      fc.asyncProperty(fc.integer(), fc.array(mutationArb, { minLength: 1, maxLength: 2 }), async (seed, ms) => {
        let b = checkpoint(seed)
        for (const m of ms) b = mutate(b, m)
        const file = path.join(dir, `c${i++ % 8}.safetensors`)
        fs.writeFileSync(file, b)
        let asyncResult: 'ok' | 'error'
        try {
          checkCheckpoint(await loadCheckpoint(file))
          asyncResult = 'ok'
          outcomes.ok++
        } catch (e) {
          if (!(e instanceof Error)) throw new Error(`loadCheckpoint threw a non-Error: ${String(e)}`)
          if (e.name === 'AssertionError') throw e
          expect(e.message).toContain(file) // names the file
          asyncResult = 'error'
          outcomes.error++
        }
        // The file reader and the in-memory reader accept and refuse the same inputs.
        let syncResult: 'ok' | 'error'
        try {
          readSafetensorsFileSync(file)
          syncResult = 'ok'
        } catch {
          syncResult = 'error'
        }
        let fileResult: 'ok' | 'error'
        try {
          await readSafetensorsFile(file)
          fileResult = 'ok'
        } catch {
          fileResult = 'error'
        }
        expect(fileResult).toBe(syncResult)
        if (asyncResult === 'ok') expect(fileResult).toBe('ok')
      }),
      Math.max(1000, FUZZ_MS),
    )
    console.log(`[fuzz]   outcomes: ${outcomes.ok} loaded, ${outcomes.error} rejected`)
  })

  it('a file whose header claims 2^60 bytes is refused at once, without allocating', async () => {
    const b = mutate(checkpoint(1), { kind: 'headerLength', value: 2n ** 60n, relative: false })
    const file = path.join(dir, 'huge-header.safetensors')
    fs.writeFileSync(file, b)
    const t0 = performance.now()
    await expect(loadCheckpoint(file)).rejects.toThrow(/header length .* larger than the rest of the file/)
    expect(performance.now() - t0).toBeLessThan(1000)
  })
})
