// The fuzzer's properties: the lesson-02 decoder and the topic body on their own, then
// the gateway's frame handlers through real sockets, with random and mutated frames cut
// at random places, several clients at once, and random ways of leaving.
import fc from 'fast-check';
import { EmptyFrameError, FrameDecoder, FrameTooLargeError, encodeFrame } from '../solutions/02-framing/codec.ts';
import type { Gateway, GatewayOptions } from '../solutions/09-gateway/gateway.ts';
import { decodeTopicBody, encodeTopicBody, topicProblem } from '../solutions/09-gateway/topics.ts';
import { describeFrame, FrameType, type Frame } from '../runtime/protocol.ts';
import { connect, type TestClient } from '../runtime/harness/client.ts';
import { waitUntil } from '../runtime/harness/eventually.ts';
import { encodeRequest, expect, TOKEN, type Expected, type Request } from './model.ts';

/** Cuts `bytes` into pieces of the given sizes (cycled), as TCP may deliver them. */
function cut(bytes: Buffer, sizes: number[]): Buffer[] {
  const pieces: Buffer[] = [];
  for (let at = 0, i = 0; at < bytes.length; i++) {
    const size = sizes[i % sizes.length]!;
    pieces.push(bytes.subarray(at, at + size));
    at += size;
  }
  return pieces;
}

const sizes = fc.array(fc.integer({ min: 1, max: 64 }), { minLength: 1, maxLength: 20 });

/** Whole frames, however they are cut, come out of the decoder whole and in order. */
export const decoderRoundTrip = fc.property(
  fc.array(fc.tuple(fc.integer({ min: 0, max: 255 }), fc.uint8Array({ maxLength: 300 })), { maxLength: 12 }),
  sizes,
  (frames, pieces) => {
    const decoder = new FrameDecoder();
    const stream = Buffer.concat(frames.map(([type, body]) => encodeFrame(type, Buffer.from(body))));
    const out = cut(stream, pieces).flatMap((piece) => decoder.push(piece));
    if (out.length !== frames.length) throw new Error(`${frames.length} frames in, ${out.length} out`);
    out.forEach((frame, i) => {
      const [type, body] = frames[i]!;
      if (frame.type !== type || !frame.body.equals(Buffer.from(body))) throw new Error(`frame ${i} changed: ${describeFrame(frame)}`);
    });
    if (decoder.bufferedBytes !== 0) throw new Error(`${decoder.bufferedBytes} bytes left over after whole frames`);
  },
);

/**
 * Any bytes at all: the decoder hands out frames no larger than its maximum, or says the
 * stream broke the protocol with one of its two documented errors, and nothing else.
 */
export const decoderHostile = fc.property(
  fc.oneof(
    fc.uint8Array({ maxLength: 400 }),
    // Mutated valid streams: a byte flipped somewhere in real frames.
    fc.tuple(fc.array(fc.uint8Array({ maxLength: 60 }), { minLength: 1, maxLength: 5 }), fc.nat(), fc.integer({ min: 0, max: 255 })).map(([bodies, at, value]) => {
      const stream = Buffer.concat(bodies.map((b) => encodeFrame(FrameType.DATA, Buffer.from(b))));
      stream[at % stream.length] = value;
      return new Uint8Array(stream);
    }),
  ),
  sizes,
  (bytes, pieces) => {
    const max = 256;
    const decoder = new FrameDecoder(max);
    for (const piece of cut(Buffer.from(bytes), pieces)) {
      let frames: Frame[];
      try {
        frames = decoder.push(piece);
      } catch (err) {
        if (err instanceof FrameTooLargeError || err instanceof EmptyFrameError) return;
        throw err;
      }
      for (const frame of frames) if (frame.body.length + 1 > max) throw new Error(`a frame of ${frame.body.length + 1} bytes passed a maximum of ${max}`);
    }
  },
);

/** A PUBLISH body never throws when read, and a good one reads back as written. */
export const topicBodies = fc.property(fc.uint8Array({ maxLength: 80 }), fc.stringMatching(/^[A-Za-z0-9._-]{1,20}$/), fc.uint8Array({ maxLength: 40 }), (junk, topic, message) => {
  const parsed = decodeTopicBody(Buffer.from(junk));
  if (parsed && 2 + Buffer.byteLength(parsed.topic) > junk.length + 3 * parsed.topic.length) throw new Error('a topic longer than the body');
  if (topicProblem(topic)) throw new Error(`"${topic}" is a good topic, refused: ${topicProblem(topic)}`);
  const back = decodeTopicBody(encodeTopicBody(topic, Buffer.from(message)));
  if (!back || back.topic !== topic || !back.message.equals(Buffer.from(message))) throw new Error('a PUBLISH body did not read back as written');
});

const topic = fc.oneof(fc.constantFrom('a', 'b', 'orders.eu-1'), fc.constantFrom('', 'has space', 'x'.repeat(129), 'é', 'a/b'), fc.string({ maxLength: 6 }));
const request: fc.Arbitrary<Request> = fc.oneof(
  { weight: 3, arbitrary: fc.record({ kind: fc.constant('hello' as const), token: fc.constantFrom(TOKEN, TOKEN, TOKEN, 'wrong', ''), json: fc.oneof(fc.constant(true), fc.boolean()) }) },
  { weight: 3, arbitrary: fc.record({ kind: fc.constantFrom('subscribe' as const, 'unsubscribe' as const), topic }) },
  { weight: 3, arbitrary: fc.record({ kind: fc.constant('publish' as const), topic, message: fc.uint8Array({ maxLength: 40 }), truncated: fc.boolean() }) },
  { weight: 1, arbitrary: fc.record({ kind: fc.constant('ping' as const), body: fc.uint8Array({ maxLength: 8 }) }) },
  { weight: 1, arbitrary: fc.record({ kind: fc.constant('unknown' as const), type: fc.constantFrom(0x00, 0x04, 0x05, 0x0c, 0x0d, 0x7f, 0xff), body: fc.uint8Array({ maxLength: 8 }) }) },
  { weight: 1, arbitrary: fc.record({ kind: fc.constant('badLength' as const), zero: fc.boolean() }) },
);
// Most sessions start with a good HELLO, so that the handlers behind it are reached.
const session = fc.tuple(fc.boolean(), fc.array(request, { maxLength: 8 })).map(([greet, rest]) => (greet ? [{ kind: 'hello', token: TOKEN, json: true } as Request, ...rest] : rest));
const gatewayCase = fc.record({
  sessions: fc.array(session, { minLength: 1, maxLength: 3 }),
  piece: fc.integer({ min: 1, max: 48 }),
  leave: fc.constantFrom('end' as const, 'reset' as const),
});

// ERRORs with these codes answer SUBSCRIBE, UNSUBSCRIBE or PUBLISH, in order.
const ORDERED_ERRORS = /^(BAD_TOPIC|BAD_FRAME) /;
const isOrdered = (frame: Frame) => frame.type === FrameType.ACK || (frame.type === FrameType.ERROR && ORDERED_ERRORS.test(frame.body.toString()));
const matches = (frame: Frame, e: Expected) => frame.type === e.type && e.body.test(frame.body.toString());

/** What is wrong with what one client received, or undefined. */
function judge(requests: Request[], client: TestClient): string | undefined {
  const state = { authenticated: false };
  const expected: Expected[] = [];
  for (const [i, r] of requests.entries()) {
    let e = expect(state, r);
    // The decoder refuses a whole read when a bad length header is in it, frames before
    // the header included (lesson 02 throws from push()). So when a bad header follows
    // the request that closes the connection, it may arrive in the same read and be the
    // reason given instead. (A finding of this fuzzer: see fuzz/README.md.)
    if (e?.closes && requests.slice(i + 1).some((later) => later.kind === 'badLength')) e = { ...e, body: new RegExp(`${e.body.source}|^PROTOCOL `) };
    if (e) expected.push(e);
    if (e?.closes) break;
  }
  const closes = expected.some((e) => e.closes);
  const received = client.frames.filter((f) => f.type !== FrameType.MESSAGE);
  const show = () => `sent ${JSON.stringify(requests.map((r) => r.kind))}; received ${received.map(describeFrame).join(', ') || 'nothing'}; closed: ${client.closed}`;
  if (client.protocolError) return `the gateway's bytes broke the protocol (${client.protocolError.message}): ${show()}`;
  if (closes !== client.closed) return `${closes ? 'expected the gateway to close' : 'the gateway closed a connection it should keep'}: ${show()}`;
  const orderedIn = received.filter(isOrdered);
  const orderedOut = expected.filter((e) => e.ordered);
  // After a closing error, the requests sent before it may or may not have been answered
  // (the gateway stops reading at the bad frame): what came must be a prefix.
  if (closes ? orderedIn.length > orderedOut.length : orderedIn.length !== orderedOut.length) return `${orderedIn.length} answers to SUBSCRIBE/UNSUBSCRIBE/PUBLISH for ${orderedOut.length} requests: ${show()}`;
  for (let i = 0; i < orderedIn.length; i++) if (!matches(orderedIn[i]!, orderedOut[i]!)) return `answer ${i + 1} is ${describeFrame(orderedIn[i]!)}, expected ${orderedOut[i]!.body}: ${show()}`;
  // The closing answer first: an ERROR that could be either it or an earlier one is it.
  const others = expected.filter((e) => !e.ordered).sort((a, b) => Number(b.closes) - Number(a.closes));
  for (const frame of received.filter((f) => !isOrdered(f))) {
    const at = others.findIndex((e) => matches(frame, e));
    if (at < 0) return `${describeFrame(frame)} answers nothing that was sent: ${show()}`;
    others.splice(at, 1);
  }
  const missing = others.filter((e) => e.closes || !closes);
  if (missing.length) return `no ${missing.map((e) => e.body).join(', ')}: ${show()}`;
  return undefined;
}

/** The gateway's handlers, fuzzed: returns the property, to run against `gateway()`. */
export function gatewaySessions(gateway: () => Gateway) {
  return fc.asyncProperty(gatewayCase, async ({ sessions, piece, leave }) => {
    const gw = gateway();
    const clients = await Promise.all(sessions.map(() => connect(gw.port)));
    // Each session's bytes cut into pieces of `piece` bytes, one write each.
    sessions.forEach((requests, i) => {
      const bytes = Buffer.concat(requests.map(encodeRequest));
      for (let at = 0; at < bytes.length; at += piece) clients[i]!.socket.write(bytes.subarray(at, at + piece));
    });
    try {
      // Wait for each client's answers (or its close), then judge it.
      const problems = await Promise.all(
        sessions.map(async (requests, i) => {
          const client = clients[i]!;
          await waitUntil(() => judge(requests, client) === undefined, 2000);
          return judge(requests, client);
        }),
      );
      const problem = problems.find(Boolean);
      if (problem) throw new Error(problem);
    } finally {
      await Promise.all(clients.map((c) => (leave === 'reset' ? c.reset() : c.close(2000))));
    }
    // Whatever happened, nothing of these clients is left in the gateway.
    await waitUntil(() => gw.connections === 0, 2000);
    if (gw.connections !== 0 || gw.topics !== 0 || gw.subscriptions !== 0) {
      throw new Error(`after every client left: ${gw.connections} connections, ${gw.topics} topics, ${gw.subscriptions} subscriptions still registered`);
    }
  });
}

/**
 * A gateway for the fuzzer, the reference one or (`mine`) the learner's: limits out of the
 * way (one address, thousands of clients), no heartbeat mid-case.
 */
export async function startFuzzGateway(mine = false): Promise<Gateway> {
  const tree = mine ? 'lessons' : 'solutions';
  const { startGateway } = (await import(`../${tree}/09-gateway/gateway.ts`)) as { startGateway: (o: GatewayOptions) => Promise<Gateway> };
  return startGateway({ token: TOKEN, heartbeatMs: 60_000, connectBurst: 1e9, connectPerSecond: 1e9, publishBurst: 1e9, publishPerSecond: 1e9 });
}
