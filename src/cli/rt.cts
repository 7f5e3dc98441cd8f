#!/usr/bin/env node
// The `rt` command's entry (package.json "bin"): sizes libuv's thread pool for `rt serve`, then loads rt.js.
//
// Each decoder step in flight holds a thread of libuv's pool (an async Node-API call), and libuv reads
// UV_THREADPOOL_SIZE once, when the pool starts. Node's ES module loader starts it while it reads rt.js,
// before a line of it runs, so setting the variable there is too late; a CommonJS file loads without it.
// The size: the scheduler's steps in flight (--max-in-flight, else decoder threads + 1 with --threads, else
// RT_NUM_THREADS, else os.availableParallelism(); see resolveSchedulerOptions in src/serve/scheduler.ts)
// plus one thread for other work, and never below libuv's default of 4. A UV_THREADPOOL_SIZE already in
// the environment is kept. Flags are only peeked at here: rt.js checks them and names a bad one.
import { availableParallelism } from 'node:os';
import { parseArgs } from 'node:util';

function peekInt(v: unknown): number | undefined {
  const n = typeof v === 'string' ? Number(v) : NaN;
  return Number.isSafeInteger(n) && n >= 1 ? n : undefined;
}

const argv = process.argv.slice(2);
if (argv[0] === 'serve' && process.env.UV_THREADPOOL_SIZE === undefined) {
  const { values } = parseArgs({ args: argv.slice(1), options: { threads: { type: 'string' }, 'max-in-flight': { type: 'string' } }, strict: false, allowPositionals: true });
  const threads = peekInt(values.threads) ?? peekInt(process.env.RT_NUM_THREADS) ?? availableParallelism();
  const inFlight = peekInt(values['max-in-flight']) ?? threads + 1;
  process.env.UV_THREADPOOL_SIZE = String(Math.min(1024, Math.max(4, inFlight + 1)));
}
void import('./rt.js');
