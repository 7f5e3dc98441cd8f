// Checkpoints: one safetensors file holds everything needed to resume training or to serve.
//
//   tensors       model parameters under their nanoGPT names, F32 (a tied lm_head.weight is written
//                 once, as transformer.wte.weight);
//                 AdamW moments as `__optimizer__.exp_avg.<name>` and `__optimizer__.exp_avg_sq.<name>`
//                 (PyTorch users drop the keys starting with `__optimizer__` before load_state_dict)
//   __metadata__  format: 'recurrent-transformer/1', config (JSON), tied ('true' | 'false'),
//                 optimizer (JSON {step, hyper}), training (JSON), tokenizer (JSON)
import {
  decodeSafetensors,
  encodeSafetensors,
  readSafetensorsFile,
  toFloat32,
  writeSafetensorsFileAtomic,
  type DecodedSafetensors,
  type SafeTensor,
  type SafeTensorInput,
} from './safetensors.js';

/** The value of the `format` metadata key written by this version. */
export const CHECKPOINT_FORMAT = 'recurrent-transformer/1';
/** Prefix of the optimizer-state tensors. */
export const OPTIMIZER_PREFIX = '__optimizer__.';

const WTE = 'transformer.wte.weight';
const LM_HEAD = 'lm_head.weight';
const EXP_AVG = `${OPTIMIZER_PREFIX}exp_avg.`;
const EXP_AVG_SQ = `${OPTIMIZER_PREFIX}exp_avg_sq.`;

export interface OptimizerState {
  /** Number of optimizer steps taken. */
  step: number;
  /** First moments (AdamW exp_avg), by parameter name. */
  m: Record<string, Float32Array>;
  /** Second moments (AdamW exp_avg_sq), by parameter name. */
  v: Record<string, Float32Array>;
  /** Hyperparameters (JSON), e.g. {lr, betas, eps, weightDecay}. */
  hyper?: unknown;
}

export interface CheckpointData {
  /** Parameters under nanoGPT names (transformer.wte.weight, transformer.h.0.attn.c_attn.weight, ...). */
  params: Record<string, Float32Array>;
  /** Shape of each parameter (row-major). */
  shapes: Record<string, number[]>;
  /** JSON-serialisable model config. */
  config: unknown;
  /** lm_head.weight is tied to transformer.wte.weight (stored once, under transformer.wte.weight). */
  tied?: boolean;
  /** Optimizer state. */
  optimizer?: OptimizerState;
  /** JSON training state: step, RNG states, curriculum, learning-rate schedule, ... */
  training?: unknown;
  /** JSON tokenizer. */
  tokenizer?: unknown;
}

export interface LoadCheckpointOptions {
  /** Refuse a safetensors file that was not written as a recurrent-transformer checkpoint. */
  strict?: boolean;
  /** Model config to use when the file has none (a foreign safetensors file). */
  config?: unknown;
  /** Largest header accepted, in bytes (default 100 MB). */
  maxHeaderBytes?: number;
}

/** A checkpoint that cannot be written or read; the message names the file, the entry and the problem. */
export class CheckpointError extends Error {
  override name = 'CheckpointError';
}

function isPlainObject(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

function product(shape: readonly number[]): number {
  return shape.reduce((a, b) => a * b, 1);
}

function bitsEqual(a: Float32Array, b: Float32Array): boolean {
  if (a.length !== b.length) return false;
  const x = new Uint32Array(a.buffer, a.byteOffset, a.length);
  const y = new Uint32Array(b.buffer, b.byteOffset, b.length);
  for (let i = 0; i < x.length; i++) if (x[i] !== y[i]) return false;
  return true;
}

function sameShape(a: readonly number[], b: readonly number[]): boolean {
  return a.length === b.length && a.every((d, i) => d === b[i]);
}

/** Sets an own enumerable property (a plain assignment to "__proto__" would set the prototype). */
function put<T>(obj: Record<string, T>, key: string, value: T): void {
  Object.defineProperty(obj, key, { value, enumerable: true, writable: true, configurable: true });
}

function toJson(value: unknown, what: string, fail: (m: string) => CheckpointError): string {
  let s: string | undefined;
  try {
    s = JSON.stringify(value);
  } catch (e) {
    throw fail(`${what} is not JSON-serialisable: ${e instanceof Error ? e.message : String(e)}`);
  }
  if (s === undefined) throw fail(`${what} is not JSON-serialisable (got ${typeof value})`);
  return s;
}

/**
 * Encodes a checkpoint as a safetensors file image (see the module comment for the layout).
 * `source` names the destination in error messages.
 */
export function encodeCheckpoint(data: CheckpointData, source?: string): Uint8Array {
  const fail = (m: string): CheckpointError =>
    new CheckpointError(source === undefined ? `cannot encode checkpoint: ${m}` : `cannot write checkpoint ${source}: ${m}`);
  if (!isPlainObject(data)) throw fail('data must be an object');
  const { params, shapes } = data;
  if (!isPlainObject(params)) throw fail('params must be an object of Float32Arrays');
  if (!isPlainObject(shapes)) throw fail('shapes must be an object of number arrays');
  if (data.config === undefined) throw fail('config is missing');
  if (data.tied !== undefined && typeof data.tied !== 'boolean') throw fail(`tied must be a boolean, got ${typeof data.tied}`);
  const tied = data.tied === true;

  const tensors: Record<string, SafeTensorInput> = {};
  const paramShape = (name: string): number[] => {
    const s = shapes[name];
    if (!Array.isArray(s)) throw fail(`parameter ${JSON.stringify(name)} has no shape in shapes`);
    return s;
  };
  for (const name of Object.keys(params)) {
    if (name.startsWith(OPTIMIZER_PREFIX) || name === '__metadata__') {
      throw fail(`parameter name ${JSON.stringify(name)} is reserved`);
    }
    const p = params[name];
    if (!(p instanceof Float32Array)) throw fail(`parameter ${JSON.stringify(name)} must be a Float32Array`);
    const shape = paramShape(name);
    if (product(shape) !== p.length) {
      throw fail(`parameter ${JSON.stringify(name)} has ${p.length} values but shape [${shape.join(', ')}] needs ${product(shape)}`);
    }
    if (tied && name === LM_HEAD) continue; // written once, under transformer.wte.weight
    put(tensors, name, { dtype: 'F32', shape, data: p });
  }
  if (tied) {
    const wte = params[WTE];
    if (wte === undefined) throw fail(`tied is true but there is no ${WTE}`);
    const head = params[LM_HEAD];
    if (head !== undefined && (!bitsEqual(head, wte) || !sameShape(paramShape(LM_HEAD), paramShape(WTE)))) {
      throw fail(`tied is true but ${LM_HEAD} differs from ${WTE}`);
    }
  }

  const metadata: Record<string, string> = {
    format: CHECKPOINT_FORMAT,
    config: toJson(data.config, 'config', fail),
    tied: tied ? 'true' : 'false',
  };
  if (data.optimizer !== undefined) {
    const opt = data.optimizer;
    if (!isPlainObject(opt)) throw fail('optimizer must be an object {step, m, v, hyper?}');
    if (typeof opt.step !== 'number' || !Number.isFinite(opt.step)) {
      throw fail(`optimizer.step must be a finite number, got ${String(opt.step)}`);
    }
    if (!isPlainObject(opt.m) || !isPlainObject(opt.v)) throw fail('optimizer.m and optimizer.v must be objects of Float32Arrays');
    for (const [which, moments, prefix] of [
      ['m', opt.m, EXP_AVG],
      ['v', opt.v, EXP_AVG_SQ],
    ] as const) {
      for (const name of Object.keys(moments)) {
        const a = moments[name];
        const what = `optimizer.${which}[${JSON.stringify(name)}]`;
        if (!(a instanceof Float32Array)) throw fail(`${what} must be a Float32Array`);
        const shape = shapes[name];
        if (!Array.isArray(shape)) throw fail(`${what} has no matching parameter shape in shapes`);
        if (product(shape) !== a.length) {
          throw fail(`${what} has ${a.length} values but the parameter's shape [${shape.join(', ')}] needs ${product(shape)}`);
        }
        tensors[prefix + name] = { dtype: 'F32', shape, data: a };
      }
    }
    metadata['optimizer'] = toJson({ step: opt.step, hyper: opt.hyper }, 'optimizer.hyper', fail);
  }
  if (data.training !== undefined) metadata['training'] = toJson(data.training, 'training', fail);
  if (data.tokenizer !== undefined) metadata['tokenizer'] = toJson(data.tokenizer, 'tokenizer', fail);
  try {
    return encodeSafetensors(tensors, metadata);
  } catch (e) {
    throw fail(e instanceof Error ? e.message : String(e));
  }
}

/** Writes a checkpoint atomically (old file or new file, never a mix; see writeSafetensorsFileAtomic). */
export async function saveCheckpoint(path: string, data: CheckpointData): Promise<void> {
  await writeSafetensorsFileAtomic(path, encodeCheckpoint(data, path));
}

/**
 * Builds CheckpointData from a decoded safetensors file (or its bytes). `source` names it in errors.
 * F16 and BF16 parameters of a foreign file are widened to float32; other non-F32 tensors are errors.
 */
export function decodeCheckpoint(
  input: Uint8Array | DecodedSafetensors,
  opts: LoadCheckpointOptions & { source?: string } = {},
): CheckpointData {
  const where = opts.source === undefined ? 'checkpoint' : `checkpoint ${opts.source}`;
  const fail = (m: string): CheckpointError => new CheckpointError(`${where}: ${m}`);
  const decoded =
    input instanceof Uint8Array
      ? decodeSafetensors(input, {
          ...(opts.maxHeaderBytes !== undefined ? { maxHeaderBytes: opts.maxHeaderBytes } : {}),
          ...(opts.source !== undefined ? { source: opts.source } : {}),
        })
      : input;
  const { tensors, metadata } = decoded;
  const has = (k: string): boolean => Object.prototype.hasOwnProperty.call(metadata, k);

  const format = has('format') ? metadata['format']! : undefined;
  const ours = format !== undefined && format.startsWith('recurrent-transformer/');
  if (ours && format !== CHECKPOINT_FORMAT) {
    throw fail(`unsupported format ${JSON.stringify(format)} (this version reads ${JSON.stringify(CHECKPOINT_FORMAT)})`);
  }
  if (!ours && opts.strict === true) {
    throw fail(
      `is not a recurrent-transformer checkpoint (__metadata__ has ${
        format === undefined ? 'no "format" key' : `format ${JSON.stringify(format)}`
      }, expected ${JSON.stringify(CHECKPOINT_FORMAT)})`,
    );
  }
  const parse = (key: string): unknown => {
    try {
      return JSON.parse(metadata[key]!);
    } catch (e) {
      throw fail(`__metadata__ ${JSON.stringify(key)} is not valid JSON: ${e instanceof Error ? e.message : String(e)}`);
    }
  };

  let config: unknown;
  if (has('config')) config = parse('config');
  else if (opts.config !== undefined) config = opts.config;
  else {
    throw new CheckpointError(
      opts.source === undefined ? 'checkpoint has no model config' : `checkpoint ${opts.source} has no model config`,
    );
  }

  let tied = false;
  if (has('tied')) {
    const t = metadata['tied'];
    if (t !== 'true' && t !== 'false') throw fail(`__metadata__ "tied" is ${JSON.stringify(t)}, expected "true" or "false"`);
    tied = t === 'true';
  }

  const asF32 = (name: string, t: SafeTensor): Float32Array => {
    if (t.dtype === 'F32') return t.data;
    if (t.dtype === 'F16' || t.dtype === 'BF16') return toFloat32(t);
    throw fail(`tensor ${JSON.stringify(name)} has dtype ${t.dtype}, expected F32 (or F16/BF16)`);
  };

  const params: Record<string, Float32Array> = {};
  const shapes: Record<string, number[]> = {};
  const m: Record<string, Float32Array> = {};
  const v: Record<string, Float32Array> = {};
  const momentShapes = new Map<string, number[]>();
  for (const name of Object.keys(tensors)) {
    const t = tensors[name]!;
    if (name.startsWith(OPTIMIZER_PREFIX)) {
      let target: Record<string, Float32Array>;
      let pname: string;
      if (name.startsWith(EXP_AVG)) {
        target = m;
        pname = name.slice(EXP_AVG.length);
      } else if (name.startsWith(EXP_AVG_SQ)) {
        target = v;
        pname = name.slice(EXP_AVG_SQ.length);
      } else throw fail(`unknown optimizer tensor ${JSON.stringify(name)}`);
      if (t.dtype !== 'F32') throw fail(`optimizer tensor ${JSON.stringify(name)} has dtype ${t.dtype}, expected F32`);
      put(target, pname, t.data);
      momentShapes.set(name, t.shape);
      continue;
    }
    put(params, name, asF32(name, t));
    put(shapes, name, t.shape);
  }

  if (tied) {
    if (params[WTE] === undefined) throw fail(`is marked tied but has no ${WTE}`);
    if (params[LM_HEAD] !== undefined) {
      if (!sameShape(shapes[LM_HEAD]!, shapes[WTE]!) || !bitsEqual(params[LM_HEAD], params[WTE])) {
        throw fail(`is marked tied but ${LM_HEAD} differs from ${WTE}`);
      }
      delete params[LM_HEAD];
      delete shapes[LM_HEAD];
    }
  }

  const out: CheckpointData = { params, shapes, config, tied };
  const hasMoments = Object.keys(m).length > 0 || Object.keys(v).length > 0;
  if (has('optimizer')) {
    const o = parse('optimizer');
    if (!isPlainObject(o) || typeof o['step'] !== 'number' || !Number.isFinite(o['step'])) {
      throw fail('__metadata__ "optimizer" must be a JSON object {step: number, hyper?}');
    }
    for (const [which, moments, prefix] of [
      ['exp_avg', m, EXP_AVG],
      ['exp_avg_sq', v, EXP_AVG_SQ],
    ] as const) {
      for (const pname of Object.keys(moments)) {
        const shape = shapes[pname] ?? (tied && pname === LM_HEAD ? shapes[WTE] : undefined);
        if (shape === undefined) throw fail(`optimizer ${which} for ${JSON.stringify(pname)} has no matching parameter`);
        if (!sameShape(shape, momentShapes.get(prefix + pname)!)) {
          throw fail(
            `optimizer ${which} for ${JSON.stringify(pname)} has shape [${momentShapes.get(prefix + pname)!.join(', ')}] ` +
              `but the parameter has [${shape.join(', ')}]`,
          );
        }
      }
    }
    const opt: OptimizerState = { step: o['step'], m, v };
    if (o['hyper'] !== undefined) opt.hyper = o['hyper'];
    out.optimizer = opt;
  } else if (hasMoments) {
    throw fail('has optimizer moments but no __metadata__ "optimizer" (step)');
  }
  if (has('training')) out.training = parse('training');
  if (has('tokenizer')) out.tokenizer = parse('tokenizer');
  return out;
}

/**
 * Reads a checkpoint written by saveCheckpoint. Also accepts a file that holds both
 * transformer.wte.weight and lm_head.weight (when tied they must be equal, and lm_head.weight is
 * dropped; otherwise both are kept), and, unless `strict`, a foreign safetensors file with a config.
 */
export async function loadCheckpoint(path: string, opts: LoadCheckpointOptions = {}): Promise<CheckpointData> {
  const decoded = await readSafetensorsFile(path, opts.maxHeaderBytes !== undefined ? { maxHeaderBytes: opts.maxHeaderBytes } : {});
  return decodeCheckpoint(decoded, { ...opts, source: path });
}
