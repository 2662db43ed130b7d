// Lesson 08: stopping without losing work. stop() refuses new connections and requests,
// tells every client GOAWAY, lets in-flight requests finish, flushes what is queued, ends
// the connections, destroys the ones that will not finish by the deadline, and leaves
// nothing running. The process entry point drains on SIGTERM and exits on a second signal.
import { spawn, type ChildProcess } from 'node:child_process';
import net from 'node:net';
import path from 'node:path';
import { afterAll, beforeAll, describe, test, vi } from 'vitest';
import { startJournalServer, type Entry, type JournalOptions } from '#target/08-graceful-shutdown/journal.ts';
import { targetFromEnv, treeFor, projectRoot } from '../runtime/targets/resolve.ts';
import {
  check,
  connect,
  describeLeaks,
  eventually,
  fail,
  FrameType,
  gate,
  ReferenceDecoder,
  settleWithin,
  useHarness,
  type Frame,
  type TestClient,
} from '../runtime/harness/index.ts';

const h = useHarness('08');

// 16 entries of 512 KiB: 8 MiB for a follower, well above the ~3.7 MB that loopback's
// kernel buffers absorb when the reader stops reading, so the rest waits in user space.
const BIG_ENTRIES = 16;
const BIG_ENTRY_BYTES = 512 * 1024;
const MB = (bytes: number) => `${(bytes / 1e6).toFixed(1)} MB`;

async function start(options: JournalOptions = {}) {
  return h.track(await startJournalServer({ persistMs: 5, ...options }));
}
type Journal = Awaited<ReturnType<typeof start>>;

const entry = (id: number, text = `entry ${id}`) => Buffer.from(`${id} ${text}`);
const bodies = (client: TestClient, type: number) => client.frames.filter((f) => f.type === type).map((f) => f.body.toString('latin1'));
const acked = (client: TestClient) => bodies(client, FrameType.ACK).map(Number);
const refused = (client: TestClient) =>
  bodies(client, FrameType.ERROR)
    .map((b) => b.match(/^SHUTTING_DOWN (\d+) /))
    .filter((m): m is RegExpMatchArray => m !== null)
    .map((m) => Number(m[1]));
const gotGoaway = (client: TestClient) => client.frames.some((f) => f.type === FrameType.GOAWAY);
const logIds = (server: Journal) => server.log.map((e) => e.id);
const framesSummary = (frames: Frame[]) => {
  const counts = new Map<string, number>();
  for (const f of frames) {
    const name = Object.entries(FrameType).find(([, v]) => v === f.type)?.[0] ?? String(f.type);
    counts.set(name, (counts.get(name) ?? 0) + 1);
  }
  return counts.size ? [...counts].map(([n, c]) => `${c} ${n}`).join(', ') : 'no frames';
};

/** A persist() that holds every entry until the shutdown signal tells it to hurry. */
function untilShutdown(signal: AbortSignal): Promise<void> {
  return new Promise((resolve) => {
    if (signal.aborted) return resolve();
    signal.addEventListener('abort', () => resolve(), { once: true });
  });
}

/**
 * Races stop() against a deadline, so a stop() that never resolves fails the test with
 * an explanation instead of a timeout.
 */
async function stopWithin(server: Journal, ms: number, situation: string): Promise<number> {
  const started = performance.now();
  const finished = (await settleWithin(server.stop(), ms)).done;
  check(finished, `stop() had not resolved ${ms} ms after it was called.`, {
    observed: `${situation}; ${server.connections} connection(s) still open ${ms} ms after stop()`,
    expected: 'stop() resolves by its grace deadline, whatever the clients do',
    idea: 'server.close() calls back only when the last connection has closed: a shutdown needs a deadline after which it destroys what is left',
  });
  return performance.now() - started;
}

/** Appends BIG_ENTRIES big entries from a fresh client; every other client gets a copy. */
async function flood(server: Journal): Promise<TestClient> {
  const writer = await h.connect(server.port);
  const filler = Buffer.alloc(BIG_ENTRY_BYTES, 0x61);
  for (let id = 1; id <= BIG_ENTRIES; id++) writer.send(FrameType.DATA, Buffer.concat([Buffer.from(`${id} `), filler]));
  await writer.waitForFrames(BIG_ENTRIES, `${BIG_ENTRIES} ACKs for the big entries`, 5000);
  return writer;
}

/** A client that has stopped reading (paused): what the server sends it piles up. */
async function stalledClient(server: Journal): Promise<TestClient> {
  const client = await h.connect(server.port);
  client.socket.pause();
  // Destroyed by the test: paused, it would never see the server's FIN.
  h.defer(() => client.destroy());
  return client;
}

/**
 * Local helper (a candidate for the harness): a follower for megabytes. TestClient keeps
 * every byte in one Buffer it concatenates per chunk, which is quadratic at 8 MB; this one
 * keeps only frame types and a byte count. It starts paused.
 */
async function stalledFollower(server: Journal) {
  const socket = net.connect({ port: server.port, host: '127.0.0.1', noDelay: true });
  const decoder = new ReferenceDecoder();
  const seen = { types: [] as number[], bytes: 0, ended: false, closed: false };
  socket.on('data', (chunk: Buffer) => {
    seen.bytes += chunk.length;
    for (const f of decoder.push(chunk)) seen.types.push(f.type);
  });
  socket.on('error', () => {});
  socket.on('end', () => (seen.ended = true));
  const closed = new Promise<void>((resolve) =>
    socket.once('close', () => {
      seen.closed = true;
      resolve();
    }),
  );
  h.defer(async () => {
    socket.destroy();
    await closed;
  });
  await new Promise<void>((resolve, reject) => socket.once('connect', resolve).once('error', reject));
  socket.pause();
  return { socket, seen };
}

describe('baseline: the journal stores, acknowledges and shuts down', () => {
  test('an entry is acknowledged once it is in the log', async () => {
    const server = await start();
    const client = await h.connect(server.port);
    client.send(FrameType.DATA, entry(7, 'hello'));
    const [ack] = await client.waitForFrames(1, 'an ACK for entry 7');
    check(ack!.type === FrameType.ACK && ack!.body.toString() === '7', 'Entry 7 was not acknowledged.', {
      observed: `the reply was ${framesSummary([ack!])} "${ack!.body.toString()}"`,
      expected: 'ACK "7"',
      idea: 'the server acknowledges an entry once it is stored',
    });
    check(logIds(server).includes(7), 'An acknowledged entry is not in the log.', {
      observed: `log ids: [${logIds(server).join(', ')}]`,
      expected: 'the log holds entry 7 before its ACK is sent',
      idea: 'an ACK is a promise that the entry is stored',
    });
  });

  test('followers receive every stored entry', async () => {
    const server = await start();
    const writer = await h.connect(server.port);
    const follower = await h.connect(server.port);
    for (const id of [1, 2, 3]) writer.send(FrameType.DATA, entry(id));
    await writer.waitForFrames(3, 'three ACKs');
    const copies = await follower.waitForFrames(3, 'three copies of the stored entries');
    const texts = copies.map((f) => f.body.toString());
    check(texts.join('|') === '1 entry 1|2 entry 2|3 entry 3', 'The follower did not get the entries.', {
      observed: `the follower received ${JSON.stringify(texts)}`,
      expected: '"1 entry 1", "2 entry 2", "3 entry 3", in order',
      idea: 'every stored entry is fanned out to the other clients',
    });
  });

  test('a client that connects after stop() began is refused', async () => {
    const server = await start();
    const client = await h.connect(server.port);
    const stopped = server.stop();
    let refusedConnect = false;
    try {
      const late = await connect(server.port);
      h.defer(() => late.destroy());
    } catch {
      refusedConnect = true;
    }
    check(refusedConnect, 'A new connection was accepted after stop() was called.', {
      observed: 'connect() succeeded after stop() had begun',
      expected: 'ECONNREFUSED: a stopping server no longer listens',
      idea: 'the first step of a shutdown is to stop accepting: server.close() does that at once',
    });
    await client.waitClosed('stop() ends the idle connection');
    await stopped;
  });

  test('stop() sends GOAWAY to every client, then closes', async () => {
    const server = await start();
    const clients = [await h.connect(server.port), await h.connect(server.port)];
    const stopped = server.stop();
    for (const [i, client] of clients.entries()) {
      await client.waitClosed('stop() closes an idle connection');
      check(gotGoaway(client), `Client ${i + 1} was not told the server is going away.`, {
        observed: `before the connection closed it received ${framesSummary(client.frames)}`,
        expected: 'a GOAWAY frame, then the close',
        idea: 'GOAWAY tells a client to finish and reconnect elsewhere, instead of seeing its connection drop',
      });
    }
    await stopped;
  });

  test('in-flight requests are told to hurry, finish and are acknowledged', async () => {
    const signals: AbortSignal[] = [];
    const server = await start({
      persist: (_e: Entry, signal: AbortSignal) => (signals.push(signal), untilShutdown(signal)),
    });
    const client = await h.connect(server.port);
    for (const id of [1, 2, 3]) client.send(FrameType.DATA, entry(id));
    await eventually(() => {
      check(server.inflight === 3, 'The three requests never got in flight.', {
        observed: `${server.inflight} request(s) in flight`,
        expected: '3 requests being stored',
        idea: 'the server starts storing each request as it reads it',
      });
    }, { within: 2000 });
    const stopped = server.stop();
    await client.waitClosed('the connection closes once its in-flight requests are answered', 1500);
    check(signals.every((s) => s.aborted), 'stop() did not tell the handlers to hurry.', {
      observed: `${signals.filter((s) => s.aborted).length} of ${signals.length} persist() signals aborted`,
      expected: 'every signal aborted when stop() begins',
      idea: 'an AbortSignal passed down to the work lets shutdown cut its waits short',
    });
    check(acked(client).sort().join() === '1,2,3' && gotGoaway(client), 'In-flight requests were not all answered before the close.', {
      observed: `the client received ${framesSummary(client.frames)} (ACKs for [${acked(client).join(', ')}])`,
      expected: 'GOAWAY and ACKs for 1, 2 and 3, then the close',
      idea: 'a shutdown lets the work it already accepted finish',
    });
    await stopped;
  });

  test('a request read after GOAWAY is refused and not stored', async () => {
    const held = gate();
    const server = await start({ persist: (e: Entry) => (e.id === 1 ? held.opened : Promise.resolve()) });
    const client = await h.connect(server.port);
    client.send(FrameType.DATA, entry(1));
    await eventually(() => {
      check(server.inflight === 1, 'Request 1 never got in flight.', {
        observed: `${server.inflight} request(s) in flight`,
        expected: '1',
        idea: 'the server starts storing each request as it reads it',
      });
    }, { within: 2000 });
    const stopped = server.stop();
    await eventually(() => {
      check(gotGoaway(client), 'No GOAWAY after stop().', {
        observed: `received ${framesSummary(client.frames)}`,
        expected: 'GOAWAY',
        idea: 'stop() tells every client it is going away',
      });
    }, { within: 2000 });
    // Request 1 is still being stored, so the connection is open: this one arrives late.
    client.send(FrameType.DATA, entry(2));
    await eventually(() => {
      check(refused(client).includes(2), 'A request sent after GOAWAY got no clear refusal.', {
        observed: `received ${framesSummary(client.frames)}; refused ids: [${refused(client).join(', ')}]`,
        expected: 'ERROR "SHUTTING_DOWN 2 ..."',
        idea: 'once shutdown begins, new work is refused, clearly, so the client can send it elsewhere',
      });
    }, { within: 2000 });
    held.open();
    await client.waitClosed('the connection closes once request 1 is answered');
    check(acked(client).includes(1) && !logIds(server).includes(2), 'The late request was stored, or the in-flight one was not answered.', {
      observed: `ACKs: [${acked(client).join(', ')}]; log ids: [${logIds(server).join(', ')}]`,
      expected: 'ACK 1; entry 2 not in the log',
      idea: 'in-flight work finishes; work read after GOAWAY does not start',
    });
    await stopped;
  });

  test('no acknowledged entry is lost when the server stops mid-stream', async () => {
    const server = await start({ persistMs: 20 });
    const WINDOW = 4;
    // Three clients keep WINDOW requests outstanding each, until they see GOAWAY.
    const clients = await Promise.all([0, 1, 2].map(() => h.connect(server.port)));
    const sent: number[][] = clients.map(() => []);
    clients.forEach((client, c) => {
      let next = c * 10_000 + 1;
      let seen = 0;
      const sendOne = () => {
        sent[c]!.push(next);
        client.send(FrameType.DATA, entry(next++));
      };
      for (let i = 0; i < WINDOW; i++) sendOne();
      client.socket.on('data', () => {
        // TestClient's own 'data' listener ran first: the new frames are decoded.
        const fresh = client.frames.slice(seen);
        seen = client.frames.length;
        for (const f of fresh) {
          if ((f.type === FrameType.ACK || f.type === FrameType.ERROR) && !gotGoaway(client) && next % 10_000 < 500) sendOne();
        }
      });
    });
    await eventually(() => {
      const total = clients.reduce((n, cl) => n + acked(cl).length, 0);
      check(total >= 30, 'The clients were not being served.', {
        observed: `${total} ACKs so far`,
        expected: 'at least 30 ACKs before the test stops the server',
        idea: 'the journal acknowledges entries as it stores them',
      });
    }, { within: 3000 });
    await stopWithin(server, 3000, 'three clients were streaming entries');
    for (const client of clients) await client.waitClosed('stop() closes every connection');

    const stored = new Set(logIds(server));
    const ackedIds = clients.flatMap(acked);
    const refusedIds = new Set(clients.flatMap(refused));
    const lost = ackedIds.filter((id) => !stored.has(id));
    check(lost.length === 0, `${lost.length} acknowledged entr(y/ies) missing from the log.`, {
      observed: `ACKed but not stored: [${lost.slice(0, 10).join(', ')}]`,
      expected: 'every ACKed id is in the log',
      idea: 'an ACK is sent only after the entry is stored, and a shutdown never undoes that',
    });
    const storedRefused = [...refusedIds].filter((id) => stored.has(id));
    check(storedRefused.length === 0, 'An entry was refused and stored anyway.', {
      observed: `refused but in the log: [${storedRefused.join(', ')}]`,
      expected: 'a refused entry is never stored: the client will send it elsewhere',
      idea: 'a refusal must be true, or the entry is stored twice',
    });
    const ackSet = new Set(ackedIds);
    const silent = sent.flat().filter((id) => !ackSet.has(id) && !refusedIds.has(id));
    const storedSilently = silent.filter((id) => stored.has(id));
    check(storedSilently.length === 0, 'An entry was stored but its client never heard so.', {
      observed: `stored without an ACK reaching the client: [${storedSilently.slice(0, 10).join(', ')}] (of ${sent.flat().length} sent, ${ackedIds.length} ACKed, ${refusedIds.size} refused, ${silent.length} unanswered)`,
      expected: 'every request the server started was answered before its connection closed',
      idea: 'in-flight work finishes and its reply is flushed before the connection ends',
    });
  });
});

describe('graceful shutdown: flush, deadline, timers, signals', () => {
  test('queued entries and GOAWAY reach a slow follower before it is disconnected', async () => {
    // A long grace period: the follower has all the time it needs to catch up.
    const server = await start({ graceMs: 5000 });
    const follower = await stalledFollower(server);
    await flood(server);
    const stopped = server.stop();
    // The follower catches up right away, well within the grace period.
    follower.socket.resume();
    await eventually(() => {
      check(follower.seen.closed, 'The slow follower was never disconnected.', {
        observed: `still open 5000 ms after stop(); it has received ${MB(follower.seen.bytes)}`,
        expected: 'everything queued delivered, then FIN',
        idea: 'stop() ends every connection once its queue is flushed',
      });
    }, { within: 5000 });
    const copies = follower.seen.types.filter((t) => t === FrameType.DATA).length;
    const goaway = follower.seen.types.includes(FrameType.GOAWAY);
    check(copies === BIG_ENTRIES && goaway, 'A follower lost what was queued for it when the server stopped.', {
      observed: `before the connection closed the follower received ${copies} of ${BIG_ENTRIES} entries (${MB(follower.seen.bytes)} of ${MB(BIG_ENTRIES * BIG_ENTRY_BYTES)}) and ${goaway ? 'a' : 'no'} GOAWAY`,
      expected: `all ${BIG_ENTRIES} entries, then GOAWAY, then FIN`,
      idea: 'destroy() throws away everything still queued in user space; end() sends it all, then FIN. A connection with no request in flight can still have megabytes queued',
    });
    await stopped;
  });

  test('a client that never reads is cut off at the grace deadline, and stop() resolves', async () => {
    const GRACE_MS = 150;
    const server = await start({ graceMs: GRACE_MS, persist: (e: Entry, signal: AbortSignal) => (e.id === 999 ? untilShutdown(signal) : Promise.resolve()) });
    const stuck = await stalledClient(server);
    const writer = await flood(server);
    // The stuck client also has a request in flight: its ACK will queue behind 8 MB.
    stuck.send(FrameType.DATA, entry(999));
    await eventually(() => {
      check(server.inflight === 1, 'Request 999 never got in flight.', {
        observed: `${server.inflight} request(s) in flight`,
        expected: '1',
        idea: 'the server starts storing each request as it reads it',
      });
    }, { within: 2000 });
    const started = performance.now();
    const stopped = server.stop();
    await writer.waitClosed('the client that reads is closed at once');
    await eventually(() => {
      check(server.connections === 0, `A client that never reads was still connected ${GRACE_MS + 600} ms after stop().`, {
        observed: `${server.connections} connection(s) open. ${MB(BIG_ENTRIES * BIG_ENTRY_BYTES)} was sent to a client that does not read; loopback absorbs about 3.7 MB, the rest waits in the socket, so end() cannot finish and server.close() cannot call back`,
        expected: `the connection destroyed at the ${GRACE_MS} ms grace deadline`,
        idea: 'end() waits for queued bytes to be written; a peer that never reads holds it open for ever, so a shutdown destroys stragglers at a deadline',
      });
    }, { within: GRACE_MS + 600 });
    const elapsed = performance.now() - started;
    check(elapsed >= GRACE_MS - 2, 'The stuck client was cut off before the grace period ended.', {
      observed: `disconnected ${elapsed.toFixed(0)} ms after stop()`,
      expected: `no earlier than the ${GRACE_MS} ms grace deadline`,
      idea: 'the grace period is what a slow client is promised: force only at the deadline',
    });
    await stopWithin(server, 1000, 'every connection had closed');
    // The test's own stuck client is ours to close; everything else must already be gone.
    stuck.destroy();
    await eventually(() => check(stuck.closed, 'Our own client did not close.', { observed: 'open after destroy()', expected: 'closed', idea: 'destroy() closes at once' }), { within: 500 });
    const leaks = await h.probe.settle(300);
    check(leaks.resources.size === 0, 'stop() resolved but left something open.', {
      observed: `after stop() resolved: ${describeLeaks(leaks)}`,
      expected: 'nothing: no listening server, no socket, no timer',
      idea: 'stop() resolves only once everything the server opened is released',
    });
  });

  test('stop() clears the stats timer', async () => {
    const reports: number[] = [];
    // Watch the intervals the server starts, so the test can clear a leaked one after it
    // has failed: otherwise it would report into this test file for ever.
    const intervals = vi.spyOn(globalThis, 'setInterval');
    h.defer(() => {
      for (const r of intervals.mock.results) if (r.type === 'return') clearInterval(r.value as NodeJS.Timeout);
      intervals.mockRestore();
    });
    const server = await start({ statsMs: 50, onStats: (s) => reports.push(s.stored) });
    await eventually(() => {
      check(reports.length >= 2, 'The stats timer never reported.', {
        observed: `${reports.length} report(s)`,
        expected: 'a report every 50 ms',
        idea: 'onStats is called every statsMs',
      });
    }, { within: 2000 });
    await stopWithin(server, 1500, 'no client was connected');
    const leaks = await h.probe.settle(100);
    check(!leaks.resources.has('Timeout'), 'The stats timer is still running after stop().', {
      observed: `100 ms after stop() resolved, still alive: ${describeLeaks(leaks)}; onStats was called ${reports.length} times so far`,
      expected: 'no timer: stop() clears the intervals the server started',
      idea: 'a ref\'ed interval keeps the process alive: after SIGTERM it would never exit by itself',
    });
  });

  test('SIGTERM drains: the client gets its ACK and GOAWAY, and the process exits 0', async () => {
    const child = children.drain!;
    h.defer(() => child.kill());
    const client = await h.connect(await child.port());
    client.send(FrameType.DATA, entry(1));
    // The stats line says when request 1 is being stored (storage takes 60 s here).
    await eventually(() => {
      check(child.stderr().includes('"inflight":1'), 'Request 1 never got in flight in the child process.', {
        observed: `the child's stderr: ${JSON.stringify(child.stderr().slice(-300))}`,
        expected: 'a stats line with "inflight":1',
        idea: 'the server starts storing each request as it reads it',
      });
    }, { within: 3000 });
    process.kill(child.pid, 'SIGTERM');
    const exit = await child.waitExit(4000, 'the process exits by itself once stop() has released everything');
    check(gotGoaway(client) && acked(client).includes(1), 'The process stopped without draining.', {
      observed: `exit code ${exit.code}; the client received ${framesSummary(client.frames)} before the connection ${client.closed ? 'closed' : 'stalled'}`,
      expected: 'GOAWAY and the ACK for the request in flight, then the close, then exit code 0',
      idea: 'process.exit() on SIGTERM ends everything at once: the in-flight request and queued replies are lost. Call stop() and let the process exit when it is done',
    });
    check(exit.code === 0, `The process exited with code ${exit.code ?? exit.signal} after a clean drain.`, {
      observed: `exit code ${exit.code}, signal ${exit.signal}; stderr: ${JSON.stringify(child.stderr().slice(-300))}`,
      expected: 'exit code 0: a drained server is a success',
      idea: 'orchestrators read the exit code: 0 means a clean stop',
    });
  });

  test('a second signal forces the exit while a client never reads', async () => {
    const child = children.force!;
    h.defer(() => child.kill());
    const port = await child.port();
    const stuck = await h.connect(port);
    stuck.socket.pause();
    h.defer(() => stuck.destroy());
    const writer = await h.connect(port);
    const filler = Buffer.alloc(BIG_ENTRY_BYTES, 0x61);
    for (let id = 1; id <= BIG_ENTRIES; id++) writer.send(FrameType.DATA, Buffer.concat([Buffer.from(`${id} `), filler]));
    await writer.waitForFrames(BIG_ENTRIES, `${BIG_ENTRIES} ACKs for the big entries`, 5000);
    process.kill(child.pid, 'SIGTERM');
    await eventually(() => {
      check(writer.closed || child.exited() !== undefined, 'The first SIGTERM changed nothing.', {
        observed: '2000 ms after SIGTERM the reading client is still connected and the process runs',
        expected: 'the reading client gets GOAWAY and is closed',
        idea: 'SIGTERM starts the drain',
      });
    }, { within: 2000 });
    const early = child.exited();
    check(early === undefined && gotGoaway(writer), 'The process did not drain on the first signal.', {
      observed: early
        ? `it exited (code ${early.code}) at the first SIGTERM, while ${MB(BIG_ENTRIES * BIG_ENTRY_BYTES)} was queued for a client; the reading client received ${framesSummary(writer.frames)}`
        : `the reading client closed without a GOAWAY (${framesSummary(writer.frames)})`,
      expected: 'the first signal starts a drain: GOAWAY to every client, and the process keeps running while a client still has data queued',
      idea: 'process.exit() drops whatever is queued or in flight; the first signal should call stop()',
    });
    process.kill(child.pid, 'SIGINT');
    const exit = await child.waitExit(3000, 'a second signal makes the process exit at once');
    check(exit.code !== 0 && exit.code !== null, 'The forced exit reported success.', {
      observed: `exit code ${exit.code}, signal ${exit.signal}`,
      expected: 'a non-zero code (130 = 128 + SIGINT), because the drain did not finish',
      idea: 'a second signal is the operator saying "now": exit at once, and say it was not clean',
    });
  });
});

interface MainChild {
  pid: number;
  /** Waits for "listening on 127.0.0.1:<port>" on stdout. */
  port(within?: number): Promise<number>;
  stderr(): string;
  exited(): { code: number | null; signal: NodeJS.Signals | null } | undefined;
  waitExit(within: number, what: string): Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
  /** SIGKILL by PID if still running; resolves once its pipes are closed. */
  kill(): Promise<void>;
}

/**
 * Starts 08-graceful-shutdown/main.ts, from the tree under test, as a child process with
 * the same target choice as this test run. It only records output: the waiting (and any
 * failure) happens in the test that uses it.
 */
function spawnMain(settings: Record<string, string>): MainChild {
  const env = {
    ...process.env,
    // vitest judges lesson 08 alone unless told otherwise: so does the child.
    WORKBOOK_ISOLATE: process.env.WORKBOOK_ISOLATE ?? '08',
    PORT: '0',
    ...settings,
  };
  const main = path.join(treeFor('08', targetFromEnv(env)), '08-graceful-shutdown', 'main.ts');
  const child: ChildProcess = spawn(process.execPath, ['--import', 'tsx', '--import', './runtime/targets/register.ts', main], {
    cwd: projectRoot,
    env,
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let out = '';
  let err = '';
  let exit: { code: number | null; signal: NodeJS.Signals | null } | undefined;
  const closed = new Promise<void>((resolve) => child.once('close', () => resolve()));
  child.once('exit', (code, signal) => (exit = { code, signal }));
  child.stdout!.on('data', (d: Buffer) => (out += d.toString()));
  child.stderr!.on('data', (d: Buffer) => (err += d.toString()));
  return {
    pid: child.pid!,
    port: (within = 5000) =>
      eventually(() => {
        const m = out.match(/listening on 127\.0\.0\.1:(\d+)/);
        if (m) return Number(m[1]);
        fail('The entry point did not start.', {
          observed: `stdout: ${JSON.stringify(out)}; stderr: ${JSON.stringify(err.slice(-500))}${exit ? `; exited with code ${exit.code}` : ''}`,
          expected: `"listening on 127.0.0.1:<port>" on stdout within ${within} ms`,
          idea: 'main.ts starts the journal server and prints its port',
        });
      }, { within, every: 10 }),
    stderr: () => err,
    exited: () => exit,
    async waitExit(within, what) {
      await eventually(() => {
        if (exit) return;
        fail(`The process had not exited ${within} ms after the signal.`, {
          observed: `still running; stderr: ${JSON.stringify(err.slice(-300))}`,
          expected: what,
          idea: "a process exits by itself only when nothing is left open: a server, a socket or a ref'ed timer keeps it alive",
        });
      }, { within });
      return exit!;
    },
    async kill() {
      if (child.exitCode === null && child.signalCode === null) process.kill(child.pid!, 'SIGKILL');
      await closed;
    },
  };
}

// Each entry-point test runs main.ts in a child process, and tsx takes about 0.3 s to
// start one: both start before the first test, so that overlaps the in-process tests.
const children: { drain?: MainChild; force?: MainChild } = {};
beforeAll(() => {
  children.drain = spawnMain({ PERSIST_MS: '60000', STATS_MS: '50' });
  children.force = spawnMain({ PERSIST_MS: '0', GRACE_MS: '20000' });
});
afterAll(async () => {
  await Promise.all([children.drain?.kill(), children.force?.kill()]);
});
