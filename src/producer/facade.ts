/**
 * The producer facade: decides, per message, between Kafka and the WAL according to the breaker, the WAL mode and
 * the ack level, and keeps every accepted message in one of the two (DESIGN.md, delivery guarantees).
 */
import type { Config } from "../config.ts";
import { KafkaError, type KafkaProducer } from "../kafka/producer.ts";
import { log } from "../log.ts";
import * as metrics from "../metrics.ts";
import type { Wal } from "../wal/wal.ts";
import { WalFullError } from "../wal/wal.ts";
import type { Breaker } from "./breaker.ts";
import {
  type AckLevel,
  type Message,
  ProduceError,
  type ProduceResult,
  type ProducerFacade,
  type Readiness,
} from "./types.ts";

/** librdkafka's default `message.max.bytes`. */
const DEFAULT_MAX_MESSAGE_BYTES = 1_000_000;
/** Bytes a WAL line adds to a message: JSON field names, id, timestamps, checksum (base64 growth is added apart). */
const WAL_LINE_OVERHEAD = 160;
const LIST_TOPICS_TIMEOUT_MS = 5_000;

/** What the facade is built from. */
export interface FacadeOptions {
  config: Config;
  /** null when `producer.wal.mode` is `disable`. */
  wal: Wal | null;
  breaker: Breaker;
  producer: KafkaProducer;
}

/** The facade as main.ts drives it: the servers' interface plus the life-cycle hooks. */
export class Facade implements ProducerFacade {
  readonly maxMessageBytes: number;
  #producer: KafkaProducer;
  readonly #wal: Wal | null;
  readonly #breaker: Breaker;
  readonly #walMode: Config["producer"]["wal"]["mode"];
  readonly #alwaysTopics: Set<string>;
  readonly #disableTopics: Set<string>;
  readonly #walMaxBytes: number;
  /** WAL bytes promised to messages in librdkafka that would be spooled if their delivery failed. */
  #reservedWalBytes = 0;
  /** Spools started by failed deliveries; awaited before the WAL closes. */
  readonly #spools = new Set<Promise<void>>();
  #draining = false;
  #walError: string | null = null;
  /** kafka_client_requests_cnt children per topic: the hot path skips prom-client's label hashing. */
  readonly #requested = new Map<string, ReturnType<typeof metrics.requests.labels>>();

  constructor(opts: FacadeOptions) {
    const { config } = opts;
    this.#producer = opts.producer;
    this.#wal = opts.wal;
    this.#breaker = opts.breaker;
    this.#walMode = config.producer.wal.mode;
    this.#alwaysTopics = new Set(config.producer.wal.alwaysTopics);
    this.#disableTopics = new Set(config.producer.wal.disableTopics);
    this.#walMaxBytes = config.producer.wal.maxBytes;
    const max = Number(config.kafka["message.max.bytes"] ?? DEFAULT_MAX_MESSAGE_BYTES);
    this.maxMessageBytes = Number.isFinite(max) && max > 0 ? max : DEFAULT_MAX_MESSAGE_BYTES;
  }

  /** The producer taking new messages. */
  get producer(): KafkaProducer {
    return this.#producer;
  }

  /** Routes new messages to `next` and returns the producer it replaces (SIGHUP). */
  swapProducer(next: KafkaProducer): KafkaProducer {
    const old = this.#producer;
    this.#producer = next;
    return old;
  }

  /** Stops accepting: every later produce call is refused with 503. */
  setDraining(on: boolean): void {
    this.#draining = on;
  }

  async produce(message: Message, ack: AckLevel): Promise<ProduceResult> {
    if (this.#draining) throw new ProduceError("unavailable", "shutting down", 1);
    if (message.value.byteLength > this.maxMessageBytes) {
      throw new ProduceError(
        "too_large",
        `message of ${message.value.byteLength} bytes exceeds message.max.bytes (${this.maxMessageBytes})`,
      );
    }
    const topic = message.topic;
    this.#requestCounter(topic).inc();
    if (ack === "kafka") return await this.#produceToKafkaOnly(message);
    const walAllowed = this.#walAllowed(topic);
    if (walAllowed && (this.#walMode === "always" || this.#alwaysTopics.has(topic))) {
      return await this.#produceThroughWal(message);
    }
    if (!this.#breaker.allow()) {
      if (!walAllowed) {
        throw new ProduceError("unavailable", "kafka unavailable (circuit breaker open) and WAL disabled", 5);
      }
      return await this.#spoolNow(message, ack);
    }
    return await this.#produceToKafka(message, ack, walAllowed);
  }

  async listTopics(): Promise<string[]> {
    try {
      return await this.#producer.listTopics(LIST_TOPICS_TIMEOUT_MS);
    } catch (err) {
      throw new ProduceError("unavailable", `kafka: cannot list topics: ${(err as Error).message}`, 5);
    }
  }

  readiness(): Readiness {
    const reasons: string[] = [];
    if (this.#draining) reasons.push("shutting down");
    if (this.#breaker.state === "open") reasons.push("circuit breaker open");
    if (this.#walError) reasons.push(`wal: ${this.#walError}`);
    return { ready: reasons.length === 0, reasons };
  }

  /**
   * Sends one WAL record to Kafka for the replay loop. Resolves true when delivered; on a retryable failure the
   * record stays in the WAL (released for a later replay), on a non-retryable one it is dropped and counted.
   */
  async replay(id: number, message: Message): Promise<boolean> {
    const wal = this.#wal!;
    try {
      await this.#producer.produce(message);
      this.#breaker.success();
      wal.ack(id);
      metrics.walReplayed.inc();
      return true;
    } catch (err) {
      if (this.#recordFailure(message.topic, err)) {
        wal.release(id);
      } else {
        wal.ack(id);
      }
      return false;
    }
  }

  /** Waits until every failed delivery that is being spooled has reached the WAL. */
  async settle(): Promise<void> {
    while (this.#spools.size > 0) await Promise.allSettled([...this.#spools]);
  }

  #requestCounter(topic: string): ReturnType<typeof metrics.requests.labels> {
    let counter = this.#requested.get(topic);
    if (counter === undefined) {
      counter = metrics.requests.labels({ topic });
      this.#requested.set(topic, counter);
    }
    return counter;
  }

  #walAllowed(topic: string): boolean {
    return this.#wal !== null && this.#walMode !== "disable" && !this.#disableTopics.has(topic);
  }

  /** ack=kafka: the reply waits for Kafka; a failure goes back to the client and is not spooled (no duplicates). */
  async #produceToKafkaOnly(message: Message): Promise<ProduceResult> {
    if (!this.#breaker.allow()) {
      throw new ProduceError("unavailable", "kafka unavailable (circuit breaker open)", 5);
    }
    try {
      const d = await this.#producer.produce(message);
      this.#breaker.success();
      return { where: "kafka", partition: d.partition, offset: d.offset.toString() };
    } catch (err) {
      this.#recordFailure(message.topic, err);
      throw new ProduceError("kafka", kafkaReason(err));
    }
  }

  /** `always` mode: the record is made durable in the WAL first, then sent; the WAL forgets it once Kafka has it. */
  async #produceThroughWal(message: Message): Promise<ProduceResult> {
    const wal = this.#wal!;
    const direct = this.#breaker.allow();
    const { id, durable } = this.#append(message, direct);
    if (direct) {
      this.#producer.produce(message).then(
        () => {
          this.#breaker.success();
          wal.ack(id);
        },
        (err) => {
          if (this.#recordFailure(message.topic, err)) wal.release(id);
          else wal.ack(id);
        },
      );
    }
    await this.#awaitDurable(durable);
    return { where: "wal" };
  }

  /** The breaker is open: the message goes to the WAL without touching Kafka. */
  async #spoolNow(message: Message, ack: AckLevel): Promise<ProduceResult> {
    const { durable } = this.#append(message, false);
    if (ack === "wal") await this.#awaitDurable(durable);
    else durable.catch(() => {});
    return { where: "wal" };
  }

  /** fallback mode, breaker closed: straight to librdkafka; a failed delivery is spooled if the topic may use the WAL. */
  async #produceToKafka(message: Message, ack: AckLevel, walAllowed: boolean): Promise<ProduceResult> {
    let reserved = 0;
    if (walAllowed) {
      reserved = walLineEstimate(message);
      if (!this.#walHasRoom(reserved)) {
        this.#breaker.release();
        throw new ProduceError("unavailable", "kafka is not keeping up and the WAL is full", 5);
      }
      this.#reservedWalBytes += reserved;
    }
    const delivery = this.#producer.produce(message, { waitWhenFull: !walAllowed });
    const outcome = delivery.then(
      (d): ProduceResult => {
        this.#reservedWalBytes -= reserved;
        this.#breaker.success();
        return { where: "kafka", partition: d.partition, offset: d.offset.toString() };
      },
      async (err): Promise<ProduceResult> => {
        this.#reservedWalBytes -= reserved;
        const retryable = this.#recordFailure(message.topic, err);
        // Kafka will never take it (unknown topic, too large): dropped and counted; an ack=wal client hears so.
        if (!retryable) throw new ProduceError("kafka", kafkaReason(err));
        if (!walAllowed) {
          metrics.dropped.inc({ topic: message.topic, error: errorName(err) });
          throw new ProduceError("unavailable", `kafka: ${errorName(err)}`, 5);
        }
        return await this.#spoolFailed(message, ack);
      },
    );
    if (ack === "wal") return await outcome;
    // ack=none: librdkafka holds the message, or (queue full, or a later failure) the WAL will: its room is reserved.
    outcome.catch(() => {});
    return QUEUED;
  }

  /** A delivery failed with a retryable error: put the message in the WAL (tracked so shutdown can wait for it). */
  async #spoolFailed(message: Message, ack: AckLevel): Promise<ProduceResult> {
    let durable: Promise<void>;
    try {
      durable = this.#wal!.append(message).durable;
    } catch (err) {
      metrics.dropped.inc({ topic: message.topic, error: "wal_full" });
      log("error", "message lost: delivery failed and the WAL refused it", {
        topic: message.topic,
        error: (err as Error).message,
      });
      throw new ProduceError("unavailable", `kafka delivery failed and ${(err as Error).message}`, 5);
    }
    const spool = durable.then(() => {}, (err) => this.#noteWalError(err));
    this.#spools.add(spool);
    spool.finally(() => this.#spools.delete(spool));
    if (ack === "wal") await this.#awaitDurable(durable);
    return { where: "wal" };
  }

  /** Appends a message that holds no reservation: it must leave the room reserved for messages in librdkafka. */
  #append(message: Message, checkedOut: boolean): { id: number; durable: Promise<void> } {
    if (!this.#walHasRoom(walLineEstimate(message))) {
      if (checkedOut) this.#breaker.release();
      throw new ProduceError("unavailable", "wal: full", 5);
    }
    try {
      const r = this.#wal!.append(message, { checkedOut });
      return r;
    } catch (err) {
      if (checkedOut) this.#breaker.release();
      if (err instanceof WalFullError) throw new ProduceError("unavailable", err.message, 5);
      this.#noteWalError(err);
      throw new ProduceError("unavailable", `wal: ${(err as Error).message}`, 5);
    }
  }

  async #awaitDurable(durable: Promise<void>): Promise<void> {
    try {
      await durable;
      this.#walError = null;
    } catch (err) {
      this.#noteWalError(err);
      throw new ProduceError("unavailable", `wal: write failed: ${(err as Error).message}`, 5);
    }
  }

  #noteWalError(err: unknown): void {
    const message = (err as Error).message;
    if (this.#walError !== message) log("error", "wal write failed", { error: message });
    this.#walError = message;
  }

  #walHasRoom(bytes: number): boolean {
    return this.#wal!.stats().bytes + this.#reservedWalBytes + bytes <= this.#walMaxBytes;
  }

  /** Feeds the breaker and the error metrics; returns whether the failure is worth a retry. */
  #recordFailure(topic: string, err: unknown): boolean {
    if (err instanceof KafkaError && err.code === ERR_QUEUE_FULL) {
      // Local back-pressure says nothing about the brokers.
      this.#breaker.release();
      return true;
    }
    if (err instanceof KafkaError && !err.retryable) {
      // The broker answered: it is healthy, the message is not.
      this.#breaker.release();
      metrics.dropped.inc({ topic, error: err.errName });
      return false;
    }
    this.#breaker.failure(errorName(err));
    return true;
  }
}

const QUEUED: ProduceResult = { where: "queued" };
/** RD_KAFKA_RESP_ERR__QUEUE_FULL */
const ERR_QUEUE_FULL = -184;

/** A KafkaError's message already reads `kafka: topic "t": <librdkafka's text> (<name>)`. */
function kafkaReason(err: unknown): string {
  return err instanceof KafkaError ? err.message : `kafka: ${(err as Error)?.message ?? String(err)}`;
}

function errorName(err: unknown): string {
  return err instanceof KafkaError ? err.errName : (err as Error)?.name ?? "error";
}

/** An upper bound on the bytes a message takes as a WAL line (base64 grows bytes by 4/3). */
function walLineEstimate(m: Message): number {
  let bytes = m.value.byteLength + (m.key?.byteLength ?? 0);
  for (const [name, value] of m.headers ?? []) bytes += name.length * 3 + value.byteLength;
  return Math.ceil(bytes * 4 / 3) + m.topic.length + WAL_LINE_OVERHEAD;
}
