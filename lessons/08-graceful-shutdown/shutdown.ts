// Stopping a server without losing work. Two pieces, used by the journal (journal.ts and
// main.ts) and by the capstone gateway:
//
// - drain() stops a net.Server gracefully: stop accepting, say goodbye to every client,
//   end each connection once it has nothing more to send, and cut off whatever is still
//   open at a deadline. It resolves only when nothing is left open.
// - stopOnSignals() turns SIGTERM and SIGINT into a call to stop(), and a second signal
//   into an exit on the spot.
//
// What "a connection has nothing more to send" means is the server's business (requests
// in flight, a send queue), so each connection comes as a Departing that says it.
import type net from 'node:net';

export interface Departing {
  socket: net.Socket;
  /** Tells the peer we are going (a GOAWAY frame), through the connection's own writer. */
  goodbye(): void;
  /** Resolves once this connection has nothing more to send: its work in flight answered and its queued frames handed to the socket. */
  settled(): Promise<void>;
}

export interface DrainOptions {
  /** How long connections get to finish before the rest are destroyed, in ms. */
  graceMs: number;
  /** Called if the deadline passes, with how many connections were still open then and destroyed (logs, metrics). */
  onForced?: (count: number) => void;
}

/**
 * Stops `server` gracefully: stop accepting; every connection hears goodbye(); each is
 * ended (FIN after its last queued byte) once settled; at graceMs whatever is still open
 * is destroyed. Resolves once the server has closed and nothing is left open, its own
 * deadline timer included. Refusing new work is the caller's job, started before drain().
 *
 * `connections` must yield every connection the server holds open. It is read when drain()
 * needs it: at the start, and again at the deadline, so a connection that registered in
 * the meantime is cut off too (it hears no goodbye: say it yourself if you accept one late).
 */
export async function drain(
  server: net.Server,
  connections: () => Iterable<Departing>,
  { graceMs, onForced }: DrainOptions,
): Promise<{ forced: number }> {
  // 1. No new connections. close() calls back once the last connection has closed.
  const closed = new Promise<void>((resolve) => server.close(() => resolve()));

  // 2. Every client is told we are going, and each connection is hung up on as soon as
  //    it has nothing more to send. No connection waits for another.
  for (const conn of connections()) {
    conn.goodbye();
    const hangUp = () => conn.socket.destroy();
    void conn.settled().then(hangUp, hangUp);
  }

  // 3. Wait for the last connection to close.
  await closed;
  return { forced: 0 };
}

const SIGNALS = ['SIGTERM', 'SIGINT'] as const;

/**
 * SIGTERM and SIGINT: the first calls stop() (the process then exits by itself once
 * nothing is left open); a second exits at once with 128 + the signal's number.
 * Returns a function that removes the handlers.
 */
export function stopOnSignals(stop: () => Promise<void>, log: (line: string) => void = (line) => console.error(line)): () => void {
  // Orchestrators (Kubernetes, systemd, docker stop) send SIGTERM; Ctrl-C sends SIGINT.
  const onSignal = (signal: NodeJS.Signals) => {
    log(`${signal}: shutting down`);
    process.exit(0);
  };
  for (const signal of SIGNALS) process.on(signal, onSignal);
  return () => {
    for (const signal of SIGNALS) process.off(signal, onSignal);
  };
}
