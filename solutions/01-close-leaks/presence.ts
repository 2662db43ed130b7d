// A presence server: it welcomes each client, tells every client how many are online
// once per tick, and relays server-wide announcements. Small, but it holds per-connection
// state of every kind a real server does: a registry entry, a timer, a listener on a
// long-lived emitter, and the socket itself.
//
// It works on the happy path. Your job: make every connection release all of that on
// every path it can end by, and keep one client's bad network from ending the process.
import net from 'node:net';
import { EventEmitter } from 'node:events';

export interface PresenceOptions {
  /** 0 (the default) lets the OS pick a free port. */
  port?: number;
  /** How often each client hears the online count. */
  tickMs?: number;
}

export interface PresenceServer {
  port: number;
  /** Connected clients by id: the registry an admin page or a broadcast would use. */
  clients: Map<number, net.Socket>;
  /** Server-wide events. It lives as long as the server, so whatever listens must leave. */
  announcements: EventEmitter;
  announce(text: string): void;
  /** Disconnect a client now, without waiting for it (moderation, a misbehaving peer). */
  kick(id: number, reason: string): void;
  stop(): Promise<void>;
}

export async function startPresenceServer(options: PresenceOptions = {}): Promise<PresenceServer> {
  const tickMs = options.tickMs ?? 1000;
  const clients = new Map<number, net.Socket>();
  const announcements = new EventEmitter();
  let nextId = 1;

  const server = net.createServer((socket) => {
    const id = nextId++;
    clients.set(id, socket);
    socket.write(`welcome ${id}\n`);

    const onAnnounce = (text: string) => socket.write(`announce ${text}\n`);
    announcements.on('announce', onAnnounce);

    // Each client hears the count on its own schedule; the timer is this connection's.
    const ticker = setInterval(() => socket.write(`online ${clients.size}\n`), tickMs);

    // A reset or a broken pipe arrives as 'error'. Without a listener Node throws it,
    // and one client's bad network takes the whole process down. Node destroys the
    // socket after 'error', so 'close' follows and does the cleanup. (A real server would
    // log it: ECONNRESET and EPIPE are routine, anything else is worth a look.)
    socket.on('error', () => {});

    // 'close' fires exactly once on every path: a clean FIN, a reset, an error, our own
    // destroy(). 'end' fires only when the peer sends FIN, so cleanup lives here.
    socket.once('close', () => {
      clearInterval(ticker);
      announcements.off('announce', onAnnounce);
      clients.delete(id);
    });
  });

  await new Promise<void>((resolve) => server.listen(options.port ?? 0, '127.0.0.1', resolve));

  return {
    port: (server.address() as net.AddressInfo).port,
    clients,
    announcements,
    announce: (text) => void announcements.emit('announce', text),
    kick(id, reason) {
      const socket = clients.get(id);
      socket?.write(`bye ${reason}\n`);
      socket?.destroy();
    },
    async stop() {
      // close() stops accepting and calls back once the last connection is gone;
      // end() asks each client to go (see lesson 08 for clients that will not).
      const closed = new Promise<void>((resolve) => server.close(() => resolve()));
      for (const socket of clients.values()) socket.end();
      await closed;
    },
  };
}
