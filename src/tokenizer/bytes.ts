// Byte helpers shared by the tokenizers: UTF-8 encoding of a slice of a JS string (lone surrogates
// become U+FFFD, exactly like TextEncoder), base64, and GPT-2's byte <-> unicode table (needed only to
// read and write `encoder.json` / `vocab.bpe`; the tokenizer itself works on bytes).

/** UTF-8 bytes of U+FFFD, what a lone surrogate encodes to. */
const REPLACEMENT = [0xef, 0xbf, 0xbd] as const;

/**
 * Writes the UTF-8 encoding of `s.slice(start, end)` into `out` at `pos` and returns the new position.
 * `out` must have room for `3 * (end - start)` bytes (the worst case). Lone surrogates are written as
 * U+FFFD (EF BF BD), as `TextEncoder` does.
 */
export function utf8EncodeInto(s: string, start: number, end: number, out: Uint8Array, pos: number): number {
  for (let i = start; i < end; i++) {
    let c = s.charCodeAt(i);
    if (c < 0x80) {
      out[pos++] = c;
    } else if (c < 0x800) {
      out[pos++] = 0xc0 | (c >> 6);
      out[pos++] = 0x80 | (c & 63);
    } else if (c >= 0xd800 && c <= 0xdfff) {
      const lo = i + 1 < end ? s.charCodeAt(i + 1) : 0;
      if (c <= 0xdbff && lo >= 0xdc00 && lo <= 0xdfff) {
        c = 0x10000 + ((c - 0xd800) << 10) + (lo - 0xdc00);
        i++;
        out[pos++] = 0xf0 | (c >> 18);
        out[pos++] = 0x80 | ((c >> 12) & 63);
        out[pos++] = 0x80 | ((c >> 6) & 63);
        out[pos++] = 0x80 | (c & 63);
      } else {
        out[pos++] = REPLACEMENT[0];
        out[pos++] = REPLACEMENT[1];
        out[pos++] = REPLACEMENT[2];
      }
    } else {
      out[pos++] = 0xe0 | (c >> 12);
      out[pos++] = 0x80 | ((c >> 6) & 63);
      out[pos++] = 0x80 | (c & 63);
    }
  }
  return pos;
}

/** The UTF-8 bytes of a string (lone surrogates as U+FFFD). */
export function utf8Encode(s: string): Uint8Array {
  const out = new Uint8Array(3 * s.length);
  const n = utf8EncodeInto(s, 0, s.length, out, 0);
  return out.slice(0, n);
}

export function toBase64(bytes: Uint8Array): string {
  return Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength).toString('base64');
}

const B64_ALPHABET = 'ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/';
const B64_VALUE = new Int8Array(128).fill(-1);
for (let i = 0; i < 64; i++) B64_VALUE[B64_ALPHABET.charCodeAt(i)] = i;

/** Decodes standard (padded) base64; throws, naming `what`, on anything else. */
export function fromBase64(s: string, what: string): Uint8Array {
  const bad = (): never => {
    throw new Error(`${what}: ${JSON.stringify(s.length > 80 ? s.slice(0, 80) + '...' : s)} is not base64`);
  };
  if (s.length % 4 !== 0) bad();
  let pad = 0;
  if (s.length > 0 && s.charCodeAt(s.length - 1) === 61) pad = s.charCodeAt(s.length - 2) === 61 ? 2 : 1;
  const out = new Uint8Array((s.length / 4) * 3 - pad);
  let o = 0;
  for (let i = 0; i < s.length; i += 4) {
    const last = i + 4 === s.length;
    const c0 = s.charCodeAt(i);
    const c1 = s.charCodeAt(i + 1);
    const c2 = s.charCodeAt(i + 2);
    const c3 = s.charCodeAt(i + 3);
    const v0 = c0 < 128 ? B64_VALUE[c0]! : -1;
    const v1 = c1 < 128 ? B64_VALUE[c1]! : -1;
    const v2 = last && pad === 2 ? 0 : c2 < 128 ? B64_VALUE[c2]! : -1;
    const v3 = last && pad >= 1 ? 0 : c3 < 128 ? B64_VALUE[c3]! : -1;
    if ((v0 | v1 | v2 | v3) < 0) bad();
    const n = (v0 << 18) | (v1 << 12) | (v2 << 6) | v3;
    out[o++] = n >> 16;
    if (o < out.length) out[o++] = (n >> 8) & 255;
    if (o < out.length) out[o++] = n & 255;
  }
  return out;
}

/** A byte string as a JS string of code units 0..255, usable as a Map key. */
export function bytesKey(bytes: Uint8Array, start = 0, end = bytes.length): string {
  let k = '';
  for (let i = start; i < end; i++) k += String.fromCharCode(bytes[i]!);
  return k;
}

export function concatBytes(a: Uint8Array, b: Uint8Array): Uint8Array {
  const out = new Uint8Array(a.length + b.length);
  out.set(a, 0);
  out.set(b, a.length);
  return out;
}

let byteToUnicodeTable: string[] | null = null;
let unicodeToByteTable: Map<string, number> | null = null;

/**
 * GPT-2's `bytes_to_unicode`: the printable Latin-1 bytes ('!'..'~', '¡'..'¬', '®'..'ÿ') map to
 * themselves, the other 68 bytes to U+0100.. in byte order. `encoder.json` and `vocab.bpe` spell tokens
 * with these characters.
 */
export function byteToUnicode(): readonly string[] {
  if (byteToUnicodeTable === null) {
    const table = new Array<string>(256);
    const printable = (b: number): boolean => (b >= 33 && b <= 126) || (b >= 161 && b <= 172) || (b >= 174 && b <= 255);
    let n = 0;
    for (let b = 0; b < 256; b++) table[b] = String.fromCharCode(printable(b) ? b : 256 + n++);
    byteToUnicodeTable = table;
  }
  return byteToUnicodeTable;
}

function unicodeToByte(): Map<string, number> {
  if (unicodeToByteTable === null) {
    unicodeToByteTable = new Map(byteToUnicode().map((ch, b) => [ch, b]));
  }
  return unicodeToByteTable;
}

/** Bytes of a token written in GPT-2's byte-to-unicode alphabet; throws on a character outside it. */
export function gpt2UnicodeToBytes(token: string, what: string): Uint8Array {
  const table = unicodeToByte();
  const out = new Uint8Array(token.length);
  for (let i = 0; i < token.length; i++) {
    const b = table.get(token[i]!);
    if (b === undefined) {
      throw new Error(
        `${what}: token ${JSON.stringify(token)} has character U+${token.charCodeAt(i).toString(16).toUpperCase().padStart(4, '0')} ` +
          `at position ${i}, which is not in GPT-2's byte-to-unicode alphabet`,
      );
    }
    out[i] = b;
  }
  return out;
}

/** A byte string written in GPT-2's byte-to-unicode alphabet. */
export function bytesToGpt2Unicode(bytes: Uint8Array): string {
  const table = byteToUnicode();
  let s = '';
  for (let i = 0; i < bytes.length; i++) s += table[bytes[i]!]!;
  return s;
}
