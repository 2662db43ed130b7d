// A load generator: one process holding up to 5,000 client connections from its own
// source address (127.0.0.N), driven by the bench over IPC. Each command does one thing
// and is bounded in time; nothing here loops without an end.
import * as hdr from 'hdr-histogram-js';
import { encodeFrame, FrameType, type Frame } from '../../solutions/02-framing/codec.ts';
import { encodeTopicBody } from '../../solutions/09-gateway/topics.ts';
import { dial, type LoadConnection, type Transport } from './connection.ts';
import { MAX_CONNECTIONS_PER_GENERATOR, type Command, type Reply, type TopicPlan } from './protocol.ts';

interface Client {
  index: number;
  link: LoadConnection;
  topics: string[];
  open: boolean;
  /** Resolves the handshake step waiting for the next HELLO or ACK. */
  waiting?: (frame: Frame) => void;
  /** PUBLISHes sent and not yet answered, while pumping. */
  outstanding: number;
  /** Its PUBLISH frame while pumping (to its own topic): built once. */
  pumpFrame?: Buffer;
}

const clients: Client[] = [];
const counters = { messages: 0, acks: 0, busy: 0, errors: 0, closed: 0, lastMessageAt: 0n };
let messageWaiter: { total: number; resolve: (at: bigint) => void } | undefined;
let pumping = false;
let latency: hdr.Histogram | undefined;

function topicsFor(plan: TopicPlan, index: number): string[] {
  switch (plan.kind) {
    case 'none':
      return [];
    case 'one':
      return [plan.topic];
    case 'own':
      return [`${plan.prefix}${index}`];
    case 'spread':
      return [`${plan.prefix}${index % plan.count}`];
    case 'all':
      return Array.from({ length: plan.count }, (_, i) => `${plan.prefix}${i}`);
  }
}

function onFrames(client: Client, frames: Frame[]): void {
  const out: Buffer[] = [];
  for (const frame of frames) {
    switch (frame.type) {
      case FrameType.MESSAGE:
        counters.messages++;
        counters.lastMessageAt = process.hrtime.bigint();
        if (latency) recordLatency(frame.body);
        if (messageWaiter && counters.messages >= messageWaiter.total) {
          messageWaiter.resolve(counters.lastMessageAt);
          messageWaiter = undefined;
        }
        break;
      case FrameType.ACK:
        if (!handOff(client, frame)) {
          counters.acks++;
          client.outstanding--;
          if (pumping && client.pumpFrame) {
            client.outstanding++;
            out.push(client.pumpFrame);
          }
        }
        break;
      case FrameType.HELLO:
        handOff(client, frame);
        break;
      case FrameType.PING:
        out.push(encodeFrame(FrameType.PONG, frame.body));
        break;
      case FrameType.BUSY:
        counters.busy++;
        client.outstanding--;
        break;
      case FrameType.ERROR:
      case FrameType.GOAWAY:
        counters.errors++;
        handOff(client, frame);
        break;
    }
  }
  if (out.length > 0 && client.open) client.link.send(out);
}

/** Gives `frame` to the handshake step waiting for it, if one is; true if one was. */
function handOff(client: Client, frame: Frame): boolean {
  const next = client.waiting;
  if (!next) return false;
  client.waiting = undefined;
  next(frame);
  return true;
}

/** A timestamped message: the first 8 bytes after the topic are the send time (ns). */
function recordLatency(body: Buffer): void {
  const topicLength = body.readUInt16BE(0);
  if (body.length < 2 + topicLength + 8) return;
  const sentAt = body.readBigUInt64BE(2 + topicLength);
  const micros = Number(process.hrtime.bigint() - sentAt) / 1000;
  latency!.recordValue(Math.max(1, Math.round(micros)));
}

function stamped(topic: string, bytes: number): Buffer {
  const message = Buffer.alloc(Math.max(8, bytes));
  message.writeBigUInt64BE(process.hrtime.bigint(), 0);
  return encodeFrame(FrameType.PUBLISH, encodeTopicBody(topic, message));
}

function expect(client: Client, type: number, what: string, within: number): Promise<Frame> {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`no ${what} within ${within} ms`)), within);
    client.waiting = (frame) => {
      clearTimeout(timer);
      if (frame.type === type) resolve(frame);
      else reject(new Error(`${what}: got ${frame.body.toString().slice(0, 120)}`));
    };
  });
}

async function connectOne(transport: Transport, port: number, localAddress: string, token: string, index: number, plan: TopicPlan, within: number): Promise<void> {
  const client: Client = { index, topics: topicsFor(plan, index), open: false, outstanding: 0, link: undefined as unknown as LoadConnection };
  const opened = new Promise<void>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`no connection within ${within} ms`)), within);
    client.link = dial(
      { transport, port, localAddress },
      {
        open: () => {
          clearTimeout(timer);
          client.open = true;
          resolve();
        },
        frames: (frames) => onFrames(client, frames),
        close: (error) => {
          clearTimeout(timer);
          if (client.open) counters.closed++;
          client.open = false;
          client.waiting?.({ type: FrameType.ERROR, body: Buffer.from(`closed${error ? `: ${error.message}` : ''}`) });
          reject(error ?? new Error('closed before it opened'));
        },
      },
    );
  });
  clients.push(client);
  await opened;
  const hello = expect(client, FrameType.HELLO, 'HELLO reply', within);
  client.link.send([encodeFrame(FrameType.HELLO, JSON.stringify({ token, client: `load-${index}` }))]);
  await hello;
  for (const topic of client.topics) {
    const ack = expect(client, FrameType.ACK, `ACK to SUBSCRIBE ${topic}`, within);
    client.link.send([encodeFrame(FrameType.SUBSCRIBE, topic)]);
    await ack;
  }
}

const handlers: { [K in Command['cmd']]: (args: Extract<Command, { cmd: K }>['args']) => Promise<unknown> } = {
  /** Opens connections, `concurrency` handshakes at a time; each says HELLO and subscribes. */
  async connect({ transport, port, localAddress, token, count, first, topics, concurrency, within }) {
    if (clients.length + count > MAX_CONNECTIONS_PER_GENERATOR) throw new Error(`a generator holds at most ${MAX_CONNECTIONS_PER_GENERATOR} connections`);
    let next = 0;
    let failed = 0;
    let firstError: string | undefined;
    const worker = async () => {
      while (next < count) {
        const index = first + next++;
        try {
          await connectOne(transport, port, localAddress, token, index, topics, within);
        } catch (err) {
          failed++;
          firstError ??= (err as Error).message;
        }
      }
    };
    await Promise.all(Array.from({ length: Math.min(concurrency, count) }, worker));
    return { opened: count - failed, failed, firstError };
  },

  async counters() {
    return { ...counters, lastMessageAt: counters.lastMessageAt.toString(), open: clients.filter((c) => c.open).length };
  },

  /** Resolves with the time (ns) the total count of MESSAGEs received reached `total`. */
  async waitMessages({ total, within }) {
    if (counters.messages >= total) return counters.lastMessageAt.toString();
    const at = await new Promise<bigint>((resolve, reject) => {
      const timer = setTimeout(() => {
        messageWaiter = undefined;
        reject(new Error(`${counters.messages} of ${total} MESSAGE frames within ${within} ms`));
      }, within);
      messageWaiter = {
        total,
        resolve: (at) => {
          clearTimeout(timer);
          resolve(at);
        },
      };
    });
    return at.toString();
  },

  /** One PUBLISH from the first connection; returns its send time (ns). */
  async publishOnce({ topic, bytes }) {
    const client = clients.find((c) => c.open);
    if (!client) throw new Error('no open connection to publish from');
    const frame = stamped(topic, bytes);
    const sentAt = process.hrtime.bigint();
    client.link.send([frame]);
    return sentAt.toString();
  },

  /** Every connection keeps `window` PUBLISHes to its own topic outstanding until pumpStop. */
  async pumpStart({ window, bytes, prefix }) {
    pumping = true;
    for (const client of clients) {
      if (!client.open) continue;
      client.pumpFrame = encodeFrame(FrameType.PUBLISH, encodeTopicBody(`${prefix}${client.index}`, Buffer.alloc(bytes, 0x61)));
      client.outstanding += window;
      client.link.send(Array.from({ length: window }, () => client.pumpFrame!));
    }
    return clients.filter((c) => c.open).length;
  },

  async pumpStop() {
    pumping = false;
    return counters.acks;
  },

  /** Timestamped PUBLISHes at a steady rate, spread over topics and this generator's connections. */
  async publishAtRate({ perSecond, ms, bytes, prefix, topicCount }) {
    const senders = clients.filter((c) => c.open);
    if (senders.length === 0) throw new Error('no open connection to publish from');
    const started = performance.now();
    let sent = 0;
    await new Promise<void>((resolve) => {
      const tick = setInterval(() => {
        const elapsed = performance.now() - started;
        const due = Math.min(Math.floor((elapsed / 1000) * perSecond), Math.floor((ms / 1000) * perSecond));
        for (; sent < due; sent++) {
          senders[sent % senders.length]!.link.send([stamped(`${prefix}${sent % topicCount}`, bytes)]);
        }
        if (elapsed >= ms) {
          clearInterval(tick);
          resolve();
        }
      }, 2);
    });
    return sent;
  },

  async latencyStart() {
    latency = hdr.build({ lowestDiscernibleValue: 1, highestTrackableValue: 120_000_000, numberOfSignificantValueDigits: 3 });
    return true;
  },

  /** The latencies recorded since latencyStart, as an encoded HdrHistogram (µs). */
  async latencyStop() {
    const histogram = latency;
    latency = undefined;
    return histogram ? hdr.encodeIntoCompressedBase64(histogram) : undefined;
  },

  async pause({ count }) {
    for (const client of clients.slice(0, count)) client.link.pause();
    return count;
  },

  /** Reads again. A paused client cannot see the server's reset; reading again, it does. */
  async resume() {
    for (const client of clients) client.link.resume();
    return clients.length;
  },

  /** Resets every connection and forgets them; the counters start again. */
  async closeAll({ within }) {
    pumping = false;
    const open = clients.filter((c) => c.open);
    for (const client of clients) client.link.reset();
    const deadline = Date.now() + within;
    while (clients.some((c) => c.open) && Date.now() < deadline) await new Promise((r) => setTimeout(r, 10));
    clients.length = 0;
    Object.assign(counters, { messages: 0, acks: 0, busy: 0, errors: 0, closed: 0, lastMessageAt: 0n });
    return open.length;
  },
};

process.on('message', async (message: Command & { id: number }) => {
  let reply: Reply;
  try {
    const handler = handlers[message.cmd] as (args: unknown) => Promise<unknown>;
    reply = { id: message.id, ok: true, value: await handler(message.args) };
  } catch (err) {
    reply = { id: message.id, ok: false, error: (err as Error).message };
  }
  process.send!(reply);
});
// The bench ends us with 'disconnect' (or by PID); nothing else keeps this process up.
process.on('disconnect', () => process.exit(0));
