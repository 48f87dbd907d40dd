/** The contract between the servers and the producer facade. Nothing under `server/` sees more than this. */

import type { AckLevel, Message } from "../message.ts";

/** Where an accepted message is, at the time of the reply. */
export interface ProduceResult {
  /** `queued`: in librdkafka's queue (ack=none); `wal`: in the WAL; `kafka`: acknowledged by Kafka. */
  where: "queued" | "wal" | "kafka";
  partition?: number;
  offset?: string;
}

/**
 * Why a message was not accepted. `kind` maps to a status:
 * invalid 400, too_large 413, forbidden 403, unavailable 503 (retry later), kafka 502 (Kafka refused it, ack=kafka).
 */
export type ProduceErrorKind = "invalid" | "too_large" | "forbidden" | "unavailable" | "kafka";

/** A refusal with a one-line reason that is safe to show to the client. */
export class ProduceError extends Error {
  constructor(
    readonly kind: ProduceErrorKind,
    message: string,
    /** For `unavailable`: seconds after which a retry makes sense. */
    readonly retryAfterSeconds?: number,
  ) {
    super(message);
    this.name = "ProduceError";
  }
}

/** Readiness as `/readyz` reports it. */
export interface Readiness {
  ready: boolean;
  /** One entry per failing condition, e.g. "breaker open". */
  reasons: string[];
}

/** A message in librdkafka's queue, with nothing more to wait for (ack=none). */
export const QUEUED: ProduceResult = { where: "queued" };
/**
 * QUEUED as one settled promise, which `ProducerFacade.produce` returns for every message it handed to librdkafka
 * and need not wait for: a caller that sees it may answer at once, without a reaction per message.
 */
export const QUEUED_NOW: Promise<ProduceResult> = Promise.resolve(QUEUED);

/** The producer facade as the servers use it. */
export interface ProducerFacade {
  /** Accepts one message; resolves when `ack` is satisfied, rejects with ProduceError. */
  produce(message: Message, ack: AckLevel): Promise<ProduceResult>;
  /**
   * Accepts a batch: for each message the outcome `produce` would give it (a refusal is its ProduceError, in its
   * slot), in request order; the promise itself never rejects. Cheaper than `produce` per message: messages for
   * one partition reach Kafka together, and records for the WAL are appended together.
   */
  produceMany(messages: readonly Message[], ack: AckLevel): Promise<Array<ProduceResult | ProduceError>>;
  /**
   * Undefined when a batch may be read now; otherwise a promise that settles once it may (Kafka's queue has room
   * again, or a bounded wait is over). The batch is not read meanwhile, so that it waits in its client's socket.
   */
  roomForBatch(): Promise<unknown> | undefined;
  /** Topic names known to the cluster, internal (`__*`) ones left out. */
  listTopics(): Promise<string[]>;
  /**
   * Largest value accepted: librdkafka's `message.max.bytes` less its per-record overhead (36 bytes); a key and
   * headers count against it too (the facade refuses those records with `too_large`).
   */
  readonly maxMessageBytes: number;
  readiness(): Readiness;
}
