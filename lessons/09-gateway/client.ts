// A command-line client for the gateway (`npm run client -- ...`):
//
//   sub <topic>             print each message as it arrives; reconnect with backoff
//   pub <topic> <message>   publish once and print the ACK
//
// Flags: --port (GATEWAY_PORT, 7400), --host (127.0.0.1), --token (GATEWAY_TOKEN).
// A subscriber keeps a heartbeat with the gateway (lesson 04) and, whenever the
// connection is lost or the gateway says GOAWAY, reconnects after a jittered, growing
// wait (lesson 06), so a restart of the gateway is a pause, not an outage.
import net from 'node:net';
import { once } from 'node:events';
import { setTimeout as sleep } from 'node:timers/promises';
import { parseArgs } from 'node:util';
import { encodeFrame, FrameDecoder, FrameType, type Frame } from '../02-framing/codec.ts';
import { connectHeartbeatClient } from '../04-heartbeat/client.ts';
import { Backoff } from '../06-limits/reconnect.ts';
import { decodeTopicBody, encodeTopicBody } from './topics.ts';

const { values: flags, positionals } = parseArgs({
  args: process.argv.slice(2),
  allowPositionals: true,
  options: { port: { type: 'string' }, host: { type: 'string' }, token: { type: 'string' } },
});
const port = Number(flags.port ?? process.env.GATEWAY_PORT ?? 7400);
const host = flags.host ?? '127.0.0.1';
const token = flags.token ?? process.env.GATEWAY_TOKEN ?? 'dev-token';
const hello = () => JSON.stringify({ token, client: `cli-${process.pid}` });
const text = (frame: Frame) => frame.body.toString('utf8');

const [command, topic, ...rest] = positionals;
if (command === 'sub' && topic) await subscribe(topic);
else if (command === 'pub' && topic && rest.length) process.exitCode = await publish(topic, rest.join(' '));
else {
  console.error('usage: npm run client -- sub <topic> | pub <topic> <message>   [--port N] [--host H] [--token T]');
  process.exitCode = 2;
}

async function subscribe(topic: string): Promise<void> {
  const backoff = new Backoff({ baseMs: 200, capMs: 10_000 });
  const stopped = new AbortController();
  process.once('SIGINT', () => stopped.abort());
  while (!stopped.signal.aborted) {
    try {
      const client = await connectHeartbeatClient(port, {
        host,
        intervalMs: 5000,
        onFrame: (frame) => {
          if (frame.type === FrameType.MESSAGE) {
            const message = decodeTopicBody(frame.body);
            if (message) console.log(`${message.topic}: ${message.message.toString('utf8')}`);
          } else if (frame.type === FrameType.ACK) console.error(`ack: ${text(frame)}`);
          else if (frame.type === FrameType.GOAWAY) console.error(`goaway: ${text(frame)}`);
          else if (frame.type === FrameType.ERROR || frame.type === FrameType.BUSY) console.error(`${frame.type === FrameType.BUSY ? 'busy' : 'error'}: ${text(frame)}`);
        },
      });
      backoff.opened();
      client.sendFrame(FrameType.HELLO, hello());
      client.sendFrame(FrameType.SUBSCRIBE, topic);
      const onStop = () => void client.close();
      stopped.signal.addEventListener('abort', onStop);
      console.error(`connected to ${host}:${port}, subscribed to "${topic}"`);
      console.error(`disconnected: ${await client.closed}`);
      stopped.signal.removeEventListener('abort', onStop);
      backoff.closed();
    } catch (err) {
      console.error(`cannot connect to ${host}:${port}: ${(err as Error).message}`);
    }
    if (stopped.signal.aborted) break;
    const wait = Math.round(backoff.next());
    console.error(`reconnecting in ${wait} ms`);
    await sleep(wait, undefined, { signal: stopped.signal }).catch(() => {});
  }
}

async function publish(topic: string, message: string): Promise<number> {
  const socket = net.connect({ port, host, noDelay: true });
  let answered = false;
  socket.on('error', (err) => answered || console.error(`error: ${err.message}`));
  await once(socket, 'connect');
  socket.write(encodeFrame(FrameType.HELLO, hello()));
  socket.write(encodeFrame(FrameType.PUBLISH, encodeTopicBody(topic, message)));
  const decoder = new FrameDecoder();
  for await (const chunk of socket as AsyncIterable<Buffer>) {
    for (const frame of decoder.push(chunk)) {
      if (frame.type === FrameType.HELLO || frame.type === FrameType.PING || frame.type === FrameType.MESSAGE) continue;
      answered = true;
      socket.end();
      const ok = frame.type === FrameType.ACK;
      console.log(`${ok ? 'ack' : frame.type === FrameType.BUSY ? 'busy' : 'error'}: ${text(frame)}`);
      return ok ? 0 : 1;
    }
  }
  console.error('the gateway closed the connection without an answer');
  return 1;
}
