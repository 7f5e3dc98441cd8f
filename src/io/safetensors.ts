// Reader and writer of the safetensors format (https://github.com/huggingface/safetensors), written
// from the format description:
//
//   8 bytes   N, a little-endian unsigned 64-bit integer: the length of the header
//   N bytes   the header: UTF-8 JSON object, beginning with '{', possibly padded with spaces;
//             { "<name>": { "dtype": "F32", "shape": [2, 3], "data_offsets": [begin, end] }, ...,
//               "__metadata__": { "<key>": "<string value>", ... } }            (metadata optional)
//   rest      the byte buffer; offsets are relative to its start, little-endian, row-major data.
//             The tensors' ranges tile the buffer exactly: no holes, no overlap, nothing after.
//
// The reader treats its input as hostile: every number in the header is checked before it is used,
// nothing is allocated from an unchecked length, and each problem becomes an Error that names the
// tensor or field and what is wrong. Tensor data is copied into freshly allocated (hence aligned)
// typed arrays; nothing returned aliases the input.
import { randomBytes } from 'node:crypto';
import * as fs from 'node:fs';
import * as fsp from 'node:fs/promises';
import { basename, dirname, join, resolve } from 'node:path';

/** The typed array that holds each dtype's elements (F16, BF16 as raw bits; F8 and BOOL as bytes). */
export interface SafeDTypeArrays {
  BOOL: Uint8Array;
  U8: Uint8Array;
  I8: Int8Array;
  F8_E5M2: Uint8Array;
  F8_E4M3: Uint8Array;
  I16: Int16Array;
  U16: Uint16Array;
  F16: Uint16Array;
  BF16: Uint16Array;
  I32: Int32Array;
  U32: Uint32Array;
  F32: Float32Array;
  F64: Float64Array;
  I64: BigInt64Array;
  U64: BigUint64Array;
}

/** A safetensors element type. */
export type SafeDType = keyof SafeDTypeArrays;

/** Any of the typed arrays a decoded tensor can hold. */
export type SafeTypedArray = SafeDTypeArrays[SafeDType];

/**
 * A decoded tensor. `data` is a typed array of the dtype's JavaScript type (see SafeDTypeArrays):
 * F16 and BF16 come as their raw 16-bit patterns in a Uint16Array (use `toFloat32` for values),
 * F8_E5M2 / F8_E4M3 and BOOL as raw bytes. Narrow on `dtype` to get the precise array type.
 */
export type SafeTensor = {
  [D in SafeDType]: { dtype: D; shape: number[]; data: SafeDTypeArrays[D] };
}[SafeDType];

/**
 * A tensor to encode. `data` is either the dtype's typed array (SafeDTypeArrays) with product(shape)
 * elements, or a Uint8Array of the raw little-endian bytes (product(shape) * element size bytes).
 */
export interface SafeTensorInput {
  dtype: SafeDType;
  shape: readonly number[];
  data: ArrayBufferView;
}

/** The dtype and data of a tensor (a SafeTensor without its shape). */
export type SafeTensorData = {
  [D in SafeDType]: { dtype: D; data: SafeDTypeArrays[D] };
}[SafeDType];

/** The result of decoding: tensors by name, and the header's `__metadata__` ({} when absent). */
export interface DecodedSafetensors {
  tensors: Record<string, SafeTensor>;
  metadata: Record<string, string>;
}

export interface DecodeOptions {
  /** Largest header accepted, in bytes (default 100 MB, the reference implementation's limit). */
  maxHeaderBytes?: number;
  /** Names the input in error messages (a file path, say). */
  source?: string;
}

/** An invalid safetensors input, or an encoder argument that cannot be written. */
export class SafetensorsError extends Error {
  override name = 'SafetensorsError';
}

/** Default limit on the header length, in bytes. */
export const DEFAULT_MAX_HEADER_BYTES = 100_000_000;

interface DTypeInfo {
  size: number;
  ctor: new (buffer: ArrayBuffer) => SafeTypedArray;
}

const DTYPES: Readonly<Record<SafeDType, DTypeInfo>> = {
  BOOL: { size: 1, ctor: Uint8Array },
  U8: { size: 1, ctor: Uint8Array },
  I8: { size: 1, ctor: Int8Array },
  F8_E5M2: { size: 1, ctor: Uint8Array },
  F8_E4M3: { size: 1, ctor: Uint8Array },
  I16: { size: 2, ctor: Int16Array },
  U16: { size: 2, ctor: Uint16Array },
  F16: { size: 2, ctor: Uint16Array },
  BF16: { size: 2, ctor: Uint16Array },
  I32: { size: 4, ctor: Int32Array },
  U32: { size: 4, ctor: Uint32Array },
  F32: { size: 4, ctor: Float32Array },
  F64: { size: 8, ctor: Float64Array },
  I64: { size: 8, ctor: BigInt64Array },
  U64: { size: 8, ctor: BigUint64Array },
};

/** All supported dtypes. */
export const SAFE_DTYPES: readonly SafeDType[] = Object.freeze(Object.keys(DTYPES) as SafeDType[]);

/** True when `s` names a supported dtype. */
export function isSafeDType(s: unknown): s is SafeDType {
  return typeof s === 'string' && Object.prototype.hasOwnProperty.call(DTYPES, s);
}

/** Bytes per element of `dtype`. */
export function dtypeSize(dtype: SafeDType): number {
  return DTYPES[dtype].size;
}

const LITTLE_ENDIAN = new Uint8Array(new Uint16Array([1]).buffer)[0] === 1;

function swapBytes(bytes: Uint8Array, size: number): void {
  if (size === 1) return;
  for (let i = 0; i + size <= bytes.length; i += size) {
    for (let a = i, b = i + size - 1; a < b; a++, b--) {
      const t = bytes[a]!;
      bytes[a] = bytes[b]!;
      bytes[b] = t;
    }
  }
}

function describe(v: unknown): string {
  if (v === null) return 'null';
  if (Array.isArray(v)) return 'an array';
  if (typeof v === 'string') return `the string ${JSON.stringify(v.length > 40 ? v.slice(0, 40) + '...' : v)}`;
  if (typeof v === 'number') return `the number ${v}`;
  if (typeof v === 'object') return 'an object';
  return typeof v;
}

function isPlainObject(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

const own = (o: object, k: string): boolean => Object.prototype.hasOwnProperty.call(o, k);

/** Product of a validated shape, or -1 when it exceeds Number.MAX_SAFE_INTEGER. */
function numel(shape: readonly number[]): number {
  if (shape.some((d) => d === 0)) return 0;
  let n = 1;
  for (const d of shape) {
    n *= d;
    if (n > Number.MAX_SAFE_INTEGER) return -1;
  }
  return n;
}

// ---------------------------------------------------------------------------------------------------
// Encoding

function encoderError(msg: string): SafetensorsError {
  return new SafetensorsError(`encodeSafetensors: ${msg}`);
}

/** The raw little-endian bytes of one input tensor, validated against its dtype and shape. */
function inputBytes(name: string, t: SafeTensorInput): { dtype: SafeDType; shape: number[]; bytes: Uint8Array; swap: boolean } {
  const what = `tensor ${JSON.stringify(name)}`;
  if (!isPlainObject(t)) throw encoderError(`${what}: expected {dtype, shape, data}, got ${describe(t)}`);
  if (!isSafeDType(t.dtype)) {
    throw encoderError(`${what}: unknown dtype ${describe(t.dtype)}; expected one of ${SAFE_DTYPES.join(', ')}`);
  }
  const info = DTYPES[t.dtype];
  if (!Array.isArray(t.shape)) throw encoderError(`${what}: shape must be an array, got ${describe(t.shape)}`);
  const shape: number[] = [];
  t.shape.forEach((d: unknown, i: number) => {
    if (typeof d !== 'number' || !Number.isSafeInteger(d) || d < 0) {
      throw encoderError(`${what}: shape[${i}] is ${describe(d)}, expected a non-negative integer`);
    }
    shape.push(d === 0 ? 0 : d); // normalise -0
  });
  const n = numel(shape);
  if (n < 0 || n * info.size > Number.MAX_SAFE_INTEGER) {
    throw encoderError(`${what}: shape [${shape.join(', ')}] is too large`);
  }
  const data: unknown = t.data;
  if (!ArrayBuffer.isView(data) || data instanceof DataView) {
    throw encoderError(`${what}: data must be a typed array, got ${describe(data)}`);
  }
  const bytes = new Uint8Array(data.buffer, data.byteOffset, data.byteLength);
  const Ctor = info.ctor;
  if (data instanceof Ctor) {
    if ((data as SafeTypedArray).length !== n) {
      throw encoderError(
        `${what}: data has ${(data as SafeTypedArray).length} elements but shape [${shape.join(', ')}] needs ${n}`,
      );
    }
    return { dtype: t.dtype, shape, bytes, swap: !LITTLE_ENDIAN && info.size > 1 };
  }
  if (data instanceof Uint8Array) {
    if (data.byteLength !== n * info.size) {
      throw encoderError(
        `${what}: data is ${data.byteLength} raw bytes but shape [${shape.join(', ')}] of ${t.dtype} needs ` +
          `${n * info.size}`,
      );
    }
    return { dtype: t.dtype, shape, bytes, swap: false };
  }
  throw encoderError(
    `${what}: data is a ${data.constructor.name} but dtype ${t.dtype} needs a ${Ctor.name} ` +
      `(or a Uint8Array of raw little-endian bytes)`,
  );
}

/**
 * Encodes tensors and optional string metadata as a safetensors file image.
 *
 * Deterministic: the same input gives the same bytes. Tensors are packed contiguously, ordered by
 * element size (largest first) and then by name, so every tensor's offset is a multiple of its element
 * size (the data buffer itself starts at a multiple of 8: the header is padded with spaces), which lets
 * memory-mapping readers view the data in place. Header keys are written in that order, `__metadata__`
 * first (omitted when empty).
 */
export function encodeSafetensors(
  tensors: Readonly<Record<string, SafeTensorInput>>,
  metadata?: Readonly<Record<string, string>>,
): Uint8Array {
  if (!isPlainObject(tensors)) throw encoderError(`tensors must be an object, got ${describe(tensors)}`);
  const items = Object.keys(tensors).map((name) => {
    if (name === '__metadata__') throw encoderError('"__metadata__" is reserved and cannot name a tensor');
    return { name, ...inputBytes(name, tensors[name] as SafeTensorInput) };
  });
  items.sort((a, b) => {
    const sa = DTYPES[a.dtype].size;
    const sb = DTYPES[b.dtype].size;
    if (sa !== sb) return sb - sa;
    return a.name < b.name ? -1 : a.name > b.name ? 1 : 0;
  });

  const parts: string[] = [];
  if (metadata !== undefined) {
    if (!isPlainObject(metadata)) throw encoderError(`metadata must be an object of strings, got ${describe(metadata)}`);
    const keys = Object.keys(metadata).sort();
    for (const k of keys) {
      if (typeof metadata[k] !== 'string') {
        throw encoderError(`metadata ${JSON.stringify(k)} is ${describe(metadata[k])}, expected a string`);
      }
    }
    if (keys.length > 0) {
      parts.push(
        `"__metadata__":{${keys.map((k) => `${JSON.stringify(k)}:${JSON.stringify(metadata[k])}`).join(',')}}`,
      );
    }
  }
  let offset = 0;
  const offsets: number[] = [];
  for (const it of items) {
    const end = offset + it.bytes.byteLength;
    offsets.push(offset);
    parts.push(
      `${JSON.stringify(it.name)}:{"dtype":"${it.dtype}","shape":[${it.shape.join(',')}],` +
        `"data_offsets":[${offset},${end}]}`,
    );
    offset = end;
  }
  const json = new TextEncoder().encode(`{${parts.join(',')}}`);
  const headerLen = Math.ceil(json.length / 8) * 8;
  const total = 8 + headerLen + offset;
  const out = new Uint8Array(total);
  new DataView(out.buffer).setBigUint64(0, BigInt(headerLen), true);
  out.set(json, 8);
  out.fill(0x20, 8 + json.length, 8 + headerLen);
  const base = 8 + headerLen;
  items.forEach((it, i) => {
    const at = base + offsets[i]!;
    out.set(it.bytes, at);
    if (it.swap) swapBytes(out.subarray(at, at + it.bytes.byteLength), DTYPES[it.dtype].size);
  });
  return out;
}

// ---------------------------------------------------------------------------------------------------
// Decoding

interface Entry {
  name: string;
  dtype: SafeDType;
  shape: number[];
  begin: number;
  end: number;
}

interface ParsedHeader {
  entries: Entry[];
  metadata: Record<string, string>;
}

function makeFail(source: string | undefined): (msg: string) => SafetensorsError {
  const prefix = source === undefined ? 'invalid safetensors data' : `invalid safetensors file ${source}`;
  return (msg) => new SafetensorsError(`${prefix}: ${msg}`);
}

/**
 * Finds a key that occurs twice in one object of (already validated) JSON text. JSON.parse keeps the
 * last duplicate silently; the format forbids duplicates, so the header text is scanned for them.
 */
function findDuplicateKey(text: string): { key: string; parent: string | null; depth: number } | null {
  interface Frame {
    keys: Set<string> | null; // null for arrays
    name: string | null; // the key under which this container sits
    last: string | null; // the last key seen in this object
  }
  const stack: Frame[] = [];
  const n = text.length;
  let i = 0;
  while (i < n) {
    const c = text.charCodeAt(i);
    if (c === 0x22 /* " */) {
      let j = i + 1;
      let escaped = false;
      while (j < n) {
        const d = text.charCodeAt(j);
        if (d === 0x5c /* \ */) {
          escaped = true;
          j += 2;
        } else if (d === 0x22) break;
        else j++;
      }
      const raw = text.slice(i, j + 1);
      i = j + 1;
      let k = i;
      while (k < n && (text[k] === ' ' || text[k] === '\t' || text[k] === '\n' || text[k] === '\r')) k++;
      const top = stack[stack.length - 1];
      if (text[k] === ':' && top !== undefined && top.keys !== null) {
        const key = escaped ? (JSON.parse(raw) as string) : raw.slice(1, -1);
        if (top.keys.has(key)) return { key, parent: top.name, depth: stack.length };
        top.keys.add(key);
        top.last = key;
      }
    } else if (c === 0x7b /* { */ || c === 0x5b /* [ */) {
      const top = stack[stack.length - 1];
      const name = top === undefined ? null : top.keys !== null ? top.last : top.name;
      stack.push({ keys: c === 0x7b ? new Set() : null, name, last: null });
      i++;
    } else if (c === 0x7d /* } */ || c === 0x5d /* ] */) {
      stack.pop();
      i++;
    } else i++;
  }
  return null;
}

function checkIndex(v: unknown): v is number {
  return typeof v === 'number' && Number.isSafeInteger(v) && v >= 0;
}

/** Parses and validates a header against a data buffer of `dataLength` bytes. */
function parseHeader(headerBytes: Uint8Array, dataLength: number, fail: (m: string) => SafetensorsError): ParsedHeader {
  let text: string;
  try {
    text = new TextDecoder('utf-8', { fatal: true, ignoreBOM: true }).decode(headerBytes);
  } catch {
    throw fail('header is not valid UTF-8');
  }
  if (text.length === 0) throw fail('header is empty');
  if (text[0] !== '{') throw fail(`header must begin with '{' (found ${JSON.stringify(text[0])})`);
  let header: unknown;
  try {
    header = JSON.parse(text);
  } catch (e) {
    throw fail(`header is not valid JSON: ${e instanceof Error ? e.message : String(e)}`);
  }
  if (!isPlainObject(header)) throw fail(`header must be a JSON object, got ${describe(header)}`);
  const dup = findDuplicateKey(text);
  if (dup !== null) {
    const k = JSON.stringify(dup.key);
    if (dup.depth === 1) throw fail(dup.key === '__metadata__' ? 'duplicate "__metadata__" in header' : `duplicate tensor name ${k} in header`);
    if (dup.depth === 2 && dup.parent === '__metadata__') throw fail(`duplicate key ${k} in __metadata__`);
    throw fail(`duplicate key ${k} in header entry ${JSON.stringify(dup.parent)}`);
  }

  const metadataEntries: [string, string][] = [];
  if (own(header, '__metadata__')) {
    const md = header['__metadata__'];
    if (!isPlainObject(md)) throw fail(`__metadata__ must be an object of strings, got ${describe(md)}`);
    for (const k of Object.keys(md)) {
      const v = md[k];
      if (typeof v !== 'string') throw fail(`__metadata__ value of ${JSON.stringify(k)} is ${describe(v)}, expected a string`);
      metadataEntries.push([k, v]);
    }
  }

  const entries: Entry[] = [];
  for (const name of Object.keys(header)) {
    if (name === '__metadata__') continue;
    const what = `tensor ${JSON.stringify(name)}`;
    const e = header[name];
    if (!isPlainObject(e)) throw fail(`${what}: expected an object {dtype, shape, data_offsets}, got ${describe(e)}`);
    for (const field of ['dtype', 'shape', 'data_offsets']) {
      if (!own(e, field)) throw fail(`${what}: missing field "${field}" (expected {dtype, shape, data_offsets})`);
    }
    const dtype = e['dtype'];
    if (typeof dtype !== 'string') throw fail(`${what}: dtype is ${describe(dtype)}, expected a string`);
    if (!isSafeDType(dtype)) throw fail(`${what}: unknown dtype ${JSON.stringify(dtype)}; supported: ${SAFE_DTYPES.join(', ')}`);
    const shapeV = e['shape'];
    if (!Array.isArray(shapeV)) throw fail(`${what}: shape is ${describe(shapeV)}, expected an array of non-negative integers`);
    const shape: number[] = [];
    shapeV.forEach((d: unknown, i) => {
      if (!checkIndex(d)) throw fail(`${what}: shape[${i}] is ${describe(d)}, expected a non-negative integer`);
      shape.push(d === 0 ? 0 : d);
    });
    const offs = e['data_offsets'];
    if (!Array.isArray(offs) || offs.length !== 2) {
      throw fail(`${what}: data_offsets is ${describe(offs)}${Array.isArray(offs) ? ` of length ${offs.length}` : ''}, expected [begin, end]`);
    }
    const [begin, end] = offs as unknown[];
    if (!checkIndex(begin)) throw fail(`${what}: data_offsets begin is ${describe(begin)}, expected a non-negative integer`);
    if (!checkIndex(end)) throw fail(`${what}: data_offsets end is ${describe(end)}, expected a non-negative integer`);
    if (begin > end) throw fail(`${what}: data_offsets [${begin}, ${end}] has begin > end`);
    if (end > dataLength) {
      throw fail(`${what}: data_offsets end ${end} is beyond the data buffer (${dataLength} bytes)`);
    }
    const size = DTYPES[dtype].size;
    const n = numel(shape);
    if (n < 0 || n * size > Number.MAX_SAFE_INTEGER) throw fail(`${what}: shape [${shape.join(', ')}] is too large`);
    if (end - begin !== n * size) {
      throw fail(
        `${what}: data_offsets [${begin}, ${end}] span ${end - begin} bytes but shape [${shape.join(', ')}] of ` +
          `${dtype} needs ${n * size}`,
      );
    }
    entries.push({ name, dtype, shape, begin: begin === 0 ? 0 : begin, end: end === 0 ? 0 : end });
  }

  // The ranges, sorted, must tile [0, dataLength) exactly.
  const sorted = [...entries].sort((a, b) => a.begin - b.begin || a.end - b.end);
  let expected = 0;
  let prev: Entry | null = null;
  for (const e of sorted) {
    if (e.begin < expected) {
      throw fail(
        `tensor ${JSON.stringify(e.name)}: data_offsets [${e.begin}, ${e.end}] overlap tensor ` +
          `${JSON.stringify(prev!.name)} [${prev!.begin}, ${prev!.end}]`,
      );
    }
    if (e.begin > expected) {
      throw fail(
        `hole in the data buffer: bytes [${expected}, ${e.begin}) belong to no tensor ` +
          `(before tensor ${JSON.stringify(e.name)}); tensors must be contiguous`,
      );
    }
    expected = e.end;
    prev = e;
  }
  if (expected !== dataLength) {
    throw fail(`${dataLength - expected} trailing bytes after the last tensor (data buffer is ${dataLength} bytes, tensors end at ${expected})`);
  }
  return { entries, metadata: Object.fromEntries(metadataEntries) };
}

/** Reads and checks the 8-byte length prefix; returns the header length. */
function headerLength(prefix: Uint8Array, fileLength: number, maxHeaderBytes: number, fail: (m: string) => SafetensorsError): number {
  if (fileLength < 8) throw fail(`too short: ${fileLength} bytes, a safetensors file needs at least 8 (the header length)`);
  const n = new DataView(prefix.buffer, prefix.byteOffset, 8).getBigUint64(0, true);
  if (n > BigInt(fileLength - 8)) {
    throw fail(`header length ${n} is larger than the rest of the file (${fileLength - 8} bytes)`);
  }
  if (Number.isFinite(maxHeaderBytes) && n > BigInt(Math.floor(maxHeaderBytes))) {
    throw fail(`header length ${n} exceeds the limit of ${maxHeaderBytes} bytes (maxHeaderBytes)`);
  }
  return Number(n);
}

function checkMaxHeader(opts: DecodeOptions | undefined): number {
  const m = opts?.maxHeaderBytes ?? DEFAULT_MAX_HEADER_BYTES;
  if (typeof m !== 'number' || !(m >= 0)) {
    throw new TypeError(`maxHeaderBytes: expected a non-negative number, got ${String(m)}`);
  }
  return m;
}

function finishTensor(e: Entry, buffer: ArrayBuffer): SafeTensor {
  const info = DTYPES[e.dtype];
  if (!LITTLE_ENDIAN && info.size > 1) swapBytes(new Uint8Array(buffer), info.size);
  return { dtype: e.dtype, shape: e.shape, data: new info.ctor(buffer) } as SafeTensor;
}

/**
 * Decodes a safetensors file image, validating it completely (see the module comment) before any
 * tensor is allocated. Throws a SafetensorsError naming the tensor or field and the problem.
 */
export function decodeSafetensors(bytes: Uint8Array, opts?: DecodeOptions): DecodedSafetensors {
  const fail = makeFail(opts?.source);
  if (!(bytes instanceof Uint8Array)) throw new TypeError(`decodeSafetensors: expected a Uint8Array, got ${describe(bytes)}`);
  const maxHeader = checkMaxHeader(opts);
  const n = headerLength(bytes, bytes.length, maxHeader, fail);
  const base = 8 + n;
  const { entries, metadata } = parseHeader(bytes.subarray(8, base), bytes.length - base, fail);
  const tensors: [string, SafeTensor][] = entries.map((e) => {
    const buf = new ArrayBuffer(e.end - e.begin);
    new Uint8Array(buf).set(bytes.subarray(base + e.begin, base + e.end));
    return [e.name, finishTensor(e, buf)];
  });
  return { tensors: Object.fromEntries(tensors), metadata };
}

// ---------------------------------------------------------------------------------------------------
// Conversions

/** Writes the float32 value of F16 bits `h` into out[i] (exactly; NaN payloads kept via the bits view). */
function putF16(h: number, out: Float32Array, bits: Uint32Array, i: number): void {
  const e = (h >>> 10) & 0x1f;
  const m = h & 0x3ff;
  if (e === 31) bits[i] = ((h & 0x8000) << 16) | 0x7f800000 | (m << 13);
  else if (e === 0) out[i] = (h & 0x8000 ? -1 : 1) * m * 2 ** -24;
  else bits[i] = ((h & 0x8000) << 16) | ((e + 112) << 23) | (m << 13);
}

function e4m3ToNumber(b: number): number {
  const sign = b & 0x80 ? -1 : 1;
  const e = (b >>> 3) & 0xf;
  const m = b & 7;
  if (e === 15 && m === 7) return NaN;
  if (e === 0) return sign * m * 2 ** -9;
  return sign * (1 + m / 8) * 2 ** (e - 7);
}

/**
 * The values of a tensor as a Float32Array. F32 data is returned as is (not copied); F16, BF16,
 * F8_E5M2 and F8_E4M3 are converted exactly (NaN payloads of F16 and BF16 kept); F64 and the integer
 * dtypes are rounded to the nearest float32; BOOL gives 0 or 1.
 */
export function toFloat32(t: SafeTensorData): Float32Array {
  switch (t.dtype) {
    case 'F32':
      return t.data;
    case 'BF16': {
      // Through the bits: a signalling NaN would be quietened on its way through a JS number.
      const out = new Float32Array(t.data.length);
      const bits = new Uint32Array(out.buffer);
      for (let i = 0; i < t.data.length; i++) bits[i] = t.data[i]! << 16;
      return out;
    }
    case 'F16': {
      const out = new Float32Array(t.data.length);
      const bits = new Uint32Array(out.buffer);
      for (let i = 0; i < t.data.length; i++) putF16(t.data[i]!, out, bits, i);
      return out;
    }
    case 'F8_E5M2': {
      const out = new Float32Array(t.data.length);
      const bits = new Uint32Array(out.buffer);
      for (let i = 0; i < t.data.length; i++) putF16(t.data[i]! << 8, out, bits, i);
      return out;
    }
    case 'F8_E4M3': {
      const out = new Float32Array(t.data.length);
      for (let i = 0; i < t.data.length; i++) out[i] = e4m3ToNumber(t.data[i]!);
      return out;
    }
    case 'BOOL': {
      const out = new Float32Array(t.data.length);
      for (let i = 0; i < t.data.length; i++) out[i] = t.data[i] ? 1 : 0;
      return out;
    }
    case 'I64':
    case 'U64': {
      const out = new Float32Array(t.data.length);
      for (let i = 0; i < t.data.length; i++) out[i] = Number(t.data[i]!);
      return out;
    }
    case 'F64':
    case 'U8':
    case 'I8':
    case 'I16':
    case 'U16':
    case 'I32':
    case 'U32':
      return Float32Array.from(t.data);
    default: {
      const never: never = t;
      throw new TypeError(`toFloat32: unknown dtype ${String((never as { dtype: unknown }).dtype)}`);
    }
  }
}

function f32BitsToF16(f: number): number {
  const sign = (f >>> 16) & 0x8000;
  const exp = (f >>> 23) & 0xff;
  const mant = f & 0x7fffff;
  if (exp === 0xff) return sign | 0x7c00 | (mant === 0 ? 0 : (mant >>> 13) || 0x200);
  const e = exp - 112; // rebias 127 -> 15
  if (e >= 0x1f) return sign | 0x7c00;
  if (e <= 0) {
    if (e < -10) return sign;
    const m = mant | 0x800000;
    const shift = 14 - e;
    let half = m >>> shift;
    const rem = m & ((1 << shift) - 1);
    const halfway = 1 << (shift - 1);
    if (rem > halfway || (rem === halfway && (half & 1) === 1)) half++;
    return sign | half;
  }
  let half = (e << 10) | (mant >>> 13);
  const rem = mant & 0x1fff;
  if (rem > 0x1000 || (rem === 0x1000 && (half & 1) === 1)) half++; // a carry into the exponent is right
  return sign | half;
}

function f32BitsToBF16(f: number): number {
  if ((f & 0x7f800000) === 0x7f800000 && (f & 0x7fffff) !== 0) {
    return ((f >>> 16) | (((f >>> 16) & 0x7f) === 0 ? 0x40 : 0)) & 0xffff; // keep it a NaN
  }
  return ((f + 0x7fff + ((f >>> 16) & 1)) >>> 16) & 0xffff;
}

/**
 * Converts float32 values to F16 or BF16 bit patterns (round to nearest, ties to even; overflow to
 * infinity), ready to encode as a tensor of that dtype.
 */
export function fromFloat32(data: Float32Array, dtype: 'F16' | 'BF16'): Uint16Array {
  if (dtype !== 'F16' && dtype !== 'BF16') throw new TypeError(`fromFloat32: dtype must be 'F16' or 'BF16', got ${String(dtype)}`);
  const bits = new Uint32Array(data.buffer, data.byteOffset, data.length);
  const out = new Uint16Array(data.length);
  const conv = dtype === 'F16' ? f32BitsToF16 : f32BitsToBF16;
  for (let i = 0; i < bits.length; i++) out[i] = conv(bits[i]!);
  return out;
}

// ---------------------------------------------------------------------------------------------------
// Files

function errCode(e: unknown): string | undefined {
  return typeof e === 'object' && e !== null && typeof (e as { code?: unknown }).code === 'string'
    ? (e as { code: string }).code
    : undefined;
}

function withCode(err: Error, code: string | undefined): Error {
  if (code !== undefined) (err as Error & { code?: string }).code = code;
  return err;
}

function readError(path: string, e: unknown): Error {
  if (e instanceof SafetensorsError) return e;
  const code = errCode(e);
  const detail = e instanceof Error ? e.message : String(e);
  let msg: string;
  switch (code) {
    case 'ENOENT':
      msg = `cannot read safetensors file ${path}: no such file`;
      break;
    case 'EACCES':
    case 'EPERM':
      msg = `cannot read safetensors file ${path}: permission denied`;
      break;
    case 'EISDIR':
      msg = `cannot read safetensors file ${path}: it is a directory`;
      break;
    default:
      msg = `cannot read safetensors file ${path}: ${detail}`;
  }
  return withCode(new Error(msg, { cause: e }), code);
}

async function readFully(fh: fsp.FileHandle, target: Uint8Array, position: number, path: string): Promise<void> {
  let done = 0;
  while (done < target.length) {
    const { bytesRead } = await fh.read(target, done, target.length - done, position + done);
    if (bytesRead === 0) throw new SafetensorsError(`invalid safetensors file ${path}: file was truncated while being read`);
    done += bytesRead;
  }
}

/**
 * Reads and validates a safetensors file. The header is read and checked first; then each tensor is
 * read straight into its own buffer, so the whole file is never held twice (and files larger than
 * 2 GiB work).
 */
export async function readSafetensorsFile(path: string, opts?: Omit<DecodeOptions, 'source'>): Promise<DecodedSafetensors> {
  const fail = makeFail(path);
  const maxHeader = checkMaxHeader(opts);
  let fh: fsp.FileHandle | undefined;
  try {
    fh = await fsp.open(path, 'r');
    const st = await fh.stat();
    if (st.isDirectory()) throw withCode(new Error('is a directory'), 'EISDIR');
    const size = st.size;
    const prefix = new Uint8Array(8);
    if (size >= 8) await readFully(fh, prefix, 0, path);
    const n = headerLength(prefix, size, maxHeader, fail);
    const headerBytes = new Uint8Array(n);
    await readFully(fh, headerBytes, 8, path);
    const base = 8 + n;
    const { entries, metadata } = parseHeader(headerBytes, size - base, fail);
    const tensors: [string, SafeTensor][] = [];
    for (const e of entries) {
      const buf = new ArrayBuffer(e.end - e.begin);
      await readFully(fh, new Uint8Array(buf), base + e.begin, path);
      tensors.push([e.name, finishTensor(e, buf)]);
    }
    return { tensors: Object.fromEntries(tensors), metadata };
  } catch (e) {
    throw readError(path, e);
  } finally {
    await fh?.close().catch(() => undefined);
  }
}

/** Synchronous readSafetensorsFile (reads the whole file at once; limited to 2 GiB). */
export function readSafetensorsFileSync(path: string, opts?: Omit<DecodeOptions, 'source'>): DecodedSafetensors {
  let bytes: Uint8Array;
  try {
    bytes = fs.readFileSync(path);
  } catch (e) {
    throw readError(path, e);
  }
  return decodeSafetensors(bytes, { ...opts, source: path });
}

function writeError(path: string, e: unknown): Error {
  const code = errCode(e);
  const detail = e instanceof Error ? e.message : String(e);
  let msg: string;
  switch (code) {
    case 'ENOSPC':
    case 'EDQUOT':
      msg = `disk full while writing checkpoint ${path}: the previous checkpoint is intact`;
      break;
    case 'EACCES':
    case 'EPERM':
    case 'EROFS':
      msg = `cannot write checkpoint ${path}: read-only or permission denied`;
      break;
    case 'ENOTDIR':
      msg = `cannot write checkpoint ${path}: a parent of the path is not a directory`;
      break;
    case 'ENOENT':
      msg = `cannot write checkpoint ${path}: directory ${dirname(resolve(path))} does not exist`;
      break;
    case 'EISDIR':
      msg = `cannot write checkpoint ${path}: a directory is in the way`;
      break;
    default:
      msg = `failed to write checkpoint ${path}: ${detail}; the previous checkpoint is intact`;
  }
  return withCode(new Error(msg, { cause: e }), code);
}

function dirSyncError(path: string, e: unknown): Error {
  const detail = e instanceof Error ? e.message : String(e);
  return withCode(
    new Error(`checkpoint ${path} was written, but syncing its directory failed (${detail}); it may not survive a crash`, {
      cause: e,
    }),
    errCode(e),
  );
}

function tempPath(path: string): string {
  return `${path}.tmp-${process.pid}-${randomBytes(6).toString('hex')}`;
}

/**
 * The temporary files of `path` left behind by writers that died mid-write (SIGKILL, OOM kill): names
 * `${basename(path)}.tmp-<pid>-<hex>` whose pid is not a live process on this machine. Without this
 * cleanup every crash during a save leaves one more partial file next to the checkpoint.
 */
function staleTemps(path: string, names: readonly string[]): string[] {
  const prefix = `${basename(path)}.tmp-`;
  const dir = dirname(resolve(path));
  const out: string[] = [];
  for (const name of names) {
    if (!name.startsWith(prefix)) continue;
    const m = /^(\d+)-[0-9a-f]+$/.exec(name.slice(prefix.length));
    if (!m) continue;
    const pid = Number(m[1]);
    if (pid === process.pid || !Number.isSafeInteger(pid) || pid <= 0) continue;
    try {
      process.kill(pid, 0); // alive (ours to leave alone)
    } catch (e) {
      if (errCode(e) === 'ESRCH') out.push(join(dir, name)); // EPERM: alive, another user's
    }
  }
  return out;
}

async function removeStaleTemps(path: string): Promise<void> {
  try {
    const names = await fsp.readdir(dirname(resolve(path)));
    await Promise.all(staleTemps(path, names).map((f) => fsp.rm(f, { force: true }).catch(() => undefined)));
  } catch {
    /* best effort: the checkpoint itself is written */
  }
}

function removeStaleTempsSync(path: string): void {
  try {
    for (const f of staleTemps(path, fs.readdirSync(dirname(resolve(path))))) fs.rmSync(f, { force: true });
  } catch {
    /* best effort */
  }
}

// fsync of a directory is not supported everywhere (Windows): those failures are not errors.
const DIR_SYNC_UNSUPPORTED = new Set(['EISDIR', 'EINVAL', 'EPERM', 'EBADF', 'ENOTSUP', 'EACCES']);

/**
 * Writes `bytes` to `path` atomically: into `${path}.tmp-<pid>-<random>` in the same directory, fsync,
 * rename over `path`, fsync of the directory. Readers (and a crash) see the old file or the new one,
 * never a mix. On failure the temporary file is removed and an Error with a plain message is thrown
 * (its `code` and `cause` keep the system error). After a successful write, temporary files of `path`
 * left by writers that died mid-write (their pid no longer runs) are removed.
 */
export async function writeSafetensorsFileAtomic(path: string, bytes: Uint8Array): Promise<void> {
  if (!(bytes instanceof Uint8Array)) throw new TypeError('writeSafetensorsFileAtomic: bytes must be a Uint8Array');
  const tmp = tempPath(path);
  let fh: fsp.FileHandle | undefined;
  let created = false;
  try {
    fh = await fsp.open(tmp, 'wx', 0o644);
    created = true;
    await fh.writeFile(bytes);
    await fh.sync();
    const h = fh;
    fh = undefined;
    await h.close();
    await fsp.rename(tmp, path);
    created = false;
  } catch (e) {
    await fh?.close().catch(() => undefined);
    if (created) await fsp.rm(tmp, { force: true }).catch(() => undefined);
    throw writeError(path, e);
  }
  await removeStaleTemps(path);
  let dh: fsp.FileHandle | undefined;
  try {
    dh = await fsp.open(dirname(resolve(path)), 'r');
    await dh.sync();
  } catch (e) {
    if (!DIR_SYNC_UNSUPPORTED.has(errCode(e) ?? '')) throw dirSyncError(path, e);
  } finally {
    await dh?.close().catch(() => undefined);
  }
}

/** Synchronous writeSafetensorsFileAtomic. */
export function writeSafetensorsFileAtomicSync(path: string, bytes: Uint8Array): void {
  if (!(bytes instanceof Uint8Array)) throw new TypeError('writeSafetensorsFileAtomicSync: bytes must be a Uint8Array');
  const tmp = tempPath(path);
  let fd: number | undefined;
  let created = false;
  try {
    fd = fs.openSync(tmp, 'wx', 0o644);
    created = true;
    fs.writeFileSync(fd, bytes);
    fs.fsyncSync(fd);
    const f = fd;
    fd = undefined;
    fs.closeSync(f);
    fs.renameSync(tmp, path);
    created = false;
  } catch (e) {
    if (fd !== undefined) {
      try {
        fs.closeSync(fd);
      } catch {
        /* already failing */
      }
    }
    if (created) {
      try {
        fs.rmSync(tmp, { force: true });
      } catch {
        /* already failing */
      }
    }
    throw writeError(path, e);
  }
  removeStaleTempsSync(path);
  let dfd: number | undefined;
  try {
    dfd = fs.openSync(dirname(resolve(path)), 'r');
    fs.fsyncSync(dfd);
  } catch (e) {
    if (!DIR_SYNC_UNSUPPORTED.has(errCode(e) ?? '')) throw dirSyncError(path, e);
  } finally {
    if (dfd !== undefined) fs.closeSync(dfd);
  }
}
