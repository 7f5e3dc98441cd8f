// `rt train --preset NAME`: the paper's settings per row, command-line flags winning over the preset,
// and each preset building the intended model (one short step through the real command).

import { spawnSync } from 'node:child_process'
import * as fs from 'node:fs'
import * as fsp from 'node:fs/promises'
import * as os from 'node:os'
import * as path from 'node:path'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { ensureCli, ROOT } from './cli-build.js'
import { UsageError } from '../src/cli/args.js'
import { applyPreset, PRESETS } from '../src/cli/presets.js'

const SHAKESPEARE = path.resolve(ROOT, '../shared/data/tinyshakespeare.txt')

let tmp: string
beforeAll(async () => {
  tmp = await fsp.mkdtemp(path.join(os.tmpdir(), 'rt-presets-test-'))
  ensureCli()
})
afterAll(async () => {
  await fsp.rm(tmp, { recursive: true, force: true })
})

describe('applyPreset', () => {
  it('gives the paper`s copy settings and the nanoGPT shakespeare-char recipe', () => {
    expect(applyPreset({ preset: 'paper-copy' })).toMatchObject({
      task: 'copy', noise: '4096', M: '16', alphabet: '16', d: '96', heads: '6', layers: '1', window: '32',
      variant: 'accumulate', activation: 'relu', dropout: '0.05', batch: '64', lr: '5e-4',
      schedule: 'curriculum', 'curriculum-start': '32',
    })
    expect(applyPreset({ preset: 'paper-copy' })).toMatchObject({ 'stop-accuracy': '1', 'stop-loss': '0.006' })
    expect(applyPreset({ preset: 'paper-selective-copy' })).toMatchObject({ task: 'selective-copy', noise: '4096', 'curriculum-start': '128', window: '32', 'stop-accuracy': '0.996', 'alpha-fixed': true, 'curriculum-compound': true, 'max-grad-norm': '1' })
    const nano = { task: 'text', tokenizer: 'char', 'seq-len': '256', d: '384', heads: '6', dropout: '0.2', batch: '64', lr: '1e-3', steps: '5000', warmup: '100', 'weight-decay': '0.1', 'eval-batches': '200', 'eval-every': '250' }
    expect(applyPreset({ preset: 'shakespeare-plain-6' })).toMatchObject({ ...nano, window: '0', layers: '6' })
    expect(applyPreset({ preset: 'shakespeare-plain-1' })).toMatchObject({ ...nano, window: '0', layers: '1' })
    // The recurrent rows: the paper author's own recipes (constant lr, beta2 0.95; w 16 with positions,
    // the unit recurrence w 1 without).
    const author = { ...nano, steps: '15000', schedule: 'constant', beta2: '0.95', 'eval-every': '500' }
    expect(applyPreset({ preset: 'shakespeare-recurrent' })).toMatchObject({ ...author, layers: '1', window: '16', variant: 'forget' })
    expect(applyPreset({ preset: 'shakespeare-recurrent' })['no-positional']).toBeUndefined()
    expect(applyPreset({ preset: 'shakespeare-recurrent-nopos' })).toMatchObject({
      ...author, layers: '1', window: '1', variant: 'forget', batch: '128', steps: '10000', 'eval-every': '250', 'eval-batches': '80', 'no-positional': true,
    })
    expect(applyPreset({ preset: 'fmnist-recurrent' })).toMatchObject({ task: 'fmnist', layers: '1', 'window-range': '16,48', variant: 'forget' })
    expect(applyPreset({ preset: 'fmnist-plain-4' })).toMatchObject({ task: 'fmnist', layers: '4', window: '0' })
  })

  it('lets command-line flags win; --window replaces a preset`s --window-range and the other way round', () => {
    const f = applyPreset({ preset: 'fmnist-recurrent', d: '32', steps: '7', data: '/x', window: '8', device: 'cuda' })
    expect(f).toMatchObject({ d: '32', steps: '7', data: '/x', window: '8', device: 'cuda', heads: '4' })
    expect(f['window-range']).toBeUndefined()
    const g = applyPreset({ preset: 'fmnist-plain-4', 'window-range': '8,24' })
    expect(g.window).toBeUndefined()
    expect(g['window-range']).toBe('8,24')
    expect(applyPreset({ d: '5' })).toEqual({ d: '5' })
  })

  it('refuses an unknown preset, listing the known ones', () => {
    expect(() => applyPreset({ preset: 'paper-cpy' })).toThrow(UsageError)
    expect(() => applyPreset({ preset: 'paper-cpy' })).toThrow(/--preset: expected one of paper-copy, paper-selective-copy, .*got 'paper-cpy'/)
  })
})

describe('rt train --preset NAME: one short step builds the intended model', () => {
  const rt = (args: string[]) => {
    const r = spawnSync(process.execPath, [path.join(ROOT, 'dist/cli/rt.js'), ...args], { cwd: ROOT, encoding: 'utf8', timeout: 110_000 })
    return { code: r.status, stdout: r.stdout, stderr: r.stderr }
  }
  const header = (out: string) => JSON.parse(fs.readFileSync(path.join(out, 'log.jsonl'), 'utf8').split('\n')[0]!) as {
    type: string; model: Record<string, unknown>; device: string; preset: string; flopsPerSample: { training: number; inference: number }
  }
  const quick = ['--steps', '1', '--batch', '2', '--eval-every', '1', '--eval-batches', '1', '--json']

  it('paper-selective-copy: the author`s settings (alpha fixed, curriculum from 128, compounding cuts) plus clipping at norm 1', () => {
    const out = path.join(tmp, 'paper-selective-copy')
    const r = rt(['train', '--preset', 'paper-selective-copy', ...quick, '--device', 'cpu', '--out', out])
    expect(r.code, r.stderr).toBe(0)
    const h = header(out) as ReturnType<typeof header> & { optimizer: { maxGradNorm: number }; schedule: unknown }
    expect(h.model).toMatchObject({ variant: 'accumulate', alpha: { init: 0.5, learnable: false }, window: 32, maxLen: 4128 })
    expect(h.optimizer.maxGradNorm).toBe(1)
    expect(h.schedule).toEqual({ type: 'curriculum', compound: true })
    const step = r.stdout.split('\n').filter(Boolean).map((l) => JSON.parse(l) as Record<string, unknown>).find((l) => l.type === 'step')!
    expect(step).toMatchObject({ step: 1, noise: 128, lr: 5e-4 })
  })

  it('paper-copy: the paper`s model, curriculum from 32 noise tokens, on the CPU when asked', () => {
    const out = path.join(tmp, 'paper-copy')
    const r = rt(['train', '--preset', 'paper-copy', ...quick, '--device', 'cpu', '--out', out])
    expect(r.stderr).toBe('')
    expect(r.code).toBe(0)
    const h = header(out)
    expect(h).toMatchObject({ type: 'config', preset: 'paper-copy', device: 'cpu' })
    expect(h.model).toMatchObject({ vocabSize: 16, d: 96, heads: 6, layers: 1, window: 32, variant: 'accumulate', alpha: { init: 0.5, learnable: true }, activation: 'relu', dropout: 0.05, head: { copy: 16 }, maxLen: 4128 })
    const step = r.stdout.split('\n').filter(Boolean).map((l) => JSON.parse(l) as Record<string, unknown>).find((l) => l.type === 'step')!
    expect(step).toMatchObject({ step: 1, noise: 32, samples: 2, lr: 5e-4 })
  })

  it('--checkpoint-every N writes checkpoints every N steps (not at each evaluation) and at the end; copy presets set 500', () => {
    expect(applyPreset({ preset: 'paper-copy' })['checkpoint-every']).toBe('500')
    expect(applyPreset({ preset: 'paper-selective-copy' })['checkpoint-every']).toBe('500')
    const steps = (extra: string[]) => {
      const out = path.join(tmp, `ckpt-${extra.join('-') || 'default'}`)
      const r = rt(['train', '--task', 'copy', '--noise', '8', '--d', '16', '--heads', '2', '--steps', '6', '--batch', '2', '--eval-every', '1', '--eval-batches', '1', '--json', '--device', 'cpu', '--out', out, ...extra])
      expect(r.code, r.stderr).toBe(0)
      expect(fs.existsSync(path.join(out, 'checkpoint.safetensors'))).toBe(true)
      return r.stdout.split('\n').filter(Boolean).map((l) => JSON.parse(l) as { type: string; step?: number }).filter((l) => l.type === 'checkpoint').map((l) => l.step)
    }
    expect(steps([])).toEqual([1, 2, 3, 4, 5, 6, 6])
    expect(steps(['--checkpoint-every', '4'])).toEqual([4, 6])
    const bad = rt(['train', '--task', 'copy', '--steps', '1', '--checkpoint-every', '0', '--device', 'cpu', '--out', path.join(tmp, 'ckpt-bad')])
    expect(bad.code).not.toBe(0)
    expect(bad.stderr).toContain('--checkpoint-every: expected an integer >= 1')
    const beta = rt(['train', '--task', 'copy', '--steps', '1', '--beta2', '1', '--device', 'cpu', '--out', path.join(tmp, 'beta-bad')])
    expect(beta.code).not.toBe(0)
    expect(beta.stderr).toContain('--beta2: expected a number in [0, 1), got 1')
    const compound = rt(['train', '--task', 'copy', '--steps', '1', '--schedule', 'constant', '--curriculum-compound', '--device', 'cpu', '--out', path.join(tmp, 'compound-bad')])
    expect(compound.code).not.toBe(0)
    expect(compound.stderr).toContain('--curriculum-compound needs --schedule curriculum (the schedule is constant)')
  })

  const shakespeare = fs.existsSync(SHAKESPEARE)
  if (!shakespeare) console.warn(`SKIP: ${SHAKESPEARE} not found (tiny Shakespeare presets)`)
  it.skipIf(!shakespeare)('shakespeare-*: recurrent with and without positions, plain 1 and 6 layers', () => {
    const want: Record<string, Record<string, unknown>> = {
      'shakespeare-recurrent': { layers: 1, window: 16, positional: true },
      'shakespeare-recurrent-nopos': { layers: 1, window: 1, positional: false },
      'shakespeare-plain-1': { layers: 1, window: 0, positional: true },
      'shakespeare-plain-6': { layers: 6, window: 0, positional: true },
    }
    // The optimizer the header records: the author's beta2 0.95 and a constant rate for the recurrent rows,
    // nanoGPT's 0.99 and warmup + cosine for the plain ones.
    const optim: Record<string, { beta2: number; schedule: string }> = {
      'shakespeare-recurrent': { beta2: 0.95, schedule: 'constant' },
      'shakespeare-recurrent-nopos': { beta2: 0.95, schedule: 'constant' },
      'shakespeare-plain-1': { beta2: 0.99, schedule: 'warmupCosine' },
      'shakespeare-plain-6': { beta2: 0.99, schedule: 'warmupCosine' },
    }
    for (const [name, model] of Object.entries(want)) {
      const out = path.join(tmp, name)
      const r = rt(['train', '--preset', name, ...quick, '--cache', path.join(tmp, 'cache'), '--out', out])
      expect(r.code, r.stderr).toBe(0)
      const h = header(out)
      expect(h.model).toMatchObject({ ...model, vocabSize: 65, d: 384, heads: 6, maxLen: 256, dropout: 0.2, head: 'lm', activation: 'gelu' })
      expect(h.flopsPerSample.training).toBe(3 * h.flopsPerSample.inference)
      const o = optim[name]!
      expect((h as unknown as { optimizer: unknown }).optimizer).toEqual({ lr: 1e-3, weightDecay: 0.1, maxGradNorm: 1, betas: [0.9, o.beta2] })
      expect((h as unknown as { schedule: { type: string } }).schedule.type).toBe(o.schedule)
    }
  })

  it('fmnist-recurrent and fmnist-plain-4 (on a small IDX folder)', async () => {
    const { encodeIdx } = await import('../src/data/images/idx.js')
    const dir = path.join(tmp, 'fm')
    await fsp.mkdir(dir)
    for (const split of ['train', 't10k']) {
      await fsp.writeFile(path.join(dir, `${split}-images-idx3-ubyte`), encodeIdx([4, 28, 28], new Uint8Array(4 * 784).fill(7)))
      await fsp.writeFile(path.join(dir, `${split}-labels-idx1-ubyte`), encodeIdx([4], Uint8Array.from([0, 1, 2, 3])))
    }
    for (const [name, model] of [['fmnist-recurrent', { layers: 1, windowRange: [16, 48], window: 32, variant: 'forget' }], ['fmnist-plain-4', { layers: 4, window: 0, windowRange: null }]] as const) {
      const out = path.join(tmp, name)
      const r = rt(['train', '--preset', name, ...quick, '--data', dir, '--out', out])
      expect(r.code, r.stderr).toBe(0)
      expect(header(out).model).toMatchObject({ ...model, vocabSize: 256, maxLen: 784, head: { classify: 10 }, d: 128, heads: 4 })
    }
  })

  it('every preset has a description, and a bad --device is refused naming the flag', () => {
    for (const p of Object.values(PRESETS)) expect(p.description.length).toBeGreaterThan(10)
    const r = rt(['train', '--preset', 'paper-copy', '--device', 'tpu', '--steps', '1'])
    expect(r.code).toBe(2)
    expect(r.stderr).toMatch(/--device: expected one of cpu, cuda, got 'tpu'/)
  })
})
