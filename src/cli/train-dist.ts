// `rt train --gpus N`: the launcher side (start N workers of this same command) and the worker side (join
// the job, take rank 0's flags and output folder, so that every rank trains the same run).
import { int, str, UsageError, type Flags } from './args.js';
import { launch } from '../distributed/launcher.js';
import { isWorker } from '../distributed/options.js';
import { initProcessGroup, type ProcessGroup } from '../distributed/process-group.js';

export const DIST_HELP = `multi-GPU --gpus N (one worker process per GPU; --batch is the global batch, split evenly)
          --nnodes 1  --node-rank 0  --master-addr 127.0.0.1  --master-port (free port; 29500 with --nnodes > 1)
          --dist-backend nccl|tcp (tcp: CPU tensors through rank 0, for tests); RT_DIST_TIMEOUT_MS (300000)`;

/** Flags that only the launcher reads: a worker never launches again. */
const LAUNCH_FLAGS = ['gpus', 'nnodes', 'node-rank', 'master-addr', 'master-port'];

/** Whether this `rt train` should start workers instead of training itself. */
export function wantsLaunch(flags: Flags): boolean {
  return flags.gpus !== undefined && !isWorker();
}

/** Starts the workers (the same command and flags) and waits for them; the exit code of the job. */
export async function launchTrainWorkers(flags: Flags): Promise<number> {
  const gpus = int(flags, 'gpus', 1);
  if (gpus < 1) throw new UsageError(`--gpus: expected a positive integer, got ${gpus}`);
  const nnodes = int(flags, 'nnodes', 1);
  const script = process.argv[1];
  if (!script) throw new UsageError('--gpus: cannot find the rt script to start the workers with');
  const controller = new AbortController();
  const onSignal = (): void => controller.abort();
  process.once('SIGINT', onSignal);
  process.once('SIGTERM', onSignal);
  try {
    const result = await launch({
      gpus,
      nnodes,
      nodeRank: int(flags, 'node-rank', 0),
      masterAddr: typeof flags['master-addr'] === 'string' ? flags['master-addr'] : undefined,
      masterPort: flags['master-port'] !== undefined ? int(flags, 'master-port') : undefined,
      backend: flags['dist-backend'] !== undefined ? str(flags, 'dist-backend', ['nccl', 'tcp'] as const, 'nccl') : undefined,
      script,
      args: process.argv.slice(2),
      signal: controller.signal,
    }).catch((e: unknown) => {
      throw e instanceof RangeError || e instanceof TypeError ? new UsageError(`--gpus: ${e.message}`) : e;
    });
    if (result.code !== 0) process.stderr.write(`rt train: ${result.message ?? 'a worker failed'}\n`);
    return result.code;
  } finally {
    process.off('SIGINT', onSignal);
    process.off('SIGTERM', onSignal);
  }
}

export interface TrainJob {
  group: ProcessGroup;
  /** Rank 0's flags (what every rank trains with). */
  flags: Flags;
  /** Rank 0's output folder. */
  out: string;
}

/** Joins the job as a worker. Rank 0 decides the flags and the output folder for everyone. */
export async function joinTrainJob(flags: Flags, out: string): Promise<TrainJob> {
  const mine: Flags = Object.fromEntries(Object.entries(flags).filter(([k]) => !LAUNCH_FLAGS.includes(k)));
  const backend = flags['dist-backend'] !== undefined ? str(flags, 'dist-backend', ['nccl', 'tcp'] as const, 'nccl') : undefined;
  const group = await initProcessGroup({ backend, payload: { flags: mine, out } });
  const cfg = group.payload as { flags?: Flags; out?: string } | null;
  if (!cfg || typeof cfg.out !== 'string' || typeof cfg.flags !== 'object' || cfg.flags === null) {
    group.destroy();
    throw new Error('rt train: rank 0 sent no run config (are all hosts running the same rt version?)');
  }
  // One GPU per worker: the model lives on it unless the job runs the CPU 'tcp' backend.
  const jobFlags: Flags = { ...cfg.flags };
  if (jobFlags.device === undefined && group.backend === 'nccl') jobFlags.device = 'cuda';
  return { group, flags: jobFlags, out: cfg.out };
}
