// The bench's output: the JSON of every run, a markdown table of medians (min–max), the
// targets checked against this run, and SVG charts for the README and the site.
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import * as vega from 'vega';
import * as vegaLite from 'vega-lite';
import { FIGURES, type FigureInfo } from './figures.ts';
import type { Figures, Scale } from './scenarios.ts';

export interface RunRecord {
  scenario: string;
  server: string;
  run: number;
  seconds: number;
  figures?: Figures;
  error?: string;
}

export interface BenchResults {
  date: string;
  machine: { id: string; cpus: string; cores: number; memoryGiB: number; kernel: string; node: string };
  quick: boolean;
  scale: Scale;
  servers: Array<{ name: string; label: string }>;
  runs: RunRecord[];
  seconds: number;
}

export interface Stat {
  median: number;
  min: number;
  max: number;
  n: number;
}

export function stat(values: number[]): Stat | undefined {
  if (values.length === 0) return undefined;
  const sorted = [...values].sort((a, b) => a - b);
  const mid = sorted.length >> 1;
  const median = sorted.length % 2 ? sorted[mid]! : (sorted[mid - 1]! + sorted[mid]!) / 2;
  return { median, min: sorted[0]!, max: sorted.at(-1)!, n: sorted.length };
}

/** The figure `key` of `scenario` for `server`, over its runs. */
export function figure(results: BenchResults, scenario: string, server: string, key: string): Stat | undefined {
  const values = results.runs.filter((r) => r.scenario === scenario && r.server === server && r.figures?.[key] !== undefined).map((r) => r.figures![key]!);
  return stat(values);
}

const format = (value: number, info: FigureInfo) => value.toLocaleString('en-US', { maximumFractionDigits: info.digits, minimumFractionDigits: info.digits });

function cell(s: Stat | undefined, info: FigureInfo): string {
  if (!s) return '–';
  const unit = info.unit ? ` ${info.unit}` : '';
  return s.n > 1 && s.min !== s.max ? `**${format(s.median, info)}**${unit} (${format(s.min, info)}–${format(s.max, info)})` : `**${format(s.median, info)}**${unit}`;
}

interface Target {
  what: string;
  observed: string;
  met: boolean | undefined;
}

/** The issue's targets for the reference gateway, checked against this run's medians. */
export function targets(results: BenchResults): Target[] {
  const m = (scenario: string, server: string, key: string) => figure(results, scenario, server, key)?.median;
  const out: Target[] = [];
  const check = (what: string, observed: string, met: boolean | undefined) => out.push({ what, observed, met });
  const f1 = (v: number | undefined) => (v === undefined ? '–' : v.toFixed(2));
  const idle = { gateway: m('idle', 'gateway', 'rssPerConnectionKB'), ws: m('idle', 'ws', 'rssPerConnectionKB') };
  check('RSS per idle subscribed connection ≤ 4.0 KB', `${f1(idle.gateway)} KB`, idle.gateway === undefined ? undefined : idle.gateway <= 4.0);
  check("… and below ws's", `${f1(idle.gateway)} vs ${f1(idle.ws)} KB`, idle.gateway === undefined || idle.ws === undefined ? undefined : idle.gateway < idle.ws);
  const cpu = { gateway: m('fanout', 'gateway', 'cpuPerDeliveryUs'), ws: m('fanout', 'ws', 'cpuPerDeliveryUs'), naive: m('fanout', 'naive', 'cpuPerDeliveryUs') };
  check("CPU per fan-out delivery ≤ 0.6 × ws's", `${f1(cpu.gateway)} vs ${f1(cpu.ws)} µs (${cpu.gateway && cpu.ws ? (cpu.gateway / cpu.ws).toFixed(2) : '–'}×)`, cpu.gateway === undefined || cpu.ws === undefined ? undefined : cpu.gateway <= 0.6 * cpu.ws);
  check("… and below the naive gateway's", `${f1(cpu.gateway)} vs ${f1(cpu.naive)} µs`, cpu.gateway === undefined || cpu.naive === undefined ? undefined : cpu.gateway < cpu.naive);
  const last = m('fanout', 'gateway', 'lastMessageMs');
  const fanoutSize = results.scale.fanout.subscribers;
  check(`last MESSAGE of a ${fanoutSize.toLocaleString('en-US')} fan-out within 100 ms`, `${f1(last)} ms`, last === undefined ? undefined : last <= 100);
  const pub = { gateway: m('throughput', 'gateway', 'cpuPerPublishUs'), naive: m('throughput', 'naive', 'cpuPerPublishUs') };
  check('server CPU per PUBLISH ≤ 10 µs', `${f1(pub.gateway)} µs`, pub.gateway === undefined ? undefined : pub.gateway <= 10);
  check("… and ≤ a third of the naive gateway's", `${f1(pub.gateway)} vs ${f1(pub.naive)} µs`, pub.gateway === undefined || pub.naive === undefined ? undefined : pub.gateway <= pub.naive / 3);
  const rate = { gateway: m('throughput', 'gateway', 'publishesPerSecond'), ws: m('throughput', 'ws', 'publishesPerSecond') };
  check("PUBLISH throughput ≥ 1.5 × ws's", `${rate.gateway?.toFixed(0) ?? '–'} vs ${rate.ws?.toFixed(0) ?? '–'} /s`, rate.gateway === undefined || rate.ws === undefined ? undefined : rate.gateway >= 1.5 * rate.ws);
  return out;
}

export function markdown(results: BenchResults, titles: Record<string, string>): string {
  const { machine } = results;
  const lines: string[] = [
    `Run on ${results.date}${results.quick ? ' (--quick: small counts, for a smoke check, not for comparison)' : ''}: ${machine.cpus}, ${machine.cores} cores, ${machine.memoryGiB} GiB, Linux ${machine.kernel}, Node ${machine.node}. ` +
      `Each figure is the median of ${results.scale.runs} runs (min–max in brackets), the servers taking turns, each run on a fresh server process. The whole bench took ${Math.round(results.seconds)} s.`,
    '',
  ];
  const servers = results.servers;
  for (const scenario of [...new Set(FIGURES.map((f) => f.scenario))]) {
    const infos = FIGURES.filter((f) => f.scenario === scenario);
    if (!results.runs.some((r) => r.scenario === scenario)) continue;
    lines.push(`### ${titles[scenario] ?? scenario}`, '');
    lines.push(`| server | ${infos.map((i) => `${i.label}${i.better === 'lower' ? ' ↓' : ' ↑'}`).join(' | ')} |`);
    lines.push(`|---|${infos.map(() => '---:').join('|')}|`);
    for (const server of servers) {
      const failed = results.runs.filter((r) => r.scenario === scenario && r.server === server.name && r.error);
      const cells = infos.map((info) => cell(figure(results, scenario, server.name, info.key), info));
      lines.push(`| ${server.label}${failed.length ? ` ⚠ ${failed.length} run(s) failed: ${failed[0]!.error!.replaceAll('|', '/').slice(0, 120)}` : ''} | ${cells.join(' | ')} |`);
    }
    lines.push('');
  }
  const checked = targets(results);
  lines.push('### Targets (the reference gateway, this run)', '', '| target | observed | met |', '|---|---|:-:|');
  for (const t of checked) lines.push(`| ${t.what} | ${t.observed} | ${t.met === undefined ? '–' : t.met ? '✓' : '✗'} |`);
  lines.push('');
  return lines.join('\n');
}

/** One horizontal bar chart per charted figure: the median, with a whisker from min to max. */
export async function charts(results: BenchResults, dir: string): Promise<string[]> {
  mkdirSync(dir, { recursive: true });
  const written: string[] = [];
  for (const info of FIGURES.filter((f) => f.chart)) {
    const rows = results.servers.flatMap((server) => {
      const s = figure(results, info.scenario, server.name, info.key);
      return s ? [{ server: server.label, median: s.median, min: s.min, max: s.max }] : [];
    });
    if (rows.length === 0) continue;
    const title = `${info.label} (${info.unit}, ${info.better} is better)`;
    const axis = { labelColor: '#888', titleColor: '#888', domainColor: '#888', tickColor: '#888', gridColor: '#8883' };
    const spec = vegaLite.compile({
      $schema: 'https://vega.github.io/schema/vega-lite/v6.json',
      title: { text: title, color: '#888', anchor: 'start', fontSize: 13 },
      background: null as unknown as string,
      width: 420,
      data: { values: rows },
      encoding: { y: { field: 'server', type: 'nominal', sort: null, title: null, axis } },
      layer: [
        { mark: { type: 'bar', color: '#3b82f6', height: 16 }, encoding: { x: { field: 'median', type: 'quantitative', title: null, axis } } },
        { mark: { type: 'rule', color: '#888' }, encoding: { x: { field: 'min', type: 'quantitative' }, x2: { field: 'max' } } },
        { mark: { type: 'text', align: 'left', dx: 4, color: '#888' }, encoding: { x: { field: 'max', type: 'quantitative' }, text: { field: 'median', type: 'quantitative', format: `,.${info.digits}f` } } },
      ],
      config: { view: { stroke: null }, font: 'system-ui, sans-serif' },
    } as vegaLite.TopLevelSpec).spec;
    const view = new vega.View(vega.parse(spec), { renderer: 'none' });
    const file = path.join(dir, `${info.scenario}-${info.key}.svg`);
    writeFileSync(file, await view.toSVG());
    view.finalize();
    written.push(file);
  }
  return written;
}

/** Puts `section` between the README's results markers. */
export function updateReadme(readme: string, section: string): void {
  const text = readFileSync(readme, 'utf8');
  const start = '<!-- results:start -->';
  const end = '<!-- results:end -->';
  const a = text.indexOf(start);
  const b = text.indexOf(end);
  if (a < 0 || b < a) throw new Error(`${readme} has no ${start} … ${end} markers`);
  writeFileSync(readme, `${text.slice(0, a + start.length)}\n${section}\n${text.slice(b)}`);
}
