// Two paths of the recurrence's backward that the CUDA backend takes behind switches, run on the CPU through
// the Backend's default implementations, so that their plumbing in layer/ is checked against the plain path:
// - ln_1 scattering its input gradient straight into the previous window's output gradient and dX
//   (layer/backend.h BackScatter; RT_CUDA_LN_BACK_GLUE): RT_CPU_LN_BACK_GLUE=1, the default scatter being the
//   LayerNorm into a scratch then the glue's batch. Which window forms which, what is skipped: bit for bit.
// - the LayerNorms' dw, db left per application as partial sums and added up at the end (LnParts;
//   RT_CUDA_LN_PARTS): RT_CPU_LN_PARTS=1, one row of sums per application. The sums group otherwise, so the
//   LayerNorms' gradients agree to float32 rounding and everything else bit for bit.
// Each run is a fresh node process, since the switches are read once per process.
import { spawnSync } from 'node:child_process'
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { ROOT, ensureDist } from './dist.js'

const work = mkdtempSync(join(tmpdir(), 'rt-scatter-'))
afterAll(() => rmSync(work, { recursive: true, force: true }))

// Two forward + backward passes (the second reuses the first's buffers, as training does) on inputs from a
// seeded generator; prints every result's bytes.
const CHILD = `
const rt = await import(process.argv[2]);
const o = JSON.parse(process.argv[3]);
let s = o.seed >>> 0;
const rand = (n) => Float32Array.from({ length: n }, () => {
  s = (Math.imul(s, 1664525) + 1013904223) >>> 0;
  return s / 2 ** 32 * 2 - 1;
});
const layer = new rt.RecurrentLayer(o.layer);
const shape = [o.B, o.N, o.layer.d];
const size = o.B * o.N * o.layer.d;
const out = {};
const b64 = (a) => Buffer.from(a.buffer, a.byteOffset, a.byteLength).toString('base64');
for (let pass = 0; pass < 2; pass++) {
  const y = await layer.forward(rt.Tensor.fromArray(rand(size), shape), { training: true, seed: 7 + pass });
  const dx = await layer.backward(rt.Tensor.fromArray(rand(size), shape));
  out['y' + pass] = b64(y.toArray());
  out['dx' + pass] = b64(dx.toArray());
}
for (const [name, g] of Object.entries(layer.exportGradients())) out['grad.' + name] = b64(g);
console.log(JSON.stringify(out));
`

type Case = { name: string; layer: Record<string, unknown>; B: number; N: number }
const cases: Case[] = [
  // m = 5 windows, the last one short (19 = 4 * 4 + 3): windows 4, 3, 2 scatter, window 1 does not.
  { name: 'forget, two layers, a short last window', layer: { d: 16, heads: 2, layers: 2, window: 4, variant: 'forget', activation: 'gelu', bias: true, seed: 3 }, B: 3, N: 19 },
  // With dropout the window's output gradient is a shared buffer and dm is not dy: no bf16 copy kept.
  { name: 'forget with dropout', layer: { d: 16, heads: 4, window: 5, variant: 'forget', dropout: 0.2, seed: 5 }, B: 2, N: 23 },
  // Two windows: only window 1, which never scatters.
  { name: 'forget, two windows', layer: { d: 8, heads: 2, window: 4, variant: 'forget', seed: 6 }, B: 2, N: 8 },
  // Accumulate keeps the glue (alpha and its gradient): the switch must change nothing.
  { name: 'accumulate (no scatter)', layer: { d: 16, heads: 2, window: 4, variant: 'accumulate', bias: true, seed: 4 }, B: 2, N: 17 },
]

function run(c: Case, scatter: boolean, parts = false): Record<string, string> {
  const env: NodeJS.ProcessEnv = {
    ...process.env,
    RT_CPU_LN_BACK_GLUE: scatter ? '1' : '0',
    RT_CPU_LN_PARTS: parts ? '1' : '0',
    RT_CPU_POISON: '1',
  }
  for (const k of ['RT_DEVICE', 'RT_DEVICE_STRICT', 'NODE_OPTIONS']) delete env[k]
  const opts = JSON.stringify({ layer: c.layer, B: c.B, N: c.N, seed: 11 })
  const r = spawnSync(process.execPath, [join(work, 'child.mjs'), join(ROOT, 'dist', 'index.js'), opts], {
    encoding: 'utf8',
    env,
    timeout: 100_000,
  })
  expect(r.status, `child failed (${r.signal ?? r.status}):\n${r.stdout}\n${r.stderr}`).toBe(0)
  return JSON.parse(r.stdout.trim().split('\n').pop() ?? '{}') as Record<string, string>
}

beforeAll(() => {
  ensureDist()
  writeFileSync(join(work, 'child.mjs'), CHILD)
})

describe('ln_1 scattering its input gradient (BackScatter) gives the plain path\'s bits', () => {
  for (const c of cases) {
    it(c.name, () => {
      const plain = run(c, false)
      const scattered = run(c, true)
      const keys = Object.keys(plain).sort()
      expect(keys.filter((k) => k.startsWith('grad.')).length).toBeGreaterThan(4)
      expect(Object.keys(scattered).sort()).toEqual(keys)
      for (const k of keys) {
        const v = new Float32Array(Uint8Array.from(Buffer.from(plain[k]!, 'base64')).buffer)
        // Values that could be wrong: finite, and not all zero.
        expect(v.every(Number.isFinite), `${k} finite`).toBe(true)
        // (alpha takes no part in forget mode: its gradient is zero there)
        const unused = c.layer.variant === 'forget' && k.endsWith('.alpha')
        expect(v.some((e) => e !== 0), `${k} ${unused ? 'all zero' : 'not all zero'}`).toBe(!unused)
        expect(scattered[k], `${k}: the same bits with the scatter`).toBe(plain[k])
      }
    }, 120_000)
  }
})

const floats = (b64: string): Float32Array => new Float32Array(Uint8Array.from(Buffer.from(b64, 'base64')).buffer)

describe('the LayerNorms\' dw, db from per-application partial sums (LnParts) match the pass over all rows', () => {
  for (const c of cases.slice(0, 3)) {
    for (const scatter of [false, true]) {
      it(`${c.name}${scatter ? ', with the scatter' : ''}`, () => {
        const plain = run(c, false)
        const split = run(c, scatter, true)
        const keys = Object.keys(plain).sort()
        expect(Object.keys(split).sort()).toEqual(keys)
        const ln = keys.filter((k) => /\.ln_[12]\.(weight|bias)$/.test(k))
        // The partial sums ran: grouped otherwise, some sum rounds otherwise (these inputs are fixed).
        if (c === cases[0]) expect(ln.some((k) => split[k] !== plain[k])).toBe(true)
        expect(ln.length).toBeGreaterThanOrEqual(2 * ((c.layer.layers as number | undefined) ?? 1))
        for (const k of keys) {
          if (!ln.includes(k)) {
            expect(split[k], `${k}: the same bits`).toBe(plain[k])
            continue
          }
          const a = floats(plain[k]!), b = floats(split[k]!)
          let err = 0, scale = 0
          for (let i = 0; i < a.length; i++) {
            err = Math.max(err, Math.abs(a[i]! - b[i]!))
            scale = Math.max(scale, Math.abs(a[i]!))
          }
          expect(scale, `${k} not all zero`).toBeGreaterThan(0)
          expect(err / scale, `${k}: the same sums to float32 rounding`).toBeLessThan(1e-5)
        }
      }, 120_000)
    }
  }
})
