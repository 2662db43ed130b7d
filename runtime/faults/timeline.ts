// The proxy's timeline: what happened on each connection, in order, in ms since the
// proxy started. When a lesson test fails, withTimeline() prints it under the failure,
// so the learner sees what went over the wire, not only the assertion that broke:
//
//        +0.0 ms      proxy 127.0.0.1:40113 → 127.0.0.1:40111, seed 1234
//        +3.1 ms  #1  client connected
//        +4.0 ms  #1  client → server   5 B in 5 chunks over 4.2 ms
//       +60.4 ms  #1  server → client   5 B

/** Which way bytes travel: upstream is client → server, downstream is server → client. */
export type Way = 'upstream' | 'downstream';

/** The sender and the receiver, for each way. */
export const ARROW: Record<Way, string> = { upstream: 'client → server', downstream: 'server → client' };

interface Line {
  /** ms since the proxy started. */
  at: number;
  /** The connection it happened on; undefined for the proxy as a whole (a fault, stop). */
  conn: number | undefined;
  text: string;
}

/** Consecutive data events of one connection and way, summed into one line. */
interface Run extends Line {
  way: Way;
  dropped: boolean;
  bytes: number;
  chunks: number;
  /** When the last chunk of the run went. */
  last: number;
  /** Bytes so far this way on this connection, this run included: the running count. */
  total: number;
}

// A timeline is for reading: past this many lines we count events instead of keeping them.
const MAX_LINES = 400;

export class Timeline {
  /** Offsets are measured from here. */
  private readonly start = performance.now();
  private readonly lines: Array<Line | Run> = [];
  /** The run each (connection, way) is adding to. Any other event on that connection ends it. */
  private readonly runs = new Map<string, Run>();
  /** The running byte counts per (connection, way, dropped). */
  private readonly totals = new Map<string, number>();
  /** Events that arrived after MAX_LINES. */
  private skipped = 0;

  /** Something happened: a connect, a FIN, an RST, a fault switched on or off. */
  event(conn: number | undefined, text: string): void {
    // Bytes after this event get a line of their own, so the order stays readable.
    for (const [key, run] of this.runs) {
      if (conn === undefined || run.conn === conn) this.runs.delete(key);
    }
    this.append({ at: this.now(), conn, text });
  }

  /** `n` bytes went one way (or were dropped on the way). */
  bytes(conn: number, way: Way, n: number, dropped = false): void {
    const key = `${conn} ${way} ${dropped}`;
    const total = (this.totals.get(key) ?? 0) + n;
    this.totals.set(key, total);
    const now = this.now();
    const run = this.runs.get(key);
    if (run) {
      run.bytes += n;
      run.chunks += 1;
      run.last = now;
      run.total = total;
      return;
    }
    const fresh: Run = { at: now, conn, text: '', way, dropped, bytes: n, chunks: 1, last: now, total };
    if (this.append(fresh)) this.runs.set(key, fresh);
  }

  /** The timeline as text, one event per line. */
  format(): string {
    const out = this.lines.map((line) => {
      const at = `+${line.at.toFixed(1)} ms`.padStart(12);
      const conn = (line.conn === undefined ? '' : `#${line.conn}`).padEnd(3);
      return `${at}  ${conn}  ${'way' in line ? describeRun(line) : line.text}`;
    });
    if (this.skipped) out.push(`  … and ${this.skipped} more event(s), not kept`);
    return out.join('\n');
  }

  private append(line: Line | Run): boolean {
    if (this.lines.length >= MAX_LINES) {
      this.skipped += 1;
      return false;
    }
    this.lines.push(line);
    return true;
  }

  private now(): number {
    return performance.now() - this.start;
  }
}

// "client → server   45 B in 3 chunks over 12.0 ms, 60 B so far"
function describeRun(run: Run): string {
  let text = `${ARROW[run.way]}   ${run.bytes} B${run.dropped ? ' dropped' : ''}`;
  if (run.chunks > 1) text += ` in ${run.chunks} chunks over ${(run.last - run.at).toFixed(1)} ms`;
  if (run.total !== run.bytes) text += `, ${run.total} B so far`;
  return text;
}

/**
 * Runs a test body; if it throws, appends the proxy's timeline to the error's message and
 * rethrows the same error (a LessonFailure stays a LessonFailure):
 *
 *   await withTimeline(proxy, async () => { ...the lesson's checks... });
 */
export async function withTimeline<T>(proxy: { readonly timeline: Timeline }, body: () => T | Promise<T>): Promise<T> {
  try {
    return await body();
  } catch (err) {
    throw appendTimeline(err, proxy.timeline);
  }
}

function appendTimeline(err: unknown, timeline: Timeline): unknown {
  const extra = `\n\nproxy timeline:\n${timeline.format()}`;
  if (!(err instanceof Error)) return new Error(`${String(err)}${extra}`);
  const header = `${err.name}: ${err.message}`;
  err.message += extra;
  // The stack was written when the error was made and repeats the old message; some
  // reporters print the stack, so it gets the timeline too.
  if (err.stack?.startsWith(header)) err.stack = `${err.name}: ${err.message}${err.stack.slice(header.length)}`;
  return err;
}
