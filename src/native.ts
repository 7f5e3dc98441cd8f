// Loads the compiled addon. node-gyp-build picks build/Release (a source build) before prebuilds/
// (the shipped binaries). The CUDA build (build-cuda/Release/rt.node, `npm run build:cuda`) is a
// separate binary holding the CPU backend too; it is loaded only when asked for (RT_DEVICE=cuda, or a
// layer with device: 'cuda'), and asking for it says clearly why when it cannot be used.
//
// One process uses one addon for its tensors where it can: the first one loaded. With RT_DEVICE=cuda
// that is the CUDA build from the start; otherwise a CUDA layer created later copies in CPU tensors that
// came from the other binary (see adoptHandle in tensor.ts).
import { existsSync } from 'node:fs';
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

export interface NativeDecoder {
  readonly position: number;
  step(tokens: Int32Array, slots?: Int32Array): Promise<Float32Array>;
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
  headXent(
    y: NativeTensor,
    lnw: NativeTensor,
    lnb: NativeTensor | null,
    W: NativeTensor,
    targets: NativeTensor,
    ignoreIndex: number,
    grads: { dlnw: NativeTensor; dlnb: NativeTensor | null; dW: NativeTensor } | null,
    fp32?: boolean,
  ): Promise<NativeHeadResult>;
  headLogits(y: NativeTensor, lnw: NativeTensor, lnb: NativeTensor | null, W: NativeTensor, positions: number, fp32?: boolean): Promise<NativeTensor>;
  adamw(
    params: NativeTensor[],
    grads: NativeTensor[],
    m: NativeTensor[],
    v: NativeTensor[],
    decay: boolean[],
    hyper: { lr: number; beta1: number; beta2: number; eps: number; weightDecay: number; step: number; maxNorm: number },
  ): Promise<{ norm: number; skipped: boolean }>;
}

export type Device = 'cpu' | 'cuda';

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

/** Where a CUDA build of the addon may be: RT_CUDA_ADDON, then the package's build-cuda/. */
export function cudaAddonPaths(): string[] {
  const paths: string[] = [];
  if (process.env.RT_CUDA_ADDON) paths.push(process.env.RT_CUDA_ADDON);
  paths.push(join(packageRoot, 'build-cuda', 'Release', 'rt.node'));
  return paths;
}

function loadCudaAddon(): NativeAddon {
  if (cudaAddon) return cudaAddon;
  const paths = cudaAddonPaths();
  const path = paths.find((p) => existsSync(p));
  if (!path) {
    throw new Error(
      `device 'cuda': no CUDA build of the addon found (looked for ${paths.join(', ')}); ` +
        "build it with `npm run build:cuda` (needs the CUDA toolkit's nvcc), or use device 'cpu'",
    );
  }
  let addon: NativeAddon;
  try {
    addon = createRequire(import.meta.url)(path) as NativeAddon;
  } catch (e) {
    throw new Error(`device 'cuda': could not load ${path}: ${(e as Error).message}`, { cause: e });
  }
  if (typeof addon.LayerHandle?.cudaStatus !== 'function' || !addon.LayerHandle.cudaStatus().built) {
    throw new Error(`device 'cuda': ${path} was built without CUDA (was nvcc found when it was built?); rebuild it with \`npm run build:cuda\``);
  }
  // Whether a GPU and driver answer is found out at first use (a layer on 'cuda', or cudaStatus()).
  cudaAddon = addon;
  return addon;
}

/**
 * The addon for a device. 'cuda' loads the CUDA build (throwing an Error that says why it cannot);
 * 'cpu' gives the process's addon: the first one loaded (the CUDA build when RT_DEVICE=cuda, since it
 * holds the CPU backend too; the CPU build otherwise, or when the CUDA build cannot be loaded).
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
        addon = undefined;  // a layer on 'cuda' will say why; CPU work goes on with the CPU build
      }
    }
    primary = addon ?? loadCpuAddon();
  }
  return primary;
}

/** Whether CUDA can be used, and why not: never throws. Starts the CUDA runtime when the build has it. */
export function cudaStatus(): CudaStatus {
  try {
    return loadCudaAddon().LayerHandle.cudaStatus();
  } catch (e) {
    return { built: false, available: false, reason: (e as Error).message };
  }
}

/** RT_DEVICE from the environment, else 'cpu'. */
export function defaultDevice(): Device {
  const d = process.env.RT_DEVICE;
  if (d === undefined || d === '' || d === 'cpu') return 'cpu';
  if (d === 'cuda') return 'cuda';
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
