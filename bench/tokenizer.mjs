#!/usr/bin/env node
// GPT-2 BPE encode/decode speed: our BpeTokenizer.gpt2() vs js-tiktoken's `gpt2`, measured in the same
// run on the same text. Prints one JSON line per corpus and appends them to
// bench/results/tokenizer-<date>.jsonl. Needs the compiled package: `npx tsc -p tsconfig.json` first.
//
//   node bench/tokenizer.mjs                 # 5 timed reps per corpus after 1 warm-up
//   node bench/tokenizer.mjs --reps 9 --no-save
//
// Corpora: tiny Shakespeare (../shared/data/tinyshakespeare.txt, skipped when absent), every Markdown
// file under node_modules (concatenated, separated by blank lines), TypeScript's localised diagnostic
// messages (mostly non-Latin scripts).
//
// ours_mb_s is measured with the encode cache of pre-tokens emptied before every rep (what one encode
// of a text not seen before costs; the vocabulary's memo of which token pairs merge stays warm);
// ours_warm_mb_s with the cache kept from the previous rep (text seen before). js-tiktoken has no
// cache. speedup = ours_mb_s / tiktoken_mb_s (cold); decode_speedup likewise for decode. Reps of ours
// and js-tiktoken alternate, so both see the same load. MB = 10^6 bytes of UTF-8. The first line's
// init_ms_* are the construction times of the two GPT-2 tokenizers.

import { appendFileSync, existsSync, mkdirSync, readdirSync, readFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { getEncoding } from 'js-tiktoken';
import { median, round } from './lib/stats.mjs';

const root = join(dirname(fileURLToPath(import.meta.url)), '..');
const dist = join(root, 'dist', 'tokenizer', 'index.js');
if (!existsSync(dist)) {
  console.error(`bench/tokenizer.mjs: ${dist} is missing; run \`npx tsc -p tsconfig.json\` first`);
  process.exit(1);
}
const { BpeTokenizer } = await import(dist);

const { values: opt } = parseArgs({
  options: {
    reps: { type: 'string', default: '5' },
    'no-save': { type: 'boolean', default: false },
    out: { type: 'string' },
    shakespeare: { type: 'string', default: join(root, '..', 'shared', 'data', 'tinyshakespeare.txt') },
  },
});
const reps = Number(opt.reps);
if (!Number.isInteger(reps) || reps < 1) throw new Error(`--reps: expected an integer >= 1, got ${opt.reps}`);

function findFiles(dir, keep) {
  const out = [];
  const walk = (d) => {
    let entries;
    try {
      entries = readdirSync(d, { withFileTypes: true });
    } catch {
      return;
    }
    for (const e of entries) {
      const p = join(d, e.name);
      if (e.isDirectory()) walk(p);
      else if (e.isFile() && keep(e.name)) out.push(p);
    }
  };
  walk(dir);
  return out.sort();
}

const corpora = [];
if (existsSync(opt.shakespeare)) corpora.push({ corpus: 'tinyshakespeare', text: readFileSync(opt.shakespeare, 'utf8') });
else console.error(`bench/tokenizer.mjs: ${opt.shakespeare} is absent; tiny Shakespeare skipped`);
const nm = join(root, 'node_modules');
const md = findFiles(nm, (n) => n.toLowerCase().endsWith('.md'));
corpora.push({ corpus: `markdown(${md.length} files under node_modules)`, text: md.map((p) => readFileSync(p, 'utf8')).join('\n\n') });
const diag = findFiles(join(nm, 'typescript', 'lib'), (n) => n === 'diagnosticMessages.generated.json');
if (diag.length > 0) corpora.push({ corpus: `typescript-diagnostics(${diag.length} languages)`, text: diag.map((p) => readFileSync(p, 'utf8')).join('\n\n') });

const tStart = performance.now();
const ours = BpeTokenizer.gpt2();
const oursInitMs = performance.now() - tStart;
const t1 = performance.now();
const tiktoken = getEncoding('gpt2');
const tiktokenInitMs = performance.now() - t1;

/**
 * Median seconds of each function over `reps` rounds after one untimed round. A round runs every
 * function once, in turn, so that all of them see the same machine load (this matters on a shared
 * machine). `prepare[k]` runs untimed before function k.
 */
function timeInterleaved(fns, prepare = []) {
  const times = fns.map(() => []);
  for (let r = 0; r <= reps; r++) {
    fns.forEach((fn, k) => {
      prepare[k]?.();
      const t0 = process.hrtime.bigint();
      fn();
      const dt = Number(process.hrtime.bigint() - t0) / 1e9;
      if (r > 0) times[k].push(dt);
    });
  }
  return times.map(median);
}

const date = new Date().toISOString();
const lines = [];
for (const { corpus, text } of corpora) {
  const bytes = Buffer.byteLength(text);
  const mb = bytes / 1e6;
  const a = ours.encodeOrdinary(text);
  const b = tiktoken.encode(text, [], []);
  const identical = a.length === b.length && a.every((v, i) => v === b[i]);
  const [cold, theirs, warm] = timeInterleaved(
    [() => ours.encodeOrdinary(text), () => tiktoken.encode(text, [], []), () => ours.encodeOrdinary(text)],
    [() => ours.clearCache()],
  );
  const ids = Array.from(a);
  const [decOurs, decTheirs] = timeInterleaved([() => ours.decode(a), () => tiktoken.decode(ids)]);
  const line = {
    bench: 'tokenizer',
    corpus,
    bytes,
    chars: text.length,
    tokens: a.length,
    identical,
    reps,
    ours_mb_s: round(mb / cold),
    ours_warm_mb_s: round(mb / warm),
    tiktoken_mb_s: round(mb / theirs),
    speedup: round(theirs / cold),
    decode_ours_mb_s: round(mb / decOurs),
    decode_tiktoken_mb_s: round(mb / decTheirs),
    decode_speedup: round(decTheirs / decOurs),
    init_ms_ours: round(oursInitMs, 1),
    init_ms_tiktoken: round(tiktokenInitMs, 1),
    node: process.version,
    date,
  };
  console.log(JSON.stringify(line));
  lines.push(line);
}

if (!opt['no-save']) {
  const dir = join(root, 'bench', 'results');
  mkdirSync(dir, { recursive: true });
  const file = opt.out ?? join(dir, `tokenizer-${date.slice(0, 10)}.jsonl`);
  appendFileSync(file, lines.map((l) => JSON.stringify(l)).join('\n') + '\n');
  console.error(`bench/tokenizer.mjs: appended ${lines.length} lines to ${file}`);
}
