// Past one machine: `--redis <url>` makes gateways on different hosts share topics through
// Redis pub/sub, the engine most push services and socket.io's Redis adapter use. A
// message crosses Redis once and every gateway with a subscriber fans it out locally;
// a gateway subscribes to a topic's channel only while it has a subscriber to it.
//
// Losing Redis does not take the gateway down: local fan-out goes on, /readyz says
// "degraded", the connections come back on the lesson-06 backoff, and ioredis subscribes
// the channels again once they do.
import { randomBytes } from 'node:crypto';
import { Redis } from 'ioredis';
import type { Logger } from 'pino';
import { backoffDelay } from '../06-limits/reconnect.ts';
import type { TopicBus } from './gateway.ts';

const CHANNEL_PREFIX = 'gateway:';
// Each message starts with the id of the gateway that published it: Redis sends a
// message to every subscriber of its channel, the publisher's own connection included,
// and that gateway has already fanned it out.
const ORIGIN_BYTES = 8;

export interface RedisBus extends TopicBus {
  /** Both connections to Redis are up. */
  readonly healthy: boolean;
  /** Messages published here that could not reach Redis (it was down). */
  readonly dropped: number;
  stop(): Promise<void>;
}

export function connectRedisBus(url: string, log: Logger): RedisBus {
  const origin = randomBytes(ORIGIN_BYTES);
  const options = {
    // The lesson-06 schedule: exponential, capped at 2 s, with full jitter, so that a
    // fleet of gateways does not reconnect in step when Redis comes back.
    retryStrategy: (times: number) => backoffDelay(times - 1, { baseMs: 100, capMs: 2000 }),
    // While Redis is down a publish fails at once instead of queueing in memory without
    // a bound: local subscribers have it already, and the ACK never promised more.
    enableOfflineQueue: false,
    maxRetriesPerRequest: 0,
    lazyConnect: false,
  };
  const publisher = new Redis(url, options);
  // A connection in subscriber mode can do nothing else, hence two. It queues its
  // SUBSCRIBEs while down (they are few, one per topic) and sends them again itself.
  const subscriber = new Redis(url, { ...options, enableOfflineQueue: true });
  let dropped = 0;

  for (const [name, connection] of [['publisher', publisher], ['subscriber', subscriber]] as const) {
    connection.on('ready', () => log.info({ redis: name }, 'redis connected'));
    connection.on('error', (err: Error) => log.warn({ redis: name, err: err.message }, 'redis unreachable: local fan-out only'));
  }

  const bus: RedisBus = {
    get healthy() {
      return publisher.status === 'ready' && subscriber.status === 'ready';
    },
    get dropped() {
      return dropped;
    },
    interest(topic, wanted) {
      const channel = CHANNEL_PREFIX + topic;
      (wanted ? subscriber.subscribe(channel) : subscriber.unsubscribe(channel)).catch((err: Error) => log.warn({ topic, err: err.message }, 'redis (un)subscribe failed'));
    },
    publish(topic, body) {
      if (publisher.status !== 'ready') {
        dropped++;
        return;
      }
      publisher.publish(CHANNEL_PREFIX + topic, Buffer.concat([origin, body])).catch(() => dropped++);
    },
    async stop() {
      // quit() waits for Redis to answer; a Redis that is down would keep us waiting.
      publisher.disconnect();
      subscriber.disconnect();
    },
  };
  subscriber.on('messageBuffer', (channel: Buffer, payload: Buffer) => {
    if (payload.subarray(0, ORIGIN_BYTES).equals(origin)) return;
    bus.deliver?.(channel.toString().slice(CHANNEL_PREFIX.length), payload.subarray(ORIGIN_BYTES));
  });
  return bus;
}
