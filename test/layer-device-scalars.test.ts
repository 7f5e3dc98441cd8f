// The recurrence's path for CUDA graphs, checked on the CPU: with RT_DEVICE_SCALARS=1 a layer stack keeps
// alpha in backend memory (no host read in forward or backward: the glue ops multiply by it themselves and
// alpha's gradient is added by the backend), which is what a recorded graph replays. Both paths must give
// the same bits: outputs, input gradients and every parameter gradient, with dropout, alpha inside and
// outside [0, 1] (learnable: the clamp's gradient), two layers, partial windows and w = 0.
import { spawnSync } from 'node:child_process'
import path from 'node:path'
import { fileURLToPath, pathToFileURL } from 'node:url'
import { describe, expect, it } from 'vitest'

const root = path.join(path.dirname(fileURLToPath(import.meta.url)), '..')
const api = pathToFileURL(path.join(root, 'dist', 'index.js')).href

interface Case {
  name: string
  layer: Record<string, unknown>
  alphas?: number[]
  B: number
  N: number
  window?: number
}

// Runs one forward (training, dropout on, a fixed seed) and backward in a fresh process and prints every
// result as base64 float32 bytes.
const child = `
import { RecurrentLayer, Tensor } from ${JSON.stringify(api)}
const c = JSON.parse(process.argv[1])
const layer = new RecurrentLayer(c.layer)
const p = layer.exportParameters()
;(c.alphas ?? []).forEach((a, l) => { p['transformer.h.' + l + '.alpha'][0] = a })
layer.importParameters(p)
let s = 12345
const rand = (n) => Float32Array.from({ length: n }, () => ((s = (s * 1103515245 + 12345) % 2147483648) / 2147483648) * 2 - 1)
const d = c.layer.d
const x = Tensor.fromArray(rand(c.B * c.N * d), [c.B, c.N, d])
const y = await layer.forward(x, { training: true, seed: 7, window: c.window })
const dx = await layer.backward(Tensor.fromArray(rand(c.B * c.N * d), [c.B, c.N, d]))
const b64 = (a) => Buffer.from(a.buffer, a.byteOffset, a.byteLength).toString('base64')
const out = { y: b64(y.toArray()), dx: b64(dx.toArray()), grads: {} }
for (const [k, v] of Object.entries(layer.exportGradients())) out.grads[k] = b64(v)
process.stdout.write(JSON.stringify(out))
`

function run(c: Case, deviceScalars: boolean): { y: string; dx: string; grads: Record<string, string> } {
  const r = spawnSync(process.execPath, ['--input-type=module', '-e', child, JSON.stringify(c)], {
    env: { ...process.env, RT_DEVICE_SCALARS: deviceScalars ? '1' : '0', RT_DEVICE: 'cpu' },
    encoding: 'utf8',
  })
  expect(r.status, r.stderr).toBe(0)
  return JSON.parse(r.stdout) as { y: string; dx: string; grads: Record<string, string> }
}

const floats = (b64: string): Float32Array => {
  const b = Buffer.from(b64, 'base64')
  return new Float32Array(b.buffer, b.byteOffset, b.byteLength / 4)
}

const cases: Case[] = [
  {
    name: 'accumulate, 2 layers, alpha 0.7 and 1.3 (clamped), dropout, partial last window',
    layer: { d: 32, heads: 4, layers: 2, window: 3, variant: 'accumulate', dropout: 0.1, bias: true, seed: 3 },
    alphas: [0.7, 1.3],
    B: 2,
    N: 11,
  },
  {
    name: 'accumulate, alpha -0.2 (clamped to 0) then 0.4, relu, w 4',
    layer: { d: 16, heads: 2, layers: 2, window: 4, variant: 'accumulate', activation: 'relu', dropout: 0.2, seed: 5 },
    alphas: [-0.2, 0.4],
    B: 3,
    N: 9,
  },
  {
    name: 'forget, w 2, dropout',
    layer: { d: 16, heads: 4, layers: 1, window: 2, variant: 'forget', dropout: 0.1, seed: 1 },
    B: 2,
    N: 7,
  },
  {
    name: 'plain transformer (w 0), accumulate config',
    layer: { d: 16, heads: 2, layers: 1, window: 4, variant: 'accumulate', dropout: 0.1, seed: 2 },
    B: 2,
    N: 6,
    window: 0,
  },
]

describe('the recurrence with its scalars in backend memory (the CUDA-graph path) on the CPU', () => {
  for (const c of cases) {
    it(`${c.name}: the same bits as the host-scalar path`, () => {
      const host = run(c, false)
      const dev = run(c, true)
      expect(dev.y).toBe(host.y)
      expect(dev.dx).toBe(host.dx)
      expect(Object.keys(dev.grads).sort()).toEqual(Object.keys(host.grads).sort())
      for (const k of Object.keys(host.grads)) expect(dev.grads[k], k).toBe(host.grads[k])
      // The results are not trivial: finite, not all zero; alpha's gradient is 0 exactly where the clamp is
      // flat and not 0 where it is not.
      for (const a of [floats(host.y), floats(host.dx)]) {
        expect(a.every(Number.isFinite)).toBe(true)
        expect(a.some((v) => v !== 0)).toBe(true)
      }
      ;(c.alphas ?? []).forEach((a, l) => {
        const g = floats(host.grads[`transformer.h.${l}.alpha`])[0]!
        if (a < 0 || a > 1) expect(g, `alpha ${a}`).toBe(0)
        else expect(Math.abs(g), `alpha ${a}`).toBeGreaterThan(0)
      })
    })
  }
})
