// Lesson 04: an in-band heartbeat notices a dead or half-open peer within a window of
// about two intervals, never drops a live one, and its timer dies with its connection.
// Both ends run one: the server pings its clients, the client pings its server.
import net from 'node:net';
import { setTimeout as sleep } from 'node:timers/promises';
import { describe, test } from 'vitest';
import { startHeartbeatServer } from '#target/04-heartbeat/server.ts';
import { connectHeartbeatClient, type HeartbeatClientOptions } from '#target/04-heartbeat/client.ts';
import {
  check, describeLeaks, encode, eventually, FrameType, gate, LeakProbe, ReferenceDecoder, startFaultProxy, useHarness,
  withTimeline, type Frame, type TestClient,
} from '../runtime/harness/index.ts';

const h = useHarness('04');

const INTERVAL = 50;
/** The default window of both modules: two intervals. */
const WINDOW = 2 * INTERVAL;
/** Timers fire late on a busy machine, never early: upper bounds get this much room. */
const SLACK = 150;

/** How many PINGs a live client must survive: two whole windows. */
const KEEP_PINGS = 4;

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
      if (peer.answering) peer.send(FrameType.PONG, frame.body.toString());
    }
  });
  return peer;
}

/** Waits for the server's `count`-th PING, or fails at once if the server closed the connection. */
async function waitForPings(peer: Peer, count: number, since0: number) {
  await eventually(() => {
    if (peer.client.closed) return;
    check(peer.pingsAt.length >= count, 'The server stopped pinging.', () => ({
      observed: `${peer.pingsAt.length} PING(s) ${ms(since(since0))} after connecting`,
      expected: `a PING every ${INTERVAL} ms: ${count} within ${ms(count * INTERVAL + SLACK)}`,
      idea: 'the server pings each client on a schedule; the answers are how it knows the client is there',
    }));
  }, { within: count * INTERVAL + SLACK + 1000 });
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

// ---------------------------------------------------------------------------------------

describe('baseline: the server pings, answers and echoes', () => {
  test('the server pings each client every interval', async () => {
    const server = await startServer();
    const t0 = performance.now();
    const peer = await connectPeer(server.port);
    await waitForPings(peer, 2, t0);
    const second = peer.pingsAt[1]! - t0;
    check(second >= 2 * INTERVAL - 2, 'The server pings faster than its interval.', {
      observed: `the 2nd PING arrived ${ms(second)} after connecting`,
      expected: `no sooner than 2 × ${INTERVAL} ms`,
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

  test('live clients are kept: one that only answers PINGs, one that uploads and answers late', async () => {
    const server = await startServer();
    const t0 = performance.now();
    const quiet = await connectPeer(server.port);
    const busy = await connectPeer(server.port);
    // An upload: DATA twice per interval, while the PONGs wait behind it.
    busy.answering = false;
    let chunks = 0;
    const upload = setInterval(() => {
      if (busy.client.closed) return;
      busy.send(FrameType.DATA, 'chunk');
      chunks += 1;
    }, INTERVAL / 2);
    h.defer(() => clearInterval(upload));
    await waitForPings(quiet, KEEP_PINGS, t0);
    await waitForPings(busy, KEEP_PINGS, t0);
    clearInterval(upload);
    check(!quiet.client.closed, 'The server dropped a client that answered every PING.', {
      observed: `the connection closed ${ms(quiet.client.closedAfterMs ?? since(t0))} after connecting; the client had answered ${quiet.pingsAt.length} PING(s), each at once`,
      expected: `still connected after ${KEEP_PINGS * INTERVAL} ms: a client that answers is alive, even if it has nothing else to say`,
      idea: `the window (${WINDOW} ms) spans two intervals, so a live client always has a PONG inside it`,
    });
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

  test('a client that says goodbye is forgotten and its pinger stops', async () => {
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
      expected: 'nothing: no socket, no ping timer',
      idea: 'the ping timer belongs to its connection and dies with it',
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

  test('a frozen client and a half-open one are dropped once silent for the window', async () => {
    const server = await startServer();
    const proxy = h.track(await startFaultProxy({ upstreamPort: server.port }));
    const t0 = performance.now();
    const frozen = await connectPeer(server.port);
    const cutOff = await connectPeer(proxy.port);
    // After the test, stop the proxy first: both sides see FIN, nothing waits on the blackhole.
    h.defer(() => proxy.stop());
    h.defer(() => frozen.client.socket.resume());
    await withTimeline(proxy, async () => {
      await waitForPings(frozen, 1, t0);
      await waitForPings(cutOff, 1, t0);
      const first = await lastWords(frozen);
      const last = await lastWords(cutOff);
      // Frozen: its process reads and writes nothing more, but its kernel still ACKs our PINGs.
      frozen.client.socket.pause();
      // Cut off: the path dies; no byte, no FIN, no RST gets through, either way.
      proxy.add({ kind: 'blackhole' });
      let firstDropAfter: number | undefined;
      await eventually(() => {
        if (server.connections < 2) firstDropAfter ??= since(first);
        check(server.connections === 0, 'The server still holds clients that went silent.', () => ({
          observed: `${server.connections} of 2 still connected ${ms(since(first))} after their last frames: one client frozen, one behind a blackhole (see the timeline: the server kept writing PINGs into it)`,
          expected: `each dropped between ${WINDOW} and ${WINDOW + INTERVAL} ms after the last frame it sent (window ${WINDOW} ms, interval ${INTERVAL} ms)`,
          idea: "no FIN or RST will come, so only the server's own clock can tell; socket.setTimeout() counts the server's own writes as activity, so it never fires while the server pings: note when you last received, and check that on your own timer",
        }));
      }, { within: WINDOW + INTERVAL + SLACK + (last - first) });
      firstDropAfter ??= since(first);
      check(firstDropAfter >= WINDOW - 2, 'The server dropped a silent client before its window was over.', {
        observed: `the first of the two was dropped ${ms(firstDropAfter)} after its last frame`,
        expected: `no sooner than the window, ${WINDOW} ms`,
        idea: 'a peer is dead once it has been silent for the whole window, not before: a shorter window drops live peers that answer a little late',
      });
    });
  });

  test('a client that resets has its pinger stopped', async () => {
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
    check(!leaks.resources.has('Timeout'), 'The ping timer of a client that reset is still running.', {
      observed: `${ms(since(resetAt))} after the client reset its connection, still alive beyond the running server: ${describeLeaks(leaks)}`,
      expected: "no timer: a connection's ping interval is cleared when the connection closes, however it closes",
      idea: "'end' fires only when the peer says goodbye; a reset, an error or the heartbeat's own destroy() skip it, and 'close' fires on all of them",
    });
  });
});

describe('baseline: the client heartbeat', () => {
  test('the client pings the server every interval', async () => {
    const srv = await startScripted();
    const t0 = performance.now();
    await connectClient(srv.port);
    await eventually(() => {
      check(srv.pingsAt.length >= 2, 'The client does not ping the server.', {
        observed: `${srv.pingsAt.length} PING(s) from the client ${ms(since(t0))} after it connected`,
        expected: `a PING every ${INTERVAL} ms`,
        idea: "a client needs its own heartbeat: the server's pings tell the server about the client, not the client about the server",
      });
    }, { within: 2 * INTERVAL + SLACK + 300 });
    const second = srv.pingsAt[1]! - t0;
    check(second >= 2 * INTERVAL - 2, 'The client pings faster than its interval.', {
      observed: `the 2nd PING arrived ${ms(second)} after connecting`,
      expected: `no sooner than 2 × ${INTERVAL} ms`,
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

  test('the client gives up on a server that goes silent, after the window', async () => {
    const srv = await startScripted({ silentAfter: 1 });
    const { ended } = await connectClient(srv.port);
    await eventually(() => {
      check(srv.closedAt !== undefined, 'The client kept a silent server.', () => ({
        observed: `the server answered one PING, then said nothing for ${ms(since(srv.lastWriteAt))}; the client is still connected`,
        expected: `the client hangs up between ${WINDOW} and ${WINDOW + INTERVAL} ms after the server's last frame`,
        idea: 'a client that never gives up on a dead server never reconnects to a live one',
      }));
    }, { within: 3 * INTERVAL + WINDOW + SLACK + 300 });
    const after = srv.closedAt! - srv.lastWriteAt;
    check(after >= WINDOW - 2 && after <= WINDOW + INTERVAL + SLACK, 'The client gave up on a silent server at the wrong time.', {
      observed: `it hung up ${ms(after)} after the server's last frame (${ended() ?? 'no reason given yet'})`,
      expected: `between ${WINDOW} and ${WINDOW + INTERVAL} ms (window ${WINDOW} ms, interval ${INTERVAL} ms), give or take the timers`,
      idea: 'a peer is dead once it has been silent for the whole window, checked once per interval',
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
    // The server pings the client every interval, but its PONGs come a second late: they
    // wait behind a backlog of work. (Long enough that no PONG can reach the client before
    // it has sent its first few PINGs, however slow the machine.)
    const PONG_DELAY = 20 * INTERVAL;
    const srv = await startScripted({ pingEveryMs: INTERVAL, pongDelayMs: PONG_DELAY });
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
      observed: `the client hung up ${ms(endedAt()! - t0)} after connecting ("${ended()}"); by then the server had sent it ${srv.sent} PING(s), one every ${INTERVAL} ms, the last of them ${ago(endedAt()! - srv.lastWriteAt)} before it hung up`,
      expected: `the client stays: frames keep arriving, so the server is alive; only its PONGs are late (${PONG_DELAY} ms)`,
      idea: 'any byte from the peer proves it is alive, not only the PONG to our own PING: count everything received',
    }));
  });
});
