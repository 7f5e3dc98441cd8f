// Continuous batching: requests share one decoder whose slots each hold a sequence's O(layers * w * d)
// state. Every iteration feeds one token to every active sequence in a single native call (prompt
// tokens while a prompt is being read, sampled tokens after); a finished or abandoned sequence frees its
// slot at once and the next queued request takes it, without waiting for the rest of the batch.
import { SequenceSampler, type GeneratedToken } from '../generate.js';
import type { Decoder, RecurrentTransformer } from '../model/transformer.js';

export interface GenerateJobResult {
  kind: 'generate';
  text: string;
  tokens: number[];
  finishReason: 'stop' | 'length' | 'aborted';
  promptTokens: number;
}

export interface ScoreJobResult {
  kind: 'score';
  /** Sum of log-probabilities of tokens 1..n-1 given their prefixes (the first token has no context). */
  logprob: number;
  /** Tokens scored (n - 1). */
  scored: number;
}

interface JobBase {
  ids: number[];
  signal?: AbortSignal;
  slot: number;
  fed: number;
}

interface GenerateJob extends JobBase {
  kind: 'generate';
  sampler: SequenceSampler;
  onToken?: (t: GeneratedToken) => void;
  last: number;
  text: string;
  out: number[];
  resolve: (r: GenerateJobResult) => void;
  reject: (e: Error) => void;
}

interface ScoreJob extends JobBase {
  kind: 'score';
  logprob: number;
  resolve: (r: ScoreJobResult) => void;
  reject: (e: Error) => void;
}

type Job = GenerateJob | ScoreJob;

/** The queue is full: the caller should retry later (HTTP 503). */
export class QueueFullError extends Error {
  override name = 'QueueFullError';
}

/** The request's signal fired before it could finish (a queued request, or a score): no partial result. */
export class AbortedError extends Error {
  override name = 'AbortedError';
}

export interface SchedulerOptions {
  /** Sequences decoded together (slots). 1 turns batching off: requests run one after another. */
  maxBatch: number;
  /** Requests waiting for a slot before new ones are refused. */
  maxQueue: number;
}

function logSoftmaxAt(logits: Float32Array, offset: number, V: number, target: number): number {
  let mx = -Infinity;
  for (let v = 0; v < V; v++) mx = Math.max(mx, logits[offset + v]!);
  let sum = 0;
  for (let v = 0; v < V; v++) sum += Math.exp(logits[offset + v]! - mx);
  return logits[offset + target]! - mx - Math.log(sum);
}

export class Scheduler {
  readonly options: SchedulerOptions;
  #decoder: Decoder;
  #vocab: number;
  #queue: Job[] = [];
  #active: Job[] = [];
  #free: number[];
  #running: Promise<void> | null = null;
  #steps = 0;
  #tokensOut = 0;
  #rows = 0;
  #stepMs = 0;

  constructor(model: RecurrentTransformer, options: SchedulerOptions) {
    this.options = options;
    this.#decoder = model.decoder(options.maxBatch);
    this.#vocab = model.config.vocabSize;
    this.#free = Array.from({ length: options.maxBatch }, (_, i) => options.maxBatch - 1 - i);
  }

  get active(): number {
    return this.#active.length;
  }
  get queued(): number {
    return this.#queue.length;
  }
  /**
   * Since start: batched decoder steps, tokens generated, rows fed (one per active sequence per step) and
   * milliseconds spent waiting for the decoder (the rest of a busy loop is the scheduler's own work).
   */
  get stats(): { steps: number; tokens: number; rows: number; stepMs: number } {
    return { steps: this.#steps, tokens: this.#tokensOut, rows: this.#rows, stepMs: this.#stepMs };
  }

  generate(ids: number[], sampler: SequenceSampler, opts: { signal?: AbortSignal; onToken?: (t: GeneratedToken) => void } = {}): Promise<GenerateJobResult> {
    return new Promise((resolve, reject) => {
      this.#enqueue({ kind: 'generate', ids, sampler, signal: opts.signal, onToken: opts.onToken, slot: -1, fed: 0, last: -1, text: '', out: [], resolve, reject });
    });
  }

  score(ids: number[], opts: { signal?: AbortSignal } = {}): Promise<ScoreJobResult> {
    return new Promise((resolve, reject) => {
      this.#enqueue({ kind: 'score', ids, signal: opts.signal, slot: -1, fed: 0, logprob: 0, resolve, reject });
    });
  }

  /** Resolves when every queued and active request has finished. */
  async drain(): Promise<void> {
    while (this.#running) await this.#running;
  }

  #enqueue(job: Job): void {
    if (job.signal?.aborted) {
      job.reject(new AbortedError('the request was abandoned before it started'));
      return;
    }
    // Queued jobs that a free slot will take at the next iteration are not waiting.
    if (this.#queue.length - this.#free.length >= this.options.maxQueue) {
      job.reject(new QueueFullError(`the queue is full (${this.options.maxQueue} requests waiting)`));
      return;
    }
    this.#queue.push(job);
    // A request abandoned while it waits leaves the queue at once (an active one leaves after its step).
    job.signal?.addEventListener(
      'abort',
      () => {
        const i = this.#queue.indexOf(job);
        if (i < 0) return;
        this.#queue.splice(i, 1);
        job.reject(new AbortedError('the request was abandoned before it started'));
      },
      { once: true },
    );
    this.#start();
  }

  #start(): void {
    if (this.#running) return;
    this.#running = this.#loop().finally(() => {
      this.#running = null;
      // A request that arrived while the loop was returning still needs one.
      if (this.#queue.length) this.#start();
    });
  }

  #finish(job: Job, error?: Error): void {
    this.#active.splice(this.#active.indexOf(job), 1);
    this.#free.push(job.slot);
    if (error) {
      job.reject(error);
    } else if (job.kind === 'score') {
      // A partial sum is not the text's log-probability.
      if (job.signal?.aborted) {
        job.reject(new AbortedError('the request was abandoned before its text was scored'));
        return;
      }
      job.resolve({ kind: 'score', logprob: job.logprob, scored: job.ids.length - 1 });
    } else {
      const rest = job.sampler.flush();
      if (rest) {
        job.text += rest;
        this.#emit(job, { token: -1, text: rest, logprob: 0 });
      }
      const reason = job.signal?.aborted ? 'aborted' : job.sampler.count >= job.sampler.maxTokens && !job.sampler.stopped ? 'length' : 'stop';
      job.resolve({ kind: 'generate', text: job.text, tokens: job.out, finishReason: reason, promptTokens: job.ids.length });
    }
  }

  /** Calls the job's onToken; a callback that throws must not stop the loop that serves every request. */
  #emit(job: GenerateJob, t: GeneratedToken): void {
    try {
      job.onToken?.(t);
    } catch {
      // The callback's own request is the one affected; the scheduler keeps going.
    }
  }

  async #loop(): Promise<void> {
    // The step's inputs go through two reused buffers (the addon copies them before the call returns),
    // and the batch is walked with plain loops: at a wide batch this loop runs a few hundred times a
    // second on the thread that also serves HTTP, so what it allocates per step and per token counts.
    const slots = new Int32Array(this.options.maxBatch);
    const tokens = new Int32Array(this.options.maxBatch);
    const V = this.#vocab;
    for (;;) {
      this.#admit();
      const n = this.#active.length;
      if (n === 0) return;
      const batch = this.#active.slice();
      for (let r = 0; r < n; r++) {
        const j = batch[r]!;
        slots[r] = j.slot;
        tokens[r] = j.fed < j.ids.length ? j.ids[j.fed]! : (j as GenerateJob).last;
      }
      let logits: Float32Array;
      const t0 = performance.now();
      try {
        logits = await this.#decoder.stepSlots(slots.subarray(0, n), tokens.subarray(0, n));
      } catch (e) {
        for (const j of batch) this.#finish(j, e as Error);
        continue;
      }
      this.#stepMs += performance.now() - t0;
      this.#rows += n;
      this.#steps++;
      for (let r = 0; r < n; r++) this.#advance(batch[r]!, logits, r * V, V);
    }
  }

  /** Free slots take queued requests (in arrival order). */
  #admit(): void {
    while (this.#free.length && this.#queue.length) {
      const job = this.#queue.shift()!;
      if (job.signal?.aborted) {
        job.reject(new AbortedError('the request was abandoned before it started'));
        continue;
      }
      job.slot = this.#free.pop()!;
      this.#decoder.reset(job.slot);
      this.#active.push(job);
      if (job.kind === 'generate' && job.sampler.done) this.#finish(job);  // maxTokens 0
    }
  }

  /** One job after a step: its row of logits starts at `at`. */
  #advance(job: Job, logits: Float32Array, at: number, V: number): void {
    const feeding = job.fed < job.ids.length;
    if (feeding) job.fed++;
    if (job.signal?.aborted) {
      this.#finish(job);
      return;
    }
    if (job.kind === 'score') {
      if (job.fed < job.ids.length) job.logprob += logSoftmaxAt(logits, at, V, job.ids[job.fed]!);
      else this.#finish(job);
      return;
    }
    if (feeding && job.fed < job.ids.length) return;  // still reading the prompt
    const t = job.sampler.next(logits.subarray(at, at + V));
    if (t !== null) {
      if (t.text || !job.sampler.stopped) {
        job.text += t.text;
        job.out.push(t.token);
        this.#tokensOut++;
        this.#emit(job, t);
      }
      job.last = t.token;
    }
    if (job.sampler.done) this.#finish(job);
  }
}
