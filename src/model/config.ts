// The layer stack's configuration: defaults, and validation that names the bad field before anything
// reaches native code.

export type Variant = 'forget' | 'accumulate';
export type Activation = 'gelu' | 'relu';

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
  return { d, heads, layers, window, variant, alpha: { init: alphaInit, learnable }, activation, bias, dropout, seed };
}
