// The server's side of each connection. Lessons keep their sockets to themselves, but a
// test often needs to know what the server did with its end: destroyed it, or only ended
// it (FIN sent, the fd held until the peer answers, which a half-open peer never does).
// Node publishes every accepted socket on the `net.server.socket` diagnostics channel, so
// the probe sees them without touching the lesson's code.
import { subscribe, unsubscribe } from 'node:diagnostics_channel';
import type net from 'node:net';

export interface AcceptedSocket {
  socket: net.Socket;
  /** The server's port, and the client's: match it to a TestClient by `client.port`. */
  readonly localPort: number | undefined;
  readonly remotePort: number | undefined;
  acceptedAt: number;
  /** performance.now() when the server's side closed (its fd released). */
  closedAt: number | undefined;
  /** The server called end() (or the socket auto-ended) on its side: a FIN went out. */
  readonly ended: boolean;
  /** The server's side is destroyed: nothing of this connection is held any more. */
  readonly destroyed: boolean;
}

export interface AcceptedWatch {
  /** Every socket any server accepted since the watch began, in order. */
  readonly sockets: AcceptedSocket[];
  /** The server side of the connection whose client is on `clientPort`. */
  of(clientPort: number | undefined): AcceptedSocket | undefined;
  stop(): void;
}

export function watchAccepted(): AcceptedWatch {
  const sockets: AcceptedSocket[] = [];
  const onSocket = (message: unknown) => {
    const socket = (message as { socket: net.Socket }).socket;
    // The channel fires just after the server's 'connection' handler ran. The peer's port is
    // read at once, while the handle is there; the local one is known a moment later. (A
    // socket the handler destroyed synchronously has no ports left on Node 20: it is still
    // listed, but `of()` cannot match it to a client.)
    let local: number | undefined;
    let remote: number | undefined = socket.remotePort;
    const entry: AcceptedSocket = {
      socket,
      get localPort() {
        return (local ??= socket.localPort);
      },
      get remotePort() {
        return (remote ??= socket.remotePort);
      },
      acceptedAt: performance.now(),
      closedAt: undefined,
      get ended() {
        return socket.writableEnded;
      },
      get destroyed() {
        return socket.destroyed;
      },
    };
    queueMicrotask(() => {
      void entry.localPort;
      void entry.remotePort;
    });
    socket.once('close', () => (entry.closedAt = performance.now()));
    sockets.push(entry);
  };
  subscribe('net.server.socket', onSocket);
  return {
    sockets,
    of: (clientPort) => sockets.find((s) => clientPort !== undefined && s.remotePort === clientPort),
    stop: () => void unsubscribe('net.server.socket', onSocket),
  };
}
