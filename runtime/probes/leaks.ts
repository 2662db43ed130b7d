// The leak probe: what a test left alive. An async hook notes every timer, socket and
// server the process creates and forgets it when it is released; a probe's snapshot is
// the set alive when it was taken, so what is alive now and was not then is a leak.
// (Counting process.getActiveResourcesInfo() is not enough: a leaked timer hides behind
// one of the test runner's own timers that ended meanwhile.) Socket fds come from
// /proc/self/fd, as a second witness.
import { createHook } from 'node:async_hooks';
import type { EventEmitter } from 'node:events';
import type net from 'node:net';
import { readdirSync, readlinkSync } from 'node:fs';
import { setTimeout as sleep } from 'node:timers/promises';

interface Tracked {
  kind: string;
  resource: { _destroyed?: boolean; hasRef?: () => boolean };
  /** Where user code created it: the most useful line in a leak report. */
  site: string;
}

// The async-hook types we watch, under the names getActiveResourcesInfo() uses.
const KINDS: Record<string, string> = { Timeout: 'Timeout', TCPWRAP: 'TCPSocketWrap', TCPSERVERWRAP: 'TCPServerWrap' };

const MEANING: Record<string, string> = {
  TCPSocketWrap: 'open TCP socket',
  TCPServerWrap: 'listening server',
  Timeout: "timer or interval still scheduled (unref() does not end it)",
};

const alive = new Map<number, Tracked>();

createHook({
  init(asyncId, type, _trigger, resource) {
    const kind = KINDS[type];
    if (!kind) return;
    const stack = captureStack();
    // AbortSignal.timeout() arms an unref'd timer nobody can clear; it ends by itself.
    if (type === 'Timeout' && stack.includes('abort_controller')) return;
    // Node's HTTP server caches the Date header for a second with an unref'd timer of its
    // own (utcDate); it is rearmed only by the next response and ends by itself.
    if (type === 'Timeout' && stack.includes('utcDate')) return;
    const site = creationSite(stack);
    // The test runner's own timers come and go with every test; they are not the lesson's.
    if (site === undefined) return;
    alive.set(asyncId, { kind, resource: resource as Tracked['resource'], site });
  },
  destroy(asyncId) {
    alive.delete(asyncId);
  },
}).enable();

function captureStack(): string {
  const limit = Error.stackTraceLimit;
  Error.stackTraceLimit = 30;
  const stack = new Error().stack ?? '';
  Error.stackTraceLimit = limit;
  return stack;
}

/** The first stack frame in project code, or undefined for the test runner's own resources. */
function creationSite(stack: string): string | undefined {
  const frames = stack.split('\n').slice(1).filter((f) => !f.includes('node:') && !f.includes('probes/leaks.ts'));
  const own = frames.find((f) => /\.ts:\d+/.test(f) && !f.includes('node_modules'));
  if (!own && frames.some((f) => /node_modules[\\/](vitest|@vitest|tinypool|vite)[\\/]/.test(f))) return undefined;
  const m = own?.match(/([^/\\(]+\.ts):(\d+)/);
  return m ? `${m[1]}:${m[2]}` : 'node internals';
}

export type Resources = Map<string, number>;

export interface Leaks {
  /** Resources alive now that were not at the snapshot, by kind. */
  resources: Resources;
  /** Of the new timers, how many are ref'd (would keep the process from exiting). */
  refTimers: number;
  /** Listeners added to watched emitters since the snapshot ("'announce' on announcements: +1"). */
  listeners: string[];
  /** Connections watched servers still count (server.getConnections()) beyond the snapshot. */
  connections: number;
  /** Where each leaked resource was created ("presence.ts:45"), for the report. */
  sites: string[];
  /** Socket fds open now beyond the snapshot. */
  socketFds: number;
}

/** Socket fds of this process (only `socket:` links: readdir itself opens an fd). */
export function socketFdCount(): number {
  let n = 0;
  for (const fd of readdirSync('/proc/self/fd')) {
    try {
      if (readlinkSync(`/proc/self/fd/${fd}`).startsWith('socket:')) n++;
    } catch {
      // the fd closed between readdir and readlink
    }
  }
  return n;
}

export function isClean(leaks: Leaks): boolean {
  return leaks.resources.size === 0 && leaks.socketFds <= 0 && leaks.listeners.length === 0 && leaks.connections <= 0;
}

/** "1 Timeout (timer or interval still scheduled …), 2 TCPSocketWrap (open TCP socket) — created at presence.ts:45". */
export function describeLeaks(leaks: Leaks): string {
  const parts = [...leaks.resources].map(([name, n]) => `${n} ${name}${MEANING[name] ? ` (${MEANING[name]})` : ''}`);
  if (leaks.socketFds > 0 && !leaks.resources.has('TCPSocketWrap')) parts.push(`${leaks.socketFds} socket fd(s)`);
  if (leaks.connections > 0) parts.push(`${leaks.connections} connection(s) the server still counts`);
  parts.push(...leaks.listeners);
  if (!parts.length) return 'nothing';
  const sites = [...new Set(leaks.sites)];
  return `${parts.join(', ')}${sites.length ? `; created at ${sites.join(', ')}` : ''}`;
}

export class LeakProbe {
  private before = new Set<number>();
  private fds = 0;
  private readonly emitters: Array<{ emitter: EventEmitter; event: string; name: string; count: number }> = [];
  /** Connections accepted by watched servers since they were watched, until each closes. */
  private readonly accepted = new Set<net.Socket>();

  constructor() {
    this.rebase();
  }

  /** Also count listeners for `event` on a long-lived emitter (a bus, a shared signal). */
  watchListeners(emitter: EventEmitter, event: string, name = 'an emitter'): this {
    this.emitters.push({ emitter, event, name, count: emitter.listenerCount(event) });
    return this;
  }

  /**
   * Also count the connections a server accepts from now on and has not closed: what
   * server.getConnections() would add up, known at once rather than by callback.
   */
  watchServer(server: net.Server): this {
    server.on('connection', (socket: net.Socket) => {
      this.accepted.add(socket);
      socket.once('close', () => this.accepted.delete(socket));
    });
    return this;
  }

  /** Forget the old snapshot: what is alive now is the new baseline. */
  rebase(): void {
    this.before = new Set(alive.keys());
    this.fds = socketFdCount();
    for (const e of this.emitters) e.count = e.emitter.listenerCount(e.event);
  }

  leaks(): Leaks {
    const resources: Resources = new Map();
    const sites: string[] = [];
    let refTimers = 0;
    for (const [id, t] of alive) {
      if (this.before.has(id)) continue;
      // A timer that fired or was cleared is gone, though the hook hears of it a little
      // later. One that is merely unref'd is still scheduled: it keeps firing, and keeps
      // whatever its callback holds in memory, so it counts (an idle evictor, say, must be
      // cleared when its pool closes, not just unref'd).
      if (t.kind === 'Timeout' && t.resource._destroyed) continue;
      if (t.kind === 'Timeout' && t.resource.hasRef?.() !== false) refTimers++;
      resources.set(t.kind, (resources.get(t.kind) ?? 0) + 1);
      sites.push(t.site);
    }
    const listeners = this.emitters
      .map((e) => ({ ...e, extra: e.emitter.listenerCount(e.event) - e.count }))
      .filter((e) => e.extra > 0)
      .map((e) => `${e.extra} '${e.event}' listener(s) on ${e.name}`);
    return { resources, refTimers, sites, listeners, connections: this.accepted.size, socketFds: socketFdCount() - this.fds };
  }

  /**
   * Polls until nothing beyond the snapshot is alive, or `within` ms pass; returns what
   * is left (empty when clean). A destroyed socket leaves the list once its close
   * callback has run, a few ms later, hence the wait.
   */
  async settle(within = 300): Promise<Leaks> {
    const deadline = performance.now() + within;
    for (;;) {
      const leaks = this.leaks();
      if (isClean(leaks) || performance.now() >= deadline) return leaks;
      await sleep(5);
    }
  }
}
