// The native side of multi-GPU training where there is no GPU: the CPU build's CommHandle and
// ncclUniqueId exist and throw a clear Error; the CUDA build (when one was built: build-cuda/ or
// RT_CUDA_ADDON) opens libnccl.so.2 only when asked, and says clearly when it is missing.
import { spawnSync } from 'node:child_process'
import * as fs from 'node:fs'
import { describe, expect, it } from 'vitest'
import { cudaAddonPaths, loadNative } from '../src/native.js'

describe('multi-GPU bindings in the CPU build', () => {
  const addon = loadNative('cpu')
  it('exist and throw an Error that says the CUDA build is needed', () => {
    expect(typeof addon.CommHandle).toBe('function')
    const needs = /multi-GPU training needs the CUDA build of the addon/
    if ((addon.LayerHandle.cudaStatus?.() ?? { built: false }).built) return // the process loaded the CUDA build
    expect(() => addon.ncclUniqueId()).toThrow(needs)
    expect(() => addon.ncclVersion()).toThrow(needs)
    expect(() => new addon.CommHandle(new Uint8Array(128), 2, 0)).toThrow(needs)
  })
})

const cudaAddon = cudaAddonPaths().find((p) => fs.existsSync(p))
const hasNccl = spawnSync('sh', ['-c', 'ldconfig -p | grep -q libnccl.so.2']).status === 0
if (!cudaAddon) console.warn(`distributed-native.test: no CUDA build (${cudaAddonPaths().join(', ')}); the NCCL loader tests are skipped`)
else if (hasNccl) console.warn('distributed-native.test: libnccl.so.2 is installed here; the "NCCL absent" case is skipped')

describe.skipIf(!cudaAddon)('the NCCL loader of the CUDA build', () => {
  // Child processes: the library is opened once per process, so each case needs a fresh one.
  const run = (env: NodeJS.ProcessEnv, code: string): string => {
    const r = spawnSync(process.execPath, ['-e', `const a = require(${JSON.stringify(cudaAddon)}); ${code}`], { env: { ...process.env, ...env }, encoding: 'utf8', timeout: 30_000 })
    return r.stdout + r.stderr
  }
  const probe = "try { a.ncclUniqueId(); console.log('OK') } catch (e) { console.log('ERR ' + e.message) }"

  it('names RT_NCCL_LIBRARY when that path cannot be loaded', () => {
    const out = run({ RT_NCCL_LIBRARY: '/nonexistent/libnccl.so.2' }, probe)
    expect(out).toMatch(/ERR multi-GPU training needs NCCL, but \/nonexistent\/libnccl.so.2 could not be loaded .*check RT_NCCL_LIBRARY/)
  })

  it('names the missing symbol when the library is not NCCL', () => {
    const out = run({ RT_NCCL_LIBRARY: 'libm.so.6' }, probe)
    expect(out).toMatch(/ERR multi-GPU training needs NCCL 2.4 or newer, but libm.so.6 has no symbol ncclGetVersion/)
  })

  it.skipIf(hasNccl)('says how to get NCCL when libnccl.so.2 is absent, also from CommHandle.init()', () => {
    const out = run({ RT_NCCL_LIBRARY: '' }, `${probe}; const c = new a.CommHandle(new Uint8Array(128), 2, 1, 1000); c.init().then(() => console.log('INIT OK'), (e) => console.log('INIT ERR ' + e.message))`)
    expect(out).toMatch(/ERR multi-GPU training needs NCCL, but libnccl.so.2 could not be loaded .*install NCCL 2.x/)
    expect(out).toMatch(/INIT ERR multi-GPU training needs NCCL/)
  })

  it('checks CommHandle arguments before touching NCCL', () => {
    const out = run({}, `for (const f of [() => new a.CommHandle(new Uint8Array(12), 2, 0), () => new a.CommHandle(new Uint8Array(128), 2, 2), () => new a.CommHandle(new Uint8Array(128), 0, 0)]) { try { f(); console.log('NO ERROR') } catch (e) { console.log(e.message) } }`)
    expect(out).toMatch(/id: expected a Uint8Array of 128 bytes/)
    expect(out).toMatch(/rank: expected an integer in \[0, 1\], got 2/)
    expect(out).toMatch(/nranks: expected an integer in \[1, 65536\], got 0/)
    expect(out).not.toMatch(/NO ERROR/)
  })
})

