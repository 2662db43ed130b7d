// The crash probe. In production an exception nobody catches (an 'error' event with no
// listener, a throw inside a 'data' handler) ends the process and every client with it,
// and so does a rejected promise nobody handles (Node 15 and later). Under test we
// capture both instead, so the test fails with an explanation and the rest of the suite
// keeps running.
import { LessonFailure } from '../harness/teach.ts';

interface Captured {
  error: unknown;
  /** A rejected promise nobody awaited or caught, rather than a thrown exception. */
  rejection: boolean;
}

let captured: Captured[] = [];
let armed = false;

const onRejection: NodeJS.UnhandledRejectionListener = (reason) => void captured.push({ error: reason, rejection: true });

export function armCrashProbe(): void {
  if (armed) return;
  process.setUncaughtExceptionCaptureCallback((error) => captured.push({ error, rejection: false }));
  // The test runner's own listeners would report a rejection as an error of the whole
  // run, with no test to pin it on: ours replaces them for the life of this test file.
  process.removeAllListeners('unhandledRejection');
  process.on('unhandledRejection', onRejection);
  armed = true;
}

/** The first captured crash as a LessonFailure (and forgets them all), or undefined. */
export function takeCrash(): Error | undefined {
  const [first] = captured;
  if (first === undefined) return undefined;
  const count = captured.length;
  captured = [];
  return crashFailure(first, count);
}

function crashFailure({ error, rejection }: Captured, count: number): Error {
  // A TypeError or ReferenceError is a slip in the code, not the lesson's concern: report
  // it as it is, with its stack (and verify will not count it as a lesson failure).
  if (error instanceof TypeError || error instanceof ReferenceError) return error;
  const e = error as NodeJS.ErrnoException;
  const what = e instanceof Error ? `${e.name}${e.code ? ` ${e.code}` : ''}: ${e.message}` : String(error);
  const times = count > 1 ? ` (${count} times)` : '';
  if (rejection) {
    return new LessonFailure('The server process would have crashed.', {
      observed: `a promise was rejected and nothing awaited or caught it${times}:\n${what}`,
      expected: 'every promise a connection starts is awaited or has a .catch() that deals with its failure there',
      idea: "since Node 15 an unhandled rejection ends the process, like an uncaught exception: a fire-and-forget async call needs its own catch",
    });
  }
  const unhandledEvent = /Unhandled 'error' event/.test(e?.message ?? '') || (e?.code && /^E[A-Z]+$/.test(e.code));
  return new LessonFailure('The server process would have crashed.', {
    observed: `an exception no one caught reached the top of the process${times}:\n${what}`,
    expected: 'a problem with one connection is handled on that connection; the process and every other client carry on',
    idea: unhandledEvent
      ? "an 'error' event with no listener is thrown, and an uncaught throw ends a Node process: every socket needs an 'error' listener"
      : 'code that runs in an event handler has no caller to catch its exceptions: check input before you use it',
  });
}
