/**
 * The bytes of Produce records read and not yet answered, across every stream of a gRPC listener
 * (`server.grpc.max_inflight_bytes`). A stream that takes a record past the bound stops reading, so its client
 * waits on HTTP/2 flow control, until half of the bound is free again. Each stream has its own bound in records
 * (MAX_IN_FLIGHT), but many streams and connections of large records, sent faster than Kafka and the WAL take
 * them, would otherwise hold gigabytes at once.
 *
 * @example
 * const budget = new RecordBudget(32 * 1024 * 1024);
 * if (budget.take(record.byteLength)) {
 *   call.pauseReading();
 *   budget.whenHalfFree(() => call.resumeReading());
 * }
 * // once the record is answered:
 * budget.give(record.byteLength);
 */
export class RecordBudget {
  readonly max: number;
  #used = 0;
  readonly #waiting = new Set<() => void>();

  /** `max`: the bound in bytes, at least 1. */
  constructor(max: number) {
    if (!Number.isSafeInteger(max) || max < 1) {
      throw new RangeError(
        `grpc: the in-flight bytes bound must be a whole number of at least 1, got ${max}`,
      );
    }
    this.max = max;
  }

  /** Bytes of records read and not yet answered. */
  get used(): number {
    return this.#used;
  }

  /** Counts `bytes` of a record just read; true when that puts the bytes in flight past the bound. */
  take(bytes: number): boolean {
    this.#used += bytes;
    return this.#used > this.max;
  }

  /** Gives back the bytes of answered records; at half the bound or less, every waiting stream is called back. */
  give(bytes: number): void {
    this.#used -= bytes;
    if (this.#waiting.size === 0 || this.#used > this.max / 2) return;
    const waiting = [...this.#waiting];
    this.#waiting.clear();
    for (const resume of waiting) resume();
  }

  /** Calls `resume` once, when the bytes in flight fall to half the bound (at once if they are there). */
  whenHalfFree(resume: () => void): void {
    if (this.#used <= this.max / 2) resume();
    else this.#waiting.add(resume);
  }

  /** Forgets a `resume` given to whenHalfFree (its stream ended). */
  forget(resume: () => void): void {
    this.#waiting.delete(resume);
  }
}
