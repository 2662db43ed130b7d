// Lesson 08: stopping without losing work. stop() refuses new connections and requests,
// tells every client GOAWAY, lets in-flight requests finish, flushes what is queued, ends
// the connections, destroys the ones that will not finish by the deadline, and leaves
// nothing running. The process entry point drains on SIGTERM and exits on a second signal.
// The sequence itself is shutdown.ts (drain(), stopOnSignals()), which the capstone gateway
// imports too: the last tests use it on its own, with a plain server and no journal.
import net from 'node:net';
import { setTimeout as sleep } from 'node:timers/promises';
import { afterAll, beforeAll, describe, test, vi } from 'vitest';
import { startJournalServer, type Entry, type JournalOptions } from '#target/08-graceful-shutdown/journal.ts';
import { drain, stopOnSignals, type Departing } from '#target/08-graceful-shutdown/shutdown.ts';
import {
  check,
  connect,
  describeLeaks,
  entryUnderTest,
  eventually,
  FrameType,
  gate,
  ReferenceDecoder,
  settleWithin,
  spawnEntry,
  useHarness,
  watchPromise,
  encode,
  type ChildExit,
  type EntryProcess,
  type Frame,
  type TestClient,
} from '../runtime/harness/index.ts';

const h = useHarness('08');

// 16 entries of 512 KiB: 8 MiB for a follower, well above the ~3.7 MB that loopback's
// kernel buffers absorb when the reader stops reading, so the rest waits in user space.
const BIG_ENTRIES = 16;
const BIG_ENTRY_BYTES = 512 * 1024;
const MB = (bytes: number) => `${(bytes / 1e6).toFixed(1)} MB`;

/**
 * Starts a journal and stops it after the test. Not h.track(): its 2 s wait for a stop()
 * that hangs comes on top of the failure the test already reported, in every test, and a
 * mistake's run should fail fast. A correct stop() here has no client left (the harness
 * closed them first) and resolves at once; 1 s is generous. Candidate for the harness:
 * h.track(server, { within }).
 */
const CLEANUP_STOP_MS = 1000;
async function start(options: JournalOptions = {}) {
  const server = await startJournalServer({ persistMs: 5, ...options });
  h.defer(async () => {
    const outcome = await settleWithin(server.stop(), CLEANUP_STOP_MS);
    if (!outcome.done) throw new Error(`stop() had not finished ${CLEANUP_STOP_MS} ms after it was called (no client was left connected)`);
    if ('error' in outcome) throw outcome.error;
  });
  return server;
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

/** Waits until the server is storing `n` requests (the test's persist() holds them). */
async function inFlight(server: Journal, n: number): Promise<void> {
  await eventually(() => {
    check(server.inflight === n, `${n} request(s) never got in flight.`, {
      observed: `${server.inflight} request(s) in flight`,
      expected: `${n} request(s) being stored`,
      idea: 'the server starts storing each request as it reads it',
    });
  }, { within: 2000 });
}

/** Waits for the GOAWAY that stop() owes every client, busy or not. */
async function goawayReaches(client: TestClient): Promise<void> {
  await eventually(() => {
    check(gotGoaway(client), 'No GOAWAY after stop().', {
      observed: `received ${framesSummary(client.frames)}`,
      expected: 'GOAWAY',
      idea: 'stop() tells every client it is going away, busy or not',
    });
  }, { within: 2000 });
}

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
  const destroy = async () => {
    socket.destroy();
    await closed;
  };
  h.defer(destroy);
  await new Promise<void>((resolve, reject) => socket.once('connect', resolve).once('error', reject));
  socket.pause();
  return { socket, seen, destroy };
}

describe('baseline: the journal stores, acknowledges and shuts down', () => {
  test('an entry is acknowledged once it is in the log', async () => {
    const stored = gate();
    const server = await start({ persist: () => stored.opened });
    const client = await h.connect(server.port);
    client.send(FrameType.DATA, entry(7, 'hello'));
    await inFlight(server, 1);
    // Storage is still working on it: no ACK may have left yet.
    await sleep(20);
    check(acked(client).length === 0, 'Entry 7 was acknowledged before it was stored.', {
      observed: `the client received ${framesSummary(client.frames)} while persist() had not finished; the log holds [${logIds(server).join(', ')}]`,
      expected: 'no ACK until persist() resolves and the entry is in the log',
      idea: 'an ACK is a promise that the entry is stored: a crash or a shutdown between an early ACK and the write loses an entry the client has forgotten',
    });
    stored.open();
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
    await inFlight(server, 3);
    const stopped = server.stop();
    await eventually(() => {
      check(signals.every((s) => s.aborted), 'stop() did not tell the handlers to hurry.', {
        observed: `500 ms after stop(), ${signals.filter((s) => s.aborted).length} of ${signals.length} persist() signals aborted`,
        expected: 'every signal aborted when stop() begins',
        idea: 'an AbortSignal passed down to the work lets shutdown cut its waits short: abort it first, not after the drain',
      });
    }, { within: 500 });
    await client.waitClosed('the connection closes once its in-flight requests are answered', 1500);
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
    await inFlight(server, 1);
    const stopped = server.stop();
    await goawayReaches(client);
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

  test('in-flight requests that finish one at a time are all answered before the close', async () => {
    const held = new Map([1, 2].map((id) => [id, gate()] as const));
    const server = await start({ persist: (e: Entry) => held.get(e.id)?.opened ?? Promise.resolve() });
    const client = await h.connect(server.port);
    client.send(FrameType.DATA, entry(1));
    client.send(FrameType.DATA, entry(2));
    await inFlight(server, 2);
    const stopped = server.stop();
    await goawayReaches(client);
    // Storage finishes request 1, and only later request 2.
    held.get(1)!.open();
    await eventually(() => {
      check(acked(client).includes(1) || client.closed, 'Request 1 was stored but not answered.', {
        observed: `received ${framesSummary(client.frames)}`,
        expected: 'ACK 1',
        idea: 'in-flight work finishes and is answered during a shutdown',
      });
    }, { within: 1000 });
    held.get(2)!.open();
    await client.waitClosed('the connection closes once both requests are answered');
    check(acked(client).includes(1) && acked(client).includes(2), 'The connection was closed before its last in-flight request was answered.', {
      observed: `the client received ${framesSummary(client.frames)} (ACKs for [${acked(client).join(', ')}]) before the close; the log holds [${logIds(server).join(', ')}]`,
      expected: 'ACK 1, then ACK 2, then the close',
      idea: 'a busy connection hangs up after its LAST reply: end() after the first one throws away the ACKs of the requests still being stored',
    });
    await stopped;
  });

  test('an idle client is let go at once while another client still has a request in flight', async () => {
    const held = gate();
    const server = await start({ graceMs: 5000, persist: () => held.opened });
    const busy = await h.connect(server.port);
    busy.send(FrameType.DATA, entry(1));
    await inFlight(server, 1);
    const idle = await h.connect(server.port);
    const stopped = watchPromise(() => server.stop());
    await eventually(() => {
      check(idle.closed, "An idle client was kept waiting for another client's request.", {
        observed: `500 ms after stop(), a client with nothing in flight and nothing queued is still connected (it received ${framesSummary(idle.frames)}), while another client's request is being stored; stop() is ${stopped.state} (graceMs=5000)`,
        expected: 'GOAWAY, then the close at once: it has nothing more to send',
        idea: 'each connection is let go as soon as it has settled, on its own: waiting for every connection (or the whole server) to settle before ending anyone keeps every client as long as the slowest one, up to the grace deadline',
      });
    }, { within: 500 });
    check(gotGoaway(idle) && !busy.closed, 'The idle client got no GOAWAY, or the busy one was closed with its request still in flight.', {
      observed: `the idle client received ${framesSummary(idle.frames)}; the busy client is ${busy.closed ? 'closed' : 'open'} (received ${framesSummary(busy.frames)})`,
      expected: 'GOAWAY for the idle client; the busy one still open, waiting for its ACK',
      idea: 'every client hears GOAWAY; a connection is ended only once its own work is answered',
    });
    held.open();
    await busy.waitClosed('the busy client is let go once its request is answered');
    check(acked(busy).includes(1), 'The busy client was closed without its ACK.', {
      observed: `the busy client received ${framesSummary(busy.frames)}`,
      expected: 'GOAWAY, ACK 1, then the close',
      idea: 'in-flight work finishes and is answered during a shutdown',
    });
    await stopWithin(server, 1000, 'both connections had closed');
  });

  test('stop() called twice waits for the same drain', async () => {
    const held = gate();
    const server = await start({ persist: () => held.opened });
    const client = await h.connect(server.port);
    client.send(FrameType.DATA, entry(1));
    await inFlight(server, 1);
    // Two callers: a signal handler and a health check, say.
    const first = watchPromise(server.stop());
    const second = watchPromise(server.stop());
    await goawayReaches(client);
    await sleep(30);
    check(!first.settled && !second.settled, `The ${first.settled ? 'first' : 'second'} stop() ${(first.settled ? first : second).state} while a request was still in flight.`, {
      observed: `first stop() ${first.state}, second stop() ${second.state}${second.error ? ` (${second.error.message})` : ''}; request 1 still being stored, its connection open`,
      expected: 'both calls pending until the drain is done, then both resolve',
      idea: 'stop() is called from more than one place: the second call must join the drain in progress (keep its promise), not start another, fail, or resolve early',
    });
    held.open();
    await client.waitClosed('the connection closes once request 1 is answered');
    const both = await settleWithin(Promise.all([server.stop(), first.settled ? Promise.resolve() : server.stop()]), 1000);
    const goaways = client.frames.filter((f) => f.type === FrameType.GOAWAY).length;
    check(both.done && !('error' in both) && goaways === 1 && acked(client).includes(1), 'Calling stop() twice did not end in one clean drain.', {
      observed: `stop() ${!both.done ? 'still pending 1000 ms after the connection closed' : 'error' in both ? `rejected (${(both.error as Error).message})` : 'resolved'}; the client received ${framesSummary(client.frames)}`,
      expected: 'one GOAWAY, ACK 1, the close, and both stop() calls resolved',
      idea: 'stop() is idempotent: every call returns the same drain',
    });
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
    await stopWithin(server, 1500, 'three clients were streaming entries');
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
    // A long grace period: the followers have all the time they need to catch up. One is
    // idle; the other also has a request in flight, held until shutdown begins.
    const server = await start({ graceMs: 5000, persist: (e: Entry, signal: AbortSignal) => (e.id === 999 ? untilShutdown(signal) : Promise.resolve()) });
    const idle = await stalledFollower(server);
    const busy = await stalledFollower(server);
    busy.socket.write(encode(FrameType.DATA, entry(999)));
    await inFlight(server, 1);
    await flood(server);
    const stopped = server.stop();
    // The followers catch up right away, well within the grace period.
    idle.socket.resume();
    busy.socket.resume();
    for (const [name, follower] of [['idle', idle], ['busy', busy]] as const) {
      await eventually(() => {
        check(follower.seen.closed, `The ${name} slow follower was never disconnected.`, {
          observed: `still open 3000 ms after stop(); it has received ${MB(follower.seen.bytes)}`,
          expected: 'everything queued delivered, then FIN',
          idea: 'stop() ends every connection once its queue is flushed',
        });
      }, { within: 3000 });
    }
    for (const [name, follower] of [['idle', idle], ['busy', busy]] as const) {
      const copies = follower.seen.types.filter((t) => t === FrameType.DATA).length;
      const goaway = follower.seen.types.includes(FrameType.GOAWAY);
      const acks = follower.seen.types.filter((t) => t === FrameType.ACK).length;
      const wantAck = name === 'busy' ? 1 : 0;
      check(copies === BIG_ENTRIES && goaway && acks === wantAck, `A${name === 'idle' ? 'n' : ''} ${name} follower lost what was queued for it when the server stopped.`, {
        observed: `before the connection closed the ${name} follower received ${copies} of ${BIG_ENTRIES} entries (${MB(follower.seen.bytes)} of ${MB(BIG_ENTRIES * BIG_ENTRY_BYTES)}), ${goaway ? 'a' : 'no'} GOAWAY${name === 'busy' ? ` and ${acks} ACK for its request in flight` : ''}`,
        expected: `all ${BIG_ENTRIES} entries, then GOAWAY${name === 'busy' ? ', then the ACK for request 999' : ''}, then FIN`,
        idea: name === 'idle'
          ? 'destroy() throws away everything still queued in user space; end() sends it all, then FIN. A connection with no request in flight can still have megabytes queued'
          : 'after its last reply a busy connection must end(), not destroy(): its reply is queued behind megabytes of entries, and destroy() throws them all away',
      });
    }
    await stopped;
  });

  test('a client that never reads is cut off at the grace deadline, and stop() resolves', async () => {
    const GRACE_MS = 150;
    const server = await start({ graceMs: GRACE_MS, persist: (e: Entry, signal: AbortSignal) => (e.id === 999 ? untilShutdown(signal) : Promise.resolve()) });
    const stuck = await stalledClient(server);
    // Another that never reads either, but sends its heartbeat (lesson 04) every 40 ms: it
    // is never idle, and still has to go at the deadline.
    const chatty = await stalledClient(server);
    const heartbeat = setInterval(() => chatty.send(FrameType.PING), 40);
    h.defer(() => clearInterval(heartbeat));
    const writer = await flood(server);
    // The stuck client also has a request in flight: its ACK will queue behind 8 MB.
    stuck.send(FrameType.DATA, entry(999));
    await inFlight(server, 1);
    const started = performance.now();
    const stopped = watchPromise(() => server.stop());
    await writer.waitClosed('the client that reads is closed at once');
    await eventually(() => {
      const left = server.connections;
      const who = left === 1 ? 'A client that never reads but sends heartbeats' : 'A client that never reads';
      check(left === 0, `${who} was still connected ${GRACE_MS + 600} ms after stop().`, {
        observed: `${left} of 2 stragglers still connected (neither reads; one sends a PING every 40 ms). ${MB(BIG_ENTRIES * BIG_ENTRY_BYTES)} was sent to each; loopback absorbs about 3.7 MB, the rest waits in the socket, so end() cannot finish and server.close() cannot call back`,
        expected: `both connections destroyed at the ${GRACE_MS} ms grace deadline`,
        // Only one left: the one with a heartbeat (nothing else tells the two apart).
        idea: left === 1
          ? 'a grace deadline is a fixed time after stop(), not an idle timeout (socket.setTimeout): a client that sends a heartbeat is never idle, and holds the shutdown for ever'
          : 'end() waits for queued bytes to be written; a peer that never reads holds it open for ever, so a shutdown destroys stragglers at a deadline',
      });
    }, { within: GRACE_MS + 600 });
    const elapsed = performance.now() - started;
    check(elapsed >= GRACE_MS - 2, 'The stuck client was cut off before the grace period ended.', {
      observed: `disconnected ${elapsed.toFixed(0)} ms after stop()`,
      expected: `no earlier than the ${GRACE_MS} ms grace deadline`,
      idea: 'the grace period is what a slow client is promised: force only at the deadline',
    });
    await stopWithin(server, 1000, 'every connection had closed');
    check(stopped.state === 'resolved' && stopped.afterMs! >= GRACE_MS - 2, 'stop() resolved while a connection was still open.', {
      observed: `stop() ${stopped.state} ${stopped.afterMs?.toFixed(0)} ms after it was called; the client that never reads was open until the ${GRACE_MS} ms deadline`,
      expected: `stop() resolves once server.close() has called back: no earlier than ${GRACE_MS} ms here`,
      idea: 'whoever awaits stop() (main.ts, a test, an orchestrator hook) takes it to mean "drained": resolve only when the last connection has closed',
    });
    // The test's own clients are ours to close; everything else must already be gone.
    clearInterval(heartbeat);
    chatty.destroy();
    stuck.destroy();
    await eventually(() => check(stuck.closed && chatty.closed, 'Our own clients did not close.', { observed: 'open after destroy()', expected: 'closed', idea: 'destroy() closes at once' }), { within: 500 });
    const leaks = await h.probe.settle(300);
    check(leaks.resources.size === 0, 'stop() resolved but left something open.', {
      observed: `after stop() resolved: ${describeLeaks(leaks)}`,
      expected: 'nothing: no listening server, no socket, no timer',
      idea: 'stop() resolves only once everything the server opened is released',
    });
  });

  test('a follower that never reads is cut off at the deadline, with no request in flight anywhere', async () => {
    const GRACE_MS = 150;
    const server = await start({ graceMs: GRACE_MS });
    // Nothing in flight when stop() begins: only megabytes queued for a peer that stopped
    // reading. Its end() can never finish, so only the deadline can close it.
    // Paused, it never notices the cut itself: the server's count is what tells.
    await stalledFollower(server);
    const writer = await flood(server);
    await eventually(() => check(server.inflight === 0, 'The big entries were still being stored.', {
      observed: `${server.inflight} in flight`, expected: '0 after every ACK', idea: 'an ACK is sent once the entry is stored',
    }), { within: 1000 });
    const started = performance.now();
    const stopped = watchPromise(() => server.stop());
    await writer.waitClosed('the client that reads is closed at once');
    await eventually(() => {
      check(server.connections === 0, `A follower that never reads was still connected ${GRACE_MS + 600} ms after stop().`, {
        observed: `no request was in flight at stop(); ${MB(BIG_ENTRIES * BIG_ENTRY_BYTES)} was queued for a follower that does not read; ${server.connections} connection(s) still open; stop() is ${stopped.state}`,
        expected: `the follower destroyed at the ${GRACE_MS} ms grace deadline, and stop() resolved`,
        idea: "the deadline is armed on every stop(), not only when requests are in flight: an idle connection is end()ed, and end() waits for a queue that a peer that never reads never drains",
      });
    }, { within: GRACE_MS + 600 });
    const elapsed = performance.now() - started;
    check(elapsed >= GRACE_MS - 2, 'The follower was cut off before the grace period ended.', {
      observed: `disconnected ${elapsed.toFixed(0)} ms after stop()`,
      expected: `no earlier than the ${GRACE_MS} ms grace deadline`,
      idea: 'the grace period is what a slow client is promised: force only at the deadline',
    });
    await stopWithin(server, 1000, 'every connection had closed');
  });

  test('a request whose storage fails during shutdown still lets its connection close at once', async () => {
    // The disk gives up when told to hurry: the write fails, there is no ACK to send.
    const server = await start({
      graceMs: 5000,
      persist: (_e: Entry, signal: AbortSignal) =>
        new Promise<void>((_resolve, reject) => signal.addEventListener('abort', () => reject(new Error('disk gone')), { once: true })),
    });
    const client = await h.connect(server.port);
    client.send(FrameType.DATA, entry(1));
    await inFlight(server, 1);
    const stopped = watchPromise(() => server.stop());
    await eventually(() => {
      check(client.closed, 'A connection whose last request failed stayed open until the grace deadline.', {
        observed: `500 ms after stop(), with its only request failed in storage: the client received ${framesSummary(client.frames)} and is still connected; server.inflight=${server.inflight}; stop() is ${stopped.state} (graceMs=5000)`,
        expected: 'GOAWAY, no ACK, then the close, at once: nothing is left in flight on it',
        idea: "a connection hangs up once its last request is done, on every path: count the request out in finally, not only after an ACK, or a failed write holds the shutdown for the whole grace period",
      });
    }, { within: 500 });
    check(gotGoaway(client) && !acked(client).includes(1) && !logIds(server).includes(1), 'A failed request was answered as stored.', {
      observed: `the client received ${framesSummary(client.frames)}; the log holds [${logIds(server).join(', ')}]`,
      expected: 'GOAWAY, no ACK for request 1',
      idea: 'an ACK means stored: a failed write gets none, and its client sends it again elsewhere',
    });
    await stopWithin(server, 1000, 'the only connection had closed');
  });

  test('a request whose storage never finishes is cut off at the grace deadline', async () => {
    const GRACE_MS = 100;
    // A disk that hangs: this write never completes, shutdown or not.
    const server = await start({ graceMs: GRACE_MS, persist: () => new Promise<void>(() => {}) });
    const client = await h.connect(server.port);
    client.send(FrameType.DATA, entry(1));
    await inFlight(server, 1);
    const started = performance.now();
    const stopped = watchPromise(() => server.stop());
    await eventually(() => {
      check(client.closed, `A connection whose request never finished was still open ${GRACE_MS + 600} ms after stop().`, {
        observed: `the client received ${framesSummary(client.frames)} and is still connected; stop() is ${stopped.state}`,
        expected: `the connection destroyed at the ${GRACE_MS} ms grace deadline, and stop() resolved`,
        idea: 'the grace deadline covers in-flight work too: waiting for it (or sparing busy connections from the deadline) lets one stuck request hold the shutdown for ever',
      });
    }, { within: GRACE_MS + 600 });
    const elapsed = performance.now() - started;
    check(elapsed >= GRACE_MS - 2, 'A request in flight was cut off before the grace period ended.', {
      observed: `disconnected ${elapsed.toFixed(0)} ms after stop(), with its request still being stored`,
      expected: `no earlier than the ${GRACE_MS} ms grace deadline`,
      idea: 'in-flight work is given the grace period to finish: force only at the deadline',
    });
    await stopWithin(server, 1000, 'the only connection had been cut off');
    check(gotGoaway(client) && !acked(client).includes(1) && !logIds(server).includes(1), 'The unfinished request was answered as stored.', {
      observed: `the client received ${framesSummary(client.frames)}; the log holds [${logIds(server).join(', ')}]`,
      expected: 'GOAWAY, no ACK for request 1 (it was never stored), then the cut',
      idea: 'an ACK means stored: a request cut off at the deadline gets none, and its client sends it again elsewhere',
    });
  });

  test('stop() clears the stats timer', async () => {
    const reports: number[] = [];
    // An unusual grace period, so the deadline timer can be told from the harness's own.
    const GRACE_MS = 4321;
    // Watch the timers the server starts: to name a leaked one, and to clear it after the
    // test has failed (otherwise it would report into this test file for ever).
    const intervals = vi.spyOn(globalThis, 'setInterval');
    const timeouts = vi.spyOn(globalThis, 'setTimeout');
    const started = (spy: { mock: { calls: unknown[][]; results: Array<{ type: string; value?: unknown }> } }, ms: number) =>
      spy.mock.results.filter((r, i) => r.type === 'return' && spy.mock.calls[i]![1] === ms).map((r) => r.value as NodeJS.Timeout);
    h.defer(() => {
      for (const t of started(intervals, 50)) clearInterval(t);
      for (const t of started(timeouts, GRACE_MS)) clearTimeout(t);
      intervals.mockRestore();
      timeouts.mockRestore();
    });
    const server = await start({ statsMs: 50, graceMs: GRACE_MS, onStats: (s) => reports.push(s.stored) });
    await eventually(() => {
      check(reports.length >= 2, 'The stats timer never reported.', {
        observed: `${reports.length} report(s)`,
        expected: 'a report every 50 ms',
        idea: 'onStats is called every statsMs',
      });
    }, { within: 2000 });
    // A client that leaves before the deadline: stop() finishes early and must disarm it.
    const client = await h.connect(server.port);
    await stopWithin(server, 1500, 'one idle client was connected');
    await client.waitClosed('stop() ends the idle connection');
    const leaks = await h.probe.settle(100);
    const scheduled = (t: NodeJS.Timeout) => !(t as unknown as { _destroyed?: boolean })._destroyed;
    const stats = started(intervals, 50).filter(scheduled);
    const unrefd = stats.filter((t) => !t.hasRef()).length;
    check(stats.length === 0, 'The stats timer is still running after stop().', {
      observed: `100 ms after stop() resolved, ${stats.length} stats interval(s) still scheduled${unrefd ? ` (${unrefd} unref'd)` : ''}; onStats was called ${reports.length} times so far`,
      expected: 'no timer: stop() clears the intervals the server started',
      idea: unrefd
        ? "unref() only stops an interval from keeping the process alive: it still fires every statsMs, reporting a dead server and holding it in memory. clearInterval() ends it"
        : "a ref'ed interval keeps the process alive: after SIGTERM it would never exit by itself. clearInterval() it in stop()",
    });
    const deadlines = started(timeouts, GRACE_MS).filter(scheduled);
    check(deadlines.length === 0, 'The grace deadline is still armed after stop() resolved.', {
      observed: `every connection closed at once, stop() resolved, and ${deadlines.length} setTimeout(…, ${GRACE_MS}) is still scheduled${deadlines.some((t) => !t.hasRef()) ? " (unref'd)" : ''}`,
      expected: 'the deadline cleared (clearTimeout) as soon as the last connection closed',
      idea: 'a deadline that outlives the drain keeps the process alive for the whole grace period (or, unref\'d, fires later on a server that is gone): clear it once close() has called back',
    });
    check(leaks.resources.size === 0, 'stop() resolved but left something running.', {
      observed: `100 ms after stop() resolved, still alive: ${describeLeaks(leaks)}`,
      expected: 'nothing: no listening server, no socket, no timer',
      idea: 'a stopped server leaves nothing running: clear every timer and interval it started',
    });
  });

  test('SIGTERM drains: the client gets its ACK and GOAWAY, and the process exits 0', async () => {
    const child = children.drain!;
    h.defer(() => child.kill());
    const client = await h.connect(await listeningPort(child));
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
    const exit = await child.waitExit(2500, 'the process exits by itself once stop() has released everything');
    check(gotGoaway(client) && acked(client).includes(1), 'The process stopped without draining.', {
      observed: `${exitText(exit)}; the client received ${framesSummary(client.frames)} before the connection ${client.closed ? 'closed' : 'stalled'}`,
      expected: 'GOAWAY and the ACK for the request in flight, then the close, then exit code 0',
      idea: exit.signal
        ? 'a signal with no listener kills the process on the spot: main.ts must handle SIGTERM, call stop(), and let the process exit when it is done'
        : 'process.exit() on SIGTERM ends everything at once: the in-flight request and queued replies are lost. Call stop() and let the process exit when it is done',
    });
    check(exit.code === 0, `The process ended with ${exitText(exit)} after a clean drain.`, {
      observed: `${exitText(exit)}; stderr: ${JSON.stringify(child.stderr().slice(-300))}`,
      expected: 'exit code 0: a drained server is a success',
      idea: 'orchestrators read the exit code: 0 means a clean stop',
    });
  });

  test('a second signal forces the exit while a client never reads', async () => {
    const child = children.force!;
    h.defer(() => child.kill());
    const port = await listeningPort(child);
    const stuck = await h.connect(port);
    stuck.socket.pause();
    h.defer(() => stuck.destroy());
    const writer = await h.connect(port);
    const filler = Buffer.alloc(BIG_ENTRY_BYTES, 0x61);
    for (let id = 1; id <= BIG_ENTRIES; id++) writer.send(FrameType.DATA, Buffer.concat([Buffer.from(`${id} `), filler]));
    await writer.waitForFrames(BIG_ENTRIES, `${BIG_ENTRIES} ACKs for the big entries`, 5000);
    // Ctrl-C first, then the orchestrator's SIGTERM: both signals must be handled, and the
    // second one, whichever it is, must not wait for the drain.
    process.kill(child.pid, 'SIGINT');
    await eventually(() => {
      check(writer.closed || child.exited() !== undefined, 'The first signal changed nothing.', {
        observed: '2000 ms after SIGINT the reading client is still connected and the process runs',
        expected: 'the reading client gets GOAWAY and is closed',
        idea: 'SIGINT (Ctrl-C) starts the drain, as SIGTERM does',
      });
    }, { within: 2000 });
    const early = child.exited();
    check(early === undefined && gotGoaway(writer), 'The process did not drain on the first signal.', {
      observed: early
        ? `it exited (${exitText(early)}) at the first SIGINT, while ${MB(BIG_ENTRIES * BIG_ENTRY_BYTES)} was queued for a client; the reading client received ${framesSummary(writer.frames)}`
        : `the reading client closed without a GOAWAY (${framesSummary(writer.frames)})`,
      expected: 'the first signal, SIGINT or SIGTERM, starts a drain: GOAWAY to every client, and the process keeps running while a client still has data queued',
      idea: early?.signal
        ? 'a signal with no listener kills the process on the spot: main.ts must handle SIGINT as well as SIGTERM, and call stop()'
        : 'process.exit() drops whatever is queued or in flight; the first signal should call stop()',
    });
    process.kill(child.pid, 'SIGTERM');
    const exit = await child.waitExit(1500, 'a second signal (here SIGTERM after SIGINT) makes the process exit at once');
    // Either convention says "not clean": exit(128 + n), or re-raising the signal so the
    // process dies of it (code null, signal set), which the shell also reports as 128 + n.
    const forced = (exit.code !== null && exit.code !== 0) || exit.signal !== null;
    check(forced, 'The forced exit reported success.', {
      observed: exitText(exit),
      expected: 'a non-zero code (143 = 128 + SIGTERM), or death by the re-raised signal, because the drain did not finish',
      idea: 'a second signal is the operator saying "now": exit at once, and say it was not clean',
    });
  });
});

describe('shutdown.ts on its own: drain() and stopOnSignals() with a plain server', () => {
  test('drain() ends each connection once it has settled, and destroys and counts the rest at the deadline', async () => {
    const GRACE_MS = 250;
    const bare = await bareServer();
    const [early, later, stuck] = [await h.connect(bare.port), await h.connect(bare.port), await h.connect(bare.port)];
    await registered(bare, 3);
    // early has nothing to send; later settles when the test says so; stuck never does.
    bare.of(early).settle();
    const forcedCalls: number[] = [];
    const started = performance.now();
    const drained = watchPromise(() => drain(bare.server, () => bare.registry, { graceMs: GRACE_MS, onForced: (n) => forcedCalls.push(n) }));
    await early.waitClosed('drain() ends a connection that has settled at once');
    await sleep(20);
    check(!later.ended && !later.closed, 'drain() hung up on a connection that had not settled.', {
      observed: `a connection whose settled() had not resolved was ${later.closed ? 'closed' : 'sent FIN'} right after drain() began; it received ${framesSummary(later.frames)}`,
      expected: 'GOAWAY, and the connection left open until its settled() resolves',
      idea: 'settled() says when a connection has nothing more to send (its work in flight answered): end it then, not before, or the replies still coming are lost',
    });
    bare.of(later).settle();
    await later.waitClosed('drain() ends a connection once its settled() resolves');
    await eventually(() => {
      check(stuck.closed, `A connection that never settled was still open ${GRACE_MS + 600} ms after drain() began.`, {
        observed: `its settled() never resolved; it received ${framesSummary(stuck.frames)}; drain() is ${drained.state}`,
        expected: `destroyed at the ${GRACE_MS} ms deadline, and drain() resolved`,
        idea: 'server.close() waits for the last connection: drain() arms a deadline (setTimeout(graceMs)) and destroys whatever is still open when it passes',
      });
    }, { within: GRACE_MS + 600 });
    const elapsed = performance.now() - started;
    check(elapsed >= GRACE_MS - 2, 'A connection was cut off before the grace period ended.', {
      observed: `the connection that never settled was closed ${elapsed.toFixed(0)} ms after drain() began`,
      expected: `no earlier than the ${GRACE_MS} ms deadline`,
      idea: 'the grace period is what a connection is promised: force only at the deadline',
    });
    await eventually(() => check(drained.settled, 'drain() did not resolve once everything was closed.', {
      observed: `every connection closed, and drain() is ${drained.state} 500 ms later`,
      expected: 'drain() resolves once server.close() has called back',
      idea: 'close() calls back when the last connection has closed: drain() resolves then',
    }), { within: 500 });
    check(drained.value?.forced === 1 && forcedCalls.join() === '1' && [early, later, stuck].every(gotGoaway), 'drain() did not report the one connection it forced.', {
      observed: `drain() ${drained.error ? `rejected (${drained.error.message})` : `resolved with ${JSON.stringify(drained.value)}`}; onForced was called with [${forcedCalls.join(', ')}]; GOAWAY reached ${[early, later, stuck].filter(gotGoaway).length} of 3 clients`,
      expected: '{ forced: 1 } and onForced(1), once: two connections left in time, one was destroyed at the deadline; GOAWAY to all three',
      idea: 'forced counts the connections still open at the deadline, and only those: it feeds logs and alerts',
    });
  });

  test('drain() also cuts off a connection that registered after it began', async () => {
    const GRACE_MS = 250;
    // This server registers a connection only once its first frame arrives, as one that
    // authenticates first would: a client can be accepted before drain() and join after.
    const bare = await bareServer({ registerOnFirstFrame: true });
    // One registers before drain() and one after; neither ever settles.
    const onTime = await h.connect(bare.port);
    onTime.send(FrameType.HELLO, '{}');
    await registered(bare, 1);
    const late = await h.connect(bare.port);
    const forcedCalls: number[] = [];
    const drained = watchPromise(() => drain(bare.server, () => bare.registry, { graceMs: GRACE_MS, onForced: (n) => forcedCalls.push(n) }));
    late.send(FrameType.HELLO, '{}');
    await registered(bare, 2);
    await eventually(() => {
      check(late.closed && drained.settled, `A connection that registered after drain() began was still open ${GRACE_MS + 600} ms later.`, {
        observed: `the late client is ${late.closed ? 'closed' : 'still connected'}, the one registered before drain() is ${onTime.closed ? 'closed' : 'still connected'}, and drain() is ${drained.state}`,
        expected: `both destroyed at the ${GRACE_MS} ms deadline, and drain() resolved`,
        idea: onTime.closed
          ? 'connections is a function for a reason: at the deadline, read it again and destroy what is open now. A list (or a timer per connection) taken at the start misses a connection that joined later, and server.close() waits for it for ever'
          : 'server.close() waits for the last connection: drain() arms a deadline (setTimeout(graceMs)) and destroys whatever is still open when it passes',
      });
    }, { within: GRACE_MS + 600 });
    check(drained.value?.forced === 2 && forcedCalls.join() === '2', 'drain() did not count the connections it cut off.', {
      observed: `drain() ${drained.error ? `rejected (${drained.error.message})` : `resolved with ${JSON.stringify(drained.value)}`}; onForced was called with [${forcedCalls.join(', ')}]`,
      expected: '{ forced: 2 } and onForced(2): both were open at the deadline',
      idea: 'forced counts the connections still open at the deadline, late ones included',
    });
  });

  test('stopOnSignals() listens for SIGTERM and SIGINT, and the function it returns removes both', () => {
    const signals = ['SIGTERM', 'SIGINT'] as const;
    const before = new Map(signals.map((s) => [s, process.listeners(s)]));
    const remove = stopOnSignals(() => Promise.resolve(), () => {});
    const added = new Map(signals.map((s) => [s, process.listeners(s).filter((l) => !before.get(s)!.includes(l))]));
    // Whatever the remover does, no handler of ours outlives the test.
    h.defer(() => {
      for (const [s, listeners] of added) for (const l of listeners) process.off(s, l as () => void);
    });
    check(signals.every((s) => added.get(s)!.length === 1), 'stopOnSignals() does not listen for both signals.', {
      observed: signals.map((s) => `${added.get(s)!.length} new '${s}' listener(s)`).join(', '),
      expected: "one listener for 'SIGTERM' and one for 'SIGINT'",
      idea: 'orchestrators send SIGTERM, Ctrl-C sends SIGINT: a signal with no listener kills the process on the spot',
    });
    remove();
    const left = signals.map((s) => [s, process.listeners(s).filter((l) => !before.get(s)!.includes(l)).length] as const);
    check(left.every(([, n]) => n === 0), 'The function stopOnSignals() returned left its handlers in place.', {
      observed: left.map(([s, n]) => `${n} of its '${s}' listener(s) still attached`).join(', '),
      expected: 'none: remove() takes away every handler stopOnSignals() added',
      idea: 'process.off() needs the very function that process.on() was given. A stale handler stays armed: after a server restarted in the same process, it takes the next first signal for a second one and exits at once',
    });
  });
});

/** A connection of the plain server below: its settled() resolves when the test says so. */
interface BareConnection extends Departing {
  settle(): void;
}

/**
 * A plain net.Server for drain() alone. Each connection is a Departing whose goodbye()
 * writes a GOAWAY and whose settled() resolves when the test calls settle(). The registry
 * drops a connection when it closes. `registerOnFirstFrame`: a connection joins the
 * registry only when its first bytes arrive.
 */
async function bareServer({ registerOnFirstFrame = false } = {}) {
  const registry = new Set<BareConnection>();
  const sockets = new Set<net.Socket>();
  const server = net.createServer({ noDelay: true }, (socket) => {
    sockets.add(socket);
    socket.on('error', () => {});
    const settledGate = gate();
    const conn: BareConnection = {
      socket,
      goodbye: () => void socket.write(encode(FrameType.GOAWAY, 'going away')),
      settled: () => settledGate.opened,
      settle: () => settledGate.open(),
    };
    if (registerOnFirstFrame) socket.once('data', () => registry.add(conn));
    else registry.add(conn);
    socket.once('close', () => {
      registry.delete(conn);
      sockets.delete(socket);
    });
  });
  const closed = new Promise<void>((resolve) => server.once('close', () => resolve()));
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  h.defer(async () => {
    for (const socket of sockets) socket.destroy();
    if (server.listening) server.close();
    await closed;
  });
  return {
    server,
    port: (server.address() as net.AddressInfo).port,
    registry,
    /** The server's side of a test client's connection. */
    of(client: TestClient): BareConnection {
      const conn = [...registry].find((c) => c.socket.remotePort === client.port);
      if (!conn) throw new Error(`no registered connection for the client on port ${client.port}`);
      return conn;
    },
  };
}

async function registered(bare: Awaited<ReturnType<typeof bareServer>>, n: number): Promise<void> {
  await eventually(() => check(bare.registry.size === n, `The plain server registered ${bare.registry.size} of ${n} connection(s).`, {
    observed: `${bare.registry.size} registered`, expected: `${n}`, idea: 'the test server registers each connection it accepts',
  }), { within: 1000 });
}

const exitText = (exit: ChildExit) => (exit.code !== null ? `exit code ${exit.code}` : `killed by ${exit.signal}`);

/** Waits for main.ts's "listening on 127.0.0.1:<port>" line; returns the port. */
const listeningPort = (child: EntryProcess) => child.port(/listening on 127\.0\.0\.1:(\d+)/, '"listening on 127.0.0.1:<port>"');

/**
 * Starts main.ts, from the tree this run resolved lesson 08 to (lessons/, solutions/,
 * WORKBOOK_TARGET or a catalog's patched copy), as a child process. It reads every other
 * lesson as vitest does (alone unless told otherwise). It only records output: the waiting
 * (and any failure) happens in the test that uses it.
 */
const spawnMain = (main: string, settings: Record<string, string>) =>
  spawnEntry(main, { WORKBOOK_ISOLATE: process.env.WORKBOOK_ISOLATE ?? '08', PORT: '0', ...settings });

// Each entry-point test runs main.ts in a child process, and tsx takes about 0.3 s to
// start one: both start before the first test, so that overlaps the in-process tests.
const children: { drain?: EntryProcess; force?: EntryProcess } = {};
beforeAll(async () => {
  const main = await entryUnderTest('#target/08-graceful-shutdown/main.ts');
  children.drain = spawnMain(main, { PERSIST_MS: '60000', STATS_MS: '50' });
  children.force = spawnMain(main, { PERSIST_MS: '0', GRACE_MS: '20000' });
});
afterAll(async () => {
  await Promise.all([children.drain?.kill(), children.force?.kill()]);
});
