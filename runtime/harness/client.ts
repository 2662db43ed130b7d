// The test client: a real TCP connection to 127.0.0.1 that records everything it sees
// (bytes, frames, lines, FIN, RST, close) so a test can wait for facts, not sleep.
import net from 'node:net';
import { once } from 'node:events';
import { encode, ReferenceDecoder, describeFrame, type Frame } from '../protocol.ts';
import { eventually } from './eventually.ts';
import { fail } from './teach.ts';

export interface ConnectOptions {
  /** Turn Nagle off (the default here): tests measure the server, not the kernel's batching. */
  noDelay?: boolean;
  /** Another loopback address to connect from (127.0.0.2, …): another "client IP". */
  localAddress?: string;
  /** Keep our side open after the server's FIN (to watch a half-closed connection). */
  allowHalfOpen?: boolean;
}

export class TestClient {
  readonly socket: net.Socket;
  // Chunks as they arrived; joined only when a test asks (joining on every chunk would
  // copy megabytes over and over in the backpressure lessons).
  private chunks: Buffer[] = [];
  /** How many bytes have arrived. */
  receivedBytes = 0;
  /** Frames decoded from `received` with the reference decoder. */
  readonly frames: Frame[] = [];
  /** Set when the bytes received break the protocol (bad length, …). */
  protocolError: Error | undefined;
  /** The server sent FIN. */
  ended = false;
  /** The connection is fully closed. */
  closed = false;
  /** The socket error, if any (ECONNRESET when the server reset us). */
  error: NodeJS.ErrnoException | undefined;
  private readonly decoder = new ReferenceDecoder();
  private readonly openedAt = performance.now();
  closedAfterMs: number | undefined;

  constructor(socket: net.Socket) {
    this.socket = socket;
    socket.on('data', (chunk: Buffer) => {
      this.chunks.push(chunk);
      this.receivedBytes += chunk.length;
      if (this.protocolError) return;
      try {
        this.frames.push(...this.decoder.push(chunk));
      } catch (err) {
        this.protocolError = err as Error;
      }
    });
    socket.on('end', () => (this.ended = true));
    socket.on('error', (err) => (this.error = err));
    socket.on('close', () => {
      this.closed = true;
      this.closedAfterMs = performance.now() - this.openedAt;
    });
  }

  /** Every byte received, in order. */
  get received(): Buffer {
    if (this.chunks.length > 1) this.chunks = [Buffer.concat(this.chunks)];
    return this.chunks[0] ?? Buffer.alloc(0);
  }

  // Our local port, remembered once connected: a closed socket no longer knows it, and a
  // test often asks after the close (to find the server's side with watchAccepted().of()).
  private knownPort: number | undefined;

  /** Our local port: the server sees it as the remote port. Still known after the close. */
  get port(): number {
    return (this.knownPort ??= this.socket.localPort) ?? 0;
  }

  /** Received bytes as UTF-8 lines (the last, unfinished one left out). */
  lines(): string[] {
    const text = this.received.toString('utf8');
    return text.split('\n').slice(0, -1);
  }

  /** Send one whole frame in one write. */
  send(type: number, body: Buffer | string = ''): void {
    this.socket.write(encode(type, body));
  }

  write(bytes: Buffer | string): Promise<void> {
    return new Promise((resolve, reject) => this.socket.write(bytes, (err) => (err ? reject(err) : resolve())));
  }

  /** Waits until `count` frames have arrived; returns them. `what` names them in a failure. */
  async waitForFrames(count: number, what: string, within = 1000): Promise<Frame[]> {
    await eventually(() => {
      if (this.frames.length >= count) return;
      fail(`Waited ${within} ms for ${what}.`, {
        observed: `${this.frames.length} of ${count} frame(s) arrived${this.frames.length ? `: ${this.frames.map(describeFrame).join(', ')}` : ''}${this.protocolError ? `; then bytes that are not a frame (${this.protocolError.message})` : ''}${this.closed ? '; then the server closed the connection' : ''}`,
        expected: `${count} frame(s): ${what}`,
        idea: 'every request gets its reply, whatever way its bytes were cut into packets',
      });
    }, { within });
    return this.frames.slice(0, count);
  }

  /** Waits until the connection has closed; returns how it closed. */
  async waitClosed(what: string, within = 1000): Promise<'fin' | 'reset' | 'closed'> {
    await eventually(() => {
      if (this.closed) return;
      fail(`Waited ${within} ms for the server to close the connection.`, {
        observed: `still open after ${within} ms${this.ended ? ' (the server sent FIN but our side is not closed)' : ''}`,
        expected: what,
        idea: 'a server that decides a connection is over must close it itself',
      });
    }, { within });
    if (this.error?.code === 'ECONNRESET') return 'reset';
    return this.ended ? 'fin' : 'closed';
  }

  /** Abortive close: the server sees ECONNRESET. */
  reset(): void {
    this.socket.resetAndDestroy();
  }

  end(): void {
    this.socket.end();
  }

  destroy(): void {
    this.socket.destroy();
  }

  /**
   * The polite goodbye the harness uses after each test: FIN, keep reading until the
   * server closes its side, destroy if it has not within `ms`. (A plain destroy() could
   * make the kernel answer a late server write with RST, a race no test is about.)
   */
  async close(ms = 300): Promise<void> {
    if (this.closed) return;
    // A paused client would never read the server's FIN: nothing polite left to wait for.
    if (this.socket.isPaused()) return void this.socket.destroy();
    this.socket.end();
    const deadline = performance.now() + ms;
    while (!this.closed && performance.now() < deadline) await new Promise((r) => setTimeout(r, 5));
    this.socket.destroy();
  }
}

export async function connect(port: number, options: ConnectOptions = {}): Promise<TestClient> {
  const socket = net.connect({
    port,
    host: '127.0.0.1',
    noDelay: options.noDelay ?? true,
    allowHalfOpen: options.allowHalfOpen ?? false,
    ...(options.localAddress ? { localAddress: options.localAddress } : {}),
  });
  const client = new TestClient(socket);
  await Promise.race([
    once(socket, 'connect').then(() => client.port),
    once(socket, 'close').then(() => {
      throw new Error(`could not connect to 127.0.0.1:${port}: ${client.error?.message ?? 'closed'}`);
    }),
  ]);
  return client;
}
