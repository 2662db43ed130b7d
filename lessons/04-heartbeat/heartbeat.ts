// The server's heartbeat, for all its connections at once. A connection can look open long
// after its peer is gone: the client's process froze, its phone lost coverage, a NAT box
// in between forgot the mapping. TCP says nothing until we try to hear from the peer, so
// the server pings every client on a schedule and drops the ones that have gone quiet.
//
// PING and PONG are ordinary frames of the lesson-02 codec. The heartbeat travels in the
// same stream as the business traffic, so an answer proves the whole path works, up to
// the peer's own event loop.
//
// One timer sweeps every connection: 40,000 clients cost one timer, not 40,000. It runs
// only while there is a connection to watch, so an idle or stopped server holds no timer.
import type net from 'node:net';
import { encodeFrame, FrameType } from '../02-framing/codec.ts';

export interface HeartbeatOptions {
  /** How often each connection is pinged (the sweep's period). Default 5000. */
  intervalMs?: number;
  /** How long a connection may stay silent before it is dropped. Default 2 × intervalMs. */
  windowMs?: number;
}

export interface WatchOptions {
  /**
   * Sends one PING to this peer. Default: socket.write(encodeFrame(FrameType.PING)). The
   * gateway passes its single writer (lesson 05) so a PING never splits another frame.
   */
  ping?: () => void;
  /** Called once when the sweep gives up on this connection as dead, just before it destroys it (for logs and metrics). */
  onDead?: (silentMs: number) => void;
}

/** What the sweep knows about one connection. */
interface Peer {
  ping: () => void;
  onDead: ((silentMs: number) => void) | undefined;
}

export class Heartbeat {
  readonly intervalMs: number;
  readonly windowMs: number;
  private readonly peers = new Map<net.Socket, Peer>();
  // The one timer for every connection; undefined while there is nobody to watch.
  private sweep: NodeJS.Timeout | undefined;

  constructor(options: HeartbeatOptions = {}) {
    this.intervalMs = options.intervalMs ?? 5_000;
    this.windowMs = options.windowMs ?? 2 * this.intervalMs;
  }

  /** Connections being watched now. */
  get watching(): number {
    return this.peers.size;
  }

  /**
   * Watches a connection from now until it closes, however it closes. Any byte received
   * from the peer is a sign of life (not only PONG); our own writes are not.
   */
  watch(socket: net.Socket, options: WatchOptions = {}): void {
    // Not a socket already closing (its 'close' may be past), nor one watched already.
    if (socket.destroyed || this.peers.has(socket)) return;

    // Let the kernel probe the peer as well, at the same pace as our pings.
    socket.setKeepAlive(true, this.intervalMs);

    const peer: Peer = {
      ping: options.ping ?? (() => void socket.write(encodeFrame(FrameType.PING))),
      onDead: options.onDead,
    };
    this.peers.set(socket, peer);

    // A peer that has been silent for the whole window is gone: drop it.
    socket.setTimeout(this.windowMs);
    socket.on('timeout', () => {
      this.forget(socket);
      peer.onDead?.(this.windowMs);
      socket.destroy();
    });

    // The peer hung up: stop watching it.
    socket.once('end', () => this.forget(socket));

    this.sweep ??= setInterval(() => this.tick(), this.intervalMs);
  }

  /** Stops the sweep and forgets every connection (the server is stopping). Safe to call twice. */
  stop(): void {
    this.peers.clear();
    clearInterval(this.sweep);
    this.sweep = undefined;
  }

  private forget(socket: net.Socket): void {
    this.peers.delete(socket);
    if (this.peers.size > 0) return;
    // Nobody left to watch: no timer. The next watch() starts a new one.
    clearInterval(this.sweep);
    this.sweep = undefined;
  }

  // Ping every peer; its PONG shows that it is still there.
  private tick(): void {
    for (const peer of this.peers.values()) peer.ping();
  }
}
