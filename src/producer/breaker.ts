/**
 * The circuit breaker in front of Kafka. It counts delivery results, not requests (docs/delivery.md, Circuit
 * breaker).
 *
 * Results that arrive after the state changed (messages sent while closed, reported later) are handled so:
 * - open: success() and failure() are ignored; only the timeout leads out of open.
 * - half: every success counts towards closing and every failure re-opens, probe or not: a result
 *   that arrives now is fresh evidence about the broker either way.
 * - closed: a failure counts towards opening, a success resets the count.
 */

import { type Clock, realClock } from "../clock.ts";

export type BreakerState = "closed" | "half" | "open";

export interface BreakerOptions {
  /** Consecutive failures that open the breaker. */
  fails: number;
  /** Half-open probe budget, and the consecutive successes that close the breaker. */
  requests: number;
  /** Time in open before going half-open. */
  timeoutMs: number;
  /** Closed-state counters are reset every interval; 0 = never. */
  intervalMs: number;
  clock?: Clock;
  /** Called once per state change. */
  onChange?: (from: BreakerState, to: BreakerState, reason: string) => void;
}

/**
 * Closed / half / open circuit breaker.
 * @example
 * const breaker = new Breaker({ fails: 5, requests: 3, timeoutMs: 20_000, intervalMs: 0 });
 * if (breaker.allow()) send(); // then breaker.success() or breaker.failure(reason) per delivery report
 */
export class Breaker {
  #state: BreakerState = "closed";
  #failures = 0;
  #successes = 0;
  #probes = 0;
  /** Whether the last change was trip()'s, which retract() may undo. */
  #tripped = false;
  #intervalEnd = 0;
  #timer: number | undefined;
  #closed = false;
  readonly #opts: BreakerOptions;
  readonly #clock: Clock;

  constructor(opts: BreakerOptions) {
    if (!(opts.fails >= 1) || !(opts.requests >= 1)) {
      throw new RangeError(
        `breaker: fails and requests must be at least 1, got ${opts.fails} and ${opts.requests}`,
      );
    }
    this.#opts = opts;
    this.#clock = opts.clock ?? realClock;
    this.#intervalEnd = this.#clock.now() + opts.intervalMs;
  }

  /** The current state. */
  get state(): BreakerState {
    return this.#state;
  }

  /** May one more message go to Kafka now? Closed: true. Open: false. Half: true while probes remain (consumes one). */
  allow(): boolean {
    if (this.#state === "closed") return true;
    if (this.#state === "open") return false;
    if (this.#probes >= this.#opts.requests) return false;
    this.#probes++;
    return true;
  }

  /** A message was delivered; `count` messages in a row act as that many calls. */
  success(count = 1): void {
    for (let k = 0; k < count; k++) {
      if (this.#state === "closed") {
        // Further successes in a row would change nothing.
        this.#rollInterval();
        this.#failures = 0;
        return;
      }
      if (this.#state !== "half") return;
      this.#returnProbe();
      this.#successes++;
      if (this.#successes >= this.#opts.requests) {
        this.#change("closed", `${this.#successes} consecutive successes in half-open`);
      }
    }
  }

  /** A message could not be delivered for a reason that says the broker is unwell (timeout, transport). */
  failure(reason: string): void {
    if (this.#state === "closed") {
      this.#rollInterval();
      this.#failures++;
      if (this.#failures >= this.#opts.fails) {
        this.#change("open", `${this.#failures} consecutive failures: ${reason}`);
      }
    } else if (this.#state === "half") {
      this.#change("open", `failure in half-open: ${reason}`);
    }
  }

  /**
   * Gives back a probe granted by allow() whose result says nothing about the broker: it was never sent, or
   * Kafka refused the message itself (unknown topic, too large). The probe is free for another message, so
   * half-open can never run out of probes; no-op when not half-open.
   */
  release(): void {
    if (this.#state === "half") this.#returnProbe();
  }

  /** Opens at once, e.g. when librdkafka reports all brokers down; no-op while already open. */
  trip(reason: string): void {
    if (this.#state === "open") return;
    this.#change("open", reason);
    this.#tripped = true;
  }

  /**
   * Closes the breaker again if the last change was {@link trip}'s: its cause proved false (a broker answered
   * after all were reported down). No-op otherwise: a breaker opened by failures, or changed since, waits for its
   * timer and probes.
   */
  retract(reason: string): void {
    if (this.#tripped && this.#state === "open") this.#change("closed", reason);
  }

  /** Stops the open -> half timer; the breaker keeps its state but schedules nothing any more. */
  close(): void {
    this.#closed = true;
    this.#clearTimer();
  }

  #returnProbe(): void {
    if (this.#probes > 0) this.#probes--;
  }

  #rollInterval(): void {
    if (this.#opts.intervalMs <= 0) return;
    const now = this.#clock.now();
    if (now < this.#intervalEnd) return;
    this.#failures = 0;
    this.#intervalEnd = now + this.#opts.intervalMs;
  }

  #change(to: BreakerState, reason: string): void {
    const from = this.#state;
    this.#state = to;
    this.#tripped = false;
    this.#failures = 0;
    this.#successes = 0;
    this.#probes = 0;
    this.#clearTimer();
    if (to === "closed") this.#intervalEnd = this.#clock.now() + this.#opts.intervalMs;
    if (to === "open" && !this.#closed) {
      this.#timer = this.#clock.setTimeout(() => {
        this.#timer = undefined;
        this.#change("half", `open for ${this.#opts.timeoutMs} ms`);
      }, this.#opts.timeoutMs);
    }
    this.#opts.onChange?.(from, to, reason);
  }

  #clearTimer(): void {
    if (this.#timer === undefined) return;
    this.#clock.clearTimeout(this.#timer);
    this.#timer = undefined;
  }
}
