// The gateway as a process: `npm run server` (the reference one), `npm run server --
// --mine` (yours). Logs are JSON lines on stdout (pino), one per event, each with the
// connection id it is about. Every flag has an environment variable, for containers.
import cluster from 'node:cluster';
import { parseArgs } from 'node:util';
import pino from 'pino';
import { stopOnSignals } from '../08-graceful-shutdown/shutdown.ts';
import { reportMetrics, runPrimary, workerBus } from './cluster.ts';
import { startGateway } from './gateway.ts';
import { connectRedisBus } from './redis-bus.ts';
import { serveObservability } from './metrics.ts';

// Good enough on a laptop, where the gateway listens on 127.0.0.1 only. Anywhere else,
// pass your own (--token or GATEWAY_TOKEN).
export const DEV_TOKEN = 'dev-token';

const { values: flags } = parseArgs({
  args: process.argv.slice(2),
  options: {
    port: { type: 'string' },
    'metrics-port': { type: 'string' },
    token: { type: 'string' },
    'max-connections': { type: 'string' },
    journal: { type: 'string' },
    'log-level': { type: 'string' },
    'grace-ms': { type: 'string' },
    'heartbeat-ms': { type: 'string' },
    'connect-burst': { type: 'string' },
    'connect-per-second': { type: 'string' },
    'publish-burst': { type: 'string' },
    'publish-per-second': { type: 'string' },
    // More than 1: that many worker processes sharing the port (cluster.ts).
    workers: { type: 'string' },
    // redis://host:port: share topics with the other gateways through Redis (redis-bus.ts).
    redis: { type: 'string' },
    mine: { type: 'boolean' }, // read by `npm run server`: which tree to run
  },
});

/** A flag, else its environment variable, else the default. */
function setting(flag: keyof typeof flags, env: string): string | undefined {
  const value = flags[flag] ?? process.env[env];
  return typeof value === 'string' ? value : undefined;
}
function number(flag: keyof typeof flags, env: string, fallback?: number): number | undefined {
  const text = setting(flag, env);
  if (text === undefined) return fallback;
  const value = Number(text);
  if (!Number.isInteger(value) || value < 0) throw new Error(`--${flag} (${env}) must be a whole number, not "${text}"`);
  return value;
}

const log = pino({ level: setting('log-level', 'GATEWAY_LOG_LEVEL') ?? 'info', base: { pid: process.pid } });

try {
  const workers = number('workers', 'GATEWAY_WORKERS', 1)!;
  const metricsPort = number('metrics-port', 'GATEWAY_METRICS_PORT', 7401);
  if (workers > 1 && cluster.isPrimary) await runPrimary({ workers, metricsPort: metricsPort!, log });
  else await serve();
} catch (err) {
  log.fatal({ err }, (err as Error).message);
  console.error(`gateway did not start: ${(err as Error).message}`);
  process.exitCode = 1;
}

/** One gateway: the whole server, or one worker of a cluster (cluster.ts). */
async function serve(): Promise<void> {
  const token = setting('token', 'GATEWAY_TOKEN') ?? DEV_TOKEN;
  const journal = setting('journal', 'GATEWAY_JOURNAL');
  const [journalHost, journalPort] = journal?.includes(':') ? journal.split(':') : ['127.0.0.1', journal];
  let stopping: Promise<void> | undefined;
  const redisUrl = setting('redis', 'GATEWAY_REDIS');
  const redis = redisUrl ? connectRedisBus(redisUrl, log) : undefined;
  const gateway = await startGateway({
    port: number('port', 'GATEWAY_PORT', 7400),
    token,
    maxConnections: number('max-connections', 'GATEWAY_MAX_CONNECTIONS'),
    journal: journal ? { host: journalHost, port: Number(journalPort) } : undefined,
    graceMs: number('grace-ms', 'GATEWAY_GRACE_MS'),
    heartbeatMs: number('heartbeat-ms', 'GATEWAY_HEARTBEAT_MS'),
    // Per client IP. Behind a proxy or a NAT, many clients share one address: raise them.
    connectBurst: number('connect-burst', 'GATEWAY_CONNECT_BURST'),
    connectPerSecond: number('connect-per-second', 'GATEWAY_CONNECT_PER_SECOND'),
    publishBurst: number('publish-burst', 'GATEWAY_PUBLISH_BURST'),
    publishPerSecond: number('publish-per-second', 'GATEWAY_PUBLISH_PER_SECOND'),
    // Topics shared through Redis with gateways anywhere, or (a cluster worker without
    // Redis) through the primary with the other workers.
    bus: redis ?? (cluster.isWorker ? workerBus(() => void stop()) : undefined),
    log,
  });
  // A worker's metrics are served by the primary, for all workers at once.
  const ready = () => (!gateway.ready ? false : redis && !redis.healthy ? 'degraded' : true);
  const observability = cluster.isWorker ? undefined : await serveObservability(gateway.metrics, ready, number('metrics-port', 'GATEWAY_METRICS_PORT', 7401));
  if (cluster.isWorker) reportMetrics(gateway.metrics.registry);
  log.info({ port: gateway.port, metricsPort: observability?.port, journal, devToken: token === DEV_TOKEN }, 'gateway listening');
  if (observability) {
    console.error(
      `gateway on 127.0.0.1:${gateway.port}, metrics on http://127.0.0.1:${observability.port}/metrics` +
        (token === DEV_TOKEN ? `, token "${DEV_TOKEN}" (a dev token: pass --token for anything else)` : ''),
    );
  }

  // SIGTERM or Ctrl-C: drain (readyz turns 503 at once, GOAWAY to every client, queues
  // flushed within the grace period), then stop the metrics port last, and the process
  // exits by itself with code 0. A second signal exits at once.
  function stop(): Promise<void> {
    return (stopping ??= (async () => {
      await gateway.stop();
      await redis?.stop();
      await observability?.stop();
      // A worker's IPC channel would keep it alive: let go of it once drained.
      if (cluster.isWorker) process.disconnect?.();
    })());
  }
  stopOnSignals(stop, (line) => log.info(line));
}
