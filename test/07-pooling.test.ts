// Lesson 07: reusing connections and buffers safely. A bounded pool that gives up in time,
// hands out only live connections, lets idle ones go, never lends a connection in an
// unknown state; and pooled buffers that go back only once write() is done with them.
import net from 'node:net';
import { getEventListeners, once } from 'node:events';
import { setTimeout as sleep } from 'node:timers/promises';
import { describe, test } from 'vitest';
import { createPool, type ConnectionPool, type Lease, type PoolOptions } from '#target/07-pooling/pool.ts';
import { BufferPool, writeFrame } from '#target/07-pooling/buffers.ts';
import {
  check,
  describeLeaks,
  encode,
  eventually,
  FrameType,
  gate,
  LeakProbe,
  ReferenceDecoder,
  settleWithin,
  useHarness,
  watchPromise,
  type Watched,
} from '../runtime/harness/index.ts';

const h = useHarness('07');

// ---------------------------------------------------------------------------------------
// Local helpers (candidates for runtime/ if another lesson needs them).

/**
 * A small upstream for the pool to talk to. It answers each DATA frame with a DATA frame
 * holding the same body, one at a time and in order per connection, like any serial
 * request/response protocol. A few bodies steer it: "slow:<ms>" answers after <ms>,
 * "never" never answers, "fail" answers with an ERROR frame. `halfOpen` makes it a peer that
 * never answers our FIN (a hung upstream, a dead host behind a NAT): a connection the pool
 * only end()s then never closes, while one it destroy()s is gone at once.
 */
async function startUpstream({ halfOpen = false } = {}) {
  const sockets = new Set<net.Socket>();
  const timers = new Set<NodeJS.Timeout>();
  let accepted = 0;
  const closedAt: number[] = [];

  const answer = (socket: net.Socket, body: string): Promise<void> => {
    const reply = () => {
      if (!socket.destroyed) {
        socket.write(body === 'fail' ? encode(FrameType.ERROR, 'REFUSED on purpose') : encode(FrameType.DATA, body));
      }
    };
    if (body === 'never') return new Promise(() => {});
    const slow = /^slow:(\d+)$/.exec(body);
    if (!slow) return Promise.resolve(reply());
    return new Promise((resolve) => {
      const timer = setTimeout(() => {
        timers.delete(timer);
        reply();
        resolve();
      }, Number(slow[1]));
      timers.add(timer);
    });
  };

  const server = net.createServer({ noDelay: true, allowHalfOpen: halfOpen }, (socket) => {
    accepted++;
    sockets.add(socket);
    socket.on('error', () => {});
    socket.once('close', () => {
      sockets.delete(socket);
      closedAt.push(performance.now());
    });
    const decoder = new ReferenceDecoder();
    let queue = Promise.resolve();
    socket.on('data', (chunk: Buffer) => {
      for (const frame of decoder.push(chunk)) queue = queue.then(() => answer(socket, frame.body.toString('utf8')));
    });
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));

  return {
    port: (server.address() as net.AddressInfo).port,
    /** Connections accepted so far. */
    accepted: () => accepted,
    /** Connections open now, seen from the upstream. */
    open: () => sockets.size,
    /** When each connection closed (performance.now()), in order. */
    closedAt,
    /** The upstream closes every connection politely (FIN), as a server's idle timeout does. */
    endAll: () => sockets.forEach((s) => s.end()),
    /** The upstream sends a frame nobody asked for on every connection. */
    sayAll: (body: string) => sockets.forEach((s) => s.write(encode(FrameType.DATA, body))),
    /** The upstream resets every connection (RST), as a crashing upstream or a NAT box does. */
    resetAll: () => sockets.forEach((s) => s.resetAndDestroy()),
    async stop() {
      timers.forEach(clearTimeout);
      const closed = new Promise<void>((resolve) => server.close(() => resolve()));
      sockets.forEach((s) => s.destroy());
      await closed;
    },
  };
}

type Upstream = Awaited<ReturnType<typeof startUpstream>>;

async function setup(
  options: Omit<PoolOptions, 'port'> = {},
  upstreamOptions: { halfOpen?: boolean } = {},
): Promise<{ upstream: Upstream; pool: ConnectionPool }> {
  const upstream = h.track(await startUpstream(upstreamOptions));
  // Tracked after the upstream, so it stops first.
  const pool = h.track(createPool({ port: upstream.port, acquireTimeoutMs: 2000, ...options }));
  return { upstream, pool };
}

const outcome = (w: Watched<unknown>) =>
  !w.settled ? 'still pending' : w.error ? `rejected with ${w.error.name}: ${w.error.message}` : 'resolved with a connection';

/** Where a leaked lease was taken, as the first stack line that is not the pool's own. */
const takenAt = (pool: ConnectionPool) =>
  pool
    .leaks()
    .map((leak) => leak.stack.split('\n').map((l) => l.trim()).find((l) => l.length > 0) ?? '(no stack)')
    .map((line) => line.replace(`${process.cwd()}/`, ''))
    .join('; ');

// ---------------------------------------------------------------------------------------

describe('baseline: the pool lends and reuses connections', () => {
  test('a released connection is reused by the next acquire', async () => {
    const { upstream, pool } = await setup();
    const first = await pool.acquire();
    const socket = first.socket;
    first.release();
    const second = await pool.acquire();
    check(second.socket === socket && upstream.accepted() === 1, 'The second acquire() opened a new connection.', {
      observed: `the upstream accepted ${upstream.accepted()} connection(s); the second lease ${second.socket === socket ? 'got' : 'did not get'} the first one's socket`,
      expected: 'one connection, lent twice',
      idea: 'a pool exists to reuse connections: a released connection goes back to the idle list',
    });
    second.release();
    check(pool.idle === 1 && pool.borrowed === 0, 'The pool lost count of its connections.', {
      observed: `idle=${pool.idle}, borrowed=${pool.borrowed} after both leases were released`,
      expected: 'idle=1, borrowed=0',
      idea: 'every lease ends, and the pool knows where each connection is',
    });
  });

  test('request() returns the upstream reply and gives the connection back', async () => {
    const { upstream, pool } = await setup();
    const one = await pool.request('hello');
    const two = await pool.request('again');
    check(one.toString() === 'hello' && two.toString() === 'again', 'request() returned the wrong reply.', {
      observed: `replies ${JSON.stringify(one.toString())} and ${JSON.stringify(two.toString())}`,
      expected: '"hello" and "again": the upstream echoes each body',
      idea: 'a request is one frame out and one frame back on a lent connection',
    });
    check(upstream.accepted() === 1 && pool.borrowed === 0, 'request() did not reuse its connection.', {
      observed: `the upstream accepted ${upstream.accepted()} connection(s) for two requests in a row; borrowed=${pool.borrowed}`,
      expected: 'one connection, back in the pool after each request',
      idea: 'a request releases its lease when the exchange is complete',
    });
  });

  test('an error reply is a complete exchange: the connection is kept', async () => {
    const { upstream, pool } = await setup();
    const failed = watchPromise(pool.request('fail'));
    await eventually(() => {
      check(failed.settled, 'request() never settled after an ERROR reply.', {
        observed: outcome(failed),
        expected: 'a rejection with UpstreamError',
        idea: 'an ERROR frame is a reply like any other',
      });
    }, { within: 1000 });
    check(failed.error?.name === 'UpstreamError', 'An ERROR reply was not reported as UpstreamError.', {
      observed: outcome(failed),
      expected: 'UpstreamError: REFUSED on purpose',
      idea: 'the upstream said no; the transport worked',
    });
    const next = await pool.request('after');
    check(next.toString() === 'after' && upstream.accepted() === 1, 'The connection was dropped after a clean ERROR reply.', {
      observed: `the upstream accepted ${upstream.accepted()} connection(s); the next request got ${JSON.stringify(next.toString())}`,
      expected: 'one connection: an answered request leaves it in a known state, so it can be reused',
      idea: 'only an exchange cut short leaves a connection in an unknown state',
    });
  });

  test('a full pool makes acquire() wait for a release', async () => {
    const { pool } = await setup({ max: 1 });
    const held = await pool.acquire();
    const next = watchPromise(pool.acquire());
    await eventually(() => {
      check(pool.waiting === 1 && !next.settled, 'acquire() on a full pool did not wait.', {
        observed: `waiting=${pool.waiting}, second acquire ${outcome(next)}`,
        expected: 'one caller waiting for the only connection',
        idea: 'max bounds the connections; callers beyond it queue',
      });
    }, { within: 500 });
    held.release();
    await eventually(() => {
      check(next.value?.socket === held.socket, 'The waiting caller did not get the released connection.', {
        observed: `after release(), the waiting acquire ${outcome(next)}${next.value ? ' (a different socket)' : ''}`,
        expected: 'the released connection handed to the waiting caller',
        idea: 'a release serves the longest waiter first',
      });
    }, { within: 500 });
    next.value!.release();
  });

  test('an upstream reset of an idle connection does not crash the process', async () => {
    const { upstream, pool } = await setup();
    const lease = await pool.acquire();
    const socket = lease.socket;
    lease.release();
    upstream.resetAll();
    // eventually() fails at once with the crash probe's explanation if the reset was thrown.
    await eventually(() => {
      check(socket.destroyed && pool.size === 0, 'The pool did not notice that the upstream reset an idle connection.', {
        observed: `300 ms after the reset: socket destroyed=${socket.destroyed}, readyState=${socket.readyState}, pool.size=${pool.size}`,
        expected: "the socket closed and counted out of the pool: 'error' (ECONNRESET), then 'close'",
        idea: "an idle socket keeps its 'error' and 'close' listeners, and keeps reading so it notices the peer",
      });
    }, { within: 300 });
  });

  test('bytes that arrive on an idle connection get it dropped', async () => {
    const { upstream, pool } = await setup();
    const lease = await pool.acquire();
    const socket = lease.socket;
    lease.release();
    upstream.sayAll('nobody asked');
    await eventually(() => {
      check(socket.destroyed && pool.size === 0, 'An idle connection that received unrequested bytes was kept.', {
        observed: `300 ms after the upstream sent a frame on an idle connection: destroyed=${socket.destroyed}, ${socket.readableLength} byte(s) sitting unread, pool.size=${pool.size}`,
        expected: 'the connection dropped: it is out of step, and the next borrower would read those bytes as its reply',
        idea: 'keep idle sockets flowing (never pause() them) with a data listener that drops the connection',
      });
    }, { within: 300 });
  });

  test('a lease held past leakThresholdMs is reported with the stack that took it', async () => {
    const { pool } = await setup({ leakThresholdMs: 50 });
    // A handler that borrows and forgets: its name must show in the report.
    const forgetfulHandler = () => pool.acquire();
    const lease = await forgetfulHandler();
    check(pool.leaks().length === 0, 'A lease was reported as leaked at once.', {
      observed: `${pool.leaks().length} leak(s) right after acquire()`,
      expected: 'none before leakThresholdMs (50 ms)',
      idea: 'a leak report names leases held too long, not every lease',
    });
    await eventually(() => {
      check(pool.leaks().length === 1, 'A lease held too long was not reported.', {
        observed: `${pool.leaks().length} leak(s) reported while one lease was held past 50 ms`,
        expected: 'one report',
        idea: 'record when and where each lease was taken, and list those older than the threshold',
      });
    }, { within: 50 + 250 });
    const [leak] = pool.leaks();
    check(leak!.heldMs >= 48 && /forgetfulHandler/.test(leak!.stack), 'The leak report does not say where the lease was taken.', {
      observed: `heldMs=${leak!.heldMs}, stack=${JSON.stringify(leak!.stack.slice(0, 300))}`,
      expected: 'heldMs >= 50 and a stack that names the function that called acquire() (forgetfulHandler)',
      idea: 'new Error().stack at the top of acquire(), before any await, is the cheapest way to find who forgot to release: after an await the caller\'s frames are gone',
    });
    lease.release();
    check(pool.leaks().length === 0, 'A released lease is still reported.', {
      observed: `${pool.leaks().length} leak(s) after release()`,
      expected: 'none',
      idea: 'a lease ends when it is released',
    });
    // The connection now sits idle past the threshold; idle time is not lease time.
    const idleSince = performance.now();
    await sleep(100);
    const again = await pool.acquire();
    check(pool.leaks().length === 0, 'A lease was reported as leaked the moment it was taken.', {
      observed: `right after acquire() on a connection that had been idle for ${Math.round(performance.now() - idleSince)} ms: ${pool.leaks().length} leak(s), heldMs=${pool.leaks()[0]?.heldMs}`,
      expected: 'none: this lease is a few ms old',
      idea: 'a lease is timed from acquire(), not from when the connection was opened or last used',
    });
    again.destroy();
    // Past the threshold again: a lease that was still on record would be reported now.
    await sleep(60);
    check(pool.leaks().length === 0, 'A lease that ended with destroy() is still reported.', {
      observed: `${pool.leaks().length} leak(s) 60 ms after the only lease was destroyed (leakThresholdMs=50)`,
      expected: 'none',
      idea: 'a lease ends on release() and on destroy(): forget it on both paths, or every failed request stays on record for ever',
    });
  });

  test('drain() refuses new borrowers, waits for leases, then closes every connection', async () => {
    const { upstream, pool } = await setup({ max: 2 });
    const [a, b] = await Promise.all([pool.acquire(), pool.acquire()]);
    a!.release();
    const drained = watchPromise(pool.drain());
    const late = watchPromise(pool.acquire());
    await eventually(() => {
      check(late.error?.name === 'PoolClosedError' && upstream.open() === 1 && !drained.settled, 'drain() did not start as it should.', {
        observed: `acquire() after drain(): ${outcome(late)}; upstream connections open: ${upstream.open()}; drain() ${drained.settled ? 'already resolved' : 'pending'}`,
        expected: 'new acquire() rejected with PoolClosedError, the idle connection closed, drain() pending while one lease is out',
        idea: 'draining lends nothing new, closes what is idle, and waits for what is lent',
      });
    }, { within: 500 });
    b!.release();
    await eventually(() => {
      check(drained.settled && upstream.open() === 0 && pool.size === 0, 'drain() did not finish after the last lease came back.', {
        observed: `drain() ${drained.settled ? 'resolved' : 'pending'}; upstream connections open: ${upstream.open()}; pool.size=${pool.size}`,
        expected: 'drain() resolved with every connection closed',
        idea: 'a lease that ends while draining closes its connection',
      });
    }, { within: 500 });
  });

  test('stop() closes lent connections too, at once', async () => {
    const { pool } = await setup({ max: 2 });
    // A borrower stuck on a hung upstream: the case stop() exists for.
    const stuck = await pool.acquire();
    const other = await pool.acquire();
    other.release();
    const stopped = await settleWithin(pool.stop(), 500);
    check(stopped.done && stuck.socket.destroyed && pool.size === 0, 'stop() waited for a lease that was never going to end.', {
      observed: `500 ms after stop() with one lease still out: stop() ${stopped.done ? 'resolved' : 'still pending'}, the lent socket destroyed=${stuck.socket.destroyed}, pool.size=${pool.size}`,
      expected: 'stop() destroys every connection, idle and lent, and resolves at once',
      idea: 'drain() waits for leases; stop() is the "now" that follows it: it closes lent connections too, or one stuck borrower holds the shutdown for ever',
    });
  });

  test('drain() turns away the callers already waiting', async () => {
    const { pool } = await setup({ max: 1 });
    const held = await pool.acquire();
    const waiter = watchPromise(pool.acquire());
    await eventually(() => check(pool.waiting === 1, 'acquire() on a full pool did not wait.', {
      observed: `waiting=${pool.waiting}`, expected: 'one caller waiting', idea: 'callers beyond max queue',
    }), { within: 500 });
    const drained = watchPromise(pool.drain());
    await eventually(() => {
      check(waiter.error?.name === 'PoolClosedError' && pool.waiting === 0, 'A caller waiting when drain() began was left waiting.', {
        observed: `150 ms after drain(): the waiting acquire() ${outcome(waiter)}; waiting=${pool.waiting}`,
        expected: 'a rejection with PoolClosedError at once',
        idea: 'a draining pool lends nothing more: the callers already in the queue are refused now, not left to wait out their acquire timeout',
      });
    }, { within: 150 });
    held.release();
    await eventually(() => check(drained.settled && pool.size === 0, 'drain() did not finish after the last lease came back.', {
      observed: `drain() ${drained.settled ? 'resolved' : 'pending'}; pool.size=${pool.size}`,
      expected: 'drain() resolved with every connection closed',
      idea: 'a lease that ends while draining closes its connection',
    }), { within: 500 });
  });

  test("the pool's housekeeping timer does not hold the process open", async () => {
    const upstream = h.track(await startUpstream());
    const probe = new LeakProbe();
    const pool = h.track(createPool({ port: upstream.port, idleTimeoutMs: 100 }));
    const lease = await pool.acquire();
    lease.release();
    const alive = probe.leaks();
    check(alive.refTimers === 0, "An idle pool holds a ref'd timer.", {
      observed: `with one idle connection, the pool keeps alive: ${describeLeaks(alive)}`,
      expected: "no ref'd timer: the idle evictor is unref'd",
      idea: "a ref'd interval keeps a process alive that has nothing left to do: unref() housekeeping timers",
    });
  });

  test('frames written from pooled buffers arrive intact and the buffers are reused', async () => {
    const peer = await readingPeer();
    const buffers = new BufferPool(256, 4);
    writeFrame(peer.socket, FrameType.DATA, 'message from A', buffers);
    writeFrame(peer.socket, FrameType.DATA, 'message from B', buffers);
    await eventually(() => {
      check(peer.messages().length === 2 && buffers.available >= 1, 'Pooled frames did not arrive, or their buffers never came back.', {
        observed: `the peer received ${JSON.stringify(peer.messages())}; ${buffers.available} buffer(s) back in the pool`,
        expected: '["message from A", "message from B"] and the buffers back in the pool once written',
        idea: 'a buffer pool that never gets its buffers back is just a slow allocator',
      });
    }, { within: 1000 });
    check(peer.messages()[0] === 'message from A' && peer.messages()[1] === 'message from B', 'The frames arrived garbled.', {
      observed: JSON.stringify(peer.messages()),
      expected: '["message from A", "message from B"]',
      idea: 'one frame, one write()',
    });
  });
});

// ---------------------------------------------------------------------------------------

describe('the pool is bounded: in connections, in waiting time, in waiters', () => {
  test('concurrent acquires open at most max connections', async () => {
    const { upstream, pool } = await setup({ max: 3 });
    const calls = Array.from({ length: 8 }, () => watchPromise(pool.acquire()));
    const served = () => calls.filter((c) => c.value).length;
    // Wait until every call is either served or queued, then count.
    await eventually(() => {
      check(served() + pool.waiting === 8, 'Not every acquire() was served or queued.', {
        observed: `${served()} served, ${pool.waiting} waiting, of 8 calls`,
        expected: 'each call either holds a connection or waits for one',
        idea: 'acquire() lends, or queues the caller',
      });
    }, { within: 1000 });
    check(served() <= 3 && pool.size <= 3 && upstream.accepted() <= 3, 'The pool opened more connections than max.', {
      observed: `8 concurrent acquire() calls with max=3: ${served()} got a connection at once, pool.size=${pool.size}, the upstream accepted ${upstream.accepted()}`,
      expected: 'at most 3 connections; the other 5 callers wait',
      idea: 'a cap that counts only connected sockets misses the ones still connecting: count a connection from the moment you start opening it',
    });
  });

  test('a connect that fails gives its slot back', async () => {
    // A port nobody listens on: the upstream is restarting.
    const probe = net.createServer();
    await new Promise<void>((resolve) => probe.listen(0, '127.0.0.1', resolve));
    const port = (probe.address() as net.AddressInfo).port;
    await new Promise((resolve) => probe.close(resolve));
    const pool = h.track(createPool({ port, max: 1, acquireTimeoutMs: 300 }));
    const attempts = [watchPromise(pool.acquire())];
    await eventually(() => check(attempts[0]!.settled, 'acquire() never settled when the upstream refused the connection.', {
      observed: outcome(attempts[0]!), expected: 'a rejection (ECONNREFUSED)', idea: 'a failed connect fails the acquire',
    }), { within: 300 + 200 });
    await eventually(() => check(pool.size === 0, 'A connection that never connected still counts against max.', {
      observed: `after a connect refused with ${attempts[0]!.error?.message}: pool.size=${pool.size} (max=1)`,
      expected: 'pool.size=0: the slot is free for the next attempt',
      idea: "count a connection from net.connect() until 'close', on every path: a failed connect also emits 'close', so listen for it before the connect can fail, or each refused connect eats a slot for ever",
    }), { within: 200 });
    attempts.push(watchPromise(pool.acquire()));
    await eventually(() => check(attempts[1]!.settled, 'acquire() never settled.', {
      observed: outcome(attempts[1]!), expected: 'a rejection', idea: 'a failed connect fails the acquire',
    }), { within: 300 + 200 });
    check(attempts[1]!.error?.name !== 'AcquireTimeoutError', 'After one refused connect, the pool no longer tried to connect.', {
      observed: `the second acquire() (max=1) ${outcome(attempts[1]!)}`,
      expected: 'a new connect attempt (refused again, ECONNREFUSED), not a wait for a slot',
      idea: "a refused connect frees its slot: the pool must try again once the upstream is back",
    });
  });

  test('an acquire() aborted while connecting leaves no connection behind', async () => {
    const { upstream, pool } = await setup({ max: 2 });
    const caller = new AbortController();
    const gaveUp = watchPromise(pool.acquire({ signal: caller.signal }));
    // The caller leaves while the connection is still being opened.
    caller.abort();
    await eventually(() => check(gaveUp.error?.name === 'AbortError', 'acquire() ignored an abort that came while it was connecting.', {
      observed: outcome(gaveUp), expected: 'a rejection with AbortError', idea: "the caller's signal covers the connect too",
    }), { within: 300 });
    await eventually(() => {
      check(pool.size === 0 && upstream.open() === 0, 'A connection opened for a caller who gave up was kept, lent to nobody.', {
        observed: `300 ms after the abort: pool.size=${pool.size}, idle=${pool.idle}, borrowed=${pool.borrowed}; the upstream has ${upstream.open()} connection(s) open`,
        expected: 'pool.size=0 and no connection on the upstream: the half-open socket is destroyed',
        idea: 'a connect cut short by the deadline or an abort destroys its socket: otherwise it connects anyway, counts against max, and nobody will ever lend or close it',
      });
    }, { within: 300 });
  });

  test('acquire() on a full pool gives up after acquireTimeoutMs', async () => {
    const { pool } = await setup({ max: 1, acquireTimeoutMs: 100 });
    const held = await pool.acquire();
    const second = watchPromise(() => pool.acquire());
    await eventually(() => {
      check(second.settled, 'acquire() on a full pool waited with no end.', {
        observed: `acquire() was ${outcome(second)} 250 ms after it was called, with acquireTimeoutMs=100 and the only connection held`,
        expected: 'a rejection with AcquireTimeoutError after about 100 ms',
        idea: 'every wait has a deadline: the time spent waiting for a free connection counts, not just the time to connect',
      });
    }, { within: 100 + 150 });
    check(second.error?.name === 'AcquireTimeoutError' && second.afterMs! >= 98 && pool.waiting === 0, 'acquire() did not time out as it should.', {
      observed: `${outcome(second)} after ${Math.round(second.afterMs!)} ms; waiting=${pool.waiting}`,
      expected: 'AcquireTimeoutError after at least 100 ms, and the caller out of the queue',
      idea: 'a caller that gave up must also leave the wait queue',
    });
    held.release();
    check(pool.idle === 1 && pool.borrowed === 0, 'The released connection went to a caller that had timed out.', {
      observed: `idle=${pool.idle}, borrowed=${pool.borrowed} after the only lease was released; the only other caller had timed out`,
      expected: 'idle=1: nobody is waiting any more',
      idea: 'a timed-out waiter is removed from the queue, or a later release hands it a connection nobody will ever give back',
    });
  });

  test('an aborted acquire() leaves the wait queue', async () => {
    const { pool } = await setup({ max: 1 });
    const held = await pool.acquire();
    const caller = new AbortController();
    const second = watchPromise(pool.acquire({ signal: caller.signal }));
    await eventually(() => {
      check(pool.waiting === 1, 'acquire() on a full pool did not wait.', {
        observed: `waiting=${pool.waiting}`,
        expected: 'one caller waiting',
        idea: 'callers beyond max queue',
      });
    }, { within: 500 });
    caller.abort();
    await eventually(() => {
      check(second.error?.name === 'AbortError' && pool.waiting === 0, "acquire() ignored its caller's AbortSignal while waiting.", {
        observed: `150 ms after abort(): acquire() ${outcome(second)}; waiting=${pool.waiting}`,
        expected: 'a rejection with AbortError at once, and the caller gone from the queue',
        idea: 'the caller left (its client hung up, its own deadline passed): stop waiting for it, or it holds its place and later takes a connection nobody will use',
      });
    }, { within: 150 });
    held.release();
    check(pool.idle === 1, 'The released connection went to a caller that had given up.', {
      observed: `idle=${pool.idle}, borrowed=${pool.borrowed} after the only lease was released`,
      expected: 'idle=1: nobody is waiting any more',
      idea: 'an aborted waiter is removed from the queue',
    });
  });

  test('acquire() beyond maxWaiting is refused at once', async () => {
    const { pool } = await setup({ max: 1, maxWaiting: 2 });
    const held = await pool.acquire();
    const queued = [watchPromise(pool.acquire()), watchPromise(pool.acquire())];
    const third = watchPromise(pool.acquire());
    await eventually(() => {
      check(third.error?.name === 'PoolBusyError', 'A caller beyond maxWaiting was queued anyway.', {
        observed: `with max=1 held and maxWaiting=2: ${pool.waiting} callers waiting; the third acquire() ${outcome(third)} after 150 ms`,
        expected: 'the third waiter refused at once with PoolBusyError',
        idea: 'a wait queue is bounded too: when it is full, say no now (like BUSY) instead of letting callers pile up and time out together',
      });
    }, { within: 150 });
    check(pool.waiting === 2 && queued.every((q) => !q.settled), 'The callers within maxWaiting were not left waiting.', {
      observed: `waiting=${pool.waiting}; the first two acquire() calls: ${queued.map(outcome).join(', ')}`,
      expected: 'two callers still waiting',
      idea: 'only the callers beyond the bound are refused',
    });
    held.release();
  });
});

describe('idle connections are let go', () => {
  const IDLE_MS = 80;

  test('idle connections are closed after idleTimeoutMs', async () => {
    const { upstream, pool } = await setup({ max: 4, idleTimeoutMs: IDLE_MS });
    const leases = await Promise.all([pool.acquire(), pool.acquire(), pool.acquire(), pool.acquire()]);
    await eventually(() => check(upstream.open() === 4, 'The upstream did not see four connections.', {
      observed: `${upstream.open()} open`, expected: '4', idea: 'four leases, four connections',
    }), { within: 500 });
    // When each of our sockets closed: one sweep destroys them all in the same tick.
    const closedAt: number[] = [];
    leases.forEach((l) => l.socket.once('close', () => closedAt.push(performance.now())));
    const releasedAt = performance.now();
    leases.forEach((l) => l.release());
    await eventually(() => {
      check(upstream.open() === 0 && pool.idle === 0, 'Idle connections were kept open long after idleTimeoutMs.', {
        observed: `${Math.round(performance.now() - releasedAt)} ms after release with idleTimeoutMs=${IDLE_MS} and no traffic: ${pool.idle} idle in the pool, ${upstream.open()} open on the upstream`,
        expected: `all four closed within about ${IDLE_MS} ms plus one evictor run`,
        idea: "checking age only when someone acquires never closes anything when traffic stops: an unref'd timer evicts idle connections",
      });
    }, { within: IDLE_MS + 300 });
    await eventually(() => check(closedAt.length === 4, "The pool's sockets did not all close.", {
      observed: `${closedAt.length} of 4 emitted 'close'`, expected: '4', idea: 'a destroyed socket emits close',
    }), { within: 500 });
    const first = Math.min(...closedAt) - releasedAt;
    const last = Math.max(...closedAt) - releasedAt;
    check(first >= IDLE_MS - 2, 'An idle connection was closed before idleTimeoutMs.', {
      observed: `the first closed ${Math.round(first)} ms after release`,
      expected: `no earlier than ${IDLE_MS} ms`,
      idea: 'idleTimeoutMs is measured from the last use',
    });
    // Released together, they age together: one evictor run closes all of them.
    check(last - first < IDLE_MS, 'Connections that went idle together were closed one evictor run at a time.', {
      observed: `four connections released in the same tick closed over ${Math.round(last - first)} ms (first at ${Math.round(first)} ms, last at ${Math.round(last)} ms)`,
      expected: `all four in the same sweep, a few ms apart (one sweep every ${IDLE_MS / 2} ms)`,
      idea: 'an evictor run closes every connection older than idleTimeoutMs, not one per run: after a burst of 100, one per run takes 100 runs',
    });
  });

  test('an evicted connection is closed even when the upstream never closes its side', async () => {
    const { pool } = await setup({ max: 2, idleTimeoutMs: IDLE_MS }, { halfOpen: true });
    const lease = await pool.acquire();
    const socket = lease.socket;
    lease.release();
    const releasedAt = performance.now();
    await eventually(() => {
      check(pool.idle === 0, 'Idle connections were kept open long after idleTimeoutMs.', {
        observed: `${pool.idle} idle after ${Math.round(performance.now() - releasedAt)} ms, idleTimeoutMs=${IDLE_MS}`,
        expected: 'the idle connection evicted',
        idea: "an unref'd timer evicts idle connections",
      });
    }, { within: IDLE_MS + 300 });
    await eventually(() => {
      check(socket.destroyed && pool.size === 0, 'An evicted connection was only half-closed: it still holds its slot.', {
        observed: `${Math.round(performance.now() - releasedAt)} ms after release (idleTimeoutMs=${IDLE_MS}), against an upstream that never sends FIN back: the evicted socket destroyed=${socket.destroyed}, writableEnded=${socket.writableEnded}, readyState=${socket.readyState}; pool.size=${pool.size}`,
        expected: 'the socket destroyed and pool.size=0',
        idea: "end() only sends our FIN and waits for the peer's: a dead or hung upstream never answers, so the socket stays open and counts against max for ever. Evict with destroy()",
      });
    }, { within: 200 });
  });

  test('a lent connection is never evicted, and ages from its release', async () => {
    const { pool } = await setup({ max: 2, idleTimeoutMs: IDLE_MS });
    const [held, other] = await Promise.all([pool.acquire(), pool.acquire()]);
    const acquiredAt = performance.now();
    const otherSocket = other!.socket;
    other!.release();
    // Once the idle one is evicted, the evictor has run past the age of the lent one
    // too (it was opened before the other was released).
    await eventually(() => {
      check(otherSocket.destroyed, 'An idle connection was kept open long after idleTimeoutMs.', {
        observed: `${pool.idle} idle connection(s) still open ${IDLE_MS + 300} ms after release with idleTimeoutMs=${IDLE_MS}`,
        expected: 'the idle one closed by the evictor',
        idea: "an unref'd timer evicts idle connections",
      });
    }, { within: IDLE_MS + 300 });
    check(!held!.socket.destroyed && held!.socket.readyState === 'open', 'The evictor closed a connection that was lent out.', {
      observed: `a lease held ${Math.round(performance.now() - acquiredAt)} ms (idleTimeoutMs=${IDLE_MS}): its socket destroyed=${held!.socket.destroyed}, readyState=${held!.socket.readyState}`,
      expected: 'the lent connection untouched: its borrower is in the middle of an exchange',
      idea: 'only idle connections are evicted; a lent one belongs to its borrower until the lease ends',
    });
    const releasedAt = performance.now();
    held!.release();
    await eventually(() => {
      check(held!.socket.destroyed, 'A connection released after a long lease was never evicted.', {
        observed: `${Math.round(performance.now() - releasedAt)} ms after release: still open`,
        expected: `closed about ${IDLE_MS} ms after its release`,
        idea: "an unref'd timer evicts idle connections",
      });
    }, { within: IDLE_MS + 300 });
    const closedAfter = performance.now() - releasedAt;
    check(closedAfter >= IDLE_MS - 2, 'A connection was evicted right after its release because it had been lent for a long time.', {
      observed: `closed ${Math.round(closedAfter)} ms after its release, idleTimeoutMs=${IDLE_MS}`,
      expected: `no earlier than ${IDLE_MS} ms after release`,
      idea: 'idle time starts when the connection comes back (set lastUsed in release), not when it was opened or lent',
    });
  });

  test('an idle connection ages out while another stays busy', async () => {
    // Longer here: the busy connection must never look idle, even on a loaded machine.
    const IDLE_MS = 150;
    for (let attempt = 1; ; attempt++) {
      const { pool } = await setup({ max: 2, idleTimeoutMs: IDLE_MS });
      const [spare, busy] = await Promise.all([pool.acquire(), pool.acquire()]);
      const spareSocket = spare!.socket;
      const busySocket = busy!.socket;
      spare!.release();
      busy!.release();
      // A trickle of traffic that one connection serves: one borrow every IDLE_MS / 10.
      const start = performance.now();
      let lastTouch = start;
      let maxGap = 0;
      let rounds = 0;
      let others = 0;
      while (!spareSocket.destroyed && performance.now() - start < IDLE_MS * 1.5 + 300 && rounds < 200) {
        const lease = await pool.acquire();
        maxGap = Math.max(maxGap, performance.now() - lastTouch);
        if (lease.socket !== busySocket) others++;
        lease.release();
        lastTouch = performance.now();
        rounds++;
        await sleep(IDLE_MS / 10);
      }
      // A machine so loaded that this loop stalled for half the timeout made the busy
      // connection look idle: that run proves nothing, so run it again.
      if (maxGap >= IDLE_MS / 2 && attempt < 3) continue;
      check(spareSocket.destroyed, 'A spare idle connection was kept alive by traffic that one connection can carry.', {
        observed: `${Math.round(performance.now() - start)} ms of one borrow every ${IDLE_MS / 10} ms with idleTimeoutMs=${IDLE_MS}: the spare connection is still open; ${others} of ${rounds} acquire() calls were served by it rather than by the most recently used one`,
        expected: `the spare closed about ${IDLE_MS} ms after its last use`,
        idea: 'lend the most recently used connection first (LIFO), and let the evictor close every idle connection past its age, wherever it sits in the list: otherwise a trickle of traffic keeps the peak number of connections open for ever',
      });
      check(!busySocket.destroyed, 'The evictor closed the connection in steady use.', {
        observed: `the connection borrowed every ${IDLE_MS / 10} ms (never idle longer than ${Math.round(maxGap)} ms) was closed, idleTimeoutMs=${IDLE_MS}`,
        expected: 'it stays open: it never sat idle for idleTimeoutMs',
        idea: 'age is measured from the last use of each connection: set lastUsed when it comes back',
      });
      return;
    }
  });
});

describe('the pool hands out only live connections', () => {
  test('a connection the upstream closed while idle is not handed out', async () => {
    const { upstream, pool } = await setup();
    const first = await pool.acquire();
    const socket = first.socket;
    first.release();
    upstream.endAll();
    await eventually(() => {
      check(socket.destroyed, 'The idle socket never noticed the upstream closing it.', {
        observed: `300 ms after the upstream's FIN: readyState=${socket.readyState}, readableEnded=${socket.readableEnded}`,
        expected: "'end' then 'close' within a few ms",
        idea: "an idle socket must keep reading: a paused socket never sees the FIN (node-net: do not pause idle sockets)",
      });
    }, { within: 300 });
    check(pool.idle === 0 && pool.size === 0, 'The idle list still counts a connection that closed.', {
      observed: `after the upstream closed the only idle connection and it emitted 'close': idle=${pool.idle}, size=${pool.size}`,
      expected: 'idle=0, size=0',
      idea: "a connection leaves the idle list when it closes ('close'), not only when acquire() happens to pass over it: the pool's counts are what dashboards and autoscalers read",
    });
    const next = await pool.acquire();
    check(next.socket !== socket && !next.socket.destroyed && next.socket.readyState === 'open', 'acquire() handed out a connection the upstream had closed.', {
      observed: `the lease's socket: ${next.socket === socket ? 'the one the upstream closed' : 'a new one'}, destroyed=${next.socket.destroyed}, readyState=${next.socket.readyState}`,
      expected: 'a live connection: !destroyed, readyState "open", !readableEnded',
      idea: "an idle connection can die without anyone asking: drop it from the idle list on 'close', and validate it again when you lend it",
    });
    next.release();
  });

  test('a connection that died while lent is not put back', async () => {
    const { upstream, pool } = await setup();
    const lease = await pool.acquire();
    upstream.endAll();
    await eventually(() => check(lease.socket.destroyed, "The lent socket never saw the upstream's FIN.", {
      observed: `readyState=${lease.socket.readyState}`, expected: "'end' then 'close' within a few ms", idea: 'a socket that reads notices the FIN',
    }), { within: 300 });
    // Its borrower did not notice (it sent nothing yet) and ends the lease normally.
    lease.release();
    check(pool.idle === 0 && pool.size === 0, 'A connection that closed while lent was put back in the idle list.', {
      observed: `after release() of a lease whose socket had closed: idle=${pool.idle}, size=${pool.size}`,
      expected: 'idle=0, size=0: a dead connection is dropped, not given back',
      idea: "validate on give-back too (!destroyed && readyState === 'open' && !readableEnded): 'close' already ran, so nothing else will take it out of the idle list",
    });
  });

  test('a connection whose upstream sent FIN is not lent, even before it has closed', async () => {
    const { upstream, pool } = await setup();
    const first = await pool.acquire();
    const socket = first.socket;
    first.release();
    // At 'end' the FIN has been read but the socket is not destroyed yet: this is the
    // window that a check of `destroyed` alone misses. Borrow right then.
    const borrowed = gate<Watched<Lease>>();
    socket.once('end', () => borrowed.open(watchPromise(pool.acquire())));
    upstream.endAll();
    const next = await settleWithin(borrowed.opened, 500);
    check(next.done, "The idle socket never saw the upstream's FIN.", {
      observed: `no 'end' on the idle socket 500 ms after the upstream closed it (readyState=${socket.readyState})`,
      expected: "'end' within a few ms",
      idea: 'an idle socket must keep reading to notice the FIN',
    });
    const lease = 'value' in next ? next.value : undefined;
    await eventually(() => check(lease!.settled, 'acquire() did not settle.', {
      observed: outcome(lease!), expected: 'a lease', idea: 'acquire() lends, or opens, a connection',
    }), { within: 500 });
    const got = lease!.value;
    check(got !== undefined && got.socket !== socket, 'acquire() lent a connection whose upstream had already sent FIN.', {
      observed: `borrowed at the idle socket's 'end': ${got ? (got.socket === socket ? `the same socket (destroyed=${socket.destroyed}, readableEnded=${socket.readableEnded}, readyState=${socket.readyState})` : 'a new socket') : outcome(lease!)}`,
      expected: 'a new connection: the FIN\'d one cannot carry a reply',
      idea: "validate on borrow with !destroyed && readyState === 'open' && !readableEnded: a socket that read the FIN is not destroyed yet, but it is finished",
    });
    got!.release();
  });
});

describe('a lease ends on every path', () => {
  test('an ended lease has no effect any more', async () => {
    const { upstream, pool } = await setup({ max: 2 });
    const first = await pool.acquire();
    const socket = first.socket;
    // A borrower that ends its lease twice: a finally block after an explicit release().
    first.release();
    first.release();
    check(pool.idle === 1 && pool.borrowed === 0, 'A lease released twice put its connection in the pool twice.', {
      observed: `after release() twice on one lease: idle=${pool.idle}, borrowed=${pool.borrowed}, for ${upstream.accepted()} connection(s)`,
      expected: 'idle=1: one connection, one place in the idle list',
      idea: 'a lease ends once; a second release() or destroy() is ignored, or the same socket is lent to two borrowers',
    });
    const [a, b] = await Promise.all([pool.acquire(), pool.acquire()]);
    check(a!.socket !== b!.socket, 'Two borrowers were lent the same connection.', {
      observed: `two concurrent acquire() calls after a double release() got ${a!.socket === b!.socket ? 'the same socket' : 'different sockets'}`,
      expected: 'two different connections',
      idea: 'a lease ends once: two borrowers on one socket read each other\'s replies',
    });
    // The old lease's borrower, late, calls destroy(): the connection is someone else's now.
    first.destroy();
    const current = a!.socket === socket ? a! : b!;
    check(!socket.destroyed && current.socket === socket, "An ended lease destroyed the connection it had given back, now lent to someone else.", {
      observed: `first.destroy() after first.release(): the socket, now lent again, destroyed=${socket.destroyed}`,
      expected: 'nothing: the old lease ended with release()',
      idea: 'once a lease has ended, neither release() nor destroy() may touch its connection',
    });
    a!.release();
    b!.release();
  });

  test('a destroyed lease frees its slot for a waiting caller', async () => {
    const { pool } = await setup({ max: 1 });
    const held = await pool.acquire();
    const next = watchPromise(pool.acquire());
    await eventually(() => check(pool.waiting === 1, 'acquire() on a full pool did not wait.', {
      observed: `waiting=${pool.waiting}`, expected: 'one caller waiting', idea: 'callers beyond max queue',
    }), { within: 500 });
    held.destroy();
    await eventually(() => {
      check(next.value !== undefined && next.value.socket !== held.socket, 'A waiting caller was not served after the only lease was destroyed.', {
        observed: `500 ms after destroy() on the only lease (max=1): the waiting acquire() ${outcome(next)}; size=${pool.size}, waiting=${pool.waiting}`,
        expected: 'the waiter gets a new connection in the freed slot, at once',
        idea: "a slot frees when a connection closes, not only when one is released: wake the first waiter from 'close' too, or it waits out its whole acquire timeout",
      });
    }, { within: 500 });
    next.value!.release();
  });

  test("a long-lived caller signal keeps no listeners from finished requests", async () => {
    const { pool } = await setup({ max: 2 });
    // One signal for a whole client session, passed to every request it makes.
    const session = new AbortController();
    const before = getEventListeners(session.signal, 'abort').length;
    for (let i = 0; i < 12; i++) await pool.request(`r${i}`, { signal: session.signal });
    const after = getEventListeners(session.signal, 'abort').length;
    check(after === before, "Finished requests left 'abort' listeners on their caller's signal.", {
      observed: `${after - before} 'abort' listener(s) left on one session signal after 12 completed requests`,
      expected: '0: each request removes its listener when it settles',
      idea: "a listener added for the length of an exchange is removed when the exchange ends, on every path: on a long-lived signal they pile up (MaxListenersExceededWarning after 10) and keep every finished request's closures alive",
    });
  });

  test('a request that gave up gives its connection back', async () => {
    const { pool } = await setup({ max: 2, leakThresholdMs: 1 });
    const gaveUp = [1, 2].map(() => watchPromise(pool.request('never', { signal: AbortSignal.timeout(50) })));
    await eventually(() => {
      check(gaveUp.every((g) => g.error?.name === 'TimeoutError'), 'request() did not honour its signal.', {
        observed: `the two requests: ${gaveUp.map(outcome).join(', ')}`,
        expected: 'both rejected with TimeoutError after 50 ms',
        idea: 'the caller decides how long a request may take',
      });
    }, { within: 50 + 450 });
    await eventually(() => {
      check(pool.borrowed === 0, 'Requests that gave up kept their connections.', {
        observed: `${pool.borrowed} of max=2 connections still lent out 150 ms after both requests timed out: the pool is used up. pool.leaks() says they were taken at: ${takenAt(pool)}`,
        expected: '0: a lease ends on every path, failures included',
        idea: 'end a lease in catch/finally like any resource; after a failure, destroy() it rather than release() it',
      });
    }, { within: 150 });
    const after = watchPromise(pool.request('still works', { signal: AbortSignal.timeout(500) }));
    await eventually(() => {
      check(after.value?.toString() === 'still works', 'The pool could not serve a request after two failures.', {
        observed: `request("still works") ${after.value ? `returned ${JSON.stringify(after.value.toString())}` : outcome(after)}`,
        expected: '"still works", on a fresh connection',
        idea: 'a connection whose request gave up is still busy with it: given back, it hands its stale exchange to the next caller; destroy it',
      });
    }, { within: 700 });
  });

  test('a late reply never reaches the next request', async () => {
    const { pool } = await setup({ max: 1, leakThresholdMs: 1 });
    const gaveUp = watchPromise(pool.request('slow:150', { signal: AbortSignal.timeout(50) }));
    await eventually(() => {
      check(gaveUp.error?.name === 'TimeoutError', 'request() did not honour its signal.', {
        observed: `request() ${outcome(gaveUp)}`,
        expected: 'a rejection with TimeoutError after 50 ms',
        idea: 'the caller decides how long a request may take',
      });
    }, { within: 50 + 450 });
    await eventually(() => {
      check(pool.borrowed === 0, 'The next request cannot start: the one that gave up still holds the only connection, its late reply on the way.', {
        observed: `borrowed=${pool.borrowed} of max=1, 150 ms after request("slow:150") timed out; the upstream's reply to it is still due. pool.leaks() says the lease was taken at: ${takenAt(pool)}`,
        expected: '0 lent, and then request("fresh") returns "fresh", never the late reply to "slow:150"',
        idea: 'this test goes one step past the one above: ending the lease is not enough, since release() hands a connection with a reply still on its way to the next borrower; after a failure, destroy() it',
      });
    }, { within: 150 });
    const next = watchPromise(pool.request('fresh', { signal: AbortSignal.timeout(500) }));
    await eventually(() => check(next.settled, 'The next request never settled.', {
      observed: `request("fresh") ${outcome(next)}`, expected: 'a reply', idea: 'a request ends, one way or another',
    }), { within: 700 });
    check(next.value?.toString() === 'fresh', 'The next request received the reply meant for the one that gave up.', {
      observed: `request("fresh") ${next.value ? `returned ${JSON.stringify(next.value.toString())}` : outcome(next)}`,
      expected: '"fresh"',
      idea: 'a request that gave up leaves its reply on the way: that connection is out of step, so it is destroyed, never released',
    });
  });
});

describe('a connection cut short is destroyed', () => {
  test('a request whose caller hung up closes its connection, even if the upstream never closes its side', async () => {
    const { pool } = await setup({ max: 1 }, { halfOpen: true });
    // Open the only connection first, to watch it: request() will borrow it.
    const first = await pool.acquire();
    const socket = first.socket;
    first.release();
    // The caller's client hung up: an abort by hand (AbortError), not a timeout.
    const caller = new AbortController();
    // Its reply is due after the window this test looks at: whatever happens here is the
    // pool's doing, not the late reply's (which an idle connection drops on arrival).
    const gaveUp = watchPromise(pool.request('slow:400', { signal: caller.signal }));
    await eventually(() => check(pool.borrowed === 1, 'request() never borrowed a connection.', {
      observed: `borrowed=${pool.borrowed}`, expected: '1', idea: 'a request holds a lease',
    }), { within: 500 });
    caller.abort();
    await eventually(() => check(gaveUp.error?.name === 'AbortError', "request() ignored its caller's abort.", {
      observed: `request() ${outcome(gaveUp)}`, expected: 'a rejection with AbortError at once', idea: 'the caller decides how long a request may take',
    }), { within: 300 });
    await eventually(() => {
      const where = pool.idle === 1 ? 'back in the idle list, its reply still on the way' : pool.borrowed === 1 ? 'still lent' : socket.destroyed ? 'destroyed' : `out of the pool's lists but open (writableEnded=${socket.writableEnded}, readyState=${socket.readyState})`;
      check(socket.destroyed && pool.size === 0, 'A request that was aborted left its connection open.', {
        observed: `150 ms after request("slow:400") was aborted by its caller (AbortError), against an upstream that never closes its side: the connection is ${where}; pool.size=${pool.size}, idle=${pool.idle}, borrowed=${pool.borrowed}`,
        expected: 'the connection destroyed at once, pool.size=0',
        idea: pool.idle === 1
          ? 'every failure leaves the exchange cut short, whatever the error (TimeoutError, AbortError, a closed socket): its reply is still due, so destroy() the connection; given back, the next borrower reads that reply as its own'
          : "destroy() the connection, not end(): end() sends our FIN and waits for the upstream's, which a hung upstream never sends, so the socket stays open and holds its slot for ever",
      });
    }, { within: 150 });
  });
});

// ---------------------------------------------------------------------------------------

/** A peer on 127.0.0.1 that reads every frame we send it; `start` false keeps it from reading until resume(). */
async function readingPeer({ start = true } = {}) {
  const accepted = gate<net.Socket>();
  const server = net.createServer({ pauseOnConnect: true }, (s) => {
    s.on('error', () => {});
    accepted.open(s);
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const socket = net.connect({ port: (server.address() as net.AddressInfo).port, host: '127.0.0.1', noDelay: true });
  socket.on('error', () => {});
  await once(socket, 'connect');
  const far = await accepted.opened;
  h.defer(async () => {
    socket.destroy();
    far.destroy();
    await new Promise((resolve) => server.close(resolve));
  });
  const decoder = new ReferenceDecoder();
  const frames: Buffer[] = [];
  let bytes = 0;
  far.on('data', (chunk: Buffer) => {
    bytes += chunk.length;
    for (const frame of decoder.push(chunk)) frames.push(frame.body);
  });
  const resume = () => far.resume();
  if (start) resume();
  return {
    socket,
    resume,
    bytes: () => bytes,
    /** Bodies received that are not filler. */
    messages: () => frames.filter((b) => b.length < 1000).map((b) => b.toString('utf8')),
  };
}

describe('a pooled buffer goes back only when write() is done with it', () => {
  test('a pooled buffer is not reused while socket.write still holds it', async () => {
    const peer = await readingPeer({ start: false });
    // The peer does not read yet, so the kernel buffers fill up and write() starts to
    // queue: what we write next waits in the socket, as a reference to our buffer.
    // Small fillers: when the kernel stops taking them, only one (8 KiB, below the
    // 16 KiB high-water mark) waits in the socket, so write() still returns true for our
    // frames although they are queued: the slab is held whatever write() answered.
    const filler = encode(FrameType.DATA, Buffer.alloc(8 * 1024 - 5));
    let fills = 0;
    while (peer.socket.writableLength === 0 && fills < 4000) {
      peer.socket.write(filler);
      fills++;
    }
    check(peer.socket.writableLength > 0, 'Test setup: the kernel buffers never filled.', {
      observed: `${fills} writes of 8 KiB and write() still went straight to the kernel`,
      expected: 'a queue after about 60 writes (3.7 MB on loopback)',
      idea: 'this test needs a peer that does not read',
    });
    const buffers = new BufferPool(256, 4);
    // Two senders, one after the other, sharing one buffer pool.
    const answers = [
      writeFrame(peer.socket, FrameType.DATA, 'message from A', buffers),
      writeFrame(peer.socket, FrameType.DATA, 'message from B', buffers),
    ];
    const queued = peer.socket.writableLength;
    peer.resume();
    const expectedBytes = fills * filler.length + 2 * (5 + 'message from A'.length);
    await eventually(() => {
      check(peer.bytes() >= expectedBytes, 'Test setup: the peer did not receive everything.', {
        observed: `${peer.bytes()} of ${expectedBytes} bytes`,
        expected: 'every byte written',
        idea: 'loopback delivers everything once the peer reads',
      });
    }, { within: 2000 });
    const got = peer.messages();
    check(got[0] === 'message from A' && got[1] === 'message from B', "The peer received another message's bytes.", {
      observed: `sent "message from A" then "message from B" while ${queued} bytes waited in the socket (write() returned ${answers.join(' and ')}); the peer received ${JSON.stringify(got)}`,
      expected: '["message from A", "message from B"]',
      idea: "socket.write() does not copy: a queued chunk is a reference to your buffer until the write callback runs; give the buffer back to the pool there, not after write() returns",
    });
  });
});
