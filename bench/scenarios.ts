// The five measurements. Each starts from a fresh server with no client, opens what it
// needs through the load generators, measures, and leaves the closing to the bench.
// Every wait has a bound: a server that stalls fails its run, it does not hang the bench.
import * as hdr from 'hdr-histogram-js';
import type { Generator } from './load/control.ts';
import { MAX_CONNECTIONS_PER_GENERATOR, type TopicPlan } from './load/protocol.ts';
import { cpuSeconds, rssBytes, tcpSockstat } from './proc.ts';
import { TOKEN, type RunningServer } from './servers.ts';

export interface Scale {
  runs: number;
  idle: { from: number; to: number; heartbeatMs: number };
  throughput: { connections: number; window: number; bytes: number; warmupMs: number; measureMs: number };
  fanout: { subscribers: number; repeats: number };
  latency: { subscribers: number; topics: number; perSecond: number; bytes: number; warmupMs: number; ms: number; graceMs: number };
}

export const FULL: Scale = {
  runs: 3,
  idle: { from: 5000, to: 15_000, heartbeatMs: 2000 },
  throughput: { connections: 1000, window: 16, bytes: 64, warmupMs: 1000, measureMs: 3000 },
  fanout: { subscribers: 10_000, repeats: 10 },
  latency: { subscribers: 1000, topics: 100, perSecond: 2000, bytes: 2048, warmupMs: 1000, ms: 5000, graceMs: 3000 },
};

export const QUICK: Scale = {
  runs: 3,
  idle: { from: 500, to: 1500, heartbeatMs: 100 },
  throughput: { connections: 200, window: 16, bytes: 64, warmupMs: 200, measureMs: 600 },
  fanout: { subscribers: 2000, repeats: 5 },
  latency: { subscribers: 200, topics: 20, perSecond: 1000, bytes: 2048, warmupMs: 150, ms: 600, graceMs: 1000 },
};

/** The heartbeat when it is not what is measured: long enough not to fire mid-measurement. */
const QUIET_HEARTBEAT_MS = 60_000;

export interface RunContext {
  server: RunningServer;
  generators: Generator[];
  /** Generator g's source address for this run: a fresh one each run, so no port is reused. */
  address(g: number): string;
  scale: Scale;
}

export type Figures = Record<string, number>;

export interface Scenario {
  name: string;
  title: string;
  heartbeatMs(scale: Scale): number;
  run(ctx: RunContext): Promise<Figures>;
}

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));
const median = (values: number[]) => [...values].sort((a, b) => a - b)[Math.floor(values.length / 2)]!;

/** Opens `count` connections on generator `g`, numbered from `first`; every one must succeed. */
async function open(ctx: RunContext, g: number, count: number, first: number, topics: TopicPlan): Promise<void> {
  const result = (await ctx.generators[g]!.call('connect', {
    transport: ctx.server.spec.transport,
    port: ctx.server.port,
    localAddress: ctx.address(g),
    token: TOKEN,
    count,
    first,
    topics,
    concurrency: 100,
    within: 15_000,
  })) as { opened: number; failed: number; firstError?: string };
  if (result.failed > 0) throw new Error(`${result.failed} of ${count} connections failed: ${result.firstError}`);
}

/** Opens `count` connections spread over generators from `fromGenerator` on, ≤ 5,000 each. */
async function openSpread(ctx: RunContext, count: number, first: number, topics: TopicPlan, fromGenerator = 0): Promise<number[]> {
  const shares: number[] = [];
  for (let g = fromGenerator, left = count; left > 0; g++) {
    if (g >= ctx.generators.length) throw new Error(`${count} connections need more than ${ctx.generators.length} generators`);
    shares[g] = Math.min(left, MAX_CONNECTIONS_PER_GENERATOR);
    left -= shares[g]!;
  }
  let next = first;
  await Promise.all(
    shares.map((share, g) => {
      const start = next;
      next += share;
      return share ? open(ctx, g, share, start, topics) : undefined;
    }),
  );
  return shares;
}

/** RSS after a full collection (see gc-on-signal.ts): the median of 3 readings. */
async function rssSettled(pid: number): Promise<number> {
  process.kill(pid, 'SIGUSR2');
  await sleep(300);
  const samples: number[] = [];
  for (let i = 0; i < 3; i++) {
    samples.push(rssBytes(pid));
    await sleep(100);
  }
  return median(samples);
}

async function noneDropped(ctx: RunContext, what: string): Promise<void> {
  for (const generator of ctx.generators) {
    const { closed } = await generator.counters();
    if (closed > 0) throw new Error(`${closed} healthy connections were dropped during ${what}`);
  }
}

export const idle: Scenario = {
  name: 'idle',
  title: 'Idle subscribed connections, heartbeat on',
  heartbeatMs: (scale) => scale.idle.heartbeatMs,
  async run(ctx) {
    const { from, to, heartbeatMs } = ctx.scale.idle;
    const topics: TopicPlan = { kind: 'spread', prefix: 'idle.', count: 1000 };
    // Two heartbeat rounds after the last connection: every timer has fired and every
    // connection has been pinged and has answered, so the memory is the steady state's.
    const settle = () => sleep(2 * heartbeatMs + 250);
    await openSpread(ctx, from, 0, topics);
    await settle();
    const rssBefore = await rssSettled(ctx.server.pid);
    const kernelBefore = tcpSockstat().memBytes;
    // The rest from the next generators, so that the first ones are not refilled.
    await openSpread(ctx, to - from, from, topics, Math.ceil(from / MAX_CONNECTIONS_PER_GENERATOR));
    await settle();
    const rssAfter = await rssSettled(ctx.server.pid);
    const kernelAfter = tcpSockstat().memBytes;
    await noneDropped(ctx, 'the idle phase');
    const added = to - from;
    return {
      rssPerConnectionKB: (rssAfter - rssBefore) / added / 1024,
      kernelPerConnectionKB: (kernelAfter - kernelBefore) / added / 1024,
      rssAtMaxMB: rssAfter / 1024 / 1024,
    };
  },
};

export const throughput: Scenario = {
  name: 'throughput',
  title: 'Publish throughput',
  heartbeatMs: () => QUIET_HEARTBEAT_MS,
  async run(ctx) {
    const { connections, window, bytes, warmupMs, measureMs } = ctx.scale.throughput;
    // Each connection subscribes to its own topic and publishes to it: every PUBLISH
    // costs the server one MESSAGE and one ACK to the same connection.
    await open(ctx, 0, connections, 0, { kind: 'own', prefix: 't.' });
    const generator = ctx.generators[0]!;
    await generator.call('pumpStart', { window, bytes, prefix: 't.' });
    await sleep(warmupMs);
    const a0 = (await generator.counters()).acks;
    const cpu0 = cpuSeconds(ctx.server.pid);
    const t0 = performance.now();
    await sleep(measureMs);
    const a1 = (await generator.counters()).acks;
    const cpu1 = cpuSeconds(ctx.server.pid);
    const t1 = performance.now();
    await generator.call('pumpStop', {});
    const { busy, errors } = await generator.counters();
    if (errors > 0) throw new Error(`${errors} ERROR frames while publishing`);
    const published = a1 - a0;
    if (published === 0) throw new Error('no PUBLISH was acknowledged');
    return {
      publishesPerSecond: published / ((t1 - t0) / 1000),
      cpuPerPublishUs: ((cpu1 - cpu0) / published) * 1e6,
      serverCores: (cpu1 - cpu0) / ((t1 - t0) / 1000),
      busyReplies: busy,
    };
  },
};

export const fanout: Scenario = {
  name: 'fanout',
  title: 'Fan-out: one PUBLISH to every subscriber of a topic',
  heartbeatMs: () => QUIET_HEARTBEAT_MS,
  async run(ctx) {
    const { subscribers, repeats } = ctx.scale.fanout;
    const shares = await openSpread(ctx, subscribers, 0, { kind: 'one', topic: 'fan' });
    const publisherGenerator = shares.length;
    await open(ctx, publisherGenerator, 1, subscribers, { kind: 'none' });
    const publisher = ctx.generators[publisherGenerator]!;
    const times: number[] = [];
    const cpu0 = cpuSeconds(ctx.server.pid);
    for (let k = 1; k <= repeats; k++) {
      const sentAt = BigInt((await publisher.call('publishOnce', { topic: 'fan', bytes: 64 })) as string);
      const lastAt = await Promise.all(
        shares.map(async (share, g) => BigInt((await ctx.generators[g]!.call('waitMessages', { total: k * share, within: 20_000 })) as string)),
      );
      const last = lastAt.reduce((a, b) => (a > b ? a : b));
      times.push(Number(last - sentAt) / 1e6);
    }
    const cpu1 = cpuSeconds(ctx.server.pid);
    return {
      lastMessageMs: median(times),
      cpuPerDeliveryUs: ((cpu1 - cpu0) / (repeats * subscribers)) * 1e6,
    };
  },
};

/** Subscribers on generator 0, publishers on generator 1; the histogram of publish-to-MESSAGE times. */
async function steadyLoad(ctx: RunContext, withSlowConsumer: boolean): Promise<Figures> {
  const { subscribers, topics, perSecond, bytes, warmupMs, ms, graceMs } = ctx.scale.latency;
  await open(ctx, 0, subscribers, 0, { kind: 'spread', prefix: 'l.', count: topics });
  await open(ctx, 1, 4, subscribers, { kind: 'none' });
  const [listeners, publishers] = [ctx.generators[0]!, ctx.generators[1]!];
  let slow: Generator | undefined;
  if (withSlowConsumer) {
    // One subscriber to every topic that stops reading: it is sent everything and takes nothing.
    await open(ctx, 2, 1, subscribers + 4, { kind: 'all', prefix: 'l.', count: topics });
    slow = ctx.generators[2]!;
    await slow.call('pause', { count: 1 });
  }
  const rate = { perSecond, bytes, prefix: 'l.', topicCount: topics };
  await publishers.call('publishAtRate', { ...rate, ms: warmupMs });
  await sleep(200);
  const rssStart = rssBytes(ctx.server.pid);
  let rssPeak = rssStart;
  // The server may die under this load (that is a result too): stop sampling, say so below.
  let serverGone = false;
  const sampler = setInterval(() => {
    try {
      rssPeak = Math.max(rssPeak, rssBytes(ctx.server.pid));
    } catch {
      serverGone = true;
      clearInterval(sampler);
    }
  }, 100);
  const died = (err: Error) => (serverGone ? new Error(`the server process exited during the run: ${ctx.server.stderr().trim().split('\n').slice(-2).join(' / ') || 'no message'}`) : err);
  try {
    const before = (await listeners.counters()).messages;
    await listeners.call('latencyStart', {});
    const sent = (await publishers.call('publishAtRate', { ...rate, ms })) as number;
    // Each message goes to subscribers / topics listeners, and all of them are in
    // within a few ms of the last send: the grace is for a machine that stalls, and a
    // server that lost some fails its run here.
    const expected = before + sent * (subscribers / topics);
    await listeners.call('waitMessages', { total: expected, within: graceMs + ms }).catch(async (err: Error) => {
      const { busy, errors } = await publishers.counters();
      const who = withSlowConsumer ? 'with one subscriber not reading, the others received' : 'the subscribers received';
      throw died(new Error(`${who} ${err.message}${busy || errors ? ` (the publishers were answered ${busy} BUSY and ${errors} ERROR)` : ''}`));
    });
    const encoded = (await listeners.call('latencyStop', {})) as string;
    const histogram = hdr.decodeFromCompressedBase64(encoded);
    await noneDropped({ ...ctx, generators: [listeners, publishers] }, 'the steady load');
    const figures: Figures = {
      p50Ms: histogram.getValueAtPercentile(50) / 1000,
      p99Ms: histogram.getValueAtPercentile(99) / 1000,
      p999Ms: histogram.getValueAtPercentile(99.9) / 1000,
      deliveriesPerSecond: (sent * (subscribers / topics)) / (ms / 1000),
    };
    if (slow) {
      figures.rssGrowthMB = (rssPeak - rssStart) / 1024 / 1024;
      // Cut or still connected? Only a client that reads can tell: resume it, and a
      // server that reset it shows as a close within moments.
      await slow.call('resume', {});
      const deadline = performance.now() + 500;
      while ((await slow.counters()).closed === 0 && performance.now() < deadline) await sleep(50);
      figures.slowConsumerCut = (await slow.counters()).closed;
    }
    return figures;
  } finally {
    clearInterval(sampler);
  }
}

export const latency: Scenario = {
  name: 'latency',
  title: 'Publish-to-MESSAGE latency under steady load',
  heartbeatMs: () => QUIET_HEARTBEAT_MS,
  run: (ctx) => steadyLoad(ctx, false),
};

export const slowConsumer: Scenario = {
  name: 'slow',
  title: 'The same load with one subscriber that stops reading',
  heartbeatMs: () => QUIET_HEARTBEAT_MS,
  run: (ctx) => steadyLoad(ctx, true),
};

export const SCENARIOS: Scenario[] = [idle, throughput, fanout, latency, slowConsumer];
