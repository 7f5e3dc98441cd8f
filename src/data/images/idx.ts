// IDX files (the MNIST / Fashion-MNIST format), plain or gzipped.
//
//   bytes 0-1   0x00 0x00
//   byte  2     element type: 0x08 unsigned byte (the only one image sets use, and the only one read here)
//   byte  3     number of dimensions k
//   then k big-endian uint32 sizes, then the elements, row-major.
//
// Labels are idx1 ([count]); images idx3 ([count, rows, cols]).
import { readFile } from 'node:fs/promises';
import { gunzipSync } from 'node:zlib';

/** A decoded IDX array of unsigned bytes. */
export interface IdxArray {
  shape: number[];
  data: Uint8Array;
}

const UBYTE = 0x08;

/** Whether `bytes` starts with the gzip magic number. */
export function isGzip(bytes: Uint8Array): boolean {
  return bytes.length >= 2 && bytes[0] === 0x1f && bytes[1] === 0x8b;
}

/** Decodes an IDX file held in memory (gunzipping it first when it is gzipped). `name` is used in errors. */
export function parseIdx(raw: Uint8Array, name = 'IDX data'): IdxArray {
  const bytes = isGzip(raw) ? new Uint8Array(gunzipSync(raw)) : raw;
  if (bytes.length < 4) throw new RangeError(`${name}: expected an IDX header of at least 4 bytes, got ${bytes.length}`);
  if (bytes[0] !== 0 || bytes[1] !== 0) throw new RangeError(`${name}: expected an IDX file (first two bytes 0x00 0x00), got 0x${hex(bytes[0]!)} 0x${hex(bytes[1]!)}`);
  if (bytes[2] !== UBYTE) throw new RangeError(`${name}: expected element type 0x08 (unsigned byte), got 0x${hex(bytes[2]!)}`);
  const k = bytes[3]!;
  if (k < 1) throw new RangeError(`${name}: expected at least one dimension, got 0`);
  const headerBytes = 4 + 4 * k;
  if (bytes.length < headerBytes) throw new RangeError(`${name}: header of ${k} dimensions needs ${headerBytes} bytes, the file has ${bytes.length}`);
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const shape: number[] = [];
  let count = 1;
  for (let i = 0; i < k; i++) {
    const n = view.getUint32(4 + 4 * i, false);
    shape.push(n);
    count *= n;
  }
  const have = bytes.length - headerBytes;
  if (have !== count) {
    throw new RangeError(`${name}: shape [${shape.join(', ')}] needs ${count} bytes of data, the file has ${have}`);
  }
  return { shape, data: bytes.subarray(headerBytes) };
}

/** Reads and decodes an IDX file (plain or .gz). */
export async function readIdx(path: string): Promise<IdxArray> {
  return parseIdx(new Uint8Array(await readFile(path)), path);
}

/** Encodes unsigned bytes as an IDX file (for tests and for writing subsets). */
export function encodeIdx(shape: readonly number[], data: Uint8Array): Uint8Array {
  const count = shape.reduce((a, b) => a * b, 1);
  if (count !== data.length) throw new RangeError(`encodeIdx data: expected ${count} bytes for shape [${shape.join(', ')}], got ${data.length}`);
  const out = new Uint8Array(4 + 4 * shape.length + data.length);
  const view = new DataView(out.buffer);
  out[2] = UBYTE;
  out[3] = shape.length;
  shape.forEach((n, i) => view.setUint32(4 + 4 * i, n, false));
  out.set(data, 4 + 4 * shape.length);
  return out;
}

function hex(b: number): string {
  return b.toString(16).padStart(2, '0');
}
