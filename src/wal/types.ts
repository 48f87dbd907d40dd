/** The WAL contract shared by the producer facade, replay and both WAL variants (file and in-memory). */
import type { Message } from "../message.ts";
import type { WalFs } from "./fs.ts";

/** One record as replay gets it back: the message plus its WAL id and the time it was appended. */
export interface WalRecord extends Message {
  id: number;
  /** Milliseconds since the epoch. */
  writtenAt: number;
}

/** Thrown by `append` when the record would take the WAL past its size bound. */
export class WalFullError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "WalFullError";
  }
}

/** How a WAL is opened. */
export interface WalOptions {
  /** Directory (created 0700 if missing); ignored when inMemory. */
  path: string;
  inMemory: boolean;
  /** Total bound: segment file bytes, or in-memory bytes of the same encoding. */
  maxBytes: number;
  /** Roll size, default 64 MiB (at most a quarter of maxBytes, so one slow record cannot pin the whole bound). */
  segmentBytes?: number;
  /**
   * Longest wait to gather a group commit. Default 0: a commit starts once the current synchronous run ends, and
   * appends made while it runs form the next one (on disk, a 2 ms wait halved `always`-mode throughput).
   */
  commitDelayMs?: number;
  /** File-system calls on disk; the real ones by default (tests pass a recording one). */
  fs?: WalFs;
  /**
   * Names a record's tag (the producer's order group) from its topic, key and partition (recovery does not decode
   * the value and headers for it: the message has an empty value). Recovery then counts the records it finds
   * pending per tag, from the lines it reads anyway, for {@link Wal.recoveredTags}.
   */
  tagOf?: (message: Message) => string;
}

/** A snapshot of the WAL's size and health. */
export interface WalStats {
  /** Records not acknowledged yet (pending or checked out). */
  records: number;
  /** Bytes counted against maxBytes. */
  bytes: number;
  /** writtenAt of the oldest record not acknowledged yet; null when there is none. */
  oldestWrittenAt: number | null;
  /** Lines skipped as damaged since the WAL was opened. */
  corrupt: number;
  /** Records (included in `records`) held in memory because writing failed; written once the disk recovers. */
  unwritten: number;
  /** Their bytes (included in `bytes`). */
  unwrittenBytes: number;
}

/** How a record is appended. */
export interface AppendOptions {
  /** The record starts out checked out: it is being sent to Kafka directly, so replay must not send it too. */
  checkedOut?: boolean;
  /**
   * Bytes of the bound promised to others (the facade's reservations for messages in librdkafka): the record is
   * refused unless it fits beside them. Default 0.
   */
  reservedBytes?: number;
}

/** What {@link Wal.appendMany} did with each message of a batch. */
export interface AppendedMany {
  /**
   * Per message, in order: its id (ids increase with the position), or why it was refused: WalFullError when it
   * did not fit the bound, another Error when it cannot be encoded (a partition or timestamp that is not finite).
   */
  ids: Array<number | Error>;
  /**
   * Resolves once every accepted record is written and fdatasynced, rejects if any of those writes failed (the
   * records are then kept as with `append`). A batch shares one group commit unless it is larger than a segment.
   */
  durable: Promise<void>;
}

/** An append-only log of messages waiting for Kafka. */
export interface Wal {
  /**
   * False from a failed write until the records held in memory since then are on disk again. Appends still work
   * meanwhile (their records wait in memory, counted against the bound), but their `durable` rejects.
   */
  readonly writable: boolean;
  /**
   * Appends one record. The id is assigned at once (monotonic, survives restarts, never reused). `durable` resolves
   * after the group commit that holds it and rejects if that write fails; the record is then still kept (in memory,
   * written once the disk recovers, handed out by checkout meanwhile): an appender that reports the failure to its
   * client must retract it with `ack`. Throws WalFullError synchronously when the bound would be exceeded. With
   * checkedOut=true the record starts out checked out (it is being sent to Kafka directly: replay must not send it
   * too).
   */
  append(msg: Message, opts?: AppendOptions): { id: number; durable: Promise<void> };
  /**
   * Appends a batch as one group: one write and one fdatasync per segment touched (a batch that fits a segment is
   * not split across two), and one `durable` promise. The bound is applied per record, in order, as if each were
   * appended alone: a record that does not fit is refused (WalFullError in its slot) and the ones after it are
   * still tried, so a smaller one may fit. Refused records take no id. While writes are failing, accepted records
   * are held in memory as with `append`, and `durable` rejects. Throws only when the WAL is closed.
   */
  appendMany(messages: readonly Message[], opts?: AppendOptions): AppendedMany;
  /** The record is delivered (or dropped for good): never replayed again. Idempotent; fine before `durable` resolved. */
  ack(id: number): void;
  /** Up to `max` records, oldest first, neither acked nor checked out; they become checked out. */
  checkout(max: number): Promise<WalRecord[]>;
  /** A checked-out record goes back to the pending set (delivery failed; replay it later). */
  release(id: number): void;
  /** Records pending (not acked, not checked out). */
  pendingCount(): number;
  /**
   * The records found pending when the WAL was opened, counted per tag (see WalOptions.tagOf); empty without
   * `tagOf`. Computed once, at open.
   */
  recoveredTags(): ReadonlyMap<string, number>;
  stats(): WalStats;
  /** Writes and fdatasyncs everything appended and acked so far (records held in memory excepted). */
  sync(): Promise<void>;
  /**
   * sync (with a last try to write records held in memory), then release files. Idempotent. After close, append
   * throws. Never rejects: what the disk fails to take is logged (records held in memory are lost, acks not
   * synced may be replayed after a restart), so that a stop on a failing disk still ends.
   */
  close(): Promise<void>;
}
