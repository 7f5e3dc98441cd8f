// AdamW over a model's parameters: one native call per step does the global gradient norm, clipping
// and the update of every tensor. Matches torch.optim.AdamW (decoupled decay, bias-corrected moments);
// weight decay applies to 2-D weights only, as in nanoGPT. The count of applied steps lives beside the
// weights (on the GPU, in its memory), so that a queued step need not be waited for: queue() returns before
// the norm is known, and the next step's work follows it on the device without a gap.
import { loadNative } from '../native.js';
import { Tensor } from '../tensor.js';
import type { Parameter } from '../model/layer.js';

export interface AdamWOptions {
  lr?: number;
  betas?: [number, number];
  eps?: number;
  weightDecay?: number;
  /** Clip the global gradient norm to this (0 = no clipping). */
  maxGradNorm?: number;
}

export interface AdamWState {
  step: number;
  m: Record<string, Float32Array>;
  v: Record<string, Float32Array>;
}

export interface StepInfo {
  /** Global L2 norm of the gradients before clipping. */
  gradNorm: number;
  /** True when the norm was NaN or infinite: nothing was updated. */
  skipped: boolean;
}

/**
 * A step that has been queued (on the GPU, not yet run). The weights may be used at once: whatever is queued
 * next runs after the step. `result()` waits for the step and reports it.
 */
export interface PendingStep {
  result(): Promise<StepInfo>;
}

function positive(v: number, name: string, allowZero = false): number {
  if (typeof v !== 'number' || !Number.isFinite(v) || v < 0 || (!allowZero && v === 0)) {
    throw new RangeError(`${name}: expected a ${allowZero ? 'non-negative' : 'positive'} finite number, got ${String(v)}`);
  }
  // The update runs in float32: a value that rounds to Infinity or to 0 there (eps = 1e-50 made
  // 0 / (0 + 0) = NaN of every weight whose gradient was 0) is refused.
  const f = Math.fround(v);
  if (!Number.isFinite(f) || (v > 0 && f === 0)) {
    throw new RangeError(`${name}: ${String(v)} is outside the float32 range the optimizer computes in`);
  }
  return v;
}

export class AdamW {
  readonly lr: number;
  readonly betas: [number, number];
  readonly eps: number;
  readonly weightDecay: number;
  readonly maxGradNorm: number;
  #params: Parameter[];
  #decay: boolean[];
  #m: Tensor[];
  #v: Tensor[];
  /** The steps applied so far: one int32 on the parameters' device, read and advanced by the native step. */
  #count: Tensor;

  constructor(params: Parameter[], decay: boolean[], opts: AdamWOptions = {}) {
    if (params.length !== decay.length) throw new RangeError('decay: expected one flag per parameter');
    // The native step reads every value and gradient as float32 of the parameter's size.
    for (const p of params) {
      const n = p.shape.reduce((a, b) => a * b, 1);
      for (const [what, t] of [['value', p.value], ['grad', p.grad]] as const) {
        if (!(t instanceof Tensor) || t.dtype !== 'float32' || t.size !== n) {
          throw new TypeError(`params: '${p.name}' ${what} must be a float32 tensor of shape [${p.shape.join(', ')}]`);
        }
      }
    }
    this.lr = positive(opts.lr ?? 1e-3, 'lr');
    const [b1, b2] = opts.betas ?? [0.9, 0.999];
    // In [0, 1) after rounding to float32 (0.99999999 rounds to 1: a zero bias correction, NaN weights).
    if (!(b1 >= 0 && Math.fround(b1) < 1) || !(b2 >= 0 && Math.fround(b2) < 1)) {
      throw new RangeError(`betas: expected two numbers in [0, 1) (as float32), got [${b1}, ${b2}]`);
    }
    this.betas = [b1, b2];
    this.eps = positive(opts.eps ?? 1e-8, 'eps');
    this.weightDecay = positive(opts.weightDecay ?? 0, 'weightDecay', true);
    this.maxGradNorm = positive(opts.maxGradNorm ?? 0, 'maxGradNorm', true);
    this.#params = params;
    this.#decay = decay;
    // The moments live beside the weights, on their device (one device for all: the native step checks).
    this.#m = params.map((p) => Tensor.zeros(p.shape, 'float32', p.value.device));
    this.#v = params.map((p) => Tensor.zeros(p.shape, 'float32', p.value.device));
    this.#count = Tensor.zeros([1], 'int32', params[0]?.value.device ?? 'cpu');
  }

  /** The steps applied so far (skipped ones do not count). On the GPU this waits for the queued steps. */
  get stepCount(): number {
    return this.#count.toArray()[0]!;
  }

  /** One update at learning rate `lr` (default the constructor's). A non-finite gradient norm skips it. */
  async step(lr: number = this.lr): Promise<StepInfo> {
    const r = (await this.#locked(lr, false)) as { norm: number; skipped: boolean };
    return { gradNorm: r.norm, skipped: r.skipped };
  }

  /**
   * As step(), but resolves once the update is queued, before its norm is known: on the GPU the next step's
   * work can then be queued behind it while it runs, where step() would leave the GPU idle until JavaScript
   * had read the norm. Read the result (in any order, or never) with `result()`; one never read keeps a few
   * pinned bytes of the GPU's until it is garbage-collected.
   */
  async queue(lr: number = this.lr): Promise<PendingStep> {
    const { pending } = (await this.#locked(lr, true)) as { pending: object };
    const native = loadNative(this.#device());
    let read: Promise<StepInfo> | null = null;
    return {
      result: () => (read ??= native.adamwResult(pending).then((r) => ({ gradNorm: r.norm, skipped: r.skipped }))),
    };
  }

  #device() {
    return this.#params[0]?.value.device ?? 'cpu';
  }

  async #locked(lr: number, defer: boolean): Promise<{ norm: number; skipped: boolean } | { pending: object }> {
    positive(lr, 'lr', true);
    // The model's lock: an update must not rewrite weights under a running forward or backward. Queueing is
    // enough: on the GPU, work queued later runs after the update.
    const lock = this.#params.find((p) => p.lock)?.lock;
    if (lock?.busy) throw new Error(`step: the model is busy with ${lock.busy}; await it before the optimizer step`);
    if (lock) lock.busy = 'an optimizer step';
    try {
      const args = [
        this.#params.map((p) => p.value.handle(p.name)),
        this.#params.map((p) => p.grad.handle(p.name)),
        this.#m.map((t) => t.handle()),
        this.#v.map((t) => t.handle()),
        this.#decay,
        this.#count.handle(),
        { lr, beta1: this.betas[0], beta2: this.betas[1], eps: this.eps, weightDecay: this.weightDecay, maxNorm: this.maxGradNorm },
      ] as const;
      const native = loadNative(this.#device());
      return defer ? await native.adamw(...args, true) : await native.adamw(...args, false);
    } finally {
      if (lock) lock.busy = null;
    }
  }

  state(): AdamWState {
    const m: Record<string, Float32Array> = {};
    const v: Record<string, Float32Array> = {};
    this.#params.forEach((p, i) => {
      m[p.name] = this.#m[i]!.toArray() as Float32Array;
      v[p.name] = this.#v[i]!.toArray() as Float32Array;
    });
    return { step: this.stepCount, m, v };
  }

  loadState(s: AdamWState): void {
    if (!Number.isInteger(s.step) || s.step < 0 || s.step > 2 ** 31 - 1) {
      throw new RangeError('optimizer state: step must be an integer in [0, 2^31 - 1]');
    }
    this.#params.forEach((p, i) => {
      const m = s.m[p.name];
      const v = s.v[p.name];
      if (!m || !v || m.length !== p.value.size || v.length !== p.value.size) {
        throw new RangeError(`optimizer state: moments for '${p.name}' are missing or the wrong size`);
      }
      this.#m[i]!.handle().write(m);
      this.#v[i]!.handle().write(v);
    });
    this.#count.handle().write(Int32Array.of(s.step));
  }

  dispose(): void {
    for (const t of [...this.#m, ...this.#v, this.#count]) t.dispose();
  }
}
