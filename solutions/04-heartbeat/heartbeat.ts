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

// TCP keepalive, for the OS to clean up after hosts that vanished. Whole seconds only.
const KEEPALIVE_MS = 60_000;

/** What the sweep knows about one connection. */
interface Peer {
  // When we last received a byte from the peer, and how many PINGs have gone out since.
  lastHeard: number;
  unanswered: number;
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

    // Keepalive probes are answered by the peer's kernel, even when its process is frozen,
    // so they are no liveness check. Under 1000 ms Node asks for 0 s, Linux refuses it, and
    // the 7200 s default stays: no error, no probes for two hours.
    socket.setKeepAlive(true, KEEPALIVE_MS);

    // The clock starts now: a peer that never sends a byte is dropped too.
    const peer: Peer = {
      lastHeard: performance.now(),
      unanswered: 0,
      ping: options.ping ?? (() => void socket.write(encodeFrame(FrameType.PING))),
      onDead: options.onDead,
    };
    this.peers.set(socket, peer);

    // Any byte counts, not only a PONG and not only a whole frame: a client busy uploading
    // is alive even while its PONG waits behind the upload. Our own writes must not count:
    // socket.setTimeout() counts them, so a server that pings never sees its idle timer fire.
    // (A 'data' listener makes the socket flow, as reading its frames does anyway.)
    socket.on('data', () => {
      peer.lastHeard = performance.now();
      peer.unanswered = 0;
    });

    // 'close' fires on every path: a goodbye, a reset, our own destroy(), the owner's.
    socket.once('close', () => this.forget(socket));

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

  // Drop the peers that have been silent for the whole window, ping the others. The window
  // spans two pings, so one late answer is not fatal; a dead peer is dropped between window
  // and window + interval. If our own process stalled (a long GC pause), the clock ran on
  // but no PING went out: so the peer must also have let two of them go unanswered.
  private tick(): void {
    const now = performance.now();
    for (const [socket, peer] of this.peers) {
      const silentMs = now - peer.lastHeard;
      if (silentMs > this.windowMs && peer.unanswered >= 2) {
        peer.onDead?.(silentMs);
        socket.destroy(); // not end(): a dead peer never answers our FIN
        continue; // each peer has its own silence: check the rest
      }
      peer.ping();
      peer.unanswered += 1;
    }
  }
}
