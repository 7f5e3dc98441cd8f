// Character-level tokenizer, like nanoGPT's shakespeare_char: the vocabulary is the sorted set of
// distinct characters (Unicode code points, not UTF-16 code units) of a corpus; id = index in it.

/** The serialised form (`toJSON()` / `CharTokenizer.fromJSON()`). */
export interface CharTokenizerJSON {
  type: 'char';
  version: 1;
  /** The vocabulary in id order, as one string (code point i is id i). */
  chars: string;
}

/** Code points of a string (a lone surrogate is a code point of its own, as in codePointAt). */
function codePoints(s: string): number[] {
  const out: number[] = [];
  for (let i = 0; i < s.length; i++) {
    const cp = s.codePointAt(i)!;
    out.push(cp);
    if (cp > 0xffff) i++;
  }
  return out;
}

function describe(cp: number): string {
  const hex = `U+${cp.toString(16).toUpperCase().padStart(4, '0')}`;
  const printable = cp > 0x20 && cp !== 0x7f && !(cp >= 0xd800 && cp <= 0xdfff);
  return printable ? `${JSON.stringify(String.fromCodePoint(cp))} (${hex})` : hex;
}

export class CharTokenizer {
  /** Number of symbols. */
  readonly vocabSize: number;
  /** The symbols in id order (code points). */
  readonly chars: readonly string[];
  private readonly bmp: Int32Array; // BMP code point -> id, -1 if absent
  private readonly astral = new Map<number, number>();

  /** From the vocabulary in id order: an array of single code points, or a string of them. */
  constructor(chars: Iterable<string> | string) {
    const list = typeof chars === 'string' ? codePoints(chars).map((cp) => String.fromCodePoint(cp)) : [...chars];
    this.bmp = new Int32Array(0x10000).fill(-1);
    list.forEach((ch, id) => {
      if (typeof ch !== 'string' || ch.length === 0 || codePoints(ch).length !== 1) {
        throw new Error(`CharTokenizer: symbol ${id} (${JSON.stringify(ch)}) is not a single code point`);
      }
      const cp = ch.codePointAt(0)!;
      if ((cp < 0x10000 ? this.bmp[cp] : this.astral.get(cp) ?? -1) !== -1) throw new Error(`CharTokenizer: symbol ${describe(cp)} appears twice`);
      if (cp < 0x10000) this.bmp[cp] = id;
      else this.astral.set(cp, id);
    });
    this.chars = list;
    this.vocabSize = list.length;
  }

  /** The sorted distinct code points of a corpus (one string or many). */
  static fromText(text: string | Iterable<string>): CharTokenizer {
    const seen = new Set<number>();
    for (const t of typeof text === 'string' ? [text] : text) {
      for (let i = 0; i < t.length; i++) {
        const cp = t.codePointAt(i)!;
        seen.add(cp);
        if (cp > 0xffff) i++;
      }
    }
    return new CharTokenizer([...seen].sort((a, b) => a - b).map((cp) => String.fromCodePoint(cp)));
  }

  /** Ids of the text's code points; a character outside the vocabulary throws, naming it and where it is. */
  encode(text: string): Int32Array {
    const out = new Int32Array(text.length);
    let n = 0;
    for (let i = 0; i < text.length; i++) {
      const c = text.charCodeAt(i);
      let id: number;
      if (c < 0xd800 || c > 0xdbff) id = this.bmp[c]!;
      else {
        const cp = text.codePointAt(i)!;
        if (cp > 0xffff) {
          id = this.astral.get(cp) ?? -1;
          if (id < 0) this.unknown(text, i, cp, n);
          out[n++] = id;
          i++;
          continue;
        }
        id = this.bmp[c]!;
      }
      if (id < 0) this.unknown(text, i, c, n);
      out[n++] = id;
    }
    return n === out.length ? out : out.slice(0, n);
  }

  private unknown(text: string, index: number, cp: number, position: number): never {
    const context = JSON.stringify(text.slice(Math.max(0, index - 20), index + 20));
    throw new Error(
      `CharTokenizer.encode: character ${describe(cp)} at position ${position} (string index ${index}) is not in the vocabulary ` +
        `(${this.vocabSize} symbols); context: ${context}`,
    );
  }

  /** The text of a sequence of ids. */
  decode(ids: ArrayLike<number>): string {
    const parts: string[] = new Array<string>(ids.length);
    for (let i = 0; i < ids.length; i++) {
      const id = ids[i]!;
      const ch = this.chars[id];
      if (ch === undefined || !Number.isInteger(id)) throw new Error(`CharTokenizer.decode: id ${id} at position ${i} is not in [0, ${this.vocabSize})`);
      parts[i] = ch;
    }
    return parts.join('');
  }

  toJSON(): CharTokenizerJSON {
    return { type: 'char', version: 1, chars: this.chars.join('') };
  }

  static fromJSON(json: unknown): CharTokenizer {
    if (typeof json === 'string') {
      try {
        json = JSON.parse(json);
      } catch (e) {
        throw new Error(`char tokenizer JSON: not valid JSON (${(e as Error).message})`);
      }
    }
    if (typeof json !== 'object' || json === null) throw new Error('char tokenizer JSON: expected an object');
    const j = json as Record<string, unknown>;
    if (j['type'] !== 'char') throw new Error(`char tokenizer JSON: type is ${JSON.stringify(j['type'])}, expected "char"`);
    if (j['version'] !== 1) throw new Error(`char tokenizer JSON: version is ${JSON.stringify(j['version'])}, expected 1`);
    if (typeof j['chars'] !== 'string') throw new Error('char tokenizer JSON: chars must be a string');
    return new CharTokenizer(j['chars']);
  }
}
