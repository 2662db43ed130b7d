// One call per test file wires the harness into vitest: every test starts with the
// crash probe armed and a leak snapshot taken, and ends by closing what it opened and
// checking that nothing is left alive.
import { afterEach, beforeEach } from 'vitest';
import { watchAccepted, type AcceptedWatch } from '../probes/accepted.ts';
import { armCrashProbe, takeCrash } from '../probes/crash.ts';
import { describeLeaks, isClean, LeakProbe } from '../probes/leaks.ts';
import { connect, type ConnectOptions, type TestClient } from './client.ts';
import { settleWithin } from './settle.ts';
import { fail, setLesson } from './teach.ts';

export interface Stoppable {
  stop(): Promise<void>;
}

export interface Harness {
  /** Connect a recorded test client; it is destroyed after the test. */
  connect(port: number, options?: ConnectOptions): Promise<TestClient>;
  /** Stop this server after the test (and check that stop() finishes). */
  track<T extends Stoppable>(server: T): T;
  /** Run `fn` after the test, before the leak check. */
  defer(fn: () => unknown): void;
  /**
   * Record the server side of every connection accepted from now until the test ends, to
   * tell a destroyed socket from one only ended (see probes/accepted.ts).
   */
  watchAccepted(): AcceptedWatch;
  /** The snapshot taken before the test: ask it what is alive now that was not then. */
  readonly probe: LeakProbe;
}

const STOP_WITHIN_MS = 2000;
// After a test that already failed, stop() is still called (to free the port and the
// sockets) but not waited on for long: the learner has their failure, and a broken
// server's stop() often hangs, which would cost every failing test two seconds.
const STOP_AFTER_FAILURE_MS = 250;
// How long what a test opened may take to go once it is closed. A bound, not a wait: the
// probe returns as soon as everything is gone, and on a machine whose cores are busy a
// long promise chain (8,000 queued frames giving up) can take a few hundred ms to unwind.
const LEAK_SETTLE_MS = 1500;

export function useHarness(lesson: string): Harness {
  let probe: LeakProbe;
  let cleanups: Array<() => unknown> = [];
  // Set as each test's cleanup begins: whether the test body had already failed.
  let failedAlready = false;
  // Armed for the whole file: a crash between two tests must not take the worker down.
  armCrashProbe();

  beforeEach(() => {
    setLesson(lesson);
    cleanups = [];
    probe = new LeakProbe();
    // A crash that landed after the previous test finished belongs to no test yet.
    const late = takeCrash();
    if (late) throw late;
  });

  afterEach(async (context) => {
    // A test that already failed has told the learner what matters; its leftovers would
    // only repeat it (and waiting them out would slow every run of a broken exercise).
    failedAlready = context.task.result?.state === 'fail';
    const stopFailures: string[] = [];
    for (const cleanup of cleanups.reverse()) {
      try {
        await cleanup();
      } catch (err) {
        stopFailures.push((err as Error).message);
      }
    }
    const crash = takeCrash();
    if (crash) throw crash;
    if (stopFailures.length) {
      fail('Cleaning up after the test failed.', {
        observed: stopFailures.join('\n'),
        expected: 'stop() resolves once every connection, timer and listener is released',
        idea: 'a server has to be able to stop; tests stop it after every case',
      });
    }
    if (failedAlready) return;
    const leaks = await probe.settle(LEAK_SETTLE_MS);
    if (!isClean(leaks)) {
      fail('Something outlived the test.', {
        observed: `${LEAK_SETTLE_MS} ms after the test closed its clients and stopped the server, still alive: ${describeLeaks(leaks)}`,
        expected: 'nothing: every socket, timer and listener a connection made is released when it ends',
        idea: 'whatever a connection opens, its close path must release (lesson 01)',
      });
    }
  });

  return {
    connect: async (port, options) => {
      const client = await connect(port, options);
      cleanups.push(() => client.close());
      return client;
    },
    track: (server) => {
      cleanups.push(() => stopWithin(server, failedAlready ? STOP_AFTER_FAILURE_MS : STOP_WITHIN_MS, failedAlready));
      return server;
    },
    defer: (fn) => void cleanups.push(fn),
    watchAccepted: () => {
      const watch = watchAccepted();
      cleanups.push(() => watch.stop());
      return watch;
    },
    get probe() {
      return probe;
    },
  };
}

async function stopWithin(server: Stoppable, ms: number, quietly = false): Promise<void> {
  const outcome = await settleWithin(server.stop(), ms);
  if (!outcome.done && quietly) return;
  if (!outcome.done) throw new Error(`stop() had not finished ${ms} ms after it was called`);
  if ('error' in outcome) throw outcome.error;
}
