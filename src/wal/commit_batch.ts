/** What one group commit writes: new lines per segment, acked ids per segment, and who waits for it. */
import type { SegmentIndex } from "./segment_index.ts";

/** Consecutive new lines of one segment, with the promise their appenders hold. */
export interface LineGroup {
  segment: SegmentIndex;
  /** Index in the segment of the first line. */
  first: number;
  lines: Uint8Array[];
  bytes: number;
  /** Lines per topic, for wal_writes. */
  topics: Map<string, number>;
  done: PromiseWithResolvers<void>;
}

/** Everything gathered between two commits. Appends during a commit go to the next batch. */
export class CommitBatch {
  /** In append order; more than one only when the active segment rolled. */
  readonly groups: LineGroup[] = [];
  readonly acks = new Map<SegmentIndex, number[]>();
  /** Called once the batch is committed, whatever the outcome. */
  readonly waiters: Array<() => void> = [];
  ackCount = 0;
  /** Also fdatasync the ack lists. */
  syncAcks = false;

  /** New lines in the batch (for the wal_write_batch_ch_len gauge). */
  get lineCount(): number {
    let count = 0;
    for (const group of this.groups) count += group.lines.length;
    return count;
  }

  get empty(): boolean {
    return this.groups.length === 0 && this.acks.size === 0 && this.waiters.length === 0 && !this.syncAcks;
  }

  /** Adds the line of record `index` of `segment`; returns the promise of its group. */
  addLine(segment: SegmentIndex, index: number, line: Uint8Array, topic: string): Promise<void> {
    let group = this.groups[this.groups.length - 1];
    if (group === undefined || group.segment !== segment) {
      const done = Promise.withResolvers<void>();
      // Appenders that do not wait (ack=none) must not turn a failed write into an unhandled rejection.
      done.promise.catch(() => {});
      group = { segment, first: index, lines: [], bytes: 0, topics: new Map(), done };
      this.groups.push(group);
    }
    group.lines.push(line);
    group.bytes += line.length;
    group.topics.set(topic, (group.topics.get(topic) ?? 0) + 1);
    return group.done.promise;
  }

  /** Removes the line groups and returns them (a failed write moves them to memory). */
  takeGroups(): LineGroup[] {
    return this.groups.splice(0);
  }

  addAck(segment: SegmentIndex, id: number): void {
    const ids = this.acks.get(segment);
    if (ids) ids.push(id);
    else this.acks.set(segment, [id]);
    this.ackCount++;
  }
}
