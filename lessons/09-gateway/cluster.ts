// Past one core: `--workers N` runs N gateway processes with node:cluster. They share the
// listening port (the primary hands out connections in turn), and topics cross between
// them through the primary over IPC, so one machine needs no outside service. The primary
// also serves the metrics of all workers, starts a new worker when one dies, and on
// SIGTERM drains them all.
import cluster, { type Worker } from 'node:cluster';
import type { Logger } from 'pino';
import { AggregatorRegistry, type Registry } from 'prom-client';
import { stopOnSignals } from '../08-graceful-shutdown/shutdown.ts';
import type { TopicBus } from './gateway.ts';
import { serveObservability } from './metrics.ts';

/** Between a worker and the primary. Buffers pass as they are ('advanced' serialization). */
type ClusterMessage =
  | { bus: 'interest'; topic: string; wanted: boolean }
  | { bus: 'publish' | 'message'; topic: string; body: Uint8Array }
  | { bus: 'stop' };

/** A worker's bus: what it publishes goes to the primary, which passes it to the workers that want it. */
export function workerBus(onStop: () => void): TopicBus {
  const send = (message: ClusterMessage) => process.send?.(message);
  const bus: TopicBus = {
    interest: (topic, wanted) => send({ bus: 'interest', topic, wanted }),
    publish: (topic, body) => send({ bus: 'publish', topic, body }),
  };
  process.on('message', (message: ClusterMessage) => {
    if (message.bus === 'message') bus.deliver?.(message.topic, Buffer.from(message.body.buffer, message.body.byteOffset, message.body.byteLength));
    // The primary asks by message, not by signal: after Ctrl-C every worker already has
    // its SIGINT, and a second signal would mean "exit now".
    else if (message.bus === 'stop') onStop();
  });
  return bus;
}

/** Gives the primary's metrics endpoint this worker's registry. */
export function reportMetrics(registry: Registry): void {
  // Constructing one is what makes prom-client answer the primary's requests here.
  new AggregatorRegistry();
  AggregatorRegistry.setRegistries([registry]);
}

export async function runPrimary(options: { workers: number; metricsPort: number; log: Logger }): Promise<void> {
  const { workers, log } = options;
  cluster.setupPrimary({ serialization: 'advanced' });
  // topic -> the workers with a subscriber to it: a message goes only where it is wanted.
  const interest = new Map<string, Set<Worker>>();
  let stopping = false;

  function forget(worker: Worker): void {
    for (const [topic, set] of interest) if (set.delete(worker) && set.size === 0) interest.delete(topic);
  }

  function start(): void {
    const worker = cluster.fork();
    log.info({ worker: worker.id, pid: worker.process.pid }, 'worker started');
    worker.on('message', (message: ClusterMessage) => {
      if (message.bus === 'interest') {
        let set = interest.get(message.topic);
        if (message.wanted) {
          if (!set) interest.set(message.topic, (set = new Set()));
          set.add(worker);
        } else if (set?.delete(worker) && set.size === 0) interest.delete(message.topic);
      } else if (message.bus === 'publish') {
        for (const other of interest.get(message.topic) ?? []) {
          if (other !== worker && other.isConnected()) other.send({ bus: 'message', topic: message.topic, body: message.body } satisfies ClusterMessage);
        }
      }
    });
    worker.once('exit', (code, signal) => {
      forget(worker);
      if (stopping) return;
      // Its clients reconnect (to the others, or to this one's successor).
      log.error({ worker: worker.id, pid: worker.process.pid, code, signal }, 'worker died: starting another');
      start();
    });
  }

  // Workers that have started listening: only those can be asked to drain.
  const listeningWorkers = new Set<Worker>();
  let said = false;
  cluster.on('listening', (worker, address) => {
    listeningWorkers.add(worker);
    worker.once('exit', () => listeningWorkers.delete(worker));
    if (!said && listeningWorkers.size === workers) {
      said = true;
      console.error(`gateway on 127.0.0.1:${address.port} (${workers} workers)`);
    }
  });
  for (let i = 0; i < workers; i++) start();

  // prom-client asks every worker for its registry over IPC and sums the answers.
  const aggregator = new AggregatorRegistry();
  const observability = await serveObservability(
    { registry: { metrics: () => aggregator.clusterMetrics(), contentType: aggregator.contentType } },
    () => !stopping && Object.keys(cluster.workers ?? {}).length > 0,
    options.metricsPort,
  );
  log.info({ metricsPort: observability.port, workers }, 'primary listening');
  console.error(`metrics of all workers on http://127.0.0.1:${observability.port}/metrics`);

  stopOnSignals(
    async () => {
      stopping = true;
      const running = Object.values(cluster.workers ?? {}).filter((w): w is Worker => w !== undefined);
      await Promise.all(
        running.map(
          (worker) =>
            new Promise<void>((resolve) => {
              worker.once('exit', () => resolve());
              // A worker still starting has no client and may not listen for messages
              // yet: a signal ends it. One that listens drains first.
              if (listeningWorkers.has(worker) && worker.isConnected()) worker.send({ bus: 'stop' } satisfies ClusterMessage);
              else worker.process.kill('SIGTERM');
            }),
        ),
      );
      await observability.stop();
    },
    (line) => log.info(line),
  );
}
