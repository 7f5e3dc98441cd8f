// Checkpoints: tied weights written once, optimizer state and metadata restored bit for bit, files
// from elsewhere (both wte and lm_head, foreign safetensors) handled, bad input refused clearly.
import { describe, it, expect } from 'vitest'
import * as fsp from 'node:fs/promises'
import * as os from 'node:os'
import * as path from 'node:path'

import {
  CHECKPOINT_FORMAT,
  decodeCheckpoint,
  decodeSafetensors,
  encodeCheckpoint,
  encodeSafetensors,
  fromFloat32,
  loadCheckpoint,
  readSafetensorsFile,
  saveCheckpoint,
  type CheckpointData,
  type SafeTensorInput,
} from '../src/io/index.js'

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

/** Random float32 values, with a few special bit patterns (NaN payload, -0, subnormal, inf) mixed in. */
function randf(rand: () => number, n: number): Float32Array {
  const a = new Float32Array(n)
  const bits = new Uint32Array(a.buffer)
  for (let i = 0; i < n; i++) bits[i] = Math.floor(rand() * 2 ** 32) >>> 0
  const special = [0x7fc00123, 0x80000000, 0x00000001, 0x7f800000, 0xff800000]
  for (let i = 0; i < Math.min(n, special.length); i++) bits[Math.floor(rand() * n)] = special[i]!
  return a
}

function same(a: Float32Array, b: Float32Array): boolean {
  const x = new Uint32Array(a.buffer, a.byteOffset, a.length)
  const y = new Uint32Array(b.buffer, b.byteOffset, b.length)
  return x.length === y.length && x.every((v, i) => v === y[i])
}

const config = { vocabSize: 11, d: 4, heads: 2, layers: 2, window: 3, variant: 'accumulate', bias: true }

/** A small nanoGPT-named model. */
function model(seed: number): { params: Record<string, Float32Array>; shapes: Record<string, number[]> } {
  const rand = prng(seed)
  const { vocabSize: V, d, layers } = config
  const shapes: Record<string, number[]> = {
    'transformer.wte.weight': [V, d],
    'transformer.wpe.weight': [16, d],
    'transformer.ln_f.weight': [d],
    'transformer.ln_f.bias': [d],
    alpha: [],
  }
  for (let l = 0; l < layers; l++) {
    const h = `transformer.h.${l}`
    Object.assign(shapes, {
      [`${h}.ln_1.weight`]: [d],
      [`${h}.attn.c_attn.weight`]: [3 * d, d],
      [`${h}.attn.c_attn.bias`]: [3 * d],
      [`${h}.attn.c_proj.weight`]: [d, d],
      [`${h}.ln_2.weight`]: [d],
      [`${h}.mlp.c_fc.weight`]: [4 * d, d],
      [`${h}.mlp.c_proj.weight`]: [d, 4 * d],
    })
  }
  const params: Record<string, Float32Array> = {}
  for (const [k, s] of Object.entries(shapes)) params[k] = randf(rand, s.reduce((a, b) => a * b, 1))
  return { params, shapes }
}

async function withDir<T>(fn: (dir: string) => Promise<T>): Promise<T> {
  const dir = await fsp.mkdtemp(path.join(os.tmpdir(), 'rt-checkpoint-'))
  try {
    return await fn(dir)
  } finally {
    await fsp.rm(dir, { recursive: true, force: true })
  }
}

function expectParamsEqual(a: Record<string, Float32Array>, b: Record<string, Float32Array>): void {
  expect(Object.keys(a).sort()).toEqual(Object.keys(b).sort())
  for (const k of Object.keys(a)) expect(same(a[k]!, b[k]!), k).toBe(true)
}

describe('checkpoints', () => {
  it('save/load round trip: tied weights written once, optimizer, training, tokenizer restored bit for bit', async () => {
    await withDir(async (dir) => {
      const { params, shapes } = model(1)
      const rand = prng(2)
      const m: Record<string, Float32Array> = {}
      const v: Record<string, Float32Array> = {}
      for (const [k, p] of Object.entries(params)) {
        m[k] = randf(rand, p.length)
        v[k] = randf(rand, p.length)
      }
      const training = { step: 1234, rng: [1, 2, 3, 4], curriculum: { stage: 2, w: [1, 8] }, lr: { base: 3e-4, warmup: 100 } }
      const tokenizer = { kind: 'char', vocab: 'abcdefghij\n' }
      const data: CheckpointData = {
        params: { ...params, 'lm_head.weight': params['transformer.wte.weight']! },
        shapes: { ...shapes, 'lm_head.weight': shapes['transformer.wte.weight']! },
        config,
        tied: true,
        optimizer: { step: 1234, m, v, hyper: { lr: 3e-4, betas: [0.9, 0.95], eps: 1e-8, weightDecay: 0.1 } },
        training,
        tokenizer,
      }
      const p = path.join(dir, 'model.safetensors')
      await saveCheckpoint(p, data)
      expect(await fsp.readdir(dir)).toEqual(['model.safetensors'])

      // The raw file: lm_head written once (not at all under its own name), optimizer tensors prefixed.
      const raw = await readSafetensorsFile(p)
      const names = Object.keys(raw.tensors)
      expect(names).not.toContain('lm_head.weight')
      expect(names).toContain('transformer.wte.weight')
      expect(names.filter((n) => !n.startsWith('__optimizer__')).sort()).toEqual(Object.keys(params).sort())
      expect(names.filter((n) => n.startsWith('__optimizer__.exp_avg.')).length).toBe(Object.keys(params).length)
      expect(names.filter((n) => n.startsWith('__optimizer__.exp_avg_sq.')).length).toBe(Object.keys(params).length)
      expect(Object.values(raw.tensors).every((t) => t.dtype === 'F32')).toBe(true)
      expect(raw.metadata['format']).toBe(CHECKPOINT_FORMAT)
      expect(raw.metadata['tied']).toBe('true')
      expect(JSON.parse(raw.metadata['config']!)).toEqual(config)
      expect(JSON.parse(raw.metadata['optimizer']!)).toEqual({ step: 1234, hyper: data.optimizer!.hyper })

      const back = await loadCheckpoint(p, { strict: true })
      expectParamsEqual(back.params, params)
      expect(back.shapes).toEqual(shapes)
      expect(back.shapes['alpha']).toEqual([])
      expect(back.config).toEqual(config)
      expect(back.tied).toBe(true)
      expect(back.training).toEqual(training)
      expect(back.tokenizer).toEqual(tokenizer)
      expect(back.optimizer!.step).toBe(1234)
      expect(back.optimizer!.hyper).toEqual(data.optimizer!.hyper)
      expectParamsEqual(back.optimizer!.m, m)
      expectParamsEqual(back.optimizer!.v, v)
    })
  })

  it('a minimal checkpoint (no optimizer, training, tokenizer) loads without those keys; bytes are deterministic', async () => {
    await withDir(async (dir) => {
      const { params, shapes } = model(3)
      const p = path.join(dir, 'a.safetensors')
      await saveCheckpoint(p, { params, shapes, config })
      const back = await loadCheckpoint(p)
      expectParamsEqual(back.params, params)
      expect(back.tied).toBe(false)
      expect('optimizer' in back).toBe(false)
      expect('training' in back).toBe(false)
      expect('tokenizer' in back).toBe(false)
      const again = encodeCheckpoint({ params: Object.fromEntries(Object.entries(params).reverse()), shapes, config })
      expect(Buffer.from(again).equals(await fsp.readFile(p))).toBe(true)
    })
  })

  it('saving over an existing checkpoint replaces it atomically, leaving no temp files', async () => {
    await withDir(async (dir) => {
      const p = path.join(dir, 'ckpt.safetensors')
      const a = model(4)
      const b = model(5)
      await saveCheckpoint(p, { ...a, config, training: { step: 1 } })
      await saveCheckpoint(p, { ...b, config, training: { step: 2 } })
      const back = await loadCheckpoint(p)
      expectParamsEqual(back.params, b.params)
      expect(back.training).toEqual({ step: 2 })
      expect(await fsp.readdir(dir)).toEqual(['ckpt.safetensors'])
    })
  })

  it('loads a file that holds both transformer.wte.weight and lm_head.weight', async () => {
    await withDir(async (dir) => {
      const { params, shapes } = model(6)
      const wte = params['transformer.wte.weight']!
      const tensors = (extra: Record<string, Float32Array>): Record<string, SafeTensorInput> =>
        Object.fromEntries(
          Object.entries({ ...params, ...extra }).map(([k, a]) => [
            k,
            { dtype: 'F32' as const, shape: shapes[k] ?? shapes['transformer.wte.weight']!, data: a },
          ]),
        )
      const md = (tied: string): Record<string, string> => ({ format: CHECKPOINT_FORMAT, config: JSON.stringify(config), tied })

      // Tied and equal: accepted, lm_head dropped (it is wte).
      const p1 = path.join(dir, 'tied-equal.safetensors')
      await fsp.writeFile(p1, encodeSafetensors(tensors({ 'lm_head.weight': wte.slice() }), md('true')))
      const a = await loadCheckpoint(p1)
      expect(a.tied).toBe(true)
      expectParamsEqual(a.params, params)
      expect(a.shapes['lm_head.weight']).toBeUndefined()

      // Tied but different: refused.
      const other = wte.slice()
      other[3] = other[3]! + 1
      const p2 = path.join(dir, 'tied-different.safetensors')
      await fsp.writeFile(p2, encodeSafetensors(tensors({ 'lm_head.weight': other }), md('true')))
      await expect(loadCheckpoint(p2)).rejects.toThrow(/tied-different\.safetensors: is marked tied but lm_head\.weight differs from transformer\.wte\.weight/)

      // Untied: both kept as they are.
      const p3 = path.join(dir, 'untied.safetensors')
      await fsp.writeFile(p3, encodeSafetensors(tensors({ 'lm_head.weight': other }), md('false')))
      const c = await loadCheckpoint(p3)
      expect(c.tied).toBe(false)
      expect(same(c.params['lm_head.weight']!, other)).toBe(true)
      expect(same(c.params['transformer.wte.weight']!, wte)).toBe(true)
      expect(c.shapes['lm_head.weight']).toEqual(shapes['transformer.wte.weight'])
    })
  })

  it('foreign files: accepted with a config unless strict; no config is an error; other versions refused', async () => {
    await withDir(async (dir) => {
      const t = { 'transformer.wte.weight': { dtype: 'F32' as const, shape: [2, 2], data: new Float32Array([1, 2, 3, 4]) } }
      const foreign = path.join(dir, 'foreign.safetensors')
      await fsp.writeFile(foreign, encodeSafetensors(t, { format: 'pt', config: JSON.stringify(config) }))
      expect((await loadCheckpoint(foreign)).config).toEqual(config)
      await expect(loadCheckpoint(foreign, { strict: true })).rejects.toThrow(
        /checkpoint .*foreign\.safetensors: is not a recurrent-transformer checkpoint \(__metadata__ has format "pt"/,
      )

      const bare = path.join(dir, 'bare.safetensors')
      await fsp.writeFile(bare, encodeSafetensors(t))
      await expect(loadCheckpoint(bare)).rejects.toThrow(`checkpoint ${bare} has no model config`)
      await expect(loadCheckpoint(bare, { strict: true })).rejects.toThrow(/is not a recurrent-transformer checkpoint \(__metadata__ has no "format" key/)
      const withConfig = await loadCheckpoint(bare, { config })
      expect(withConfig.config).toEqual(config)
      expect(Array.from(withConfig.params['transformer.wte.weight']!)).toEqual([1, 2, 3, 4])

      const ours = path.join(dir, 'no-config.safetensors')
      await fsp.writeFile(ours, encodeSafetensors(t, { format: CHECKPOINT_FORMAT }))
      await expect(loadCheckpoint(ours, { strict: true })).rejects.toThrow(`checkpoint ${ours} has no model config`)

      const future = path.join(dir, 'future.safetensors')
      await fsp.writeFile(future, encodeSafetensors(t, { format: 'recurrent-transformer/2', config: '{}' }))
      await expect(loadCheckpoint(future)).rejects.toThrow(/unsupported format "recurrent-transformer\/2"/)

      // F16 / BF16 parameters of a foreign file are widened; F64 is refused.
      const half = path.join(dir, 'half.safetensors')
      const h = new Float32Array([1, -2.5, 0.125])
      await fsp.writeFile(
        half,
        encodeSafetensors(
          { a: { dtype: 'F16', shape: [3], data: fromFloat32(h, 'F16') }, b: { dtype: 'BF16', shape: [3], data: fromFloat32(h, 'BF16') } },
          { config: '{}' },
        ),
      )
      const hb = await loadCheckpoint(half)
      expect(Array.from(hb.params['a']!)).toEqual([1, -2.5, 0.125])
      expect(Array.from(hb.params['b']!)).toEqual([1, -2.5, 0.125])
      const f64 = encodeSafetensors({ a: { dtype: 'F64', shape: [1], data: new Float64Array([1]) } }, { config: '{}' })
      expect(() => decodeCheckpoint(f64)).toThrow(/tensor "a" has dtype F64, expected F32 \(or F16\/BF16\)/)
    })
  })

  it('the metadata must be well formed', () => {
    const t = { x: { dtype: 'F32' as const, shape: [1], data: new Float32Array(1) } }
    const md = { format: CHECKPOINT_FORMAT, config: '{}' }
    expect(() => decodeCheckpoint(encodeSafetensors(t, { ...md, config: '{bad' }))).toThrow(/__metadata__ "config" is not valid JSON/)
    expect(() => decodeCheckpoint(encodeSafetensors(t, { ...md, tied: 'yes' }))).toThrow(/__metadata__ "tied" is "yes", expected "true" or "false"/)
    expect(() => decodeCheckpoint(encodeSafetensors(t, { ...md, tied: 'true' }))).toThrow(/is marked tied but has no transformer\.wte\.weight/)
    expect(() => decodeCheckpoint(encodeSafetensors(t, { ...md, training: 'nope' }))).toThrow(/__metadata__ "training" is not valid JSON/)
    expect(() => decodeCheckpoint(encodeSafetensors(t, { ...md, optimizer: '{"hyper":1}' }))).toThrow(/"optimizer" must be a JSON object \{step: number, hyper\?\}/)
    const moment = { '__optimizer__.exp_avg.x': t.x }
    expect(() => decodeCheckpoint(encodeSafetensors({ ...t, ...moment }, md))).toThrow(/has optimizer moments but no __metadata__ "optimizer"/)
    const stray = { '__optimizer__.exp_avg.y': t.x }
    expect(() => decodeCheckpoint(encodeSafetensors({ ...t, ...stray }, { ...md, optimizer: '{"step":1}' }))).toThrow(/optimizer exp_avg for "y" has no matching parameter/)
    const bad = { '__optimizer__.momentum.x': t.x }
    expect(() => decodeCheckpoint(encodeSafetensors({ ...t, ...bad }, { ...md, optimizer: '{"step":1}' }))).toThrow(/unknown optimizer tensor "__optimizer__\.momentum\.x"/)
    const wrongShape = { '__optimizer__.exp_avg_sq.x': { dtype: 'F32' as const, shape: [1, 1], data: new Float32Array(1) } }
    expect(() => decodeCheckpoint(encodeSafetensors({ ...t, ...wrongShape }, { ...md, optimizer: '{"step":1}' }))).toThrow(/optimizer exp_avg_sq for "x" has shape \[1, 1\] but the parameter has \[1\]/)
  })

  it('saveCheckpoint refuses inconsistent data with clear messages and writes nothing', async () => {
    await withDir(async (dir) => {
      const p = path.join(dir, 'x.safetensors')
      const { params, shapes } = model(7)
      const wte = params['transformer.wte.weight']!
      await expect(saveCheckpoint(p, { params, shapes, config: undefined })).rejects.toThrow(`cannot write checkpoint ${p}: config is missing`)
      await expect(saveCheckpoint(p, { params: { a: new Float32Array(3) }, shapes: { a: [2] }, config })).rejects.toThrow(/parameter "a" has 3 values but shape \[2\] needs 2/)
      await expect(saveCheckpoint(p, { params: { a: new Float32Array(3) }, shapes: {}, config })).rejects.toThrow(/parameter "a" has no shape in shapes/)
      await expect(saveCheckpoint(p, { params: { a: new Float64Array(3) as unknown as Float32Array }, shapes: { a: [3] }, config })).rejects.toThrow(/parameter "a" must be a Float32Array/)
      await expect(saveCheckpoint(p, { params: { '__optimizer__.a': new Float32Array(1) }, shapes: { '__optimizer__.a': [1] }, config })).rejects.toThrow(/is reserved/)
      await expect(saveCheckpoint(p, { params, shapes, config: { f: 1n } })).rejects.toThrow(/config is not JSON-serialisable/)
      await expect(saveCheckpoint(p, { params, shapes, config, training: () => 1 })).rejects.toThrow(/training is not JSON-serialisable/)
      const other = wte.slice()
      other[0] = other[0]! + 1
      await expect(
        saveCheckpoint(p, { params: { ...params, 'lm_head.weight': other }, shapes: { ...shapes, 'lm_head.weight': shapes['transformer.wte.weight']! }, config, tied: true }),
      ).rejects.toThrow(/tied is true but lm_head\.weight differs from transformer\.wte\.weight/)
      await expect(saveCheckpoint(p, { params: { a: new Float32Array(1) }, shapes: { a: [1] }, config, tied: true })).rejects.toThrow(/tied is true but there is no transformer\.wte\.weight/)
      await expect(
        saveCheckpoint(p, { params, shapes, config, optimizer: { step: 1, m: { nope: new Float32Array(1) }, v: {} } }),
      ).rejects.toThrow(/optimizer\.m\["nope"\] has no matching parameter shape/)
      await expect(
        saveCheckpoint(p, { params, shapes, config, optimizer: { step: 1, m: { alpha: new Float32Array(2) }, v: {} } }),
      ).rejects.toThrow(/optimizer\.m\["alpha"\] has 2 values but the parameter's shape \[\] needs 1/)
      await expect(saveCheckpoint(p, { params, shapes, config, optimizer: { step: NaN, m: {}, v: {} } })).rejects.toThrow(/optimizer\.step must be a finite number/)
      expect(await fsp.readdir(dir)).toEqual([])
    })
  })

  it('a PyTorch user can drop the __optimizer__ keys and get exactly the model state dict', () => {
    const { params, shapes } = model(8)
    const m = Object.fromEntries(Object.entries(params).map(([k, p]) => [k, p.map((x) => x * 0.5)]))
    const bytes = encodeCheckpoint({ params, shapes, config, tied: true, optimizer: { step: 3, m, v: m } })
    const { tensors } = decodeSafetensors(bytes)
    const stateDict = Object.keys(tensors).filter((k) => !k.startsWith('__optimizer__'))
    expect(stateDict.sort()).toEqual(Object.keys(params).sort())
    for (const k of stateDict) expect(tensors[k]!.shape).toEqual(shapes[k])
  })
})
