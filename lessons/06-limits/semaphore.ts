// A counting semaphore for work in flight: at most `permits` holders at once, at most
// `maxWaiting` callers queued behind them (first come, first served), and a caller may
// stop waiting (its AbortSignal fires or its time runs out). Node has none built in.

/** Give the permit back. Calling it again does nothing. */
export type Release = () => void;

export interface AcquireOptions {
  /** Stop waiting when this fires (the client left, the server is stopping). */
  signal?: AbortSignal;
  /** Stop waiting after this many ms. */
  timeoutMs?: number;
}

/** The wait queue is full: refuse now rather than queue without end. */
export class QueueFullError extends Error {
  constructor(readonly waiting: number) {
    super(`${waiting} already waiting`);
    this.name = 'QueueFullError';
  }
}

/** No permit came free within the time allowed. */
export class AcquireTimeoutError extends Error {
  constructor(readonly ms: number) {
    super(`no permit within ${ms} ms`);
    this.name = 'AcquireTimeoutError';
  }
}

interface Waiter {
  grant(): void;
  giveUp(reason: unknown): void;
}

export class Semaphore {
  private held = 0;
  // Each entry hands a permit to one waiting caller.
  private readonly queue: Waiter[] = [];
  // One 'abort' listener per signal, shared by all its waiters: a connection with 20
  // requests queued adds 1 listener, not 20 (past 10, Node warns of a leak).
  private readonly watched = new Map<AbortSignal, { waiters: Set<Waiter>; onAbort: () => void }>();

  constructor(
    readonly permits: number,
    readonly maxWaiting = Infinity,
  ) {}

  /** Permits held now. */
  get inUse(): number {
    return this.held;
  }

  /** Callers waiting for a permit now. */
  get waiting(): number {
    return this.queue.length;
  }

  acquire({ signal, timeoutMs }: AcquireOptions = {}): Promise<Release> {
    if (signal?.aborted) return Promise.reject(signal.reason);
    if (this.held < this.permits) {
      this.held++;
      return Promise.resolve(this.lease());
    }
    if (this.queue.length >= this.maxWaiting) return Promise.reject(new QueueFullError(this.queue.length));

    return new Promise<Release>((resolve, reject) => {
      let timer: NodeJS.Timeout | undefined;
      const stopWatching = () => {
        clearTimeout(timer);
        if (signal) this.unwatch(signal, waiter);
      };
      const waiter: Waiter = {
        grant: () => {
          stopWatching();
          resolve(this.lease());
        },
        giveUp: (reason) => {
          stopWatching();
          reject(reason);
        },
      };

      this.queue.push(waiter);
      if (signal) this.watch(signal, waiter);
      if (timeoutMs !== undefined) timer = setTimeout(() => waiter.giveUp(new AcquireTimeoutError(timeoutMs)), timeoutMs);
    });
  }

  private watch(signal: AbortSignal, waiter: Waiter): void {
    let entry = this.watched.get(signal);
    if (!entry) {
      const waiters = new Set<Waiter>();
      const onAbort = () => {
        for (const w of [...waiters]) w.giveUp(signal.reason);
      };
      signal.addEventListener('abort', onAbort, { once: true });
      entry = { waiters, onAbort };
      this.watched.set(signal, entry);
    }
    entry.waiters.add(waiter);
  }

  private unwatch(signal: AbortSignal, waiter: Waiter): void {
    const entry = this.watched.get(signal);
    if (!entry) return;
    entry.waiters.delete(waiter);
    if (entry.waiters.size === 0) {
      // The last waiter on this signal is done: drop the listener and the entry with it.
      signal.removeEventListener('abort', entry.onAbort);
      this.watched.delete(signal);
    }
  }

  private lease(): Release {
    let released = false;
    return () => {
      if (released) return;
      released = true;
      // Hand the permit straight to the first waiter, so no newcomer can slip in between.
      const next = this.queue.shift();
      if (next) next.grant();
      else this.held--;
    };
  }
}
