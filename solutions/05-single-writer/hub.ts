// A broadcast hub: the server publishes frames to every connected client (prices, scores,
// chat), sends to one client (a reply, a private message), or streams it a bigger frame
// whose body comes from somewhere slower. Clients may publish too: a DATA frame from any
// client goes to every client. PING gets PONG.
//
// Every byte for a client goes through that client's FrameWriter (writer.ts). One client
// that stops reading must cost the server a bounded amount of memory, and must not slow
// anyone else down.
import net from 'node:net';
import { encodeFrame, FrameType } from '../02-framing/codec.ts';
import { readFrames } from '../02-framing/read-frames.ts';
import { DEFAULT_MAX_QUEUED_BYTES, FrameWriter } from './writer.ts';

export interface HubOptions {
  /** 0 (the default) lets the OS pick a free port. */
  port?: number;
  /**
   * How many bytes may wait for one client (in its writer and its socket's buffer) before
   * it counts as a slow consumer and is disconnected. Default 1 MiB.
   */
  maxQueuedBytes?: number;
}

export interface HubConnection {
  id: number;
  socket: net.Socket;
  /** Everything sent to this client goes through here, and only here. */
  writer: FrameWriter;
}

export interface Hub {
  port: number;
  /** Connected clients by id, in the order they connected. */
  connections: Map<number, HubConnection>;
  /** Clients disconnected so far for falling maxQueuedBytes behind. */
  readonly slowConsumersDisconnected: number;
  /** Sends a frame to one client. False if it is gone (or was just disconnected as too slow). */
  send(id: number, type: number, body?: Buffer | string): boolean;
  /** Streams one frame with a body of `length` bytes from `chunks` to one client. */
  stream(id: number, type: number, length: number, chunks: AsyncIterable<Buffer>): Promise<void>;
  /** Sends a frame to every client. */
  publish(type: number, body?: Buffer | string): Promise<void>;
  stop(): Promise<void>;
}

export async function startHub(options: HubOptions = {}): Promise<Hub> {
  const maxQueuedBytes = options.maxQueuedBytes ?? DEFAULT_MAX_QUEUED_BYTES;
  const connections = new Map<number, HubConnection>();
  let slowConsumersDisconnected = 0;
  let nextId = 1;

  // noDelay: the writer hands the kernel whole frames, so Nagle has nothing useful to
  // batch; left on, it holds back a small frame until the previous one is acknowledged.
  const server = net.createServer({ noDelay: true }, (socket) => {
    const id = nextId++;
    const writer = new FrameWriter(socket, {
      maxQueuedBytes,
      // The slow-consumer policy is DISCONNECT. A client maxQueuedBytes behind is cut
      // off, with a reset: the kernel drops what it still holds for it too. Dropping
      // frames instead would keep it connected with silent gaps in what it was told; a
      // client that reconnects knows it has to catch up.
      onOverflow: () => {
        slowConsumersDisconnected++;
        socket.resetAndDestroy();
      },
    });
    connections.set(id, { id, socket, writer });
    socket.once('close', () => connections.delete(id));
    socket.on('error', () => {}); // 'close' follows and cleans up (lesson 01)

    readFrames(socket, (frame) => {
      if (frame.type === FrameType.PING) writer.send(FrameType.PONG, frame.body);
      else if (frame.type === FrameType.DATA) void hub.publish(FrameType.DATA, frame.body);
      else writer.send(FrameType.ERROR, `UNSUPPORTED frame type ${frame.type}`);
    }, {
      // The ERROR goes through the send queue like every other frame, then we hang up.
      onProtocolError: (reason) => {
        writer.send(FrameType.ERROR, reason);
        void writer.drained().then(() => socket.end());
      },
    });
  });

  await new Promise<void>((resolve) => server.listen(options.port ?? 0, '127.0.0.1', resolve));

  const hub: Hub = {
    port: (server.address() as net.AddressInfo).port,
    connections,
    get slowConsumersDisconnected() {
      return slowConsumersDisconnected;
    },
    send(id, type, body) {
      return connections.get(id)?.writer.send(type, body) ?? false;
    },
    stream(id, type, length, chunks) {
      const connection = connections.get(id);
      if (!connection) return Promise.reject(new Error(`no client ${id}`));
      return connection.writer.stream(type, length, chunks);
    },
    async publish(type, body) {
      // Encoded once, shared by every client's queue.
      const frame = encodeFrame(type, body);
      // Hand the frame to every client's writer and move on. A writer never blocks: it
      // queues, or it refuses and its client is disconnected. A client that is slow
      // costs its own queue, never the others' time.
      for (const { writer } of [...connections.values()]) writer.sendFrame(frame);
    },
    async stop() {
      // Stop accepting, and cut every connection. (Lesson 08 flushes queues and says
      // goodbye first.)
      const closed = new Promise<void>((resolve) => server.close(() => resolve()));
      for (const { socket } of connections.values()) socket.destroy();
      await closed;
    },
  };
  return hub;
}
