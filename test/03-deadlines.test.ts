// Lesson 03: no operation waits for ever, and a give-up travels. An idle connection, a
// frame that never finishes, a reply nobody reads and work for a client that has left
// all end at a deadline; the budget a caller sends shrinks as it is spent.
import { describe, test } from 'vitest';
import net from 'node:net';
import { once } from 'node:events';
import { setTimeout as sleep } from 'node:timers/promises';
import { startDeadlineServer, type DeadlineOptions, type Work } from '#target/03-deadlines/server.ts';
import { DeadlineSweep } from '#target/03-deadlines/deadlines.ts';
import { check, describeFrame, describeLeaks, encode, eventually, fail, FrameType, LeakProbe, settleWithin, useHarness, waitUntil, watchPromise, type ConnectOptions, type TestClient } from '../runtime/harness/index.ts';

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

/** When the server's FIN reached the client, as performance.now(). */
function finTime(client: TestClient): { at?: number } {
  const seen: { at?: number } = {};
  client.socket.once('end', () => (seen.at = performance.now()));
  return seen;
}

/**
 * Waits until the server has no connection open; returns when it saw that. The failure
 * (end() where destroy() is needed, as a rule) is described by the caller.
 */
async function serverGone(server: { connections: number }, within: number, lesson: { summary: string; observed: () => string; expected: string; idea: string }): Promise<number> {
  await eventually(() => {
    if (server.connections === 0) return;
    fail(lesson.summary, { observed: lesson.observed(), expected: lesson.expected, idea: lesson.idea });
  }, { within });
  return performance.now();
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
    const { work, calls } = downstream((r) => (r === 'slow report' ? 1000 : 20));
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
    // The next request on the same connection brings a budget of its own. (Its clock must
    // not be the first request's, which has already run out.)
    const secondAt = performance.now();
    client.send(FrameType.DATA, request(1000, 'second'));
    const replies = await client.waitForFrames(2, 'the reply to a second request, budget 1000 ms, on the same connection');
    check(replies[1]!.type === FrameType.DATA && replies[1]!.body.toString() === 'done second', "A second request was judged by the first one's budget.", {
      observed: `the first request (budget ${BUDGET} ms) timed out; the second one (budget 1000 ms, 20 ms of work) got ${describeFrame(replies[1]!)} ${ms(performance.now() - secondAt)} after it was sent; its work ${calls[1] === undefined ? 'was never called' : calls[1].abortedAfterMs !== undefined ? `saw its signal abort after ${calls[1].abortedAfterMs} ms (${calls[1].reason})` : 'finished'}`,
      expected: 'DATA "done second": every request gets its own AbortSignal.timeout(its budget)',
      idea: 'a budget belongs to one request: a signal made once per connection (or per server) times out every request after the first budget runs out',
    });
  });

  test('work longer than idleMs is not cut off by the idle timeout', async () => {
    const IDLE = 60;
    const { work } = downstream((r) => (r === 'quick' ? 0 : 120));
    const server = await start({ work, idleMs: IDLE });
    const client = await h.connect(server.port);
    // A quick request, and a long one right behind it: when the quick one is answered, the
    // long one is still being worked on.
    client.send(FrameType.DATA, request(1000, 'quick'));
    client.send(FrameType.DATA, request(1000, 'long job'));
    const replies = await client.waitForFrames(2, 'the replies to a quick request and a 120 ms job behind it');
    const reply = replies[1];
    check(replies[0]!.type === FrameType.DATA && reply!.type === FrameType.DATA, 'A request in progress was taken for idleness.', {
      observed: `with idleMs ${IDLE}, a quick request then a job of 120 ms: the replies were ${replies.map(describeFrame).join(', ')}`,
      expected: 'DATA "done quick", then DATA "done long job": the connection is busy, not idle, while any of its requests is worked on',
      idea: 'the idle timeout is for connections with nothing going on; a request in flight has its own budget. Count the requests in flight (a flag cleared when the first one finishes forgets the one behind it)',
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
      idea: 'the frame deadline runs from a frame\'s first byte to its last: stop its clock when the reader holds no part of a frame',
    });
    client.send(FrameType.DATA, request(1000, 'again'));
    const replies = await client.waitForFrames(2, 'the reply to a second request on the same connection');
    check(replies[1]!.type === FrameType.DATA && replies[1]!.body.toString() === 'done again', 'The connection stopped answering after a frame that arrived in time.', {
      observed: `second reply ${describeFrame(replies[1]!)}`,
      expected: 'DATA "done again"',
      idea: 'a healthy connection keeps being served after each frame completes',
    });
  });

  test('a frame that keeps arriving is not idle', async () => {
    const IDLE = 150;
    const EVERY = 30;
    const logs: string[] = [];
    const t0 = performance.now();
    const { work } = downstream(() => 0);
    const server = await start({ work, idleMs: IDLE, frameMs: 1000, log: (line) => logs.push(`${ms(performance.now() - t0)}: ${line}`) });
    const client = await h.connect(server.port);
    // One request in twelve pieces, 30 ms apart: bytes keep coming, the frame takes 330 ms
    // (twice idleMs), well within frameMs.
    const bytes = encode(FrameType.DATA, request(1000, 'a big upload, arriving slowly'));
    const cuts = [0, 3, 6, 9, 12, 15, 18, 21, 24, 27, 30, 33, bytes.length];
    const firstAt = performance.now();
    for (let i = 0; i + 1 < cuts.length && !client.ended && !client.closed; i++) {
      if (i > 0) await sleep(EVERY);
      client.socket.write(bytes.subarray(cuts[i], cuts[i + 1]));
    }
    const fin = finTime(client);
    await eventually(() => {
      if (client.frames.length >= 1 || client.ended || client.closed) return;
      fail('A frame that arrived slowly got no answer.', {
        observed: `no reply ${ms(performance.now() - firstAt)} after the frame's first byte (its last came ${EVERY * (cuts.length - 2)} ms after the first)`,
        expected: 'DATA "done a big upload, arriving slowly"',
        idea: 'a frame that completes within frameMs is served like any other',
      });
    }, { within: 1000 });
    const [reply] = client.frames;
    check(reply?.type === FrameType.DATA, 'A frame that was still arriving was taken for idleness.', {
      observed: `while the frame's pieces came every ${EVERY} ms (idleMs ${IDLE}, frameMs 1000), the server ${fin.at !== undefined ? `hung up ${ms(fin.at - firstAt)} after the first piece` : 'stopped answering'}${reply ? `; it sent ${client.frames.map(describeFrame).join(', ')}` : ''}.\nThe server logged: ${logs.length ? logs.join('; ') : 'nothing'}`,
      expected: 'DATA "done a big upload, arriving slowly": bytes arriving are not silence, whether or not they complete a frame',
      idea: 'the idle clock restarts on every byte in or out (socket.bytesRead, and bytes the kernel took), not only when a whole frame arrives or a reply goes out',
    });
  });

  test('frames sent back to back, each chunk ending inside the next frame, are never cut off', async () => {
    const FRAME = 80;
    const EVERY = 20;
    const N = 15;
    const logs: string[] = [];
    const t0 = performance.now();
    const { work } = downstream(() => 0);
    const server = await start({ work, frameMs: FRAME, idleMs: 2000, log: (line) => logs.push(`${ms(performance.now() - t0)}: ${line}`) });
    const client = await h.connect(server.port);
    // A client streaming requests: every chunk brings the rest of one frame and the first
    // 3 bytes of the next, so the server always holds part of a frame, and each frame is
    // complete within 20 ms of its first byte. The stream lasts far longer than frameMs.
    const frames = Array.from({ length: N + 1 }, (_, i) => encode(FrameType.DATA, request(1000, `part ${i}`)));
    const firstAt = performance.now();
    // (A write after the server hung up fails: the check below says why.)
    const write = (bytes: Buffer) => client.write(bytes).catch(() => {});
    await write(frames[0]!.subarray(0, 3));
    for (let i = 0; i < N && !client.ended && !client.closed; i++) {
      await sleep(EVERY);
      await write(Buffer.concat([frames[i]!.subarray(3), frames[i + 1]!.subarray(0, 3)]));
    }
    if (!client.ended && !client.closed) await write(frames[N]!.subarray(3));
    await waitUntil(() => client.frames.length >= N + 1 || client.ended || client.closed, 1000);
    check(!client.ended && !client.closed && client.frames.length === N + 1, 'A client whose every frame arrived in time was cut off by the frame deadline.', {
      observed: `${N + 1} frames, each complete ${EVERY} ms after its first byte, every chunk ending inside the next frame: after ${client.frames.length} replies the server ${client.ended || client.closed ? `hung up, ${ms(performance.now() - firstAt)} after the first chunk` : 'stopped answering'} (frameMs ${FRAME})${client.frames.length ? `; last frames: ${client.frames.slice(-2).map(describeFrame).join(', ')}` : ''}.\nThe server logged: ${logs.length ? logs.join('; ') : 'nothing'}`,
      expected: `${N + 1} DATA replies and the connection still open: no frame took longer than ${EVERY} ms`,
      idea: 'each frame has a clock of its own: "the reader holds part of a frame" stays true from one frame to the next, so the clock must restart when bytes that arrived went into a whole frame (bytes read minus bytes still held), not only when the reader is empty',
    });
  });

  test("maxBudgetMs caps every request's budget", async () => {
    const MAX = 80;
    const { work, calls } = downstream((r) => (r === 'greedy' ? 1000 : 20));
    const server = await start({ work, maxBudgetMs: MAX });
    const client = await h.connect(server.port);
    const sent = performance.now();
    client.send(FrameType.DATA, request(60_000, 'greedy'));
    const capped = {
      expected: `ERROR "TIMEOUT ..." about ${MAX} ms after the request`,
      idea: "a client does not get to hold the server for as long as it likes: its budget is capped by the server's own maximum",
    };
    await eventually(() => {
      if (client.frames.length >= 1) return;
      fail('A budget above maxBudgetMs was not capped.', { observed: `a request with a budget of 60000 ms (maxBudgetMs ${MAX}), for work of 1 s: no reply ${ms(performance.now() - sent)} later`, ...capped });
    }, { within: MAX + 150 });
    const first = client.frames[0]!;
    const after = performance.now() - sent;
    check(first.type === FrameType.ERROR, 'A budget above maxBudgetMs was not capped.', {
      observed: `a request with a budget of 60000 ms (maxBudgetMs ${MAX}), for work of 1 s: the reply, ${describeFrame(first)}, came after ${ms(after)}`,
      ...capped,
    });
    // Later requests get the same cap, counted from their own arrival.
    client.send(FrameType.DATA, request(60_000, 'modest'));
    const replies = await client.waitForFrames(2, 'the reply to a second request');
    check(replies[1]!.type === FrameType.DATA, 'A later request was cut off by an earlier request\'s cap.', {
      observed: `a second request (20 ms of work), sent ${ms(performance.now() - sent)} after the first, got ${describeFrame(replies[1]!)}; its work ${calls[1]?.abortedAfterMs !== undefined ? `saw its signal abort after ${calls[1].abortedAfterMs} ms (${calls[1].reason})` : calls[1] ? 'finished' : 'was never called'}`,
      expected: 'DATA "done modest": the cap is per request, like the budget it caps',
      idea: 'an AbortSignal.timeout() made once (per server or per connection) runs out once, for everyone after it: make one per request',
    });
  });

  test('stop() aborts the work in flight', async () => {
    const { work, calls } = downstream(() => 1000);
    const server = await start({ work });
    // A client that keeps its side open after the server's FIN: the connection cannot close
    // by itself, so only the shutdown signal can stop the work.
    const client = await h.connect(server.port, { allowHalfOpen: true });
    client.send(FrameType.DATA, request(5000, 'long job'));
    await eventually(() => {
      check(server.requests.started === 1, 'The request never started.', {
        observed: `counters: ${counters(server.requests)}`,
        expected: 'started 1',
        idea: 'a DATA frame starts a request',
      });
    }, { within: 1000 });
    const t0 = performance.now();
    const stopPromise = server.stop();
    const stopping = watchPromise(stopPromise);
    await eventually(() => {
      check(server.requests.aborted === 1 && server.requests.completed === 0, 'stop() left the work running.', {
        observed: `${ms(performance.now() - t0)} after stop(), while the client was still connected: ${counters(server.requests)}; the work ${calls[0]?.reason ? `was aborted (${calls[0].reason})` : 'was not aborted'}`,
        expected: 'the work is aborted at once (aborted 1, completed 0), whether or not its connection has closed yet',
        idea: "a shutdown signal joins every request's signal, so stopping the server stops its work; a connection's close may come much later, or never",
      });
    }, { within: 200 });
    // Now let the connection finish: stop() resolves once it has closed.
    client.end();
    await client.waitClosed('stop() ends every connection');
    const stopped = await settleWithin(stopPromise, 1000);
    check(stopped.done, 'stop() did not resolve after its last connection closed.', {
      observed: `stop() is still ${stopping.state} ${ms(performance.now() - t0)} after it was called`,
      expected: 'stop() resolves once every connection has closed',
      idea: "server.close()'s callback runs when the last connection is gone",
    });
  });
  test('a client that keeps reading is never cut off by the write deadline', async () => {
    const WRITE = 60;
    const big = Buffer.alloc(200_000, 0x62);
    const { work } = downstream(() => 0);
    // Small replies, and a big one that write() takes only in part (it returns false).
    const server = await start({ work: (req, signal, budget) => (req.toString() === 'big' ? Promise.resolve(big) : work(req, signal, budget)), writeMs: WRITE });
    const client = await h.connect(server.port);
    const closed = closeTime(client);
    // Two PINGs and two requests in one packet: several replies are written in the same
    // tick, before the kernel has confirmed any of them.
    const batch = () => Buffer.concat([encode(FrameType.PING, 'a'), encode(FrameType.PING, 'b'), encode(FrameType.DATA, request(1000, 'one')), encode(FrameType.DATA, request(1000, 'big'))]);
    const t0 = performance.now();
    const stillOpen = () => check(!client.closed && !client.ended && server.connections === 1, 'A client that read every reply was cut off by the write deadline.', {
      observed: `every reply was read as soon as it arrived (${client.frames.length} frames), yet the connection ${closed.at !== undefined ? `closed ${ms(closed.at - t0)} after the first requests` : client.ended ? 'was ended by the server' : 'is gone on the server'} (writeMs ${WRITE})`,
      expected: 'the connection stays open: each write deadline ends when the kernel takes its bytes',
      idea: "the write clock runs only while bytes wait in the socket (writableLength > 0) and restarts whenever the kernel takes some: a client that reads keeps it from ever reaching writeMs",
    });
    client.socket.write(batch());
    await client.waitForFrames(4, 'two PONGs and two replies');
    // Well past the write deadline of every one of those replies, all long delivered.
    await sleep(WRITE + 80);
    stillOpen();
    client.socket.write(batch());
    await client.waitForFrames(8, 'two more PONGs and two more replies, a while later');
    await sleep(WRITE + 80);
    stillOpen();
  });

  test('requests leave no abort listeners behind', async () => {
    const warnings: string[] = [];
    const onWarning = (w: Error) => void (w.name === 'MaxListenersExceededWarning' && /abort listeners/.test(w.message) && warnings.push(w.message));
    process.on('warning', onWarning);
    h.defer(() => process.off('warning', onWarning));
    const { work } = downstream(() => 0);
    const server = await start({ work });
    const client = await h.connect(server.port);
    const N = 12;
    for (let i = 0; i < N; i++) client.send(FrameType.DATA, request(1000, `r${i}`));
    await client.waitForFrames(N, `${N} replies`);
    // Node reports the warning on the next tick.
    await new Promise((resolve) => setImmediate(resolve));
    check(warnings.length === 0, "Each request added an 'abort' listener that stayed.", {
      observed: `after ${N} requests on one connection, Node warned: ${warnings.join('; ')}`,
      expected: 'no MaxListenersExceededWarning: what a request adds to a long-lived signal, it removes when it is done',
      idea: "AbortSignal.any([...]) links signals without a listener per request; a hand-made link (addEventListener('abort', ...)) must be removed in finally, or every request leaves one on the connection's and the server's signals",
    });
  });

  test('a client that leaves in the middle of a frame leaves no timer behind', async () => {
    const { work } = downstream(() => 0);
    // The default deadlines (seconds): a timer left scheduled would still be there below.
    const server = await start({ work });
    // Everything made from here on (the connection and all it arms) must be gone at the end.
    const probe = new LeakProbe();
    const client = await h.connect(server.port);
    // A whole PING, then the first 10 bytes of a frame that announces 100: when the PONG
    // is back, the server has read the start of the frame and its deadline is running.
    const partial = encode(FrameType.DATA, request(1000, 'x'.repeat(95))).subarray(0, 10);
    await client.write(Buffer.concat([encode(FrameType.PING), partial]));
    await client.waitForFrames(1, 'a PONG');
    client.destroy();
    await eventually(() => {
      check(server.connections === 0, 'The server did not notice that its client left.', {
        observed: `${server.connections} connection(s) open after the client closed its socket`,
        expected: "0: 'close' removes the connection",
        idea: "'close' fires exactly once on every path (lesson 01)",
      });
    }, { within: 500 });
    const leaks = await probe.settle(300);
    check(!leaks.resources.has('Timeout'), 'A timer outlived the connection it was for.', {
      observed: `the client left with a frame half sent; 300 ms after its connection closed, still alive: ${describeLeaks(leaks)} (${leaks.refTimers} of them ref'd)`,
      expected: "no timer: the connection leaves the sweep in 'close', and the sweep's interval goes with the last connection (so does any timer of your own)",
      idea: "a timer left scheduled fires later for a dead connection and keeps its socket in memory until then; unref() does not cancel it, clearTimeout() and clearInterval() do",
    });
  });
});

describe('deadlines: nothing waits for ever, and give-ups travel', () => {
  test('an idle connection is closed after idleMs', async () => {
    const IDLE = 100;
    const logs: string[] = [];
    const t0 = performance.now();
    const { work } = downstream(() => 0);
    const server = await start({ work, idleMs: IDLE, log: (line) => logs.push(`${ms(performance.now() - t0)}: ${line}`) });
    // A peer that never answers FIN, like a client whose process hung or whose network
    // vanished: a connection it is part of closes only if the server closes it for good.
    const client = await h.connect(server.port, { allowHalfOpen: true });
    const fin = finTime(client);
    const sent = performance.now();
    client.send(FrameType.DATA, request(1000, 'hello'));
    await client.waitForFrames(1, 'the reply to our request');
    const repliedAt = performance.now();
    await eventually(() => {
      check(fin.at !== undefined || server.connections === 0, 'An idle connection was never closed.', {
        observed: `no byte either way for ${ms(performance.now() - repliedAt)} after the reply, idleMs ${IDLE}: the server neither sent FIN nor closed the connection (${server.connections} open).\nThe server logged: ${logs.length ? logs.join('; ') : 'nothing'}`,
        expected: `the server closes the connection about ${IDLE} ms after the last byte`,
        idea: "socket.setTimeout() only emits 'timeout'; nothing closes until something calls end() or destroy(): give the sweep an idle clock that expires the connection",
      });
    }, { within: IDLE + 150 });
    const goneAt = await serverGone(server, 150, {
      summary: 'The server said goodbye to an idle peer but kept the connection open.',
      observed: () => `the server sent FIN ${ms(fin.at! - repliedAt)} after the reply, then waited ${ms(performance.now() - fin.at!)} for the peer's FIN, which never comes: the connection is still open on the server (${server.connections} open)`,
      expected: 'the server side is gone right after the goodbye: destroy() once the ERROR has been flushed',
      idea: "end() only sends FIN and waits for the peer's; a peer that has vanished never sends one: a deadline must destroy() the socket",
    });
    const idleFor = (fin.at ?? goneAt) - sent;
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

  test('a connection that goes quiet after a long request is closed too', async () => {
    const IDLE = 60;
    const WORK = 150;
    const logs: string[] = [];
    const t0 = performance.now();
    const { work } = downstream(() => WORK);
    const server = await start({ work, idleMs: IDLE, log: (line) => logs.push(`${ms(performance.now() - t0)}: ${line}`) });
    const client = await h.connect(server.port);
    client.send(FrameType.DATA, request(1000, 'long job'));
    await client.waitForFrames(1, `the reply to a ${WORK} ms job`);
    const repliedAt = performance.now();
    await eventually(() => {
      check(client.ended || client.closed, 'A connection that went quiet after a long request was never closed.', {
        observed: `a request took ${WORK} ms (longer than idleMs ${IDLE}); after its reply, no byte either way for ${ms(performance.now() - repliedAt)}, and the connection is still open.\nThe server logged: ${logs.length ? logs.join('; ') : 'nothing'}`,
        expected: `the server closes the connection about ${IDLE} ms after the reply`,
        idea: "the idle deadline is skipped while a request is in flight, and must start again once it is done: an idle check that fired during the work (and was ignored) is not re-armed by itself; the reply is activity, and the clock runs again from there",
      });
    }, { within: IDLE + 150 });
  });

  test("idle connections are closed whatever the other connections are doing, after a TIMEOUT too", async () => {
    const IDLE = 60;
    const BUDGET = 60;
    const logs: string[] = [];
    const t0 = performance.now();
    const { work, calls } = downstream((r) => (r === 'busy' ? 1500 : r === 'too slow' ? 1000 : 0));
    const server = await start({ work, idleMs: IDLE, log: (line) => logs.push(`${ms(performance.now() - t0)}: ${line}`) });
    // One client keeps the server busy (its request runs 1.5 s); one asks for something
    // quick, one for something that runs out of its budget. Then the last two go quiet.
    const busy = await h.connect(server.port);
    busy.send(FrameType.DATA, request(5000, 'busy'));
    await eventually(() => check(calls.length === 1, 'The first request never started.', { observed: `counters: ${counters(server.requests)}`, expected: 'started 1', idea: 'a DATA frame starts a request' }), { within: 1000 });
    const quick = await h.connect(server.port);
    const late = await h.connect(server.port);
    quick.send(FrameType.DATA, request(1000, 'quick'));
    late.send(FrameType.DATA, request(BUDGET, 'too slow'));
    await quick.waitForFrames(1, 'the reply to a quick request');
    const [timeout] = await late.waitForFrames(1, `ERROR TIMEOUT for a request with a budget of ${BUDGET} ms`);
    const quietFrom = performance.now();
    const closed = (c: TestClient) => c.ended || c.closed;
    await waitUntil(() => closed(quick) && closed(late), IDLE + 200);
    const left = (c: TestClient) => (closed(c) ? 'closed' : `still open ${ms(performance.now() - quietFrom)} later`);
    check(closed(quick), 'An idle connection was kept open because another client had a request in flight.', {
      observed: `a client whose request was answered then went quiet: ${left(quick)} (idleMs ${IDLE}); meanwhile another client's request was being worked on (${calls[0]?.finished ? 'done' : 'still running'}).\nThe server logged: ${logs.length ? logs.join('; ') : 'nothing'}`,
      expected: `closed about ${IDLE} ms after its reply: its own connection has nothing going on`,
      idea: "the requests in flight that keep the idle timeout off are each connection's own: count them inside the connection handler, not once for the server",
    });
    check(closed(late), 'A connection whose request ran out of budget was never closed for idleness.', {
      observed: `a client got ${describeFrame(timeout!)}, then went quiet: ${left(late)} (idleMs ${IDLE}), while a client that got DATA was closed.\nThe server logged: ${logs.length ? logs.join('; ') : 'nothing'}`,
      expected: `closed about ${IDLE} ms after the TIMEOUT: the request is over`,
      idea: 'a request is over however it ends (DATA, TIMEOUT, INTERNAL, skipped): take it off the count in a finally, or the connection stays "busy" for ever',
    });
  });

  test('a frame that stalls after its first chunk is cut off at the frame deadline, while other clients complete theirs', async () => {
    const IDLE = 80;
    const FRAME = 120;
    const { work, calls } = downstream((r) => (r === 'slow' ? 2000 : 0));
    const logs: string[] = [];
    const start0 = performance.now();
    const server = await start({ work, idleMs: IDLE, frameMs: FRAME, log: (line) => logs.push(`${ms(performance.now() - start0)}: ${line}`) });
    const watch = h.watchAccepted();
    const client = await h.connect(server.port, { allowHalfOpen: true });
    const fin = finTime(client);
    // A request whose work takes a while: the connection is busy, so the idle timer is off.
    client.send(FrameType.DATA, request(5000, 'slow'));
    await eventually(() => check(calls.length === 1, 'The first request never started.', { observed: `counters: ${counters(server.requests)}`, expected: 'started 1', idea: 'a DATA frame starts a request' }), { within: 1000 });
    // A neighbour that completes a frame every 40 ms, each in two pieces.
    const neighbour = await h.connect(server.port);
    let stop = false;
    const frames = (async () => {
      for (let i = 0; !stop && i < 20; i++) {
        const bytes = encode(FrameType.DATA, request(1000, `n${i}`));
        neighbour.socket.write(bytes.subarray(0, 6));
        await sleep(10);
        neighbour.socket.write(bytes.subarray(6));
        await sleep(30);
      }
    })();
    h.defer(() => ((stop = true), frames));
    // Then the first 10 bytes of a second frame, in one write, and nothing more.
    const t0 = performance.now();
    client.socket.write(encode(FrameType.DATA, request(1000, 'x'.repeat(100))).subarray(0, 10));
    const gaveUp = () => fin.at !== undefined || watch.of(client.port)?.closedAt !== undefined;
    await waitUntil(() => gaveUp() || neighbour.closed || neighbour.ended, FRAME + 250);
    stop = true;
    check(!neighbour.closed && !neighbour.ended, 'A client that completed every frame was cut off.', {
      observed: `the neighbour, which completed a frame every 40 ms (each in two pieces 10 ms apart), was ${neighbour.ended ? 'sent FIN' : 'closed'} after ${neighbour.frames.length} frame(s): ${neighbour.frames.slice(-2).map(describeFrame).join(', ')}.\nThe server logged: ${logs.join('; ') || 'nothing'}`,
      expected: 'still connected',
      idea: "each connection's frame deadline belongs to that connection, and a frame that completed stops its clock",
    });
    check(gaveUp(), 'A frame whose first chunk arrived, then nothing, got no deadline.', {
      observed: `the first 10 bytes of a 109-byte frame arrived in one chunk, then nothing, while the connection's first request was being worked on and another client completed a frame every 40 ms; ${ms(performance.now() - t0)} later the connection is still open`,
      expected: `the server gives up on the frame about ${FRAME} ms (frameMs) after that chunk`,
      idea: "a frame's clock starts at the first look that sees the reader hold part of a frame (partialFrameBytes() > 0), whatever else the connection is doing, and it belongs to that connection: another client completing a frame must not stop it",
    });
    const after = (fin.at ?? performance.now()) - t0;
    check(after >= FRAME - 2, 'The frame deadline fired too soon.', {
      observed: `the server gave up ${ms(after)} after the frame's first chunk (frameMs ${FRAME})`,
      expected: `no sooner than ${FRAME - 2} ms`,
      idea: "the frame deadline starts with a frame's first byte",
    });
  });

  test('a client that never reads but keeps pinging is disconnected at the write deadline', async () => {
    const WRITE = 200;
    const EVERY = 25;
    const server = await start({ work: async () => Buffer.alloc(0), writeMs: WRITE });
    const socket = net.connect({ port: server.port, host: '127.0.0.1', noDelay: true });
    h.defer(() => socket.destroy());
    socket.on('error', () => {});
    await once(socket, 'connect');
    socket.pause();
    // PINGs with a body of 1 MB: each PONG echoes it, and nobody reads the PONGs.
    const ping = encode(FrameType.PING, Buffer.alloc(1_000_000, 0x70));
    const t0 = performance.now();
    let sent = 0;
    for (let i = 0; i < 9; i++, sent++) socket.write(ping);
    // Until the server gives up, or well past the deadline: a loaded machine may take a
    // while to fill the buffers that start the clock, and a server that closes returns early.
    while (server.connections > 0 && !socket.destroyed && performance.now() - t0 < WRITE + 1000) {
      await sleep(EVERY);
      socket.write(ping);
      sent++;
    }
    await eventually(() => {
      check(server.connections === 0, 'A client that reads nothing but keeps pinging kept its connection, and the server\'s memory.', {
        observed: `the client read nothing and sent ${sent} PINGs of 1 MB; ${ms(performance.now() - t0)} later the connection is still open: every PONG waits in the server's memory`,
        expected: `the server destroys the connection about ${WRITE} ms (writeMs) after a write stops making progress`,
        idea: 'every write needs the deadline, a PONG or an ERROR as much as a reply: a client that never reads can make the server write anything',
      });
    }, { within: 100 });
  });

  test('a frame trickled byte by byte is cut off at the frame deadline', async () => {
    const IDLE = 80;
    const FRAME = 120;
    const EVERY = 20;
    const WORK = 2000;
    const { work, calls } = downstream((r) => (r === 'slow' ? WORK : 0));
    const server = await start({ work, idleMs: IDLE, frameMs: FRAME });
    // A peer that never answers FIN: only a server that closes for good gets rid of it.
    const client = await h.connect(server.port, { allowHalfOpen: true });
    const fin = finTime(client);
    // First a request that arrives in two pieces (its frame deadline starts and is met),
    // and whose work takes a while: the connection is busy, not idle, during the trickle.
    // (A whole PING ahead of the first piece: its PONG says the server has read that piece.)
    const first = encode(FrameType.DATA, request(5000, 'slow'));
    await client.write(Buffer.concat([encode(FrameType.PING), first.subarray(0, 6)]));
    await client.waitForFrames(1, 'a PONG');
    await client.write(first.subarray(6));
    await eventually(() => {
      check(server.requests.started === 1, 'The first request never started.', {
        observed: `counters: ${counters(server.requests)}`,
        expected: 'started 1',
        idea: 'a DATA frame starts a request',
      });
    }, { within: 1000 });
    // Then the second frame, of 109 bytes: at one byte every 20 ms it would take over 2 s.
    const bytes = encode(FrameType.DATA, request(1000, 'x'.repeat(100)));
    const t0 = performance.now();
    let sent = 0;
    while (!client.ended && !client.closed && sent < bytes.length && performance.now() - t0 < FRAME + 160) {
      client.socket.write(bytes.subarray(sent, sent + 1));
      sent++;
      await sleep(EVERY);
    }
    await eventually(() => {
      check(fin.at !== undefined || server.connections === 0, 'A client trickling one byte at a time kept its connection open.', {
        observed: `a first request arrived whole (its work takes ${WORK} ms and is ${calls[0]?.finished ? 'done' : 'still running'}); then we sent ${sent} of the next frame's ${bytes.length} bytes, one every ${EVERY} ms, over ${ms(performance.now() - t0)}; the connection is still open. Each byte restarted the ${IDLE} ms idle timer, so it never fired`,
        expected: `the server gives up on the frame about ${FRAME} ms (frameMs) after its first byte, busy or not, second frame or first`,
        idea: 'an idle timer measures silence, not progress: every frame needs its own deadline from its first byte to its last (start a fresh one for each frame), and a request in flight does not excuse a frame that is not arriving',
      });
    }, { within: 30 });
    const goneAt = await serverGone(server, 150, {
      summary: 'The server gave up on a trickled frame but kept the connection open.',
      observed: () => `the server sent FIN ${ms(fin.at! - t0)} after the frame's first byte, then waited ${ms(performance.now() - fin.at!)} for the peer's FIN, which never comes: the connection is still open on the server (${server.connections} open)`,
      expected: 'the server side is gone right after the goodbye',
      idea: "end() only sends FIN and waits for the peer's; a slowloris client simply never sends one: giving up means destroy()",
    });
    const after = (fin.at ?? goneAt) - t0;
    check(after >= FRAME - 2 && after <= FRAME + 190, 'The frame deadline fired at the wrong time.', {
      observed: `closed ${ms(after)} after the frame's first byte (frameMs ${FRAME}, idleMs ${IDLE})`,
      expected: `between ${FRAME - 2} and ${FRAME + 190} ms after the first byte`,
      idea: "the frame deadline starts with a frame's first byte and ends with its last",
    });
    // The server itself closed the connection: the work it was doing for it has no one to go to.
    await eventually(() => {
      check(calls[0]?.abortedAfterMs !== undefined, 'The work went on for a connection the server itself had closed.', {
        observed: `the server gave up on the connection ${ms(performance.now() - goneAt)} ago; the work of its first request (${WORK} ms) ${calls[0]?.finished ? 'ran to completion' : 'is still running, its signal not aborted'}`,
        expected: 'the work aborted as the connection closed',
        idea: "abort the connection's \"client gone\" controller in 'close': 'end' and 'error' do not fire when the server destroys the socket itself (a deadline), 'close' fires on every path",
      });
    }, { within: 200 });
  });

  test('a client that never reads is disconnected at the write deadline', async () => {
    const WRITE = 200;
    const FIRST = 5;
    const REPLIES = 9;
    const EVERY = 25;
    const big = Buffer.alloc(1_000_000, 0x61);
    const server = await start({ work: async () => big, writeMs: WRITE });
    // A plain socket that only counts bytes (the recording client decodes every frame:
    // too slow for megabytes against a deadline).
    const socket = net.connect({ port: server.port, host: '127.0.0.1', noDelay: true });
    h.defer(() => socket.destroy());
    socket.on('error', () => {}); // the server resets us: that is the point
    await once(socket, 'connect');
    let received = 0;
    socket.on('data', (chunk: Buffer) => void (received += chunk.length));
    // First the client reads 5 replies of 1 MB in full. They are written in one go, more
    // than loopback absorbs at first (about 3 MB), so the last writes stall for a moment,
    // then go through as we read: their deadlines must end, and the next stall get one of
    // its own.
    const firstAt = performance.now();
    const replyBytes = encode(FrameType.DATA, big).length;
    socket.write(Buffer.concat(Array.from({ length: FIRST }, (_, i) => encode(FrameType.DATA, request(5000, `read ${i}`)))));
    await eventually(() => {
      check(received === FIRST * replyBytes, `The client did not get its ${FIRST} replies of 1 MB.`, {
        observed: `${received} of ${FIRST * replyBytes} bytes arrived in ${ms(performance.now() - firstAt)}, reading as fast as we can${server.connections === 0 ? '; then the server closed the connection' : ''}`,
        expected: 'every byte: a client that reads is never cut off',
        idea: "a write deadline is on progress: a client that is reading is making progress, however much is queued",
      });
    }, { within: 2000 });
    const readIn = performance.now() - firstAt;
    // Then it stops reading for good, but keeps talking: it asks for 9 MB at once, and for
    // one more MB every 25 ms (more than the kernel can absorb, however its buffers grew).
    // It goes on asking for as long as we wait, so a deadline that bytes from the client
    // push back never fires; a correct server gives up about writeMs after the stall, and
    // the generous limit is for a loaded machine, where the stall itself can come late.
    socket.pause();
    const t0 = performance.now();
    let asked = 0;
    const ask = () => socket.write(encode(FrameType.DATA, request(5000, `chunk ${asked++}`)));
    for (let i = 0; i < REPLIES; i++) ask();
    while (server.connections > 0 && !socket.destroyed && performance.now() - t0 < WRITE + 1500) {
      await sleep(EVERY);
      ask();
    }
    await eventually(() => {
      check(server.connections === 0, "A client that reads nothing kept its connection, and the server's memory, for good.", {
        observed: `the client read ${FIRST} replies of 1 MB (in ${ms(readIn)}), then stopped reading but went on asking: ${asked} more replies of 1 MB, ${REPLIES} at once, then one every ${EVERY} ms. ${ms(performance.now() - t0)} later the connection is still open (${server.connections} open). Loopback absorbs a few MB; the rest waits in the server's memory, and would wait for ever`,
        expected: `the server destroys the connection about ${WRITE} ms (writeMs) after a write stops making progress`,
        idea: "socket.write() never fails against a peer that stops reading, it only queues: while bytes wait (writableLength > 0), the kernel must take some (bytesWritten - writableLength grows) within writeMs. Bytes the peer sends prove nothing (it can talk without reading), nor do new writes (bytesWritten counts what was handed over, not what was taken), and every stall gets the deadline, not just the first",
      });
    }, { within: 100 });
    const after = performance.now() - t0;
    check(after >= WRITE - 2, 'The write deadline fired too soon.', {
      observed: `the connection was gone ${ms(after)} after the requests (writeMs ${WRITE})`,
      expected: `no sooner than ${WRITE} ms: a slow write is not yet a stuck one`,
      idea: 'write() returning false is backpressure, not a failure; the deadline is on progress',
    });
  });

  test('a frame sent a few bytes at a time is cut off at the frame deadline', async () => {
    // A frame deadline long against the pauses of a loaded machine: a server that restarts
    // the clock on every piece must never see a gap of a whole FRAME between two of them.
    const FRAME = 250;
    const EVERY = 20;
    const PIECE = 8;
    const logs: string[] = [];
    const t0 = performance.now();
    const { work } = downstream(() => 0);
    const server = await start({ work, idleMs: 2000, frameMs: FRAME, log: (line) => logs.push(`${ms(performance.now() - t0)}: ${line}`) });
    const client = await h.connect(server.port, { allowHalfOpen: true });
    const fin = finTime(client);
    // A frame of 1 KB, 8 bytes every 20 ms: a slow upload, or slowloris a little faster.
    const bytes = encode(FrameType.DATA, request(1000, 'x'.repeat(1000)));
    const firstAt = performance.now();
    let sent = 0;
    while (!client.ended && !client.closed && sent < bytes.length && performance.now() - firstAt < FRAME + 400) {
      client.socket.write(bytes.subarray(sent, sent + PIECE));
      sent += PIECE;
      await sleep(EVERY);
    }
    const gaveUp = () => fin.at !== undefined || server.connections === 0;
    await waitUntil(gaveUp, 100);
    check(gaveUp(), 'A frame arriving a few bytes at a time was never cut off.', {
      observed: `${sent} of the frame's ${bytes.length} bytes, ${PIECE} every ${EVERY} ms: ${ms(performance.now() - firstAt)} after its first byte the connection is still open (frameMs ${FRAME}).\nThe server logged: ${logs.length ? logs.join('; ') : 'nothing'}`,
      expected: `the server gives up on the frame about ${FRAME} ms after its first byte`,
      idea: "the clock of a frame restarts only when a frame completes: the sweep needs the bytes the reader holds (partialFrameBytes: () => reader.decoder.bufferedBytes), not whether it holds some, to tell a frame completed from a frame growing",
    });
    const after = (fin.at ?? performance.now()) - firstAt;
    check(after >= FRAME - 2, 'The frame deadline fired too soon.', {
      observed: `the server gave up ${ms(after)} after the frame's first byte (frameMs ${FRAME})`,
      expected: `no sooner than ${FRAME - 2} ms`,
      idea: "the frame deadline starts with a frame's first byte",
    });
  });

  test('work for a client that has gone is aborted, not completed', async () => {
    const WORK = 150;
    const { work, calls } = downstream(() => WORK);
    const server = await start({ work });
    // Three clients with a request each: one stays, one hangs up (FIN), one resets (RST).
    // The one that hangs up has a second request waiting behind its first.
    const stays = await h.connect(server.port);
    const hangsUp = await h.connect(server.port);
    const resets = await h.connect(server.port);
    stays.send(FrameType.DATA, request(2000, 'stays'));
    hangsUp.send(FrameType.DATA, request(2000, 'hangs up'));
    hangsUp.send(FrameType.DATA, request(2000, 'queued'));
    resets.send(FrameType.DATA, request(2000, 'resets'));
    await eventually(() => {
      check(server.requests.started === 3, 'The requests never started.', {
        observed: `counters: ${counters(server.requests)}`,
        expected: 'started 3 (one per client)',
        idea: 'a DATA frame starts a request',
      });
    }, { within: 1000 });
    const call = (name: string) => calls.find((c) => c.request === name);
    const fate = (name: string) => {
      const c = call(name);
      if (!c) return 'never started';
      if (c.abortedAfterMs !== undefined) return `aborted after ${c.abortedAfterMs} ms (${c.reason})`;
      return c.finished ? `ran its full ${WORK} ms` : 'still running';
    };
    // The clients give up (their own timeout, a user closing the app): they hang up.
    const leftAt = performance.now();
    hangsUp.destroy();
    resets.reset();
    await eventually(() => {
      check(call('hangs up')?.abortedAfterMs !== undefined && call('resets')?.abortedAfterMs !== undefined, 'The work went on for a client that had gone (a phantom request).', {
        observed: `${ms(performance.now() - leftAt)} after two clients left: the work for the one that hung up (FIN) ${fate('hangs up')}; for the one that reset (RST) ${fate('resets')}; counters: ${counters(server.requests)}`,
        expected: 'both aborted at once: the work learns its client left, however it left',
        idea: "abort a per-connection AbortController in 'close' (it fires on every path: FIN, reset, error; 'end' fires only for a FIN) and include its signal in every request's AbortSignal.any([...])",
      });
    }, { within: WORK + 100 });
    await eventually(() => {
      check(call('stays')?.finished === true, 'A client that stayed lost its request when other clients left.', {
        observed: `the work for the client that stayed ${fate('stays')}, ${ms(performance.now() - leftAt)} after two other clients left`,
        expected: `it runs its ${WORK} ms and its client gets DATA "done stays": other clients leaving is none of its business`,
        idea: 'the "client gone" signal belongs to one connection: make its AbortController inside the connection handler, not once for the whole server',
      });
    }, { within: WORK + 200 });
    const [reply] = await stays.waitForFrames(1, 'the reply for the client that stayed');
    check(reply!.type === FrameType.DATA && reply!.body.toString() === 'done stays', 'The client that stayed got the wrong reply.', {
      observed: `its reply: ${describeFrame(reply!)}`,
      expected: 'DATA "done stays"',
      idea: 'work that completes is answered',
    });
    // Whether a turn that comes after the client left skips the work or starts it with a
    // signal that has already aborted, no work may run for it: this downstream, like
    // fetch() or timers/promises, gives up at once on an aborted signal.
    const queued = call('queued');
    check(!queued?.finished && (queued?.abortedAfterMs ?? 0) <= 50, 'A request queued behind one whose client left still ran.', {
      observed: `the client that hung up had a second request waiting its turn; after the client left, its work ${fate('queued')}`,
      expected: 'never started, or started with a signal that had already aborted: its client is gone, so nobody will read the answer',
      idea: "the request's signal must include the connection's \"client gone\" signal from the start, so a turn that comes after the client left is already aborted",
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
    // A server whose own cap is lower than what the caller asks: the cap is the budget.
    const MAX = 150;
    const capped = downstream(() => 0);
    const strict = await start({ work: capped.work, maxBudgetMs: MAX });
    const other = await h.connect(strict.port);
    other.send(FrameType.DATA, request(60_000, 'greedy lookup'));
    await other.waitForFrames(1, 'the reply to a request with a budget above maxBudgetMs');
    const givenCapped = capped.calls[0]?.budgetMs ?? NaN;
    check(givenCapped > 0 && givenCapped <= MAX, 'The downstream was promised more time than the server will wait.', {
      observed: `the caller asked for 60000 ms on a server with maxBudgetMs ${MAX}; the downstream was given ${givenCapped} ms`,
      expected: `at most ${MAX} ms: the server stops waiting then`,
      idea: 'maxBudgetMs caps the budget itself, before anything is derived from it: the signal and the budget handed downstream alike',
    });
  });

  test('a request that waited its turn gets only what is left of its budget', async () => {
    const SLOW = 250;
    const BUDGET = 300;
    const EXPIRED = 100;
    const { work, calls } = downstream((r) => (r === 'slow' ? SLOW : r === 'next' ? 1000 : 0));
    const server = await start({ work });
    const client = await h.connect(server.port);
    // Three requests at once. The second waits about 250 ms behind the first, so about
    // 50 ms of its 300 ms budget are left when its turn comes; the third's 100 ms budget
    // is spent before its turn comes at all.
    const t0 = performance.now();
    client.send(FrameType.DATA, request(5000, 'slow'));
    client.send(FrameType.DATA, request(BUDGET, 'next'));
    client.send(FrameType.DATA, request(EXPIRED, 'expired'));
    const replies = await client.waitForFrames(2, 'replies to the first two requests');
    const secondAt = performance.now() - t0;
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
    const timeout = (f: { type: number; body: Buffer } | undefined) => f?.type === FrameType.ERROR && f.body.toString().startsWith('TIMEOUT');
    check(timeout(replies[1]) && secondAt >= BUDGET - 2 && secondAt <= BUDGET + 150, "A request that waited in line was given its whole budget again when its turn came.", {
      observed: `the second request (budget ${BUDGET} ms, work that would take 1 s) waited ${waited} ms; its reply, ${describeFrame(replies[1]!)}, came ${ms(secondAt)} after it was sent`,
      expected: `ERROR "TIMEOUT ..." between ${BUDGET - 2} and ${BUDGET + 150} ms after it was sent: the caller stops waiting then`,
      idea: "the request's AbortSignal.timeout() gets what is left of the budget when its turn comes (budget - time waited), not the whole budget again",
    });
    const all = await client.waitForFrames(3, 'the reply to the third request');
    const third = calls.find((c) => c.request === 'expired');
    check(timeout(all[2]) && third === undefined, 'A request whose budget ran out while it waited still went to the downstream.', {
      observed: `the third request (budget ${EXPIRED} ms) waited about ${ms(secondAt)} for its turn; its reply: ${describeFrame(all[2]!)}; the downstream ${third ? `was called with a budget of ${third.budgetMs} ms` : 'was not called'}`,
      expected: 'ERROR "TIMEOUT ..." at once, and no call downstream: nothing is left of the budget',
      idea: 'when nothing is left of a budget (leftMs <= 0), answer TIMEOUT without starting the work: a call with 0 ms to spare costs the downstream and helps nobody',
    });
  });
});

/**
 * One connection to hand to a sweep of the test's own: the server's side (what the sweep
 * watches) and a recorded client. Both are closed after the test.
 */
async function pair(options: ConnectOptions = {}): Promise<{ socket: net.Socket; client: TestClient }> {
  const listener = net.createServer();
  await new Promise<void>((resolve) => listener.listen(0, '127.0.0.1', resolve));
  const accepted = once(listener, 'connection') as Promise<[net.Socket]>;
  const client = await h.connect((listener.address() as net.AddressInfo).port, options);
  const [socket] = await accepted;
  socket.on('error', () => {}); // a peer that resets us: 'close' follows
  listener.close(); // the connection outlives its listener
  h.defer(() => socket.destroy());
  return { socket, client };
}

/** A sweep for one test, stopped after it. */
function newSweep(tickMs: number): DeadlineSweep {
  const sweep = new DeadlineSweep({ tickMs });
  h.defer(() => sweep.stop());
  return sweep;
}

/** When a socket closed, as performance.now(). */
function closedAt(socket: net.Socket): { at?: number } {
  const seen: { at?: number } = {};
  socket.once('close', () => (seen.at = performance.now()));
  return seen;
}

describe('the sweep (deadlines.ts): one timer for every connection', () => {
  test('a connection leaves the sweep however it closes, and the timer goes with the last one', async () => {
    const probe = new LeakProbe();
    const sweep = newSweep(20);
    const hangsUp = await pair();
    const resets = await pair();
    const cut = await pair();
    for (const p of [hangsUp, resets, cut]) sweep.watch(p.socket, {});
    check(sweep.watching === 3, 'The sweep does not count the connections it watches.', {
      observed: `watching ${sweep.watching} after watch() on 3 connections`,
      expected: 'watching 3',
      idea: 'watch() adds a connection to the sweep until it closes',
    });
    const steps: Array<[string, () => void]> = [
      ['the client sent FIN', () => hangsUp.client.end()],
      ['the client reset the connection (RST: no FIN, no \'end\')', () => resets.client.reset()],
      ['the server destroyed its side itself (as a deadline does: no \'end\', no \'error\')', () => cut.socket.destroy()],
    ];
    for (const [i, [how, close]] of steps.entries()) {
      close();
      await eventually(() => {
        check(sweep.watching === 2 - i, 'A connection that closed stayed in the sweep.', {
          observed: `${how}; the socket closed, and the sweep still watches ${sweep.watching} connection(s) (expected ${2 - i})`,
          expected: 'the connection leaves the sweep as it closes, however it closes',
          idea: "let go in 'close': it fires exactly once on every path (lesson 01); 'end' is only a FIN, 'error' only a failure, and a socket the server destroys itself gets neither",
        });
      }, { within: 500 });
    }
    const stopped = await waitUntil(() => !probe.leaks().resources.has('Timeout'), 200);
    check(stopped, 'The sweep kept its timer with no connection left to watch.', {
      observed: `every watched connection has closed; 200 ms later still alive: ${describeLeaks(probe.leaks())}`,
      expected: 'no timer: the sweep clears its interval when the last connection leaves, and sets it again with the next one',
      idea: 'an idle server holds no timer; clearInterval() ends one, unref() only lets the process exit around it while it keeps firing',
    });
  });

  test('stop() forgets every connection and leaves no timer, and can be called twice', async () => {
    const probe = new LeakProbe();
    const sweep = newSweep(10);
    const a = await pair();
    const b = await pair();
    sweep.watch(a.socket, {}).set('hello', 50, 'no HELLO within 50 ms');
    sweep.watch(b.socket, {});
    sweep.stop();
    sweep.stop();
    check(sweep.watching === 0, 'stop() left connections in the sweep.', {
      observed: `watching ${sweep.watching} after stop()`,
      expected: 'watching 0: a stopped sweep watches nothing',
      idea: 'stop() forgets every connection (and takes its \'close\' listener back)',
    });
    const stopped = await waitUntil(() => !probe.leaks().resources.has('Timeout'), 200);
    await sleep(100);
    check(stopped && !a.socket.destroyed && !a.client.ended, 'The sweep went on after stop().', {
      observed: `after stop() (twice): ${stopped ? 'no timer left' : `still alive: ${describeLeaks(probe.leaks())}`}; a one-off deadline of 50 ms set before stop() ${a.socket.destroyed || a.client.ended ? 'expired 100 ms later anyway' : 'did not fire'}`,
      expected: 'no timer, and nothing expires: stop() clears the interval, even with connections still watched',
      idea: 'the interval is cleared when the last connection leaves and by stop(); a server stopping with connections still open must not leave it running',
    });
  });

  test('a one-off deadline fires at its time, unless it is cleared or set again', async () => {
    const TICK = 50;
    const MS = 100;
    const sweep = newSweep(TICK);
    const expired: string[] = [];
    const replaced = await pair();
    const cleared = await pair();
    // Two connections whose deadlines are set half a tick apart, well after they were
    // watched: whatever the phase of the ticks, a deadline that fires early shows on one.
    const late = [await pair(), await pair()].map((p, i) => ({
      ...p,
      fin: finTime(p.client),
      deadlines: sweep.watch(p.socket, { onExpired: (why) => expired.push(`late ${i}: ${why}`) }),
      setAt: 0,
    }));
    const onReplaced = sweep.watch(replaced.socket, { onExpired: (why) => expired.push(`replaced: ${why}`) });
    const onCleared = sweep.watch(cleared.socket, { onExpired: (why) => expired.push(`cleared: ${why}`) });
    // Set again under the same name: the second deadline replaces the first.
    onReplaced.set('hello', 60, 'no HELLO within 60 ms');
    onReplaced.set('hello', 5000, 'no HELLO within 5000 ms');
    // Set, then cleared.
    onCleared.set('hello', 60, 'no HELLO within 60 ms');
    onCleared.clear('hello');
    const watchedAt = performance.now();
    for (const [i, c] of late.entries()) {
      await sleep(i === 0 ? 2 * TICK + 10 : TICK / 2);
      c.setAt = performance.now();
      c.deadlines.set('hello', MS, `no HELLO within ${MS} ms`);
    }
    for (const c of late) {
      await eventually(() => {
        check(c.fin.at !== undefined, 'A one-off deadline never fired.', {
          observed: `set('hello', ${MS}, ...) ${ms(performance.now() - c.setAt)} ago; the connection is still open (expired so far: ${expired.join('; ') || 'none'})`,
          expected: `ERROR "TIMEOUT no HELLO within ${MS} ms", then the close, about ${MS} ms after set()`,
          idea: 'the sweep looks at every one-off deadline of every connection at each tick',
        });
      }, { within: MS + 2 * TICK + 200 });
      const after = c.fin.at! - c.setAt;
      check(after >= MS - 2, 'A one-off deadline fired early.', {
        observed: `set('hello', ${MS}, ...) ${ms(c.setAt - watchedAt)} after watch(); the connection was closed ${ms(after)} after set() (tickMs ${TICK})`,
        expected: `no sooner than ${MS - 2} ms after set(): a deadline counts from when it was set, and fires at the first tick after it, never at the tick before`,
        idea: 'store when the deadline falls (performance.now() + ms, at set()) and expire at the first look where now >= it: a tick late at worst, never early',
      });
      const said = c.client.frames.find((f) => f.type === FrameType.ERROR);
      check(said?.body.toString() === `TIMEOUT no HELLO within ${MS} ms`, 'The peer was not told why it was cut.', {
        observed: `the client got ${c.client.frames.map(describeFrame).join(', ') || 'nothing'} before the close`,
        expected: `ERROR "TIMEOUT no HELLO within ${MS} ms"`,
        idea: 'expiry says why, with the reason given to set()',
      });
    }
    check(expired.length === 2 && !replaced.socket.destroyed && !cleared.socket.destroyed, 'A one-off deadline that was replaced or cleared still fired.', {
      observed: `onExpired calls: ${expired.join('; ') || 'none'}; ${ms(performance.now() - watchedAt)} after its set(): the connection whose 60 ms deadline was set again to 5000 ms is ${replaced.socket.destroyed ? 'closed' : 'open'}, the one whose deadline was cleared is ${cleared.socket.destroyed ? 'closed' : 'open'}`,
      expected: "one expiry for each of the two connections set to expire, none for the others: set() under a name replaces that name's deadline, clear() removes it",
      idea: 'keep one deadline per name (a Map), and let set() replace it',
    });
  });

  test('an expired connection is told why, stops being read, and is destroyed even if its peer never answers', async () => {
    const TICK = 50;
    const sweep = newSweep(TICK);
    // Peers that never send FIN: only destroy() frees the server's side.
    const queued = await pair({ allowHalfOpen: true });
    const mute = await pair({ allowHalfOpen: true });
    const talking = await pair({ allowHalfOpen: true });
    // Says it through a writer that writes a moment later (as a send queue does).
    let stoppedReading = 0;
    sweep.watch(queued.socket, {
      say: (frame) => new Promise<void>((resolve) => setImmediate(() => queued.socket.write(frame, () => resolve()))),
      stopReading: () => void stoppedReading++,
    }).set('t', 10, 'test deadline');
    // Its goodbye never finishes.
    sweep.watch(mute.socket, { say: () => new Promise<void>(() => {}) }).set('t', 10, 'test deadline');
    // Keeps sending while it is cut; its goodbye takes 30 ms.
    let expiredAt: number | undefined;
    let chunksAfter = 0;
    talking.socket.on('data', () => void (expiredAt !== undefined && chunksAfter++));
    const chatter = setInterval(() => talking.client.socket.writable && talking.client.socket.write('x'), 5);
    h.defer(() => clearInterval(chatter));
    sweep.watch(talking.socket, {
      say: (frame) => new Promise<void>((resolve) => void setTimeout(() => resolve(void talking.socket.write(frame)), 30)),
      onExpired: () => (expiredAt = performance.now()),
    }).set('t', 10, 'test deadline');
    const t0 = performance.now();
    await eventually(() => {
      const said = queued.client.frames.find((f) => f.type === FrameType.ERROR);
      check(said?.body.toString() === 'TIMEOUT test deadline', 'The goodbye was lost: the socket was cut before say() had written it.', {
        observed: `say() hands the ERROR to a writer that writes it a moment later; ${ms(performance.now() - t0)} after the deadline the client got ${queued.client.frames.map(describeFrame).join(', ') || 'nothing'}, and the server's side is ${queued.socket.destroyed ? 'destroyed' : 'open'}`,
        expected: 'ERROR "TIMEOUT test deadline", then the close',
        idea: "wait for the promise say() returns (at most until the next tick) before destroy(), and destroy after saying, not before",
      });
    }, { within: 2 * TICK + 200 });
    await eventually(() => {
      check(queued.socket.destroyed && mute.socket.destroyed, 'An expired connection was never destroyed.', {
        observed: `${ms(performance.now() - t0)} after the deadline (tickMs ${TICK}), peers that never send FIN: the one whose goodbye was written is ${queued.socket.destroyed ? 'destroyed' : 'still open'}; the one whose goodbye never finishes is ${mute.socket.destroyed ? 'destroyed' : 'still open'}`,
        expected: 'both destroyed: once the goodbye is written, or at the next tick, whichever comes first',
        idea: 'end() only sends FIN and waits for the peer\'s, and a say() may never finish: a deadline that passed ends with destroy(), at the next tick at the latest',
      });
    }, { within: 2 * TICK + 500 });
    check(stoppedReading === 1, 'An expired connection was still being read.', {
      observed: `stopReading() was called ${stoppedReading} time(s)`,
      expected: 'once, at expiry: nothing that arrives after the deadline is served',
      idea: 'expiry stops reading first (the owner\'s stopReading(), or socket.pause()), then says why, then cuts',
    });
    await eventually(() => check(talking.socket.destroyed, 'An expired connection was never destroyed.', { observed: 'still open', expected: 'destroyed', idea: 'destroy() at the next tick at the latest' }), { within: 2 * TICK + 200 });
    check(chunksAfter === 0, 'An expired connection was still being read.', {
      observed: `a client sending a byte every 5 ms: ${chunksAfter} chunk(s) read on the server after the deadline passed, while the goodbye was being said`,
      expected: 'none: with no stopReading() given, the sweep pauses the socket at expiry',
      idea: 'expiry stops reading first: a connection we gave up on must not start new work',
    });
  });

  test('a write stuck below the high-water mark still meets the write deadline', async () => {
    const WRITE = 100;
    const TICK = 10;
    const sweep = newSweep(TICK);
    const { socket, client } = await pair();
    client.socket.pause();
    // Small writes until one waits: the kernel's buffers are full, and what waits in the
    // socket is less than its high-water mark, so write() never returned false and no
    // 'drain' will come.
    let writes = 0;
    while (socket.writableLength === 0 && writes < 10_000) {
      socket.write(Buffer.alloc(8192, 0x61));
      writes++;
    }
    const closed = closedAt(socket);
    const expired: string[] = [];
    const t0 = performance.now();
    sweep.watch(socket, { writeMs: WRITE, onExpired: (why) => expired.push(why) });
    await eventually(() => {
      check(socket.destroyed, 'A write the peer never takes was never given up on.', {
        observed: `${writes} writes of 8 KiB to a peer that reads nothing: ${socket.writableLength} bytes wait in the socket (write() never returned false: writableNeedDrain is ${socket.writableNeedDrain}); ${ms(performance.now() - t0)} after watch({ writeMs: ${WRITE} }) the connection is still open${expired.length ? ` (expired: ${expired.join('; ')})` : ''}`,
        expected: `destroyed about ${WRITE} ms (writeMs) after the kernel stopped taking bytes`,
        idea: "observe the socket: bytes wait while writableLength > 0, and the kernel took some when bytesWritten - writableLength grew; 'drain' and writableNeedDrain only speak of writes past the high-water mark",
      });
    }, { within: WRITE + 4 * TICK + 200 });
    const after = (closed.at ?? performance.now()) - t0;
    check(after >= WRITE - 2, 'The write deadline fired too soon.', {
      observed: `destroyed ${ms(after)} after watch() (writeMs ${WRITE})`,
      expected: `no sooner than ${WRITE - 2} ms`,
      idea: 'the write clock starts at the look that first sees bytes waiting',
    });
  });

  test('a connection that only receives is not idle, and is once the pushes stop', async () => {
    const IDLE = 250;
    const EVERY = 25;
    const TICK = 10;
    const sweep = newSweep(TICK);
    const { socket, client } = await pair();
    const closed = closedAt(socket);
    const expired: string[] = [];
    sweep.watch(socket, { idleMs: IDLE, onExpired: (why) => expired.push(why) });
    // The server pushes a frame every 25 ms for 500 ms; the client reads them and says nothing.
    const t0 = performance.now();
    let lastPush = t0;
    let longestGap = 0;
    for (let i = 0; i < 20 && !socket.destroyed; i++) {
      socket.write(encode(FrameType.DATA, `push ${i}`));
      longestGap = Math.max(longestGap, performance.now() - lastPush);
      lastPush = performance.now();
      await sleep(EVERY);
    }
    check(!socket.destroyed, 'A connection the server was writing to was taken for idle.', {
      observed: `a push every ${EVERY} ms (the longest gap between two: ${ms(longestGap)}) to a client that reads them: the connection was closed ${ms((closed.at ?? performance.now()) - t0)} after the first one (idleMs ${IDLE}); the client got ${client.frames.length} push(es)`,
      expected: 'open while the pushes go on: bytes going out are not silence',
      idea: 'idle means no byte in or out: count the bytes the kernel took (bytesWritten - writableLength) as well as bytesRead',
    });
    await eventually(() => {
      check(socket.destroyed, 'A connection that went quiet was never closed.', {
        observed: `no byte either way for ${ms(performance.now() - lastPush)} after the last push (idleMs ${IDLE}); the connection is still open${expired.length ? `, though onExpired was told: ${expired.join('; ')}` : ''}`,
        expected: `ERROR "TIMEOUT idle for ${IDLE} ms", then destroyed, about ${IDLE} ms after the last push`,
        idea: "noticing the silence is half of it: expiry must cut the connection (socket.setTimeout()'s 'timeout' is only an alarm)",
      });
    }, { within: IDLE + 4 * TICK + 200 });
    const after = (closed.at ?? performance.now()) - lastPush;
    check(after >= IDLE - 2, 'The idle deadline fired too soon.', {
      observed: `destroyed ${ms(after)} after the last push (idleMs ${IDLE})`,
      expected: `no sooner than ${IDLE - 2} ms`,
      idea: 'the idle clock restarts at the look that sees bytes go out',
    });
  });
});
