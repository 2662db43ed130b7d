// A journal server: clients append numbered entries, the server makes each one durable
// and only then acknowledges it, and every stored entry is fanned out to the other
// connected clients (followers tailing the journal). Its promise to a client: an entry
// you got an ACK for is stored. Keeping that promise while the process is asked to stop
// is this lesson: the drain itself is in shutdown.ts, what it owes each client is here.
//
// Requests are DATA frames whose body is `<id> <payload>` (a decimal id, a space, any
// bytes). Replies: ACK `<id>` once stored; ERROR `SHUTTING_DOWN <id> ...` for a request
// read after shutdown began (it is not stored: send it to another server).
import net from 'node:net';
import { setMaxListeners } from 'node:events';
import { setTimeout as sleep } from 'node:timers/promises';
import { encodeFrame, FrameType } from '../02-framing/codec.ts';
import { readFrames } from '../02-framing/read-frames.ts';
import { drain, type Departing } from './shutdown.ts';

export interface Entry {
  id: number;
  payload: Buffer;
}

export interface JournalStats {
  connections: number;
  inflight: number;
  stored: number;
}

export interface JournalOptions {
  /** 0 (the default) lets the OS pick a free port. */
  port?: number;
  /** How long storage takes to make an entry durable (the default `persist`). */
  persistMs?: number;
  /**
   * Stands in for the disk: resolves once `entry` is durable. When `signal` aborts, the
   * server is shutting down and the write should finish as fast as it can.
   */
  persist?: (entry: Entry, signal: AbortSignal) => Promise<void>;
  /** How long stop() lets connections finish before it hangs up on the rest, in ms. Default: 10 000 (as main.ts's GRACE_MS). */
  graceMs?: number;
  /** With onStats: how often to report. */
  statsMs?: number;
  /** Called every statsMs with the server's counters (a metrics exporter, a log line). */
  onStats?: (stats: JournalStats) => void;
}

export interface JournalServer {
  port: number;
  /** Durable entries, in the order they were stored. An ACK is sent only after this. */
  log: Entry[];
  /** Requests being stored right now. */
  readonly inflight: number;
  /** Open connections. */
  readonly connections: number;
  stats(): JournalStats;
  /** Stops accepting, lets in-flight work finish, says goodbye, releases everything. */
  stop(): Promise<void>;
}

/** A client's connection; drain() (shutdown.ts) sees it as a Departing. */
interface Connection extends Departing {
  /** This connection's requests not yet answered. */
  inflight: number;
  /** settled() callers, woken when inflight is back to 0. */
  waiters: Array<() => void>;
}

export async function startJournalServer(options: JournalOptions = {}): Promise<JournalServer> {
  const persistMs = options.persistMs ?? 5;
  const graceMs = options.graceMs ?? 10_000;
  const log: Entry[] = [];
  const connections = new Set<Connection>();
  const inflight = new Set<Promise<void>>();

  // One signal for the whole server: aborted when shutdown begins. Handlers read it to
  // refuse new work, and storage reads it to hurry. One listener per request in flight
  // (each removed when its request is done), so the default limit of 10 does not apply.
  const shutdown = new AbortController();
  setMaxListeners(0, shutdown.signal);

  // The stand-in disk: writes are batched for persistMs; a shutdown cuts the wait short.
  const persist =
    options.persist ?? ((_entry: Entry, signal: AbortSignal) => sleep(persistMs, undefined, { signal }).catch(() => {}));

  const send = (conn: Connection, frame: Buffer) => {
    // After end() the socket takes no more writes; what was queued before still goes out.
    if (!conn.socket.writableEnded && !conn.socket.destroyed) conn.socket.write(frame);
  };

  const stats = (): JournalStats => ({ connections: connections.size, inflight: inflight.size, stored: log.length });

  function handleData(conn: Connection, body: Buffer) {
    const space = body.indexOf(0x20);
    const id = Number(body.subarray(0, space === -1 ? body.length : space).toString('latin1'));
    if (!Number.isSafeInteger(id)) {
      send(conn, encodeFrame(FrameType.ERROR, 'PROTOCOL a DATA body starts with a decimal id'));
      return;
    }
    // Once shutdown has begun, nothing new is started: refuse it, clearly, so the client
    // knows this entry was not stored and can send it elsewhere.
    if (shutdown.signal.aborted) {
      send(conn, encodeFrame(FrameType.ERROR, `SHUTTING_DOWN ${id} not stored: the server is shutting down`));
      return;
    }
    const entry: Entry = { id, payload: space === -1 ? Buffer.alloc(0) : body.subarray(space + 1) };
    conn.inflight++;
    const work = persist(entry, shutdown.signal)
      .then(() => {
        log.push(entry);
        send(conn, encodeFrame(FrameType.ACK, String(id)));
        // Followers hear of entries stored before the GOAWAY they were sent; after it they
        // resume from their last entry on another server.
        if (!shutdown.signal.aborted) {
          const copy = encodeFrame(FrameType.DATA, body);
          for (const other of connections) if (other !== conn) send(other, copy);
        }
      })
      .catch(() => {
        // Storage failed: no ACK, so the client will send the entry again.
      })
      .finally(() => {
        conn.inflight--;
        inflight.delete(work);
        // Its last reply is written: whoever waits for it to settle (a shutdown) may end it.
        if (conn.inflight === 0) for (const wake of conn.waiters.splice(0)) wake();
      });
    inflight.add(work);
  }

  // noDelay: every frame is written whole, so Nagle would only delay small replies.
  const server = net.createServer({ noDelay: true }, (socket) => {
    const conn: Connection = {
      socket,
      inflight: 0,
      waiters: [],
      goodbye: () => send(conn, encodeFrame(FrameType.GOAWAY, 'server shutting down')),
      // send() writes straight to the socket, so nothing is queued here: once every
      // request is answered, this connection has nothing more to send.
      settled: () => new Promise<void>((resolve) => (conn.inflight === 0 ? resolve() : conn.waiters.push(resolve))),
    };
    connections.add(conn);
    socket.on('error', () => {}); // 'close' follows and cleans up (lesson 01)
    socket.once('close', () => connections.delete(conn));

    readFrames(socket, (frame) => {
      if (frame.type === FrameType.DATA) handleData(conn, frame.body);
      else if (frame.type === FrameType.PING) send(conn, encodeFrame(FrameType.PONG, frame.body));
      else send(conn, encodeFrame(FrameType.ERROR, `UNSUPPORTED frame type ${frame.type}`));
    }, {
      onProtocolError: (reason) => {
        send(conn, encodeFrame(FrameType.ERROR, reason));
        socket.end();
      },
    });
  });

  let statsTimer: NodeJS.Timeout | undefined;
  if (options.onStats) {
    const report = options.onStats;
    statsTimer = setInterval(() => report(stats()), options.statsMs ?? 10_000);
  }

  await new Promise<void>((resolve) => server.listen(options.port ?? 0, '127.0.0.1', resolve));

  async function shutDown(): Promise<void> {
    // Handlers hurry and refuse new requests from now on (see handleData).
    shutdown.abort(new Error('server shutting down'));
    // Stop accepting, GOAWAY to every client, and let each connection go once its last
    // reply is written (shutdown.ts).
    await drain(server, () => connections, { graceMs });
    // The server's own timers go too: a stopped server leaves nothing running.
    clearInterval(statsTimer);
  }

  let stopping: Promise<void> | undefined;
  return {
    port: (server.address() as net.AddressInfo).port,
    log,
    get inflight() {
      return inflight.size;
    },
    get connections() {
      return connections.size;
    },
    stats,
    stop: () => (stopping ??= shutDown()),
  };
}
