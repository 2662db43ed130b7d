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

export class Semaphore {
  private held = 0;
  // Each entry hands a permit to one waiting caller.
  private readonly queue: Array<() => void> = [];

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
      const grant = () => {
        clearTimeout(timer);
        signal?.removeEventListener('abort', onAbort);
        resolve(this.lease());
      };
      const giveUp = (reason: unknown) => {
        clearTimeout(timer);
        signal?.removeEventListener('abort', onAbort);
        // A caller that stopped waiting must leave the queue: otherwise the next release
        // hands the permit to nobody, and that permit is gone for good.
        const at = this.queue.indexOf(grant);
        if (at !== -1) this.queue.splice(at, 1);
        reject(reason);
      };
      const onAbort = () => giveUp(signal!.reason);

      this.queue.push(grant);
      signal?.addEventListener('abort', onAbort, { once: true });
      if (timeoutMs !== undefined) timer = setTimeout(() => giveUp(new AcquireTimeoutError(timeoutMs)), timeoutMs);
    });
  }

  private lease(): Release {
    let released = false;
    return () => {
      if (released) return;
      released = true;
      // Hand the permit straight to the first waiter, so no newcomer can slip in between.
      const next = this.queue.shift();
      if (next) next();
      else this.held--;
    };
  }
}
