// `npm run bench`: the gateway measured against the servers people write and pick
// instead, in one run on one machine. See bench/README.md for what each figure means.
//
//   npm run bench                          all scenarios, all servers, 3 runs each
//   npm run bench -- --quick               small counts, under 2 minutes: a smoke check
//   npm run bench -- --only fanout,idle    some scenarios
//   npm run bench -- --server gateway,ws   some servers
import { mkdirSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { Generator } from './load/control.ts';
import { Progress } from './progress.ts';
import { charts, markdown, updateReadme, type BenchResults, type RunRecord } from './report.ts';
import { FULL, QUICK, SCENARIOS, type Scale } from './scenarios.ts';
import { SERVERS, startServer } from './servers.ts';

const benchDir = path.dirname(fileURLToPath(import.meta.url));

const { values: flags } = parseArgs({
  options: {
    quick: { type: 'boolean', default: false },
    only: { type: 'string' },
    server: { type: 'string' },
    runs: { type: 'string' },
    profile: { type: 'string' },
    out: { type: 'string', default: path.join(benchDir, 'results') },
    // The README's results section and the charts are rewritten by full runs unless
    // --no-readme; --readme makes a quick run write them too.
    readme: { type: 'boolean' },
    'no-readme': { type: 'boolean' },
  },
});

function pick<T extends { name: string }>(all: T[], list: string | undefined, what: string): T[] {
  if (!list) return all;
  const names = list.split(',').map((s) => s.trim());
  const unknown = names.filter((n) => !all.some((x) => x.name === n));
  if (unknown.length) throw new Error(`unknown ${what}: ${unknown.join(', ')} (known: ${all.map((x) => x.name).join(', ')})`);
  return all.filter((x) => names.includes(x.name));
}

const scale: Scale = { ...(flags.quick ? QUICK : FULL) };
if (flags.runs) scale.runs = Number(flags.runs);
const scenarios = pick(SCENARIOS, flags.only, 'scenario');
const servers = pick(SERVERS, flags.server, 'server').filter((spec) => flags.server || !(flags.quick && spec.fullRunOnly));

/** Every measurement is bounded: a stalled server fails its run after this. */
const RUN_LIMIT_MS = 120_000;

const generators = [0, 1, 2].map((g) => new Generator(`127.0.0.${g + 2}`));
let runIndex = 0;
const records: RunRecord[] = [];
const started = performance.now();
const takesPart = (spec: (typeof servers)[number], scenario: string) => !spec.only || spec.only.includes(scenario);
const progress = new Progress(scale.runs * scenarios.reduce((n, s) => n + servers.filter((spec) => takesPart(spec, s.name)).length, 0));

try {
  for (const scenario of scenarios) {
    for (let run = 1; run <= scale.runs; run++) {
      // The servers take turns (A B C D, A B C D, …) so that a slow minute of the
      // machine lands on all of them, not on one.
      for (const spec of servers.filter((spec) => takesPart(spec, scenario.name))) {
        runIndex++;
        progress.step(`${scenario.name} · ${spec.name} · run ${run}/${scale.runs}`);
        const t0 = performance.now();
        const record: RunRecord = { scenario: scenario.name, server: spec.name, run, seconds: 0 };
        let server;
        try {
          server = await startServer(spec, { heartbeatMs: scenario.heartbeatMs(scale), profileDir: flags.profile && path.resolve(flags.profile) });
          // A fresh block of source addresses each run: no port of the last run is reused.
          const block = 1 + (runIndex % 250);
          const ctx = { server, generators, scale, address: (g: number) => `127.${block}.0.${g + 2}` };
          let timer: NodeJS.Timeout | undefined;
          record.figures = await Promise.race([
            scenario.run(ctx),
            new Promise<never>((_, reject) => (timer = setTimeout(() => reject(new Error(`did not finish within ${RUN_LIMIT_MS / 1000} s`)), RUN_LIMIT_MS))),
          ]).finally(() => clearTimeout(timer));
        } catch (err) {
          record.error = (err as Error).message;
          progress.note(`  ${scenario.name} · ${spec.name} · run ${run}: ${record.error}`);
        } finally {
          await Promise.all(generators.map((g) => g.call('closeAll', { within: 10_000 }).catch(() => undefined)));
          await server?.stop();
        }
        record.seconds = (performance.now() - t0) / 1000;
        records.push(record);
      }
    }
  }
} finally {
  await Promise.all(generators.map((g) => g.stop()));
  progress.done();
}

const cpus = os.cpus();
const model = cpus[0]?.model.trim() ?? 'unknown cpu';
const machineId = `${cpus.length}core-${model.toLowerCase().replace(/\(.*?\)|cpu|processor|@.*$/g, '').trim().replace(/[^a-z0-9]+/g, '-').replace(/^-|-$/g, '')}`;
const results: BenchResults = {
  date: new Date().toISOString().slice(0, 10),
  machine: { id: machineId, cpus: model, cores: cpus.length, memoryGiB: Math.round(os.totalmem() / 2 ** 30), kernel: os.release(), node: process.versions.node },
  quick: flags.quick!,
  scale,
  servers: servers.map(({ name, label }) => ({ name, label })),
  runs: records,
  seconds: (performance.now() - started) / 1000,
};

const titles = Object.fromEntries(SCENARIOS.map((s) => [s.name, s.title]));
const table = markdown(results, titles);
mkdirSync(flags.out!, { recursive: true });
// A run of some scenarios or some servers is kept apart: it must not overwrite the last full run.
const partial = Boolean(flags.only || flags.server || flags.runs);
const base = path.join(flags.out!, `${results.date}-${machineId}${flags.quick ? '-quick' : ''}${partial ? '-partial' : ''}`);
writeFileSync(`${base}.json`, JSON.stringify(results, null, 2) + '\n');
writeFileSync(`${base}.md`, `# Bench results: ${results.date}, ${machineId}\n\n${table}`);
const written = [`${base}.json`, `${base}.md`];
if (!flags['no-readme'] && (flags.readme || (!flags.quick && !partial))) {
  written.push(...(await charts(results, path.join(benchDir, 'charts'))));
  updateReadme(path.join(benchDir, 'README.md'), table);
  written.push(path.join(benchDir, 'README.md'));
}
console.log(`\n${table}`);
console.log(`written: ${written.map((f) => path.relative(process.cwd(), f)).join(', ')}`);
const failed = records.filter((r) => r.error);
console.log(`${records.length - failed.length} runs measured, ${failed.length} failed, in ${Math.round(results.seconds)} s`);
// Another server failing a run is a result (the naive gateway starving everyone behind a
// slow consumer, an unsolved exercise losing messages). The reference failing one is not:
// then the bench itself, or the machine, is broken.
process.exitCode = failed.some((r) => r.server === 'gateway') ? 1 : 0;
