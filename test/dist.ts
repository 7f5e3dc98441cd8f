// dist/ built from the current src/, for tests that run the compiled package in child processes.
import { spawnSync } from 'node:child_process'
import * as fs from 'node:fs'
import * as os from 'node:os'
import * as path from 'node:path'
import { fileURLToPath } from 'node:url'

export const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..')

/** Newest modification time of any file below dir. */
export function newestMtime(dir: string): number {
  let t = 0
  for (const e of fs.readdirSync(dir, { withFileTypes: true })) {
    const p = path.join(dir, e.name)
    t = Math.max(t, e.isDirectory() ? newestMtime(p) : fs.statSync(p).mtimeMs)
  }
  return t
}

/** dist/ compiled from the current src/ (tsc under a lock, so parallel test files do not race). */
export function ensureDist(): void {
  const entry = path.join(ROOT, 'dist', 'index.js')
  const fresh = (): boolean => fs.existsSync(entry) && fs.statSync(entry).mtimeMs >= newestMtime(path.join(ROOT, 'src'))
  if (fresh()) return
  const lock = path.join(os.tmpdir(), `rt-tsc-${Buffer.from(ROOT).toString('hex').slice(-24)}.lock`)
  const deadline = Date.now() + 110_000
  for (;;) {
    try {
      fs.mkdirSync(lock)
      break
    } catch {
      if (Date.now() > deadline) throw new Error(`ensureDist: ${lock} held for too long`)
      if (Date.now() - fs.statSync(lock, { throwIfNoEntry: false })!.mtimeMs > 120_000) fs.rmSync(lock, { recursive: true, force: true })
      spawnSync('sleep', ['0.2'])
    }
  }
  try {
    if (fresh()) return
    const r = spawnSync(process.execPath, [path.join(ROOT, 'node_modules', 'typescript', 'bin', 'tsc'), '-p', 'tsconfig.json'], { cwd: ROOT, encoding: 'utf8', timeout: 110_000 })
    if (r.status !== 0) throw new Error(`tsc failed:\n${r.stdout}\n${r.stderr}`)
  } finally {
    fs.rmSync(lock, { recursive: true, force: true })
  }
}
