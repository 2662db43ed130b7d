// The topic registry: who is subscribed to what. Everything a connection adds here must
// go when the connection goes, however it goes: a registry that remembers dead
// subscribers grows without end and fans every message out to sockets nobody reads.
//
// PUBLISH and MESSAGE bodies share one layout (lessons/PROTOCOL.md): a u16 big-endian
// topic length, the topic in UTF-8, then the message bytes.

/** The longest topic name, in bytes. */
export const MAX_TOPIC_BYTES = 128;

// Letters, digits and . _ - : enough for "orders.eu-west.created", and nothing that a
// log line, a metric label or a shell would have to escape.
const TOPIC_CHARS = /^[A-Za-z0-9._-]+$/;

/** Why `topic` is not a valid topic name, or undefined if it is. */
export function topicProblem(topic: string): string | undefined {
  if (topic.length === 0) return 'a topic name is at least 1 byte';
  const bytes = Buffer.byteLength(topic);
  if (bytes > MAX_TOPIC_BYTES) return `a topic name is at most ${MAX_TOPIC_BYTES} bytes, not ${bytes}`;
  if (!TOPIC_CHARS.test(topic)) return 'a topic name uses only letters, digits, ".", "_" and "-"';
  return undefined;
}

/** A PUBLISH or MESSAGE body: topic length, topic, message. */
export function encodeTopicBody(topic: string, message: Buffer | string): Buffer {
  const topicBytes = Buffer.from(topic);
  const messageBytes = typeof message === 'string' ? Buffer.from(message) : message;
  const body = Buffer.allocUnsafe(2 + topicBytes.length + messageBytes.length);
  body.writeUInt16BE(topicBytes.length, 0);
  topicBytes.copy(body, 2);
  messageBytes.copy(body, 2 + topicBytes.length);
  return body;
}

/** Splits a PUBLISH or MESSAGE body; undefined when the topic length runs past the body. */
export function decodeTopicBody(body: Buffer): { topic: string; message: Buffer } | undefined {
  if (body.length < 2) return undefined;
  const length = body.readUInt16BE(0);
  if (2 + length > body.length) return undefined;
  return { topic: body.toString('utf8', 2, 2 + length), message: body.subarray(2 + length) };
}

export class TopicRegistry<Subscriber> {
  // topic -> its subscribers. A topic with no subscriber left is deleted, so the map
  // holds only live topics.
  private readonly topics = new Map<string, Set<Subscriber>>();
  private count = 0;

  /** `onTopic(topic, true)` when a topic gets its first subscriber, `false` when its last leaves. */
  constructor(private readonly onTopic?: (topic: string, live: boolean) => void) {}

  /** Adds a subscription; false if it was there already. */
  subscribe(topic: string, subscriber: Subscriber): boolean {
    let subscribers = this.topics.get(topic);
    if (!subscribers) this.topics.set(topic, (subscribers = new Set()));
    if (subscribers.has(subscriber)) return false;
    subscribers.add(subscriber);
    this.count++;
    if (subscribers.size === 1) this.onTopic?.(topic, true);
    return true;
  }

  /** Removes a subscription; false if there was none. */
  unsubscribe(topic: string, subscriber: Subscriber): boolean {
    const subscribers = this.topics.get(topic);
    if (!subscribers?.delete(subscriber)) return false;
    this.count--;
    if (subscribers.size === 0) {
      this.topics.delete(topic);
      this.onTopic?.(topic, false);
    }
    return true;
  }

  /** The subscribers of `topic` now (empty if none). */
  subscribers(topic: string): ReadonlySet<Subscriber> {
    return this.topics.get(topic) ?? new Set();
  }

  /** Topics with at least one subscriber. */
  get size(): number {
    return this.topics.size;
  }

  /** Subscriptions across all topics. */
  get subscriptions(): number {
    return this.count;
  }
}
