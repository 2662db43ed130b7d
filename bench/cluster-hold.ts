// `npm run bench:cluster -- --connections 50000 --workers 4`: the reference gateway as a
// cluster on this machine, holding many authenticated, subscribed connections with the
// heartbeat on. One process may hold at most 20,000 open files here, hence the workers;
// the load comes from generators of at most 5,000 connections, each on its own source
// address. Reports the RSS per connection (all processes of the cluster) and the time
// for one PUBLISH to reach every connection.
import { readFileSync } from 'node:fs';
import { parseArgs } from 'node:util';
import { Generator } from './load/control.ts';
import { MAX_CONNECTIONS_PER_GENERATOR } from './load/protocol.ts';
import { rssBytes } from './proc.ts';
import { SERVERS, startServer, TOKEN, type ServerSpec } from './servers.ts';

const { values: flags } = parseArgs({ options: { connections: { type: 'string', default: '50000' }, workers: { type: 'string', default: '4' } } });
const total = Number(flags.connections);
const workers = Number(flags.workers);
const HEARTBEAT_MS = 5000;
const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

/** The primary and its workers (Linux lists a process's children under /proc). */
function clusterPids(primary: number): number[] {
  const children = readFileSync(`/proc/${primary}/task/${primary}/children`, 'utf8').trim().split(/\s+/).filter(Boolean).map(Number);
  return [primary, ...children];
}
/** The RSS of the whole cluster after a full collection in each process (gc-on-signal.ts). */
async function clusterRss(primary: number): Promise<number> {
  for (const pid of clusterPids(primary)) process.kill(pid, 'SIGUSR2');
  await sleep(1000);
  return clusterPids(primary).reduce((sum, pid) => sum + rssBytes(pid), 0);
}

const gateway = SERVERS.find((s) => s.name === 'gateway')!;
const spec: ServerSpec = { ...gateway, args: (settings) => [...gateway.args(settings), '--workers', String(workers)] };
const server = await startServer(spec, { heartbeatMs: HEARTBEAT_MS }, 60_000);
const count = Math.ceil(total / MAX_CONNECTIONS_PER_GENERATOR);
const generators = Array.from({ length: count + 1 }, (_, g) => new Generator(`127.0.${10 + g}.1`));
try {
  await sleep(1000);
  const rssBefore = await clusterRss(server.pid);
  const t0 = performance.now();
  const results = await Promise.all(
    generators.slice(0, count).map((g, i) => {
      const share = Math.min(MAX_CONNECTIONS_PER_GENERATOR, total - i * MAX_CONNECTIONS_PER_GENERATOR);
      return g.call('connect', { transport: 'tcp', port: server.port, localAddress: g.sourceAddress, token: TOKEN, count: share, first: i * MAX_CONNECTIONS_PER_GENERATOR, topics: { kind: 'one', topic: 'everyone' }, concurrency: 100, within: 30_000 }) as Promise<{ opened: number; failed: number; firstError?: string }>;
    }),
  );
  const opened = results.reduce((n, r) => n + r.opened, 0);
  const failed = results.reduce((n, r) => n + r.failed, 0);
  const connectSeconds = (performance.now() - t0) / 1000;
  console.log(`${opened} connections authenticated and subscribed in ${connectSeconds.toFixed(1)} s (${failed} failed${failed ? `: ${results.find((r) => r.firstError)?.firstError}` : ''})`);
  // Two heartbeat rounds: every connection pinged and answering.
  await sleep(2 * HEARTBEAT_MS + 1000);
  const rssAfter = await clusterRss(server.pid);
  const stillOpen = (await Promise.all(generators.map((g) => g.counters()))).reduce((n, c) => n + c.open, 0);
  console.log(`after two heartbeat rounds: ${stillOpen} still open; cluster RSS ${(rssBefore / 2 ** 20).toFixed(0)} MB -> ${(rssAfter / 2 ** 20).toFixed(0)} MB: ${((rssAfter - rssBefore) / opened / 1024).toFixed(2)} KB per connection (${workers} workers and the primary)`);

  // One PUBLISH, to every one of them, across the workers.
  const publisher = generators[count]!;
  await publisher.call('connect', { transport: 'tcp', port: server.port, localAddress: publisher.sourceAddress, token: TOKEN, count: 1, first: total, topics: { kind: 'none' }, concurrency: 1, within: 10_000 });
  for (let k = 1; k <= 3; k++) {
    const sentAt = BigInt((await publisher.call('publishOnce', { topic: 'everyone', bytes: 64 })) as string);
    const lastAt = await Promise.all(
      generators.slice(0, count).map(async (g, i) => {
        const share = results[i]!.opened;
        return BigInt((await g.call('waitMessages', { total: k * share, within: 30_000 })) as string);
      }),
    );
    const last = lastAt.reduce((a, b) => (a > b ? a : b));
    console.log(`fan-out ${k}: the last of ${opened} MESSAGEs arrived ${(Number(last - sentAt) / 1e6).toFixed(0)} ms after the PUBLISH`);
  }
} finally {
  await Promise.all(generators.map((g) => g.call('closeAll', { within: 20_000 }).catch(() => undefined)));
  await Promise.all(generators.map((g) => g.stop()));
  await server.stop();
}
