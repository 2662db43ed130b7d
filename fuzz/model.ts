// What the gateway must answer, from lessons/PROTOCOL.md alone: the fuzzer's oracle. A
// request is one of the things a client can send, good or bad; the model says what comes
// back and whether the connection survives it.
import { encode, FrameType, HEADER_BYTES, MAX_FRAME_BYTES } from '../runtime/protocol.ts';

export const TOKEN = 'fuzz-token';

export type Request =
  | { kind: 'hello'; token: string; json: boolean }
  | { kind: 'subscribe' | 'unsubscribe'; topic: string }
  | { kind: 'publish'; topic: string; message: Uint8Array; truncated: boolean }
  | { kind: 'ping'; body: Uint8Array }
  | { kind: 'unknown'; type: number; body: Uint8Array }
  | { kind: 'badLength'; zero: boolean };

/** An answer the client must see: ordered ones match requests by counting, the others may come between. */
export interface Expected {
  ordered: boolean;
  /** The frame type, and a test on its body. */
  type: number;
  body: RegExp;
  /** The gateway closes the connection after it. */
  closes: boolean;
}

const TOPIC_RULE = /^[A-Za-z0-9._-]{1,128}$/;
const validTopic = (topic: string) => TOPIC_RULE.test(topic) && Buffer.byteLength(topic) <= 128;
const escape = (text: string) => text.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');

export function encodeRequest(request: Request): Buffer {
  switch (request.kind) {
    case 'hello':
      return encode(FrameType.HELLO, request.json ? JSON.stringify({ token: request.token, client: 'fuzz' }) : `token=${request.token}`);
    case 'subscribe':
      return encode(FrameType.SUBSCRIBE, request.topic);
    case 'unsubscribe':
      return encode(FrameType.UNSUBSCRIBE, request.topic);
    case 'publish': {
      const topic = Buffer.from(request.topic);
      const body = Buffer.concat([Buffer.from([topic.length >> 8, topic.length & 0xff]), topic, request.message]);
      // A truncated body claims a topic longer than what follows.
      if (request.truncated) body.writeUInt16BE(body.length, 0);
      return encode(FrameType.PUBLISH, body);
    }
    case 'ping':
      return encode(FrameType.PING, Buffer.from(request.body));
    case 'unknown':
      return encode(request.type, Buffer.from(request.body));
    case 'badLength': {
      const header = Buffer.alloc(HEADER_BYTES + 1);
      header.writeUInt32BE(request.zero ? 0 : MAX_FRAME_BYTES + 1, 0);
      return header;
    }
  }
}

/** The answer to `request` from a client in `state` (which it updates), or undefined for none. */
export function expect(state: { authenticated: boolean }, request: Request): Expected | undefined {
  const error = (code: string, closes: boolean, ordered = false): Expected => ({ ordered, type: FrameType.ERROR, body: new RegExp(`^${code} `), closes });
  if (request.kind === 'badLength') return error('PROTOCOL', true);
  if (!state.authenticated) {
    if (request.kind === 'hello' && request.json && request.token === TOKEN) {
      state.authenticated = true;
      return { ordered: false, type: FrameType.HELLO, body: /^\{/, closes: false };
    }
    return error('UNAUTHORIZED', true);
  }
  switch (request.kind) {
    case 'hello':
      return error('PROTOCOL', false);
    case 'subscribe':
    case 'unsubscribe':
      return validTopic(request.topic)
        ? { ordered: true, type: FrameType.ACK, body: new RegExp(`^${request.kind.toUpperCase()} ${escape(request.topic)}$`), closes: false }
        : error('BAD_TOPIC', false, true);
    case 'publish':
      if (request.truncated) return error('BAD_FRAME', false, true);
      if (!validTopic(request.topic)) return error('BAD_TOPIC', false, true);
      return { ordered: true, type: FrameType.ACK, body: /^PUBLISH \d+ \d+$/, closes: false };
    case 'ping':
      return { ordered: false, type: FrameType.PONG, body: /[^]*/, closes: false };
    case 'unknown':
      return error('UNSUPPORTED', false);
  }
}
