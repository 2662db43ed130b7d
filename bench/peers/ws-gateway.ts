// The gateway over WebSocket, with the `ws` package: what a Node developer most often
// reaches for to push messages to clients. It is in the bench to answer "why not just use
// ws?" with numbers: same pub/sub, same frames, written the way ws's README shows.
//
// Each WebSocket binary message carries exactly one whole frame, the same bytes as on TCP
// (4-byte length, type byte, body), so the bench's load generator decodes both the same
// way. WebSocket already delimits messages; the length prefix is redundant here, and kept
// only so the bytes match.
import type { AddressInfo } from 'node:net';
import { WebSocketServer, WebSocket, type RawData } from 'ws';
import { encodeFrame, FrameDecoder, FrameType, MAX_FRAME_BYTES, type Frame } from '../../solutions/02-framing/codec.ts';
import { parseHello, tokenMatches } from '../../solutions/09-gateway/auth.ts';
import { decodeTopicBody, topicProblem } from '../../solutions/09-gateway/topics.ts';
import { peerFlags } from './flags.ts';

const { port, token, heartbeatMs } = peerFlags();

/** A client, with the flag the README's heartbeat keeps on it. */
interface Peer extends WebSocket {
  isAlive: boolean;
}

// WebSocket close codes: 1008 "policy violation" for a client that is not let in, 1002
// "protocol error" for one whose message is not a frame.
const POLICY_VIOLATION = 1008;
const PROTOCOL_ERROR = 1002;

const wss = new WebSocketServer({
  host: '127.0.0.1',
  port,
  // Off on purpose (it is also ws's server default, but a client asks for it by default,
  // and one flipped option would change the whole comparison): permessage-deflate costs
  // CPU per message and a zlib context, tens of KiB, per connection, and the other
  // servers in the bench do not compress.
  perMessageDeflate: false,
});

// The topic registry: topic -> the clients subscribed.
const registry = new Map<string, Set<WebSocket>>();
let nextMessageId = 1;
let nextConnection = 1;

function leave(topic: string, ws: WebSocket): void {
  const subscribers = registry.get(topic);
  if (!subscribers) return;
  subscribers.delete(ws);
  if (subscribers.size === 0) registry.delete(topic);
}

wss.on('connection', (socket) => {
  const ws = socket as Peer;
  const session = `c${nextConnection++}`;
  let authenticated = false;
  const topics = new Set<string>();
  // One decoder per client, as on TCP, so both paths copy a frame the same way.
  const decoder = new FrameDecoder();

  // The README's heartbeat, part one: alive until a ping goes unanswered.
  ws.isAlive = true;
  ws.on('pong', () => {
    ws.isAlive = true;
  });
  ws.on('error', () => {}); // 'close' follows and cleans up
  ws.on('close', () => {
    for (const topic of topics) leave(topic, ws);
    topics.clear();
  });

  const send = (type: number, body: Buffer | string = Buffer.alloc(0)) => ws.send(encodeFrame(type, body));
  /** ERROR, then the WebSocket closing handshake. */
  const hangUp = (reason: string, code: number) => {
    send(FrameType.ERROR, reason);
    ws.close(code);
  };

  ws.on('message', (data: RawData, isBinary: boolean) => {
    if (ws.readyState !== WebSocket.OPEN) return; // we are hanging up: read nothing more
    // binaryType is 'nodebuffer' (the default), so a binary message arrives as a Buffer.
    if (!isBinary || !Buffer.isBuffer(data)) return hangUp('PROTOCOL a message is binary and holds one frame', PROTOCOL_ERROR);
    let frames: Frame[];
    try {
      frames = decoder.push(data);
    } catch (err) {
      return hangUp(`PROTOCOL ${(err as Error).message}`, PROTOCOL_ERROR);
    }
    // Exactly one whole frame: not none, not two, not one and a piece.
    const frame = frames[0];
    if (frames.length !== 1 || !frame || decoder.bufferedBytes !== 0) {
      return hangUp('PROTOCOL a message holds exactly one whole frame', PROTOCOL_ERROR);
    }
    onFrame(frame);
  });

  function onFrame(frame: Frame): void {
    if (!authenticated) return hello(frame);
    switch (frame.type) {
      case FrameType.PING:
        // Our protocol's PING, a frame inside a message: not the same thing as the
        // WebSocket ping below, which ws answers by itself.
        return send(FrameType.PONG, frame.body);
      case FrameType.PONG:
        return;
      case FrameType.SUBSCRIBE:
        return subscribe(frame.body.toString('utf8'));
      case FrameType.UNSUBSCRIBE:
        return unsubscribe(frame.body.toString('utf8'));
      case FrameType.PUBLISH:
        return publish(frame.body);
      case FrameType.HELLO:
        return send(FrameType.ERROR, 'PROTOCOL HELLO was already accepted on this connection');
      default:
        return send(FrameType.ERROR, `UNSUPPORTED frame type ${frame.type} is not handled by this gateway`);
    }
  }

  function hello(frame: Frame): void {
    if (frame.type !== FrameType.HELLO) return hangUp('UNAUTHORIZED say HELLO with your token first', POLICY_VIOLATION);
    const hello = parseHello(frame.body);
    if (!hello) return hangUp('UNAUTHORIZED a HELLO body is JSON: {"token": "...", "client": "..."}', POLICY_VIOLATION);
    if (!tokenMatches(hello.token, token)) return hangUp('UNAUTHORIZED wrong token', POLICY_VIOLATION);
    authenticated = true;
    send(FrameType.HELLO, JSON.stringify({ server: 'ws-gateway', session, heartbeatMs, maxFrameBytes: MAX_FRAME_BYTES }));
  }

  function subscribe(topic: string): void {
    const problem = topicProblem(topic);
    if (problem) return send(FrameType.ERROR, `BAD_TOPIC ${problem}`);
    let subscribers = registry.get(topic);
    if (!subscribers) registry.set(topic, (subscribers = new Set()));
    subscribers.add(ws);
    topics.add(topic);
    send(FrameType.ACK, `SUBSCRIBE ${topic}`);
  }

  function unsubscribe(topic: string): void {
    const problem = topicProblem(topic);
    if (problem) return send(FrameType.ERROR, `BAD_TOPIC ${problem}`);
    topics.delete(topic);
    leave(topic, ws);
    send(FrameType.ACK, `UNSUBSCRIBE ${topic}`);
  }

  function publish(body: Buffer): void {
    const parsed = decodeTopicBody(body);
    if (!parsed) return send(FrameType.ERROR, 'BAD_FRAME a PUBLISH body is a u16 topic length, the topic, then the message');
    const problem = topicProblem(parsed.topic);
    if (problem) return send(FrameType.ERROR, `BAD_TOPIC ${problem}`);
    const id = nextMessageId++;
    // The README's broadcast: loop over the subscribers and send to each one that is
    // open. The frame is built once and the same Buffer handed to every send(). Nothing
    // checks ws.bufferedAmount: like most code written with ws, a client that stops
    // reading just makes its buffer grow.
    const message = encodeFrame(FrameType.MESSAGE, body);
    let delivered = 0;
    for (const client of registry.get(parsed.topic) ?? []) {
      if (client.readyState === WebSocket.OPEN) {
        client.send(message);
        delivered++;
      }
    }
    send(FrameType.ACK, `PUBLISH ${id} ${delivered}`);
  }
});

// The README's heartbeat, part two: one interval for all clients. A client that did not
// answer the last ping is terminated; every other one is marked and pinged again. Only a
// WebSocket pong counts as life here, not our frames; a dead client goes after one to
// two intervals.
const heartbeat = setInterval(() => {
  for (const client of wss.clients) {
    const ws = client as Peer;
    if (ws.isAlive === false) {
      ws.terminate();
      continue;
    }
    ws.isAlive = false;
    ws.ping();
  }
}, heartbeatMs);
wss.on('close', () => clearInterval(heartbeat));

wss.on('listening', () => {
  const { port } = wss.address() as AddressInfo;
  console.error(`gateway on 127.0.0.1:${port}`);
});

// SIGTERM or Ctrl-C: cut every client and close the server. ws's close() leaves open
// connections alone, and its callback waits for all of them, so terminate them first.
let stopping = false;
function stop(): void {
  if (stopping) return;
  stopping = true;
  for (const client of wss.clients) client.terminate();
  wss.close(() => process.exit(0));
}
process.once('SIGTERM', stop);
process.once('SIGINT', stop);
