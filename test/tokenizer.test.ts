// Tokenizers (src/tokenizer/): CharTokenizer, the GPT-2 byte-level BPE (ids checked against
// js-tiktoken's `gpt2` on targeted inputs and random strings), loaders, serialisation, streaming decode.
// Whole-corpus parity is in tokenizer-parity.test.ts, training in tokenizer-train.test.ts.

import { existsSync, readFileSync } from 'node:fs'
import { describe, expect, it } from 'vitest'
import { getEncoding } from 'js-tiktoken'
import gpt2Ranks from 'js-tiktoken/ranks/gpt2'
import {
  BpeTokenizer,
  CharTokenizer,
  GPT2_PATTERN,
  pretokenize,
  tokenizerFromJSON,
} from '../src/tokenizer/index.js'

const SHAKESPEARE = '/work/shared/data/tinyshakespeare.txt'
const hasShakespeare = existsSync(SHAKESPEARE)
if (!hasShakespeare) console.warn(`tokenizer tests: ${SHAKESPEARE} is absent; the tiny Shakespeare tests are skipped`)

const gpt2 = BpeTokenizer.gpt2()
const tiktoken = getEncoding('gpt2')

/** Seeded PRNG (mulberry32). */
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

/** Random text mixing scripts, digits, whitespace kinds, contractions, emoji, combining marks, lone surrogates. */
function randomText(r: () => number, n: number, loneSurrogates: boolean): string {
  const pools: [number, number][] = [
    [0x20, 0x7e], [0x20, 0x7e], [0x20, 0x7e], // ASCII
    [0xa0, 0x24f], // Latin-1, Latin Extended
    [0x300, 0x36f], // combining marks
    [0x391, 0x3c9], // Greek
    [0x410, 0x44f], // Cyrillic
    [0x5d0, 0x5ea], // Hebrew
    [0x627, 0x64a], // Arabic
    [0x660, 0x669], // Arabic-Indic digits
    [0x905, 0x939], // Devanagari
    [0x3041, 0x3096], // Hiragana
    [0x4e00, 0x9fff], // CJK
    [0xac00, 0xd7a3], // Hangul
    [0x2000, 0x206f], // general punctuation, odd spaces
    [0x1f300, 0x1f64f], // emoji
    [0x1d400, 0x1d7ff], // mathematical alphanumerics (astral letters and digits)
    [0x10000, 0x1007f], // Linear B (astral letters)
  ]
  const specials = [' ', '  ', '\n', '\n\n', '\t', '\r\n', "'s", "'ll", "'re", "'ve", "'d", "'m", "'t", "'S", '\u00a0', '\u3000', '\ufeff', '\u200d', '123', ' 4']
  let s = ''
  for (let i = 0; i < n; i++) {
    const x = r()
    if (x < 0.3) s += specials[Math.floor(r() * specials.length)]
    else if (loneSurrogates && x < 0.33) s += String.fromCharCode(0xd800 + Math.floor(r() * 0x800))
    else {
      const [lo, hi] = pools[Math.floor(r() * pools.length)]!
      s += String.fromCodePoint(lo + Math.floor(r() * (hi - lo + 1)))
    }
  }
  return s
}

/** What a string becomes after a UTF-8 round trip: lone surrogates -> U+FFFD. */
function wellFormed(s: string): string {
  return new TextDecoder('utf-8', { ignoreBOM: true }).decode(new TextEncoder().encode(s))
}

function expectSameIds(ours: Int32Array, theirs: number[], what: string): void {
  if (ours.length === theirs.length && ours.every((v, i) => v === theirs[i])) return
  let k = 0
  while (k < ours.length && k < theirs.length && ours[k] === theirs[k]) k++
  expect.fail(`${what}: ids differ at token ${k}: ours ${JSON.stringify(Array.from(ours.slice(k, k + 8)))}, js-tiktoken ${JSON.stringify(theirs.slice(k, k + 8))}`)
}

describe('CharTokenizer', () => {
  it.skipIf(!hasShakespeare)('has the 65 symbols of tiny Shakespeare (nanoGPT shakespeare_char) and round-trips it', () => {
    const text = readFileSync(SHAKESPEARE, 'utf8')
    const tok = CharTokenizer.fromText(text)
    expect(tok.vocabSize).toBe(65)
    expect(tok.chars.join('')).toBe("\n !$&',-.3:;?ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz")
    expect(Array.from(tok.encode('hii there'))).toEqual([46, 47, 47, 1, 58, 46, 43, 56, 43])
    const ids = tok.encode(text)
    expect(ids).toBeInstanceOf(Int32Array)
    expect(ids.length).toBe(text.length)
    expect(tok.decode(ids)).toBe(text)
  })

  it('works on code points, not UTF-16 units', () => {
    const tok = CharTokenizer.fromText('b😀a𝐀😀')
    expect(tok.vocabSize).toBe(4)
    expect(tok.chars).toEqual(['a', 'b', '𝐀', '😀'])
    const ids = tok.encode('😀a𝐀b')
    expect(Array.from(ids)).toEqual([3, 0, 2, 1])
    expect(tok.decode(ids)).toBe('😀a𝐀b')
    // A lone surrogate is a symbol of its own.
    const lone = CharTokenizer.fromText('x\ud800y')
    expect(lone.vocabSize).toBe(3)
    expect(lone.decode(lone.encode('y\ud800x'))).toBe('y\ud800x')
  })

  it('names an unknown character and its position', () => {
    const tok = CharTokenizer.fromText('abc ')
    expect(() => tok.encode('abc cab Z')).toThrow(/"Z" \(U\+005A\) at position 8/)
    expect(() => tok.encode('a😀')).toThrow(/"😀" \(U\+1F600\) at position 1/)
    expect(() => tok.encode('a\nb')).toThrow(/U\+000A at position 1/)
    expect(() => tok.decode([0, 4])).toThrow(/id 4 at position 1/)
    expect(() => tok.decode([0, -1])).toThrow(/id -1/)
  })

  it('round-trips through JSON, also inside a checkpoint-like JSON string', () => {
    const tok = CharTokenizer.fromText('hello wörld 😀\n\ud800')
    const json = JSON.parse(JSON.stringify(tok.toJSON()))
    const back = CharTokenizer.fromJSON(json)
    expect(back.chars).toEqual(tok.chars)
    const back2 = tokenizerFromJSON(JSON.stringify(tok))
    expect(back2).toBeInstanceOf(CharTokenizer)
    expect(Array.from(back2.encode('wörld 😀'))).toEqual(Array.from(tok.encode('wörld 😀')))
    expect(() => CharTokenizer.fromJSON({ type: 'bpe' })).toThrow(/type/)
    expect(() => new CharTokenizer(['a', 'a'])).toThrow(/twice/)
    expect(() => new CharTokenizer(['ab'])).toThrow(/single code point/)
  })
})

describe('GPT-2 pre-tokenisation', () => {
  it('matches the RegExp on random strings of tricky characters', () => {
    const re = new RegExp(GPT2_PATTERN, 'gu')
    const alphabet = [' ', ' ', '  ', '\n', '\t', '\u00a0', '\u3000', "'", 's', 't', 'r', 'e', 'v', 'l', 'm', 'd', 'a', 'Z', '1', '٣', '½', '!', '.', '😀', '𝐀', '𝟙', '\ud800', '\udc00', 'é', '\u0301', '中', '\ufeff', '\u2028', '\r\n', '-']
    const r = rng(1)
    for (let t = 0; t < 20000; t++) {
      const n = 1 + Math.floor(r() * 12)
      let s = ''
      for (let k = 0; k < n; k++) s += alphabet[Math.floor(r() * alphabet.length)]
      const expected = Array.from(s.matchAll(re), (m) => m[0])
      expect(pretokenize(s), JSON.stringify(s)).toEqual(expected)
    }
  })

  it('splits like GPT-2', () => {
    expect(pretokenize("Hello world! I'm here  \n\n  don't 123abc")).toEqual(['Hello', ' world', '!', ' I', "'m", ' here', '  \n\n ', ' don', "'t", ' 123', 'abc'])
    expect(pretokenize("it's 'salright")).toEqual(['it', "'s", " '", 'salright'])
    expect(pretokenize('a   ')).toEqual(['a', '   '])
  })
})

describe('BpeTokenizer.gpt2()', () => {
  it('has GPT-2 ids', () => {
    expect(gpt2.vocabSize).toBe(50257)
    expect(gpt2.name).toBe('gpt2')
    expect(Array.from(gpt2.encode('Hello world'))).toEqual([15496, 995])
    expect(Array.from(gpt2.encode(' the'))).toEqual([262])
    expect(gpt2.specialTokens.get('<|endoftext|>')).toBe(50256)
    expect(gpt2.tokenId('<|endoftext|>')).toBe(50256)
    expect(gpt2.tokenId(' the')).toBe(262)
    expect(gpt2.tokenId('no such token, surely')).toBeUndefined()
    expect(new TextDecoder().decode(gpt2.tokenBytes(995))).toBe(' world')
  })

  it('gives js-tiktoken ids on targeted inputs', () => {
    const cases = [
      '', ' ', 'a', '\n', '   ', 'Hello, world!', "I'm sure they'll've done it, it's 'quoted'", "'S capital 'LL",
      'x = 1; // comment\n\tif (a  &&  b) {\n    return 42;\n}\n', 'https://example.com/a?b=c&d=e#f',
      'naïve café résumé', 'Привет, мир! Как дела?', 'こんにちは世界。日本語のテキスト', '你好，世界', '안녕하세요 세계',
      'مرحبا بالعالم', 'नमस्ते दुनिया', '😀😃😄 👩‍👩‍👧‍👦 🇫🇷 flags', '\u00a0non\u00a0breaking\u3000ideographic', 'trailing spaces   ',
      '\ufeffBOM first', 'tabs\t\t\tand\r\nCRLF\r\n', '1234567890 3.14159 -0.5e10', '٣٤٥ ½ ² Ⅻ', 'x'.repeat(300),
      ' '.repeat(257), '-'.repeat(500), '𝐀𝐁𝐂 𝟙𝟚𝟛', 'aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa b',
      '<|endoftext' + '|> is special only when whole', '<|endoftext|', '!!!???...,,,;;;', "''''s",
    ]
    for (const s of cases) expectSameIds(gpt2.encodeOrdinary(s), tiktoken.encode(s, [], []), JSON.stringify(s.slice(0, 40)))
  })

  it('gives js-tiktoken ids on long pieces (the heap-based merge) and random byte soups', () => {
    const r = rng(7)
    for (let t = 0; t < 40; t++) {
      const alphabet = t % 2 === 0 ? 'ab' : 'abcdefghij0123.-'
      const n = 49 + Math.floor(r() * 250)
      let s = ''
      for (let k = 0; k < n; k++) s += alphabet[Math.floor(r() * alphabet.length)]
      expectSameIds(gpt2.encode(s), tiktoken.encode(s), `long piece ${t}`)
    }
    for (const s of ['🙂'.repeat(40), 'é'.repeat(100), '\u0301'.repeat(70), '中文'.repeat(60)]) {
      expectSameIds(gpt2.encode(s), tiktoken.encode(s), JSON.stringify(s.slice(0, 8)))
    }
  })

  it('gives js-tiktoken ids on random unicode text and round-trips it', () => {
    const r = rng(3)
    for (let t = 0; t < 300; t++) {
      const s = randomText(r, 1 + Math.floor(r() * 200), false)
      const ids = gpt2.encode(s)
      expectSameIds(ids, tiktoken.encode(s), `random text ${t}`)
      expect(gpt2.decode(ids)).toBe(s)
    }
  })

  it('encodes lone surrogates as U+FFFD, like TextEncoder (documented: such strings cannot round-trip)', () => {
    const r = rng(11)
    for (let t = 0; t < 200; t++) {
      const s = randomText(r, 1 + Math.floor(r() * 100), true)
      const ids = gpt2.encode(s)
      expectSameIds(ids, tiktoken.encode(s), `random text with lone surrogates ${t}`)
      expect(gpt2.decode(ids)).toBe(wellFormed(s))
    }
    expect(gpt2.decode(gpt2.encode('a\ud800b'))).toBe('a\ufffdb')
    expect(Array.from(gpt2.encode('\udc00'))).toEqual(Array.from(gpt2.encode('\ufffd')))
    expect(gpt2.decode(gpt2.encode('😀\ud83d'))).toBe('😀\ufffd')
  })

  it('refuses special tokens unless allowed, like tiktoken', () => {
    const text = 'Hello<|endoftext|> world'
    expect(() => gpt2.encode(text)).toThrow(/special token "<\|endoftext\|>" at index 5/)
    const allowed = gpt2.encode(text, { allowedSpecial: 'all' })
    expect(Array.from(allowed)).toEqual([15496, 50256, 995])
    expectSameIds(allowed, tiktoken.encode(text, 'all'), 'allowed')
    expect(Array.from(gpt2.encode(text, { allowedSpecial: new Set(['<|endoftext|>']) }))).toEqual([15496, 50256, 995])
    expect(Array.from(gpt2.encode(text, { allowedSpecial: ['<|endoftext|>'] }))).toEqual([15496, 50256, 995])
    const ordinary = gpt2.encodeOrdinary(text)
    expectSameIds(ordinary, tiktoken.encode(text, [], []), 'ordinary')
    expect(Array.from(gpt2.encode(text, { disallowedSpecial: 'none' }))).toEqual(Array.from(ordinary))
    expect(gpt2.decode(ordinary)).toBe(text)
    expect(gpt2.decode(allowed)).toBe(text)
    expect(() => gpt2.encode(text, { allowedSpecial: ['<|nope|>'] })).toThrow(/not a special token/)
    // Whitespace right before a special token ends the segment (tiktoken splits the text there).
    for (const s of ['a \n<|endoftext|>b', 'x  <|endoftext|><|endoftext|>  y', '<|endoftext|>', ' <|endoftext|> ']) {
      expectSameIds(gpt2.encode(s, { allowedSpecial: 'all' }), tiktoken.encode(s, 'all'), JSON.stringify(s))
    }
  })

  it('decodes bytes across token boundaries and streams complete characters only', () => {
    const text = 'é😀 中文 👩‍👩‍👧‍👦!'
    const ids = gpt2.encode(text)
    expect(gpt2.decodeBytes(ids)).toEqual(new TextEncoder().encode(text))
    const dec = gpt2.decoder()
    const pieces: string[] = []
    for (const id of ids) pieces.push(dec.push(id))
    pieces.push(dec.flush())
    expect(pieces.join('')).toBe(text)
    for (const p of pieces) expect(p).toBe(wellFormed(p)) // never half a character
    // 😀 is two tokens in GPT-2: the first yields nothing, the second the whole emoji.
    const emoji = gpt2.encode('😀')
    expect(emoji.length).toBe(2)
    const d2 = gpt2.decoder()
    expect(d2.push(emoji[0]!)).toBe('')
    expect(d2.push(emoji[1]!)).toBe('😀')
    expect(d2.flush()).toBe('')
    // A truncated character at the end of decode() becomes U+FFFD.
    expect(gpt2.decode([emoji[0]!])).toBe('\ufffd')
    const d3 = gpt2.decoder()
    expect(d3.push(emoji[0]!)).toBe('')
    expect(d3.flush()).toBe('\ufffd')
    // A leading BOM is kept.
    expect(gpt2.decode(gpt2.encode('\ufeffx'))).toBe('\ufeffx')
    expect(() => gpt2.decode([1, 50257])).toThrow(/id 50257 at position 1/)
    expect(() => gpt2.decoder().push(-1)).toThrow(/id -1/)
  })

  it('encodeBatch encodes each text', () => {
    const texts = ['one', 'two three', '', 'four<|endoftext|>']
    const out = gpt2.encodeBatch(texts, { allowedSpecial: 'all' })
    expect(out.map((a) => Array.from(a))).toEqual(texts.map((t) => tiktoken.encode(t, 'all')))
  })

  it('gives the same ids with the cache disabled or tiny (cleared mid-text)', () => {
    const r = rng(5)
    let text = ''
    for (let i = 0; i < 50; i++) text += randomText(r, 100, false) + ' the cat sat on the mat. '
    const ref = gpt2.encode(text)
    expectSameIds(BpeTokenizer.gpt2({ cacheSize: 0 }).encode(text), Array.from(ref), 'no cache')
    const tiny = BpeTokenizer.gpt2({ cacheSize: 3 })
    expectSameIds(tiny.encode(text), Array.from(ref), 'tiny cache')
    expectSameIds(tiny.encode(text), Array.from(ref), 'tiny cache, again')
  })
})

describe('BpeTokenizer loaders and serialisation', () => {
  const sample = "Hello world! It's 2024; naïve café 😀 中文 <|endoftext|> done.\n\n  indented"

  it('round-trips through toJSON/fromJSON (ranks as base64)', () => {
    const json = gpt2.toJSON()
    expect(json.type).toBe('bpe')
    expect(json.tokens.length).toBe(50257)
    expect(json.tokens[0]).toBe('IQ==') // "!"
    expect(json.tokens[50256]).toBeNull()
    expect(json.specialTokens).toEqual({ '<|endoftext|>': 50256 })
    expect(json.ranks).toBeUndefined()
    const text = JSON.stringify(json)
    const back = BpeTokenizer.fromJSON(JSON.parse(text))
    expect(back.vocabSize).toBe(50257)
    expect(Array.from(back.encode(sample, { allowedSpecial: 'all' }))).toEqual(Array.from(gpt2.encode(sample, { allowedSpecial: 'all' })))
    expect(JSON.stringify(back.toJSON())).toBe(text)
    const viaGeneric = tokenizerFromJSON(text)
    expect(viaGeneric).toBeInstanceOf(BpeTokenizer)
  })

  it('rejects malformed JSON with a message naming the field', () => {
    const good = gpt2.toJSON()
    expect(() => BpeTokenizer.fromJSON({ ...good, type: 'char' })).toThrow(/type/)
    expect(() => BpeTokenizer.fromJSON({ ...good, tokens: ['***', ...good.tokens.slice(1)] })).toThrow(/tokens\[0\].*not base64/)
    expect(() => BpeTokenizer.fromJSON({ ...good, tokens: good.tokens.map((t, i) => (i === 5 ? null : t)) })).toThrow(/byte .* has no token/)
    expect(() => BpeTokenizer.fromJSON({ ...good, specialTokens: { '<|x|>': 100 } })).toThrow(/already the id/)
    expect(() => BpeTokenizer.fromJSON({ ...good, tokens: [...good.tokens.slice(0, 300), good.tokens[10]] })).toThrow(/same bytes/)
    expect(() => BpeTokenizer.fromJSON('{')).toThrow(/not valid JSON/)
  })

  it('loads tiktoken rank files and js-tiktoken rank objects', () => {
    const file = gpt2.toTiktoken()
    expect(file.split('\n')[0]).toBe('IQ== 0')
    const fromFile = BpeTokenizer.fromTiktoken(file, { specialTokens: { '<|endoftext|>': 50256 } })
    expect(Array.from(fromFile.encode(sample, { allowedSpecial: 'all' }))).toEqual(Array.from(gpt2.encode(sample, { allowedSpecial: 'all' })))
    const fromObject = BpeTokenizer.fromJsTiktoken(gpt2Ranks)
    expect(Array.from(fromObject.encode(sample, { allowedSpecial: 'all' }))).toEqual(Array.from(gpt2.encode(sample, { allowedSpecial: 'all' })))
    expect(() => BpeTokenizer.fromTiktoken('IQ== 0\nnot a line')).toThrow(/line 2/)
  })

  it("writes and reads GPT-2's encoder.json + vocab.bpe", () => {
    const { encoder, merges } = gpt2.toGpt2Files()
    expect(Object.keys(encoder).length).toBe(50257)
    expect(encoder['!']).toBe(0)
    expect(encoder['Ġ']).toBe(220) // the space byte
    expect(encoder['Ġthe']).toBe(262)
    expect(encoder['<|endoftext|>']).toBe(50256)
    const lines = merges.split('\n')
    expect(lines.slice(0, 8)).toEqual(['#version: 0.2', 'Ġ t', 'Ġ a', 'h e', 'i n', 'r e', 'o n', 'Ġt he'])
    expect(lines.filter((l) => l !== '').length).toBe(50001)
    const back = BpeTokenizer.fromGpt2Files(JSON.stringify(encoder), merges)
    expect(back.vocabSize).toBe(50257)
    expect(back.specialTokens.get('<|endoftext|>')).toBe(50256)
    const r = rng(9)
    const texts = [sample, randomText(r, 2000, false)]
    for (const t of texts) {
      expect(Array.from(back.encode(t, { allowedSpecial: 'all' }))).toEqual(Array.from(gpt2.encode(t, { allowedSpecial: 'all' })))
    }
    expect(back.toJSON()).toEqual({ ...gpt2.toJSON(), name: undefined })
    expect(() => BpeTokenizer.fromGpt2Files(encoder, '#version: 0.2\nĠ zz\n')).toThrow(/line 2/)
  })

  it('uses another pre-tokenisation pattern through a RegExp', () => {
    const tok = BpeTokenizer.fromTokens(gpt2.toJSON().tokens.slice(0, 50256).map((b) => Buffer.from(b!, 'base64')), { pattern: '\\S+|\\s+' })
    const text = 'hello world, how are you'
    const ids = tok.encode(text)
    expect(tok.decode(ids)).toBe(text)
    expect(ids.length).toBeGreaterThan(0)
  })
})
