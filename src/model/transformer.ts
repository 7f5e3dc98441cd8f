// The whole model: token (+ position) embedding, the recurrent layer stack, final layernorm and a head
// (tied language-model head, copy head over the last M positions, or an untied classifier). Every
// heavy step is one native call; a training step is five of them plus the optimizer's one.
import { Rng } from '../data/rng.js';
import { loadNative, type Device, type NativeAddon, type RowSampling, type SampledRows } from '../native.js';
import { adoptHandle, Tensor } from '../tensor.js';
import { resolveModelConfig, resolvePlacement, type ModelConfig, type Precision, type ResolvedModelConfig } from './config.js';
import { RecurrentLayer, type Parameter, type ParameterLock } from './layer.js';

/** Loss (mean over scored positions), argmax hits and the number of scored positions. */
export interface LossResult {
  loss: number;
  correct: number;
  count: number;
}

export interface StepOptions {
  /** Dropout on (default true for lossAndGrad, false for evaluate). */
  training?: boolean;
  /** Seed of this step's dropout masks. */
  seed?: number;
  /** Window width for this call (random window training); default the config's window. */
  window?: number;
}

/** Incremental decoding state; see RecurrentTransformer.decoder(). */
export interface Decoder {
  readonly batch: number;
  readonly vocab: number;
  /** Tokens consumed so far by slot 0. */
  readonly position: number;
  /** Feeds one token per sequence; resolves with the next-token logits, [batch * vocab] row-major. */
  step(tokens: Int32Array | number[]): Promise<Float32Array>;
  /**
   * Continuous batching: one token for each listed slot (distinct), each slot at its own position;
   * resolves with [slots.length * vocab] logits in the same order.
   */
  stepSlots(slots: ArrayLike<number>, tokens: Int32Array | number[]): Promise<Float32Array>;
  /**
   * stepSlots that also samples each row's next token in native code, on the step's thread, with that
   * row's settings (see RowSampling; the same computation as sampleToken, so the same uniform draws give
   * the same tokens). Resolves with the logits and, per row, the sampled token (-1 where not sampled) and
   * its log-probability. `serial: true` keeps the step on one thread even when no other step is in flight
   * (one that starts beside another always does): for callers that keep several steps in flight, where a
   * step split across the thread pool would compete for the cores with the others.
   */
  stepSample(slots: ArrayLike<number>, tokens: Int32Array | number[], sampling: RowSampling, options?: { serial?: boolean }): Promise<SampledRows & { logits: Float32Array }>;
  /** Starts a slot over (a new sequence) at position 0. */
  reset(slot: number): void;
  /** Tokens consumed by a slot. */
  positionOf(slot: number): number;
}

/** Targets equal to this are not scored (like PyTorch's ignore_index). */
export const IGNORE_INDEX = -1;

interface OwnParam extends Parameter {
  decay: boolean;
}

export class RecurrentTransformer {
  readonly config: ResolvedModelConfig;
  readonly stack: RecurrentLayer;
  /** Where the weights live and every op runs (config.device, else RT_DEVICE, else 'cpu'). */
  readonly device: Device;
  /** CUDA matrix products: 'bf16' tensor cores (default) or 'fp32'. */
  readonly precision: Precision;
  #native: NativeAddon;
  #wte: OwnParam;
  #wpe: OwnParam | null;
  #lnW: OwnParam;
  #lnB: OwnParam | null;
  #head: OwnParam | null;
  #disposed = false;
  #lock: ParameterLock = { busy: null };

  constructor(config: ModelConfig) {
    this.config = resolveModelConfig(config);
    const c = this.config;
    const placement = resolvePlacement(config);
    this.device = placement.device;
    this.precision = placement.precision;
    this.#native = loadNative(this.device);
    this.stack = new RecurrentLayer({
      d: c.d,
      heads: c.heads,
      layers: c.layers,
      window: c.window,
      variant: c.variant,
      alpha: c.alpha,
      activation: c.activation,
      bias: c.bias,
      dropout: c.dropout,
      seed: c.seed,
      device: this.device,
      precision: this.precision,
    });
    const rng = new Rng(c.seed).fork(0x6d6f64656c);  // 'model': apart from the layer stack's init streams
    const normal = (n: number, std: number): Float32Array => {
      const a = new Float32Array(n);
      for (let i = 0; i < n; i++) a[i] = std * rng.normal();
      return a;
    };
    const own = (name: string, shape: number[], data: Float32Array, decay: boolean): OwnParam => {
      const value = Tensor.fromArray(data, shape, 'float32', this.device);
      return { name, shape: value.shape, value, grad: Tensor.zeros(shape, 'float32', this.device), decay };
    };
    this.#wte = own('transformer.wte.weight', [c.vocabSize, c.d], normal(c.vocabSize * c.d, 0.02), true);
    this.#wpe = c.positional ? own('transformer.wpe.weight', [c.maxLen, c.d], normal(c.maxLen * c.d, 0.02), true) : null;
    this.#lnW = own('transformer.ln_f.weight', [c.d], new Float32Array(c.d).fill(1), false);
    this.#lnB = c.bias ? own('transformer.ln_f.bias', [c.d], new Float32Array(c.d), false) : null;
    const classes = typeof c.head === 'object' && 'classify' in c.head ? c.head.classify : 0;
    this.#head = classes ? own('head.weight', [classes, c.d], normal(classes * c.d, 0.02), true) : null;
  }

  /** Every trainable tensor, nanoGPT names, in a fixed order. lm_head.weight is tied to wte: not listed. */
  parameters(): Parameter[] {
    return this.#all().map(({ name, shape, value, grad }) => ({ name, shape, value, grad, lock: this.#lock }));
  }

  /** Whether each parameter (in parameters() order) gets weight decay: 2-D weights only, like nanoGPT. */
  decayMask(): boolean[] {
    return this.#all().map((p) => p.decay);
  }

  parameterCount(): number {
    return this.#all().reduce((n, p) => n + p.value.size, 0);
  }

  /** How many positions per sequence the head scores for a sequence of n tokens. */
  scoredPositions(n: number): number {
    const h = this.config.head;
    if (h === 'lm') return n;
    return 'copy' in h ? h.copy : 1;
  }

  /**
   * Forward and backward on one batch: gradients accumulate into parameters()' grads. A non-finite loss
   * (diverged weights) comes with non-finite gradients, as in PyTorch: skip that step (the Trainer does, and
   * AdamW skips a non-finite gradient by itself), and zeroGrad() before the next.
   */
  async lossAndGrad(tokens: Tensor, targets: Tensor, opts: StepOptions = {}): Promise<LossResult> {
    return this.#exclusive('lossAndGrad', () => this.#lossAndGrad(tokens, targets, opts));
  }

  async #lossAndGrad(tokens: Tensor, targets: Tensor, opts: StepOptions): Promise<LossResult> {
    this.#checkTargets(tokens, targets);
    const training = opts.training ?? true;
    const seed = opts.seed ?? 0;
    // Checked before the embedding's native call, which reads it as an unsigned 64-bit integer.
    if (!Number.isSafeInteger(seed) || seed < 0) throw new RangeError(`opts.seed: expected a non-negative integer, got ${String(opts.seed)}`);
    const p = training ? this.config.dropout : 0;
    const n = this.#native;
    const emb = new Tensor(await n.embeddingForward(adoptHandle(tokens, n, 'tokens'), this.#wte.value.handle(), this.#wpe?.value.handle() ?? null, p, seed));
    let y: Tensor | undefined;
    let dY: Tensor | undefined;
    let dx: Tensor | undefined;
    try {
      // Non-finite activations (diverged weights) surface as a non-finite loss, which the trainer skips.
      y = await this.stack.forward(emb, { training, seed, window: opts.window, checkFinite: false });
      // The head's loss is read only after the backward is queued: on the GPU the backward then follows the
      // head without waiting for JavaScript. So a non-finite loss comes with non-finite gradients (as in
      // PyTorch); the trainer skips such a step, and AdamW skips a non-finite gradient anyway.
      const h = await n.headXent(
        y.handle(),
        this.#lnW.value.handle(),
        this.#lnB?.value.handle() ?? null,
        this.#headWeight().value.handle(),
        adoptHandle(targets, n, 'targets'),
        IGNORE_INDEX,
        { dlnw: this.#lnW.grad.handle(), dlnb: this.#lnB?.grad.handle() ?? null, dW: this.#headWeight().grad.handle() },
        this.precision === 'fp32',
        true,
      );
      dY = new Tensor(h.dY!);
      dx = await this.stack.backward(dY, { checkFinite: false });
      await n.embeddingBackward(adoptHandle(tokens, n, 'tokens'), dx.handle(), this.#wte.grad.handle(), this.#wpe?.grad.handle() ?? null, p, seed);
      const r = await n.xentResult(h.pending);
      return { loss: r.loss, correct: r.correct, count: r.count };
    } finally {
      for (const t of [emb, y, dY, dx]) t?.dispose();
    }
  }

  /** Loss and accuracy without gradients and without dropout; memory does not grow with N. */
  async evaluate(tokens: Tensor, targets: Tensor, opts: { window?: number } = {}): Promise<LossResult> {
    return this.#exclusive('evaluate', () => this.#evaluate(tokens, targets, opts));
  }

  async #evaluate(tokens: Tensor, targets: Tensor, opts: { window?: number }): Promise<LossResult> {
    this.#checkTargets(tokens, targets);
    const y = await this.#hidden(tokens, opts.window);
    try {
      const r = await this.#native.headXent(
        y.handle(),
        this.#lnW.value.handle(),
        this.#lnB?.value.handle() ?? null,
        this.#headWeight().value.handle(),
        adoptHandle(targets, this.#native, 'targets'),
        IGNORE_INDEX,
        null,
        this.precision === 'fp32',
      );
      return { loss: r.loss, correct: r.correct, count: r.count };
    } finally {
      y.dispose();
    }
  }

  /** Logits [batch, positions, classes] of the last `positions` tokens (default: the head's). */
  async logits(tokens: Tensor, opts: { positions?: number; window?: number } = {}): Promise<Tensor> {
    return this.#exclusive('logits', () => this.#logits(tokens, opts));
  }

  async #logits(tokens: Tensor, opts: { positions?: number; window?: number }): Promise<Tensor> {
    const y = await this.#hidden(tokens, opts.window);
    try {
      const P = opts.positions ?? this.scoredPositions(tokens.shape[1]!);
      // The addon reads it as a 32-bit integer (NaN there is undefined behaviour).
      if (!Number.isInteger(P) || P < 1 || P > tokens.shape[1]!) {
        throw new RangeError(`opts.positions: expected an integer in [1, ${tokens.shape[1]}], got ${String(opts.positions)}`);
      }
      return new Tensor(
        await this.#native.headLogits(y.handle(), this.#lnW.value.handle(), this.#lnB?.value.handle() ?? null, this.#headWeight().value.handle(), P, this.precision === 'fp32'),
      );
    } finally {
      y.dispose();
    }
  }

  /**
   * An incremental decoder for `batch` sequences: each step takes one token per sequence and returns the
   * next-token logits [batch * vocab], equal to logits() of the whole prefix, with O(layers * w * d)
   * state per sequence. `maxPositions` bounds the cache of the plain transformer (window 0) only.
   */
  decoder(batch = 1, maxPositions = this.config.maxLen): Decoder {
    this.#live('decoder');
    // The addon reads both as 32-bit integers: 1.5 or 2^32 + 1 would silently become something else.
    if (typeof batch !== 'number' || !Number.isInteger(batch) || batch < 1 || batch > 65536) {
      throw new RangeError(`decoder: batch must be an integer in [1, 65536], got ${String(batch)}`);
    }
    if (typeof maxPositions !== 'number' || !Number.isInteger(maxPositions) || maxPositions < 1 || maxPositions > 2 ** 31 - 1) {
      throw new RangeError(`decoder: maxPositions must be an integer in [1, 2^31 - 1], got ${String(maxPositions)}`);
    }
    if (typeof this.config.head === 'object' && 'classify' in this.config.head) {
      throw new Error('decoder: a classify model has no next-token head');
    }
    const handle = new this.#native.DecoderHandle(
      this.stack.nativeHandle('decoder'),
      batch,
      maxPositions,
      this.#wte.value.handle(),
      this.#wpe?.value.handle() ?? null,
      this.#lnW.value.handle(),
      this.#lnB?.value.handle() ?? null,
      this.#headWeight().value.handle(),
    );
    const vocab = this.config.vocabSize;
    const checkTokens = (tokens: Int32Array | number[]): Int32Array => {
      const t = tokens instanceof Int32Array ? tokens : Int32Array.from(tokens);
      for (const v of t) {
        if (!Number.isInteger(v) || v < 0 || v >= vocab) throw new RangeError(`decoder.step: token ${v} is outside the vocabulary [0, ${vocab})`);
      }
      return t;
    };
    return {
      batch,
      vocab,
      get position() {
        return handle.position;
      },
      step: async (tokens) => handle.step(checkTokens(tokens)),
      stepSlots: async (slots, tokens) => handle.step(checkTokens(tokens), Int32Array.from(slots)),
      stepSample: async (slots, tokens, sampling, options) => {
        const r = await handle.step(checkTokens(tokens), Int32Array.from(slots), sampling, options?.serial);
        // An addon built before steps could sample (a prebuilt CUDA binary) ignores the argument: the same
        // sampler then runs here, from the CPU addon.
        if (r instanceof Float32Array) return { logits: r, ...loadNative('cpu').sampleRows(r, vocab, sampling) };
        return r;
      },
      reset: (slot) => handle.reset(slot),
      positionOf: (slot) => handle.positionOf(slot),
    };
  }

  zeroGrad(): void {
    this.#live('zeroGrad');
    if (this.#lock.busy) throw new Error(`zeroGrad: the model is busy with ${this.#lock.busy}; await it first`);
    this.stack.zeroGrad();
    for (const p of this.#ownList()) p.grad.handle().zero();
  }

  exportParameters(): Record<string, Float32Array> {
    return Object.fromEntries(this.#all().map((p) => [p.name, p.value.toArray() as Float32Array]));
  }

  /** Sets every parameter; a separate `lm_head.weight` equal to wte (an untied-format file) is accepted. */
  importParameters(values: Record<string, Float32Array | ArrayLike<number>>): void {
    this.#live('importParameters');
    if (this.#lock.busy) throw new Error(`importParameters: the model is busy with ${this.#lock.busy}; await it first`);
    const stackNames = new Set(this.stack.parameters().map((p) => p.name));
    const own = this.#ownList();
    for (const p of own) {
      const v = values[p.name];
      if (v === undefined) throw new RangeError(`importParameters: missing parameter '${p.name}'`);
      if (v.length !== p.value.size) {
        throw new RangeError(`importParameters: '${p.name}' has ${v.length} values, expected ${p.value.size} (shape [${p.shape.join(', ')}])`);
      }
      for (let i = 0; i < v.length; i++) {
        if (!Number.isFinite(v[i])) throw new RangeError(`importParameters: '${p.name}'[${i}] is not finite`);
      }
    }
    this.stack.importParameters(Object.fromEntries(Object.entries(values).filter(([k]) => stackNames.has(k))));
    for (const p of own) {
      const v = values[p.name]!;
      p.value.handle().write(v instanceof Float32Array ? v : Float32Array.from(v));
    }
  }

  dispose(): void {
    if (this.#disposed) return;
    if (this.#lock.busy) throw new Error(`dispose: the model is busy with ${this.#lock.busy}; await it first`);
    this.#disposed = true;
    this.stack.dispose();
    for (const p of this.#ownList()) {
      p.value.dispose();
      p.grad.dispose();
    }
  }

  async #hidden(tokens: Tensor, window: number | undefined): Promise<Tensor> {
    this.#live('evaluate');
    const emb = new Tensor(await this.#native.embeddingForward(adoptHandle(tokens, this.#native, 'tokens'), this.#wte.value.handle(), this.#wpe?.value.handle() ?? null, 0, 0));
    try {
      return await this.stack.forward(emb, { training: false, grad: false, window });
    } finally {
      emb.dispose();
    }
  }

  #checkTargets(tokens: Tensor, targets: Tensor): void {
    const P = this.scoredPositions(tokens.shape[1] ?? 0);
    if (targets.shape.length === 2 && targets.shape[1] !== P) {
      throw new RangeError(`targets: expected shape [${tokens.shape[0]}, ${P}] (the head scores ${P} positions), got [${targets.shape.join(', ')}]`);
    }
  }

  #headWeight(): OwnParam {
    return this.#head ?? this.#wte;
  }

  #ownList(): OwnParam[] {
    return [this.#wte, this.#wpe, this.#lnW, this.#lnB, this.#head].filter((p): p is OwnParam => p !== null);
  }

  #all(): OwnParam[] {
    const stack = this.stack.parameters().map((p) => ({ ...p, decay: p.shape.length >= 2 }));
    const [wte, wpe, lnW, lnB, head] = [this.#wte, this.#wpe, this.#lnW, this.#lnB, this.#head];
    return [wte, ...(wpe ? [wpe] : []), ...stack, lnW, ...(lnB ? [lnB] : []), ...(head ? [head] : [])];
  }

  /**
   * Runs one model call at a time: two overlapping calls would interleave their gradient writes, so the
   * second is refused with an Error rather than allowed to corrupt the model (await the first).
   */
  async #exclusive<T>(op: string, fn: () => Promise<T>): Promise<T> {
    this.#live(op);
    if (this.#lock.busy) throw new Error(`${op}: the model is busy with ${this.#lock.busy}; await it before calling again`);
    this.#lock.busy = op;
    try {
      return await fn();
    } finally {
      this.#lock.busy = null;
    }
  }

  #live(op: string): void {
    if (this.#disposed) throw new Error(`${op}: the model has been disposed`);
  }
}
