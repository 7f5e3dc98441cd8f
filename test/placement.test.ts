// Where a model and its tensors live: the device and precision options of tensors, models, loadModel and
// the optimizer, on the CPU (CI has no GPU; the CUDA side is checked by bench/cuda/check-model.mjs).
import { mkdtempSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { afterAll, describe, expect, it } from 'vitest'
import { saveCheckpoint } from '../src/io/index.js'
import { resolvePlacement } from '../src/model/config.js'
import { loadModel } from '../src/model/load.js'
import { RecurrentTransformer } from '../src/model/transformer.js'
import { AdamW } from '../src/optim/adamw.js'
import { Tensor } from '../src/tensor.js'

const dir = mkdtempSync(join(tmpdir(), 'rt-placement-'))
afterAll(() => rmSync(dir, { recursive: true, force: true }))

const config = { vocabSize: 11, d: 16, heads: 2, window: 4, maxLen: 32, seed: 5 } as const

describe('tensor placement', () => {
  it('makes zeros and copies on the CPU when asked, with the data intact', () => {
    const z = Tensor.zeros([2, 3], 'float32', 'cpu')
    expect(z.device).toBe('cpu')
    expect(Array.from(z.toArray())).toEqual([0, 0, 0, 0, 0, 0])
    const t = Tensor.fromArray([1, -2, 3.5], [3], 'float32', 'cpu')
    expect(Array.from(t.toArray())).toEqual([1, -2, 3.5])
    z.dispose()
    t.dispose()
  })

  it('refuses an unknown device by name', () => {
    expect(() => Tensor.zeros([2], 'float32', 'gpu' as never)).toThrow(/device: expected 'cpu' or 'cuda', got gpu/)
    expect(() => Tensor.fromArray([1], [1], 'float32', 'tpu' as never)).toThrow(/device: expected 'cpu' or 'cuda', got tpu/)
  })
})

describe('model placement', () => {
  it('defaults to the CPU in bf16 and reports it; a checkpoint config does not carry the device', () => {
    const m = new RecurrentTransformer({ ...config })
    expect(m.device).toBe('cpu')
    expect(m.precision).toBe('bf16')
    expect('device' in m.config).toBe(false)
    expect('precision' in m.config).toBe(false)
    for (const p of m.parameters()) expect(p.value.device).toBe('cpu')
    m.dispose()
  })

  it('validates device and precision, naming the field', () => {
    expect(() => new RecurrentTransformer({ ...config, device: 'tpu' as never })).toThrow(/config\.device: expected 'cpu' or 'cuda', got tpu/)
    expect(() => new RecurrentTransformer({ ...config, precision: 'fp16' as never })).toThrow(/config\.precision: expected 'bf16' or 'fp32', got fp16/)
    expect(resolvePlacement({ device: 'cpu', precision: 'fp32' })).toEqual({ device: 'cpu', precision: 'fp32' })
  })

  it('puts the optimizer moments beside the weights and trains there', async () => {
    const m = new RecurrentTransformer({ ...config, device: 'cpu', precision: 'fp32' })
    const opt = new AdamW(m.parameters(), m.decayMask(), { lr: 1e-2 })
    const tokens = Tensor.fromArray(Int32Array.from({ length: 2 * 9 }, (_, i) => (i * 7) % 11), [2, 9], 'int32')
    const targets = Tensor.fromArray(Int32Array.from({ length: 2 * 9 }, (_, i) => (i * 7 + 7) % 11), [2, 9], 'int32')
    const first = await m.lossAndGrad(tokens, targets, { seed: 1 })
    const info = await opt.step()
    expect(info.skipped).toBe(false)
    expect(info.gradNorm).toBeGreaterThan(0)
    const state = opt.state()
    expect(Object.keys(state.m)).toEqual(m.parameters().map((p) => p.name))
    // The first Adam step moves every weight with a nonzero gradient: m is (1 - beta1) g, not zero.
    expect(Math.max(...Object.values(state.m).map((a) => Math.max(...Array.from(a, Math.abs))))).toBeGreaterThan(0)
    m.zeroGrad()
    const second = await m.lossAndGrad(tokens, targets, { seed: 1 })
    expect(second.loss).toBeLessThan(first.loss)
    for (const t of [tokens, targets]) t.dispose()
    opt.dispose()
    m.dispose()
  })

  it('loadModel places the checkpoint on the device asked for, with the same weights', async () => {
    const m = new RecurrentTransformer({ ...config })
    const file = join(dir, 'm.safetensors')
    await saveCheckpoint(file, {
      params: m.exportParameters(),
      shapes: Object.fromEntries(m.parameters().map((p) => [p.name, [...p.shape]])),
      config: { model: m.config },
      tied: true,
    })
    const { model } = await loadModel(file, { device: 'cpu', precision: 'fp32' })
    expect(model.device).toBe('cpu')
    expect(model.precision).toBe('fp32')
    const a = m.exportParameters()
    const b = model.exportParameters()
    for (const k of Object.keys(a)) expect(Array.from(b[k]!)).toEqual(Array.from(a[k]!))
    await expect(loadModel(file, { device: 'gpu' as never })).rejects.toThrow(/config\.device/)
    model.dispose()
    m.dispose()
  })
})
