// Lesson 06: admission control. A server under too much load says BUSY and stays up;
// in-flight work, waiting work, connections and reconnects are all bounded; clients
// that are refused come back later, and not all at once.
import net from 'node:net';
import { readdirSync, readFileSync } from 'node:fs';
import { getEventListeners } from 'node:events';
import { describe, test } from 'vitest';
import fc from 'fast-check';
import { startLimitedServer, type LimitedServerOptions } from '#target/06-limits/server.ts';
import { Admission, KeyedRate, type AdmissionOptions } from '#target/06-limits/admission.ts';
import { AcquireTimeoutError, QueueFullError, Semaphore, type Release } from '#target/06-limits/semaphore.ts';
import { TokenBucket } from '#target/06-limits/token-bucket.ts';
import { Backoff, backoffDelay, keepConnected } from '#target/06-limits/reconnect.ts';
import { connectionBudget, readConnectionBudget, softOpenFileLimit } from '#target/06-limits/fd-limit.ts';
import { check, createRandom, describeFrame, encode, eventually, FrameType, gate, settleWithin, socketFdCount, useHarness, watchPromise, type TestClient } from '../runtime/harness/index.ts';

const h = useHarness('06');

async function start(options: LimitedServerOptions = {}) {
  return h.track(await startLimitedServer({ maxConnections: 50, ...options }));
}

/** A handler that holds every request until the test opens the gate, counting how many run at once. */
function heldWork() {
  const g = gate();
  const work = {
    running: 0,
    peak: 0,
    release: () => g.open(),
    handler: async (body: Buffer) => {
      work.running++;
      work.peak = Math.max(work.peak, work.running);
      try {
        await g.opened;
        return body;
      } finally {
        work.running--;
      }
    },
  };
  h.defer(work.release); // before the server stops, let whatever still waits finish
  return work;
}

const frameList = (c: TestClient) => (c.frames.length ? c.frames.map(describeFrame).join(', ') : 'no frame');
const busy = (c: TestClient) => c.frames.filter((f) => f.type === FrameType.BUSY).length;
const data = (c: TestClient) => c.frames.filter((f) => f.type === FrameType.DATA).length;

/**
 * A server for the reconnect loop: it accepts every connection, resets the first `resets`
 * of them as soon as the client says HELLO, then welcomes the next with a DATA frame.
 * (Resetting after the HELLO makes sure the client saw 'connect' first.)
 */
async function startResettingServer(resets: number, how: 'reset' | 'busy' = 'reset') {
  const sockets = new Set<net.Socket>();
  const acceptedAt: number[] = [];
  const server = net.createServer({ noDelay: true }, (socket) => {
    sockets.add(socket);
    socket.once('close', () => sockets.delete(socket));
    socket.on('error', () => {});
    const n = acceptedAt.push(performance.now());
    socket.once('data', () => {
      if (n <= resets && how === 'reset') socket.resetAndDestroy();
      else if (n <= resets) socket.end(encode(FrameType.BUSY, 'connections: full'));
      else socket.write(encode(FrameType.DATA, 'welcome'));
    });
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  return h.track({
    port: (server.address() as net.AddressInfo).port,
    acceptedAt,
    async stop() {
      const closed = new Promise<void>((resolve) => server.close(() => resolve()));
      for (const s of sockets) s.destroy();
      await closed;
    },
  });
}

/**
 * A plain server with nothing but an Admission at its door, the way the capstone gateway
 * uses it: an admitted client gets DATA "welcome" and stays; a refused one is left to
 * the Admission.
 */
async function startDoor(options: AdmissionOptions) {
  const admission = new Admission(options);
  const admitted = new Set<net.Socket>();
  const server = net.createServer({ noDelay: true }, (socket) => {
    if (!admission.admit(socket)) return;
    admitted.add(socket);
    socket.once('close', () => admitted.delete(socket));
    socket.on('error', () => {});
    socket.write(encode(FrameType.DATA, 'welcome'));
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  return h.track({
    port: (server.address() as net.AddressInfo).port,
    admission,
    admitted,
    async stop() {
      const closed = new Promise<void>((resolve) => server.close(() => resolve()));
      for (const socket of admitted) socket.destroy();
      admission.stop();
      await closed;
    },
  });
}

// Timers the lesson's own files created (not the harness's or the test's), still scheduled.
const LESSON_FILES = /^(admission|server|semaphore|token-bucket|reconnect|fd-limit)\.ts:/;
const lessonTimers = () => h.probe.leaks().sites.filter((site) => LESSON_FILES.test(site));

const SAMPLE_LIMITS = `Limit                     Soft Limit           Hard Limit           Units     
Max cpu time              unlimited            unlimited            seconds   
Max file size             unlimited            unlimited            bytes     
Max processes             63704                63704                processes 
Max open files            1024                 524288               files     
Max locked memory         8388608              8388608              bytes     
`;

describe('baseline: requests are served under the limits', () => {
  test('requests are served under the limits', async () => {
    const server = await start({ maxInFlight: 3, handler: async (body) => body.toString().toUpperCase() });
    const clients = [await h.connect(server.port), await h.connect(server.port), await h.connect(server.port)];
    clients.forEach((c, i) => {
      c.send(FrameType.DATA, `a${i}`);
      c.send(FrameType.DATA, `b${i}`);
      c.send(FrameType.PING, 'p');
    });
    for (const [i, c] of clients.entries()) {
      const frames = await c.waitForFrames(3, `the answers to two requests and a PING from client ${i}`);
      const bodies = frames.filter((f) => f.type === FrameType.DATA).map((f) => f.body.toString()).sort();
      check(bodies.join() === `A${i},B${i}` && frames.some((f) => f.type === FrameType.PONG), `Client ${i} got the wrong answers.`, {
        observed: `frames: ${frameList(c)}`,
        expected: `DATA "A${i}", DATA "B${i}" (the handler's answers) and a PONG`,
        idea: 'under its limits the server is an ordinary request/response server',
      });
    }
  });

  test('a slot freed by a leaving client goes to the next one', async () => {
    const server = await start({ maxConnections: 2 });
    const first = await h.connect(server.port);
    const second = await h.connect(server.port);
    second.send(FrameType.DATA, 'hi');
    await second.waitForFrames(1, 'the echo of "hi"');
    first.end();
    await first.waitClosed('the server closes its side after our FIN');
    await eventually(() => {
      check(server.connections === 1, 'The server still counts a client that left.', {
        observed: `${server.connections} connection(s) counted after one of two clients left`,
        expected: '1',
        idea: "a connection stops counting against the cap when it closes ('close' fires on every path)",
      });
    }, { within: 500 });
    const third = await h.connect(server.port);
    third.send(FrameType.DATA, 'me too');
    const [reply] = await third.waitForFrames(1, 'the echo of "me too"');
    check(reply!.type === FrameType.DATA, 'A client arriving after another left was not served.', {
      observed: `it got ${frameList(third)}`,
      expected: 'DATA "me too": one of the two places was free again',
      idea: 'the cap limits connections open at once, not connections ever made',
    });
  });

  test('by default the connection cap comes from the open-file limit', async () => {
    const server = h.track(await startLimitedServer());
    const budget = readConnectionBudget();
    // The two figures are read a moment apart, when the process holds one or two fds more or less.
    check(Number.isFinite(server.maxConnections) && Math.abs(server.maxConnections - budget) <= 8, 'The default connection cap does not come from the fd budget.', {
      observed: `maxConnections = ${server.maxConnections}; readConnectionBudget() = ${budget}`,
      expected: 'with no maxConnections option, the cap is what readConnectionBudget() says this process can afford',
      idea: 'every connection is a file descriptor, and the open-file limit is the hard ceiling on them',
    });
  });
});

describe('baseline: the building blocks', () => {
  test('the soft open-file limit is read from /proc/self/limits', () => {
    const sample = softOpenFileLimit(SAMPLE_LIMITS);
    const unlimited = softOpenFileLimit(SAMPLE_LIMITS.replace('1024                 524288', 'unlimited            unlimited'));
    const missing = softOpenFileLimit('Limit  Soft Limit  Hard Limit  Units\n');
    const real = readFileSync('/proc/self/limits', 'utf8');
    const line = real.split('\n').find((l) => l.startsWith('Max open files'))!;
    const realSoft = Number(line.split(/\s{2,}/)[1]);
    const parsed = softOpenFileLimit(real);
    check(sample === 1024 && unlimited === Infinity && missing === undefined && parsed === realSoft, 'The open-file limit was misread.', {
      observed: `sample (soft 1024, hard 524288): ${sample}; "unlimited": ${unlimited}; no such line: ${missing}; this process: ${parsed} (its file says ${realSoft})`,
      expected: '1024 (the soft limit, the one the kernel enforces now), Infinity, undefined, and this process\'s soft limit',
      idea: '/proc/self/limits has a soft and a hard column; accept() fails with EMFILE at the soft one',
    });
  });

  test('a token bucket allows a burst, then refills at its rate', () => {
    let now = 0;
    const bucket = new TokenBucket({ capacity: 3, refillPerSecond: 2, now: () => now });
    const burst = [bucket.take(), bucket.take(), bucket.take(), bucket.take()];
    now += 499;
    const tooSoon = bucket.take();
    now += 1;
    const refilled = bucket.take();
    now += 60_000;
    const capped = bucket.available;
    check(burst.join() === 'true,true,true,false' && !tooSoon && refilled && capped === 3, 'The token bucket does not follow its rate.', {
      observed: `burst of 4: ${burst.join(', ')}; after 499 ms: ${tooSoon}; after 500 ms: ${refilled}; after a minute idle: ${capped} tokens`,
      expected: 'true, true, true, false; false; true; 3 (never more than the capacity)',
      idea: 'a bucket allows `capacity` at once, then `refillPerSecond` on average',
    });
  });

  test('the semaphore admits up to its permits, then serves waiters in order', async () => {
    const sem = new Semaphore(2);
    const a = await sem.acquire();
    const b = await sem.acquire();
    const order: string[] = [];
    const c = sem.acquire().then((r) => (order.push('c'), r));
    const d = sem.acquire().then((r) => (order.push('d'), r));
    const waitingBefore = sem.waiting;
    a();
    a(); // a second call must not free a second permit
    const releaseC = await c;
    const inUse = sem.inUse;
    b();
    const releaseD = await d;
    releaseC();
    releaseD();
    check(waitingBefore === 2 && inUse === 2 && order.join() === 'c,d' && sem.inUse === 0 && sem.waiting === 0, 'The semaphore lost count.', {
      observed: `waiting behind 2 holders: ${waitingBefore}; in use after one release (called twice) went to a waiter: ${inUse}; order served: ${order.join(', ')}; in the end in use ${sem.inUse}, waiting ${sem.waiting}`,
      expected: '2 waiting; 2 in use; c then d; 0 and 0',
      idea: 'a release hands the permit to the first waiter; releasing twice is harmless',
    });
  });

  test('a full wait queue is refused at once', async () => {
    const sem = new Semaphore(1, 2);
    const held = await sem.acquire();
    const w1 = sem.acquire();
    const w2 = sem.acquire();
    const outcome = await settleWithin(sem.acquire(), 50);
    check(outcome.done && 'error' in outcome && outcome.error instanceof QueueFullError && sem.waiting === 2, 'A caller was queued beyond the bound.', {
      observed: `a third waiter behind a bound of 2: ${!outcome.done ? 'still waiting after 50 ms' : 'error' in outcome ? String(outcome.error) : 'got a permit'}; waiting: ${sem.waiting}`,
      expected: 'an immediate QueueFullError, and still 2 waiting',
      idea: 'a bounded queue refuses at once instead of growing',
    });
    held();
    (await w1)();
    (await w2)();
  });

  test('a waiter whose time runs out is rejected', async () => {
    const sem = new Semaphore(1);
    const held = await sem.acquire();
    const t0 = performance.now();
    const outcome = await settleWithin(sem.acquire({ timeoutMs: 60 }), 1000);
    const elapsed = performance.now() - t0;
    held();
    check(outcome.done && 'error' in outcome && outcome.error instanceof AcquireTimeoutError && elapsed >= 58, 'A time-limited acquire did not time out.', {
      observed: !outcome.done ? 'still waiting after 1000 ms' : 'error' in outcome ? `${String(outcome.error)} after ${elapsed.toFixed(0)} ms` : `a permit after ${elapsed.toFixed(0)} ms`,
      expected: 'an AcquireTimeoutError after about 60 ms',
      idea: 'a caller can wait for a permit, but not for ever',
    });
  });

  test('backoff delays grow exponentially on average', () => {
    const random = createRandom(1);
    const mean = (attempt: number, capMs: number) => {
      let sum = 0;
      for (let i = 0; i < 4000; i++) sum += backoffDelay(attempt, { baseMs: 10, capMs, random });
      return sum / 4000;
    };
    const growing = [0, 1, 2, 3, 4].map((a) => mean(a, 100_000));
    const ratios = growing.slice(1).map((m, i) => m / growing[i]!);
    const capped = [10, 20, 40].map((a) => mean(a, 1000));
    const flat = Math.max(...capped) / Math.min(...capped);
    check(ratios.every((r) => r >= 1.5 && r <= 2.5) && flat < 1.1, 'Backoff does not grow exponentially, then level off.', {
      observed: `mean waits for attempts 0-4: ${growing.map((m) => m.toFixed(1)).join(', ')} ms (ratios ${ratios.map((r) => r.toFixed(2)).join(', ')}); at attempts 10, 20, 40 with a cap of 1000: ${capped.map((m) => m.toFixed(0)).join(', ')} ms`,
      expected: 'each mean about twice the one before, then flat once the cap is reached',
      idea: 'each failure doubles the ceiling of the next wait, up to the cap',
    });
  });

  test('a connection that stayed up resets the backoff', () => {
    let now = 0;
    const backoff = new Backoff({ baseMs: 100, capMs: 10_000, healthyMs: 1000, random: () => 0.5, now: () => now });
    const first = backoff.next();
    backoff.next();
    backoff.next();
    backoff.opened();
    now += 1000;
    backoff.closed();
    const after = backoff.next();
    check(after === first, 'A healthy connection did not reset the backoff.', {
      observed: `first wait ${first} ms; after three failures and then a connection that lasted 1000 ms (healthyMs), the next wait was ${after} ms`,
      expected: `${first} ms again: the server was back, so the next outage starts from the first step`,
      idea: 'only a connection that stays up proves the server has recovered',
    });
  });

  test('the reconnect loop gets through after the server resets the first 3 connections', async () => {
    const server = await startResettingServer(3);
    const frames: string[] = [];
    const client = keepConnected({ port: server.port, baseMs: 10, capMs: 100, healthyMs: 1000, random: () => 0.5, onFrame: (f) => frames.push(describeFrame(f)) });
    h.defer(() => client.stop());
    await eventually(() => {
      check(frames.includes('DATA "welcome"') && client.connected, 'The reconnecting client never got through.', {
        observed: `${server.acceptedAt.length} connection(s) accepted, the first 3 reset; the client made ${client.attempts} attempt(s), received ${frames.join(', ') || 'nothing'}`,
        expected: 'a 4th connection that stays open and receives DATA "welcome"',
        idea: 'a client that stays connected retries after every failure',
      });
    }, { within: 2000 });
    check(client.attempts === 4 && client.delays.length === 3, 'The client did not make one attempt per failure.', {
      observed: `${client.attempts} attempts, ${client.delays.length} waits`,
      expected: '4 attempts (3 reset, 1 served) and 3 waits between them',
      idea: 'one wait after each failed connection, none while connected',
    });
  });
});

describe('the connection limit answers BUSY', () => {
  test('the 4th connection got BUSY and then a close', async () => {
    // A long grace period: only the server's own end() closes the refused connection quickly.
    const server = await start({ maxConnections: 3, refuseGraceMs: 5000 });
    const admitted = [await h.connect(server.port), await h.connect(server.port), await h.connect(server.port)];
    for (const c of admitted) {
      c.send(FrameType.DATA, 'in');
      await c.waitForFrames(1, 'the echo of "in" (the first three are admitted)');
    }
    const t4 = performance.now();
    const fourth = await h.connect(server.port);
    await eventually(() => {
      check(fourth.closed || (busy(fourth) === 0 && fourth.frames.length === 0), 'The 4th connection got BUSY but was left open.', {
        observed: `the 4th connection received ${frameList(fourth)} and is still open ${(performance.now() - t4).toFixed(0)} ms later (refuseGraceMs is 5000)`,
        expected: 'BUSY, then a FIN right away: end() after the BUSY frame',
        idea: 'a refusal is a frame and a close: a refused client left open holds a descriptor and a slot of the accept loop until it decides to leave',
      });
      check(fourth.closed, server.connections > 3 ? 'A 4th connection was admitted past maxConnections (3).' : 'The 4th connection was neither refused nor served.', {
        observed: `the 4th connection is still open after ${(performance.now() - t4).toFixed(0)} ms, having received ${frameList(fourth)}; the server counts ${server.connections} connection(s)`,
        expected: 'a BUSY frame, then a close: 3 is the cap',
        idea: 'past the cap, a server refuses out loud and hangs up: refuse when the count already equals maxConnections',
      });
    }, { within: 1000 });
    const how = fourth.error?.code === 'ECONNRESET' ? 'reset' : fourth.ended ? 'fin' : 'closed';
    check(fourth.frames[0]?.type === FrameType.BUSY, 'The 4th connection was closed without a word.', {
      observed: `the 4th connection was accepted, then closed (${how}) ${fourth.closedAfterMs?.toFixed(0)} ms later having received ${frameList(fourth)}`,
      expected: 'a BUSY frame (the reason), then a close: the client learns the server is full and should back off',
      idea: "server.maxConnections accepts and closes before your code runs: the client sees 'connect' then 'end', a full server looks like a clean goodbye",
    });
    for (const c of admitted) {
      c.send(FrameType.DATA, 'still here');
      await c.waitForFrames(2, 'the echo of "still here" (refusing a newcomer changes nothing for the admitted)');
    }
  });
});

describe('the connection budget keeps headroom below the fd limit', () => {
  test('the connection budget leaves headroom below the open-file limit', () => {
    const budget = connectionBudget(SAMPLE_LIMITS, 20);
    const spare = 1024 - 20 - budget;
    check(budget > 0 && spare >= 32, 'The connection budget uses up every file descriptor.', {
      observed: `soft limit 1024, 20 fds already open: a budget of ${budget} connections leaves ${spare} fd(s) for anything else`,
      expected: 'a positive budget that keeps at least 32 fds (better: a share of the limit) for outbound connections, files, logs',
      idea: 'if the cap is the fd limit itself, accept() hits EMFILE first, and libuv closes clients silently: the cap never gets to say BUSY',
    });
  });

  test('the connection budget leaves headroom whatever is already open', () => {
    const result = fc.check(
      fc.property(fc.integer({ min: 256, max: 1_000_000 }), fc.double({ min: 0, max: 0.5, noNaN: true }), (soft, share) => {
        const open = Math.floor(soft * share);
        const limits = SAMPLE_LIMITS.replace('1024                 524288', `${String(soft).padEnd(20)} 1048576`);
        const budget = connectionBudget(limits, open);
        return budget > 0 && open + budget + 32 <= soft;
      }),
      { seed: 6, numRuns: 300 },
    );
    const [soft, share] = result.counterexample ?? [];
    const open = soft === undefined || share === undefined ? 0 : Math.floor(soft * share);
    check(!result.failed, 'The connection budget does not leave room for what is already open.', () => ({
      observed: `soft limit 1024 with 500 fds already open: budget ${connectionBudget(SAMPLE_LIMITS, 500)}, so ${1024 - 500 - connectionBudget(SAMPLE_LIMITS, 500)} fd(s) to spare (fast-check's smallest case: soft ${soft}, ${open} open, budget ${soft === undefined ? '?' : connectionBudget(SAMPLE_LIMITS.replace('1024                 524288', `${String(soft).padEnd(20)} 1048576`), open)})`,
      expected: 'a positive budget with open + budget + 32 <= the soft limit, for any limit of 256 or more and up to half of it already open',
      idea: 'the budget is the soft limit minus what is open now minus a reserve; forget any of the three and the kernel refuses before the cap does',
    }));
  });

  test("this process's connection budget leaves room below its own limit", () => {
    const limits = readFileSync('/proc/self/limits', 'utf8');
    const soft = Number(limits.split('\n').find((l) => l.startsWith('Max open files'))!.split(/\s{2,}/)[1]);
    const open = readdirSync('/proc/self/fd').length;
    const budget = readConnectionBudget();
    const spare = soft - open - budget;
    check(Number.isFinite(budget) && budget > 0 && spare >= 32, 'The budget read from /proc/self/limits leaves no headroom.', {
      observed: `this process: soft limit ${soft}, ${open} fds open now (stdio, epoll, the test runner's pipes...), budget ${budget}: ${spare} fd(s) to spare`,
      expected: 'at least 32 fds to spare beyond what is open and what the clients may take',
      idea: 'the process keeps opening files and outbound sockets after it starts; the connection cap must leave them room',
    });
  });
});

describe('in-flight work is bounded', () => {
  test('peak concurrency never exceeded 3 and the queue never exceeded its bound', async () => {
    const work = heldWork();
    const server = await start({ maxInFlight: 3, maxQueued: 4, queueTimeoutMs: 5000, handler: work.handler });
    const clients: TestClient[] = [];
    for (let i = 0; i < 10; i++) {
      const c = await h.connect(server.port);
      c.send(FrameType.DATA, `r${i}`);
      clients.push(c);
    }
    const busyCount = () => clients.reduce((n, c) => n + busy(c), 0);
    // Every request is either running, waiting or refused once the server has read them all.
    await eventually(() => {
      check(work.running === 3 && server.queued + busyCount() === 7, 'The server never settled with 3 requests running.', {
        observed: `${work.running} running, ${server.queued} waiting, ${busyCount()} refused with BUSY`,
        expected: '3 running (maxInFlight), the other 7 waiting or refused',
        idea: 'a semaphore caps the work in flight',
      });
    }, { within: 1000 });
    const refusedNow = busyCount();
    check(work.peak <= 3 && server.peakQueued <= 4 && refusedNow === 3, 'More requests were held than the limits allow.', {
      observed: `${work.peak} handler(s) ran at once (limit 3); ${server.peakQueued} request(s) waited for a slot (bound 4); ${refusedNow} got BUSY`,
      expected: '3 running, 4 waiting, and the 3 that did not fit refused at once with BUSY',
      idea: 'an unbounded queue only moves the overload into memory and latency: bound it, and refuse what does not fit while the client can still go elsewhere',
    });
    work.release();
    await eventually(() => {
      const served = clients.reduce((n, c) => n + data(c), 0);
      check(served === 7, 'The queued requests were not served once slots came free.', {
        observed: `${served} DATA answer(s) after the running work finished`,
        expected: '7: the 3 that ran and the 4 that waited',
        idea: 'a waiting request gets the next free slot',
      });
    }, { within: 1000 });
  });

  test('a request that waits longer than queueTimeoutMs is answered BUSY', async () => {
    const work = heldWork();
    const server = await start({ maxInFlight: 1, maxQueued: 10, queueTimeoutMs: 100, handler: work.handler });
    const first = await h.connect(server.port);
    first.send(FrameType.DATA, 'slow');
    await eventually(() => check(work.running === 1, 'The first request never started.', {
      observed: `${work.running} running`, expected: '1', idea: 'a free slot is taken at once',
    }), { within: 1000 });
    const second = await h.connect(server.port);
    const t0 = performance.now();
    second.send(FrameType.DATA, 'waits');
    await eventually(() => {
      check(busy(second) === 1, 'A request waited for a slot with no time limit.', {
        observed: `${(performance.now() - t0).toFixed(0)} ms after it was sent, with the only slot taken, the request has received ${frameList(second)}; ${server.queued} request(s) waiting`,
        expected: 'BUSY about 100 ms (queueTimeoutMs) after it was sent',
        idea: 'a wait without a deadline turns a slow moment into requests stuck for ever; give up in time and tell the client',
      });
    }, { within: 400 });
    const elapsed = performance.now() - t0;
    check(elapsed >= 98, 'The waiting request was refused too early.', {
      observed: `BUSY after ${elapsed.toFixed(0)} ms`,
      expected: 'not before queueTimeoutMs (100 ms)',
      idea: 'the queue exists so that a short burst is absorbed: refuse only when the wait runs out',
    });
  });

  test('a waiter whose signal aborts leaves the queue', async () => {
    const sem = new Semaphore(1);
    const held = await sem.acquire();
    const quitter = new AbortController();
    const gaveUp = sem.acquire({ signal: quitter.signal });
    const patient = sem.acquire();
    quitter.abort(new Error('client gone'));
    const aborted = await settleWithin(gaveUp, 100);
    const waitingAfter = sem.waiting;
    held();
    const next = await settleWithin(patient, 100);
    check(aborted.done && 'error' in aborted && waitingAfter === 1 && next.done && 'value' in next, 'A waiter that gave up still holds a place in the queue.', {
      observed: `after the first of 2 waiters aborted: it ${aborted.done ? ('error' in aborted ? 'was rejected' : 'got a permit') : 'was still pending'}; ${waitingAfter} waiting; when the permit was released the patient waiter ${next.done ? 'got it' : 'was still waiting 100 ms later: the permit went to the one that had left, and is lost'}`,
      expected: 'rejected; 1 waiting; the patient waiter gets the permit',
      idea: 'a waiter that stops waiting must leave the queue; otherwise a release hands its permit to nobody, and after enough of these no permit is left',
    });
    if (next.done && 'value' in next) (next.value as Release)();
  });

  test('a client that leaves while queued gives its place back', async () => {
    const work = heldWork();
    const server = await start({ maxInFlight: 1, maxQueued: 10, queueTimeoutMs: 5000, handler: async (body) => (body.toString() === 'hold' ? work.handler(body) : body) });
    const holder = await h.connect(server.port);
    holder.send(FrameType.DATA, 'hold');
    // One client leaves with a FIN, the other with a reset (no FIN, no 'end' on the server).
    const quitter = await h.connect(server.port);
    quitter.send(FrameType.DATA, 'never mind');
    const resetter = await h.connect(server.port);
    resetter.send(FrameType.DATA, 'never mind either');
    await eventually(() => check(work.running === 1 && server.queued === 2, 'The requests never queued.', {
      observed: `${work.running} running, ${server.queued} waiting`, expected: '1 running, 2 waiting', idea: 'a busy slot makes the next requests wait',
    }), { within: 1000 });
    quitter.destroy();
    await quitter.waitClosed('we closed it ourselves');
    await eventually(() => {
      check(server.queued <= 1, 'A client that left still waits in the queue.', {
        observed: `${server.queued} request(s) waiting, though one of the 2 waiting clients disconnected (FIN)`,
        expected: "1: the connection's abort signal takes its request out of the queue",
        idea: 'a queued request whose client left must leave the queue, or the next free slot goes to nobody and is lost',
      });
    }, { within: 400 });
    resetter.reset();
    await eventually(() => {
      check(server.queued === 0, 'A client that reset still waits in the queue.', {
        observed: `${server.queued} request(s) waiting, though both waiting clients are gone (the second reset its connection: ECONNRESET, no FIN)`,
        expected: "0: the connection's abort signal fires on 'close', however the connection ended",
        idea: "abort a connection's work on 'close', not on 'end': a reset peer never sends FIN, so its queued requests would keep their places and its handlers run on",
      });
    }, { within: 400 });
    work.release();
    await holder.waitForFrames(1, 'the answer to "hold"');
    const later = await h.connect(server.port);
    later.send(FrameType.DATA, 'next');
    await later.waitForFrames(1, 'the echo of "next" (the only slot is free again)');
  });
});

describe('one IP cannot starve the others', () => {
  test("127.0.0.2's storm is refused while 127.0.0.3 is still served", async () => {
    const server = await start({ connectBurst: 3, connectPerSecond: 1, now: () => 0 }); // a stopped clock: no refill
    const storm: TestClient[] = [];
    for (let i = 0; i < 8; i++) storm.push(await h.connect(server.port, { localAddress: '127.0.0.2' }));
    await eventually(() => {
      const refused = storm.filter((c) => busy(c) === 1 && c.closed).length;
      check(refused === 5, "127.0.0.2's reconnect storm was not limited.", {
        observed: `of 8 connections from 127.0.0.2 in a row, ${refused} got BUSY and a close`,
        expected: '5: a burst of 3 is allowed, the rest are refused with BUSY',
        idea: 'a token bucket limits how fast new connections may come',
      });
    }, { within: 1000 });
    const other = await h.connect(server.port, { localAddress: '127.0.0.3' });
    other.send(FrameType.DATA, 'hello');
    await other.waitForFrames(1, 'an answer to "hello" from 127.0.0.3');
    check(other.frames[0]?.type === FrameType.DATA, "A quiet client was refused because of another IP's storm.", {
      observed: `127.0.0.3 connected once, after 127.0.0.2 opened 8 connections, and received ${frameList(other)}${other.closed ? ', then a close' : ''}`,
      expected: 'DATA "hello": 127.0.0.3 has its own allowance, untouched',
      idea: "one bucket shared by everyone lets one client's storm spend everyone's allowance: key the bucket by client IP",
    });
  });

  test('a client IP may connect again once its allowance refills', async () => {
    let now = 0;
    const server = await start({ connectBurst: 2, connectPerSecond: 1, now: () => now });
    await h.connect(server.port, { localAddress: '127.0.0.2' });
    await h.connect(server.port, { localAddress: '127.0.0.2' });
    const third = await h.connect(server.port, { localAddress: '127.0.0.2' });
    await third.waitClosed('a third connection within the same second is refused');
    now += 1000;
    const later = await h.connect(server.port, { localAddress: '127.0.0.2' });
    later.send(FrameType.DATA, 'back');
    await eventually(() => {
      check(busy(third) === 1 && later.frames[0]?.type === FrameType.DATA, 'The rate limit does not refill.', {
        observed: `third connection: ${frameList(third)}; one (simulated) second later: ${frameList(later)}`,
        expected: 'BUSY for the third, then DATA "back" once a token has come back',
        idea: 'a rate limit slows a client down; it does not ban it',
      });
    }, { within: 1000 });
  });
});

describe('clients back off: capped, exponential, full jitter', () => {
  test('backoff delays never exceed the cap', () => {
    const result = fc.check(
      fc.property(
        fc.integer({ min: 0, max: 40 }),
        // random() in [0, 1), in steps of 0.001 so a counterexample reads plainly
        fc.integer({ min: 0, max: 999 }).map((k) => k / 1000),
        // a sensible configuration: a base of 10 ms to 1 s, and a cap 2 to 1000 times the base
        fc.integer({ min: 10, max: 1000 }),
        fc.integer({ min: 2, max: 1000 }),
        (attempt, r, baseMs, capFactor) => {
          const d = backoffDelay(attempt, { baseMs, capMs: baseMs * capFactor, random: () => r });
          return d >= 0 && d <= baseMs * capFactor;
        },
      ),
      { seed: 6, numRuns: 500 },
    );
    const [attempt, r, baseMs, capFactor] = result.counterexample ?? [];
    const capMs = baseMs === undefined || capFactor === undefined ? undefined : baseMs * capFactor;
    check(!result.failed, 'A backoff delay went past the cap.', () => ({
      observed: `with baseMs 100 and capMs 1000, the 11th attempt waits ${backoffDelay(10, { baseMs: 100, capMs: 1000, random: () => 0.9 })} ms when random() = 0.9 (the smallest case fast-check found: backoffDelay(${attempt}, { baseMs: ${baseMs}, capMs: ${capMs} }) with random() = ${r} returned ${backoffDelay(attempt!, { baseMs, capMs, random: () => r! })})`,
      expected: 'a wait between 0 and capMs, whatever the attempt',
      idea: 'the cap bounds the whole wait: jitter goes inside it, not on top',
    }));
  });

  test('a herd of clients spreads its retries over the whole window (full jitter)', () => {
    const random = createRandom(42);
    const ceiling = 100 * 2 ** 6; // the 7th attempt of a client with baseMs 100: 6400 ms
    const delays = Array.from({ length: 1000 }, () => backoffDelay(6, { baseMs: 100, capMs: 10_000, random }));
    const bins = Array.from({ length: 10 }, () => 0);
    let outside = 0;
    for (const d of delays) {
      if (d < 0 || d > ceiling) outside++;
      else bins[Math.min(9, Math.floor((d / ceiling) * 10))]!++;
    }
    const lo = Math.min(...delays);
    const hi = Math.max(...delays);
    check(outside === 0 && Math.min(...bins) >= 50, 'A herd of clients retries together.', {
      observed: `1000 clients that failed together wait between ${lo.toFixed(0)} and ${hi.toFixed(0)} ms before their 7th attempt; per tenth of [0, ${ceiling}] ms: ${bins.join(', ')}${outside ? ` (${outside} outside it)` : ''}`,
      expected: `waits spread evenly over the whole window [0, ${ceiling}] ms: about 100 per tenth`,
      idea: 'full jitter (sleep = random(0, min(cap, base * 2^attempt))) turns a synchronized herd into a steady trickle the server can absorb',
    });
    // Long outages: past the cap, the herd must still spread over [0, cap], not pile up at it.
    const capMs = 1000;
    const late = Array.from({ length: 1000 }, () => backoffDelay(20, { baseMs: 100, capMs, random }));
    const lateBins = Array.from({ length: 10 }, () => 0);
    let lateOutside = 0;
    for (const d of late) {
      if (d < 0 || d > capMs) lateOutside++;
      else lateBins[Math.min(9, Math.floor((d / capMs) * 10))]!++;
    }
    check(lateOutside === 0 && Math.min(...lateBins) >= 50, 'Past the cap, the herd retries together again.', {
      observed: `1000 clients at their 21st attempt (baseMs 100, capMs ${capMs}) wait between ${Math.min(...late).toFixed(0)} and ${Math.max(...late).toFixed(0)} ms; per tenth of [0, ${capMs}] ms: ${lateBins.join(', ')}${lateOutside ? ` (${lateOutside} outside it)` : ''}`,
      expected: `waits spread evenly over [0, ${capMs}] ms: about 100 per tenth`,
      idea: 'cap the ceiling, then draw the jitter below it: min(cap, random() * base * 2^attempt) sends every client of a long outage back at exactly the cap, together',
    });
  });

  test('a connection that closes at once does not reset the backoff', () => {
    let now = 0;
    const backoff = new Backoff({ baseMs: 100, capMs: 10_000, healthyMs: 1000, random: () => 0.5, now: () => now });
    const waits = [backoff.next(), backoff.next(), backoff.next()];
    backoff.opened(); // accepted...
    now += 5;
    backoff.closed(); // ...then BUSY and a close, 5 ms later
    const after = backoff.next();
    check(after > waits[2]!, 'An accepted-then-closed connection reset the backoff.', {
      observed: `waits after 3 failures: ${waits.join(', ')} ms; then a connection opened and closed 5 ms later; the next wait: ${after} ms`,
      expected: `longer than ${waits[2]} ms: this is the 4th failure in a row`,
      idea: "an overloaded server accepts, says BUSY and closes: 'connect' proves nothing, only a connection that stays up for healthyMs resets the schedule",
    });
  });

  test('the reconnect loop slows down against a server that accepts and then resets', async () => {
    const server = await startResettingServer(4);
    const client = keepConnected({ port: server.port, baseMs: 20, capMs: 1000, healthyMs: 1000, random: () => 0.999 });
    h.defer(() => client.stop());
    await eventually(() => {
      check(server.acceptedAt.length >= 5, 'The client stopped reconnecting.', {
        observed: `${server.acceptedAt.length} connection(s) accepted`, expected: '5 (4 reset, then 1 served)', idea: 'a reconnecting client keeps trying',
      });
    }, { within: 2000 });
    const waits = client.delays.slice(0, 4);
    const gaps = server.acceptedAt.slice(1, 5).map((t, i) => t - server.acceptedAt[i]!);
    // With random() = 0.999 the waits are about 20, 40, 80, 160 ms; the gaps the server saw include them.
    const growing = waits.length === 4 && waits.every((w, i) => w >= 0.9 * 20 * 2 ** i && gaps[i]! >= w - 2);
    check(growing, 'The client retried at the same pace after every reset.', {
      observed: `each connection was accepted, then reset right after 'connect'; the client waited ${waits.map((w) => w.toFixed(0)).join(', ')} ms (the server saw gaps of ${gaps.map((g) => g.toFixed(0)).join(', ')} ms)`,
      expected: 'waits that grow with each failure: about 20, 40, 80, 160 ms with baseMs 20 and random() = 0.999',
      idea: "a client that resets its backoff on 'connect' hammers a server that accepts and then refuses: a tight loop exactly when the server is overloaded",
    });
  });
});

describe('the backoff resets only after a healthy connection, every time', () => {
  test('a short connection after a healthy one does not reset the backoff either', () => {
    let now = 0;
    const backoff = new Backoff({ baseMs: 100, capMs: 10_000, healthyMs: 1000, random: () => 0.5, now: () => now });
    backoff.next();
    backoff.opened();
    now += 2000; // a healthy connection: the schedule starts again
    backoff.closed();
    const waits = [backoff.next(), backoff.next(), backoff.next()];
    now += 10_000;
    backoff.opened(); // accepted, then BUSY and a close 5 ms later
    now += 5;
    backoff.closed();
    const after = backoff.next();
    check(after > waits[2]!, 'After one healthy connection, every short one resets the backoff.', {
      observed: `a healthy connection (2000 ms), then 3 failures (waits ${waits.join(', ')} ms), then a connection that lasted 5 ms: the next wait was ${after} ms`,
      expected: `longer than ${waits[2]} ms: the 5 ms connection proves nothing`,
      idea: 'measure each connection from its own open: a start time kept from an earlier connection makes every later one look healthy',
    });
  });

  test('the reconnect loop slows down against a server that answers BUSY', async () => {
    const server = await startResettingServer(4, 'busy');
    const frames: string[] = [];
    const client = keepConnected({ port: server.port, baseMs: 20, capMs: 1000, healthyMs: 1000, random: () => 0.999, onFrame: (f) => frames.push(describeFrame(f)) });
    h.defer(() => client.stop());
    await eventually(() => {
      check(server.acceptedAt.length >= 5, 'The client stopped reconnecting.', {
        observed: `${server.acceptedAt.length} connection(s) accepted`, expected: '5 (4 refused with BUSY, then 1 served)', idea: 'a reconnecting client keeps trying',
      });
    }, { within: 2000 });
    const waits = client.delays.slice(0, 4);
    const growing = waits.length === 4 && waits.every((w, i) => w >= 0.9 * 20 * 2 ** i);
    check(growing, 'The client retried at its fastest pace while the server said BUSY.', {
      observed: `each connection got BUSY and a close; the client waited ${waits.map((w) => w.toFixed(0)).join(', ')} ms between attempts (frames received: ${frames.slice(0, 4).join(', ')})`,
      expected: 'waits that grow with each refusal: about 20, 40, 80, 160 ms with baseMs 20 and random() = 0.999',
      idea: 'a frame from the server proves nothing: an overloaded server\'s first frame is BUSY. Only a connection that stays up for healthyMs resets the schedule',
    });
  });
});

describe('every slot comes back, on every path', () => {
  test('a handler that throws gives its slot back, every time', async () => {
    const server = await start({
      maxInFlight: 2,
      queueTimeoutMs: 300,
      handler: async (body) => {
        if (body.toString() === 'boom') throw new Error('the database said no');
        return body;
      },
    });
    const client = await h.connect(server.port);
    for (const body of ['boom', 'boom', 'boom', 'ok']) client.send(FrameType.DATA, body);
    await eventually(() => {
      check(client.frames.length >= 4, 'Requests went unanswered after the handler failed.', {
        observed: `4 requests (3 fail in the handler, then "ok"); answers so far: ${frameList(client)}`,
        expected: '4 answers', idea: 'every request gets an answer',
      });
    }, { within: 1000 });
    const errors = client.frames.filter((f) => f.type === FrameType.ERROR).length;
    check(errors === 3 && data(client) === 1, 'A failed request kept its in-flight slot.', {
      observed: `with 2 slots, 3 requests whose handler threw, then "ok": ${frameList(client)}`,
      expected: '3 ERROR and DATA "ok": each failure gives its slot back',
      idea: 'release the permit in a finally: a permit released only when the handler succeeds is lost on every failure, and after maxInFlight failures the server answers nothing but BUSY',
    });
    check(server.inFlight === 0, 'Slots are still held after every request was answered.', {
      observed: `${server.inFlight} slot(s) in use with nothing running`, expected: '0', idea: 'a permit is released exactly once, whatever the handler did',
    });
  });

  test('clients that reset give their place back', async () => {
    const server = await start({ maxConnections: 2 });
    for (let round = 1; round <= 2; round++) {
      const pair = [await h.connect(server.port), await h.connect(server.port)];
      for (const c of pair) {
        c.send(FrameType.DATA, `round ${round}`);
        const [reply] = await c.waitForFrames(1, `the echo of "round ${round}"`);
        check(reply!.type === FrameType.DATA, `A client was refused in round ${round} though the clients before it had gone.`, {
          observed: `round ${round}: ${frameList(c)}; the server counts ${server.connections} connection(s)`,
          expected: 'DATA: the two clients of the previous round reset their connections, so both places are free',
          idea: "a connection stops counting when it closes, however it closes: 'end' never fires for a reset, 'close' always does",
        });
      }
      for (const c of pair) c.reset();
      await eventually(() => {
        check(server.connections === 0, 'Connections closed by a reset still count against the cap.', {
          observed: `${server.connections} connection(s) counted 500 ms after both clients reset (ECONNRESET, no FIN)`,
          expected: '0',
          idea: "count down on 'close', not on 'end': a reset peer never sends FIN, and after maxConnections resets nobody gets in",
        });
      }, { within: 500 });
    }
  });

  test('connections that have not sent anything yet count against the cap', async () => {
    const server = await start({ maxConnections: 3, refuseGraceMs: 5000 });
    // Three clients connect and say nothing (a slow client, an attacker, a client behind a dead proxy).
    for (let i = 0; i < 3; i++) await h.connect(server.port);
    const t0 = performance.now();
    const fourth = await h.connect(server.port);
    await eventually(() => {
      check(busy(fourth) === 1, 'Silent connections were not counted.', {
        observed: `3 connections open and silent, ${server.connections} counted; a 4th received ${frameList(fourth)} after ${(performance.now() - t0).toFixed(0)} ms`,
        expected: 'BUSY for the 4th: every accepted socket holds a descriptor from the moment it is accepted',
        idea: "count a connection in the 'connection' handler, before any await or first frame: connections that never speak would otherwise be unlimited",
      });
    }, { within: 1000 });
  });
});

describe('a refused client is dealt with completely', () => {
  test('a refused client that never closes is dropped after refuseGraceMs', async () => {
    const server = await start({ maxConnections: 1, refuseGraceMs: 150 });
    const admitted = await h.connect(server.port);
    admitted.send(FrameType.DATA, 'in');
    await admitted.waitForFrames(1, 'the echo of "in"');
    const before = socketFdCount();
    // This client reads BUSY and then does nothing: it never sends its FIN.
    const stubborn = await h.connect(server.port, { allowHalfOpen: true });
    const t0 = performance.now();
    await eventually(() => {
      check(busy(stubborn) === 1 || stubborn.ended, 'A 2nd connection was not refused while the only place was taken.', {
        observed: `maxConnections 1, one client served; a 2nd connection received ${frameList(stubborn)} and no FIN after ${(performance.now() - t0).toFixed(0)} ms; the server counts ${server.connections} connection(s)`,
        expected: 'a refusal at once (BUSY and FIN)',
        idea: 'past maxConnections, every accepted socket is refused out loud, whether or not it has sent anything',
      });
    }, { within: 500 });
    await eventually(() => {
      const extra = socketFdCount() - before;
      check(extra <= 1, 'A refused client that never leaves is kept for ever.', {
        observed: `${(performance.now() - t0).toFixed(0)} ms after the refusal (refuseGraceMs 150), ${extra} socket fd(s) for that one connection are still open in this process (its client end, and the server's end); the client received ${frameList(stubborn)}`,
        expected: "only the client's end: the server destroys its side once the grace period is over",
        idea: "end() after BUSY only asks the peer to leave: a peer that never answers FIN holds the descriptor until the server destroy()s it after a grace period",
      });
    }, { within: 600 });
  });

  test('every refused client that never closes is dropped after refuseGraceMs', async () => {
    const accepted = h.watchAccepted();
    const server = await start({ maxConnections: 1, refuseGraceMs: 150 });
    const admitted = await h.connect(server.port);
    admitted.send(FrameType.DATA, 'in');
    await admitted.waitForFrames(1, 'the echo of "in"');
    // Three clients read BUSY and then do nothing, refused one after the other.
    const stubborn: TestClient[] = [];
    for (let i = 0; i < 3; i++) {
      const c = await h.connect(server.port, { allowHalfOpen: true });
      await c.waitForFrames(1, 'BUSY (the only place is taken)');
      stubborn.push(c);
      await new Promise((resolve) => setTimeout(resolve, 40));
    }
    const t0 = performance.now();
    await eventually(() => {
      const open = stubborn.filter((c) => !accepted.of(c.port)?.destroyed);
      check(open.length === 0, 'Only some refused clients were dropped after the grace period.', {
        observed: `3 refused clients that never close, refused about 40 ms apart (refuseGraceMs 150): ${(performance.now() - t0).toFixed(0)} ms after the last refusal, the server still holds ${open.length} of them (ports ${open.map((c) => c.port).join(', ')})`,
        expected: "every refused socket destroyed once its own grace period is over",
        idea: 'the grace period belongs to each refused connection: one timer shared by all, restarted at each refusal, only ever drops the last one',
      });
    }, { within: 500 });
  });

  test('a refused client can finish what it was saying and leave cleanly', async () => {
    const accepted = h.watchAccepted();
    const server = await start({ maxConnections: 1, refuseGraceMs: 5000 });
    await h.connect(server.port);
    // allowHalfOpen: this client decides itself when to close, after the server's FIN.
    const late = await h.connect(server.port, { allowHalfOpen: true });
    late.send(FrameType.HELLO, 'hi');
    await late.waitForFrames(1, 'BUSY (the only place is taken)');
    const side = accepted.of(late.port); // found while both ends are open
    late.send(FrameType.PING, 'one more'); // already on its way when BUSY arrived
    late.end();
    const how = await late.waitClosed('a clean close after our FIN');
    check(how === 'fin' && !late.error && late.frames[0]?.type === FrameType.BUSY, 'A refused client was reset instead of closed.', {
      observed: `the refused client received ${frameList(late)}, sent a frame and its FIN, and the connection ended with ${late.error ? `${late.error.code ?? late.error.message} (a reset)` : how}`,
      expected: 'BUSY, then a clean close (FIN both ways), no ECONNRESET',
      idea: 'refuse with end(), keep reading, and destroy only after a grace period: a socket destroyed at once answers whatever the client still sends with RST, and a client stack may discard the unread BUSY with it',
    });
    // The client has left: the server's side must go now, not when the 5 s grace runs out.
    const t0 = performance.now();
    await eventually(() => {
      check(!side || side.closedAt !== undefined, "The server kept a refused socket after its client left.", {
        observed: `the refused client sent its FIN and closed; ${(performance.now() - t0).toFixed(0)} ms later the server's side is still open (ended: ${side?.ended}, destroyed: ${side?.destroyed}); refuseGraceMs is 5000`,
        expected: "the server's side closed as soon as the client's FIN arrived",
        idea: "a refused socket must keep reading (resume()): a paused socket never reads the client's FIN, so it holds its descriptor for the whole grace period, and a storm of refusals holds thousands",
      });
    }, { within: 500 });
  });

  test('refused clients that reset do not crash the server', async () => {
    const server = await start({ connectBurst: 1, connectPerSecond: 1, now: () => 0 }); // a stopped clock: one connection, then BUSY
    const admitted = await h.connect(server.port);
    for (let i = 0; i < 3; i++) {
      // allowHalfOpen: the client does not answer the server's FIN, it resets instead.
      const c = await h.connect(server.port, { allowHalfOpen: true });
      await c.waitForFrames(1, 'BUSY (the rate limit allows one connection)');
      c.reset();
    }
    admitted.send(FrameType.DATA, 'still up?');
    await eventually(() => {
      check(data(admitted) === 1, 'The admitted client was not answered after refused clients reset.', {
        observed: `after 3 refused clients reset their connections, the admitted client received ${frameList(admitted)}`,
        expected: 'DATA "still up?"',
        idea: "a refused socket is a socket too: it needs an 'error' listener until it closes",
      });
    }, { within: 1000 });
  });
});

describe('admission.ts: the door, on its own', () => {
  test('admit() refuses past maxConnections with BUSY and counts only what it admitted', async () => {
    const reasons: string[] = [];
    const door = await startDoor({ maxConnections: 2, refuseGraceMs: 5000, onRefused: (reason) => reasons.push(reason) });
    const first = await h.connect(door.port);
    const second = await h.connect(door.port);
    await first.waitForFrames(1, 'DATA "welcome" (1 of 2 places)');
    await second.waitForFrames(1, 'DATA "welcome" (2 of 2 places)');
    // allowHalfOpen: this refused client stays after the server's FIN, so it is still "refusing".
    const third = await h.connect(door.port, { allowHalfOpen: true });
    await eventually(() => {
      check(third.frames.length >= 1 || third.closed, 'A 3rd connection was neither refused nor welcomed.', {
        observed: `nothing received and still open; admission.connections = ${door.admission.connections}`,
        expected: 'a BUSY frame at once',
        idea: 'admit() decides at once: admitted, or refused out loud',
      });
    }, { within: 1000 });
    check(third.frames[0]?.type === FrameType.BUSY, third.frames[0]?.type === FrameType.DATA ? 'admit() let a connection in past maxConnections.' : 'admit() closed a connection past the cap without a word.', {
      observed: `maxConnections 2, two clients in; a 3rd received ${frameList(third)}${third.closed ? ', then a close' : ''}; admission.connections = ${door.admission.connections}`,
      expected: 'BUSY ("connections: 2 of 2 in use"), then a FIN',
      idea: "the cap belongs in admit(): count the admitted connections and refuse() past maxConnections. server.maxConnections closes before any code runs, so the client can't tell 'full' from 'goodbye', and a server that only calls admit() has no cap at all",
    });
    await eventually(() => {
      check(door.admission.connections === 2, 'A refused connection was counted as admitted.', {
        observed: `2 admitted and 1 refused (still open): admission.connections = ${door.admission.connections}`,
        expected: '2',
        idea: 'a refused socket holds no place under the cap: count a connection only once admit() lets it in, or a storm of refusals fills the cap',
      });
      check(door.admission.refusing === 1, 'The refused connection is not among the refusing.', {
        observed: `a refused client that has not left yet (it never answers our FIN): admission.refusing = ${door.admission.refusing}; the client ${third.closed ? 'saw its connection closed' : 'is still connected'}`,
        expected: "1: the server's side stays open, reading, until the client's FIN or the end of refuseGraceMs",
        idea: 'refusing counts the refused sockets still open, the ones stop() must destroy: 0 here means the socket was destroyed at once (the client may lose its BUSY to a reset) or forgotten',
      });
      check(reasons.length === 1 && reasons[0]!.startsWith('connections'), 'onRefused did not report the refusal.', {
        observed: `onRefused was called with ${reasons.length ? reasons.map((r) => `"${r}"`).join(', ') : 'nothing'}`,
        expected: 'one call, with a reason starting "connections" (the one the client got in its BUSY)',
        idea: 'every refusal is reported once, with its reason, for logs and metrics',
      });
    }, { within: 500 });
    second.reset();
    await eventually(() => {
      check(door.admission.connections === 1, 'A connection closed by a reset still counts against the cap.', {
        observed: `${door.admission.connections} connection(s) counted after one of the 2 admitted clients reset (ECONNRESET, no FIN)`,
        expected: '1',
        idea: "admit() counts a connection until 'close', which fires on every path; 'end' never fires for a reset",
      });
    }, { within: 500 });
    const fourth = await h.connect(door.port);
    const [reply] = await fourth.waitForFrames(1, 'DATA "welcome" (a place came free)');
    check(reply!.type === FrameType.DATA, 'A place freed by a reset was not given to the next client.', {
      observed: `the next client received ${frameList(fourth)}; connections = ${door.admission.connections}`,
      expected: 'DATA "welcome"',
      idea: 'the cap limits connections open at once, not connections ever made',
    });
    third.end();
    await eventually(() => {
      check(door.admission.refusing === 0, 'A refused client that left is still counted as refusing.', {
        observed: `refusing = ${door.admission.refusing} after the refused client sent its FIN`,
        expected: '0',
        idea: "a refused socket leaves the Admission's books on 'close'",
      });
    }, { within: 500 });
  });

  test("a storm of refused connections spends neither another IP's allowance nor the cap", async () => {
    const reasons: string[] = [];
    // A stopped clock: 2 connections per IP, and no refill.
    const door = await startDoor({ maxConnections: 3, connectBurst: 2, connectPerSecond: 1, now: () => 0, refuseGraceMs: 5000, onRefused: (reason) => reasons.push(reason) });
    const storm: TestClient[] = [];
    for (let i = 0; i < 6; i++) {
      // allowHalfOpen: the refused ones linger, as a reconnect storm's sockets do.
      const c = await h.connect(door.port, { localAddress: '127.0.0.2', allowHalfOpen: true });
      await c.waitForFrames(1, `an answer to connection ${i + 1} from 127.0.0.2 (welcome or BUSY)`);
      storm.push(c);
    }
    const welcomed = storm.filter((c) => c.frames[0]?.type === FrameType.DATA).length;
    check(welcomed === 2 && door.admission.connections === 2, 'The storm was not counted as 2 admitted connections.', {
      observed: `6 connections from 127.0.0.2 (a burst of 2 allowed, maxConnections 3): ${welcomed} welcomed; admission.connections = ${door.admission.connections}, refusing = ${door.admission.refusing}; refusals: ${reasons.join('; ') || 'none'}`,
      expected: '2 welcomed, and connections 2 (the 4 refused sockets, still open, are not connections)',
      idea: 'only an admitted connection takes a place under the cap: a refused socket counted there turns one IP\'s storm into "server full" for everyone',
    });
    const quiet = await h.connect(door.port, { localAddress: '127.0.0.3' });
    const [reply] = await quiet.waitForFrames(1, 'an answer to 127.0.0.3 (welcome or BUSY)');
    const why = reply!.type === FrameType.BUSY ? reply!.body.toString() : '';
    check(reply!.type === FrameType.DATA, why.startsWith('rate') ? "A quiet client was refused because of another IP's storm." : "A quiet client was refused: another IP's refused storm filled the cap.", {
      observed: `127.0.0.3 connected once, while 127.0.0.2's storm had 2 connections in and 4 refused and lingering; it received ${frameList(quiet)}`,
      expected: 'DATA "welcome": 127.0.0.3 has its own allowance, and only 2 of the 3 places are taken',
      idea: why.startsWith('rate')
        ? "one bucket shared by every IP lets one client's storm spend everyone's allowance: keep a bucket per client IP (KeyedRate, keyed by socket.remoteAddress)"
        : 'refused sockets are not connections being served: count a connection only once it is admitted',
    });
  });

  test('stop() drops the refused clients still lingering, and only them', async () => {
    const accepted = h.watchAccepted();
    const door = await startDoor({ connectBurst: 1, connectPerSecond: 1, now: () => 0, refuseGraceMs: 5000 });
    const admitted = await h.connect(door.port);
    await admitted.waitForFrames(1, 'DATA "welcome" (the one connection the rate allows)');
    const lingering: TestClient[] = [];
    for (let i = 0; i < 2; i++) {
      const c = await h.connect(door.port, { allowHalfOpen: true });
      await c.waitForFrames(1, 'BUSY (the rate allows one connection)');
      lingering.push(c);
    }
    const t0 = performance.now();
    door.admission.stop();
    await eventually(() => {
      const open = lingering.filter((c) => !accepted.of(c.port)?.destroyed);
      check(open.length === 0 && door.admission.refusing === 0, 'stop() left refused clients open.', {
        observed: `${(performance.now() - t0).toFixed(0)} ms after admission.stop(), ${open.length} of 2 refused clients that never close are still held by the server (refusing = ${door.admission.refusing}; refuseGraceMs is 5000)`,
        expected: 'both destroyed at once, refusing 0',
        idea: "a server stops when its last socket closes: refused sockets waiting out their grace would hold server.close() for up to refuseGraceMs, so stop() destroys them",
      });
    }, { within: 300 });
    const side = accepted.of(admitted.port);
    check(side !== undefined && !side.destroyed && !side.ended && !admitted.closed, 'stop() closed an admitted connection too.', {
      observed: `after admission.stop(), the admitted client's server side is ${side?.destroyed ? 'destroyed' : side?.ended ? 'ended (FIN sent)' : 'open'}${admitted.closed ? ', and the client saw a close' : ''}`,
      expected: 'the admitted connection untouched: it is the caller\'s to end (GOAWAY, drain, lesson 08)',
      idea: "the Admission owns only the sockets it refused; the server decides how its clients leave",
    });
  });

  test('once every refused client has left, no refusal timer is left running', async () => {
    const accepted = h.watchAccepted();
    // A stopped clock: one connection, then BUSY for every other.
    const server = await start({ connectBurst: 1, connectPerSecond: 1, now: () => 0, refuseGraceMs: 5000 });
    await h.connect(server.port);
    const ports: number[] = []; // read while open: a closed client has no port any more
    for (let i = 0; i < 3; i++) {
      // These clients answer the server's FIN at once: nothing is left to wait for.
      const c = await h.connect(server.port);
      ports.push(c.port);
      await c.waitForFrames(1, 'BUSY (the rate allows one connection)');
    }
    await eventually(() => {
      const open = ports.filter((port) => accepted.of(port)?.closedAt === undefined);
      check(open.length === 0, 'The refused connections never closed on the server.', {
        observed: `${open.length} of 3 refused connections still open on the server after their clients closed`, expected: '0', idea: "a refused socket keeps reading, so the client's FIN closes it",
      });
    }, { within: 1000 });
    const t0 = performance.now();
    await eventually(() => {
      const timers = lessonTimers();
      check(timers.length === 0, 'Timers of refused connections outlive them.', {
        observed: `${(performance.now() - t0).toFixed(0)} ms after the 3 refused clients left (refuseGraceMs 5000), the lesson's code still has ${timers.length} timer(s) scheduled, created at ${[...new Set(timers)].join(', ')}`,
        expected: 'none: with no refused socket left, nothing is left to destroy',
        idea: "clear a refused socket's grace timer on 'close' (unref() only lets the process exit; the timer still runs), and stop a shared sweep when the last refused socket is gone",
      });
    }, { within: 1000 });
  });

  test('a keyed rate gives each key its own bucket and forgets only keys that have refilled', () => {
    let now = 0;
    const rate = new KeyedRate({ capacity: 2, refillPerSecond: 1, maxKeys: 3, now: () => now });
    const a = [rate.take('a'), rate.take('a'), rate.take('a')];
    const b = rate.take('b');
    check(a.join() === 'true,true,false' && b, "Keys share an allowance.", {
      observed: `capacity 2: key "a" took ${a.join(', ')}; then key "b" got ${b}`,
      expected: 'true, true, false; then true: "b" has a bucket of its own',
      idea: "one bucket per key: a client that loops spends its own allowance, not everyone's",
    });
    rate.take('c');
    rate.take('d'); // a 4th key, past maxKeys 3, while every bucket is still refilling
    const hotSize = rate.size;
    const aAgain = rate.take('a');
    check(!aAgain && hotSize === 4, 'Past maxKeys, a bucket that was still refilling was forgotten.', {
      observed: `maxKeys 3; keys a (empty), b, c (still refilling), then d: ${hotSize} key(s) kept; "a" asked again at once and got ${aAgain}`,
      expected: '4 keys kept, and false for "a": its bucket is empty',
      idea: 'forget only buckets that have refilled (they remember nothing); dropping a busy one (clearing the table, evicting the oldest) hands a storming client a fresh burst',
    });
    now += 2000; // every bucket has refilled
    rate.take('e');
    const later = rate.size;
    for (let i = 0; i < 50; i++) {
      now += 2000;
      rate.take(`k${i}`);
    }
    check(later <= 3 && rate.size <= 3, 'The keyed table grows without bound.', {
      observed: `maxKeys 3: after every bucket refilled and a new key came, ${later} key(s) kept; after 50 more keys, each arriving once everyone had refilled, ${rate.size}`,
      expected: 'at most 3 each time: past maxKeys, the refilled buckets are forgotten',
      idea: 'a table keyed by client IP is itself unbounded memory: a scan of the internet leaves one entry per address unless refilled buckets are dropped',
    });
  });
});

describe('the defaults bound the wait', () => {
  test('by default the wait queue is bounded and a wait is time-limited', async () => {
    const work = heldWork();
    // No maxQueued, no queueTimeoutMs: the defaults (256 waiting, 1000 ms) must hold.
    const server = await start({ maxInFlight: 1, handler: (body) => (body.toString() === 'hold' ? work.handler(body) : Promise.resolve(body)) });
    const client = await h.connect(server.port);
    client.send(FrameType.DATA, 'hold');
    await eventually(() => check(work.running === 1, 'The first request never started.', {
      observed: `${work.running} running`, expected: '1', idea: 'a free slot is taken at once',
    }), { within: 1000 });
    const t0 = performance.now();
    await client.write(Buffer.concat(Array.from({ length: 300 }, (_, i) => encode(FrameType.DATA, `w${i}`))));
    await eventually(() => {
      check(busy(client) >= 44 && server.queued <= 256, 'With the default options, the wait queue has no bound.', {
        observed: `300 requests behind 1 busy slot: ${server.queued} waiting, ${busy(client)} refused with BUSY after ${(performance.now() - t0).toFixed(0)} ms`,
        expected: 'at most 256 waiting (the default maxQueued); the other 44 or more refused with BUSY at once',
        idea: 'a bound the server does not set by default is no bound: Semaphore(n) alone queues without end',
      });
    }, { within: 500 });
    await eventually(() => {
      check(busy(client) === 300, 'With the default options, a request waits for a slot for ever.', {
        observed: `${(performance.now() - t0).toFixed(0)} ms after 300 requests queued behind a slot that never frees: ${busy(client)} answered BUSY, ${server.queued} still waiting`,
        expected: 'all 300 answered BUSY by about 1000 ms (the default queueTimeoutMs)',
        idea: 'a wait without a default deadline turns a stuck handler into requests stuck for ever',
      });
    }, { within: 1500 });
    const elapsed = performance.now() - t0;
    check(elapsed >= 998, 'The default wait ran out too early.', {
      observed: `every waiting request was refused after ${elapsed.toFixed(0)} ms`, expected: 'not before 1000 ms (the default queueTimeoutMs)', idea: 'the queue absorbs a burst for queueTimeoutMs, no less',
    });
  });

  test('twenty requests queued from one connection raise no listener-leak warning', async () => {
    const warnings: string[] = [];
    const onWarning = (w: Error) => void (w.name === 'MaxListenersExceededWarning' && warnings.push(w.message));
    process.on('warning', onWarning);
    h.defer(() => process.off('warning', onWarning));
    const work = heldWork();
    const server = await start({ maxInFlight: 1, maxQueued: 50, queueTimeoutMs: 5000, handler: work.handler });
    const client = await h.connect(server.port);
    for (let i = 0; i < 21; i++) client.send(FrameType.DATA, `r${i}`);
    await eventually(() => check(work.running === 1 && server.queued === 20, 'The requests never queued.', {
      observed: `${work.running} running, ${server.queued} waiting`, expected: '1 running, 20 waiting', idea: 'a busy slot makes the next requests wait',
    }), { within: 1000 });
    work.release();
    await client.waitForFrames(21, 'the answers to all 21 requests');
    await new Promise((resolve) => setImmediate(resolve)); // process.emitWarning reports on a later tick
    check(warnings.length === 0, 'Queued requests from one connection piled listeners onto its signal.', {
      observed: `Node warned: ${warnings[0]}`,
      expected: 'no MaxListenersExceededWarning: the number of listeners on a connection\'s signal does not grow with its queued requests',
      idea: "one 'abort' listener per waiter on a connection's signal grows with the queue; share one listener per signal (or give each request its own signal)",
    });
  });
});

describe('the semaphore keeps its promises', () => {
  test('a waiter whose time runs out leaves the queue', async () => {
    const sem = new Semaphore(1);
    const held = await sem.acquire();
    const late = await settleWithin(sem.acquire({ timeoutMs: 40 }), 1000);
    const patient = sem.acquire();
    const waitingAfter = sem.waiting;
    held();
    const next = await settleWithin(patient, 100);
    check(late.done && 'error' in late && waitingAfter === 1 && next.done && 'value' in next, 'A waiter whose time ran out still holds a place in the queue.', {
      observed: `a waiter timed out (${late.done ? ('error' in late ? 'rejected' : 'it got a permit') : 'still pending after 1000 ms'}); with one more waiter behind it, ${waitingAfter} waiting; on release the next waiter ${next.done ? 'got the permit' : 'was still waiting 100 ms later: the permit went to the one that had timed out, and is lost'}`,
      expected: 'rejected; 1 waiting; the next waiter gets the permit',
      idea: 'every way of giving up (the signal, the deadline) must take the waiter out of the queue',
    });
    if (next.done && 'value' in next) (next.value as Release)();
  });

  test('releasing the same permit twice frees only one', async () => {
    const sem = new Semaphore(1);
    const a = await sem.acquire();
    const c = watchPromise(sem.acquire());
    const d = watchPromise(sem.acquire());
    a();
    a();
    await eventually(() => check(c.settled, 'The first waiter was not served.', {
      observed: `first waiter ${c.state}`, expected: 'it gets the released permit', idea: 'a release hands the permit to the first waiter',
    }), { within: 100 });
    await new Promise((resolve) => setImmediate(resolve));
    check(!d.settled && sem.waiting === 1 && sem.inUse === 1, 'One release called twice freed two permits.', {
      observed: `a semaphore of 1; the holder released twice: the second waiter is ${d.state}, ${sem.waiting} waiting, ${sem.inUse} in use`,
      expected: 'the second waiter still waiting, 1 waiting, 1 in use',
      idea: 'each lease can be released once: remember it per lease, not by looking at the global count',
    });
    (c.value as Release)();
    await eventually(() => check(d.settled, 'The second waiter was not served.', { observed: d.state, expected: 'resolved', idea: 'a release hands the permit on' }), { within: 100 });
    (d.value as Release)();
  });

  test('a newcomer cannot take the permit a waiter was promised', async () => {
    const sem = new Semaphore(1);
    const a = await sem.acquire();
    const waiter = watchPromise(sem.acquire());
    a();
    const newcomer = watchPromise(sem.acquire()); // in the same tick as the release
    h.defer(async () => {
      // Whatever happened, hand every permit back so no caller is left waiting after the test.
      for (let i = 0; i < 3; i++) {
        for (const w of [waiter, newcomer]) (w.value as Release | undefined)?.();
        await new Promise((resolve) => setTimeout(resolve, 10));
      }
    });
    await eventually(() => check(waiter.settled || newcomer.settled, 'Nobody got the released permit.', {
      observed: `the waiter is ${waiter.state}, the newcomer ${newcomer.state}`, expected: 'the waiter gets it', idea: 'a release hands the permit on',
    }), { within: 200 });
    await new Promise((resolve) => setTimeout(resolve, 20)); // give a polling waiter every chance to wake
    check(waiter.state === 'resolved' && !newcomer.settled && sem.waiting === 1, 'A newcomer took the permit from under a waiter.', {
      observed: `a permit released while one caller waited and another arrived in the same tick: the waiter is ${waiter.state}, the newcomer ${newcomer.state}; ${sem.waiting} waiting`,
      expected: 'the waiter resolved, the newcomer waiting (first come, first served)',
      idea: 'hand the permit straight to the first waiter on release; a semaphore that polls or frees the count first lets newcomers jump the queue, and a waiter can starve',
    });
    (waiter.value as Release)();
    await eventually(() => check(newcomer.settled, 'The newcomer was never served.', { observed: newcomer.state, expected: 'resolved', idea: 'a release hands the permit on' }), { within: 200 });
    (newcomer.value as Release)();
  });

  test("a waiter's listener on its signal is gone once it stops waiting", async () => {
    const connection = new AbortController(); // one signal for all of a connection's requests
    const baseline = getEventListeners(connection.signal, 'abort').length;
    const sem = new Semaphore(1);
    const held = await sem.acquire();
    const w1 = sem.acquire({ signal: connection.signal });
    const w2 = sem.acquire({ signal: connection.signal });
    held();
    (await w1)();
    (await w2)();
    const afterGranted = getEventListeners(connection.signal, 'abort').length - baseline;
    const holder = await sem.acquire();
    await settleWithin(sem.acquire({ signal: connection.signal, timeoutMs: 20 }), 500);
    const afterTimeout = getEventListeners(connection.signal, 'abort').length - baseline;
    holder();
    check(afterGranted === 0 && afterTimeout === 0, "Waiters left listeners on their connection's signal.", {
      observed: `'abort' listeners added to a long-lived signal: ${afterGranted} after two waiters got their permits and released them, ${afterTimeout} after one more timed out`,
      expected: '0 and 0: a waiter that is served or gives up removes what it added',
      idea: "a connection's signal lives as long as the connection: a listener left on it by every request is a leak ({ once: true } removes it only if the signal fires)",
    });
  });
});

describe('the reconnect loop never spins', () => {
  test('the reconnect loop backs off while nothing listens', async () => {
    // A port with nothing behind it: every attempt ends in ECONNREFUSED.
    const probe = net.createServer();
    await new Promise<void>((resolve) => probe.listen(0, '127.0.0.1', resolve));
    const port = (probe.address() as net.AddressInfo).port;
    await new Promise((resolve) => probe.close(resolve));
    const t0 = performance.now();
    const client = keepConnected({ port, baseMs: 20, capMs: 1000, healthyMs: 1000, random: () => 0.999 });
    h.defer(() => client.stop());
    await eventually(() => {
      check(client.attempts >= 5, 'The client stopped retrying.', {
        observed: `${client.attempts} attempt(s)`, expected: '5 within 2 s', idea: 'a reconnecting client keeps trying',
      });
    }, { within: 2000 });
    const elapsed = performance.now() - t0;
    const attempts = client.attempts;
    await client.stop();
    // 20 + 40 + 80 + 160 ms (baseMs 20, random() = 0.999) before the 5th attempt.
    check(elapsed >= 290, 'The client retried in a tight loop while the server was down.', {
      observed: `5 attempts against a port with nothing listening took ${elapsed.toFixed(0)} ms (${attempts} attempts by the time we stopped it); waits recorded: ${client.delays.slice(0, 6).map((d) => d.toFixed(0)).join(', ') || 'none'}`,
      expected: 'at least about 300 ms: waits of about 20, 40, 80 and 160 ms between them',
      idea: 'a refused connect is a failure like any other: back off after it too, or a restarting server is met by a SYN flood from every client',
    });
  });
});
