// An outbound connection pool: a few long-lived TCP connections to one upstream, lent out
// one exchange at a time. Opening a connection costs a handshake (and in real life a TLS
// handshake and an authentication); reusing one costs nothing. But every connection the
// pool keeps is a socket, an fd and a slot on the upstream, so the pool decides how many
// it opens, how long a caller waits for one, what it hands out, and when it lets go.
//
// Vocabulary: a connection is *idle* in the pool or *lent* to a borrower, who holds a
// *lease* and must end it: release() to give a healthy connection back, destroy() when
// the exchange went wrong.
import net from 'node:net';
import { once } from 'node:events';
import { FrameDecoder, FrameType, type Frame } from '../02-framing/codec.ts';
import { BufferPool, writeFrame } from './buffers.ts';

export interface PoolOptions {
  /** The upstream's port. */
  port: number;
  /** The upstream's address. */
  host?: string;
  /** Most connections open at once, idle, lent and still connecting together. Default: 10. */
  max?: number;
  /** How long acquire() may take in all, waiting and connecting, before it gives up, in ms. Default: 5000. */
  acquireTimeoutMs?: number;
  /** Most acquire() calls waiting for a connection at once; past it, PoolBusyError at once. Default: 100. */
  maxWaiting?: number;
  /**
   * An idle connection unused for this long, in ms, is closed. Default: 30 000. An unref'd
   * evictor checks every idleTimeoutMs / 2 (at least every 10 ms), so an idle connection
   * closes between idleTimeoutMs and 1.5 x idleTimeoutMs after its last use.
   */
  idleTimeoutMs?: number;
  /** A lease held longer than this, in ms, is reported by leaks(). Default: 10 000. */
  leakThresholdMs?: number;
}

export interface AcquireOptions {
  /** The caller gave up: stop waiting or connecting for it. */
  signal?: AbortSignal;
}

export interface RequestOptions extends AcquireOptions {
  /**
   * Which frame is the reply. An upstream may send frames of its own on the same
   * connection (a journal copies entries to its followers); those are skipped. Default:
   * the first frame that arrives.
   */
  isReply?: (frame: Frame) => boolean;
}

export interface Lease {
  readonly socket: net.Socket;
  /** Gives the connection back for the next borrower. Only after a complete exchange. */
  release(): void;
  /** Closes the connection instead of giving it back. */
  destroy(): void;
}

export interface LeakReport {
  /** How long the lease has been held, in ms. */
  heldMs: number;
  /** Where it was taken: the stack of the acquire() call. */
  stack: string;
}

export interface ConnectionPool {
  acquire(options?: AcquireOptions): Promise<Lease>;
  /** Sends one DATA frame and resolves with the body of the upstream's reply. */
  request(body: Buffer | string, options?: RequestOptions): Promise<Buffer>;
  /** Connections open or opening. */
  readonly size: number;
  readonly idle: number;
  /** Leases handed out and not yet ended. */
  readonly borrowed: number;
  /** acquire() calls waiting for a connection. */
  readonly waiting: number;
  /** Leases held longer than leakThresholdMs, the oldest first. */
  leaks(): LeakReport[];
  /** Lends nothing more, waits for every lease to end, closes every connection. */
  drain(): Promise<void>;
  /** Closes everything now, lent connections included. */
  stop(): Promise<void>;
}

export class PoolClosedError extends Error {
  constructor() {
    super('the pool is draining or stopped');
    this.name = 'PoolClosedError';
  }
}

export class AcquireTimeoutError extends Error {
  constructor(readonly ms: number) {
    super(`no connection was available within ${ms} ms`);
    this.name = 'AcquireTimeoutError';
  }
}

export class PoolBusyError extends Error {
  constructor(readonly maxWaiting: number) {
    super(`${maxWaiting} callers are already waiting for a connection`);
    this.name = 'PoolBusyError';
  }
}

/** The upstream answered with an ERROR frame. */
export class UpstreamError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'UpstreamError';
  }
}

interface Conn {
  socket: net.Socket;
  /** When it last came back to the pool (performance.now()). */
  lastUsed: number;
  /** Set while lent: when and where. */
  lease: { since: number; stack: string } | undefined;
}

interface Waiter {
  /** A connection handed over directly, or undefined: "a slot is free, try again". */
  grant(conn: Conn | undefined): void;
  refuse(err: Error): void;
}

export function createPool(options: PoolOptions): ConnectionPool {
  const host = options.host ?? '127.0.0.1';
  const max = options.max ?? 10;
  const acquireTimeoutMs = options.acquireTimeoutMs ?? 5000;
  const maxWaiting = options.maxWaiting ?? 100;
  const idleTimeoutMs = options.idleTimeoutMs ?? 30_000;
  const leakThresholdMs = options.leakThresholdMs ?? 10_000;

  /** Every connection, open or opening. */
  const all = new Set<Conn>();
  /** Idle connections, least recently used first. */
  const idle: Conn[] = [];
  const lent = new Set<Conn>();
  const waiters: Waiter[] = [];
  const emptied: Array<() => void> = [];
  const buffers = new BufferPool();
  let closing = false;

  function takeIdle(): Conn | undefined {
    // The most recently used first: it keeps a few connections busy and lets the rest
    // age out, instead of keeping all of them barely alive.
    let conn: Conn | undefined;
    while ((conn = idle.pop())) {
      // One that sat idle too long is dropped on the way.
      if (performance.now() - conn.lastUsed < idleTimeoutMs) return conn;
      conn.socket.destroy();
    }
    return undefined;
  }

  async function open(deadline: AbortSignal): Promise<Conn> {
    const socket = net.connect({ host, port: options.port, noDelay: true });
    const conn: Conn = { socket, lastUsed: performance.now(), lease: undefined };
    all.add(conn);
    // Idle or lent, a socket keeps its 'error' listener: an upstream reset of an idle
    // connection must not crash the process (lesson 01). 'close' follows every error.
    socket.on('error', () => {});
    // An idle socket keeps reading (never pause it: a paused socket may miss the upstream's
    // FIN, and leaves stray bytes unread). Bytes nobody asked for mean the connection is
    // out of step.
    socket.on('data', () => {
      if (!conn.lease) socket.destroy();
    });
    socket.once('close', () => {
      all.delete(conn);
      // A slot is free: the first waiter may open a connection in it.
      if (!closing) waiters.shift()?.grant(undefined);
      if (all.size === 0) for (const resolve of emptied.splice(0)) resolve();
    });
    try {
      await once(socket, 'connect', { signal: deadline });
    } catch (err) {
      socket.destroy();
      throw err;
    }
    return conn;
  }

  function wait(): Promise<Conn | undefined> {
    // Queued in arrival order; giveBack() and a closing connection wake the first one.
    return new Promise((resolve, reject) => waiters.push({ grant: resolve, refuse: reject }));
  }

  function lend(conn: Conn, stack: string): Lease {
    conn.lease = { since: performance.now(), stack };
    lent.add(conn);
    let ended = false;
    const end = () => {
      if (ended) return false;
      ended = true;
      lent.delete(conn);
      conn.lease = undefined;
      return true;
    };
    return {
      socket: conn.socket,
      release: () => {
        if (end()) giveBack(conn);
      },
      destroy: () => {
        if (end()) conn.socket.destroy();
      },
    };
  }

  /** A lease ended well: the longest waiter gets the connection, or it goes idle. */
  function giveBack(conn: Conn): void {
    conn.lastUsed = performance.now();
    if (closing) {
      conn.socket.destroy();
      return;
    }
    const waiter = waiters.shift();
    if (waiter) waiter.grant(conn);
    else idle.push(conn);
  }

  async function acquire({ signal }: AcquireOptions = {}): Promise<Lease> {
    // Where the lease is taken, for leaks(): captured before any await, while the
    // caller's frames are still on the stack. Two lines off: "Error" and acquire itself.
    const stack = (new Error().stack ?? '').split('\n').slice(2).join('\n');
    // One deadline for this call: the caller's signal or our own timeout, whichever comes first.
    const timeout = AbortSignal.timeout(acquireTimeoutMs);
    const deadline = signal ? AbortSignal.any([signal, timeout]) : timeout;
    try {
      for (;;) {
        if (closing) throw new PoolClosedError();
        deadline.throwIfAborted();
        const conn = takeIdle();
        if (conn) return lend(conn, stack);
        if (idle.length + lent.size < max) return lend(await open(deadline), stack);
        const handed = await wait();
        if (handed) return lend(handed, stack);
      }
    } catch (err) {
      throw timeout.aborted && !signal?.aborted ? new AcquireTimeoutError(acquireTimeoutMs) : err;
    }
  }

  async function request(body: Buffer | string, { signal, isReply }: RequestOptions = {}): Promise<Buffer> {
    const lease = await acquire({ signal });
    writeFrame(lease.socket, FrameType.DATA, body, buffers);
    const reply = await readReply(lease.socket, signal, isReply);
    lease.release();
    if (reply.type === FrameType.ERROR) throw new UpstreamError(reply.body.toString('utf8'));
    return Buffer.from(reply.body);
  }

  function whenEmpty(): Promise<void> {
    return all.size === 0 ? Promise.resolve() : new Promise((resolve) => emptied.push(resolve));
  }

  function shut(): void {
    closing = true;
    for (const waiter of waiters.splice(0)) waiter.refuse(new PoolClosedError());
  }

  return {
    acquire,
    request,
    get size() {
      return all.size;
    },
    get idle() {
      return idle.length;
    },
    get borrowed() {
      return lent.size;
    },
    get waiting() {
      return waiters.length;
    },
    leaks() {
      const now = performance.now();
      return [...lent]
        .map((conn) => ({ heldMs: Math.round(now - conn.lease!.since), stack: conn.lease!.stack }))
        .filter((leak) => leak.heldMs >= leakThresholdMs)
        .sort((a, b) => b.heldMs - a.heldMs);
    },
    async drain() {
      shut();
      for (const conn of idle.splice(0)) conn.socket.destroy();
      // Lent connections close as their leases end (giveBack sees `closing`).
      await whenEmpty();
    },
    async stop() {
      shut();
      idle.length = 0;
      for (const conn of all) conn.socket.destroy();
      await whenEmpty();
    },
  };
}

/** Reads one reply frame. Rejects if the connection closes, the bytes are not a frame, or `signal` aborts. */
function readReply(socket: net.Socket, signal: AbortSignal | undefined, isReply: (frame: Frame) => boolean = () => true): Promise<Frame> {
  return new Promise((resolve, reject) => {
    if (socket.destroyed) return reject(new Error('the connection is closed'));
    const decoder = new FrameDecoder();
    const onData = (chunk: Buffer) => {
      try {
        const reply = decoder.push(chunk).find(isReply);
        if (reply) finish(undefined, reply);
      } catch (err) {
        finish(err as Error);
      }
    };
    const onClose = () => finish(new Error('the upstream closed the connection before it replied'));
    const onAbort = () => finish(signal!.reason as Error);
    function finish(err: Error | undefined, frame?: Frame) {
      socket.off('data', onData);
      socket.off('close', onClose);
      signal?.removeEventListener('abort', onAbort);
      if (err) reject(err);
      else resolve(frame!);
    }
    if (signal?.aborted) return onAbort();
    socket.on('data', onData);
    socket.once('close', onClose);
    signal?.addEventListener('abort', onAbort, { once: true });
  });
}
