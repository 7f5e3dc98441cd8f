// npm run bench:serve — the inference server under load, over loopback only. Starts `rt serve` as a child
// process (so that the load generator does not share the server's event loop) on a char-level model of a
// realistic size for a CPU (d 128, heads 4, window 16, layers 1, maxLen 512; random weights unless
// --checkpoint gives a trained one: the cost per token does not depend on the weights), then drives
// POST /v1/generate {prompt, maxTokens 32, seed} with autocannon at 1, 8 and 64 concurrent connections,
// batching on (--max-batch 64) and off (--no-batching), each level bounded in time and request count.
// Time to first token is measured separately at each level by a small SSE client (stream: true).
//
// Prints one JSON line per (batching, clients):
//   {bench:'serve', batching, clients, tokens_per_s, p50_ms, p99_ms, ttft_p50_ms, requests, ...}
// then one per batching mode with the ratio tokens/s(64 clients) / tokens/s(1 client), and appends them
// all to bench/results/serve-<date>.jsonl.
//
// Workload: the prompt is 17 tokens, read one per decoder step like every other token, so a request with
// maxTokens 32 spends 17 of its 49 steps on the prompt and much of its time on HTTP and JSON; --max-tokens
// 128 (145 steps per request, closer to the output lengths of public serving benchmarks) shows the
// steady-state decode throughput better. The default stays 32, the setting the target was first
// measured at; every row carries max_tokens.
//
// Every row also records the machine (CPU model, CPUs this process may use, node) and the server's
// scheduler settings as it reports them (threads, steps in flight, rows per batch, libuv's pool), with the
// steps in flight on average while the decoder was busy and at the peak.
//
// Flags: --checkpoint FILE (a text checkpoint with a tokenizer)  --duration 10 (s per level)
//        --ttft-duration 3 (s per level)  --clients 1,8,64  --max-tokens 32  --max-requests 50000 (per level)
//        --rounds 1 (R > 1: every level R times, interleaved; the median round is reported)
//        --batching both|on|off (which servers to run)  --server-args="--threads 8 ..." (added to rt serve's
//        flags, e.g. to compare thread counts; write it --server-args="..."; recorded as server_args)
//        --quick (duration 3, ttft-duration 1)  --no-save (print only)  --out FILE (append there instead)
import { spawn } from 'node:child_process';
import { appendFileSync, mkdirSync, mkdtempSync, rmSync } from 'node:fs';
import http from 'node:http';
import { arch, availableParallelism, cpus, loadavg, tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import autocannon from 'autocannon';
import { median, round } from './lib/stats.mjs';

const here = dirname(fileURLToPath(import.meta.url));
const root = join(here, '..');
const { values: f } = parseArgs({
  options: {
    checkpoint: { type: 'string' }, duration: { type: 'string' }, 'ttft-duration': { type: 'string' },
    clients: { type: 'string' }, 'max-tokens': { type: 'string' }, 'max-requests': { type: 'string' },
    rounds: { type: 'string' }, quick: { type: 'boolean' }, 'no-save': { type: 'boolean' }, out: { type: 'string' },
    batching: { type: 'string' }, 'server-args': { type: 'string' },
  },
});
const duration = Number(f.duration ?? (f.quick ? 3 : 10));
const ttftDuration = Number(f['ttft-duration'] ?? (f.quick ? 1 : 3));
const levels = (f.clients ?? '1,8,64').split(',').map(Number);
const maxTokens = Number(f['max-tokens'] ?? 32);
const maxRequests = Number(f['max-requests'] ?? 50_000);
const rounds = Number(f.rounds ?? 1);
const serverArgs = (f['server-args'] ?? '').split(/\s+/).filter(Boolean);
const modes = { both: [true, false], on: [true], off: [false] }[f.batching ?? 'both'];
if (!modes) throw new Error(`--batching: expected both, on or off, got ${f.batching}`);
const PROMPT = 'ROMEO: what light'; // 17 characters: 17 decoder steps before the first sampled token
const HOST = '127.0.0.1';
for (const [name, v] of [['rounds', rounds], ['duration', duration], ['ttft-duration', ttftDuration], ['max-tokens', maxTokens], ['max-requests', maxRequests], ...levels.map((c) => ['clients', c])]) {
  if (!(Number.isFinite(v) && v > 0)) throw new Error(`--${name}: expected a positive number, got ${v}`);
}

const rt = await import(join(root, 'dist', 'index.js'));
const results = join(here, 'results');
mkdirSync(results, { recursive: true });
const outFile = f.out ?? join(results, `serve-${new Date().toISOString().slice(0, 10)}.jsonl`);
const emit = (o) => {
  const line = JSON.stringify({ bench: 'serve', ...o });
  console.log(line);
  if (!f['no-save']) appendFileSync(outFile, line + '\n');
};

// ---- the checkpoint -----------------------------------------------------------------------------------
const tmp = mkdtempSync(join(tmpdir(), 'rt-bench-serve-'));
let checkpoint = f.checkpoint;
let modelInfo;
if (!checkpoint) {
  // Printable ASCII and newline: 96 symbols, a char-level vocabulary of the usual size.
  const chars = '\n' + Array.from({ length: 95 }, (_, i) => String.fromCharCode(32 + i)).join('');
  const tok = new rt.CharTokenizer(chars);
  const cfg = { vocabSize: tok.vocabSize, d: 128, heads: 4, window: 16, layers: 1, maxLen: 512, seed: 1 };
  const model = new rt.RecurrentTransformer(cfg);
  checkpoint = join(tmp, 'char-d128.safetensors');
  await rt.saveCheckpoint(checkpoint, {
    params: model.exportParameters(),
    shapes: Object.fromEntries(model.parameters().map((p) => [p.name, [...p.shape]])),
    config: { model: cfg },
    tied: true,
    tokenizer: tok.toJSON(),
  });
  modelInfo = { d: cfg.d, heads: cfg.heads, window: cfg.window, layers: cfg.layers, maxLen: cfg.maxLen, vocab: tok.vocabSize, parameters: model.parameterCount(), weights: 'random' };
  model.dispose();
}

// ---- the server (a child process) ---------------------------------------------------------------------
// Through the `rt` entry (rt.cjs), which sizes libuv's thread pool for the steps in flight as users get it.
async function startServer(batching) {
  const args = [join(root, 'dist', 'cli', 'rt.cjs'), 'serve', '--checkpoint', checkpoint, '--host', HOST, '--port', '0', '--max-queue', '1024'];
  args.push(...(batching ? ['--max-batch', '64'] : ['--no-batching']), ...serverArgs);
  const child = spawn(process.execPath, args, { cwd: root, stdio: ['ignore', 'inherit', 'pipe'] });
  let stderr = '';
  const exited = new Promise((resolve) => child.once('exit', (code, signal) => resolve({ code, signal })));
  const url = await new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`rt serve did not start within 30 s:\n${stderr}`)), 30_000);
    child.stderr.on('data', (d) => {
      stderr += d;
      const m = /listening on (http:\/\/127\.0\.0\.1:\d+)/.exec(stderr);
      if (m) {
        clearTimeout(timer);
        resolve(m[1]);
      }
    });
    exited.then(({ code }) => reject(new Error(`rt serve exited with ${code}:\n${stderr}`)));
  });
  return {
    url,
    async stop() {
      child.kill('SIGTERM');
      const t = setTimeout(() => child.kill('SIGKILL'), 30_000);
      const r = await exited;
      clearTimeout(t);
      if (r.code !== 0) process.stderr.write(`bench: rt serve exited with ${r.code ?? r.signal}\n${stderr}`);
    },
  };
}

// ---- load ----------------------------------------------------------------------------------------------
let seedCounter = 0;
const body = (extra = {}) => JSON.stringify({ prompt: PROMPT, maxTokens, seed: seedCounter++, ...extra });

/** The server's scheduler counters (GET /healthz?stats=1): steps, tokens, rows, stepMs, inFlightMs, peakInFlight. */
const schedulerStats = async (url) => (await (await fetch(`${url}/healthz?stats=1`)).json()).stats;
/** The server's scheduler settings (threads, maxInFlight, pipelineMinRows, uvThreadpoolSize, ...). */
const schedulerSettings = async (url) => (await (await fetch(`${url}/healthz?stats=1`)).json()).scheduler;

/** autocannon at `clients` connections for `duration` s (and at most maxRequests requests). */
async function throughput(url, clients) {
  const s0 = await schedulerStats(url);
  const w0 = performance.now();
  let tokens = 0;
  let ok = 0;
  let bad = 0;
  const instance = autocannon({
    url,
    connections: clients,
    duration,
    maxOverallRequests: Math.max(maxRequests, clients),
    timeout: 60,
    requests: [
      {
        method: 'POST',
        path: '/v1/generate',
        headers: { 'content-type': 'application/json' },
        setupRequest(req) {
          req.body = body();
          return req;
        },
        onResponse(status, text) {
          if (status !== 200) {
            bad++;
            return;
          }
          ok++;
          tokens += JSON.parse(text).tokens;
        },
      },
    ],
  });
  // A hard stop in case the run outlives its duration (a stuck server).
  const guard = setTimeout(() => instance.stop(), (duration + 60) * 1000);
  const r = await instance;
  clearTimeout(guard);
  const s1 = await schedulerStats(url);
  const wallMs = performance.now() - w0;
  const steps = s1.steps - s0.steps;
  return {
    tokens_per_s: round(tokens / r.duration, 1),
    requests_per_s: round(ok / r.duration, 1),
    p50_ms: r.latency.p50,
    p99_ms: r.latency.p99,
    requests: ok,
    non_2xx: r.non2xx,
    errors: r.errors,
    timeouts: r.timeouts,
    seconds: round(r.duration, 2),
    // Where the server's time went: the share of the level's wall time with a batched decoder step in
    // flight (the rest is the scheduler's sampling and bookkeeping with the decoder idle, and the event
    // loop), the average sequences per step and that busy time per step (with several batches in flight
    // at once, from 32 sequences on, less than one step's own duration).
    decoder_busy_frac: round((s1.stepMs - s0.stepMs) / wallMs, 3),
    rows_per_step: steps ? round((s1.rows - s0.rows) / steps, 1) : null,
    step_ms_avg: steps ? round((s1.stepMs - s0.stepMs) / steps, 3) : null,
    // Steps in flight on average while at least one was (settled steps only), and the most since the start.
    steps_in_flight_avg: s1.stepMs > s0.stepMs ? round((s1.inFlightMs - s0.inFlightMs) / (s1.stepMs - s0.stepMs), 2) : null,
    steps_in_flight_peak: s1.peakInFlight,
  };
}

/** One streaming request: ms from sending it to its first token event, and when it ended. */
function ttftOnce(url, agent) {
  return new Promise((resolve, reject) => {
    const t0 = performance.now();
    let first = -1;
    let buf = '';
    const req = http.request(`${url}/v1/generate`, { method: 'POST', agent, headers: { 'content-type': 'application/json' } }, (res) => {
      if (res.statusCode !== 200) {
        res.resume();
        res.on('end', () => reject(new Error(`status ${res.statusCode}`)));
        return;
      }
      res.setEncoding('utf8');
      res.on('data', (chunk) => {
        if (first < 0) {
          buf += chunk;
          if (buf.includes('data: {"token"')) first = performance.now() - t0;
        }
      });
      res.on('end', () => (first < 0 ? reject(new Error('no token event')) : resolve(first)));
    });
    req.setTimeout(60_000, () => req.destroy(new Error('timeout')));
    req.on('error', reject);
    req.end(body({ stream: true }));
  });
}

/** `clients` loops of streaming requests for ttftDuration s: the p50 of their times to first token. */
async function ttft(url, clients) {
  const agent = new http.Agent({ keepAlive: true, maxSockets: clients });
  const times = [];
  let failures = 0;
  const end = performance.now() + ttftDuration * 1000;
  const cap = Math.max(maxRequests, clients);
  await Promise.all(
    Array.from({ length: clients }, async () => {
      while (performance.now() < end && times.length + failures < cap) {
        try {
          times.push(await ttftOnce(url, agent));
        } catch {
          failures++;
        }
      }
    }),
  );
  agent.destroy();
  times.sort((a, b) => a - b);
  return { ttft_p50_ms: times.length ? round(median(times), 2) : null, ttft_p99_ms: times.length ? round(times[Math.min(times.length - 1, Math.floor(0.99 * times.length))], 2) : null, ttft_requests: times.length, ttft_failures: failures };
}

// ---- run -----------------------------------------------------------------------------------------------
// With --rounds R > 1, every level is measured R times in turn (so that load from other work on the
// machine falls on all levels alike); each round's row goes to stderr and the round with the median
// tokens/s is the one reported, with every round's tokens/s beside it.
const machine = { cpu_model: cpus()[0]?.model ?? 'unknown', cores: availableParallelism(), node: process.version, arch: arch() };
const common = { prompt_tokens: PROMPT.length, max_tokens: maxTokens, duration_s: duration, model: modelInfo ?? { checkpoint }, machine, server_args: serverArgs.join(' ') };
const rows = [];
try {
  for (let round_ = 1; round_ <= rounds; round_++) {
    for (const batching of modes) {
      const server = await startServer(batching);
      try {
        const s = await schedulerSettings(server.url);
        const server_ = { threads: s.threads, max_in_flight: s.maxInFlight, pipeline_min_rows: s.pipelineMinRows, max_batch: s.maxBatch, uv_threadpool: s.uvThreadpoolSize };
        // Warm-up: a few requests at the widest level (caches, JIT, the thread pool).
        await Promise.all(Array.from({ length: Math.max(...levels) }, () => fetch(`${server.url}/v1/generate`, { method: 'POST', body: body() }).then((r) => r.text())));
        for (const clients of levels) {
          const t = await throughput(server.url, clients);
          const tt = await ttft(server.url, clients);
          // The 1-minute load average at the end of the level: other work on the machine skews the numbers.
          const row = { batching, clients, tokens_per_s: t.tokens_per_s, p50_ms: t.p50_ms, p99_ms: t.p99_ms, ttft_p50_ms: tt.ttft_p50_ms, requests: t.requests, ...t, ...tt, ...common, server: server_, cpus: cpus().length, loadavg_1m: round(loadavg()[0], 2) };
          rows.push(row);
          if (rounds === 1) emit(row);
          else process.stderr.write(`round ${round_}/${rounds}: ${JSON.stringify(row)}\n`);
        }
      } finally {
        await server.stop();
      }
    }
  }
  const reported = [];
  for (const batching of modes) {
    for (const clients of levels) {
      const all = rows.filter((r) => r.batching === batching && r.clients === clients).sort((a, b) => a.tokens_per_s - b.tokens_per_s);
      const row = all[(all.length - 1) >> 1];
      reported.push(row);
      if (rounds > 1) emit({ ...row, rounds, tokens_per_s_rounds: rows.filter((r) => r.batching === batching && r.clients === clients).map((r) => r.tokens_per_s) });
    }
  }
  for (const batching of modes) {
    const lo = reported.find((r) => r.batching === batching && r.clients === Math.min(...levels));
    const hi = reported.find((r) => r.batching === batching && r.clients === Math.max(...levels));
    if (lo && hi && lo !== hi) {
      emit({ batching, ratio: `tokens/s(${hi.clients} clients) / tokens/s(${lo.clients} client${lo.clients === 1 ? '' : 's'})`, value: round(hi.tokens_per_s / lo.tokens_per_s, 2), target: batching ? 8 : null, rounds, max_tokens: maxTokens, machine, server: hi.server, server_args: serverArgs.join(' ') });
    }
  }
} finally {
  rmSync(tmp, { recursive: true, force: true });
}
