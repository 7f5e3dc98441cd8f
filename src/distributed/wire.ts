// Framing of the rendezvous sockets: each message is [u32 JSON length][u32 body length][JSON][body], so
// that a control message and a block of floats (the 'tcp' backend's all-reduce) travel the same way.
import type { Socket } from 'node:net';

export interface Message {
  type: string;
  [key: string]: unknown;
}

/** A frame bigger than this is a protocol error (a stray client, a corrupted stream), not data. */
export const MAX_FRAME_BYTES = 1 << 30;

export function encode(msg: Message, body?: Uint8Array): Buffer {
  const json = Buffer.from(JSON.stringify(msg), 'utf8');
  const head = Buffer.alloc(8);
  head.writeUInt32LE(json.length, 0);
  head.writeUInt32LE(body?.byteLength ?? 0, 4);
  return Buffer.concat(body ? [head, json, Buffer.from(body.buffer, body.byteOffset, body.byteLength)] : [head, json]);
}

/** Reassembles frames from a socket's chunks. */
export class FrameReader {
  #pending: Buffer[] = [];
  #size = 0;

  push(chunk: Buffer): Array<{ msg: Message; body: Buffer }> {
    this.#pending.push(chunk);
    this.#size += chunk.length;
    const out: Array<{ msg: Message; body: Buffer }> = [];
    for (;;) {
      if (this.#size < 8) break;
      const buf = this.#pending.length === 1 ? this.#pending[0]! : Buffer.concat(this.#pending);
      this.#pending = [buf];
      const jl = buf.readUInt32LE(0);
      const bl = buf.readUInt32LE(4);
      if (jl + bl > MAX_FRAME_BYTES) throw new Error(`rendezvous: a frame of ${jl + bl} bytes is over the ${MAX_FRAME_BYTES}-byte limit (not an rt peer?)`);
      if (this.#size < 8 + jl + bl) break;
      let msg: unknown;
      try {
        msg = JSON.parse(buf.subarray(8, 8 + jl).toString('utf8'));
      } catch {
        throw new Error('rendezvous: a message is not valid JSON (not an rt peer?)');
      }
      if (typeof msg !== 'object' || msg === null || typeof (msg as Message).type !== 'string') {
        throw new Error('rendezvous: a message has no type (not an rt peer?)');
      }
      out.push({ msg: msg as Message, body: Buffer.from(buf.subarray(8 + jl, 8 + jl + bl)) });
      const rest = buf.subarray(8 + jl + bl);
      this.#pending = rest.length ? [rest] : [];
      this.#size = rest.length;
    }
    return out;
  }
}

/** One peer: framed messages in, framed messages out, and when it was last heard from. */
export class Channel {
  readonly socket: Socket;
  lastSeen = Date.now();
  #reader = new FrameReader();
  #onMessage: ((msg: Message, body: Buffer) => void) | null = null;
  // Messages that arrive between two owners (the rendezvous hands the channel over to the group).
  #queue: Array<{ msg: Message; body: Buffer }> = [];

  constructor(socket: Socket) {
    this.socket = socket;
    socket.setNoDelay(true);
    socket.on('data', (chunk: Buffer) => {
      this.lastSeen = Date.now();
      let frames;
      try {
        frames = this.#reader.push(chunk);
      } catch (e) {
        socket.destroy(e as Error);
        return;
      }
      for (const f of frames) {
        if (this.#onMessage) this.#onMessage(f.msg, f.body);
        else this.#queue.push(f);
      }
    });
  }

  /** Sets the receiver (null: hold messages until the next one is set), and hands it what was held. */
  onMessage(fn: ((msg: Message, body: Buffer) => void) | null): void {
    this.#onMessage = fn;
    while (fn && this.#queue.length && this.#onMessage === fn) {
      const f = this.#queue.shift()!;
      fn(f.msg, f.body);
    }
  }

  send(msg: Message, body?: Uint8Array): void {
    if (!this.socket.destroyed && this.socket.writable) this.socket.write(encode(msg, body));
  }
}
