// Waiting without sleeping: poll a condition until it holds, or fail with the last
// reason it did not. Crashes captured by the crash probe end the wait at once.
import { setTimeout as sleep } from 'node:timers/promises';
import { takeCrash } from '../probes/crash.ts';

export interface EventuallyOptions {
  /** How long the condition may take, in ms. Generous: this is an upper bound, not a timing. */
  within: number;
  /** Poll interval in ms. */
  every?: number;
}

/**
 * Runs `probe` until it returns without throwing; returns its value. On timeout, rethrows
 * the probe's last error (a LessonFailure tells the learner what was still wrong).
 */
export async function eventually<T>(probe: () => T | Promise<T>, { within, every = 5 }: EventuallyOptions): Promise<T> {
  const deadline = performance.now() + within;
  let lastLook = false;
  for (;;) {
    const crash = takeCrash();
    if (crash) throw crash;
    try {
      return await probe();
    } catch (err) {
      if (performance.now() >= deadline) {
        if (lastLook) throw err;
        lastLook = true;
        await ioTurn();
        continue;
      }
    }
    await sleep(every);
  }
}

/**
 * Lets the event loop take the I/O that is waiting, then resolves. On a loaded machine a
 * deadline can pass while this process is off the CPU, and the timer that says so is then
 * served before the bytes that came in meanwhile: a wait that is about to fail looks once
 * more after this (setImmediate runs after the poll phase).
 */
export function ioTurn(): Promise<void> {
  return new Promise((resolve) => setImmediate(resolve));
}

const NOT_YET = new Error('not yet');

/**
 * Waits until `done()` holds or `within` ms pass; says which, instead of failing, so the
 * caller can explain what it saw. Crashes captured by the crash probe still end the wait.
 */
export async function waitUntil(done: () => boolean, within: number): Promise<boolean> {
  return eventually(() => {
    if (!done()) throw NOT_YET;
    return true;
  }, { within: Math.max(0, within) }).catch((err: unknown) => {
    if (err === NOT_YET) return false;
    throw err;
  });
}

/** A promise you open by hand: lets a test decide the order of events instead of racing. */
export function gate<T = void>() {
  let open!: (value: T) => void;
  const opened = new Promise<T>((resolve) => (open = resolve));
  return { opened, open };
}
