// `npm run soak -- --minutes 10`: the reference gateway under a mixed load for a long
// while. Everything runs at once, for the whole time:
//   - healthy subscribers that stay, and must get every acknowledged message;
//   - publishers at a steady rate;
//   - connection churn: waves of clients that connect, subscribe and leave;
//   - slow subscribers behind a 2 KB/s link (the fault proxy), cut as slow consumers;
//   - blackholed subscribers, whose network goes silent (the heartbeat finds them).
// It samples the gateway's RSS every second. At the end it checks:
//   - RSS grew less than 5 % after the warm-up;
//   - the gateway's open files are back where they started;
//   - every acknowledged message reached every healthy subscriber.
// It writes a JSON file and an SVG chart of RSS over time, and exits 1 if a check fails.
import { readdirSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import * as vega from 'vega';
import * as vegaLite from 'vega-lite';
import { startFaultProxy } from '../runtime/faults/proxy.ts';
import { Generator } from './load/control.ts';
import type { TopicPlan } from './load/protocol.ts';
import { rssBytes } from './proc.ts';
import { SERVERS, startServer, TOKEN } from './servers.ts';

const { values: flags } = parseArgs({ options: { minutes: { type: 'string', default: '10' } } });
const minutes = Number(flags.minutes);
if (!(minutes > 0)) throw new Error(`--minutes must be a positive number, not "${flags.minutes}"`);
const totalMs = minutes * 60_000;
// RSS is compared from the end of the warm-up: the first minute (half the run if shorter).
const warmupMs = Math.min(60_000, totalMs / 2);

const HEALTHY = 200;
const TOPICS = 10;
const PER_SECOND = 100;
const HEARTBEAT_MS = 2000;

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));
const openFiles = (pid: number) => readdirSync(`/proc/${pid}/fd`).length;
const median = (values: number[]) => [...values].sort((a, b) => a - b)[Math.floor(values.length / 2)] ?? NaN;

const server = await startServer(SERVERS.find((s) => s.name === 'gateway')!, { heartbeatMs: HEARTBEAT_MS });
const filesAtStart = openFiles(server.pid);
const slowLink = await startFaultProxy({ upstreamPort: server.port });
slowLink.add({ kind: 'bandwidth', bytesPerSecond: 2048, direction: 'downstream' });
const silentLink = await startFaultProxy({ upstreamPort: server.port });
const generators = [2, 3, 4, 5, 6].map((n) => new Generator(`127.0.0.${n}`));
const [healthy, publishers, churn, slow, silent] = generators as [Generator, Generator, Generator, Generator, Generator];
const connect = (g: Generator, port: number, count: number, topics: TopicPlan) =>
  g.call('connect', { transport: 'tcp', port, localAddress: g.sourceAddress, token: TOKEN, count, first: 0, topics, concurrency: 50, within: 10_000 }) as Promise<{ opened: number; failed: number; firstError?: string }>;

const started = performance.now();
const elapsed = () => performance.now() - started;
const samples: Array<{ second: number; rssMB: number }> = [];
const sampler = setInterval(() => samples.push({ second: Math.round(elapsed() / 1000), rssMB: rssBytes(server.pid) / 2 ** 20 }), 1000);
const counts = { churnWaves: 0, slowWaves: 0, silentWaves: 0, published: 0, slowCut: 0 };

try {
  const opened = await connect(healthy, server.port, HEALTHY, { kind: 'spread', prefix: 'soak.', count: TOPICS });
  if (opened.failed) throw new Error(`healthy subscribers: ${opened.failed} failed (${opened.firstError})`);
  await connect(publishers, server.port, 2, { kind: 'none' });
  const rate = { perSecond: PER_SECOND, bytes: 512, prefix: 'soak.', topicCount: TOPICS };

  // Each loop runs until the time is up, one bounded step at a time.
  const until = (end: number) => elapsed() < end;
  const publishing = (async () => {
    while (until(totalMs)) counts.published += (await publishers.call('publishAtRate', { ...rate, ms: Math.min(10_000, totalMs - elapsed()) })) as number;
  })();
  const churning = (async () => {
    while (until(totalMs)) {
      await connect(churn, server.port, 100, { kind: 'spread', prefix: 'soak.', count: TOPICS });
      await sleep(1000);
      await churn.call('closeAll', { within: 5000 });
      counts.churnWaves++;
    }
  })();
  const slowing = (async () => {
    while (until(totalMs - 15_000)) {
      // Subscribed to everything behind 2 KB/s: they fall behind and are cut.
      await connect(slow, slowLink.port, 10, { kind: 'all', prefix: 'soak.', count: TOPICS });
      await sleep(15_000);
      counts.slowCut += (await slow.counters()).closed;
      await slow.call('closeAll', { within: 5000 });
      counts.slowWaves++;
    }
  })();
  const silencing = (async () => {
    while (until(totalMs - 10_000)) {
      // Connected and subscribed, then their network goes silent: the heartbeat finds them.
      await connect(silent, silentLink.port, 10, { kind: 'spread', prefix: 'soak.', count: TOPICS });
      const hole = silentLink.add({ kind: 'blackhole' });
      await sleep(3 * HEARTBEAT_MS + 2000);
      silentLink.remove(hole);
      await silent.call('closeAll', { within: 5000 });
      counts.silentWaves++;
    }
  })();
  await Promise.all([publishing, churning, slowing, silencing]);

  // Every acknowledged message must have reached every healthy subscriber of its topic.
  const { acks } = await publishers.counters();
  const expected = acks * (HEALTHY / TOPICS);
  await healthy.call('waitMessages', { total: expected, within: 10_000 }).catch(() => undefined);
  const delivered = (await healthy.counters()).messages;
  const healthyClosed = (await healthy.counters()).closed;

  for (const g of generators) await g.call('closeAll', { within: 5000 });
  await Promise.all([slowLink.stop(), silentLink.stop()]);
  // The gateway lets go of every socket: its open files return to where they started.
  const filesDeadline = performance.now() + 10_000;
  while (openFiles(server.pid) > filesAtStart && performance.now() < filesDeadline) await sleep(100);
  const filesAtEnd = openFiles(server.pid);
  clearInterval(sampler);

  const afterWarmup = samples.filter((s) => s.second * 1000 >= warmupMs - 10_000 && s.second * 1000 <= warmupMs);
  const lastTen = samples.slice(-10);
  const rssAfterWarmupMB = median(afterWarmup.map((s) => s.rssMB));
  const rssAtEndMB = median(lastTen.map((s) => s.rssMB));
  const growthPercent = ((rssAtEndMB - rssAfterWarmupMB) / rssAfterWarmupMB) * 100;
  const checks = {
    rssGrowthUnder5Percent: growthPercent < 5,
    noLeakedFiles: filesAtEnd <= filesAtStart,
    noAcknowledgedMessageLost: delivered >= expected && healthyClosed === 0,
  };
  const result = {
    date: new Date().toISOString(),
    minutes,
    node: process.versions.node,
    load: { healthy: HEALTHY, topics: TOPICS, publishesPerSecond: PER_SECOND, ...counts },
    messages: { acknowledged: acks, expectedDeliveries: expected, delivered, healthyDisconnected: healthyClosed },
    rss: { afterWarmupMB: rssAfterWarmupMB, atEndMB: rssAtEndMB, growthPercent, samples },
    openFiles: { atStart: filesAtStart, atEnd: filesAtEnd },
    checks,
  };
  const dir = path.join(path.dirname(fileURLToPath(import.meta.url)), 'results');
  const base = path.join(dir, `soak-${result.date.slice(0, 10)}-${minutes}min-${os.cpus().length}core`);
  writeFileSync(`${base}.json`, JSON.stringify(result, null, 2) + '\n');
  const spec = vegaLite.compile({
    $schema: 'https://vega.github.io/schema/vega-lite/v6.json',
    title: { text: `gateway RSS over a ${minutes}-minute soak (MB)`, color: '#888', anchor: 'start' },
    background: null as unknown as string,
    width: 520,
    height: 200,
    data: { values: samples },
    mark: { type: 'line', color: '#3b82f6' },
    encoding: {
      x: { field: 'second', type: 'quantitative', title: 'seconds', axis: { labelColor: '#888', titleColor: '#888' } },
      y: { field: 'rssMB', type: 'quantitative', title: 'RSS (MB)', scale: { zero: false }, axis: { labelColor: '#888', titleColor: '#888', gridColor: '#8883' } },
    },
  } as vegaLite.TopLevelSpec).spec;
  writeFileSync(`${base}.svg`, await new vega.View(vega.parse(spec), { renderer: 'none' }).toSVG());

  console.log(`soak of ${minutes} min: ${counts.published} PUBLISHes sent, ${acks} acknowledged; ${counts.churnWaves} churn waves of 100, ${counts.slowWaves} slow waves of 10 (${counts.slowCut} cut by the gateway), ${counts.silentWaves} blackholed waves of 10`);
  console.log(`  RSS ${rssAfterWarmupMB.toFixed(1)} MB after the warm-up, ${rssAtEndMB.toFixed(1)} MB at the end: ${growthPercent >= 0 ? '+' : ''}${growthPercent.toFixed(1)} %  ${checks.rssGrowthUnder5Percent ? '✓' : '✗ (5 % allowed)'}`);
  console.log(`  open files ${filesAtStart} at the start, ${filesAtEnd} at the end  ${checks.noLeakedFiles ? '✓' : '✗'}`);
  console.log(`  healthy subscribers got ${delivered} of ${expected} deliveries of acknowledged messages; ${healthyClosed} disconnected  ${checks.noAcknowledgedMessageLost ? '✓' : '✗'}`);
  console.log(`  written: ${path.relative(process.cwd(), base)}.json and .svg`);
  process.exitCode = Object.values(checks).every(Boolean) ? 0 : 1;
} finally {
  clearInterval(sampler);
  await Promise.all(generators.map((g) => g.stop()));
  await server.stop();
}
