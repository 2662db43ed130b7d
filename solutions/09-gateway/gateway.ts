// The push gateway: clients say HELLO with a token, SUBSCRIBE to topics, and PUBLISH
// messages that the gateway fans out to every subscriber of the topic as MESSAGE frames.
// The protocol is in lessons/PROTOCOL.md.
//
// This file is the composition root. It owns what is new here (sessions, the topic
// registry, authentication) and wires in the modules of the earlier lessons, each doing
// the one job its lesson taught:
//
//   02 framing        readFrames, encodeFrame     every byte in and out
//   03 deadlines      DeadlineSweep               HELLO, frame and write deadlines
//   04 heartbeat      Heartbeat                   PING every client, drop the silent
//   05 single writer  FrameWriter                 one queue per client, bounded in bytes
//   06 limits         Admission, KeyedRate,       connection cap and per-IP rates,
//                     Semaphore, fd budget        publish work in flight
//   07 pooling        createPool                  the journal upstream (--journal)
//   08 shutdown       drain                       GOAWAY, flush, close, on time
import net from 'node:net';
import pino, { type Logger } from 'pino';
import { typeName } from '#protocol';
import { encodeFrame, FrameType, MAX_FRAME_BYTES, type Frame } from '../02-framing/codec.ts';
import { readFrames, type FrameReader } from '../02-framing/read-frames.ts';
import { DeadlineSweep, type ConnectionDeadlines } from '../03-deadlines/deadlines.ts';
import { Heartbeat } from '../04-heartbeat/heartbeat.ts';
import { DEFAULT_MAX_QUEUED_BYTES, FrameWriter } from '../05-single-writer/writer.ts';
import { Admission, KeyedRate } from '../06-limits/admission.ts';
import { readConnectionBudget } from '../06-limits/fd-limit.ts';
import { Semaphore } from '../06-limits/semaphore.ts';
import { drain } from '../08-graceful-shutdown/shutdown.ts';
import { parseHello, tokenMatches } from './auth.ts';
import { connectJournal, type Journal } from './journal.ts';
import { GatewayMetrics } from './metrics.ts';
import { decodeTopicBody, topicProblem, TopicRegistry } from './topics.ts';

export interface GatewayOptions {
  /** 0 (the default) lets the OS pick a free port. */
  port?: number;
  /** The shared secret every client must present in its HELLO. */
  token: string;
  /** Client connections at once. Default: what the open-file limit affords (lesson 06). */
  maxConnections?: number;
  /** New connections per client IP: a burst, then a rate per second. Defaults 20 and 5. */
  connectBurst?: number;
  connectPerSecond?: number;
  /** PUBLISH frames per client IP: a burst, then a rate per second. Defaults 1000 and 500. */
  publishBurst?: number;
  publishPerSecond?: number;
  /** Publishes worked on at once across all clients (they wait for the journal). Default 256. */
  maxPublishesInFlight?: number;
  /** How long a PUBLISH may wait for a slot before it is answered BUSY. Default 1000 ms. */
  publishQueueMs?: number;
  /** Topics one connection may subscribe to. Default 100. */
  maxSubscriptions?: number;
  /** The largest frame accepted. Default: the protocol's 1 MiB. */
  maxFrameBytes?: number;
  /** Bytes that may wait for one client before it is cut as a slow consumer. Default 1 MiB. */
  maxQueuedBytes?: number;
  /** A new connection must say HELLO within this. Default 5000 ms. */
  helloMs?: number;
  /** A frame must arrive whole within this once it has started. Default 10 000 ms. */
  frameMs?: number;
  /** What we write must be taken by the client within this. Default 10 000 ms. */
  writeMs?: number;
  /** Every client is pinged this often, and dropped after heartbeatWindowMs of silence. Defaults 5000 and 2 x. */
  heartbeatMs?: number;
  heartbeatWindowMs?: number;
  /** How long stop() lets clients finish before it cuts them. Default 10 000 ms. */
  graceMs?: number;
  /** Store each PUBLISH in a lesson-08 journal before it is acknowledged. */
  journal?: { host?: string; port: number };
  /** Structured logs. Default: none. */
  log?: Logger;
  /** Other gateways' topics: cluster workers (bus.ts) or Redis (redis-bus.ts). */
  bus?: TopicBus;
}

/**
 * How gateways share topics. Each message crosses the bus once and is fanned out locally
 * by every gateway with a subscriber; a gateway asks only for the topics it has.
 */
export interface TopicBus {
  /** This gateway's first subscriber of `topic` came (true), or its last one left (false). */
  interest(topic: string, wanted: boolean): void;
  /** A message published here (its MESSAGE body), for the other gateways. */
  publish(topic: string, body: Buffer): void;
  /** Set by the gateway: a message published on another gateway, to fan out here. */
  deliver?: (topic: string, body: Buffer) => void;
}

export interface Gateway {
  port: number;
  metrics: GatewayMetrics;
  /** Admitted connections open now. */
  readonly connections: number;
  /** Topics with a subscriber, and subscriptions in all. */
  readonly topics: number;
  readonly subscriptions: number;
  /** False once stop() has begun: /readyz says so, and new PUBLISHes are refused. */
  readonly ready: boolean;
  /** GOAWAY to all, refuse new work, flush every queue within graceMs, cut the rest. */
  stop(): Promise<void>;
}

/** One client connection: everything the gateway keeps for it, all dropped on 'close'. */
interface Session {
  /** "c17": on every log line about this connection. */
  id: string;
  ip: string;
  socket: net.Socket;
  /** Every frame to this client goes through here (lesson 05). */
  writer: FrameWriter;
  /** Its socket is corked until the end of this turn (see batch()). */
  corked: boolean;
  /** Its partial frame, for the frame deadline; stopped when we hang up. */
  frames: FrameReader;
  /** Its HELLO, frame and write deadlines, in the shared sweep (lesson 03). */
  deadlines: ConnectionDeadlines;
  /** Set by a good HELLO; nothing but HELLO is accepted before. */
  client: string | undefined;
  /** This connection's topics, to take it out of the registry when it goes. */
  topics: Set<string>;
  /** Replies go out in the order requests came in: each request waits for the one before. */
  turn: Promise<void>;
  /** Aborted on 'close': a publish waiting for a slot stops waiting. */
  gone: AbortController;
}

const SILENT = pino({ level: 'silent' }, { write() {} });

export async function startGateway(options: GatewayOptions): Promise<Gateway> {
  const log = options.log ?? SILENT;
  const maxFrameBytes = options.maxFrameBytes ?? MAX_FRAME_BYTES;
  const maxQueuedBytes = options.maxQueuedBytes ?? DEFAULT_MAX_QUEUED_BYTES;
  const maxSubscriptions = options.maxSubscriptions ?? 100;
  const helloMs = options.helloMs ?? 5000;
  const heartbeatMs = options.heartbeatMs ?? 5000;

  // Check the fd headroom before taking the first client, while we can still say why:
  // past the open-file limit, accept() fails and clients are dropped without a word.
  const fdBudget = readConnectionBudget();
  const maxConnections = options.maxConnections ?? fdBudget;
  if (maxConnections > fdBudget) {
    throw new Error(`max connections ${maxConnections} is more than the open-file limit leaves room for (${fdBudget}): raise it (ulimit -n) or lower --max-connections`);
  }

  const sessions = new Set<Session>();
  const registry = new TopicRegistry<Session>((topic, live) => options.bus?.interest(topic, live));
  const metrics = new GatewayMetrics(() => ({
    connections: admission.connections,
    subscriptions: registry.subscriptions,
    topics: registry.size,
    queuedBytes: [...sessions].reduce((sum, s) => sum + s.writer.queuedBytes, 0),
    ready: !shuttingDown.signal.aborted,
  }));

  // One timer for all connections' deadlines and one for all heartbeats: a gateway with
  // 50 000 clients runs two timers, not 100 000.
  const frameMs = options.frameMs ?? 10_000;
  const writeMs = options.writeMs ?? 10_000;
  const sweep = new DeadlineSweep({ tickMs: Math.max(10, Math.min(helloMs, frameMs, writeMs) / 10) });
  const heartbeat = new Heartbeat({ intervalMs: heartbeatMs, windowMs: options.heartbeatWindowMs ?? 2 * heartbeatMs });
  const admission = new Admission({
    maxConnections,
    connectBurst: options.connectBurst,
    connectPerSecond: options.connectPerSecond,
    onRefused: (reason) => {
      metrics.refusals.inc({ limit: reason.split(':')[0] });
      log.info({ reason }, 'connection refused');
    },
  });
  const publishRate = new KeyedRate({ capacity: options.publishBurst ?? 1000, refillPerSecond: options.publishPerSecond ?? 500 });
  const publishSlots = new Semaphore(options.maxPublishesInFlight ?? 256, options.maxPublishesInFlight ?? 256);
  const journal: Journal | undefined = options.journal ? connectJournal(options.journal) : undefined;

  // Aborted when shutdown begins: from then on a PUBLISH is refused, not half-done.
  const shuttingDown = new AbortController();
  // Publishes accepted and not yet acknowledged, across all clients. Shutdown waits for
  // them before it closes anyone: an ACK means "queued to every subscriber", so every
  // subscriber's connection must still be open when it is sent.
  let publishing = 0;
  let allPublished: Array<() => void> = [];
  const publishesDone = () => (publishing === 0 ? Promise.resolve() : new Promise<void>((resolve) => allPublished.push(resolve)));
  let nextMessageId = 1;
  let nextConnection = 1;

  // Every line about a connection carries its id, and its client once known. They go
  // through the root logger: a pino child per connection costs about 2 KB, and a
  // gateway holds tens of thousands of connections.
  function note(session: Session, level: 'debug' | 'info' | 'warn' | 'error', fields: object, message: string): void {
    if (log.isLevelEnabled(level)) log[level]({ conn: session.id, client: session.client, ...fields }, message);
  }

  // Frames for one client within one turn of the event loop go out in one write
  // (writev): a PUBLISH answered with a MESSAGE and an ACK costs one system call, not
  // two, and a subscriber sent ten messages in one turn gets them in one.
  let corked: Session[] = [];
  function batch(session: Session): void {
    if (session.corked) return;
    session.corked = true;
    session.socket.cork();
    if (corked.push(session) === 1) process.nextTick(flushBatches);
  }
  function flushBatches(): void {
    const sessions = corked;
    corked = [];
    for (const session of sessions) {
      session.corked = false;
      session.socket.uncork();
    }
  }

  /**
   * Queues a MESSAGE to every subscriber of `topic` on this gateway; returns how many
   * queues took it. A MESSAGE body is laid out like the PUBLISH body, so the frame is
   * built once and the same Buffer goes into every queue. A queue that refuses it has
   * cut its client (the slow-consumer policy); nobody waits for anybody.
   */
  function deliverHere(topic: string, body: Buffer): number {
    const message = encodeFrame(FrameType.MESSAGE, body);
    let delivered = 0;
    for (const subscriber of registry.subscribers(topic)) {
      batch(subscriber);
      if (subscriber.writer.sendFrame(message)) delivered++;
    }
    metrics.frameOut(FrameType.MESSAGE, message.length * delivered, delivered);
    return delivered;
  }

  function send(session: Session, type: number, body: Buffer | string = Buffer.alloc(0)): void {
    const frame = encodeFrame(type, body);
    batch(session);
    if (session.writer.sendFrame(frame)) metrics.frameOut(type, frame.length);
  }

  /** An ERROR frame; the connection stays open. */
  function refuse(session: Session, code: string, reason: string): void {
    metrics.errors.inc({ code });
    send(session, FrameType.ERROR, `${code} ${reason}`);
  }

  /**
   * An ERROR frame, then the connection is cut. It goes through the writer behind
   * anything queued, and once the kernel has it we destroy the socket: a client we are
   * turning away does not get to keep it open by never sending its FIN.
   */
  function hangUp(session: Session, code: string, reason: string): void {
    session.frames.stop();
    note(session, 'info', { code, reason }, 'hanging up');
    refuse(session, code, reason);
    void session.writer.drained().then(() => session.socket.destroy());
  }

  const server = net.createServer({ noDelay: true }, (socket) => {
    socket.on('error', () => {}); // 'close' follows and cleans up (lesson 01)
    // Counted from the first byte of the handshake, not from HELLO: a connection that
    // never authenticates still holds a socket and an fd.
    if (!admission.admit(socket)) return;
    open(socket);
  });

  function open(socket: net.Socket): void {
    const id = `c${nextConnection++}`;
    // (The callbacks below run later, once `session` exists: no byte or tick can arrive
    // before this function returns.)
    const frames = readFrames(socket, (frame) => onFrame(session, frame), {
      maxFrameBytes,
      onProtocolError: (message) => hangUp(session, 'PROTOCOL', message.replace(/^PROTOCOL /, '')),
    });
    const writer = new FrameWriter(socket, {
      maxQueuedBytes,
      // The slow-consumer policy: a client maxQueuedBytes behind is cut, with a reset.
      // Skipping frames instead would leave it connected with silent gaps.
      onOverflow: (queued, bytes) => {
        metrics.slowConsumers.inc();
        note(session, 'warn', { queued, bytes }, 'slow consumer: disconnected');
        socket.resetAndDestroy();
      },
    });
    const deadlines = sweep.watch(socket, {
      frameMs,
      writeMs,
      partialFrameBytes: () => frames.decoder.bufferedBytes,
      stopReading: () => frames.stop(),
      say: (frame) => {
        writer.sendFrame(frame);
        return writer.drained();
      },
      onExpired: (reason) => {
        metrics.deadlineDrops.inc();
        note(session, 'info', { reason }, 'deadline passed: disconnected');
      },
    });
    deadlines.set('hello', helloMs, `no HELLO within ${helloMs} ms`);

    const session: Session = {
      id,
      ip: socket.remoteAddress ?? 'unknown',
      socket,
      writer,
      corked: false,
      frames,
      deadlines,
      client: undefined,
      topics: new Set(),
      turn: Promise.resolve(),
      gone: new AbortController(),
    };
    sessions.add(session);
    note(session, 'debug', { ip: session.ip }, 'connected');

    socket.on('data', (chunk: Buffer) => metrics.bytesIn.inc(chunk.length));
    // Everything this connection added anywhere goes when it closes, however it closes.
    socket.once('close', () => {
      sessions.delete(session);
      for (const topic of session.topics) registry.unsubscribe(topic, session);
      session.topics.clear();
      session.gone.abort(new Error('client gone'));
      note(session, 'debug', {}, 'closed');
    });
  }

  function onFrame(session: Session, frame: Frame): void {
    metrics.frameIn(frame.type);
    if (session.client === undefined) return hello(session, frame);
    switch (frame.type) {
      case FrameType.PING:
        return send(session, FrameType.PONG, frame.body);
      case FrameType.PONG:
        return; // the answer to our heartbeat; the bytes already counted as life
      case FrameType.SUBSCRIBE:
        return inTurn(session, () => subscribe(session, frame.body.toString('utf8')));
      case FrameType.UNSUBSCRIBE:
        return inTurn(session, () => unsubscribe(session, frame.body.toString('utf8')));
      case FrameType.PUBLISH:
        return publish(session, frame.body);
      case FrameType.HELLO:
        return refuse(session, 'PROTOCOL', 'HELLO was already accepted on this connection');
      default:
        return refuse(session, 'UNSUPPORTED', `frame type ${typeName(frame.type)} is not handled by the gateway`);
    }
  }

  function inTurn(session: Session, work: () => void | Promise<void>): void {
    session.turn = session.turn.then(work).catch((err: Error) => {
      note(session, 'error', { err }, 'request failed');
      refuse(session, 'INTERNAL', err.message);
    });
  }

  function hello(session: Session, frame: Frame): void {
    if (frame.type !== FrameType.HELLO) return hangUp(session, 'UNAUTHORIZED', `${typeName(frame.type)} before HELLO: say HELLO with your token first`);
    const hello = parseHello(frame.body);
    if (!hello) return hangUp(session, 'UNAUTHORIZED', 'a HELLO body is JSON: {"token": "...", "client": "..."}');
    if (!tokenMatches(hello.token, options.token)) return hangUp(session, 'UNAUTHORIZED', 'wrong token');
    session.client = hello.client;
    session.deadlines.clear('hello');
    note(session, 'info', { ip: session.ip }, 'authenticated');
    // Authenticated clients are pinged; a silent one is dropped (lesson 04).
    heartbeat.watch(session.socket, {
      ping: () => send(session, FrameType.PING),
      onDead: (silentMs) => {
        metrics.heartbeatDrops.inc();
        note(session, 'info', { silentMs: Math.round(silentMs) }, 'silent past the heartbeat window: disconnected');
      },
    });
    send(session, FrameType.HELLO, JSON.stringify({ server: 'staying-connected', session: session.id, heartbeatMs, maxFrameBytes, maxSubscriptions }));
  }

  function subscribe(session: Session, topic: string): void {
    const problem = topicProblem(topic);
    if (problem) return refuse(session, 'BAD_TOPIC', problem);
    if (!session.topics.has(topic) && session.topics.size >= maxSubscriptions) {
      return refuse(session, 'TOO_MANY_SUBSCRIPTIONS', `a connection may hold ${maxSubscriptions} subscriptions`);
    }
    session.topics.add(topic);
    registry.subscribe(topic, session);
    send(session, FrameType.ACK, `SUBSCRIBE ${topic}`);
  }

  function unsubscribe(session: Session, topic: string): void {
    const problem = topicProblem(topic);
    if (problem) return refuse(session, 'BAD_TOPIC', problem);
    session.topics.delete(topic);
    registry.unsubscribe(topic, session);
    send(session, FrameType.ACK, `UNSUBSCRIBE ${topic}`);
  }

  function publish(session: Session, body: Buffer): void {
    const parsed = decodeTopicBody(body);
    if (!parsed) return inTurn(session, () => refuse(session, 'BAD_FRAME', 'a PUBLISH body is a u16 topic length, the topic, then the message'));
    const problem = topicProblem(parsed.topic);
    if (problem) return inTurn(session, () => refuse(session, 'BAD_TOPIC', problem));
    if (shuttingDown.signal.aborted) return inTurn(session, () => refuse(session, 'SHUTTING_DOWN', 'the gateway is shutting down: publish elsewhere'));
    if (!publishRate.take(session.ip)) {
      metrics.refusals.inc({ limit: 'publish-rate' });
      return inTurn(session, () => send(session, FrameType.BUSY, `publish-rate: too many PUBLISH frames from ${session.ip}`));
    }
    const readAt = performance.now();
    // Counted from the moment it is read, so that shutdown, which starts refusing new
    // ones, waits for this one.
    publishing++;
    inTurn(session, async () => {
      try {
        await fanOut(session, parsed.topic, body, readAt);
      } finally {
        if (--publishing === 0) for (const resolve of allPublished.splice(0)) resolve();
      }
    });
  }

  async function fanOut(session: Session, topic: string, body: Buffer, readAt: number): Promise<void> {
    let release;
    try {
      release = await publishSlots.acquire({ signal: session.gone.signal, timeoutMs: options.publishQueueMs ?? 1000 });
    } catch (err) {
      if (session.gone.signal.aborted) return;
      metrics.refusals.inc({ limit: 'publish-slots' });
      return send(session, FrameType.BUSY, `publish-slots: ${(err as Error).message}`);
    }
    try {
      const id = nextMessageId++;
      if (journal) {
        try {
          await journal.store(id, body, session.gone.signal);
        } catch (err) {
          return refuse(session, 'UNAVAILABLE', `the journal did not store the message: ${(err as Error).message}`);
        }
      }
      const delivered = deliverHere(topic, body);
      metrics.published.inc();
      // Then once to the other gateways; the ACK counts the subscribers reached here.
      options.bus?.publish(topic, body);
      send(session, FrameType.ACK, `PUBLISH ${id} ${delivered}`);
      metrics.publishSeconds.observe((performance.now() - readAt) / 1000);
    } finally {
      release();
    }
  }

  // A message from another gateway: the same fan-out, without an ACK (its publisher has
  // had one from the gateway it published to).
  if (options.bus) options.bus.deliver = (topic, body) => void deliverHere(topic, body);

  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(options.port ?? 0, '127.0.0.1', () => {
      server.off('error', reject);
      resolve();
    });
  });
  // accept() errors libuv could not absorb: keep listening, say so (lesson 06).
  server.on('error', (err) => log.error({ err }, 'accept failed'));

  async function shutDown(): Promise<void> {
    log.info({ connections: sessions.size }, 'shutting down');
    // Refuse new PUBLISHes first, then drain: GOAWAY to all, stop accepting, and end
    // each connection once the publishes in flight are acknowledged and its queue is
    // handed to the kernel. Whoever is still there at the deadline is cut.
    shuttingDown.abort();
    const { forced } = await drain(
      server,
      () =>
        [...sessions].map((session) => ({
          socket: session.socket,
          goodbye: () => send(session, FrameType.GOAWAY, 'the gateway is shutting down: reconnect in a moment'),
          settled: async () => {
            await publishesDone();
            await session.writer.drained();
          },
        })),
      { graceMs: options.graceMs ?? 10_000 },
    );
    // The sweeps hold no connection now; stop them so no timer outlives the server.
    sweep.stop();
    heartbeat.stop();
    admission.stop();
    await journal?.stop();
    log.info({ forced }, 'stopped');
  }

  let stopping: Promise<void> | undefined;
  return {
    port: (server.address() as net.AddressInfo).port,
    metrics,
    get connections() {
      return admission.connections;
    },
    get topics() {
      return registry.size;
    },
    get subscriptions() {
      return registry.subscriptions;
    },
    get ready() {
      return !shuttingDown.signal.aborted;
    },
    stop: () => (stopping ??= shutDown()),
  };
}
