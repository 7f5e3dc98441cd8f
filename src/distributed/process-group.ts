// The public face of data parallelism inside one worker process, like torch.distributed's process group:
// initProcessGroup() reads the rank from the environment the launcher set, meets the other ranks over TCP,
// joins NCCL (backend 'nccl') and returns a ProcessGroup that the trainer uses to average gradients.
import { Buffer } from 'node:buffer';
import type { Parameter } from '../model/layer.js';
import { loadNative, type NativeAddon, type NativeComm } from '../native.js';
import { Group } from './group.js';
import { workerEnv, type WorkerEnv } from './options.js';
import { rendezvous } from './rendezvous.js';
import type { GradientSync } from './sync.js';

export interface ProcessGroupOptions {
  /** 'nccl' (GPU gradients, the default) or 'tcp' (CPU gradients through rank 0: tests, debugging). */
  backend?: 'nccl' | 'tcp';
  /** Rank 0's run config, sent to every rank (JSON); the others read it from `payload`. */
  payload?: unknown;
  /** Where rank, world size and master come from (default process.env, as set by the launcher). */
  env?: NodeJS.ProcessEnv;
  /** Overrides RT_DIST_TIMEOUT_MS. */
  timeoutMs?: number;
  heartbeatMs?: number;
  deadAfterMs?: number;
  /** Gradient bucket size for NCCL (default 25 MiB, like PyTorch DDP). */
  bucketBytes?: number;
}

export class ProcessGroup implements GradientSync {
  readonly rank: number;
  readonly worldSize: number;
  readonly localRank: number;
  readonly backend: 'nccl' | 'tcp';
  /** Rank 0's payload (the run config), the same object on every rank. */
  readonly payload: unknown;
  #group: Group;
  #comm: NativeComm | null;
  #addon: NativeAddon | null;
  #bucketBytes: number;
  #closed = false;

  /** @internal Use initProcessGroup(). */
  constructor(env: WorkerEnv, backend: 'nccl' | 'tcp', payload: unknown, group: Group, comm: NativeComm | null, addon: NativeAddon | null, bucketBytes: number) {
    this.rank = env.rank;
    this.worldSize = env.worldSize;
    this.localRank = env.localRank;
    this.backend = backend;
    this.payload = payload;
    this.#group = group;
    this.#comm = comm;
    this.#addon = addon;
    this.#bucketBytes = bucketBytes;
    // A failure anywhere ends what NCCL is waiting for at once (the collective then rejects).
    group.onFailure(() => this.#comm?.abort());
  }

  /** Rank 0: the one that writes checkpoints and logs. */
  get isMain(): boolean {
    return this.rank === 0;
  }

  /** The error that stopped the job, or null. */
  get failed(): Error | null {
    return this.#group.failed;
  }

  /** True when another rank failed and this one only stopped because of it. */
  get failedByPeer(): boolean {
    return this.#group.failedByPeer;
  }

  onFailure(fn: (e: Error) => void): void {
    this.#group.onFailure(fn);
  }

  async allReduceMean(params: readonly Parameter[], scalars: readonly number[]): Promise<number[]> {
    if (this.#closed) throw new Error('allReduceMean: the process group has been destroyed');
    if (this.#group.failed) throw this.#group.failed;
    if (this.worldSize === 1) return [...scalars];
    try {
      return this.#comm ? await this.#nccl(params, scalars) : await this.#tcp(params, scalars);
    } catch (e) {
      // Tell the others now rather than letting them wait for the timeout; the first failure wins.
      if (!this.#group.failed) this.#group.abort((e as Error).message);
      throw this.#group.failed ?? e;
    }
  }

  async #nccl(params: readonly Parameter[], scalars: readonly number[]): Promise<number[]> {
    // The scalars ride in the same group call as a host tensor of the CUDA addon (staged to the device).
    const s = new this.#addon!.TensorHandle('float32', [scalars.length], Float32Array.from(scalars));
    try {
      await this.#comm!.allReduceMean([...params.map((p) => p.grad.handle(p.name)), s], this.#bucketBytes);
      return Array.from(s.read() as Float32Array);
    } finally {
      s.free();
    }
  }

  async #tcp(params: readonly Parameter[], scalars: readonly number[]): Promise<number[]> {
    const sizes = params.map((p) => p.grad.size);
    const flat = new Float32Array(sizes.reduce((a, b) => a + b, 0) + scalars.length);
    let off = 0;
    params.forEach((p, i) => {
      flat.set(p.grad.toArray() as Float32Array, off);
      off += sizes[i]!;
    });
    flat.set(scalars, off);
    const out = await this.#group.allReduceMean(flat);
    off = 0;
    params.forEach((p, i) => {
      p.grad.handle(p.name).write(out.subarray(off, off + sizes[i]!));
      off += sizes[i]!;
    });
    return Array.from(out.subarray(off));
  }

  /** Waits until every rank has called it. */
  async barrier(): Promise<void> {
    if (this.worldSize > 1) await this.#group.allReduceMean(new Float32Array(1));
  }

  /** Tells the other ranks this one failed (they stop at once), and aborts NCCL. */
  abort(reason: string): void {
    this.#group.abort(reason);
    this.#comm?.abort();
  }

  /** Leaves the job: frees the communicator and closes the sockets. Call it on every rank at the end. */
  destroy(): void {
    if (this.#closed) return;
    this.#closed = true;
    try {
      if (this.#group.failed) this.#comm?.abort();
      else this.#comm?.destroy();
    } finally {
      this.#group.close();
    }
  }
}

/**
 * Joins the data-parallel job this process belongs to (started by `launch()` or `rt train --gpus N`):
 * rank 0 creates the NCCL unique id and, with `payload`, hands it to every rank over TCP; then every rank
 * joins NCCL on its GPU (RT_CUDA_DEVICE = local rank). Every wait has the timeout of RT_DIST_TIMEOUT_MS.
 */
export async function initProcessGroup(opts: ProcessGroupOptions = {}): Promise<ProcessGroup> {
  const env = workerEnv(opts.env);
  if (opts.timeoutMs !== undefined) env.timeoutMs = opts.timeoutMs;
  const backend = opts.backend ?? env.backend ?? 'nccl';
  const bucketBytes = opts.bucketBytes ?? 25 * 1024 * 1024;
  // NCCL is needed only with more than one rank: one GPU trains without it.
  const useNccl = backend === 'nccl' && env.worldSize > 1;
  let addon: NativeAddon | null = null;
  if (useNccl) {
    try {
      addon = loadNative('cuda');
    } catch (e) {
      throw new Error(`backend 'nccl' with ${env.worldSize} ranks: multi-GPU training needs the CUDA build of the addon and NCCL; ${(e as Error).message}`, { cause: e });
    }
  }
  let payload: unknown = opts.payload ?? null;
  if (env.rank === 0) {
    const ncclId = useNccl ? Buffer.from(addon!.ncclUniqueId()).toString('base64') : null;
    payload = { ncclId, config: opts.payload ?? null };
  }
  const rv = await rendezvous({ rank: env.rank, worldSize: env.worldSize, masterAddr: env.masterAddr, masterPort: env.masterPort, timeoutMs: env.timeoutMs, payload });
  const got = (rv.payload ?? {}) as { ncclId?: string | null; config?: unknown };
  const group = new Group(rv, { rank: env.rank, worldSize: env.worldSize, timeoutMs: env.timeoutMs, heartbeatMs: opts.heartbeatMs, deadAfterMs: opts.deadAfterMs });
  let comm: NativeComm | null = null;
  if (useNccl) {
    try {
      if (typeof got.ncclId !== 'string') throw new Error('rank 0 sent no NCCL id (is it running with the same backend?)');
      const id = new Uint8Array(Buffer.from(got.ncclId, 'base64'));
      comm = new addon!.CommHandle(id, env.worldSize, env.rank, env.timeoutMs);
      const c = comm;
      group.onFailure(() => c.abort());
      await comm.init();
    } catch (e) {
      const err = group.failed ?? (e as Error);
      group.abort(`joining NCCL: ${err.message}`);
      group.close();
      throw err;
    }
  }
  return new ProcessGroup(env, backend, got.config ?? null, group, comm, addon, bucketBytes);
}
