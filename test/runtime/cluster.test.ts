// The reference gateway as a cluster (`--workers N`): one port shared by the workers,
// topics that cross between them through the primary, the metrics of all of them on one
// endpoint, a dead worker replaced, and SIGTERM draining everything.
import path from 'node:path';
import { describe, expect, test } from 'vitest';
import { encodeTopicBody } from '../../solutions/09-gateway/topics.ts';
import { projectRoot } from '../../runtime/targets/resolve.ts';
import { greetedClient, messages } from './gateway-client.ts';
import { eventually, FrameType, spawnEntry, useHarness, type EntryProcess, type TestClient } from '../../runtime/harness/index.ts';

const h = useHarness('runtime');
const TOKEN = 'cluster-token';
const MAIN = path.join(projectRoot, 'solutions/09-gateway/main.ts');

async function startCluster(workers: number): Promise<{ gateway: EntryProcess; port: number; metricsPort: number }> {
  const gateway = spawnEntry(MAIN, {}, [
    '--workers', String(workers), '--port', '0', '--metrics-port', '0', '--token', TOKEN, '--heartbeat-ms', '60000', '--log-level', 'info',
    '--connect-burst', '1000', '--connect-per-second', '1000', '--grace-ms', '1000',
  ]);
  h.defer(() => gateway.kill());
  const metricsPort = await gateway.port(/"metricsPort":(\d+),"workers"/, 'the primary saying where its metrics are', 15_000);
  // Every worker says where it listens; with the port shared, they all say the same.
  await eventually(() => expect(gateway.stdout().match(/"msg":"gateway listening"/g)?.length ?? 0).toBe(workers), { within: 15_000 });
  const port = Number(gateway.stdout().match(/"port":(\d+),[^\n]*"msg":"gateway listening"/)![1]);
  return { gateway, port, metricsPort };
}

const client = (port: number, topic?: string) => greetedClient(h, port, TOKEN, topic);

const messageCount = (c: TestClient) => messages(c).length;
const workerPids = (gateway: EntryProcess) => [...gateway.stdout().matchAll(/"worker":\d+,"pid":(\d+),"msg":"worker started"/g)].map((m) => Number(m[1]));

async function metric(port: number, name: string): Promise<number> {
  const text = await (await fetch(`http://127.0.0.1:${port}/metrics`)).text();
  const line = text.split('\n').find((l) => l.startsWith(`${name} `));
  return line ? Number(line.split(' ')[1]) : NaN;
}

describe('the gateway as a cluster', { timeout: 60_000 }, () => {
  test('a PUBLISH on one worker reaches subscribers on every worker; metrics cover them all; a dead worker is replaced; SIGTERM drains all', async () => {
    const { gateway, port, metricsPort } = await startCluster(2);
    // The primary hands connections to the workers in turn: six land on both.
    const subscribers: TestClient[] = [];
    for (let i = 0; i < 6; i++) subscribers.push(await client(port, 'orders'));
    const publisher = await client(port);
    publisher.send(FrameType.PUBLISH, encodeTopicBody('orders', 'across workers'));
    await eventually(() => expect(subscribers.map(messageCount)).toEqual([1, 1, 1, 1, 1, 1]), { within: 5000 });

    // One /metrics for the whole cluster: prom-client sums the workers' gauges.
    await eventually(async () => expect(await metric(metricsPort, 'gateway_connections')).toBe(7), { within: 5000 });
    expect(await metric(metricsPort, 'gateway_published_total')).toBe(1);

    // A worker dies: the primary says so and starts another; its clients are cut and
    // reconnect to the workers still there.
    const [victim] = workerPids(gateway);
    process.kill(victim!, 'SIGKILL');
    await eventually(() => {
      expect(gateway.stdout()).toContain('worker died: starting another');
      expect(workerPids(gateway)).toHaveLength(3);
      expect(gateway.stdout().match(/"msg":"gateway listening"/g)).toHaveLength(3);
    }, { within: 15_000 });
    await eventually(() => expect(subscribers.filter((s) => s.closed).length).toBeGreaterThan(0), { within: 5000 });
    const survivors = subscribers.filter((s) => !s.closed);
    const late = await client(port, 'orders');
    const publisher2 = await client(port);
    publisher2.send(FrameType.PUBLISH, encodeTopicBody('orders', 'after the restart'));
    await eventually(() => expect([...survivors, late].map(messageCount).every((n, i) => n === (i < survivors.length ? 2 : 1))).toBe(true), { within: 5000 });

    // SIGTERM: every worker drains (GOAWAY to each client), then everything exits 0.
    process.kill(gateway.pid, 'SIGTERM');
    const exit = await gateway.waitExit(15_000, 'the primary and its workers exit after draining');
    expect(exit.code).toBe(0);
    expect(late.frames.some((f) => f.type === FrameType.GOAWAY)).toBe(true);
  });
});
