// The rendezvous and the launcher over loopback, with real worker processes and the CPU 'tcp' backend:
// three workers meet, receive rank 0's id and config and all-reduce; a missing rank fails the rendezvous
// within its timeout with a message naming it; a worker that dies (or stops answering) ends the job on
// every rank, the launcher stops the rest and names the rank and its exit code, and nothing hangs.
import type { ChildProcess } from 'node:child_process'
import * as fs from 'node:fs'
import * as os from 'node:os'
import * as path from 'node:path'
import { pathToFileURL } from 'node:url'
import { beforeAll, describe, expect, it } from 'vitest'
import { freePort, launch, PEER_FAILURE_EXIT_CODE } from '../src/distributed/launcher.js'
import { rendezvous } from '../src/distributed/rendezvous.js'
import { ROOT, ensureDist } from './dist.js'

const WORKER = (distUrl: string): string => `
  const rt = await import(${JSON.stringify(distUrl)})
  const mode = process.argv[2]
  const rank = Number(process.env.RT_RANK)
  const id = Buffer.alloc(128, 0).map((_, i) => (i * 7 + 3) & 255).toString('base64')
  const pg = await rt.initProcessGroup({ backend: 'tcp', payload: { ncclLikeId: id, run: { steps: 5, lr: 0.001 } }, heartbeatMs: 100, deadAfterMs: 1500 })
  const say = (o) => process.stdout.write(JSON.stringify({ rank, ...o }) + '\\n')
  try {
    if (mode === 'exchange') {
      const mean = await pg.allReduceMean([], [rank + 1, 10 * rank])
      say({ worldSize: pg.worldSize, payload: pg.payload, mean })
    } else {
      if (mode === 'die' && rank === 1) setTimeout(() => process.exit(3), 300)
      // The survivors must notice through the sockets, not through the launcher's SIGTERM.
      if (mode === 'die' && rank !== 1) process.on('SIGTERM', () => {})
      if (mode === 'stop' && rank === 1) setTimeout(() => process.kill(process.pid, 'SIGSTOP'), 300)
      if (mode === 'stubborn' && rank === 2) { process.on('SIGTERM', () => {}); setInterval(() => {}, 1000); await new Promise(() => {}) }
      if (mode === 'stubborn' && rank === 1) setTimeout(() => process.exit(3), 300)
      for (;;) await pg.allReduceMean([], [rank])
    }
    pg.destroy()
  } catch (e) {
    say({ error: e.message, byPeer: pg.failedByPeer })
    pg.destroy()
    process.exit(pg.failedByPeer ? ${PEER_FAILURE_EXIT_CODE} : 1)
  }
`

async function runJob(script: string, mode: string, gpus: number, extra: { killAfterMs?: number; timeoutMs?: number } = {}) {
  const out = new Map<number, string>()
  const t0 = Date.now()
  const result = await launch({
    gpus, script, args: [mode], stdio: 'pipe', timeoutMs: extra.timeoutMs ?? 20_000, killAfterMs: extra.killAfterMs ?? 2000, backend: 'tcp',
    onSpawn: (rank: number, child: ChildProcess) => {
      out.set(rank, '')
      child.stdout!.on('data', (d) => out.set(rank, out.get(rank)! + String(d)))
      child.stderr!.on('data', (d) => out.set(rank, out.get(rank)! + String(d)))
    },
  })
  const lines = [...out.values()].flatMap((s) => s.split('\n')).filter((l) => l.startsWith('{')).map((l) => JSON.parse(l) as Record<string, unknown>)
  return { result, lines, out, seconds: (Date.now() - t0) / 1000 }
}

describe('rendezvous and launcher (loopback, 3 processes)', () => {
  let script: string
  beforeAll(() => {
    ensureDist()
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'rt-dist-'))
    script = path.join(dir, 'worker.mjs')
    fs.writeFileSync(script, WORKER(pathToFileURL(path.join(ROOT, 'dist', 'index.js')).href))
  })

  it('three workers receive rank 0\'s id and config and all-reduce', async () => {
    const { result, lines } = await runJob(script, 'exchange', 3)
    expect(result.code).toBe(0)
    expect(result.exits.map((e) => [e.rank, e.code])).toEqual([[0, 0], [1, 0], [2, 0]])
    expect(lines.map((l) => l.rank).sort()).toEqual([0, 1, 2])
    const id = Buffer.alloc(128, 0).map((_, i) => (i * 7 + 3) & 255).toString('base64')
    for (const l of lines) {
      expect(l.worldSize).toBe(3)
      expect(l.payload).toEqual({ ncclLikeId: id, run: { steps: 5, lr: 0.001 } })
      expect(l.mean).toEqual([2, 10]) // mean of [1, 2, 3] and of [0, 10, 20]
    }
  })

  it('two "hosts" (--nnodes 2 over loopback) make one job of 4 ranks', async () => {
    const masterPort = await freePort()
    let text = ''
    const node = (nodeRank: number) =>
      launch({ gpus: 2, nnodes: 2, nodeRank, masterAddr: '127.0.0.1', masterPort, script, args: ['exchange'], stdio: 'pipe', backend: 'tcp', timeoutMs: 20_000,
        onSpawn: (_r: number, c: ChildProcess) => { c.stdout!.on('data', (d) => (text += String(d))) } })
    const [a, b] = await Promise.all([node(0), node(1)])
    expect([a.code, b.code]).toEqual([0, 0])
    expect(a.exits.map((e) => e.rank)).toEqual([0, 1])
    expect(b.exits.map((e) => [e.rank, e.localRank])).toEqual([[2, 0], [3, 1]])
    const lines = text.split('\n').filter((l) => l.startsWith('{')).map((l) => JSON.parse(l) as Record<string, unknown>)
    expect(lines.map((l) => l.rank).sort()).toEqual([0, 1, 2, 3])
    for (const l of lines) {
      expect(l.worldSize).toBe(4)
      expect(l.mean).toEqual([2.5, 15])
    }
  })

  it('a worker that exits with code 3: the launcher stops the others and names it', async () => {
    const { result, lines, seconds } = await runJob(script, 'die', 3)
    expect(result.code).toBe(1)
    expect(result.failed).toMatchObject({ rank: 1, code: 3, signal: null })
    expect(result.message).toBe('rank 1 (local rank 1) exited with code 3; stopped the other 2 workers on this host')
    expect(result.exits).toHaveLength(3)
    // The survivors learnt about it from the sockets (or were stopped by the launcher), well before any timeout.
    expect(lines.map((l) => l.rank).sort()).toEqual([0, 2])
    for (const l of lines) {
      expect(String(l.error)).toMatch(/rank 1 disconnected \(its process exited or the network failed\)/)
      expect(l.byPeer).toBe(true)
    }
    // Survivors that stopped because of rank 1 say so with their exit code (unless the launcher got them first).
    for (const e of result.exits.filter((x) => x.rank !== 1)) expect([PEER_FAILURE_EXIT_CODE, null]).toContain(e.code)
    expect(seconds).toBeLessThan(15)
  })

  it('a worker that ignores SIGTERM is killed after the grace period', async () => {
    const { result, seconds } = await runJob(script, 'stubborn', 3, { killAfterMs: 500 })
    expect(result.code).toBe(1)
    expect(result.failed).toMatchObject({ rank: 1, code: 3 })
    expect(result.exits.find((e) => e.rank === 2)!.signal).toBe('SIGKILL')
    expect(seconds).toBeLessThan(15)
  })

  it('a worker that stops answering (SIGSTOP) is detected by the heartbeats', async () => {
    const { result, lines } = await runJob(script, 'stop', 2, { killAfterMs: 500 })
    expect(result.code).toBe(1)
    expect(lines.find((l) => l.rank === 0)?.error).toMatch(/rank 1 stopped answering \(no heartbeat for \d+\.\d s\)/)
    expect(result.exits.find((e) => e.rank === 1)!.signal).toBe('SIGKILL')
  })
})

describe('rendezvous timeouts (in process)', () => {
  it('rank 0 alone fails within its timeout, naming the missing ranks', async () => {
    const port = await freePort()
    const t0 = Date.now()
    await expect(rendezvous({ rank: 0, worldSize: 3, masterAddr: '127.0.0.1', masterPort: port, timeoutMs: 600 })).rejects.toThrow(
      new RegExp(`rendezvous: rank 0 waited 0.6 s on 127.0.0.1:${port}, and ranks 1, 2 of 3 did not join`),
    )
    expect(Date.now() - t0).toBeLessThan(3000)
  })

  it('a worker with no rank 0 fails within its timeout', async () => {
    const port = await freePort()
    const t0 = Date.now()
    await expect(rendezvous({ rank: 2, worldSize: 3, masterAddr: '127.0.0.1', masterPort: port, timeoutMs: 700 })).rejects.toThrow(
      new RegExp(`rank 2 could not reach rank 0 at 127.0.0.1:${port} within 0.7 s \\(last error: ECONNREFUSED\\)`),
    )
    expect(Date.now() - t0).toBeLessThan(3000)
  })

  it('a rank that joins with another world size fails the rendezvous with a clear reason', async () => {
    const port = await freePort()
    const master = rendezvous({ rank: 0, worldSize: 2, masterAddr: '127.0.0.1', masterPort: port, timeoutMs: 5000 })
    const worker = rendezvous({ rank: 1, worldSize: 4, masterAddr: '127.0.0.1', masterPort: port, timeoutMs: 5000 })
    await expect(master).rejects.toThrow(/rank 1 says the world size is 4, rank 0 says 2/)
    await expect(worker).rejects.toThrow(/rank 0 refused rank 1: rank 1 says the world size is 4/)
  })

  it('three ranks in one process exchange the payload', async () => {
    const port = await freePort()
    const payload = { ncclId: Buffer.alloc(128, 9).toString('base64'), config: { batch: 8 } }
    const all = await Promise.all([0, 1, 2].map((rank) => rendezvous({ rank, worldSize: 3, masterAddr: '127.0.0.1', masterPort: port, timeoutMs: 5000, ...(rank === 0 ? { payload } : {}) })))
    for (const r of all) expect(r.payload).toEqual(payload)
    expect([...all[0]!.peers.keys()].sort()).toEqual([1, 2])
    for (const r of all) for (const ch of r.peers.values()) ch.socket.destroy()
  })
})

describe('train() with a process group', () => {
  let script: string
  beforeAll(() => {
    ensureDist()
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'rt-dist-seed-'))
    script = path.join(dir, 'train.mjs')
    // Each rank builds its model with seed = rank: the ranks disagree, and training must refuse to start.
    fs.writeFileSync(script, `
      const rt = await import(${JSON.stringify(pathToFileURL(path.join(ROOT, 'dist', 'index.js')).href)})
      const pg = await rt.initProcessGroup({ backend: 'tcp' })
      const data = new rt.CopyTaskData({ task: 'copy', noise: 4, M: 2, alphabet: 6 })
      const model = new rt.RecurrentTransformer({ vocabSize: 6, d: 8, heads: 2, window: 2, maxLen: 8, head: { copy: 2 }, seed: Number(process.argv[2] === 'same' ? 5 : pg.rank) })
      try {
        const r = await rt.train({ model, data, steps: 3, batchSize: 4, evalEvery: 100, distributed: pg })
        process.stdout.write('RESULT ' + JSON.stringify({ rank: pg.rank, step: r.step }) + '\\n')
      } catch (e) {
        process.stdout.write('RESULT ' + JSON.stringify({ rank: pg.rank, error: e.message }) + '\\n')
        process.exitCode = 1
      } finally {
        pg.destroy()
      }
    `)
  })

  const results = async (mode: string) => {
    let text = ''
    const r = await launch({ gpus: 2, script, args: [mode], stdio: 'pipe', backend: 'tcp', timeoutMs: 20_000, onSpawn: (_rank: number, c: ChildProcess) => { c.stdout!.on('data', (d) => (text += String(d))) } })
    return { r, lines: text.split('\n').filter((l) => l.startsWith('RESULT ')).map((l) => JSON.parse(l.slice(7)) as Record<string, unknown>) }
  }

  it('refuses ranks that start from different weights, on every rank', async () => {
    const { r, lines } = await results('different')
    expect(r.code).toBe(1)
    expect(lines).toHaveLength(2)
    for (const l of lines) expect(l.error).toMatch(/the ranks start from different weights/)
  })

  it('trains when they agree', async () => {
    const { r, lines } = await results('same')
    expect(r.code).toBe(0)
    expect(lines.map((l) => l.step)).toEqual([3, 3])
  })
})
