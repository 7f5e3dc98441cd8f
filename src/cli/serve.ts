// `rt serve`: the inference server over a text checkpoint. SIGTERM/SIGINT drain the requests in flight,
// then exit 0. --threads N: decoder threads (the addon's pool, RT_NUM_THREADS, and steps computing at
// once); the `rt` entry (rt.cts) has already sized libuv's pool for the steps in flight.
import { loadModel } from '../model/load.js';
import { preferDevice } from '../native.js';
import { createServer } from '../serve/server.js';
import { tokenizerFromJSON } from '../tokenizer/index.js';
import { uvThreadpoolSize } from '../serve/scheduler.js';
import { int, positiveInt, str, UsageError, type Flags } from './args.js';

export async function serveCommand(flags: Flags): Promise<number> {
  if (typeof flags.checkpoint !== 'string') throw new UsageError('--checkpoint FILE: required');
  const threads = positiveInt(flags, 'threads');
  const maxInFlight = positiveInt(flags, 'max-in-flight');
  const pipelineMinRows = positiveInt(flags, 'pipeline-min-rows');
  const maxBatch = flags['no-batching'] ? 1 : (positiveInt(flags, 'max-batch') ?? 32);
  const maxQueue = int(flags, 'max-queue', 256);
  if (maxQueue < 0) throw new UsageError(`--max-queue: expected an integer >= 0, got '${String(flags['max-queue'])}'`);
  // The addon reads RT_NUM_THREADS when it first computes (below, at the earliest): a step that runs alone
  // splits its work over that many threads.
  if (threads !== undefined) process.env.RT_NUM_THREADS = String(threads);
  // Like rt train: --device cuda falls back to the CPU with a warning that says why (RT_DEVICE_STRICT=1: an error).
  const device = preferDevice(str(flags, 'device', ['cpu', 'cuda'] as const, 'cpu'), '--device cuda');
  const { model, checkpoint } = await loadModel(flags.checkpoint, { device });
  if (!checkpoint.tokenizer) throw new UsageError(`rt serve: ${flags.checkpoint} holds no tokenizer (was it trained with --task text?)`);
  const tokenizer = tokenizerFromJSON(checkpoint.tokenizer);
  const running = await createServer({
    model,
    tokenizer,
    host: typeof flags.host === 'string' ? flags.host : '127.0.0.1',
    port: int(flags, 'port', 8080),
    maxBatch,
    maxQueue,
    maxTokensLimit: int(flags, 'max-tokens-limit', 1024),
    timeoutMs: int(flags, 'timeout-ms', 120_000),
    threads,
    maxInFlight,
    pipelineMinRows,
  });
  const o = running.scheduler.options;
  process.stderr.write(
    `rt serve: listening on ${running.url} (${model.parameterCount()} parameters on ${model.device}, batch ${o.maxBatch}, ` +
      `threads ${o.threads}, ${o.maxInFlight} steps in flight of >= ${o.pipelineMinRows} sequences)\n`,
  );
  // Started without the `rt` entry (node dist/cli/rt.js) and without UV_THREADPOOL_SIZE: libuv's 4 threads
  // cap the steps in flight.
  if (maxInFlight === undefined && o.maxInFlight < o.threads + 1) {
    process.stderr.write(
      `rt serve: libuv's thread pool has ${uvThreadpoolSize()} threads, so at most ${o.maxInFlight} steps are in flight for ${o.threads} threads; ` +
        `start node with UV_THREADPOOL_SIZE=${o.threads + 2} (the rt command sets it)\n`,
    );
  }
  await new Promise<void>((resolve) => {
    const stop = (): void => {
      process.stderr.write('rt serve: draining requests in flight\n');
      void running.close().then(resolve);
    };
    process.once('SIGTERM', stop);
    process.once('SIGINT', stop);
  });
  model.dispose();
  return 0;
}
