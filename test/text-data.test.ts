// Text datasets (src/data/text.ts): the token cache (build, reuse, rebuild, dtype), chunked
// tokenization, the 90/10 split and next-token batches; tiny Shakespeare against nanoGPT's numbers.

import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, statSync, utimesSync, writeFileSync, appendFileSync, readdirSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { afterAll, describe, expect, it } from 'vitest'
import { Rng } from '../src/data/rng.js'
import { TextDataset, chunkSplitPoint, type TextCacheSidecar, type TextDatasetProgress, type TextTokenizer } from '../src/data/text.js'
import type { TrainData } from '../src/train/data.js'
import { BpeTokenizer, CharTokenizer } from '../src/tokenizer/index.js'

const SHAKESPEARE = '/work/shared/data/tinyshakespeare.txt'
const hasShakespeare = existsSync(SHAKESPEARE)
if (!hasShakespeare) console.warn(`text-data tests: ${SHAKESPEARE} is absent; the tiny Shakespeare tests are skipped`)

const root = mkdtempSync(join(tmpdir(), 'rt-text-'))
afterAll(() => rmSync(root, { recursive: true, force: true }))
let dirCount = 0
function freshDir(name: string): string {
  const d = join(root, `${name}-${dirCount++}`)
  mkdirSync(d, { recursive: true })
  return d
}

/** Code points of a string. */
function codePoints(s: string): number[] {
  return Array.from(s, (ch) => ch.codePointAt(0)!)
}

/** A tiny char tokenizer: id = index of the code point in `chars` (+ offset); counts encode() calls. */
class TinyChar implements TextTokenizer {
  readonly vocabSize: number
  encodeCalls = 0
  encodedChars = 0
  private readonly ids = new Map<number, number>()
  private readonly bmp = new Int32Array(0x10000).fill(-1)
  constructor(readonly chars: string, private readonly offset = 0, vocabSize?: number) {
    codePoints(chars).forEach((cp, i) => {
      this.ids.set(cp, i + offset)
      if (cp < 0x10000) this.bmp[cp] = i + offset
    })
    this.vocabSize = vocabSize ?? this.ids.size + offset
  }
  static of(text: string, offset = 0, vocabSize?: number): TinyChar {
    return new TinyChar(String.fromCodePoint(...[...new Set(codePoints(text))].sort((a, b) => a - b)), offset, vocabSize)
  }
  encode(text: string): Int32Array {
    this.encodeCalls++
    this.encodedChars += text.length
    return this.ints(text)
  }
  /** The ids of a text, without counting a call (the expected values). */
  ints(text: string): Int32Array {
    const out = new Int32Array(text.length)
    let n = 0
    for (let i = 0; i < text.length; i++) {
      const cp = text.codePointAt(i)!
      const id = cp < 0x10000 ? this.bmp[cp]! : this.ids.get(cp) ?? -1
      if (id < 0) throw new Error(`TinyChar: ${JSON.stringify(String.fromCodePoint(cp))} is not in the vocabulary`)
      out[n++] = id
      if (cp > 0xffff) i++
    }
    return out.slice(0, n)
  }
  expect(text: string): number[] {
    return Array.from(this.ints(text))
  }
  toJSON(): unknown {
    return { type: 'tiny-char', chars: this.chars, offset: this.offset }
  }
}

/** Deterministic pseudo-random text over an alphabet, with newlines and spaces. */
function synthText(seed: number, n: number, alphabetText = 'abcdefghijklmnopqrstuvwxyzABCDEF.,;!?\'-', spaces = true): string {
  const alphabet = Array.from(alphabetText) // code points, not UTF-16 units
  let s = seed >>> 0
  const next = (): number => {
    s = (s + 0x6d2b79f5) >>> 0
    let t = s
    t = Math.imul(t ^ (t >>> 15), t | 1)
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61)
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296
  }
  const parts: string[] = []
  for (let i = 0; i < n; i++) {
    const u = next()
    parts.push(spaces && u < 0.12 ? ' ' : spaces && u < 0.15 ? '\n' : alphabet[Math.floor(next() * alphabet.length)]!)
  }
  return parts.join('')
}

/** A folder corpus: four files the default selection takes (in this order) and two it skips. */
function writeCorpus(dir: string): { files: string[]; texts: string[] } {
  mkdirSync(join(dir, 'sub', 'deeper'), { recursive: true })
  const files = ['a.txt', 'b.md', 'sub/c.txt', 'sub/deeper/d.txt']
  const texts = [synthText(1, 3000), synthText(2, 1500), synthText(3, 2500), synthText(4, 1200)]
  files.forEach((f, i) => writeFileSync(join(dir, f), texts[i]!))
  writeFileSync(join(dir, 'e.json'), '{"not": "text"}')
  writeFileSync(join(dir, '.hidden.txt'), 'hidden')
  return { files, texts }
}

const ALPHABET_ALL = 'abcdefghijklmnopqrstuvwxyzABCDEF.,;!?\'- \n'

/** Index of the first difference (a length mismatch counts), or -1: fast on millions of tokens. */
function firstMismatch(a: ArrayLike<number>, b: ArrayLike<number>): number {
  const n = Math.min(a.length, b.length)
  for (let i = 0; i < n; i++) if (a[i] !== b[i]) return i
  return a.length === b.length ? -1 : n
}

/** Whether a[ao : ao + len] equals b[bo : bo + len]. */
function sameSlice(a: ArrayLike<number>, ao: number, b: ArrayLike<number>, bo: number, len: number): boolean {
  for (let k = 0; k < len; k++) if (a[ao + k] !== b[bo + k]) return false
  return true
}

function sidecar(ds: TextDataset): TextCacheSidecar {
  return JSON.parse(readFileSync(ds.sidecarPath, 'utf8')) as TextCacheSidecar
}

describe('TextDataset cache', () => {
  const dir = freshDir('corpus')
  const { files, texts } = writeCorpus(dir)
  const tok = TinyChar.of(ALPHABET_ALL)
  const expected = Int32Array.from(texts.flatMap((t) => tok.expect(t)))

  it('tokenizes a folder once into a uint16 cache with a sidecar', async () => {
    const progress: TextDatasetProgress[] = []
    const ds = await TextDataset.open({ source: dir, tokenizer: tok, seqLen: 16, onProgress: (p) => progress.push(p) })
    expect(ds.fromCache).toBe(false)
    expect(ds.rebuildReason).toBe('no cache')
    expect(ds.dtype).toBe('uint16')
    expect(ds.cacheDir).toBe(join(dir, '.rt-cache'))
    expect(readdirSync(ds.cacheDir).sort()).toEqual([`${ds.cachePath.split('/').pop()}`, `${ds.sidecarPath.split('/').pop()}`].sort())
    const n = texts.reduce((s, t) => s + t.length, 0)
    expect(ds.tokens()).toBe(n)
    expect(statSync(ds.cachePath).size).toBe(2 * n)
    expect(ds.read(0, n)).toEqual(expected)
    const sc = sidecar(ds)
    expect(sc.dtype).toBe('uint16')
    expect(sc.tokens).toBe(n)
    expect(sc.bytes).toBe(2 * n)
    expect(sc.source).toBe(dir)
    expect(sc.files.map((f) => f.path)).toEqual(files)
    expect(sc.files.map((f) => f.tokens)).toEqual(texts.map((t) => t.length))
    expect(sc.files.map((f) => f.size)).toEqual(files.map((f) => statSync(join(dir, f)).size))
    expect(sc.files.map((f) => f.mtimeMs)).toEqual(files.map((f) => statSync(join(dir, f)).mtimeMs))
    expect(sc.tokenizer.kind).toBe('tiny-char')
    expect(sc.tokenizer.vocabSize).toBe(tok.vocabSize)
    expect(sc.tokenizer.fingerprint).toMatch(/^[0-9a-f]{64}$/)
    expect(sc.split).toEqual({ valFraction: 0.1, index: Math.floor(n * 0.9), train: Math.floor(n * 0.9), val: n - Math.floor(n * 0.9) })
    expect(progress[0]!.phase).toBe('scan')
    expect(progress.some((p) => p.phase === 'tokenize')).toBe(true)
    expect(progress.at(-1)).toMatchObject({ phase: 'done', tokens: n, filesTotal: 4, bytesDone: progress[0]!.bytesTotal })
    ds.close()
  })

  it('reuses the cache on the next open (no tokenization, files untouched)', async () => {
    const first = await TextDataset.open({ source: dir, tokenizer: tok, seqLen: 16 })
    const calls = tok.encodeCalls
    const mtime = statSync(first.cachePath).mtimeMs
    const before = readFileSync(first.sidecarPath, 'utf8')
    const progress: string[] = []
    const ds = await TextDataset.open({ source: dir, tokenizer: tok, seqLen: 16, onProgress: (p) => progress.push(p.phase) })
    expect(ds.fromCache).toBe(true)
    expect(ds.rebuildReason).toBeNull()
    expect(ds.buildMs).toBe(0)
    expect(tok.encodeCalls).toBe(calls)
    expect(statSync(ds.cachePath).mtimeMs).toBe(mtime)
    expect(readFileSync(ds.sidecarPath, 'utf8')).toBe(before)
    expect(progress).toEqual(['scan', 'reuse', 'done'])
    expect(ds.read(0, ds.tokens())).toEqual(expected)
    first.close()
    ds.close()
  })

  it('rebuilds when a source file changes, appears, or the tokenizer changes', async () => {
    const d = freshDir('changing')
    const { texts: t0 } = writeCorpus(d)
    const a = await TextDataset.open({ source: d, tokenizer: tok, seqLen: 8 })
    const n0 = a.tokens()
    a.close()

    // Content (and size) change.
    appendFileSync(join(d, 'sub', 'c.txt'), 'abc')
    const b = await TextDataset.open({ source: d, tokenizer: tok, seqLen: 8 })
    expect(b.fromCache).toBe(false)
    expect(b.rebuildReason).toBe('sub/c.txt changed')
    expect(b.tokens()).toBe(n0 + 3)
    expect(b.read(0, b.tokens())).toEqual(Int32Array.from([...t0.slice(0, 2), t0[2]! + 'abc', t0[3]!].flatMap((t) => tok.expect(t))))
    b.close()

    // Same size, new mtime.
    const future = new Date(Date.now() + 60_000)
    utimesSync(join(d, 'a.txt'), future, future)
    const c = await TextDataset.open({ source: d, tokenizer: tok, seqLen: 8 })
    expect(c.fromCache).toBe(false)
    expect(c.rebuildReason).toBe('a.txt changed')
    c.close()
    expect((await TextDataset.open({ source: d, tokenizer: tok, seqLen: 8 })).fromCache).toBe(true)

    // A new file.
    writeFileSync(join(d, 'sub', 'new.md'), 'hello')
    const e = await TextDataset.open({ source: d, tokenizer: tok, seqLen: 8 })
    expect(e.fromCache).toBe(false)
    expect(e.rebuildReason).toBe('a different set of files')
    expect(e.files.map((f) => f.path)).toEqual(['a.txt', 'b.md', 'sub/c.txt', 'sub/deeper/d.txt', 'sub/new.md'])
    e.close()

    // Another tokenizer (same symbols, another order): its own cache, with other ids.
    const rev = new TinyChar(String.fromCodePoint(...codePoints(tok.chars).reverse()))
    const f = await TextDataset.open({ source: d, tokenizer: rev, seqLen: 8 })
    expect(f.fromCache).toBe(false)
    expect(f.tokenizerFingerprint).not.toBe(e.tokenizerFingerprint)
    expect(f.cachePath).not.toBe(e.cachePath)
    expect(f.read(0, 5)).toEqual(Int32Array.from(rev.expect(readFileSync(join(d, 'a.txt'), 'utf8').slice(0, 5))))
    f.close()

    // A damaged token file, and an explicit rebuild.
    writeFileSync(f.cachePath, new Uint8Array(10))
    const g = await TextDataset.open({ source: d, tokenizer: rev, seqLen: 8 })
    expect(g.rebuildReason).toBe('a token file of the wrong size')
    g.close()
    const h = await TextDataset.open({ source: d, tokenizer: rev, seqLen: 8, rebuild: true })
    expect(h.rebuildReason).toBe('rebuild requested')
    const now = h.files.flatMap((x) => rev.expect(readFileSync(join(d, x.path), 'utf8')))
    expect(h.read(0, h.tokens())).toEqual(Int32Array.from(now))
    h.close()
    // No temporary files left behind.
    expect(readdirSync(join(d, '.rt-cache')).filter((x) => x.includes('.tmp-'))).toEqual([])
  })

  it('takes a single file, an explicit cacheDir, extensions or a filter, and a separator', async () => {
    const d = freshDir('select')
    const { texts } = writeCorpus(d)
    const cacheDir = join(root, 'explicit-cache')
    const one = await TextDataset.open({ source: join(d, 'b.md'), tokenizer: tok, seqLen: 8, cacheDir })
    expect(one.sourceKind).toBe('file')
    expect(one.cachePath.startsWith(cacheDir + '/')).toBe(true)
    expect(one.read(0, one.tokens())).toEqual(Int32Array.from(tok.expect(texts[1]!)))
    one.close()

    const md = await TextDataset.open({ source: d, tokenizer: tok, seqLen: 8, extensions: ['.MD'] })
    expect(md.files.map((f) => f.path)).toEqual(['b.md'])
    md.close()
    const filtered = await TextDataset.open({ source: d, tokenizer: tok, seqLen: 8, filter: (rel) => rel.startsWith('sub/') })
    expect(filtered.files.map((f) => f.path)).toEqual(['sub/c.txt', 'sub/deeper/d.txt'])
    expect(filtered.cachePath).not.toBe(md.cachePath)
    filtered.close()

    const sep = await TextDataset.open({ source: d, tokenizer: tok, seqLen: 8, separator: '\n\n' })
    expect(sep.separator).toEqual(tok.expect('\n\n'))
    expect(sep.read(0, sep.tokens())).toEqual(Int32Array.from(tok.expect(texts.join('\n\n'))))
    sep.close()
    const ids = await TextDataset.open({ source: d, tokenizer: tok, seqLen: 8, separator: [0] })
    expect(ids.tokens()).toBe(texts.reduce((s, t) => s + t.length, 0) + 3)
    ids.close()

    await expect(TextDataset.open({ source: d, tokenizer: tok, seqLen: 8, extensions: ['.rst'] })).rejects.toThrow(/no files under .* match \.rst/)
    await expect(TextDataset.open({ source: join(d, 'missing.txt'), tokenizer: tok, seqLen: 8 })).rejects.toThrow(/cannot read the source/)
    await expect(TextDataset.open({ source: d, tokenizer: tok, seqLen: 8, separator: [tok.vocabSize] })).rejects.toThrow(/separator id/)
    await expect(TextDataset.open({ source: d, tokenizer: tok, seqLen: 0 })).rejects.toThrow(/seqLen must be an integer >= 1/)
    await expect(TextDataset.open({ source: d, tokenizer: tok, seqLen: 8, valFraction: 1 })).rejects.toThrow(/valFraction/)
    await expect(TextDataset.open({ source: d, tokenizer: tok, seqLen: 8, cacheDir: join(d, 'a.txt', 'cache') })).rejects.toThrow(
      /cannot create the cache folder .*a\.txt\/cache .*pass a writable cacheDir/,
    )
    // A tokenizer error names the file; no cache is left behind.
    const small = new TinyChar('abc')
    await expect(TextDataset.open({ source: join(d, 'b.md'), tokenizer: small, seqLen: 8, cacheDir: join(root, 'err-cache') })).rejects.toThrow(
      /tokenizing .*b\.md \(bytes 0\.\.\d+\): TinyChar: .* is not in the vocabulary/,
    )
    expect(readdirSync(join(root, 'err-cache'))).toEqual([])
  })

  it('stores ids above 65535 as uint32', async () => {
    const d = freshDir('big-vocab')
    const text = synthText(9, 5000)
    writeFileSync(join(d, 'big.txt'), text)
    // Ids 70000.. with a vocabulary of 70000 + 65536.
    const base = TinyChar.of(ALPHABET_ALL)
    const big: TextTokenizer = {
      vocabSize: 70000 + 65536,
      encode: (t: string) => base.expect(t).map((id) => id + 70000), // a plain number[]
      toJSON: () => ({ type: 'fake-big', chars: base.chars }),
    }
    const ds = await TextDataset.open({ source: d, tokenizer: big, seqLen: 32 })
    expect(ds.dtype).toBe('uint32')
    expect(sidecar(ds).dtype).toBe('uint32')
    expect(statSync(ds.cachePath).size).toBe(4 * text.length)
    const want = Int32Array.from(base.expect(text).map((id) => id + 70000))
    expect(ds.read(0, ds.tokens())).toEqual(want)
    const b = ds.batch(new Rng(5), 4, 'train', {})
    for (let r = 0; r < 4; r++) expect(b.tokens.subarray(r * 32, r * 32 + 32)).toEqual(want.subarray(b.starts[r]!, b.starts[r]! + 32))
    expect(b.tokens.every((x) => x >= 70000)).toBe(true)
    ds.close()

    const disk = await TextDataset.open({ source: d, tokenizer: big, seqLen: 32, inMemoryMaxBytes: 0 })
    expect(disk.fromCache).toBe(true)
    expect(disk.inMemory).toBe(false)
    expect(disk.batch(new Rng(5), 4, 'train', {})).toEqual(b)
    disk.close()

    // An id outside the vocabulary is an error naming the file.
    const bad: TextTokenizer = { vocabSize: 10, encode: () => [3, 12], toJSON: () => ({ type: 'bad' }) }
    await expect(TextDataset.open({ source: d, tokenizer: bad, seqLen: 1 })).rejects.toThrow(/id 12 .*big\.txt.*outside \[0, vocabSize = 10\)/)
  })

  it('rejects a corpus shorter than seqLen + 1, and splits too short for a window', async () => {
    const d = freshDir('tiny')
    writeFileSync(join(d, 'x.txt'), 'abcdefghij') // 10 tokens
    await expect(TextDataset.open({ source: d, tokenizer: tok, seqLen: 10 })).rejects.toThrow(
      /corpus .* \(10 tokens\) is shorter than seqLen \+ 1 = 11 tokens/,
    )
    await expect(TextDataset.open({ source: d, tokenizer: tok, seqLen: 8 })).rejects.toThrow(/val split .* has 1 tokens, fewer than seqLen \+ 1 = 9/)
    await expect(TextDataset.open({ source: d, tokenizer: tok, seqLen: 5, valFraction: 0.5 })).rejects.toThrow(/train split .* has 5 tokens, fewer than seqLen \+ 1 = 6/)
    await expect(TextDataset.open({ source: d, tokenizer: tok, seqLen: 3, valFraction: 0.1 })).rejects.toThrow(/val split .* has 1 tokens, fewer than seqLen \+ 1 = 4/)
    // No validation split at all is allowed; asking for a val batch then says why not.
    const ds = await TextDataset.open({ source: d, tokenizer: tok, seqLen: 9, valFraction: 0 })
    expect(ds.tokens('train')).toBe(10)
    expect(ds.tokens('val')).toBe(0)
    expect(() => ds.batch(new Rng(1), 1, 'val', {})).toThrow(/val split has 0 tokens/)
    const b = ds.batch(new Rng(1), 3, 'train', {})
    expect(b.starts).toEqual([0, 0, 0]) // only one window fits
    expect(Array.from(b.tokens.subarray(0, 9))).toEqual(tok.expect('abcdefghi'))
    expect(Array.from(b.targets.subarray(0, 9))).toEqual(tok.expect('bcdefghij'))
    ds.close()
    expect(() => ds.batch(new Rng(1), 1, 'train', {})).toThrow(/closed/)
  })
})

describe('TextDataset split and batches', () => {
  const dir = freshDir('batches')
  const { texts } = writeCorpus(dir)
  const tok = TinyChar.of(ALPHABET_ALL)
  const all = Int32Array.from(texts.flatMap((t) => tok.expect(t)))
  const n = all.length
  const N = 24

  it('splits 90/10 by token position, or by valFraction', async () => {
    const ds = await TextDataset.open({ source: dir, tokenizer: tok, seqLen: N })
    expect(ds.tokens('train')).toBe(Math.floor(n * 0.9))
    expect(ds.tokens('val')).toBe(n - Math.floor(n * 0.9))
    expect(ds.tokens('train') + ds.tokens('val')).toBe(n)
    expect(ds.range('train')).toEqual([0, ds.splitIndex])
    expect(ds.range('val')).toEqual([ds.splitIndex, n])
    ds.close()
    const q = await TextDataset.open({ source: dir, tokenizer: tok, seqLen: N, valFraction: 0.25 })
    expect(q.fromCache).toBe(true) // the split is not part of the cache
    expect(q.tokens('train')).toBe(Math.floor(n * 0.75))
    expect(sidecar(q).split).toMatchObject({ valFraction: 0.25, index: Math.floor(n * 0.75) })
    q.close()
  })

  it('draws windows of the corpus with next-token targets, inside their split', async () => {
    const ds = await TextDataset.open({ source: dir, tokenizer: tok, seqLen: N })
    const td: TrainData = ds // the trainer's interface
    const rng = new Rng(123)
    const split = ds.splitIndex
    const seen = { train: [Infinity, -Infinity], val: [Infinity, -Infinity] }
    const bad: string[] = []
    for (const which of ['train', 'val'] as const) {
      for (let k = 0; k < (which === 'train' ? 300 : 1000); k++) {
        const b = ds.batch(rng, 8, which, {})
        expect(b).toMatchObject({ batch: 8, seqLen: N, positions: N })
        expect(b.tokens.length).toBe(8 * N)
        expect(b.targets.length).toBe(8 * N)
        for (let r = 0; r < 8; r++) {
          const i = b.starts[r]!
          const [lo, hi] = which === 'train' ? [0, split] : [split, n]
          // The window and its last target stay in the split.
          if (!(Number.isInteger(i) && i >= lo && i + N + 1 <= hi)) bad.push(`${which} row ${r}: start ${i} outside [${lo}, ${hi - N - 1}]`)
          if (!sameSlice(b.tokens, r * N, all, i, N)) bad.push(`${which} row ${r}: tokens are not data[${i} : ${i + N}]`)
          if (!sameSlice(b.targets, r * N, all, i + 1, N)) bad.push(`${which} row ${r}: targets are not data[${i + 1} : ${i + N + 1}]`)
          // Targets are the tokens shifted by one.
          if (!sameSlice(b.targets, r * N, b.tokens, r * N + 1, N - 1)) bad.push(`${which} row ${r}: targets are not the tokens shifted by one`)
          seen[which][0] = Math.min(seen[which][0]!, i)
          seen[which][1] = Math.max(seen[which][1]!, i)
        }
      }
    }
    expect(bad.slice(0, 5)).toEqual([])
    // The val split is small (820 tokens, 796 window starts): 8000 draws reach both of its ends.
    expect(seen.val).toEqual([split, n - N - 1])
    expect(seen.train[0]).toBeLessThan(split * 0.01)
    expect(seen.train[1]).toBeGreaterThan(split * 0.99 - N)
    expect(td.describe()).toMatchObject({ kind: 'text' })
    ds.close()
  })

  it('is a pure function of the Rng state; disk and memory modes agree', async () => {
    const mem = await TextDataset.open({ source: dir, tokenizer: tok, seqLen: N })
    const disk = await TextDataset.open({ source: dir, tokenizer: tok, seqLen: N, inMemoryMaxBytes: 0 })
    expect(mem.inMemory).toBe(true)
    expect(disk.inMemory).toBe(false)
    const rng = new Rng(7)
    rng.nextU32()
    const state = rng.getState()
    const a = mem.batch(rng, 16, 'train', {})
    const after = rng.getState()
    const b = mem.batch(Rng.fromState(state), 16, 'train', {})
    expect(b).toEqual(a)
    const resumed = Rng.fromState(state)
    const c = disk.batch(resumed, 16, 'train', {})
    expect(c).toEqual(a)
    expect(resumed.getState()).toEqual(after) // the same draws, so the stream continues identically
    expect(mem.batch(rng, 16, 'train', {}).starts).not.toEqual(a.starts)
    expect(disk.batch(Rng.fromState(state), 3, 'val', {})).toEqual(mem.batch(Rng.fromState(state), 3, 'val', {}))
    expect(disk.read(100, 500)).toEqual(all.subarray(100, 600))
    mem.close()
    disk.close()
  })

  it('describes itself in JSON', async () => {
    const ds = await TextDataset.open({ source: dir, tokenizer: tok, seqLen: N, valFraction: 0.2 })
    const desc = JSON.parse(JSON.stringify(ds.describe())) as Record<string, unknown>
    expect(desc).toMatchObject({
      kind: 'text',
      source: dir,
      sourceKind: 'dir',
      seqLen: N,
      valFraction: 0.2,
      cachePath: ds.cachePath,
      cacheDir: join(dir, '.rt-cache'),
      tokenizer: 'tiny-char',
      vocabSize: tok.vocabSize,
      dtype: 'uint16',
      tokens: { total: n, train: Math.floor(n * 0.8), val: n - Math.floor(n * 0.8) },
      extensions: ['.md', '.txt'],
    })
    // A checkpoint's description reopens the same dataset (from its cache).
    const opts = TextDataset.optionsFromDescription(desc)
    expect(opts).toEqual({ source: dir, seqLen: N, valFraction: 0.2, cacheDir: join(dir, '.rt-cache'), separator: [], chunkBytes: 4 * 1024 * 1024, extensions: ['.md', '.txt'] })
    const again = await TextDataset.open({ ...opts, tokenizer: tok })
    expect(again.fromCache).toBe(true)
    expect(again.describe()).toEqual(ds.describe())
    expect(() => TextDataset.optionsFromDescription({ kind: 'copy' })).toThrow(/not a text dataset/)
    ds.close()
    again.close()
  })
})

describe('chunked tokenization', () => {
  it('cuts chunks at whitespace, preferring x\\ny and x y', () => {
    expect(chunkSplitPoint('aaaa bbbb cccc\ndddd')).toBe(14 + 1) // after the newline of c\nd
    expect(chunkSplitPoint('aaaa bbbbbbbbb dd')).toBe(14) // before the space of "b d"
    expect(chunkSplitPoint('aaaaaaaaaaa  \n\n')).toBe(15 - 1) // after a whitespace character
    expect(chunkSplitPoint('aaaaaaaaaaaaaaaa')).toBe(16) // hard cut
    expect(chunkSplitPoint('aaaaaaaaaaaaaa\ud83d\ude00')).toBe(16) // never between surrogate halves
    expect(chunkSplitPoint('aaaaaaaaaaaaaaa\ud83d')).toBe(15)
  })

  it('gives the tokens of the whole file for a char tokenizer (~5 MB, multi-byte UTF-8, long words)', async () => {
    const d = freshDir('five-mb')
    // Prose-like text with accents, CJK and astral emoji (2-, 3- and 4-byte UTF-8), and now and then
    // a 10,000-character word, so that some chunks have no whitespace and are cut hard.
    const alphabet = 'abcdefghijklmnopqrstuvwxyz.,éèçøßλЖ漢字かな😀🎉'
    let text = synthText(42, 3_400_000, alphabet)
    const long = synthText(43, 10_000, 'xyzé漢😀', false)
    text = text.slice(0, 1_000_000) + long + text.slice(1_000_000, 2_000_000) + long + text.slice(2_000_000)
    writeFileSync(join(d, 'big.txt'), text)
    const bytes = statSync(join(d, 'big.txt')).size
    expect(bytes).toBeGreaterThan(4_500_000)
    const tok = TinyChar.of(text)
    const whole = tok.ints(text)
    for (const chunkBytes of [undefined, 65_537, 4099]) {
      const t0 = performance.now()
      const ds = await TextDataset.open({ source: d, tokenizer: tok, seqLen: 64, chunkBytes, cacheDir: join(d, `cache-${chunkBytes ?? 'default'}`) })
      const ms = performance.now() - t0
      expect(ds.fromCache).toBe(false)
      expect(ds.tokens()).toBe(whole.length)
      expect(firstMismatch(ds.read(0, ds.tokens()), whole)).toBe(-1)
      console.log(`text-data: ${(bytes / 1e6).toFixed(1)} MB, chunkBytes ${chunkBytes ?? 'default (4 MiB)'}: cache built in ${ms.toFixed(0)} ms`)
      ds.close()
    }
    // A chunk is never one huge string: with 4 MiB chunks the text was encoded in a few calls.
    const t = TinyChar.of(text)
    const ds = await TextDataset.open({ source: d, tokenizer: t, seqLen: 64, cacheDir: join(d, 'cache-count') })
    expect(t.encodeCalls).toBe(Math.ceil(bytes / (4 * 1024 * 1024)))
    ds.close()
  })

  it('matches whole-text GPT-2 BPE when chunks end at x\\ny or x y boundaries', async () => {
    const d = freshDir('bpe')
    const words = ['the', 'king', "'s", 'crown', 'and', 'I', 'will', 'not', '42', 'sword!', 'My', "don't", 'lord,', '--']
    let s = 7
    const parts: string[] = []
    for (let i = 0; i < 40_000; i++) {
      s = (Math.imul(s, 1103515245) + 12345) >>> 0
      parts.push(words[s % words.length]!, (s >>> 8) % 11 === 0 ? '\n' : ' ')
    }
    const text = parts.join('')
    writeFileSync(join(d, 'prose.txt'), text)
    const gpt2 = BpeTokenizer.gpt2()
    const ds = await TextDataset.open({ source: d, tokenizer: gpt2, seqLen: 32, chunkBytes: 1000 })
    expect(ds.tokenizerKind).toBe('bpe')
    expect(firstMismatch(ds.read(0, ds.tokens()), gpt2.encode(text))).toBe(-1)
    ds.close()
  })
})

describe('tiny Shakespeare', () => {
  it.skipIf(!hasShakespeare)('has 1,115,394 characters, 65 symbols and nanoGPT\'s 1,003,854 / 111,540 split', async () => {
    const text = readFileSync(SHAKESPEARE, 'utf8')
    const tok = CharTokenizer.fromText(text)
    expect(text.length).toBe(1_115_394)
    expect(tok.vocabSize).toBe(65)
    const cacheDir = freshDir('shakespeare-cache') // never next to the shared data
    let t0 = performance.now()
    const ds = await TextDataset.open({ source: SHAKESPEARE, tokenizer: tok, seqLen: 256, cacheDir })
    const buildMs = performance.now() - t0
    expect(ds.fromCache).toBe(false)
    expect(ds.dtype).toBe('uint16')
    expect(ds.tokenizerKind).toBe('char')
    expect(ds.tokens()).toBe(1_115_394)
    expect(ds.tokens('train')).toBe(1_003_854)
    expect(ds.tokens('val')).toBe(111_540)
    expect(firstMismatch(ds.read(0, ds.tokens()), tok.encode(text))).toBe(-1)
    t0 = performance.now()
    const again = await TextDataset.open({ source: SHAKESPEARE, tokenizer: tok, seqLen: 256, cacheDir })
    const reuseMs = performance.now() - t0
    expect(again.fromCache).toBe(true)

    const disk = await TextDataset.open({ source: SHAKESPEARE, tokenizer: tok, seqLen: 256, cacheDir, inMemoryMaxBytes: 0 })
    const time = (d: TextDataset): number => {
      const rng = new Rng(1)
      d.batch(rng, 64, 'train', {})
      const reps = 50
      const t = performance.now()
      for (let k = 0; k < reps; k++) d.batch(rng, 64, 'train', {})
      return (performance.now() - t) / reps
    }
    const memMs = time(again)
    const diskMs = time(disk)
    const b = again.batch(new Rng(3), 4, 'val', {})
    for (let r = 0; r < 4; r++) {
      const i = b.starts[r]!
      expect(i).toBeGreaterThanOrEqual(1_003_854)
      expect(tok.decode(b.tokens.subarray(r * 256, (r + 1) * 256))).toBe(text.slice(i, i + 256))
    }
    console.log(
      `text-data: tiny Shakespeare cache built in ${buildMs.toFixed(0)} ms, reopened in ${reuseMs.toFixed(1)} ms; ` +
        `batch 64 x 256: ${memMs.toFixed(3)} ms in memory, ${diskMs.toFixed(3)} ms from disk`,
    )
    ds.close()
    again.close()
    disk.close()
  })
})
