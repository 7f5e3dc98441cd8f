// Crash safety of checkpoints through train(): a child process trains a tiny model writing a checkpoint
// every step and is killed with SIGKILL at random moments, many times; after each kill the checkpoint
// loads, holds at least the last step the child reported as saved, training resumes from it, and no
// temporary files pile up (at most the one that was in flight). Then a full disk and a read-only
// folder (real tmpfs mounts where this process may mount, as root in CI) make train() fail with a
// clear Error and leave the previous checkpoint intact and loadable. Runs against dist/ (tsc first
// when src/ is newer).

import { spawn, spawnSync } from 'node:child_process'
import * as fs from 'node:fs'
import * as os from 'node:os'
import * as path from 'node:path'
import { fileURLToPath, pathToFileURL } from 'node:url'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { loadCheckpoint } from '../src/io/checkpoint.js'
import { RecurrentTransformer } from '../src/model/transformer.js'
import { CopyTaskData } from '../src/train/data.js'
import { train } from '../src/train/trainer.js'

import { ROOT, ensureDist } from './dist.js'
const KILLS = Number(process.env.RT_CRASH_KILLS ?? 20)
const BUDGET_MS = Number(process.env.RT_CRASH_BUDGET_MS ?? 40_000)


const dataOpts = { task: 'copy' as const, noise: 4, M: 2, alphabet: 6 }
const modelCfg = { vocabSize: 6, d: 8, heads: 2, window: 2, variant: 'accumulate' as const, maxLen: 8, head: { copy: 2 }, seed: 4 }

// The child: resumes from the checkpoint when there is one, then trains "forever", saving every step
// and printing `saved N` after each save returns (the file then holds step N).
const CHILD = (distUrl: string): string => `
  import { existsSync } from 'node:fs'
  const rt = await import(${JSON.stringify(distUrl)})
  const [ck, steps] = process.argv.slice(2)
  const data = new rt.CopyTaskData(${JSON.stringify(dataOpts)})
  const model = new rt.RecurrentTransformer(${JSON.stringify(modelCfg)})
  const resumeFrom = existsSync(ck) ? ck : undefined
  let first = true
  const r = await rt.train({
    model, data, steps: Number(steps), batchSize: 4, evalEvery: 1_000_000, seed: 9, resumeFrom,
    checkpoint: { path: ck, every: 1 },
    onEvent: (e) => {
      if (e.type === 'step' && first) { first = false; process.stdout.write('first ' + e.step + '\\n') }
      if (e.type === 'checkpoint') process.stdout.write('saved ' + e.step + '\\n')
    },
  })
  process.stdout.write('done ' + r.step + '\\n')
`

function tempFiles(dir: string, base: string): string[] {
  return fs.readdirSync(dir).filter((f) => f.startsWith(`${base}.tmp-`))
}

describe('crash safety: SIGKILL while training writes a checkpoint every step', () => {
  let dir: string
  let script: string
  beforeAll(() => {
    ensureDist()
    dir = fs.mkdtempSync(path.join(os.tmpdir(), 'rt-crash-'))
    script = path.join(dir, 'child.mjs')
    fs.writeFileSync(script, CHILD(pathToFileURL(path.join(ROOT, 'dist', 'index.js')).href))
  }, 120_000)
  afterAll(() => {
    fs.rmSync(dir, { recursive: true, force: true })
  })

  /** Starts the child; resolves when it has saved `minSaves` times after starting, then kills it `delayMs` later. */
  function runAndKill(ck: string, delayMs: number): Promise<{ firstStep: number; lastSaved: number; signal: string | null; out: string }> {
    return new Promise((resolve, reject) => {
      const child = spawn(process.execPath, [script, ck, '1000000'], { cwd: ROOT, stdio: ['ignore', 'pipe', 'pipe'] })
      let out = ''
      let err = ''
      let firstStep = -1
      let lastSaved = -1
      let armed = false
      const timer = setTimeout(() => child.kill('SIGKILL'), 30_000) // a stuck child is killed too, and fails below
      child.stdout.on('data', (b: Buffer) => {
        out += b.toString()
        for (const m of out.matchAll(/first (\d+)/g)) firstStep = Number(m[1])
        for (const m of out.matchAll(/saved (\d+)/g)) lastSaved = Number(m[1])
        if (!armed && lastSaved >= 0) {
          armed = true
          setTimeout(() => child.kill('SIGKILL'), delayMs)
        }
      })
      child.stderr.on('data', (b: Buffer) => (err += b.toString()))
      child.on('error', reject)
      child.on('close', (_code, signal) => {
        clearTimeout(timer)
        if (!armed) reject(new Error(`child ended before its first save (signal ${signal}):\n${out}\n${err}`))
        // What the child printed last before dying is a lower bound of what the file holds.
        for (const m of out.matchAll(/saved (\d+)/g)) lastSaved = Number(m[1])
        resolve({ firstStep, lastSaved, signal, out: out + err })
      })
    })
  }

  it(`${KILLS} random SIGKILLs: the checkpoint always loads, resumes where it was, and temp files do not pile up`, async () => {
    const ck = path.join(dir, 'ck.safetensors')
    const t0 = Date.now()
    let kills = 0
    let prevStep = 0
    let maxTemps = 0
    const history: string[] = []
    let seed = 12345
    const rand = (): number => ((seed = (Math.imul(seed, 1103515245) + 12345) >>> 0) / 2 ** 32)
    while (kills < KILLS && Date.now() - t0 < BUDGET_MS) {
      const delay = Math.floor(rand() * 60)
      const r = await runAndKill(ck, delay)
      kills++
      expect(r.signal, r.out).toBe('SIGKILL')
      // Resumed from the previous checkpoint: the first step is the one after it.
      expect(r.firstStep, `run ${kills}: first step`).toBe(prevStep + 1)
      // The file loads and holds at least the last step reported saved.
      const c = await loadCheckpoint(ck, { strict: true })
      const step = (c.training as { step: number }).step
      expect(step, `run ${kills}`).toBeGreaterThanOrEqual(r.lastSaved)
      expect(step).toBeGreaterThanOrEqual(prevStep)
      expect(c.optimizer?.step).toBe(step)
      const temps = tempFiles(dir, 'ck.safetensors')
      maxTemps = Math.max(maxTemps, temps.length)
      history.push(`kill ${kills} after +${delay} ms: saved ${r.lastSaved}, file at step ${step}, ${temps.length} temp file(s)`)
      prevStep = step
    }
    console.log(`[crash] ${kills} kills in ${((Date.now() - t0) / 1000).toFixed(1)} s\n  ${history.join('\n  ')}`)
    expect(kills).toBeGreaterThanOrEqual(Math.min(KILLS, 5))
    // A last run without a kill resumes and finishes.
    const fin = spawnSync(process.execPath, [script, ck, String(prevStep + 3)], { cwd: ROOT, encoding: 'utf8', timeout: 30_000 })
    expect(fin.status, fin.stderr).toBe(0)
    expect(fin.stdout).toContain(`first ${prevStep + 1}`)
    expect(fin.stdout).toContain(`done ${prevStep + 3}`)
    // Temp files: at most the one in flight when a kill landed, never a pile of them.
    const left = tempFiles(dir, 'ck.safetensors')
    console.log(`[crash] temp files left after ${kills} kills: ${left.length} (max seen after a kill: ${maxTemps})`)
    expect(maxTemps).toBeLessThanOrEqual(1)
    expect(left.length).toBeLessThanOrEqual(1)
  }, 120_000)
})

// ---------------------------------------------------------------------------------------------------

function tryMount(dir: string, opts: string): boolean {
  if (process.platform !== 'linux') return false
  const r = spawnSync('mount', ['-t', 'tmpfs', '-o', opts, 'tmpfs', dir], { encoding: 'utf8' })
  return r.status === 0
}

function umount(dir: string): void {
  spawnSync('umount', [dir])
}

describe('train() checkpoints on a full disk and in a read-only folder', () => {
  let base: string
  let mounted = false
  const data = new CopyTaskData(dataOpts)
  beforeAll(() => {
    base = fs.mkdtempSync(path.join(os.tmpdir(), 'rt-fs-'))
    mounted = tryMount(base, 'size=2m,mode=0755')
    if (!mounted) console.warn('[crash] cannot mount a tmpfs here (not root, or no mount permission): the full-disk and read-only tests are skipped')
  })
  afterAll(() => {
    if (mounted) umount(base)
    fs.rmSync(base, { recursive: true, force: true })
  })

  async function firstCheckpoint(ck: string): Promise<Buffer> {
    const model = new RecurrentTransformer(modelCfg)
    try {
      await train({ model, data, steps: 3, batchSize: 4, evalEvery: 1000, seed: 1, checkpoint: { path: ck, every: 1 } })
    } finally {
      model.dispose()
    }
    return fs.readFileSync(ck)
  }

  it('disk full: train() stops with the disk-full Error, the previous checkpoint is intact and loads, no temp file is left', async (ctx) => {
    if (!mounted) ctx.skip()
    const ck = path.join(base, 'full.safetensors')
    const before = await firstCheckpoint(ck)
    // Fill the file system.
    const filler = path.join(base, 'filler')
    const fd = fs.openSync(filler, 'w')
    try {
      const chunk = Buffer.alloc(4096, 1)
      for (;;) fs.writeSync(fd, chunk)
    } catch (e) {
      expect((e as NodeJS.ErrnoException).code).toBe('ENOSPC')
    } finally {
      fs.closeSync(fd)
    }
    const model = new RecurrentTransformer(modelCfg)
    const events: string[] = []
    try {
      const err = await train({
        model, data, steps: 6, batchSize: 4, evalEvery: 1000, seed: 1, resumeFrom: ck, checkpoint: { path: ck, every: 1 },
        onEvent: (e) => events.push(e.type),
      }).then(() => null, (e: unknown) => e)
      expect(err).toBeInstanceOf(Error)
      expect((err as Error).message).toBe(`disk full while writing checkpoint ${ck}: the previous checkpoint is intact`)
    } finally {
      model.dispose()
    }
    expect(events).toContain('step') // it trained, then could not save
    expect(fs.readFileSync(ck).equals(before)).toBe(true)
    expect((await loadCheckpoint(ck)).training).toMatchObject({ step: 3 })
    expect(tempFiles(base, 'full.safetensors')).toEqual([])
    fs.rmSync(filler)
  })

  it('read-only folder: train() resumes from it, then stops with the read-only Error; the checkpoint is intact', async (ctx) => {
    if (!mounted) ctx.skip()
    const ck = path.join(base, 'ro.safetensors')
    const before = await firstCheckpoint(ck)
    const r = spawnSync('mount', ['-o', 'remount,ro', base], { encoding: 'utf8' })
    if (r.status !== 0) {
      console.warn(`[crash] cannot remount ${base} read-only (${r.stderr.trim()}): the read-only test is skipped`)
      ctx.skip()
    }
    try {
      const model = new RecurrentTransformer(modelCfg)
      try {
        const err = await train({ model, data, steps: 5, batchSize: 4, evalEvery: 1000, seed: 1, resumeFrom: ck, checkpoint: { path: ck, every: 1 } }).then(
          () => null,
          (e: unknown) => e,
        )
        expect(err).toBeInstanceOf(Error)
        expect((err as Error).message).toBe(`cannot write checkpoint ${ck}: read-only or permission denied`)
      } finally {
        model.dispose()
      }
      expect(fs.readFileSync(ck).equals(before)).toBe(true)
      expect((await loadCheckpoint(ck)).training).toMatchObject({ step: 3 })
    } finally {
      spawnSync('mount', ['-o', 'remount,rw', base])
    }
  })
})
