// The floor under the idle figure: a server that answers HELLO and SUBSCRIBE and keeps
// nothing but the socket and its topic. Whatever a gateway holds per connection beyond
// this is its own; this much is Node's (a net.Socket, its handle and stream state).
import net from 'node:net';
import { encodeFrame, FrameType } from '../../solutions/02-framing/codec.ts';
import { readFrames } from '../../solutions/02-framing/read-frames.ts';

const topics = new Map<string, Set<net.Socket>>();
const server = net.createServer({ noDelay: true }, (socket) => {
  socket.on('error', () => {});
  socket.once('close', () => {
    for (const subscribers of topics.values()) subscribers.delete(socket);
  });
  readFrames(socket, (frame) => {
    if (frame.type === FrameType.HELLO) socket.write(encodeFrame(FrameType.HELLO, '{}'));
    else if (frame.type === FrameType.PING) socket.write(encodeFrame(FrameType.PONG, frame.body));
    else if (frame.type === FrameType.SUBSCRIBE) {
      const topic = frame.body.toString();
      let subscribers = topics.get(topic);
      if (!subscribers) topics.set(topic, (subscribers = new Set()));
      subscribers.add(socket);
      socket.write(encodeFrame(FrameType.ACK, `SUBSCRIBE ${topic}`));
    }
  });
});
server.listen(0, '127.0.0.1', () => console.error(`gateway on 127.0.0.1:${(server.address() as net.AddressInfo).port}`));
