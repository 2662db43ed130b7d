// Reading frames off a socket, the way every server from here on does it: each 'data'
// chunk goes through the decoder, and each whole frame it completes goes to `onFrame`,
// in order. A peer that breaks the protocol gets one ERROR frame saying why, and the
// connection is ended: once framing is lost, the rest of the stream cannot be trusted.
import type net from 'node:net';
import { encodeFrame, FrameDecoder, FrameType, type Frame } from './codec.ts';

export interface FrameReader {
  /** The decoder, for what it holds of a frame that is not complete yet. */
  readonly decoder: FrameDecoder;
  /** True once reading has stopped: nothing more will reach onFrame. */
  readonly stopped: boolean;
  /** Ignore the rest of the stream (after a protocol error, or when giving up on a peer). */
  stop(): void;
}

export interface ReadFramesOptions {
  maxFrameBytes?: number;
  /**
   * How to tell the peer its stream broke the protocol before hanging up. The default
   * ends the socket with the ERROR frame; a server with a send queue (lesson 05) queues it.
   */
  onProtocolError?: (reason: string) => void;
}

export function readFrames(socket: net.Socket, onFrame: (frame: Frame) => void, options: ReadFramesOptions = {}): FrameReader {
  const decoder = new FrameDecoder(options.maxFrameBytes);
  const refuse = options.onProtocolError ?? ((reason) => socket.end(encodeFrame(FrameType.ERROR, reason)));
  let stopped = false;

  socket.on('data', (chunk: Buffer) => {
    if (stopped) return;
    let frames: Frame[];
    try {
      frames = decoder.push(chunk);
    } catch (err) {
      stopped = true;
      refuse(`PROTOCOL ${(err as Error).message}`);
      return;
    }
    for (const frame of frames) {
      if (stopped) break; // a frame's handler may give up on the connection
      onFrame(frame);
    }
  });

  return {
    decoder,
    get stopped() {
      return stopped;
    },
    stop() {
      stopped = true;
    },
  };
}
