/**
 * The WAL logic shared by the file and in-memory variants: ids, segments and their roll, the size bound, group
 * commit, acks, checkout/release, deletion of fully acked segments and the WAL metrics.
 */
import { log } from "../log.ts";
import * as metrics from "../metrics.ts";
import type { Message } from "../producer/types.ts";
import { CommitBatch, type LineGroup } from "./commit_batch.ts";
import { decodeRecordLine, encodeRecordLine } from "./record_line.ts";
import { ACKED, CHECKED_OUT, PENDING, type RecordState, SegmentIndex } from "./segment_index.ts";
import type { Recovered, SegmentStorage } from "./storage.ts";
import { type Wal, WalFullError, type WalRecord, type WalStats } from "./types.ts";

/** Records of a checkout that are next to each other in a segment are read together across gaps up to this. */
const READ_GAP_BYTES = 64 * 1024;
const GAUGE_INTERVAL_MS = 1000;

/** Sizes and timing of a SegmentedWal. */
export interface SegmentedWalOptions {
  maxBytes: number;
  segmentBytes: number;
  commitDelayMs: number;
}

interface Pick {
  segment: SegmentIndex;
  index: number;
}

/** A WAL over any SegmentStorage. */
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
  /** No more appends or checkouts. */
  #closed = false;
  /** Files released: acks are ignored. */
  #finished = false;
  #closing: Promise<void> | null = null;
  readonly #gaugeTimer: ReturnType<typeof setInterval>;

  private constructor(storage: SegmentStorage, recovered: Recovered, opts: SegmentedWalOptions) {
    this.#storage = storage;
    this.#maxBytes = opts.maxBytes;
    this.#segmentBytes = opts.segmentBytes;
    this.#commitDelayMs = opts.commitDelayMs;
    this.#segments = recovered.segments;
    this.#nextSeq = recovered.nextSeq;
    this.#nextId = recovered.nextId;
    this.#corrupt = recovered.corrupt;
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
    await wal.#sweep();
    wal.#updateGauges();
    return wal;
  }

  append(msg: Message, opts?: { checkedOut?: boolean }): { id: number; durable: Promise<void> } {
    if (this.#closed) throw new Error("wal: closed");
    const id = this.#nextId;
    const writtenAt = Date.now();
    const line = encodeRecordLine(id, writtenAt, msg);
    if (this.#bytes + line.length > this.#maxBytes) {
      throw new WalFullError(`wal: full (${this.#bytes} of ${this.#maxBytes} bytes)`);
    }
    this.#nextId++;
    let segment = this.#active;
    if (
      segment === null || segment.broken ||
      (segment.count > 0 && segment.bytes + line.length > this.#segmentBytes)
    ) {
      segment = this.#roll(id);
    }
    const state = opts?.checkedOut ? CHECKED_OUT : PENDING;
    const index = segment.push(id, writtenAt, 0, line.length, state);
    this.#bytes += line.length;
    this.#live++;
    if (state === CHECKED_OUT) this.#checkedOut++;
    const durable = this.#batch.addLine(segment, index, line, msg.topic);
    this.#schedule();
    return { id, durable };
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
    const picks: Pick[] = [];
    let unwritten = false;
    for (const segment of this.#segments) {
      if (picks.length >= max) break;
      if (segment.live === segment.checkedOut) continue;
      for (let i = segment.nextPending(0); i >= 0 && picks.length < max; i = segment.nextPending(i + 1)) {
        this.#transition(segment, i, CHECKED_OUT);
        picks.push({ segment, index: i });
        if (i >= segment.settled) unwritten = true;
      }
    }
    if (picks.length === 0) return [];
    if (unwritten) await this.#flush(false);
    try {
      const records = await this.#read(picks);
      const topics = new Map<string, number>();
      for (const r of records) topics.set(r.topic, (topics.get(r.topic) ?? 0) + 1);
      for (const [topic, n] of topics) metrics.walReads.inc({ topic }, n);
      return records;
    } catch (err) {
      for (const p of picks) {
        if (p.segment.state(p.index) === CHECKED_OUT) this.#transition(p.segment, p.index, PENDING);
      }
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
      const data = await this.#storage.read(segment.seq, start, end - start);
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

  stats(): WalStats {
    return {
      records: this.#live,
      bytes: this.#bytes,
      oldestWrittenAt: this.#oldest(),
      corrupt: this.#corrupt,
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
    await this.#flush(true);
    // Acks that came in during that commit.
    while (!this.#batch.empty) await this.#flush(true);
    this.#finished = true;
    await this.#running;
    clearInterval(this.#gaugeTimer);
    await this.#storage.close();
  }

  #locate(id: number): Pick | null {
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
    return null;
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
      this.#running = null;
      if (!this.#batch.empty) this.#kick();
    });
  }

  async #commitAll(): Promise<void> {
    while (!this.#batch.empty) {
      const batch = this.#batch;
      this.#batch = new CommitBatch();
      await this.#commit(batch);
    }
  }

  /** One group commit: lines (one write and one fdatasync per segment touched), then acks, then deletions. */
  async #commit(batch: CommitBatch): Promise<void> {
    try {
      for (const group of batch.groups) await this.#writeGroup(group);
      for (const [segment, ids] of batch.acks) {
        if (segment.removed) continue;
        try {
          await this.#storage.appendAcks(segment.seq, ids);
        } catch (err) {
          log(
            "error",
            `wal: segment ${segment.name}: writing acks failed; they may be replayed after a restart`,
            {
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
          log("error", "wal: syncing acks failed; they may be replayed after a restart", { error: err });
        }
      }
      await this.#sweep();
      this.#updateGauges();
    } catch (err) {
      log("error", "wal: commit failed", { error: err });
    } finally {
      // Waiters (sync, close, checkout) must never hang, whatever happened above.
      for (const resolve of batch.waiters) resolve();
    }
  }

  async #writeGroup(group: LineGroup): Promise<void> {
    const { segment, first, lines } = group;
    if (segment.broken) return this.#failGroup(group, new Error("an earlier write failed"));
    let data = lines[0];
    if (lines.length > 1) {
      data = new Uint8Array(group.bytes);
      for (let i = 0, at = 0; i < lines.length; at += lines[i].length, i++) data.set(lines[i], at);
    }
    try {
      await this.#storage.append(segment.seq, data);
    } catch (err) {
      try {
        await this.#storage.truncate(segment.seq, segment.writtenBytes);
      } catch {
        segment.broken = true;
      }
      return this.#failGroup(group, err);
    }
    let offset = segment.writtenBytes;
    for (let i = first; i < first + lines.length; i++) {
      segment.setOffset(i, offset);
      offset += segment.length(i);
    }
    segment.writtenBytes = offset;
    segment.settled = first + lines.length;
    for (const [topic, n] of group.topics) metrics.walWrites.inc({ topic }, n);
    group.done.resolve();
  }

  /** The group's records are not stored: they leave the WAL and their appenders get the error. */
  #failGroup(group: LineGroup, err: unknown): void {
    const { segment, first, lines } = group;
    const reason = `wal: segment ${segment.name}: write failed: ${(err as Error).message}`;
    log("error", reason, { segment: segment.name, records: lines.length });
    for (let i = first; i < first + lines.length; i++) this.#transition(segment, i, ACKED);
    segment.settled = first + lines.length;
    if (!segment.broken) {
      // The file was cut back: the space is free again. A broken file keeps counting, as the bytes may be there.
      segment.bytes -= group.bytes;
      this.#bytes -= group.bytes;
    }
    group.done.reject(new Error(reason));
  }

  /** Deletes segments whose records are all acked (keeping damaged ones aside); never the active one. */
  async #sweep(): Promise<void> {
    const done = this.#segments.filter((s) => s !== this.#active && s.live === 0 && s.settled === s.count);
    if (done.length === 0) return;
    try {
      await this.#storage.saveNextId(this.#nextId);
    } catch (err) {
      log("error", "wal: saving the next id failed; fully acked segments are kept for now", { error: err });
      return;
    }
    for (const segment of done) {
      segment.removed = true;
      this.#segments.splice(this.#segments.indexOf(segment), 1);
      this.#bytes -= segment.bytes;
      try {
        if (segment.corrupt > 0) await this.#storage.quarantine(segment.seq);
        else await this.#storage.remove(segment.seq);
      } catch (err) {
        log("error", `wal: segment ${segment.name}: removing failed`, { error: err });
      }
    }
  }

  #updateGauges(): void {
    metrics.walMessages.set(this.#live);
    metrics.walBytes.set(this.#bytes);
    const oldest = this.#oldest();
    metrics.walOldestAge.set(oldest === null ? 0 : Math.max(0, (Date.now() - oldest) / 1000));
  }
}
