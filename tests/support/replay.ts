/** Replay's counterparts in tests: a breaker gate the test sets, and a sender whose sends the test answers. */
import type { ReplayGate } from "../../src/producer/replay.ts";
import type { Wal, WalRecord } from "../../src/wal/wal.ts";

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
