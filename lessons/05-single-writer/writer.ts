// One writer per connection. Everything the server sends a client goes through its
// FrameWriter: whole frames, broadcasts, and frames whose body arrives in pieces from an
// async source (a file, an upstream service). Two promises make a connection safe to
// share between many senders:
//
// - frames never mix: whatever is being sent, the peer sees one frame, then the next;
// - memory stays bounded: a client that does not read cannot make the server hold more
//   than maxQueuedBytes for it.
import type net from 'node:net';
import { HEADER_BYTES, MAX_FRAME_BYTES } from '#protocol';
import { encodeFrame } from '../02-framing/codec.ts';

export interface FrameWriterOptions {
  /**
   * The most bytes that may wait for this connection: what the writer holds plus what sits
   * in the socket's own buffer. A frame that would go past it is refused. Default 1 MiB.
   */
  maxQueuedBytes?: number;
  /** Called when a frame is refused for want of room: the owner applies its slow-consumer policy. */
  onOverflow?: (queuedBytes: number, frameBytes: number) => void;
}

export const DEFAULT_MAX_QUEUED_BYTES = 1024 * 1024;

/** The 5 bytes in front of a body: payload length (type byte + body), then the type. */
export function frameHeader(type: number, bodyLength: number): Buffer {
  if (1 + bodyLength > MAX_FRAME_BYTES) throw new RangeError(`a body of ${bodyLength} bytes exceeds the maximum frame`);
  const header = Buffer.allocUnsafe(HEADER_BYTES + 1);
  header.writeUInt32BE(1 + bodyLength, 0);
  header[HEADER_BYTES] = type;
  return header;
}

/** Resolves on the socket's next 'drain', or when it closes (a dead peer never drains). */
function drainOrClose(socket: net.Socket): Promise<void> {
  if (socket.destroyed) return Promise.resolve();
  return new Promise((resolve) => {
    const done = () => {
      socket.off('drain', done);
      socket.off('close', done);
      resolve();
    };
    socket.on('drain', done);
    socket.on('close', done);
  });
}

export class FrameWriter {
  private readonly maxQueuedBytes: number;

  constructor(
    private readonly socket: net.Socket,
    private readonly options: FrameWriterOptions = {},
  ) {
    this.maxQueuedBytes = options.maxQueuedBytes ?? DEFAULT_MAX_QUEUED_BYTES;
  }

  /** Bytes accepted for this connection and not yet taken by the kernel. */
  get queuedBytes(): number {
    return this.socket.writableLength;
  }

  /** Sends one whole frame. False if it was refused: the connection is gone or too far behind. */
  send(type: number, body: Buffer | string = Buffer.alloc(0)): boolean {
    return this.sendFrame(encodeFrame(type, body));
  }

  /** Sends one frame already encoded (a broadcast encodes once for every client). */
  sendFrame(frame: Buffer): boolean {
    if (this.socket.destroyed) return false;
    // One whole frame, one write(): its bytes stay together on the wire.
    this.socket.write(frame);
    return true;
  }

  /**
   * Sends one frame whose body of `length` bytes comes from `chunks`, without holding the
   * whole body in memory. Resolves once the last byte has been written.
   */
  async stream(type: number, length: number, chunks: AsyncIterable<Buffer>): Promise<void> {
    const header = frameHeader(type, length);
    try {
      // The header goes out first, so the peer knows what is coming; the body follows as
      // fast as the source produces it.
      this.socket.write(header);
      let sent = 0;
      for await (const chunk of chunks) {
        if (this.socket.destroyed) throw new Error('the connection closed while the frame was being sent');
        sent += chunk.length;
        this.socket.write(chunk);
      }
      if (sent !== length) throw new Error(`the body had ${sent} bytes, not the ${length} announced`);
    } catch (err) {
      // Part of a frame is on the wire and the rest will never come: the stream is broken.
      this.socket.destroy(err as Error);
      throw err;
    }
  }

  /**
   * Resolves once everything sent before the call has been handed to the socket and the
   * socket's buffer has room again (or the connection closed).
   */
  drained(): Promise<void> {
    if (!this.socket.writableNeedDrain) return Promise.resolve();
    return drainOrClose(this.socket);
  }
}
