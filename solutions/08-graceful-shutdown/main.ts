// The journal server as a process: `npx tsx lessons/08-graceful-shutdown/main.ts`.
// It prints `listening on 127.0.0.1:<port>` on stdout and logs to stderr. Settings come
// from the environment: PORT (0, the default, lets the OS pick), PERSIST_MS, GRACE_MS,
// STATS_MS.
import { constants } from 'node:os';
import { startJournalServer } from './journal.ts';

const setting = (name: string, fallback: number) => Number(process.env[name] ?? fallback);

const server = await startJournalServer({
  port: setting('PORT', 0),
  persistMs: setting('PERSIST_MS', 5),
  graceMs: setting('GRACE_MS', 10_000),
  statsMs: setting('STATS_MS', 10_000),
  onStats: (stats) => console.error(`stats ${JSON.stringify(stats)}`),
});
console.log(`listening on 127.0.0.1:${server.port}`);

// Orchestrators (Kubernetes, systemd, docker stop) send SIGTERM; Ctrl-C sends SIGINT.
// The first one drains: stop() finishes what is in flight and releases everything, so
// the process then exits by itself with code 0. A second one means "now": exit at once
// with 128 + the signal's number (130 for SIGINT, 143 for SIGTERM), as a shell would.
let stopping = false;
for (const signal of ['SIGTERM', 'SIGINT'] as const) {
  process.on(signal, () => {
    if (stopping) {
      console.error(`${signal} again: exiting without waiting`);
      process.exit(128 + constants.signals[signal]);
    }
    stopping = true;
    console.error(`${signal}: shutting down (send it again to exit at once)`);
    void server.stop().then(() => console.error('stopped'));
  });
}
