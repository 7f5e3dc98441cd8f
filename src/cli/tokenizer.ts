// Tokenizers from the command line: `--tokenizer char|gpt2|bpe:V` for training, and `rt tokenizer train`.
import { readFile, readdir, stat, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { BpeTokenizer, CharTokenizer, type Tokenizer } from '../tokenizer/index.js';
import { int, UsageError, type Flags } from './args.js';

// Training a BPE vocabulary or collecting characters reads at most this much of the corpus.
const SAMPLE_BYTES = 64 * 1024 * 1024;

/** The text of a file, or of the .txt/.md files of a folder, up to `limit` bytes. */
export async function readCorpus(path: string, limit = SAMPLE_BYTES): Promise<string> {
  const s = await stat(path).catch(() => {
    throw new UsageError(`--data ${path}: no such file or folder`);
  });
  if (s.isFile()) {
    const buf = await readFile(path);
    return buf.subarray(0, Math.min(buf.length, limit)).toString('utf8');
  }
  const parts: string[] = [];
  let total = 0;
  const walk = async (dir: string): Promise<void> => {
    for (const e of (await readdir(dir, { withFileTypes: true })).sort((a, b) => a.name.localeCompare(b.name))) {
      if (total >= limit || e.name.startsWith('.')) continue;
      const p = join(dir, e.name);
      if (e.isDirectory()) await walk(p);
      else if (/\.(txt|md)$/i.test(e.name)) {
        const t = (await readFile(p)).toString('utf8');
        parts.push(t);
        total += t.length;
      }
    }
  };
  await walk(path);
  return parts.join('\n');
}

/** `char` (the corpus's distinct characters), `gpt2`, or `bpe:V` (a byte-level BPE trained on the corpus). */
export async function makeTokenizer(spec: string, corpusPath: string): Promise<Tokenizer> {
  if (spec === 'gpt2') return BpeTokenizer.gpt2();
  if (spec === 'char') return CharTokenizer.fromText(await readCorpus(corpusPath, Number.MAX_SAFE_INTEGER));
  const m = /^bpe:(\d+)$/.exec(spec);
  if (m) {
    const V = Number(m[1]);
    if (V < 257) throw new UsageError(`--tokenizer bpe:${V}: a byte-level vocabulary needs at least 257 tokens`);
    return BpeTokenizer.train(await readCorpus(corpusPath), V);
  }
  throw new UsageError(`--tokenizer: expected char, gpt2 or bpe:V, got '${spec}'`);
}

/** rt tokenizer train --data FILE --vocab V --out FILE.json */
export async function tokenizerCommand(sub: string | undefined, flags: Flags): Promise<number> {
  if (sub !== 'train') throw new UsageError(`rt tokenizer: expected the subcommand 'train', got '${String(sub)}'`);
  if (typeof flags.data !== 'string') throw new UsageError('--data FILE: required');
  if (typeof flags.out !== 'string') throw new UsageError('--out FILE.json: required');
  const V = int(flags, 'vocab', 4096);
  const t0 = performance.now();
  const tok = BpeTokenizer.train(await readCorpus(flags.data), V);
  await writeFile(flags.out, JSON.stringify(tok.toJSON()));
  process.stdout.write(JSON.stringify({ vocabSize: tok.vocabSize, seconds: Number(((performance.now() - t0) / 1000).toFixed(2)), out: flags.out }) + '\n');
  return 0;
}
