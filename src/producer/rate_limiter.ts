/** Token bucket that paces WAL replay to `producer.resend.rate_limit` records per second. */
import { type Clock, realClock } from "../clock.ts";

export interface RateLimiterOptions {
  /** Bucket size: tokens that may be spent at once after a pause. Default rate/10, at least 1. */
  burst?: number;
  clock?: Clock;
}

interface Waiter {
  /** Tokens this waiter still needs; it collects tokens as they come, so it may ask for more than the burst. */
  remaining: number;
  resolve: () => void;
  reject: (err: Error) => void;
}

/**
 * Token bucket, full at start, refilled continuously at `ratePerSecond`. Waiters are served first come,
 * first served, and wait on a timer, never in a busy loop.
 * @example
 * const limiter = new RateLimiter(10_000);
 * for (const record of batch) { await limiter.take(); send(record); }
 * limiter.close();
 */
export class RateLimiter {
  readonly burst: number;
  readonly #ratePerMs: number;
  readonly #clock: Clock;
  #tokens: number;
  #refilledAt: number;
  #waiters: Waiter[] = [];
  #timer: number | undefined;
  #closed = false;

  constructor(ratePerSecond: number, opts: RateLimiterOptions = {}) {
    if (!(ratePerSecond > 0) || !Number.isFinite(ratePerSecond)) {
      throw new RangeError(`rate limiter: rate must be a positive number per second, got ${ratePerSecond}`);
    }
    this.burst = opts.burst ?? Math.max(1, ratePerSecond / 10);
    if (!(this.burst > 0) || !Number.isFinite(this.burst)) {
      throw new RangeError(`rate limiter: burst must be a positive number, got ${this.burst}`);
    }
    this.#ratePerMs = ratePerSecond / 1000;
    this.#clock = opts.clock ?? realClock;
    this.#tokens = this.burst;
    this.#refilledAt = this.#clock.now();
  }

  /** Resolves when `n` tokens have been taken, after everyone who asked earlier; rejects once closed. */
  take(n = 1): Promise<void> {
    checkCount(n);
    if (this.#closed) return Promise.reject(new Error("rate limiter: closed"));
    return new Promise((resolve, reject) => {
      this.#waiters.push({ remaining: n, resolve, reject });
      this.#pump();
    });
  }

  /** Takes `n` tokens if they are there now and nobody is waiting; never waits. `n` may not exceed the burst. */
  tryTake(n = 1): boolean {
    checkCount(n);
    if (n > this.burst) {
      throw new RangeError(`rate limiter: cannot take ${n} tokens at once, burst is ${this.burst}`);
    }
    if (this.#closed || this.#waiters.length > 0) return false;
    this.#refill();
    if (this.#tokens < n) return false;
    this.#tokens -= n;
    return true;
  }

  /** Rejects every waiter and clears the timer; later take() calls reject and tryTake() returns false. */
  close(): void {
    this.#closed = true;
    if (this.#timer !== undefined) this.#clock.clearTimeout(this.#timer);
    this.#timer = undefined;
    const waiters = this.#waiters;
    this.#waiters = [];
    for (const waiter of waiters) waiter.reject(new Error("rate limiter: closed"));
  }

  #refill(): void {
    const now = this.#clock.now();
    this.#tokens = Math.min(this.burst, this.#tokens + (now - this.#refilledAt) * this.#ratePerMs);
    this.#refilledAt = now;
  }

  #pump(): void {
    if (this.#timer !== undefined) return;
    this.#refill();
    while (this.#waiters.length > 0) {
      const head = this.#waiters[0];
      if (this.#tokens >= head.remaining) {
        this.#tokens -= head.remaining;
        this.#waiters.shift();
        head.resolve();
        continue;
      }
      head.remaining -= this.#tokens;
      this.#tokens = 0;
      // Wake when the head is served or the bucket is full, whichever comes first, so no token is lost to the cap.
      const waitMs = Math.ceil(Math.min(head.remaining, this.burst) / this.#ratePerMs);
      this.#timer = this.#clock.setTimeout(() => {
        this.#timer = undefined;
        this.#pump();
      }, waitMs);
      return;
    }
  }
}

function checkCount(n: number): void {
  if (!(n >= 0) || !Number.isFinite(n)) {
    throw new RangeError(`rate limiter: token count must be >= 0, got ${n}`);
  }
}
