// Loads the compiled addon. node-gyp-build picks build/Release (a source build) before prebuilds/
// (the shipped CPU binaries, static OpenBLAS). The CUDA build is a separate binary holding the CPU backend
// too: RT_CUDA_ADDON, else the package's build-cuda/Release/rt.node (`npm run build:cuda`), else the
// platform package @recurrent-transformer/linux-x64-cuda (`npm run prebuildify:cuda`).
//
// A CUDA binary is never loaded into this process before a child process has loaded it and asked it
// whether a GPU answers (one spawnSync per process, verdict cached): a binary that crashes on load, a
// missing or too-old driver, or a build without CUDA then costs a warning, not the process.
//
// Who gets an error and who gets a warning when CUDA cannot be used:
// - `device: 'cuda'` in a layer or model config is a program's explicit demand: loadNative('cuda') throws
//   an Error that starts "device 'cuda': " and says why.
// - RT_DEVICE=cuda and the CLI's `--device cuda` are preferences (defaultDevice(), preferDevice()): the CPU
//   build is used instead, with one process.emitWarning (code RT_CUDA_FALLBACK) that says why.
//   RT_DEVICE_STRICT=1 turns these into the explicit demand (the Error above).
//
// One process uses one addon for its tensors where it can: the first one loaded. With a usable
// RT_DEVICE=cuda that is the CUDA build from the start; otherwise a CUDA layer created later copies in CPU
// tensors that came from the other binary (see adoptHandle in tensor.ts).
import { spawnSync } from 'node:child_process';
import { existsSync, statSync } from 'node:fs';
import { createRequire } from 'node:module';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

/** A native tensor as the addon sees it. Internal: use {@link Tensor}. */
export interface NativeTensor {
  readonly shape: number[];
  readonly dtype: 'float32' | 'int32';
  readonly disposed: boolean;
  readonly device: Device;
  /** A copy on `device` (synchronous). */
  to(device: Device): NativeTensor;
  read(): Float32Array | Int32Array;
  write(data: Float32Array | Int32Array): void;
  zero(): void;
  free(): void;
}

/** The layer config as the addon takes it (already validated by src/model/config.ts). */
export interface NativeLayerConfig {
  d: number;
  heads: number;
  layers: number;
  window: number;
  accumulate: boolean;
  alphaInit: number;
  alphaLearnable: boolean;
  gelu: boolean;
  bias: boolean;
  dropout: number;
  seed: number;
  device: Device;
  precision: 'bf16' | 'fp32';
}

export interface NativeParam {
  name: string;
  value: NativeTensor;
  grad: NativeTensor;
}

export interface NativeLayer {
  readonly busy: boolean;
  readonly hasCache: boolean;
  readonly device: Device;
  params(): NativeParam[];
  forward(x: NativeTensor, training: boolean, seed: number, window: number, keep: boolean, checkFinite: boolean): Promise<NativeTensor>;
  backward(dy: NativeTensor, checkFinite: boolean): Promise<NativeTensor>;
  zeroGrad(): void;
  dropCache(): void;
  free(): void;
}

export interface NativeHeadResult {
  loss: number;
  correct: number;
  count: number;
  dY?: NativeTensor;
}

/** The head's inputs: hidden states, ln_f, the head weight, targets, and the gradients to accumulate into. */
export type NativeHeadArgs = [
  y: NativeTensor,
  lnw: NativeTensor,
  lnb: NativeTensor | null,
  W: NativeTensor,
  targets: NativeTensor,
  ignoreIndex: number,
  grads: { dlnw: NativeTensor; dlnb: NativeTensor | null; dW: NativeTensor } | null,
];

export type NativeAdamWArgs = [
  params: NativeTensor[],
  grads: NativeTensor[],
  m: NativeTensor[],
  v: NativeTensor[],
  decay: boolean[],
  count: NativeTensor,
  hyper: { lr: number; beta1: number; beta2: number; eps: number; weightDecay: number; maxNorm: number },
];

/** A deferred head's queued result: read its numbers with `xentResult(pending)`. */
export interface NativeHeadPending {
  dY?: NativeTensor;
  pending: object;
}

/**
 * Sampling settings per row, for a decoder step that samples its rows' next tokens where it computes them
 * (Decoder.stepSample) or for sampleRows(): one value of each per row. A row with a negative temperature
 * is not sampled (its token comes back as -1); temperature 0 is greedy. `uniform` is the row's draw in
 * [0, 1) from its sequence's own Rng (unused when greedy).
 */
export interface RowSampling {
  temperature: Float64Array;
  topK: Int32Array;
  topP: Float64Array;
  uniform: Float64Array;
}

/** Sampled tokens (-1 for a row that was not sampled) and their log-probabilities, one per row. */
export interface SampledRows {
  tokens: Int32Array;
  logprobs: Float64Array;
}

export interface NativeDecoder {
  readonly position: number;
  step(tokens: Int32Array, slots?: Int32Array): Promise<Float32Array>;
  step(tokens: Int32Array, slots: Int32Array | undefined, sampling: RowSampling, serial?: boolean): Promise<SampledRows & { logits: Float32Array }>;
  reset(slot: number): void;
  positionOf(slot: number): number;
}

/** What an addon says about CUDA: compiled in, and whether a GPU answered (else why not). */
export interface CudaStatus {
  built: boolean;
  available: boolean;
  reason?: string;
  name?: string;
}

/** One rank's NCCL communicator (data-parallel training; CUDA build only). */
export interface NativeComm {
  readonly rank: number;
  readonly nranks: number;
  readonly busy: boolean;
  /** Joins the other ranks, off the event loop; rejects after the constructor's timeout. */
  init(): Promise<void>;
  /** Replaces each float32 tensor (device or host) by its mean over the ranks, in buckets of bucketBytes. */
  allReduceMean(tensors: NativeTensor[], bucketBytes?: number): Promise<void>;
  /** Ends whatever is in flight (it rejects) and frees the communicator. */
  abort(): void;
  destroy(): void;
}

export interface NativeAddon {
  TensorHandle: new (dtype: 'float32' | 'int32', shape: number[], data?: Float32Array | Int32Array) => NativeTensor;
  LayerHandle: (new (config: NativeLayerConfig) => NativeLayer) & { cudaStatus(): CudaStatus };
  DecoderHandle: new (
    layer: NativeLayer,
    batch: number,
    maxPositions: number,
    wte: NativeTensor,
    wpe: NativeTensor | null,
    lnw: NativeTensor,
    lnb: NativeTensor | null,
    head: NativeTensor,
  ) => NativeDecoder;
  info(): { gemm: 'openblas' | 'builtin'; threads: number; devices: string[] };
  allocatedBytes(): number;
  benchSgemm(M: number, N: number, K: number, reps: number): number;
  sampleRows(logits: Float32Array, vocab: number, sampling: RowSampling): SampledRows;
  embeddingForward(
    tokens: NativeTensor,
    wte: NativeTensor,
    wpe: NativeTensor | null,
    dropout: number,
    seed: number,
  ): Promise<NativeTensor>;
  embeddingBackward(
    tokens: NativeTensor,
    dout: NativeTensor,
    dwte: NativeTensor,
    dwpe: NativeTensor | null,
    dropout: number,
    seed: number,
  ): Promise<void>;
  headXent(...args: [...NativeHeadArgs, fp32?: boolean]): Promise<NativeHeadResult>;
  /** As headXent, resolving once queued (on the GPU, before the loss is known); the numbers come later. */
  headXent(...args: [...NativeHeadArgs, fp32: boolean, defer: true]): Promise<NativeHeadPending>;
  /** The loss, hit count and scored count of a deferred headXent (waits for the device). */
  xentResult(pending: object): Promise<{ loss: number; correct: number; count: number }>;
  headLogits(y: NativeTensor, lnw: NativeTensor, lnb: NativeTensor | null, W: NativeTensor, positions: number, fp32?: boolean): Promise<NativeTensor>;
  /**
   * One AdamW step over every tensor; `count` (int32, one element, beside the parameters) holds the steps
   * applied so far, and the step advances it unless the norm is not finite (then nothing changes).
   */
  adamw(...args: [...NativeAdamWArgs, defer?: false]): Promise<{ norm: number; skipped: boolean }>;
  /** As adamw, resolving once queued (on the GPU, before the norm is known); adamwResult reads it. */
  adamw(...args: [...NativeAdamWArgs, defer: true]): Promise<{ pending: object }>;
  /** The norm and skip of a deferred adamw (waits for the device). */
  adamwResult(pending: object): Promise<{ norm: number; skipped: boolean }>;
  /** In a build without CUDA, these three throw an Error saying that multi-GPU needs the CUDA build. */
  CommHandle: new (id: Uint8Array, nranks: number, rank: number, timeoutMs?: number) => NativeComm;
  /** A fresh 128-byte NCCL unique id (loads libnccl.so.2, or RT_NCCL_LIBRARY). */
  ncclUniqueId(): Uint8Array;
  /** The loaded NCCL's version code, e.g. 22105 for 2.21.5. */
  ncclVersion(): number;
}

export type Device = 'cpu' | 'cuda';

/** What {@link cudaStatus} reports: the addon's answer, plus the CUDA binary it is about (when one was found). */
export type CudaStatusReport = CudaStatus & { path?: string };

/** The npm package that carries the prebuilt CUDA binary for this platform (`npm run prebuildify:cuda` makes it). */
export const CUDA_PACKAGE = `@recurrent-transformer/${process.platform}-${process.arch}-cuda`;

const packageRoot = join(dirname(fileURLToPath(import.meta.url)), '..');
let cpuAddon: NativeAddon | undefined;
let cudaAddon: NativeAddon | undefined;
let primary: NativeAddon | undefined;

function loadCpuAddon(): NativeAddon {
  if (!cpuAddon) {
    const require = createRequire(import.meta.url);
    // RT_ADDON_PATH names a .node file to load instead of node-gyp-build's pick (the sanitizer build of
    // scripts/test-asan.sh, say).
    const explicit = process.env.RT_ADDON_PATH;
    if (explicit) cpuAddon = require(resolve(explicit)) as NativeAddon;
    else cpuAddon = (require('node-gyp-build') as (dir: string) => NativeAddon)(packageRoot);
  }
  return cpuAddon;
}

function packageVersion(packageJson: string): string | undefined {
  try {
    const v = (createRequire(import.meta.url)(packageJson) as { version?: unknown }).version;
    return typeof v === 'string' ? v : undefined;
  } catch {
    return undefined;
  }
}

// Resolved from the package root, so that it is found wherever npm hoisted it next to this package.
function cudaPackageFile(file: string): string | undefined {
  try {
    return createRequire(join(packageRoot, 'package.json')).resolve(`${CUDA_PACKAGE}/${file}`);
  } catch {
    return undefined;
  }
}

/**
 * Where a CUDA build of the addon may be, in the order tried: RT_CUDA_ADDON alone when it is set (a path
 * the user named is never silently replaced by another binary); else the package's build-cuda/ (a source
 * build, like node-gyp-build's build/ before prebuilds/), then the installed {@link CUDA_PACKAGE}.
 */
export function cudaAddonPaths(): string[] {
  const explicit = process.env.RT_CUDA_ADDON;
  if (explicit) return [resolve(explicit)];
  const paths = [join(packageRoot, 'build-cuda', 'Release', 'rt.node')];
  const shipped = cudaPackageFile('rt.node');
  if (shipped) paths.push(shipped);
  return paths;
}

interface CudaVerdict {
  usable: boolean;
  status: CudaStatusReport;
}

// The test load runs in a child so that a binary that crashes while loading (or a CUDA runtime that aborts
// on a broken driver) ends the child, not this process. It prints the addon's cudaStatus() as JSON.
const PROBE = `
const p = process.argv[1];
let a;
try { a = require(p); } catch (e) { process.stderr.write(String((e && e.message) || e)); process.exit(3); }
const h = a && a.LayerHandle;
if (!h || typeof h.cudaStatus !== 'function') { process.stderr.write('it has no LayerHandle.cudaStatus(): not a recurrent-transformer addon'); process.exit(4); }
process.stdout.write(JSON.stringify(h.cudaStatus()));
`;
// Starting the CUDA runtime on a machine with several GPUs takes seconds; a minute means it hangs.
const PROBE_TIMEOUT_MS = 60_000;

let verdict: CudaVerdict | undefined;

function tail(text: string, max = 2000): string {
  const t = text.trim();
  return t.length > max ? `...${t.slice(-max)}` : t;
}

function probeCuda(): CudaVerdict {
  const fail = (reason: string, path?: string): CudaVerdict => ({
    usable: false,
    status: { built: false, available: false, reason, ...(path ? { path } : {}) },
  });
  const paths = cudaAddonPaths();
  const path = paths.find((p) => existsSync(p) && statSync(p).isFile());
  if (!path) {
    const where = process.env.RT_CUDA_ADDON
      ? `RT_CUDA_ADDON names ${paths[0]}, which does not exist`
      : `looked for ${paths.join(', ')} and the package ${CUDA_PACKAGE}`;
    return fail(
      `no CUDA build of the addon found (${where}); install ${CUDA_PACKAGE} or build it with ` +
        '`npm run build:cuda` (needs the CUDA toolkit\'s nvcc)',
    );
  }
  const shipped = cudaPackageFile('rt.node');
  if (path === shipped) {
    const mine = packageVersion(join(packageRoot, 'package.json'));
    const theirs = packageVersion(cudaPackageFile('package.json') ?? '');
    if (mine !== undefined && theirs !== mine) {
      return fail(`${CUDA_PACKAGE} is version ${theirs ?? '(unknown)'}, but recurrent-transformer is ${mine}: install ${CUDA_PACKAGE}@${mine}`, path);
    }
  }
  // NODE_OPTIONS may hold loaders or --input-type flags meant for the parent's code, not for `node -e`.
  const env = { ...process.env };
  delete env.NODE_OPTIONS;
  const r = spawnSync(process.execPath, ['-e', PROBE, path], {
    encoding: 'utf8', env, timeout: PROBE_TIMEOUT_MS, maxBuffer: 1 << 20, windowsHide: true,
  });
  const stderr = tail(r.stderr ?? '');
  if (r.error) return fail(`the test load of ${path} in a child process failed: ${r.error.message}`, path);
  if (r.signal) return fail(`the test load of ${path} in a child process was killed by ${r.signal}${stderr ? `: ${stderr}` : ''}`, path);
  if (r.status !== 0) return fail(`could not load ${path}: ${stderr || `exit code ${r.status}`}`, path);
  let status: CudaStatus;
  try {
    status = JSON.parse(r.stdout) as CudaStatus;
  } catch {
    return fail(`the test load of ${path} printed no status (${tail(r.stdout ?? '', 200) || 'nothing'})`, path);
  }
  if (!status.built) {
    return fail(`${path} was built without CUDA (was nvcc found when it was built?); rebuild it with \`npm run build:cuda\``, path);
  }
  if (!status.available) {
    // The addon's own reason starts with "device 'cuda': ", which loadNative adds again.
    const why = (status.reason ?? 'no reason given').replace(/^device 'cuda': /, '');
    return { usable: false, status: { ...status, path, reason: `${path} loads, but no GPU can be used: ${why}` } };
  }
  return { usable: true, status: { ...status, path } };
}

function cudaVerdict(): CudaVerdict {
  verdict ??= probeCuda();
  return verdict;
}

function loadCudaAddon(): NativeAddon {
  if (cudaAddon) return cudaAddon;
  const v = cudaVerdict();
  const path = v.status.path;
  if (!v.usable || !path) throw new Error(`device 'cuda': ${v.status.reason ?? 'CUDA cannot be used'}`);
  try {
    cudaAddon = createRequire(import.meta.url)(path) as NativeAddon;
  } catch (e) {
    throw new Error(`device 'cuda': could not load ${path}: ${(e as Error).message}`, { cause: e });
  }
  return cudaAddon;
}

/** RT_DEVICE_STRICT=1: RT_DEVICE=cuda and `--device cuda` throw instead of falling back to the CPU. */
function strictDevice(): boolean {
  const s = process.env.RT_DEVICE_STRICT;
  if (s === undefined || s === '' || s === '0' || s === 'false') return false;
  if (s === '1' || s === 'true') return true;
  throw new Error(`RT_DEVICE_STRICT: expected 1 or 0, got '${s}'`);
}

let warned = false;

/**
 * A device the user would like (RT_DEVICE, the CLI's --device): 'cuda' when a CUDA build loads and a GPU
 * answers; otherwise 'cpu', with one process warning (code RT_CUDA_FALLBACK) that says why. With
 * RT_DEVICE_STRICT=1 it returns 'cuda' regardless, so that the first use throws the reason as an Error.
 * `source` names the request in the warning (e.g. '--device cuda').
 */
export function preferDevice(device: Device, source: string = `device '${String(device)}'`): Device {
  if (device === 'cpu') return 'cpu';
  if (device !== 'cuda') throw new TypeError(`device: expected 'cpu' or 'cuda', got ${String(device)}`);
  if (strictDevice()) return 'cuda';
  const v = cudaVerdict();
  if (v.usable) return 'cuda';
  if (!warned) {
    warned = true;
    process.emitWarning(
      `${source}: CUDA cannot be used, running on the CPU: ${v.status.reason ?? 'no reason given'} ` +
        '(RT_DEVICE_STRICT=1 makes this an error)',
      { code: 'RT_CUDA_FALLBACK' },
    );
  }
  return 'cpu';
}

/**
 * The addon for a device. 'cuda' loads the CUDA build once a child process has test-loaded it and seen a
 * GPU, and throws an Error starting "device 'cuda': " that says why otherwise. 'cpu' gives the process's
 * addon: the first one loaded (the CUDA build when RT_DEVICE=cuda and it is usable, since it holds the
 * CPU backend too; the CPU build otherwise).
 */
export function loadNative(device: Device = defaultDevice()): NativeAddon {
  if (device === 'cuda') {
    const addon = loadCudaAddon();
    primary ??= addon;
    return addon;
  }
  if (device !== 'cpu') throw new TypeError(`device: expected 'cpu' or 'cuda', got ${String(device)}`);
  if (!primary) {
    let addon: NativeAddon | undefined;
    if (defaultDevice() === 'cuda') {
      try {
        addon = loadCudaAddon();
      } catch {
        addon = undefined;  // RT_DEVICE_STRICT: a layer on 'cuda' will throw why; CPU work goes on
      }
    }
    primary = addon ?? loadCpuAddon();
  }
  return primary;
}

/**
 * Whether CUDA can be used, and why not; never throws. The first call test-loads the CUDA build in a
 * child process (which starts the CUDA runtime there, not here); the answer is kept for the process.
 */
export function cudaStatus(): CudaStatusReport {
  try {
    const v = cudaVerdict();
    if (cudaAddon) return { ...cudaAddon.LayerHandle.cudaStatus(), ...(v.status.path ? { path: v.status.path } : {}) };
    return { ...v.status };
  } catch (e) {
    return { built: false, available: false, reason: (e as Error).message };
  }
}

/**
 * RT_DEVICE from the environment, else 'cpu'. RT_DEVICE=cuda gives 'cuda' only when CUDA can be used
 * (see {@link preferDevice}: otherwise 'cpu' and a warning, or 'cuda' under RT_DEVICE_STRICT=1).
 */
export function defaultDevice(): Device {
  const d = process.env.RT_DEVICE;
  if (d === undefined || d === '' || d === 'cpu') return 'cpu';
  if (d === 'cuda') return preferDevice('cuda', 'RT_DEVICE=cuda');
  throw new Error(`RT_DEVICE: expected 'cpu' or 'cuda', got '${d}'`);
}

/** What the loaded CPU addon was built with. */
export function nativeInfo(): { gemm: 'openblas' | 'builtin'; threads: number } {
  const i = loadNative('cpu').info();
  return { gemm: i.gemm, threads: i.threads };
}

/** Seconds per call of the addon's GEMM on an M x K by K x N product (benchmark helper). */
export function benchSgemm(M: number, N: number, K: number, reps: number): number {
  return loadNative('cpu').benchSgemm(M, N, K, reps);
}

/** Bytes currently held by native tensors and layer activations. */
export function nativeAllocatedBytes(): number {
  return loadNative('cpu').allocatedBytes();
}
