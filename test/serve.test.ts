// The inference server over loopback: routes and their answers against the library (generate() and
// model.logits()), per-request determinism under continuous batching, SSE framing, input validation,
// the limits (413, 503 + Retry-After, 504), client disconnects freeing their slot, `rt serve`
// draining on SIGTERM, and its thread settings (the rt entry sizing libuv's pool).
import { spawn, spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as fsp from 'node:fs/promises';
import * as os from 'node:os';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { CharTokenizer, RecurrentTransformer, SequenceSampler, createServer, generate, saveCheckpoint, type GenerateOptions, type RunningServer } from '../src/index.js';
import { AbortedError } from '../src/serve/scheduler.js';
import { perturbWeights, worstDecoderError } from './decoder-check.js';
import { ensureCli } from './cli-build.js';
import { referenceLogprob } from './score-check.js';

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const CORPUS = 'to be or not to be, that is the question. whether tis nobler in the mind to suffer. ';
const tok = CharTokenizer.fromText(CORPUS);
// The small model of the correctness tests, and a long one (maxLen 8192) whose requests last long
// enough (a few hundred ms) to be queued, abandoned, timed out or drained.
const model = new RecurrentTransformer({ vocabSize: tok.vocabSize, d: 16, heads: 2, window: 4, maxLen: 256, seed: 7 });
const longModel = new RecurrentTransformer({ vocabSize: tok.vocabSize, d: 16, heads: 2, window: 4, maxLen: 8192, seed: 3 });
const LONG = 6000; // tokens of a "long" request

interface Reply {
  status: number;
  headers: Headers;
  text: string;
  json: any; // eslint-disable-line @typescript-eslint/no-explicit-any -- response bodies are checked field by field
}

async function request(base: string, route: string, body?: unknown, init: RequestInit = {}): Promise<Reply> {
  const r = await fetch(base + route, {
    method: body === undefined ? 'GET' : 'POST',
    headers: { 'content-type': 'application/json' },
    body: body === undefined ? undefined : typeof body === 'string' ? body : JSON.stringify(body),
    ...init,
  });
  const text = await r.text();
  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch {
    json = undefined;
  }
  return { status: r.status, headers: r.headers, text, json };
}

/** The data lines of a Server-Sent Events body, in order. */
function sseData(body: string): string[] {
  expect(body.endsWith('\n\n')).toBe(true);
  return body
    .split('\n\n')
    .filter((e) => e.length > 0)
    .map((e) => {
      expect(e.startsWith('data: ')).toBe(true);
      return e.slice('data: '.length);
    });
}

async function reference(prompt: string, opts: GenerateOptions): Promise<{ text: string; tokens: number }> {
  let text = '';
  let tokens = 0;
  for await (const t of generate(model, prompt, { tokenizer: tok, ...opts })) {
    text += t.text;
    if (t.token >= 0) tokens++;
  }
  return { text, tokens };
}

async function until(cond: () => Promise<boolean>, ms: number): Promise<boolean> {
  const end = Date.now() + ms;
  while (Date.now() < end) {
    if (await cond()) return true;
    await new Promise((r) => setTimeout(r, 10));
  }
  return cond();
}

const health = async (base: string): Promise<{ ok: boolean; active: number; queued: number }> => (await request(base, '/healthz')).json;

let srv: RunningServer;
let base: string;
beforeAll(async () => {
  srv = await createServer({ model, tokenizer: tok, port: 0, maxBatch: 4, maxTokensLimit: 100, maxBodyBytes: 4096 });
  base = srv.url;
  expect(base).toMatch(/^http:\/\/127\.0\.0\.1:\d+$/);
});
afterAll(async () => {
  await srv?.close();
  model.dispose();
  longModel.dispose();
});

describe('serve: routes', () => {
  it('GET /healthz and GET /v1/model', async () => {
    const h = await request(base, '/healthz');
    expect(h.status).toBe(200);
    expect(h.headers.get('content-type')).toMatch(/application\/json/);
    expect(h.json).toEqual({ ok: true, active: 0, queued: 0 });
    const m = await request(base, '/v1/model');
    expect(m.status).toBe(200);
    expect(m.json.config).toEqual(JSON.parse(JSON.stringify(model.config)));
    expect(m.json.parameters).toBe(model.parameterCount());
    expect(m.json.tokenizer).toEqual({ type: 'char', vocabSize: tok.vocabSize });
    expect(m.json.maxBatch).toBe(4);
  });

  it('POST /v1/generate: 8 concurrent requests (4 slots) each equal a sequential generate() run', async () => {
    // Different prompts, lengths and sampling options: sequences join and leave the batch at different
    // steps and slots are reused, yet each request's text must not depend on its neighbours.
    const cases = Array.from({ length: 8 }, (_, i) => ({
      prompt: ['to be', 'that is', 'the question', 'whether', 'nobler in the mind', 'o', 'suffer', 'not to be'][i]!,
      maxTokens: 20 + 7 * i,
      seed: 100 + i,
      ...(i % 3 === 1 ? { temperature: 0.7, topK: 5 } : i % 3 === 2 ? { temperature: 1.3, topP: 0.9 } : {}),
    }));
    const replies = await Promise.all(cases.map((c) => request(base, '/v1/generate', c)));
    for (const [i, c] of cases.entries()) {
      const r = replies[i]!;
      expect(r.status, r.text).toBe(200);
      const { prompt, ...opts } = c;
      const ref = await reference(prompt, opts);
      expect(r.json.text, `request ${i}`).toBe(ref.text);
      expect(r.json).toMatchObject({ tokens: c.maxTokens, promptTokens: prompt.length, finishReason: 'length' });
      expect(ref.tokens).toBe(c.maxTokens);
    }
    // Different seeds give different texts (the seed reaches the sampler).
    expect(new Set(replies.map((r) => r.json.text)).size).toBe(8);
    expect(await health(base)).toEqual({ ok: true, active: 0, queued: 0 });
  });

  it("finishReason: 'length' at maxTokens, 'stop' before a stop string (never emitted), 0 tokens", async () => {
    const full = await request(base, '/v1/generate', { prompt: 'to be', maxTokens: 60, seed: 3 });
    expect(full.json.finishReason).toBe('length');
    const text: string = full.json.text;
    const stop = text.slice(25, 27);
    const cut = text.indexOf(stop);
    const stopped = await request(base, '/v1/generate', { prompt: 'to be', maxTokens: 60, seed: 3, stop: ['@@never', stop] });
    expect(stopped.status).toBe(200);
    expect(stopped.json.finishReason).toBe('stop');
    expect(stopped.json.text).toBe(text.slice(0, cut));
    expect(stopped.json.text).toBe((await reference('to be', { maxTokens: 60, seed: 3, stop: ['@@never', stop] })).text);
    const none = await request(base, '/v1/generate', { prompt: 'to be', maxTokens: 0 });
    expect(none.json).toMatchObject({ text: '', tokens: 0, finishReason: 'length' });
  });

  it('stream: true sends SSE events whose texts add up to the JSON answer, then [DONE]', async () => {
    for (const body of [
      { prompt: 'that is', maxTokens: 40, seed: 9, temperature: 0.8 },
      { prompt: 'to be', maxTokens: 60, seed: 3, stop: [] as string[] },
    ]) {
      const json = await request(base, '/v1/generate', body);
      const res = await fetch(base + '/v1/generate', { method: 'POST', body: JSON.stringify({ ...body, stream: true }) });
      expect(res.status).toBe(200);
      expect(res.headers.get('content-type')).toMatch(/text\/event-stream/);
      const data = sseData(await res.text());
      expect(data[data.length - 1]).toBe('[DONE]');
      const events = data.slice(0, -1).map((d) => JSON.parse(d) as { token?: number; text?: string; done?: boolean; tokens?: number; finishReason?: string });
      const done = events[events.length - 1]!;
      expect(done).toEqual({ done: true, tokens: json.json.tokens, finishReason: json.json.finishReason });
      const tokens = events.slice(0, -1);
      expect(tokens.every((e) => typeof e.token === 'number' && typeof e.text === 'string')).toBe(true);
      expect(tokens.map((e) => e.text).join('')).toBe(json.json.text);
      expect(tokens.filter((e) => e.token! >= 0)).toHaveLength(body.maxTokens);
    }
    // A stop string in a stream: the same cut as the JSON answer.
    const full = (await request(base, '/v1/generate', { prompt: 'not', maxTokens: 50, seed: 4 })).json.text as string;
    const stop = full.slice(30, 33);
    const json = await request(base, '/v1/generate', { prompt: 'not', maxTokens: 50, seed: 4, stop: [stop] });
    const res = await fetch(base + '/v1/generate', { method: 'POST', body: JSON.stringify({ prompt: 'not', maxTokens: 50, seed: 4, stop: [stop], stream: true }) });
    const events = sseData(await res.text()).slice(0, -1).map((d) => JSON.parse(d));
    expect(events.slice(0, -1).map((e: { text: string }) => e.text).join('')).toBe(json.json.text);
    expect(json.json.text).toBe(full.slice(0, full.indexOf(stop)));
    expect(events[events.length - 1]).toMatchObject({ done: true, finishReason: 'stop' });
  });

  it('POST /v1/score equals the log-softmax sum from model.logits() on the whole text', async () => {
    for (const text of ['to be or not to be', 'the question. whether tis nobler in the mind to suffer', 'ab']) {
      const ids = Array.from(tok.encode(text));
      const ref = await referenceLogprob(model, ids, tok.vocabSize);
      const r = await request(base, '/v1/score', { text });
      expect(r.status, r.text).toBe(200);
      expect(Math.abs(r.json.logprob - ref)).toBeLessThan(1e-4);
      expect(r.json.tokens).toBe(ids.length);
      expect(r.json.scored).toBe(ids.length - 1);
      expect(r.json.perplexity).toBeCloseTo(Math.exp(-ref / (ids.length - 1)), 4);
    }
    // Scores run in the same batch as generations without changing either.
    const gen = { prompt: 'to be', maxTokens: 30, seed: 5 };
    const [g, s] = await Promise.all([request(base, '/v1/generate', gen), request(base, '/v1/score', { text: 'to be or not to be' })]);
    expect(g.json.text).toBe((await reference('to be', { maxTokens: 30, seed: 5 })).text);
    const alone = await request(base, '/v1/score', { text: 'to be or not to be' });
    expect(Math.abs(s.json.logprob - alone.json.logprob)).toBeLessThan(1e-5);
  });
});

describe('serve: bad input', () => {
  it('answers each mistake with a JSON error naming the field, and stays up', async () => {
    const long = 'to be '.repeat(40); // 240 characters, maxLen 256
    const cases: [string, string | object, number, string | undefined, RegExp?][] = [
      ['/v1/generate', '{"prompt": "to', 400, undefined, /JSON/],
      ['/v1/generate', '[1, 2]', 400, undefined, /object/],
      ['/v1/generate', '"to be"', 400, undefined, /object/],
      ['/v1/generate', 'null', 400, undefined, /object/],
      ['/v1/generate', {}, 400, 'prompt'],
      ['/v1/generate', { prompt: '' }, 400, 'prompt'],
      ['/v1/generate', { prompt: 5 }, 400, 'prompt'],
      ['/v1/generate', { prompt: 'to', maxTokens: -1 }, 400, 'maxTokens'],
      ['/v1/generate', { prompt: 'to', maxTokens: 1.5 }, 400, 'maxTokens'],
      ['/v1/generate', { prompt: 'to', maxTokens: 'x' }, 400, 'maxTokens'],
      ['/v1/generate', { prompt: 'to', maxTokens: 101 }, 400, 'maxTokens', /at most 100/],
      ['/v1/generate', { prompt: long, maxTokens: 17 }, 400, 'maxTokens', /maxLen 256/],
      ['/v1/generate', { prompt: long + long }, 400, 'prompt', /maxLen 256/],
      ['/v1/generate', { prompt: 'to', temperature: -1 }, 400, 'temperature'],
      ['/v1/generate', { prompt: 'to', temperature: 'hot' }, 400, 'temperature'],
      ['/v1/generate', { prompt: 'to', topP: 0 }, 400, 'topP'],
      ['/v1/generate', { prompt: 'to', topP: 1.5 }, 400, 'topP'],
      ['/v1/generate', { prompt: 'to', topK: -2 }, 400, 'topK'],
      ['/v1/generate', { prompt: 'to', seed: -1 }, 400, 'seed'],
      ['/v1/generate', { prompt: 'to', stop: 'be' }, 400, 'stop'],
      ['/v1/generate', { prompt: 'to', stop: [''] }, 400, 'stop'],
      ['/v1/generate', { prompt: 'to', stop: [1] }, 400, 'stop'],
      ['/v1/generate', { prompt: 'to', stream: 'yes' }, 400, 'stream'],
      ['/v1/generate', { prompt: 'to be, xyz' }, 400, 'prompt', /"x"/],
      ['/v1/generate', { prompt: 'to be \u{1F600}' }, 400, 'prompt', /vocabulary/],
      ['/v1/score', {}, 400, 'text'],
      ['/v1/score', { text: 7 }, 400, 'text'],
      ['/v1/score', { text: 't' }, 400, 'text'],
      ['/v1/score', { text: 'jq' }, 400, 'text', /vocabulary/],
      ['/v1/score', { text: long + 'to be or not to be' }, 400, 'text', /maxLen/],
      ['/v1/score', '{', 400, undefined, /JSON/],
    ];
    for (const [route, body, status, fieldName, message] of cases) {
      const what = `${route} ${typeof body === 'string' ? body : JSON.stringify(body)}`;
      const r = await request(base, route, body);
      expect(r.status, what).toBe(status);
      expect(r.headers.get('content-type'), what).toMatch(/application\/json/);
      expect(typeof r.json?.error?.message, what).toBe('string');
      expect(r.json.error.field, what).toBe(fieldName);
      if (fieldName) expect(r.json.error.message, what).toContain(fieldName);
      if (message) expect(r.json.error.message, what).toMatch(message);
    }
    // Just inside the limits.
    expect((await request(base, '/v1/generate', { prompt: 'to', maxTokens: 100 })).status).toBe(200);
    expect((await request(base, '/v1/generate', { prompt: long, maxTokens: 16 })).status).toBe(200);
    // maxTokens left out: 128, cut to the server's limit (100) and to the room under maxLen.
    expect((await request(base, '/v1/generate', { prompt: 'to' })).json).toMatchObject({ tokens: 100, finishReason: 'length' });
    expect((await request(base, '/v1/generate', { prompt: long })).json).toMatchObject({ tokens: 16, finishReason: 'length' });
    expect(await health(base)).toEqual({ ok: true, active: 0, queued: 0 });
  });

  it('413 for a body over maxBodyBytes; 404 for an unknown route; 405 for a wrong method', async () => {
    const big = await request(base, '/v1/generate', { prompt: 'to be '.repeat(2000) });
    expect(big.status).toBe(413);
    expect(big.json.error.message).toMatch(/4096 bytes/);
    const huge = await request(base, '/v1/score', 'x'.repeat(1 << 20));
    expect(huge.status).toBe(413);
    const nf = await request(base, '/v2/nothing');
    expect(nf.status).toBe(404);
    expect(nf.json.error.message).toMatch(/\/v2\/nothing/);
    for (const [route, method] of [['/v1/generate', 'GET'], ['/v1/score', 'PUT'], ['/healthz', 'POST'], ['/v1/model', 'DELETE']] as const) {
      const r = await request(base, route, undefined, { method });
      expect(r.status, `${method} ${route}`).toBe(405);
      expect(r.json.error.message).toMatch(/use (GET|POST)/);
    }
    expect((await request(base, '/v1/generate', { prompt: 'to be', maxTokens: 5 })).status).toBe(200);
  });
});

describe('serve: limits, disconnects, time limits', () => {
  it('a full queue answers 503 with Retry-After (maxBatch 1, maxQueue 1)', async () => {
    const s = await createServer({ model: longModel, tokenizer: tok, port: 0, maxBatch: 1, maxQueue: 1, maxTokensLimit: LONG });
    try {
      const replies = await Promise.all(Array.from({ length: 5 }, (_, i) => request(s.url, '/v1/generate', { prompt: 'to be', maxTokens: 1500, seed: i })));
      const statuses = replies.map((r) => r.status).sort();
      // One decoding, one waiting, the rest refused.
      expect(statuses).toEqual([200, 200, 503, 503, 503]);
      for (const r of replies.filter((x) => x.status === 503)) {
        expect(r.headers.get('retry-after')).toMatch(/^\d+$/);
        expect(r.json.error.message).toMatch(/queue is full/);
      }
      expect(await health(s.url)).toEqual({ ok: true, active: 0, queued: 0 });
    } finally {
      await s.close();
    }
  });

  it('free slots are not counted as a full queue (maxBatch 32, maxQueue 1, 32 at once)', async () => {
    // Requests that arrive during a decoder step wait for the next iteration, but a slot is free for each.
    const s = await createServer({ model, tokenizer: tok, port: 0, maxBatch: 32, maxQueue: 1 });
    try {
      const replies = await Promise.all(Array.from({ length: 32 }, (_, i) => request(s.url, '/v1/generate', { prompt: 'to be', maxTokens: 50, seed: i })));
      expect(replies.map((r) => r.status)).toEqual(Array(32).fill(200));
    } finally {
      await s.close();
    }
  });

  it('a client that disconnects frees its slot (streaming and waiting in the queue)', async () => {
    const s = await createServer({ model: longModel, tokenizer: tok, port: 0, maxBatch: 1, maxTokensLimit: LONG });
    try {
      const ac = new AbortController();
      const res = await fetch(s.url + '/v1/generate', { method: 'POST', body: JSON.stringify({ prompt: 'to be', maxTokens: LONG, stream: true }), signal: ac.signal });
      expect(res.status).toBe(200);
      const reader = res.body!.getReader();
      const first = await reader.read();
      expect(new TextDecoder().decode(first.value)).toMatch(/^data: \{"token":/);
      // A second request waits behind it, then its client leaves too.
      const ac2 = new AbortController();
      const waiting = fetch(s.url + '/v1/generate', { method: 'POST', body: JSON.stringify({ prompt: 'to be', maxTokens: 10 }), signal: ac2.signal }).catch((e: Error) => e);
      expect(await until(async () => (await health(s.url)).queued === 1, 2000)).toBe(true);
      ac2.abort();
      expect((await waiting) as Error).toBeInstanceOf(Error);
      expect(await until(async () => (await health(s.url)).queued === 0, 2000)).toBe(true);
      expect((await health(s.url)).active).toBe(1);
      ac.abort();
      expect(await until(async () => (await health(s.url)).active === 0, 2000)).toBe(true);
      expect(s.scheduler.active).toBe(0);
      const after = await request(s.url, '/v1/generate', { prompt: 'to be', maxTokens: 10, seed: 1 });
      expect(after.status).toBe(200);
      expect(after.json.tokens).toBe(10);
      // A non-streaming request abandoned mid-decode frees its slot as well.
      const ac3 = new AbortController();
      const gone = fetch(s.url + '/v1/generate', { method: 'POST', body: JSON.stringify({ prompt: 'to be', maxTokens: LONG }), signal: ac3.signal }).catch((e: Error) => e);
      expect(await until(async () => (await health(s.url)).active === 1, 2000)).toBe(true);
      ac3.abort();
      await gone;
      expect(await until(async () => (await health(s.url)).active === 0, 2000)).toBe(true);
    } finally {
      await s.close();
    }
  });

  it('a request past timeoutMs gets 504 (a stream ends), and its slot is freed', async () => {
    const s = await createServer({ model: longModel, tokenizer: tok, port: 0, maxBatch: 1, maxTokensLimit: LONG, timeoutMs: 50 });
    try {
      const t0 = Date.now();
      const g = await request(s.url, '/v1/generate', { prompt: 'to be', maxTokens: LONG });
      expect(g.status).toBe(504);
      expect(g.json.error.message).toMatch(/50 ms/);
      expect(Date.now() - t0).toBeLessThan(2000);
      const sc = await request(s.url, '/v1/score', { text: 'to be or not to be, '.repeat(300) });
      expect(sc.status).toBe(504);
      const st = await fetch(s.url + '/v1/generate', { method: 'POST', body: JSON.stringify({ prompt: 'to be', maxTokens: LONG, stream: true }) });
      const data = sseData(await st.text());
      expect(data[data.length - 1]).toBe('[DONE]');
      const done = JSON.parse(data[data.length - 2]!) as { done: boolean; finishReason: string; tokens: number };
      expect(done).toMatchObject({ done: true, finishReason: 'aborted' });
      expect(done.tokens).toBeLessThan(LONG);
      expect(await until(async () => (await health(s.url)).active === 0, 1000)).toBe(true);
      // Two long requests on one slot: the one decoding and the one waiting in the queue both get 504.
      const longs = await Promise.all([0, 1].map(() => request(s.url, '/v1/generate', { prompt: 'to be', maxTokens: LONG })));
      expect(longs.map((r) => r.status)).toEqual([504, 504]);
      expect(await health(s.url)).toEqual({ ok: true, active: 0, queued: 0 });
      const ok = await request(s.url, '/v1/generate', { prompt: 'to be', maxTokens: 5 });
      expect(ok.status).toBe(200);
    } finally {
      await s.close();
    }
  });

  it('scheduler: an onToken callback that throws does not stop the others; an abandoned score rejects', async () => {
    const ids = Array.from(tok.encode('to be'));
    const sampler = (seed: number): SequenceSampler => new SequenceSampler({ maxTokens: 30, seed, tokenizer: tok });
    const [bad, good] = await Promise.all([
      srv.scheduler.generate(ids, sampler(1), { onToken: () => { throw new Error('write failed'); } }),
      srv.scheduler.generate(ids, sampler(2)),
    ]);
    expect(bad.tokens).toHaveLength(30);
    expect(good.text).toBe((await reference('to be', { maxTokens: 30, seed: 2 })).text);
    const ac = new AbortController();
    const scored = srv.scheduler.score(Array.from(tok.encode('to be or not to be, that is the question')), { signal: ac.signal });
    await new Promise((r) => setImmediate(r));
    ac.abort();
    await expect(scored).rejects.toBeInstanceOf(AbortedError);
    expect(srv.scheduler.active).toBe(0);
  });

  it('close() waits for the requests in flight, then refuses connections', async () => {
    const s = await createServer({ model: longModel, tokenizer: tok, port: 0, maxBatch: 2, maxTokensLimit: LONG });
    const pending = request(s.url, '/v1/generate', { prompt: 'to be', maxTokens: 1500 });
    expect(await until(async () => s.scheduler.active === 1, 2000)).toBe(true);
    await s.close();
    const r = await pending;
    expect(r.status).toBe(200);
    expect(r.json.tokens).toBe(1500);
    await expect(fetch(s.url + '/healthz')).rejects.toThrow();
  });
});

// ---------------------------------------------------------------------------------------------
// `rt serve`

function newestMtime(dir: string): number {
  let t = 0;
  for (const e of fs.readdirSync(dir, { withFileTypes: true })) {
    const p = path.join(dir, e.name);
    t = Math.max(t, e.isDirectory() ? newestMtime(p) : fs.statSync(p).mtimeMs);
  }
  return t;
}

describe('rt serve', () => {
  let tmp: string;
  let ckpt: string;
  beforeAll(async () => {
    const cli = path.join(ROOT, 'dist/cli/rt.js');
    if (!fs.existsSync(cli) || fs.statSync(cli).mtimeMs < newestMtime(path.join(ROOT, 'src'))) {
      // Another test file may compile at the same time; tsc writes the same output either way.
      const r = spawnSync(process.execPath, [path.join(ROOT, 'node_modules/typescript/bin/tsc'), '-p', 'tsconfig.json'], { cwd: ROOT, encoding: 'utf8', timeout: 110_000 });
      if (r.status !== 0) throw new Error(`tsc failed:\n${r.stdout}\n${r.stderr}`);
    }
    tmp = await fsp.mkdtemp(path.join(os.tmpdir(), 'rt-serve-test-'));
    ckpt = path.join(tmp, 'char.safetensors');
    const cfg = { vocabSize: tok.vocabSize, d: 16, heads: 2, window: 4, maxLen: 8192, seed: 3 };
    await saveCheckpoint(ckpt, {
      params: longModel.exportParameters(),
      shapes: Object.fromEntries(longModel.parameters().map((p) => [p.name, [...p.shape]])),
      config: { model: cfg },
      tied: true,
      tokenizer: tok.toJSON(),
    });
  });
  afterAll(async () => {
    if (tmp) await fsp.rm(tmp, { recursive: true, force: true });
  });

  it('SIGTERM lets the request in flight finish with 200, then exits 0', async () => {
    const child = spawn(process.execPath, [path.join(ROOT, 'dist/cli/rt.js'), 'serve', '--checkpoint', ckpt, '--port', '0', '--max-batch', '4', '--max-tokens-limit', String(LONG)], {
      cwd: ROOT,
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    const exited = new Promise<[number | null, NodeJS.Signals | null]>((resolve) => child.once('exit', (code, signal) => resolve([code, signal])));
    let stderr = '';
    try {
      const url = await new Promise<string>((resolve, reject) => {
        const timer = setTimeout(() => reject(new Error(`rt serve did not start:\n${stderr}`)), 20_000);
        child.stderr.on('data', (d: Buffer) => {
          stderr += d.toString();
          const m = /listening on (http:\/\/127\.0\.0\.1:\d+)/.exec(stderr);
          if (m) {
            clearTimeout(timer);
            resolve(m[1]!);
          }
        });
        void exited.then(([code]) => reject(new Error(`rt serve exited with ${code}:\n${stderr}`)));
      });
      const m = await request(url, '/v1/model');
      expect(m.json.parameters).toBe(longModel.parameterCount());
      expect(m.json.maxBatch).toBe(4);
      const inFlight = request(url, '/v1/generate', { prompt: 'to be', maxTokens: 3000, seed: 2 });
      expect(await until(async () => (await health(url)).active === 1, 5000)).toBe(true);
      child.kill('SIGTERM');
      const r = await inFlight;
      expect(r.status).toBe(200);
      expect(r.json).toMatchObject({ tokens: 3000, finishReason: 'length' });
      const [code, signal] = await Promise.race([exited, new Promise<never>((_, reject) => setTimeout(() => reject(new Error('rt serve did not exit')), 20_000))]);
      expect({ code, signal }).toEqual({ code: 0, signal: null });
      expect(stderr).toMatch(/draining/);
    } finally {
      if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
    }
  });

  it('refuses a checkpoint without a tokenizer, and --port that is not a number (exit 2)', async () => {
    const bare = path.join(tmp, 'bare.safetensors');
    await saveCheckpoint(bare, {
      params: model.exportParameters(),
      shapes: Object.fromEntries(model.parameters().map((p) => [p.name, [...p.shape]])),
      config: { model: { vocabSize: tok.vocabSize, d: 16, heads: 2, window: 4, maxLen: 256, seed: 7 } },
      tied: true,
    });
    for (const [args, re] of [
      [['serve', '--checkpoint', bare, '--port', '0'], /no tokenizer/],
      [['serve', '--checkpoint', ckpt, '--port', 'http'], /--port/],
      [['serve'], /--checkpoint/],
      [['serve', '--checkpoint', ckpt, '--threads', '0'], /--threads: expected an integer >= 1, got '0'/],
      [['serve', '--checkpoint', ckpt, '--max-batch', '0'], /--max-batch: expected an integer >= 1, got '0'/],
      [['serve', '--checkpoint', ckpt, '--max-queue=-1'], /--max-queue: expected an integer >= 0, got '-1'/],
      [['serve', '--checkpoint', ckpt, '--max-in-flight', 'many'], /--max-in-flight: expected a number, got 'many'/],
      [['serve', '--checkpoint', ckpt, '--pipeline-min-rows', '2.5'], /--pipeline-min-rows: expected an integer, got '2.5'/],
    ] as const) {
      const r = spawnSync(process.execPath, [path.join(ROOT, 'dist/cli/rt.js'), ...args], { cwd: ROOT, encoding: 'utf8', timeout: 20_000 });
      expect(r.status, args.join(' ')).toBe(2);
      expect(r.stderr).toMatch(re);
    }
  });
});

describe('rt serve: threads', () => {
  let tmp: string;
  let ckpt: string;
  beforeAll(async () => {
    ensureCli();
    tmp = await fsp.mkdtemp(path.join(os.tmpdir(), 'rt-serve-threads-'));
    ckpt = path.join(tmp, 'char.safetensors');
    await saveCheckpoint(ckpt, {
      params: model.exportParameters(),
      shapes: Object.fromEntries(model.parameters().map((p) => [p.name, [...p.shape]])),
      config: { model: { vocabSize: tok.vocabSize, d: 16, heads: 2, window: 4, maxLen: 256, seed: 7 } },
      tied: true,
      tokenizer: tok.toJSON(),
    });
  });
  afterAll(async () => {
    if (tmp) await fsp.rm(tmp, { recursive: true, force: true });
  });

  /** Starts `entry serve ARGS` without UV_THREADPOOL_SIZE; its stderr up to the listening line and its settings. */
  async function serveWith(entry: string, args: string[]): Promise<{ stderr: string; scheduler: Record<string, number> }> {
    const env = { ...process.env };
    delete env.UV_THREADPOOL_SIZE;
    delete env.RT_NUM_THREADS;
    const child = spawn(process.execPath, [path.join(ROOT, 'dist/cli', entry), 'serve', '--checkpoint', ckpt, '--port', '0', ...args], { cwd: ROOT, env, stdio: ['ignore', 'ignore', 'pipe'] });
    let stderr = '';
    try {
      const url = await new Promise<string>((resolve, reject) => {
        const timer = setTimeout(() => reject(new Error(`rt serve did not start:\n${stderr}`)), 20_000);
        child.stderr!.on('data', (d: Buffer) => {
          stderr += d.toString();
          const m = /listening on (http:\/\/127\.0\.0\.1:\d+).*\n/.exec(stderr);
          if (m) {
            clearTimeout(timer);
            resolve(m[1]!);
          }
        });
        child.once('exit', (code) => reject(new Error(`rt serve exited with ${code}:\n${stderr}`)));
      });
      const h = await request(url, '/healthz?stats=1');
      return { stderr, scheduler: h.json.scheduler };
    } finally {
      child.kill('SIGKILL');
    }
  }

  it('the rt entry (dist/cli/rt.cjs) sizes libuv\'s pool for --threads 5: 6 steps in flight; rt.js alone keeps 3 and says why', async () => {
    const viaEntry = await serveWith('rt.cjs', ['--threads', '5']);
    expect(viaEntry.stderr).toMatch(/threads 5, 6 steps in flight of >= 8 sequences/);
    expect(viaEntry.scheduler).toMatchObject({ threads: 5, maxInFlight: 6, pipelineMinRows: 8, uvThreadpoolSize: 7 });
    expect(viaEntry.stderr).not.toMatch(/UV_THREADPOOL_SIZE/);
    const direct = await serveWith('rt.js', ['--threads', '5']);
    expect(direct.scheduler).toMatchObject({ threads: 5, maxInFlight: 3, uvThreadpoolSize: 4 });
    expect(direct.stderr).toMatch(/libuv's thread pool has 4 threads, so at most 3 steps are in flight for 5 threads; start node with UV_THREADPOOL_SIZE=7/);
    // --max-in-flight sizes the pool itself.
    const wide = await serveWith('rt.cjs', ['--threads', '2', '--max-in-flight', '9', '--pipeline-min-rows', '4']);
    expect(wide.scheduler).toMatchObject({ threads: 2, maxInFlight: 9, pipelineMinRows: 4, uvThreadpoolSize: 10 });
  });
});

// The server's decoder at head widths that are a multiple of 8 (the usual 32, 64...) takes the vectorized
// cached attention (native/cpu/decode.cc); test/decode.test.ts checks the scalar path (head width 4).
describe('the batched decoder behind the server, vectorized attention', () => {
  for (const [d, heads] of [[16, 2], [64, 2]] as const) {
    for (const variant of ['forget', 'accumulate'] as const) {
      it(`head width ${d / heads}, ${variant}: each step's logits equal the offline forward of the prefix`, async () => {
        const V = 7, N = 11, B = 3;
        const m = new RecurrentTransformer({ vocabSize: V, d, heads, layers: 2, window: 3, variant, maxLen: 16, alpha: { init: 0.6 }, seed: d });
        try {
          perturbWeights(m, 1, 0.7, 0.5);
          const toks = Array.from({ length: B * N }, (_, i) => (i * 5 + 3) % V);
          const worst = await worstDecoderError(m, toks, B, N, [2, 0, 1]);
          expect(worst).toBeLessThan(1e-4);
        } finally {
          m.dispose();
        }
      });
    }
  }
});
