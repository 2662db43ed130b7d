// A fault-injection TCP proxy, in-process, in the spirit of Toxiproxy. It sits between a
// test client and the server under test, both on 127.0.0.1, and slows, cuts, drops or
// resets the bytes between them, while connections are open:
//
//   const proxy = h.track(await startFaultProxy({ upstreamPort: server.port }));
//   const client = await h.connect(proxy.port);
//   const hole = proxy.add({ kind: 'blackhole' });   // the client's network goes silent
//   ...
//   proxy.remove(hole);                                // and comes back
//
// add() takes a FaultSpec (see toxics.ts: slicer, latency, bandwidth, blackhole, reset,
// limitData), each for 'upstream' (client → server), 'downstream' or 'both' (the default),
// and returns a handle for remove(). A fault applies to the connections already open as
// well as to new ones. With no fault the proxy is a faithful pipe: bytes pass unchanged,
// a FIN is passed on as a FIN, an RST as an RST. Everything it sees goes into
// proxy.timeline; wrap a test body in withTimeline(proxy, …) to print it under a failure.
import net from 'node:net';
import { once } from 'node:events';
import { Timeline } from './timeline.ts';
import { createRandom, describeFault, Pipe, validate, type Fault, type FaultSpec, type PipeOwner } from './toxics.ts';

export { Timeline, withTimeline } from './timeline.ts';
export { createRandom, type Direction, type Fault, type FaultSpec, type Way } from './toxics.ts';

export interface FaultProxyOptions {
  /** The server's port on 127.0.0.1. */
  upstreamPort: number;
  /** Seeds the latency jitter. The timeline prints it: pass it again to replay a failure. */
  seed?: number;
}

export async function startFaultProxy(options: FaultProxyOptions): Promise<FaultProxy> {
  // Half-open on both sides: when one peer sends FIN we pass it on and keep the other
  // direction flowing, instead of letting Node end our side for us. noDelay: the proxy
  // adds no Nagle delay of its own, so every delay a test sees is a fault's or the server's.
  const listener = net.createServer({ allowHalfOpen: true, noDelay: true });
  listener.listen(0, '127.0.0.1');
  await once(listener, 'listening');
  return new FaultProxy(listener, options.upstreamPort, options.seed ?? Math.floor(Math.random() * 2 ** 32));
}

export class FaultProxy {
  /** Where the test client connects, on 127.0.0.1. */
  readonly port: number;
  /** What happened, per connection, with ms offsets from the start. */
  readonly timeline = new Timeline();
  /** The faults in force, oldest first. Pipes read it on every step. */
  private readonly active: Fault[] = [];
  /** Open connections; each leaves the set when both of its sockets have closed. */
  private readonly conns = new Set<Connection>();
  /** The seeded PRNG behind the latency jitter. */
  private readonly random: () => number;
  private lastConnId = 0;
  private lastFaultId = 0;
  /** Set by the first stop(); later calls get the same promise. */
  private stopping: Promise<void> | undefined;

  /** Use startFaultProxy(). */
  constructor(
    private readonly listener: net.Server,
    readonly upstreamPort: number,
    readonly seed: number,
  ) {
    this.port = (listener.address() as net.AddressInfo).port;
    this.random = createRandom(seed);
    this.timeline.event(undefined, `proxy 127.0.0.1:${this.port} → 127.0.0.1:${upstreamPort}, seed ${seed}`);
    listener.on('error', (err) => this.timeline.event(undefined, `listener error ${err.message}`));
    listener.on('connection', (client) => this.accept(client));
  }

  /** Connections open now (a connection counts until both its sockets have closed). */
  get connections(): number {
    return this.conns.size;
  }

  /** Bytes the proxy has read from one peer and not yet written to the other. */
  get heldBytes(): number {
    let held = 0;
    for (const conn of this.conns) held += conn.up.held + conn.down.held;
    return held;
  }

  get faults(): readonly Fault[] {
    return this.active;
  }

  /** Switches a fault on, for open connections and new ones. Returns the handle for remove(). */
  add(spec: FaultSpec): Fault {
    validate(spec);
    const fault: Fault = Object.freeze({ id: ++this.lastFaultId, spec: Object.freeze({ ...spec }) });
    this.active.push(fault);
    this.timeline.event(undefined, `fault ${fault.id} on: ${describeFault(spec, this.seed)}`);
    for (const conn of this.conns) conn.faultsChanged();
    return fault;
  }

  /** Switches a fault off. Held bytes move on at once; bytes a blackhole dropped stay lost. */
  remove(fault: Fault): void {
    const at = this.active.indexOf(fault);
    if (at === -1) return;
    this.active.splice(at, 1);
    this.timeline.event(undefined, `fault ${fault.id} off: ${describeFault(fault.spec, this.seed)}`);
    for (const conn of this.conns) conn.faultsChanged();
  }

  /** Switches every fault off. */
  clear(): void {
    for (const fault of [...this.active]) this.remove(fault);
  }

  /** Destroys every connection, closes the listener; resolves when nothing of the proxy is left open. */
  stop(): Promise<void> {
    this.stopping ??= (async () => {
      const closed = new Promise<void>((resolve) => this.listener.close(() => resolve()));
      for (const conn of this.conns) conn.destroy();
      await Promise.all([closed, ...[...this.conns].map((conn) => conn.closed)]);
      // close()'s callback comes before libuv releases the listening handle, later in the
      // same turn of the event loop; one more turn and it is gone too.
      await new Promise((resolve) => setImmediate(resolve));
      this.timeline.event(undefined, 'proxy stopped');
    })();
    return this.stopping;
  }

  private accept(client: net.Socket): void {
    if (this.stopping) return void client.destroy();
    const conn = new Connection(++this.lastConnId, this, client, this.random);
    this.conns.add(conn);
    void conn.closed.then(() => this.conns.delete(conn));
  }
}

/** One client connection and the proxy's own connection to the server, with a pipe each way. */
class Connection implements PipeOwner {
  readonly server: net.Socket;
  readonly up: Pipe;
  readonly down: Pipe;
  /** Resolves once both sockets have closed. */
  readonly closed: Promise<void>;
  /** resetAll() ran: the RSTs are on their way (one for a socket still connecting waits for its connect). */
  private wasReset = false;
  /** closeBoth() ran: the FINs are on their way. */
  private closing = false;

  constructor(
    readonly id: number,
    private readonly proxy: FaultProxy,
    readonly client: net.Socket,
    readonly random: () => number,
  ) {
    this.event('client connected');
    this.server = net.connect({ host: '127.0.0.1', port: proxy.upstreamPort, allowHalfOpen: true, noDelay: true });
    this.up = new Pipe(this, 'upstream', client, this.server);
    this.down = new Pipe(this, 'downstream', this.server, client);
    this.wire(client, 'client', this.up);
    this.wire(this.server, 'server', this.down);
    this.server.once('connect', () => {
      this.event('connected to server');
      // A reset fault also meets connections made while it is on.
      if (this.resetFaultOn()) this.resetAll('reset fault');
    });
    const closedOnce = (socket: net.Socket) => new Promise<void>((resolve) => socket.once('close', () => resolve()));
    this.closed = Promise.all([closedOnce(client), closedOnce(this.server)]).then(() => {
      this.up.stop();
      this.down.stop();
      this.event('closed');
    });
  }

  get timeline(): Timeline {
    return this.proxy.timeline;
  }

  faults(): readonly Fault[] {
    return this.proxy.faults;
  }

  /** A fault came or went: reset if a reset fault is on, else let each pipe re-plan. */
  faultsChanged(): void {
    if (this.resetFaultOn()) return this.resetAll('reset fault');
    this.up.pump();
    this.down.pump();
  }

  /** RST to both peers at once: resetAndDestroy() closes with SO_LINGER 0 instead of a FIN. */
  resetAll(why: string): void {
    if (this.wasReset) return;
    this.wasReset = true;
    this.up.stop();
    this.down.stop();
    for (const [name, socket] of [['client', this.client], ['server', this.server]] as const) {
      if (socket.destroyed) continue;
      socket.resetAndDestroy();
      this.event(`RST → ${name} (${why})`);
    }
  }

  /** limitData: FIN to both peers, after which the connection carries nothing more. */
  closeBoth(why: string): void {
    if (this.closing) return;
    this.closing = true;
    this.event(`closing both sides (${why})`);
    this.up.finish();
    this.down.finish();
  }

  /** stop(): a plain destroy, so the peers see FIN; no timer survives it. */
  destroy(): void {
    this.up.stop();
    this.down.stop();
    this.client.destroy();
    this.server.destroy();
  }

  private wire(socket: net.Socket, name: 'client' | 'server', pipe: Pipe): void {
    socket.on('data', (chunk: Buffer) => pipe.push(chunk));
    socket.on('end', () => pipe.end());
    // Every socket needs an 'error' listener: without one an ECONNRESET crashes the process.
    socket.on('error', (err: NodeJS.ErrnoException) => {
      this.event(`${name} error ${err.code ?? err.message}`);
      // The error travels the same way as this socket's bytes, so a blackhole on that way
      // swallows it: the other peer never hears that this one is gone.
      if (pipe.blackholed()) return this.event(`${name}'s RST not passed on (blackhole)`);
      this.resetAll(`${name} ${err.code ?? 'error'}`);
    });
  }

  private resetFaultOn(): boolean {
    return this.proxy.faults.some((fault) => fault.spec.kind === 'reset');
  }

  private event(text: string): void {
    this.proxy.timeline.event(this.id, text);
  }
}
