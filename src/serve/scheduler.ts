// Continuous batching: requests share one decoder whose slots each hold a sequence's O(layers * w * d)
// state. Every step feeds one token to each sequence of a batch in a single native call (prompt tokens
// while a prompt is being read, sampled tokens after); a finished or abandoned sequence frees its slot at
// once and the next queued request takes it, without waiting for the rest of the batch.
//
// With enough sequences (pipelineMinRows per batch) they are split into up to maxInFlight batches
// whose steps are in flight at once, each on a libuv thread of its own and kept there by the addon
// (no thread pool, even for a step that starts while none is in flight: see #submit): while some
// compute, this thread hands another's tokens to their requests, answers HTTP and submits that batch's
// next step. Both follow the machine (see resolveSchedulerOptions): `threads` steps computing (default:
// the CPUs this process may use) and one more being handed over, within libuv's pool. With one batch the decoder sat idle for that part of every iteration (at 64
// clients on 2 cores ~0.25 of a ~0.9 ms iteration: the step's completion waiting for the event loop,
// then sampling), and the step split across both cores waited at each of its barriers for whichever
// thread the event loop or the load generator had taken. Below that many sequences one batch is cheaper:
// a step has a fixed cost that smaller steps would pay several times.
//
// Tokens are sampled inside the step, in native code on the step's thread (Decoder.stepSample): each
// sequence's sampler writes its settings and its next uniform draw into the step's row, so the event loop
// gets tokens back instead of sampling them from logits (at 64 clients that sampling was ~a quarter of the
// event loop's time, its exponentials alone ~15%).
import { availableParallelism } from 'node:os';
import { rowSampling, SequenceSampler, type GeneratedToken, type RowSampling, type SampledRows } from '../generate.js';
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
  finished?: boolean;
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
  /**
   * Decoder threads: steps computing at once, each on a thread of its own, when there are sequences for
   * several batches. Default: RT_NUM_THREADS when set (the addon's own pool, which splits a step that runs
   * alone, has that many threads), else os.availableParallelism(); 2 for a CUDA model, whose steps take
   * turns on the device.
   */
  threads?: number;
  /**
   * Steps in flight at once. Default: threads + 1 (one more being sampled, queued or woken while the
   * others compute), at most libuv's pool size (UV_THREADPOOL_SIZE, default 4) - 1, which leaves one of its
   * threads for other work. Each step holds a libuv thread: libuv reads UV_THREADPOOL_SIZE once, when its
   * pool starts (in an ES module program, before the first line of it runs), so set it in the environment
   * that starts node; the `rt` command does that for `rt serve`. A larger value given here is used as is
   * (steps beyond the pool wait in libuv's queue).
   */
  maxInFlight?: number;
  /**
   * Sequences each batch needs when several are in flight; below twice this, one batch (a step has a
   * fixed cost that smaller steps would pay several times). Default: 16 up to 2 threads, then
   * max(8, ceil(32 / threads)).
   */
  pipelineMinRows?: number;
}

/** libuv's thread pool size as libuv reads it from the environment (UV_THREADPOOL_SIZE, default 4, 1..1024). */
export function uvThreadpoolSize(env: NodeJS.ProcessEnv = process.env): number {
  const v = env.UV_THREADPOOL_SIZE;
  if (v === undefined) return 4;
  const n = Number.parseInt(v, 10);  // libuv: atoi, 0 -> 1, capped at 1024
  return Math.min(1024, Math.max(1, Number.isFinite(n) ? n : 0));
}

/** RT_NUM_THREADS when it is a positive integer (as the addon reads it), else os.availableParallelism(). */
export function defaultThreads(env: NodeJS.ProcessEnv = process.env): number {
  const n = Number.parseInt(env.RT_NUM_THREADS ?? '', 10);
  return Number.isFinite(n) && n > 0 ? Math.min(n, 256) : availableParallelism();
}

/** The pipelining rule for `threads` decoder threads; two threads give 3 steps in flight of >= 16 rows. */
export function pipelineMinRowsFor(threads: number): number {
  return threads <= 2 ? 16 : Math.max(8, Math.ceil(32 / threads));
}

function positiveInt(name: string, v: unknown): number {
  if (!(Number.isSafeInteger(v) && (v as number) >= 1)) throw new RangeError(`${name}: expected an integer >= 1, got ${String(v)}`);
  return v as number;
}

/** Every option with its value: given ones checked (RangeError naming the option), the rest by the rules above. */
export function resolveSchedulerOptions(options: SchedulerOptions, device: 'cpu' | 'cuda' = 'cpu'): Required<SchedulerOptions> {
  const maxBatch = positiveInt('maxBatch', options.maxBatch);
  if (!(Number.isSafeInteger(options.maxQueue) && options.maxQueue >= 0)) throw new RangeError(`maxQueue: expected an integer >= 0, got ${String(options.maxQueue)}`);
  const threads = options.threads === undefined ? (device === 'cuda' ? 2 : defaultThreads()) : positiveInt('threads', options.threads);
  const maxInFlight = options.maxInFlight === undefined ? Math.max(1, Math.min(threads + 1, uvThreadpoolSize() - 1)) : positiveInt('maxInFlight', options.maxInFlight);
  const pipelineMinRows = options.pipelineMinRows === undefined ? pipelineMinRowsFor(threads) : positiveInt('pipelineMinRows', options.pipelineMinRows);
  return { maxBatch, maxQueue: options.maxQueue, threads, maxInFlight, pipelineMinRows };
}

function logSoftmaxAt(logits: Float32Array, offset: number, V: number, target: number): number {
  let mx = -Infinity;
  for (let v = 0; v < V; v++) mx = Math.max(mx, logits[offset + v]!);
  let sum = 0;
  for (let v = 0; v < V; v++) sum += Math.exp(logits[offset + v]! - mx);
  return logits[offset + target]! - mx - Math.log(sum);
}

export class Scheduler {
  /** The options in use: those given, and the defaults of the rest (see {@link SchedulerOptions}). */
  readonly options: Readonly<Required<SchedulerOptions>>;
  #decoder: Decoder;
  #vocab: number;
  #queue: Job[] = [];
  #active: Job[] = [];
  /** Active jobs that are not in a step. */
  #ready: Job[] = [];
  #free: number[];
  #running: Promise<void> | null = null;
  #settle: (() => void) | null = null;
  #inFlight = 0;
  #peakInFlight = 0;
  #busySince = 0;
  // The step's inputs go through reused buffers: the addon copies them before stepSample returns.
  #slotBuf: Int32Array;
  #tokenBuf: Int32Array;
  #sampleBuf: RowSampling;
  #steps = 0;
  #tokensOut = 0;
  #rows = 0;
  #stepMs = 0;
  #inFlightMs = 0;

  constructor(model: RecurrentTransformer, options: SchedulerOptions) {
    options = this.options = Object.freeze(resolveSchedulerOptions(options, model.device));
    this.#decoder = model.decoder(options.maxBatch);
    this.#vocab = model.config.vocabSize;
    this.#free = Array.from({ length: options.maxBatch }, (_, i) => options.maxBatch - 1 - i);
    this.#slotBuf = new Int32Array(options.maxBatch);
    this.#tokenBuf = new Int32Array(options.maxBatch);
    this.#sampleBuf = rowSampling(options.maxBatch);
  }

  get active(): number {
    return this.#active.length;
  }
  get queued(): number {
    return this.#queue.length;
  }
  /**
   * Since start: batched decoder steps, tokens generated, rows fed (one per active sequence per step),
   * milliseconds during which at least one step was in flight (the rest of a busy period is the
   * scheduler's own work with the decoder idle), the sum of the settled steps' times in flight (over
   * stepMs: steps in flight on average while the decoder was busy) and the most steps ever in flight at once.
   */
  get stats(): { steps: number; tokens: number; rows: number; stepMs: number; inFlightMs: number; peakInFlight: number } {
    // A busy period still open counts up to now (read only at its end, a level whose steps never all
    // settled before the counters were read showed almost no decoder time, and the next level all of it).
    const open = this.#inFlight > 0 ? performance.now() - this.#busySince : 0;
    return { steps: this.#steps, tokens: this.#tokensOut, rows: this.#rows, stepMs: this.#stepMs + open, inFlightMs: this.#inFlightMs, peakInFlight: this.#peakInFlight };
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
    if (!this.#running) this.#running = new Promise((resolve) => (this.#settle = resolve));
    this.#pump();
  }

  /** Admits queued requests and starts steps while the decoder can take them; settles #running when idle. */
  #pump(): void {
    this.#admit();
    const n = this.#ready.length;
    // As many batches of at least pipelineMinRows as there is room for; with nothing in flight, at
    // least one. Fewer ready sequences wait for a step in flight and join its batch.
    let groups = Math.min(this.options.maxInFlight - this.#inFlight, Math.floor(n / this.options.pipelineMinRows));
    if (this.#inFlight === 0 && n > 0) groups = Math.max(1, groups);
    for (let g = 0; g < groups; g++) {
      const size = Math.ceil(this.#ready.length / (groups - g));
      this.#submit(this.#ready.splice(0, size));
    }
    if (this.#inFlight === 0 && this.#active.length === 0 && this.#running) {
      const settle = this.#settle!;
      this.#running = null;
      this.#settle = null;
      settle();
      // A request that arrived while the last step was settling still needs one.
      if (this.#queue.length) this.#start();
    }
  }

  /** One native step for `batch` (jobs not in any other step); its results go back through #pump. */
  #submit(batch: Job[]): void {
    const n = batch.length;
    const slots = this.#slotBuf.subarray(0, n);
    const tokens = this.#tokenBuf.subarray(0, n);
    const b = this.#sampleBuf;
    const sampling: RowSampling = { temperature: b.temperature.subarray(0, n), topK: b.topK.subarray(0, n), topP: b.topP.subarray(0, n), uniform: b.uniform.subarray(0, n) };
    for (let r = 0; r < n; r++) {
      const j = batch[r]!;
      slots[r] = j.slot;
      tokens[r] = j.fed < j.ids.length ? j.ids[j.fed]! : (j as GenerateJob).last;
      // A generate job samples after the step that feeds its prompt's last token, and after every later one.
      if (j.kind === 'generate' && j.fed + 1 >= j.ids.length) j.sampler.prepare(sampling, r);
      else sampling.temperature[r] = -1;
    }
    const submitted = performance.now();
    if (this.#inFlight++ === 0) this.#busySince = submitted;
    if (this.#inFlight > this.#peakInFlight) this.#peakInFlight = this.#inFlight;
    const done = (): void => {
      const now = performance.now();
      this.#inFlightMs += now - submitted;
      if (--this.#inFlight === 0) this.#stepMs += now - this.#busySince;
    };
    // With enough sequences for several batches, every step keeps to one thread, even one that starts
    // while no other is in flight (it soon has company; split across the pool it would compete with them).
    const serial = this.#active.length >= 2 * this.options.pipelineMinRows;
    this.#decoder.stepSample(slots, tokens, sampling, { serial }).then(
      (step) => {
        done();
        this.#rows += n;
        this.#steps++;
        for (let r = 0; r < n; r++) {
          const j = batch[r]!;
          this.#advance(j, step, r);
          if (!j.finished) this.#ready.push(j);
        }
        this.#pump();
      },
      (e: unknown) => {
        done();
        for (const j of batch) this.#finish(j, e as Error);
        this.#pump();
      },
    );
  }

  #finish(job: Job, error?: Error): void {
    job.finished = true;
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
      else this.#ready.push(job);
    }
  }

  /** One job after a step, whose row `r` is this job's. */
  #advance(job: Job, step: SampledRows & { logits: Float32Array }, r: number): void {
    const feeding = job.fed < job.ids.length;
    if (feeding) job.fed++;
    if (job.signal?.aborted) {
      this.#finish(job);
      return;
    }
    if (job.kind === 'score') {
      if (job.fed < job.ids.length) job.logprob += logSoftmaxAt(step.logits, r * this.#vocab, this.#vocab, job.ids[job.fed]!);
      else this.#finish(job);
      return;
    }
    if (feeding && job.fed < job.ids.length) return;  // still reading the prompt
    const t = job.sampler.accept(step.tokens[r]!, step.logprobs[r]!);
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
