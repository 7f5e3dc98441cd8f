// Property tests (fast-check) of the tokenizers: decode(encode(s)) === s for any well-formed string
// (CharTokenizer built from the string's own characters, GPT-2's BPE, a small BPE trained here), GPT-2
// ids equal js-tiktoken's, invalid ids are Errors, and the streaming decoder never throws on any byte
// sequence and agrees with a one-shot TextDecoder. Each property runs for a bounded time (RT_FUZZ_MS,
// default 3000 ms) and prints its count; RT_FUZZ_SEED picks the seed (default fixed; 'random').

import fc from 'fast-check'
import { FUZZ_MS, SEED, fuzz } from './fuzz.js'
import { getEncoding } from 'js-tiktoken'
import { beforeAll, describe, expect, it } from 'vitest'
import { BpeTokenizer } from '../src/tokenizer/bpe.js'
import { CharTokenizer } from '../src/tokenizer/char.js'


/** Strings of every kind: ASCII, full Unicode (astral included), graphemes, whitespace runs, digits. */
const textArb = fc.oneof(
  fc.string({ maxLength: 60 }),
  fc.string({ unit: 'binary', maxLength: 40 }),
  fc.string({ unit: 'grapheme', maxLength: 20 }),
  fc.string({ unit: fc.constantFrom(' ', '\n', '\t', '\r', 'a', '1', "'s", "'ll", '\u00a0', '\u3000', 'é', '🙂', '\ufeff', '\u200d'), maxLength: 40 }),
  fc.array(fc.constantFrom('hello', ' world', "I'm", ' 123', '  ', '\n\n', 'ééé', '日本語', '🙂🙂', '\u0301'), { maxLength: 10 }).map((a) => a.join('')),
)

/** Arbitrary UTF-16 including lone surrogates. */
const anyUtf16 = fc.string({ unit: fc.integer({ min: 0, max: 0xffff }).map((c) => String.fromCharCode(c)), maxLength: 30 })

describe('fuzz: CharTokenizer', () => {
  it('decode(encode(s)) === s with the vocabulary of s (well-formed strings)', async () => {
    await fuzz(
      'char round trip',
      fc.property(textArb, (s) => {
        const tok = CharTokenizer.fromText(s)
        const ids = tok.encode(s)
        expect(tok.decode(ids)).toBe(s)
        for (const id of ids) expect(id >= 0 && id < tok.vocabSize).toBe(true)
        // The JSON form gives the same tokenizer.
        expect(CharTokenizer.fromJSON(JSON.stringify(tok.toJSON())).decode(ids)).toBe(s)
      }),
    )
  })

  it('lone surrogates are symbols of their own: the round trip holds for any UTF-16', async () => {
    await fuzz(
      'char round trip, any UTF-16',
      fc.property(anyUtf16, (s) => {
        const tok = CharTokenizer.fromText(s)
        expect(tok.decode(tok.encode(s))).toBe(s)
      }),
      Math.min(FUZZ_MS, 1500),
    )
  })

  it('characters outside the vocabulary and ids outside [0, vocabSize) are Errors', async () => {
    await fuzz(
      'char invalid input',
      fc.property(textArb, textArb, fc.array(fc.oneof(fc.integer(), fc.double(), fc.constantFrom(-1, 0.5, NaN, Infinity, 2 ** 40)), { maxLength: 5 }), (vocabText, s, ids) => {
        const tok = CharTokenizer.fromText(vocabText)
        try {
          expect(tok.decode(tok.encode(s))).toBe(s)
        } catch (e) {
          expect(e).toBeInstanceOf(Error)
          expect((e as Error).message).toMatch(/not in the vocabulary/)
        }
        try {
          const out = tok.decode(ids)
          for (const id of ids) expect(Number.isInteger(id) && id >= 0 && id < tok.vocabSize).toBe(true)
          expect(typeof out).toBe('string')
        } catch (e) {
          expect(e).toBeInstanceOf(Error)
          expect((e as Error).message).toMatch(/CharTokenizer.decode: id/)
        }
      }),
      Math.min(FUZZ_MS, 1500),
    )
  })
})

describe('fuzz: BpeTokenizer', () => {
  let gpt2: BpeTokenizer
  let tiktoken: ReturnType<typeof getEncoding>
  let trained: BpeTokenizer
  beforeAll(() => {
    gpt2 = BpeTokenizer.gpt2()
    tiktoken = getEncoding('gpt2')
    // A small BPE trained here on mixed text: byte fallback means it encodes any string.
    const corpus = Array.from({ length: 200 }, (_, i) =>
      `The quick brown fox ${i} jumps over the lazy dog. ${'ééé 日本語 🙂 '.repeat(i % 3)}It's ${i * 7} o'clock.\n`,
    ).join('')
    trained = BpeTokenizer.train(corpus, 400, { specialTokens: ['<|end|>'] })
  })

  it('GPT-2: decode(encode(s)) === s, and the ids are js-tiktoken\'s', async () => {
    await fuzz(
      'gpt2 round trip + tiktoken parity',
      fc.property(textArb, (s) => {
        fc.pre(!s.includes('<|endoftext|>'))
        const ids = gpt2.encode(s)
        expect(gpt2.decode(ids)).toBe(s)
        expect([...ids]).toEqual(tiktoken.encode(s))
      }),
    )
  })

  it('GPT-2: a lone surrogate becomes U+FFFD (as TextEncoder does), nothing else changes', async () => {
    await fuzz(
      'gpt2 lone surrogates',
      fc.property(anyUtf16, (s) => {
        // ignoreBOM: a default TextDecoder drops a leading U+FEFF, which is text the tokenizer must keep.
        const expected = new TextDecoder('utf-8', { ignoreBOM: true }).decode(new TextEncoder().encode(s))
        expect(gpt2.decode(gpt2.encode(s))).toBe(expected)
      }),
      Math.min(FUZZ_MS, 1500),
    )
  })

  it('a small trained BPE: decode(encode(s)) === s for any well-formed string; special tokens only when allowed', async () => {
    await fuzz(
      'trained bpe round trip',
      fc.property(textArb, fc.boolean(), (s, withSpecial) => {
        const text = withSpecial ? `${s}<|end|>${s}` : s
        if (withSpecial) {
          expect(() => trained.encode(text)).toThrow(/special token/)
          const ids = trained.encode(text, { allowedSpecial: 'all' })
          expect(trained.decode(ids)).toBe(text)
          expect(ids).toContain(trained.vocabSize - 1)
        } else {
          const ids = trained.encode(text)
          for (const id of ids) expect(id >= 0 && id < trained.vocabSize).toBe(true)
          expect(trained.decode(ids)).toBe(text)
        }
        expect(trained.decode(trained.encodeOrdinary(text))).toBe(text)
      }),
    )
  })

  it('the streaming decoder never throws on random bytes and matches a one-shot TextDecoder', async () => {
    // Byte b is the token whose bytes are [b] (every byte-level BPE has all 256).
    const byteIds = (tok: BpeTokenizer): number[] => Array.from({ length: 256 }, (_, b) => tok.tokenId(Uint8Array.of(b))!)
    const gIds = byteIds(gpt2)
    const tIds = byteIds(trained)
    expect(gIds.every((id) => Number.isInteger(id))).toBe(true)
    expect(tIds.every((id) => Number.isInteger(id))).toBe(true)
    await fuzz(
      'streaming decoder on random bytes',
      fc.property(fc.uint8Array({ maxLength: 64 }), fc.boolean(), (bytes, useGpt2) => {
        const tok = useGpt2 ? gpt2 : trained
        const ids = [...bytes].map((b) => (useGpt2 ? gIds : tIds)[b]!)
        const dec = tok.decoder()
        let out = ''
        for (const id of ids) out += dec.push(id)
        out += dec.flush()
        expect(out).toBe(new TextDecoder('utf-8', { ignoreBOM: true }).decode(bytes))
        expect(out).toBe(tok.decode(ids))
      }),
    )
  })

  it('the streaming decoder on random valid ids equals decode(); an invalid id is an Error and the stream goes on', async () => {
    await fuzz(
      'streaming decoder on random ids',
      fc.property(
        fc.array(fc.integer({ min: 0, max: 50256 }), { maxLength: 30 }),
        fc.oneof(fc.integer({ min: 50257, max: 2 ** 31 }), fc.constantFrom(-1, 0.5, NaN, Infinity, -0.5)),
        fc.nat(),
        (ids, bad, at) => {
          const dec = gpt2.decoder()
          let out = ''
          const k = ids.length ? at % ids.length : 0
          for (let i = 0; i < ids.length; i++) {
            if (i === k) expect(() => dec.push(bad)).toThrow(/not a token/)
            out += dec.push(ids[i]!)
          }
          out += dec.flush()
          expect(out).toBe(gpt2.decode(ids))
          expect(() => gpt2.decode([...ids, bad])).toThrow(/not a token/)
        },
      ),
    )
  })
})
