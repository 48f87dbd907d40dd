/**
 * Per-key order through the WAL (`producer.wal.preserve_order: key`). The facade and replay consult one KeyOrder so
 * that each order group's records reach Kafka in the order the service accepted them:
 *
 * 1. a new record of a group that has records in the WAL goes to the WAL too ({@link KeyOrder.mustSpool});
 * 2. a record bound for the WAL while records of its group are in flight directly to Kafka is appended only once
 *    they have all been reported ({@link KeyOrder.inTurn}), since a failed one is spooled then and must come first;
 * 3. failed direct deliveries are spooled in their acceptance order ({@link KeyOrder.failed});
 * 4. replay sends one record per group at a time ({@link orderGroupOf}, used by replay.ts);
 * 5. the groups of records recovered from the WAL are known before the first new record is routed;
 * 6. a group leaves the map when it has nothing in the WAL, in flight or waiting.
 *
 * Invariant: a group never has records in the WAL and records in flight directly at the same time.
 */
import { log, logRepeated } from "../log.ts";
import type { Message } from "../message.ts";
import * as metrics from "../metrics.ts";

/**
 * The order group of a message: (topic, key) for a non-empty key, else (topic, partition) when a partition is
 * given, else the topic (every keyless record of the topic without a partition). Topic names cannot hold NUL.
 * @example orderGroupOf({ topic: "t", key: new Uint8Array([1]), value }) === "t\0kAQ=="
 */
export function orderGroupOf(m: Message): string {
  if (m.key !== undefined && m.key !== null && m.key.byteLength > 0) {
    return `${m.topic}\0k${m.key.toBase64()}`;
  }
  if (m.partition !== undefined) return `${m.topic}\0p${m.partition}`;
  return m.topic;
}

/** A direct send's place in its group, from {@link KeyOrder.sent}. */
export interface Ticket {
  readonly group: string;
  /** Acceptance number within the group. */
  readonly seq: number;
}

/** What a KeyOrder starts from. */
export interface KeyOrderOptions {
  /**
   * Records already in the WAL per group, as recovery found them (Wal.recoveredTags with orderGroupOf).
   * @default {new Map()}
   */
  recovered?: ReadonlyMap<string, number>;
}

/** A WAL append waiting for its group's records in flight, with its acceptance number. */
interface Turn {
  seq: number;
  run: () => void;
}

/** The state of one group; kept only while one of its counts is above zero. */
interface Group {
  /** Records in the WAL (pending there or checked out by replay). */
  wal: number;
  /** Records handed to Kafka directly and not reported yet. */
  inFlight: number;
  /** Some of those were handed to a producer that has since been replaced. */
  stale: boolean;
  /** The next acceptance number. */
  nextSeq: number;
  /** The highest acceptance number delivered directly since the group was last forgotten; -1: none. */
  delivered: number;
  /** Appends waiting until inFlight is 0, by acceptance number. */
  waiting: Turn[];
}

/** Per-group counts and the appends held back for order. Costs one map entry per active group (see delivery.md). */
export class KeyOrder {
  readonly #groups = new Map<string, Group>();
  #waitingTotal = 0;
  #broken = 0;

  constructor(opts: KeyOrderOptions = {}) {
    for (const [group, n] of opts.recovered ?? []) {
      if (n > 0) {
        this.#groups.set(group, {
          wal: n,
          inFlight: 0,
          stale: false,
          nextSeq: 0,
          delivered: -1,
          waiting: [],
        });
      }
    }
  }

  /** Groups tracked now (with records in the WAL, in flight or waiting). */
  get groups(): number {
    return this.#groups.size;
  }

  /** Appends held back until their group's records in flight are reported. */
  get waiting(): number {
    return this.#waitingTotal;
  }

  /** Records that reached Kafka after a newer record of their group (see {@link failed}). */
  get broken(): number {
    return this.#broken;
  }

  /** Records of `group` in the WAL, as counted here. */
  walCount(group: string): number {
    return this.#groups.get(group)?.wal ?? 0;
  }

  /**
   * Whether a new record of `group` must go to the WAL rather than to Kafka: the group has records in the WAL or
   * waiting to be appended, or records in flight on a producer that was replaced (a new producer could deliver
   * ahead of them).
   */
  mustSpool(group: string): boolean {
    const g = this.#groups.get(group);
    return g !== undefined && (g.wal > 0 || g.waiting.length > 0 || g.stale);
  }

  /** Whether an append for `group` would be held back now (records of the group are in flight). */
  holds(group: string): boolean {
    return (this.#groups.get(group)?.inFlight ?? 0) > 0;
  }

  /** A record of `group` is handed to Kafka directly; its report must come back through delivered or failed. */
  sent(group: string): Ticket {
    const g = this.#group(group);
    g.inFlight++;
    return { group, seq: g.nextSeq++ };
  }

  /** A direct send was delivered. */
  delivered(ticket: Ticket): void {
    const g = this.#groups.get(ticket.group);
    if (g === undefined) return;
    // Waiting appends older than this record are failures of the group's direct sends: they land after it.
    if (g.waiting.length > 0 && g.waiting[0].seq < ticket.seq) this.#orderBroken(ticket.group);
    g.delivered = Math.max(g.delivered, ticket.seq);
    g.inFlight--;
    this.#release(ticket.group, g);
  }

  /**
   * A direct send failed. `spool`, for a failure that goes to the WAL, runs once no record of the group is in
   * flight any more, after the appends accepted before it and before those accepted after it. librdkafka's
   * idempotent producer keeps a partition's order across retries, but a message that times out may be followed by
   * later ones that are delivered: that is counted and logged, as it cannot be undone.
   */
  failed(ticket: Ticket, spool?: () => void): void {
    const g = this.#groups.get(ticket.group);
    if (g === undefined) return;
    if (spool !== undefined) {
      if (ticket.seq < g.delivered) this.#orderBroken(ticket.group);
      this.#hold(g, ticket.seq, spool);
    }
    g.inFlight--;
    this.#release(ticket.group, g);
  }

  /**
   * A new record of `group` goes to the WAL: `append` runs now when none of the group is in flight, otherwise once
   * they are all reported (after any spool of theirs). Returns whether it ran now.
   */
  inTurn(group: string, append: () => void): boolean {
    const g = this.#group(group);
    if (g.inFlight === 0) {
      this.#run(group, append);
      this.#drop(group, g);
      return true;
    }
    this.#hold(g, g.nextSeq++, append);
    return false;
  }

  /** A record of `group` was appended to the WAL. */
  appended(group: string): void {
    this.#group(group).wal++;
  }

  /** A WAL record of `group` was acknowledged (delivered, dropped or retracted): it left the WAL. */
  left(group: string): void {
    const g = this.#groups.get(group);
    if (g === undefined || g.wal === 0) return;
    g.wal--;
    this.#drop(group, g);
  }

  /**
   * New messages go to a new producer from now on: records in flight on the old one could fail after a newer one
   * is delivered, so their groups take the WAL path until they are all reported.
   */
  replacedProducer(): void {
    for (const g of this.#groups.values()) if (g.inFlight > 0) g.stale = true;
  }

  #group(group: string): Group {
    let g = this.#groups.get(group);
    if (g === undefined) {
      g = { wal: 0, inFlight: 0, stale: false, nextSeq: 0, delivered: -1, waiting: [] };
      this.#groups.set(group, g);
    }
    return g;
  }

  /** Queues an append by acceptance number (reports of one partition usually come in order: the end, then). */
  #hold(g: Group, seq: number, run: () => void): void {
    let at = g.waiting.length;
    while (at > 0 && g.waiting[at - 1].seq > seq) at--;
    g.waiting.splice(at, 0, { seq, run });
    this.#waitingTotal++;
  }

  /** Runs the waiting appends once nothing of the group is in flight. */
  #release(group: string, g: Group): void {
    if (g.inFlight > 0) return;
    g.stale = false;
    const turns = g.waiting;
    g.waiting = [];
    this.#waitingTotal -= turns.length;
    for (const turn of turns) this.#run(group, turn.run);
    this.#drop(group, g);
  }

  #orderBroken(group: string): void {
    this.#broken++;
    metrics.keyOrderBroken.inc();
    logRepeated(
      "key order broken",
      "warn",
      "key order: a failed record is spooled after a newer record of its key reached Kafka",
      { topic: group.split("\0")[0] },
    );
  }

  #run(group: string, append: () => void): void {
    try {
      append();
    } catch (err) {
      // An append reports its own refusals; this is a bug, and the next turns must still run.
      log("error", "key order: a WAL append failed unexpectedly", {
        error: err,
        topic: group.split("\0")[0],
      });
    }
  }

  #drop(group: string, g: Group): void {
    if (g.wal === 0 && g.inFlight === 0 && g.waiting.length === 0) this.#groups.delete(group);
  }
}
