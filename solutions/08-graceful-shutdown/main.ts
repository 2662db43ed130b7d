// The journal server as a process: `npx tsx lessons/08-graceful-shutdown/main.ts`.
// It prints `listening on 127.0.0.1:<port>` on stdout and logs to stderr. Settings come
// from the environment: PORT (0, the default, lets the OS pick), PERSIST_MS, GRACE_MS,
// STATS_MS.
import { startJournalServer } from './journal.ts';
import { stopOnSignals } from './shutdown.ts';

const setting = (name: string, fallback: number) => Number(process.env[name] ?? fallback);

const server = await startJournalServer({
  port: setting('PORT', 0),
  persistMs: setting('PERSIST_MS', 5),
  graceMs: setting('GRACE_MS', 10_000),
  statsMs: setting('STATS_MS', 10_000),
  onStats: (stats) => console.error(`stats ${JSON.stringify(stats)}`),
});
console.log(`listening on 127.0.0.1:${server.port}`);

// The first SIGTERM or SIGINT drains (shutdown.ts); a second one exits at once.
stopOnSignals(() => server.stop(), (line) => console.error(line));
