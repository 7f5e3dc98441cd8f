// The options of a data-parallel run and how they travel to worker processes (environment variables,
// like torchrun's RANK / WORLD_SIZE / LOCAL_RANK / MASTER_ADDR / MASTER_PORT, with an RT_ prefix).

/** How a job is spread: `gpus` worker processes on each of `nnodes` hosts. */
export interface DistributedOptions {
  /** Worker processes (one GPU each) on this host. */
  gpus: number;
  /** Hosts in the job (default 1). */
  nnodes?: number;
  /** This host's index in [0, nnodes) (default 0). Global rank = nodeRank * gpus + local rank. */
  nodeRank?: number;
  /** Where rank 0 listens for the rendezvous (default 127.0.0.1: one host). */
  masterAddr?: string;
  /** Its TCP port (default: a free port on one host; 29500 with several hosts, like torchrun). */
  masterPort?: number;
  /** Longest wait for the other ranks: the rendezvous, joining NCCL, each collective (default 300000 ms). */
  timeoutMs?: number;
  /**
   * 'nccl' (GPUs, the default when the model is on 'cuda') or 'tcp' (CPU tensors averaged through rank 0
   * over the rendezvous sockets: for tests and debugging, slow).
   */
  backend?: 'nccl' | 'tcp';
}

/** What a worker process learns from its environment. */
export interface WorkerEnv {
  rank: number;
  worldSize: number;
  localRank: number;
  masterAddr: string;
  masterPort: number;
  timeoutMs: number;
  backend: 'nccl' | 'tcp' | undefined;
}

export const ENV = {
  rank: 'RT_RANK',
  worldSize: 'RT_WORLD_SIZE',
  localRank: 'RT_LOCAL_RANK',
  masterAddr: 'RT_MASTER_ADDR',
  masterPort: 'RT_MASTER_PORT',
  timeoutMs: 'RT_DIST_TIMEOUT_MS',
  backend: 'RT_DIST_BACKEND',
} as const;

export const DEFAULT_TIMEOUT_MS = 300_000;
export const DEFAULT_MULTI_NODE_PORT = 29500;

export function positiveInt(v: unknown, name: string): number {
  if (typeof v !== 'number' || !Number.isSafeInteger(v) || v < 1) throw new RangeError(`${name}: expected a positive integer, got ${String(v)}`);
  return v;
}

export function checkPort(v: unknown, name: string): number {
  if (typeof v !== 'number' || !Number.isSafeInteger(v) || v < 1 || v > 65535) throw new RangeError(`${name}: expected a TCP port in [1, 65535], got ${String(v)}`);
  return v;
}

export function checkBackend(v: unknown, name: string): 'nccl' | 'tcp' | undefined {
  if (v === undefined || v === '') return undefined;
  if (v !== 'nccl' && v !== 'tcp') throw new RangeError(`${name}: expected 'nccl' or 'tcp', got ${String(v)}`);
  return v;
}

function envInt(env: NodeJS.ProcessEnv, key: string): number {
  const raw = env[key];
  const n = raw === undefined || raw.trim() === '' ? NaN : Number(raw);
  if (!Number.isSafeInteger(n)) throw new RangeError(`${key}: expected an integer in the environment, got ${raw === undefined ? 'nothing' : `'${raw}'`}`);
  return n;
}

/** Whether this process was started as a worker of a data-parallel job (RT_WORLD_SIZE is set). */
export function isWorker(env: NodeJS.ProcessEnv = process.env): boolean {
  return env[ENV.worldSize] !== undefined && env[ENV.worldSize] !== '';
}

/** The worker's rank, world size and rendezvous address from the environment; errors name the variable. */
export function workerEnv(env: NodeJS.ProcessEnv = process.env): WorkerEnv {
  const worldSize = envInt(env, ENV.worldSize);
  if (worldSize < 1) throw new RangeError(`${ENV.worldSize}: expected a positive integer, got ${worldSize}`);
  const rank = envInt(env, ENV.rank);
  if (rank < 0 || rank >= worldSize) throw new RangeError(`${ENV.rank}: expected an integer in [0, ${worldSize - 1}], got ${rank}`);
  const localRank = env[ENV.localRank] === undefined ? rank : envInt(env, ENV.localRank);
  const masterAddr = env[ENV.masterAddr] || '127.0.0.1';
  const masterPort = checkPort(envInt(env, ENV.masterPort), ENV.masterPort);
  const timeoutMs = env[ENV.timeoutMs] === undefined ? DEFAULT_TIMEOUT_MS : positiveInt(envInt(env, ENV.timeoutMs), ENV.timeoutMs);
  return { rank, worldSize, localRank, masterAddr, masterPort, timeoutMs, backend: checkBackend(env[ENV.backend], ENV.backend) };
}
