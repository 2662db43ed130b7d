// A token bucket: up to `capacity` actions in a burst, then `refillPerSecond` on
// average. Each action takes a token; tokens come back with time. The clock is a
// parameter, so the arithmetic can be tested without waiting.

export interface TokenBucketOptions {
  /** The burst: how many tokens the bucket holds when full. */
  capacity: number;
  /** Tokens added per second, up to the capacity. */
  refillPerSecond: number;
  /** A clock in ms (performance.now by default). */
  now?: () => number;
}

export class TokenBucket {
  private tokens: number;
  private last: number;
  private readonly now: () => number;

  constructor(private readonly options: TokenBucketOptions) {
    this.now = options.now ?? (() => performance.now());
    this.tokens = options.capacity;
    this.last = this.now();
  }

  /** Takes one token if there is one; false means "too soon". */
  take(): boolean {
    this.refill();
    if (this.tokens < 1) return false;
    this.tokens -= 1;
    return true;
  }

  /** Tokens available now (fractions included). */
  get available(): number {
    this.refill();
    return this.tokens;
  }

  /** Refilled to capacity: the bucket remembers nothing about its owner and can be dropped. */
  get full(): boolean {
    return this.available >= this.options.capacity;
  }

  private refill(): void {
    const now = this.now();
    const elapsed = Math.max(0, now - this.last);
    this.last = now;
    this.tokens = Math.min(this.options.capacity, this.tokens + (elapsed * this.options.refillPerSecond) / 1000);
  }
}
