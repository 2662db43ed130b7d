// Self-tests of the fault-injection proxy (runtime/faults/proxy.ts). Every fault runs on
// real sockets on 127.0.0.1; waits are eventually() on facts, never sleeps; timings are
// checked only as generous bounds. The harness checks for leaks after each test.
import net from 'node:net';
import { once } from 'node:events';
import { randomBytes } from 'node:crypto';
import { describe, expect, it } from 'vitest';
import { eventually, fail, isClean, LeakProbe, LessonFailure, TestClient, useHarness } from '../../runtime/harness/index.ts';
import { createRandom, startFaultProxy, withTimeline, type FaultProxy } from '../../runtime/faults/proxy.ts';

const h = useHarness('runtime');

interface Upstream {
  port: number;
  /** One recorder per accepted connection, in accept order: what the server's end saw. */
  peers: TestClient[];
  stop(): Promise<void>;
}

/** The server behind the proxy: records each connection (a TestClient on the accepted socket) and can echo. */
async function startServer({ echo = false, allowHalfOpen = false } = {}): Promise<Upstream> {
  const peers: TestClient[] = [];
  const server = net.createServer({ noDelay: true, allowHalfOpen }, (socket) => {
    peers.push(new TestClient(socket));
    if (echo) socket.on('data', (chunk) => socket.write(chunk));
  });
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  return h.track({
    port: (server.address() as net.AddressInfo).port,
    peers,
    stop: async () => {
      for (const peer of peers) peer.destroy();
      await new Promise<void>((resolve) => server.close(() => resolve()));
    },
  });
}

async function startBoth(server: { echo?: boolean; allowHalfOpen?: boolean } = {}, seed?: number) {
  const upstream = await startServer(server);
  const proxy = h.track(await startFaultProxy({ upstreamPort: upstream.port, ...(seed === undefined ? {} : { seed }) }));
  return { upstream, proxy };
}

/** A client through the proxy, and the server's end of the same connection. */
async function connectThrough(proxy: FaultProxy, upstream: Upstream, options: { allowHalfOpen?: boolean } = {}) {
  const n = upstream.peers.length;
  const client = await h.connect(proxy.port, options);
  const peer = await eventually(
    () =>
      upstream.peers[n] ??
      fail('The server never saw the connection.', {
        observed: `the client connected to the proxy, but the server has accepted only ${n} connection(s)`,
        expected: 'the proxy dials the server for every client it accepts',
        idea: 'a proxy is two connections glued together',
      }),
    { within: 1000 },
  );
  return { client, peer };
}

/** Size and arrival time of every 'data' event on a socket. */
function recordChunks(socket: net.Socket) {
  const chunks: Array<{ size: number; at: number }> = [];
  socket.on('data', (chunk: Buffer) => chunks.push({ size: chunk.length, at: performance.now() }));
  return chunks;
}

const text = (client: TestClient) => client.received.toString();

describe('fault proxy: no faults', () => {
  it('forwards bytes both ways unchanged', async () => {
    const { upstream, proxy } = await startBoth({ echo: true });
    const { client, peer } = await connectThrough(proxy, upstream);
    // Big enough to cross many reads and the proxy's flow control.
    const payload = randomBytes(300_000);
    client.socket.write(payload);
    await eventually(() => expect(client.received.length).toBe(payload.length), { within: 2000 });
    expect(peer.received.equals(payload)).toBe(true);
    expect(client.received.equals(payload)).toBe(true);
    expect(proxy.connections).toBe(1);
  });

  it('passes a FIN on as a FIN, and the other way keeps flowing (half-close)', async () => {
    const { upstream, proxy } = await startBoth({ allowHalfOpen: true });
    const { client, peer } = await connectThrough(proxy, upstream, { allowHalfOpen: true });
    client.socket.end('request');
    await eventually(() => expect({ got: text(peer), fin: peer.ended }).toEqual({ got: 'request', fin: true }), { within: 1000 });
    // The server still answers on its half, then closes it.
    peer.socket.end('reply');
    await eventually(() => expect({ got: text(client), fin: client.ended, closed: client.closed }).toEqual({ got: 'reply', fin: true, closed: true }), { within: 1000 });
    expect([client.error, peer.error]).toEqual([undefined, undefined]);
    await eventually(() => expect(proxy.connections).toBe(0), { within: 1000 });
  });

  it('passes an RST on as an RST, both ways', async () => {
    const { upstream, proxy } = await startBoth();
    const first = await connectThrough(proxy, upstream);
    first.client.reset();
    await eventually(() => expect(first.peer.error?.code).toBe('ECONNRESET'), { within: 1000 });

    const second = await connectThrough(proxy, upstream);
    second.peer.reset();
    await eventually(() => expect(second.client.error?.code).toBe('ECONNRESET'), { within: 1000 });
    await eventually(() => expect(proxy.connections).toBe(0), { within: 1000 });
  });

  it('answers with an RST when the server refuses the connection', async () => {
    // A port that was just released: nothing listens there.
    const gone = await startServer();
    await gone.stop();
    const proxy = h.track(await startFaultProxy({ upstreamPort: gone.port }));
    const client = await h.connect(proxy.port);
    await eventually(() => expect(client.error?.code).toBe('ECONNRESET'), { within: 1000 });
    expect(proxy.timeline.format()).toMatch(/#1   server error ECONNREFUSED\n.*#1   RST → client/);
    await eventually(() => expect(proxy.connections).toBe(0), { within: 1000 });
  });
});

describe('fault proxy: faults', () => {
  it('slicer: the receiver gets the bytes in pieces of n, delayMs apart', async () => {
    const { upstream, proxy } = await startBoth();
    proxy.add({ kind: 'slicer', bytes: 4, delayMs: 5, direction: 'downstream' });
    const { client, peer } = await connectThrough(proxy, upstream);
    const chunks = recordChunks(client.socket);
    const writtenAt = performance.now();
    peer.socket.write('abcdefghijklmnopqrst');
    await eventually(() => expect(text(client)).toBe('abcdefghijklmnopqrst'), { within: 1000 });
    // Usually [4, 4, 4, 4, 4]. On a loaded machine two pieces can wait in the kernel and be
    // read as one, so: whole pieces only, and the fifth no sooner than four delays after
    // the write (a slicer of 8 would be done after two).
    expect(chunks.map((c) => c.size % 4)).toEqual(chunks.map(() => 0));
    expect(chunks.at(-1)!.at - writtenAt).toBeGreaterThanOrEqual(4 * 5 - 2);
  });

  it('latency: bytes arrive no sooner than ms later', async () => {
    const { upstream, proxy } = await startBoth({ echo: true });
    proxy.add({ kind: 'latency', ms: 60, direction: 'downstream' });
    const { client } = await connectThrough(proxy, upstream);
    const chunks = recordChunks(client.socket);
    const sentAt = performance.now();
    client.socket.write('ping');
    await eventually(() => expect(text(client)).toBe('ping'), { within: 2000 });
    const took = chunks[0]!.at - sentAt;
    expect(took).toBeGreaterThanOrEqual(60 - 2);
    expect(took).toBeLessThan(60 + 1000);
  });

  it('latency with jitter keeps the bytes in order, and the seed replays the jitter', async () => {
    const { upstream, proxy } = await startBoth({ echo: true }, 42);
    proxy.add({ kind: 'latency', ms: 10, jitterMs: 10 });
    const { client } = await connectThrough(proxy, upstream);
    let sent = '';
    for (let i = 0; i < 40; i++) {
      sent += `${i},`;
      client.socket.write(`${i},`);
      // One write per turn of the event loop, so the proxy reads them as separate chunks,
      // each with its own jitter.
      await new Promise((resolve) => setImmediate(resolve));
    }
    await eventually(() => expect(text(client)).toBe(sent), { within: 2000 });
    expect(proxy.timeline.format()).toContain('latency 10 ms ± 10 ms (seed 42), both');

    const replay = (seed: number) => Array.from({ length: 5 }, createRandom(seed));
    expect(replay(42)).toEqual(replay(42));
    expect(replay(42)).not.toEqual(replay(43));
  });

  it('bandwidth: K bytes take at least K / rate seconds', async () => {
    const { upstream, proxy } = await startBoth();
    proxy.add({ kind: 'bandwidth', bytesPerSecond: 20_000, direction: 'upstream' });
    const { client, peer } = await connectThrough(proxy, upstream);
    const chunks = recordChunks(peer.socket);
    const sentAt = performance.now();
    client.socket.write(randomBytes(4000));
    await eventually(() => expect(peer.received.length).toBe(4000), { within: 2000 });
    const took = chunks.at(-1)!.at - sentAt;
    expect(took).toBeGreaterThanOrEqual((4000 / 20_000) * 1000 - 2);
    expect(took).toBeLessThan(1500);
  });

  it('blackhole: neither side sees data, FIN or error while the other writes and ends', async () => {
    const { upstream, proxy } = await startBoth();
    const { client, peer } = await connectThrough(proxy, upstream);
    client.socket.write('hi');
    peer.socket.write('yo');
    await eventually(() => expect([text(client), text(peer)]).toEqual(['yo', 'hi']), { within: 1000 });

    proxy.add({ kind: 'blackhole' });
    client.socket.end('lost');
    peer.socket.end('gone');
    // Wait for the proxy to have swallowed both, so the checks below cannot be early.
    await eventually(() => {
      const timeline = proxy.timeline.format();
      expect(timeline).toMatch(/client → server {3}4 B dropped/);
      expect(timeline).toMatch(/server → client {3}4 B dropped/);
      expect(timeline).toContain('client → server   FIN dropped (blackhole)');
      expect(timeline).toContain('server → client   FIN dropped (blackhole)');
    }, { within: 1000 });
    for (const side of [client, peer]) {
      expect({ ended: side.ended, error: side.error, closed: side.closed }).toEqual({ ended: false, error: undefined, closed: false });
    }
    expect([text(client), text(peer)]).toEqual(['yo', 'hi']);
    expect(proxy.connections).toBe(1);
    // No FIN gets through a blackhole, so no polite close can finish: the peers must give
    // up on their own (that is what idle timeouts are for).
    client.destroy();
    peer.destroy();
  });

  it('blackhole: removing it restores the flow, but the dropped bytes stay lost', async () => {
    const { upstream, proxy } = await startBoth({ echo: true });
    const { client, peer } = await connectThrough(proxy, upstream);
    client.socket.write('a');
    await eventually(() => expect(text(client)).toBe('a'), { within: 1000 });

    const hole = proxy.add({ kind: 'blackhole' });
    client.socket.write('lost');
    await eventually(() => expect(proxy.timeline.format()).toMatch(/client → server {3}4 B dropped/), { within: 1000 });
    proxy.remove(hole);
    client.socket.write('found');
    await eventually(() => expect(text(client)).toBe('afound'), { within: 1000 });
    expect(text(peer)).toBe('afound');
  });

  it('reset: both sides get ECONNRESET at once, and so does a new connection while it is on', async () => {
    const { upstream, proxy } = await startBoth({ echo: true });
    const { client, peer } = await connectThrough(proxy, upstream);
    const reset = proxy.add({ kind: 'reset' });
    await eventually(() => {
      expect([client.error?.code, peer.error?.code]).toEqual(['ECONNRESET', 'ECONNRESET']);
      expect([client.closed, peer.closed]).toEqual([true, true]);
    }, { within: 1000 });

    const late = await h.connect(proxy.port);
    await eventually(() => expect(late.error?.code).toBe('ECONNRESET'), { within: 1000 });
    await eventually(() => expect(proxy.connections).toBe(0), { within: 1000 });

    proxy.remove(reset);
    const after = await h.connect(proxy.port);
    after.socket.write('ok');
    await eventually(() => expect(text(after)).toBe('ok'), { within: 1000 });
  });

  it('limitData: exactly N bytes arrive, then FIN on both sides', async () => {
    const { upstream, proxy } = await startBoth();
    proxy.add({ kind: 'limitData', bytes: 10, direction: 'upstream' });
    const { client, peer } = await connectThrough(proxy, upstream);
    client.socket.write('abcdefghijklmnopqrstuvwxy');
    await eventually(() => expect([peer.ended, client.ended]).toEqual([true, true]), { within: 1000 });
    // No 'data' can follow 'end': what the server has now is all it will ever get.
    expect(text(peer)).toBe('abcdefghij');
    expect([client.error, peer.error]).toEqual([undefined, undefined]);
    await eventually(() => expect(proxy.connections).toBe(0), { within: 1000 });
  });

  it('a fault added while a connection is open applies to it; removing it releases what it held', async () => {
    const { upstream, proxy } = await startBoth({ echo: true });
    const { client, peer } = await connectThrough(proxy, upstream);
    client.socket.write('a');
    await eventually(() => expect(text(client)).toBe('a'), { within: 1000 });

    // Toxiproxy #148: there, a connection opened before the toxic escapes it.
    const slow = proxy.add({ kind: 'latency', ms: 10_000, direction: 'downstream' });
    client.socket.write('b');
    await eventually(() => expect([text(peer), proxy.heldBytes]).toEqual(['ab', 1]), { within: 1000 });
    expect(text(client)).toBe('a');
    // Without the removal the 'b' would need 10 s.
    proxy.remove(slow);
    await eventually(() => expect(text(client)).toBe('ab'), { within: 1000 });
  });
});

describe('fault proxy: timeline and stop', () => {
  it('the timeline shows connects, coalesced bytes, FINs and faults, with the seed', async () => {
    const { upstream, proxy } = await startBoth({ echo: true }, 7);
    const slicer = proxy.add({ kind: 'slicer', bytes: 1, direction: 'upstream' });
    const { client } = await connectThrough(proxy, upstream);
    client.socket.write('hello');
    await eventually(() => expect(text(client)).toBe('hello'), { within: 1000 });
    client.end();
    await eventually(() => expect(proxy.connections).toBe(0), { within: 1000 });
    proxy.remove(slicer);

    const timeline = proxy.timeline.format();
    const lines = timeline.split('\n');
    expect(lines[0]).toMatch(/^ +\+\d+\.\d ms +proxy 127\.0\.0\.1:\d+ → 127\.0\.0\.1:\d+, seed 7$/);
    expect(timeline).toMatch(/^ +\+\d+\.\d ms {7}fault 1 on: slicer 1 B pieces, 0 ms apart, upstream$/m);
    expect(timeline).toMatch(/^ +\+\d+\.\d ms  #1   client connected$/m);
    // Five one-byte pieces, one line.
    expect(timeline).toMatch(/^ +\+\d+\.\d ms  #1   client → server {3}5 B in 5 chunks over \d+\.\d ms$/m);
    expect(timeline).toMatch(/^ +\+\d+\.\d ms  #1   server → client {3}5 B( in \d chunks over \d+\.\d ms)?$/m);
    expect(timeline).toMatch(/#1   client → server {3}FIN/);
    expect(timeline).toMatch(/#1   server → client {3}FIN/);
    expect(timeline).toMatch(/#1   closed$/m);
    expect(timeline).toMatch(/fault 1 off: slicer/);
    expect(lines.length).toBeLessThanOrEqual(12);
  });

  it('withTimeline appends the timeline to a failure and keeps its class', async () => {
    const { proxy } = await startBoth();
    expect(await withTimeline(proxy, async () => 42)).toBe(42);

    const err = await withTimeline(proxy, () =>
      fail('The server never answered.', { observed: 'silence', expected: 'a PONG', idea: 'heartbeats' }),
    ).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(LessonFailure);
    const failure = err as LessonFailure;
    expect(failure.name).toBe('LessonFailure');
    expect(failure.message).toMatch(/^The server never answered\.\n[\s\S]*\n\nproxy timeline:\n +\+\d+\.\d ms +proxy 127\.0\.0\.1/);
    expect(failure.stack).toContain('proxy timeline:');
  });

  it('stop() destroys every connection and timer, closes the listener, and leaves nothing open', async () => {
    const upstream = await startServer({ echo: true });
    // Only what the proxy and its clients open counts from here.
    const probe = new LeakProbe();
    const proxy = h.track(await startFaultProxy({ upstreamPort: upstream.port }));
    const clients = [await connectThrough(proxy, upstream), await connectThrough(proxy, upstream)].map((c) => c.client);
    // Bytes held in a pipe's timer when stop() comes.
    proxy.add({ kind: 'latency', ms: 10_000 });
    clients[0]!.socket.write('held');
    await eventually(() => expect(proxy.heldBytes).toBe(4), { within: 1000 });

    await proxy.stop();
    expect(proxy.connections).toBe(0);
    // Right away: no timer and no listener of the proxy's is left.
    expect(probe.leaks().resources.get('TCPServerWrap')).toBeUndefined();
    expect(probe.leaks().resources.get('Timeout')).toBeUndefined();
    // stop() destroys, so the clients and the server's ends get a FIN and close too.
    for (const client of clients) await eventually(() => expect(client.closed).toBe(true), { within: 1000 });
    const leaks = await probe.settle(500);
    expect(isClean(leaks), `left open: ${[...leaks.resources].join(' ')}, ${leaks.socketFds} fd(s)`).toBe(true);
  });
});
