/**
 * The WAL logic shared by the file and in-memory variants: ids, segments and their roll, the size bound, group
 * commit, acks, checkout/release, deletion of fully acked segments, records held in memory while writes fail, and
 * the WAL metrics.
 */
import { log, logRepeated } from "../log.ts";
import * as metrics from "../metrics.ts";
import type { Message } from "../message.ts";
import { CommitBatch, type LineGroup } from "./commit_batch.ts";
import { decodeRecordLine, encodeRecordLine } from "./record_line.ts";
import { ACKED, CHECKED_OUT, PENDING, type RecordState, SegmentIndex, segmentName } from "./segment_index.ts";
import type { Recovered, SegmentStorage } from "./storage.ts";
import {
  type AppendedMany,
  type AppendOptions,
  type Wal,
  WalFullError,
  type WalRecord,
  type WalStats,
} from "./types.ts";

/** Records of a checkout that are next to each other in a segment are read together across gaps up to this. */
const READ_GAP_BYTES = 64 * 1024;
const GAUGE_INTERVAL_MS = 1000;
const RETRY_MIN_MS = 500;
const RETRY_MAX_MS = 5000;
/** Names taken by files the WAL did not create, skipped in a row before a fresh segment counts as failed. */
const MAX_TAKEN_NAMES = 64;

/** Sizes and timing of a SegmentedWal. */
export interface SegmentedWalOptions {
  maxBytes: number;
  segmentBytes: number;
  commitDelayMs: number;
  /** After a failed write, the first wait before records held in memory are written again (default 500 ms)... */
  retryMinMs?: number;
  /** ...doubled after each failed retry up to this (default 5 s). */
  retryMaxMs?: number;
}

interface Pick {
  segment: SegmentIndex;
  index: number;
}

/**
 * A WAL over any SegmentStorage.
 *
 * When a write fails, the segment is not written again (its file is cut back to the lines known good before anything
 * new is written), and every line not written yet stays in memory, in the "held" index, keeping its id: records
 * already answered (ack=none) must not be lost because of the disk. Appends go on in memory (counted against the
 * bound; their `durable` rejects), checkout hands held records out for Kafka, and a timer retries with backoff to
 * write everything held into fresh segments, in id order, so that recovery still sees ids increase with the
 * segment sequence.
 */
export class SegmentedWal implements Wal {
  readonly #storage: SegmentStorage;
  readonly #maxBytes: number;
  readonly #segmentBytes: number;
  readonly #commitDelayMs: number;
  /** Oldest first; base ids increase. */
  readonly #segments: SegmentIndex[];
  #active: SegmentIndex | null = null;
  #nextSeq: number;
  #nextId: number;
  #bytes = 0;
  #live = 0;
  #checkedOut = 0;
  #corrupt: number;
  #batch = new CommitBatch();
  #scheduled = false;
  #timer: ReturnType<typeof setTimeout> | undefined;
  #running: Promise<void> | null = null;
  /** Groups on disk whose appenders are told once the next commit's fdatasync is under way (see #writeGroup). */
  #durable: LineGroup[] = [];
  /** No more appends or checkouts. */
  #closed = false;
  /** Files released: acks are ignored. */
  #finished = false;
  #closing: Promise<void> | null = null;
  readonly #gaugeTimer: ReturnType<typeof setInterval>;
  /** Records not on disk since a write failed, in id order (all newer than any segment's); null when none. */
  #held: SegmentIndex | null = null;
  /** The held records' lines by index in #held; null once acked. */
  #heldLines: Array<Uint8Array | null> = [];
  /** Bytes of live held records (part of #bytes). */
  #heldBytes = 0;
  /** Why writing stopped; null while writes work. */
  #writeError: string | null = null;
  /** Segments whose last write failed: cut back to their written length before anything new is written. */
  #toCut: SegmentIndex[] = [];
  readonly #retryMinMs: number;
  readonly #retryMaxMs: number;
  #retryDelayMs: number;
  #retryTimer: ReturnType<typeof setTimeout> | undefined;
  /** The commit loop writes the held records before its next batch. */
  #retryDue = false;
  readonly #recoveredTags: ReadonlyMap<string, number>;

  private constructor(storage: SegmentStorage, recovered: Recovered, opts: SegmentedWalOptions) {
    this.#storage = storage;
    this.#maxBytes = opts.maxBytes;
    this.#segmentBytes = opts.segmentBytes;
    this.#commitDelayMs = opts.commitDelayMs;
    this.#segments = recovered.segments;
    this.#nextSeq = recovered.nextSeq;
    this.#nextId = recovered.nextId;
    this.#corrupt = recovered.corrupt;
    this.#recoveredTags = recovered.tags ?? new Map();
    this.#retryMinMs = opts.retryMinMs ?? RETRY_MIN_MS;
    this.#retryMaxMs = Math.max(this.#retryMinMs, opts.retryMaxMs ?? RETRY_MAX_MS);
    this.#retryDelayMs = this.#retryMinMs;
    for (const segment of this.#segments) {
      this.#bytes += segment.bytes;
      this.#live += segment.live;
    }
    this.#gaugeTimer = setInterval(() => this.#updateGauges(), GAUGE_INTERVAL_MS);
    Deno.unrefTimer(this.#gaugeTimer);
  }

  /** Builds the WAL over recovered segments and deletes those that are already fully acked. */
  static async open(
    storage: SegmentStorage,
    recovered: Recovered,
    opts: SegmentedWalOptions,
  ): Promise<SegmentedWal> {
    const wal = new SegmentedWal(storage, recovered, opts);
    if (recovered.unwritable !== undefined) {
      // As after a failed write with nothing held: a probe write that works resumes writing.
      wal.#writeError = recovered.unwritable;
      wal.#scheduleRetry(wal.#retryDelayMs);
    }
    await wal.#sweep();
    metrics.walMaxBytes.set(opts.maxBytes);
    wal.#updateGauges();
    return wal;
  }

  append(msg: Message, opts?: AppendOptions): { id: number; durable: Promise<void> } {
    if (this.#closed) throw new Error("wal: closed");
    const id = this.#nextId;
    const writtenAt = Date.now();
    const line = encodeRecordLine(id, writtenAt, msg);
    const room = this.#maxBytes - (opts?.reservedBytes ?? 0);
    if (this.#bytes + line.length > room) throw this.#fullError(room);
    this.#nextId++;
    const durable = this.#place(id, writtenAt, line, opts?.checkedOut ? CHECKED_OUT : PENDING, msg.topic);
    this.#schedule();
    return { id, durable };
  }

  appendMany(messages: readonly Message[], opts?: AppendOptions): AppendedMany {
    if (this.#closed) throw new Error("wal: closed");
    const writtenAt = Date.now();
    const room = this.#maxBytes - (opts?.reservedBytes ?? 0);
    const ids: Array<number | Error> = new Array(messages.length);
    const lines: Uint8Array[] = new Array(messages.length);
    // Each record is checked against the bound as it stands after the records before it: as appends one by one.
    let bytes = this.#bytes;
    let accepted = 0;
    for (let i = 0; i < messages.length; i++) {
      let line: Uint8Array;
      try {
        line = encodeRecordLine(this.#nextId, writtenAt, messages[i]);
      } catch (err) {
        ids[i] = err as Error;
        continue;
      }
      if (bytes + line.length > room) {
        ids[i] = this.#fullError(room, bytes);
        continue;
      }
      bytes += line.length;
      lines[i] = line;
      ids[i] = this.#nextId++;
      accepted++;
    }
    if (accepted === 0) return { ids, durable: Promise.resolve() };
    const total = bytes - this.#bytes;
    const active = this.#active;
    if (
      this.#writeError === null && active !== null && active.count > 0 &&
      active.bytes + total > this.#segmentBytes && total <= this.#segmentBytes
    ) {
      // A batch that fits one segment gets one of its own rather than being split: one write, one fdatasync.
      this.#roll(ids.find((id) => typeof id === "number") as number);
    }
    const state = opts?.checkedOut ? CHECKED_OUT : PENDING;
    let durable: Promise<void> | null = null;
    let more: Promise<void>[] | null = null;
    for (let i = 0; i < messages.length; i++) {
      const line = lines[i];
      if (line === undefined) continue;
      const group = this.#place(ids[i] as number, writtenAt, line, state, messages[i].topic);
      if (durable === null) durable = group;
      else if (group !== durable && !more?.includes(group)) (more ??= [durable]).push(group);
    }
    this.#schedule();
    if (more !== null) {
      // Only a batch larger than a segment spans more than one group commit.
      durable = Promise.all(more).then(() => {});
      durable.catch(() => {});
    }
    return { ids, durable: durable! };
  }

  /** Counts a new record and puts its line in the commit batch, or in memory while writing is stopped. */
  #place(id: number, writtenAt: number, line: Uint8Array, state: RecordState, topic: string): Promise<void> {
    this.#bytes += line.length;
    this.#live++;
    if (state === CHECKED_OUT) this.#checkedOut++;
    if (this.#writeError !== null) {
      // Writing is stopped: the record waits in memory after the ones whose write failed.
      this.#hold(id, writtenAt, line, state);
      const durable = Promise.reject(new Error(`wal: unavailable: ${this.#writeError}`));
      durable.catch(() => {});
      return durable;
    }
    let segment = this.#active;
    if (segment === null || (segment.count > 0 && segment.bytes + line.length > this.#segmentBytes)) {
      segment = this.#roll(id);
    }
    const index = segment.push(id, writtenAt, 0, line.length, state);
    return this.#batch.addLine(segment, index, line, topic);
  }

  #fullError(room: number, bytes = this.#bytes): WalFullError {
    const held = this.#maxBytes - room;
    return new WalFullError(
      `wal: full (${bytes} of ${this.#maxBytes} bytes${held > 0 ? `, ${held} reserved` : ""})`,
    );
  }

  get writable(): boolean {
    return this.#writeError === null;
  }

  #hold(id: number, writtenAt: number, line: Uint8Array, state: RecordState): void {
    this.#held ??= new SegmentIndex(0, id);
    this.#held.push(id, writtenAt, 0, line.length, state);
    this.#heldLines.push(line);
    this.#heldBytes += line.length;
  }

  #roll(firstId: number): SegmentIndex {
    this.#active?.compact();
    const segment = new SegmentIndex(this.#nextSeq++, firstId);
    this.#segments.push(segment);
    this.#active = segment;
    return segment;
  }

  ack(id: number): void {
    if (this.#finished) return;
    const at = this.#locate(id);
    if (at === null || this.#transition(at.segment, at.index, ACKED) === ACKED) return;
    if (at.segment === this.#held) {
      // Never written: nothing to record on disk, and its memory is free at once.
      const line = this.#heldLines[at.index]!;
      this.#heldLines[at.index] = null;
      this.#heldBytes -= line.length;
      this.#bytes -= line.length;
      return;
    }
    this.#batch.addAck(at.segment, id);
    this.#schedule();
  }

  release(id: number): void {
    const at = this.#locate(id);
    if (at !== null && at.segment.state(at.index) === CHECKED_OUT) {
      this.#transition(at.segment, at.index, PENDING);
    }
  }

  async checkout(max: number): Promise<WalRecord[]> {
    if (this.#closed) throw new Error("wal: closed");
    const ids: number[] = [];
    let unwritten = false;
    const sources = this.#held === null ? this.#segments : [...this.#segments, this.#held];
    for (const segment of sources) {
      if (ids.length >= max) break;
      if (segment.live === segment.checkedOut) continue;
      for (let i = segment.nextPending(0); i >= 0 && ids.length < max; i = segment.nextPending(i + 1)) {
        this.#transition(segment, i, CHECKED_OUT);
        ids.push(segment.id(i));
        if (segment !== this.#held && i >= segment.settled) unwritten = true;
      }
    }
    if (ids.length === 0) return [];
    if (unwritten) await this.#flush(false);
    // Found again by id: a write that failed during the flush moved records into the held index.
    const picks: Pick[] = [];
    const inMemory: WalRecord[] = [];
    for (const id of ids) {
      const at = this.#locate(id);
      if (at === null || at.segment.state(at.index) !== CHECKED_OUT) continue;
      if (at.segment !== this.#held) picks.push(at);
      else {
        const line = this.#heldLines[at.index]!;
        inMemory.push(decodeRecordLine(line, 0, line.length - 1));
      }
    }
    try {
      // Held records are newer than every written one: oldest first still holds.
      const records = [...await this.#read(picks), ...inMemory];
      const topics = new Map<string, number>();
      for (const r of records) topics.set(r.topic, (topics.get(r.topic) ?? 0) + 1);
      for (const [topic, n] of topics) metrics.walReads.inc({ topic: metrics.topicLabel(topic) }, n);
      return records;
    } catch (err) {
      for (const id of ids) this.release(id);
      throw err;
    }
  }

  /** Reads the picked records, a run of neighbours at a time; damaged ones are dropped and counted. */
  async #read(picks: Pick[]): Promise<WalRecord[]> {
    const records: WalRecord[] = [];
    for (let first = 0; first < picks.length;) {
      const { segment } = picks[first];
      const start = segment.offset(picks[first].index);
      let end = start + segment.length(picks[first].index);
      let last = first + 1;
      for (; last < picks.length && picks[last].segment === segment; last++) {
        const offset = segment.offset(picks[last].index);
        if (offset < end || offset - end > READ_GAP_BYTES) break;
        end = offset + segment.length(picks[last].index);
      }
      let data: Uint8Array;
      try {
        data = await this.#storage.read(segment.seq, start, end - start);
      } catch (err) {
        if (!(err instanceof Deno.errors.NotFound)) throw err;
        this.#lost(segment);
        first = last;
        continue;
      }
      for (let p = first; p < last; p++) {
        const i = picks[p].index;
        // Acked meanwhile, or its commit failed: nothing to hand out.
        if (segment.state(i) !== CHECKED_OUT) continue;
        const at = segment.offset(i) - start;
        try {
          records.push(decodeRecordLine(data, at, at + segment.length(i) - 1));
        } catch (err) {
          this.#dropDamaged(segment, i, err);
        }
      }
      first = last;
    }
    return records;
  }

  /**
   * The segment's file was deleted behind the WAL's back: its records cannot be read, ever. They are dropped,
   * counted as damaged and logged once, and the segment takes no more lines, so the WAL goes on (replay does not
   * retry them forever, start-up does not trip on them).
   */
  #lost(segment: SegmentIndex): void {
    let lost = 0;
    for (let i = 0; i < segment.count; i++) {
      if (this.#transition(segment, i, ACKED) !== ACKED) lost++;
    }
    if (segment === this.#active) this.#active = null;
    this.#corrupt += lost;
    metrics.walCorrupt.inc(lost);
    log("error", `wal: segment ${segment.name}: file deleted by something else; ${lost} records lost`, {
      segment: segment.name,
      records: lost,
    });
  }

  #dropDamaged(segment: SegmentIndex, i: number, err: unknown): void {
    const id = segment.id(i);
    log("error", `wal: segment ${segment.name}: ${(err as Error).message} in record ${id}, dropped`, {
      segment: segment.name,
      offset: segment.offset(i),
    });
    this.#corrupt++;
    metrics.walCorrupt.inc();
    segment.corrupt++;
    this.#transition(segment, i, ACKED);
    this.#batch.addAck(segment, id);
    this.#schedule();
  }

  pendingCount(): number {
    return this.#live - this.#checkedOut;
  }

  recoveredTags(): ReadonlyMap<string, number> {
    return this.#recoveredTags;
  }

  stats(): WalStats {
    return {
      records: this.#live,
      bytes: this.#bytes,
      oldestWrittenAt: this.#oldest(),
      corrupt: this.#corrupt,
      unwritten: this.#held?.live ?? 0,
      unwrittenBytes: this.#heldBytes,
    };
  }

  sync(): Promise<void> {
    if (this.#finished) return Promise.resolve();
    return this.#flush(true);
  }

  close(): Promise<void> {
    this.#closing ??= this.#shutdown();
    return this.#closing;
  }

  async #shutdown(): Promise<void> {
    this.#closed = true;
    clearTimeout(this.#retryTimer);
    // One last try for the records held in memory.
    if (this.#writeError !== null) this.#retryDue = true;
    await this.#flush(true);
    // Acks that came in during that commit.
    while (!this.#batch.empty) await this.#flush(true);
    const lost = this.#held?.live ?? 0;
    if (lost > 0) {
      log(
        "error",
        "wal: records held in memory could not be written before the stop and are lost",
        {
          records: lost,
          error: this.#writeError,
        },
      );
      // From here on the WAL counts what the disk has: the held records end with the process.
      this.#live -= lost;
    }
    this.#finished = true;
    await this.#running;
    clearInterval(this.#gaugeTimer);
    clearTimeout(this.#retryTimer);
    try {
      await this.#storage.close();
    } catch (err) {
      // The files are released all the same. The last commit tried this sync too: on a failing disk the same
      // error comes twice, and is told once.
      ackSyncFailed(err);
    }
  }

  #locate(id: number): Pick | null {
    const held = this.#held;
    if (held !== null && id >= held.baseId) {
      const index = held.find(id);
      return index < 0 ? null : { segment: held, index };
    }
    const segments = this.#segments;
    let lo = 0;
    let hi = segments.length - 1;
    while (lo < hi) {
      const mid = (lo + hi + 1) >>> 1;
      if (segments[mid].baseId <= id) lo = mid;
      else hi = mid - 1;
    }
    const segment = segments[lo];
    const index = segment === undefined ? -1 : segment.find(id);
    return index < 0 ? null : { segment, index };
  }

  /** Changes a record's state and keeps the WAL-wide counters in step; returns the previous state. */
  #transition(segment: SegmentIndex, i: number, state: RecordState): RecordState {
    const before = segment.setState(i, state);
    if (before === ACKED || before === state) return before;
    if (state === ACKED) this.#live--;
    if (before === CHECKED_OUT) this.#checkedOut--;
    if (state === CHECKED_OUT) this.#checkedOut++;
    return before;
  }

  #oldest(): number | null {
    for (const segment of this.#segments) {
      const writtenAt = segment.oldestLiveWrittenAt();
      if (writtenAt !== null) return writtenAt;
    }
    return this.#held?.oldestLiveWrittenAt() ?? null;
  }

  /** Resolves once everything gathered so far is committed (and, with syncAcks, the ack lists synced). */
  #flush(syncAcks: boolean): Promise<void> {
    const done = new Promise<void>((resolve) => this.#batch.waiters.push(resolve));
    if (syncAcks) this.#batch.syncAcks = true;
    this.#kick();
    return done;
  }

  /** Starts a commit after the gathering delay, unless one is running (its loop takes the batch next). */
  #schedule(): void {
    if (this.#running || this.#scheduled || this.#finished) return;
    this.#scheduled = true;
    if (this.#commitDelayMs > 0) this.#timer = setTimeout(() => this.#kick(), this.#commitDelayMs);
    // Without a delay, a microtask still gathers every append of the current synchronous run.
    else queueMicrotask(() => this.#kick());
  }

  #kick(): void {
    this.#scheduled = false;
    clearTimeout(this.#timer);
    this.#timer = undefined;
    if (this.#running) return;
    this.#running = this.#commitAll().finally(() => {
      this.#tellDurable();
      this.#running = null;
      if (!this.#batch.empty || this.#retryDue) this.#kick();
    });
  }

  async #commitAll(): Promise<void> {
    while (true) {
      if (this.#retryDue) {
        this.#retryDue = false;
        await this.#writeHeld();
      }
      if (this.#batch.empty) return;
      const batch = this.#batch;
      this.#batch = new CommitBatch();
      await this.#commit(batch);
    }
  }

  /** One group commit: lines (one write and one fdatasync per segment touched), then acks, then deletions. */
  async #commit(batch: CommitBatch): Promise<void> {
    try {
      for (let g = 0; g < batch.groups.length; g++) {
        const err = await this.#writeGroup(batch.groups[g]);
        if (err !== null) {
          // Appends made during this commit wait in the next batch: they are not written either.
          this.#stopWriting([...batch.groups.slice(g), ...this.#batch.takeGroups()], err);
          break;
        }
      }
      for (const [segment, ids] of batch.acks) {
        if (segment.removed) continue;
        try {
          await this.#storage.appendAcks(segment.seq, ids);
        } catch (err) {
          logRepeated(
            "wal: writing acks failed",
            "error",
            "wal: writing acks failed; they may be replayed after a restart",
            {
              segment: segment.name,
              error: err,
            },
          );
        }
      }
      if (batch.ackCount > 0) metrics.walDeletes.inc(batch.ackCount);
      if (batch.syncAcks) {
        try {
          await this.#storage.syncAcks();
        } catch (err) {
          ackSyncFailed(err);
        }
      }
      await this.#sweep();
      this.#updateGauges();
    } catch (err) {
      logRepeated("wal: commit failed", "error", "wal: commit failed", { error: err });
    } finally {
      // Waiters (sync, close, checkout) must never hang, whatever happened above, and hear after the appenders.
      if (batch.waiters.length > 0) this.#tellDurable();
      for (const resolve of batch.waiters) resolve();
    }
  }

  /** Writes one group; returns the error when the write failed (nothing is changed then). */
  async #writeGroup(group: LineGroup): Promise<unknown> {
    const { segment, first, lines } = group;
    try {
      const written = this.#storage.append(segment.seq, concat(lines, group.bytes));
      // This commit's write is made and its fdatasync under way: the appenders of the one before hear now, so that
      // their replies are made while the disk works rather than between two commits.
      this.#tellDurable();
      await written;
    } catch (err) {
      return err ?? new Error("write failed");
    }
    let offset = segment.writtenBytes;
    for (let i = first; i < first + lines.length; i++) {
      segment.setOffset(i, offset);
      offset += segment.length(i);
    }
    segment.writtenBytes = offset;
    segment.settled = first + lines.length;
    for (const [topic, n] of group.topics) metrics.walWrites.inc({ topic: metrics.topicLabel(topic) }, n);
    this.#durable.push(group);
    return null;
  }

  /** Resolves the `durable` promise of the groups written since the last call. */
  #tellDurable(): void {
    if (this.#durable.length === 0) return;
    for (const group of this.#durable) group.done.resolve();
    this.#durable = [];
  }

  /**
   * A write failed: its segment takes no more lines, and the lines of `groups` (the failed one and every later one,
   * in id order) move to the held index. Their appenders hear of the failure; the records stay until acked.
   */
  #stopWriting(groups: LineGroup[], err: unknown): void {
    const failed = groups[0].segment;
    const reason = `wal: segment ${failed.name}: write failed: ${(err as Error).message}`;
    this.#writeError = reason;
    logRepeated(
      "wal: write failed",
      "error",
      `${reason}; records are held in memory until a write succeeds`,
      {
        segment: failed.name,
      },
    );
    if (!this.#toCut.includes(failed)) this.#toCut.push(failed);
    let moved = 0;
    let held = 0;
    for (const group of groups) {
      const { segment, first, lines } = group;
      for (let k = 0; k < lines.length; k++) {
        const i = first + k;
        const state = segment.state(i);
        if (state !== ACKED) {
          this.#hold(segment.id(i), segment.writtenAt(i), lines[k], state);
          held += lines[k].length;
        }
      }
      moved += group.bytes;
      group.done.reject(new Error(reason));
    }
    // The failed segment keeps its written lines; segments rolled after it had none written.
    const at = this.#segments.indexOf(failed);
    for (const segment of this.#segments.splice(at + 1)) segment.removed = true;
    failed.dropFrom(groups[0].first);
    this.#bytes += held - moved;
    this.#active = null;
    this.#scheduleRetry(err instanceof Deno.errors.AlreadyExists ? 0 : this.#retryDelayMs);
    this.#updateGauges();
  }

  #scheduleRetry(delayMs: number): void {
    if (this.#retryTimer !== undefined || this.#closed) return;
    this.#retryTimer = setTimeout(() => {
      this.#retryTimer = undefined;
      this.#retryDue = true;
      this.#kick();
    }, delayMs);
  }

  /**
   * Writes every held record into fresh segments; writing resumes once none is left. With nothing held (every held
   * record acked meanwhile), the storage's probe write stands in for them: only a write that worked resumes
   * writing, lest the WAL be called writable (and the service ready) on a disk that still fails.
   */
  async #writeHeld(): Promise<void> {
    let wrote = false;
    let probed = false;
    try {
      while (this.#toCut.length > 0) {
        const segment = this.#toCut[0];
        // Lines past the written length may have reached the file (a failed fdatasync): they are held now.
        if (!segment.removed) await this.#storage.truncate(segment.seq, segment.writtenBytes);
        this.#toCut.shift();
      }
      // Records appended during the probe are held too: they are written after it.
      while (true) {
        if (this.#held !== null && this.#held.live > 0) {
          await this.#writeHeldSegment(this.#held);
        } else if (wrote) {
          break;
        } else if (this.#closed) {
          // Closing with nothing to write: there is no writing to resume either.
          return;
        } else {
          await this.#storage.probe();
          probed = true;
        }
        wrote = true;
      }
    } catch (err) {
      this.#retryDelayMs = Math.min(this.#retryDelayMs * 2, this.#retryMaxMs);
      const records = this.#held?.live ?? 0;
      logRepeated(
        "wal: writing held records failed",
        "error",
        records > 0 ? "wal: writing the records held in memory failed" : "wal: writing still fails",
        {
          records,
          error: err,
          retry_ms: this.#retryDelayMs,
        },
      );
      this.#updateGauges();
      this.#scheduleRetry(this.#retryDelayMs);
      return;
    }
    const reason = this.#writeError;
    this.#held = null;
    this.#heldLines = [];
    this.#writeError = null;
    this.#retryDelayMs = this.#retryMinMs;
    this.#updateGauges();
    if (reason !== null) {
      log("info", `wal: writing works again${probed ? "" : "; records held in memory are on disk"}`);
    }
  }

  /** Writes the oldest held records, up to a segment's size, as a fresh segment. */
  async #writeHeldSegment(held: SegmentIndex): Promise<void> {
    const picked: number[] = [];
    let bytes = 0;
    let end = 0;
    for (; end < held.count; end++) {
      if (held.state(end) === ACKED) continue;
      if (picked.length > 0 && bytes + held.length(end) > this.#segmentBytes) break;
      picked.push(end);
      bytes += held.length(end);
    }
    const seq = await this.#appendFresh(concat(picked.map((i) => this.#heldLines[i]!), bytes));
    // States are read now: acks and releases may have come in during the write.
    const segment = new SegmentIndex(seq, held.id(picked[0]), picked.length);
    for (const i of picked) {
      const id = held.id(i);
      const length = held.length(i);
      const state = held.state(i);
      segment.push(id, held.writtenAt(i), segment.writtenBytes, length, state);
      segment.writtenBytes += length;
      if (state === ACKED) {
        // Acked during the write: its line is on disk after all, so its ack must be too.
        this.#bytes += length;
        this.#batch.addAck(segment, id);
      } else {
        this.#heldBytes -= length;
      }
    }
    segment.settled = segment.count;
    this.#segments.push(segment);
    this.#active = segment;
    this.#keepHeldFrom(held, end);
  }

  /** Writes `data` as a new segment under a name nobody else took; returns its sequence number. */
  async #appendFresh(data: Uint8Array): Promise<number> {
    for (let taken = 0;; taken++) {
      const seq = this.#nextSeq++;
      try {
        await this.#storage.append(seq, data);
        return seq;
      } catch (err) {
        if (err instanceof Deno.errors.AlreadyExists && taken < MAX_TAKEN_NAMES) {
          logRepeated(
            "wal: segment name taken",
            "warn",
            "wal: a segment name is taken by a file the WAL did not create; skipped",
            {
              segment: segmentName(seq),
            },
          );
          continue;
        }
        // A partly written fresh segment would hold ids that the next attempt writes again.
        await this.#storage.truncate(seq, 0).then(() => this.#storage.remove(seq)).catch(() => {});
        throw err;
      }
    }
  }

  /** The held index keeps its live records from index `from` on. */
  #keepHeldFrom(held: SegmentIndex, from: number): void {
    let rest: SegmentIndex | null = null;
    const lines: Uint8Array[] = [];
    for (let i = from; i < held.count; i++) {
      const state = held.state(i);
      if (state === ACKED) continue;
      rest ??= new SegmentIndex(0, held.id(i));
      rest.push(held.id(i), held.writtenAt(i), 0, held.length(i), state);
      lines.push(this.#heldLines[i]!);
    }
    this.#held = rest;
    this.#heldLines = lines;
  }

  /** Deletes segments whose records are all acked (keeping damaged ones aside); never the active one. */
  async #sweep(): Promise<void> {
    let done = this.#segments.filter((s) => s !== this.#active && s.live === 0 && s.settled === s.count);
    if (done.length === 0) return;
    // Saved even when a later segment holds higher ids: that segment may be unreadable at the next start, and
    // then only next-id says where the ids of the deleted ones, and so its own, begin (recovery.ts).
    try {
      await this.#storage.saveNextId(this.#nextId);
    } catch (err) {
      // A full disk (where next-id cannot be written): a later segment's ids still tell recovery which were used,
      // so these go, freeing room; without one, the newest of them stays to tell it, and the others go.
      if (!this.#idsWitnessed(done)) {
        const keep = done.findLast((s) => s.count > 0);
        done = done.filter((s) => s !== keep);
      }
      logRepeated(
        "wal: saving the next id failed",
        "error",
        "wal: saving the next id failed; the newest fully acked segment is kept for now unless a later one holds higher ids",
        {
          error: err,
        },
      );
    }
    for (const segment of done) {
      segment.removed = true;
      this.#segments.splice(this.#segments.indexOf(segment), 1);
      this.#bytes -= segment.bytes;
      try {
        if (segment.corrupt > 0) await this.#storage.quarantine(segment.seq);
        else await this.#storage.remove(segment.seq);
      } catch (err) {
        logRepeated(
          "wal: removing a segment failed",
          "error",
          `wal: segment ${segment.name}: removing failed`,
          {
            error: err,
          },
        );
      }
    }
  }

  /**
   * Whether a segment that stays holds a written line with an id above every id of `done`: recovery then finds
   * ids beyond them without `next-id`, so they may go when it cannot be saved (a full disk), where segments
   * could otherwise never be deleted to free room.
   */
  #idsWitnessed(done: SegmentIndex[]): boolean {
    const highest = Math.max(...done.map((s) => s.lastId()));
    return this.#segments.some((s) => !done.includes(s) && s.settled > 0 && s.id(s.settled - 1) > highest);
  }

  #updateGauges(): void {
    metrics.walMessages.set(this.#live);
    metrics.walBytes.set(this.#bytes);
    const oldest = this.#oldest();
    metrics.walOldestAge.set(oldest === null ? 0 : Math.max(0, (Date.now() - oldest) / 1000));
    metrics.walUnwrittenRecords.set(this.#held?.live ?? 0);
    metrics.walUnwrittenBytes.set(this.#heldBytes);
    metrics.walWriteFailing.set(this.#writeError === null ? 0 : 1);
    metrics.walWriteQueue.set(this.#batch.lineCount);
    metrics.walDeleteQueue.set(this.#batch.ackCount);
  }
}

/** Ack lists not made durable: delivered records may be replayed after a restart, never lost. */
function ackSyncFailed(err: unknown): void {
  logRepeated(
    "wal: syncing acks failed",
    "error",
    "wal: syncing acks failed; they may be replayed after a restart",
    { error: err },
  );
}

/** The lines as one buffer: no copy when they follow one another in one buffer (see encodeRecordLine). */
function concat(lines: Uint8Array[], bytes: number): Uint8Array {
  if (lines.length === 1) return lines[0];
  const { buffer, byteOffset } = lines[0];
  let next = byteOffset;
  for (let i = 0; i < lines.length && lines[i].buffer === buffer && lines[i].byteOffset === next; i++) {
    next += lines[i].length;
  }
  if (next - byteOffset === bytes) return new Uint8Array(buffer, byteOffset, bytes);
  const data = new Uint8Array(bytes);
  for (let i = 0, at = 0; i < lines.length; at += lines[i].length, i++) data.set(lines[i], at);
  return data;
}
