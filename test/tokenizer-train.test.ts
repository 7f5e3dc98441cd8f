// BPE training (BpeTokenizer.train / trainBpe): hand-checked merges, agreement with a naive
// recount-everything reference trainer (same tie-breaking), special tokens, round trips, speed.

import { existsSync, readFileSync } from 'node:fs'
import { describe, expect, it } from 'vitest'
import { BpeTokenizer, pretokenize, tokenizerFromJSON } from '../src/tokenizer/index.js'
import { trainBpe } from '../src/tokenizer/train.js'

const SHAKESPEARE = '/work/shared/data/tinyshakespeare.txt'
const hasShakespeare = existsSync(SHAKESPEARE)
if (!hasShakespeare) console.warn(`tokenizer training tests: ${SHAKESPEARE} is absent; the tiny Shakespeare tests are skipped`)

function rng(seed: number): () => number {
  let s = seed >>> 0
  return () => {
    s = (s + 0x6d2b79f5) >>> 0
    let t = s
    t = Math.imul(t ^ (t >>> 15), t | 1)
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61)
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296
  }
}

const text = (ids: number[] | Uint8Array): string => Buffer.from(ids).toString('latin1')

/**
 * The textbook algorithm, recounting every pair before every merge: highest count, ties to the smaller
 * left id then the smaller right id; a byte string reached twice keeps its first id.
 */
function naiveTrain(texts: string[], vocabSize: number, minFrequency = 2, pattern?: string): { tokens: string[]; merges: [number, number, number][] } {
  const counts = new Map<string, number>()
  for (const t of texts) for (const w of pretokenize(t, pattern)) counts.set(w, (counts.get(w) ?? 0) + 1)
  const words = [...counts].map(([w, c]) => ({ sym: Array.from(new TextEncoder().encode(w)), c }))
  const tokens = Array.from({ length: 256 }, (_, b) => String.fromCharCode(b))
  const merges: [number, number, number][] = []
  while (tokens.length < vocabSize) {
    const pc = new Map<string, number>()
    for (const { sym, c } of words) for (let i = 0; i + 1 < sym.length; i++) pc.set(`${sym[i]},${sym[i + 1]}`, (pc.get(`${sym[i]},${sym[i + 1]}`) ?? 0) + c)
    let best: [number, number, number] | null = null
    for (const [k, c] of pc) {
      const [a, b] = k.split(',').map(Number) as [number, number]
      if (best === null || c > best[2] || (c === best[2] && (a < best[0] || (a === best[0] && b < best[1])))) best = [a, b, c]
    }
    if (best === null || best[2] < minFrequency) break
    const [a, b] = best
    const s = tokens[a]! + tokens[b]!
    let id = tokens.indexOf(s)
    if (id < 0) {
      id = tokens.length
      tokens.push(s)
    }
    merges.push([a, b, id])
    for (const w of words) {
      const out: number[] = []
      for (let i = 0; i < w.sym.length; ) {
        if (i + 1 < w.sym.length && w.sym[i] === a && w.sym[i + 1] === b) {
          out.push(id)
          i += 2
        } else out.push(w.sym[i++]!)
      }
      w.sym = out
    }
  }
  return { tokens, merges }
}

describe('BPE training', () => {
  it('learns the expected first merges on a hand-checked corpus', () => {
    // One word: pairs aa:4 ab:2 bd:1 da:1 ba:1 ac:1 -> "aa" first. Then (aa,a) and (a,b) both count 2:
    // the tie goes to the smaller left id, (97, 98) = "ab". Then (aa, ab) = "aaab" (2). All else 1: stop.
    const r = trainBpe('aaabdaaabac', 1000)
    expect(r.merges).toEqual([
      [97, 97, 256],
      [97, 98, 257],
      [256, 257, 258],
    ])
    expect(r.tokens.slice(256).map(text)).toEqual(['aa', 'ab', 'aaab'])
    // minFrequency 1 keeps merging the count-1 pairs (ties by ids).
    const r1 = trainBpe('aaabdaaabac', 1000, { minFrequency: 1 })
    expect(r1.merges.length).toBeGreaterThan(3)
    expect(r1.merges.slice(0, 3)).toEqual(r.merges)
  })

  it('weights words by their counts and starts with the most frequent pair', () => {
    // " the" 50 times, " then" 10 times, " hat" 5 times, "x" noise.
    const corpus = ' the'.repeat(50) + ' then'.repeat(10) + ' hat'.repeat(5) + ' x'.repeat(3)
    const tok = BpeTokenizer.train(corpus, 256 + 4)
    // Pairs: ' t' 60, 'th' 60, 'he' 60, 'en' 10, ' h' 5, 'ha' 5, 'at' 5, ' x' 3.
    // ' t' (32,116), 'th' (116,104), 'he' (104,101) tie at 60: smallest left id first -> ' t'.
    expect([256, 257, 258, 259].map((id) => tok.decode([id]))).toEqual([' t', 'he', ' the', ' then'])
    expect(Array.from(tok.encode(' the then hat'))).toEqual([258, 259, 32, 104, 97, 116])
  })

  it('agrees with the naive reference trainer, merge by merge', () => {
    const r = rng(42)
    const corpora: string[][] = []
    for (let c = 0; c < 6; c++) {
      const alphabet = c % 2 === 0 ? 'ab ' : "abcde fgh'st\n1é😀"
      const docs: string[] = []
      for (let d = 0; d < 3; d++) {
        let s = ''
        const n = 200 + Math.floor(r() * 800)
        for (let i = 0; i < n; i++) s += [...alphabet][Math.floor(r() * [...alphabet].length)]
        docs.push(s)
      }
      corpora.push(docs)
    }
    corpora.push(['low lower lowest newer newest wider wide low low lower newest newest newest'])
    for (const docs of corpora) {
      for (const minFrequency of [1, 2]) {
        const ours = trainBpe(docs, 256 + 120, { minFrequency })
        const ref = naiveTrain(docs, 256 + 120, minFrequency)
        expect(ours.merges).toEqual(ref.merges)
        expect(ours.tokens.map(text)).toEqual(ref.tokens)
      }
    }
  })

  it('cuts special tokens out of the corpus and gives them the last ids', () => {
    const corpus = ['ab ab ab<|eot|>ab ab', 'cd cd<|eot|><|pad|>cd']
    const tok = BpeTokenizer.train(corpus, 256 + 3 + 2, { specialTokens: ['<|eot|>', '<|pad|>'] })
    expect(tok.vocabSize).toBe(261)
    expect(tok.specialTokens.get('<|eot|>')).toBe(259)
    expect(tok.specialTokens.get('<|pad|>')).toBe(260)
    // No merge learned from the special token's characters.
    for (let id = 256; id < 259; id++) expect(tok.decode([id])).not.toMatch(/[<|>]/)
    const ids = tok.encode(' ab<|eot|>', { allowedSpecial: 'all' })
    expect(ids[ids.length - 1]).toBe(259)
    expect(() => tok.encode('x<|pad|>')).toThrow(/not allowed/)
    expect(() => BpeTokenizer.train('abc', 256)).not.toThrow()
    expect(() => BpeTokenizer.train('abc', 256, { specialTokens: ['<s>'] })).toThrow(/vocabSize/)
    expect(() => BpeTokenizer.train('abc', 255)).toThrow(/vocabSize/)
  })

  it('stops early when no pair is frequent enough', () => {
    const tok = BpeTokenizer.train('abcdef', 10_000)
    expect(tok.vocabSize).toBe(256)
  })

  it('uses a custom pre-tokenisation pattern', () => {
    const ours = trainBpe(['a b a b a b', 'ab ab'], 256 + 10, { pattern: '\\S+|\\s+' })
    const ref = naiveTrain(['a b a b a b', 'ab ab'], 256 + 10, 2, '\\S+|\\s+')
    expect(ours.merges).toEqual(ref.merges)
  })

  it.skipIf(!hasShakespeare)('trains on tiny Shakespeare in seconds; round-trips; survives JSON', () => {
    const corpus = readFileSync(SHAKESPEARE, 'utf8')
    const t0 = performance.now()
    const tok = BpeTokenizer.train(corpus, 2048, { specialTokens: ['<|endoftext|>'], name: 'shakespeare-2k' })
    const seconds = (performance.now() - t0) / 1000
    console.log(`BPE training on tiny Shakespeare (${corpus.length} chars) to 2048 ids: ${seconds.toFixed(2)} s`)
    expect(tok.vocabSize).toBe(2048)
    expect(tok.decode([256])).toBe(' t')
    const ids = tok.encode(corpus)
    expect(ids.length).toBeLessThan(corpus.length / 2.5) // about 2.9 characters per token
    expect(tok.decode(ids)).toBe(corpus)
    const unicode = 'Ünïcödé 😀 中文 \t\n text the model never saw <|endoftext|>'
    expect(tok.decode(tok.encode(unicode, { allowedSpecial: 'all' }))).toBe(unicode)
    const back = tokenizerFromJSON(JSON.parse(JSON.stringify(tok.toJSON())))
    expect(back).toBeInstanceOf(BpeTokenizer)
    expect(Array.from((back as BpeTokenizer).encode(corpus.slice(0, 50_000)))).toEqual(Array.from(tok.encode(corpus.slice(0, 50_000))))
    expect(JSON.stringify(back.toJSON())).toBe(JSON.stringify(tok.toJSON()))
    // The learned vocabulary also exports as GPT-2 files and reads back identically.
    const files = tok.toGpt2Files()
    const again = BpeTokenizer.fromGpt2Files(files.encoder, files.merges)
    expect(Array.from(again.encode(corpus.slice(0, 20000)))).toEqual(Array.from(tok.encode(corpus.slice(0, 20000))))
    // Deterministic.
    expect(JSON.stringify(BpeTokenizer.train(corpus.slice(0, 100_000), 600).toJSON())).toBe(JSON.stringify(BpeTokenizer.train(corpus.slice(0, 100_000), 600).toJSON()))
  })
})
