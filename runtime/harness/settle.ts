// Whether a promise settles in time, as a value a test can check, instead of a test that
// hangs until vitest's own timeout (which says nothing about the lesson).

export type Settled<T> = { done: true; value: T } | { done: true; error: unknown } | { done: false };

/** Waits at most `ms` for `promise`; says how it settled, or that it had not. */
export async function settleWithin<T>(promise: Promise<T>, ms: number): Promise<Settled<T>> {
  let timer: NodeJS.Timeout | undefined;
  const pending = new Promise<{ done: false }>((resolve) => (timer = setTimeout(() => resolve({ done: false }), ms)));
  try {
    return await Promise.race([
      promise.then((value) => ({ done: true as const, value }), (error: unknown) => ({ done: true as const, error })),
      pending,
    ]);
  } finally {
    clearTimeout(timer);
  }
}

export interface Watched<T> {
  settled: boolean;
  value?: T;
  error?: Error;
  /** How long it took to settle, in ms. */
  afterMs?: number;
  /** 'pending', 'resolved' or 'rejected', for failure messages. */
  readonly state: 'pending' | 'resolved' | 'rejected';
}

/**
 * Follows a promise without awaiting it (and without leaving a rejection unhandled).
 * Pass a function that starts the operation, `watchPromise(() => pool.acquire())`, when
 * `afterMs` is held to a lower bound: the clock must start before the operation arms its
 * own timer, or a moment of preemption between the two (a loaded machine) makes the wait
 * look shorter than it was.
 */
export function watchPromise<T>(start: Promise<T> | (() => Promise<T>)): Watched<T> {
  const started = performance.now();
  const promise = typeof start === 'function' ? start() : start;
  const watched: Watched<T> = {
    settled: false,
    get state() {
      return !watched.settled ? 'pending' : 'error' in watched ? 'rejected' : 'resolved';
    },
  };
  promise.then(
    (value) => Object.assign(watched, { settled: true, value, afterMs: performance.now() - started }),
    (error: Error) => Object.assign(watched, { settled: true, error, afterMs: performance.now() - started }),
  );
  return watched;
}
