// `rt train --gpus N` end to end on the CPU ('tcp' backend: the same trainer code path as NCCL, gradients
// averaged through rank 0): 2 and 4 ranks with the global batch B follow the single-process loss curve
// with batch B, only rank 0 writes the log and checkpoints, a run resumes on a different number of ranks,
// and a batch that does not split evenly fails with a message naming the rank and the numbers.
import { spawn, spawnSync } from 'node:child_process'
import * as fs from 'node:fs'
import * as os from 'node:os'
import * as path from 'node:path'
import { beforeAll, describe, expect, it } from 'vitest'
import { ROOT, ensureDist } from './dist.js'

type Ev = { type: string; step?: number; loss?: number; accuracy?: number; samples?: number; noise?: number }

function rt(dir: string, args: string[]): { code: number | null; events: Ev[]; stderr: string } {
  const r = spawnSync(process.execPath, [path.join(ROOT, 'dist', 'cli', 'rt.js'), 'train', '--json', ...args], { cwd: dir, encoding: 'utf8', timeout: 90_000, env: { ...process.env, RT_DIST_TIMEOUT_MS: '30000' } })
  const events = r.stdout.split('\n').filter((l) => l.startsWith('{')).map((l) => JSON.parse(l) as Ev)
  return { code: r.status, events, stderr: r.stderr }
}

const BASE = ['--steps', '12', '--eval-every', '6', '--batch', '8', '--seed', '3']
const losses = (evs: Ev[], type: string): number[] => evs.filter((e) => e.type === type).map((e) => e.loss!)

describe('rt train --gpus N (CPU tcp backend)', () => {
  let dir: string
  let single: Ev[]
  beforeAll(() => {
    ensureDist()
    dir = fs.mkdtempSync(path.join(os.tmpdir(), 'rt-dist-train-'))
    const r = rt(dir, [...BASE, '--out', 'single'])
    expect(r.code, r.stderr).toBe(0)
    single = r.events
  })

  for (const gpus of [2, 4]) {
    it(`${gpus} ranks with batch 8 follow the single-process curve with batch 8`, () => {
      const r = rt(dir, [...BASE, '--gpus', String(gpus), '--dist-backend', 'tcp', '--out', `g${gpus}`])
      expect(r.code, r.stderr).toBe(0)
      const a = losses(single, 'step')
      const b = losses(r.events, 'step')
      expect(b).toHaveLength(12)
      // Same data, same initial weights; only the order of float32 sums differs.
      b.forEach((x, i) => expect(Math.abs(x - a[i]!)).toBeLessThan(1e-4 * Math.max(1, Math.abs(a[i]!))))
      losses(r.events, 'eval').forEach((x, i) => expect(Math.abs(x - losses(single, 'eval')[i]!)).toBeLessThan(1e-4))
      expect(r.events.filter((e) => e.type === 'step').at(-1)!.samples).toBe(12 * 8)
      // Rank 0 alone prints, logs and checkpoints.
      expect(r.events.filter((e) => e.type === 'summary')).toHaveLength(1)
      expect(r.events.filter((e) => e.type === 'checkpoint').length).toBe(single.filter((e) => e.type === 'checkpoint').length)
      const log = fs.readFileSync(path.join(dir, `g${gpus}`, 'log.jsonl'), 'utf8').trim().split('\n').map((l) => JSON.parse(l) as Record<string, unknown>)
      expect(log.filter((l) => l.type === 'config')).toHaveLength(1)
      expect(log[0]!.worldSize).toBe(gpus)
      expect(log.filter((l) => l.type === 'summary')).toHaveLength(1)
    })
  }

  it('a checkpoint of 2 ranks resumes on 4 ranks and on 1, continuing the same curve', () => {
    const first = rt(dir, [...BASE, '--steps', '6', '--gpus', '2', '--dist-backend', 'tcp', '--out', 'part'])
    expect(first.code, first.stderr).toBe(0)
    const ck = path.join(dir, 'part', 'checkpoint.safetensors')
    const want = losses(single, 'step').slice(6)
    for (const gpus of ['4', '1']) {
      const r = rt(dir, [...BASE, '--gpus', gpus, '--dist-backend', 'tcp', '--resume', ck, '--out', `resume${gpus}`])
      expect(r.code, r.stderr).toBe(0)
      const steps = r.events.filter((e) => e.type === 'step')
      expect(steps.map((e) => e.step)).toEqual([7, 8, 9, 10, 11, 12])
      steps.forEach((e, i) => expect(Math.abs(e.loss! - want[i]!)).toBeLessThan(1e-4 * Math.max(1, want[i]!)))
    }
  })

  it('a batch that does not split over the GPUs fails clearly, naming the rank', () => {
    const r = rt(dir, [...BASE, '--batch', '6', '--gpus', '4', '--dist-backend', 'tcp', '--out', 'bad'])
    expect(r.code).toBe(1)
    expect(r.stderr).toMatch(/batchSize: 6 is not divisible by the number of GPUs \(world size 4\); use a multiple of 4/)
    expect(r.stderr).toMatch(/rt train: rank \d \(local rank \d\) exited with code 1; stopped the other 3 workers on this host/)
  })

  it('--gpus 2 with the default NCCL backend, on a machine without it: a clear error, no hang', () => {
    const t0 = Date.now()
    const r = rt(dir, [...BASE, '--gpus', '2', '--out', 'nccl'])
    expect(r.code).toBe(1)
    // Without a CUDA build (CI) or without libnccl.so.2 (a CUDA build here): both say what is missing.
    expect(r.stderr).toMatch(/multi-GPU training needs (the CUDA build of the addon|NCCL)/)
    expect(r.stderr).toMatch(/rt train: rank \d \(local rank \d\) exited with code 1; stopped the other 1 worker on this host/)
    expect(Date.now() - t0).toBeLessThan(30_000)
  })

  it('Ctrl-C (SIGINT to the launcher) stops every rank after the same step, with a checkpoint', async () => {
    const child = spawn(process.execPath, [path.join(ROOT, 'dist', 'cli', 'rt.js'), 'train', '--json', '--steps', '100000', '--eval-every', '100000', '--batch', '8', '--gpus', '2', '--dist-backend', 'tcp', '--out', 'sigint'], { cwd: dir, stdio: ['ignore', 'pipe', 'pipe'] })
    let out = ''
    let err = ''
    child.stdout.on('data', (d) => (out += String(d)))
    child.stderr.on('data', (d) => (err += String(d)))
    // Wait for training to run, then interrupt the launcher only (as a terminal would, plus its forwarding).
    const t0 = Date.now()
    while (!out.includes('"type":"step"') && Date.now() - t0 < 30_000) await new Promise((r) => setTimeout(r, 50))
    child.kill('SIGINT')
    const code = await new Promise<number | null>((r) => child.on('exit', (c) => r(c)))
    expect(code, err).toBe(0)
    const evs = out.split('\n').filter((l) => l.startsWith('{')).map((l) => JSON.parse(l) as Ev & { aborted?: boolean })
    const summary = evs.find((e) => e.type === 'summary')!
    expect(summary.aborted).toBe(true)
    const last = evs.filter((e) => e.type === 'step').at(-1)!.step!
    expect(evs.find((e) => e.type === 'checkpoint')?.step).toBe(last)
    expect(fs.existsSync(path.join(dir, 'sigint', 'checkpoint.safetensors'))).toBe(true)
  })

  it('--gpus with a bad value is a usage error', () => {
    const r = rt(dir, ['--gpus', '0'])
    expect(r.code).toBe(2)
    expect(r.stderr).toMatch(/--gpus: expected a positive integer, got 0/)
  })
})
