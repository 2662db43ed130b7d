// A bare client for the fuzzer: sends bytes in the pieces it is given and records every
// frame that comes back, and whether the gateway closed. Decoded with the harness's
// reference decoder, never with the gateway's own.
import net from 'node:net';
import { once } from 'node:events';
import { ReferenceDecoder, type Frame } from '../runtime/protocol.ts';

export class FuzzClient {
  readonly frames: Frame[] = [];
  closed = false;
  protocolError: Error | undefined;
  private readonly decoder = new ReferenceDecoder();

  private constructor(readonly socket: net.Socket) {
    socket.on('data', (chunk: Buffer) => {
      try {
        this.frames.push(...this.decoder.push(chunk));
      } catch (err) {
        this.protocolError = err as Error;
      }
    });
    socket.on('error', () => {});
    socket.once('close', () => (this.closed = true));
  }

  static async connect(port: number): Promise<FuzzClient> {
    const socket = net.connect({ host: '127.0.0.1', port, noDelay: true });
    await once(socket, 'connect');
    return new FuzzClient(socket);
  }

  /** Writes `bytes` cut into pieces of `piece` bytes, one write each. */
  send(bytes: Buffer, piece: number): void {
    for (let at = 0; at < bytes.length && !this.socket.destroyed; at += piece) this.socket.write(bytes.subarray(at, at + piece));
  }

  /** Polls `done` every 2 ms until it holds or `within` ms pass; true if it held. */
  async until(done: () => boolean, within: number): Promise<boolean> {
    const deadline = performance.now() + within;
    while (!done()) {
      if (performance.now() > deadline) return false;
      await new Promise((resolve) => setTimeout(resolve, 2));
    }
    return true;
  }

  async close(how: 'end' | 'reset'): Promise<void> {
    if (!this.closed) {
      if (how === 'reset') this.socket.resetAndDestroy();
      else this.socket.end();
    }
    await this.until(() => this.closed, 2000);
    this.socket.destroy();
  }
}
