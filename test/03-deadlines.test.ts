// Lesson 03: no operation waits for ever, and a give-up travels. An idle connection, a
// frame that never finishes, a reply nobody reads and work for a client that has left
// all end at a deadline; the budget a caller sends shrinks as it is spent.
import { describe, test } from 'vitest';
import { setTimeout as sleep } from 'node:timers/promises';
import { startDeadlineServer, type DeadlineOptions, type Work } from '#target/03-deadlines/server.ts';
import { check, describeFrame, encode, eventually, FrameType, useHarness, type TestClient } from '../runtime/harness/index.ts';

const h = useHarness('03');

/** A request body: u32 big-endian budget in ms, then the request bytes. */
function request(budgetMs: number, text: string): Buffer {
  const budget = Buffer.alloc(4);
  budget.writeUInt32BE(budgetMs, 0);
  return Buffer.concat([budget, Buffer.from(text)]);
}

interface Call {
  request: string;
  budgetMs: number;
  startedAt: number;
  /** Set when the signal aborted the work: ms after it started, and why. */
  abortedAfterMs?: number;
  reason?: string;
  finished: boolean;
}

/**
 * A downstream that takes `msFor(request)` ms (or until its signal aborts, as a good
 * downstream does) and records what it was given, so a test can see the budget it got
 * and whether it noticed the abort.
 */
function downstream(msFor: (request: string) => number) {
  const calls: Call[] = [];
  const work: Work = async (req, signal, budgetMs) => {
    const call: Call = { request: req.toString(), budgetMs, startedAt: performance.now(), finished: false };
    calls.push(call);
    const ms = msFor(call.request);
    if (ms > 0) {
      try {
        await sleep(ms, undefined, { signal });
      } catch (err) {
        call.abortedAfterMs = Math.round(performance.now() - call.startedAt);
        call.reason = (signal.reason as Error | undefined)?.message ?? String(signal.reason);
        throw err;
      }
    }
    call.finished = true;
    return Buffer.from(`done ${call.request}`);
  };
  return { work, calls };
}

async function start(options: DeadlineOptions) {
  return h.track(await startDeadlineServer(options));
}

/** When the client's connection closed (either way), as performance.now(). */
function closeTime(client: TestClient): { at?: number } {
  const seen: { at?: number } = {};
  client.socket.once('close', () => (seen.at = performance.now()));
  return seen;
}

const ms = (n: number) => `${Math.round(n)} ms`;
const counters = (r: { started: number; completed: number; aborted: number }) =>
  `started ${r.started}, completed ${r.completed}, aborted ${r.aborted}`;

describe('baseline: a request/response server with budgets', () => {
  test('a request gets its reply as DATA', async () => {
    const { work, calls } = downstream(() => 0);
    const server = await start({ work });
    const client = await h.connect(server.port);
    client.send(FrameType.DATA, request(1000, 'hello'));
    const [reply] = await client.waitForFrames(1, 'the reply to our request');
    check(reply!.type === FrameType.DATA && reply!.body.toString() === 'done hello', 'The reply is not the work\'s result.', {
      observed: `reply ${describeFrame(reply!)}; the work saw ${JSON.stringify(calls.map((c) => c.request))}`,
      expected: 'DATA "done hello": the request body after its 4-byte budget goes to the work, its result comes back',
      idea: 'a request is a DATA frame: u32 budget in ms, then the request bytes',
    });
  });

  test('a request split across packets is still answered', async () => {
    const { work } = downstream(() => 0);
    const server = await start({ work });
    const client = await h.connect(server.port);
    const bytes = encode(FrameType.DATA, request(1000, 'in pieces'));
    // Cut inside the header, inside the budget, inside the body.
    for (const [from, to] of [[0, 2], [2, 7], [7, 11], [11, bytes.length]] as const) {
      await client.write(bytes.subarray(from, to));
      await sleep(5);
    }
    const [reply] = await client.waitForFrames(1, 'the reply to a request that arrived in four pieces');
    check(reply!.type === FrameType.DATA && reply!.body.toString() === 'done in pieces', 'A split request got the wrong reply.', {
      observed: `reply ${describeFrame(reply!)}`,
      expected: 'DATA "done in pieces"',
      idea: 'the codec of lesson 02 reassembles frames whatever the packets',
    });
  });

  test('replies come back in the order the requests were sent', async () => {
    const { work } = downstream((r) => (r === 'slow' ? 60 : 0));
    const server = await start({ work });
    const client = await h.connect(server.port);
    client.send(FrameType.DATA, request(1000, 'slow'));
    client.send(FrameType.DATA, request(1000, 'fast'));
    const replies = await client.waitForFrames(2, 'two replies');
    const bodies = replies.map((f) => f.body.toString());
    check(bodies[0] === 'done slow' && bodies[1] === 'done fast', 'Replies came back out of order.', {
      observed: `replies ${replies.map(describeFrame).join(', ')}`,
      expected: '"done slow" then "done fast": requests on one connection are served in order',
      idea: 'the protocol has no request ids, so the order of replies is how a client matches them',
    });
  });

  test('PING is answered with PONG', async () => {
    const { work } = downstream(() => 0);
    const server = await start({ work });
    const client = await h.connect(server.port);
    client.send(FrameType.PING, 'p1');
    const [reply] = await client.waitForFrames(1, 'a PONG');
    check(reply!.type === FrameType.PONG && reply!.body.toString() === 'p1', 'PING was not answered with PONG.', {
      observed: `reply ${describeFrame(reply!)}`,
      expected: 'PONG "p1"',
      idea: 'a server answers PING with PONG whatever else it is doing (lessons/PROTOCOL.md)',
    });
  });

  test('a request whose budget runs out gets ERROR TIMEOUT', async () => {
    const BUDGET = 60;
    const { work, calls } = downstream(() => 1000);
    const server = await start({ work });
    const client = await h.connect(server.port);
    const sent = performance.now();
    client.send(FrameType.DATA, request(BUDGET, 'slow report'));
    const [reply] = await client.waitForFrames(1, 'an answer within the budget');
    const after = performance.now() - sent;
    check(reply!.type === FrameType.ERROR && reply!.body.toString().startsWith('TIMEOUT'), 'A request over its budget did not get ERROR TIMEOUT.', {
      observed: `reply ${describeFrame(reply!)} after ${ms(after)}`,
      expected: `ERROR "TIMEOUT ..." about ${BUDGET} ms after the request`,
      idea: 'the budget the client sends is how long it will wait: past it, an answer is useless',
    });
    check(after >= BUDGET - 2 && after <= BUDGET + 250, 'The TIMEOUT came at the wrong time.', {
      observed: `ERROR TIMEOUT ${ms(after)} after a request with a budget of ${BUDGET} ms`,
      expected: `between ${BUDGET - 2} and ${BUDGET + 250} ms`,
      idea: 'AbortSignal.timeout(budget) aborts the work when the budget is spent, not before',
    });
    check(server.requests.aborted === 1 && server.requests.completed === 0 && calls[0]?.abortedAfterMs !== undefined, 'The work went on after the budget ran out.', {
      observed: `counters: ${counters(server.requests)}; the work ${calls[0]?.abortedAfterMs !== undefined ? `saw its signal abort after ${calls[0].abortedAfterMs} ms` : 'never saw its signal abort'}`,
      expected: 'aborted 1, completed 0: the work stops when the budget is spent',
      idea: 'the signal handed to the work is how the work learns to stop',
    });
  });

  test('work longer than idleMs is not cut off by the idle timeout', async () => {
    const IDLE = 60;
    const { work } = downstream(() => 120);
    const server = await start({ work, idleMs: IDLE });
    const client = await h.connect(server.port);
    client.send(FrameType.DATA, request(1000, 'long job'));
    const [reply] = await client.waitForFrames(1, 'the reply to a 120 ms job');
    check(reply!.type === FrameType.DATA, 'A request in progress was taken for idleness.', {
      observed: `with idleMs ${IDLE} and a job of 120 ms, the first frame was ${describeFrame(reply!)}`,
      expected: 'DATA "done long job": the connection is busy, not idle, while its request is worked on',
      idea: 'the idle timeout is for connections with nothing going on; a request in flight has its own budget',
    });
  });

  test('a frame completed within frameMs leaves the connection open', async () => {
    const FRAME = 150;
    const logs: string[] = [];
    const t0 = performance.now();
    const { work } = downstream(() => 0);
    const server = await start({ work, frameMs: FRAME, idleMs: 2000, log: (line) => logs.push(`${ms(performance.now() - t0)}: ${line}`) });
    const client = await h.connect(server.port);
    const closed = closeTime(client);
    // The frame arrives in two pieces, so its first piece starts the frame deadline; the
    // second one completes it well within frameMs.
    const bytes = encode(FrameType.DATA, request(1000, 'quick'));
    const firstAt = performance.now();
    await client.write(bytes.subarray(0, 6));
    await sleep(10);
    await client.write(bytes.subarray(6));
    const gap = performance.now() - firstAt;
    await client.waitForFrames(1, 'the reply to a frame sent in two pieces 10 ms apart');
    const repliedAt = performance.now();
    // Now wait past the frame deadline of that (long complete) frame. Nothing may end the
    // connection: no frame is in progress, and idleMs is 2 s.
    await sleep(FRAME + 100);
    check(!client.closed && !client.ended, 'A connection was closed after its frame had arrived in time.', {
      observed: `the frame was complete ${ms(gap)} after its first byte and answered; ${closed.at !== undefined ? `the connection closed ${ms(closed.at - repliedAt)} after the reply` : 'the server sent FIN'} (frameMs ${FRAME}, idleMs 2000)${client.frames.length > 1 ? `; the server sent ${client.frames.slice(1).map(describeFrame).join(', ')}` : ''}.\nThe server logged: ${logs.length ? logs.join('; ') : 'nothing'}`,
      expected: 'the connection stays open: a frame that completed stops its deadline',
      idea: 'the frame deadline runs from a frame\'s first byte to its last: clear its timer when the frame completes',
    });
    client.send(FrameType.DATA, request(1000, 'again'));
    const replies = await client.waitForFrames(2, 'the reply to a second request on the same connection');
    check(replies[1]!.type === FrameType.DATA && replies[1]!.body.toString() === 'done again', 'The connection stopped answering after a frame that arrived in time.', {
      observed: `second reply ${describeFrame(replies[1]!)}`,
      expected: 'DATA "done again"',
      idea: 'a healthy connection keeps being served after each frame completes',
    });
  });

  test('stop() aborts the work in flight', async () => {
    const { work, calls } = downstream(() => 1000);
    const server = await start({ work });
    const client = await h.connect(server.port);
    client.send(FrameType.DATA, request(5000, 'long job'));
    await eventually(() => {
      check(server.requests.started === 1, 'The request never started.', {
        observed: `counters: ${counters(server.requests)}`,
        expected: 'started 1',
        idea: 'a DATA frame starts a request',
      });
    }, { within: 1000 });
    const t0 = performance.now();
    await server.stop();
    const took = performance.now() - t0;
    check(took < 800 && server.requests.aborted === 1 && server.requests.completed === 0, 'stop() waited for the work instead of stopping it.', {
      observed: `stop() took ${ms(took)}; counters: ${counters(server.requests)}; the work ${calls[0]?.reason ? `was aborted (${calls[0].reason})` : 'was not aborted'}`,
      expected: 'stop() resolves at once, the work is aborted (aborted 1, completed 0)',
      idea: 'a shutdown signal joins every request\'s signal, so stopping the server stops its work',
    });
    await client.waitClosed('stop() ends every connection');
  });
});

describe('deadlines: nothing waits for ever, and give-ups travel', () => {
  test('an idle connection is closed after idleMs', async () => {
    const IDLE = 100;
    const logs: string[] = [];
    const t0 = performance.now();
    const { work } = downstream(() => 0);
    const server = await start({ work, idleMs: IDLE, log: (line) => logs.push(`${ms(performance.now() - t0)}: ${line}`) });
    const client = await h.connect(server.port);
    const closed = closeTime(client);
    const sent = performance.now();
    client.send(FrameType.DATA, request(1000, 'hello'));
    await client.waitForFrames(1, 'the reply to our request');
    const repliedAt = performance.now();
    await eventually(() => {
      check(closed.at !== undefined, 'An idle connection was never closed.', {
        observed: `no byte either way for ${ms(performance.now() - repliedAt)} after the reply, idleMs ${IDLE}: the connection is still open.\nThe server logged: ${logs.length ? logs.join('; ') : 'nothing'}`,
        expected: `the server closes the connection about ${IDLE} ms after the last byte`,
        idea: "socket.setTimeout() only emits 'timeout'; nothing closes until your handler calls end() or destroy()",
      });
    }, { within: IDLE + 150 });
    const idleFor = closed.at! - sent;
    check(idleFor >= IDLE - 2, 'The connection was closed before it had been idle for idleMs.', {
      observed: `closed ${ms(idleFor)} after our request (idleMs ${IDLE})`,
      expected: `no sooner than ${IDLE} ms after the last byte`,
      idea: 'idle means nothing happened for the whole period',
    });
    const why = client.frames.slice(1);
    check(why.some((f) => f.type === FrameType.ERROR && f.body.toString().startsWith('TIMEOUT idle')), 'The server hung up on an idle connection without saying why.', {
      observed: `after the reply, the server sent ${why.length ? why.map(describeFrame).join(', ') : 'nothing'} before closing`,
      expected: `ERROR "TIMEOUT idle for ${IDLE} ms", then the close`,
      idea: 'a client that is told why it was dropped can tell a timeout from a crash',
    });
  });

  test('a frame trickled byte by byte is cut off at the frame deadline', async () => {
    const IDLE = 80;
    const FRAME = 120;
    const EVERY = 20;
    const { work } = downstream(() => 0);
    const server = await start({ work, idleMs: IDLE, frameMs: FRAME });
    const client = await h.connect(server.port);
    const closed = closeTime(client);
    // A frame of 109 bytes: at one byte every 20 ms it would take over 2 s to arrive.
    const bytes = encode(FrameType.DATA, request(1000, 'x'.repeat(100)));
    const t0 = performance.now();
    let sent = 0;
    let last = t0;
    let longestGap = 0;
    while (!client.ended && !client.closed && sent < bytes.length && performance.now() - t0 < FRAME + 160) {
      client.socket.write(bytes.subarray(sent, sent + 1));
      sent++;
      await sleep(EVERY);
      const now = performance.now();
      longestGap = Math.max(longestGap, now - last);
      last = now;
    }
    await eventually(() => {
      check(closed.at !== undefined, 'A client trickling one byte at a time kept its connection open.', {
        observed: `we sent ${sent} of the frame's ${bytes.length} bytes, one every ${EVERY} ms, over ${ms(performance.now() - t0)}; the connection is still open. Each byte restarted the ${IDLE} ms idle timer, so it never fired`,
        expected: `the server gives up on the frame about ${FRAME} ms (frameMs) after its first byte`,
        idea: 'an idle timer measures silence, not progress: a frame needs its own deadline from its first byte to its last',
      });
    }, { within: 30 });
    const after = closed.at! - t0;
    // If our own loop stalled longer than the idle timeout, the idle timer may fairly have won.
    const earliest = longestGap >= IDLE - 5 ? IDLE - 2 : FRAME - 2;
    check(after >= earliest && after <= FRAME + 190, 'The frame deadline fired at the wrong time.', {
      observed: `closed ${ms(after)} after the frame's first byte (frameMs ${FRAME}, idleMs ${IDLE}, longest gap between our bytes ${ms(longestGap)})`,
      expected: `between ${earliest} and ${FRAME + 190} ms after the first byte`,
      idea: 'the frame deadline starts with a frame\'s first byte and ends with its last',
    });
  });

  test('a client that never reads is disconnected at the write deadline', async () => {
    const WRITE = 100;
    const REPLIES = 9;
    const big = Buffer.alloc(1_000_000, 0x61);
    const server = await start({ work: async () => big, writeMs: WRITE });
    const client = await h.connect(server.port);
    // A paused client never sees the server's FIN: end it ourselves after the test.
    h.defer(() => client.destroy());
    client.socket.pause();
    const t0 = performance.now();
    for (let i = 0; i < REPLIES; i++) client.send(FrameType.DATA, request(5000, `chunk ${i}`));
    await eventually(() => {
      check(server.connections === 0, 'A client that reads nothing kept its connection, and the server\'s memory, for good.', {
        observed: `${REPLIES} replies of 1 MB to a client that reads nothing: ${ms(performance.now() - t0)} later the connection is still open (${server.connections} open). Loopback absorbs about 3.7 MB; the rest waits in the server's memory, and would wait for ever`,
        expected: `the server destroys the connection about ${WRITE} ms (writeMs) after a write stops making progress`,
        idea: "socket.write() never fails against a peer that stops reading, it only queues: a write callback that does not come within the deadline means the peer is stuck",
      });
    }, { within: WRITE + 250 });
    const after = performance.now() - t0;
    check(after >= WRITE - 2, 'The write deadline fired too soon.', {
      observed: `the connection was gone ${ms(after)} after the requests (writeMs ${WRITE})`,
      expected: `no sooner than ${WRITE} ms: a slow write is not yet a stuck one`,
      idea: 'write() returning false is backpressure, not a failure; the deadline is on progress',
    });
  });

  test('work for a client that has gone is aborted, not completed', async () => {
    const WORK = 150;
    const { work, calls } = downstream(() => WORK);
    const server = await start({ work });
    const client = await h.connect(server.port);
    client.send(FrameType.DATA, request(2000, 'monthly report'));
    await eventually(() => {
      check(server.requests.started === 1, 'The request never started.', {
        observed: `counters: ${counters(server.requests)}`,
        expected: 'started 1',
        idea: 'a DATA frame starts a request',
      });
    }, { within: 1000 });
    // The client gives up (its own timeout, a user closing the app): it hangs up.
    const leftAt = performance.now();
    client.destroy();
    await eventually(() => {
      check(server.requests.aborted === 1 && server.requests.completed === 0, 'The work went on for a client that had gone (a phantom request).', {
        observed: `${ms(performance.now() - leftAt)} after the client hung up: ${counters(server.requests)}; the work ${calls[0]?.finished ? `ran its full ${WORK} ms for nobody` : calls[0]?.abortedAfterMs !== undefined ? `was aborted after ${calls[0].abortedAfterMs} ms` : 'is still running'}`,
        expected: 'aborted 1, completed 0: the work learns the client left and stops',
        idea: "abort a per-connection AbortController in 'close' and include its signal in every request's AbortSignal.any([...])",
      });
    }, { within: WORK + 50 });
    check(calls[0]?.abortedAfterMs !== undefined && calls[0].abortedAfterMs < WORK, 'The work did not see its signal abort.', {
      observed: `the work's call: ${JSON.stringify(calls[0])}`,
      expected: 'the signal handed to the work aborts when the client leaves',
      idea: 'a give-up only helps if it reaches the code doing the work',
    });
  });

  test("the downstream is never given more than the caller's budget", async () => {
    const BUDGET = 200;
    const { work, calls } = downstream(() => 0);
    const server = await start({ work });
    const client = await h.connect(server.port);
    client.send(FrameType.DATA, request(BUDGET, 'lookup'));
    await client.waitForFrames(1, 'the reply to our request');
    const given = calls[0]?.budgetMs ?? NaN;
    check(given > 0 && given <= BUDGET, "The downstream was promised more time than the caller has.", {
      observed: `the caller sent a budget of ${BUDGET} ms; the downstream was given ${given} ms`,
      expected: `at most ${BUDGET} ms (what is left of the caller's budget)`,
      idea: 'a downstream told it has more time than the caller will wait does work nobody will read; pass on what is left, never a fresh budget',
    });
  });

  test('a request that waited its turn gets only what is left of its budget', async () => {
    const BUDGET = 300;
    const { work, calls } = downstream((r) => (r === 'slow' ? 100 : 0));
    const server = await start({ work });
    const client = await h.connect(server.port);
    client.send(FrameType.DATA, request(5000, 'slow'));
    client.send(FrameType.DATA, request(BUDGET, 'next'));
    await client.waitForFrames(2, 'two replies');
    const [first, second] = calls;
    // Whole ms, rounded up: the bound below is then exact arithmetic on the numbers shown.
    const waited = second && first ? Math.ceil(second.startedAt - first.startedAt) : NaN;
    // A little slack: the second request may arrive a few ms after the first one started.
    const most = BUDGET - waited + 20;
    check(second !== undefined && second.budgetMs <= most, 'A request that waited in line was not charged for the wait.', {
      observed: `the second request (budget ${BUDGET} ms) waited ${waited} ms behind the first; the downstream was given ${second?.budgetMs} ms`,
      expected: `at most ${most} ms (the ${BUDGET} ms budget - ${waited} ms already waited + 20 ms slack): the budget runs from the moment the request arrived`,
      idea: 'a budget is relative to when it was received; time spent queued is spent',
    });
  });
});
