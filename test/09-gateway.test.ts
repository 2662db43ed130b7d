// Lesson 09, the capstone: the push gateway, judged as a whole. The tests speak the
// protocol of lessons/PROTOCOL.md the way an independent client would (they never use
// the gateway's own encoders), feed it bad input and faults, stop it while it works, and
// check that every acknowledged message reaches every subscriber that keeps reading.
import { describe, test, vi } from 'vitest';
import http from 'node:http';
import { startGateway, type Gateway, type GatewayOptions } from '#target/09-gateway/gateway.ts';
import { startJournalServer } from '#target/08-graceful-shutdown/journal.ts';
import {
  check, connect, describeFrame, entryUnderTest, eventually, fail, FrameType, spawnEntry, startFaultProxy, useHarness, waitUntil, withTimeline, type EntryProcess, type Frame, type TestClient,
} from '../runtime/harness/index.ts';

// Counts the gateway's calls to crypto.timingSafeEqual (the token check), whichever way
// the module imports it. Everything else in node:crypto is the real thing.
const timing = vi.hoisted(() => ({
  calls: 0,
  async counted(real: typeof import('node:crypto')) {
    const timingSafeEqual: typeof real.timingSafeEqual = (a, b) => {
      timing.calls++;
      return real.timingSafeEqual(a, b);
    };
    return { ...real, timingSafeEqual, default: { ...real, timingSafeEqual } };
  },
}));
vi.mock('node:crypto', async (original) => timing.counted(await original()));
vi.mock('crypto', async (original) => timing.counted(await original()));

const h = useHarness('09');

const TOKEN = 'correct-horse-battery-staple';

/** Settings for a gateway under test: deadlines long enough not to fire unless a test wants them. */
async function start(options: Partial<GatewayOptions> = {}): Promise<Gateway> {
  return h.track(
    await startGateway({
      token: TOKEN,
      maxConnections: 64,
      connectBurst: 1000,
      connectPerSecond: 1000,
      helloMs: 3000,
      frameMs: 3000,
      writeMs: 5000,
      heartbeatMs: 5000,
      graceMs: 1000,
      ...options,
    }),
  );
}

// ---- the protocol, written from PROTOCOL.md ----

function topicBody(topic: string, message: Buffer | string): Buffer {
  const t = Buffer.from(topic);
  const m = typeof message === 'string' ? Buffer.from(message) : message;
  const body = Buffer.alloc(2 + t.length + m.length);
  body.writeUInt16BE(t.length, 0);
  t.copy(body, 2);
  m.copy(body, 2 + t.length);
  return body;
}

function readTopicBody(body: Buffer): { topic: string; message: string } {
  const length = body.readUInt16BE(0);
  return { topic: body.toString('utf8', 2, 2 + length), message: body.toString('utf8', 2 + length) };
}

const text = (f: Frame) => f.body.toString('utf8');
const show = (frames: Frame[]) => (frames.length ? frames.slice(-6).map(describeFrame).join(', ') : 'no frames');
const ofType = (c: TestClient, type: number) => c.frames.filter((f) => f.type === type);
const messages = (c: TestClient) => ofType(c, FrameType.MESSAGE).map((f) => readTopicBody(f.body));

/** Waits for the first frame after `from` that matches; fails with what came instead. */
async function waitForFrame(c: TestClient, what: string, match: (f: Frame) => boolean, within = 1500, from = 0): Promise<Frame> {
  return eventually(() => {
    const hit = c.frames.slice(from).find(match);
    if (hit) return hit;
    fail(`Waited ${within} ms for ${what}.`, {
      observed: `${show(c.frames.slice(from))}${c.closed ? '; then the connection closed' : ''}`,
      expected: what,
      idea: 'every request is answered, in the order it was sent (lessons/PROTOCOL.md)',
    });
  }, { within });
}

const isError = (code: string) => (f: Frame) => f.type === FrameType.ERROR && text(f).startsWith(`${code} `);
const isAck = (prefix: string) => (f: Frame) => f.type === FrameType.ACK && text(f).startsWith(prefix);

/** A connected client that has said HELLO and been welcomed. */
async function hello(port: number, name = 'test', options: Parameters<typeof connect>[1] = {}): Promise<TestClient> {
  const c = await h.connect(port, options);
  c.send(FrameType.HELLO, JSON.stringify({ token: TOKEN, client: name }));
  await waitForFrame(c, 'the HELLO that answers ours', (f) => f.type === FrameType.HELLO);
  return c;
}

async function subscriber(port: number, topic: string, options: Parameters<typeof connect>[1] = {}): Promise<TestClient> {
  const c = await hello(port, `sub-${topic}`, options);
  const from = c.frames.length;
  c.send(FrameType.SUBSCRIBE, topic);
  await waitForFrame(c, `ACK "SUBSCRIBE ${topic}"`, isAck(`SUBSCRIBE ${topic}`), 1500, from);
  return c;
}

/** Publishes and waits for the ACK; returns [id, subscribers reached]. */
async function publish(c: TestClient, topic: string, message: Buffer | string): Promise<[number, number]> {
  const from = c.frames.length;
  c.send(FrameType.PUBLISH, topicBody(topic, message));
  const ack = await waitForFrame(c, `the ACK of a PUBLISH to "${topic}"`, (f) => f.type === FrameType.ACK || f.type === FrameType.ERROR || f.type === FrameType.BUSY, 1500, from);
  check(ack.type === FrameType.ACK, `A PUBLISH to "${topic}" was refused.`, {
    observed: describeFrame(ack),
    expected: 'ACK "PUBLISH <id> <subscribers>"',
    idea: 'an authenticated client may publish to any valid topic',
  });
  const [, id, reached] = text(ack).split(' ');
  return [Number(id), Number(reached)];
}

/** GET on the observability port, on a connection of its own that closes after. */
function scrape(port: number, path: string): Promise<{ status: number; body: string }> {
  return new Promise((resolve, reject) => {
    const req = http.get({ host: '127.0.0.1', port, path, agent: false, headers: { connection: 'close' } }, (res) => {
      let body = '';
      res.setEncoding('utf8');
      res.on('data', (d: string) => (body += d));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, body }));
    });
    req.on('error', reject);
  });
}

function metric(text: string, name: string): number | undefined {
  const line = text.split('\n').find((l) => l.startsWith(`${name} `) || l.startsWith(`${name}{`));
  return line === undefined ? undefined : Number(line.slice(line.lastIndexOf(' ') + 1));
}

/** A bystander pair: a subscriber and a publisher on a topic of their own, still served after someone else's bad input. */
async function bystanders(port: number) {
  const sub = await subscriber(port, 'bystander');
  const pub = await hello(port, 'bystander-pub');
  await publish(pub, 'bystander', 'before');
  return {
    async stillServed(after: string) {
      await publish(pub, 'bystander', 'after');
      await eventually(() => {
        const got = messages(sub).map((m) => m.message);
        check(got.join(',') === 'before,after', `Another client lost its messages after ${after}.`, {
          observed: `the bystander subscriber received [${got.join(', ')}]${sub.closed ? ' and its connection closed' : ''}`,
          expected: '[before, after]: one client\'s bad input costs only that client',
          idea: 'bad input gets an ERROR or a close for its sender, never a crash and never another client\'s data',
        });
      }, { within: 1500 });
    },
  };
}

describe('the protocol end to end', () => {
  test('a client says HELLO, subscribes, and receives what another client publishes', async () => {
    const gw = await start();
    const sub = await subscriber(gw.port, 'orders.created');
    const pub = await hello(gw.port, 'publisher');
    const [id, reached] = await publish(pub, 'orders.created', 'order 17: 3 apples');
    check(Number.isInteger(id) && id > 0 && reached === 1, 'The ACK of a PUBLISH does not say which message it was and how many got it.', {
      observed: `ACK "${text(ofType(pub, FrameType.ACK).at(-1)!)}"`,
      expected: 'ACK "PUBLISH <id> 1": a positive message id, and 1 subscriber reached',
      idea: 'an ACK carries the message id, once the message is queued to every current subscriber',
    });
    const got = await eventually(() => {
      const m = messages(sub);
      if (m.length) return m[0]!;
      fail('A subscriber did not receive a message published to its topic.', {
        observed: show(sub.frames),
        expected: 'MESSAGE with topic "orders.created" and body "order 17: 3 apples"',
        idea: 'PUBLISH fans out to every subscriber of the topic as MESSAGE frames',
      });
    }, { within: 1500 });
    check(got.topic === 'orders.created' && got.message === 'order 17: 3 apples', 'A MESSAGE did not carry what was published.', {
      observed: `topic "${got.topic}", message "${got.message}"`,
      expected: 'topic "orders.created", message "order 17: 3 apples"',
      idea: 'a MESSAGE body is laid out like the PUBLISH body: u16 topic length, topic, message',
    });
  });

  test('UNSUBSCRIBE stops the messages of that topic, and only of that topic', async () => {
    const gw = await start();
    const sub = await subscriber(gw.port, 'a');
    sub.send(FrameType.SUBSCRIBE, 'b');
    await waitForFrame(sub, 'ACK "SUBSCRIBE b"', isAck('SUBSCRIBE b'));
    sub.send(FrameType.UNSUBSCRIBE, 'a');
    await waitForFrame(sub, 'ACK "UNSUBSCRIBE a"', isAck('UNSUBSCRIBE a'));
    const pub = await hello(gw.port);
    const [, reachedA] = await publish(pub, 'a', 'to a');
    await publish(pub, 'b', 'to b');
    await eventually(() => check(messages(sub).length >= 1, 'no message yet', { observed: show(sub.frames), expected: 'the message to b', idea: 'subscriptions are per topic' }), { within: 1500 });
    const topics = messages(sub).map((m) => m.topic);
    check(reachedA === 0 && topics.join(',') === 'b', 'UNSUBSCRIBE did not stop that topic, or stopped the others.', {
      observed: `after UNSUBSCRIBE a: the ACK for "a" said ${reachedA} subscriber(s); the client received MESSAGEs for [${topics.join(', ')}]`,
      expected: '0 subscribers for "a", and messages for "b" only',
      idea: 'UNSUBSCRIBE removes one subscription; the connection keeps the others',
    });
  });

  test('PING is answered with PONG once authenticated', async () => {
    const gw = await start();
    const c = await hello(gw.port);
    c.send(FrameType.PING, 'are you there');
    const pong = await waitForFrame(c, 'PONG "are you there"', (f) => f.type === FrameType.PONG);
    check(text(pong) === 'are you there', 'PONG did not echo the PING body.', {
      observed: describeFrame(pong),
      expected: 'PONG "are you there"',
      idea: 'the answer to PING echoes its body',
    });
  });

  test('a PUBLISH to a topic nobody has is acknowledged with 0 subscribers', async () => {
    const gw = await start();
    const pub = await hello(gw.port);
    const [id, reached] = await publish(pub, 'nobody.listens', 'hello?');
    check(id > 0 && reached === 0, 'A PUBLISH to a topic with no subscriber was not acknowledged as reaching nobody.', {
      observed: `ACK "${text(ofType(pub, FrameType.ACK).at(-1)!)}"`,
      expected: 'ACK "PUBLISH <id> 0"',
      idea: 'publishing to an empty topic is not an error: the message reached its 0 subscribers',
    });
  });
});

describe('bad input costs only its sender', () => {
  test('a frame before HELLO gets ERROR UNAUTHORIZED and the connection is closed', async () => {
    const gw = await start();
    const others = await bystanders(gw.port);
    for (const [type, body] of [[FrameType.SUBSCRIBE, 'x'], [FrameType.PUBLISH, topicBody('bystander', 'sneaky')], [FrameType.PING, '']] as const) {
      const c = await h.connect(gw.port);
      c.send(type, body);
      await waitForFrame(c, `ERROR "UNAUTHORIZED ..." for ${describeFrame({ type, body: Buffer.from(body) })} before HELLO`, isError('UNAUTHORIZED'));
      await c.waitClosed('the connection closed after ERROR UNAUTHORIZED', 1500);
    }
    await others.stillServed('frames sent before HELLO');
  });

  test('a wrong token, of any length, gets ERROR UNAUTHORIZED and the connection is closed', async () => {
    const gw = await start();
    const others = await bystanders(gw.port);
    const wrong = ['x'.repeat(TOKEN.length), 'short', TOKEN + '-and-more', '', TOKEN.toUpperCase()];
    for (const token of wrong) {
      const c = await h.connect(gw.port);
      c.send(FrameType.HELLO, JSON.stringify({ token, client: 'guess' }));
      await waitForFrame(c, `ERROR "UNAUTHORIZED ..." for the token "${token}"`, isError('UNAUTHORIZED'));
      await c.waitClosed(`the connection closed after the wrong token "${token}"`, 1500);
    }
    // A guesser that never sends FIN: the gateway must not leave it holding the socket.
    const accepted = h.watchAccepted();
    const stubborn = await h.connect(gw.port, { allowHalfOpen: true });
    stubborn.send(FrameType.HELLO, JSON.stringify({ token: 'guess', client: 'stubborn' }));
    await waitForFrame(stubborn, 'ERROR "UNAUTHORIZED ..."', isError('UNAUTHORIZED'));
    const cut = await waitUntil(() => accepted.of(stubborn.port)?.destroyed === true, 1500);
    check(cut, 'A client refused as UNAUTHORIZED kept its socket by never closing its side.', {
      observed: `1500 ms after ERROR UNAUTHORIZED, the gateway's socket for it is still open (ended: ${accepted.of(stubborn.port)?.ended})`,
      expected: 'destroyed once the ERROR is written',
      idea: 'end() waits for the peer\'s FIN; a client you turn away does not get to decide when its socket closes: destroy()',
    });
    for (const body of ['not json', '{"client":"no token"}', '[1,2]']) {
      const c = await h.connect(gw.port);
      c.send(FrameType.HELLO, body);
      await waitForFrame(c, `ERROR "UNAUTHORIZED ..." for the HELLO body ${JSON.stringify(body)}`, isError('UNAUTHORIZED'));
      await c.waitClosed(`the connection closed after the HELLO body ${JSON.stringify(body)}`, 1500);
    }
    await others.stillServed('wrong tokens and broken HELLOs');
  });

  test('a connection that never says HELLO is told TIMEOUT and cut at the HELLO deadline', async () => {
    const HELLO_MS = 150;
    const gw = await start({ helloMs: HELLO_MS });
    const accepted = h.watchAccepted();
    // A peer that never sends FIN: only the gateway's destroy() can close its socket.
    const c = await h.connect(gw.port, { allowHalfOpen: true });
    const opened = performance.now();
    const timeout = await waitForFrame(c, 'ERROR "TIMEOUT ..."', isError('TIMEOUT'), HELLO_MS + 2000);
    const afterMs = performance.now() - opened;
    check(afterMs >= HELLO_MS - 2, 'The HELLO deadline fired early.', {
      observed: `ERROR "${text(timeout)}" after ${Math.round(afterMs)} ms`,
      expected: `not before ${HELLO_MS} ms`,
      idea: 'a deadline is a promise to the client too: it gets the whole time',
    });
    await eventually(() => accepted.of(c.port)?.destroyed || fail('The gateway did not cut a connection that never said HELLO.', {
      observed: `${Math.round(performance.now() - opened)} ms after connecting: ERROR TIMEOUT sent, but the gateway's socket is still open (ended: ${accepted.of(c.port)?.ended})`,
      expected: 'the socket destroyed right after the ERROR: a client that never sends FIN must not hold it',
      idea: 'a deadline that fires ends with destroy(), not only end()',
    }), { within: 1500 });
  });

  test('a client that said HELLO is not cut at the HELLO deadline', async () => {
    const HELLO_MS = 100;
    const gw = await start({ helloMs: HELLO_MS });
    const c = await subscriber(gw.port, 'stay');
    const stayed = !(await waitUntil(() => c.closed, HELLO_MS * 4));
    check(stayed && !c.frames.some(isError('TIMEOUT')), 'An authenticated client was cut by the HELLO deadline.', {
      observed: `${HELLO_MS * 4} ms after a good HELLO: ${show(c.frames)}${c.closed ? '; the connection closed' : ''}`,
      expected: 'still connected: the HELLO deadline is cleared by the HELLO',
      idea: 'a one-off deadline is cleared by the event it waits for',
    });
  });

  test('an oversize length prefix gets ERROR PROTOCOL and a close, and nothing is allocated for it', async () => {
    const gw = await start();
    const others = await bystanders(gw.port);
    const c = await hello(gw.port);
    const header = Buffer.alloc(5);
    header.writeUInt32BE(512 * 1024 * 1024, 0);
    header[4] = FrameType.PUBLISH;
    await c.write(header);
    await waitForFrame(c, 'ERROR "PROTOCOL ..." for a 512 MiB frame', isError('PROTOCOL'));
    await c.waitClosed('the connection closed after ERROR PROTOCOL', 1500);
    await others.stillServed('an oversize frame');
  });

  test('an unknown frame type gets ERROR UNSUPPORTED and the connection stays usable', async () => {
    const gw = await start();
    const c = await hello(gw.port);
    c.send(0x7f, 'what is this');
    await waitForFrame(c, 'ERROR "UNSUPPORTED ..."', isError('UNSUPPORTED'));
    c.send(FrameType.SUBSCRIBE, 'still.here');
    await waitForFrame(c, 'ACK "SUBSCRIBE still.here" after the unknown frame', isAck('SUBSCRIBE still.here'));
  });

  test('bad topic names get ERROR BAD_TOPIC and the connection stays usable', async () => {
    const gw = await start();
    const c = await hello(gw.port);
    for (const topic of ['', 'a'.repeat(129), 'has space', 'slash/es', 'wild*', 'ünïcode']) {
      const from = c.frames.length;
      c.send(FrameType.SUBSCRIBE, topic);
      await waitForFrame(c, `ERROR "BAD_TOPIC ..." for SUBSCRIBE ${JSON.stringify(topic.slice(0, 20))}`, (f) => f.type === FrameType.ERROR || f.type === FrameType.ACK, 1500, from);
      const reply = c.frames.slice(from).find((f) => f.type === FrameType.ERROR || f.type === FrameType.ACK)!;
      check(isError('BAD_TOPIC')(reply), `SUBSCRIBE ${JSON.stringify(topic.slice(0, 20))} was not refused as a bad topic.`, {
        observed: describeFrame(reply),
        expected: 'ERROR "BAD_TOPIC <why>"',
        idea: 'topic names are 1 to 128 bytes of letters, digits, ".", "_" and "-" (lessons/PROTOCOL.md)',
      });
    }
    const from = c.frames.length;
    c.send(FrameType.PUBLISH, topicBody('bad topic', 'x'));
    await waitForFrame(c, 'ERROR "BAD_TOPIC ..." for a PUBLISH to "bad topic"', isError('BAD_TOPIC'), 1500, from);
    await publish(c, 'good.topic', 'still usable');
  });

  test('a malformed PUBLISH body gets ERROR BAD_FRAME', async () => {
    const gw = await start();
    const c = await hello(gw.port);
    const body = Buffer.alloc(4);
    body.writeUInt16BE(300, 0); // a topic length past the end of the body
    c.send(FrameType.PUBLISH, body);
    await waitForFrame(c, 'ERROR "BAD_FRAME ..."', isError('BAD_FRAME'));
    await publish(c, 'good.topic', 'still usable');
  });

  test('more subscriptions than the cap get ERROR TOO_MANY_SUBSCRIPTIONS', async () => {
    const gw = await start({ maxSubscriptions: 3 });
    const c = await hello(gw.port);
    for (const t of ['t1', 't2', 't3', 't2']) {
      const from = c.frames.length;
      c.send(FrameType.SUBSCRIBE, t);
      await waitForFrame(c, `ACK "SUBSCRIBE ${t}" (within the cap of 3; t2 twice is one subscription)`, isAck(`SUBSCRIBE ${t}`), 1500, from);
    }
    const from = c.frames.length;
    c.send(FrameType.SUBSCRIBE, 't4');
    await waitForFrame(c, 'ERROR "TOO_MANY_SUBSCRIPTIONS ..." for a 4th topic', isError('TOO_MANY_SUBSCRIPTIONS'), 1500, from);
    check(gw.subscriptions === 3, 'A refused subscription was counted.', {
      observed: `${gw.subscriptions} subscriptions`, expected: '3', idea: 'a refused SUBSCRIBE leaves nothing behind',
    });
  });
});

describe('limits', () => {
  test('publishing faster than the per-IP rate is answered BUSY', async () => {
    const gw = await start({ publishBurst: 5, publishPerSecond: 1 });
    const c = await hello(gw.port);
    for (let i = 0; i < 8; i++) c.send(FrameType.PUBLISH, topicBody('fast', `m${i}`));
    await eventually(() => {
      const replies = c.frames.filter((f) => f.type === FrameType.ACK || f.type === FrameType.BUSY);
      if (replies.length >= 8) return;
      fail('Not every PUBLISH was answered.', { observed: show(c.frames), expected: '8 answers', idea: 'every PUBLISH gets ACK, ERROR or BUSY' });
    }, { within: 1500 });
    const busy = ofType(c, FrameType.BUSY).length;
    // A second connection from the same IP draws on the same bucket.
    const other = await hello(gw.port, 'same-ip');
    other.send(FrameType.PUBLISH, topicBody('fast', 'from another connection'));
    const answer = await waitForFrame(other, 'an answer to a PUBLISH from a second connection', (f) => f.type === FrameType.ACK || f.type === FrameType.BUSY);
    check(answer.type === FrameType.BUSY, 'A second connection from the same IP got a fresh publish allowance.', {
      observed: `after the first connection spent the burst, a PUBLISH on a second connection from 127.0.0.1 got ${describeFrame(answer)}`,
      expected: 'BUSY: the allowance belongs to the IP, not to the connection',
      idea: 'a rate keyed by connection is bypassed by opening more connections',
    });
    check(busy >= 2 && busy <= 3, 'The per-IP publish rate was not enforced.', {
      observed: `${8 - busy} of 8 PUBLISH frames sent at once were acknowledged, ${busy} answered BUSY`,
      expected: 'a burst of 5 acknowledged (6 if a token came back meanwhile), the rest BUSY',
      idea: 'a token bucket per client IP (lesson 06) bounds what one client may publish',
    });
  });

  test('a connection cap the open-file limit cannot afford is refused at start, with the reason', async () => {
    const outcome = await startGateway({ token: TOKEN, maxConnections: 50_000_000 }).then(
      (gw) => { h.track(gw); return 'started'; },
      (err: Error) => err.message,
    );
    check(outcome !== 'started' && /open.file|ulimit|descriptor/i.test(outcome), 'A gateway started with more connections allowed than it has file descriptors for.', {
      observed: outcome === 'started' ? 'startGateway({ maxConnections: 50 000 000 }) started' : `it failed with: ${outcome}`,
      expected: 'a refusal at start that names the open-file limit (ulimit -n)',
      idea: 'past the fd limit accept() fails and clients vanish without a word: check the headroom before taking the first client (lesson 06)',
    });
  });

  test('a client IP that connects in a loop is refused by the connect rate', async () => {
    const gw = await start({ connectBurst: 3, connectPerSecond: 0.5 });
    const first = [await h.connect(gw.port), await h.connect(gw.port), await h.connect(gw.port)];
    const fourth = await h.connect(gw.port);
    const busy = await waitForFrame(fourth, 'BUSY for a 4th connection in a burst of 3 from one IP', (f) => f.type === FrameType.BUSY);
    check(text(busy).startsWith('rate'), 'The 4th connection was refused, but not by the connect rate.', {
      observed: describeFrame(busy), expected: 'BUSY "rate: ..."', idea: 'a token bucket per client IP bounds how fast one client may connect (lesson 06)',
    });
    void first;
  });

  test('connections past the cap get BUSY and are closed', async () => {
    const gw = await start({ maxConnections: 3 });
    for (let i = 0; i < 3; i++) await hello(gw.port, `c${i}`);
    const extra = await h.connect(gw.port);
    extra.send(FrameType.HELLO, JSON.stringify({ token: TOKEN, client: 'one too many' }));
    await waitForFrame(extra, 'BUSY for a 4th connection over a cap of 3', (f) => f.type === FrameType.BUSY);
    await extra.waitClosed('the refused connection closed', 2500);
  });

  test('connections that have not said HELLO count toward the cap', async () => {
    const gw = await start({ maxConnections: 3, helloMs: 5000 });
    // Three sockets that have only connected: each holds an fd and a slot as surely as
    // an authenticated client does.
    const silent = [await h.connect(gw.port), await h.connect(gw.port), await h.connect(gw.port)];
    const extra = await h.connect(gw.port);
    const refused = await waitUntil(() => extra.frames.some((f) => f.type === FrameType.BUSY), 1500);
    check(refused, 'A connection past the cap was admitted because the others had not said HELLO yet.', {
      observed: `${silent.length} connected sockets that had not sent HELLO, then a 4th: after 1500 ms it had received ${show(extra.frames)}; gateway.connections = ${gw.connections}`,
      expected: 'BUSY at once for the 4th: the cap counts every accepted socket',
      idea: 'admission happens at accept, before authentication: a flood of sockets that never say HELLO is exactly what the cap is for',
    });
  });

  test('a subscriber that goes silent is dropped by the heartbeat', async () => {
    const gw = await start({ heartbeatMs: 60, heartbeatWindowMs: 150 });
    const proxy = h.track(await startFaultProxy({ upstreamPort: gw.port }));
    await withTimeline(proxy, async () => {
      const c = await subscriber(proxy.port, 'quiet');
      // Our test client answers no PING; the blackhole makes sure nothing else gets through.
      proxy.add({ kind: 'blackhole' });
      await eventually(() => check(gw.connections === 0, 'The gateway kept a connection whose client went silent.', {
        observed: `${gw.connections} connection(s) open 1500 ms after its client went silent`,
        expected: 'dropped within window + interval (about 210 ms) of going silent',
        idea: 'the gateway pings every client and drops the ones it stops hearing from (lesson 04)',
      }), { within: 1500 });
      void c;
    });
  });
});

describe('fan-out', () => {
  // 64 KiB messages: enough of them fill a paused reader's kernel buffers (about 4 MB on
  // loopback) and leave the rest queued in the gateway.
  const BIG = Buffer.alloc(64 * 1024, 0x61);

  test('a fan-out does not wait for the slowest subscriber', async () => {
    const COUNT = 120;
    const gw = await start({ maxQueuedBytes: 64 * 1024 * 1024, writeMs: 20_000 });
    const slow = await subscriber(gw.port, 'feed');
    slow.socket.pause(); // reads nothing from now on
    const fast = await subscriber(gw.port, 'feed');
    const pub = await hello(gw.port);
    for (let i = 0; i < COUNT; i++) pub.send(FrameType.PUBLISH, topicBody('feed', BIG));
    const acked = await waitUntil(() => ofType(pub, FrameType.ACK).length === COUNT && messages(fast).length === COUNT, 4000);
    check(acked, 'One subscriber that stopped reading held up the ACKs and everyone else\'s messages.', {
      observed: `after 4000 ms: ${ofType(pub, FrameType.ACK).length} of ${COUNT} PUBLISH frames (64 KiB each) acknowledged, the reading subscriber had ${messages(fast).length}; the paused one is still connected: ${!slow.closed}`,
      expected: `all ${COUNT} acknowledged and delivered to the reading subscriber at once`,
      idea: 'fan-out hands the frame to each subscriber\'s queue and moves on: it never waits for a socket to drain (lesson 05)',
    });
  });

  test('a subscriber too far behind is cut, and the others get every message', async () => {
    const COUNT = 120;
    const gw = await start({ maxQueuedBytes: 1024 * 1024, writeMs: 20_000 });
    const accepted = h.watchAccepted();
    const slow = await subscriber(gw.port, 'feed');
    slow.socket.pause();
    const fast = await subscriber(gw.port, 'feed');
    const pub = await hello(gw.port);
    // One at a time, as a publisher that waits for its ACK does: a burst of 7.5 MB at
    // once would put the reading subscriber past its 1 MiB bound too, and rightly.
    for (let i = 0; i < COUNT; i++) await publish(pub, 'feed', BIG);
    await eventually(() => check(messages(fast).length === COUNT, 'The reading subscriber did not get every message.', {
      observed: `${messages(fast).length} of ${COUNT}`, expected: `${COUNT}`, idea: 'a slow subscriber costs only itself',
    }), { within: 4000 });
    const cut = await waitUntil(() => accepted.of(slow.port)?.destroyed === true, 2000);
    check(cut, 'A subscriber more than maxQueuedBytes behind was kept, missing messages in silence.', {
      observed: `the paused subscriber's connection is still open ${accepted.of(slow.port)?.destroyed === false ? '(its socket not destroyed)' : ''}, ${COUNT} x 64 KiB published past a 1 MiB bound; gateway_queued_bytes would show what it holds`,
      expected: 'its connection cut (the slow-consumer policy of lesson 05): it reconnects knowing it missed messages',
      idea: 'a queue that refuses a frame must act on it: a subscriber left connected with gaps believes it has everything',
    });
  });
});

describe('per-connection state', () => {
  test('the subscriptions of a closed connection are forgotten, however it closed', async () => {
    const gw = await start();
    const clients = await Promise.all(['t1', 't2', 't3', 't4'].map((t) => subscriber(gw.port, t)));
    const shared = await subscriber(gw.port, 'shared');
    for (const c of clients) {
      c.send(FrameType.SUBSCRIBE, 'shared');
      await waitForFrame(c, 'ACK "SUBSCRIBE shared"', isAck('SUBSCRIBE shared'));
    }
    clients[0]!.reset();
    clients[1]!.end();
    clients[2]!.destroy();
    clients[3]!.reset();
    await eventually(() => check(gw.connections === 1, 'closing', { observed: `${gw.connections}`, expected: '1', idea: 'connections close' }), { within: 1500 });
    const ok = await waitUntil(() => gw.topics === 1 && gw.subscriptions === 1, 1000);
    const pub = await hello(gw.port);
    const [, reached] = await publish(pub, 'shared', 'who is left?');
    check(ok && reached === 1, 'Subscriptions outlived their connections.', {
      observed: `after 4 of 5 subscribers closed (2 reset, 1 FIN, 1 destroy): ${gw.topics} topic(s) and ${gw.subscriptions} subscription(s) still registered; a PUBLISH to "shared" reached ${reached}`,
      expected: '1 topic ("shared") and 1 subscription: the live subscriber\'s',
      idea: 'everything a connection adds to shared state is removed on \'close\', which fires on every path',
    });
    void shared;
  });
});

describe('authentication', () => {
  test('the token is compared in constant time', async () => {
    const gw = await start();
    const before = timing.calls;
    await hello(gw.port);
    const c = await h.connect(gw.port);
    c.send(FrameType.HELLO, JSON.stringify({ token: TOKEN.slice(0, -1) + '!', client: 'guess' }));
    await waitForFrame(c, 'ERROR "UNAUTHORIZED ..."', isError('UNAUTHORIZED'));
    const calls = timing.calls - before;
    check(calls >= 2, 'The token was not compared with crypto.timingSafeEqual.', {
      observed: `2 HELLOs checked (one right, one wrong in its last byte); timingSafeEqual was called ${calls} time(s)`,
      expected: 'each check made with crypto.timingSafeEqual',
      idea: '=== stops at the first byte that differs, so the time a wrong guess takes tells an attacker how much of it was right',
    });
  });
});

describe('shutdown', () => {
  test('stop() says GOAWAY, refuses new PUBLISHes, and delivers every acknowledged message to a subscriber that keeps reading', async () => {
    const COUNT = 100;
    const gw = await start({ maxQueuedBytes: 64 * 1024 * 1024, graceMs: 5000, writeMs: 20_000 });
    const sub = await subscriber(gw.port, 'feed');
    sub.socket.pause(); // behind: most of what follows waits in the gateway's queue for it
    const pub = await hello(gw.port);
    const big = Buffer.alloc(64 * 1024, 0x62);
    for (let i = 0; i < COUNT; i++) pub.send(FrameType.PUBLISH, topicBody('feed', big));
    await eventually(() => check(ofType(pub, FrameType.ACK).length === COUNT, 'PUBLISH frames stopped being acknowledged while a subscriber was not reading.', {
      observed: `${ofType(pub, FrameType.ACK).length} of ${COUNT} acknowledged after 4000 ms`,
      expected: `all ${COUNT} (the gateway queues them for the paused subscriber, up to its bound)`,
      idea: 'a fan-out never waits for a subscriber to read',
    }), { within: 4000 });
    const stopped = gw.stop();
    check(!gw.ready, 'ready stayed true after stop() began.', { observed: 'ready = true', expected: 'false at once', idea: '/readyz turns away new clients while the gateway drains' });
    // The paused subscriber publishes too: its request is read now, after shutdown began.
    sub.send(FrameType.PUBLISH, topicBody('feed', 'too late'));
    sub.socket.resume();
    await sub.waitClosed('the connection closed once everything was delivered', 5000);
    const got = messages(sub).length;
    const tail = sub.frames.filter((f) => f.type !== FrameType.MESSAGE && f.type !== FrameType.PING);
    const goaway = tail.some((f) => f.type === FrameType.GOAWAY);
    const refused = tail.some(isError('SHUTTING_DOWN'));
    check(got === COUNT && goaway && refused, 'Shutdown lost acknowledged messages, or did not say goodbye.', {
      observed: `the subscriber, reading again after stop() began, received ${got} of the ${COUNT} acknowledged messages; other frames: ${tail.map((f) => `${describeFrame({ type: f.type, body: f.body.subarray(0, 40) })}`).join(', ')}`,
      expected: `all ${COUNT}, then GOAWAY, and ERROR "SHUTTING_DOWN ..." for the PUBLISH sent after stop() began, then the close`,
      idea: 'a connection is ended only once its writer\'s queue has been handed to the kernel: end() flushes the socket, not the queue in front of it (lessons 05 and 08)',
    });
    await stopped;
  });

  test('SIGTERM drains the real process: GOAWAY, every acknowledged message delivered, exit code 0', { timeout: 20_000 }, async () => {
    const main = await entryUnderTest('#target/09-gateway/main.ts');
    const child: EntryProcess = spawnEntry(main, { WORKBOOK_ISOLATE: process.env.WORKBOOK_ISOLATE ?? (process.env.WORKBOOK_CAPSTONE_ALONE ? '09' : 'none'), GATEWAY_TOKEN: TOKEN, GATEWAY_LOG_LEVEL: 'info' }, ['--port', '0', '--metrics-port', '0', '--grace-ms', '3000']);
    h.defer(() => child.kill());
    const port = await child.port(/"port":(\d+)/, 'a "gateway listening" log line with the port', 8000);
    const metricsPort = await child.port(/"metricsPort":(\d+)/, 'the metrics port');
    const sub = await subscriber(port, 'busy');
    const pubs = await Promise.all([1, 2, 3].map((i) => hello(port, `pub${i}`)));
    // Publishers keep publishing as fast as their ACKs come back, until the gateway says GOAWAY.
    let sent = 0;
    const loops = pubs.map(async (p) => {
      for (let i = 0; i < 400 && !p.frames.some((f) => f.type === FrameType.GOAWAY) && !p.closed; i++) {
        const from = p.frames.length;
        p.send(FrameType.PUBLISH, topicBody('busy', `m${sent++}`));
        if (!(await waitUntil(() => p.frames.slice(from).some((f) => f.type !== FrameType.MESSAGE && f.type !== FrameType.PING), 2000))) break;
      }
    });
    await eventually(() => check(ofType(pubs[0]!, FrameType.ACK).length >= 5, 'publishing', { observed: show(pubs[0]!.frames), expected: 'ACKs', idea: 'publishers are busy' }), { within: 3000 });
    const ready = await scrape(metricsPort, '/readyz');
    process.kill(child.pid, 'SIGTERM');
    await Promise.all(loops);
    const exit = await child.waitExit(6000, 'exit code 0 after the drain');
    await sub.waitClosed('the subscriber\'s connection closed by the gateway', 1000);
    const acked = pubs.reduce((n, p) => n + ofType(p, FrameType.ACK).length, 0);
    const got = messages(sub).length;
    const goaway = [sub, ...pubs].every((c) => c.frames.some((f) => f.type === FrameType.GOAWAY));
    check(ready.status === 200 && exit.code === 0 && goaway && got === acked, 'SIGTERM did not drain the gateway cleanly.', {
      observed: `readyz before: ${ready.status}; exit code ${exit.code} (signal ${exit.signal}); GOAWAY to every client: ${goaway}; ${acked} PUBLISH frames acknowledged, ${got} delivered to the subscriber; stderr: ${JSON.stringify(child.stderr().slice(-200))}`,
      expected: 'GOAWAY to all, every acknowledged message delivered, exit code 0',
      idea: 'SIGTERM starts the drain of lesson 08: refuse new work, flush what was promised, close, exit by itself',
    });
  });
});

describe('the journal upstream', () => {
  test('with a journal, a PUBLISH is acknowledged once stored, and one in flight at shutdown still reaches its subscribers', async () => {
    const journal = h.track(await startJournalServer({ persistMs: 150 }));
    const gw = await start({ journal: { port: journal.port }, graceMs: 3000 });
    const sub = await subscriber(gw.port, 'j');
    const pub = await hello(gw.port);
    let storedWhenAcked = -1;
    pub.socket.on('data', () => {
      if (storedWhenAcked === -1 && pub.frames.some(isAck('PUBLISH'))) storedWhenAcked = journal.log.length;
    });
    await publish(pub, 'j', 'stored first');
    check(storedWhenAcked === 1, 'A PUBLISH was acknowledged before the journal had stored it.', {
      observed: `when the ACK arrived the journal held ${storedWhenAcked} entr(ies)`,
      expected: '1: the ACK follows the journal\'s own ACK',
      idea: 'with a journal, an ACK means stored: it survives the gateway',
    });
    const from = pub.frames.length;
    pub.send(FrameType.PUBLISH, topicBody('j', 'in flight at shutdown'));
    await eventually(() => check(journal.inflight === 1, 'store', { observed: `${journal.inflight}`, expected: '1 store in flight', idea: 'the journal stores' }), { within: 1500 });
    const stopped = gw.stop();
    await sub.waitClosed('the subscriber closed once the drain was done', 3000);
    const ack = pub.frames.slice(from).some(isAck('PUBLISH'));
    const got = messages(sub).map((m) => m.message);
    check(ack && got.includes('in flight at shutdown'), 'A PUBLISH in flight when shutdown began was lost.', {
      observed: `ACK for it: ${ack}; the subscriber received [${got.join(', ')}] before its connection closed`,
      expected: 'the ACK, and the message delivered: shutdown waits for the publishes in flight before it closes any subscriber',
      idea: 'an ACK means "queued to every subscriber", so every subscriber must still be connected when it is sent',
    });
    await stopped;
  });
});

describe('observability', () => {
  test('/healthz, /readyz and /metrics report the gateway, and the counters move', async () => {
    const { serveObservability } = await import('#target/09-gateway/metrics.ts');
    const gw = await start();
    const http = h.track(await serveObservability(gw.metrics, () => gw.ready, 0));
    const health = await scrape(http.port, '/healthz');
    const ready = await scrape(http.port, '/readyz');
    const sub = await subscriber(gw.port, 'm');
    const pub = await hello(gw.port);
    for (let i = 0; i < 3; i++) await publish(pub, 'm', `n${i}`);
    await eventually(() => check(messages(sub).length === 3, 'delivery', { observed: show(sub.frames), expected: '3 messages', idea: 'fan-out' }), { within: 1500 });
    const scraped = await scrape(http.port, '/metrics');
    const read = (name: string) => metric(scraped.body, name);
    const numbers = {
      connections: read('gateway_connections'),
      subscriptions: read('gateway_subscriptions'),
      topics: read('gateway_topics'),
      published: read('gateway_published_total'),
      acks: read('gateway_publish_to_ack_seconds_count'),
    };
    check(
      health.status === 200 && ready.status === 200 && scraped.status === 200 && numbers.connections === 2 && numbers.subscriptions === 1 && numbers.topics === 1 && numbers.published === 3 && numbers.acks === 3,
      'The observability endpoints do not report the gateway\'s state.',
      {
        observed: `/healthz ${health.status}, /readyz ${ready.status}, /metrics ${scraped.status}: ${JSON.stringify(numbers)}`,
        expected: '200s, and connections 2, subscriptions 1, topics 1, published 3, 3 publish-to-ACK observations',
        idea: 'an operator sees the gateway through /metrics: the gauges read the live state at each scrape',
      },
    );
  });
});

describe('chaos', () => {
  /** Answers the gateway's PINGs from now on, as a real client does (the test client does not by itself). */
  function answerPings(c: TestClient): void {
    let seen = c.frames.length;
    c.socket.on('data', () => {
      for (const f of c.frames.slice(seen)) if (f.type === FrameType.PING) c.send(FrameType.PONG, f.body);
      seen = c.frames.length;
    });
  }

  test('a seeded fault run loses no acknowledged message to a healthy subscriber and leaks nothing', { timeout: 20_000 }, async () => {
    const COUNT = 200;
    const gw = await start({ heartbeatMs: 80, heartbeatWindowMs: 200, frameMs: 200, maxQueuedBytes: 256 * 1024, writeMs: 1000 });
    const healthy = [await subscriber(gw.port, 'chaos'), await subscriber(gw.port, 'chaos')];
    const pub = await hello(gw.port, 'chaos-pub');
    for (const c of [...healthy, pub]) answerPings(c);
    // A subscriber whose network goes silent, one that resets, one that trickles a frame
    // it never finishes (slowloris), one that stops reading.
    const proxy = h.track(await startFaultProxy({ upstreamPort: gw.port, seed: 9 }));
    await subscriber(proxy.port, 'chaos');
    proxy.add({ kind: 'blackhole' });
    const resetter = await subscriber(gw.port, 'chaos');
    const loris = await subscriber(gw.port, 'chaos');
    await loris.write(Buffer.from([0, 0, 0, 9, FrameType.PUBLISH]));
    const paused = await subscriber(gw.port, 'chaos');
    paused.socket.pause();
    const payload = Buffer.alloc(8 * 1024, 0x63);
    for (let i = 0; i < COUNT; i++) {
      if (i === COUNT / 4) resetter.reset();
      await publish(pub, 'chaos', Buffer.concat([Buffer.from(`${String(i).padStart(4, '0')}:`), payload]));
    }
    for (const [n, c] of healthy.entries()) {
      await eventually(() => {
        const ids = messages(c).map((m) => m.message.slice(0, 4));
        const inOrder = ids.every((id, i) => Number(id) === i);
        check(ids.length === COUNT && inOrder, `Healthy subscriber ${n + 1} lost or reordered acknowledged messages during the fault run.`, {
          observed: `${ids.length} of ${COUNT} acknowledged messages received${inOrder ? ', in order' : `, out of order: ${ids.slice(0, 8).join(' ')} ...`}${c.closed ? '; its connection was closed' : ''}`,
          expected: `all ${COUNT}, in the order they were acknowledged`,
          idea: 'faults on other connections (silence, resets, slowloris, a stopped reader) cost only those connections',
        });
      }, { within: 3000 });
    }
    await eventually(() => check(gw.connections === 3 && gw.subscriptions === 2, 'The faulty subscribers were not all dropped.', {
      observed: `${gw.connections} connections and ${gw.subscriptions} subscriptions left (the 2 healthy subscribers and the publisher should remain)`,
      expected: 'the blackholed one dropped by the heartbeat, the slowloris by the frame deadline or the heartbeat, the paused reader by the heartbeat or its bounds, the reset one at once: and their subscriptions gone with them',
      idea: 'every fault ends in a close the gateway decides, not in a connection held for ever',
    }), { within: 4000 });
  });
});
