// Memory that the user forgets: tensors, layers and models dropped without dispose() are freed by the
// finalizers, so nativeAllocatedBytes() returns to its baseline once they are collected, and a loop
// that keeps dropping tensors stays bounded (V8 sees the external memory and collects). Runs in child
// processes started with --expose-gc (vitest's own workers cannot force a collection), against the
// compiled package in dist/ (rebuilt with tsc first when src/ is newer).

import { spawnSync } from 'node:child_process'
import * as fs from 'node:fs'
import * as os from 'node:os'
import * as path from 'node:path'
import { fileURLToPath, pathToFileURL } from 'node:url'
import { beforeAll, describe, expect, it } from 'vitest'

import { ROOT, ensureDist } from './dist.js'


/** Runs an ES module body in `node --expose-gc` with `rt` (the package) in scope; returns its last JSON line. */
function runChild(body: string, timeoutMs = 50_000, env: Record<string, string> = {}): Record<string, unknown> {
  const code = `
    const rt = await import(${JSON.stringify(pathToFileURL(path.join(ROOT, 'dist', 'index.js')).href)})
    const tick = () => new Promise((r) => setImmediate(r))
    async function settle(target, slack = 0) {
      // Collections run finalizers on later turns of the event loop: collect, yield, repeat.
      for (let i = 0; i < 200; i++) {
        globalThis.gc()
        await tick()
        if (rt.nativeAllocatedBytes() <= target + slack) return i
        await new Promise((r) => setTimeout(r, 5))
      }
      return -1
    }
    ${body}
  `
  const r = spawnSync(process.execPath, ['--expose-gc', '--input-type=module', '-e', code], { cwd: ROOT, encoding: 'utf8', timeout: timeoutMs, env: { ...process.env, ...env } })
  const lines = (r.stdout ?? '').trim().split('\n').filter((l) => l.startsWith('{'))
  if (r.status !== 0 || lines.length === 0) throw new Error(`child failed (exit ${r.status ?? r.signal}):\n${r.stdout}\n${r.stderr}`)
  return JSON.parse(lines[lines.length - 1]!) as Record<string, unknown>
}

describe('finalizers free what the user drops', () => {
  beforeAll(() => ensureDist(), 120_000)

  it('tensors dropped without dispose(): nativeAllocatedBytes returns to its baseline after a collection', () => {
    const r = runChild(`
      const baseline = rt.nativeAllocatedBytes()
      // In a function of its own: an async frame keeps its last locals alive while it waits.
      async function drop() {
        for (let i = 0; i < 3000; i++) {
          const t = rt.Tensor.fromArray(new Float32Array(2500).fill(i), [50, 50])
          if (i % 3 === 0) t.toArray()
          if (i % 7 === 0) rt.Tensor.zeros([10, 10, 10], 'int32')
          if (i % 100 === 0) await tick()
        }
        return rt.nativeAllocatedBytes()
      }
      const peak = await drop()
      const rounds = await settle(baseline)
      console.log(JSON.stringify({ baseline, peak, after: rt.nativeAllocatedBytes(), rounds }))
    `)
    console.log('[memory] dropped tensors:', JSON.stringify(r))
    expect(r.peak as number).toBeGreaterThan(r.baseline as number) // they were allocated...
    expect(r.after).toBe(r.baseline) // ...and all freed
    expect(r.rounds).toBeGreaterThanOrEqual(0)
  })

  it('layers and models dropped without dispose(), after forward/backward/lossAndGrad and a decoder: back to the baseline', () => {
    const r = runChild(`
      const cfg = { vocabSize: 9, d: 16, heads: 2, layers: 2, window: 3, variant: 'accumulate', maxLen: 12, head: 'lm' }
      const tokens = () => rt.Tensor.fromArray(Int32Array.from({ length: 24 }, (_, i) => i % 9), [2, 12], 'int32')
      async function use(dispose) {
        const m = new rt.RecurrentTransformer(cfg)
        const tok = tokens()
        await m.lossAndGrad(tok, tokens(), { seed: 1 })
        await m.evaluate(tok, tokens())
        const lg = await m.logits(tok)
        const dec = m.decoder(2)
        await dec.step([1, 2])
        const layer = new rt.RecurrentLayer({ d: 16, heads: 2, window: 3 })
        const y = await layer.forward(rt.Tensor.fromArray(new Float32Array(2 * 12 * 16).fill(0.1), [2, 12, 16]))
        await layer.backward(y)
        const opt = new rt.AdamW(m.parameters(), m.decayMask())
        await opt.step()
        if (dispose) { opt.dispose(); m.dispose(); layer.dispose(); for (const t of [tok, lg, y]) t.dispose() }
      }
      // RT_CPU_CACHE_MB=0 (below): freed activation blocks go back to the system at once instead of into
      // the CPU backend's block cache, which nativeAllocatedBytes counts.
      await use(true)
      await settle(0)
      const baseline = rt.nativeAllocatedBytes()
      async function drop() {
        for (let i = 0; i < 40; i++) await use(false)
        return rt.nativeAllocatedBytes()
      }
      const peak = await drop()
      const rounds = await settle(baseline)
      console.log(JSON.stringify({ baseline, peak, after: rt.nativeAllocatedBytes(), rounds }))
    `, 50_000, { RT_CPU_CACHE_MB: '0' })
    console.log('[memory] dropped models:', JSON.stringify(r))
    expect(r.peak as number).toBeGreaterThan(r.baseline as number)
    expect(r.after).toBe(r.baseline)
  })

  it('a loop that drops 4 MB tensors without dispose() stays bounded: V8 counts their memory and collects', () => {
    const r = runChild(`
      let peak = 0, rssPeak = 0
      for (let i = 0; i < 400; i++) {   // 1.6 GB in total if nothing were freed
        rt.Tensor.zeros([1024, 1024])
        peak = Math.max(peak, rt.nativeAllocatedBytes())
        rssPeak = Math.max(rssPeak, process.memoryUsage().rss)
        await tick()
      }
      console.log(JSON.stringify({ peak, rssPeak, total: 400 * 4 << 20 }))
    `)
    console.log('[memory] bounded loop:', JSON.stringify(r))
    expect(r.peak as number).toBeLessThan(512 << 20)
    expect(r.rssPeak as number).toBeLessThan(1024 << 20)
  })
})
