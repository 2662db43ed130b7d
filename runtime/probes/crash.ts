// The crash probe. In production an exception nobody catches (an 'error' event with no
// listener, a throw inside a 'data' handler) ends the process and every client with it.
// Under test we capture it instead, so the test fails with an explanation and the rest
// of the suite keeps running.
import { LessonFailure } from '../harness/teach.ts';

let captured: unknown[] = [];
let armed = false;

export function armCrashProbe(): void {
  if (armed) return;
  process.setUncaughtExceptionCaptureCallback((err) => captured.push(err));
  armed = true;
}

export function disarmCrashProbe(): void {
  if (!armed) return;
  process.setUncaughtExceptionCaptureCallback(null);
  armed = false;
  captured = [];
}

/** The first captured crash as a LessonFailure (and forgets them all), or undefined. */
export function takeCrash(): Error | undefined {
  const [first] = captured;
  if (first === undefined) return undefined;
  const count = captured.length;
  captured = [];
  return crashFailure(first, count);
}

function crashFailure(err: unknown, count: number): Error {
  // A TypeError or ReferenceError is a slip in the code, not the lesson's concern: report
  // it as it is, with its stack (and verify will not count it as a lesson failure).
  if (err instanceof TypeError || err instanceof ReferenceError) return err;
  const e = err as NodeJS.ErrnoException;
  const what = e instanceof Error ? `${e.name}${e.code ? ` ${e.code}` : ''}: ${e.message}` : String(err);
  const unhandledEvent = /Unhandled 'error' event/.test(e?.message ?? '') || (e?.code && /^E[A-Z]+$/.test(e.code));
  return new LessonFailure('The server process would have crashed.', {
    observed: `an exception no one caught reached the top of the process${count > 1 ? ` (${count} times)` : ''}:\n${what}`,
    expected: 'a problem with one connection is handled on that connection; the process and every other client carry on',
    idea: unhandledEvent
      ? "an 'error' event with no listener is thrown, and an uncaught throw ends a Node process: every socket needs an 'error' listener"
      : 'code that runs in an event handler has no caller to catch its exceptions: check input before you use it',
  });
}
