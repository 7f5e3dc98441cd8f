// GPT-2 parity on real text: our BpeTokenizer.gpt2() must give exactly js-tiktoken's `gpt2` ids on
// tiny Shakespeare and on several MB of varied text found on every machine that ran `npm install`:
// every Markdown file under node_modules (code, URLs, emoji), TypeScript's localised diagnostic
// messages (Chinese, Japanese, Korean, Russian, Czech, Polish, Turkish, ...) and TypeScript's lib
// .d.ts files (code). Each file is compared on its own; a mismatch names the file and the first
// differing token and character. Also decode(encode(text)) === text and token-by-token streaming.

import { existsSync, readdirSync, readFileSync, statSync } from 'node:fs'
import { join, relative } from 'node:path'
import { describe, expect, it } from 'vitest'
import { getEncoding } from 'js-tiktoken'
import { BpeTokenizer } from '../src/tokenizer/index.js'

const ROOT = join(import.meta.dirname, '..')
const SHAKESPEARE = '/work/shared/data/tinyshakespeare.txt'
const hasShakespeare = existsSync(SHAKESPEARE)
if (!hasShakespeare) console.warn(`tokenizer parity: ${SHAKESPEARE} is absent; the tiny Shakespeare parity test is skipped`)

const ours = BpeTokenizer.gpt2()
const tiktoken = getEncoding('gpt2')

/** Files under dir (not following symbolic links) whose name passes `keep`, sorted. */
function findFiles(dir: string, keep: (name: string) => boolean): string[] {
  const out: string[] = []
  const walk = (d: string): void => {
    let entries
    try {
      entries = readdirSync(d, { withFileTypes: true })
    } catch {
      return
    }
    for (const e of entries) {
      const p = join(d, e.name)
      if (e.isDirectory()) walk(p)
      else if (e.isFile() && keep(e.name)) out.push(p)
    }
  }
  walk(dir)
  return out.sort()
}

interface Mismatch {
  file: string
  token: number
  char: number
  ours: number[]
  theirs: number[]
  context: string
}

/** Compares ids for one text; returns the first difference, or null. */
function compare(file: string, text: string): Mismatch | null {
  const a = ours.encodeOrdinary(text)
  const b = tiktoken.encode(text, [], [])
  if (a.length === b.length && a.every((v, i) => v === b[i])) return null
  let k = 0
  while (k < a.length && k < b.length && a[k] === b[k]) k++
  const char = ours.decode(a.slice(0, k)).length
  return {
    file,
    token: k,
    char,
    ours: Array.from(a.slice(k, k + 6)),
    theirs: b.slice(k, k + 6),
    context: JSON.stringify(text.slice(Math.max(0, char - 30), char + 30)),
  }
}

function report(mismatches: Mismatch[]): string {
  return mismatches
    .slice(0, 20)
    .map((m) => `${m.file}: first difference at token ${m.token} (character ${m.char}, near ${m.context}): ours ${JSON.stringify(m.ours)}, js-tiktoken ${JSON.stringify(m.theirs)}`)
    .join('\n')
}

function corpus(): { name: string; files: string[] }[] {
  const nm = join(ROOT, 'node_modules')
  const ts = join(nm, 'typescript', 'lib')
  return [
    { name: 'Markdown under node_modules', files: findFiles(nm, (n) => n.toLowerCase().endsWith('.md')) },
    { name: "TypeScript's localised diagnostic messages", files: findFiles(ts, (n) => n === 'diagnosticMessages.generated.json') },
    { name: "TypeScript's lib .d.ts files", files: existsSync(ts) ? readdirSync(ts).filter((n) => /^lib\..*\.d\.ts$/.test(n)).sort().map((n) => join(ts, n)) : [] },
  ]
}

describe('GPT-2 parity with js-tiktoken', () => {
  it.skipIf(!hasShakespeare)('tiny Shakespeare: identical ids, round trip, streaming', () => {
    const text = readFileSync(SHAKESPEARE, 'utf8')
    const m = compare('tinyshakespeare.txt', text)
    expect(m, m ? report([m]) : '').toBeNull()
    const ids = ours.encode(text)
    expect(ids.length).toBe(338025)
    expect(ours.decode(ids)).toBe(text)
    const dec = ours.decoder()
    let streamed = ''
    for (const id of ids) streamed += dec.push(id)
    streamed += dec.flush()
    expect(streamed).toBe(text)
  })

  for (const { name, files } of corpus()) {
    it(`${name}: identical ids per file, round trip, streaming`, () => {
      expect(files.length, `no files found for ${name}`).toBeGreaterThan(0)
      const mismatches: Mismatch[] = []
      let bytes = 0
      let tokens = 0
      let nonAscii = 0
      for (const path of files) {
        if (statSync(path).size > 8 << 20) continue
        const text = readFileSync(path, 'utf8')
        const file = relative(ROOT, path)
        bytes += Buffer.byteLength(text)
        for (let i = 0; i < text.length; i++) if (text.charCodeAt(i) > 127) nonAscii++
        const m = compare(file, text)
        if (m) mismatches.push(m)
        const ids = ours.encode(text, { disallowedSpecial: 'none' })
        tokens += ids.length
        expect(ours.decode(ids), `${file}: decode(encode(text)) !== text`).toBe(text)
        const dec = ours.decoder()
        const parts: string[] = []
        for (const id of ids) parts.push(dec.push(id))
        parts.push(dec.flush())
        expect(parts.join(''), `${file}: streamed decode differs`).toBe(text)
      }
      console.log(`tokenizer parity, ${name}: ${files.length} files, ${bytes} bytes (${nonAscii} non-ASCII UTF-16 units), ${tokens} tokens, ${mismatches.length} mismatching files`)
      expect(mismatches.length, report(mismatches)).toBe(0)
    })
  }
})
