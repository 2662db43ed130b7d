// Deadlines for every connection of a server, checked by one sweep. Nothing a connection
// waits for may take for ever: the next byte (idle), the rest of a frame that has begun
// (slowloris), the kernel taking what we wrote (a peer that does not read), or whatever
// its owner is waiting for ("no HELLO within 5 s").
//
// A timer per connection would do, and costs a timer per connection. One interval looks
// at every connection instead, and only at what the socket already counts (bytes read,
// bytes written, bytes still waiting), so the owner's reads and writes stay as they are.
// Every clock starts at the look that first sees its reason, after the fact: a deadline
// fires up to a tick or two late, never early. The interval runs only while a connection
// is watched, so a server with no connection holds no timer.
import type net from 'node:net';
import { HEADER_BYTES } from '#protocol';
import { encodeFrame, FrameType } from '../02-framing/codec.ts';

export interface SweepOptions {
  /** How often the sweep looks at every connection: the precision of every deadline. Default 1000. */
  tickMs?: number;
}

export interface WatchOptions {
  /** No byte in or out for this long, while not busy → expire "idle for N ms". Unset: no idle deadline. */
  idleMs?: number;
  /** A frame whose first byte has arrived must be complete within this. Needs partialFrameBytes. */
  frameMs?: number;
  /** Bytes handed to the socket (by anyone: socket.write is observed, not wrapped) must keep being taken by the kernel: none taken for this long → expire. */
  writeMs?: number;
  /** The bytes the reader holds of a frame not complete yet (its header's 4 not counted once complete): () => reader.decoder.bufferedBytes. */
  partialFrameBytes?: () => number;
  /** True while the connection has work in flight: it is not idle. */
  busy?: () => boolean;
  /** How to stop reading at expiry, so nothing that arrives after it is served: () => reader.stop(). Default: socket.pause(). */
  stopReading?: () => void;
  /** How to tell the peer why it is cut: receives the ERROR "TIMEOUT <reason>" frame. Default: socket.end(frame). The sweep waits for a returned promise at most until its next tick. */
  say?: (frame: Buffer) => void | Promise<void>;
  /** Called once when a deadline passes, with why (for logs and metrics). */
  onExpired?: (reason: string) => void;
}

export interface ConnectionDeadlines {
  /** A one-off deadline: unless cleared first, the connection expires `ms` from now with `reason`. Setting the same name again replaces it. */
  set(name: string, ms: number, reason: string): void;
  clear(name: string): void;
}

interface Watched {
  readonly socket: net.Socket;
  readonly options: WatchOptions;
  readonly onClose: () => void;
  /** One-off deadlines by name: when (performance.now()) and why. */
  readonly oneOffs: Map<string, { at: number; reason: string }>;
  // What the last look saw.
  read: number; // socket.bytesRead
  taken: number; // bytes the kernel has taken off our hands
  held: number; // bytes of an unfinished frame in the reader
  busy: boolean;
  // When each clock started (performance.now()).
  quietSince: number; // nothing moved, nothing in flight
  frameSince: number | undefined; // a frame began and has not completed
  stuckSince: number | undefined; // bytes wait for the kernel, and it takes none
  /** A deadline passed: the peer is being told; the next tick destroys the socket. */
  expired: boolean;
}

export class DeadlineSweep {
  private readonly tickMs: number;
  private readonly connections = new Map<net.Socket, Watched>();
  // The one timer, for every connection. Set while at least one is watched.
  private timer: NodeJS.Timeout | undefined;

  constructor(options: SweepOptions = {}) {
    this.tickMs = options.tickMs ?? 1000;
  }

  /** Connections being watched now. */
  get watching(): number {
    return this.connections.size;
  }

  /** Watches a connection until it closes (however it closes). */
  watch(socket: net.Socket, options: WatchOptions): ConnectionDeadlines {
    const oneOffs = new Map<string, { at: number; reason: string }>();
    const deadlines: ConnectionDeadlines = {
      set: (name, ms, reason) => void oneOffs.set(name, { at: performance.now() + ms, reason }),
      clear: (name) => void oneOffs.delete(name),
    };
    if (socket.destroyed) return deadlines; // already closing: nothing left to watch
    const w: Watched = {
      socket,
      options,
      oneOffs,
      onClose: () => this.forget(socket),
      read: socket.bytesRead,
      taken: taken(socket),
      held: 0,
      busy: false,
      quietSince: performance.now(),
      frameSince: undefined,
      stuckSince: undefined,
      expired: false,
    };
    this.connections.set(socket, w);
    // 'close' fires once on every path (FIN, reset, our own destroy()): the one place to let go.
    socket.once('close', w.onClose);
    this.timer ??= setInterval(() => this.sweep(), this.tickMs);
    return deadlines;
  }

  /** Stops the sweep and forgets every connection. Safe to call twice. */
  stop(): void {
    for (const w of this.connections.values()) {
      w.socket.off('close', w.onClose);
      if (w.expired) w.socket.destroy(); // condemned already: do not leave it to its peer
    }
    this.connections.clear();
    clearInterval(this.timer);
    this.timer = undefined;
  }

  private forget(socket: net.Socket): void {
    this.connections.delete(socket);
    // No connection, no timer: an idle server holds nothing.
    if (this.connections.size === 0) {
      clearInterval(this.timer);
      this.timer = undefined;
    }
  }

  private sweep(): void {
    const now = performance.now();
    for (const w of this.connections.values()) {
      if (w.expired) w.socket.destroy(); // told why a tick ago (or still trying): cut it now
      else this.check(w, now);
    }
  }

  private check(w: Watched, now: number): void {
    const { socket, options: o } = w;
    // What moved since the last look. bytesWritten counts what was handed to write();
    // writableLength, what of it the kernel has not taken yet.
    const read = socket.bytesRead;
    const waiting = socket.writableLength;
    const out = taken(socket);
    const arrived = read - w.read;
    const held = o.partialFrameBytes?.() ?? 0;
    const busy = o.busy?.() ?? false;

    // Idle: no byte in or out, no work in flight. A look that sees any of them restarts
    // the clock, and so does the first look after the work ends.
    if (arrived > 0 || out > w.taken || busy || w.busy) w.quietSince = now;
    // Frame: the clock runs while the reader holds part of a frame, whatever else arrives
    // (a trickle is not progress). Bytes that arrived and are no longer held were used up:
    // a header's 4 once its length is known, or whole frames. More than a header's worth
    // means a frame completed: what is held now is a new frame's, with a clock of its own.
    const usedUp = w.held + arrived - held;
    if (held === 0) w.frameSince = undefined;
    else if (w.frameSince === undefined || usedUp > HEADER_BYTES) w.frameSince = now;
    // Write: while bytes wait for the kernel, it must keep taking some. A peer that reads
    // moves them on; one that stopped reading does not, however much we write or it sends.
    if (waiting === 0) w.stuckSince = undefined;
    else if (w.stuckSince === undefined || out > w.taken) w.stuckSince = now;
    w.read = read;
    w.taken = out;
    w.held = held;
    w.busy = busy;

    for (const { at, reason } of w.oneOffs.values()) {
      if (now >= at) return this.expire(w, reason);
    }
    if (o.writeMs !== undefined && w.stuckSince !== undefined && now - w.stuckSince >= o.writeMs) {
      return this.expire(w, `peer not reading for ${o.writeMs} ms`);
    }
    if (o.frameMs !== undefined && w.frameSince !== undefined && now - w.frameSince >= o.frameMs) {
      return this.expire(w, `frame not complete within ${o.frameMs} ms`);
    }
    if (o.idleMs !== undefined && now - w.quietSince >= o.idleMs) {
      return this.expire(w, `idle for ${o.idleMs} ms`);
    }
  }

  // Give up on a connection: stop reading, tell the peer why, and cut it with destroy()
  // once that is said, or at the next tick: end() alone waits for the peer's FIN, and a
  // peer we give up on does not get to hold the socket open.
  private expire(w: Watched, reason: string): void {
    const { socket, options } = w;
    w.expired = true;
    options.onExpired?.(reason);
    if (options.stopReading) options.stopReading();
    else socket.pause();
    const frame = encodeFrame(FrameType.ERROR, `TIMEOUT ${reason}`);
    const cut = () => void socket.destroy();
    try {
      const said = options.say ? options.say(frame) : new Promise<void>((resolve) => socket.end(frame, () => resolve()));
      if (said instanceof Promise) said.then(cut, cut);
    } catch {
      cut();
    }
  }
}

/** Bytes the kernel has taken: everything handed to write(), minus what still waits. */
function taken(socket: net.Socket): number {
  return socket.bytesWritten - socket.writableLength;
}
