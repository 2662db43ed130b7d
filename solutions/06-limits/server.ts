// A request/response server that protects itself. Each DATA frame is a request; the
// handler's answer comes back as DATA. Three limits stand between the network and the
// work, and each one says BUSY when it refuses, so a client knows to come back later:
//
//   new connection ──▶ per-IP rate ──▶ connection cap ──▶ served      (admission.ts)
//   DATA request   ──▶ in-flight slot (bounded queue, bounded wait) ──▶ handler ──▶ DATA
import net from 'node:net';
import { encodeFrame, FrameType } from '../02-framing/codec.ts';
import { readFrames } from '../02-framing/read-frames.ts';
import { Admission } from './admission.ts';
import { Semaphore } from './semaphore.ts';

export interface LimitedServerOptions {
  /** 0 (the default) lets the OS pick a free port. */
  port?: number;
  /** Connections served at once. Default: what the open-file limit affords (fd-limit.ts). */
  maxConnections?: number;
  /** Requests worked on at once. Default: 64. */
  maxInFlight?: number;
  /** Requests that may wait for a free slot; past it, a request is answered BUSY at once. Default: 256. */
  maxQueued?: number;
  /** How long a request may wait for a slot before it is answered BUSY, in ms. Default: 1000. */
  queueTimeoutMs?: number;
  /** New connections one client IP may open in a burst... */
  connectBurst?: number;
  /** ...and how fast that allowance comes back, per second. Defaults: a burst of 20, then 5 per second. */
  connectPerSecond?: number;
  /** How long a refused client has to read BUSY and leave before we drop it, in ms. Default: 1000. */
  refuseGraceMs?: number;
  /** The work behind a request. It should stop when `signal` fires (the client left). */
  handler?: (body: Buffer, signal: AbortSignal) => Promise<Buffer | string>;
  /** The rate limit's clock, in ms (performance.now by default). */
  now?: () => number;
}

export interface LimitedServer {
  port: number;
  /** The connection cap in force. */
  maxConnections: number;
  /** Connections being served now (refused ones not counted). */
  readonly connections: number;
  /** Requests in the handler now, and the most there ever were. */
  readonly inFlight: number;
  readonly peakInFlight: number;
  /** Requests waiting for a slot now, and the most there ever were. */
  readonly queued: number;
  readonly peakQueued: number;
  stop(): Promise<void>;
}

export async function startLimitedServer(options: LimitedServerOptions = {}): Promise<LimitedServer> {
  const handler = options.handler ?? (async (body: Buffer) => body);
  const inflight = new Semaphore(options.maxInFlight ?? 64, options.maxQueued ?? 256);
  const queueTimeoutMs = options.queueTimeoutMs ?? 1000;
  // Who gets in, and what the others are told (admission.ts).
  const admission = new Admission(options);
  // The connections being served, so stop() can end them.
  const connections = new Set<net.Socket>();
  let peakInFlight = 0;
  let peakQueued = 0;

  const server = net.createServer({ noDelay: true }, (socket) => {
    // Refused (BUSY, then a close: nothing more to do), or admitted and counted until it closes.
    if (!admission.admit(socket)) return;

    connections.add(socket);
    // Fires when the connection ends, however it ends: stops its queued and running work.
    const gone = new AbortController();
    socket.once('close', () => {
      connections.delete(socket);
      gone.abort(new Error('client gone'));
    });
    socket.on('error', () => {}); // 'close' follows and cleans up (lesson 01)

    const reply = (type: number, body: Buffer | string) => {
      if (!socket.destroyed && socket.writable) socket.write(encodeFrame(type, body));
    };

    async function serve(body: Buffer): Promise<void> {
      let release;
      try {
        // Wait for a slot, but not for ever and not in an endless line: a full queue or a
        // long wait is answered BUSY now, while the client can still go elsewhere.
        const slot = inflight.acquire({ signal: gone.signal, timeoutMs: queueTimeoutMs });
        peakQueued = Math.max(peakQueued, inflight.waiting);
        release = await slot;
      } catch (err) {
        if (!gone.signal.aborted) reply(FrameType.BUSY, `in-flight: ${(err as Error).message}`);
        return;
      }
      try {
        peakInFlight = Math.max(peakInFlight, inflight.inUse);
        reply(FrameType.DATA, await handler(body, gone.signal));
      } catch (err) {
        reply(FrameType.ERROR, `INTERNAL ${(err as Error).message}`);
      } finally {
        release();
      }
    }

    readFrames(socket, (frame) => {
      if (frame.type === FrameType.DATA) void serve(frame.body);
      else if (frame.type === FrameType.PING) reply(FrameType.PONG, frame.body);
      else if (frame.type !== FrameType.HELLO) reply(FrameType.ERROR, `UNSUPPORTED frame type ${frame.type}`);
    });
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(options.port ?? 0, '127.0.0.1', () => {
      server.off('error', reject);
      resolve();
    });
  });
  // From now on 'error' means accept() failed in a way libuv could not absorb (it copes
  // with EMFILE by itself: see the README). The server keeps listening; without a
  // listener the error would end the process. Count or log it in production.
  server.on('error', () => {});

  return {
    port: (server.address() as net.AddressInfo).port,
    maxConnections: admission.maxConnections,
    get connections() {
      return admission.connections;
    },
    get inFlight() {
      return inflight.inUse;
    },
    get peakInFlight() {
      return peakInFlight;
    },
    get queued() {
      return inflight.waiting;
    },
    get peakQueued() {
      return peakQueued;
    },
    async stop() {
      const closed = new Promise<void>((resolve) => server.close(() => resolve()));
      for (const socket of connections) socket.end();
      admission.stop(); // refused clients still lingering
      await closed;
    },
  };
}
