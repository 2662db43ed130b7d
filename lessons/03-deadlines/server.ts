// A request/response server where nothing waits for ever. Each request carries how long
// its caller will wait; the server works within that, and gives up on what has no future:
// a connection that went quiet, a frame that never finishes arriving, a reply nobody
// reads, work for a client that has already left.
//
// It speaks the workbook protocol with the codec of lesson 02. A request is a DATA frame
// whose body is a u32 big-endian budget in ms, then the request bytes. The reply is DATA
// with the result, or ERROR "TIMEOUT ..." when the budget ran out first. The protocol has
// no request ids, so one connection's requests are served one at a time, in order.
import net from 'node:net';
import { encodeFrame, FrameType, type Frame } from '../02-framing/codec.ts';
import { readFrames } from '../02-framing/read-frames.ts';
import { DeadlineSweep } from './deadlines.ts';

/**
 * The work a request asks for: typically a call to something downstream (a database,
 * another service). Stop when `signal` aborts. `budgetMs` is the time to promise the next
 * hop, which cannot see our signal.
 */
export type Work = (request: Buffer, signal: AbortSignal, budgetMs: number) => Promise<Buffer>;

export interface DeadlineOptions {
  /** 0 (the default) lets the OS pick a free port. */
  port?: number;
  work: Work;
  /** A connection with no bytes in or out for this long is closed (default 30 s). */
  idleMs?: number;
  /** A frame whose first byte has arrived must be complete within this (default 10 s). */
  frameMs?: number;
  /** Bytes handed to write() must keep reaching the kernel: none taken for this long, and the peer is cut (default 10 s). */
  writeMs?: number;
  /** The most time the server gives one request, whatever its budget says (default 60 s). */
  maxBudgetMs?: number;
  /** The timeout of a call to `work`: a slow downstream must not hold a request for ever (default 5 s). */
  workTimeoutMs?: number;
  maxFrameBytes?: number;
  /** Where the server says what it decided about a connection (default: nowhere). */
  log?: (line: string) => void;
}

export interface RequestCounters {
  /** Requests whose work was started. */
  started: number;
  /** Work that resolved, whether or not anyone was left to read the reply. */
  completed: number;
  /** Work that stopped because its signal aborted. */
  aborted: number;
  /** Work that failed for another reason. */
  failed: number;
}

export interface DeadlineServer {
  port: number;
  /** Connections open right now. */
  readonly connections: number;
  readonly requests: RequestCounters;
  stop(): Promise<void>;
}

export async function startDeadlineServer(options: DeadlineOptions): Promise<DeadlineServer> {
  const { work, log = () => {} } = options;
  const idleMs = options.idleMs ?? 30_000;
  const frameMs = options.frameMs ?? 10_000;
  const writeMs = options.writeMs ?? 10_000;
  const maxBudgetMs = options.maxBudgetMs ?? 60_000;
  const workTimeoutMs = options.workTimeoutMs ?? 5_000;

  const connections = new Set<net.Socket>();
  const requests: RequestCounters = { started: 0, completed: 0, aborted: 0, failed: 0 };
  // Aborted by stop(): every request in flight, on every connection, stops.
  const shutdown = new AbortController();
  // One sweep keeps the deadlines of every connection: idle, frame, write. Its tick is
  // their precision (each fires up to a tick or two late, never early): a tenth of the
  // shortest one.
  const sweep = new DeadlineSweep({ tickMs: Math.max(5, Math.floor(Math.min(idleMs, frameMs, writeMs) / 10)) });
  let nextId = 1;

  const server = net.createServer({ noDelay: true }, (socket) => {
    const id = nextId++;
    connections.add(socket);
    socket.on('error', () => {}); // 'close' follows and cleans up (lesson 01)

    socket.once('close', () => {
      connections.delete(socket);
    });

    // Requests waiting or running on this connection, served in order.
    let queue = Promise.resolve();
    let pending = 0;

    function send(frame: Buffer): void {
      if (!socket.writable) return; // closing: nobody to tell
      socket.write(frame); // the sweep's write deadline watches what the kernel has not taken
    }

    async function serve(request: Buffer, budgetMs: number): Promise<void> {
      // One signal for every reason to stop: the budget ran out, the server is shutting
      // down.
      const signal = AbortSignal.any([AbortSignal.timeout(budgetMs), shutdown.signal]);
      requests.started++;
      try {
        const result = await work(request, signal, workTimeoutMs);
        requests.completed++;
        send(encodeFrame(FrameType.DATA, result));
      } catch (err) {
        if (!signal.aborted) {
          requests.failed++;
          send(encodeFrame(FrameType.ERROR, `INTERNAL ${(err as Error).message}`));
          return;
        }
        requests.aborted++;
        // Only a spent budget gets an answer: otherwise there is no one left to read one.
        if ((signal.reason as Error | undefined)?.name === 'TimeoutError') {
          send(encodeFrame(FrameType.ERROR, `TIMEOUT budget of ${budgetMs} ms ran out`));
        }
      }
    }

    function onFrame(frame: Frame): void {
      if (frame.type === FrameType.PING) return send(encodeFrame(FrameType.PONG, frame.body));
      if (frame.type !== FrameType.DATA) return send(encodeFrame(FrameType.ERROR, `UNSUPPORTED frame type ${frame.type}`));
      if (frame.body.length < 4) {
        reader.stop();
        socket.end(encodeFrame(FrameType.ERROR, 'PROTOCOL a request starts with a u32 budget in ms'));
        return;
      }
      const budgetMs = Math.min(frame.body.readUInt32BE(0), maxBudgetMs);
      const request = frame.body.subarray(4);
      pending++;
      queue = queue.then(() => serve(request, budgetMs)).finally(() => void pending--);
    }

    const reader = readFrames(socket, onFrame, { maxFrameBytes: options.maxFrameBytes });

    // The deadlines of this connection, until it closes. When one passes, the sweep stops
    // the reader, sends ERROR "TIMEOUT <why>" and destroys the socket.
    sweep.watch(socket, {
      idleMs,
      frameMs,
      writeMs,
      // A request being worked on is not idleness: its own budget bounds it.
      busy: () => pending > 0,
      partialFrameBytes: () => reader.decoder.bufferedBytes,
      stopReading: () => reader.stop(),
      onExpired: (reason) => log(`connection ${id}: ${reason}`),
    });
  });

  await new Promise<void>((resolve) => server.listen(options.port ?? 0, '127.0.0.1', resolve));

  return {
    port: (server.address() as net.AddressInfo).port,
    get connections() {
      return connections.size;
    },
    requests,
    async stop() {
      // Work in flight stops first, then each connection is asked to finish.
      shutdown.abort(new Error('server shutting down'));
      const closed = new Promise<void>((resolve) => server.close(() => resolve()));
      for (const socket of connections) socket.end();
      await closed;
      sweep.stop();
    },
  };
}
