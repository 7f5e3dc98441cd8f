#!/usr/bin/env node
// Where a served request's CPU goes: starts `rt serve` on the serve bench's model (d 128, heads 4, window 16,
// 1 layer, char vocabulary of 96, random weights; batching on, --max-batch 64), drives it with autocannon
// (POST /v1/generate {17-token prompt, maxTokens 32}) at --clients for --duration s after a 2 s warm-up at
// 64, and prints the server's CPU time per request from /proc (its main thread, i.e. the event loop, and
// every other thread: the decoder steps) beside this process's own (the load generator). On a shared
// machine these move less than tokens/s does, so two builds can be compared by running each in turn.
//
//   node bench/serve-cpu.mjs [--clients 64] [--duration 5] [--server-args="--threads 8 ..."]
//   (Linux only: reads /proc/<pid>/task; --server-args are added to rt serve's flags)
import { spawn } from 'node:child_process';
import { mkdtempSync, readFileSync, readdirSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import autocannon from 'autocannon';

const root = join(dirname(fileURLToPath(import.meta.url)), '..');
const { values: f } = parseArgs({ options: { clients: { type: 'string' }, duration: { type: 'string' }, 'server-args': { type: 'string' } } });
const serverArgs = (f['server-args'] ?? '').split(/\s+/).filter(Boolean);
const clients = Number(f.clients ?? 64);
const duration = Number(f.duration ?? 5);
for (const [name, v] of [['clients', clients], ['duration', duration]]) {
  if (!(Number.isInteger(v) && v > 0)) throw new Error(`--${name}: expected a positive integer, got ${v}`);
}
const rt = await import(join(root, 'dist', 'index.js'));
const chars = '\n' + Array.from({ length: 95 }, (_, i) => String.fromCharCode(32 + i)).join('');
const tok = new rt.CharTokenizer(chars);
const cfg = { vocabSize: tok.vocabSize, d: 128, heads: 4, window: 16, layers: 1, maxLen: 512, seed: 1 };
const model = new rt.RecurrentTransformer(cfg);
const tmp = mkdtempSync(join(tmpdir(), 'rt-serve-cpu-'));
const checkpoint = join(tmp, 'char-d128.safetensors');
await rt.saveCheckpoint(checkpoint, { params: model.exportParameters(), shapes: Object.fromEntries(model.parameters().map((p) => [p.name, [...p.shape]])), config: { model: cfg }, tied: true, tokenizer: tok.toJSON() });
model.dispose();
// Through the `rt` entry (rt.cjs), which sizes libuv's thread pool for the steps in flight.
const child = spawn(process.execPath, [join(root, 'dist', 'cli', 'rt.cjs'), 'serve', '--checkpoint', checkpoint, '--host', '127.0.0.1', '--port', '0', '--max-queue', '1024', '--max-batch', '64', ...serverArgs], { cwd: root, stdio: ['ignore', 'inherit', 'pipe'] });
let stderr = '';
const url = await new Promise((resolve, reject) => {
  child.stderr.on('data', (d) => {
    stderr += d;
    const m = /listening on (http:\/\/127\.0\.0\.1:\d+)/.exec(stderr);
    if (m) resolve(m[1]);
  });
  child.once('exit', (code) => reject(new Error(`rt serve exited with ${code}:\n${stderr}`)));
});
// CPU ms of the server's threads so far (utime + stime, in clock ticks of 10 ms).
const cpu = () => {
  const out = { main: 0, other: 0 };
  for (const t of readdirSync(`/proc/${child.pid}/task`)) {
    const fields = readFileSync(`/proc/${child.pid}/task/${t}/stat`, 'utf8').split(') ')[1].split(' ');
    const ms = (Number(fields[11]) + Number(fields[12])) * 10;
    if (Number(t) === child.pid) out.main += ms;
    else out.other += ms;
  }
  return out;
};
let seed = 0;
async function level(connections, seconds) {
  let tokens = 0;
  let ok = 0;
  const c0 = cpu();
  const u0 = process.cpuUsage();
  const r = await autocannon({
    url, connections, duration: seconds,
    requests: [{
      method: 'POST', path: '/v1/generate', headers: { 'content-type': 'application/json' },
      setupRequest(req) {
        req.body = JSON.stringify({ prompt: 'ROMEO: what light', maxTokens: 32, seed: seed++ });
        return req;
      },
      onResponse(status, text) {
        if (status !== 200) return;
        ok++;
        tokens += JSON.parse(text).tokens;
      },
    }],
  });
  const c1 = cpu();
  const u = process.cpuUsage(u0);
  const per = (ms) => Math.round((ms / Math.max(1, ok)) * 1000) / 1000;
  return { bench: 'serve-cpu', clients: connections, tokens_per_s: Math.round(tokens / r.duration), requests: ok, server_main_ms_per_request: per(c1.main - c0.main), server_other_ms_per_request: per(c1.other - c0.other), loadgen_ms_per_request: per((u.user + u.system) / 1000), server_args: serverArgs.join(' ') };
}
try {
  await level(64, 2);
  console.log(JSON.stringify(await level(clients, duration)));
} finally {
  child.kill('SIGTERM');
  await new Promise((r) => child.once('exit', r));
  rmSync(tmp, { recursive: true, force: true });
}
