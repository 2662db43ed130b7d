// Lesson 04: an in-band heartbeat notices a dead or half-open peer within a window of
// about two intervals, never drops a live one, and holds no timer once there is nobody
// to watch. Both ends run one: the server pings its clients (heartbeat.ts, one sweep for
// all connections), the client pings its server (client.ts).
import net from 'node:net';
import { EventEmitter } from 'node:events';
import { setTimeout as sleep } from 'node:timers/promises';
import { describe, test } from 'vitest';
import { startHeartbeatServer } from '#target/04-heartbeat/server.ts';
import { Heartbeat, type WatchOptions } from '#target/04-heartbeat/heartbeat.ts';
import { connectHeartbeatClient, type HeartbeatClientOptions } from '#target/04-heartbeat/client.ts';
import {
  check, describeLeaks, encode, eventually, fail, FrameType, gate, ioTurn, LeakProbe, LessonFailure, ReferenceDecoder, startFaultProxy, useHarness, waitUntil,
  typeName, withTimeline, type Frame, type TestClient,
} from '../runtime/harness/index.ts';

const h = useHarness('04');

const INTERVAL = 50;
/** The default window of both modules: two intervals. */
const WINDOW = 2 * INTERVAL;
/** Timers fire late on a busy machine, never early: upper bounds get this much room. */
const SLACK = 150;

/** How many PINGs a live client must survive: two whole windows. */
const KEEP_PINGS = 4;
/** How many frozen clients the server must drop together. */
const FROZEN = 8;

const ms = (n: number) => `${Math.round(n)} ms`;
const since = (t: number) => performance.now() - t;
const ago = (n: number) => (n < 1 ? 'less than 1 ms' : ms(n));

async function startServer(options: { intervalMs?: number; windowMs?: number } = {}) {
  return h.track(await startHeartbeatServer({ intervalMs: INTERVAL, ...options }));
}

// ---------------------------------------------------------------------------------------
// A test peer for the server: a recorded TestClient that answers every PING with a PONG,
// as a healthy client does, until the test sets `answering = false`.

interface Peer {
  client: TestClient;
  /** When each PING from the server arrived. */
  pingsAt: number[];
  /** When this peer last wrote anything. */
  lastWriteAt: number;
  answering: boolean;
  /** Decides when the n-th PING (from 1) is answered: call `pong()` now, later, or never. Default: at once. */
  onPing?: (n: number, pong: () => void) => void;
  send(type: number, body?: string): void;
}

async function connectPeer(port: number): Promise<Peer> {
  const client = await h.connect(port);
  const decoder = new ReferenceDecoder();
  const peer: Peer = {
    client,
    pingsAt: [],
    lastWriteAt: performance.now(),
    answering: true,
    send(type, body = '') {
      client.send(type, body);
      peer.lastWriteAt = performance.now();
    },
  };
  client.socket.on('data', (chunk: Buffer) => {
    let frames: Frame[];
    try {
      frames = decoder.push(chunk);
    } catch {
      return; // the TestClient records the protocol error itself
    }
    for (const frame of frames) {
      if (frame.type !== FrameType.PING) continue;
      peer.pingsAt.push(performance.now());
      const body = frame.body.toString();
      const pong = () => {
        if (peer.answering && !client.closed) peer.send(FrameType.PONG, body);
      };
      if (peer.onPing) peer.onPing(peer.pingsAt.length, pong);
      else pong();
    }
    if (frames.length) pinged.emit('ping');
  });
  return peer;
}

/** Who is told when any peer receives a PING (so a test can act on one, not poll for it). */
const pinged = new EventEmitter().setMaxListeners(0); // one listener per peer waiting

/** Resolves when `peer` receives its next PING, or fails once `within` ms pass without one. */
async function nextPing(peer: Peer, within = INTERVAL + SLACK + 500): Promise<void> {
  const seen = peer.pingsAt.length;
  await new Promise<void>((resolve, reject) => {
    const onPing = () => {
      if (peer.pingsAt.length === seen) return;
      done();
      resolve();
    };
    // Past the deadline, one I/O turn first (see ioTurn): a PING already waiting in the
    // kernel then resolves the wait, and this rejection does nothing.
    const timer = setTimeout(() => void ioTurn().then(() => {
      done();
      reject(new LessonFailure('The server stopped pinging.', {
        observed: `no PING in ${within} ms${peer.client.closed ? '; the server closed the connection' : ''}`,
        expected: `a PING every ${INTERVAL} ms`,
        idea: 'the server pings each client on a schedule; the answers are how it knows the client is there',
      }));
    }), within);
    const done = () => {
      clearTimeout(timer);
      pinged.off('ping', onPing);
    };
    pinged.on('ping', onPing);
  });
}

/** Waits for the server's `count`-th PING, or fails at once if the server closed the connection. */
async function waitForPings(peer: Peer, count: number, since0: number, interval = INTERVAL) {
  await eventually(() => {
    if (peer.client.closed) return;
    check(peer.pingsAt.length >= count, 'The server stopped pinging.', () => ({
      observed: `${peer.pingsAt.length} PING(s) ${ms(since(since0))} after connecting`,
      expected: `a PING every ${interval} ms: ${count} within ${ms(count * interval + SLACK)}`,
      idea: 'the server pings each client on a schedule; the answers are how it knows the client is there',
    }));
  }, { within: count * interval + SLACK + 1000 });
}

/** Waits until the server holds `count` connections (its connection handler has run for each). */
async function accepted(server: { readonly connections: number }, count: number) {
  await eventually(() => {
    check(server.connections === count, 'The server did not accept its clients.', {
      observed: `${server.connections} connection(s)`,
      expected: `${count}`,
      idea: 'a listening server accepts clients',
    });
  }, { within: 1000 });
}

function hasData(client: TestClient, body: string): boolean {
  return client.frames.some((f) => f.type === FrameType.DATA && f.body.toString() === body);
}

/** The peer sends one last DATA frame, waits for its echo (so the server has read it), and says nothing more. */
async function lastWords(peer: Peer): Promise<number> {
  peer.answering = false;
  peer.send(FrameType.DATA, 'last words');
  const sentAt = peer.lastWriteAt;
  await eventually(() => {
    check(!peer.client.closed, 'The server dropped a client that had answered every PING.', {
      observed: `the connection closed before the echo of its DATA frame; PINGs at ${peer.pingsAt.map((t) => ms(t - peer.pingsAt[0]!)).join(', ')}, each answered`,
      expected: 'the client kept: it answered every PING until it sent this frame',
      idea: 'a client is dead only once it has been silent for the whole window',
    });
    check(hasData(peer.client, 'last words'), 'The server did not echo a DATA frame.', {
      observed: `frames received: ${peer.client.frames.length}`,
      expected: 'the DATA frame back',
      idea: 'the heartbeat runs alongside the business traffic, not instead of it',
    });
  }, { within: 1000 });
  return sentAt;
}

// ---------------------------------------------------------------------------------------
// A scripted server for the client's tests: it answers PINGs (at once, late, or only the
// first few), may ping the client itself, and records what it sends and when it closed.

interface ScriptOptions {
  /** The server pings the client every this many ms (default: never). */
  pingEveryMs?: number;
  /** The server answers the client's PINGs after this many ms (default: at once). */
  pongDelayMs?: number;
  /** After this many PONGs the server goes silent, keeping the connection open. */
  silentAfter?: number;
  /** The server never reads (a frozen process whose kernel buffers fill up). */
  neverRead?: boolean;
}

interface Scripted {
  port: number;
  /** Frames received from the client. */
  frames: Frame[];
  /** When each PING from the client arrived. */
  pingsAt: number[];
  /** Frames written to the client, and when the last one went. */
  sent: number;
  lastWriteAt: number;
  /** When the client's connection closed (undefined while open). */
  closedAt: number | undefined;
  send(type: number, body?: string): void;
  /** Writes raw bytes (a piece of a frame, say). */
  raw(bytes: Buffer): void;
  stop(): Promise<void>;
}

async function startScripted(options: ScriptOptions = {}): Promise<Scripted> {
  const timers = new Set<NodeJS.Timeout>();
  let conn: net.Socket | undefined;
  const write = (type: number, body = '') => {
    if (!conn || conn.destroyed || conn.writableEnded) return;
    conn.write(encode(type, body));
    state.sent += 1;
    state.lastWriteAt = performance.now();
  };
  const server = net.createServer({ noDelay: true }, (socket) => {
    conn = socket;
    socket.on('error', () => {});
    if (options.neverRead) socket.pause();
    socket.once('close', () => {
      state.closedAt = performance.now();
      for (const t of timers) clearTimeout(t);
      timers.clear();
    });
    if (options.pingEveryMs) timers.add(setInterval(() => write(FrameType.PING), options.pingEveryMs));
    const decoder = new ReferenceDecoder();
    let pongs = 0;
    socket.on('data', (chunk: Buffer) => {
      for (const frame of decoder.push(chunk)) {
        state.frames.push(frame);
        if (frame.type === FrameType.DATA) write(FrameType.DATA, frame.body.toString());
        if (frame.type !== FrameType.PING) continue;
        state.pingsAt.push(performance.now());
        if (options.silentAfter !== undefined && pongs >= options.silentAfter) continue;
        pongs += 1;
        const body = frame.body.toString();
        if (!options.pongDelayMs) write(FrameType.PONG, body);
        else {
          const t = setTimeout(() => (timers.delete(t), write(FrameType.PONG, body)), options.pongDelayMs);
          timers.add(t);
        }
      }
    });
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const state: Scripted = {
    port: (server.address() as net.AddressInfo).port,
    frames: [],
    pingsAt: [],
    sent: 0,
    lastWriteAt: performance.now(),
    closedAt: undefined,
    send: write,
    raw(bytes) {
      if (!conn || conn.destroyed || conn.writableEnded) return;
      conn.write(bytes);
      state.lastWriteAt = performance.now();
    },
    async stop() {
      const closed = new Promise<void>((resolve) => server.close(() => resolve()));
      conn?.destroy();
      await closed;
    },
  };
  return h.track(state);
}

/** The lesson's client, closed after the test; `ended()` says why it hung up, if it has. */
async function connectClient(port: number, options: HeartbeatClientOptions = {}) {
  const client = await connectHeartbeatClient(port, { intervalMs: INTERVAL, ...options });
  h.defer(() => client.close());
  let why: string | undefined;
  let at: number | undefined;
  void client.closed.then((reason) => ((why = reason), (at = performance.now())));
  return { client, ended: () => why, endedAt: () => at };
}

/** Replaces net.Socket#setKeepAlive with a recording wrapper for this test. */
function recordKeepAlive() {
  const calls: Array<{ enable: boolean; delay: number | undefined }> = [];
  const original = net.Socket.prototype.setKeepAlive;
  net.Socket.prototype.setKeepAlive = function (this: net.Socket, enable?: boolean, delay?: number) {
    calls.push({ enable: enable ?? false, delay });
    return original.call(this, enable, delay);
  };
  h.defer(() => void (net.Socket.prototype.setKeepAlive = original));
  return calls;
}

/** Records every socket that connects out to `port` from now until the test ends (the lesson's client keeps its socket to itself). */
function watchConnecting(port: number): net.Socket[] {
  const sockets: net.Socket[] = [];
  const proto = net.Socket.prototype as { connect: (...args: unknown[]) => net.Socket };
  const connect = proto.connect;
  proto.connect = function (this: net.Socket, ...args) {
    // net.connect() passes its arguments normalized, as an array.
    const first = Array.isArray(args[0]) ? (args[0] as unknown[])[0] : args[0];
    const target = typeof first === 'object' && first !== null ? (first as { port?: unknown }).port : first;
    if (Number(target) === port) sockets.push(this);
    return connect.apply(this, args);
  };
  h.defer(() => void (proto.connect = connect));
  return sockets;
}

/**
 * heartbeat.ts on its own, as the gateway (lesson 09) uses it: a bare server that reads its
 * connections and hands each one to `heartbeat.watch()`, with the options `watchOptions`
 * gives for it. Stopping it stops the heartbeat first, as a server does.
 */
async function startWatched(heartbeat: Heartbeat, watchOptions: (socket: net.Socket) => WatchOptions = () => ({})) {
  const sockets: net.Socket[] = [];
  const server = net.createServer({ noDelay: true }, (socket) => {
    sockets.push(socket);
    socket.on('error', () => {});
    heartbeat.watch(socket, watchOptions(socket));
    socket.resume(); // a server reads its clients (and so hears them leave)
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  return h.track({
    port: (server.address() as net.AddressInfo).port,
    /** The server's side of the connection from `client`. */
    side: (client: TestClient) => sockets.find((s) => s.remotePort === client.port),
    async stop() {
      heartbeat.stop();
      const closed = new Promise<void>((resolve) => server.close(() => resolve()));
      for (const socket of sockets) socket.destroy();
      await closed;
    },
  });
}

/** The idea behind a timer that outlived its connection: unref'd (so still scheduled), or never cleared. */
function timerIdea(leaks: { refTimers: number; resources: Map<string, number> }, otherwise: string): string {
  const timers = leaks.resources.get('Timeout') ?? 0;
  if (timers > 0 && leaks.refTimers === 0) {
    return "unref() is not clearInterval(): an unref'd timer no longer keeps the process alive, but it still fires every interval for ever and keeps what it watches in memory; clear it when that ends (the sweep when its last connection leaves and in stop(), a connection's own timer in 'close')";
  }
  return otherwise;
}

// ---------------------------------------------------------------------------------------

describe('baseline: the server pings, answers and echoes', () => {
  test('the server pings each client every interval', async () => {
    // A window of four intervals: this test is about the pace of the PINGs. A correct server
    // that measures silence by the clock alone drops a live client if this process (its
    // clients live here too) is off the CPU for longer than the window's spare interval;
    // the test that keeps live clients gives that spare its own margin.
    const server = await startServer({ windowMs: 4 * INTERVAL });
    const t0 = performance.now();
    const peer = await connectPeer(server.port);
    await waitForPings(peer, 5, t0);
    check(!peer.client.closed, 'The server dropped a client that answered every PING.', {
      observed: `the connection closed ${ms(peer.client.closedAfterMs ?? since(t0))} after connecting, after ${peer.pingsAt.length} PING(s), each answered at once`,
      expected: `still connected, and a PING every ${INTERVAL} ms`,
      idea: 'a client that answers is alive: the heartbeat must never drop it',
    });
    // Measured between PINGs, not from connecting: a server that sweeps all its clients on
    // one shared timer sends the first PING any time within the first interval. The median
    // of four gaps: on a busy machine a PING read late makes one gap short and the one
    // before it long, while a server that pings too often makes most of them short.
    const gaps = peer.pingsAt.slice(1, 5).map((t, i) => t - peer.pingsAt[i]!).sort((a, b) => a - b);
    const gap = (gaps[1]! + gaps[2]!) / 2;
    check(gap >= 0.8 * INTERVAL, 'The server pings faster than its interval.', {
      observed: `PINGs ${ms(gap)} apart (the median of the first four gaps: ${gaps.map(ms).join(', ')})`,
      expected: `one per interval, ${INTERVAL} ms apart (give or take the timers)`,
      idea: 'one PING per interval: the heartbeat costs little, however many clients there are',
    });
  });

  test('a PING from the client is answered with PONG', async () => {
    const server = await startServer();
    const peer = await connectPeer(server.port);
    peer.send(FrameType.PING, 'are you there?');
    await eventually(() => {
      const pong = peer.client.frames.find((f) => f.type === FrameType.PONG);
      check(pong?.body.toString() === 'are you there?', 'The server did not answer our PING.', {
        observed: pong ? `a PONG with body "${pong.body}"` : `no PONG among ${peer.client.frames.length} frame(s)`,
        expected: 'PONG "are you there?": the answer echoes the PING\'s body',
        idea: 'clients run a heartbeat too; a server answers PING with PONG whatever else it is doing',
      });
    }, { within: 1000 });
  });

  test('DATA is echoed while the heartbeat runs', async () => {
    const server = await startServer();
    const peer = await connectPeer(server.port);
    peer.send(FrameType.DATA, 'hello');
    await eventually(() => {
      check(hasData(peer.client, 'hello') && !peer.client.protocolError, 'DATA did not come back.', {
        observed: `frames: ${peer.client.frames.length}${peer.client.protocolError ? `, then bytes that are not a frame: ${peer.client.protocolError.message}` : ''}`,
        expected: 'DATA "hello", echoed, between the PINGs',
        idea: 'PING and PONG are ordinary frames in the same stream as the business traffic',
      });
    }, { within: 1000 });
  });

  test('live clients are kept: one that only answers PINGs, one whose answer is late once, one that uploads and answers late', async () => {
    // Twice the usual interval, so that a correct server measuring silence by the clock
    // alone, without a guard against its own stalls, keeps a margin of 50 ms or more for
    // every client however busy the machine (these clients share the server's process).
    const LIVE_INTERVAL = 2 * INTERVAL;
    const server = await startServer({ intervalMs: LIVE_INTERVAL });
    const t0 = performance.now();
    const quiet = await connectPeer(server.port);
    const busy = await connectPeer(server.port);
    // One hiccup (a GC pause in the client): it answers the 1st PING half an interval late,
    // and the 2nd only when the 3rd arrives. Its longest silence is 1.5 intervals, well
    // inside the window, but it spans one whole interval from PING to PING.
    const hiccup = await connectPeer(server.port);
    let held: (() => void) | undefined;
    let hiccupClosedAt = Infinity;
    hiccup.client.socket.once('close', () => (hiccupClosedAt = performance.now()));
    const late = new Set<NodeJS.Timeout>();
    h.defer(() => late.forEach(clearTimeout));
    hiccup.onPing = (n, pong) => {
      if (n === 1) late.add(setTimeout(pong, LIVE_INTERVAL / 2));
      else if (n === 2) held = pong;
      else {
        held?.();
        held = undefined;
        pong();
      }
    };
    // An upload: DATA twice per interval, while the PONGs wait behind it.
    busy.answering = false;
    let chunks = 0;
    const upload = setInterval(() => {
      if (busy.client.closed) return;
      busy.send(FrameType.DATA, 'chunk');
      chunks += 1;
    }, INTERVAL / 2);
    h.defer(() => clearInterval(upload));
    await waitForPings(quiet, KEEP_PINGS, t0, LIVE_INTERVAL);
    await waitForPings(busy, KEEP_PINGS, t0, LIVE_INTERVAL);
    await waitForPings(hiccup, 3, t0, LIVE_INTERVAL);
    clearInterval(upload);
    check(!quiet.client.closed, 'The server dropped a client that answered every PING.', {
      observed: `the connection closed ${ms(quiet.client.closedAfterMs ?? since(t0))} after connecting; the client had answered ${quiet.pingsAt.length} PING(s), each at once`,
      expected: `still connected after ${KEEP_PINGS * LIVE_INTERVAL} ms: a client that answers is alive, even if it has nothing else to say`,
      idea: `the window (${2 * LIVE_INTERVAL} ms) spans two intervals, so a live client always has a PONG inside it`,
    });
    check(!hiccup.client.closed, 'The server dropped a client whose answer came late once.', () => ({
      observed: `the connection closed ${ms(hiccupClosedAt - t0)} after connecting, ${ago(hiccupClosedAt - hiccup.lastWriteAt)} after the client's last PONG; it had answered PING 1 ${LIVE_INTERVAL / 2} ms late and was holding its answer to PING 2 until PING 3 came (${hiccup.pingsAt.length} PING(s) received)`,
      expected: `still connected: its longest silence, ${ms(1.5 * LIVE_INTERVAL)}, is well inside the window (${2 * LIVE_INTERVAL} ms)`,
      idea: `a window of one interval ("nothing since my last PING: gone") leaves no room for one late answer, so a GC pause or a busy event loop gets a live client dropped. The window spans two intervals: drop a client once it has been silent that long`,
    }));
    check(!busy.client.closed, 'The server dropped a client that was sending DATA all along.', {
      observed: `the connection closed ${ms(busy.client.closedAfterMs ?? since(t0))} after connecting; the client had sent ${chunks} DATA frame(s), one every ${INTERVAL / 2} ms, and answered none of ${busy.pingsAt.length} PING(s) yet`,
      expected: 'still connected: a client whose bytes keep arriving is alive',
      idea: 'any byte from the peer proves it is alive; a PONG is merely what an idle peer sends',
    });
    for (const _ of busy.pingsAt) busy.send(FrameType.PONG); // the upload is done: the PONGs go out
  });

  test('a client uploading one large frame slowly is kept, though no frame completes for two windows', async () => {
    const server = await startServer();
    const peer = await connectPeer(server.port);
    // One DATA frame, written a piece every half interval for more than two windows, by a
    // client too busy to answer PINGs: until its last piece, no whole frame arrives.
    peer.answering = false;
    const PIECES = 10;
    const body = Buffer.alloc(PIECES * 4096 - 5, 'u');
    const frame = encode(FrameType.DATA, body);
    const pieceBytes = frame.length / PIECES;
    let sent = 0;
    const t0 = performance.now();
    const done = gate();
    let closedAt = Infinity;
    peer.client.socket.once('close', () => (closedAt = performance.now()));
    const upload = setInterval(() => {
      if (peer.client.closed || sent === PIECES) return;
      peer.client.socket.write(frame.subarray(sent * pieceBytes, (sent + 1) * pieceBytes));
      peer.lastWriteAt = performance.now();
      sent += 1;
      if (sent === PIECES) done.open();
    }, INTERVAL / 2);
    h.defer(() => clearInterval(upload));
    await eventually(() => {
      if (peer.client.closed) return;
      check(sent === PIECES, 'The upload is not over yet.', {
        observed: `${sent} of ${PIECES} pieces written`,
        expected: `all ${PIECES}, one every ${INTERVAL / 2} ms`,
        idea: 'the test client writes one piece of the frame every half interval',
      });
    }, { within: PIECES * INTERVAL + SLACK + 1000 });
    check(!peer.client.closed, 'The server dropped a client that was uploading all along.', () => ({
      observed: `the connection closed ${ms(closedAt - t0)} into the upload: ${sent} of ${PIECES} pieces of one ${frame.length}-byte DATA frame had been written, one every ${INTERVAL / 2} ms, the last ${ago(closedAt - peer.lastWriteAt)} before; no PING answered (${peer.pingsAt.length} received)`,
      expected: `still connected after ${ms((PIECES - 1) * INTERVAL / 2)} of upload, longer than two windows (${WINDOW} ms): bytes kept arriving the whole time`,
      idea: 'any byte counts as a sign of life, not only a whole frame: a big frame arriving slowly proves the peer is alive',
    }));
    await done.opened;
    clearInterval(upload);
    const echoed = () => peer.client.frames.find((f) => f.type === FrameType.DATA);
    const echoCheck = () => {
      const echo = echoed();
      check(!peer.client.closed && echo?.body.length === body.length, 'The large DATA frame did not come back.', () => ({
        observed: peer.client.closed
          ? `the server closed the connection ${ago(closedAt - peer.lastWriteAt)} after the frame's last piece`
          : echo ? `a DATA frame of ${echo.body.length} bytes` : `no DATA among ${peer.client.frames.length} frame(s)`,
        expected: `the ${body.length}-byte DATA frame echoed, on a connection still open`,
        idea: 'a client that kept sending bytes is alive, and its frame is served once it completes',
      }));
    };
    await eventually(() => (peer.client.closed ? undefined : echoCheck()), { within: 1000 });
    echoCheck();
    for (const _ of peer.pingsAt) peer.send(FrameType.PONG); // the upload is done: the PONGs go out
  });

  test('a client that says goodbye is forgotten, and the idle server holds no timer', async () => {
    const server = await startServer();
    const probe = new LeakProbe();
    const peer = await connectPeer(server.port);
    await accepted(server, 1);
    peer.client.end();
    await peer.client.waitClosed('the server closes its side after our FIN');
    await eventually(() => {
      check(server.connections === 0, 'The server still counts a client that said goodbye.', {
        observed: `${server.connections} connection(s) 300 ms after the only client ended`,
        expected: '0',
        idea: "a connection leaves the server's set when it closes",
      });
    }, { within: 300 });
    const leaks = await probe.settle(300);
    check(leaks.resources.size === 0, 'Something of a client that said goodbye is still alive.', {
      observed: `still alive beyond the running server: ${describeLeaks(leaks)}`,
      expected: 'nothing: no socket, and no heartbeat timer, since there is nobody left to ping',
      idea: timerIdea(leaks, "a connection leaves the heartbeat when it closes, and a sweep with nobody left to watch is cleared: an idle server holds no timer (the next connection starts a new one)"),
    });
  });

  test('a stopped server leaves no timer behind', async () => {
    const probe = new LeakProbe();
    const server = await startServer();
    const peer = await connectPeer(server.port);
    await nextPing(peer); // the heartbeat is running
    await server.stop();
    await peer.client.waitClosed('stop() ends the connection');
    const leaks = await probe.settle(300);
    check(!leaks.resources.has('Timeout'), 'A timer of the server outlived stop().', {
      observed: `stop() resolved and its only client is gone, yet still alive: ${describeLeaks(leaks)}`,
      expected: 'nothing: no sweep, and no timer of any connection',
      idea: timerIdea(leaks, "whatever timer the heartbeat runs dies with what it watches: the sweep when its last connection leaves and in stop(), a connection's own timer in 'close'"),
    });
  });
});

describe('noticing a dead peer: the server', () => {
  test('TCP keepalive is never given a sub-second delay', async () => {
    const calls = recordKeepAlive();
    const server = await startServer();
    await connectPeer(server.port);
    await accepted(server, 1);
    const bad = calls.find((c) => c.enable && c.delay !== undefined && c.delay > 0 && c.delay < 1000);
    check(bad === undefined, 'TCP keepalive was switched on with a delay under one second.', () => ({
      observed: `socket.setKeepAlive(true, ${bad!.delay}) on the new connection. Node turns the delay into whole seconds: ${bad!.delay} ms becomes TCP_KEEPIDLE=0, Linux refuses 0 (EINVAL), Node ignores the error, and the kernel default stays: the first probe goes out after 7200 s of silence`,
      expected: 'no keepalive, or a delay in whole seconds (>= 1000 ms) for the OS to clean up after dead hosts; liveness comes from the heartbeat',
      idea: "keepalive probes are answered by the peer's kernel, even when its process is frozen, and by default start after two hours: they are no liveness check",
    }));
  });

  test('silent clients are dropped once silent for the window: frozen, half-open, never heard from, among live ones', async () => {
    const accepted = h.watchAccepted().sockets;
    // Eleven clients on one timer, and the server in this test's own process: on a loaded
    // machine that process can be off the CPU for longer than 50 ms, and a live client's
    // answers then wait in the kernel while the check runs late. So this one test runs at a
    // 125 ms interval (window 250 ms).
    const INTERVAL = 125;
    const WINDOW = 2 * INTERVAL;
    const server = await startServer({ intervalMs: INTERVAL });
    const proxy = h.track(await startFaultProxy({ upstreamPort: server.port }));
    const probe = new LeakProbe();
    // A live client that answers every PING throughout: each client has its own silence.
    const live = await connectPeer(server.port);
    // One that connects and never sends a byte (it died right after the handshake).
    const muteSince = performance.now();
    const mute = await h.connect(server.port);
    mute.socket.pause();
    // Its port now: on a slow machine it may be dropped (and its socket gone) before the
    // others have said their last words.
    const mutePort = mute.port;
    // Several frozen ones (their process reads and writes nothing more, but their kernel
    // still ACKs our PINGs), and one cut off (the path dies: no byte, FIN or RST gets
    // through, either way). Many, because a check that stops at the first dead client is
    // right for one and wrong for many.
    const frozen = await Promise.all(Array.from({ length: FROZEN }, () => connectPeer(server.port)));
    const cutOff = await connectPeer(proxy.port);
    // After the test, stop the proxy first: both sides see FIN, nothing waits on the blackhole.
    h.defer(() => proxy.stop());
    h.defer(() => frozen.forEach((peer) => peer.client.socket.resume()));
    await withTimeline(proxy, async () => {
      // Each says its last words half an interval after a PING, then falls silent.
      const lastAt = await Promise.all([...frozen, cutOff].map(async (peer) => {
        await nextPing(peer);
        await sleep(INTERVAL / 2);
        return lastWords(peer);
      }));
      for (const peer of frozen) peer.client.socket.pause();
      proxy.add({ kind: 'blackhole' });

      const serverSide = (port: number) => accepted.find((a) => a.localPort === server.port && a.remotePort === port);
      const direct = new Set([live, ...frozen].map((p) => p.client.port).concat(mutePort));
      const silent = [
        { name: 'the one that never sent a byte', mark: 'connecting', since: muteSince, side: serverSide(mutePort) },
        ...frozen.map((peer, i) => ({ name: `frozen #${i + 1}`, mark: 'its last byte', since: lastAt[i]!, side: serverSide(peer.client.port) })),
        { name: 'the one behind the blackhole', mark: 'its last byte', since: lastAt[FROZEN]!, side: accepted.find((a) => a.localPort === server.port && !direct.has(a.remotePort ?? -1)) },
      ];
      check(silent.every((s) => s.side !== undefined), 'The test lost track of a connection.', {
        observed: `${silent.filter((s) => s.side).length} of ${silent.length} server-side sockets found`,
        expected: 'one per silent client',
        idea: 'the test watches the sockets the server accepts',
      });
      const lastDeadline = Math.max(...silent.map((s) => s.since)) + WINDOW + INTERVAL + SLACK;
      // Wait until every silent client's socket is closed on the server's side, or the last
      // deadline has passed; a live client dropped meanwhile ends the wait at once.
      await waitUntil(() => live.client.closed || silent.every((s) => s.side!.closedAt !== undefined), lastDeadline - performance.now());
      const now = performance.now();
      const row = (s: (typeof silent)[number]) => {
        const closedAt = s.side!.closedAt;
        if (closedAt !== undefined) return `${s.name}: dropped ${ms(closedAt - s.since)} after ${s.mark}`;
        if (s.side!.socket.writableEnded) return `${s.name}: sent FIN (end()), socket still open ${ms(now - s.since)} after ${s.mark}`;
        return `${s.name}: still connected ${ms(now - s.since)} after ${s.mark}`;
      };
      const table = silent.map(row).join('\n');

      check(!live.client.closed, 'The server dropped a client that answered every PING.', {
        observed: `the live client's connection closed ${ms(live.client.closedAfterMs ?? 0)} after it connected; it had answered all ${live.pingsAt.length} PING(s) at once. Meanwhile:\n${table}`,
        expected: 'the live client kept, the silent ones dropped',
        idea: 'each client has its own silence: one dead client says nothing about the others',
      });
      const open = silent.filter((s) => s.side!.closedAt === undefined);
      const ended = open.filter((s) => s.side!.socket.writableEnded);
      if (ended.length) {
        fail(`The server hung up on ${ended.length} silent client(s) with end(), and their sockets are still open.`, {
          observed: table,
          expected: `each socket destroyed between ${WINDOW} and ${WINDOW + INTERVAL} ms after the client's last byte`,
          idea: "end() is a polite goodbye: it sends FIN, then waits for the peer's FIN before the socket closes. A dead or half-open peer never answers, so the socket (its fd, its memory, its place in the count) stays for ever. A peer presumed dead gets destroy(), which releases the socket at once",
        });
      }
      if (open.length === silent.length) {
        fail(`The server still holds all ${silent.length} clients that went silent.`, {
          observed: `${table}\n(one live client answered every PING all along; see the timeline: the server kept writing PINGs into the blackhole)`,
          expected: `each dropped between ${WINDOW} and ${WINDOW + INTERVAL} ms after the last byte it sent (window ${WINDOW} ms, interval ${INTERVAL} ms)`,
          idea: "no FIN or RST will come, so only the server's own clock can tell: note when you last received a byte from each client (your own writes prove nothing: that is why socket.setTimeout(), which counts them, never fires while you ping, and a PING write succeeds while the peer's kernel ACKs), and check it on your own timer",
        });
      }
      if (open.length === 1 && open[0]!.mark === 'connecting') {
        fail('The server never drops a client that never sent a byte.', {
          observed: table,
          expected: `the client that connected and said nothing dropped between ${WINDOW} and ${WINDOW + INTERVAL} ms after it connected, like the others`,
          idea: 'silence counts from the moment the connection opens: a client that died right after the handshake must be dropped too, so start the clock (and the pinging) at connect, not at the first frame',
        });
      }
      if (open.length) {
        fail(`The server dropped ${silent.length - open.length} of ${silent.length} silent clients in time, not the other ${open.length}.`, {
          observed: table,
          expected: `each dropped between ${WINDOW} and ${WINDOW + INTERVAL} ms after its last byte, all of them`,
          idea: "every connection's silence is checked on every tick, each against its own clock: one dead client must not end the check of the others (in a loop over the connections, `continue`, not `return`), and no client is exempt",
        });
      }
      const early = silent.filter((s) => s.side!.closedAt! - s.since < WINDOW - 2);
      check(early.length === 0, `The server dropped ${early.length} silent client(s) before the window was over.`, {
        observed: table,
        expected: `none sooner than the window, ${WINDOW} ms, after its last byte`,
        idea: `a peer is dead once it has been silent for the whole window (${WINDOW} ms, two intervals), not before: a window of one interval ("nothing since my last PING") drops live peers whose answer is a little late`,
      });
    });

    // The live client says goodbye; then nothing of any connection may be left running.
    live.client.end();
    await eventually(() => {
      check(server.connections === 0, 'The server still counts clients it dropped.', {
        observed: `${server.connections} connection(s) after every silent client was dropped and the live one said goodbye`,
        expected: '0',
        idea: "a connection leaves the server's set when it closes",
      });
    }, { within: 300 });
    let leaks = probe.leaks();
    await waitUntil(() => !(leaks = probe.leaks()).resources.has('Timeout'), 300);
    check(!leaks.resources.has('Timeout'), 'The heartbeat still runs after every client it watched has gone.', {
      observed: `every connection is closed (${FROZEN + 2} dropped by the heartbeat, 1 said goodbye), yet still alive: ${describeLeaks(leaks)}`,
      expected: 'no timer: a connection leaves the heartbeat when it closes, however it closes, and with nobody left to watch the sweep stops',
      idea: timerIdea(leaks, "'end' and 'error' do not fire when the heartbeat itself calls destroy(); 'close' fires on every path, your own destroy() included: forget the connection there"),
    });
  });

  test('a client that froze while the server was sending to it is dropped too', async () => {
    const watch = h.watchAccepted();
    const server = await startServer();
    const peer = await connectPeer(server.port);
    // The client uploads 8 MB, then freezes: it reads nothing (it never read the echoes
    // either), so the echoes fill both kernel buffers and the rest waits in the server.
    peer.client.socket.pause();
    const piece = encode(FrameType.DATA, Buffer.alloc(1_000_000, 0x66));
    const TOTAL = 8 * piece.length;
    for (let i = 0; i < 8; i++) peer.client.socket.write(piece);
    let side: ReturnType<typeof watch.of>;
    await eventually(() => {
      side = watch.of(peer.client.port);
      if (side?.closedAt !== undefined) {
        fail('The server dropped a client while its upload was still arriving.', {
          observed: `the server closed the connection after reading ${side.socket.bytesRead} of the ${TOTAL} bytes the client was sending`,
          expected: 'the connection kept while bytes arrive',
          idea: 'any byte received is a sign of life; and if your own process stalled, the bytes that arrived meanwhile are still unread when your timer fires: the stall guard (two PINGs unanswered) covers that',
        });
      }
      check(side !== undefined && side.socket.bytesRead >= TOTAL, 'The server did not read the upload.', {
        observed: `${side?.socket.bytesRead ?? 0} of ${TOTAL} bytes read by the server`,
        expected: 'all of it',
        idea: 'the server reads whatever its clients send',
      });
    }, { within: 3000 });
    const lastAt = performance.now();
    const queued = side!.socket.writableLength;
    await waitUntil(() => side!.closedAt !== undefined, WINDOW + INTERVAL + SLACK + 300);
    if (side!.closedAt === undefined) {
      if (side!.ended) {
        fail('The server hung up on a frozen client with end(), and its socket is still open.', {
          observed: `the client froze ${ms(since(lastAt))} ago with ${Math.round(queued / 1e6)} MB of echoes queued for it; the server called end(), but its FIN waits behind those bytes, which the client never reads: the socket is still open`,
          expected: `the server's socket destroyed between ${WINDOW} and ${WINDOW + INTERVAL} ms after the client's last byte`,
          idea: "end() queues a FIN behind everything not yet sent, and a frozen peer with a full buffer takes none of it: the FIN never leaves, and 'finish' (end()'s callback) never comes. A peer presumed dead gets destroy(), which also drops the queue",
        });
      }
      fail('The server kept a client that froze while the server was sending to it.', {
        observed: `the client's last byte reached the server ${ms(since(lastAt))} ago; ${Math.round(queued / 1e6)} MB of echoes were then queued for it (write() returning false), and the server still holds the connection`,
        expected: `dropped between ${WINDOW} and ${WINDOW + INTERVAL} ms after its last byte, like any silent client`,
        idea: "a full send buffer is exactly what a frozen client looks like: the silence check must run on every tick, queued writes or not (do not skip the tick, or count only the PINGs write() accepted), and the drop must not wait for the queue to drain",
      });
    }
  });

  test('a client that connects after every earlier client has left is watched too', async () => {
    const server = await startServer();
    const first = await connectPeer(server.port);
    await nextPing(first);
    first.client.end();
    await first.client.waitClosed('the server closes its side after our FIN');
    await accepted(server, 0);
    // A new client, on a server whose clients have all gone: it is pinged, and if it says
    // nothing, dropped.
    const t0 = performance.now();
    const later = await connectPeer(server.port);
    later.answering = false;
    await waitUntil(() => later.client.closed, WINDOW + INTERVAL + SLACK + 300);
    check(later.client.closed, 'A client that came after the others had left was never watched.', {
      observed: `the first client came and went; a second one connected ${ms(since(t0))} ago and has received ${later.pingsAt.length} PING(s), answered none, and is still connected`,
      expected: `pinged every ${INTERVAL} ms and, silent, dropped between ${WINDOW} and ${WINDOW + INTERVAL} ms after it connected`,
      idea: later.pingsAt.length === 0
        ? 'the heartbeat must run for every connection, the second wave as much as the first: a shared sweep that is stopped when the last client leaves must start again with the next one (forget the cleared handle)'
        : 'every connection is checked on every tick, however many came and went before it',
    });
  });

  test('a client that resets leaves the heartbeat', async () => {
    // Slow pings and a long window: this test is about the reset path alone. The
    // heartbeat must not drop the client first, and no PING may be on its way when the
    // reset lands: a write that meets a reset takes the error, and the next read then
    // reports a plain EOF ('end'), which is not the path under test.
    const server = await startServer({ intervalMs: 40 * INTERVAL, windowMs: 80 * INTERVAL });
    const probe = new LeakProbe();
    const peer = await connectPeer(server.port);
    // A live client (its PING has just been answered) whose connection resets.
    peer.send(FrameType.PING, 'before the reset');
    await peer.client.waitForFrames(1, 'a PONG for our PING');
    const resetAt = performance.now();
    peer.client.reset();
    await peer.client.waitClosed('our own reset closes the connection');
    await eventually(() => {
      check(server.connections === 0, 'The server still counts a client that reset.', {
        observed: `${server.connections} connection(s) 300 ms after the only client reset`,
        expected: '0',
        idea: "'close' fires on every path, a reset included",
      });
    }, { within: 300 });
    const leaks = await probe.settle(50);
    check(!leaks.resources.has('Timeout'), 'The heartbeat still runs for a client that reset.', {
      observed: `${ms(since(resetAt))} after the only client reset its connection, still alive beyond the running server: ${describeLeaks(leaks)}`,
      expected: 'no timer: a connection leaves the heartbeat when it closes, however it closes, and with nobody left to watch the sweep stops',
      idea: timerIdea(leaks, "'end' fires only when the peer says goodbye; a reset, an error or the heartbeat's own destroy() skip it, and 'close' fires on all of them"),
    });
  });
});

describe('heartbeat.ts: one sweep for every connection', () => {
  test("the heartbeat forgets a connection however it closes: a goodbye, a reset, the server's own destroy()", async () => {
    // Slow pings: this test is about leaving, and no PING may be on its way when the reset
    // lands (a write that meets a reset turns the next read into a plain EOF).
    const heartbeat = new Heartbeat({ intervalMs: 40 * INTERVAL });
    const server = await startWatched(heartbeat);
    const probe = new LeakProbe();
    const [polite, rude, kicked] = [await h.connect(server.port), await h.connect(server.port), await h.connect(server.port)];
    await eventually(() => {
      check(heartbeat.watching === 3, 'watch() did not count the connections it was given.', {
        observed: `heartbeat.watching is ${heartbeat.watching} with 3 connections watched`,
        expected: '3',
        idea: 'watching says how many connections the heartbeat holds: the gateway reports it',
      });
    }, { within: 1000 });
    const kickedSide = server.side(kicked!)!;
    const paths = [
      { how: 'one client said goodbye (FIN)', close: () => polite!.end() },
      { how: 'another reset its connection (RST)', close: () => rude!.reset() },
      { how: "the server's own code destroyed the third (as the gateway does to a slow consumer)", close: () => kickedSide.destroy() },
    ];
    const done: string[] = [];
    for (const path of paths) {
      path.close();
      done.push(path.how);
      const left = paths.length - done.length;
      await eventually(() => {
        check(heartbeat.watching === left, 'The heartbeat still watches a connection that has closed.', {
          observed: `heartbeat.watching is ${heartbeat.watching} after: ${done.join('; ')}`,
          expected: `${left}: a connection leaves the heartbeat when it closes`,
          idea: "'close' fires on every path, and it is the only event that does: 'end' means a goodbye, 'error' a reset, and a destroy() by the server's own code emits neither. Forget the connection in 'close', or the sweep pings the dead for ever",
        });
      }, { within: 500 });
    }
    const leaks = await probe.settle(300);
    check(!leaks.resources.has('Timeout'), 'The heartbeat kept its timer with nobody left to watch.', {
      observed: `every watched connection has closed, yet still alive beyond the running server: ${describeLeaks(leaks)}`,
      expected: 'no timer: the sweep runs only while there is a connection to watch',
      idea: timerIdea(leaks, 'clear the sweep when the last connection leaves (and forget its handle, so the next watch() starts a new one): a server with no clients holds no timer'),
    });
  });

  test('stop() ends the sweep at once, with connections still open, and may be called twice', async () => {
    // A long window: nobody is dropped here; stop() alone must end the heartbeat.
    const heartbeat = new Heartbeat({ intervalMs: INTERVAL, windowMs: 40 * INTERVAL });
    const server = await startWatched(heartbeat);
    const probe = new LeakProbe();
    const peers = [await connectPeer(server.port), await connectPeer(server.port)];
    await Promise.all(peers.map((peer) => nextPing(peer)));
    heartbeat.stop();
    const stoppedAt = performance.now();
    const pings = peers.map((peer) => peer.pingsAt.length);
    check(heartbeat.watching === 0, 'stop() did not forget the connections.', {
      observed: `heartbeat.watching is ${heartbeat.watching} after stop()`,
      expected: '0: a stopped heartbeat watches nothing',
      idea: 'stop() is for a server that is stopping: it forgets every connection at once, whether or not they have closed yet',
    });
    let leaks = probe.leaks();
    await waitUntil(() => !(leaks = probe.leaks()).resources.has('Timeout'), 300);
    check(!leaks.resources.has('Timeout'), 'The heartbeat kept a timer after stop().', {
      observed: `${ms(since(stoppedAt))} after stop(), with its 2 connections still open: ${describeLeaks(leaks)}`,
      expected: 'no timer of the heartbeat: the connections stay open (the server closes them as it likes), but nothing pings or watches them any more',
      idea: "stop() clears the sweep itself, at once: the connections still open may stay open a long while (a graceful shutdown drains them), so their 'close' comes too late. Any timer the heartbeat set on a connection must end too (socket.setTimeout()'s idle timer is one: Node unref()s it, but it still fires); and unref() is not clearInterval()",
    });
    // One PING may have been on its way when stop() was called, not two.
    const pingedAgain = await waitUntil(() => peers.some((peer, i) => peer.pingsAt.length > pings[i]! + 1), 3 * INTERVAL + SLACK);
    check(!pingedAgain, 'The heartbeat went on pinging after stop().', {
      observed: `PINGs received after stop(): ${peers.map((peer, i) => peer.pingsAt.length - pings[i]!).join(' and ')}`,
      expected: 'none (one at most, already on its way)',
      idea: 'stop() ends the sweep: no more PINGs, no more drops',
    });
    heartbeat.stop(); // the server's stop() may run twice; so may this
    check(heartbeat.watching === 0 && peers.every((peer) => !peer.client.closed), 'A second stop() did something.', {
      observed: `watching ${heartbeat.watching}; connections closed: ${peers.filter((peer) => peer.client.closed).length} of 2`,
      expected: 'nothing happens: watching 0, the connections left to their server',
      idea: 'stop() is safe to call twice',
    });
  });

  test('one sweep pings every connection once per interval, through the ping given, and the others stay watched when one leaves', async () => {
    // A long window: this test is about the pings, and nobody may be dropped meanwhile.
    const heartbeat = new Heartbeat({ intervalMs: INTERVAL, windowMs: 40 * INTERVAL });
    const server = await startWatched(heartbeat, (socket) => ({ ping: () => void socket.write(encode(FrameType.PING, 'from the owner')) }));
    const t0 = performance.now();
    const [leaving, ...staying] = [await connectPeer(server.port), await connectPeer(server.port), await connectPeer(server.port)];
    await Promise.all([leaving!, ...staying].map((peer) => waitForPings(peer, 2, t0)));
    leaving!.client.end();
    await leaving!.client.waitClosed('the server closes its side after our FIN');
    const t1 = performance.now();
    const marks = staying.map((peer) => peer.pingsAt.length);
    const MORE = 4;
    await eventually(() => {
      const more = staying.map((peer, i) => peer.pingsAt.length - marks[i]!);
      check(more.every((n) => n >= MORE), 'The heartbeat stopped pinging the others when one connection left.', {
        observed: `${ms(since(t1))} after one of 3 clients left, the other two have received ${more.join(' and ')} PING(s) since (heartbeat.watching: ${heartbeat.watching})`,
        expected: `a PING every ${INTERVAL} ms to each: ${MORE} each within ${ms(MORE * INTERVAL + SLACK)}`,
        idea: 'one connection leaving takes only that connection out of the sweep: the sweep itself stops when the last one leaves, not the first',
      });
    }, { within: MORE * INTERVAL + SLACK + 1000 });
    const gaps = staying.map((peer, i) => {
      const since1 = peer.pingsAt.slice(marks[i]);
      return (since1.at(-1)! - since1[0]!) / (since1.length - 1);
    });
    check(gaps.every((gap) => gap >= 0.8 * INTERVAL), 'The heartbeat pings each connection more than once per interval.', {
      observed: `PINGs ${gaps.map(ms).join(' and ')} apart on average, to each of the two clients still connected`,
      expected: `one per interval: ${INTERVAL} ms apart (give or take the timers)`,
      idea: 'one sweep for all connections: watch() starts it only when none is running. A setInterval per watch() pings everyone once more per connection, and the handles it overwrites can never be cleared',
    });
    const bodies = staying.flatMap((peer) => peer.client.frames.filter((f) => f.type === FrameType.PING).map((f) => f.body.toString()));
    check(bodies.every((body) => body === 'from the owner'), 'The heartbeat did not send its PINGs through the ping given to watch().', {
      observed: `PINGs received: ${[...new Set(bodies)].map((body) => JSON.stringify(body)).join(', ')}`,
      expected: 'each "from the owner": sent by the ping function passed to watch()',
      idea: 'the owner passes its own ping (the gateway hands it to its single writer, lesson 05), so a PING never splits another frame',
    });
  });

  test('a silent connection is destroyed after the window, and onDead is told once, just before', async () => {
    const watch = h.watchAccepted();
    const heartbeat = new Heartbeat({ intervalMs: INTERVAL });
    const told: Array<{ silentMs: number; destroyed: boolean }> = [];
    let watchedAt = 0;
    const server = await startWatched(heartbeat, (socket) => {
      watchedAt = performance.now(); // just before watch()
      return {
        ping: () => void socket.write(encode(FrameType.PING, 'from the owner')),
        onDead: (silentMs) => void told.push({ silentMs, destroyed: socket.destroyed }),
      };
    });
    // A client that never says a byte, and never ends its side either: only a destroy()
    // by the server closes the connection.
    const mute = await h.connect(server.port, { allowHalfOpen: true });
    const mutePort = mute.port; // read now: a closed socket has no port
    await eventually(() => {
      check(watch.of(mutePort) !== undefined, 'The test lost track of its connection.', {
        observed: 'the server side of the connection was not seen',
        expected: 'one accepted socket',
        idea: 'the test watches the sockets the server accepts',
      });
    }, { within: 1000 });
    const side = watch.of(mutePort)!;
    await waitUntil(() => side.closedAt !== undefined, WINDOW + INTERVAL + SLACK + 300);
    const pings = mute.frames.filter((f) => f.type === FrameType.PING);
    if (side.closedAt === undefined) {
      fail(side.ended ? 'The heartbeat hung up on a silent connection with end(), and the socket is still open.' : 'The heartbeat kept a connection that never said a byte.', {
        observed: `the connection has been watched for ${ms(since(watchedAt))}, and its client has sent nothing; it received ${pings.length} PING(s) and the server ${side.ended ? 'sent FIN, but its socket is still open' : 'still holds the connection'}`,
        expected: `destroyed between ${WINDOW} and ${WINDOW + INTERVAL} ms after it was watched`,
        idea: side.ended
          ? "end() waits for the peer's FIN, which a dead peer never sends: destroy() a peer presumed dead"
          : "only the heartbeat's own clock can tell: the PINGs it writes are not the peer's bytes (socket.setTimeout() counts them, and never fires while you ping)",
      });
    }
    const after = side.closedAt! - watchedAt;
    check(after >= WINDOW - 2 && after <= WINDOW + INTERVAL + SLACK, 'The heartbeat dropped a silent connection at the wrong time.', {
      observed: `dropped ${ms(after)} after it was watched`,
      expected: `between ${WINDOW} and ${WINDOW + INTERVAL} ms (window ${WINDOW} ms, interval ${INTERVAL} ms), give or take the timers`,
      idea: 'a connection is dead once it has been silent for the whole window, checked once per interval',
    });
    check(told.length === 1 && !told[0]!.destroyed && told[0]!.silentMs >= WINDOW - 2 && told[0]!.silentMs <= after + 1, 'onDead was not told once, just before the drop, how long the peer was silent.', {
      observed: told.length ? `onDead called ${told.length} time(s): ${told.map((t) => `silentMs ${ms(t.silentMs)}, socket ${t.destroyed ? 'already destroyed' : 'still open'}`).join('; ')}` : 'onDead never called',
      expected: `once, before destroy(), with the silence: at least the window (${WINDOW} ms), at most the ${ms(after)} since the connection was watched`,
      idea: 'onDead is how the owner logs and counts heartbeat drops; it is told once, as the sweep gives up, with how long the peer was silent',
    });
  });
});

describe('baseline: the client heartbeat', () => {
  test('the client pings the server every interval', async () => {
    const srv = await startScripted();
    const t0 = performance.now();
    const { ended } = await connectClient(srv.port);
    await eventually(() => {
      if (ended() !== undefined) return;
      check(srv.pingsAt.length >= 3, 'The client does not ping the server.', {
        observed: `${srv.pingsAt.length} PING(s) from the client ${ms(since(t0))} after it connected (the server has sent nothing yet)`,
        expected: `a PING every ${INTERVAL} ms, from the start`,
        idea: "a client needs its own heartbeat, from the moment it connects: the server's pings tell the server about the client, not the client about the server, and a server that died right after accepting sends nothing at all",
      });
    }, { within: 3 * INTERVAL + SLACK + 300 });
    check(ended() === undefined, 'The client hung up on a server that answered every PING.', () => ({
      observed: `the client closed the connection ("${ended()}") after ${srv.pingsAt.length} PING(s), each answered at once with a PONG`,
      expected: 'the client stays connected to a server that answers',
      idea: 'a server that answers every PING is alive: a heartbeat must never drop it',
    }));
    // Between PINGs, averaged over two gaps: a client may well send its first PING at once.
    const gap = (srv.pingsAt[2]! - srv.pingsAt[0]!) / 2;
    check(gap >= 0.8 * INTERVAL, 'The client pings faster than its interval.', {
      observed: `PINGs ${ms(gap)} apart on average (the first three)`,
      expected: `one per interval, ${INTERVAL} ms apart (give or take the timers)`,
      idea: 'one PING per interval',
    });
  });

  test("the client answers the server's PING with PONG", async () => {
    const srv = await startScripted();
    await connectClient(srv.port);
    srv.send(FrameType.PING, 'still there?');
    await eventually(() => {
      const pong = srv.frames.find((f) => f.type === FrameType.PONG);
      check(pong?.body.toString() === 'still there?', "The client did not answer the server's PING.", {
        observed: pong ? `a PONG with body "${pong.body}"` : `no PONG among ${srv.frames.length} frame(s) from the client`,
        expected: 'PONG "still there?"',
        idea: "the server's heartbeat depends on the client answering",
      });
    }, { within: 1000 });
  });

  test('the client hands every frame but PING and PONG to onFrame, DATA to onData too, and sendFrame sends any frame', async () => {
    const srv = await startScripted();
    const data: string[] = [];
    const frames: Frame[] = [];
    const { client } = await connectClient(srv.port, { host: '127.0.0.1', onData: (b) => data.push(b.toString()), onFrame: (f) => frames.push(f) });
    client.sendFrame(FrameType.SUBSCRIBE, 'news');
    client.send('echo me'); // the scripted server echoes DATA
    srv.send(FrameType.PING, 'still there?');
    srv.send(FrameType.MESSAGE, 'news: hello');
    const seen = () => frames.map((f) => `${typeName(f.type)} "${f.body}"`).join(', ') || 'none';
    await eventually(() => {
      check(srv.frames.some((f) => f.type === FrameType.SUBSCRIBE && f.body.toString() === 'news'), 'sendFrame() did not send its frame.', {
        observed: `frames from the client: ${srv.frames.map((f) => typeName(f.type)).join(', ') || 'none'}`,
        expected: 'SUBSCRIBE "news"',
        idea: 'sendFrame(type, body) sends one whole frame of any type, as send() does for DATA',
      });
      check(data.includes('echo me') && frames.some((f) => f.type === FrameType.MESSAGE) && frames.some((f) => f.type === FrameType.DATA), 'The client did not hand the server\'s frames to its owner.', {
        observed: `onData got ${JSON.stringify(data)}; onFrame got ${seen()}`,
        expected: 'onData: "echo me"; onFrame: the DATA and the MESSAGE',
        idea: 'the heartbeat runs alongside the business traffic: every other frame reaches the owner',
      });
    }, { within: 1000 });
    await eventually(() => {
      check(srv.frames.some((f) => f.type === FrameType.PONG), "The client did not answer the server's PING.", {
        observed: `no PONG among ${srv.frames.length} frame(s) from the client`,
        expected: 'PONG "still there?"',
        idea: "the server's heartbeat depends on the client answering",
      });
    }, { within: 1000 });
    check(frames.every((f) => f.type !== FrameType.PING && f.type !== FrameType.PONG), 'The client handed its heartbeat frames to onFrame.', {
      observed: `onFrame got ${seen()}`,
      expected: 'no PING or PONG: the client answers and counts those itself',
      idea: 'PING and PONG belong to the heartbeat; the owner sees the rest',
    });
  });

  test('the client gives up on a server that goes silent, after the window', async () => {
    // The server answers the client's first PING half an interval late, then nothing more;
    // meanwhile the path from the client dies (a blackhole: the client's PINGs, and its FIN
    // or RST when it gives up, never arrive). So the client's own socket must be gone.
    const srv = await startScripted({ silentAfter: 1, pongDelayMs: INTERVAL / 2 });
    const proxy = h.track(await startFaultProxy({ upstreamPort: srv.port }));
    const sockets = watchConnecting(proxy.port);
    const probe = new LeakProbe();
    const { ended, endedAt } = await connectClient(proxy.port);
    h.defer(() => proxy.stop()); // before the client's goodbye, which the blackhole would swallow
    await withTimeline(proxy, async () => {
      await eventually(() => {
        check(srv.sent >= 1, 'The client does not ping the server.', {
          observed: `no PING answered ${ms(since(srv.lastWriteAt))} after the client connected`,
          expected: `a PING within ${INTERVAL} ms`,
          idea: "a client needs its own heartbeat: the server's pings tell the server about the client, not the client about the server",
        });
      }, { within: 2 * INTERVAL + SLACK + 300 });
      proxy.add({ kind: 'blackhole', direction: 'upstream' });
      const lastFrame = srv.lastWriteAt;
      await waitUntil(() => ended() !== undefined, lastFrame + WINDOW + INTERVAL + SLACK - performance.now());
      if (ended() === undefined) {
        const socket = sockets[0];
        if (socket?.writableEnded && !socket.destroyed) {
          fail("The client hung up on a silent server with end(), and its socket is still open.", {
            observed: `the server's last frame came ${ms(since(lastFrame))} ago; the client then sent FIN (end()), but its socket is still open and \`closed\` has not resolved`,
            expected: `the client's socket destroyed between ${WINDOW} and ${WINDOW + INTERVAL} ms after the server's last frame, and \`closed\` resolved`,
            idea: "end() is a polite goodbye: it sends FIN, then waits for the server's FIN. A server that vanished never answers, so the socket stays open and the owner, waiting on `closed`, never reconnects: destroy() a peer presumed dead",
          });
        }
        fail('The client kept a silent server.', {
          observed: `the server answered one PING, then said nothing for ${ms(since(lastFrame))}; the client is still connected`,
          expected: `the client hangs up between ${WINDOW} and ${WINDOW + INTERVAL} ms after the server's last frame`,
          idea: 'a client that never gives up on a dead server never reconnects to a live one',
        });
      }
      const after = endedAt()! - lastFrame;
      check(after >= WINDOW - 2 && after <= WINDOW + INTERVAL + SLACK, 'The client gave up on a silent server at the wrong time.', {
        observed: `it hung up ${ms(after)} after the server's last frame ("${ended()}"); that frame was a PONG that came ${INTERVAL / 2} ms after the client's PING`,
        expected: `between ${WINDOW} and ${WINDOW + INTERVAL} ms (window ${WINDOW} ms, interval ${INTERVAL} ms), give or take the timers`,
        idea: after < WINDOW - 2
          ? `a peer is dead once it has been silent for the whole window (${WINDOW} ms, two intervals), not before: "nothing since my last PING" is a window of one interval, and abandons a server whose answer is a little late`
          : 'a peer is dead once it has been silent for the whole window, checked once per interval',
      });
      let leaks = probe.leaks();
      await waitUntil(() => !(leaks = probe.leaks()).resources.has('Timeout'), 300);
      check(!leaks.resources.has('Timeout'), "The client's ping timer outlived its connection.", {
        observed: `the client gave up ${ms(since(endedAt()!))} ago ("${ended()}"), yet still alive: ${describeLeaks(leaks)}`,
        expected: 'no timer: the ping interval is cleared when the connection closes, however it closes',
        idea: timerIdea(leaks, "'close' fires on every path (the heartbeat giving up, the server leaving, a reset, close()): clear the interval there, not only in close()"),
      });
    });
  });

  test('the client keeps an idle connection to a live server open, and DATA still flows', async () => {
    // A scripted server that pings every interval and answers at once: this is the
    // client's test (the server's side of it is "live clients are kept" above).
    const srv = await startScripted({ pingEveryMs: INTERVAL });
    const echoed: string[] = [];
    const { client, ended } = await connectClient(srv.port, { onData: (b) => echoed.push(b.toString()) });
    await sleep(KEEP_PINGS * INTERVAL); // two windows with nothing but the heartbeat on the wire
    client.send('still here');
    await eventually(() => {
      check(ended() === undefined && echoed.includes('still here') && srv.closedAt === undefined, 'An idle but healthy connection did not survive.', () => ({
        observed: ended() !== undefined
          ? `the client hung up: "${ended()}"`
          : `server side ${srv.closedAt === undefined ? 'open' : 'closed'}; DATA received back: ${JSON.stringify(echoed)}`,
        expected: `after ${KEEP_PINGS * INTERVAL} ms of heartbeat alone, both ends still connected and DATA "still here" echoed`,
        idea: 'two live ends that ping and answer never give up on each other, however long they have nothing to say',
      }));
    }, { within: 1000 });
  });
});

describe('noticing a dead peer: the client', () => {
  test('the client keeps a server that is busy talking but answers PINGs late', async () => {
    // The server pings the client twice an interval, but its PONGs come a second late: they
    // wait behind a backlog of work. (Long enough that no PONG can reach the client before
    // it has sent its first few PINGs, however slow the machine. Twice an interval, so that
    // a correct client measuring silence by the clock alone keeps a margin of 75 ms when this
    // process, which runs both ends, is off the CPU for a while.)
    const PONG_DELAY = 20 * INTERVAL;
    const PING_EVERY = INTERVAL / 2;
    const srv = await startScripted({ pingEveryMs: PING_EVERY, pongDelayMs: PONG_DELAY });
    const t0 = performance.now();
    const { ended, endedAt } = await connectClient(srv.port);
    await eventually(() => {
      if (ended() !== undefined) return;
      check(srv.sent >= KEEP_PINGS && srv.pingsAt.length >= KEEP_PINGS, 'The client or the scripted server stopped pinging.', {
        observed: `the server sent ${srv.sent} PING(s), the client ${srv.pingsAt.length}`,
        expected: `${KEEP_PINGS} PINGs each way`,
        idea: 'both ends ping every interval',
      });
    }, { within: KEEP_PINGS * INTERVAL + SLACK + 1000 });
    check(ended() === undefined, 'The client gave up on a server that was talking to it all along.', () => ({
      observed: `the client hung up ${ms(endedAt()! - t0)} after connecting ("${ended()}"); by then the server had sent it ${srv.sent} PING(s), one every ${PING_EVERY} ms, the last of them ${ago(endedAt()! - srv.lastWriteAt)} before it hung up`,
      expected: `the client stays: frames keep arriving, so the server is alive; only its PONGs are late (${PONG_DELAY} ms)`,
      idea: 'any byte from the peer proves it is alive, not only the PONG to our own PING: count everything received',
    }));
  });

  test('the client keeps a server that streams one large DATA frame slowly and answers PINGs late', async () => {
    // The server sends one DATA frame of 40 KB, a piece every half interval, for more than
    // two windows, and no PING; its PONGs wait behind the stream. Until the last piece, no
    // whole frame arrives.
    const srv = await startScripted({ pongDelayMs: 20 * INTERVAL });
    const got: number[] = [];
    const { ended, endedAt } = await connectClient(srv.port, { onData: (b) => got.push(b.length) });
    const PIECES = 10;
    const frame = encode(FrameType.DATA, Buffer.alloc(PIECES * 4096 - 5, 'd'));
    const size = frame.length / PIECES;
    const t0 = performance.now();
    let sent = 0;
    const stream = setInterval(() => {
      if (sent === PIECES || ended() !== undefined) return;
      srv.raw(frame.subarray(sent * size, (sent + 1) * size));
      sent += 1;
    }, INTERVAL / 2);
    h.defer(() => clearInterval(stream));
    await waitUntil(() => got.length > 0 || ended() !== undefined, PIECES * INTERVAL + SLACK + 1000);
    clearInterval(stream);
    check(ended() === undefined && got.length === 1, 'The client gave up on a server that was sending to it all along.', () => ({
      observed: ended() !== undefined
        ? `the client hung up ${ms(endedAt()! - t0)} into the stream ("${ended()}"), after ${sent} of ${PIECES} pieces of one DATA frame, one every ${INTERVAL / 2} ms, the last ${ago(endedAt()! - srv.lastWriteAt)} before`
        : `the client is connected but received ${got.length} DATA frame(s)`,
      expected: 'the client stays and gets the whole frame: bytes kept arriving the whole time',
      idea: 'any byte from the server proves it is alive: count it when it arrives, not when a frame completes, and not only for PING or PONG',
    }));
  });

  test('the client gives up on a server that froze while the client was sending to it', async () => {
    // The server never reads (and so never answers); the client's owner has just sent it
    // 8 MB, which the kernels cannot absorb: the rest waits in the client.
    const srv = await startScripted({ neverRead: true });
    const sockets = watchConnecting(srv.port);
    const { client, ended } = await connectClient(srv.port);
    const t0 = performance.now();
    for (let i = 0; i < 8; i++) client.send(Buffer.alloc(1_000_000, 0x75));
    await waitUntil(() => ended() !== undefined, WINDOW + INTERVAL + SLACK + 500);
    if (ended() === undefined) {
      const socket = sockets[0];
      if (socket?.writableEnded && !socket.destroyed) {
        fail('The client hung up on a frozen server with end(), and its socket is still open.', {
          observed: `the server has sent nothing for ${ms(since(t0))}; the client called end(), but its FIN waits behind ${Math.round(socket.writableLength / 1e6)} MB the server never reads: \`closed\` has not resolved`,
          expected: `the client's socket destroyed between ${WINDOW} and ${WINDOW + INTERVAL} ms after it connected`,
          idea: "end() queues a FIN behind everything not yet sent; a frozen peer takes none of it, so the FIN never leaves: destroy() a peer presumed dead",
        });
      }
      fail('The client kept a server that froze while the client was sending to it.', {
        observed: `the server has sent nothing for ${ms(since(t0))}, answered none of the client's PINGs, and the client still waits (${sockets[0] ? `${Math.round(sockets[0].writableLength / 1e6)} MB queued` : 'its socket was not seen'})`,
        expected: `the client gives up between ${WINDOW} and ${WINDOW + INTERVAL} ms after it connected`,
        idea: "a send queue that does not drain is what a frozen peer looks like: check the silence on every tick, queued writes or not",
      });
    }
  });
});
