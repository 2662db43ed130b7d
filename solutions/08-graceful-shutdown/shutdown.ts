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
import { constants } from 'node:os';

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

  // 2. Every client is told we are going, and each connection is ended as soon as it
  //    has nothing more to send: end() sends FIN only after every byte already queued
  //    has been written, so nothing queued is lost. No connection waits for another.
  for (const conn of connections()) {
    conn.goodbye();
    const end = () => conn.socket.end();
    void conn.settled().then(end, end);
  }

  // 3. A peer that never reads keeps end() from ever completing, and work that never
  //    finishes keeps its connection from settling: either holds close() for ever. At the
  //    deadline, whatever is open now is destroyed (and throws away what is queued).
  let forced = 0;
  const deadline = setTimeout(() => {
    for (const conn of connections()) {
      if (conn.socket.destroyed) continue;
      conn.socket.destroy();
      forced++;
    }
    onForced?.(forced);
  }, graceMs);

  await closed;
  // 4. Everyone left in time: disarm the deadline, or it holds the process for graceMs.
  clearTimeout(deadline);
  return { forced };
}

const SIGNALS = ['SIGTERM', 'SIGINT'] as const;

/**
 * SIGTERM and SIGINT: the first calls stop() (the process then exits by itself once
 * nothing is left open); a second exits at once with 128 + the signal's number.
 * Returns a function that removes the handlers.
 */
export function stopOnSignals(stop: () => Promise<void>, log: (line: string) => void = (line) => console.error(line)): () => void {
  // Orchestrators (Kubernetes, systemd, docker stop) send SIGTERM; Ctrl-C sends SIGINT.
  // Counted together: Ctrl-C, then the orchestrator's SIGTERM, is a second signal.
  let stopping = false;
  const onSignal = (signal: NodeJS.Signals) => {
    if (stopping) {
      // The operator says "now". Not 0: the drain did not finish. 130 for SIGINT, 143 for
      // SIGTERM, which is what a shell reports for a process killed by that signal.
      log(`${signal} again: exiting without waiting`);
      process.exit(128 + constants.signals[signal]);
    }
    stopping = true;
    log(`${signal}: shutting down (send it again to exit at once)`);
    stop().then(
      () => log('stopped'),
      (err: unknown) => {
        log(`stop failed: ${String(err)}`);
        process.exitCode = 1;
      },
    );
  };
  for (const signal of SIGNALS) process.on(signal, onSignal);
  return () => {
    for (const signal of SIGNALS) process.off(signal, onSignal);
  };
}
