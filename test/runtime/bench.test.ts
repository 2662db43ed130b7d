// The bench, small: every server through the harness on a few hundred connections, every
// scenario on the gateway, and the report written. The full bench takes minutes and runs
// by hand; this keeps it from rotting in between. It asserts that each measurement
// happened and is sane, never how fast anything is.
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import { Generator } from '../../bench/load/control.ts';
import { charts, markdown, type BenchResults, type RunRecord } from '../../bench/report.ts';
import { SCENARIOS, type Figures, type RunContext, type Scale } from '../../bench/scenarios.ts';
import { SERVERS, startServer } from '../../bench/servers.ts';

const TINY: Scale = {
  runs: 1,
  // A 250 ms heartbeat: the load generators are processes of their own, and on a loaded
  // machine one can be kept off the CPU for longer than a shorter window.
  idle: { from: 100, to: 300, heartbeatMs: 250 },
  throughput: { connections: 50, window: 4, bytes: 64, warmupMs: 100, measureMs: 300 },
  fanout: { subscribers: 300, repeats: 2 },
  latency: { subscribers: 100, topics: 10, perSecond: 500, bytes: 256, warmupMs: 100, ms: 300, graceMs: 5000 },
};

let generators: Generator[] = [];
let block = 200;
const records: RunRecord[] = [];

beforeAll(() => {
  generators = [0, 1, 2].map((g) => new Generator(`127.0.0.${g + 2}`));
});
afterAll(async () => {
  await Promise.all(generators.map((g) => g.stop()));
});

async function measure(serverName: string, scenarioName: string): Promise<Figures> {
  const spec = SERVERS.find((s) => s.name === serverName)!;
  const scenario = SCENARIOS.find((s) => s.name === scenarioName)!;
  const server = await startServer(spec, { heartbeatMs: scenario.heartbeatMs(TINY) });
  const b = block++;
  const ctx: RunContext = { server, generators, scale: TINY, address: (g) => `127.${b}.0.${g + 2}` };
  try {
    const figures = await scenario.run(ctx);
    records.push({ scenario: scenarioName, server: serverName, run: 1, seconds: 0, figures });
    return figures;
  } finally {
    await Promise.all(generators.map((g) => g.call('closeAll', { within: 5000 })));
    await server.stop();
  }
}

describe('the bench harness', { timeout: 60_000 }, () => {
  test.each(['gateway', 'naive', 'ws'])('%s fans one PUBLISH out to 300 subscribers, twice', async (name) => {
    const figures = await measure(name, 'fanout');
    // Both fan-outs completed (the generators counted every MESSAGE), and CPU was spent.
    expect(figures.lastMessageMs).toBeGreaterThan(0);
    expect(figures.lastMessageMs).toBeLessThan(10_000);
    expect(figures.cpuPerDeliveryUs).toBeGreaterThanOrEqual(0);
  });

  test('the gateway holds idle connections and says what each costs', async () => {
    const figures = await measure('gateway', 'idle');
    expect(figures.rssAtMaxMB).toBeGreaterThan(10);
    expect(Number.isFinite(figures.rssPerConnectionKB)).toBe(true);
  });

  test('the gateway takes pipelined PUBLISHes and every one is acknowledged', async () => {
    const figures = await measure('gateway', 'throughput');
    expect(figures.publishesPerSecond).toBeGreaterThan(0);
    expect(figures.busyReplies).toBe(0);
  });

  test('latency under steady load: every message arrives, the percentiles are ordered', async () => {
    const figures = await measure('gateway', 'latency');
    expect(figures.p50Ms).toBeGreaterThan(0);
    expect(figures.p50Ms).toBeLessThanOrEqual(figures.p99Ms!);
    expect(figures.p99Ms).toBeLessThanOrEqual(figures.p999Ms!);
  });

  test('a slow consumer does not stop the others getting every message', async () => {
    const figures = await measure('gateway', 'slow');
    expect(figures.p99Ms).toBeGreaterThan(0);
    expect(figures.rssGrowthMB).toBeGreaterThanOrEqual(0);
  });

  test('the report: a table row per server, the targets, an SVG chart', async () => {
    const results: BenchResults = {
      date: '2026-01-01',
      machine: { id: 'test', cpus: 'test cpu', cores: 2, memoryGiB: 1, kernel: 'k', node: process.versions.node },
      quick: true,
      scale: TINY,
      servers: ['gateway', 'naive', 'ws'].map((name) => ({ name, label: SERVERS.find((s) => s.name === name)!.label })),
      runs: records,
      seconds: 1,
    };
    const table = markdown(results, Object.fromEntries(SCENARIOS.map((s) => [s.name, s.title])));
    expect(table).toMatch(/\| naive gateway \| \*\*[\d.,]+\*\* ms/);
    expect(table).toContain('### Targets');
    const dir = mkdtempSync(path.join(os.tmpdir(), 'bench-charts-'));
    try {
      const files = await charts(results, dir);
      expect(files.length).toBeGreaterThan(0);
      expect(readFileSync(files[0]!, 'utf8')).toMatch(/^<svg/);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
