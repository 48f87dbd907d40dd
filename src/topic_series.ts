/**
 * Which topics get metric series of their own. Any client can name any topic, so without a bound every new name
 * would add series forever (40,000 names once grew `/metrics` from 20 KB to 19 MB). Past `max` topics, the rest
 * share one label value; a topic unused for `idleMs` gives its place back.
 */
import { type Clock, realClock } from "./clock.ts";

/** The label value shared by the topics past the bound. Not a valid Kafka topic name, so it cannot clash. */
export const OTHER_TOPICS = "~other";

/** How a TopicSeries is bounded. */
export interface TopicSeriesOptions {
  /**
   * Topics with series of their own, at most.
   * @default {1000}
   */
  max?: number;
  /**
   * A topic not counted for this long loses its series (its counters restart at 0 if it comes back, which
   * Prometheus' rate() and increase() handle as a reset). Uses are timed by the sweeps: a topic goes between
   * idleMs and idleMs plus the time between two sweeps after its last use.
   * @default {600000}
   */
  idleMs?: number;
  /** @default {realClock} */
  clock?: Clock;
}

/** The time of a topic used since the last sweep: that sweep's time, once it comes. */
const USED = Infinity;

/**
 * The topic label values in use, each with the time of the sweep that last found it used. A use reads no clock,
 * and the use of the topic used last before it costs one string comparison: this runs for every message.
 * @example
 * const series = new TopicSeries({ max: 2 });
 * series.label("a"); series.label("b"); // "a", "b"
 * series.label("c"); // "~other"
 */
export class TopicSeries {
  readonly max: number;
  readonly idleMs: number;
  readonly #clock: Clock;
  readonly #lastUsed = new Map<string, number>();
  /** The topic of the last use, marked USED since the last sweep; undefined after a sweep. */
  #last: string | undefined;

  constructor(opts: TopicSeriesOptions = {}) {
    this.max = opts.max ?? 1000;
    this.idleMs = opts.idleMs ?? 600_000;
    if (!Number.isInteger(this.max) || this.max < 0) {
      throw new RangeError(`TopicSeries: max must be an integer >= 0, got ${this.max}`);
    }
    if (!(this.idleMs > 0)) throw new RangeError(`TopicSeries: idleMs must be positive, got ${this.idleMs}`);
    this.#clock = opts.clock ?? realClock;
  }

  /**
   * The label value to count `topic` under: the topic itself while there is room, else OTHER_TOPICS. A topic used
   * again gets the string object of its first use since the sweep, so that maps keyed by labels find it by a
   * hash already computed.
   */
  label(topic: string): string {
    if (topic === this.#last) return this.#last;
    const at = this.#lastUsed.get(topic);
    if (at === undefined && this.#lastUsed.size >= this.max) return OTHER_TOPICS;
    if (at !== USED) this.#lastUsed.set(topic, USED);
    this.#last = topic;
    return topic;
  }

  /** Whether `topic` has series of its own now (read-only: it does not count as a use). */
  has(topic: string): boolean {
    return this.#lastUsed.has(topic);
  }

  /** Topics with series of their own. */
  get size(): number {
    return this.#lastUsed.size;
  }

  /**
   * Stamps the topics used since the last sweep with the time now, then forgets those idle for `idleMs` and
   * returns them, so their series can be removed.
   */
  sweep(): string[] {
    const now = this.#clock.now();
    const cutoff = now - this.idleMs;
    const idle: string[] = [];
    for (const [topic, at] of this.#lastUsed) {
      if (at === USED) this.#lastUsed.set(topic, now);
      else if (at <= cutoff) idle.push(topic);
    }
    for (const topic of idle) this.#lastUsed.delete(topic);
    this.#last = undefined;
    return idle;
  }
}
