// Loads the compiled addon. node-gyp-build picks build/Release (a source build) before prebuilds/
// (the shipped binaries). The CUDA build is separate and chosen only when asked for (RT_DEVICE=cuda or
// device: 'cuda'); until the CUDA backend lands, asking for it is a clear error rather than a silent
// fallback.
import { createRequire } from 'node:module';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

/** A native tensor as the addon sees it. Internal: use {@link Tensor}. */
export interface NativeTensor {
  readonly shape: number[];
  readonly dtype: 'float32' | 'int32';
  readonly disposed: boolean;
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
}

export interface NativeParam {
  name: string;
  value: NativeTensor;
  grad: NativeTensor;
}

export interface NativeLayer {
  readonly busy: boolean;
  readonly hasCache: boolean;
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
  step(tokens: Int32Array): Promise<Float32Array>;
}

export interface NativeAddon {
  TensorHandle: new (dtype: 'float32' | 'int32', shape: number[], data?: Float32Array | Int32Array) => NativeTensor;
  LayerHandle: new (config: NativeLayerConfig) => NativeLayer;
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
  ): Promise<NativeHeadResult>;
  headLogits(y: NativeTensor, lnw: NativeTensor, lnb: NativeTensor | null, W: NativeTensor, positions: number): Promise<NativeTensor>;
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

/** The addon for a device. Throws an Error that says why when the device cannot be used. */
export function loadNative(device: Device = defaultDevice()): NativeAddon {
  if (device === 'cuda') {
    throw new Error(
      "device 'cuda': this package has no CUDA build yet (the CUDA backend is not implemented); " +
        "use device 'cpu' or unset RT_DEVICE",
    );
  }
  if (device !== 'cpu') throw new TypeError(`device: expected 'cpu' or 'cuda', got ${String(device)}`);
  if (!cpuAddon) {
    const require = createRequire(import.meta.url);
    const load = require('node-gyp-build') as (dir: string) => NativeAddon;
    cpuAddon = load(packageRoot);
  }
  return cpuAddon;
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
