// Concurrency: the addon loads in worker_threads (per-environment instance data), two workers training
// two models at once get the same bits as the same trainings one after the other, a worker terminated
// in the middle of a step does not take the process down, and two models trained at once on the main
// thread match too. On one model or layer, overlapping calls (a forward started twice without await,
// lossAndGrad twice, ...) are refused with a clear Error and leave the model uncorrupted. Workers run
// the compiled package in dist/ (tsc first when src/ is newer).

import { spawnSync } from 'node:child_process'
import * as fs from 'node:fs'
import * as os from 'node:os'
import * as path from 'node:path'
import { fileURLToPath, pathToFileURL } from 'node:url'
import { Worker } from 'node:worker_threads'
import { beforeAll, describe, expect, it } from 'vitest'
import { AdamW, CopyTaskData, RecurrentLayer, RecurrentTransformer, Tensor, train } from '../src/index.js'
import type { ModelConfig } from '../src/index.js'
import { sameBits } from './helpers.js'

import { ROOT, ensureDist } from './dist.js'


// ---------------------------------------------------------------------------------------------------
// Workers

const dataOpts = { task: 'copy' as const, noise: 12, M: 4, alphabet: 8 }
const jobs: { cfg: ModelConfig; seed: number }[] = [
  { cfg: { vocabSize: 8, d: 32, heads: 4, layers: 2, windowRange: [2, 6], variant: 'accumulate', dropout: 0.1, maxLen: 20, head: { copy: 4 }, seed: 1 }, seed: 11 },
  { cfg: { vocabSize: 8, d: 24, heads: 2, layers: 1, window: 4, variant: 'forget', activation: 'relu', bias: true, maxLen: 20, head: { copy: 4 }, seed: 2 }, seed: 22 },
]
const STEPS = 60

const WORKER = `
  const { parentPort, workerData } = require('node:worker_threads')
  ;(async () => {
    const rt = await import(workerData.dist)
    const data = new rt.CopyTaskData(workerData.dataOpts)
    const model = new rt.RecurrentTransformer(workerData.cfg)
    const losses = []
    // Ready; start when told (so that two workers start training together, whatever their load times).
    await new Promise((go) => { parentPort.once('message', go); parentPort.postMessage({ started: true }) })
    const t0 = performance.timeOrigin + performance.now()
    await rt.train({
      model, data, steps: workerData.steps, batchSize: 8, seed: workerData.seed, evalEvery: 1000000, optimizer: { lr: 3e-3 },
      onEvent: (e) => { if (e.type === 'step') losses.push(e.loss) },
    })
    const t1 = performance.timeOrigin + performance.now()
    const params = model.exportParameters()
    model.dispose()
    parentPort.postMessage({ losses, params, t0, t1 })
  })().catch((e) => parentPort.postMessage({ error: String(e && e.stack || e) }))
`

interface Trained {
  losses: number[]
  params: Record<string, Float32Array>
  /** When the worker's training started and ended (ms since the epoch). */
  t0?: number
  t1?: number
}

/** Starts a worker; it trains once `go()` is called (at once unless `hold`). */
function startWorker(job: (typeof jobs)[number], steps = STEPS, hold = false): { worker: Worker; started: Promise<void>; go: () => void; done: Promise<Trained> } {
  const worker = new Worker(WORKER, {
    eval: true,
    workerData: { dist: pathToFileURL(path.join(ROOT, 'dist', 'index.js')).href, dataOpts, cfg: job.cfg, seed: job.seed, steps },
  })
  let onStarted!: () => void
  const started = new Promise<void>((r) => (onStarted = r))
  const done = new Promise<Trained>((resolve, reject) => {
    worker.on('message', (m: { started?: boolean; error?: string } & Partial<Trained>) => {
      if (m.started) {
        if (!hold) worker.postMessage('go')
        return onStarted()
      }
      if (m.error) reject(new Error(`worker: ${m.error}`))
      else resolve(m as Trained)
    })
    worker.on('error', reject)
    worker.on('exit', (code) => reject(new Error(`worker exited (${code}) before reporting`)))
  })
  return { worker, started, go: () => worker.postMessage('go'), done }
}

function expectSameRun(a: Trained, b: Trained, what: string): void {
  expect(sameBits(Float32Array.from(a.losses), Float32Array.from(b.losses)), `${what}: losses`).toBe(true)
  expect(Object.keys(a.params)).toEqual(Object.keys(b.params))
  for (const k of Object.keys(a.params)) expect(sameBits(a.params[k]!, b.params[k]!), `${what}: ${k}`).toBe(true)
}

describe('worker_threads', () => {
  beforeAll(() => ensureDist(), 120_000)

  it('two workers training two models at once give the same bits as one after the other', async () => {
    // One after the other.
    const seqA = await startWorker(jobs[0]!).done
    const seqB = await startWorker(jobs[1]!).done
    // At the same time.
    const wa = startWorker(jobs[0]!, STEPS, true)
    const wb = startWorker(jobs[1]!, STEPS, true)
    await Promise.all([wa.started, wb.started])
    wa.go()
    wb.go()
    const [parA, parB] = await Promise.all([wa.done, wb.done])
    // They really ran at the same time: the shorter training lies mostly inside the longer one.
    const overlap = Math.min(parA.t1!, parB.t1!) - Math.max(parA.t0!, parB.t0!)
    const shorter = Math.min(parA.t1! - parA.t0!, parB.t1! - parB.t0!)
    console.log(`[concurrency] trainings of ${(parA.t1! - parA.t0!).toFixed(0)} and ${(parB.t1! - parB.t0!).toFixed(0)} ms overlapped for ${overlap.toFixed(0)} ms`)
    expect(overlap).toBeGreaterThan(0.5 * shorter)
    expectSameRun(parA, seqA, 'model A')
    expectSameRun(parB, seqB, 'model B')
    expect(seqA.losses.length).toBe(STEPS)
    expect(seqA.losses.every(Number.isFinite) && seqB.losses.every(Number.isFinite)).toBe(true)
    // And the same bits on this thread, next to the workers' addon instances.
    const here = await trainHere(jobs[0]!)
    expectSameRun(here, seqA, 'model A on the main thread')
  })

  it('a worker terminated in the middle of a native step does not take the process down; the others go on', () => {
    // In a child process: if terminating aborts the process, it must not take this test runner with it.
    const script = `
      import { Worker } from 'node:worker_threads'
      const dist = ${JSON.stringify(pathToFileURL(path.join(ROOT, 'dist', 'index.js')).href)}
      const code = \`
        const { parentPort, workerData } = require('node:worker_threads')
        ;(async () => {
          const rt = await import(workerData)
          const layer = new rt.RecurrentLayer({ d: 64, heads: 4, layers: 2, window: 8 })
          const x = rt.Tensor.fromArray(new Float32Array(4 * 256 * 64).fill(0.1), [4, 256, 64])
          parentPort.postMessage('started')
          for (;;) { const y = await layer.forward(x); y.dispose() }
        })()
      \`
      for (let i = 0; i < 8; i++) {
        const w = new Worker(code, { eval: true, workerData: dist, execArgv: [] })
        await new Promise((r) => w.on('message', r))
        await new Promise((r) => setTimeout(r, 20 + 13 * i))   // inside a forward (each takes ~50 ms)
        await w.terminate()
        console.log('terminated ' + i)
      }
      const rt = await import(dist)
      const layer = new rt.RecurrentLayer({ d: 8, heads: 2, window: 2 })
      const y = await layer.forward(rt.Tensor.fromArray(new Float32Array(2 * 5 * 8).fill(0.5), [2, 5, 8]))
      console.log('alive ' + y.shape.join('x'))
    `
    const r = spawnSync(process.execPath, ['--input-type=module', '-e', script], { cwd: ROOT, encoding: 'utf8', timeout: 60_000, env: process.env })
    const detail = `exit ${r.status ?? r.signal}\n${r.stdout}\n${r.stderr}`
    expect(r.stderr, detail).not.toMatch(/terminate called|Aborted|FATAL ERROR/)
    expect(r.status, detail).toBe(0)
    expect(r.stdout).toContain('terminated 7')
    expect(r.stdout).toContain('alive 2x5x8')
  })
})

async function trainHere(job: (typeof jobs)[number], steps = STEPS): Promise<Trained> {
  const data = new CopyTaskData(dataOpts)
  const model = new RecurrentTransformer(job.cfg)
  const losses: number[] = []
  try {
    await train({
      model, data, steps, batchSize: 8, seed: job.seed, evalEvery: 1_000_000, optimizer: { lr: 3e-3 },
      onEvent: (e) => {
        if (e.type === 'step') losses.push(e.loss)
      },
    })
    return { losses, params: model.exportParameters() }
  } finally {
    model.dispose()
  }
}

describe('two models at once on one thread', () => {
  it('two trainings interleaved with Promise.all give the same bits as one after the other', async () => {
    const seqA = await trainHere(jobs[0]!, 15)
    const seqB = await trainHere(jobs[1]!, 15)
    const [parA, parB] = await Promise.all([trainHere(jobs[0]!, 15), trainHere(jobs[1]!, 15)])
    expectSameRun(parA, seqA, 'model A')
    expectSameRun(parB, seqB, 'model B')
  })
})

// ---------------------------------------------------------------------------------------------------
// Overlapping calls on one object

describe('overlapping calls on one layer or model are refused', () => {
  const layerCfg = { d: 16, heads: 2, layers: 2, window: 3, variant: 'accumulate' as const, seed: 3 }
  const x = (): Tensor => Tensor.fromArray(Float32Array.from({ length: 2 * 40 * 16 }, (_, i) => Math.sin(i * 0.1)), [2, 40, 16])

  it('RecurrentLayer.forward twice without await: the second is refused, the first is right, the layer is intact', async () => {
    const ref = new RecurrentLayer(layerCfg)
    const xr = x()
    const yRef = (await ref.forward(xr)).toArray() as Float32Array
    const dxRef = (await ref.backward(Tensor.fromArray(new Float32Array(2 * 40 * 16).fill(1), [2, 40, 16]))).toArray() as Float32Array
    const gRef = ref.exportGradients()
    ref.dispose()

    const layer = new RecurrentLayer(layerCfg)
    const x1 = x()
    const p1 = layer.forward(x1)
    const p2 = layer.forward(x1)
    const [r1, r2] = await Promise.allSettled([p1, p2])
    expect(r1.status).toBe('fulfilled')
    expect(r2.status).toBe('rejected')
    expect(((r2 as PromiseRejectedResult).reason as Error).message).toMatch(/busy with a forward or backward pass; await it/)
    expect(sameBits((r1 as PromiseFulfilledResult<Tensor>).value.toArray() as Float32Array, yRef)).toBe(true)
    // While a forward runs, backward, zeroGrad, importParameters and dispose are refused too.
    const p3 = layer.forward(x1, { grad: false })
    const refused = await Promise.allSettled([
      layer.backward(Tensor.zeros([2, 40, 16])),
      (async () => layer.zeroGrad())(),
      (async () => layer.importParameters(layer.exportParameters()))(),
      (async () => layer.dispose())(),
    ])
    await p3
    for (const r of refused) {
      expect(r.status).toBe('rejected')
      expect(((r as PromiseRejectedResult).reason as Error).message).toMatch(/busy/)
    }
    expect(layer.disposed).toBe(false)
    // Uncorrupted: the same forward and backward as a fresh layer.
    const y = await layer.forward(x1)
    expect(sameBits(y.toArray() as Float32Array, yRef)).toBe(true)
    const dx = await layer.backward(Tensor.fromArray(new Float32Array(2 * 40 * 16).fill(1), [2, 40, 16]))
    expect(sameBits(dx.toArray() as Float32Array, dxRef)).toBe(true)
    const g = layer.exportGradients()
    for (const k of Object.keys(gRef)) expect(sameBits(g[k]!, gRef[k]!), k).toBe(true)
    layer.dispose()
  })

  const modelCfg: ModelConfig = { vocabSize: 9, d: 16, heads: 2, layers: 2, window: 3, variant: 'accumulate', maxLen: 40, dropout: 0.1 }
  const batch = (): [Tensor, Tensor] => [
    Tensor.fromArray(Int32Array.from({ length: 2 * 40 }, (_, i) => (i * 5) % 9), [2, 40], 'int32'),
    Tensor.fromArray(Int32Array.from({ length: 2 * 40 }, (_, i) => (i * 7 + 1) % 9), [2, 40], 'int32'),
  ]

  it('model.lossAndGrad twice without await: the second is refused, the gradients are those of one call', async () => {
    const ref = new RecurrentTransformer(modelCfg)
    const [tok, tgt] = batch()
    const rRef = await ref.lossAndGrad(tok, tgt, { seed: 4 })
    const gRef = Object.fromEntries(ref.parameters().map((p) => [p.name, p.grad.toArray() as Float32Array]))
    ref.dispose()

    const model = new RecurrentTransformer(modelCfg)
    const [a, b] = await Promise.allSettled([model.lossAndGrad(tok, tgt, { seed: 4 }), model.lossAndGrad(tok, tgt, { seed: 4 })])
    expect(a.status).toBe('fulfilled')
    expect(b.status).toBe('rejected')
    expect(((b as PromiseRejectedResult).reason as Error).message).toBe('lossAndGrad: the model is busy with lossAndGrad; await it before calling again')
    expect((a as PromiseFulfilledResult<{ loss: number }>).value.loss).toBe(rRef.loss)
    for (const p of model.parameters()) expect(sameBits(p.grad.toArray() as Float32Array, gRef[p.name]!), p.name).toBe(true)
    // evaluate, logits, zeroGrad, importParameters and dispose during a lossAndGrad: refused as well.
    model.zeroGrad()
    const running = model.lossAndGrad(tok, tgt, { seed: 4 })
    const refused = await Promise.allSettled([
      model.evaluate(tok, tgt),
      model.logits(tok),
      (async () => model.zeroGrad())(),
      (async () => model.importParameters(model.exportParameters()))(),
      (async () => model.dispose())(),
    ])
    const r = await running
    for (const x of refused) {
      expect(x.status).toBe('rejected')
      expect(((x as PromiseRejectedResult).reason as Error).message).toMatch(/busy with lossAndGrad/)
    }
    expect(r.loss).toBe(rRef.loss)
    for (const p of model.parameters()) expect(sameBits(p.grad.toArray() as Float32Array, gRef[p.name]!), p.name).toBe(true)
    model.dispose()
    tok.dispose()
    tgt.dispose()
  })

  it('an optimizer step started while lossAndGrad runs is refused (it would rewrite the weights under the forward)', async () => {
    const ref = new RecurrentTransformer(modelCfg)
    const [tok, tgt] = batch()
    const rRef = await ref.lossAndGrad(tok, tgt, { seed: 4 })
    ref.dispose()

    const model = new RecurrentTransformer(modelCfg)
    // Non-zero gradients, so that a step really changes the weights.
    await model.lossAndGrad(tok, tgt, { seed: 9 })
    const opt = new AdamW(model.parameters(), model.decayMask(), { lr: 0.05 })
    const before = model.exportParameters()
    const running = model.lossAndGrad(tok, tgt, { seed: 4 })
    const step = await opt.step().then(() => null, (e: unknown) => e)
    const r = await running
    const weightsMoved = Object.entries(model.exportParameters()).some(([k, v]) => !sameBits(v, before[k]!))
    opt.dispose()
    model.dispose()
    tok.dispose()
    tgt.dispose()
    expect(step, `the step was accepted (weights moved: ${weightsMoved}; loss ${r.loss} vs ${rRef.loss} without the overlap)`).toBeInstanceOf(Error)
    expect(r.loss).toBe(rRef.loss)
  })
})
