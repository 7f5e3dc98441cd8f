// The layer stack's configuration: defaults, and validation that names the bad field before anything
// reaches native code.
import { defaultDevice, type Device } from '../native.js';

export type Variant = 'forget' | 'accumulate';
export type Activation = 'gelu' | 'relu';
/** Matrix products on CUDA: bf16 operands into the tensor cores (float32 accumulation), or plain float32. */
export type Precision = 'bf16' | 'fp32';

/** Configuration of a stack of recurrent transformer layers (DESIGN.md section 1). */
export interface LayerConfig {
  /** Model width. */
  d: number;
  /** Attention heads; must divide d. */
  heads: number;
  /** Stacked layers, each with its own weights (default 1). */
  layers?: number;
  /** Window width w; 0 = the plain transformer over the whole sequence. */
  window: number;
  /** 'forget' (the paper's block recurrence) or 'accumulate' (default 'forget'). */
  variant?: Variant;
  /** Accumulate only: alpha = clamp(a, 0, 1), a initialised to `init` (0.5), learnable by default. */
  alpha?: { init?: number; learnable?: boolean };
  /** MLP activation (default 'gelu', exact erf form). */
  activation?: Activation;
  /** Biases in Linear and LayerNorm (default false). */
  bias?: boolean;
  /** Dropout rate in training mode, in [0, 1) (default 0). */
  dropout?: number;
  /** Seed for the initial weights and the default dropout stream (default 0). */
  seed?: number;
  /**
   * Where the weights, gradients and activations live and the kernels run: 'cpu' or 'cuda' (default:
   * RT_DEVICE from the environment, else 'cpu'). 'cuda' needs the CUDA build of the addon
   * (`npm run build:cuda`) and an NVIDIA GPU of compute capability 8.0 or newer.
   */
  device?: Device;
  /** CUDA only: 'bf16' tensor-core products (default) or 'fp32' (exact checks; also RT_CUDA_FP32=1). */
  precision?: Precision;
}

/** A config with every default filled in. */
export interface ResolvedLayerConfig {
  d: number;
  heads: number;
  layers: number;
  window: number;
  variant: Variant;
  alpha: { init: number; learnable: boolean };
  activation: Activation;
  bias: boolean;
  dropout: number;
  seed: number;
  device: Device;
  precision: Precision;
}

const MAX_D = 65536;
const MAX_LAYERS = 1024;

function int(v: unknown, name: string, min: number, max: number): number {
  if (typeof v !== 'number' || !Number.isInteger(v) || v < min || v > max) {
    throw new RangeError(`${name}: expected an integer in [${min}, ${max}], got ${String(v)}`);
  }
  return v;
}

export function resolveLayerConfig(config: LayerConfig): ResolvedLayerConfig {
  if (config === null || typeof config !== 'object') throw new TypeError('config: expected an object');
  const d = int(config.d, 'config.d', 1, MAX_D);
  const heads = int(config.heads, 'config.heads', 1, d);
  if (d % heads !== 0) throw new RangeError(`config.heads: must divide config.d (d = ${d}, heads = ${heads})`);
  const layers = int(config.layers ?? 1, 'config.layers', 1, MAX_LAYERS);
  const window = int(config.window, 'config.window', 0, 2 ** 30);
  const variant = config.variant ?? 'forget';
  if (variant !== 'forget' && variant !== 'accumulate') {
    throw new RangeError(`config.variant: expected 'forget' or 'accumulate', got ${String(variant)}`);
  }
  const activation = config.activation ?? 'gelu';
  if (activation !== 'gelu' && activation !== 'relu') {
    throw new RangeError(`config.activation: expected 'gelu' or 'relu', got ${String(activation)}`);
  }
  const alphaInit = config.alpha?.init ?? 0.5;
  if (typeof alphaInit !== 'number' || !Number.isFinite(alphaInit)) {
    throw new RangeError(`config.alpha.init: expected a finite number, got ${String(alphaInit)}`);
  }
  const learnable = config.alpha?.learnable ?? true;
  if (typeof learnable !== 'boolean') throw new TypeError('config.alpha.learnable: expected a boolean');
  const bias = config.bias ?? false;
  if (typeof bias !== 'boolean') throw new TypeError('config.bias: expected a boolean');
  const dropout = config.dropout ?? 0;
  if (typeof dropout !== 'number' || !(dropout >= 0 && dropout < 1)) {
    throw new RangeError(`config.dropout: expected a number in [0, 1), got ${String(dropout)}`);
  }
  const seed = int(config.seed ?? 0, 'config.seed', 0, Number.MAX_SAFE_INTEGER);
  if (12 * d * d * layers > 2 ** 34) {
    throw new RangeError(`config: d = ${d} and layers = ${layers} give more than 2^34 weights`);
  }
  const { device, precision } = resolvePlacement(config);
  return { d, heads, layers, window, variant, alpha: { init: alphaInit, learnable }, activation, bias, dropout, seed, device, precision };
}

/** What the model predicts: every next token, the last M tokens (copy tasks), or one class. */
export type HeadConfig = 'lm' | { copy: number } | { classify: number };

/** Configuration of a whole model: embeddings, the recurrent layer stack, final layernorm and head. */
export interface ModelConfig {
  vocabSize: number;
  d: number;
  heads: number;
  layers?: number;
  /** Fixed window width (0 = plain transformer). Give this or windowRange. */
  window?: number;
  /** Training samples the width uniformly from [min, max] per step; evaluation uses floor((min+max)/2). */
  windowRange?: [number, number] | null;
  variant?: Variant;
  alpha?: { init?: number; learnable?: boolean };
  /** Learned position embeddings (default true). */
  positional?: boolean;
  /** Longest sequence the position embedding covers. */
  maxLen: number;
  activation?: Activation;
  dropout?: number;
  bias?: boolean;
  head?: HeadConfig;
  seed?: number;
  /**
   * Where the model runs: 'cpu' or 'cuda' (default RT_DEVICE, else 'cpu'). Not part of the resolved config
   * (a checkpoint does not depend on the machine that wrote it): the model reports it as `model.device`.
   */
  device?: Device;
  /** CUDA only: 'bf16' tensor-core products with float32 accumulation (default) or 'fp32'. */
  precision?: Precision;
}

/** Where a model runs; see ModelConfig.device and ModelConfig.precision. */
export interface ModelPlacement {
  device: Device;
  precision: Precision;
}

export interface ResolvedModelConfig {
  vocabSize: number;
  d: number;
  heads: number;
  layers: number;
  window: number;
  windowRange: [number, number] | null;
  variant: Variant;
  alpha: { init: number; learnable: boolean };
  positional: boolean;
  maxLen: number;
  activation: Activation;
  dropout: number;
  bias: boolean;
  head: HeadConfig;
  seed: number;
}

export function resolveModelConfig(config: ModelConfig): ResolvedModelConfig {
  if (config === null || typeof config !== 'object') throw new TypeError('config: expected an object');
  const vocabSize = int(config.vocabSize, 'config.vocabSize', 2, 2 ** 24);
  const maxLen = int(config.maxLen, 'config.maxLen', 1, 2 ** 24);
  let windowRange: [number, number] | null = null;
  let window: number;
  if (config.windowRange !== undefined && config.windowRange !== null) {
    const r = config.windowRange;
    if (!Array.isArray(r) || r.length !== 2) throw new TypeError('config.windowRange: expected [min, max]');
    const lo = int(r[0], 'config.windowRange[0]', 1, 2 ** 30);
    const hi = int(r[1], 'config.windowRange[1]', lo, 2 ** 30);
    if (config.window !== undefined && config.window !== Math.floor((lo + hi) / 2)) {
      throw new RangeError('config.window: give either window or windowRange, not both');
    }
    windowRange = [lo, hi];
    window = Math.floor((lo + hi) / 2);
  } else {
    if (config.window === undefined) throw new RangeError('config.window: required (0 = plain transformer) unless windowRange is given');
    window = config.window;
  }
  const layer = resolveLayerConfig({
    d: config.d,
    heads: config.heads,
    layers: config.layers,
    window,
    variant: config.variant,
    alpha: config.alpha,
    activation: config.activation,
    bias: config.bias,
    dropout: config.dropout,
    seed: config.seed,
    device: config.device,
    precision: config.precision,
  });
  const positional = config.positional ?? true;
  if (typeof positional !== 'boolean') throw new TypeError('config.positional: expected a boolean');
  const head = config.head ?? 'lm';
  if (head !== 'lm') {
    if (typeof head !== 'object' || head === null) throw new TypeError("config.head: expected 'lm', {copy: M} or {classify: C}");
    if ('copy' in head) int(head.copy, 'config.head.copy', 1, maxLen);
    else if ('classify' in head) int(head.classify, 'config.head.classify', 2, 2 ** 24);
    else throw new TypeError("config.head: expected 'lm', {copy: M} or {classify: C}");
  }
  return { vocabSize, maxLen, window, windowRange, positional, head, ...withoutWindow(layer) };
}

/** The device and precision a model config asks for (validated; defaults filled in). */
export function resolvePlacement(config: { device?: Device; precision?: Precision }): ModelPlacement {
  const device = config.device ?? defaultDevice();
  if (device !== 'cpu' && device !== 'cuda') throw new RangeError(`config.device: expected 'cpu' or 'cuda', got ${String(device)}`);
  const precision = config.precision ?? 'bf16';
  if (precision !== 'bf16' && precision !== 'fp32') throw new RangeError(`config.precision: expected 'bf16' or 'fp32', got ${String(precision)}`);
  return { device, precision };
}

// The model's config keeps neither the layer's window (it has its own) nor where the layer runs: a
// checkpoint's config must not depend on the machine that wrote it.
function withoutWindow(c: ResolvedLayerConfig): Omit<ResolvedLayerConfig, 'window' | 'device' | 'precision'> {
  const { window: _w, device: _d, precision: _p, ...rest } = c;
  return rest;
}
