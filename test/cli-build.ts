// Compiles src/ into dist/ for tests that run the `rt` command, only when dist/cli/rt.js is older than
// the newest source file (several test files may ask at once; compiling each time would race).

import { spawnSync } from 'node:child_process'
import * as fs from 'node:fs'
import * as path from 'node:path'
import { fileURLToPath } from 'node:url'

export const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..')
export const RT = path.join(ROOT, 'dist/cli/rt.js')

function newestMtime(dir: string): number {
  let t = 0
  for (const e of fs.readdirSync(dir, { withFileTypes: true })) {
    const p = path.join(dir, e.name)
    t = Math.max(t, e.isDirectory() ? newestMtime(p) : fs.statSync(p).mtimeMs)
  }
  return t
}

export function ensureCli(): void {
  if (fs.existsSync(RT) && fs.statSync(RT).mtimeMs >= newestMtime(path.join(ROOT, 'src'))) return
  const r = spawnSync('npx', ['tsc', '-p', 'tsconfig.json'], { cwd: ROOT, encoding: 'utf8', timeout: 110_000 })
  if (r.status !== 0) throw new Error(`tsc failed:\n${r.stdout}\n${r.stderr}`)
}
