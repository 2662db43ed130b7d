// What each figure means, its unit and which way is better: the tables, the charts and
// the README are all written from here.
export interface FigureInfo {
  scenario: string;
  key: string;
  label: string;
  unit: string;
  better: 'lower' | 'higher';
  digits: number;
  /** Charted in the README and on the site. */
  chart?: boolean;
}

export const FIGURES: FigureInfo[] = [
  { scenario: 'idle', key: 'rssPerConnectionKB', label: 'RSS per idle connection', unit: 'KB', better: 'lower', digits: 2, chart: true },
  { scenario: 'idle', key: 'kernelPerConnectionKB', label: 'kernel TCP memory per connection (both ends)', unit: 'KB', better: 'lower', digits: 2 },
  { scenario: 'idle', key: 'rssAtMaxMB', label: 'RSS at the most connections', unit: 'MB', better: 'lower', digits: 1 },
  { scenario: 'throughput', key: 'publishesPerSecond', label: 'PUBLISH per second', unit: '/s', better: 'higher', digits: 0, chart: true },
  { scenario: 'throughput', key: 'cpuPerPublishUs', label: 'server CPU per PUBLISH', unit: 'µs', better: 'lower', digits: 1, chart: true },
  { scenario: 'throughput', key: 'serverCores', label: 'server CPU use', unit: 'cores', better: 'lower', digits: 2 },
  { scenario: 'fanout', key: 'lastMessageMs', label: 'time to the last MESSAGE', unit: 'ms', better: 'lower', digits: 1, chart: true },
  { scenario: 'fanout', key: 'cpuPerDeliveryUs', label: 'server CPU per delivery', unit: 'µs', better: 'lower', digits: 2, chart: true },
  { scenario: 'latency', key: 'p50Ms', label: 'p50', unit: 'ms', better: 'lower', digits: 2 },
  { scenario: 'latency', key: 'p99Ms', label: 'p99', unit: 'ms', better: 'lower', digits: 2, chart: true },
  { scenario: 'latency', key: 'p999Ms', label: 'p99.9', unit: 'ms', better: 'lower', digits: 2 },
  { scenario: 'slow', key: 'p99Ms', label: "the others' p99", unit: 'ms', better: 'lower', digits: 2, chart: true },
  { scenario: 'slow', key: 'rssGrowthMB', label: 'RSS growth while it lags', unit: 'MB', better: 'lower', digits: 1, chart: true },
  { scenario: 'slow', key: 'slowConsumerCut', label: 'slow consumer cut', unit: '', better: 'higher', digits: 0 },
];
