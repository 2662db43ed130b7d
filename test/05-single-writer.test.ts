// Lesson 05: one frame at a time, and memory that stays bounded. Many senders share one
// connection without mixing their frames; a client that stops reading costs the server a
// bounded amount of memory, is disconnected by a stated policy, and never slows the
// clients that do read.
import { describe, test } from 'vitest';
import net from 'node:net';
import { setImmediate as nextTurn } from 'node:timers/promises';
import { startHub, type Hub, type HubConnection, type HubOptions } from '#target/05-single-writer/hub.ts';
import {
  check, describeFrame, encode, eventually, fail, FrameType, gate, ReferenceDecoder, settleWithin, useHarness, watchPromise, type Frame, type TestClient, type Watched,
} from '../runtime/harness/index.ts';

const h = useHarness('05');

/** The slow-consumer bound most tests use. */
const BOUND = 1024 * 1024;
/** Bodies of the bulk tests: a 4-byte sequence number, then filler. */
const BODY_BYTES = 64 * 1024;
const FRAME_BYTES = encode(FrameType.DATA, Buffer.alloc(BODY_BYTES)).length;

const mb = (bytes: number) => `${(bytes / 1e6).toFixed(1)} MB`;
const kib = (bytes: number) => `${Math.round(bytes / 1024)} KiB`;

/**
 * Where a paused client's bytes are: queued in user space, and whether that is past the
 * socket's high-water mark (write() returns false: the kernel's buffers for it are full).
 */
function backlog(c: HubConnection): string {
  const hwm = kib(c.socket.writableHighWaterMark);
  return c.socket.writableNeedDrain
    ? `${mb(queued(c))} queued in user space (past the socket's ${hwm} high-water mark, so write() returns false) while the kernel's ~4 MB of buffers for it are full`
    : `${mb(queued(c))} queued in user space, under the socket's ${hwm} high-water mark`;
}
const show = (frames: Frame[]) => (frames.length ? frames.map(describeFrame).join(', ') : 'no frames');

async function start(options: HubOptions = {}): Promise<Hub> {
  return h.track(await startHub(options));
}

/** The hub's side of a client's connection, found by the client's port. */
async function connectionOf(hub: Hub, clientPort: number): Promise<HubConnection> {
  return eventually(() => {
    const found = [...hub.connections.values()].find((c) => c.socket.remotePort === clientPort);
    if (found) return found;
    return fail('The hub does not list a client that connected.', {
      observed: `hub.connections holds ${hub.connections.size} connection(s), none from port ${clientPort}`,
      expected: 'every accepted connection in hub.connections',
      idea: 'the hub keeps a registry of its clients',
    });
  }, { within: 1000 });
}

/** What the server holds for a connection: the writer's count, and never less than the socket's own buffer. */
const queued = (c: HubConnection) => Math.max(c.writer.queuedBytes, c.socket.writableLength);

/** A body source that yields nothing until `opened` resolves: a slow upstream, under the test's control. */
async function* gatedBody(opened: Promise<void>, parts: string[]): AsyncGenerator<Buffer> {
  await opened;
  for (const part of parts) yield Buffer.from(part);
}

/** A body source that yields `parts` once `opened` resolves. */
async function* gatedBuffers(opened: Promise<void>, parts: Buffer[]): AsyncGenerator<Buffer> {
  await opened;
  yield* parts;
}

/**
 * Fills the kernel's buffers for a paused client with small frames, one per turn of the
 * event loop, until a few bytes stay behind in the socket's own buffer: the kernel is
 * full, yet write() still returns true (the socket's buffer is under its high-water mark)
 * and the writer is idle. The next large write() returns false and waits for a 'drain'
 * that will not come while the client is paused.
 */
async function fillKernel(hub: Hub, conn: HubConnection): Promise<number> {
  const small = Buffer.alloc(8 * 1024 - 5);
  let frames = 0;
  // 4096 x 8 KiB = 32 MB: far more than loopback buffers for a client that reads nothing.
  while (frames < 4096 && conn.socket.writableLength === 0 && !conn.socket.destroyed) {
    hub.send(conn.id, FrameType.DATA, small);
    frames++;
    await nextTurn();
  }
  return frames;
}

/** A hub with one client that reads nothing, and the kernel's buffers for it full. */
async function pausedWithKernelFull() {
  const hub = await start();
  const client = await h.connect(hub.port);
  client.socket.pause();
  const conn = await connectionOf(hub, client.port);
  await fillKernel(hub, conn);
  return { hub, client, conn };
}

/** What the client made of the bytes: its frames, then whatever did not decode. */
function decoded(client: TestClient): string {
  const used = client.frames.reduce((n, f) => n + encode(f.type, f.body).length, 0);
  const left = client.received.length - used;
  const tail = client.protocolError
    ? `, then bytes that are not a frame (${client.protocolError.message})`
    : left > 0
      ? `, then ${left} bytes that never complete a frame (the decoder waits for a body that will never come)`
      : '';
  return `${show(client.frames)}${tail}`;
}

/** Waits until `client` has received `bytes` bytes, then returns what it decoded. */
async function framesAfter(client: TestClient, bytes: number): Promise<Frame[]> {
  await eventually(() => {
    check(client.received.length >= bytes, 'Not everything sent arrived.', {
      observed: `${client.received.length} of ${bytes} bytes arrived`,
      expected: `${bytes} bytes`,
      idea: 'every frame accepted for a connection is written',
    });
  }, { within: 1000 });
  return client.frames;
}

// A light client for the bulk tests. The harness's TestClient keeps every byte it
// receives (fine for a few frames, quadratic for megabytes); this one only checks that
// the frames arrive whole and in sequence, and counts them.
interface BulkClient {
  socket: net.Socket;
  port: number;
  /** Frames received whole and in sequence. */
  frames: number;
  /** The first frame that was not the next in sequence, or bytes that were not a frame. */
  broken: string | undefined;
  closed: boolean;
}

async function bulkClient(port: number, { paused = false } = {}): Promise<BulkClient> {
  const socket = net.connect({ port, host: '127.0.0.1', noDelay: true });
  const client: BulkClient = { socket, port: 0, frames: 0, broken: undefined, closed: false };
  const decoder = new ReferenceDecoder();
  socket.on('data', (chunk: Buffer) => {
    if (client.broken) return;
    let frames: Frame[];
    try {
      frames = decoder.push(chunk);
    } catch (err) {
      client.broken = `after ${client.frames} good frames, bytes that are not a frame (${(err as Error).message})`;
      return;
    }
    for (const frame of frames) {
      const seq = frame.body.length >= 4 ? frame.body.readUInt32BE(0) : -1;
      if (frame.type !== FrameType.DATA || seq !== client.frames) {
        client.broken = `frame ${client.frames + 1} was ${describeFrame(frame)} with sequence number ${seq}, not ${client.frames}`;
        return;
      }
      client.frames++;
    }
  });
  // A paused socket stops reading: the kernel's buffers fill, then the server's.
  if (paused) socket.pause();
  socket.on('error', () => {});
  const closed = new Promise<void>((resolve) => socket.once('close', () => resolve()));
  void closed.then(() => (client.closed = true));
  h.defer(async () => {
    socket.destroy();
    await closed;
  });
  await Promise.race([
    new Promise<void>((resolve) => socket.once('connect', () => resolve())),
    closed.then(() => {
      throw new Error(`could not connect to 127.0.0.1:${port}`);
    }),
  ]);
  client.port = socket.localPort!;
  return client;
}

/** A 64 KiB body carrying sequence number `seq`. */
function numbered(seq: number): Buffer {
  const body = Buffer.alloc(BODY_BYTES);
  body.writeUInt32BE(seq, 0);
  return body;
}

/**
 * Publishes `count` numbered frames at the pace a fast reader keeps up with (a turn of the
 * event loop each, and a check every 8 frames that the fast clients are at most 8 behind).
 * Fails if publish() does not return promptly or a fast client falls behind.
 */
async function publishNumbered(hub: Hub, count: number, fast: BulkClient[], slow: HubConnection): Promise<void> {
  for (let seq = 0; seq < count; seq++) {
    const returned = 'value' in (await settleWithin(hub.publish(FrameType.DATA, numbered(seq)), 250));
    if (!returned) {
      fail(`publish() of frame ${seq + 1} of ${count} had not returned after 250 ms.`, {
        observed: `the fast clients had received [${fast.map((c) => c.frames).join(', ')}] frames; the paused client had ${backlog(slow)}`,
        expected: "publish() hands the frame to every client's queue and returns; the fast clients keep receiving",
        idea: "a broadcast that waits for each client's 'drain' in turn runs at the pace of the slowest client, and a paused client stops it for everyone",
      });
    }
    await nextTurn();
    if (seq % 8 === 7) {
      await eventually(() => {
        check(fast.every((c) => c.frames >= seq + 1 - 8 || c.broken), 'The fast clients stopped receiving.', {
          observed: `${seq + 1} frames published; the fast clients received [${fast.map((c) => c.frames).join(', ')}]`,
          expected: `each fast client within 8 frames of the ${seq + 1} published`,
          idea: 'a client that reads must not wait for one that does not',
        });
      }, { within: 1000 });
    }
  }
}

/** Checks that every fast client got all `count` frames, whole and in order, and is still connected. */
async function expectEverything(fast: BulkClient[], count: number): Promise<void> {
  // Wait until every client has everything, or one has a broken stream (no use waiting then).
  await eventually(() => {
    if (fast.some((c) => c.broken)) return;
    for (const [i, c] of fast.entries()) {
      check(c.frames === count && !c.closed, `Fast client ${i + 1} did not receive everything.`, {
        observed: `${c.frames} of ${count} frames${c.closed ? ', then the server closed the connection' : ''}`,
        expected: `all ${count} frames, and the connection still open`,
        idea: 'a client that keeps up receives every frame, whatever another client does',
      });
    }
  }, { within: 2000 });
  for (const [i, c] of fast.entries()) {
    check(!c.broken, `Fast client ${i + 1} received a broken stream.`, {
      observed: c.broken ?? '',
      expected: `frames 0..${count - 1}, whole and in order`,
      idea: 'frames from one publisher reach each client whole and in the order they were published',
    });
  }
}

describe('baseline: the hub delivers', () => {
  test('frames sent to one client arrive whole and in order', async () => {
    const hub = await start();
    const client = await h.connect(hub.port);
    const conn = await connectionOf(hub, client.port);
    const bodies = Array.from({ length: 10 }, (_, i) => `message ${i}`);
    for (const body of bodies) hub.send(conn.id, FrameType.DATA, body);
    const frames = await client.waitForFrames(10, 'ten DATA frames');
    check(frames.map((f) => f.body.toString()).join(',') === bodies.join(','), 'Frames arrived changed or out of order.', {
      observed: show(frames),
      expected: bodies.map((b) => `DATA "${b}"`).join(', '),
      idea: 'frames for one client go out in the order they were sent',
    });
  });

  test('a streamed frame arrives whole', async () => {
    const hub = await start();
    const client = await h.connect(hub.port);
    const conn = await connectionOf(hub, client.port);
    const parts = ['a body ', 'that arrives ', 'in four ', 'pieces'];
    async function* slowly() {
      for (const part of parts) {
        await nextTurn();
        yield Buffer.from(part);
      }
    }
    await hub.stream(conn.id, FrameType.DATA, parts.join('').length, slowly());
    const [frame] = await client.waitForFrames(1, 'the streamed frame');
    check(frame!.body.toString() === parts.join(''), 'The streamed frame arrived wrong.', {
      observed: describeFrame(frame!),
      expected: `DATA "${parts.join('')}"`,
      idea: 'a frame can be written as a header and then its body in pieces, as long as nothing else is written in between',
    });
  });

  test('a published frame reaches every client', async () => {
    const hub = await start();
    const clients = [await h.connect(hub.port), await h.connect(hub.port), await h.connect(hub.port)];
    await eventually(() => check(hub.connections.size === 3, 'The hub did not register three clients.', {
      observed: `${hub.connections.size} connection(s)`, expected: '3', idea: 'the hub keeps a registry of its clients',
    }), { within: 1000 });
    await hub.publish(FrameType.DATA, 'to everyone');
    for (const [i, client] of clients.entries()) {
      const [frame] = await client.waitForFrames(1, `the published frame at client ${i + 1}`);
      check(frame!.body.toString() === 'to everyone', `Client ${i + 1} got the wrong frame.`, {
        observed: describeFrame(frame!), expected: 'DATA "to everyone"', idea: 'publish() sends to every client',
      });
    }
  });

  test("a client's DATA frame is published to every client", async () => {
    const hub = await start();
    const alice = await h.connect(hub.port);
    const bob = await h.connect(hub.port);
    await eventually(() => check(hub.connections.size === 2, 'The hub did not register two clients.', {
      observed: `${hub.connections.size} connection(s)`, expected: '2', idea: 'the hub keeps a registry of its clients',
    }), { within: 1000 });
    alice.send(FrameType.DATA, 'hello all');
    for (const [name, client] of [['alice', alice], ['bob', bob]] as const) {
      const [frame] = await client.waitForFrames(1, `alice's message at ${name}`);
      check(frame!.body.toString() === 'hello all', `${name} got the wrong frame.`, {
        observed: describeFrame(frame!), expected: 'DATA "hello all"', idea: 'DATA from a client goes to every client',
      });
    }
  });

  test('the hub answers PING with PONG', async () => {
    const hub = await start();
    const client = await h.connect(hub.port);
    client.send(FrameType.PING, 'p1');
    const [reply] = await client.waitForFrames(1, 'a PONG for our PING');
    check(reply!.type === FrameType.PONG && reply!.body.toString() === 'p1', 'PING was not answered with PONG.', {
      observed: describeFrame(reply!), expected: 'PONG "p1"', idea: 'PONG echoes the PING body',
    });
  });

  test('a client that breaks the framing gets ERROR and is closed', async () => {
    const hub = await start();
    const client = await h.connect(hub.port);
    await client.write(Buffer.from([0xff, 0xff, 0xff, 0xff, FrameType.DATA]));
    const [reply] = await client.waitForFrames(1, 'an ERROR frame');
    await client.waitClosed('the hub hangs up after a frame it cannot read');
    check(reply!.type === FrameType.ERROR && reply!.body.toString().startsWith('PROTOCOL'), 'The refusal was not an ERROR PROTOCOL frame.', {
      observed: describeFrame(reply!), expected: 'ERROR "PROTOCOL …"', idea: 'once framing is lost, say why and hang up (lesson 02)',
    });
  });

  test('a client that leaves is forgotten', async () => {
    const hub = await start();
    const client = await h.connect(hub.port);
    await connectionOf(hub, client.port);
    client.end();
    await client.waitClosed('the hub closes its side after our FIN');
    await eventually(() => check(hub.connections.size === 0, 'The hub still lists a client that left.', {
      observed: `${hub.connections.size} connection(s) after the only client left`,
      expected: '0',
      idea: "a connection removes itself from the registry on 'close' (lesson 01)",
    }), { within: 500 });
  });

  test('senders waiting on a connection are answered when it closes', async () => {
    const hub = await start();
    const client = await h.connect(hub.port);
    const conn = await connectionOf(hub, client.port);
    // A's source stalls: whatever is sent after A waits behind it.
    const body = gate();
    h.defer(() => body.open());
    const a = watchPromise(hub.stream(conn.id, FrameType.DATA, 10, gatedBody(body.opened, ['0123456789'])));
    await nextTurn();
    const b = watchPromise(hub.stream(conn.id, FrameType.DATA, 5, gatedBody(Promise.resolve(), ['later'])));
    const d = watchPromise(conn.writer.drained());
    // What the hub had handed its socket when the connection closed: A's header (5 bytes)
    // at most, if B waited its turn.
    let handed = 0;
    conn.socket.once('close', () => (handed = conn.socket.bytesWritten));
    // The client goes away while A's source is still stalled.
    client.reset();
    await eventually(() => check(!hub.connections.has(conn.id), 'The hub still lists a client that reset.', {
      observed: `${hub.connections.size} connection(s) after the only client reset`,
      expected: '0',
      idea: "a connection removes itself from the registry on 'close' (lesson 01)",
    }), { within: 1000 });
    await eventually(() => {
      check(b.state !== 'pending' && d.state !== 'pending', 'A sender still waits on a connection that closed.', () => ({
        observed: `the connection closed; the stream() sent after the stalled one is ${b.state}, drained() is ${d.state}`,
        expected: 'both settled: the stream() rejected (its frame will never be sent) or resolved if it was, drained() resolved',
        idea: "a writer that queues owes every sender an answer: on 'close', settle what is still queued, or its senders wait for ever",
      }));
    }, { within: 1000 });
    // B's frame (10 bytes) never reached the socket: it must not be reported as sent.
    const bHanded = handed >= 5 + encode(FrameType.DATA, 'later').length;
    check(b.state === 'rejected' || bHanded, 'A frame that never left was reported as sent.', () => ({
      observed: `the stream() queued behind the stalled one ${b.state === 'resolved' ? 'resolved' : 'is ' + b.state}, though only ${handed} byte(s) had been handed to the socket when the client reset (B's frame is ${encode(FrameType.DATA, 'later').length} bytes)`,
      expected: 'rejected: the connection closed before its turn came',
      idea: "on 'close', what is still queued will never be sent: reject its streams (resolve only the drained() markers)",
    }));
    // The stalled source finally moves: the frame it was part of cannot be finished.
    body.open();
    await eventually(() => {
      check(a.state === 'rejected', 'A streamed frame cut off by the close was reported as sent.', () => ({
        observed: `stream() is ${a.state} after its source moved on a closed connection`,
        expected: 'rejected: the connection closed before its body was written',
        idea: 'a frame is sent whole or not at all; a sender must hear which',
      }));
    }, { within: 1000 });
  });

  test('a reading client receives a long run of large frames whole and in order', async () => {
    const hub = await start();
    const fast = [await bulkClient(hub.port)];
    const conn = await connectionOf(hub, fast[0]!.port);
    await publishNumbered(hub, 32, fast, conn);
    await expectEverything(fast, 32);
  });
});

describe('one frame at a time: a single writer per connection', () => {
  test("a frame sent while a streamed frame's body is on its way waits for it", async () => {
    const hub = await start();
    const client = await h.connect(hub.port);
    const conn = await connectionOf(hub, client.port);
    const parts = ['A: the body of a frame ', 'that a slow source produces'];
    const bodyA = parts.join('');
    const bodyB = 'B: a whole frame sent meanwhile';
    const body = gate();
    // A starts: its header can go out, but its body is not there yet.
    const a = hub.stream(conn.id, FrameType.DATA, bodyA.length, gatedBody(body.opened, parts));
    await nextTurn();
    // B is sent, whole, while A waits for its body.
    hub.send(conn.id, FrameType.DATA, bodyB);
    await nextTurn();
    body.open();
    check('value' in (await settleWithin(a, 1000)), 'The streamed frame was never finished.', {
      observed: 'stream() had not resolved 1000 ms after its body became available',
      expected: 'A is written as soon as its body arrives',
      idea: 'the writer finishes the frame it started before it starts another',
    });
    const total = encode(FrameType.DATA, bodyA).length + encode(FrameType.DATA, bodyB).length;
    const frames = await framesAfter(client, total);
    const ok = frames.length === 2 && !client.protocolError
      && frames[0]!.body.toString() === bodyA && frames[1]!.body.toString() === bodyB;
    check(ok, 'Two frames sent at the same time came out mixed.', {
      observed: `the client decoded ${decoded(client)}\nthe bytes received: ${JSON.stringify(client.received.toString('latin1'))}`,
      expected: `DATA "${bodyA}", DATA "${bodyB}": A was started first, so A whole, then B whole`,
      idea: "A's header went out, then B's whole frame, then A's body: a frame written in two parts with an await between them lets another sender in. One writer per connection, taking one whole frame at a time, keeps them apart",
    });
  });

  test('streamed and whole frames sent together arrive whole, in the order they were sent', async () => {
    const hub = await start();
    const client = await h.connect(hub.port);
    const conn = await connectionOf(hub, client.port);
    const gates = [gate(), gate(), gate()];
    const streamed = ['first streamed body', 'second streamed body, a bit longer', 'third'];
    const sent: string[] = [];
    const streams: Array<Promise<void>> = [];
    for (const [i, text] of streamed.entries()) {
      streams.push(hub.stream(conn.id, FrameType.DATA, text.length, gatedBody(gates[i]!.opened, [text.slice(0, 3), text.slice(3)])));
      sent.push(text);
      if (i < 2) {
        const whole = `whole frame ${i + 1}`;
        hub.send(conn.id, FrameType.DATA, whole);
        sent.push(whole);
      }
    }
    // The sources finish in the opposite order: the last one first.
    for (const g of [...gates].reverse()) {
      g.open();
      await nextTurn();
    }
    check('value' in (await settleWithin(Promise.all(streams), 1000)), 'The streamed frames were never finished.', {
      observed: 'stream() had not resolved 1000 ms after every body became available',
      expected: 'every streamed frame written once its body arrives',
      idea: 'the writer finishes each frame it starts',
    });
    const total = sent.reduce((n, text) => n + encode(FrameType.DATA, text).length, 0);
    const frames = await framesAfter(client, total);
    const ok = !client.protocolError && frames.length === sent.length && frames.every((f, i) => f.body.toString() === sent[i]);
    check(ok, 'Frames from several senders came out mixed.', {
      observed: `the client decoded ${decoded(client)}`,
      expected: sent.map((s) => `DATA "${s}"`).join(', '),
      idea: 'a connection carries one frame at a time: each frame is written whole, by one writer, in the order it was sent',
    });
  });
});

describe('bounded memory: a client that stops reading', () => {
  test("a paused reader's queued bytes stay within maxQueuedBytes", async () => {
    const hub = await start({ maxQueuedBytes: BOUND });
    const slow = await bulkClient(hub.port, { paused: true });
    const conn = await connectionOf(hub, slow.port);
    // 256 frames of 64 KiB: 16.8 MB, far beyond the ~4 MB loopback's kernel buffers absorb.
    let peak = 0;
    let sent = 0;
    for (let seq = 0; seq < 256 && !conn.socket.destroyed; seq++) {
      hub.send(conn.id, FrameType.DATA, numbered(seq));
      sent += FRAME_BYTES;
      peak = Math.max(peak, queued(conn));
      await nextTurn();
      peak = Math.max(peak, queued(conn));
    }
    check(peak <= BOUND, 'The server kept buffering for a client that was not reading.', {
      observed: `${mb(sent)} sent to a paused client; the server held up to ${mb(peak)} for it (writer.queuedBytes / socket.writableLength), with maxQueuedBytes = ${mb(BOUND)}`,
      expected: `never more than maxQueuedBytes (${mb(BOUND)}) waiting for one client`,
      idea: "write() returning false is advice, not a limit: Node buffers everything it is handed. Honour 'drain' with your own queue, and bound that queue",
    });
  });

  test('a client that falls maxQueuedBytes behind is disconnected', async () => {
    const hub = await start({ maxQueuedBytes: BOUND });
    const slow = await bulkClient(hub.port, { paused: true });
    const conn = await connectionOf(hub, slow.port);
    let sent = 0;
    for (let seq = 0; seq < 256 && !conn.socket.destroyed; seq++) {
      hub.send(conn.id, FrameType.DATA, numbered(seq));
      sent += FRAME_BYTES;
      await nextTurn();
    }
    await eventually(() => {
      check(!hub.connections.has(conn.id) && hub.slowConsumersDisconnected === 1, 'A client that fell far behind is still connected.', {
        observed: `${mb(sent)} sent to a client that read nothing; it is ${hub.connections.has(conn.id) ? 'still connected' : 'gone'}, with ${mb(queued(conn))} queued for it; hub.slowConsumersDisconnected = ${hub.slowConsumersDisconnected}`,
        expected: `the slow-consumer policy (disconnect): once ${mb(BOUND)} is waiting for it, the client is cut off and counted`,
        idea: hub.slowConsumersDisconnected > 0
          ? 'the policy ran but the connection is still open: end() sends FIN only after everything queued has flushed, to a client that reads nothing. A slow consumer has to be destroyed (resetAndDestroy() also frees what the kernel holds)'
          : 'a bounded queue needs a policy for when it is full: this hub disconnects the slow consumer (another hub might drop frames); buffering for ever is not a policy',
      });
    }, { within: 300 });
  });

  test('fast clients receive every published frame, in order, while a slow consumer is disconnected', async () => {
    const hub = await start({ maxQueuedBytes: BOUND });
    const slow = await bulkClient(hub.port, { paused: true });
    const slowConn = await connectionOf(hub, slow.port);
    const fast = [await bulkClient(hub.port), await bulkClient(hub.port)];
    // 256 frames: 16.8 MB to each client. The slow one passes the bound after ~5 MB.
    await publishNumbered(hub, 256, fast, slowConn);
    await expectEverything(fast, 256);
    check(!hub.connections.has(slowConn.id) && hub.slowConsumersDisconnected === 1, 'The paused client was never disconnected.', {
      observed: `after ${mb(256 * FRAME_BYTES)} published, the paused client is ${hub.connections.has(slowConn.id) ? 'still connected' : 'gone'} with ${mb(queued(slowConn))} queued for it; slowConsumersDisconnected = ${hub.slowConsumersDisconnected}`,
      expected: `disconnected once ${mb(BOUND)} was waiting for it`,
      idea: 'the slow-consumer policy applies to broadcasts too: the bound is per connection, whoever sends',
    });
  });

  test('a streamed frame offered to a client already maxQueuedBytes behind is refused whole', async () => {
    const hub = await start({ maxQueuedBytes: BOUND });
    const slow = await bulkClient(hub.port, { paused: true });
    const conn = await connectionOf(hub, slow.port);
    // Fill what may wait for the paused client up to the bound, exactly, without passing it.
    let seq = 0;
    for (; seq < 256 && conn.writer.queuedBytes + FRAME_BYTES <= BOUND && !conn.socket.destroyed; seq++) {
      hub.send(conn.id, FrameType.DATA, numbered(seq));
      await nextTurn();
    }
    const room = BOUND - conn.writer.queuedBytes;
    if (room >= 5) hub.send(conn.id, FrameType.DATA, Buffer.alloc(room - 5));
    const before = conn.writer.queuedBytes;
    const disconnectedBefore = hub.slowConsumersDisconnected;
    // Then a streamed frame: its source is only read if the writer accepted the frame.
    let pulled = false;
    async function* source() {
      pulled = true;
      yield Buffer.from('a snapshot');
    }
    const streaming = hub.stream(conn.id, FrameType.DATA, 10, source());
    const s = watchPromise(streaming);
    await settleWithin(streaming, 300);
    check(s.state === 'rejected' && !pulled && hub.slowConsumersDisconnected === disconnectedBefore + 1, 'A streamed frame went past the bound.', () => ({
      observed: `with ${mb(before)} already waiting for a client that reads nothing (${seq} frames sent to it), stream() ${s.state === 'pending' ? 'was still pending after 300 ms (accepted, and queued)' : s.state}, its source was ${pulled ? 'read' : 'never read'}, and the slow-consumer policy ran ${hub.slowConsumersDisconnected - disconnectedBefore} time(s)`,
      expected: `stream() rejected at once, its source never read, and onOverflow called: ${mb(BOUND)} (maxQueuedBytes) was already waiting`,
      idea: "the bound applies to every way of sending: stream() checks it like sendFrame(), before any byte of the frame is accepted, and a frame that does not fit is refused whole",
    }));
  });
});

describe('backpressure, done right: waiting, resuming, and telling the truth', () => {
  test("a streamed frame cut off by a reset while its last chunk waits for 'drain' is reported as not sent", async () => {
    const hub = await start();
    const client = await h.connect(hub.port);
    client.socket.pause();
    const conn = await connectionOf(hub, client.port);
    const hwm = conn.socket.writableHighWaterMark;
    // Snapshots of one 64 KiB chunk each (its last chunk), one per turn, until the kernel's
    // buffers for this client are full and a snapshot's chunk waits in the socket's buffer.
    const streams: Array<Watched<void>> = [];
    const waiting = () => streams.filter((w) => w.state === 'pending').length;
    while (streams.length < 256 && !conn.socket.destroyed) {
      streams.push(watchPromise(hub.stream(conn.id, FrameType.DATA, BODY_BYTES, gatedBuffers(Promise.resolve(), [Buffer.alloc(BODY_BYTES)]))));
      await nextTurn();
      if (conn.socket.writableLength > 0 && (waiting() > 0 || conn.socket.writableLength >= hwm)) break;
    }
    // Let it settle: nothing moves while the client reads nothing.
    let last = '';
    await eventually(() => {
      const now = `${conn.socket.writableLength}/${waiting()}`;
      const same = now === last;
      last = now;
      check(same, 'The socket kept moving for a client that reads nothing.', {
        observed: `the socket's buffer holds ${conn.socket.writableLength} bytes; ${waiting()} stream() call(s) pending`,
        expected: 'a steady state once the kernel is full', idea: "write() returns false once the kernel's buffers for a client are full",
      });
    }, { within: 1000, every: 50 });
    const stuck = conn.socket.writableLength;
    const pending = streams.filter((w) => w.state === 'pending');
    check(pending.length > 0 || stuck < hwm, 'stream() finished while its last chunk was still waiting in the socket.', () => ({
      observed: `all ${streams.length} stream() calls resolved while ${kib(stuck)} of their chunks sat in the socket's buffer (write() had returned false) and the client read nothing`,
      expected: "the last one still pending: its chunk waits for 'drain' before the frame counts as sent",
      idea: "write() returning false is advice: a stream that moves on without waiting for 'drain' pulls its whole source into memory, and claims bytes are sent that have not left",
    }));
    // The client goes away: whatever still waits in the socket's buffer is never sent.
    client.reset();
    await eventually(() => {
      const resolved = pending.filter((w) => w.state === 'resolved').length;
      const still = pending.filter((w) => w.state === 'pending').length;
      check(resolved === 0 && still === 0, resolved ? 'A streamed frame dropped by a reset was reported as sent.' : 'stream() never settled after the client reset.', () => ({
        observed: resolved
          ? `${resolved} stream() call(s) pending when the client reset, with ${kib(stuck)} of the last chunk still in the socket's buffer, then resolved (as if sent)`
          : `${still} stream() call(s) still pending 1000 ms after the client reset, one of them waiting for 'drain' with ${kib(stuck)} in the socket's buffer`,
        expected: 'every stream() still pending at the reset rejected: the connection closed before its frame was written',
        idea: resolved
          ? "'close' instead of 'drain' (or a write callback that Node calls without an error on a destroyed socket) means the bytes still in the socket's buffer were dropped: a frame cut off is a failure, even at its last chunk"
          : "a wait for 'drain' must race 'close': a dead peer never drains, and its sender waits for ever",
      }));
    }, { within: 1000 });
  });

  test("a frame sent after 'drain' emptied the queue goes out at once", async () => {
    const { hub, client, conn } = await pausedWithKernelFull();
    // The kernel is full: the first frame goes to the socket's buffer, the second waits
    // in the writer's queue for 'drain'. Then the client reads everything.
    hub.send(conn.id, FrameType.DATA, Buffer.alloc(64 * 1024));
    hub.send(conn.id, FrameType.DATA, Buffer.alloc(64 * 1024));
    await nextTurn();
    client.socket.resume();
    await eventually(() => check(conn.writer.queuedBytes === 0 && client.receivedBytes >= conn.socket.bytesWritten, 'A client that read again did not receive what was waiting for it.', {
      observed: `${client.receivedBytes} of ${conn.socket.bytesWritten} bytes arrived after the client read again; the writer still holds ${conn.writer.queuedBytes} bytes`,
      expected: 'everything, and an empty writer',
      idea: "after 'drain' the writer carries on",
    }), { within: 1000 });
    const frames = client.frames.length;
    hub.send(conn.id, FrameType.DATA, 'after the drain');
    await eventually(() => check(client.frames.length > frames, "A frame sent after 'drain' was never written.", {
      observed: `the client caught up (${frames} frames), then one more was sent to an idle writer; 1000 ms later it has not arrived (writer.queuedBytes = ${conn.writer.queuedBytes})`,
      expected: 'the frame written at once: nothing else was waiting',
      idea: "a writer that waited for 'drain' must be ready to write again once it came, even with its queue empty",
    }), { within: 1000 });
  });

  test("drained() waits for 'drain' after a frame the socket could not take at once", async () => {
    const { hub, client, conn } = await pausedWithKernelFull();
    // The writer holds nothing and the kernel is full: this frame goes straight to the
    // socket's buffer, and write() returns false. Nothing waits in the writer's queue.
    hub.send(conn.id, FrameType.DATA, Buffer.alloc(64 * 1024));
    const drained = conn.writer.drained();
    const d = watchPromise(drained);
    await settleWithin(drained, 200);
    check(d.state === 'pending', "drained() resolved while the socket's buffer was still full.", () => ({
      observed: `drained() ${d.state} at once, with ${kib(conn.socket.writableLength)} in the socket's buffer (socket.writableNeedDrain = ${conn.socket.writableNeedDrain}) for a client that reads nothing`,
      expected: "pending until 'drain' (or the close): the socket's buffer is past its high-water mark",
      idea: "an empty queue is not a drained connection: a frame written straight to the socket may have filled its buffer, so drained() (and the loop, before its next write) waits for the 'drain' that write() promised",
    }));
    client.socket.resume();
    await eventually(() => check(d.state === 'resolved', "drained() never resolved after the client read again.", {
      observed: `drained() is ${d.state}; the socket's buffer holds ${kib(conn.socket.writableLength)}`,
      expected: "resolved on 'drain'",
      idea: "drained() resolves on the socket's 'drain' (or its close)",
    }), { within: 1000 });
  });

  test('a client that stops reading, then reads again, receives everything whole and in order', async () => {
    const hub = await start({ maxQueuedBytes: 64 * 1024 * 1024 });
    const slow = await bulkClient(hub.port, { paused: true });
    const conn = await connectionOf(hub, slow.port);
    const listeners = () => ({ close: conn.socket.listenerCount('close'), drain: conn.socket.listenerCount('drain') });
    const before = listeners();
    // 96 frames, 6.3 MB: the kernel's ~4 MB fill, the rest waits in the writer's queue.
    let seq = 0;
    for (; seq < 96; seq++) {
      hub.send(conn.id, FrameType.DATA, numbered(seq));
      await nextTurn();
    }
    // A streamed frame whose body comes later, then whole frames behind it.
    const body = gate();
    h.defer(() => body.open());
    const whole = numbered(seq++);
    const streamed = watchPromise(hub.stream(conn.id, FrameType.DATA, BODY_BYTES, gatedBuffers(body.opened, [whole.subarray(0, 1000), whole.subarray(1000)])));
    for (; seq < 100; seq++) hub.send(conn.id, FrameType.DATA, numbered(seq));
    // The client reads again: the writer must pick up where 'drain' left it.
    slow.socket.resume();
    await eventually(() => check(slow.frames >= 90 || !!slow.broken || slow.closed, 'A client that read again did not catch up.', {
      observed: `${slow.frames} of the 96 frames queued before it resumed arrived`,
      expected: "the frames waiting for it, sent as 'drain' allows",
      idea: "after 'drain' the writer carries on with its queue",
    }), { within: 2000 });
    body.open();
    await eventually(() => check(streamed.settled, 'A streamed frame was never finished after the client caught up.', {
      observed: `stream() is ${streamed.state}; the client received ${slow.frames} frames`,
      expected: 'the streamed frame written once its body arrived',
      idea: 'the writer finishes each frame it starts',
    }), { within: 2000 });
    // The queue has emptied: the writer is idle. Frames sent now must go out too.
    await eventually(() => check(slow.frames >= 100 || !!slow.broken || slow.closed, 'Frames queued while the client was paused never all arrived.', {
      observed: `${slow.frames} of 100 frames arrived after the client read again`,
      expected: 'all 100',
      idea: "after 'drain' the writer carries on with its queue until it is empty",
    }), { within: 2000 });
    for (; seq < 132; seq++) {
      hub.send(conn.id, FrameType.DATA, numbered(seq));
      await nextTurn();
    }
    await expectEverything([slow], 132);
    // Every wait for 'drain' cleaned up after itself: a connection's listeners do not grow with its traffic.
    await eventually(() => {
      const after = listeners();
      check(after.close <= before.close && after.drain <= before.drain, "Listeners pile up on a connection that waits for 'drain'.", {
        observed: `after 132 frames (each a wait for 'drain'), the socket has ${after.close} 'close' and ${after.drain} 'drain' listener(s); it had ${before.close} and ${before.drain} when it connected`,
        expected: 'as many as when it connected',
        idea: "a wait that races 'drain' against 'close' must remove both listeners when either fires: once() removes only the one that fired, and the other stays for the life of the connection",
      });
    }, { within: 500 });
  });

  test('a slow client behind by many small frames, but fewer bytes than maxQueuedBytes, stays connected', async () => {
    const hub = await start({ maxQueuedBytes: BOUND });
    const client = await h.connect(hub.port);
    client.socket.pause();
    const conn = await connectionOf(hub, client.port);
    await fillKernel(hub, conn);
    // 8192 frames of 37 bytes: 303 KB, well under the 1 MiB bound, but many frames.
    const tiny = encode(FrameType.DATA, Buffer.alloc(32));
    const count = 8192;
    for (let i = 0; i < count; i++) hub.send(conn.id, FrameType.DATA, Buffer.alloc(32));
    await nextTurn();
    const added = count * tiny.length;
    check(hub.connections.has(conn.id) && !conn.socket.destroyed && hub.slowConsumersDisconnected === 0, 'A client under the byte bound was disconnected.', () => ({
      observed: `after ${count} frames of ${tiny.length} bytes (${kib(added)}), the client is ${conn.socket.destroyed ? 'disconnected' : 'connected'}; slowConsumersDisconnected = ${hub.slowConsumersDisconnected}`,
      expected: `still connected: ${kib(added)} plus what the socket holds is under maxQueuedBytes (${kib(BOUND)})`,
      idea: 'memory is bytes, not frames: bound the queue by the bytes it holds, so many small frames are fine and a few huge ones are not',
    }));
    check(conn.writer.queuedBytes >= added, 'queuedBytes does not count the frames waiting in the writer.', () => ({
      observed: `writer.queuedBytes = ${conn.writer.queuedBytes} bytes while ${count} frames (${added} bytes) wait for a client that reads nothing (socket.writableLength = ${conn.socket.writableLength})`,
      expected: `at least ${added} bytes: the writer's own queue plus the socket's buffer`,
      idea: "the socket's buffer is only part of what waits: the frames your writer holds back for 'drain' cost memory too, and the bound must count them",
    }));
  });

  test('a streamed frame larger than maxQueuedBytes reaches a client that reads', async () => {
    const bound = 256 * 1024;
    const hub = await start({ maxQueuedBytes: bound });
    const client = await h.connect(hub.port);
    const conn = await connectionOf(hub, client.port);
    const LENGTH = 1024 * 1024 - 1;
    async function* bigSnapshot() {
      for (let sent = 0; sent < LENGTH; sent += 64 * 1024) {
        await nextTurn();
        yield Buffer.alloc(Math.min(64 * 1024, LENGTH - sent), 0x62);
      }
    }
    const s = watchPromise(hub.stream(conn.id, FrameType.DATA, LENGTH, bigSnapshot()));
    await eventually(() => check(s.state === 'resolved' && client.frames.length === 1, 'A large streamed frame did not reach a client that reads.', () => ({
      observed: `stream() of a ${kib(LENGTH)} body with maxQueuedBytes = ${kib(bound)}: ${s.state}${s.error ? ` (${s.error.message})` : ''}; the client got ${client.frames.length} frame(s), ${kib(client.receivedBytes)}; slowConsumersDisconnected = ${hub.slowConsumersDisconnected}`,
      expected: 'the frame delivered, the client still connected',
      idea: "a streamed body is never held whole: only its header waits in the queue, and its chunks pass one 'drain' at a time, so the bound limits what waits, not how big a streamed frame may be",
    })), { within: 2000 });
    check(client.frames[0]!.body.length === LENGTH, 'The large streamed frame arrived wrong.', {
      observed: describeFrame(client.frames[0]!), expected: `DATA with ${LENGTH} bytes`, idea: 'a streamed frame arrives whole',
    });
  });
});

describe('a broadcast never waits for the slowest client', () => {
  test("a broadcast reaches fast clients while a paused client's buffers are full", async () => {
    // A bound far above what this test sends: the paused client stays connected, with a
    // full socket buffer and frames waiting in its queue.
    const hub = await start({ maxQueuedBytes: 64 * 1024 * 1024 });
    // The paused client connects first, so a broadcast that visits clients in turn meets it first.
    const slow = await bulkClient(hub.port, { paused: true });
    const slowConn = await connectionOf(hub, slow.port);
    const fast = [await bulkClient(hub.port), await bulkClient(hub.port)];
    // 160 frames: 10.5 MB to each client, well past the ~4 MB the kernel holds for the paused one.
    await publishNumbered(hub, 160, fast, slowConn);
    await expectEverything(fast, 160);
    check(hub.connections.has(slowConn.id) && slowConn.socket.writableNeedDrain, 'The paused client was not left with a full buffer.', {
      observed: `the paused client is ${hub.connections.has(slowConn.id) ? 'connected' : 'gone'}, with ${backlog(slowConn)}`,
      expected: 'still connected (it is under maxQueuedBytes), with frames waiting for it',
      idea: 'a slow client under the bound keeps its place; its frames wait in its own queue',
    });
  });
});

describe('every path, every client', () => {
  test('every slow consumer is disconnected, not only the first', async () => {
    // A bound smaller than one frame: a frame that does not fit overflows at once, with no
    // need to fill the kernel's buffers first.
    const bound = 1024;
    const hub = await start({ maxQueuedBytes: bound });
    const clients = [await h.connect(hub.port), await h.connect(hub.port), await h.connect(hub.port)];
    const conns: HubConnection[] = [];
    for (const c of clients) conns.push(await connectionOf(hub, c.port));
    for (const conn of conns) hub.send(conn.id, FrameType.DATA, Buffer.alloc(2 * bound));
    await eventually(() => {
      const left = conns.filter((c) => hub.connections.has(c.id)).length;
      const title = hub.slowConsumersDisconnected === 0 ? 'A frame larger than maxQueuedBytes was accepted.' : 'Only the first slow consumer was disconnected.';
      check(left === 0 && hub.slowConsumersDisconnected === 3, title, {
        observed: `3 clients were each offered a frame larger than maxQueuedBytes (${bound} bytes); ${3 - left} disconnected, ${left} still connected; slowConsumersDisconnected = ${hub.slowConsumersDisconnected}`,
        expected: 'all 3 disconnected and counted: the policy applies to each connection that overflows',
        idea: hub.slowConsumersDisconnected === 0
          ? 'the bound holds whether or not write() has returned false yet: a frame that would put more than maxQueuedBytes in wait is refused, and the policy runs'
          : 'slow-consumer state (a guard against disconnecting twice) belongs to the connection, not the hub: kept per hub, it lets every later slow consumer stay with silent gaps',
      });
    }, { within: 500 });
  });

  test("a protocol error's ERROR waits its turn behind a streamed frame, then the hub hangs up", async () => {
    const hub = await start();
    const client = await h.connect(hub.port);
    const conn = await connectionOf(hub, client.port);
    const body = gate();
    h.defer(() => body.open());
    const text = 'a snapshot that was on its way';
    const streaming = watchPromise(hub.stream(conn.id, FrameType.DATA, text.length, gatedBody(body.opened, [text])));
    await nextTurn();
    // The client breaks the framing while the streamed frame waits for its body.
    await client.write(Buffer.from([0xff, 0xff, 0xff, 0xff, FrameType.DATA]));
    await eventually(() => check(!!client.received.length, 'The streamed frame never started.', {
      observed: 'no bytes', expected: "the streamed frame's header", idea: 'a streamed frame starts with its header',
    }), { within: 500 });
    await nextTurn();
    body.open();
    await client.waitClosed('the hub hangs up after a frame it cannot read');
    const ok = client.frames.length === 2 && client.frames[0]!.body.toString() === text
      && client.frames[1]!.type === FrameType.ERROR && client.frames[1]!.body.toString().startsWith('PROTOCOL');
    check(ok, 'The ERROR frame was lost behind a streamed frame.', {
      observed: `the client decoded ${decoded(client)} before the connection closed (stream() ${streaming.state})`,
      expected: `DATA "${text}", then ERROR "PROTOCOL …", then the close`,
      idea: "socket.end() flushes only what was handed to the socket: an ERROR still in the writer's queue is written after end() and lost. Hang up once the writer has drained (drained().then(end))",
    });
  });

  test('a streamed frame whose source fails or falls short closes the connection', async () => {
    const hub = await start();
    const cases = [
      { name: 'a source that throws after 4 of 10 bytes', source: async function* () { yield Buffer.from('0123'); await nextTurn(); throw new Error('upstream went away'); } },
      { name: 'a source that ends after 4 of 10 bytes', source: async function* () { yield Buffer.from('0123'); } },
    ];
    for (const { name, source } of cases) {
      const client = await h.connect(hub.port);
      const conn = await connectionOf(hub, client.port);
      const s = watchPromise(hub.stream(conn.id, FrameType.DATA, 10, source()));
      await eventually(() => check(s.settled, `stream() never settled for ${name}.`, {
        observed: `stream() ${s.state}`, expected: 'rejected', idea: 'a sender hears whether its frame was sent',
      }), { within: 1000 });
      // What a careless writer would send next: it would land inside the broken frame.
      hub.send(conn.id, FrameType.DATA, 'next');
      const closed = await settleWithin(client.waitClosed('the hub cuts a connection whose frame it cannot finish'), 500);
      check(s.state === 'rejected' && 'value' in closed, `A frame cut short left the connection open (${name}).`, () => ({
        observed: `with ${name}: stream() ${s.state}${s.error ? ` (${s.error.message})` : ''}; the connection is ${'value' in closed ? 'closed' : 'still open 500 ms later'}; the client decoded ${decoded(client)}`,
        expected: 'stream() rejected and the connection closed: 5 + 4 bytes of a 15-byte frame are on the wire and the rest will never come',
        idea: 'a header promises a length: if the body cannot be finished (the source failed or ended early), the stream is broken, and only closing the connection stops the peer reading the next frames as the rest of this one',
      }));
    }
  });

  test('frames queued behind a slow streamed body count against the bound', async () => {
    // A client that reads: write() never returns false. Only the stream's source is slow.
    const bound = 64 * 1024;
    const hub = await start({ maxQueuedBytes: bound });
    const client = await h.connect(hub.port);
    const conn = await connectionOf(hub, client.port);
    const body = gate();
    h.defer(() => body.open());
    const streaming = hub.stream(conn.id, FrameType.DATA, 4, gatedBody(body.opened, ['body']));
    streaming.catch(() => {});
    await nextTurn();
    let peak = 0;
    let offered = 0;
    for (let i = 0; i < 32 && !conn.socket.destroyed; i++) {
      hub.send(conn.id, FrameType.DATA, Buffer.alloc(8 * 1024));
      offered += 8 * 1024;
      peak = Math.max(peak, conn.writer.queuedBytes);
    }
    check(peak <= bound && hub.slowConsumersDisconnected === 1, 'Frames piled up behind a stalled stream past the bound.', {
      observed: `${kib(offered)} offered behind a streamed frame whose body had not arrived (write() never returned false: socket.writableNeedDrain = ${conn.socket.writableNeedDrain}); writer.queuedBytes reached ${kib(peak)}; slowConsumersDisconnected = ${hub.slowConsumersDisconnected}`,
      expected: `never more than maxQueuedBytes (${kib(bound)}), and the policy applied once the next frame did not fit`,
      idea: "the bound counts what waits, whatever it waits for: a queue behind a slow source grows as surely as one behind a slow reader, though write() has never said false",
    });
  });

  test('queuedBytes is back to 0 once everything was written', async () => {
    const hub = await start();
    const client = await h.connect(hub.port);
    const conn = await connectionOf(hub, client.port);
    let total = 0;
    for (let i = 0; i < 20; i++) {
      const text = `part ${i}`;
      if (i % 2) await hub.stream(conn.id, FrameType.DATA, text.length, gatedBody(Promise.resolve(), [text.slice(0, 2), text.slice(2)]));
      else hub.send(conn.id, FrameType.DATA, text);
      total += encode(FrameType.DATA, text).length;
    }
    await framesAfter(client, total);
    await eventually(() => check(conn.writer.queuedBytes === 0, 'queuedBytes does not come back to 0.', () => ({
      observed: `the client received all 20 frames (10 whole, 10 streamed); writer.queuedBytes = ${conn.writer.queuedBytes} (socket.writableLength = ${conn.socket.writableLength})`,
      expected: '0: nothing waits any more',
      idea: 'every byte counted when a frame is queued must be uncounted when it is written, on every path (a streamed header too): a count that drifts up cuts off, one day, a client that reads everything',
    })), { within: 500 });
  });
});
