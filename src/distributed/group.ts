// The live job after the rendezvous: heartbeats on the sockets, failure detection (a rank that disconnects
// or stops answering fails the whole job on every rank, with a message naming it), and a float32
// all-reduce through rank 0 for the 'tcp' backend (CPU tensors; the 'nccl' backend moves the gradients
// itself and uses these sockets only to learn about failures).
import type { Rendezvous } from './rendezvous.js';
import type { Channel, Message } from './wire.js';

export interface GroupOptions {
  rank: number;
  worldSize: number;
  /** Longest wait for one all-reduce (ms). */
  timeoutMs: number;
  /** Ping interval (default 1000 ms). */
  heartbeatMs?: number;
  /**
   * A peer silent for this long has failed (default: the timeout). A dead process is seen at once (its
   * socket closes); this catches a frozen one, and must outlast long synchronous work such as tokenizing.
   */
  deadAfterMs?: number;
}

interface PendingReduce {
  parts: Map<number, Float32Array>;
  resolve: (x: Float32Array) => void;
  reject: (e: Error) => void;
  timer: NodeJS.Timeout;
  length: number;
}

export class Group {
  readonly rank: number;
  readonly worldSize: number;
  #peers: Map<number, Channel>;
  #timeoutMs: number;
  #failed: Error | null = null;
  #failedBy = -1;
  #closing = false;
  #byeFrom = new Set<number>();
  #listeners: Array<(e: Error) => void> = [];
  #heartbeat: NodeJS.Timeout | undefined;
  #reduces = new Map<number, PendingReduce>();
  #early = new Map<number, Map<number, Float32Array>>();  // rank 0: contributions before its own call
  #seq = 0;

  constructor(rv: Rendezvous, o: GroupOptions) {
    this.rank = o.rank;
    this.worldSize = o.worldSize;
    this.#peers = rv.peers;
    this.#timeoutMs = o.timeoutMs;
    const hb = o.heartbeatMs ?? 1000;
    const dead = o.deadAfterMs ?? Math.max(o.timeoutMs, 10 * hb);
    for (const [r, ch] of this.#peers) {
      ch.onMessage((msg, body) => this.#receive(r, msg, body));
      ch.socket.on('close', () => {
        if (!this.#closing && !this.#byeFrom.has(r)) {
          this.#fail(new Error(`rank ${r} disconnected (its process exited or the network failed); stopping rank ${this.rank}`), r);
        }
      });
    }
    if (this.#peers.size) {
      this.#heartbeat = setInterval(() => {
        const now = Date.now();
        for (const [r, ch] of this.#peers) {
          if (this.#byeFrom.has(r)) continue;
          ch.send({ type: 'ping' });
          if (now - ch.lastSeen > dead) {
            this.#fail(new Error(`rank ${r} stopped answering (no heartbeat for ${((now - ch.lastSeen) / 1000).toFixed(1)} s); stopping rank ${this.rank}`), r);
          }
        }
      }, hb);
      this.#heartbeat.unref();
    }
  }

  /** The error that ended the job, or null while it is healthy. */
  get failed(): Error | null {
    return this.#failed;
  }

  /** Whether the failure came from another rank (this one only stopped because of it). */
  get failedByPeer(): boolean {
    return this.#failed !== null && this.#failedBy !== this.rank;
  }

  /** Called once when the job fails (here or on another rank). */
  onFailure(fn: (e: Error) => void): void {
    if (this.#failed) fn(this.#failed);
    else this.#listeners.push(fn);
  }

  /** Reports a local error to every rank (so they stop at once instead of waiting for a timeout). */
  abort(reason: string): void {
    this.#fail(new Error(`rank ${this.rank} failed: ${reason}`), this.rank);
  }

  #fail(e: Error, source: number): void {
    if (this.#failed || this.#closing) return;
    this.#failed = e;
    this.#failedBy = source;
    clearInterval(this.#heartbeat);
    // Rank 0 relays the news to the ranks that did not see it; a worker tells rank 0.
    for (const [r, ch] of this.#peers) {
      if (r !== source) ch.send({ type: 'abort', reason: e.message });
    }
    for (const p of this.#reduces.values()) {
      clearTimeout(p.timer);
      p.reject(e);
    }
    this.#reduces.clear();
    for (const fn of this.#listeners.splice(0)) fn(e);
  }

  #receive(from: number, msg: Message, body: Buffer): void {
    switch (msg.type) {
      case 'ping':
        return;
      case 'bye':
        this.#byeFrom.add(from);
        return;
      case 'abort':
        this.#fail(new Error(String(msg.reason)), from);
        return;
      case 'reduce': {
        // Rank 0 collects every rank's contribution to all-reduce number `seq`.
        const seq = Number(msg.seq);
        const data = new Float32Array(body.buffer.slice(body.byteOffset, body.byteOffset + body.byteLength));
        const p = this.#reduces.get(seq);
        if (p) {
          p.parts.set(from, data);
          this.#tryFinish(seq);
        } else {
          let m = this.#early.get(seq);
          if (!m) this.#early.set(seq, (m = new Map()));
          m.set(from, data);
        }
        return;
      }
      case 'reduced': {
        const seq = Number(msg.seq);
        const p = this.#reduces.get(seq);
        if (!p) return;
        this.#reduces.delete(seq);
        clearTimeout(p.timer);
        p.resolve(new Float32Array(body.buffer.slice(body.byteOffset, body.byteOffset + body.byteLength)));
        return;
      }
      default:
        return;
    }
  }

  #tryFinish(seq: number): void {
    const p = this.#reduces.get(seq);
    if (!p || p.parts.size < this.worldSize) return;
    this.#reduces.delete(seq);
    clearTimeout(p.timer);
    for (const [r, part] of p.parts) {
      if (part.length !== p.length) {
        this.#fail(new Error(`all-reduce: rank ${r} sent ${part.length} values, rank 0 has ${p.length} (do all ranks train the same model?)`), this.rank);
        p.reject(this.#failed!);
        return;
      }
    }
    // Summed in rank order, then scaled: every rank gets the same bits.
    const out = new Float32Array(p.length);
    for (let r = 0; r < this.worldSize; r++) {
      const part = p.parts.get(r)!;
      for (let i = 0; i < out.length; i++) out[i] = out[i]! + part[i]!;
    }
    const inv = 1 / this.worldSize;
    for (let i = 0; i < out.length; i++) out[i] = out[i]! * inv;
    for (const ch of this.#peers.values()) ch.send({ type: 'reduced', seq }, new Uint8Array(out.buffer));
    p.resolve(out);
  }

  /** The element-wise mean of `data` over the ranks (every rank calls it, in the same order). */
  allReduceMean(data: Float32Array): Promise<Float32Array> {
    if (this.#failed) return Promise.reject(this.#failed);
    if (this.#closing) return Promise.reject(new Error('allReduceMean: the process group is closed'));
    if (this.worldSize === 1) return Promise.resolve(Float32Array.from(data));
    const seq = this.#seq++;
    return new Promise<Float32Array>((resolve, reject) => {
      const timer = setTimeout(() => {
        const missing = this.rank === 0 ? [...Array(this.worldSize).keys()].filter((r) => !this.#reduces.get(seq)?.parts.has(r)) : [];
        this.#fail(
          new Error(
            `all-reduce ${seq} timed out after ${(this.#timeoutMs / 1000).toFixed(1)} s on rank ${this.rank}` +
              (missing.length ? `: rank${missing.length > 1 ? 's' : ''} ${missing.join(', ')} did not take part` : ': rank 0 did not answer'),
          ),
          this.rank,
        );
      }, this.#timeoutMs);
      const p: PendingReduce = { parts: new Map(), resolve, reject, timer, length: data.length };
      this.#reduces.set(seq, p);
      if (this.rank === 0) {
        p.parts.set(0, data);
        for (const [r, d] of this.#early.get(seq) ?? []) p.parts.set(r, d);
        this.#early.delete(seq);
        this.#tryFinish(seq);
      } else {
        this.#peers.get(0)!.send({ type: 'reduce', seq }, new Uint8Array(data.buffer, data.byteOffset, data.byteLength));
      }
    });
  }

  /** Leaves the job cleanly: peers see a goodbye, not a failure. */
  close(): void {
    if (this.#closing) return;
    this.#closing = true;
    clearInterval(this.#heartbeat);
    for (const ch of this.#peers.values()) {
      ch.send({ type: 'bye' });
      ch.socket.end();
    }
  }
}
