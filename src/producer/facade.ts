/**
 * The producer facade: decides, per message, between Kafka and the WAL according to the breaker, the WAL mode and
 * the ack level, and keeps every accepted message in one of the two. Clients get short, stable reasons; the details
 * (OS errors, file paths, librdkafka's text) go to the log.
 */
import type { Config } from "../config.ts";
import { isQueueFull } from "../kafka/errors.ts";
import { KafkaError, type KafkaProducer } from "../kafka/producer.ts";
import { logRepeated } from "../log.ts";
import * as metrics from "../metrics.ts";
import type { Wal } from "../wal/wal.ts";
import { WalFullError } from "../wal/wal.ts";
import type { Breaker } from "./breaker.ts";
import type { AckLevel, Message } from "../message.ts";
import { ProduceError, type ProduceResult, type ProducerFacade, type Readiness } from "./types.ts";

/** librdkafka's default `message.max.bytes`. */
const DEFAULT_MAX_MESSAGE_BYTES = 1_000_000;
/** Bytes a WAL line adds to a message: JSON field names, id, timestamps, checksum (base64 growth is added apart). */
const WAL_LINE_OVERHEAD = 160;
const LIST_TOPICS_TIMEOUT_MS = 5_000;
/** The WAL counts as full for readiness when a message of 1 KiB would not fit. */
const READINESS_LINE_BYTES = Math.ceil(1024 * 4 / 3) + WAL_LINE_OVERHEAD;

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
      logRepeated("kafka: cannot list topics", "warn", "kafka: cannot list topics", { error: err });
      throw new ProduceError("unavailable", "kafka: cannot list topics", 5);
    }
  }

  /**
   * Ready when a message posted now would be accepted: not shutting down, and Kafka (breaker closed) or the WAL
   * (enabled, with room, writable) can take it; in `always` mode the WAL must, and in `fallback` mode a full WAL
   * refuses even what Kafka could take. Not ready lists why.
   */
  readiness(): Readiness {
    const reasons: string[] = [];
    if (this.#draining) reasons.push("shutting down");
    const walProblem = this.#walProblem();
    const state = this.#breaker.state;
    const kafkaProblem = state === "closed"
      ? null
      : `circuit breaker ${state === "open" ? "open" : "half-open"}`;
    if (this.#walMode === "always") {
      if (walProblem !== null) reasons.push(walProblem);
    } else if (kafkaProblem !== null && walProblem !== null) {
      reasons.push(kafkaProblem, walProblem);
    } else if (walProblem === "wal: full") {
      // Kafka is up, yet a message that may use the WAL is refused: its room is reserved in case delivery fails.
      reasons.push(walProblem);
    }
    return { ready: reasons.length === 0, reasons };
  }

  /** Why the WAL could not take a small message now, or null. */
  #walProblem(): string | null {
    if (this.#wal === null || this.#walMode === "disable") return "wal: disabled";
    if (!this.#wal.writable) return "wal: unavailable";
    if (!this.#walHasRoom(READINESS_LINE_BYTES)) return "wal: full";
    return null;
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
    // Cached by label value, so the cache is bounded as the series are.
    const label = metrics.topicLabel(topic);
    let counter = this.#requested.get(label);
    if (counter === undefined) {
      counter = metrics.requests.labels({ topic: label });
      this.#requested.set(label, counter);
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
    await this.#awaitDurable(id, durable);
    return { where: "wal" };
  }

  /** The breaker is open: the message goes to the WAL without touching Kafka. */
  async #spoolNow(message: Message, ack: AckLevel): Promise<ProduceResult> {
    const { id, durable } = this.#append(message, false);
    // ack=none: a failed write leaves the record in the WAL's memory, to be written or sent later.
    if (ack === "wal") await this.#awaitDurable(id, durable);
    return { where: "wal" };
  }

  /** fallback mode, breaker closed: straight to librdkafka; a failed delivery is spooled if the topic may use the WAL. */
  async #produceToKafka(message: Message, ack: AckLevel, walAllowed: boolean): Promise<ProduceResult> {
    let reserved = 0;
    if (walAllowed) {
      reserved = walLineEstimate(message);
      if (!this.#walHasRoom(reserved)) {
        this.#breaker.release();
        throw new ProduceError("unavailable", "wal: full", 5);
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
          metrics.dropped.inc({ topic: metrics.topicLabel(message.topic), error: errorName(err) });
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

  /**
   * A delivery failed with a retryable error: put the message in the WAL (tracked so shutdown can wait for it). Its
   * room was reserved, so it is taken even while the WAL cannot write (it is held in memory until it can).
   */
  async #spoolFailed(message: Message, ack: AckLevel): Promise<ProduceResult> {
    let appended: { id: number; durable: Promise<void> };
    try {
      appended = this.#wal!.append(message);
    } catch (err) {
      const full = err instanceof WalFullError;
      metrics.dropped.inc({
        topic: metrics.topicLabel(message.topic),
        error: full ? "wal_full" : "wal_error",
      });
      logRepeated(
        "message lost: delivery failed and the WAL refused it",
        "error",
        "message lost: delivery failed and the WAL refused it",
        {
          topic: message.topic,
          error: err,
        },
      );
      throw new ProduceError(
        "unavailable",
        `kafka delivery failed and ${full ? "wal: full" : "wal: unavailable"}`,
        5,
      );
    }
    const { id, durable } = appended;
    const spool = durable.catch(() => {});
    this.#spools.add(spool);
    spool.finally(() => this.#spools.delete(spool));
    if (ack === "wal") await this.#awaitDurable(id, durable);
    return { where: "wal" };
  }

  /**
   * Appends a message that holds no reservation: it must leave the room reserved for messages in librdkafka. While
   * the WAL cannot write, such messages are refused: the memory it holds is for records already answered.
   */
  #append(message: Message, checkedOut: boolean): { id: number; durable: Promise<void> } {
    const wal = this.#wal!;
    let refusal: string | null = null;
    if (!wal.writable) refusal = "wal: unavailable";
    else if (!this.#walHasRoom(walLineEstimate(message))) refusal = "wal: full";
    else {
      try {
        return wal.append(message, { checkedOut });
      } catch (err) {
        if (!(err instanceof WalFullError)) {
          logRepeated("wal: append failed", "error", "wal: append failed", { error: err });
        }
        refusal = err instanceof WalFullError ? "wal: full" : "wal: unavailable";
      }
    }
    if (checkedOut) this.#breaker.release();
    throw new ProduceError("unavailable", refusal, 5);
  }

  /**
   * Waits until the record is on disk. If the write failed the client hears so (and will retry), so the record is
   * retracted from the WAL: keeping it would deliver it twice.
   */
  async #awaitDurable(id: number, durable: Promise<void>): Promise<void> {
    try {
      await durable;
    } catch (err) {
      this.#wal!.ack(id);
      logRepeated(
        "wal: write failed; refused with 503",
        "warn",
        "wal: write failed; the request is refused",
        {
          error: err,
        },
      );
      throw new ProduceError("unavailable", "wal: unavailable", 5);
    }
  }

  #walHasRoom(bytes: number): boolean {
    return this.#wal!.stats().bytes + this.#reservedWalBytes + bytes <= this.#walMaxBytes;
  }

  /** Feeds the breaker and the error metrics; returns whether the failure is worth a retry. */
  #recordFailure(topic: string, err: unknown): boolean {
    if (isQueueFull(err)) {
      // Local back-pressure says nothing about the brokers.
      this.#breaker.release();
      return true;
    }
    if (err instanceof KafkaError && !err.retryable) {
      // The broker answered: it is healthy, the message is not.
      this.#breaker.release();
      metrics.dropped.inc({ topic: metrics.topicLabel(topic), error: err.errName });
      return false;
    }
    this.#breaker.failure(errorName(err));
    return true;
  }
}

const QUEUED: ProduceResult = { where: "queued" };

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
