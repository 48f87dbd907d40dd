/** Where segment bytes live: files on disk, or memory. The WAL logic above it is the same for both. */
import type { SegmentIndex } from "./segment_index.ts";

/** What a storage found when it was opened. */
export interface Recovered {
  /** Segments still holding records, oldest first, with the acks already applied. */
  segments: SegmentIndex[];
  /** The next segment sequence number to use. */
  nextSeq: number;
  /** The lowest id that may be handed out. */
  nextId: number;
  /** Damaged lines skipped. */
  corrupt: number;
  /** When recovery was given a tag function: the records not acknowledged, counted per tag. */
  tags?: Map<string, number>;
  /**
   * Why writing cannot start (the disk was full at the probe write): the WAL then opens with writing stopped, as
   * after a failed write, and resumes once a probe write works.
   */
  unwritable?: string;
}

/** Segment bytes and ack lists, addressed by segment sequence number. */
export interface SegmentStorage {
  /**
   * Appends whole lines to a segment and makes them durable (fdatasync on disk). The first append creates the
   * segment and throws Deno.errors.AlreadyExists if the name is taken (never following a symlink).
   */
  append(seq: number, data: Uint8Array): Promise<void>;
  /**
   * Cuts a segment back to `size` bytes after a failed append, durably (fdatasync on disk): its cut lines are
   * written again in another segment. Nothing to do for one this run never created.
   */
  truncate(seq: number, size: number): Promise<void>;
  /** Reads `length` bytes at `offset`. */
  read(seq: number, offset: number, length: number): Promise<Uint8Array>;
  /** Appends acknowledged ids to the segment's ack list (not synced: see `syncAcks`). */
  appendAcks(seq: number, ids: number[]): Promise<void>;
  /** Makes every ack list written so far durable. */
  syncAcks(): Promise<void>;
  /**
   * Proves that a durable write works now (on disk: a small file in the directory is created, written,
   * fdatasynced and removed); throws what the write threw. For when writes failed and nothing is left to write.
   */
  probe(): Promise<void>;
  /** Deletes a segment and its ack list. */
  remove(seq: number): Promise<void>;
  /** Keeps a segment with damaged lines for inspection, out of the WAL's way; deletes its ack list. */
  quarantine(seq: number): Promise<void>;
  /** Records that ids below `nextId` are used, before segments holding them are deleted. */
  saveNextId(nextId: number): Promise<void>;
  /**
   * Makes every ack list durable (as `syncAcks`) and releases the files. They are released even when the sync
   * fails; its error is thrown then.
   */
  close(): Promise<void>;
}
