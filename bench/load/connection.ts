// One load connection, over raw TCP (the gateways) or WebSocket (the ws peer). Either
// way it carries the same frames: on TCP as a byte stream cut by the lesson-02 decoder,
// on WebSocket one whole frame per message. The generator sees only frames.
import net from 'node:net';
import WebSocket from 'ws';
import { FrameDecoder, type Frame } from '../../solutions/02-framing/codec.ts';

export type Transport = 'tcp' | 'ws';

export interface LoadConnection {
  /** Sends frames; on TCP they go out in one write. */
  send(frames: Buffer[]): void;
  /** Stops reading: the slow consumer. The kernel's buffers fill, then the server's queue. */
  pause(): void;
  resume(): void;
  /** Resets the connection (RST): no TIME_WAIT is left on the generator's ports. */
  reset(): void;
}

export interface ConnectionEvents {
  open(): void;
  /** Frames that arrived together, in order. */
  frames(frames: Frame[]): void;
  close(error?: Error): void;
}

export interface Dial {
  transport: Transport;
  port: number;
  localAddress: string;
}

/**
 * Wires a socket or a WebSocket to `events`: bytes (or messages) through a frame
 * decoder, the first error kept for 'close'. A stream that breaks the framing is cut.
 */
function watch(link: net.Socket | WebSocket, openEvent: string, dataEvent: string, events: ConnectionEvents, cut: () => void): void {
  const decoder = new FrameDecoder();
  let failure: Error | undefined;
  link.once(openEvent, () => events.open());
  link.on(dataEvent, (data: Buffer) => {
    let frames: Frame[];
    try {
      frames = decoder.push(data);
    } catch (err) {
      failure = err as Error;
      cut();
      return;
    }
    if (frames.length > 0) events.frames(frames);
  });
  link.on('error', (err: Error) => (failure ??= err));
  link.once('close', () => events.close(failure));
}

export function dial({ transport, port, localAddress }: Dial, events: ConnectionEvents): LoadConnection {
  return transport === 'tcp' ? dialTcp(port, localAddress, events) : dialWs(port, localAddress, events);
}

function dialTcp(port: number, localAddress: string, events: ConnectionEvents): LoadConnection {
  const socket = net.connect({ host: '127.0.0.1', port, localAddress, noDelay: true });
  watch(socket, 'connect', 'data', events, () => socket.destroy());
  return {
    send: (frames) => void socket.write(frames.length === 1 ? frames[0]! : Buffer.concat(frames)),
    pause: () => socket.pause(),
    resume: () => socket.resume(),
    reset: () => (socket.destroyed ? undefined : socket.resetAndDestroy()),
  };
}

function dialWs(port: number, localAddress: string, events: ConnectionEvents): LoadConnection {
  // The ws client answers the server's pings by itself (autoPong), as browsers do.
  const ws = new WebSocket(`ws://127.0.0.1:${port}`, { localAddress, perMessageDeflate: false });
  watch(ws, 'open', 'message', events, () => ws.terminate());
  return {
    send: (frames) => {
      for (const frame of frames) ws.send(frame);
    },
    pause: () => ws.pause(),
    resume: () => ws.resume(),
    reset: () => {
      // terminate() destroys the socket; a reset first leaves no TIME_WAIT behind.
      const socket = (ws as unknown as { _socket?: net.Socket })._socket;
      if (socket && !socket.destroyed) socket.resetAndDestroy();
      else ws.terminate();
    },
  };
}
