// The journal upstream (--journal host:port): each PUBLISH is stored by a lesson-08
// journal server before it is acknowledged, so an ACK survives the gateway's crash.
// Connections to it come from a lesson-07 pool: a handful of long-lived sockets shared
// by every publisher, with a bound on how many and how long a publisher waits for one.
//
// The journal's protocol (lesson 08): DATA "<id> <payload>" is answered ACK "<id>" once
// stored, or ERROR. The journal also copies every stored entry to its other connections
// as DATA (followers): on our pooled connections those are not the reply, and skipped.
import { FrameType } from '../02-framing/codec.ts';
import { createPool } from '../07-pooling/pool.ts';

export interface Journal {
  /** Resolves once the journal has stored the entry; rejects if it did not. */
  store(id: number, body: Buffer, signal?: AbortSignal): Promise<void>;
  /** Waits for the stores in flight, then closes every pooled connection. */
  stop(): Promise<void>;
}

export function connectJournal({ host = '127.0.0.1', port }: { host?: string; port: number }): Journal {
  const pool = createPool({ host, port, max: 8, acquireTimeoutMs: 2000 });
  return {
    async store(id, body, signal) {
      const ack = String(id);
      await pool.request(Buffer.concat([Buffer.from(`${id} `), body]), {
        signal,
        isReply: (frame) => frame.type === FrameType.ERROR || (frame.type === FrameType.ACK && frame.body.toString('latin1') === ack),
      });
    },
    stop: () => pool.drain(),
  };
}
