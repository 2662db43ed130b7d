// The reference gateway over Redis (`--redis`): two gateway processes share a topic
// through a real redis-server (Debian's package; .ci/run installs it), started here on a
// free loopback port. Redis is killed mid-test and started again: the gateways keep
// fanning out locally, say "degraded", and go back to sharing when it returns.
import net from 'node:net';
import path from 'node:path';
import { describe, expect, test } from 'vitest';
import { freePort, startRedisServer } from '../../bench/redis-server.ts';
import { encodeTopicBody } from '../../solutions/09-gateway/topics.ts';
import { projectRoot } from '../../runtime/targets/resolve.ts';
import { greetedClient, messages } from './gateway-client.ts';
import { eventually, FrameType, spawnEntry, useHarness, type EntryProcess } from '../../runtime/harness/index.ts';

const h = useHarness('runtime');
const TOKEN = 'redis-token';
const MAIN = path.join(projectRoot, 'solutions/09-gateway/main.ts');

async function startRedis(port: number) {
  const redis = await startRedisServer(port);
  h.defer(() => redis.stop('SIGKILL'));
  return redis;
}

async function startGateway(redisPort: number): Promise<{ gateway: EntryProcess; port: number; metricsPort: number }> {
  const gateway = spawnEntry(MAIN, {}, ['--port', '0', '--metrics-port', '0', '--token', TOKEN, '--redis', `redis://127.0.0.1:${redisPort}`, '--heartbeat-ms', '60000', '--grace-ms', '500']);
  h.defer(() => gateway.kill());
  const port = await gateway.port(/"port":(\d+),"metricsPort":\d+[^\n]*"gateway listening"/, 'the gateway saying where it listens', 15_000);
  const metricsPort = Number(gateway.stdout().match(/"metricsPort":(\d+)/)![1]);
  return { gateway, port, metricsPort };
}

/** Redis' count of subscribers to `channel` (PUBSUB NUMSUB), asked over a plain socket. */
async function numsub(port: number, channel: string): Promise<number> {
  const socket = net.connect(port, '127.0.0.1');
  try {
    const args = ['PUBSUB', 'NUMSUB', channel];
    socket.write(`*${args.length}\r\n${args.map((a) => `$${Buffer.byteLength(a)}\r\n${a}\r\n`).join('')}`);
    let reply = '';
    for await (const chunk of socket) {
      reply += chunk.toString();
      const count = reply.match(/:(\d+)\r\n$/);
      if (count) return Number(count[1]);
    }
    throw new Error(`no answer from Redis: ${JSON.stringify(reply)}`);
  } finally {
    socket.destroy();
  }
}

const readyz = async (port: number) => (await (await fetch(`http://127.0.0.1:${port}/readyz`)).text()).trim();

const client = (port: number, topic?: string) => greetedClient(h, port, TOKEN, topic);


describe('gateways sharing topics through Redis', { timeout: 60_000 }, () => {
  test('a PUBLISH on one gateway reaches the other; without Redis each goes on locally and says degraded; with it back, sharing resumes', async () => {
    const redisPort = await freePort();
    let redis = await startRedis(redisPort);
    const [a, b] = await Promise.all([startGateway(redisPort), startGateway(redisPort)]);
    await eventually(async () => expect([await readyz(a.metricsPort), await readyz(b.metricsPort)]).toEqual(['ready', 'ready']), { within: 10_000 });

    const onA = await client(a.port, 'news');
    const onB = await client(b.port, 'news');
    // Each gateway asks Redis for the channel once it has a subscriber.
    await eventually(async () => expect(await numsub(redisPort, 'gateway:news')).toBe(2), { within: 5000 });
    const publisher = await client(a.port);
    publisher.send(FrameType.PUBLISH, encodeTopicBody('news', 'one'));
    await eventually(() => expect([messages(onA), messages(onB)]).toEqual([['one'], ['one']]), { within: 5000 });

    // Redis goes away: local fan-out goes on, and /readyz says so.
    await redis.stop('SIGKILL');
    await eventually(async () => expect(await readyz(a.metricsPort)).toBe('degraded'), { within: 5000 });
    publisher.send(FrameType.PUBLISH, encodeTopicBody('news', 'local only'));
    await eventually(() => expect(messages(onA)).toEqual(['one', 'local only']), { within: 5000 });
    expect(messages(onB)).toEqual(['one']);

    // Redis is back: the gateways reconnect on their backoff and subscribe again.
    redis = await startRedis(redisPort);
    await eventually(async () => expect([await readyz(a.metricsPort), await readyz(b.metricsPort)]).toEqual(['ready', 'ready']), { within: 15_000 });
    await eventually(async () => expect(await numsub(redisPort, 'gateway:news')).toBe(2), { within: 10_000 });
    publisher.send(FrameType.PUBLISH, encodeTopicBody('news', 'shared again'));
    await eventually(() => expect(messages(onB)).toEqual(['one', 'shared again']), { within: 5000 });

    // Both stop cleanly, and Redis after them.
    for (const { gateway } of [a, b]) process.kill(gateway.pid, 'SIGTERM');
    for (const { gateway } of [a, b]) expect((await gateway.waitExit(10_000, 'the gateway exits after SIGTERM')).code).toBe(0);
    await redis.stop();
  });
});
