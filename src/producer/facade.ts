/**
 * The producer facade: decides, per message, between Kafka and the WAL according to the breaker, the WAL mode and
 * the ack level, and keeps every accepted message in one of the two. Clients get short, stable reasons; the details
 * (OS errors, file paths, librdkafka's text) go to the log.
 */
import type { Config } from "../config.ts";
import { errorLabel, isProducerEnded, isQueueFull, isUnknownPartition } from "../kafka/errors.ts";
import {
  type BatchOutcomes,
  type DeliveryListener,
  KafkaError,
  type KafkaProducer,
  type ProduceBatchOptions,
  type ProduceOptions,
  RECORD_OVERHEAD,
  recordWireSize,
} from "../kafka/producer.ts";
import { log, logRepeated } from "../log.ts";
import * as metrics from "../metrics.ts";
import type { AppendedMany, Wal } from "../wal/wal.ts";
import { WalFullError } from "../wal/wal.ts";
import type { Breaker } from "./breaker.ts";
import { type KeyOrder, orderGroupOf, type Ticket } from "./key_order.ts";
import { type AckLevel, type Message, tooLargeReason } from "../message.ts";
import {
  ProduceError,
  type ProduceResult,
  type ProducerFacade,
  QUEUED,
  QUEUED_NOW,
  type Readiness,
} from "./types.ts";

/** librdkafka's default `message.max.bytes`. */
const DEFAULT_MAX_MESSAGE_BYTES = 1_000_000;
/** Bytes a WAL line adds to a message: JSON field names, id, timestamps, checksum (base64 growth is added apart). */
const WAL_LINE_OVERHEAD = 160;
/**
 * The share of librdkafka's queue bound (queue.buffering.max.messages) past which a batch waits to be read (see
 * roomForBatch): a quarter of the default 100,000 is 50 ms of a broker taking 500,000 records/s, enough to keep it
 * busy. Measured on Deno 2.8.3 with 64 clients of 1,000-record batches: peak RSS 321-338 MB instead of 471-500
 * at the same rate (bench/README.md; on Deno 2.8.2 the peak is 377-417 MB).
 */
const BATCH_ROOM = 0.25;
/** The WAL counts as full for readiness when a message of 1 KiB would not fit. */
const READINESS_LINE_BYTES = Math.ceil(1024 * 4 / 3) + WAL_LINE_OVERHEAD;

/** What the facade is built from. */
export interface FacadeOptions {
  config: Config;
  /** null when `producer.wal.mode` is `disable`. */
  wal: Wal | null;
  breaker: Breaker;
  producer: KafkaProducer;
  /** Per-key order through the WAL (`producer.wal.preserve_order: key`, fallback mode); null or absent: none. */
  order?: KeyOrder | null;
}

/** The facade as main.ts drives it: the servers' interface plus the life-cycle hooks. */
export class Facade implements ProducerFacade {
  /** The largest value of a record without key or headers: `message.max.bytes` less the record overhead. */
  readonly maxMessageBytes: number;
  /** `message.max.bytes`, which librdkafka holds a record's value, key, headers and overhead to. */
  readonly #maxRecordBytes: number;
  #producer: KafkaProducer;
  readonly #wal: Wal | null;
  readonly #breaker: Breaker;
  readonly #walMode: Config["producer"]["wal"]["mode"];
  readonly #alwaysTopics: Set<string>;
  readonly #disableTopics: Set<string>;
  readonly #walMaxBytes: number;
  /** How long a message that may be spooled waits for room in a full librdkafka queue. */
  readonly #fullQueueWaitMs: number;
  /** `producer.get_metadata_timeout`. */
  readonly #listTopicsTimeoutMs: number;
  /** `kafka.acks` (or `request.required.acks`) is 0: no broker confirms a write; a record sent counts as delivered. */
  readonly #acksZero: boolean;
  /** The send options of a message that may be spooled, made once: the single-message path is hot. */
  readonly #spoolableSend: ProduceOptions;
  /** WAL bytes promised to messages in librdkafka that would be spooled if their delivery failed. */
  #reservedWalBytes = 0;
  /** Spools started by failed deliveries; awaited before the WAL closes. */
  readonly #spools = new Set<Promise<void>>();
  #draining = false;
  /**
   * Set while librdkafka reports all brokers down and none has answered since (service.ts): then a record that
   * timed out before its topic's partitions were known says the cluster is unreachable, not that the topic is
   * missing, and counts against the breaker.
   */
  clusterDown = false;
  /** kafka_client_requests_cnt children per topic: the hot path skips prom-client's label hashing. */
  readonly #requested = new Map<string, metrics.HotCount>();
  readonly #order: KeyOrder | null;
  /** What the delivery report of an `always`-mode record does (see DirectSend), bound once. */
  readonly #directSent = {
    delivered: (id: number): void => {
      this.#breaker.success();
      this.#wal!.ack(id);
    },
    failed: (id: number, topic: string, err: unknown): void => {
      if (this.#recordFailure(topic, err)) this.#wal!.release(id);
      else this.#wal!.ack(id);
    },
  };

  /** What the delivery report of a fallback-mode record sent alone to Kafka does (see KafkaSend), bound once. */
  readonly #kafkaSent = {
    delivered: (send: KafkaSend, partition: number, offset: number): void => {
      this.#reservedWalBytes -= send.reserved;
      this.#breaker.success();
      if (send.ticket !== undefined) this.#order!.delivered(send.ticket);
      send.settled?.resolve({ where: "kafka", partition, offset: String(offset) });
    },
    failed: (send: KafkaSend, err: unknown, message: Message | undefined): void => {
      this.#reservedWalBytes -= send.reserved;
      const { topic, ticket, settled } = send;
      const retryable = this.#recordFailure(topic, err);
      if (!retryable || !send.walAllowed) {
        if (ticket !== undefined) this.#order!.failed(ticket);
        // Kafka will never take it (unknown topic, too large): dropped and counted; an ack=wal client hears so.
        if (!retryable) return settled?.reject(deliveryRefusal(err, message ?? { topic }));
        countDropped(topic, errorLabel(err), NO_WAL);
        return settled?.reject(new ProduceError("unavailable", `kafka: ${errorName(err)}`, 5));
      }
      if (message === undefined) {
        // librdkafka never reported it, even after a purge (KafkaProducer.close): nothing is left to spool.
        if (ticket !== undefined) this.#order!.failed(ticket);
        countLost(topic, errorLabel(err), LOST_UNREPORTED, err);
        return settled?.reject(new ProduceError("unavailable", `kafka: ${errorName(err)}`, 5));
      }
      const ack = settled === undefined ? "none" : "wal";
      let spooled: Promise<ProduceResult>;
      if (ticket === undefined) {
        spooled = this.#spoolFailed(message, ack);
      } else {
        // Key order: appended once no record of its key is in flight, before the ones accepted after it.
        const inTurn = Promise.withResolvers<ProduceResult>();
        this.#order!.failed(ticket, () => inTurn.resolve(this.#spoolFailed(message, ack, ticket.group)));
        this.#track(inTurn.promise);
        spooled = inTurn.promise;
      }
      if (settled !== undefined) settled.resolve(spooled);
      else spooled.catch(() => {});
    },
  };

  constructor(opts: FacadeOptions) {
    const { config } = opts;
    this.#producer = opts.producer;
    this.#wal = opts.wal;
    // Read at each scrape: kept off the hot path, where the reservations change per message.
    metrics.watchWalReservations(() => this.#reservedWalBytes);
    this.#breaker = opts.breaker;
    this.#walMode = config.producer.wal.mode;
    this.#alwaysTopics = new Set(config.producer.wal.alwaysTopics);
    this.#disableTopics = new Set(config.producer.wal.disableTopics);
    this.#walMaxBytes = config.producer.wal.maxBytes;
    this.#order = opts.order ?? null;
    // Under key order a message never waits for queue room: one that gave up waiting could be overtaken by a later
    // message of its key that found room. A full queue sends it to the WAL at once, and its key follows it there.
    this.#fullQueueWaitMs = this.#order === null ? config.producer.fullQueueWaitMs : 0;
    this.#listTopicsTimeoutMs = config.producer.getMetadataTimeoutMs;
    this.#spoolableSend = { fullQueueWaitMs: this.#fullQueueWaitMs };
    this.#acksZero = (config.kafka["acks"] ?? config.kafka["request.required.acks"])?.trim() === "0";
    if (this.#acksZero) {
      log(
        "warn",
        "kafka: acks is 0, so brokers confirm no write: a record is taken as delivered once sent, and one lost " +
          "after that is lost without an error; ack=wal and ack=kafka requests are refused (400)",
      );
    }
    const max = Number(config.kafka["message.max.bytes"] ?? DEFAULT_MAX_MESSAGE_BYTES);
    this.#maxRecordBytes = Number.isFinite(max) && max > 0 ? max : DEFAULT_MAX_MESSAGE_BYTES;
    this.maxMessageBytes = this.#maxRecordBytes - RECORD_OVERHEAD;
  }

  /** The producer taking new messages. */
  get producer(): KafkaProducer {
    return this.#producer;
  }

  /** Routes new messages to `next` and returns the producer it replaces (SIGHUP, fatal producer error). */
  swapProducer(next: KafkaProducer): KafkaProducer {
    const old = this.#producer;
    this.#producer = next;
    this.#order?.replacedProducer();
    return old;
  }

  /** Stops accepting: every later produce call is refused with 503. */
  setDraining(on: boolean): void {
    this.#draining = on;
  }

  /**
   * Rejects, never throws. Not an async function: for the usual message (ack=none, breaker closed) it hands back
   * one shared settled promise, where an async frame per call would be garbage at once.
   */
  produce(message: Message, ack: AckLevel): Promise<ProduceResult> {
    if (this.#draining) return Promise.reject(new ProduceError("unavailable", "shutting down", 1));
    if (ack !== "none" && this.#acksZero) return Promise.reject(acksZeroRefusal(ack));
    if (recordWireSize(message) > this.#maxRecordBytes) return Promise.reject(this.#tooLarge(message));
    const topic = message.topic;
    this.#requestCounter(topic).inc();
    const walAllowed = this.#walAllowed(topic);
    if (this.#order !== null && walAllowed) return this.#produceInOrder(message, ack);
    if (ack === "kafka") return this.#produceToKafkaOnly(message);
    if (walAllowed && (this.#walMode === "always" || this.#alwaysTopics.has(topic))) {
      return this.#produceThroughWal(message);
    }
    if (!this.#breaker.allow()) {
      if (!walAllowed) {
        return Promise.reject(
          new ProduceError("unavailable", "kafka unavailable (circuit breaker open) and WAL disabled", 5),
        );
      }
      return this.#spoolNow(message, ack);
    }
    return this.#produceToKafka(message, ack, walAllowed);
  }

  /**
   * Resolves once a batch may be read: while Kafka keeps up, at once (undefined); while more than BATCH_ROOM of
   * librdkafka's queue bound is in flight or waiting for room, when that falls below it or after
   * producer.full_queue_wait, whichever comes first. A batch left unread waits in its client's socket (TCP holds
   * the client back) instead of in this process, so memory stays bounded when clients outrun Kafka. Not waited
   * on when the records would not go to Kafka now (breaker not closed, shutting down) or when a full queue does
   * not wait (full_queue_wait 0, key order).
   */
  roomForBatch(): Promise<unknown> | undefined {
    if (this.#fullQueueWaitMs === 0 || this.#draining || this.#breaker.state !== "closed") return undefined;
    const producer = this.#producer;
    return producer.whenBelow(producer.queueCapacity * BATCH_ROOM, this.#fullQueueWaitMs);
  }

  /**
   * Accepts a batch with, per message, exactly the decisions of {@link produce} called for each in order (draining,
   * size, breaker, WAL mode and topic lists, WAL room and its reservations), but one rd_kafka_produce_batch call per
   * run of messages for one partition and one WAL group for the records appended. Outcomes come in request order;
   * the promise never rejects. Delivery reports are acted on (breaker, reservations, spooling of failures, acks in
   * `always` mode) once every message of the batch handed to Kafka together is reported, and the failed ones are
   * spooled together.
   */
  produceMany(
    messages: readonly Message[],
    ack: AckLevel,
  ): Promise<Array<ProduceResult | ProduceError>> {
    if (ack !== "none" && this.#acksZero) return Promise.resolve(messages.map(() => acksZeroRefusal(ack)));
    if (this.#order !== null) {
      // Key order: message by message (each one's decision depends on the reports of the ones before it).
      return Promise.all(messages.map((m) => this.produce(m, ack).catch(refusalOrThrow)));
    }
    let handed: { plan: BatchPlan; wait: Promise<unknown> };
    try {
      handed = this.#handOverMany(messages, ack);
    } catch (err) {
      return Promise.reject(err); // a bug: rejected, as from an async function
    }
    // Not an async frame around the hand-over: it would keep the messages (and the request body they are views
    // of) until the reply, while it waits for Kafka or the disk.
    return this.#outcomesOf(handed.plan, handed.wait);
  }

  /** The outcomes of a batch handed over, once `wait` settles and its WAL writes are durable. */
  async #outcomesOf(plan: BatchPlan, wait: Promise<unknown>): Promise<Array<ProduceResult | ProduceError>> {
    await wait;
    if (plan.durableWaits.length > 0) await this.#awaitDurables(plan, plan.durableWaits);
    return plan.out;
  }

  /** produceMany's decisions and hand-over; what its reply waits for. */
  #handOverMany(messages: readonly Message[], ack: AckLevel): { plan: BatchPlan; wait: Promise<unknown> } {
    const plan = new BatchPlan(messages.length, ack);
    const { out } = plan;
    // The records of a batch usually share a topic: its counter is looked up once per run of it.
    let countedTopic: string | undefined;
    let counter: metrics.HotCount | undefined;
    for (let i = 0; i < messages.length; i++) {
      if (this.#draining) {
        out[i] = new ProduceError("unavailable", "shutting down", 1);
        continue;
      }
      const message = messages[i];
      if (recordWireSize(message) > this.#maxRecordBytes) {
        out[i] = this.#tooLarge(message);
        continue;
      }
      const topic = message.topic;
      if (topic !== countedTopic) {
        countedTopic = topic;
        counter = this.#requestCounter(topic);
      }
      counter!.inc();
      if (ack === "kafka") {
        if (this.#breaker.allow()) plan.send(i, SEND_KAFKA_ONLY);
        else out[i] = new ProduceError("unavailable", "kafka unavailable (circuit breaker open)", 5);
        continue;
      }
      const walAllowed = this.#walAllowed(topic);
      if (walAllowed && (this.#walMode === "always" || this.#alwaysTopics.has(topic))) {
        this.#stage(plan, messages, i, true);
        continue;
      }
      // The staged `always` records ask the breaker when appended: before this message, as produce would.
      if (plan.runAlways) this.#appendRun(plan, messages);
      if (!this.#breaker.allow()) {
        if (!walAllowed) {
          out[i] = new ProduceError(
            "unavailable",
            "kafka unavailable (circuit breaker open) and WAL disabled",
            5,
          );
        } else this.#stage(plan, messages, i, false);
        continue;
      }
      // The room check must see the WAL as the records staged before this message leave it.
      this.#appendRun(plan, messages);
      if (walAllowed) {
        const reserved = walLineEstimate(message);
        if (!this.#walHasRoom(reserved)) {
          this.#breaker.release();
          out[i] = new ProduceError("unavailable", "wal: full", 5);
          continue;
        }
        this.#reservedWalBytes += reserved;
        plan.reserved[i] = reserved;
      }
      out[i] = QUEUED;
      plan.send(i, walAllowed ? SEND_SPOOLABLE : SEND_DROPPABLE);
    }
    this.#appendRun(plan, messages);
    // From here on the plan does not hold the messages (see produceBatch): a failed one comes back in its outcome.
    const { reported, handedOver } = this.#handOverBatch(plan, messages);
    // ack=none: the reply waits until no record waits for room in librdkafka's queue any more (at most
    // producer.full_queue_wait), so that clients faster than Kafka are held back instead of filling the WAL.
    return { plan, wait: ack === "none" ? handedOver : reported };
  }

  /** librdkafka would refuse it at once (and an ack=none client would have heard 200 for a message dropped). */
  #tooLarge(message: Message): ProduceError {
    const counted = `${recordWireSize(message)} bytes as librdkafka counts it (value, key, headers and ` +
      `${RECORD_OVERHEAD} bytes of record overhead)`;
    return new ProduceError("too_large", tooLargeReason(counted, this.#maxRecordBytes));
  }

  /** Stages message `i` for the WAL; records of one kind are appended together (see #appendRun). */
  #stage(plan: BatchPlan, messages: readonly Message[], i: number, always: boolean): void {
    if (plan.run.length > 0 && plan.runAlways !== always) this.#appendRun(plan, messages);
    plan.run.push(i);
    plan.runAlways = always;
  }

  /**
   * Appends the staged records in one call, as #produceThroughWal (`always`) or #spoolNow would one by one. An
   * `always` record asks the breaker only once appended: asking first and giving the probe back on a refusal, as
   * produce does, leaves the breaker as it was. So records are appended checked out and released when not sent.
   */
  #appendRun(plan: BatchPlan, messages: readonly Message[]): void {
    const { run, out } = plan;
    if (run.length === 0) return;
    const always = plan.runAlways;
    plan.run = [];
    plan.runAlways = false;
    const wal = this.#wal!;
    let appended: AppendedMany;
    try {
      if (!wal.writable) throw new ProduceError("unavailable", "wal: unavailable", 5);
      appended = wal.appendMany(run.map((i) => messages[i]), {
        checkedOut: always,
        reservedBytes: this.#reservedWalBytes,
      });
    } catch (err) {
      const refusal = err instanceof ProduceError ? err.message : appendRefusal(err);
      for (const i of run) out[i] = new ProduceError("unavailable", refusal, 5);
      return;
    }
    for (let k = 0; k < run.length; k++) {
      const i = run[k];
      const id = appended.ids[k];
      if (typeof id !== "number") {
        out[i] = new ProduceError("unavailable", appendRefusal(id), 5);
        continue;
      }
      plan.ids[i] = id;
      plan.durables[i] = appended.durable;
      if (always) {
        if (this.#breaker.allow()) plan.send(i, SEND_DIRECT);
        else wal.release(id);
        plan.durableWaits.push(i);
      } else if (plan.ack === "wal") plan.durableWaits.push(i);
      else out[i] = IN_WAL;
    }
  }

  /**
   * Hands the batch's messages for Kafka over in the order produce would have, one produceBatch call per stretch
   * that waits (or not) for queue room alike. `reported` resolves once their reports are acted on, `handedOver`
   * once none of those that may be spooled waits for queue room any more.
   */
  #handOverBatch(
    plan: BatchPlan,
    messages: readonly Message[],
  ): { reported: Promise<unknown>; handedOver: Promise<unknown> } {
    const { sends, how } = plan;
    const reported: Promise<void>[] = [];
    const handedOver: Promise<void>[] = [];
    for (let start = 0; start < sends.length;) {
      // Only a topic that may use the WAL spools a full queue after a bounded wait (as in #produceToKafka).
      const spoolable = how[sends[start]] === SEND_SPOOLABLE;
      let end = start + 1;
      while (end < sends.length && (how[sends[end]] === SEND_SPOOLABLE) === spoolable) end++;
      const indices = sends.slice(start, end);
      const batch = new Array<Message>(indices.length);
      for (let k = 0; k < indices.length; k++) batch[k] = messages[indices[k]];
      // No closure made here may see the messages: the one on `delivery` would keep them until the reports.
      const options: ProduceBatchOptions = {
        refused: refusalsInto(plan.out, batch, indices),
        positions: plan.ack !== "none",
      };
      if (spoolable) {
        const handed = Promise.withResolvers<void>();
        handedOver.push(handed.promise);
        options.fullQueueWaitMs = this.#fullQueueWaitMs;
        options.handedOver = handed.resolve;
      }
      const delivery = this.#producer.produceBatch(batch, options);
      reported.push(
        delivery.then((outcomes) => this.#reported(plan, indices, outcomes)).catch((err) => {
          log("error", "produce batch: handling delivery reports failed", { error: err });
        }),
      );
      start = end;
    }
    return { reported: Promise.all(reported), handedOver: Promise.all(handedOver) };
  }

  /** Acts on the reports of messages `indices`, as the per-message handlers of produce would. */
  async #reported(plan: BatchPlan, indices: number[], outcomes: BatchOutcomes): Promise<void> {
    const { out, how } = plan;
    const wal = this.#wal;
    const failed: number[] = [];
    const spooled: Message[] = [];
    // The breaker hears a run of deliveries at once: one clock read for the run, not one per message.
    let successes = 0;
    for (let k = 0; k < indices.length; k++) {
      const i = indices[k];
      const error = outcomes.error(k);
      const kind = how[i];
      if (kind === SEND_SPOOLABLE || kind === SEND_DROPPABLE) this.#reservedWalBytes -= plan.reserved[i];
      if (error === undefined) {
        successes++;
        if (kind === SEND_DIRECT) wal!.ack(plan.ids[i]);
        else if (plan.ack !== "none") {
          out[i] = { where: "kafka", partition: outcomes.partitions[k], offset: String(outcomes.offsets[k]) };
        }
        continue;
      }
      if (successes > 0) {
        this.#breaker.success(successes);
        successes = 0;
      }
      const topic = outcomes.topic(k);
      const message = outcomes.message(k);
      const retryable = this.#recordFailure(topic, error);
      if (kind === SEND_DIRECT) {
        if (retryable) wal!.release(plan.ids[i]);
        else wal!.ack(plan.ids[i]);
      } else if (kind === SEND_KAFKA_ONLY || !retryable) {
        // ack=kafka, or a message Kafka will never take: dropped and counted; a waiting client hears so.
        if (plan.ack !== "none") out[i] = deliveryRefusal(error, message ?? { topic });
      } else if (kind === SEND_DROPPABLE) {
        countDropped(topic, errorLabel(error), NO_WAL);
        if (plan.ack !== "none") out[i] = new ProduceError("unavailable", `kafka: ${errorName(error)}`, 5);
      } else if (message === undefined) {
        // librdkafka never reported it, even after a purge (KafkaProducer.close): nothing is left to spool.
        this.#lost(plan, i, topic, errorLabel(error), LOST_UNREPORTED, error);
      } else {
        failed.push(i);
        spooled.push(message);
      }
    }
    if (successes > 0) this.#breaker.success(successes);
    if (failed.length > 0) await this.#spoolFailedMany(plan, failed, spooled);
  }

  /**
   * #spoolFailed for the failed deliveries of a batch, `messages` being those of `failed`: one WAL group, their
   * room having been reserved.
   */
  async #spoolFailedMany(plan: BatchPlan, failed: number[], messages: Message[]): Promise<void> {
    let appended: AppendedMany;
    try {
      appended = this.#wal!.appendMany(messages);
    } catch (err) {
      for (let k = 0; k < failed.length; k++) this.#spoolRefused(plan, failed[k], messages[k].topic, err);
      return;
    }
    const waits: number[] = [];
    for (let k = 0; k < failed.length; k++) {
      const i = failed[k];
      const id = appended.ids[k];
      if (typeof id !== "number") {
        this.#spoolRefused(plan, i, messages[k].topic, id);
        continue;
      }
      plan.ids[i] = id;
      plan.durables[i] = appended.durable;
      if (plan.ack === "wal") waits.push(i);
    }
    this.#track(appended.durable);
    if (waits.length > 0) await this.#awaitDurables(plan, waits);
  }

  #spoolRefused(plan: BatchPlan, i: number, topic: string, err: unknown): void {
    const full = err instanceof WalFullError;
    this.#lost(
      plan,
      i,
      topic,
      full ? "wal_full" : "wal_error",
      "message lost: delivery failed and the WAL refused it",
      err,
    );
  }

  /** Message `i` of a batch failed and cannot be spooled: counted, logged, and a waiting client hears 503. */
  #lost(plan: BatchPlan, i: number, topic: string, label: string, what: string, err: unknown): void {
    countLost(topic, label, what, err);
    if (plan.ack !== "none") {
      const why = label === "wal_full" ? "wal: full" : "wal: unavailable";
      plan.out[i] = new ProduceError("unavailable", `kafka delivery failed and ${why}`, 5);
    }
  }

  /** #awaitDurable for records of a batch: those whose write failed are retracted and refused. */
  async #awaitDurables(plan: BatchPlan, indices: number[]): Promise<void> {
    // Records appended in one synchronous run share their promise: each distinct one is awaited once.
    const failed = new Map<Promise<void>, unknown>();
    let last: Promise<void> | undefined;
    for (const i of indices) {
      const durable = plan.durables[i]!;
      if (durable === last) continue;
      last = durable;
      await durable.catch((err) => failed.set(durable, err ?? new Error("write failed")));
    }
    for (const i of indices) {
      if (!failed.has(plan.durables[i]!)) {
        // A record refused at hand-over keeps that outcome (see #handOverBatch).
        if (!(plan.out[i] instanceof ProduceError)) plan.out[i] = IN_WAL;
        continue;
      }
      this.#wal!.ack(plan.ids[i]);
      plan.out[i] = new ProduceError("unavailable", "wal: unavailable", 5);
    }
    for (const err of failed.values()) {
      logRepeated(
        "wal: write failed; refused with 503",
        "warn",
        "wal: write failed; the request is refused",
        {
          error: err,
        },
      );
    }
  }

  async listTopics(): Promise<string[]> {
    // A dead cluster costs nothing per request: with the breaker open, no metadata request waits its timeout out.
    if (this.#breaker.state === "open") {
      throw new ProduceError("unavailable", "kafka unavailable (circuit breaker open)", 5);
    }
    try {
      return await this.#producer.listTopics(this.#listTopicsTimeoutMs);
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
      this.#order?.left(orderGroupOf(message));
      metrics.walReplayed.inc();
      return true;
    } catch (err) {
      if (this.#recordFailure(message.topic, err, false)) {
        wal.release(id);
      } else {
        wal.ack(id);
        this.#order?.left(orderGroupOf(message));
      }
      return false;
    }
  }

  /** Waits until every failed delivery that is being spooled has reached the WAL. */
  async settle(): Promise<void> {
    while (this.#spools.size > 0) await Promise.allSettled([...this.#spools]);
  }

  #requestCounter(topic: string): metrics.HotCount {
    // Cached by label value, so the cache is bounded as the series are.
    const label = metrics.topicLabel(topic);
    let counter = this.#requested.get(label);
    if (counter === undefined) {
      counter = metrics.requests.hot(label);
      this.#requested.set(label, counter);
    }
    return counter;
  }

  #walAllowed(topic: string): boolean {
    return this.#wal !== null && this.#walMode !== "disable" && !this.#disableTopics.has(topic);
  }

  /**
   * Key order (see key_order.ts): a message whose group has records in the WAL follows them there (ack=kafka cannot
   * wait for them: 503); otherwise it goes as without key order, its direct send counted in flight.
   */
  async #produceInOrder(message: Message, ack: AckLevel): Promise<ProduceResult> {
    const group = orderGroupOf(message);
    if (this.#order!.mustSpool(group)) {
      if (ack === "kafka") throw new ProduceError("unavailable", "key has records waiting in the WAL", 5);
      return await this.#spoolInTurn(message, ack, group);
    }
    if (ack === "kafka") return await this.#produceToKafkaOnly(message, group);
    if (!this.#breaker.allow()) return await this.#spoolInTurn(message, ack, group);
    return await this.#produceToKafka(message, ack, true, group);
  }

  /**
   * Key order: a new message for the WAL. Appended now unless records of its group are in flight; then it is
   * accepted with its room reserved (as for a message in librdkafka) and appended once they are all reported.
   */
  async #spoolInTurn(message: Message, ack: AckLevel, group: string): Promise<ProduceResult> {
    const order = this.#order!;
    if (!order.holds(group)) {
      const { id, durable } = this.#append(message, false);
      order.appended(group);
      if (ack === "wal") await this.#awaitDurable(id, durable, group);
      return IN_WAL;
    }
    // As #append: while the WAL cannot write, its memory is for records already answered.
    if (!this.#wal!.writable) throw new ProduceError("unavailable", "wal: unavailable", 5);
    const reserved = walLineEstimate(message);
    if (!this.#walHasRoom(reserved)) throw new ProduceError("unavailable", "wal: full", 5);
    this.#reservedWalBytes += reserved;
    const spooled = Promise.withResolvers<ProduceResult>();
    order.inTurn(group, () => {
      this.#reservedWalBytes -= reserved;
      spooled.resolve(this.#spoolFailed(message, ack, group, "held for key order"));
    });
    this.#track(spooled.promise);
    if (ack === "wal") return await spooled.promise;
    spooled.promise.catch(() => {});
    return IN_WAL;
  }

  /** ack=kafka: the reply waits for Kafka; a failure goes back to the client and is not spooled (no duplicates). */
  async #produceToKafkaOnly(message: Message, group?: string): Promise<ProduceResult> {
    if (!this.#breaker.allow()) {
      throw new ProduceError("unavailable", "kafka unavailable (circuit breaker open)", 5);
    }
    const ticket = group === undefined ? undefined : this.#order!.sent(group);
    try {
      const d = await this.#producer.produce(message);
      this.#breaker.success();
      if (ticket !== undefined) this.#order!.delivered(ticket);
      return { where: "kafka", partition: d.partition, offset: d.offset.toString() };
    } catch (err) {
      if (ticket !== undefined) this.#order!.failed(ticket);
      this.#recordFailure(message.topic, err);
      throw deliveryRefusal(err, message);
    }
  }

  /** `always` mode: the record is made durable in the WAL first, then sent; the WAL forgets it once Kafka has it. */
  #produceThroughWal(message: Message): Promise<ProduceResult> {
    const direct = this.#breaker.allow();
    let appended: { id: number; durable: Promise<void> };
    try {
      appended = this.#append(message, direct);
    } catch (err) {
      return Promise.reject(err);
    }
    const { id, durable } = appended;
    // A failed send releases the record: the replay sends it.
    const refused = direct
      ? refusedAtOnce(this.#send(message, new DirectSend(this.#directSent, id, message.topic)), message)
      : undefined;
    // As #awaitDurable, with two reactions instead of an async frame (the larger garbage) per record.
    return durable.then(() => {
      // The report acked it: it will never be sent.
      if (refused !== undefined) throw refused;
      return IN_WAL;
    }, (err) => this.#durableFailed(id, err));
  }

  /**
   * Hands one message to librdkafka; returns the error when librdkafka refused it at once (the listener heard it
   * too). A call that throws instead of reporting (more calls in flight than slots) is a failed delivery, taken the
   * same way out.
   */
  #send(
    message: Message,
    listener: DeliveryListener & { failed(err: unknown, message?: Message): void },
    opts?: ProduceOptions,
  ): KafkaError | undefined {
    try {
      return this.#producer.send(message, listener, opts);
    } catch (err) {
      listener.failed(err, message);
      return undefined;
    }
  }

  /** The breaker is open: the message goes to the WAL without touching Kafka. */
  async #spoolNow(message: Message, ack: AckLevel): Promise<ProduceResult> {
    const { id, durable } = this.#append(message, false);
    // ack=none: a failed write leaves the record in the WAL's memory, to be written or sent later.
    if (ack === "wal") await this.#awaitDurable(id, durable);
    return { where: "wal" };
  }

  /**
   * fallback mode, breaker closed: straight to librdkafka; a failed delivery is spooled if the topic may use the WAL.
   * With `group` (key order) the send is counted in flight and a failed one is spooled in its turn.
   */
  #produceToKafka(
    message: Message,
    ack: AckLevel,
    walAllowed: boolean,
    group?: string,
  ): Promise<ProduceResult> {
    let reserved = 0;
    if (walAllowed) {
      reserved = walLineEstimate(message);
      if (!this.#walHasRoom(reserved)) {
        this.#breaker.release();
        return Promise.reject(new ProduceError("unavailable", "wal: full", 5));
      }
      this.#reservedWalBytes += reserved;
    }
    const ticket = group === undefined ? undefined : this.#order!.sent(group);
    // A listener object per record rather than a promise and its reactions: it lives until the delivery report.
    // ack=none: librdkafka holds the message, or (queue full, or a later failure) the WAL will: its room is reserved.
    const settled = ack === "none" ? undefined : Promise.withResolvers<ProduceResult>();
    const send = new KafkaSend(this.#kafkaSent, message.topic, reserved, walAllowed, ticket, settled);
    const refused = refusedAtOnce(
      this.#send(message, send, walAllowed ? this.#spoolableSend : undefined),
      message,
    );
    if (settled !== undefined) return settled.promise;
    if (refused !== undefined) return Promise.reject(refused);
    return QUEUED_NOW;
  }

  /**
   * A delivery failed with a retryable error (or, `cause` says, a message held for key order has its turn): put the
   * message in the WAL (tracked so shutdown can wait for it). Its room was reserved, so it is taken even while the
   * WAL cannot write (it is held in memory until it can). `group`: its key order group, told of the append.
   */
  async #spoolFailed(
    message: Message,
    ack: AckLevel,
    group?: string,
    cause = "kafka delivery failed",
  ): Promise<ProduceResult> {
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
        `message lost: ${cause} and the WAL refused it`,
        "error",
        `message lost: ${cause} and the WAL refused it`,
        {
          topic: message.topic,
          error: err,
        },
      );
      throw new ProduceError(
        "unavailable",
        `${cause} and ${full ? "wal: full" : "wal: unavailable"}`,
        5,
      );
    }
    const { id, durable } = appended;
    if (group !== undefined) this.#order!.appended(group);
    this.#track(durable);
    if (ack === "wal") await this.#awaitDurable(id, durable, group);
    return { where: "wal" };
  }

  /** Shutdown (settle) waits for `work`, a spool on its way to the WAL. */
  #track(work: Promise<unknown>): void {
    const spool = work.then(() => {}, () => {});
    this.#spools.add(spool);
    spool.finally(() => this.#spools.delete(spool));
  }

  /**
   * Appends a message that holds no reservation: it must leave the room reserved for messages in librdkafka, which
   * the WAL is told, so it checks the exact line against the bound. While the WAL cannot write, such messages are
   * refused: the memory it holds is for records already answered.
   */
  #append(message: Message, checkedOut: boolean): { id: number; durable: Promise<void> } {
    const wal = this.#wal!;
    let refusal: string;
    if (!wal.writable) refusal = "wal: unavailable";
    else {
      try {
        return wal.append(message, { checkedOut, reservedBytes: this.#reservedWalBytes });
      } catch (err) {
        refusal = appendRefusal(err);
      }
    }
    if (checkedOut) this.#breaker.release();
    throw new ProduceError("unavailable", refusal, 5);
  }

  /**
   * Waits until the record is on disk. If the write failed the client hears so (and will retry), so the record is
   * retracted from the WAL: keeping it would deliver it twice. `group`: its key order group, told of the retraction.
   */
  async #awaitDurable(id: number, durable: Promise<void>, group?: string): Promise<void> {
    try {
      await durable;
    } catch (err) {
      this.#durableFailed(id, err, group);
    }
  }

  /** The record's write failed: it is retracted from the WAL (see #awaitDurable) and the client hears 503. */
  #durableFailed(id: number, err: unknown, group?: string): never {
    this.#wal!.ack(id);
    if (group !== undefined) this.#order!.left(group);
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

  #walHasRoom(bytes: number): boolean {
    return this.#wal!.stats().bytes + this.#reservedWalBytes + bytes <= this.#walMaxBytes;
  }

  /**
   * Feeds the breaker and the error metrics; returns whether the failure is worth a retry. `heard`: the record's
   * client is told of a refusal at hand-over (not so for a replayed one), which is then no drop.
   */
  #recordFailure(topic: string, err: unknown, heard = true): boolean {
    if (isQueueFull(err) || isProducerEnded(err)) {
      // Local back-pressure, or a producer closed or dead of a fatal error (service.ts replaces it): neither says
      // anything about the brokers.
      this.#breaker.release();
      return true;
    }
    if (err instanceof KafkaError && err.badPartition && heard) {
      this.#breaker.release(); // the client hears 400 (refusedAtOnce)
      return false;
    }
    if (err instanceof KafkaError && !err.retryable) {
      // The broker answered: it is healthy, the message is not.
      this.#breaker.release();
      countDropped(topic, err.errText, "Kafka will never take it");
      return false;
    }
    if (err instanceof KafkaError && err.unpartitioned && !this.clusterDown) {
      // Timed out waiting for its topic (librdkafka waits topic.metadata.propagation.max.ms, 30 s, before it calls
      // a topic unknown), or its partition gone with its topic: kept, but one topic that does not exist (or no
      // longer) must not open the breaker for every other.
      this.#breaker.release();
      return true;
    }
    this.#breaker.failure(errorName(err));
    return true;
  }
}

/**
 * The delivery listener of one `always`-mode record sent alone: one object per record instead of a promise and the
 * closures of its reactions.
 */
class DirectSend implements DeliveryListener {
  constructor(
    readonly sent: { delivered(id: number): void; failed(id: number, topic: string, err: unknown): void },
    readonly id: number,
    readonly topic: string,
  ) {}

  delivered(): void {
    this.sent.delivered(this.id);
  }

  failed(err: unknown): void {
    this.sent.failed(this.id, this.topic, err);
  }
}

/**
 * The delivery listener of one record sent alone to Kafka in fallback mode: its reserved WAL room is given back,
 * and a failed delivery is spooled (or dropped and counted, for a topic without WAL). `ticket`: its key order
 * turn; `settled`: the caller waiting for the outcome (ack=wal), none at ack=none.
 */
class KafkaSend implements DeliveryListener {
  constructor(
    readonly sent: {
      delivered(send: KafkaSend, partition: number, offset: number): void;
      failed(send: KafkaSend, err: unknown, message: Message | undefined): void;
    },
    readonly topic: string,
    readonly reserved: number,
    readonly walAllowed: boolean,
    readonly ticket?: Ticket,
    readonly settled?: PromiseWithResolvers<ProduceResult>,
  ) {}

  delivered(partition: number, offset: number): void {
    this.sent.delivered(this, partition, offset);
  }

  failed(err: unknown, message?: Message): void {
    this.sent.failed(this, err, message);
  }
}

/** Why a failed message was not spooled when librdkafka never reported it (KafkaProducer.close's guard). */
const LOST_UNREPORTED = "message lost: librdkafka did not report it";

/** A failed message that cannot be spooled: counted under `label` and logged as `what`. */
function countLost(topic: string, label: string, what: string, err: unknown): void {
  metrics.dropped.inc({ topic: metrics.topicLabel(topic), error: label });
  logRepeated(what, "error", what, { topic, error: err });
}

/** How a message of a batch goes to Kafka. */
const SEND_KAFKA_ONLY = 1;
/** fallback mode, topic may use the WAL: a failed delivery is spooled (its room is reserved). */
const SEND_SPOOLABLE = 2;
/** fallback mode, topic without WAL: a failed delivery is dropped. */
const SEND_DROPPABLE = 3;
/** `always` mode: the record is in the WAL, checked out while it is sent. */
const SEND_DIRECT = 4;

/** One produceMany call: the outcomes and what the decisions left to do, indexed by position in the batch. */
class BatchPlan {
  readonly ack: AckLevel;
  readonly out: Array<ProduceResult | ProduceError>;
  /** Messages for Kafka, in the order produce would have handed them over. */
  readonly sends: number[] = [];
  /** SEND_* per message for Kafka, 0 for the others. */
  readonly how: Uint8Array;
  /** WAL bytes reserved per message (#produceToKafka). */
  readonly reserved: Float64Array;
  #ids: Float64Array | undefined;
  #durables: Array<Promise<void> | undefined> | undefined;
  /** Messages whose outcome waits for their WAL write. */
  readonly durableWaits: number[] = [];
  /** Messages staged for the WAL, not yet appended, all of one kind. */
  run: number[] = [];
  /** The staged messages are for `always` mode (else: spooled because the breaker refused them). */
  runAlways = false;

  constructor(n: number, ack: AckLevel) {
    this.ack = ack;
    this.out = new Array(n);
    this.how = new Uint8Array(n);
    this.reserved = new Float64Array(n);
  }

  /** WAL id per message appended (made when the first is: most batches have none). */
  get ids(): Float64Array {
    return this.#ids ??= new Float64Array(this.how.length);
  }

  /** Per message appended: the promise of its write. */
  get durables(): Array<Promise<void> | undefined> {
    return this.#durables ??= new Array(this.how.length);
  }

  send(i: number, how: number): void {
    this.how[i] = how;
    this.sends.push(i);
  }
}

const IN_WAL: ProduceResult = { where: "wal" };

/** The refusal of an `ack` that waits for Kafka's word (wal, kafka) while `acks` is 0: Kafka gives none. */
function acksZeroRefusal(ack: AckLevel): ProduceError {
  return new ProduceError(
    "invalid",
    `ack=${ack} is not available: kafka acks is 0 here, so Kafka confirms no write (ack=none is)`,
  );
}

/** A produce refusal as a batch outcome; anything else is a bug and rejects. */
function refusalOrThrow(err: unknown): ProduceError {
  if (err instanceof ProduceError) return err;
  throw err;
}

/** The client's reason for an append the WAL refused; failures other than a full WAL are logged. */
function appendRefusal(err: unknown): string {
  if (err instanceof WalFullError) return "wal: full";
  logRepeated("wal: append failed", "error", "wal: append failed", { error: err });
  return "wal: unavailable";
}

const NO_WAL = "its delivery failed and its topic does not use the WAL";

/**
 * Counts a message given up on in kafka_client_dropped_cnt, and logs it: once per error, naming its topic, then
 * every 10 s the count of repeats with the last one's topic. Not once per topic: a client naming a new topic that
 * does not exist in every request would write a line per request.
 */
function countDropped(topic: string, error: string, why: string): void {
  metrics.dropped.inc({ topic: metrics.topicLabel(topic), error });
  logRepeated(`message dropped ${error} ${why}`, "warn", `message dropped: ${why}`, { topic, error });
}

/**
 * What a client waiting for a failed delivery hears: 400 for a partition the topic does not have (the request's
 * mistake), else 502 with librdkafka's reason.
 */
function deliveryRefusal(err: unknown, message: Pick<Message, "topic" | "partition">): ProduceError {
  // Purged before it was sent (the breaker opened, the producer closed): Kafka did not refuse it.
  if (isProducerEnded(err)) return new ProduceError("unavailable", kafkaReason(err), 5);
  // Without a partition asked for, the topic lost its partitions while the message waited (deleted, say).
  if (isUnknownPartition(err) && message.partition !== undefined) {
    return new ProduceError(
      "invalid",
      `partition ${message.partition} does not exist in topic ${JSON.stringify(message.topic)}`,
    );
  }
  return new ProduceError("kafka", kafkaReason(err));
}

/**
 * What the client hears for a message librdkafka refused as it was handed over, even where the reply does not wait
 * for the report (ack=none, `always` mode): only a partition its topic does not have, the request's own mistake. A
 * refusal for anything else (an unknown topic, say) is left to the report, as the Go service left it.
 */
function refusedAtOnce(err: KafkaError | undefined, message: Message): ProduceError | undefined {
  return isUnknownPartition(err) && message.partition !== undefined
    ? deliveryRefusal(err, message)
    : undefined;
}

/** The `refused` callback of a produceBatch call for `batch`, messages `indices` of a plan whose outcomes are `out`. */
function refusalsInto(
  out: Array<ProduceResult | ProduceError>,
  batch: readonly Message[],
  indices: readonly number[],
): (k: number, err: KafkaError) => void {
  return (k, err) => {
    const refusal = refusedAtOnce(err, batch[k]);
    if (refusal !== undefined) out[indices[k]] = refusal;
  };
}

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
