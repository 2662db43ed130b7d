// An echo server with a heartbeat. The server pings every client on a schedule and drops
// the ones that have gone quiet: heartbeat.ts does it, for all the connections at once,
// and the server only hands it each new connection.
import net from 'node:net';
import { encodeFrame, FrameType } from '../02-framing/codec.ts';
import { readFrames } from '../02-framing/read-frames.ts';
import { Heartbeat, type HeartbeatOptions } from './heartbeat.ts';

export interface HeartbeatServerOptions extends HeartbeatOptions {
  /** 0 (the default) lets the OS pick a free port. */
  port?: number;
}

export interface HeartbeatServer {
  port: number;
  /** Connections open now. */
  readonly connections: number;
  stop(): Promise<void>;
}

export async function startHeartbeatServer(options: HeartbeatServerOptions = {}): Promise<HeartbeatServer> {
  const connections = new Set<net.Socket>();
  const heartbeat = new Heartbeat(options);

  // noDelay: every frame goes out whole, and a PING held back by Nagle is a late PING.
  const server = net.createServer({ noDelay: true }, (socket) => {
    connections.add(socket);
    socket.once('close', () => connections.delete(socket));
    socket.on('error', () => {}); // 'close' follows and cleans up (lesson 01)

    // From now until it closes, the client is pinged, and dropped if it goes silent.
    heartbeat.watch(socket);

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
      heartbeat.stop();
      const closed = new Promise<void>((resolve) => server.close(() => resolve()));
      for (const socket of connections) socket.end();
      await closed;
    },
  };
}
