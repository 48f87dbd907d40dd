/**
 * Batch bodies read a few at a time. When many batches are let in at once (64 clients whose batches waited for
 * room in librdkafka's queue), their bodies are read in turns, chunk by chunk: each body, its growing buffers and
 * then its records live for the tens of milliseconds the others take, outlive V8's young-generation collections and
 * are kept until the next full one. Read a few at a time, a batch is read, parsed and handed over within a
 * millisecond or two, and the batches after it stay in their sockets, unread, until a slot is free. Measured
 * with 64 clients of 1,000-record batches: peak RSS 216 to 223 MB with 4 slots against 326 to 351 MB without,
 * at a higher rate (bench/README.md).
 *
 * A slot is held from entry until the records are handed over. A client whose body is slow to arrive must not
 * keep the others waiting: its slot is given up `leaseMs` after its read began, and it goes on reading without one.
 * @module
 */

import { type Clock, realClock } from "../clock.ts";

/** Options of ReadSlots. */
export interface ReadSlotsOptions {
  /**
   * Batches read at once.
   * @default 4
   */
  slots?: number;
  /**
   * How long a batch may hold its slot once its body read began, in ms; past it the slot goes to the next batch.
   * @default 100
   */
  leaseMs?: number;
  clock?: Clock;
}

/** One batch's place among the ones being read; release() is idempotent. */
export class ReadSlot {
  #free: (() => void) | null;
  #timer: number | undefined;
  readonly #leaseMs: number;
  readonly #clock: Clock;

  /** `free` passes the slot on; ReadSlots makes slots, callers only enter. */
  constructor(free: () => void, leaseMs: number, clock: Clock) {
    this.#free = free;
    this.#leaseMs = leaseMs;
    this.#clock = clock;
  }

  /** The body read begins: the slot is given up `leaseMs` later, if still held then. */
  startLease(): void {
    if (this.#free === null || this.#timer !== undefined) return;
    this.#timer = this.#clock.setTimeout(() => {
      this.#timer = undefined;
      this.release();
    }, this.#leaseMs);
  }

  /** Gives the slot to the next batch waiting, if any. */
  release(): void {
    const free = this.#free;
    if (free === null) return;
    this.#free = null;
    if (this.#timer !== undefined) this.#clock.clearTimeout(this.#timer);
    this.#timer = undefined;
    free();
  }
}

/**
 * At most `slots` batches between entry and hand-over; the others wait in arrival order.
 * @example
 * const slots = new ReadSlots({ slots: 4 });
 * const slot = await slots.enter();
 * try {
 *   slot.startLease();
 *   handOver(parse(await readBody()));
 * } finally {
 *   slot.release();
 * }
 */
export class ReadSlots {
  readonly #slots: number;
  readonly #leaseMs: number;
  readonly #clock: Clock;
  #taken = 0;
  readonly #waiting: Array<(slot: ReadSlot) => void> = [];

  constructor(opts: ReadSlotsOptions = {}) {
    const slots = opts.slots ?? 4;
    const leaseMs = opts.leaseMs ?? 100;
    if (!Number.isInteger(slots) || slots < 1) {
      throw new RangeError(`read slots: slots must be at least 1, got ${slots}`);
    }
    if (!(leaseMs > 0)) throw new RangeError(`read slots: leaseMs must be positive, got ${leaseMs}`);
    this.#slots = slots;
    this.#leaseMs = leaseMs;
    this.#clock = opts.clock ?? realClock;
  }

  /** Slots held now. */
  get taken(): number {
    return this.#taken;
  }

  /** Batches waiting for a slot. */
  get waiting(): number {
    return this.#waiting.length;
  }

  /** A slot: at once (not a promise) when one is free, else once one is. */
  enter(): ReadSlot | Promise<ReadSlot> {
    if (this.#taken < this.#slots) {
      this.#taken++;
      return this.#slot();
    }
    return new Promise((resolve) => this.#waiting.push(resolve));
  }

  #slot(): ReadSlot {
    return new ReadSlot(this.#pass, this.#leaseMs, this.#clock);
  }

  /** A slot was released: it passes to the first waiting batch, or is free again. */
  readonly #pass = (): void => {
    const next = this.#waiting.shift();
    if (next === undefined) this.#taken--;
    else next(this.#slot());
  };
}
