// The wire protocol every lesson and the capstone speak, as constants plus a plain
// reference encoder/decoder for the test harness. The learner writes their own codec in
// lesson 02; the harness never depends on it. The prose version is lessons/PROTOCOL.md.

/** Bytes in the length prefix: an unsigned 32-bit big-endian payload length. */
export const HEADER_BYTES = 4;

/** Largest payload (type byte + body) any decoder accepts. Checked before allocating. */
export const MAX_FRAME_BYTES = 1024 * 1024;

/** The payload's first byte. */
export const FrameType = {
  HELLO: 0x01,
  PING: 0x02,
  PONG: 0x03,
  DATA: 0x04,
  ACK: 0x05,
  ERROR: 0x06,
  GOAWAY: 0x07,
  BUSY: 0x08,
  SUBSCRIBE: 0x09,
  UNSUBSCRIBE: 0x0a,
  PUBLISH: 0x0b,
  MESSAGE: 0x0c,
} as const;
export type FrameTypeName = keyof typeof FrameType;

export interface Frame {
  type: number;
  body: Buffer;
}

const TYPE_NAMES = new Map<number, string>(Object.entries(FrameType).map(([name, type]) => [type, name]));

export function typeName(type: number): string {
  return TYPE_NAMES.get(type) ?? `0x${type.toString(16).padStart(2, '0')}`;
}

/** One whole frame as one Buffer. */
export function encode(type: number, body: Buffer | string = Buffer.alloc(0)): Buffer {
  const bytes = typeof body === 'string' ? Buffer.from(body) : body;
  const out = Buffer.allocUnsafe(HEADER_BYTES + 1 + bytes.length);
  out.writeUInt32BE(1 + bytes.length, 0);
  out[HEADER_BYTES] = type;
  bytes.copy(out, HEADER_BYTES + 1);
  return out;
}

/** Thrown by the reference decoder when the peer breaks the protocol. */
export class ProtocolError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'ProtocolError';
  }
}

/**
 * The harness's decoder: simple rather than fast (it concatenates), strict about the
 * protocol. A lesson's own decoder must do better; see lesson 02.
 */
export class ReferenceDecoder {
  private buffered: Buffer = Buffer.alloc(0);

  push(chunk: Buffer): Frame[] {
    this.buffered = this.buffered.length ? Buffer.concat([this.buffered, chunk]) : chunk;
    const frames: Frame[] = [];
    while (this.buffered.length >= HEADER_BYTES) {
      const length = this.buffered.readUInt32BE(0);
      if (length === 0 || length > MAX_FRAME_BYTES) {
        throw new ProtocolError(`frame length ${length} is outside 1..${MAX_FRAME_BYTES}`);
      }
      if (this.buffered.length < HEADER_BYTES + length) break;
      const payload = this.buffered.subarray(HEADER_BYTES, HEADER_BYTES + length);
      frames.push({ type: payload[0]!, body: Buffer.from(payload.subarray(1)) });
      this.buffered = this.buffered.subarray(HEADER_BYTES + length);
    }
    return frames;
  }

  /** Bytes received that do not yet make a whole frame. */
  get pendingBytes(): number {
    return this.buffered.length;
  }
}

/** A short human description, for failure messages and timelines. */
export function describeFrame(frame: Frame): string {
  const text = frame.body.toString('utf8');
  const printable = /^[\x20-\x7e]*$/.test(text) && frame.body.length <= 60;
  return printable ? `${typeName(frame.type)} "${text}"` : `${typeName(frame.type)} (${frame.body.length} bytes)`;
}
