// The naive gateway: the bench's baseline. It speaks the same frames and the same gateway
// protocol as solutions/09-gateway, and it is correct on the happy path, but it is built
// the way most people first build it. Three choices make it so, each marked below:
//
//   (a) two timers per connection for the heartbeat, instead of one sweep for all
//   (b) a fan-out that awaits each subscriber's write before it moves to the next
//   (c) no bounds anywhere: no backpressure, no slow-consumer cut, no caps, no rates
//
// The bench runs it next to the reference gateway so the cost of each choice shows up as
// a number, not an opinion.
import net from 'node:net';
import { encodeFrame, FrameType, MAX_FRAME_BYTES, type Frame } from '../../solutions/02-framing/codec.ts';
import { readFrames, type FrameReader } from '../../solutions/02-framing/read-frames.ts';
import { parseHello, tokenMatches } from '../../solutions/09-gateway/auth.ts';
import { decodeTopicBody, topicProblem } from '../../solutions/09-gateway/topics.ts';
import { peerFlags } from './flags.ts';

const { port, token, heartbeatMs } = peerFlags();

/** What the gateway keeps for one connection; all of it goes on 'close'. */
interface Connection {
  id: string;
  socket: net.Socket;
  frames: FrameReader;
  authenticated: boolean;
  /** This connection's topics, so 'close' can take it out of the registry. */
  topics: Set<string>;
  /** Requests are handled one after another, so their answers come back in order. */
  turn: Promise<void>;
  /** (a) This connection's own PING timer, started by its HELLO. */
  pinger: NodeJS.Timeout | undefined;
}

// The topic registry, as a first version writes it: topic -> the sockets subscribed.
// It is naive, not leaky: 'close' takes a connection out of every topic it joined.
const registry = new Map<string, Set<net.Socket>>();
const connections = new Set<Connection>();
let nextMessageId = 1;
let nextConnection = 1;

// (c) No bounds: every frame goes straight to socket.write. Its return value (false when
// the socket's buffer is over the high-water mark) is ignored, so a client that stops
// reading makes this process hold everything sent to it, without limit.
function send(connection: Connection, type: number, body: Buffer | string = Buffer.alloc(0)): void {
  connection.socket.write(encodeFrame(type, body));
}

/** ERROR, then hang up: no more frames are read from this client. */
function hangUp(connection: Connection, reason: string): void {
  connection.frames.stop();
  connection.socket.end(encodeFrame(FrameType.ERROR, reason));
}

// (c) No connection cap and no per-IP connect rate: every connection is taken. noDelay
// is on, as in the reference and in ws, so the bench measures the three choices above
// and not Nagle's algorithm.
const server = net.createServer({ noDelay: true }, (socket) => {
  socket.on('error', () => {}); // 'close' follows and cleans up

  const connection: Connection = {
    id: `c${nextConnection++}`,
    socket,
    frames: readFrames(socket, (frame) => onFrame(connection, frame)),
    authenticated: false,
    topics: new Set(),
    turn: Promise.resolve(),
    pinger: undefined,
  };
  connections.add(connection);

  // (a) A timer per connection, the way a first version does the heartbeat: its own
  // setTimeout that destroys the socket after 2 x heartbeatMs of silence, cleared and set
  // again on every 'data' event. With 50 000 clients that is 50 000 timers, re-armed on
  // every chunk read. (Armed from the start, it also drops a client that never speaks.)
  let silence = setTimeout(() => socket.destroy(), 2 * heartbeatMs);
  socket.on('data', () => {
    clearTimeout(silence);
    silence = setTimeout(() => socket.destroy(), 2 * heartbeatMs);
  });
  // (Its PING timer, the second one, starts at HELLO: see hello() below.)

  socket.once('close', () => {
    clearTimeout(silence);
    clearInterval(connection.pinger);
    connections.delete(connection);
    for (const topic of connection.topics) leave(topic, socket);
    connection.topics.clear();
  });
});

function leave(topic: string, socket: net.Socket): void {
  const subscribers = registry.get(topic);
  if (!subscribers) return;
  subscribers.delete(socket);
  if (subscribers.size === 0) registry.delete(topic);
}

function onFrame(connection: Connection, frame: Frame): void {
  if (!connection.authenticated) return hello(connection, frame);
  switch (frame.type) {
    case FrameType.PING:
      return send(connection, FrameType.PONG, frame.body);
    case FrameType.PONG:
      return; // the bytes already re-armed the silence timer
    case FrameType.SUBSCRIBE:
    case FrameType.UNSUBSCRIBE:
    case FrameType.PUBLISH:
      // One request at a time per connection, so ACKs come back in the order asked. It
      // also means a publisher's next PUBLISH waits for the whole fan-out of this one.
      connection.turn = connection.turn
        .then(() => request(connection, frame))
        .catch((err: Error) => send(connection, FrameType.ERROR, `INTERNAL ${err.message}`));
      return;
    case FrameType.HELLO:
      return send(connection, FrameType.ERROR, 'PROTOCOL HELLO was already accepted on this connection');
    default:
      return send(connection, FrameType.ERROR, `UNSUPPORTED frame type ${frame.type} is not handled by this gateway`);
  }
}

function hello(connection: Connection, frame: Frame): void {
  if (frame.type !== FrameType.HELLO) return hangUp(connection, 'UNAUTHORIZED say HELLO with your token first');
  const hello = parseHello(frame.body);
  if (!hello) return hangUp(connection, 'UNAUTHORIZED a HELLO body is JSON: {"token": "...", "client": "..."}');
  if (!tokenMatches(hello.token, token)) return hangUp(connection, 'UNAUTHORIZED wrong token');
  connection.authenticated = true;
  // (a) ...and its own setInterval for the PINGs: a second timer per connection.
  connection.pinger = setInterval(() => send(connection, FrameType.PING), heartbeatMs);
  send(connection, FrameType.HELLO, JSON.stringify({ server: 'naive-gateway', session: connection.id, heartbeatMs, maxFrameBytes: MAX_FRAME_BYTES }));
}

async function request(connection: Connection, frame: Frame): Promise<void> {
  if (frame.type === FrameType.PUBLISH) return publish(connection, frame.body);
  const topic = frame.body.toString('utf8');
  const problem = topicProblem(topic);
  if (problem) return send(connection, FrameType.ERROR, `BAD_TOPIC ${problem}`);
  if (frame.type === FrameType.SUBSCRIBE) {
    // (c) No cap on subscriptions per connection either.
    let subscribers = registry.get(topic);
    if (!subscribers) registry.set(topic, (subscribers = new Set()));
    subscribers.add(connection.socket);
    connection.topics.add(topic);
    return send(connection, FrameType.ACK, `SUBSCRIBE ${topic}`);
  }
  connection.topics.delete(topic);
  leave(topic, connection.socket);
  send(connection, FrameType.ACK, `UNSUBSCRIBE ${topic}`);
}

/** Resolves once the socket has handed `frame` to the kernel (or failed to). */
function written(socket: net.Socket, frame: Buffer): Promise<boolean> {
  return new Promise((resolve) => socket.write(frame, (err) => resolve(!err)));
}

async function publish(connection: Connection, body: Buffer): Promise<void> {
  const parsed = decodeTopicBody(body);
  if (!parsed) return send(connection, FrameType.ERROR, 'BAD_FRAME a PUBLISH body is a u16 topic length, the topic, then the message');
  const problem = topicProblem(parsed.topic);
  if (problem) return send(connection, FrameType.ERROR, `BAD_TOPIC ${problem}`);
  const id = nextMessageId++;

  // (b) The fan-out a first version writes: await each subscriber's write before going
  // on to the next, "to be sure it was sent". One subscriber that reads slowly (or not at
  // all) holds up every subscriber after it, and the publisher's ACK, and, through the
  // per-connection turn, the publisher's next request. The MESSAGE frame is also encoded
  // again for every subscriber, though its bytes are the same for all of them.
  let delivered = 0;
  for (const subscriber of [...(registry.get(parsed.topic) ?? [])]) {
    const message = encodeFrame(FrameType.MESSAGE, body);
    if (await written(subscriber, message)) delivered++;
  }
  send(connection, FrameType.ACK, `PUBLISH ${id} ${delivered}`);
}

server.listen(port, '127.0.0.1', () => {
  const { port } = server.address() as net.AddressInfo;
  console.error(`gateway on 127.0.0.1:${port}`);
});

// SIGTERM or Ctrl-C: stop listening, cut every connection, and exit 0 once the listener
// has closed. (No GOAWAY and no drain: that is lesson 08, and not what the bench measures.)
let stopping = false;
function stop(): void {
  if (stopping) return;
  stopping = true;
  server.close(() => process.exit(0));
  for (const connection of connections) connection.socket.destroy();
}
process.once('SIGTERM', stop);
process.once('SIGINT', stop);
