// The launcher (like torchrun): starts one worker process per GPU of this host, each running the same
// script with its rank in the environment (RT_RANK, RT_WORLD_SIZE, RT_LOCAL_RANK, RT_CUDA_DEVICE,
// RT_MASTER_ADDR, RT_MASTER_PORT). When a worker fails, the others are stopped (SIGTERM, then SIGKILL after
// a grace period) and the result names the rank and how it ended: a failed job never leaves processes behind.
// A worker that exits with PEER_FAILURE_EXIT_CODE only says that another rank failed: the launcher then waits
// a little (peerFailureGraceMs) for the rank that really failed to exit, so that the result names it, and
// only then stops the rest.
import { spawn, type ChildProcess } from 'node:child_process';
import { createServer } from 'node:net';
import {
  DEFAULT_MULTI_NODE_PORT,
  DEFAULT_TIMEOUT_MS,
  ENV,
  checkBackend,
  checkPort,
  positiveInt,
  type DistributedOptions,
} from './options.js';

/** A worker's exit code meaning "stopped because another rank failed" (not a failure of its own). */
export const PEER_FAILURE_EXIT_CODE = 75;

export interface LaunchOptions extends DistributedOptions {
  /** The script every worker runs with node (e.g. your training script, or the rt CLI). */
  script: string;
  args?: readonly string[];
  /** Node flags for the workers (default: this process's execArgv). */
  execArgv?: readonly string[];
  /** Base environment of the workers (default process.env); the rank variables are added to it. */
  env?: NodeJS.ProcessEnv;
  /** 'inherit' (default) shares this terminal; 'pipe' gives you the streams through onSpawn. */
  stdio?: 'inherit' | 'pipe';
  /** Between SIGTERM and SIGKILL of the survivors when a worker fails (default 5000 ms). */
  killAfterMs?: number;
  /**
   * When the first worker to fail exits with PEER_FAILURE_EXIT_CODE (it stopped because another rank failed),
   * how long to wait for a worker that failed on its own to exit, so that the result names that one, before
   * stopping the rest (default 2500 ms). A real failure in that time stops the rest at once.
   */
  peerFailureGraceMs?: number;
  /** Aborting stops the workers (SIGTERM: they finish the current step and checkpoint). */
  signal?: AbortSignal;
  /** After an abort, how long the workers may take to checkpoint and exit before SIGKILL (default 120000 ms). */
  abortGraceMs?: number;
  onSpawn?: (rank: number, child: ChildProcess) => void;
}

export interface WorkerExit {
  rank: number;
  localRank: number;
  code: number | null;
  signal: NodeJS.Signals | null;
}

export interface LaunchResult {
  /** 0 when every worker exited 0; otherwise 1. */
  code: number;
  exits: WorkerExit[];
  /** The worker whose failure ended the job. */
  failed?: WorkerExit;
  /** A sentence for the user when the job failed. */
  message?: string;
}

/** A free TCP port on `host` (asked from the OS; it may be taken again before rank 0 listens, rarely). */
export function freePort(host = '127.0.0.1'): Promise<number> {
  return new Promise((resolve, reject) => {
    const s = createServer();
    s.once('error', reject);
    s.listen(0, host, () => {
      const addr = s.address();
      const port = typeof addr === 'object' && addr ? addr.port : 0;
      s.close(() => resolve(port));
    });
  });
}

function describeExit(e: WorkerExit): string {
  const how = e.signal ? `was killed by ${e.signal}` : `exited with code ${String(e.code)}`;
  return `rank ${e.rank} (local rank ${e.localRank}) ${how}`;
}

/** Starts `gpus` workers on this host and resolves when all have exited. Errors name the option. */
export async function launch(opts: LaunchOptions): Promise<LaunchResult> {
  if (typeof opts.script !== 'string' || opts.script === '') throw new TypeError('script: expected the path of the script the workers run');
  const gpus = positiveInt(opts.gpus, 'gpus');
  const nnodes = positiveInt(opts.nnodes ?? 1, 'nnodes');
  const nodeRank = opts.nodeRank ?? 0;
  if (!Number.isSafeInteger(nodeRank) || nodeRank < 0 || nodeRank >= nnodes) throw new RangeError(`nodeRank: expected an integer in [0, ${nnodes - 1}], got ${String(nodeRank)}`);
  const masterAddr = opts.masterAddr ?? '127.0.0.1';
  if (typeof masterAddr !== 'string' || masterAddr === '') throw new TypeError('masterAddr: expected a host name or address');
  if (nnodes > 1 && opts.masterAddr === undefined) throw new RangeError('masterAddr: required with several hosts (nnodes > 1): the address of the host with nodeRank 0');
  const masterPort = opts.masterPort !== undefined ? checkPort(opts.masterPort, 'masterPort') : nnodes > 1 ? DEFAULT_MULTI_NODE_PORT : await freePort(masterAddr);
  const timeoutMs = positiveInt(opts.timeoutMs ?? DEFAULT_TIMEOUT_MS, 'timeoutMs');
  const backend = checkBackend(opts.backend, 'backend');
  const killAfterMs = opts.killAfterMs ?? 5000;
  const peerFailureGraceMs = opts.peerFailureGraceMs ?? 2500;
  if (!Number.isFinite(peerFailureGraceMs) || peerFailureGraceMs < 0) throw new RangeError(`peerFailureGraceMs: expected a number of milliseconds >= 0, got ${String(peerFailureGraceMs)}`);
  const worldSize = gpus * nnodes;
  const base = opts.env ?? process.env;

  const children: Array<ChildProcess | null> = [];
  const exits: WorkerExit[] = [];
  let failed: WorkerExit | undefined;
  let stopping = false;
  let killTimer: NodeJS.Timeout | undefined;
  // Set while a peer-failure exit (75) waits for the real failure to show itself before stopAll.
  let peerTimer: NodeJS.Timeout | undefined;

  const stopAll = (graceMs = killAfterMs): void => {
    clearTimeout(peerTimer);
    peerTimer = undefined;
    if (stopping) return;
    stopping = true;
    for (const c of children) if (c && c.exitCode === null && c.signalCode === null) c.kill('SIGTERM');
    killTimer = setTimeout(() => {
      for (const c of children) if (c && c.exitCode === null && c.signalCode === null) c.kill('SIGKILL');
    }, graceMs);
    killTimer.unref();
  };
  const onAbort = (): void => stopAll(opts.abortGraceMs ?? 120_000);
  opts.signal?.addEventListener('abort', onAbort, { once: true });

  try {
    await new Promise<void>((resolve) => {
      let running = gpus;
      for (let local = 0; local < gpus; local++) {
        const rank = nodeRank * gpus + local;
        const env: NodeJS.ProcessEnv = {
          ...base,
          [ENV.rank]: String(rank),
          [ENV.worldSize]: String(worldSize),
          [ENV.localRank]: String(local),
          [ENV.masterAddr]: masterAddr,
          [ENV.masterPort]: String(masterPort),
          [ENV.timeoutMs]: String(timeoutMs),
          RT_CUDA_DEVICE: String(local),
          // NVLink SHARP (NVLS) multicast is off on the machines this was built for; set it to 1 to use it.
          NCCL_NVLS_ENABLE: base.NCCL_NVLS_ENABLE ?? '0',
          ...(backend ? { [ENV.backend]: backend } : {}),
        };
        let child: ChildProcess;
        try {
          child = spawn(process.execPath, [...(opts.execArgv ?? process.execArgv), opts.script, ...(opts.args ?? [])], { env, stdio: opts.stdio ?? 'inherit' });
        } catch {
          failed ??= { rank, localRank: local, code: null, signal: null };
          children.push(null);
          stopAll();
          if (--running === 0) resolve();
          continue;
        }
        children.push(child);
        opts.onSpawn?.(rank, child);
        let done = false;
        const finish = (code: number | null, signal: NodeJS.Signals | null): void => {
          if (done) return;
          done = true;
          const ex: WorkerExit = { rank, localRank: local, code, signal };
          exits.push(ex);
          const bad = code !== 0 || signal !== null;
          const byPeer = code === PEER_FAILURE_EXIT_CODE && !signal;
          if (bad && !stopping) {
            if (!byPeer) {
              // A failure of its own (also while waiting after a peer-failure exit): the root cause.
              failed = ex;
              stopAll();
            } else if (peerTimer === undefined) {
              // This rank only stopped because another one failed: give the failing rank a moment to exit
              // and be named, then stop whoever is left (a hang still ends). Later 75s change nothing.
              failed = ex;
              peerTimer = setTimeout(() => {
                peerTimer = undefined;
                stopAll();
              }, peerFailureGraceMs);
              peerTimer.unref();
            }
          } else if ((code !== 0 || signal) && failed && failed.code === PEER_FAILURE_EXIT_CODE && code !== PEER_FAILURE_EXIT_CODE && !signal) {
            // The first worker seen to fail only stopped because of another rank: name the real one.
            failed = ex;
          }
          if (--running === 0) resolve();
        };
        child.once('exit', finish);
        child.once('error', () => finish(null, null));
      }
    });
  } finally {
    clearTimeout(peerTimer);
    clearTimeout(killTimer);
    opts.signal?.removeEventListener('abort', onAbort);
  }
  exits.sort((a, b) => a.rank - b.rank);
  if (!failed) {
    const bad = exits.find((e) => e.code !== 0 || e.signal);
    if (bad) failed = bad;
  }
  if (!failed) return { code: 0, exits };
  const others = exits.length - 1;
  return {
    code: 1,
    exits,
    failed,
    message: `${describeExit(failed)}; stopped the other ${others} worker${others === 1 ? '' : 's'} on this host`,
  };
}
