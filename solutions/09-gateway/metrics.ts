// What an operator sees of the gateway: Prometheus metrics, and the health endpoints an
// orchestrator polls, on their own HTTP port (never on the gateway's own: a scrape must
// not compete with clients for a connection slot, and the protocol port speaks frames).
//
// Gauges are read from the live state when scraped (collect()), not kept up to date with
// inc() and dec(): a gauge nobody has to remember to decrement cannot drift.
import http from 'node:http';
import type net from 'node:net';
import { Counter, Gauge, Histogram, Registry } from 'prom-client';
import { typeName } from '#protocol';

/** The live numbers the gauges read at each scrape. */
export interface GatewayState {
  connections: number;
  subscriptions: number;
  topics: number;
  queuedBytes: number;
  ready: boolean;
}

export class GatewayMetrics {
  // One registry per gateway (not prom-client's global one), so two gateways in one
  // process (tests, a cluster worker's restart) never share a counter.
  readonly registry = new Registry();

  readonly framesIn = new Counter({ name: 'gateway_frames_in_total', help: 'Frames received, by type.', labelNames: ['type'], registers: [this.registry] });
  readonly framesOut = new Counter({ name: 'gateway_frames_out_total', help: 'Frames queued to clients, by type (a fan-out counts once per subscriber).', labelNames: ['type'], registers: [this.registry] });
  readonly bytesIn = new Counter({ name: 'gateway_bytes_in_total', help: 'Bytes received from clients.', registers: [this.registry] });
  readonly bytesOut = new Counter({ name: 'gateway_bytes_out_total', help: 'Bytes queued to clients.', registers: [this.registry] });
  readonly published = new Counter({ name: 'gateway_published_total', help: 'PUBLISH frames acknowledged.', registers: [this.registry] });
  readonly slowConsumers = new Counter({ name: 'gateway_slow_consumers_cut_total', help: 'Subscribers disconnected for falling too far behind.', registers: [this.registry] });
  readonly refusals = new Counter({ name: 'gateway_busy_refusals_total', help: 'Connections and publishes refused with BUSY, by limit.', labelNames: ['limit'], registers: [this.registry] });
  readonly heartbeatDrops = new Counter({ name: 'gateway_heartbeat_drops_total', help: 'Connections dropped for silence (no PONG, no byte) past the heartbeat window.', registers: [this.registry] });
  readonly deadlineDrops = new Counter({ name: 'gateway_deadline_drops_total', help: 'Connections cut by a deadline (HELLO, frame, write).', registers: [this.registry] });
  readonly errors = new Counter({ name: 'gateway_error_frames_total', help: 'ERROR frames sent, by code.', labelNames: ['code'], registers: [this.registry] });
  readonly publishSeconds = new Histogram({
    name: 'gateway_publish_to_ack_seconds',
    help: 'From a PUBLISH read to its ACK queued (journal write included).',
    buckets: [0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1],
    registers: [this.registry],
  });

  // Every frame is counted. A child counter per frame type, made once, spares each inc()
  // prom-client's hashing of the label set.
  private readonly byType = new Map<Counter, Map<number, Counter.Internal>>();
  private typed(counter: Counter<'type'>, type: number): Counter.Internal {
    let children = this.byType.get(counter);
    if (!children) this.byType.set(counter, (children = new Map()));
    let child = children.get(type);
    if (!child) children.set(type, (child = counter.labels({ type: typeName(type) })));
    return child;
  }

  /** A frame received. */
  frameIn(type: number): void {
    this.typed(this.framesIn, type).inc();
  }

  /** `count` frames of `type` queued to clients, `bytes` in all. */
  frameOut(type: number, bytes: number, count = 1): void {
    this.typed(this.framesOut, type).inc(count);
    this.bytesOut.inc(bytes);
  }

  constructor(state: () => GatewayState) {
    const gauge = (name: string, help: string, read: (s: GatewayState) => number) =>
      new Gauge({ name, help, registers: [this.registry], collect() { this.set(read(state())); } });
    gauge('gateway_connections', 'Client connections open and admitted.', (s) => s.connections);
    gauge('gateway_subscriptions', 'Subscriptions across all topics.', (s) => s.subscriptions);
    gauge('gateway_topics', 'Topics with at least one subscriber.', (s) => s.topics);
    gauge('gateway_queued_bytes', 'Bytes waiting for clients to read them (writer queues and socket buffers).', (s) => s.queuedBytes);
    gauge('gateway_ready', '1 while the gateway takes new work, 0 while it drains.', (s) => (s.ready ? 1 : 0));
  }
}

export interface ObservabilityServer {
  port: number;
  stop(): Promise<void>;
}

/**
 * Serves /healthz (the process is alive), /readyz (it takes new work: 503 while
 * draining, so a load balancer stops sending clients before the gateway stops
 * accepting them) and /metrics (Prometheus text) on 127.0.0.1.
 */
export async function serveObservability(
  // A gateway's metrics, or (cluster.ts) a registry that gathers those of every worker.
  metrics: { registry: { metrics(): Promise<string>; contentType: string } },
  ready: () => boolean | 'degraded',
  port = 0,
): Promise<ObservabilityServer> {
  const server = http.createServer((req, res) => {
    const path = (req.url ?? '/').split('?')[0];
    if (path === '/healthz') return void res.writeHead(200, { 'content-type': 'text/plain' }).end('ok\n');
    if (path === '/readyz') {
      // "degraded" (200): taking clients and fanning out here, but cut off from the
      // other gateways (Redis is down). Draining (503): send new clients elsewhere.
      const state = ready();
      return void res.writeHead(state ? 200 : 503, { 'content-type': 'text/plain' }).end(state === true ? 'ready\n' : state ? 'degraded\n' : 'draining\n');
    }
    if (path === '/metrics') {
      metrics.registry.metrics().then(
        (text) => res.writeHead(200, { 'content-type': metrics.registry.contentType }).end(text),
        (err: Error) => res.writeHead(500).end(`${err.message}\n`),
      );
      return;
    }
    res.writeHead(404, { 'content-type': 'text/plain' }).end('try /healthz, /readyz or /metrics\n');
  });
  // A scraper that keeps its connection alive must not hold stop() open.
  server.keepAliveTimeout = 1000;
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(port, '127.0.0.1', () => resolve());
  });
  return {
    port: (server.address() as net.AddressInfo).port,
    async stop() {
      const closed = new Promise<void>((resolve) => server.close(() => resolve()));
      server.closeAllConnections();
      await closed;
    },
  };
}
