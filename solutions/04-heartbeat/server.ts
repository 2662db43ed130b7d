// An echo server with a heartbeat. A connection can look open long after its peer is
// gone: the client's process froze, its phone lost coverage, a NAT box in between forgot
// the mapping. TCP says nothing until we try to hear from the peer, so the server pings
// every client on a schedule and drops the ones that have gone quiet.
//
// PING and PONG are ordinary frames of the lesson-02 codec. The heartbeat travels in the
// same stream as the business traffic, so an answer proves the whole path works, up to
// the peer's own event loop.
import net from 'node:net';
import { encodeFrame, FrameType } from '../02-framing/codec.ts';
import { readFrames } from '../02-framing/read-frames.ts';

export interface HeartbeatOptions {
  /** 0 (the default) lets the OS pick a free port. */
  port?: number;
  /** How often the server pings each client. */
  intervalMs?: number;
  /** How long a client may stay silent before it is dropped. Twice the interval by default. */
  windowMs?: number;
}

export interface HeartbeatServer {
  port: number;
  /** Connections open now. */
  readonly connections: number;
  stop(): Promise<void>;
}

// TCP keepalive, for the OS to clean up after hosts that vanished. Whole seconds only.
const KEEPALIVE_MS = 60_000;

export async function startHeartbeatServer(options: HeartbeatOptions = {}): Promise<HeartbeatServer> {
  const intervalMs = options.intervalMs ?? 5_000;
  const windowMs = options.windowMs ?? 2 * intervalMs;
  const connections = new Set<net.Socket>();

  // noDelay: every frame goes out whole, and a PING held back by Nagle is a late PING.
  const server = net.createServer({ noDelay: true }, (socket) => {
    connections.add(socket);
    socket.once('close', () => connections.delete(socket));
    socket.on('error', () => {}); // 'close' follows and cleans up (lesson 01)

    // Keepalive probes are answered by the peer's kernel, even when its process is frozen,
    // so they are no liveness check. Under 1000 ms Node asks for 0 s, Linux refuses it, and
    // the 7200 s default stays: no error, no probes for two hours.
    socket.setKeepAlive(true, KEEPALIVE_MS);

    // When we last heard from the client, and how many PINGs have gone out since. Any byte
    // counts, not only a PONG: a client busy uploading is alive even while its PONG waits
    // behind the upload.
    let lastHeard = performance.now();
    let unanswered = 0;

    // Ping the client on a schedule, and drop it once it has been silent for the whole
    // window. Our own writes must not count: socket.setTimeout() counts them, so a server
    // that pings never sees its idle timer fire. The window spans two pings, so one late
    // answer is not fatal; a dead peer is dropped between window and window + interval.
    // If our own process stalled (a long GC pause), the clock ran on but no PING went out:
    // so the client must also have let two of them go unanswered.
    const pinger = setInterval(() => {
      if (performance.now() - lastHeard > windowMs && unanswered >= 2) return void socket.destroy();
      socket.write(encodeFrame(FrameType.PING));
      unanswered += 1;
    }, intervalMs);

    // 'close' fires on every path: a goodbye, a reset, our own destroy(), stop().
    socket.once('close', () => clearInterval(pinger));

    socket.on('data', () => {
      lastHeard = performance.now();
      unanswered = 0;
    });
    readFrames(socket, (frame) => {
      if (frame.type === FrameType.DATA) socket.write(encodeFrame(FrameType.DATA, frame.body));
      else if (frame.type === FrameType.PING) socket.write(encodeFrame(FrameType.PONG, frame.body));
      else if (frame.type === FrameType.PONG) return; // the answer to one of our pings
      else socket.write(encodeFrame(FrameType.ERROR, `UNSUPPORTED frame type ${frame.type}`));
    });
  });

  await new Promise<void>((resolve) => server.listen(options.port ?? 0, '127.0.0.1', resolve));

  return {
    port: (server.address() as net.AddressInfo).port,
    get connections() {
      return connections.size;
    },
    async stop() {
      const closed = new Promise<void>((resolve) => server.close(() => resolve()));
      for (const socket of connections) socket.end();
      await closed;
    },
  };
}
