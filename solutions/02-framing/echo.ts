// An echo server that speaks the workbook protocol: DATA comes back as DATA, PING as PONG.
// The interesting part is not the echo but the reading: bytes in, whole frames out, and a
// clear refusal for a peer that breaks the protocol.
import net from 'node:net';
import { encodeFrame, FrameType } from './codec.ts';
import { readFrames } from './read-frames.ts';

export interface EchoOptions {
  port?: number;
  maxFrameBytes?: number;
}

export interface EchoServer {
  port: number;
  stop(): Promise<void>;
}

export async function startEchoServer(options: EchoOptions = {}): Promise<EchoServer> {
  // Open connections, so stop() can ask each one to finish.
  const connections = new Set<net.Socket>();

  // noDelay: every frame we write is whole, so there is nothing for Nagle to batch; it
  // would only hold small replies back waiting for an ACK.
  const server = net.createServer({ noDelay: true }, (socket) => {
    connections.add(socket);
    socket.once('close', () => connections.delete(socket));
    socket.on('error', () => {}); // 'close' follows and cleans up (lesson 01)

    // Whole frames only, whatever way the bytes arrive; a broken stream gets ERROR and a close.
    readFrames(socket, (frame) => {
      if (frame.type === FrameType.DATA) socket.write(encodeFrame(FrameType.DATA, frame.body));
      else if (frame.type === FrameType.PING) socket.write(encodeFrame(FrameType.PONG, frame.body));
      else socket.write(encodeFrame(FrameType.ERROR, `UNSUPPORTED frame type ${frame.type}`));
    }, { maxFrameBytes: options.maxFrameBytes });
  });

  await new Promise<void>((resolve) => server.listen(options.port ?? 0, '127.0.0.1', resolve));

  return {
    port: (server.address() as net.AddressInfo).port,
    async stop() {
      const closed = new Promise<void>((resolve) => server.close(() => resolve()));
      for (const socket of connections) socket.end();
      await closed;
    },
  };
}
