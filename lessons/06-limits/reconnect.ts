// A client that stays connected: when its connection fails or ends, it waits, then tries
// again. How long it waits decides what a thousand such clients do to a server that has
// just restarted or is shedding load: come back all at once, or spread out.
import net from 'node:net';
import { setTimeout as sleep } from 'node:timers/promises';
import { encodeFrame, FrameDecoder, FrameType, type Frame } from '../02-framing/codec.ts';

export interface BackoffOptions {
  /** The first wait's ceiling, in ms. Default: 100. */
  baseMs?: number;
  /** No wait is ever longer than this, in ms. Default: 10 000. */
  capMs?: number;
  /** A connection that stays up this long, in ms, proves the server is back: the next outage starts from the first step. Default: 5000. */
  healthyMs?: number;
  /** Uniform in [0, 1): Math.random by default. */
  random?: () => number;
  /** A clock in ms: performance.now by default. */
  now?: () => number;
}

/**
 * The wait before retry number `attempt` (0 for the first retry): exponential growth,
 * capped, with "full jitter" (a uniform draw between 0 and the ceiling).
 */
export function backoffDelay(attempt: number, { baseMs = 100, capMs = 10_000, random = Math.random }: BackoffOptions = {}): number {
  const ceiling = Math.min(capMs, baseMs * 2 ** attempt);
  // Up to one base of jitter on top, so clients that failed together do not retry in lockstep.
  return ceiling + random() * baseMs;
}

/** The retry schedule of one client: how many attempts in a row have failed, and what that costs. */
export class Backoff {
  private failures = 0;
  private openedAt: number | undefined;
  private readonly now: () => number;

  constructor(private readonly options: BackoffOptions = {}) {
    this.now = options.now ?? (() => performance.now());
  }

  /** Failed attempts since the last healthy connection. */
  get attempt(): number {
    return this.failures;
  }

  /** Counts one more failure and returns how long to wait before the next attempt. */
  next(): number {
    return backoffDelay(this.failures++, this.options);
  }

  /** A connection opened. */
  opened(): void {
    this.openedAt = this.now();
    // The server is back: the next outage starts from the first step.
    this.failures = 0;
  }

  /** The connection closed. */
  closed(): void {
    this.openedAt = undefined;
  }
}

export interface ReconnectOptions extends BackoffOptions {
  port: number;
  host?: string;
  /** Who we are: sent in a HELLO frame as soon as each connection opens. */
  name?: string;
  /** Every frame the server sends. */
  onFrame?: (frame: Frame) => void;
}

export interface ReconnectingClient {
  /** Connection attempts so far. */
  readonly attempts: number;
  /** The waits between attempts so far, in ms, in order. */
  readonly delays: readonly number[];
  /** A connection is open now. */
  readonly connected: boolean;
  /** Stops reconnecting and closes the connection. */
  stop(): Promise<void>;
}

export function keepConnected(options: ReconnectOptions): ReconnectingClient {
  const backoff = new Backoff(options);
  const stopping = new AbortController();
  const delays: number[] = [];
  let attempts = 0;
  let socket: net.Socket | undefined;
  let connected = false;

  const loop = (async () => {
    while (!stopping.signal.aborted) {
      attempts++;
      const current = net.connect({ port: options.port, host: options.host ?? '127.0.0.1', noDelay: true });
      socket = current;
      // A refused or reset attempt is an ordinary event here; 'close' follows and decides.
      current.on('error', () => {});
      const decoder = new FrameDecoder();
      current.on('data', (chunk: Buffer) => {
        try {
          for (const frame of decoder.push(chunk)) options.onFrame?.(frame);
        } catch {
          current.destroy();
        }
      });
      current.once('connect', () => {
        connected = true;
        backoff.opened();
        current.write(encodeFrame(FrameType.HELLO, JSON.stringify({ client: options.name ?? 'client' })));
      });
      await new Promise((resolve) => current.once('close', resolve));
      if (connected) backoff.closed();
      connected = false;
      socket = undefined;
      if (stopping.signal.aborted) break;

      const delay = backoff.next();
      delays.push(delay);
      try {
        await sleep(delay, undefined, { signal: stopping.signal });
      } catch {
        break; // stop() was called while we waited
      }
    }
  })();

  return {
    get attempts() {
      return attempts;
    },
    delays,
    get connected() {
      return connected;
    },
    async stop() {
      stopping.abort();
      socket?.destroy();
      await loop;
    },
  };
}
