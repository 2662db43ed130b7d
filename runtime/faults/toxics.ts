// The faults the proxy can inject, and the pipe that applies them to one direction of
// one connection. Toxiproxy calls faults "toxics"; names and meanings follow its README,
// with two changes the lessons need: a fault also applies to connections that were
// already open when it was added (Toxiproxy #148), and a blackhole swallows FIN and RST
// as well as data, so both peers are left holding a half-open connection.
import type { Socket } from 'node:net';
import { ARROW, type Timeline, type Way } from './timeline.ts';

export type { Way } from './timeline.ts';

/** Which way a fault acts. 'both' (the default) gives each way its own copy of it. */
export type Direction = Way | 'both';

export type FaultSpec =
  // Cuts the bytes into pieces of at most `bytes`, `delayMs` apart (and one timer tick at
  // least, so the receiver reads each piece on its own): partial reads, split headers.
  | { kind: 'slicer'; bytes: number; delayMs?: number; direction?: Direction }
  // Holds every byte for `ms` ± `jitterMs` (drawn from the proxy's seed), keeping their order.
  | { kind: 'latency'; ms: number; jitterMs?: number; direction?: Direction }
  // Lets at most `bytesPerSecond` through: a slow link, or a slow reader on the far side.
  | { kind: 'bandwidth'; bytesPerSecond: number; direction?: Direction }
  // Drops every byte, FIN and RST: the peers see a connection that has silently died.
  | { kind: 'blackhole'; direction?: Direction }
  // RST to both peers at once: now, and on every new connection while the fault is on.
  | { kind: 'reset' }
  // Passes exactly `bytes` bytes, then closes both sides with FIN (Toxiproxy's limit_data).
  | { kind: 'limitData'; bytes: number; direction?: Direction };

/** A fault in force on a proxy. Hand it back to proxy.remove() to lift it. */
export interface Fault {
  readonly id: number;
  readonly spec: FaultSpec;
}

export function validate(spec: FaultSpec): void {
  const bad = (what: string) => {
    throw new RangeError(`${spec.kind} fault: ${what}`);
  };
  const count = (n: number, min: number) => Number.isInteger(n) && n >= min;
  const span = (n: number | undefined) => n === undefined || (Number.isFinite(n) && n >= 0);
  if (spec.kind === 'slicer' && (!count(spec.bytes, 1) || !span(spec.delayMs))) bad('bytes must be an integer >= 1, delayMs >= 0');
  if (spec.kind === 'latency' && (!span(spec.ms) || !span(spec.jitterMs))) bad('ms and jitterMs must be >= 0');
  if (spec.kind === 'bandwidth' && !(spec.bytesPerSecond > 0 && Number.isFinite(spec.bytesPerSecond))) bad('bytesPerSecond must be > 0');
  if (spec.kind === 'limitData' && !count(spec.bytes, 0)) bad('bytes must be an integer >= 0');
}

/** "latency 50 ms ± 10 ms (seed 7), upstream": for the timeline. */
export function describeFault(spec: FaultSpec, seed: number): string {
  const where = spec.kind === 'reset' ? '' : `, ${spec.direction ?? 'both'}`;
  switch (spec.kind) {
    case 'slicer':
      return `slicer ${spec.bytes} B pieces, ${spec.delayMs ?? 0} ms apart${where}`;
    case 'latency':
      return `latency ${spec.ms} ms${spec.jitterMs ? ` ± ${spec.jitterMs} ms (seed ${seed})` : ''}${where}`;
    case 'bandwidth':
      return `bandwidth ${spec.bytesPerSecond} B/s${where}`;
    case 'blackhole':
      return `blackhole${where}`;
    case 'reset':
      return 'reset';
    case 'limitData':
      return `limitData ${spec.bytes} B${where}`;
  }
}

/** What the faults on one way add up to right now. Latencies add up (as in Toxiproxy's chain); otherwise the harshest fault wins. */
export interface Effects {
  blackhole: boolean;
  latencyMs: number;
  jitterMs: number;
  slice: { bytes: number; delayMs: number } | undefined;
  bytesPerSecond: number | undefined;
  /** limitData faults: each counts its own bytes. */
  limits: Fault[];
}

export function effectsOn(faults: readonly Fault[], way: Way): Effects {
  const fx: Effects = { blackhole: false, latencyMs: 0, jitterMs: 0, slice: undefined, bytesPerSecond: undefined, limits: [] };
  for (const fault of faults) {
    const spec = fault.spec;
    if (spec.kind === 'reset' || (spec.direction !== undefined && spec.direction !== 'both' && spec.direction !== way)) continue;
    if (spec.kind === 'blackhole') fx.blackhole = true;
    if (spec.kind === 'latency') {
      fx.latencyMs += spec.ms;
      fx.jitterMs += spec.jitterMs ?? 0;
    }
    if (spec.kind === 'slicer') {
      fx.slice = {
        bytes: Math.min(fx.slice?.bytes ?? Infinity, spec.bytes),
        delayMs: Math.max(fx.slice?.delayMs ?? 0, spec.delayMs ?? 0),
      };
    }
    if (spec.kind === 'bandwidth') fx.bytesPerSecond = Math.min(fx.bytesPerSecond ?? Infinity, spec.bytesPerSecond);
    if (spec.kind === 'limitData') fx.limits.push(fault);
  }
  return fx;
}

/** mulberry32, a tiny seeded PRNG, uniform in [0, 1). Same seed, same jitter: a failure can be replayed. */
export function createRandom(seed: number): () => number {
  let state = seed >>> 0;
  return () => {
    state = (state + 0x6d2b79f5) >>> 0;
    let t = state;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/** What a pipe needs from the connection it belongs to. */
export interface PipeOwner {
  readonly id: number;
  readonly timeline: Timeline;
  /** The faults in force now. Read on every step, which is how a new fault reaches open connections. */
  faults(): readonly Fault[];
  random(): number;
  /** A limitData fault let its last byte through: the connection ends. */
  closeBoth(why: string): void;
  /** Bytes came for a peer that is already gone: the sender gets an RST, as a kernel would answer. */
  resetAll(why: string): void;
}

/** One item on its way: bytes, or the sender's FIN (bytes undefined). */
interface Item {
  bytes: Buffer | undefined;
  /** When the proxy read it (performance.now()): latency counts from here. */
  arrivedAt: number;
  /** This item's share of the jitter, in [-1, 1), drawn when it arrived. */
  jitter: number;
}

// Above this many held bytes we stop reading the sender, as a full TCP window would.
// Without it a slow fault would turn the proxy into an unbounded buffer and hide the
// backpressure the lessons are about. Like a window it caps throughput under latency:
// at most this much per `ms` (the bandwidth-delay product).
const HIGH_WATER = 256 * 1024;
// A bandwidth limit sends at most this much time's worth of bytes at once, so the bytes
// trickle out instead of leaving in one burst.
const BURST_MS = 50;

/**
 * One direction of one connection: reads from `from`, applies the faults in force, writes
 * to `to`. Bytes and the FIN queue up in order, so delays never reorder them.
 */
export class Pipe {
  /** Read from the sender, not yet written to the receiver, in arrival order. */
  private queue: Item[] = [];
  /** Bytes in `queue`, for flow control and proxy.heldBytes. */
  held = 0;
  /**
   * The one timer that wakes the pipe when the head of the queue may leave. Ref'ed on
   * purpose: it carries data someone is waiting for. stop() clears it.
   */
  private timer: NodeJS.Timeout | undefined;
  /** Slicer: the next piece may not leave before this time. */
  private nextPieceAt = 0;
  /** Bandwidth: bytes we may send now, refilled at the rate. Undefined while no limit is on. */
  private bucket: { tokens: number; at: number } | undefined;
  /** limitData: bytes each fault has let through here (a WeakMap, so lifted faults fall away). */
  private readonly passed = new WeakMap<Fault, number>();
  /** The sender's FIN was read, or the connection is ending: later bytes are dropped. */
  private finished = false;
  /** stop() ran: the pipe does nothing more. */
  private stopped = false;

  constructor(
    private readonly owner: PipeOwner,
    readonly way: Way,
    private readonly from: Socket,
    private readonly to: Socket,
  ) {
    to.on('drain', () => this.pump());
  }

  blackholed(): boolean {
    return effectsOn(this.owner.faults(), this.way).blackhole;
  }

  /** Bytes read from the sender. */
  push(chunk: Buffer): void {
    if (this.stopped) return;
    // Dropped on arrival, so lifting the blackhole later does not bring them back.
    if (this.finished || this.blackholed()) return this.owner.timeline.bytes(this.owner.id, this.way, chunk.length, true);
    this.queue.push({ bytes: chunk, arrivedAt: performance.now(), jitter: this.owner.random() * 2 - 1 });
    this.held += chunk.length;
    this.pump();
  }

  /** The sender's FIN. It queues behind the bytes sent before it. */
  end(): void {
    if (this.stopped || this.finished) return;
    this.finished = true;
    if (this.blackholed()) return this.note('FIN dropped (blackhole)');
    this.queue.push({ bytes: undefined, arrivedAt: performance.now(), jitter: this.owner.random() * 2 - 1 });
    this.pump();
  }

  /** The connection is ending (limitData): drop what is held, then pass on a FIN. */
  finish(): void {
    if (this.stopped) return;
    const dropped = this.held;
    this.queue = this.queue.filter((item) => !item.bytes);
    this.held = 0;
    if (dropped) this.owner.timeline.bytes(this.owner.id, this.way, dropped, true);
    if (!this.finished) this.queue.push({ bytes: undefined, arrivedAt: performance.now(), jitter: 0 });
    this.finished = true;
    this.pump();
  }

  /** The connection is gone: forget what is held and clear the timer. */
  stop(): void {
    this.stopped = true;
    clearTimeout(this.timer);
    this.timer = undefined;
    this.queue = [];
    this.held = 0;
  }

  /**
   * Writes whatever may leave now and sets the timer for the rest. Runs when bytes arrive,
   * when the timer fires (`onTimer`), on 'drain', and whenever a fault is added or removed,
   * so a change of faults reaches the bytes already held.
   */
  pump(onTimer = false): void {
    clearTimeout(this.timer);
    this.timer = undefined;
    // What the connection must do once this pump is over (end or reset it), if anything.
    let afterwards: (() => void) | undefined;
    // Every pass writes or drops part of the queue, or breaks: the loop is bounded by it.
    while (!this.stopped && this.queue.length > 0) {
      const head = this.queue[0]!;
      const fx = effectsOn(this.owner.faults(), this.way);
      if (fx.blackhole) {
        this.dropQueue('blackhole');
        break;
      }
      if (this.to.destroyed) {
        this.dropQueue('receiver gone');
        if (head.bytes) afterwards = () => this.owner.resetAll('bytes for a peer that is gone');
        break;
      }
      if (this.to.writableNeedDrain) break; // 'drain' runs us again
      const now = performance.now();
      let size = head.bytes?.length ?? 0;
      let leaveAt = head.arrivedAt + Math.max(0, fx.latencyMs + head.jitter * fx.jitterMs);
      if (head.bytes && fx.slice) {
        size = Math.min(size, fx.slice.bytes);
        leaveAt = Math.max(leaveAt, this.nextPieceAt);
      }
      if (!fx.bytesPerSecond) this.bucket = undefined;
      if (head.bytes && fx.bytesPerSecond) {
        size = Math.min(size, Math.max(1, Math.floor((fx.bytesPerSecond * BURST_MS) / 1000)));
        leaveAt = Math.max(leaveAt, this.bandwidthReadyAt(size, fx.bytesPerSecond, now));
      }
      const room = this.roomUnder(fx.limits);
      if (head.bytes && room === 0) {
        afterwards = () => this.owner.closeBoth('limitData reached');
        break;
      }
      size = Math.min(size, room);
      // A slicer's pieces leave only from a timer callback, never straight from a 'data'
      // handler: the receiver then reads each piece before the next is written, instead of
      // finding two of them glued together in its buffer.
      if (leaveAt > now || (head.bytes && fx.slice && !onTimer)) {
        this.timer = setTimeout(() => this.pump(true), Math.ceil(Math.max(0, leaveAt - now)));
        break;
      }
      this.send(head, size, fx, now);
      onTimer = false;
      if (head.bytes && fx.limits.length && this.roomUnder(fx.limits) === 0) {
        afterwards = () => this.owner.closeBoth('limitData reached');
        break;
      }
    }
    this.flowControl();
    // Last, outside the loop: ending the connection pumps both pipes, this one included.
    afterwards?.();
  }

  private send(head: Item, size: number, fx: Effects, now: number): void {
    if (!head.bytes) {
      this.queue.shift();
      this.to.end();
      return this.note('FIN');
    }
    const piece = head.bytes.subarray(0, size);
    if (size === head.bytes.length) this.queue.shift();
    else head.bytes = head.bytes.subarray(size);
    this.held -= size;
    this.to.write(piece);
    this.owner.timeline.bytes(this.owner.id, this.way, size);
    if (fx.slice) this.nextPieceAt = now + fx.slice.delayMs;
    if (this.bucket) this.bucket.tokens -= size;
    for (const fault of fx.limits) this.passed.set(fault, (this.passed.get(fault) ?? 0) + size);
  }

  /** When `size` bytes may leave under a rate limit: a token bucket that starts empty and holds at most BURST_MS worth. */
  private bandwidthReadyAt(size: number, bytesPerSecond: number, now: number): number {
    const bucket = (this.bucket ??= { tokens: 0, at: now });
    const most = Math.max(size, (bytesPerSecond * BURST_MS) / 1000);
    bucket.tokens = Math.min(most, bucket.tokens + ((now - bucket.at) * bytesPerSecond) / 1000);
    bucket.at = now;
    // The small tolerance keeps float rounding from costing an extra timer tick.
    return bucket.tokens + 1e-6 >= size ? now : now + ((size - bucket.tokens) * 1000) / bytesPerSecond;
  }

  /** How many more bytes the limitData faults let through here. */
  private roomUnder(limits: readonly Fault[]): number {
    let room = Infinity;
    for (const fault of limits) {
      if (fault.spec.kind === 'limitData') room = Math.min(room, fault.spec.bytes - (this.passed.get(fault) ?? 0));
    }
    return Math.max(0, room);
  }

  private dropQueue(why: string): void {
    if (this.held) this.owner.timeline.bytes(this.owner.id, this.way, this.held, true);
    if (this.queue.some((item) => !item.bytes)) this.note(`FIN dropped (${why})`);
    this.queue = [];
    this.held = 0;
  }

  /**
   * Stops reading the sender while we hold too much or the receiver's buffer is full, and
   * reads again once there is room: the backpressure passes through the proxy. Under a
   * blackhole we keep reading, because dropping is what a blackhole does.
   */
  private flowControl(): void {
    if (this.stopped || this.from.destroyed) return;
    const full = !this.blackholed() && (this.held >= HIGH_WATER || (!this.to.destroyed && this.to.writableNeedDrain));
    if (full && !this.from.isPaused()) this.from.pause();
    if (!full && this.from.isPaused()) this.from.resume();
  }

  private note(text: string): void {
    this.owner.timeline.event(this.owner.id, `${ARROW[this.way]}   ${text}`);
  }
}
