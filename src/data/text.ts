// Text datasets for language-model training (nanoGPT's prepare.py + get_batch, without Python).
//
// A `TextDataset` is a file, or a folder of text files, tokenized ONCE into a binary token cache:
//
//   <cacheDir>/<name>-<sourceKey>-<tokenizerKey>.tokens   little-endian uint16 (vocabSize <= 65535)
//                                                         or uint32 ids, the files' tokens in order
//   <cacheDir>/<name>-<sourceKey>-<tokenizerKey>.json     the sidecar (TextCacheSidecar): source paths,
//                                                         sizes, mtimes, tokenizer fingerprint, dtype,
//                                                         token count, split
//
// `cacheDir` defaults to `<dir>/.rt-cache/`, where <dir> is the source folder (or the folder holding
// the source file). The next open with the same source and tokenizer reuses the cache when the same
// files are selected, each with the recorded size and mtime (as make does: an edit that keeps both
// goes unnoticed; pass `rebuild: true`), and the tokenizer's JSON hashes to the recorded fingerprint;
// otherwise it rebuilds it. `sourceKey` hashes the source path and the file selection, `tokenizerKey`
// the tokenizer, so caches for different tokenizers live side by side. A rebuild writes a temporary
// file and renames it into place, so a crash or a concurrent open never sees half a cache.
//
// Folder sources: files ending in `extensions` (default .txt and .md), or those `filter` accepts,
// found recursively in code-unit order of their names (so the order is stable); names starting with
// '.' (hence the default cache folder) are skipped, and symbolic links to folders are not followed.
//
// Tokenizing in chunks. No file becomes one JavaScript string: a file is read `chunkBytes` (default
// 4 MiB) at a time, decoded as streaming UTF-8 (a code point split between reads is carried over; a
// BOM at the start of a file is dropped; invalid bytes become U+FFFD), cut at a boundary in the second
// half of the decoded text, and each piece is encoded on its own and streamed to the cache file; the
// rest is carried into the next piece. Files are encoded separately too (no token spans two files),
// with an optional `separator` between them. Boundaries, in order of preference (rightmost first):
//   1. `x\ny` or `x y` (x, y not whitespace): cut after the newline / before the space;
//   2. after any whitespace character;
//   3. a hard cut at the end of the decoded text (only for a chunk with no whitespace in its second half).
// For a character tokenizer the result is exactly encode(whole text), whatever the boundary. For a
// tokenizer that merges across a boundary it can differ from encoding the whole file in one call;
// for byte-level BPE with GPT-2's pre-tokenisation, boundaries of kind 1 fall between pre-tokens,
// so they are exact as well; kinds 2 and 3 may split a run of whitespace or a word differently.
// `chunkBytes` is part of the cache's identity.
//
// Reading. The cache is never loaded whole unless it is small: at most `inMemoryMaxBytes` (default
// 64 MiB) of tokens are read into one typed array; larger caches stay on disk and every batch window
// is one positional fs.readSync into a small buffer (B reads of (N+1) tokens per batch).
//
// Split (nanoGPT's shakespeare_char): the first floor(n * (1 - valFraction)) tokens are `train`, the
// rest `val`. A window of N + 1 tokens starts uniformly in its split and never crosses the boundary.
//
// Batch (random draws, per row in order: one rng.int(lo, hi) for the window start):
//   tokens  = data[i : i + N],  targets = data[i + 1 : i + N + 1],  positions = N.

import { createHash, randomBytes } from 'node:crypto';
import * as fs from 'node:fs';
import { mkdir, open as openFile, readFile, readdir, rename, stat, unlink, writeFile, type FileHandle } from 'node:fs/promises';
import { endianness } from 'node:os';
import * as path from 'node:path';
import type { Batch, TrainData } from '../train/data.js';
import type { Rng } from './rng.js';

/** What a text dataset needs from a tokenizer (CharTokenizer and BpeTokenizer both fit). */
export interface TextTokenizer {
  encode(text: string): Int32Array | number[];
  readonly vocabSize: number;
  /** Serialised form; its JSON text is hashed into the cache's tokenizer fingerprint. */
  toJSON(): unknown;
}

export type TextSplit = 'train' | 'val';
export type TokenDtype = 'uint16' | 'uint32';

/** Progress of `TextDataset.open`. */
export interface TextDatasetProgress {
  /** scan: files listed; tokenize: after each chunk; reuse: the cache is valid; done: ready. */
  phase: 'scan' | 'tokenize' | 'reuse' | 'done';
  /** The file being tokenized (phase 'tokenize'). */
  file?: string;
  filesDone: number;
  filesTotal: number;
  /** Source bytes read so far / in all. */
  bytesDone: number;
  bytesTotal: number;
  /** Tokens written so far (the total once done). */
  tokens: number;
}

export interface TextDatasetOptions {
  /** A text file, or a folder searched recursively. */
  source: string;
  tokenizer: TextTokenizer;
  /** Window length N: a batch row has N input tokens and N next-token targets. */
  seqLen: number;
  /** Fraction of the tokens (the last ones) held out for validation, in [0, 1) (default 0.1). */
  valFraction?: number;
  /** Where the cache goes (default `<dir>/.rt-cache/`). */
  cacheDir?: string;
  /**
   * Folder sources: the file name endings to take (case-insensitive, default ['.txt', '.md']).
   * Ignored when `filter` is given.
   */
  extensions?: readonly string[];
  /**
   * Folder sources: takes a file when it returns true (`relPath` uses '/' separators). Its source
   * text is hashed into the cache key, so changing it gives a new cache.
   */
  filter?: (relPath: string, absPath: string) => boolean;
  /** Tokens between two files: a text (encoded with the tokenizer) or ids (e.g. an end-of-text id). */
  separator?: string | readonly number[];
  /** Bytes of source read and tokenized at a time (default 4 MiB, at least 64). */
  chunkBytes?: number;
  /** The token cache is read into memory when it has at most this many bytes (default 64 MiB). */
  inMemoryMaxBytes?: number;
  /** Rebuild the cache even if it is valid. */
  rebuild?: boolean;
  onProgress?: (p: TextDatasetProgress) => void;
}

/** One source file as recorded in the sidecar. */
export interface TextCacheFile {
  /** Path relative to the source folder ('/' separators); the file name for a file source. */
  path: string;
  size: number;
  mtimeMs: number;
  tokens: number;
}

/** The JSON sidecar next to the token file. */
export interface TextCacheSidecar {
  format: typeof TEXT_CACHE_FORMAT;
  version: number;
  source: string;
  sourceKind: 'file' | 'dir';
  /** 'file', 'ext:.md,.txt' or 'filter:<hash of its source>'. */
  selection: string;
  files: TextCacheFile[];
  tokenizer: { kind: string; vocabSize: number; fingerprint: string };
  separator: number[];
  chunkBytes: number;
  dtype: TokenDtype;
  /** Token count and the token file's size in bytes. */
  tokens: number;
  bytes: number;
  /** The token file's name (in the same folder). */
  tokensFile: string;
  /** The split of the last open: train = [0, index), val = [index, tokens). */
  split: { valFraction: number; index: number; train: number; val: number };
  builtAt: string;
  buildMs: number;
}

/** A batch with the absolute token offset of every row's window. */
export interface TextBatch extends Batch {
  /** starts[r]: tokens of row r are data[starts[r] : starts[r] + seqLen]. */
  starts: number[];
}

export const TEXT_CACHE_FORMAT = 'recurrent-transformer/text-tokens';
export const TEXT_CACHE_VERSION = 1;
export const DEFAULT_CHUNK_BYTES = 4 * 1024 * 1024;
export const DEFAULT_IN_MEMORY_MAX_BYTES = 64 * 1024 * 1024;
export const DEFAULT_VAL_FRACTION = 0.1;
export const DEFAULT_TEXT_EXTENSIONS: readonly string[] = ['.txt', '.md'];
export const DEFAULT_CACHE_DIR_NAME = '.rt-cache';
const MIN_CHUNK_BYTES = 64;
const WRITE_TOKENS = 1 << 20;
const MAX_VOCAB = 2 ** 32;

// ---------------------------------------------------------------------------------------------
// Helpers

function sha256(text: string): string {
  return createHash('sha256').update(text).digest('hex');
}

/** SHA-256 of the tokenizer's JSON text: the identity of a tokenizer in the cache. */
export function tokenizerFingerprint(tokenizer: TextTokenizer): string {
  const json = JSON.stringify(tokenizer.toJSON());
  if (typeof json !== 'string') throw new Error('TextDataset: tokenizer.toJSON() returned something JSON.stringify cannot serialise');
  return sha256(json);
}

/** The tokenizer's `type` from its JSON ('char', 'bpe'), else its class name. */
function tokenizerKind(tokenizer: TextTokenizer): string {
  const json = tokenizer.toJSON();
  if (typeof json === 'object' && json !== null) {
    const type = (json as { type?: unknown }).type;
    if (typeof type === 'string') return type;
  }
  const name = (tokenizer as { constructor?: { name?: unknown } }).constructor?.name;
  return typeof name === 'string' && name !== '' && name !== 'Object' ? name : 'unknown';
}

function isRecord(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

function errno(e: unknown): string | undefined {
  return isRecord(e) && typeof e['code'] === 'string' ? e['code'] : undefined;
}

function checkInt(name: string, v: unknown, min: number): number {
  if (typeof v !== 'number' || !Number.isSafeInteger(v) || v < min) {
    throw new RangeError(`TextDataset: ${name} must be an integer >= ${min}, got ${String(v)}`);
  }
  return v;
}

/** JavaScript's \s for one UTF-16 code unit (the only non-BMP whitespace: none). */
function isSpace(c: number): boolean {
  if (c <= 32) return c === 32 || (c >= 9 && c <= 13);
  if (c < 0xa0) return false;
  return (
    c === 0xa0 || c === 0x1680 || (c >= 0x2000 && c <= 0x200a) || c === 0x2028 || c === 0x2029 ||
    c === 0x202f || c === 0x205f || c === 0x3000 || c === 0xfeff
  );
}

/**
 * Where to cut a decoded chunk `s` (the piece s[0:p] is encoded now, s[p:] carried over): the rightmost
 * boundary `x\n|y` or `x| y` (x, y not whitespace) in the second half, else the rightmost cut after a
 * whitespace character there, else s.length (not between the halves of a surrogate pair).
 */
export function chunkSplitPoint(s: string): number {
  const n = s.length;
  let afterSpace = -1;
  for (let p = n - 1; p > n >> 1; p--) {
    const left = s.charCodeAt(p - 1);
    const right = s.charCodeAt(p);
    if (left === 10) {
      if (!isSpace(right) && p >= 2 && !isSpace(s.charCodeAt(p - 2))) return p;
      if (afterSpace < 0) afterSpace = p;
    } else if (right === 32) {
      if (!isSpace(left) && p + 1 < n && !isSpace(s.charCodeAt(p + 1))) return p;
    } else if (afterSpace < 0 && isSpace(left)) {
      afterSpace = p;
    }
  }
  if (afterSpace > 0) return afterSpace;
  if (n >= 2) {
    const last = s.charCodeAt(n - 1);
    if (last >= 0xd800 && last <= 0xdbff) return n - 1;
  }
  return n;
}

interface SourceFile {
  abs: string;
  rel: string;
  size: number;
  mtimeMs: number;
}

function toPosix(rel: string): string {
  return path.sep === '/' ? rel : rel.split(path.sep).join('/');
}

/** Files under `dir`, recursively, in code-unit order of their names; hidden entries and the cache folder skipped. */
async function listFiles(dir: string, take: (rel: string, abs: string) => boolean, skipDir: string): Promise<SourceFile[]> {
  const out: SourceFile[] = [];
  const walk = async (d: string): Promise<void> => {
    const entries = await readdir(d, { withFileTypes: true });
    entries.sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
    for (const e of entries) {
      if (e.name.startsWith('.')) continue;
      const abs = path.join(d, e.name);
      if (abs === skipDir) continue;
      if (e.isDirectory()) {
        await walk(abs);
        continue;
      }
      // Regular files, and symbolic links to regular files (links to folders are not followed).
      if (!e.isFile() && !e.isSymbolicLink()) continue;
      const rel = toPosix(path.relative(dir, abs));
      if (!take(rel, abs)) continue;
      let st: fs.Stats;
      try {
        st = await stat(abs);
      } catch (err) {
        if (e.isSymbolicLink() && errno(err) === 'ENOENT') continue; // dangling link
        throw err;
      }
      if (!st.isFile()) continue;
      out.push({ abs, rel, size: st.size, mtimeMs: st.mtimeMs });
    }
  };
  await walk(dir);
  return out;
}

/** Buffers ids (checked against the vocabulary) and appends them to the token file. */
class TokenWriter {
  private readonly buf: Uint16Array | Uint32Array;
  private n = 0;
  total = 0;

  constructor(
    private readonly fh: FileHandle,
    dtype: TokenDtype,
    private readonly vocabSize: number,
  ) {
    this.buf = dtype === 'uint16' ? new Uint16Array(WRITE_TOKENS) : new Uint32Array(WRITE_TOKENS);
  }

  async write(ids: ArrayLike<number>, where: () => string): Promise<void> {
    const buf = this.buf;
    const vocab = this.vocabSize;
    let i = 0;
    while (i < ids.length) {
      const take = Math.min(ids.length - i, buf.length - this.n);
      for (let k = 0; k < take; k++) {
        const id = ids[i + k]!;
        if (id >>> 0 !== id || id >= vocab) {
          throw new Error(`TextDataset: the tokenizer returned id ${String(id)} (${where()}), outside [0, vocabSize = ${vocab})`);
        }
        buf[this.n + k] = id;
      }
      this.n += take;
      this.total += take;
      i += take;
      if (this.n === buf.length) await this.flush();
    }
  }

  async flush(): Promise<void> {
    const bytes = new Uint8Array(this.buf.buffer, 0, this.n * this.buf.BYTES_PER_ELEMENT);
    let off = 0;
    while (off < bytes.length) {
      const { bytesWritten } = await this.fh.write(bytes, off, bytes.length - off);
      off += bytesWritten;
    }
    this.n = 0;
  }
}

async function readSidecar(file: string): Promise<TextCacheSidecar | null> {
  try {
    const parsed: unknown = JSON.parse(await readFile(file, 'utf8'));
    return isRecord(parsed) && parsed['format'] === TEXT_CACHE_FORMAT ? (parsed as unknown as TextCacheSidecar) : null;
  } catch {
    return null; // missing or unreadable: rebuild
  }
}

async function writeJsonAtomic(file: string, value: unknown): Promise<void> {
  const tmp = `${file}.tmp-${process.pid}-${randomBytes(4).toString('hex')}`;
  await writeFile(tmp, JSON.stringify(value, null, 2) + '\n');
  await rename(tmp, file);
}

/** Why a sidecar does not describe a cache for this source and tokenizer (null: it does). */
async function staleReason(
  sc: TextCacheSidecar,
  want: Pick<TextCacheSidecar, 'source' | 'sourceKind' | 'selection' | 'tokenizer' | 'separator' | 'chunkBytes' | 'dtype'>,
  files: SourceFile[],
  tokensPath: string,
): Promise<string | null> {
  if (sc.version !== TEXT_CACHE_VERSION) return `cache format version ${String(sc.version)}`;
  if (sc.source !== want.source || sc.sourceKind !== want.sourceKind || sc.selection !== want.selection) return 'a different source';
  if (!isRecord(sc.tokenizer) || sc.tokenizer.fingerprint !== want.tokenizer.fingerprint || sc.tokenizer.vocabSize !== want.tokenizer.vocabSize) {
    return 'a different tokenizer';
  }
  if (JSON.stringify(sc.separator) !== JSON.stringify(want.separator)) return 'a different separator';
  if (sc.chunkBytes !== want.chunkBytes) return 'a different chunkBytes';
  if (sc.dtype !== want.dtype) return 'a different dtype';
  if (!Array.isArray(sc.files) || sc.files.length !== files.length) return 'a different set of files';
  for (let i = 0; i < files.length; i++) {
    const a = sc.files[i]!;
    const b = files[i]!;
    if (!isRecord(a) || a.path !== b.rel) return 'a different set of files';
    if (a.size !== b.size || a.mtimeMs !== b.mtimeMs) return `${b.rel} changed`;
  }
  const bpt = want.dtype === 'uint16' ? 2 : 4;
  if (!Number.isSafeInteger(sc.tokens) || sc.bytes !== sc.tokens * bpt) return 'a damaged sidecar';
  try {
    const st = await stat(tokensPath);
    if (st.size !== sc.bytes) return 'a token file of the wrong size';
  } catch {
    return 'no token file';
  }
  return null;
}

// ---------------------------------------------------------------------------------------------
// The dataset

/**
 * A tokenized text corpus with random next-token windows, for the Trainer.
 *
 * ```ts
 * const tok = CharTokenizer.fromText(readFileSync('input.txt', 'utf8'));
 * const data = await TextDataset.open({ source: 'input.txt', tokenizer: tok, seqLen: 256 });
 * data.tokens('train'); // 1003854 for tiny Shakespeare
 * const b = data.batch(rng, 64, 'train', {}); // tokens [64, 256], targets [64, 256]
 * ```
 */
export class TextDataset implements TrainData {
  /** Absolute path of the source file or folder. */
  readonly source: string;
  readonly sourceKind: 'file' | 'dir';
  readonly seqLen: number;
  readonly valFraction: number;
  readonly vocabSize: number;
  readonly dtype: TokenDtype;
  readonly cacheDir: string;
  /** The token file and its sidecar. */
  readonly cachePath: string;
  readonly sidecarPath: string;
  /** True when this open reused a valid cache, false when it tokenized the source. */
  readonly fromCache: boolean;
  /** Why the cache was (re)built: 'no cache', 'rebuild requested', 'src/a.txt changed', ...; null when reused. */
  readonly rebuildReason: string | null;
  /** Milliseconds spent tokenizing (0 when the cache was reused). */
  readonly buildMs: number;
  readonly tokenizerKind: string;
  readonly tokenizerFingerprint: string;
  /** The source files in cache order, with their token counts. */
  readonly files: readonly TextCacheFile[];
  /** Token ids between two files. */
  readonly separator: readonly number[];
  readonly chunkBytes: number;
  /** First validation token: train = [0, splitIndex), val = [splitIndex, totalTokens). */
  readonly splitIndex: number;
  readonly totalTokens: number;

  private readonly selection: string;
  private data: Uint16Array | Uint32Array | null;
  private fd: number | null;
  private closed = false;
  private readonly scratch: Uint8Array;
  private readonly window: Uint16Array | Uint32Array;

  private constructor(init: {
    sc: TextCacheSidecar;
    seqLen: number;
    valFraction: number;
    cacheDir: string;
    cachePath: string;
    sidecarPath: string;
    fromCache: boolean;
    rebuildReason: string | null;
    buildMs: number;
    data: Uint16Array | Uint32Array | null;
    fd: number | null;
  }) {
    const sc = init.sc;
    this.source = sc.source;
    this.sourceKind = sc.sourceKind;
    this.selection = sc.selection;
    this.seqLen = init.seqLen;
    this.valFraction = init.valFraction;
    this.vocabSize = sc.tokenizer.vocabSize;
    this.dtype = sc.dtype;
    this.cacheDir = init.cacheDir;
    this.cachePath = init.cachePath;
    this.sidecarPath = init.sidecarPath;
    this.fromCache = init.fromCache;
    this.rebuildReason = init.rebuildReason;
    this.buildMs = init.buildMs;
    this.tokenizerKind = sc.tokenizer.kind;
    this.tokenizerFingerprint = sc.tokenizer.fingerprint;
    this.files = sc.files;
    this.separator = sc.separator;
    this.chunkBytes = sc.chunkBytes;
    this.splitIndex = sc.split.index;
    this.totalTokens = sc.tokens;
    this.data = init.data;
    this.fd = init.fd;
    const bpt = sc.dtype === 'uint16' ? 2 : 4;
    this.scratch = new Uint8Array(init.data === null ? (init.seqLen + 1) * bpt : 0);
    this.window = sc.dtype === 'uint16' ? new Uint16Array(this.scratch.buffer) : new Uint32Array(this.scratch.buffer);
  }

  /**
   * Opens a dataset: lists the source files, reuses the token cache if it is valid, otherwise
   * tokenizes the source into it (chunk by chunk, streaming to disk), then checks that both splits
   * hold at least seqLen + 1 tokens.
   */
  static async open(opts: TextDatasetOptions): Promise<TextDataset> {
    if (!isRecord(opts)) throw new TypeError('TextDataset.open: expected an options object');
    if (typeof opts.source !== 'string' || opts.source === '') throw new TypeError('TextDataset: source must be a path (a non-empty string)');
    const tokenizer = opts.tokenizer;
    if (!isRecord(tokenizer) || typeof tokenizer.encode !== 'function' || typeof tokenizer.toJSON !== 'function') {
      throw new TypeError('TextDataset: tokenizer must have encode(text), vocabSize and toJSON()');
    }
    const vocabSize = tokenizer.vocabSize;
    if (typeof vocabSize !== 'number' || !Number.isSafeInteger(vocabSize) || vocabSize < 1 || vocabSize > MAX_VOCAB) {
      throw new RangeError(`TextDataset: tokenizer.vocabSize must be an integer in [1, 2^32], got ${String(vocabSize)}`);
    }
    const seqLen = checkInt('seqLen', opts.seqLen, 1);
    const valFraction = opts.valFraction ?? DEFAULT_VAL_FRACTION;
    if (typeof valFraction !== 'number' || !(valFraction >= 0 && valFraction < 1)) {
      throw new RangeError(`TextDataset: valFraction must be a number in [0, 1), got ${String(valFraction)}`);
    }
    const chunkBytes = checkInt('chunkBytes', opts.chunkBytes ?? DEFAULT_CHUNK_BYTES, MIN_CHUNK_BYTES);
    const inMemoryMaxBytes = opts.inMemoryMaxBytes ?? DEFAULT_IN_MEMORY_MAX_BYTES;
    if (typeof inMemoryMaxBytes !== 'number' || !(inMemoryMaxBytes >= 0)) {
      throw new RangeError(`TextDataset: inMemoryMaxBytes must be a number >= 0, got ${String(inMemoryMaxBytes)}`);
    }
    if (endianness() !== 'LE') throw new Error('TextDataset: token caches are little-endian; this machine is big-endian');
    const onProgress = opts.onProgress;

    // The source and its files.
    const source = path.resolve(opts.source);
    let st: fs.Stats;
    try {
      st = await stat(source);
    } catch (e) {
      throw new Error(`TextDataset: cannot read the source ${source}: ${(e as Error).message}`, { cause: e });
    }
    if (!st.isFile() && !st.isDirectory()) throw new Error(`TextDataset: the source ${source} is neither a file nor a folder`);
    const sourceKind: 'file' | 'dir' = st.isDirectory() ? 'dir' : 'file';
    const cacheDir = path.resolve(opts.cacheDir ?? path.join(sourceKind === 'dir' ? source : path.dirname(source), DEFAULT_CACHE_DIR_NAME));
    let selection: string;
    let files: SourceFile[];
    if (sourceKind === 'file') {
      selection = 'file';
      files = [{ abs: source, rel: path.basename(source), size: st.size, mtimeMs: st.mtimeMs }];
    } else {
      let take: (rel: string, abs: string) => boolean;
      if (opts.filter !== undefined) {
        if (typeof opts.filter !== 'function') throw new TypeError('TextDataset: filter must be a function (relPath, absPath) => boolean');
        const filter = opts.filter;
        take = (rel, abs) => filter(rel, abs) === true;
        selection = `filter:${sha256(filter.toString()).slice(0, 16)}`;
      } else {
        const exts = [...(opts.extensions ?? DEFAULT_TEXT_EXTENSIONS)].map((e) => {
          if (typeof e !== 'string' || e === '') throw new TypeError(`TextDataset: extensions must be non-empty strings, got ${JSON.stringify(e)}`);
          return e.toLowerCase();
        });
        if (exts.length === 0) throw new RangeError('TextDataset: extensions is empty; give at least one, or a filter');
        exts.sort();
        take = (rel) => {
          const lower = rel.toLowerCase();
          return exts.some((e) => lower.endsWith(e));
        };
        selection = `ext:${exts.join(',')}`;
      }
      files = await listFiles(source, take, cacheDir);
      if (files.length === 0) {
        throw new Error(`TextDataset: no files under ${source} match ${selection.startsWith('ext:') ? selection.slice(4) : 'the filter'} (hidden files and folders are skipped)`);
      }
    }
    const bytesTotal = files.reduce((s, f) => s + f.size, 0);
    onProgress?.({ phase: 'scan', filesDone: 0, filesTotal: files.length, bytesDone: 0, bytesTotal, tokens: 0 });

    // The tokenizer's identity and the cache paths.
    const fingerprint = tokenizerFingerprint(tokenizer);
    const kind = tokenizerKind(tokenizer);
    const dtype: TokenDtype = vocabSize <= 65535 ? 'uint16' : 'uint32';
    const bpt = dtype === 'uint16' ? 2 : 4;
    let separator: number[] = [];
    if (typeof opts.separator === 'string') separator = Array.from(tokenizer.encode(opts.separator));
    else if (opts.separator !== undefined) {
      if (!Array.isArray(opts.separator)) throw new TypeError('TextDataset: separator must be a string or an array of token ids');
      separator = [...opts.separator];
    }
    for (const id of separator) {
      if (typeof id !== 'number' || id >>> 0 !== id || id >= vocabSize) {
        throw new RangeError(`TextDataset: separator id ${String(id)} is outside [0, vocabSize = ${vocabSize})`);
      }
    }
    const stemName = path.basename(source).replace(/[^A-Za-z0-9._-]/g, '_').slice(0, 64) || 'corpus';
    const stem = `${stemName}-${sha256(`${source}\0${selection}`).slice(0, 12)}-${fingerprint.slice(0, 12)}`;
    const cachePath = path.join(cacheDir, `${stem}.tokens`);
    const sidecarPath = path.join(cacheDir, `${stem}.json`);
    const want = { source, sourceKind, selection, tokenizer: { kind, vocabSize, fingerprint }, separator, chunkBytes, dtype };

    // Reuse, or build.
    let sc: TextCacheSidecar | null = null;
    let rebuildReason: string | null;
    if (opts.rebuild === true) rebuildReason = 'rebuild requested';
    else {
      sc = await readSidecar(sidecarPath);
      rebuildReason = sc === null ? 'no cache' : await staleReason(sc, want, files, cachePath);
      if (rebuildReason !== null) sc = null;
    }
    const fromCache = sc !== null;
    let buildMs = 0;
    if (sc === null) {
      const t0 = performance.now();
      sc = await build(files, tokenizer, want, valFraction, cacheDir, cachePath, sidecarPath, bytesTotal, onProgress);
      buildMs = performance.now() - t0;
    } else {
      onProgress?.({ phase: 'reuse', filesDone: files.length, filesTotal: files.length, bytesDone: bytesTotal, bytesTotal, tokens: sc.tokens });
    }

    // The split, and the lengths the windows need.
    const n = sc.tokens;
    const split = splitOf(n, valFraction);
    const index = split.index;
    const need = seqLen + 1;
    const where = `${source} (${n} tokens)`;
    if (n < need) {
      throw new Error(`TextDataset: the corpus ${where} is shorter than seqLen + 1 = ${need} tokens; use a larger corpus or a smaller seqLen`);
    }
    if (split.train < need) {
      throw new Error(`TextDataset: the train split of ${where} has ${split.train} tokens, fewer than seqLen + 1 = ${need}; lower valFraction (${valFraction}) or seqLen`);
    }
    if (valFraction > 0 && split.val < need) {
      throw new Error(
        `TextDataset: the val split of ${where} has ${split.val} tokens, fewer than seqLen + 1 = ${need}; ` +
          `raise valFraction (${valFraction}), lower seqLen, or set valFraction to 0 for no validation`,
      );
    }
    if (!isRecord(sc.split) || sc.split.index !== index || sc.split.valFraction !== valFraction) {
      sc = { ...sc, split };
      try {
        await writeJsonAtomic(sidecarPath, sc); // informational; a read-only cache folder is fine
      } catch {
        /* keep going */
      }
    }

    // Memory or disk.
    let data: Uint16Array | Uint32Array | null = null;
    let fd: number | null = fs.openSync(cachePath, 'r');
    try {
      if (n * bpt <= inMemoryMaxBytes) {
        data = dtype === 'uint16' ? new Uint16Array(n) : new Uint32Array(n);
        readFully(fd, new Uint8Array(data.buffer), 0, cachePath);
        fs.closeSync(fd);
        fd = null;
      }
    } catch (e) {
      if (fd !== null) fs.closeSync(fd);
      throw e;
    }
    onProgress?.({ phase: 'done', filesDone: files.length, filesTotal: files.length, bytesDone: bytesTotal, bytesTotal, tokens: n });
    return new TextDataset({ sc, seqLen, valFraction, cacheDir, cachePath, sidecarPath, fromCache, rebuildReason, buildMs, data, fd });
  }

  /**
   * The options (all but the tokenizer) that reopen a dataset from its describe() JSON, e.g. from a
   * checkpoint: `TextDataset.open({ ...TextDataset.optionsFromDescription(desc), tokenizer })`. A
   * dataset made with a `filter` needs the same filter passed again.
   */
  static optionsFromDescription(desc: Record<string, unknown>): Omit<TextDatasetOptions, 'tokenizer'> {
    if (!isRecord(desc) || desc['kind'] !== 'text') throw new Error(`TextDataset: not a text dataset description (kind ${JSON.stringify(isRecord(desc) ? desc['kind'] : desc)})`);
    const field = <T>(name: string, ok: (v: unknown) => boolean): T => {
      const v = desc[name];
      if (!ok(v)) throw new Error(`TextDataset description: ${name} is ${JSON.stringify(v)}`);
      return v as T;
    };
    const isNum = (v: unknown): boolean => typeof v === 'number' && Number.isFinite(v);
    const out: Omit<TextDatasetOptions, 'tokenizer'> = {
      source: field<string>('source', (v) => typeof v === 'string' && v !== ''),
      seqLen: field<number>('seqLen', isNum),
      valFraction: field<number>('valFraction', isNum),
      cacheDir: field<string>('cacheDir', (v) => typeof v === 'string' && v !== ''),
      separator: field<number[]>('separator', (v) => Array.isArray(v) && v.every(isNum)),
      chunkBytes: field<number>('chunkBytes', isNum),
    };
    const selection = field<string>('selection', (v) => typeof v === 'string');
    if (selection.startsWith('ext:')) out.extensions = selection.slice(4).split(',');
    return out;
  }

  /** Whether the tokens are held in memory (else every window is a positional read of the cache file). */
  get inMemory(): boolean {
    return this.data !== null;
  }

  /** Token count of a split, or of the whole corpus. */
  tokens(split: TextSplit | 'all' = 'all'): number {
    if (split === 'train') return this.splitIndex;
    if (split === 'val') return this.totalTokens - this.splitIndex;
    if (split === 'all') return this.totalTokens;
    throw new RangeError(`TextDataset.tokens: split must be 'train', 'val' or 'all', got ${String(split)}`);
  }

  /** The token range [lo, hi) of a split. */
  range(split: TextSplit): [number, number] {
    if (split === 'train') return [0, this.splitIndex];
    if (split === 'val') return [this.splitIndex, this.totalTokens];
    throw new RangeError(`TextDataset: split must be 'train' or 'val', got ${String(split)}`);
  }

  /** Tokens [start, start + length) of the corpus (both splits, in cache order). */
  read(start: number, length: number): Int32Array {
    this.checkOpen();
    if (!Number.isSafeInteger(start) || !Number.isSafeInteger(length) || start < 0 || length < 0 || start + length > this.totalTokens) {
      throw new RangeError(`TextDataset.read: [${start}, ${start} + ${length}) is not inside [0, ${this.totalTokens})`);
    }
    const out = new Int32Array(length);
    if (this.data !== null) {
      out.set(this.data.subarray(start, start + length));
      return out;
    }
    const bpt = this.dtype === 'uint16' ? 2 : 4;
    const step = 1 << 20;
    const buf = new Uint8Array(Math.min(length, step) * bpt);
    const view = this.dtype === 'uint16' ? new Uint16Array(buf.buffer) : new Uint32Array(buf.buffer);
    for (let done = 0; done < length; done += step) {
      const k = Math.min(step, length - done);
      readFully(this.fd!, buf.subarray(0, k * bpt), (start + done) * bpt, this.cachePath);
      out.set(view.subarray(0, k), done);
    }
    return out;
  }

  /**
   * `size` windows of seqLen + 1 tokens, each starting at rng.int(lo, hi - seqLen - 1) for the split's
   * range [lo, hi): tokens = data[i : i + N], targets = data[i + 1 : i + N + 1], every position scored.
   * The batch is a pure function of the generator's state, so a resumed run draws the same batches.
   */
  batch(rng: Rng, size: number, split: TextSplit, _ctx: { noise?: number } = {}): TextBatch {
    this.checkOpen();
    if (!Number.isSafeInteger(size) || size < 1) throw new RangeError(`TextDataset.batch: size must be an integer >= 1, got ${String(size)}`);
    const [lo, hi] = this.range(split);
    const N = this.seqLen;
    const last = hi - N - 1;
    if (last < lo) {
      throw new Error(`TextDataset.batch: the ${split} split has ${hi - lo} tokens, fewer than seqLen + 1 = ${N + 1}` + (split === 'val' ? ' (valFraction is 0?)' : ''));
    }
    if (size * N > 2 ** 31 - 1) throw new RangeError(`TextDataset.batch: size * seqLen = ${size * N} is too large for one batch`);
    const tokens = new Int32Array(size * N);
    const targets = new Int32Array(size * N);
    const starts = new Array<number>(size);
    const bpt = this.dtype === 'uint16' ? 2 : 4;
    for (let r = 0; r < size; r++) {
      const i = rng.int(lo, last);
      starts[r] = i;
      let w: Uint16Array | Uint32Array;
      let o: number;
      if (this.data !== null) {
        w = this.data;
        o = i;
      } else {
        readFully(this.fd!, this.scratch, i * bpt, this.cachePath);
        w = this.window;
        o = 0;
      }
      tokens.set(w.subarray(o, o + N), r * N); // native widening copies
      targets.set(w.subarray(o + 1, o + N + 1), r * N);
    }
    return { tokens, targets, batch: size, seqLen: N, positions: N, starts };
  }

  /** JSON description for checkpoints: with the tokenizer (from the checkpoint), enough to reopen the dataset. */
  describe(): Record<string, unknown> {
    return {
      kind: 'text',
      source: this.source,
      sourceKind: this.sourceKind,
      selection: this.selection,
      ...(this.selection.startsWith('ext:') ? { extensions: this.selection.slice(4).split(',') } : {}),
      files: this.files.length,
      seqLen: this.seqLen,
      valFraction: this.valFraction,
      cacheDir: this.cacheDir,
      cachePath: this.cachePath,
      tokenizer: this.tokenizerKind,
      tokenizerFingerprint: this.tokenizerFingerprint,
      vocabSize: this.vocabSize,
      dtype: this.dtype,
      separator: [...this.separator],
      chunkBytes: this.chunkBytes,
      tokens: { total: this.totalTokens, train: this.tokens('train'), val: this.tokens('val') },
    };
  }

  /** Releases the cache file (disk mode) and the in-memory tokens; the dataset cannot be used afterwards. */
  close(): void {
    if (this.fd !== null) fs.closeSync(this.fd);
    this.fd = null;
    this.data = null;
    this.closed = true;
  }

  private checkOpen(): void {
    if (this.closed) throw new Error('TextDataset: the dataset is closed');
  }
}

/** nanoGPT's split: train = the first floor(n * (1 - valFraction)) tokens, val = the rest. */
function splitOf(n: number, valFraction: number): TextCacheSidecar['split'] {
  const index = Math.floor(n * (1 - valFraction));
  return { valFraction, index, train: index, val: n - index };
}

/** Reads exactly `buf.length` bytes at `position`. */
function readFully(fd: number, buf: Uint8Array, position: number, file: string): void {
  let off = 0;
  while (off < buf.length) {
    const got = fs.readSync(fd, buf, off, buf.length - off, position + off);
    if (got === 0) throw new Error(`TextDataset: ${file} ended early (wanted bytes [${position}, ${position + buf.length}); was the cache truncated?)`);
    off += got;
  }
}

/** Tokenizes every file into a temporary token file, then moves it and a fresh sidecar into place. */
async function build(
  files: SourceFile[],
  tokenizer: TextTokenizer,
  want: Pick<TextCacheSidecar, 'source' | 'sourceKind' | 'selection' | 'tokenizer' | 'separator' | 'chunkBytes' | 'dtype'>,
  valFraction: number,
  cacheDir: string,
  cachePath: string,
  sidecarPath: string,
  bytesTotal: number,
  onProgress: ((p: TextDatasetProgress) => void) | undefined,
): Promise<TextCacheSidecar> {
  const t0 = performance.now();
  try {
    await mkdir(cacheDir, { recursive: true });
  } catch (e) {
    throw new Error(`TextDataset: cannot create the cache folder ${cacheDir} (${(e as Error).message}); pass a writable cacheDir`, { cause: e });
  }
  const tmp = `${cachePath}.tmp-${process.pid}-${randomBytes(4).toString('hex')}`;
  const out = await openFile(tmp, 'w');
  const records: TextCacheFile[] = [];
  try {
    const writer = new TokenWriter(out, want.dtype, want.tokenizer.vocabSize);
    const chunkBytes = want.chunkBytes;
    const buf = new Uint8Array(chunkBytes);
    let bytesBefore = 0;
    for (let f = 0; f < files.length; f++) {
      const file = files[f]!;
      if (f > 0 && want.separator.length > 0) await writer.write(want.separator, () => 'separator');
      const before = writer.total;
      const fh = await openFile(file.abs, 'r');
      try {
        const decoder = new TextDecoder('utf-8');
        let carry = '';
        let pos = 0;
        for (;;) {
          let got = 0;
          let eof = false;
          while (got < chunkBytes) {
            const { bytesRead } = await fh.read(buf, got, chunkBytes - got, pos + got);
            if (bytesRead === 0) {
              eof = true;
              break;
            }
            got += bytesRead;
          }
          const text = carry + decoder.decode(buf.subarray(0, got), { stream: !eof });
          const cut = eof ? text.length : chunkSplitPoint(text);
          carry = text.slice(cut);
          if (cut > 0) {
            let ids: Int32Array | number[];
            try {
              ids = tokenizer.encode(cut === text.length ? text : text.slice(0, cut));
            } catch (e) {
              throw new Error(`TextDataset: tokenizing ${file.abs} (bytes ${pos}..${pos + got}): ${(e as Error).message}`, { cause: e });
            }
            await writer.write(ids, () => `in ${file.abs}, bytes ${pos}..${pos + got}`);
          }
          pos += got;
          onProgress?.({
            phase: 'tokenize',
            file: file.abs,
            filesDone: f,
            filesTotal: files.length,
            bytesDone: Math.min(bytesBefore + pos, bytesTotal),
            bytesTotal,
            tokens: writer.total,
          });
          if (eof) break;
        }
        const now = await fh.stat();
        if (now.size !== file.size || now.mtimeMs !== file.mtimeMs || pos !== file.size) {
          throw new Error(`TextDataset: ${file.abs} changed while it was being tokenized; open the dataset again`);
        }
      } finally {
        await fh.close();
      }
      bytesBefore += file.size;
      records.push({ path: file.rel, size: file.size, mtimeMs: file.mtimeMs, tokens: writer.total - before });
    }
    await writer.flush();
    await out.sync();
    await out.close();
    const tokens = writer.total;
    const bytes = tokens * (want.dtype === 'uint16' ? 2 : 4);
    const sc: TextCacheSidecar = {
      format: TEXT_CACHE_FORMAT,
      version: TEXT_CACHE_VERSION,
      ...want,
      files: records,
      tokens,
      bytes,
      tokensFile: path.basename(cachePath),
      split: splitOf(tokens, valFraction),
      builtAt: new Date().toISOString(),
      buildMs: 0,
    };
    // Never leave a sidecar that vouches for the wrong token file: drop it, move the tokens, write it.
    await unlink(sidecarPath).catch((e: unknown) => {
      if (errno(e) !== 'ENOENT') throw e;
    });
    await rename(tmp, cachePath);
    sc.buildMs = Math.round(performance.now() - t0);
    await writeJsonAtomic(sidecarPath, sc);
    return sc;
  } catch (e) {
    await out.close().catch(() => undefined);
    await unlink(tmp).catch(() => undefined);
    throw e;
  }
}
