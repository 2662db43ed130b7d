// The frame codec every later lesson and the capstone use. TCP delivers a byte stream,
// not messages: one 'data' event may hold half a header, or three frames and the start
// of a fourth. The decoder keeps whatever is incomplete and hands out whole frames only.
//
// Frame layout (lessons/PROTOCOL.md): a 4-byte big-endian payload length, then the
// payload: one type byte and the body.
import { HEADER_BYTES, MAX_FRAME_BYTES, type Frame } from '#protocol';

export { FrameType, MAX_FRAME_BYTES, type Frame } from '#protocol';

/** One whole frame in one Buffer, so it can go out in one write(). */
export function encodeFrame(type: number, body: Buffer | string = Buffer.alloc(0)): Buffer {
  const bytes = typeof body === 'string' ? Buffer.from(body) : body;
  const frame = Buffer.allocUnsafe(HEADER_BYTES + 1 + bytes.length);
  frame.writeUInt32BE(1 + bytes.length, 0);
  frame[HEADER_BYTES] = type;
  bytes.copy(frame, HEADER_BYTES + 1);
  return frame;
}

/** The peer announced a frame we will not accept. Nothing was allocated for it. */
export class FrameTooLargeError extends Error {
  constructor(readonly length: number, readonly max: number) {
    super(`frame of ${length} bytes exceeds the maximum of ${max}`);
    this.name = 'FrameTooLargeError';
  }
}

/** The peer announced a frame of length 0: a frame holds at least its type byte. */
export class EmptyFrameError extends Error {
  constructor() {
    super('frame length 0: a frame holds at least its type byte');
    this.name = 'EmptyFrameError';
  }
}

export class FrameDecoder {
  // The frame being filled. It is allocated once its length is known, so even a big frame
  // is copied only once.
  private frame: Buffer | undefined;
  private filled = 0;

  constructor(private readonly maxFrameBytes = MAX_FRAME_BYTES) {}

  /** Bytes held that do not make a whole frame yet. */
  get bufferedBytes(): number {
    return this.filled;
  }

  /** Feeds bytes in; returns every frame they complete, in order. */
  push(chunk: Buffer): Frame[] {
    if (!this.frame) {
      // A new frame starts with its length: make room for the whole payload.
      const length = chunk.readUInt32BE(0);
      this.frame = Buffer.alloc(length);
      chunk = chunk.subarray(HEADER_BYTES);
    }
    this.filled += chunk.copy(this.frame, this.filled);
    if (this.filled < this.frame.length) return [];

    const payload = this.frame;
    this.frame = undefined;
    this.filled = 0;
    return [{ type: payload[0]!, body: payload.subarray(1) }];
  }
}
