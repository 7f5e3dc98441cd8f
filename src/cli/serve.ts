// `rt serve`: the inference server over a text checkpoint. SIGTERM/SIGINT drain the requests in flight,
// then exit 0.
import { loadModel } from '../model/load.js';
import { preferDevice } from '../native.js';
import { createServer } from '../serve/server.js';
import { tokenizerFromJSON } from '../tokenizer/index.js';
import { int, str, UsageError, type Flags } from './args.js';

export async function serveCommand(flags: Flags): Promise<number> {
  if (typeof flags.checkpoint !== 'string') throw new UsageError('--checkpoint FILE: required');
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
    maxBatch: flags['no-batching'] ? 1 : int(flags, 'max-batch', 32),
    maxQueue: int(flags, 'max-queue', 256),
    maxTokensLimit: int(flags, 'max-tokens-limit', 1024),
    timeoutMs: int(flags, 'timeout-ms', 120_000),
  });
  process.stderr.write(`rt serve: listening on ${running.url} (${model.parameterCount()} parameters on ${model.device}, batch ${running.scheduler.options.maxBatch})\n`);
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
