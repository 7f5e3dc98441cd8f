// A stack of recurrent transformer layers: the native recurrence behind a typed, Promise-based API.
import { loadNative, type Device, type NativeAddon, type NativeLayer } from '../native.js';
import { adoptHandle, Tensor } from '../tensor.js';
import { resolveLayerConfig, type LayerConfig, type ResolvedLayerConfig } from './config.js';

/** One trainable tensor of the stack, under its nanoGPT name. */
export interface Parameter {
  readonly name: string;
  readonly shape: readonly number[];
  /** The live value (shares memory with the layer). */
  readonly value: Tensor;
  /** Its accumulated gradient (shares memory with the layer). */
  readonly grad: Tensor;
  /**
   * The owner's lock, when the parameter belongs to a model: what is running on it (null when idle).
   * An optimizer step takes it too, so a step and a forward pass never overlap.
   */
  readonly lock?: ParameterLock;
}

/** Shared by a model and its optimizer: the name of the operation running on the parameters, or null. */
export interface ParameterLock {
  busy: string | null;
}

export interface ForwardOptions {
  /** Dropout on (default false). */
  training?: boolean;
  /** Seed of this call's dropout masks (default: the config's seed plus a call counter). */
  seed?: number;
  /** Window width for this call, overriding config.window (random window training). */
  window?: number;
  /** Keep the activations for backward (default true). False: memory constant in N, no backward. */
  grad?: boolean;
  /** Refuse NaN/Infinity in x (default true). A trainer turns this off and checks the loss instead. */
  checkFinite?: boolean;
}

export class RecurrentLayer {
  readonly config: ResolvedLayerConfig;
  #native: NativeLayer | undefined;
  #addon: NativeAddon;
  #params: Parameter[];
  #calls = 0;

  constructor(config: LayerConfig) {
    this.config = resolveLayerConfig(config);
    const c = this.config;
    // A CPU layer uses the process's addon; a CUDA layer the CUDA build (an Error says why it cannot).
    this.#addon = loadNative(c.device);
    this.#native = new this.#addon.LayerHandle({
      d: c.d,
      heads: c.heads,
      layers: c.layers,
      window: c.window,
      accumulate: c.variant === 'accumulate',
      alphaInit: c.alpha.init,
      alphaLearnable: c.alpha.learnable,
      gelu: c.activation === 'gelu',
      bias: c.bias,
      dropout: c.dropout,
      seed: c.seed,
      device: c.device,
      precision: c.precision,
    });
    this.#params = this.#native.params().map((p) => {
      const value = new Tensor(p.value);
      return { name: p.name, shape: value.shape, value, grad: new Tensor(p.grad) };
    });
  }

  /** Where the weights live and the kernels run. Outputs, gradients and parameters are tensors there. */
  get device(): Device {
    return this.config.device;
  }

  /** The trainable tensors, in a fixed order. */
  parameters(): Parameter[] {
    this.live('parameters');
    return [...this.#params];
  }

  /** Total number of trainable scalars (alpha included). */
  parameterCount(): number {
    return this.#params.reduce((n, p) => n + p.value.size, 0);
  }

  /**
   * Runs the stack on x [batch, N, d] (float32) off the event loop. x may be on any device (it is copied
   * to the layer's); the result is on the layer's device.
   */
  async forward(x: Tensor, opts: ForwardOptions = {}): Promise<Tensor> {
    const native = this.live('forward');
    if (!(x instanceof Tensor)) throw new TypeError('x: expected a Tensor');
    if (x.dtype !== 'float32') throw new TypeError(`x: expected a float32 tensor, got ${x.dtype}`);
    if (x.shape.length !== 3 || x.shape[2] !== this.config.d) {
      throw new RangeError(`x: expected shape [batch, N, ${this.config.d}], got [${x.shape.join(', ')}]`);
    }
    if (x.shape[0] < 1 || x.shape[1] < 1) {
      throw new RangeError(`x: batch and N must be at least 1, got [${x.shape.join(', ')}]`);
    }
    const window = opts.window ?? this.config.window;
    // Bounded like config.window: the addon reads it as a 32-bit integer (2^32 would wrap to 0).
    if (!Number.isInteger(window) || window < 0 || window > 2 ** 30) {
      throw new RangeError(`opts.window: expected an integer in [0, 2^30], got ${String(opts.window)}`);
    }
    const seed = opts.seed ?? this.config.seed + ++this.#calls;
    if (!Number.isSafeInteger(seed) || seed < 0) {
      throw new RangeError(`opts.seed: expected a non-negative integer, got ${String(opts.seed)}`);
    }
    const handle = await native.forward(adoptHandle(x, this.#addon, 'x'), opts.training ?? false, seed, window, opts.grad ?? true, opts.checkFinite ?? true);
    return new Tensor(handle);
  }

  /**
   * Back-propagates dy [batch, N, d] through the last forward: returns dL/dx and accumulates every
   * parameter's gradient (call zeroGrad() between steps). One backward per forward. NaN/Infinity in
   * dy is refused unless checkFinite is false (a trainer's optimizer then sees the non-finite norm).
   */
  async backward(dy: Tensor, opts: { checkFinite?: boolean } = {}): Promise<Tensor> {
    const native = this.live('backward');
    if (!(dy instanceof Tensor)) throw new TypeError('dy: expected a Tensor');
    return new Tensor(await native.backward(adoptHandle(dy, this.#addon, 'dy'), opts.checkFinite ?? true));
  }

  /** Frees the activations kept by the last forward without running backward. */
  dropActivations(): void {
    this.live('dropActivations').dropCache();
  }

  zeroGrad(): void {
    this.live('zeroGrad').zeroGrad();
  }

  /** Copies of every parameter, under nanoGPT names. */
  exportParameters(): Record<string, Float32Array> {
    this.live('exportParameters');
    return Object.fromEntries(this.#params.map((p) => [p.name, p.value.toArray() as Float32Array]));
  }

  /** Copies of every gradient, under the parameters' names. */
  exportGradients(): Record<string, Float32Array> {
    this.live('exportGradients');
    return Object.fromEntries(this.#params.map((p) => [p.name, p.grad.toArray() as Float32Array]));
  }

  /** Sets every parameter from plain arrays; all names are required, sizes must match exactly. */
  importParameters(values: Record<string, Float32Array | ArrayLike<number>>): void {
    const native = this.live('importParameters');
    if (native.busy) throw new Error('importParameters: the layer is busy; await its forward or backward first');
    if (values === null || typeof values !== 'object') throw new TypeError('values: expected an object of arrays');
    const staged: [Parameter, Float32Array][] = [];
    for (const p of this.#params) {
      const v = values[p.name];
      if (v === undefined) throw new RangeError(`importParameters: missing parameter '${p.name}'`);
      if (typeof v !== 'object' || typeof v.length !== 'number') {
        throw new TypeError(`importParameters: '${p.name}' must be an array of numbers`);
      }
      if (v.length !== p.value.size) {
        throw new RangeError(
          `importParameters: '${p.name}' has ${v.length} values, expected ${p.value.size} (shape [${p.shape.join(', ')}])`,
        );
      }
      const f = v instanceof Float32Array ? v : Float32Array.from(v);
      for (let i = 0; i < f.length; i++) {
        if (!Number.isFinite(f[i])) throw new RangeError(`importParameters: '${p.name}'[${i}] is not finite`);
      }
      staged.push([p, f]);
    }
    // Validate everything first so a bad entry leaves the layer unchanged.
    for (const [p, f] of staged) p.value.handle(p.name).write(f);
  }

  dispose(): void {
    if (this.#native) {
      this.#native.free();
      this.#native = undefined;
      for (const p of this.#params) {
        p.value.dispose();
        p.grad.dispose();
      }
    }
  }

  get disposed(): boolean {
    return this.#native === undefined;
  }

  /** @internal The native stack (for the model's decoder). */
  nativeHandle(op: string): NativeLayer {
    return this.live(op);
  }

  private live(op: string): NativeLayer {
    if (!this.#native) throw new Error(`${op}: the layer has been disposed`);
    return this.#native;
  }
}
