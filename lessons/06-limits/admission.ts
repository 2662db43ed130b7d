// Admission control: which new connections a server takes on, and what the others hear.
// A server calls admit(socket) first thing in its 'connection' handler. Two limits stand
// at the door, and a refusal is a BUSY frame with the reason, then a close, so the client
// knows to come back later instead of at once:
//
//   new connection ──▶ per-IP rate (KeyedRate) ──▶ connection cap ──▶ admitted
//
// This server's server.ts uses it, and so does the capstone gateway (lesson 09).
import type net from 'node:net';
import { encodeFrame, FrameType } from '../02-framing/codec.ts';
import { readConnectionBudget } from './fd-limit.ts';
import { TokenBucket } from './token-bucket.ts';

export interface KeyedRateOptions {
  /** The burst per key. */
  capacity: number;
  /** Tokens back per second, per key. */
  refillPerSecond: number;
  /** Most keys remembered; past it, keys whose buckets have refilled are forgotten. Default 10 000. */
  maxKeys?: number;
  /** A clock in ms (performance.now by default). */
  now?: () => number;
}

/** One token bucket per key (a client IP): a client that loops spends its own allowance, not everyone's. */
export class KeyedRate {
  private readonly buckets = new Map<string, TokenBucket>();
  // The table is itself a memory risk, one entry per IP ever seen: past this many keys,
  // the buckets that have refilled are dropped (a full bucket remembers nothing).
  private readonly maxKeys: number;

  constructor(private readonly options: KeyedRateOptions) {
    this.maxKeys = options.maxKeys ?? 10_000;
  }

  /** Takes a token from this key's bucket; false means "too soon". */
  take(key: string): boolean {
    let bucket = this.buckets.get(key);
    if (!bucket) {
      if (this.buckets.size >= this.maxKeys) {
        for (const [k, b] of this.buckets) if (b.full) this.buckets.delete(k);
      }
      bucket = new TokenBucket(this.options);
      this.buckets.set(key, bucket);
    }
    return bucket.take();
  }

  /** Keys remembered now. */
  get size(): number {
    return this.buckets.size;
  }
}

export interface AdmissionOptions {
  /** Connections served at once. Default: readConnectionBudget() (fd-limit.ts). */
  maxConnections?: number;
  /** New connections one client IP may open in a burst... */
  connectBurst?: number;
  /** ...and how fast that allowance comes back, per second. Defaults: a burst of 20, then 5 per second. */
  connectPerSecond?: number;
  /** How long a refused client has to read BUSY and leave before it is destroyed, in ms. Default: 1000. */
  refuseGraceMs?: number;
  /** The rate limit's clock, in ms (performance.now by default). */
  now?: () => number;
  /** Called for each refusal with the reason (logs, metrics). */
  onRefused?: (reason: string) => void;
}

export class Admission {
  /** The connection cap in force. */
  readonly maxConnections: number;
  // New connections per second, so a reconnect storm cannot flood the accept loop.
  private readonly newConnections: TokenBucket;
  private readonly refuseGraceMs: number;
  private readonly onRefused: ((reason: string) => void) | undefined;
  // Admitted connections not closed yet.
  private open = 0;
  // Refused sockets not closed yet (each has its grace timer), for stop().
  private readonly refused = new Set<net.Socket>();

  constructor(options: AdmissionOptions = {}) {
    this.maxConnections = options.maxConnections ?? readConnectionBudget();
    this.newConnections = new TokenBucket({ capacity: options.connectBurst ?? 20, refillPerSecond: options.connectPerSecond ?? 5, now: options.now });
    this.refuseGraceMs = options.refuseGraceMs ?? 1000;
    this.onRefused = options.onRefused;
  }

  /** Admitted connections open now (counted from admit() until 'close', however it closes). */
  get connections(): number {
    return this.open;
  }

  /** Refused connections not yet closed. */
  get refusing(): number {
    return this.refused.size;
  }

  /**
   * Decides on a new connection: true = admitted and counted until it closes; false =
   * refused (BUSY with the reason, then FIN, destroyed after the grace if the client
   * lingers). The caller does nothing more with a refused socket.
   */
  admit(socket: net.Socket): boolean {
    if (!this.newConnections.take()) return this.refuse(socket, 'rate: too many new connections');

    this.open++;
    // 'close' fires once on every path (FIN, reset, destroy): the place always comes back.
    socket.once('close', () => this.open--);
    return true;
  }

  /** Destroys the refused sockets still lingering (server stop). Admitted connections are the caller's. */
  stop(): void {
    for (const socket of this.refused) socket.destroy();
  }

  /** Say why, then hang up. The client gets a BUSY frame and a FIN, not a mystery. */
  private refuse(socket: net.Socket, reason: string): false {
    this.refused.add(socket);
    socket.on('error', () => {}); // a refused client may reset rather than answer our FIN
    socket.resume(); // read and drop whatever it sends, so its FIN still reaches us
    socket.end(encodeFrame(FrameType.BUSY, reason));
    // A client that never leaves is dropped once it has had time to read the BUSY.
    const grace = setTimeout(() => socket.destroy(), this.refuseGraceMs);
    socket.once('close', () => {
      clearTimeout(grace);
      this.refused.delete(socket);
    });
    this.onRefused?.(reason);
    return false;
  }
}
