// Lesson 09, the capstone: the push gateway, judged as a whole. The tests speak the
// protocol of lessons/PROTOCOL.md the way an independent client would (they never use
// the gateway's own encoders), feed it bad input and faults, stop it while it works, and
// check that every acknowledged message reaches every subscriber that keeps reading.
import { describe, test, vi } from 'vitest';
import http from 'node:http';
import { subscribe as subscribeChannel, unsubscribe as unsubscribeChannel } from 'node:diagnostics_channel';
import net from 'node:net';
import v8 from 'node:v8';
import vm from 'node:vm';
import pino from 'pino';
import { startGateway, type Gateway, type GatewayOptions } from '#target/09-gateway/gateway.ts';
import { startJournalServer } from '#target/08-graceful-shutdown/journal.ts';
import {
  check, connect, describeFrame, encode, entryUnderTest, typeName, eventually, fail, FrameType, spawnEntry, startFaultProxy, useHarness, waitUntil, withTimeline, type EntryProcess, type Frame, type TestClient,
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
    // The clock starts before the connect: the gateway arms its deadline when it accepts,
    // which can come well before our side hears 'connect' on a loaded machine.
    const opened = performance.now();
    // A peer that never sends FIN: only the gateway's destroy() can close its socket.
    const c = await h.connect(gw.port, { allowHalfOpen: true });
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
    const HELLO_MS = 250;
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

  test('a topic of exactly 128 bytes and an empty message are valid', async () => {
    const gw = await start();
    const longest = 'x'.repeat(128);
    const sub = await hello(gw.port);
    sub.send(FrameType.SUBSCRIBE, longest);
    const reply = await waitForFrame(sub, 'the answer to SUBSCRIBE of a 128-byte topic', (f) => f.type === FrameType.ACK || f.type === FrameType.ERROR);
    check(reply.type === FrameType.ACK, 'A topic of exactly the maximum length was refused.', {
      observed: `SUBSCRIBE of a 128-byte topic got ${describeFrame(reply)}`,
      expected: `ACK "SUBSCRIBE ${'x'.repeat(8)}...": 1 to 128 bytes is the rule, both ends included`,
      idea: 'a limit is checked with the right comparison: the documented maximum itself is allowed',
    });
    const pub = await hello(gw.port);
    const from = pub.frames.length;
    pub.send(FrameType.PUBLISH, topicBody(longest, Buffer.alloc(0)));
    const ack = await waitForFrame(pub, 'the answer to a PUBLISH with an empty message', (f) => f.type === FrameType.ACK || f.type === FrameType.ERROR || f.type === FrameType.BUSY, 1500, from);
    const got = await waitUntil(() => messages(sub).length === 1, 1000);
    check(isAck('PUBLISH')(ack) && got && messages(sub)[0]!.message === '', 'A PUBLISH with an empty message was not delivered.', {
      observed: `the PUBLISH (a 128-byte topic, 0 message bytes) got ${describeFrame(ack)}; the subscriber received ${messages(sub).length} MESSAGE(s)`,
      expected: 'ACK "PUBLISH <id> 1", and a MESSAGE with an empty message: a body whose topic runs to its very end is well formed',
      idea: 'the message is "any bytes", none included: only a topic length past the end of the body is BAD_FRAME',
    });
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

  test('the subscription cap counts this connection\'s topics now: another connection, or a topic left, frees nothing for nobody', async () => {
    const gw = await start({ maxSubscriptions: 3 });
    const answer = async (c: TestClient, type: number, topic: string) => {
      const from = c.frames.length;
      c.send(type, topic);
      return waitForFrame(c, `the answer to ${typeName(type)} ${topic}`, (f) => f.type === FrameType.ACK || f.type === FrameType.ERROR, 1500, from);
    };
    const first = await hello(gw.port, 'first');
    for (const t of ['t1', 't2', 't3']) await answer(first, FrameType.SUBSCRIBE, t);
    // Another connection has a cap of its own.
    const second = await hello(gw.port, 'second');
    const replies: string[] = [];
    for (const t of ['u1', 'u2', 'u3']) replies.push(describeFrame(await answer(second, FrameType.SUBSCRIBE, t)));
    check(replies.every((r) => r.startsWith('ACK')), 'A connection was refused subscriptions because of another connection\'s.', {
      observed: `a first connection holds 3 subscriptions (the cap); a second one's 3 SUBSCRIBEs got: ${replies.join(', ')}`,
      expected: 'ACK for each: the cap is per connection',
      idea: 'per-connection limits are counted per connection: state kept per server makes one client\'s use everyone\'s limit',
    });
    // A connection that leaves topics may take others, as often as it likes.
    const churn: string[] = [];
    for (let i = 0; i < 4; i++) {
      await answer(first, FrameType.UNSUBSCRIBE, i === 0 ? 't1' : `v${i - 1}`);
      churn.push(describeFrame(await answer(first, FrameType.SUBSCRIBE, `v${i}`)));
    }
    check(churn.every((r) => r.startsWith('ACK')), 'UNSUBSCRIBE did not give the subscription\'s place under the cap back.', {
      observed: `at the cap of 3, UNSUBSCRIBE one topic then SUBSCRIBE another, 4 times: ${churn.join(', ')}`,
      expected: 'ACK each time: the connection never holds more than 3',
      idea: 'everything SUBSCRIBE adds for a connection, UNSUBSCRIBE takes away, its count under the cap included',
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

  test('a frame trickled a byte at a time is cut at the frame deadline, though its bytes keep the heartbeat happy', async () => {
    const FRAME_MS = 150;
    const gw = await start({ frameMs: FRAME_MS, heartbeatMs: 5000 });
    const accepted = h.watchAccepted();
    const c = await hello(gw.port, 'loris');
    const port = c.port;
    const header = Buffer.alloc(5);
    header.writeUInt32BE(1000, 0);
    header[4] = FrameType.PUBLISH;
    const started = performance.now();
    await c.write(header);
    // One byte every 20 ms: alive by any byte count, never a whole frame.
    for (let i = 0; i < 60 && !c.closed && !accepted.of(port)?.destroyed; i++) {
      await new Promise((r) => setTimeout(r, 20));
      if (!c.closed) c.socket.write(Buffer.from([0x61]));
    }
    const cut = await waitUntil(() => accepted.of(port)?.destroyed === true, 1000);
    // (Only the cut is asserted: the client goes on sending after the gateway stops reading,
    // so the gateway's close may be a reset that overtakes its ERROR TIMEOUT.)
    check(cut, 'A slowloris frame was never cut.', {
      observed: `a 1000-byte PUBLISH sent one byte per 20 ms for ${Math.round(performance.now() - started)} ms: ${show(c.frames)}; the gateway's socket still open`,
      expected: `ERROR "TIMEOUT ..." and the close about ${FRAME_MS} ms after the frame began`,
      idea: 'the frame deadline must see the partial frame (the reader\'s buffered bytes): a trickle of bytes is life to the heartbeat, not progress',
    });
  });

  test('a client that sends but never reads is cut at the write deadline, under its queue bound', async () => {
    const WRITE_MS = 250;
    const gw = await start({ writeMs: WRITE_MS, maxQueuedBytes: 64 * 1024 * 1024, heartbeatMs: 5000 });
    const accepted = h.watchAccepted();
    const stuck = await subscriber(gw.port, 'flood');
    const stuckPort = stuck.port;
    stuck.socket.pause(); // the kernel buffers fill, then nothing more is taken
    const pub = await hello(gw.port);
    const big = Buffer.alloc(64 * 1024, 0x64);
    for (let i = 0; i < 120; i++) pub.send(FrameType.PUBLISH, topicBody('flood', big));
    // It keeps talking, so only the write deadline can tell it is stuck.
    let pings = 0;
    const cut = await waitUntil(() => {
      if (pings++ % 10 === 0 && !stuck.closed) stuck.send(FrameType.PING, 'still here');
      return accepted.of(stuckPort)?.destroyed === true;
    }, 3000);
    check(cut, 'A client that read nothing was kept for ever.', {
      observed: `a subscriber that stopped reading (and kept sending PINGs) with 120 x 64 KiB queued for it, under a 64 MiB bound: still connected after 3000 ms`,
      expected: `cut about ${WRITE_MS} ms after the kernel stopped taking its bytes`,
      idea: 'the write deadline (lesson 03) is what cuts a peer that does not read: the queue bound only caps the memory it holds',
    });
  });

  test('a subscriber that goes silent is dropped by the heartbeat', async () => {
    const gw = await start({ heartbeatMs: 60, heartbeatWindowMs: 150 });
    const proxy = h.track(await startFaultProxy({ upstreamPort: gw.port }));
    await withTimeline(proxy, async () => {
      const c = await subscriber(proxy.port, 'quiet');
      // A client that only publishes is watched as much as one that subscribes.
      const p = await hello(proxy.port, 'publisher-only');
      void p;
      // Our test client answers no PING; the blackhole makes sure nothing else gets through.
      proxy.add({ kind: 'blackhole' });
      await eventually(() => check(gw.connections === 0, 'The gateway kept a connection whose client went silent.', {
        observed: `${gw.connections} of 2 connection(s) (a subscriber, and a client that only said HELLO) open 1500 ms after their clients went silent`,
        expected: 'dropped within window + interval (about 210 ms) of going silent',
        idea: 'the gateway pings every authenticated client, subscriber or not, and drops the ones it stops hearing from (lesson 04)',
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
    const slowPort = slow.port; // (a client's port reads undefined once its socket is gone)
    slow.socket.pause();
    const fast = await subscriber(gw.port, 'feed');
    const pub = await hello(gw.port);
    // One at a time, as a publisher that waits for its ACK does: a burst of 7.5 MB at
    // once would put the reading subscriber past its 1 MiB bound too, and rightly.
    let overclaimed = 0;
    for (let i = 0; i < COUNT; i++) {
      const [, reached] = await publish(pub, 'feed', BIG);
      // Publishes go one at a time and nothing else cuts the slow one: if it is cut now,
      // this publish cut it, and its ACK must not count it as reached.
      if (reached === 2 && accepted.of(slowPort)?.destroyed) overclaimed++;
    }
    await eventually(() => check(messages(fast).length === COUNT, 'The reading subscriber did not get every message.', {
      observed: `${messages(fast).length} of ${COUNT}`, expected: `${COUNT}`, idea: 'a slow subscriber costs only itself',
    }), { within: 4000 });
    const cut = await waitUntil(() => accepted.of(slowPort)?.destroyed === true, 2000);
    check(cut, 'A subscriber more than maxQueuedBytes behind was kept, missing messages in silence.', {
      observed: `the paused subscriber's connection is still open ${accepted.of(slowPort)?.destroyed === false ? '(its socket not destroyed)' : ''}, ${COUNT} x 64 KiB published past a 1 MiB bound; gateway_queued_bytes would show what it holds`,
      expected: 'its connection cut (the slow-consumer policy of lesson 05): it reconnects knowing it missed messages',
      idea: 'a queue that refuses a frame must act on it: a subscriber left connected with gaps believes it has everything',
    });
    check(overclaimed === 0, 'An ACK counted a subscriber whose queue refused the message.', {
      observed: `${overclaimed} ACK(s) said "2 subscribers" for a publish whose fan-out refused the message to the slow subscriber and cut it`,
      expected: 'ACK "PUBLISH <id> 1" from the publish that overflowed the slow subscriber on',
      idea: 'an ACK counts the queues that took the message (sendFrame returned true), not the subscribers the registry lists',
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

/** A full garbage collection, without --expose-gc on the command line. */
function collectGarbage(): void {
  v8.setFlagsFromString('--expose-gc');
  (vm.runInNewContext('gc') as () => void)();
}

describe('per-connection state, once the connection is gone', () => {
  test('nothing of a closed connection is kept: its socket can be collected', async () => {
    const gw = await start();
    // Weak references only: the test itself must not keep the gateway's sockets alive.
    const refs: Array<WeakRef<net.Socket>> = [];
    const onSocket = (message: unknown) => {
      const socket = (message as { socket: net.Socket }).socket;
      if (socket.localPort === gw.port) refs.push(new WeakRef(socket));
    };
    subscribeChannel('net.server.socket', onSocket);
    h.defer(() => unsubscribeChannel('net.server.socket', onSocket));
    const clients = await Promise.all(['a', 'b', 'c', 'd', 'e', 'f'].map((t) => subscriber(gw.port, t)));
    const pub = await publish(await hello(gw.port, 'pub'), 'a', 'x');
    void pub;
    clients[0]!.reset();
    clients[1]!.end();
    clients[2]!.destroy();
    clients[3]!.reset();
    clients[4]!.end();
    const refused = await h.connect(gw.port);
    refused.send(FrameType.HELLO, JSON.stringify({ token: 'wrong' }));
    await waitForFrame(refused, 'ERROR "UNAUTHORIZED ..."', isError('UNAUTHORIZED'));
    await eventually(() => check(gw.connections === 2, 'closing', { observed: `${gw.connections}`, expected: '2 (a subscriber and the publisher)', idea: 'connections close' }), { within: 1500 });
    // Two are open; of the 6 closed, at most 1 may linger in the runtime's own caches.
    // Once collected, a socket stays collected: keep collecting for up to 2 s, so work
    // still in flight on a loaded machine (a last callback, a sweep's tick) can let go.
    let alive = refs.length;
    const until = performance.now() + 2000;
    while (alive > 3 && performance.now() < until) {
      await new Promise((r) => setTimeout(r, 25));
      collectGarbage();
      alive = refs.filter((r) => r.deref() !== undefined).length;
    }
    check(alive <= 3, 'The gateway kept closed connections in memory.', {
      observed: `${refs.length} connections accepted, ${refs.length - 2} of them closed (resets, FINs, a destroy, a refused HELLO): after garbage collection ${alive - 2} closed socket(s) are still referenced`,
      expected: 'the 2 open connections\' sockets, and none of the closed ones (one is tolerated: the runtime may cache it): nothing the gateway keeps (sessions, registry, sweeps, timers) holds a closed connection',
      idea: 'everything a connection adds to shared state, a session table included, is removed on \'close\': otherwise memory grows with every reconnect',
    });
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
    const short = await h.connect(gw.port);
    short.send(FrameType.HELLO, JSON.stringify({ token: 'abc', client: 'guess' }));
    await waitForFrame(short, 'ERROR "UNAUTHORIZED ..." for a 3-character token', isError('UNAUTHORIZED'));
    const shortCalls = timing.calls - before - calls;
    check(shortCalls >= 1, 'A guess of the wrong length was refused without the constant-time comparison.', {
      observed: `a HELLO with a 3-character token (the real one has ${TOKEN.length}): timingSafeEqual was called ${shortCalls} time(s)`,
      expected: 'the same constant-time comparison as for any guess (hash both sides to one length first)',
      idea: 'returning early on a length mismatch tells an attacker the token\'s length: hash both to 32 bytes, then timingSafeEqual',
    });
  });
});

describe('authentication, one frame at a time', () => {
  test('after a wrong HELLO nothing more is read, and a second HELLO is a PROTOCOL error', async () => {
    const gw = await start();
    // A guesser pipelines a wrong token and the right one in one write.
    const guesser = await h.connect(gw.port);
    await guesser.write(Buffer.concat([
      encode(FrameType.HELLO, JSON.stringify({ token: 'wrong', client: 'guess' })),
      encode(FrameType.HELLO, JSON.stringify({ token: TOKEN, client: 'guess' })),
      encode(FrameType.SUBSCRIBE, 'secrets'),
    ]));
    await waitForFrame(guesser, 'ERROR "UNAUTHORIZED ..."', isError('UNAUTHORIZED'));
    await guesser.waitClosed('the connection closed after ERROR UNAUTHORIZED', 1500);
    check(!guesser.frames.some((f) => f.type === FrameType.HELLO || f.type === FrameType.ACK) && gw.subscriptions === 0, 'Frames sent after a wrong HELLO were still served.', {
      observed: `a wrong HELLO, the right HELLO and a SUBSCRIBE in one write got: ${show(guesser.frames)}; subscriptions now ${gw.subscriptions}`,
      expected: 'ERROR UNAUTHORIZED and the close, nothing else: reading stops at the refused HELLO',
      idea: 'a connection being hung up reads no more: otherwise one connection pipelines guesses at link speed, around the connect rate',
    });
    // An authenticated client that says HELLO again is told, and keeps its connection.
    const c = await hello(gw.port);
    const from = c.frames.length;
    c.send(FrameType.HELLO, JSON.stringify({ token: 'not the token', client: 'again' }));
    await waitForFrame(c, 'ERROR "PROTOCOL ..." for a second HELLO', (f) => f.type === FrameType.ERROR || f.type === FrameType.HELLO, 1500, from);
    const reply = c.frames.slice(from).find((f) => f.type === FrameType.ERROR || f.type === FrameType.HELLO)!;
    c.send(FrameType.PING, 'still here?');
    const alive = await waitUntil(() => c.frames.some((f) => f.type === FrameType.PONG), 1000);
    check(isError('PROTOCOL')(reply) && alive, 'A second HELLO was taken for a new handshake.', {
      observed: `a second HELLO (wrong token) on an authenticated connection got ${describeFrame(reply)}; PING answered after it: ${alive}${c.closed ? '; the connection closed' : ''}`,
      expected: 'ERROR "PROTOCOL ...", and the connection stays (lessons/PROTOCOL.md)',
      idea: 'HELLO is accepted once per connection: a session is authenticated once, not every time a frame says so',
    });
  });

  test('every log line about a connection carries its id', async () => {
    const lines: Array<Record<string, unknown>> = [];
    const log = pino({ level: 'debug' }, { write: (line: string) => void lines.push(JSON.parse(line) as Record<string, unknown>) });
    const gw = await start({ log });
    const c = await hello(gw.port, 'logged');
    const bad = await h.connect(gw.port);
    bad.send(FrameType.HELLO, JSON.stringify({ token: 'wrong', client: 'logged-bad' }));
    await waitForFrame(bad, 'ERROR "UNAUTHORIZED ..."', isError('UNAUTHORIZED'));
    void c;
    await bad.waitClosed('the connection closed after ERROR UNAUTHORIZED', 1500);
    // Everything logged while only these two connections did anything is about one of them.
    const about = lines.slice();
    const missing = about.filter((l) => typeof l.conn !== 'string' || !l.conn);
    check(about.length >= 2 && missing.length === 0, 'Log lines about a connection do not say which connection.', {
      observed: `${about.length} line(s) logged while one client authenticated and another was refused: ${JSON.stringify(about.slice(0, 6).map((l) => ({ msg: l.msg, conn: l.conn })))}`,
      expected: 'each with a "conn" field (the connection id)',
      idea: 'one client\'s story is pulled out of a busy gateway\'s logs by its connection id: a child logger per connection',
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
    // Two in one write: both are read before shutdown begins; the second waits for its turn
    // behind the first, which waits for the journal.
    await pub.write(Buffer.concat([encode(FrameType.PUBLISH, topicBody('j', 'in flight at shutdown')), encode(FrameType.PUBLISH, topicBody('j', 'read before shutdown'))]));
    await eventually(() => check(journal.inflight === 1, 'store', { observed: `${journal.inflight}`, expected: '1 store in flight', idea: 'the journal stores' }), { within: 1500 });
    const stopped = gw.stop();
    await sub.waitClosed('the subscriber closed once the drain was done', 3000);
    const answers = pub.frames.slice(from).filter((f) => f.type === FrameType.ACK || f.type === FrameType.ERROR || f.type === FrameType.BUSY);
    const ack = answers.length === 2 && answers.every(isAck('PUBLISH'));
    const got = messages(sub).map((m) => m.message);
    check(ack && got.includes('in flight at shutdown') && got.includes('read before shutdown'), 'A PUBLISH read before shutdown began was lost.', {
      observed: `answers to the 2 PUBLISHes read before stop() (one at the journal, one waiting for its turn): [${answers.map(describeFrame).join(', ')}]; the subscriber received [${got.join(', ')}] before its connection closed`,
      expected: 'two ACKs, and both messages delivered: shutdown waits for every publish read before it began (counted when read, not when its turn comes), and the journal stays up until they are stored',
      idea: 'an ACK means "queued to every subscriber", so every subscriber must still be connected when it is sent',
    });
    await stopped;
  });
});

describe('the journal upstream, when it is slow or down', () => {
  test('answers come in the order the requests were sent, whatever each one waits for', async () => {
    const journal = h.track(await startJournalServer({ persistMs: 100 }));
    const gw = await start({ journal: { port: journal.port }, publishBurst: 2, publishPerSecond: 0.5 });
    const c = await hello(gw.port);
    const from = c.frames.length;
    await c.write(Buffer.concat([
      encode(FrameType.PUBLISH, topicBody('slow', 'first')), // waits for the journal
      encode(FrameType.PUBLISH, topicBody('bad topic', 'x')), // BAD_TOPIC
      encode(FrameType.SUBSCRIBE, 'slow'), // ACK
      encode(FrameType.PUBLISH, topicBody('slow', 'second')), // waits for the journal
      encode(FrameType.PUBLISH, topicBody('slow', 'third')), // past the burst of 2: BUSY
    ]));
    const isAnswer = (f: Frame) => f.type === FrameType.ACK || f.type === FrameType.ERROR || f.type === FrameType.BUSY;
    await eventually(() => check(c.frames.slice(from).filter(isAnswer).length >= 5, 'answers', { observed: show(c.frames.slice(from)), expected: '5 answers', idea: 'every request is answered' }), { within: 2000 });
    const order = c.frames.slice(from).filter(isAnswer).map((f) => (f.type === FrameType.ACK ? `ACK ${text(f).split(' ')[0]}` : f.type === FrameType.BUSY ? 'BUSY' : `ERROR ${text(f).split(' ')[0]}`));
    // (Whether a PUBLISH to a bad topic spends a token of the rate is the gateway's choice:
    // the 4th answer may be an ACK or a BUSY. The order is not a choice.)
    const inOrder = order.length === 5 && order[0] === 'ACK PUBLISH' && order[1] === 'ERROR BAD_TOPIC' && order[2] === 'ACK SUBSCRIBE' && ['ACK PUBLISH', 'BUSY'].includes(order[3]!) && order[4] === 'BUSY';
    check(inOrder, 'Answers overtook the answers of earlier requests.', {
      observed: `PUBLISH, PUBLISH to a bad topic, SUBSCRIBE, PUBLISH, PUBLISH past the rate, sent at once to a gateway whose journal takes 100 ms, were answered: ${order.join(', ')}`,
      expected: 'ACK PUBLISH, ERROR BAD_TOPIC, ACK SUBSCRIBE, ACK PUBLISH (or BUSY), BUSY: in request order',
      idea: 'a client matches answers to requests by counting: every answer, refusals included, waits for the turn of its request',
    });
  });

  test('a PUBLISH the journal did not store is refused UNAVAILABLE, delivered to nobody, and gives its slot back', async () => {
    // A port with nothing listening: every store fails at once.
    const probe = net.createServer();
    await new Promise<void>((resolve) => probe.listen(0, '127.0.0.1', resolve));
    const deadPort = (probe.address() as net.AddressInfo).port;
    await new Promise<void>((resolve) => probe.close(() => resolve()));
    const gw = await start({ journal: { port: deadPort }, maxPublishesInFlight: 1, publishQueueMs: 300 });
    const sub = await subscriber(gw.port, 'unstored');
    const pub = await hello(gw.port);
    const answers: Frame[] = [];
    for (let i = 0; i < 3; i++) {
      const from = pub.frames.length;
      pub.send(FrameType.PUBLISH, topicBody('unstored', `m${i}`));
      answers.push(await waitForFrame(pub, 'an answer to a PUBLISH while the journal is down', (f) => f.type === FrameType.ACK || f.type === FrameType.ERROR || f.type === FrameType.BUSY, 3000, from));
    }
    sub.send(FrameType.PING, 'flush');
    await waitForFrame(sub, 'PONG', (f) => f.type === FrameType.PONG);
    const delivered = messages(sub).length;
    check(answers.every(isError('UNAVAILABLE')) && delivered === 0, 'A PUBLISH the journal did not store was delivered, or took its publish slot with it.', {
      observed: `3 PUBLISHes, one at a time, with the journal down and 1 publish slot: answers [${answers.map((f) => `${typeName(f.type)} "${text(f).slice(0, 40)}..."`).join(', ')}]; the subscriber received ${delivered} MESSAGE(s)`,
      expected: 'ERROR "UNAVAILABLE ..." each time (not BUSY: a failed publish gives its slot back), and no MESSAGE: an ACK means stored, so nothing unstored goes out',
      idea: 'every path out of a publish, failures included, releases what it took; and with a journal, stored comes before delivered',
    });
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
    // Refused ones are not published.
    pub.send(FrameType.PUBLISH, topicBody('not a topic', 'x'));
    await waitForFrame(pub, 'ERROR "BAD_TOPIC ..."', isError('BAD_TOPIC'));
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
        expected: '200s, and connections 2, subscriptions 1, topics 1, published 3 (the 4th PUBLISH was refused BAD_TOPIC), 3 publish-to-ACK observations',
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
    // A 250 ms heartbeat and a 600 ms window: the faulty subscribers are still gone well
    // within the 4 s this test gives them, and a healthy one survives the gateway's process
    // being kept off the CPU for a while on a loaded machine (its PONGs then wait in the
    // kernel while the sweep runs late).
    const gw = await start({ heartbeatMs: 250, heartbeatWindowMs: 600, frameMs: 200, maxQueuedBytes: 256 * 1024, writeMs: 1000 });
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

// Last: a child process under tsx is the slowest thing here, so a mistake caught by any
// cheaper test above is caught before it.
describe('the real process', () => {
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
    // A client that does not close its side when told to: it keeps the drain going until
    // it leaves, so /readyz can be asked during the drain.
    const lingerer = await h.connect(port, { allowHalfOpen: true });
    process.kill(child.pid, 'SIGTERM');
    let draining = 0;
    for (const until = performance.now() + 2000; draining !== 503 && performance.now() < until; ) {
      draining = (await scrape(metricsPort, '/readyz').catch(() => ({ status: -1 }))).status;
      if (draining !== 503) await new Promise((r) => setTimeout(r, 20));
    }
    lingerer.destroy();
    check(draining === 503, '/readyz still said ready while the gateway was draining.', {
      observed: `after SIGTERM, while a client still held the drain open, /readyz answered ${draining === -1 ? 'nothing (the metrics port was gone)' : draining} for 2000 ms`,
      expected: '503 from the moment the drain begins, until the process exits',
      idea: 'readiness turns false first, so the load balancer stops sending clients before the gateway stops accepting them',
    });
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
