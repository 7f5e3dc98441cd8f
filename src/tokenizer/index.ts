// Tokenizers: character-level and GPT-2 compatible byte-level BPE (with training).
import { BpeTokenizer, type BpeTokenizerJSON } from './bpe.js';
import { CharTokenizer, type CharTokenizerJSON } from './char.js';

export { CharTokenizer, type CharTokenizerJSON } from './char.js';
export {
  BpeTokenizer,
  type BpeTokenizerJSON,
  type BpeTokenizerOptions,
  type EncodeOptions,
  type JsTiktokenRanks,
  type SpecialTokenSet,
  type TokenDecoder,
  type TrainBpeOptions,
} from './bpe.js';
export { trainBpe, type TrainBpeResult } from './train.js';
export { GPT2_PATTERN, pretokenize } from './pretokenize.js';

/** What the model and the generator need from any tokenizer. */
export interface Tokenizer {
  readonly vocabSize: number;
  encode(text: string): Int32Array;
  decode(ids: ArrayLike<number>): string;
  toJSON(): TokenizerJSON;
}

export type TokenizerJSON = CharTokenizerJSON | BpeTokenizerJSON;

/** Rebuilds a tokenizer from its JSON (as stored in a checkpoint's metadata), by its `type`. */
export function tokenizerFromJSON(json: unknown): CharTokenizer | BpeTokenizer {
  let parsed: unknown = json;
  if (typeof json === 'string') {
    try {
      parsed = JSON.parse(json);
    } catch (e) {
      throw new Error(`tokenizer JSON: not valid JSON (${(e as Error).message})`);
    }
  }
  const type = typeof parsed === 'object' && parsed !== null ? (parsed as { type?: unknown }).type : undefined;
  // The annotations check at compile time that both classes implement Tokenizer.
  if (type === 'char') {
    const tok: Tokenizer & CharTokenizer = CharTokenizer.fromJSON(parsed);
    return tok;
  }
  if (type === 'bpe') {
    const tok: Tokenizer & BpeTokenizer = BpeTokenizer.fromJSON(parsed);
    return tok;
  }
  throw new Error(`tokenizer JSON: type is ${JSON.stringify(type)}, expected "char" or "bpe"`);
}
