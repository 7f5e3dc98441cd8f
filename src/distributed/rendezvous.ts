// The TCP rendezvous: rank 0 listens on masterAddr:masterPort, every other rank connects (retrying while
// rank 0 is not up yet) and says who it is; once all have joined, rank 0 sends each one the job's payload
// (the NCCL unique id and the run config). Every wait has a deadline and fails with an Error that names
// the ranks that are missing, never a hang.
import { createServer, connect, type Server, type Socket } from 'node:net';
import { Channel, type Message } from './wire.js';

export interface RendezvousOptions {
  rank: number;
  worldSize: number;
  masterAddr: string;
  masterPort: number;
  timeoutMs: number;
  /** Rank 0 only: what every rank receives (JSON). */
  payload?: unknown;
}

export interface Rendezvous {
  /** Rank 0: one channel per other rank (index = rank; [0] is undefined). Others: [channel to rank 0]. */
  peers: Map<number, Channel>;
  payload: unknown;
}

const PROTOCOL = 'rt-rendezvous-1';

function deadlineError(msg: string): Error {
  return new Error(`rendezvous: ${msg}`);
}

async function serve(o: RendezvousOptions): Promise<Rendezvous> {
  const peers = new Map<number, Channel>();
  const pending = new Set<Socket>();
  const server: Server = createServer();
  return new Promise<Rendezvous>((resolve, reject) => {
    let done = false;
    const finish = (err: Error | null): void => {
      if (done) return;
      done = true;
      clearTimeout(timer);
      server.close();
      for (const s of pending) s.destroy();
      if (err) {
        for (const c of peers.values()) {
          c.send({ type: 'abort', reason: err.message });
          c.socket.end();
        }
        reject(err);
        return;
      }
      const payload = o.payload ?? null;
      for (const c of peers.values()) {
        c.onMessage(null);
        c.send({ type: 'welcome', payload });
      }
      resolve({ peers, payload });
    };
    const timer = setTimeout(() => {
      const missing = [];
      for (let r = 1; r < o.worldSize; r++) if (!peers.has(r)) missing.push(r);
      finish(
        deadlineError(
          `rank 0 waited ${(o.timeoutMs / 1000).toFixed(1)} s on ${o.masterAddr}:${o.masterPort}, and rank${missing.length > 1 ? 's' : ''} ${missing.join(', ')} of ${o.worldSize} did not join (did those workers start, with the same --master-addr/--master-port?)`,
        ),
      );
    }, o.timeoutMs);
    server.on('error', (e: NodeJS.ErrnoException) => {
      finish(deadlineError(`rank 0 could not listen on ${o.masterAddr}:${o.masterPort}: ${e.code === 'EADDRINUSE' ? 'the port is in use (choose another --master-port)' : e.message}`));
    });
    server.on('connection', (socket) => {
      pending.add(socket);
      socket.on('error', () => {});
      const ch = new Channel(socket);
      ch.onMessage((msg: Message) => {
        if (msg.type !== 'hello') return;
        pending.delete(socket);
        const r = msg.rank;
        const refuse = (why: string, fatal: boolean): void => {
          ch.send({ type: 'refused', reason: why });
          socket.end();
          if (fatal) finish(deadlineError(why));
        };
        if (msg.protocol !== PROTOCOL) return refuse(`a client that is not an rt worker connected to ${o.masterAddr}:${o.masterPort}`, false);
        if (msg.worldSize !== o.worldSize) return refuse(`rank ${String(r)} says the world size is ${String(msg.worldSize)}, rank 0 says ${o.worldSize} (use the same --gpus and --nnodes on every host)`, true);
        if (typeof r !== 'number' || !Number.isSafeInteger(r) || r < 1 || r >= o.worldSize) return refuse(`a worker claimed rank ${String(r)}, outside [1, ${o.worldSize - 1}]`, true);
        if (peers.has(r)) return refuse(`two workers claimed rank ${r} (check --node-rank on every host)`, true);
        peers.set(r, ch);
        socket.on('close', () => {
          if (!done) finish(deadlineError(`rank ${r} disconnected during the rendezvous`));
        });
        if (peers.size === o.worldSize - 1) finish(null);
      });
    });
    if (o.worldSize === 1) {
      clearTimeout(timer);
      done = true;
      resolve({ peers, payload: o.payload ?? null });
      return;
    }
    server.listen(o.masterPort, o.masterAddr);
  });
}

async function join(o: RendezvousOptions): Promise<Rendezvous> {
  const deadline = Date.now() + o.timeoutMs;
  let lastError = 'no answer';
  while (Date.now() < deadline) {
    let socket: Socket;
    try {
      socket = await new Promise<Socket>((resolve, reject) => {
        const s = connect({ host: o.masterAddr, port: o.masterPort });
        const t = setTimeout(() => s.destroy(new Error('connect timed out')), Math.max(1, Math.min(5000, deadline - Date.now())));
        s.once('connect', () => {
          clearTimeout(t);
          resolve(s);
        });
        s.once('error', (e) => {
          clearTimeout(t);
          reject(e);
        });
      });
    } catch (e) {
      lastError = (e as NodeJS.ErrnoException).code ?? (e as Error).message;
      await new Promise((r) => setTimeout(r, 200));
      continue;
    }
    socket.on('error', () => {});
    const ch = new Channel(socket);
    return new Promise<Rendezvous>((resolve, reject) => {
      const t = setTimeout(() => {
        socket.destroy();
        reject(deadlineError(`rank ${o.rank} reached rank 0 at ${o.masterAddr}:${o.masterPort} but was not let in within ${(o.timeoutMs / 1000).toFixed(1)} s (other ranks missing?)`));
      }, Math.max(1, deadline - Date.now()));
      const onClose = (): void => {
        clearTimeout(t);
        reject(deadlineError(`rank 0 at ${o.masterAddr}:${o.masterPort} closed the connection during the rendezvous`));
      };
      socket.once('close', onClose);
      ch.onMessage((msg) => {
        if (msg.type === 'welcome') {
          clearTimeout(t);
          socket.off('close', onClose);
          ch.onMessage(null);
          resolve({ peers: new Map([[0, ch]]), payload: msg.payload });
        } else if (msg.type === 'refused' || msg.type === 'abort') {
          clearTimeout(t);
          socket.off('close', onClose);
          socket.destroy();
          reject(deadlineError(`rank 0 refused rank ${o.rank}: ${String(msg.reason)}`));
        }
      });
      ch.send({ type: 'hello', protocol: PROTOCOL, rank: o.rank, worldSize: o.worldSize });
    });
  }
  throw deadlineError(`rank ${o.rank} could not reach rank 0 at ${o.masterAddr}:${o.masterPort} within ${(o.timeoutMs / 1000).toFixed(1)} s (last error: ${lastError}); is rank 0 running, and is --master-addr right?`);
}

/** Joins the job: rank 0 serves, the others connect. Resolves with the channels and rank 0's payload. */
export function rendezvous(o: RendezvousOptions): Promise<Rendezvous> {
  if (!Number.isSafeInteger(o.worldSize) || o.worldSize < 1) throw new RangeError(`worldSize: expected a positive integer, got ${String(o.worldSize)}`);
  if (!Number.isSafeInteger(o.rank) || o.rank < 0 || o.rank >= o.worldSize) throw new RangeError(`rank: expected an integer in [0, ${o.worldSize - 1}], got ${String(o.rank)}`);
  if (!(o.timeoutMs > 0)) throw new RangeError(`timeoutMs: expected a positive number, got ${String(o.timeoutMs)}`);
  return o.rank === 0 ? serve(o) : join(o);
}
