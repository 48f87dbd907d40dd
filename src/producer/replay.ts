/**
 * Replay: sends WAL records back to Kafka, oldest first, at a bounded rate, never while the breaker is open and
 * never a record that is already in flight (checked-out records are not handed out twice). With key order, one
 * record per order group at a time.
 */
import { type Clock, realClock } from "../clock.ts";
import { log, logRepeated } from "../log.ts";
import type { Wal, WalRecord } from "../wal/wal.ts";
import type { RateLimiter } from "./rate_limiter.ts";

/** The part of the breaker that replay obeys. */
export interface ReplayGate {
  readonly state: "closed" | "half" | "open";
  /** Consumes a Half-Open probe; false when nothing may be sent now. */
  allow(): boolean;
  release(): void;
}

/** What replay is built from. */
export interface ReplayOptions {
  wal: Wal;
  gate: ReplayGate;
  limiter: RateLimiter;
  /** Sends one record; resolves true when Kafka acknowledged it (the sender acks or releases it in the WAL). */
  send: (record: WalRecord) => Promise<boolean>;
  /** How often a replay run starts by itself; 0 disables replay. */
  periodMs: number;
  /**
   * Records sent and not yet reported, at most.
   * @default {10000}
   */
  maxInFlight?: number;
  /** @default {realClock} */
  clock?: Clock;
  /**
   * Key order (key_order.ts): a record's order group. At most one record per group is then in flight; the group's
   * next records wait, checked out (counted in maxInFlight), until it is delivered, and go back to the WAL when it
   * fails, to be retried from the first one not delivered.
   */
  groupOf?: (record: WalRecord) => string;
}

const CHECKOUT_CHUNK = 256;

/** Runs replay every period and whenever it is kicked (breaker closing, start-up with a backlog). */
export class Replayer {
  readonly #opts: ReplayOptions;
  readonly #maxInFlight: number;
  readonly #clock: Clock;
  #timer: number | undefined;
  #run: Promise<void> | null = null;
  #again = false;
  #stopped = false;
  #inFlight = new Set<Promise<boolean>>();

  constructor(opts: ReplayOptions) {
    this.#opts = opts;
    this.#maxInFlight = opts.maxInFlight ?? 10_000;
    this.#clock = opts.clock ?? realClock;
  }

  /** Starts the periodic runs and one run at once if the WAL holds records. */
  start(): void {
    if (this.#opts.periodMs <= 0) return;
    this.#tick();
    if (this.#opts.wal.pendingCount() > 0) this.kick();
  }

  #tick(): void {
    this.#timer = this.#clock.setTimeout(() => {
      this.kick();
      if (!this.#stopped) this.#tick();
    }, this.#opts.periodMs);
  }

  /** Starts a run now, or right after the current one. */
  kick(): void {
    if (this.#stopped || this.#opts.periodMs <= 0) return;
    if (this.#run) {
      this.#again = true;
      return;
    }
    this.#run = this.#loop().finally(() => {
      this.#run = null;
      if (this.#again) {
        this.#again = false;
        this.kick();
      }
    });
  }

  /**
   * Stops starting sends at once. The promise resolves when the current run has ended, which takes as long as the
   * sends already in flight: shutdown flushes or closes the producer first, so that it never waits for Kafka here.
   */
  async stop(): Promise<void> {
    this.#stopped = true;
    if (this.#timer !== undefined) this.#clock.clearTimeout(this.#timer);
    await this.#run;
    await Promise.allSettled([...this.#inFlight]);
  }

  async #loop(): Promise<void> {
    const { wal, gate, groupOf } = this.#opts;
    let sent = 0;
    let failed = false;
    const started = Date.now();
    /**
     * Key order: groups with a record in flight or in `ready`, each with the records checked out behind it, oldest
     * first. A group stays here until its last record is reported, so a record checked out later queues behind.
     */
    const busy = new Map<string, WalRecord[]>();
    /** Key order: the next record of groups whose record in flight was delivered, to send next. */
    const ready: WalRecord[] = [];
    /** Records in `busy` queues and `ready`. */
    let waiting = 0;
    const reported = (group: string, ok: boolean) => {
      const behind = busy.get(group)!;
      if (ok && behind.length > 0) {
        ready.push(behind.shift()!);
        return;
      }
      busy.delete(group);
      waiting -= behind.length;
      for (const r of behind) wal.release(r.id);
    };
    /** A record of `ready` that is not sent goes back to the WAL, and its group's records behind it too. */
    const abandon = (record: WalRecord) => {
      wal.release(record.id);
      const group = groupOf!(record);
      const behind = busy.get(group)!;
      busy.delete(group);
      waiting -= behind.length;
      for (const r of behind) wal.release(r.id);
    };
    while (!this.#stopped && !failed && gate.state !== "open") {
      let records: WalRecord[];
      const next = ready.length > 0;
      if (next) {
        records = ready.splice(0);
        waiting -= records.length;
      } else if (this.#inFlight.size + waiting >= this.#maxInFlight) {
        await Promise.race(this.#inFlight);
        continue;
      } else {
        const room = this.#maxInFlight - this.#inFlight.size - waiting;
        try {
          records = await wal.checkout(Math.min(CHECKOUT_CHUNK, room));
        } catch (err) {
          // A failing disk: the records stay in the WAL (checkout released them) for the next run. Thrown on, the
          // error would be an unhandled rejection, which ends the process.
          logRepeated(
            "wal replay: reading failed",
            "error",
            "wal replay: reading the WAL failed; the run ends",
            {
              error: err,
            },
          );
          break;
        }
        if (records.length === 0) {
          // Key order: records behind a send in flight follow once it is reported.
          if (waiting > 0) {
            await Promise.race(this.#inFlight);
            continue;
          }
          break;
        }
      }
      let i = 0;
      for (; i < records.length && !this.#stopped; i++) {
        const group = groupOf?.(records[i]);
        if (group !== undefined && !next) {
          const behind = busy.get(group);
          if (behind !== undefined) {
            behind.push(records[i]);
            waiting++;
            continue;
          }
        }
        await this.#opts.limiter.take(1);
        // Stopped while waiting for a token: what is not sent stays in the WAL.
        if (this.#stopped || !gate.allow()) break;
        const p = this.#opts.send(records[i]);
        if (group !== undefined && !next) busy.set(group, []);
        this.#inFlight.add(p);
        p.then((ok) => {
          if (!ok) failed = true;
          if (group !== undefined) reported(group, ok);
        }, () => {
          failed = true;
          if (group !== undefined) reported(group, false);
        }).finally(() => this.#inFlight.delete(p));
        sent++;
      }
      for (; i < records.length; i++) {
        if (next) abandon(records[i]);
        else wal.release(records[i].id);
      }
      if (gate.state === "half") {
        // The probe budget is spent: the breaker decides once the probes are answered.
        await Promise.allSettled([...this.#inFlight]);
        if (gate.state === "half") break;
      }
    }
    await Promise.allSettled([...this.#inFlight]);
    // The run ended: records that were to follow go back to the WAL, in their place.
    for (const r of ready.splice(0)) abandon(r);
    if (sent > 0) {
      const seconds = (Date.now() - started) / 1000;
      log("info", "wal replay run ended", {
        sent,
        seconds: Math.round(seconds * 10) / 10,
        rate: Math.round(sent / Math.max(seconds, 0.001)),
        pending: wal.pendingCount(),
        breaker: gate.state,
      });
    }
  }
}
