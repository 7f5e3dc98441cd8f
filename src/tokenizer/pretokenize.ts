// Pre-tokenisation: splitting text into the "words" that BPE works on.
//
// GPT-2's pattern is implemented by hand (gpt2PieceEnd) because a scan over character classes is
// several times faster than running the regular expression; a fuzz test checks that both give the same
// pieces. Any other pattern runs through a RegExp with the u flag (RegexSplitter).

/** GPT-2's pre-tokenisation pattern (used with the u flag), as in GPT-2's encoder.py and tiktoken. */
export const GPT2_PATTERN = "'s|'t|'re|'ve|'m|'ll|'d| ?\\p{L}+| ?\\p{N}+| ?[^\\s\\p{L}\\p{N}]+|\\s+(?!\\S)|\\s+";

/** Something that cuts text into pre-tokens: returns the end (UTF-16 index) of the piece at `i`. */
export interface Splitter {
  /** The pattern's source. */
  readonly pattern: string;
  /**
   * Calls `piece(start, end)` for each pre-token of `text.slice(start, end)` in order. `end` acts as the
   * end of the text (lookaheads see nothing after it), as when tiktoken splits between special tokens.
   */
  split(text: string, start: number, end: number, piece: (start: number, end: number) => void): void;
}

// Character classes of the GPT-2 pattern.
const OTHER = 0;
const LETTER = 1;
const NUMBER = 2;
const SPACE = 3; // JavaScript's \s

let bmpClasses: Uint8Array | null = null;
const astralClasses = new Map<number, number>();
const LETTER_RE = /^\p{L}$/u;
const NUMBER_RE = /^\p{N}$/u;

/** Class of every BMP code point, computed from this engine's own \p{L}, \p{N} and \s (so it agrees
 *  with the RegExp on this Node version). Surrogates stay OTHER: a lone one is a code point of its own
 *  in a u-mode RegExp and matches [^\s\p{L}\p{N}]. */
function classTable(): Uint8Array {
  if (bmpClasses !== null) return bmpClasses;
  const table = new Uint8Array(0x10000);
  const codes: number[] = [];
  for (let c = 0; c < 0x10000; c++) if (c < 0xd800 || c > 0xdfff) codes.push(c);
  // One string of all non-surrogate BMP code points; code unit index -> code point via `codes`.
  let all = '';
  for (let i = 0; i < codes.length; i += 4096) all += String.fromCharCode(...codes.slice(i, i + 4096));
  const mark = (re: RegExp, cls: number): void => {
    for (const m of all.matchAll(re)) {
      for (let k = m.index; k < m.index + m[0].length; k++) table[codes[k]!] = cls;
    }
  };
  mark(/\p{L}+/gu, LETTER);
  mark(/\p{N}+/gu, NUMBER);
  mark(/\s+/gu, SPACE);
  bmpClasses = table;
  return table;
}

function astralClass(cp: number): number {
  let cls = astralClasses.get(cp);
  if (cls === undefined) {
    const ch = String.fromCodePoint(cp);
    cls = LETTER_RE.test(ch) ? LETTER : NUMBER_RE.test(ch) ? NUMBER : OTHER; // no astral \s exists
    if (astralClasses.size < 1 << 16) astralClasses.set(cp, cls);
  }
  return cls;
}

/**
 * End of the GPT-2 pre-token starting at `i` (i < end), exactly as the first match of GPT2_PATTERN at
 * `i` in `text.slice(0, end)`:
 *  1. `'s 't 're 've 'm 'll 'd` (case-sensitive, whatever follows);
 *  2. an optional U+0020 then a run of letters, of numbers, or of "other" (not \s, \p{L}, \p{N});
 *  3. a whitespace run: all of it at the end of the text, else all but its last character when that
 *     leaves at least one (`\s+(?!\S)`), else the single character (`\s+`).
 */
export function gpt2PieceEnd(s: string, i: number, end: number): number {
  const table = bmpClasses ?? classTable();
  let c = s.charCodeAt(i);
  if (c === 39 && i + 1 < end) {
    const d = s.charCodeAt(i + 1);
    if (d === 115 || d === 116 || d === 109 || d === 100) return i + 2; // 's 't 'm 'd
    if (i + 2 < end) {
      const e = s.charCodeAt(i + 2);
      if ((e === 101 && (d === 114 || d === 118)) || (d === 108 && e === 108)) return i + 3; // 're 've 'll
    }
  }
  let j = i;
  if (c === 32) {
    if (i + 1 === end) return end;
    j = i + 1;
    c = s.charCodeAt(j);
  }
  let cls: number;
  let k: number;
  if (c < 0xd800 || c > 0xdbff) {
    cls = table[c]!;
    k = j + 1;
  } else {
    const lo = j + 1 < end ? s.charCodeAt(j + 1) : 0;
    if (lo >= 0xdc00 && lo <= 0xdfff) {
      cls = astralClass(0x10000 + ((c - 0xd800) << 10) + (lo - 0xdc00));
      k = j + 2;
    } else {
      cls = OTHER;
      k = j + 1;
    }
  }
  if (cls === SPACE) {
    // Whitespace run starting at i (a leading U+0020 belongs to it); \s is BMP only.
    while (k < end && table[s.charCodeAt(k)] === SPACE) k++;
    if (k === end) return end;
    return k - i >= 2 ? k - 1 : k;
  }
  while (k < end) {
    const d = s.charCodeAt(k);
    if (d < 0xd800 || d > 0xdbff) {
      if (table[d] !== cls) break;
      k++;
    } else {
      const lo = k + 1 < end ? s.charCodeAt(k + 1) : 0;
      if (lo >= 0xdc00 && lo <= 0xdfff) {
        if (astralClass(0x10000 + ((d - 0xd800) << 10) + (lo - 0xdc00)) !== cls) break;
        k += 2;
      } else {
        if (cls !== OTHER) break;
        k++;
      }
    }
  }
  return k;
}

/** GPT-2 pre-tokenisation (the hand-written scan). */
export class Gpt2Splitter implements Splitter {
  readonly pattern = GPT2_PATTERN;
  split(text: string, start: number, end: number, piece: (start: number, end: number) => void): void {
    let i = start;
    while (i < end) {
      const j = gpt2PieceEnd(text, i, end);
      piece(i, j);
      i = j;
    }
  }
}

/** Pre-tokenisation by any RegExp source (compiled with the g and u flags). Text between matches
 *  (which a pattern that does not cover everything leaves) is dropped, as tiktoken does. */
export class RegexSplitter implements Splitter {
  readonly pattern: string;
  private readonly re: RegExp;
  constructor(pattern: string) {
    this.pattern = pattern;
    try {
      this.re = new RegExp(pattern, 'gu');
    } catch (e) {
      throw new Error(`pre-tokenisation pattern ${JSON.stringify(pattern)} is not a valid RegExp with the u flag: ${(e as Error).message}`);
    }
  }
  split(text: string, start: number, end: number, piece: (start: number, end: number) => void): void {
    const sub = start === 0 && end === text.length ? text : text.slice(start, end);
    const re = this.re;
    re.lastIndex = 0;
    for (let m = re.exec(sub); m !== null; m = re.exec(sub)) {
      if (m[0].length === 0) {
        re.lastIndex++; // an empty match would loop forever
        continue;
      }
      piece(start + m.index, start + m.index + m[0].length);
    }
  }
}

/** The splitter for a pattern: the fast scan for GPT-2's, a RegExp otherwise. */
export function splitterFor(pattern: string): Splitter {
  return pattern === GPT2_PATTERN ? new Gpt2Splitter() : new RegexSplitter(pattern);
}

/** The pre-tokens of a text, as strings (for inspection and tests). */
export function pretokenize(text: string, pattern: string = GPT2_PATTERN): string[] {
  const out: string[] = [];
  splitterFor(pattern).split(text, 0, text.length, (a, b) => out.push(text.slice(a, b)));
  return out;
}
