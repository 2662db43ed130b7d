// `npm run bench:cross-node`: publish-to-MESSAGE latency between two gateways that share
// topics through Redis. A redis-server (Debian's package) is started on a free loopback
// port; gateway A takes the PUBLISHes, gateway B has the subscribers, so every message
// crosses Redis. Light by design: 100 subscribers, 500 messages a second for 5 s.
import * as hdr from 'hdr-histogram-js';
import { Generator } from './load/control.ts';
import { freePort, startRedisServer } from './redis-server.ts';
import { startServer, SERVERS, type ServerSpec } from './servers.ts';

const SUBSCRIBERS = 100;
const PER_SECOND = 500;
const MS = 5000;

const redis = await startRedisServer(await freePort());
const redisPort = redis.port;

const gateway = SERVERS.find((s) => s.name === 'gateway')!;
const overRedis: ServerSpec = { ...gateway, args: (settings) => [...gateway.args(settings), '--redis', `redis://127.0.0.1:${redisPort}`] };
const [a, b] = await Promise.all([startServer(overRedis, { heartbeatMs: 60_000 }), startServer(overRedis, { heartbeatMs: 60_000 })]);
const [listeners, publishers] = [new Generator('127.0.0.2'), new Generator('127.0.0.3')];
try {
  const open = (g: Generator, port: number, count: number, topics: object) =>
    g.call('connect', { transport: 'tcp', port, localAddress: g.sourceAddress, token: 'bench-token', count, first: 0, topics: topics as never, concurrency: 50, within: 10_000 });
  await open(listeners, b.port, SUBSCRIBERS, { kind: 'spread', prefix: 'x.', count: 10 });
  await open(publishers, a.port, 2, { kind: 'none' });
  const rate = { perSecond: PER_SECOND, bytes: 256, prefix: 'x.', topicCount: 10 };
  await publishers.call('publishAtRate', { ...rate, ms: 500 }); // warm-up (and B's channels subscribed)
  await new Promise((r) => setTimeout(r, 500));
  const before = (await listeners.counters()).messages;
  await listeners.call('latencyStart', {});
  const sent = (await publishers.call('publishAtRate', { ...rate, ms: MS })) as number;
  await listeners.call('waitMessages', { total: before + sent * (SUBSCRIBERS / 10), within: 5000 });
  const histogram = hdr.decodeFromCompressedBase64((await listeners.call('latencyStop', {})) as string);
  const ms = (p: number) => (histogram.getValueAtPercentile(p) / 1000).toFixed(2);
  console.log(`through Redis, gateway A -> gateway B: ${sent} messages to ${SUBSCRIBERS / 10} subscribers each (${histogram.totalCount} deliveries): p50 ${ms(50)} ms, p99 ${ms(99)} ms, p99.9 ${ms(99.9)} ms, max ${(histogram.maxValue / 1000).toFixed(2)} ms`);
} finally {
  await Promise.all([listeners.stop(), publishers.stop()]);
  await Promise.all([a.stop(), b.stop()]);
  await redis.stop();
}
