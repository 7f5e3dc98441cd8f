#!/usr/bin/env node
// The `rt` command (loaded by its entry, rt.cts, which sizes libuv's thread pool for `rt serve` first;
// `node dist/cli/rt.js` runs it too).
import { parseArgs } from 'node:util';
import { UsageError, type Flags } from './args.js';
import { evalCommand, infoCommand } from './inspect.js';
import { generateCommand } from './generate.js';
import { REPORT_HELP, reportCommand } from './report.js';
import { SCALING_HELP, scalingCommand } from './scaling.js';
import { serveCommand } from './serve.js';
import { tokenizerCommand } from './tokenizer.js';
import { TRAIN_HELP, trainCommand } from './train.js';

const BOOLEAN = ['json', 'bias', 'alpha-fixed', 'no-positional', 'no-curriculum', 'curriculum-compound', 'no-batching', 'exact'];
const STRING = [
  'task', 'noise', 'M', 'alphabet', 'd', 'heads', 'layers', 'window', 'window-range', 'variant', 'alpha',
  'activation', 'dropout', 'steps', 'batch', 'lr', 'beta2', 'weight-decay', 'max-grad-norm', 'schedule', 'warmup',
  'curriculum-start', 'curriculum-threshold', 'eval-every', 'eval-batches', 'stop-accuracy', 'seed', 'out',
  'resume', 'checkpoint', 'batches', 'data', 'tokenizer', 'seq-len', 'cache', 'lm-target', 'prompt', 'max-tokens',
  'temperature', 'top-k', 'top-p', 'stop', 'vocab', 'port', 'host', 'device', 'max-batch', 'max-queue', 'max-tokens-limit',
  'timeout-ms', 'threads', 'max-in-flight', 'pipeline-min-rows', 'preset', 'precision', 'stop-loss', 'checkpoint-every',
  // rt scaling
  'bootstrap', 'params', 'ks', 'hll-precision', 'min-tokens', 'limit', 'tokens', 'reference', 'fit', 'beta', 'widths', 'fractions', 'head-size',
  // rt train --gpus (multi-GPU)
  'gpus', 'nnodes', 'node-rank', 'master-addr', 'master-port', 'dist-backend',
];
const OPTIONS = Object.fromEntries([
  ['help', { type: 'boolean' as const, short: 'h' }],
  ...BOOLEAN.map((k) => [k, { type: 'boolean' as const }]),
  ...STRING.map((k) => [k, { type: 'string' as const }]),
]);

const HELP = `rt <command> [flags]

  train    train a copy, selective-copy, text or image model (no flags: a small copy task, under a minute)
  eval     --checkpoint FILE [--noise L --batches N]   accuracy on fresh data
  info     --checkpoint FILE                            config and parameter count
  generate --checkpoint FILE [--prompt TEXT --max-tokens 500 --temperature 0.8 --top-k --top-p --seed --stop TEXT]
  serve    --checkpoint FILE [--port 8080 --host 127.0.0.1 --max-batch 32 --max-queue 256 --no-batching]
           [--threads N (decoder threads; default: the CPUs this process may use) --max-in-flight N
           --pipeline-min-rows N]   POST /v1/generate, POST /v1/score, GET /v1/model, GET /healthz
  tokenizer train --data FILE|DIR --vocab V --out FILE.json   train a byte-level BPE vocabulary
  ${REPORT_HELP}
  ${SCALING_HELP}

${TRAIN_HELP}`;

async function main(argv: string[]): Promise<number> {
  const [command, ...afterCommand] = argv;
  const hasSub = command === 'tokenizer' || command === 'scaling';
  const sub = hasSub ? afterCommand[0] : undefined;
  const rest = hasSub ? afterCommand.slice(1) : afterCommand;
  if (!command || command === '--help' || command === '-h' || command === 'help') {
    process.stdout.write(HELP + '\n');
    return command ? 0 : 2;
  }
  // `rt COMMAND --help`: that command's part of the help (train, report and scaling have their own).
  const help = (): number => {
    const own: Record<string, string> = { train: TRAIN_HELP, report: REPORT_HELP, scaling: SCALING_HELP };
    process.stdout.write((own[command] ?? HELP) + '\n');
    return 0;
  };
  if (hasSub && (sub === '--help' || sub === '-h')) return help();
  let flags: Flags;
  let positionals: string[] = [];
  try {
    // Only `rt report` and `rt scaling` take positional arguments (run folders, files).
    const parsed = parseArgs({ args: rest, options: OPTIONS, strict: true, allowPositionals: command === 'report' || command === 'scaling' });
    flags = parsed.values as Flags;
    positionals = parsed.positionals;
  } catch (e) {
    throw new UsageError(`${(e as Error).message} (try rt --help)`);
  }
  if (flags.help) return help();
  switch (command) {
    case 'train':
      return trainCommand(flags);
    case 'eval':
      return evalCommand(flags);
    case 'info':
      return infoCommand(flags);
    case 'generate':
      return generateCommand(flags);
    case 'serve':
      return serveCommand(flags);
    case 'tokenizer':
      return tokenizerCommand(sub, flags);
    case 'scaling':
      return scalingCommand(sub, positionals, flags);
    case 'report':
      return reportCommand(positionals, flags);
    default:
      throw new UsageError(`unknown command '${command}' (try rt --help)`);
  }
}

main(process.argv.slice(2)).then(
  (code) => {
    process.exitCode = code;
  },
  (e: unknown) => {
    const err = e as Error;
    process.stderr.write(`rt: ${err instanceof UsageError ? err.message : (err.stack ?? String(err))}\n`);
    process.exitCode = err instanceof UsageError ? 2 : 1;
  },
);
