/**
 * The in-memory index of one segment: per record its id, line offset and length, append time and state, in typed
 * arrays (21 bytes a record), so millions of records fit without their payloads.
 */

/** Waiting for replay. */
export const PENDING = 0;
/** Handed out (to replay or a direct send) and not yet acked or released. */
export const CHECKED_OUT = 1;
/** Delivered, dropped, or retracted by its appender: never handed out again. */
export const ACKED = 2;

export type RecordState = typeof PENDING | typeof CHECKED_OUT | typeof ACKED;

const INITIAL_CAPACITY = 1024;

/** Zero-padded file name stem of a segment. @example segmentName(42) === "00000042" */
export function segmentName(seq: number): string {
  return String(seq).padStart(8, "0");
}

/** Records of one segment, in id order. Ids are stored relative to `baseId`. */
export class SegmentIndex {
  readonly seq: number;
  readonly name: string;
  readonly baseId: number;
  /** Records indexed (including acked ones). */
  count = 0;
  /** Bytes of all indexed lines, written or still in the commit batch. */
  bytes = 0;
  /** Records whose commit has finished: no line of this segment before this index is waiting to be written. */
  settled = 0;
  /** Bytes known to be in the segment's file. */
  writtenBytes = 0;
  /** Records not acked. */
  live = 0;
  /** Records checked out. */
  checkedOut = 0;
  /** Damaged lines skipped at recovery: such a segment is kept for inspection instead of deleted. */
  corrupt = 0;
  /** Deleted (or set aside): acks that arrive late are not written for it. */
  removed = false;
  #ids: Uint32Array;
  #offsets: Uint32Array;
  #lengths: Uint32Array;
  #writtenAt: Float64Array;
  #states: Uint8Array;
  /** No PENDING record before this index. */
  #firstPending = 0;
  /** No live record before this index. */
  #firstLive = 0;

  constructor(seq: number, baseId: number, capacity = INITIAL_CAPACITY) {
    this.seq = seq;
    this.name = segmentName(seq);
    this.baseId = baseId;
    this.#ids = new Uint32Array(capacity);
    this.#offsets = new Uint32Array(capacity);
    this.#lengths = new Uint32Array(capacity);
    this.#writtenAt = new Float64Array(capacity);
    this.#states = new Uint8Array(capacity);
  }

  /** Adds a record (ids must increase) and returns its index. `length` includes the newline. */
  push(id: number, writtenAt: number, offset: number, length: number, state: RecordState): number {
    if (this.count === this.#ids.length) this.#resize(this.count * 2);
    const i = this.count++;
    this.#ids[i] = id - this.baseId;
    this.#offsets[i] = offset;
    this.#lengths[i] = length;
    this.#writtenAt[i] = writtenAt;
    this.#states[i] = state;
    this.bytes += length;
    if (state !== ACKED) this.live++;
    if (state === CHECKED_OUT) this.checkedOut++;
    return i;
  }

  /** Forgets the records from index `from` on: their lines never reached this segment's file. */
  dropFrom(from: number): void {
    for (let i = from; i < this.count; i++) {
      this.bytes -= this.#lengths[i];
      if (this.#states[i] !== ACKED) this.live--;
      if (this.#states[i] === CHECKED_OUT) this.checkedOut--;
    }
    this.count = Math.min(this.count, from);
    this.settled = Math.min(this.settled, this.count);
    this.#firstPending = Math.min(this.#firstPending, this.count);
    this.#firstLive = Math.min(this.#firstLive, this.count);
  }

  /** Drops the spare capacity once the segment takes no more records. */
  compact(): void {
    if (this.count < this.#ids.length) this.#resize(this.count);
  }

  #resize(capacity: number): void {
    const grow = <T extends Uint32Array | Float64Array | Uint8Array>(a: T, make: (n: number) => T): T => {
      const b = make(capacity);
      b.set(a.subarray(0, this.count));
      return b;
    };
    this.#ids = grow(this.#ids, (n) => new Uint32Array(n));
    this.#offsets = grow(this.#offsets, (n) => new Uint32Array(n));
    this.#lengths = grow(this.#lengths, (n) => new Uint32Array(n));
    this.#writtenAt = grow(this.#writtenAt, (n) => new Float64Array(n));
    this.#states = grow(this.#states, (n) => new Uint8Array(n));
  }

  id(i: number): number {
    return this.baseId + this.#ids[i];
  }

  lastId(): number {
    return this.count === 0 ? this.baseId - 1 : this.id(this.count - 1);
  }

  writtenAt(i: number): number {
    return this.#writtenAt[i];
  }

  offset(i: number): number {
    return this.#offsets[i];
  }

  setOffset(i: number, offset: number): void {
    this.#offsets[i] = offset;
  }

  length(i: number): number {
    return this.#lengths[i];
  }

  state(i: number): RecordState {
    return this.#states[i] as RecordState;
  }

  /** The index of `id`, or -1. */
  find(id: number): number {
    const delta = id - this.baseId;
    if (delta < 0 || this.count === 0 || delta > this.#ids[this.count - 1]) return -1;
    // Ids in a segment are contiguous unless recovery skipped lines, so the direct guess almost always hits.
    if (delta < this.count && this.#ids[delta] === delta) return delta;
    let lo = 0;
    let hi = this.count - 1;
    while (lo <= hi) {
      const mid = (lo + hi) >>> 1;
      const v = this.#ids[mid];
      if (v === delta) return mid;
      if (v < delta) lo = mid + 1;
      else hi = mid - 1;
    }
    return -1;
  }

  /** Moves record `i` to `state`, keeping the counters; ACKED is final. Returns the previous state. */
  setState(i: number, state: RecordState): RecordState {
    const before = this.#states[i] as RecordState;
    if (before === state || before === ACKED) return before;
    this.#states[i] = state;
    if (state === ACKED) this.live--;
    if (before === CHECKED_OUT) this.checkedOut--;
    if (state === CHECKED_OUT) this.checkedOut++;
    if (state === PENDING && i < this.#firstPending) this.#firstPending = i;
    return before;
  }

  /** Index of the first PENDING record at or after the last one found, or -1. */
  nextPending(from: number): number {
    if (from <= this.#firstPending) {
      while (this.#firstPending < this.count && this.#states[this.#firstPending] !== PENDING) {
        this.#firstPending++;
      }
      from = this.#firstPending;
    }
    for (let i = from; i < this.count; i++) if (this.#states[i] === PENDING) return i;
    return -1;
  }

  /** writtenAt of the oldest live record, or null. */
  oldestLiveWrittenAt(): number | null {
    if (this.live === 0) return null;
    while (this.#states[this.#firstLive] === ACKED) this.#firstLive++;
    return this.#writtenAt[this.#firstLive];
  }
}
