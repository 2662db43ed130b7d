// The client's half of the heartbeat. A server can vanish quietly too (its host lost
// power, a load balancer dropped the flow): then the client sits on a connection that
// will never deliver anything, and never reconnects. So the client pings the server on
// its own schedule, answers the server's pings, and gives up on a server it has not
// heard from for a whole window, so that its owner can reconnect.
import net from 'node:net';
import { once } from 'node:events';
import { encodeFrame, FrameDecoder, FrameType, type Frame } from '../02-framing/codec.ts';

export interface HeartbeatClientOptions {
  /** The server's address. Default 127.0.0.1. */
  host?: string;
  /** How often the client pings the server. */
  intervalMs?: number;
  /** How long the server may stay silent before the client gives up. Twice the interval by default. */
  windowMs?: number;
  /** Called with the body of every DATA frame from the server. */
  onData?: (body: Buffer) => void;
  /** Called with every frame from the server but PING and PONG (the heartbeat's own), DATA included, after onData. */
  onFrame?: (frame: Frame) => void;
}

export interface HeartbeatClient {
  /** Sends one DATA frame. */
  send(body: Buffer | string): void;
  /** Sends one frame of any type, whole, in one write. */
  sendFrame(type: number, body?: Buffer | string): void;
  /** Resolves when the connection is over, with why: "server silent for 103 ms", "server closed", … */
  readonly closed: Promise<string>;
  /** Hangs up and resolves once the connection is closed. */
  close(): Promise<void>;
}

export async function connectHeartbeatClient(port: number, options: HeartbeatClientOptions = {}): Promise<HeartbeatClient> {
  const intervalMs = options.intervalMs ?? 5_000;
  const windowMs = options.windowMs ?? 2 * intervalMs;

  const socket = net.connect({ port, host: options.host ?? '127.0.0.1', noDelay: true });
  let reason = 'server closed';
  socket.on('error', (err) => (reason = err.message)); // 'close' follows
  const closed = new Promise<string>((resolve) => socket.once('close', () => resolve(reason)));
  await once(socket, 'connect');

  // When we last heard from the server, and how many PINGs have gone out since.
  let lastHeard = performance.now();
  let unanswered = 0;
  const heard = () => {
    lastHeard = performance.now();
    unanswered = 0;
  };

  // Ping the server on a schedule; give up on it once it has been silent for the window.
  // If our own process stalled (a long GC pause), the clock ran on but no PING went out:
  // so the server must also have let two of them go unanswered.
  const pinger = setInterval(() => {
    const silentMs = performance.now() - lastHeard;
    if (silentMs > windowMs && unanswered >= 2) {
      reason = `server silent for ${Math.round(silentMs)} ms`;
      socket.destroy();
      return;
    }
    socket.write(encodeFrame(FrameType.PING));
    unanswered += 1;
  }, intervalMs);
  socket.once('close', () => clearInterval(pinger));

  const decoder = new FrameDecoder();
  socket.on('data', (chunk: Buffer) => {
    // Anything the server sends proves it is alive, not only a PONG: a server busy
    // streaming to us may answer our ping late, behind the data it is sending.
    heard();
    let frames;
    try {
      frames = decoder.push(chunk);
    } catch (err) {
      reason = `protocol error: ${(err as Error).message}`;
      socket.destroy();
      return;
    }
    for (const frame of frames) {
      if (frame.type === FrameType.PONG) continue; // the server answered our ping
      else if (frame.type === FrameType.PING) socket.write(encodeFrame(FrameType.PONG, frame.body));
      else {
        if (frame.type === FrameType.DATA) options.onData?.(frame.body);
        options.onFrame?.(frame);
      }
    }
  });

  const sendFrame = (type: number, body?: Buffer | string) => void socket.write(encodeFrame(type, body));
  return {
    send: (body) => sendFrame(FrameType.DATA, body),
    sendFrame,
    closed,
    async close() {
      if (socket.destroyed) return void (await closed);
      reason = 'closed by the client';
      // FIN, then wait for the server's; a server that never answers gets one window.
      socket.end();
      const deadline = setTimeout(() => socket.destroy(), windowMs);
      await closed;
      clearTimeout(deadline);
    },
  };
}
