// Byte-level BPE tokenizer, GPT-2 compatible (same ids as tiktoken's / js-tiktoken's `gpt2`).
//
// Text -> pre-tokens (GPT-2's pattern, see pretokenize.ts) -> UTF-8 bytes of each pre-token -> BPE
// merges (merge.ts) -> ids. Each distinct pre-token's ids are cached (a bounded map, cleared when
// full), so on real text most pre-tokens cost one map lookup.

import { createRequire } from 'node:module';
import {
  bytesToGpt2Unicode,
  fromBase64,
  gpt2UnicodeToBytes,
  toBase64,
  utf8Encode,
  utf8EncodeInto,
} from './bytes.js';
import { MISS, PieceCache } from './cache.js';
import { BpeVocab } from './merge.js';
import { GPT2_PATTERN, gpt2PieceEnd, splitterFor, type Splitter } from './pretokenize.js';
import { trainBpe, type TrainBpeOptions } from './train.js';

/** The serialised form (`toJSON()` / `BpeTokenizer.fromJSON()`), small enough for checkpoint metadata. */
export interface BpeTokenizerJSON {
  type: 'bpe';
  version: 1;
  /** A name such as 'gpt2', informational. */
  name?: string;
  /** Pre-tokenisation pattern (a RegExp source used with the u flag). */
  pattern: string;
  /** Bytes of each token by id, base64; null for special-token ids and unused ids. */
  tokens: (string | null)[];
  /**
   * Merge rank by id, present only when some rank differs from its id (GPT-2 files whose ids are not
   * in merge order). null: a token that decodes but never comes out of encode.
   */
  ranks?: (number | null)[];
  /** Special tokens: text -> id. */
  specialTokens: Record<string, number>;
}

/** Which special tokens `encode` turns into their ids ('none' by default). */
export type SpecialTokenSet = 'all' | 'none' | Iterable<string>;

export interface EncodeOptions {
  /** Special tokens that are encoded as their ids when they occur in the text (default 'none'). */
  allowedSpecial?: SpecialTokenSet;
  /**
   * Special tokens whose appearance in the text is an error (default 'all': every special token not
   * allowed). 'none' (or an empty list) encodes the others as ordinary text.
   */
  disallowedSpecial?: SpecialTokenSet;
}

export interface BpeTokenizerOptions {
  /** Special tokens, text -> id; ids must not be ids of ordinary tokens. */
  specialTokens?: Record<string, number>;
  /** Pre-tokenisation pattern; default GPT-2's. */
  pattern?: string;
  name?: string;
  /** Most distinct pre-tokens kept in the encode cache (default 131072; 0 disables it). */
  cacheSize?: number;
}

/** Incremental decoding for generation: feed ids one at a time, get text as soon as it is complete. */
export interface TokenDecoder {
  /**
   * Adds a token; returns the characters it completes. Bytes of an unfinished UTF-8 sequence are held
   * back until the tokens that complete it arrive.
   */
  push(id: number): string;
  /** Ends the stream: returns what is held back (an unfinished sequence decodes to U+FFFD). */
  flush(): string;
}

export type { TrainBpeOptions } from './train.js';

const DEFAULT_CACHE = 1 << 17;
/** Pre-tokens longer than this (UTF-16 units) are not cached. */
const MAX_CACHED_PIECE = 256;

function escapeRegExp(s: string): string {
  return s.replace(/[\\^$.*+?()[\]{}|/-]/g, '\\$&');
}

function isRecord(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

let gpt2Data: { vocab: BpeVocab; specialTokens: Record<string, number>; pattern: string } | null = null;

/** js-tiktoken's ranks modules (`js-tiktoken/ranks/<name>`): compressed lines `prefix offset b64 b64 ...`. */
export interface JsTiktokenRanks {
  pat_str: string;
  special_tokens: Record<string, number>;
  bpe_ranks: string;
}

function parseJsTiktokenRanks(data: JsTiktokenRanks, what: string): (Uint8Array | null)[] {
  const tokens: (Uint8Array | null)[] = [];
  const lines = data.bpe_ranks.split('\n');
  for (let l = 0; l < lines.length; l++) {
    const line = lines[l]!;
    if (line === '') continue;
    const fields = line.split(' ');
    const offset = Number(fields[1]);
    if (fields.length < 2 || !Number.isInteger(offset) || offset < 0) throw new Error(`${what}: line ${l + 1} does not start with "<prefix> <offset>"`);
    for (let k = 2; k < fields.length; k++) {
      const rank = offset + k - 2;
      if (tokens[rank] != null) throw new Error(`${what}: rank ${rank} appears twice`);
      tokens[rank] = fromBase64(fields[k]!, `${what}, line ${l + 1}`);
    }
  }
  for (let i = 0; i < tokens.length; i++) if (tokens[i] === undefined) tokens[i] = null;
  return tokens;
}

export class BpeTokenizer {
  /** Informational name ('gpt2' for BpeTokenizer.gpt2()). */
  readonly name: string | undefined;
  /** Pre-tokenisation pattern. */
  readonly pattern: string;
  /** Number of ids: highest id (ordinary or special) + 1. */
  readonly vocabSize: number;
  /** Special tokens, text -> id. */
  readonly specialTokens: ReadonlyMap<string, number>;

  private readonly vocab: BpeVocab;
  private readonly splitter: Splitter;
  private readonly gpt2Split: boolean;
  /** Bytes of every id that decodes (ordinary, decode-only and special tokens). */
  private readonly bytesById: readonly (Uint8Array | null)[];
  /** The same bytes packed for decode: token id's bytes are flat[start[id], start[id] + len[id]); len -1: no token. */
  private readonly flat: Uint8Array;
  private readonly start: Int32Array;
  private readonly len: Int32Array;
  /** Ids of tokens that decode but that encode never produces, with their bytes (GPT-2 files only). */
  private readonly decodeOnly: ReadonlyMap<number, Uint8Array>;
  private readonly specialRegexes = new Map<string, RegExp>();
  private readonly byteIds: Int32Array;

  /** Encode cache (pre-token -> ids), null when disabled. */
  private readonly cache: PieceCache | null;

  // Scratch.
  private bytes = new Uint8Array(1024);
  private ids = new Int32Array(1024);
  private out = new Int32Array(1024);
  private outLen = 0;
  private readonly onPiece = (a: number, b: number): void => this.piece(this.pieceText, a, b);
  private pieceText = '';

  private constructor(
    vocab: BpeVocab,
    specialTokens: Record<string, number>,
    options: { pattern: string; name?: string | undefined; cacheSize?: number | undefined; decodeOnly?: Map<number, Uint8Array> },
  ) {
    this.vocab = vocab;
    this.pattern = options.pattern;
    this.name = options.name;
    this.splitter = splitterFor(options.pattern);
    this.gpt2Split = options.pattern === GPT2_PATTERN;
    this.byteIds = vocab.byteIds;
    const cacheSize = options.cacheSize ?? DEFAULT_CACHE;
    if (!Number.isInteger(cacheSize) || cacheSize < 0) throw new Error(`cacheSize: expected an integer >= 0, got ${cacheSize}`);
    this.cache = cacheSize > 0 ? new PieceCache(cacheSize) : null;
    this.decodeOnly = options.decodeOnly ?? new Map();
    const bytesById: (Uint8Array | null)[] = vocab.tokens.slice();
    for (const [id, b] of this.decodeOnly) {
      if (bytesById[id] != null) throw new Error(`token id ${id} is used twice`);
      while (bytesById.length <= id) bytesById.push(null);
      bytesById[id] = b;
    }
    const special = new Map<string, number>();
    for (const [text, id] of Object.entries(specialTokens)) {
      if (text === '') throw new Error('special tokens: the empty string cannot be a special token');
      if (!Number.isInteger(id) || id < 0 || id >= 1 << 24) throw new Error(`special token ${JSON.stringify(text)}: id ${id} is not an integer in [0, 2^24)`);
      if (bytesById[id] != null) throw new Error(`special token ${JSON.stringify(text)}: id ${id} is already the id of another token`);
      while (bytesById.length <= id) bytesById.push(null);
      bytesById[id] = utf8Encode(text);
      special.set(text, id);
    }
    this.specialTokens = special;
    this.bytesById = bytesById;
    this.vocabSize = bytesById.length;
    let total = 0;
    for (const b of bytesById) total += b?.length ?? 0;
    this.flat = new Uint8Array(total);
    this.start = new Int32Array(this.vocabSize);
    this.len = new Int32Array(this.vocabSize).fill(-1);
    let o = 0;
    bytesById.forEach((b, id) => {
      if (b == null) return;
      this.flat.set(b, o);
      this.start[id] = o;
      this.len[id] = b.length;
      o += b.length;
    });
  }

  // ---------------------------------------------------------------------------------------------
  // Construction

  /**
   * GPT-2's tokenizer (50257 ids, `<|endoftext|>` = 50256), built from the ranks that js-tiktoken
   * ships (`js-tiktoken/ranks/gpt2`); no network access. Throws if js-tiktoken is not installed.
   */
  static gpt2(options: { cacheSize?: number } = {}): BpeTokenizer {
    if (gpt2Data === null) {
      let data: unknown;
      try {
        data = createRequire(import.meta.url)('js-tiktoken/ranks/gpt2');
      } catch (e) {
        throw new Error(
          `BpeTokenizer.gpt2() reads GPT-2's ranks from the package js-tiktoken (js-tiktoken/ranks/gpt2), ` +
            `which could not be loaded (${(e as Error).message}); install it with: npm install js-tiktoken`,
        );
      }
      const ranks = (isRecord(data) && isRecord(data['default']) ? data['default'] : data) as JsTiktokenRanks;
      const tokens = parseJsTiktokenRanks(ranks, 'js-tiktoken/ranks/gpt2');
      gpt2Data = { vocab: new BpeVocab(tokens, undefined, 'js-tiktoken/ranks/gpt2'), specialTokens: { ...ranks.special_tokens }, pattern: ranks.pat_str };
    }
    return new BpeTokenizer(gpt2Data.vocab, gpt2Data.specialTokens, { pattern: gpt2Data.pattern, name: 'gpt2', cacheSize: options.cacheSize });
  }

  /** From one of js-tiktoken's ranks objects (e.g. `import ranks from 'js-tiktoken/ranks/gpt2'`). */
  static fromJsTiktoken(ranks: JsTiktokenRanks, options: Omit<BpeTokenizerOptions, 'specialTokens' | 'pattern'> = {}): BpeTokenizer {
    if (!isRecord(ranks) || typeof ranks.pat_str !== 'string' || typeof ranks.bpe_ranks !== 'string' || !isRecord(ranks.special_tokens)) {
      throw new Error('fromJsTiktoken: expected {pat_str, special_tokens, bpe_ranks}, as exported by js-tiktoken/ranks/<name>');
    }
    const tokens = parseJsTiktokenRanks(ranks, 'fromJsTiktoken');
    return new BpeTokenizer(new BpeVocab(tokens, undefined, 'fromJsTiktoken'), ranks.special_tokens, { ...options, pattern: ranks.pat_str });
  }

  /**
   * From a tiktoken rank file (`*.tiktoken`): one token per line, `base64(token bytes) rank`; the rank
   * is both the id and the merge priority. Special tokens are not in the file: pass them (for GPT-2's
   * r50k/gpt2 file: `{'<|endoftext|>': 50256}`).
   */
  static fromTiktoken(text: string, options: BpeTokenizerOptions = {}): BpeTokenizer {
    const tokens: (Uint8Array | null)[] = [];
    const lines = text.split('\n');
    for (let l = 0; l < lines.length; l++) {
      const line = lines[l]!.trim();
      if (line === '') continue;
      const fields = line.split(/\s+/);
      const rank = Number(fields[1]);
      if (fields.length !== 2 || !Number.isInteger(rank) || rank < 0) {
        throw new Error(`tiktoken ranks, line ${l + 1}: expected "<base64> <rank>", got ${JSON.stringify(line.slice(0, 80))}`);
      }
      if (tokens[rank] != null) throw new Error(`tiktoken ranks, line ${l + 1}: rank ${rank} appears twice`);
      tokens[rank] = fromBase64(fields[0]!, `tiktoken ranks, line ${l + 1}`);
    }
    for (let i = 0; i < tokens.length; i++) if (tokens[i] === undefined) tokens[i] = null;
    return new BpeTokenizer(new BpeVocab(tokens, undefined, 'tiktoken ranks'), options.specialTokens ?? {}, {
      pattern: options.pattern ?? GPT2_PATTERN,
      name: options.name,
      cacheSize: options.cacheSize,
    });
  }

  /**
   * From GPT-2's original files: `encoder.json` (token in the byte-to-unicode alphabet -> id; a string
   * or the parsed object) and `vocab.bpe` (one merge `a b` per line after a `#version` line). Merge
   * line k gives its result the rank k (merges apply in file order); encoding then follows tiktoken's
   * rule (adjacent parts merge when their concatenation is a token), which gives GPT-2's ids.
   * `specialTokens` names the encoder entries that are special (default: `<|endoftext|>` if present).
   */
  static fromGpt2Files(
    encoder: string | Record<string, number>,
    merges: string,
    options: { specialTokens?: Iterable<string>; pattern?: string; name?: string; cacheSize?: number } = {},
  ): BpeTokenizer {
    let enc: unknown = encoder;
    if (typeof encoder === 'string') {
      try {
        enc = JSON.parse(encoder);
      } catch (e) {
        throw new Error(`encoder.json: not valid JSON (${(e as Error).message})`);
      }
    }
    if (!isRecord(enc)) throw new Error('encoder.json: expected an object mapping tokens to ids');
    const specialNames = new Set(options.specialTokens ?? (Object.hasOwn(enc, '<|endoftext|>') ? ['<|endoftext|>'] : []));
    const specials: Record<string, number> = {};
    const bytesById: (Uint8Array | null)[] = [];
    const idByUnicode = new Map<string, number>();
    for (const [tok, id] of Object.entries(enc)) {
      if (typeof id !== 'number' || !Number.isInteger(id) || id < 0) throw new Error(`encoder.json: token ${JSON.stringify(tok)} has id ${String(id)}, expected an integer >= 0`);
      if (specialNames.has(tok)) {
        specials[tok] = id;
        continue;
      }
      if (bytesById[id] != null) throw new Error(`encoder.json: id ${id} is used twice`);
      while (bytesById.length <= id) bytesById.push(null);
      bytesById[id] = gpt2UnicodeToBytes(tok, 'encoder.json');
      idByUnicode.set(tok, id);
    }
    for (const name of specialNames) if (specials[name] === undefined) throw new Error(`encoder.json: special token ${JSON.stringify(name)} is not in the encoder`);
    const ranks: (number | null)[] = bytesById.map((b, id) => (b !== null && b.length === 1 ? id : null));
    const lines = merges.split('\n');
    let k = 0;
    for (let l = 0; l < lines.length; l++) {
      const line = lines[l]!.replace(/\r$/, '');
      if (line === '' || (l === 0 && line.startsWith('#version'))) continue;
      const parts = line.split(' ');
      if (parts.length !== 2 || parts[0] === '' || parts[1] === '') throw new Error(`vocab.bpe, line ${l + 1}: expected "a b", got ${JSON.stringify(line)}`);
      const [a, b] = parts as [string, string];
      for (const p of [a, b, a + b]) {
        if (!idByUnicode.has(p)) throw new Error(`vocab.bpe, line ${l + 1}: ${JSON.stringify(p)} is not in encoder.json`);
      }
      const id = idByUnicode.get(a + b)!;
      if (ranks[id] === null) ranks[id] = 256 + k;
      k++;
    }
    const mergeable: (Uint8Array | null)[] = bytesById.map((b, id) => (ranks[id] === null ? null : b));
    const decodeOnly = new Map<number, Uint8Array>();
    bytesById.forEach((b, id) => {
      if (b !== null && ranks[id] === null) decodeOnly.set(id, b);
    });
    const vocab = new BpeVocab(mergeable, ranks.map((r) => r ?? 0), 'encoder.json + vocab.bpe');
    return new BpeTokenizer(vocab, specials, {
      pattern: options.pattern ?? GPT2_PATTERN,
      name: options.name,
      cacheSize: options.cacheSize,
      decodeOnly,
    });
  }

  /**
   * From token bytes by id (null for unused ids); merge rank = id unless `ranks` is given. All 256
   * single bytes must be tokens. This is what `train` and `fromJSON` build.
   */
  static fromTokens(tokens: readonly (Uint8Array | null)[], options: BpeTokenizerOptions & { ranks?: readonly (number | null)[] } = {}): BpeTokenizer {
    const what = 'BpeTokenizer.fromTokens';
    const ranks = options.ranks;
    const mergeable: (Uint8Array | null)[] = [];
    const decodeOnly = new Map<number, Uint8Array>();
    tokens.forEach((t, id) => {
      if (ranks !== undefined && t != null && ranks[id] === null) {
        decodeOnly.set(id, t);
        mergeable.push(null);
      } else mergeable.push(t ?? null);
    });
    const vocab = new BpeVocab(mergeable, ranks === undefined ? undefined : ranks.map((r, i) => r ?? i), what);
    return new BpeTokenizer(vocab, options.specialTokens ?? {}, {
      pattern: options.pattern ?? GPT2_PATTERN,
      name: options.name,
      cacheSize: options.cacheSize,
      decodeOnly,
    });
  }

  /** Inverse of `toJSON()`; the message of a thrown Error names the offending field. */
  static fromJSON(json: unknown, options: { cacheSize?: number } = {}): BpeTokenizer {
    const fail = (msg: string): never => {
      throw new Error(`BPE tokenizer JSON: ${msg}`);
    };
    if (typeof json === 'string') {
      try {
        json = JSON.parse(json);
      } catch (e) {
        fail(`not valid JSON (${(e as Error).message})`);
      }
    }
    if (!isRecord(json)) return fail('expected an object');
    if (json['type'] !== 'bpe') fail(`type is ${JSON.stringify(json['type'])}, expected "bpe"`);
    if (json['version'] !== 1) fail(`version is ${JSON.stringify(json['version'])}, expected 1`);
    const pattern = json['pattern'];
    if (typeof pattern !== 'string') return fail('pattern must be a string');
    const name = json['name'];
    if (name !== undefined && typeof name !== 'string') fail('name must be a string');
    const rawTokens = json['tokens'];
    if (!Array.isArray(rawTokens)) return fail('tokens must be an array of base64 strings (or null)');
    const tokens = rawTokens.map((t: unknown, id: number): Uint8Array | null => {
      if (t === null) return null;
      if (typeof t !== 'string') return fail(`tokens[${id}] must be a base64 string or null`);
      return fromBase64(t, `BPE tokenizer JSON: tokens[${id}]`);
    });
    let ranks: (number | null)[] | undefined;
    const rawRanks = json['ranks'];
    if (rawRanks !== undefined) {
      if (!Array.isArray(rawRanks) || rawRanks.length !== tokens.length) return fail('ranks must be an array as long as tokens');
      ranks = rawRanks.map((r: unknown, id: number): number | null => {
        if (r === null) return null;
        if (typeof r !== 'number' || !Number.isInteger(r) || r < 0) return fail(`ranks[${id}] must be an integer >= 0 or null`);
        return r;
      });
    }
    const rawSpecial = json['specialTokens'];
    if (!isRecord(rawSpecial)) return fail('specialTokens must be an object mapping text to id');
    const specialTokens: Record<string, number> = {};
    for (const [text, id] of Object.entries(rawSpecial)) {
      if (typeof id !== 'number') return fail(`specialTokens[${JSON.stringify(text)}] must be a number`);
      specialTokens[text] = id;
    }
    return BpeTokenizer.fromTokens(tokens, {
      specialTokens,
      pattern,
      name: name as string | undefined,
      cacheSize: options.cacheSize,
      ...(ranks === undefined ? {} : { ranks }),
    });
  }

  /**
   * Trains a byte-level BPE on a corpus (one string, or many: documents are never merged across).
   * `vocabSize` counts everything: the 256 byte tokens (ids 0..255 = byte values), the learned merges
   * (ids 256.., in the order learned) and the special tokens (the last ids, in the order given).
   * Special tokens occurring in the corpus are cut out before counting. Pre-tokenisation uses GPT-2's
   * pattern unless `pattern` is given. Ties between equally frequent pairs go to the pair with the
   * smaller left id, then the smaller right id (deterministic). Training stops early, with a smaller
   * vocabulary, when no pair occurs `minFrequency` times (default 2).
   */
  static train(corpus: string | Iterable<string>, vocabSize: number, options: TrainBpeOptions & { name?: string; cacheSize?: number } = {}): BpeTokenizer {
    const result = trainBpe(corpus, vocabSize, options);
    const specialTokens: Record<string, number> = {};
    (options.specialTokens ?? []).forEach((s, i) => {
      specialTokens[s] = result.tokens.length + i;
    });
    return BpeTokenizer.fromTokens(result.tokens, {
      specialTokens,
      pattern: options.pattern ?? GPT2_PATTERN,
      name: options.name,
      cacheSize: options.cacheSize,
    });
  }

  // ---------------------------------------------------------------------------------------------
  // Encoding

  /**
   * Encodes text. Special tokens in the text are an error unless allowed (`allowedSpecial`) or
   * explicitly not disallowed (`disallowedSpecial`), as in tiktoken. Lone surrogates (which UTF-8 cannot
   * represent) are encoded as U+FFFD, as TextEncoder does, so decode(encode(s)) differs from s exactly
   * there.
   */
  encode(text: string, options: EncodeOptions = {}): Int32Array {
    const allowed = this.resolveSpecial(options.allowedSpecial ?? 'none', 'allowedSpecial');
    const disallowedOpt = options.disallowedSpecial ?? 'all';
    const disallowed =
      disallowedOpt === 'all' ? [...this.specialTokens.keys()].filter((s) => !allowed.has(s)) : [...this.resolveSpecial(disallowedOpt, 'disallowedSpecial')];
    let firstAt = -1;
    let first = '';
    for (const s of disallowed) {
      const at = text.indexOf(s);
      if (at >= 0 && (firstAt < 0 || at < firstAt)) {
        firstAt = at;
        first = s;
      }
    }
    if (firstAt >= 0) {
      throw new Error(
        `encode: the text contains the special token ${JSON.stringify(first)} at index ${firstAt}, which is not allowed; ` +
          `pass {allowedSpecial: 'all'} (or a set naming it) to encode it as its id, or use encodeOrdinary() to encode it as plain text`,
      );
    }
    this.outLen = 0;
    if (allowed.size === 0) {
      this.encodeRange(text, 0, text.length);
    } else {
      const re = this.specialRegex(allowed);
      let start = 0;
      re.lastIndex = 0;
      for (let m = re.exec(text); m !== null; m = re.exec(text)) {
        this.encodeRange(text, start, m.index);
        this.emit(this.specialTokens.get(m[0])!);
        start = m.index + m[0].length;
      }
      this.encodeRange(text, start, text.length);
    }
    return this.takeOutput();
  }

  /** Encodes text with special tokens treated as ordinary text. */
  encodeOrdinary(text: string): Int32Array {
    this.outLen = 0;
    this.encodeRange(text, 0, text.length);
    return this.takeOutput();
  }

  /** Encodes each text (same options for all). */
  encodeBatch(texts: Iterable<string>, options: EncodeOptions = {}): Int32Array[] {
    const out: Int32Array[] = [];
    for (const t of texts) out.push(this.encode(t, options));
    return out;
  }

  /** Id of a special token, or of the ordinary token with exactly these bytes / this text; undefined if none. */
  tokenId(token: string | Uint8Array): number | undefined {
    if (typeof token === 'string') {
      const s = this.specialTokens.get(token);
      if (s !== undefined) return s;
      token = utf8Encode(token);
    }
    const id = this.vocab.lookup(token, 0, token.length);
    return id >= 0 ? id : undefined;
  }

  /** Bytes of a token (a copy). */
  tokenBytes(id: number): Uint8Array {
    return this.bytesOf(id, 0).slice();
  }

  /** Drops the encode cache (it is bounded anyway). */
  clearCache(): void {
    this.cache?.clear();
  }

  private resolveSpecial(set: SpecialTokenSet, what: string): Set<string> {
    if (set === 'all') return new Set(this.specialTokens.keys());
    if (set === 'none') return new Set();
    if (typeof set === 'string') throw new Error(`${what}: expected 'all', 'none' or a collection of special tokens, got the string ${JSON.stringify(set)}`);
    const out = new Set<string>();
    for (const s of set) {
      if (!this.specialTokens.has(s)) {
        throw new Error(`${what}: ${JSON.stringify(s)} is not a special token of this tokenizer (it has ${JSON.stringify([...this.specialTokens.keys()])})`);
      }
      out.add(s);
    }
    return out;
  }

  private specialRegex(allowed: Set<string>): RegExp {
    const names = [...allowed].sort((a, b) => b.length - a.length || (a < b ? -1 : a > b ? 1 : 0));
    const key = names.join('\u0000');
    let re = this.specialRegexes.get(key);
    if (re === undefined) {
      re = new RegExp(names.map(escapeRegExp).join('|'), 'g'); // longest first: the longest special token wins
      if (this.specialRegexes.size > 64) this.specialRegexes.clear();
      this.specialRegexes.set(key, re);
    }
    return re;
  }

  /** The ids encoded so far, copied; a large scratch buffer is let go rather than kept. */
  private takeOutput(): Int32Array {
    const ids = this.out.slice(0, this.outLen);
    if (this.out.length > 1 << 20) this.out = new Int32Array(1024);
    this.outLen = 0;
    return ids;
  }

  private emit(id: number): void {
    if (this.outLen === this.out.length) this.growOut(1);
    this.out[this.outLen++] = id;
  }

  private growOut(extra: number): void {
    let cap = this.out.length * 2;
    while (cap < this.outLen + extra) cap *= 2;
    const bigger = new Int32Array(cap);
    bigger.set(this.out.subarray(0, this.outLen));
    this.out = bigger;
  }

  /** Appends the ids of the ordinary text text[start, end). */
  private encodeRange(text: string, start: number, end: number): void {
    if (start >= end) return;
    if (this.out.length < this.outLen + ((end - start) >> 1)) this.growOut((end - start) >> 1);
    if (!this.gpt2Split) {
      this.pieceText = text;
      this.splitter.split(text, start, end, this.onPiece);
      this.pieceText = '';
      return;
    }
    const cache = this.cache;
    const byteIds = this.byteIds;
    let i = start;
    while (i < end) {
      const j = gpt2PieceEnd(text, i, end);
      if (j === i + 1) {
        const c = text.charCodeAt(i);
        if (c < 128) {
          if (this.outLen === this.out.length) this.growOut(1);
          this.out[this.outLen++] = byteIds[c]!;
          i = j;
          continue;
        }
      }
      if (cache !== null) {
        const h = PieceCache.hash(text, i, j);
        const v = cache.get(text, i, j, h);
        if (v >= 0) {
          if (this.outLen === this.out.length) this.growOut(1);
          this.out[this.outLen++] = v;
        } else if (v !== MISS) {
          this.emitPooled(cache.pool, -v - 1);
        } else {
          this.encodeMiss(text, i, j, h);
        }
      } else {
        this.encodeMiss(text, i, j, 0);
      }
      i = j;
    }
  }

  /** One pre-token (the path for patterns other than GPT-2's). */
  private piece(text: string, a: number, b: number): void {
    const cache = this.cache;
    if (cache === null) return this.encodeMiss(text, a, b, 0);
    const h = PieceCache.hash(text, a, b);
    const v = cache.get(text, a, b, h);
    if (v >= 0) this.emit(v);
    else if (v !== MISS) this.emitPooled(cache.pool, -v - 1);
    else this.encodeMiss(text, a, b, h);
  }

  private emitPooled(pool: Int32Array, offset: number): void {
    const n = pool[offset]!;
    if (this.outLen + n > this.out.length) this.growOut(n);
    const out = this.out;
    let o = this.outLen;
    for (let k = 1; k <= n; k++) out[o++] = pool[offset + k]!;
    this.outLen = o;
  }

  /** BPE of text[a, b) (hash h), appended to the output and cached. */
  private encodeMiss(text: string, a: number, b: number, h: number): void {
    if (this.bytes.length < 3 * (b - a)) this.bytes = new Uint8Array(6 * (b - a));
    const nb = utf8EncodeInto(text, a, b, this.bytes, 0);
    if (this.ids.length < nb) this.ids = new Int32Array(2 * nb);
    const ids = this.ids;
    const n = this.vocab.encode(this.bytes, nb, ids);
    if (this.outLen + n > this.out.length) this.growOut(n);
    this.out.set(ids.subarray(0, n), this.outLen);
    this.outLen += n;
    if (this.cache !== null && b - a <= MAX_CACHED_PIECE) this.cache.set(text, a, b, h, ids, n);
  }

  // ---------------------------------------------------------------------------------------------
  // Decoding

  private bytesOf(id: number, at: number): Uint8Array {
    const b = Number.isInteger(id) && id >= 0 ? this.bytesById[id] : undefined;
    if (b == null) throw new Error(`decode: id ${id} at position ${at} is not a token of this vocabulary (vocabSize ${this.vocabSize})`);
    return b;
  }

  /** The bytes of a sequence of ids (special tokens as their UTF-8 text). */
  decodeBytes(ids: ArrayLike<number>): Uint8Array {
    const lens = this.len;
    const starts = this.start;
    const flat = this.flat;
    let n = 0;
    for (let i = 0; i < ids.length; i++) {
      const l = lens[ids[i]!]; // undefined for ids out of range or not integers
      if (l === undefined || l < 0) this.bytesOf(ids[i]!, i); // throws
      n += l!;
    }
    const out = new Uint8Array(n);
    let o = 0;
    for (let i = 0; i < ids.length; i++) {
      const id = ids[i]!;
      let s = starts[id]!;
      const e = s + lens[id]!;
      while (s < e) out[o++] = flat[s++]!;
    }
    return out;
  }

  /**
   * The text of a sequence of ids. Bytes are joined first, so characters split across tokens come out
   * whole; a sequence that is not valid UTF-8 (a truncated character at the end, say) decodes to U+FFFD
   * there, as TextDecoder does. A leading U+FEFF is kept.
   */
  decode(ids: ArrayLike<number>): string {
    return new TextDecoder('utf-8', { ignoreBOM: true }).decode(this.decodeBytes(ids));
  }

  /** A streaming decoder (see TokenDecoder): concatenating every push() and the final flush() gives decode(all ids). */
  decoder(): TokenDecoder {
    const td = new TextDecoder('utf-8', { ignoreBOM: true });
    let at = 0;
    return {
      push: (id: number): string => td.decode(this.bytesOf(id, at++), { stream: true }),
      flush: (): string => td.decode(),
    };
  }

  // ---------------------------------------------------------------------------------------------
  // Serialisation

  /** JSON form (ranks as base64 strings), for checkpoint metadata; `fromJSON` reads it back. */
  toJSON(): BpeTokenizerJSON {
    const specialIds = new Set(this.specialTokens.values());
    const tokens: (string | null)[] = [];
    for (let id = 0; id < this.vocabSize; id++) {
      const b = this.bytesById[id];
      tokens.push(b == null || specialIds.has(id) ? null : toBase64(b));
    }
    const json: BpeTokenizerJSON = { type: 'bpe', version: 1, pattern: this.pattern, tokens, specialTokens: Object.fromEntries(this.specialTokens) };
    if (this.name !== undefined) json.name = this.name;
    if (!this.vocab.ranksAreIds || this.decodeOnly.size > 0) {
      json.ranks = tokens.map((t, id) => (t === null || this.decodeOnly.has(id) ? null : this.vocab.ranks[id]!));
    }
    return json;
  }

  /** A tiktoken rank file (`base64 rank` per line, by rank); special tokens are not part of it. */
  toTiktoken(): string {
    if (!this.vocab.ranksAreIds || this.decodeOnly.size > 0) throw new Error('toTiktoken: this vocabulary has merge ranks that differ from its ids, which a tiktoken file cannot express');
    const lines: string[] = [];
    this.vocab.tokens.forEach((t, id) => {
      if (t != null) lines.push(`${toBase64(t)} ${id}`);
    });
    return lines.join('\n') + '\n';
  }

  /**
   * GPT-2's file pair: `encoder` (the object to write as encoder.json, special tokens included) and
   * `merges` (the text of vocab.bpe). Each multi-byte token's merge is recovered by running BPE on its
   * bytes with the tokens of lower rank; throws if that does not end in exactly two parts.
   */
  toGpt2Files(): { encoder: Record<string, number>; merges: string } {
    const encoder: Record<string, number> = {};
    const order: number[] = [];
    this.bytesById.forEach((b, id) => {
      if (b == null) return;
      if (this.vocab.tokens[id] != null && b.length > 1) order.push(id);
    });
    const specialIds = new Set(this.specialTokens.values());
    for (let id = 0; id < this.bytesById.length; id++) {
      const b = this.bytesById[id];
      if (b == null) continue;
      encoder[specialIds.has(id) ? new TextDecoder().decode(b) : bytesToGpt2Unicode(b)] = id;
    }
    const ranks = this.vocab.ranks;
    order.sort((a, b) => ranks[a]! - ranks[b]!);
    const lines = ['#version: 0.2'];
    for (const id of order) {
      const parts = this.vocab.encodeBelowRank(this.vocab.tokens[id]!, ranks[id]!);
      if (parts.length !== 2) throw new Error(`toGpt2Files: token ${id} is not the merge of two tokens of lower rank`);
      lines.push(`${bytesToGpt2Unicode(this.vocab.tokens[parts[0]!]!)} ${bytesToGpt2Unicode(this.vocab.tokens[parts[1]!]!)}`);
    }
    return { encoder, merges: lines.join('\n') + '\n' };
  }
}
