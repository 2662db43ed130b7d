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
  // The length prefix, gathered across chunks when it arrives in pieces.
  private header = Buffer.alloc(HEADER_BYTES);
  private headerFilled = 0;
  // The frame being filled. It is allocated once its length is known (and checked), so
  // even a big frame is copied only once.
  private frame: Buffer | undefined;
  private filled = 0;

  constructor(private readonly maxFrameBytes = MAX_FRAME_BYTES) {}

  /** Bytes held that do not make a whole frame yet. */
  get bufferedBytes(): number {
    return this.headerFilled + this.filled;
  }

  /**
   * Feeds bytes in; returns every frame they complete, in order. Throws FrameTooLargeError
   * as soon as a header announces more than the maximum, or EmptyFrameError for a length
   * of 0, before allocating or waiting for the body.
   */
  push(chunk: Buffer): Frame[] {
    const frames: Frame[] = [];
    // One chunk may end this frame and hold several more: go on until it is used up.
    while (chunk.length > 0) {
      if (!this.frame) {
        // A chunk may hold only part of the header: collect all of it before reading it.
        const used = chunk.copy(this.header, this.headerFilled);
        this.headerFilled += used;
        chunk = chunk.subarray(used);
        if (this.headerFilled < HEADER_BYTES) break;
        const length = this.header.readUInt32BE(0);
        this.headerFilled = 0;
        // The length is the peer's claim: check it before it costs us any memory.
        if (length === 0) throw new EmptyFrameError();
        if (length > this.maxFrameBytes) throw new FrameTooLargeError(length, this.maxFrameBytes);
        this.frame = Buffer.alloc(length);
      }
      const used = chunk.copy(this.frame, this.filled);
      this.filled += used;
      chunk = chunk.subarray(used);
      if (this.filled < this.frame.length) break;

      frames.push({ type: this.frame[0]!, body: this.frame.subarray(1) });
      this.frame = undefined;
      this.filled = 0;
    }
    return frames;
  }
}
