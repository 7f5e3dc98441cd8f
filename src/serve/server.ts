// The inference server: POST /v1/generate (JSON, or Server-Sent Events with stream: true), POST /v1/score,
// GET /v1/model, GET /healthz. Requests are decoded together by the continuous-batching Scheduler.
// Input never crashes it: bad JSON or values get 400 with the field named, oversized bodies 413, a full
// queue 503 with Retry-After, a request past its time limit 504; a client that disconnects frees its
// slot. close() stops accepting connections and waits for the requests in flight.
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { SequenceSampler, type TextCodec } from '../generate.js';
import type { RecurrentTransformer } from '../model/transformer.js';
import { AbortedError, QueueFullError, Scheduler, uvThreadpoolSize } from './scheduler.js';

export interface ServerOptions {
  model: RecurrentTransformer;
  tokenizer: TextCodec & { vocabSize?: number; toJSON?(): unknown };
  host?: string;
  port?: number;
  /** Sequences decoded together (default 32); 1 turns batching off. */
  maxBatch?: number;
  /** Requests waiting for a slot before 503 (default 256). */
  maxQueue?: number;
  /** Largest maxTokens a request may ask for (default 1024). */
  maxTokensLimit?: number;
  /** Largest request body in bytes (default 1 MB). */
  maxBodyBytes?: number;
  /** Per-request time limit in ms (default 120000). */
  timeoutMs?: number;
  /**
   * Decoder threads: steps computing at once when the active sequences make several batches (default
   * RT_NUM_THREADS, else os.availableParallelism()). Each step in flight holds one of libuv's threads, so
   * start node with UV_THREADPOOL_SIZE of at least threads + 2 (libuv reads it once, when its pool starts,
   * which in an ES module program is before its first line runs); with libuv's default of 4 at most 3 steps
   * are in flight. `rt serve` sets it. See {@link SchedulerOptions}.
   */
  threads?: number;
  /** Steps in flight at once (default threads + 1, at most UV_THREADPOOL_SIZE - 1). */
  maxInFlight?: number;
  /** Sequences per batch when several are in flight (default 16 up to 2 threads, then max(8, ceil(32 / threads))). */
  pipelineMinRows?: number;
}

export interface RunningServer {
  readonly url: string;
  readonly server: http.Server;
  readonly scheduler: Scheduler;
  /** Stops accepting connections and resolves once every request in flight has finished. */
  close(): Promise<void>;
}

class HttpError extends Error {
  constructor(
    readonly status: number,
    message: string,
    readonly field?: string,
  ) {
    super(message);
  }
}

function sendJson(res: http.ServerResponse, status: number, body: unknown, headers: Record<string, string> = {}): void {
  if (res.headersSent) {
    res.end();
    return;
  }
  const text = JSON.stringify(body);
  res.writeHead(status, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(text), ...headers });
  res.end(text);
}

function readBody(req: http.IncomingMessage, limit: number): Promise<unknown> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    let size = 0;
    req.on('data', (c: Buffer) => {
      size += c.length;
      if (size > limit) {
        reject(new HttpError(413, `request body is larger than ${limit} bytes`));
        req.resume();
        return;
      }
      chunks.push(c);
    });
    req.on('end', () => {
      if (size > limit) return;
      const text = Buffer.concat(chunks).toString('utf8');
      try {
        resolve(text.length ? JSON.parse(text) : {});
      } catch (e) {
        reject(new HttpError(400, `body is not valid JSON: ${(e as Error).message}`));
      }
    });
    req.on('error', reject);
  });
}

type Body = Record<string, unknown>;

function field<T>(body: Body, name: string, check: (v: unknown) => v is T, expected: string): T | undefined {
  const v = body[name];
  if (v === undefined || v === null) return undefined;
  if (!check(v)) throw new HttpError(400, `${name}: expected ${expected}`, name);
  return v;
}
const isString = (v: unknown): v is string => typeof v === 'string';
const isInt = (v: unknown): v is number => Number.isSafeInteger(v) && (v as number) >= 0;
const isNum = (v: unknown): v is number => typeof v === 'number' && Number.isFinite(v);
const isBool = (v: unknown): v is boolean => typeof v === 'boolean';
const isStops = (v: unknown): v is string[] => Array.isArray(v) && v.length <= 16 && v.every((s) => typeof s === 'string' && s.length > 0 && s.length <= 256);

export async function createServer(opts: ServerOptions): Promise<RunningServer> {
  const { model, tokenizer } = opts;
  const maxBatch = opts.maxBatch ?? 32;
  const maxTokensLimit = opts.maxTokensLimit ?? 1024;
  const maxBodyBytes = opts.maxBodyBytes ?? 1 << 20;
  const timeoutMs = opts.timeoutMs ?? 120_000;
  const scheduler = new Scheduler(model, { maxBatch, maxQueue: opts.maxQueue ?? 256, threads: opts.threads, maxInFlight: opts.maxInFlight, pipelineMinRows: opts.pipelineMinRows });
  const maxLen = model.config.positional || model.config.window === 0 ? model.config.maxLen : Infinity;
  const inflight = new Set<Promise<unknown>>();

  const encode = (text: string, name: string): number[] => {
    try {
      return Array.from(tokenizer.encode(text));
    } catch (e) {
      throw new HttpError(400, `${name}: ${(e as Error).message}`, name);
    }
  };

  const timeoutError = (): HttpError => new HttpError(504, `the request took longer than ${timeoutMs} ms`);

  async function generateRoute(req: http.IncomingMessage, res: http.ServerResponse, body: Body, signal: AbortSignal): Promise<void> {
    const prompt = field(body, 'prompt', isString, 'a string');
    if (prompt === undefined || prompt.length === 0) throw new HttpError(400, 'prompt: required, a non-empty string', 'prompt');
    const asked = field(body, 'maxTokens', isInt, 'a non-negative integer');
    // Left out: 128, within the server's limit (checked against the model's maxLen below).
    let maxTokens = asked ?? Math.min(128, maxTokensLimit);
    if (maxTokens > maxTokensLimit) throw new HttpError(400, `maxTokens: at most ${maxTokensLimit}`, 'maxTokens');
    const temperature = field(body, 'temperature', isNum, 'a number >= 0');
    if (temperature !== undefined && temperature < 0) throw new HttpError(400, 'temperature: expected a number >= 0', 'temperature');
    const topK = field(body, 'topK', isInt, 'a non-negative integer');
    const topP = field(body, 'topP', isNum, 'a number in (0, 1]');
    if (topP !== undefined && !(topP > 0 && topP <= 1)) throw new HttpError(400, 'topP: expected a number in (0, 1]', 'topP');
    const seed = field(body, 'seed', isInt, 'a non-negative integer');
    const stop = field(body, 'stop', isStops, 'an array of at most 16 non-empty strings');
    const stream = field(body, 'stream', isBool, 'a boolean') ?? false;
    const ids = encode(prompt, 'prompt');
    if (asked === undefined) maxTokens = Math.max(0, Math.min(maxTokens, maxLen - ids.length));
    if (ids.length + maxTokens > maxLen) {
      const name = ids.length > maxLen ? 'prompt' : 'maxTokens';
      throw new HttpError(400, `${name}: prompt (${ids.length} tokens) + maxTokens (${maxTokens}) exceeds the model's maxLen ${maxLen}`, name);
    }
    const sampler = new SequenceSampler({ maxTokens, temperature, topK, topP, seed, stop, tokenizer });
    if (!stream) {
      const r = await scheduler.generate(ids, sampler, { signal });
      // Cut short (time limit, or the client left): a partial text is not the answer.
      if (r.finishReason === 'aborted') throw timeoutError();
      sendJson(res, 200, { text: r.text, tokens: r.tokens.length, promptTokens: r.promptTokens, finishReason: r.finishReason });
      return;
    }
    let started = false;
    const start = (): void => {
      if (started || res.destroyed) return;
      started = true;
      res.writeHead(200, { 'content-type': 'text/event-stream', 'cache-control': 'no-cache', connection: 'keep-alive' });
    };
    const r = await scheduler.generate(ids, sampler, {
      signal,
      onToken: (t) => {
        start();
        if (!res.destroyed) res.write(`data: ${JSON.stringify({ token: t.token, text: t.text })}\n\n`);
      },
    });
    start();
    // The summary event and the end marker in one write.
    res.end(`data: ${JSON.stringify({ done: true, tokens: r.tokens.length, finishReason: r.finishReason })}\n\ndata: [DONE]\n\n`);
  }

  async function scoreRoute(res: http.ServerResponse, body: Body, signal: AbortSignal): Promise<void> {
    const text = field(body, 'text', isString, 'a string');
    if (text === undefined) throw new HttpError(400, 'text: required, a string', 'text');
    const ids = encode(text, 'text');
    if (ids.length < 2) throw new HttpError(400, 'text: needs at least two tokens to score', 'text');
    if (ids.length > maxLen) throw new HttpError(400, `text: ${ids.length} tokens exceed the model's maxLen ${maxLen}`, 'text');
    const r = await scheduler.score(ids, { signal });  // AbortedError when cut short
    sendJson(res, 200, { logprob: r.logprob, tokens: ids.length, scored: r.scored, perplexity: Math.exp(-r.logprob / r.scored) });
  }

  async function handle(req: http.IncomingMessage, res: http.ServerResponse): Promise<void> {
    if (closing) {
      sendJson(res, 503, { error: { message: 'the server is shutting down' } }, { connection: 'close', 'retry-after': '1' });
      return;
    }
    const url = new URL(req.url ?? '/', 'http://localhost');
    const controller = new AbortController();
    // The client went away (or the time limit passed): free the request's slot.
    res.on('close', () => {
      if (!res.writableFinished) controller.abort();
    });
    const timer = setTimeout(() => controller.abort(), timeoutMs);
    try {
      if (url.pathname === '/healthz') {
        if (req.method !== 'GET') throw new HttpError(405, 'use GET');
        // ?stats=1 adds the scheduler's counters (steps, tokens, rows, ms spent in the decoder) and settings.
        const stats = url.searchParams.get('stats') === '1' ? { stats: scheduler.stats, scheduler: { ...scheduler.options, uvThreadpoolSize: uvThreadpoolSize() } } : {};
        sendJson(res, 200, { ok: true, active: scheduler.active, queued: scheduler.queued, ...stats });
      } else if (url.pathname === '/v1/model') {
        if (req.method !== 'GET') throw new HttpError(405, 'use GET');
        const tj = tokenizer.toJSON?.() as { type?: string } | undefined;
        sendJson(res, 200, { config: model.config, parameters: model.parameterCount(), tokenizer: { type: tj?.type ?? 'unknown', vocabSize: tokenizer.vocabSize ?? model.config.vocabSize }, maxBatch });
      } else if (url.pathname === '/v1/generate' || url.pathname === '/v1/score') {
        if (req.method !== 'POST') throw new HttpError(405, 'use POST');
        const body = await readBody(req, maxBodyBytes);
        if (typeof body !== 'object' || body === null || Array.isArray(body)) throw new HttpError(400, 'body: expected a JSON object');
        if (url.pathname === '/v1/generate') await generateRoute(req, res, body as Body, controller.signal);
        else await scoreRoute(res, body as Body, controller.signal);
        if (controller.signal.aborted && !res.writableEnded && !res.destroyed) throw timeoutError();
      } else {
        throw new HttpError(404, `no route ${url.pathname}`);
      }
    } catch (e) {
      if (e instanceof HttpError) sendJson(res, e.status, { error: { message: e.message, ...(e.field ? { field: e.field } : {}) } });
      else if (e instanceof AbortedError) sendJson(res, 504, { error: { message: timeoutError().message } });
      else if (e instanceof QueueFullError) sendJson(res, 503, { error: { message: e.message } }, { 'retry-after': '1' });
      else if (e instanceof RangeError || e instanceof TypeError) sendJson(res, 400, { error: { message: e.message } });
      else sendJson(res, 500, { error: { message: (e as Error).message } });
    } finally {
      clearTimeout(timer);
    }
  }

  let closing = false;
  const server = http.createServer((req, res) => {
    // In flight until the response has been handed to the OS (or the connection is gone), so that
    // close() never destroys a socket holding the end of a response.
    const p = Promise.all([handle(req, res), new Promise((resolve) => res.once('close', resolve))]);
    inflight.add(p);
    void p.finally(() => inflight.delete(p));
  });
  server.keepAliveTimeout = 5000;
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(opts.port ?? 8080, opts.host ?? '127.0.0.1', () => resolve());
  });
  const addr = server.address() as AddressInfo;
  return {
    url: `http://${addr.address.includes(':') ? `[${addr.address}]` : addr.address}:${addr.port}`,
    server,
    scheduler,
    async close() {
      closing = true;
      const closed = new Promise<void>((resolve) => server.close(() => resolve()));
      server.closeIdleConnections();
      // Requests can still arrive on kept-alive connections while others finish (they get 503).
      while (inflight.size) await Promise.all([...inflight]);
      await scheduler.drain();
      server.closeAllConnections();
      await closed;
    },
  };
}
