/**
 * Replay's counterparts in tests: a breaker gate the test sets, a sender whose sends the test answers, and a
 * Replayer on a fake clock wired to both.
 */
import { RateLimiter } from "../../src/producer/rate_limiter.ts";
import { Replayer, type ReplayGate, type ReplayOptions } from "../../src/producer/replay.ts";
import type { Wal, WalRecord } from "../../src/wal/wal.ts";
import { FakeClock } from "./fake_clock.ts";
import { settle } from "./wait.ts";

/** A gate whose state the test sets; in half-open it grants `probes` sends. */
export class Gate implements ReplayGate {
  state: "closed" | "half" | "open" = "closed";
  probes = 0;
  allow(): boolean {
    if (this.state === "closed") return true;
    if (this.state === "half" && this.probes > 0) {
      this.probes--;
      return true;
    }
    return false;
  }
  release(): void {
    if (this.state === "half") this.probes++;
  }
}

/** Records what replay sends; each send waits until the test answers it. */
export class Sender {
  readonly sent: number[] = [];
  readonly #waiting = new Map<number, (ok: boolean) => void>();
  constructor(readonly wal: Wal) {}
  send = (record: WalRecord): Promise<boolean> => {
    this.sent.push(record.id);
    return new Promise((resolve) => this.#waiting.set(record.id, resolve));
  };
  /** Answers every send in flight: delivered (acked in the WAL) or failed (released for later). */
  answerAll(ok: boolean): void {
    for (const id of [...this.#waiting.keys()]) this.answer(id, ok);
  }
  /** Answers the send of record `id`, as answerAll does. */
  answer(id: number, ok: boolean): void {
    const resolve = this.#waiting.get(id);
    if (resolve === undefined) throw new Error(`record ${id} is not in flight`);
    this.#waiting.delete(id);
    if (ok) this.wal.ack(id);
    else this.wal.release(id);
    resolve(ok);
  }
  get inFlight(): number {
    return this.#waiting.size;
  }
}

/** What {@link replayRig} varies. */
export interface ReplayRigOptions {
  /** Records per second. @default {1000} */
  rate?: number;
  /** @default {60000} */
  periodMs?: number;
  groupOf?: ReplayOptions["groupOf"];
}

/** A Replayer over `wal` on a fake clock, with a Gate and a Sender; disposing it stops it and closes `wal`. */
export function replayRig(wal: Wal, opts: ReplayRigOptions = {}) {
  const clock = new FakeClock();
  const gate = new Gate();
  const sender = new Sender(wal);
  const limiter = new RateLimiter(opts.rate ?? 1000, { burst: 1, clock });
  const replayer = new Replayer({
    wal,
    gate,
    limiter,
    send: sender.send,
    periodMs: opts.periodMs ?? 60_000,
    clock,
    groupOf: opts.groupOf,
  });
  return {
    clock,
    gate,
    sender,
    replayer,
    /** Lets the run go on: tokens and continuations. */
    async step() {
      for (let i = 0; i < 5; i++) {
        clock.advance(1);
        await settle();
      }
    },
    async [Symbol.asyncDispose]() {
      const stopped = replayer.stop();
      sender.answerAll(false);
      await stopped;
      limiter.close();
      await wal.close();
    },
  };
}
