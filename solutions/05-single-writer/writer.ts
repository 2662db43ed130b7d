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

/**
 * Resolves on the socket's next 'drain' (true), or when it closes first (false: a dead peer
 * never drains, and what was still in the socket's buffer was never sent).
 */
function drainOrClose(socket: net.Socket): Promise<boolean> {
  if (socket.destroyed) return Promise.resolve(false);
  return new Promise((resolve) => {
    const done = (drained: boolean) => () => {
      socket.off('drain', onDrain);
      socket.off('close', onClose);
      resolve(drained);
    };
    const onDrain = done(true);
    const onClose = done(false);
    socket.on('drain', onDrain);
    socket.on('close', onClose);
  });
}

type Job =
  | { kind: 'frame'; bytes: Buffer }
  | { kind: 'stream'; header: Buffer; length: number; chunks: AsyncIterable<Buffer>; done: (err?: Error) => void }
  | { kind: 'flush'; done: () => void };

export class FrameWriter {
  private readonly maxQueuedBytes: number;
  // Frames accepted but not yet handed to the socket, in the order they were sent.
  // Made only when a frame must wait, dropped once empty: an idle connection holds no array.
  private queue: Job[] | undefined;
  private held = 0;
  private running = false;

  constructor(
    private readonly socket: net.Socket,
    private readonly options: FrameWriterOptions = {},
  ) {
    this.maxQueuedBytes = options.maxQueuedBytes ?? DEFAULT_MAX_QUEUED_BYTES;
    socket.once('close', () => this.abandon());
  }

  /** Bytes accepted for this connection and not yet taken by the kernel. */
  get queuedBytes(): number {
    return this.held + this.socket.writableLength;
  }

  /** Sends one whole frame. False if it was refused: the connection is gone or too far behind. */
  send(type: number, body: Buffer | string = Buffer.alloc(0)): boolean {
    return this.sendFrame(encodeFrame(type, body));
  }

  /** Sends one frame already encoded (a broadcast encodes once for every client). */
  sendFrame(frame: Buffer): boolean {
    if (!this.admit(frame.length)) return false;
    // Fast path: nothing half-written, nothing waiting, room in the socket: the loop would write it now too.
    if (!this.running && !this.queue && !this.socket.writableNeedDrain) {
      this.socket.write(frame);
      return true;
    }
    this.enqueue({ kind: 'frame', bytes: frame }, frame.length);
    return true;
  }

  /**
   * Sends one frame whose body of `length` bytes comes from `chunks`, without holding the
   * whole body in memory. Resolves once the last byte has been written.
   */
  async stream(type: number, length: number, chunks: AsyncIterable<Buffer>): Promise<void> {
    const header = frameHeader(type, length);
    if (!this.admit(header.length)) throw new Error('the frame was refused: the connection is gone or too far behind');
    await new Promise<void>((resolve, reject) => {
      this.enqueue({ kind: 'stream', header, length, chunks, done: (err) => (err ? reject(err) : resolve()) }, header.length);
    });
  }

  /**
   * Resolves once everything sent before the call has been handed to the socket and the
   * socket's buffer has room again (or the connection closed).
   */
  drained(): Promise<void> {
    if (this.socket.destroyed) return Promise.resolve();
    return new Promise((resolve) => this.enqueue({ kind: 'flush', done: resolve }, 0));
  }

  // The bound. Checked when a frame is offered, before it costs any memory here: a
  // frame is accepted whole or refused whole, never cut.
  private admit(bytes: number): boolean {
    if (this.socket.destroyed) return false;
    if (this.queuedBytes + bytes <= this.maxQueuedBytes) return true;
    this.options.onOverflow?.(this.queuedBytes, bytes);
    return false;
  }

  private enqueue(job: Job, bytes: number): void {
    (this.queue ??= []).push(job);
    this.held += bytes;
    void this.run();
  }

  // The single writer: with sendFrame()'s fast path, the only code that calls
  // socket.write(). It takes one job at a time, writes it completely (a streamed body
  // included), and waits for 'drain' whenever write() says the socket's buffer is full.
  // Senders never write themselves, so nothing can slip between the parts of a frame.
  private async run(): Promise<void> {
    if (this.running) return;
    this.running = true;
    try {
      // A frame sent on the fast path may have filled the socket's buffer: its 'drain' comes first.
      if (this.socket.writableNeedDrain) await drainOrClose(this.socket);
      while (this.queue && this.queue.length > 0 && !this.socket.destroyed) {
        const job = this.queue.shift()!;
        if (job.kind === 'frame') {
          this.held -= job.bytes.length;
          await this.write(job.bytes);
        } else if (job.kind === 'stream') {
          this.held -= job.header.length;
          await this.writeStream(job);
        } else {
          job.done();
        }
      }
    } finally {
      this.running = false;
    }
    if (this.socket.destroyed) this.abandon();
    // Everything was written: drop the empty queue (and open the fast path again).
    else if (this.queue?.length === 0) this.queue = undefined;
  }

  // True once the socket has taken the bytes, false if it closed before they left.
  private async write(bytes: Buffer): Promise<boolean> {
    return this.socket.write(bytes) || drainOrClose(this.socket);
  }

  private async writeStream(job: Extract<Job, { kind: 'stream' }>): Promise<void> {
    try {
      const cut = () => new Error('the connection closed while the frame was being sent');
      if (!(await this.write(job.header))) throw cut();
      let sent = 0;
      for await (const chunk of job.chunks) {
        if (this.socket.destroyed) throw cut();
        sent += chunk.length;
        // The last chunk too: if the connection closes while it waits for 'drain', it was
        // never sent, and the sender must not hear that it was.
        if (!(await this.write(chunk))) throw cut();
      }
      if (sent !== job.length) throw new Error(`the body had ${sent} bytes, not the ${job.length} announced`);
      job.done();
    } catch (err) {
      // Part of a frame is on the wire and the rest will never come: the stream is broken.
      this.socket.destroy(err as Error);
      job.done(err as Error);
    }
  }

  // The connection is gone: what is still queued will never be sent.
  private abandon(): void {
    const left = this.queue ?? [];
    this.queue = undefined;
    for (const job of left) {
      if (job.kind === 'stream') job.done(new Error('the connection closed before the frame was sent'));
      else if (job.kind === 'flush') job.done();
    }
    this.held = 0;
  }
}
