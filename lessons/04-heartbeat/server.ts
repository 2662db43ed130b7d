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

export async function startHeartbeatServer(options: HeartbeatOptions = {}): Promise<HeartbeatServer> {
  const intervalMs = options.intervalMs ?? 5_000;
  const windowMs = options.windowMs ?? 2 * intervalMs;
  const connections = new Set<net.Socket>();

  // noDelay: every frame goes out whole, and a PING held back by Nagle is a late PING.
  const server = net.createServer({ noDelay: true }, (socket) => {
    connections.add(socket);
    socket.once('close', () => connections.delete(socket));
    socket.on('error', () => {}); // 'close' follows and cleans up (lesson 01)

    // Let the kernel probe the peer as well, at the same pace as our pings.
    socket.setKeepAlive(true, intervalMs);

    // A client that has been silent for the whole window is gone: drop it.
    socket.setTimeout(windowMs);
    socket.on('timeout', () => {
      clearInterval(pinger);
      socket.destroy();
    });

    // Ping the client on a schedule; its PONG shows that it is still there.
    const pinger = setInterval(() => {
      socket.write(encodeFrame(FrameType.PING));
    }, intervalMs);

    // The client hung up: stop pinging it.
    socket.on('end', () => clearInterval(pinger));

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
