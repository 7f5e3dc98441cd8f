// The CUDA loader: a CUDA binary is test-loaded in a child process before this process loads it, and when
// CUDA was only preferred (RT_DEVICE=cuda, `rt train --device cuda`) and cannot be used, the CPU build runs
// with one warning naming why. `device: 'cuda'` in a config, and RT_DEVICE_STRICT=1, throw instead.
//
// Each case runs in a fresh node process (the verdict is cached per process) over the compiled dist/.
import { spawnSync } from 'node:child_process'
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs'
import { createRequire } from 'node:module'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { afterAll, beforeAll, describe, expect, test } from 'vitest'
import { ROOT, ensureDist } from './dist.js'

const work = mkdtempSync(join(tmpdir(), 'rt-cuda-loader-'))
afterAll(() => rmSync(work, { recursive: true, force: true }))

// The child: counts spawnSync calls (the probe must run once), records warnings, and reports what the
// loader decided, what a default-device layer computes, and what an explicit device: 'cuda' layer throws.
const CHILD = `
import cp from 'node:child_process';
import { syncBuiltinESMExports } from 'node:module';
let spawns = 0;
const spawnSync = cp.spawnSync;
cp.spawnSync = (...a) => { spawns++; return spawnSync(...a); };
syncBuiltinESMExports();
const warnings = [];
process.on('warning', (w) => warnings.push({ code: w.code, message: w.message }));
const out = { spawns: 0, warnings };
try {
  const rt = await import(process.argv[2]);
  out.status = rt.cudaStatus();
  out.defaultDevice = rt.defaultDevice();
  out.defaultDeviceAgain = rt.defaultDevice();
  try {
    const layer = new rt.RecurrentLayer({ d: 8, heads: 2, window: 4, variant: 'forget', seed: 3 });
    const x = rt.Tensor.fromArray(Float32Array.from({ length: 2 * 5 * 8 }, (_, i) => Math.sin(i)), [2, 5, 8]);
    const y = await layer.forward(x);
    out.layerDevice = layer.device;
    out.values = Array.from(await y.toArray());
    new rt.RecurrentLayer({ d: 8, heads: 2, window: 4 }).dispose?.();
  } catch (e) {
    out.defaultLayerError = e.message;
  }
  try {
    new rt.RecurrentLayer({ d: 8, heads: 2, window: 4, device: 'cuda' });
    out.explicitError = null;
  } catch (e) {
    out.explicitError = e.message;
  }
} catch (e) {
  out.importError = e.message;
}
await new Promise((r) => setImmediate(r));  // warnings are emitted on the next tick
out.spawns = spawns;
console.log(JSON.stringify(out));
`

interface ChildResult {
  spawns: number
  warnings: { code?: string; message: string }[]
  status?: { built: boolean; available: boolean; reason?: string; path?: string }
  defaultDevice?: string
  defaultDeviceAgain?: string
  layerDevice?: string
  values?: number[]
  defaultLayerError?: string
  explicitError?: string | null
  importError?: string
}

const script = join(work, 'child.mjs')
writeFileSync(script, CHILD)

function runChild(env: Record<string, string | undefined>): ChildResult {
  const base: NodeJS.ProcessEnv = { ...process.env }
  for (const k of ['RT_DEVICE', 'RT_DEVICE_STRICT', 'RT_CUDA_ADDON', 'NODE_OPTIONS']) delete base[k]
  for (const [k, v] of Object.entries(env)) if (v !== undefined) base[k] = v
  const r = spawnSync(process.execPath, [script, join(ROOT, 'dist', 'index.js')], { encoding: 'utf8', env: base, timeout: 100_000 })
  expect(r.status, `child failed (${r.signal ?? r.status}):\n${r.stdout}\n${r.stderr}`).toBe(0)
  return JSON.parse(r.stdout.trim().split('\n').pop() ?? '{}') as ChildResult
}

let cpuOnly: ChildResult
beforeAll(() => {
  ensureDist()
  cpuOnly = runChild({})
}, 120_000)

// The CPU build that node-gyp-build picks: a real addon, compiled without CUDA.
const cpuBuild = (createRequire(join(ROOT, 'package.json'))('node-gyp-build') as { path(dir: string): string }).path(ROOT)

function expectCpuFallback(r: ChildResult, reason: RegExp, spawns = 1): void {
  expect(r.importError).toBeUndefined()
  expect(r.spawns, 'the child-process test load runs once per process (none without a file)').toBe(spawns)
  expect(r.status?.available).toBe(false)
  expect(r.status?.reason).toMatch(reason)
  expect(r.defaultDevice).toBe('cpu')
  expect(r.defaultDeviceAgain).toBe('cpu')
  expect(r.warnings.filter((w) => w.code === 'RT_CUDA_FALLBACK'), 'exactly one fallback warning').toHaveLength(1)
  const w = r.warnings.find((x) => x.code === 'RT_CUDA_FALLBACK')!
  expect(w.message).toMatch(/^RT_DEVICE=cuda: CUDA cannot be used, running on the CPU: /)
  expect(w.message).toMatch(reason)
  expect(w.message).toContain('RT_DEVICE_STRICT=1')
  // The CPU path still works, and computes exactly what it computes without RT_DEVICE.
  expect(r.layerDevice).toBe('cpu')
  expect(r.values).toHaveLength(80)
  expect(r.values).toEqual(cpuOnly.values)
  // The explicit demand is an Error naming the device and the same reason.
  expect(r.explicitError).toMatch(/^device 'cuda': /)
  expect(r.explicitError).toMatch(reason)
}

describe('CUDA loader', () => {
  test('without RT_DEVICE the CPU build runs, with no warning', () => {
    expect(cpuOnly.importError).toBeUndefined()
    expect(cpuOnly.defaultDevice).toBe('cpu')
    expect(cpuOnly.warnings).toEqual([])
    expect(cpuOnly.layerDevice).toBe('cpu')
    expect(cpuOnly.values!.every(Number.isFinite)).toBe(true)
    expect(new Set(cpuOnly.values).size, 'a real output, not a constant').toBeGreaterThan(10)
    // cudaStatus() itself probes (once), whatever RT_DEVICE says, when there is a CUDA binary to probe (a
    // fresh install without `npm run build:cuda` or the CUDA package has none, and spawns nothing).
    expect(cpuOnly.spawns).toBe(cpuOnly.status?.path ? 1 : 0)
  })

  test('a corrupt .node: warning with the child\'s load error, CPU still works', () => {
    const fake = join(work, 'corrupt.node')
    writeFileSync(fake, Buffer.from('this is not an ELF shared object, it only ends in .node\n'.repeat(20)))
    const r = runChild({ RT_DEVICE: 'cuda', RT_CUDA_ADDON: fake })
    expectCpuFallback(r, /could not load .*corrupt\.node: .*invalid ELF header/)
    expect(r.status?.built).toBe(false)
    expect(r.status?.path).toBe(fake)
  })

  test('an empty .node file', () => {
    const fake = join(work, 'empty.node')
    writeFileSync(fake, '')
    const r = runChild({ RT_DEVICE: 'cuda', RT_CUDA_ADDON: fake })
    expectCpuFallback(r, /could not load .*empty\.node: .*(file too short|invalid ELF)/)
  })

  test('RT_CUDA_ADDON naming a missing file: no other binary is tried', () => {
    const r = runChild({ RT_DEVICE: 'cuda', RT_CUDA_ADDON: join(work, 'nope', 'rt.node') })
    expectCpuFallback(r, /no CUDA build of the addon found \(RT_CUDA_ADDON names .*nope\/rt\.node, which does not exist\)/, 0)
  })

  test('a real addon built without CUDA (the CPU build) is refused as such', () => {
    const r = runChild({ RT_DEVICE: 'cuda', RT_CUDA_ADDON: cpuBuild })
    expectCpuFallback(r, /was built without CUDA .*npm run build:cuda/)
  })

  if (!existsSync('/usr/bin/cc')) console.warn('cuda-loader.test: no /usr/bin/cc to build the aborting library; that case is skipped')
  test.skipIf(!existsSync('/usr/bin/cc'))('a binary that aborts while loading kills the child, not this process', () => {
    const src = join(work, 'boom.c')
    const lib = join(work, 'boom.node')
    writeFileSync(src, '#include <stdlib.h>\n__attribute__((constructor)) static void boom(void) { abort(); }\n')
    const cc = spawnSync('/usr/bin/cc', ['-shared', '-fPIC', '-o', lib, src], { encoding: 'utf8' })
    expect(cc.status, cc.stderr).toBe(0)
    const r = runChild({ RT_DEVICE: 'cuda', RT_CUDA_ADDON: lib })
    expectCpuFallback(r, /test load of .*boom\.node in a child process was killed by SIGABRT/)
  })

  test('RT_DEVICE_STRICT=1 turns the fallback into the Error', () => {
    const fake = join(work, 'strict.node')
    writeFileSync(fake, 'not a shared object')
    const r = runChild({ RT_DEVICE: 'cuda', RT_DEVICE_STRICT: '1', RT_CUDA_ADDON: fake })
    expect(r.importError).toBeUndefined()
    expect(r.defaultDevice).toBe('cuda')
    expect(r.warnings.filter((w) => w.code === 'RT_CUDA_FALLBACK')).toEqual([])
    expect(r.defaultLayerError).toMatch(/^device 'cuda': could not load .*strict\.node/)
    const bad = runChild({ RT_DEVICE: 'cuda', RT_DEVICE_STRICT: 'yes', RT_CUDA_ADDON: fake })
    expect(bad.importError ?? bad.defaultLayerError).toMatch(/RT_DEVICE_STRICT: expected 1 or 0, got 'yes'/)
  })

  test('`rt train --device cuda` falls back with the warning and trains on the CPU', () => {
    const fake = join(work, 'cli.node')
    writeFileSync(fake, 'not a shared object')
    const out = join(work, 'run')
    const env: NodeJS.ProcessEnv = { ...process.env, RT_CUDA_ADDON: fake }
    delete env.RT_DEVICE
    const r = spawnSync(process.execPath, [join(ROOT, 'dist', 'cli', 'rt.js'), 'train', '--device', 'cuda', '--json',
      '--noise', '4', '--M', '2', '--d', '8', '--heads', '2', '--window', '4', '--steps', '2', '--batch', '2',
      '--eval-every', '2', '--eval-batches', '1', '--out', out], { encoding: 'utf8', env, timeout: 100_000 })
    expect(r.status, r.stderr).toBe(0)
    expect(r.stderr).toMatch(/\[RT_CUDA_FALLBACK\] Warning: --device cuda: CUDA cannot be used, running on the CPU: could not load .*cli\.node/)
    const config = readFileSync(join(out, 'log.jsonl'), 'utf8').split('\n').filter(Boolean).map((l) => JSON.parse(l) as { type: string; device?: string }).find((e) => e.type === 'config')
    expect(config?.device).toBe('cpu')
    expect(existsSync(join(out, 'checkpoint.safetensors'))).toBe(true)
  })

  // The real CUDA build, when one was built here (npm run build:cuda or npm run prebuildify:cuda).
  const real = [process.env.RT_CUDA_ADDON, join(ROOT, 'build-cuda', 'Release', 'rt.node'), join(ROOT, 'packages', 'linux-x64-cuda', 'rt.node')]
    .find((p): p is string => p !== undefined && p !== '' && existsSync(p))
  if (!real) console.warn('cuda-loader.test: no CUDA build here (npm run build:cuda); the real-binary case is skipped')
  test.skipIf(!real)('the real CUDA build loads in the child and reports built; without a GPU the CPU runs', () => {
    const r = runChild({ RT_DEVICE: 'cuda', RT_CUDA_ADDON: real })
    expect(r.importError).toBeUndefined()
    expect(r.status?.built).toBe(true)
    expect(r.status?.path).toBe(real)
    if (r.status?.available) {
      // A machine with a usable GPU: no fallback, the layer runs on CUDA.
      expect(r.defaultDevice).toBe('cuda')
      expect(r.warnings).toEqual([])
      expect(r.explicitError).toBeNull()
      return
    }
    expectCpuFallback(r, /loads, but no GPU can be used: .*(driver|GPU|device|capability)/i)
    expect(r.status?.built).toBe(true)
  })
})
