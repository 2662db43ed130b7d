// Reused buffers for outgoing frames. Allocating a fresh Buffer for every frame is cheap
// in Node, but a busy proxy writes hundreds of thousands of frames a second, and a small
// free list of fixed-size slabs takes that work off the allocator and the GC.
//
// A pooled buffer has one rule: it goes back to the pool only when nothing refers to it
// any more. The question this file answers is when that is, for a buffer given to
// socket.write().
import type net from 'node:net';
import { HEADER_BYTES } from '#protocol';
import { encodeFrame } from '../02-framing/codec.ts';

/** A free list of fixed-size slabs. */
export class BufferPool {
  private readonly free: Buffer[] = [];

  /**
   * @param slabBytes size of every slab; a frame that does not fit is not pooled
   * @param maxFree   slabs kept for reuse; more are left to the GC
   */
  constructor(
    readonly slabBytes = 16 * 1024,
    private readonly maxFree = 16,
  ) {}

  /** A slab: a free one (still holding its last user's bytes) or a new one. */
  take(): Buffer {
    return this.free.pop() ?? Buffer.allocUnsafe(this.slabBytes);
  }

  /** Gives a slab back. From now on the next take() may hand it out and overwrite it. */
  give(slab: Buffer): void {
    if (this.free.length < this.maxFree) this.free.push(slab);
  }

  /** Slabs ready for reuse. */
  get available(): number {
    return this.free.length;
  }
}

/**
 * Encodes one frame into a pooled slab and writes it with one write() (lesson 02: whole
 * frames only). Returns write()'s answer, so a caller can honour backpressure.
 */
export function writeFrame(socket: net.Socket, type: number, body: Buffer | string, pool: BufferPool): boolean {
  const bytes = typeof body === 'string' ? Buffer.from(body) : body;
  const length = HEADER_BYTES + 1 + bytes.length;
  // A frame larger than a slab is rare: it gets a buffer of its own.
  if (length > pool.slabBytes) return socket.write(encodeFrame(type, bytes));

  const slab = pool.take();
  slab.writeUInt32BE(1 + bytes.length, 0);
  slab[HEADER_BYTES] = type;
  bytes.copy(slab, HEADER_BYTES + 1);
  // write() does not copy. When the kernel's send buffer is full, the chunk waits in the
  // socket's queue as a reference to this very slab, and its bytes are read when they
  // are finally sent. The write callback is the moment they have left: only then is the
  // slab free (it runs on error and on destroy too, so the slab always comes back).
  return socket.write(slab.subarray(0, length), () => pool.give(slab));
}
