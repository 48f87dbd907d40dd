/**
 * One librdkafka producer: configure, produce with a promise per message, delivery events, stats, flush, close.
 * Events are read from librdkafka's main queue by one async loop that waits on another thread, so the
 * JavaScript event loop never blocks on librdkafka; big batches of reports are handled in short slices.
 */
import type { Message } from "../message.ts";
import { log, logRepeated } from "../log.ts";
import {
  acks,
  errors,
  eventsIgnored,
  inTransit,
  librdkafkaVersion as versionGauge,
  topicLabel,
  watchProducer,
} from "../metrics.ts";
import { LIBRDKAFKA_DEFAULTS } from "./defaults.ts";
import { ERR, isRetryable, isSecurityFailure, KafkaError } from "./errors.ts";
import {
  type DeliveryReport,
  EVENT_DR,
  EVENT_ERROR,
  EVENT_LOG,
  EVENT_STATS,
  PARTITION_UA,
  type RdConfig,
  type RdError,
  RdEvent,
  RdLibrary,
  type RdLog,
  type RdProducer,
} from "./librdkafka.ts";
import { applyStats, dropStats } from "./stats.ts";

export { KafkaError };

/** Where Kafka stored a message. */
export interface Delivery {
  partition: number;
  offset: bigint;
}

/** How to build a {@link KafkaProducer}. */
export interface KafkaProducerOptions {
  /**
   * producer_id label for metrics and logs; by default librdkafka's name for the producer
   * (`rdkafka#producer-1`), as the Go service labelled its producers.
   */
  id?: string;
  /** librdkafka properties, verbatim (bootstrap.servers included). */
  config: Record<string, string>;
  /** Default: env LIBRDKAFKA_PATH, else next to the executable, else "librdkafka.so.1" (RdLibrary.open). */
  libraryPath?: string;
  /** ERROR events (e.g. -187 all brokers down, -195 transport). */
  onError?: (err: KafkaError, fatal: boolean) => void;
  /** Each statistics object, besides the rdkafka_* gauges that are updated anyway. */
  onStats?: (stats: Record<string, unknown>) => void;
}

/** How long one wait for events may last; also how often the queue length gauge is refreshed when idle. */
const POLL_TIMEOUT_MS = 100;
/** Longest stretch of synchronous work before the loop lets timers and I/O run. */
const SLICE_MS = 5;
/** Messages handled between two reads of the clock. */
const CLOCK_EVERY = 64;
/** setTimeout's largest delay; longer ones would fire at once. */
const MAX_TIMER_MS = 2 ** 31 - 1;
/**
 * Messages with a bounded wait are refused at once (as if their wait were over) while this many wait already, or
 * while the bytes of those waiting would pass what librdkafka's own queue holds (queue.buffering.max.kbytes): a
 * queue that stays full must not pile up accepted messages in memory faster than Kafka takes them. At ack=none a
 * message sent alone is answered before it leaves the wait, so without the byte bound clients sending 16 KB
 * messages faster than the broker took them grew the service by hundreds of MB within seconds.
 */
const MAX_WAITING = 100_000;
/**
 * The shortest time between two expiry scans of the waiting queue. Without it a queue of 100,000 messages whose
 * deadlines pass one after another was walked on every round of reports, stalling the event loop for seconds.
 */
const EXPIRY_SCAN_MS = 50;
/** How long close waits for the reports of purged messages before failing them itself. */
const PURGE_GRACE_MS = 5000;
/**
 * How long one metadata request of brokerAnswers may wait, at least: a fifth of its whole wait when that is longer.
 * A close waits for the request in progress, and only a request that outlasts a round trip to a broker is answered.
 */
const MIN_PROBE_MS = 1000;

/**
 * A message's id, its opaque in librdkafka, names who hears its outcome and its place there:
 * `slot * SLOT_SPAN + index`, where the slot is taken once per produce() or produceBatch() call (a Map from id to
 * receiver cost an insert, a lookup and a delete per message). Ids stay below 2^53: 2^26 slots of 2^27 messages.
 */
const SLOT_SPAN = 2 ** 27;
const MAX_SLOTS = 2 ** 26;

/**
 * The outcomes of one produceBatch() call, by position in the batch: typed arrays, and an error object and the
 * message only for a message that failed, rather than an object per message.
 */
export class BatchOutcomes {
  readonly length: number;
  /** Where each delivered message was stored (empty when produceBatch was told `positions: false`). */
  readonly partitions: Int32Array;
  /** Kafka offsets of the delivered messages, exact below 2^53 (empty as `partitions` is). */
  readonly offsets: Float64Array;
  /** The topic of every message, or of each. */
  readonly #topics: string | readonly string[];
  #errors: Array<KafkaError | undefined> | undefined;
  #failed: Array<Message | undefined> | undefined;

  constructor(length: number, topics: string | readonly string[], positions = true) {
    this.length = length;
    this.#topics = topics;
    this.partitions = new Int32Array(positions ? length : 0);
    this.offsets = new Float64Array(positions ? length : 0);
  }

  /** The topic of message `i`. */
  topic(i: number): string {
    const topics = this.#topics;
    return typeof topics === "string" ? topics : topics[i];
  }

  /** The error message `i` failed with; undefined when it was delivered. */
  error(i: number): KafkaError | undefined {
    return this.#errors?.[i];
  }

  /**
   * Failed message `i` as it was sent, to be spooled: produceBatch does not hold a batch's messages once they are
   * in librdkafka, and takes a failed one back from its delivery report. Undefined for a delivered message, and
   * for one librdkafka never reported (see {@link KafkaProducer.close}).
   */
  message(i: number): Message | undefined {
    return this.#failed?.[i];
  }

  /** Records the failure of message `i` (the producer fills the outcomes). */
  fail(i: number, err: KafkaError, message: Message | undefined): void {
    (this.#errors ??= new Array(this.length))[i] = err;
    (this.#failed ??= new Array(this.length))[i] = message;
  }
}

/** Hears the outcome of messages handed over by id: a produce() promise, or a produceBatch() call. */
interface Receiver {
  /** The id of its first message, slot * SLOT_SPAN. */
  readonly firstId: number;
  /** Every message has its outcome. */
  readonly done: boolean;
  topicOf(id: number): string;
  /** Whether message `id` has no outcome yet. */
  open(id: number): boolean;
  delivered(id: number, partition: number, offset: number): void;
  /**
   * `from`: the delivery report event that failed it, positioned on its message, or the message itself when it
   * failed before librdkafka had it (refused, or its wait for room over); none when neither is at hand.
   */
  failed(id: number, err: KafkaError, from?: RdEvent | Message): void;
  /** Message `id` as it was sent, from what is kept or from `report` (its delivery report, positioned on it). */
  messageOf(id: number, report: RdEvent): Message;
  /** Whether message `id` asked for a partition (else librdkafka's partitioner chose one). */
  askedPartition(id: number): boolean;
}

/**
 * Hears the outcome of one message handed over by {@link KafkaProducer.send}, called from the producer's event loop
 * (or from `send` itself when librdkafka refuses the message at once). A throw is logged and goes no further, so
 * that the other reports of the same event are still handed out.
 */
export interface DeliveryListener {
  delivered(partition: number, offset: number): void;
  /**
   * `message`: the failed message as it was sent, to be spooled. The producer does not hold a message once
   * librdkafka has copied it, and rebuilds a failed one from librdkafka's report (see {@link rebuilt}); undefined
   * only for one librdkafka never reported (see {@link KafkaProducer.close}).
   */
  failed(err: KafkaError, message?: Message): void;
}

/** One message of a send() or produce() call; it keeps only what a report of the message does not give back. */
class Single implements Receiver {
  done = false;
  readonly topic: string;
  readonly #partition: number;
  /** The message, when it has headers or a timestamp (see Batch). */
  readonly #kept: Message | undefined;

  constructor(
    readonly firstId: number,
    readonly listener: DeliveryListener,
    msg: Message,
  ) {
    this.topic = msg.topic;
    this.#partition = msg.partition ?? PARTITION_UA;
    if (!isPlain(msg)) this.#kept = msg;
  }

  topicOf(): string {
    return this.topic;
  }

  open(): boolean {
    return !this.done;
  }

  delivered(_id: number, partition: number, offset: number): void {
    this.done = true;
    try {
      this.listener.delivered(partition, offset);
    } catch (err) {
      listenerFailed(this.topic, err);
    }
  }

  messageOf(_id: number, report: RdEvent): Message {
    return this.#kept ?? rebuilt(report, this.topic, this.#partition);
  }

  askedPartition(): boolean {
    return this.#partition !== PARTITION_UA;
  }

  failed(id: number, err: KafkaError, from?: RdEvent | Message): void {
    this.done = true;
    const message = from instanceof RdEvent ? this.messageOf(id, from) : from ?? this.#kept;
    try {
      this.listener.failed(err, message);
    } catch (thrown) {
      listenerFailed(this.topic, thrown);
    }
  }
}

/**
 * A listener threw while hearing its message's report. Logged, and the reports after it in the same event are
 * still handed out: one listener's fault must not leave other messages without an outcome.
 */
function listenerFailed(topic: string, err: unknown): void {
  logRepeated("kafka: a delivery listener failed", "error", "kafka: a delivery listener failed", {
    topic,
    error: err,
  });
}

/** The promise of one produce() call. */
class Settles implements DeliveryListener {
  constructor(
    readonly resolve: (d: Delivery) => void,
    readonly failed: (e: KafkaError) => void,
  ) {}

  delivered(partition: number, offset: number): void {
    this.resolve({ partition, offset: BigInt(offset) });
  }
}

/**
 * One produceBatch() call: its messages have the ids firstId, firstId + 1, ..., so one object serves them all (no
 * closure or promise per message); its promise resolves once every outcome is known.
 *
 * It lets go of the messages once none of them waits for room (librdkafka has copied them): held until their
 * reports, the messages and the request bodies their values are views of outlived the young generation, and the
 * garbage they left in the old one was most of a batch load's memory. A message that fails is taken back from
 * its delivery report (librdkafka's copy); one with headers or a timestamp, which the report does not give back as
 * it was sent, is kept.
 */
class Batch implements Receiver {
  readonly promise: Promise<BatchOutcomes>;
  readonly #resolve: (outcomes: BatchOutcomes) => void;
  /** The messages, until none waits for room; then undefined. */
  #messages: readonly Message[] | undefined;
  /** After that, the messages still open that a report cannot give back, by index. */
  #kept: Map<number, Message> | undefined;
  /** The partition each message asked for, PARTITION_UA for none; undefined when none asked for one. */
  #partitions: Int32Array | undefined;
  readonly length: number;
  /** The id of messages[0]. */
  readonly firstId: number;
  readonly #outcomes: BatchOutcomes;
  /** 1 for each message without an outcome yet. */
  readonly #open: Uint8Array;
  #left: number;
  /** Messages of the batch in the queue of those waiting for room. */
  #waiting = 0;
  #sealed = false;
  #handedOver: (() => void) | undefined;
  /** Called only until the seal, then let go (it may see the messages). */
  #refused: ((index: number, err: KafkaError) => void) | undefined;

  constructor(messages: readonly Message[], firstId: number, opts?: ProduceBatchOptions) {
    const { promise, resolve } = Promise.withResolvers<BatchOutcomes>();
    this.promise = promise;
    this.#resolve = resolve;
    this.#messages = messages;
    const n = messages.length;
    this.length = n;
    // Most batches are of one topic and let librdkafka choose partitions: then nothing per message is kept.
    let topics: string | string[] = messages[0]?.topic ?? "";
    for (let i = 0; i < n; i++) {
      const m = messages[i];
      if (typeof topics === "string" && m.topic !== topics) topics = messages.map((m) => m.topic);
      if (m.partition !== undefined) {
        (this.#partitions ??= new Int32Array(n).fill(PARTITION_UA))[i] = m.partition;
      }
    }
    this.firstId = firstId;
    this.#outcomes = new BatchOutcomes(n, topics, opts?.positions ?? true);
    this.#open = new Uint8Array(n).fill(1);
    this.#left = n;
    this.#handedOver = opts?.handedOver;
    this.#refused = opts?.refused;
  }

  /** One more of its messages waits for room. */
  waits(): void {
    this.#waiting++;
  }

  /** `count` of its waiting messages were handed over, or failed. */
  stopsWaiting(count: number): void {
    this.#waiting -= count;
    this.#checkHandedOver();
  }

  /** Every message of the batch has been handed over or queued to wait. */
  seal(): void {
    this.#sealed = true;
    this.#refused = undefined;
    this.#checkHandedOver();
  }

  /** The messages, while some wait for room (the producer hands them over from here). */
  get messages(): readonly Message[] {
    if (this.#messages === undefined) throw new Error("kafka producer: a batch's messages were let go");
    return this.#messages;
  }

  #checkHandedOver(): void {
    if (!this.#sealed || this.#waiting > 0) return;
    if (this.#messages !== undefined) this.#letGo(this.#messages);
    if (this.#handedOver === undefined) return;
    const call = this.#handedOver;
    this.#handedOver = undefined;
    call();
  }

  get done(): boolean {
    return this.#left === 0;
  }

  #letGo(messages: readonly Message[]): void {
    this.#messages = undefined;
    for (let i = 0; i < messages.length; i++) {
      const m = messages[i];
      if (this.#open[i] === 1 && !isPlain(m)) {
        (this.#kept ??= new Map()).set(i, m);
      }
    }
  }

  topicOf(id: number): string {
    return this.#outcomes.topic(id - this.firstId);
  }

  open(id: number): boolean {
    return this.#open[id - this.firstId] === 1;
  }

  delivered(id: number, partition: number, offset: number): void {
    const i = id - this.firstId;
    if (this.#outcomes.partitions.length > 0) {
      this.#outcomes.partitions[i] = partition;
      this.#outcomes.offsets[i] = offset;
    }
    this.#settle(i);
  }

  messageOf(id: number, report: RdEvent): Message {
    const i = id - this.firstId;
    return this.#messages?.[i] ?? this.#kept?.get(i) ??
      rebuilt(report, this.#outcomes.topic(i), this.#partitions?.[i] ?? PARTITION_UA);
  }

  askedPartition(id: number): boolean {
    return (this.#partitions?.[id - this.firstId] ?? PARTITION_UA) !== PARTITION_UA;
  }

  failed(id: number, err: KafkaError, from?: RdEvent | Message): void {
    const i = id - this.firstId;
    const message = from instanceof RdEvent
      ? this.messageOf(id, from)
      : this.#messages?.[i] ?? this.#kept?.get(i) ?? from;
    this.#outcomes.fail(i, err, message);
    // Before the seal, a failure is librdkafka refusing the message as produceBatch hands it over.
    if (!this.#sealed) this.#refused?.(i, err);
    this.#settle(i);
  }

  #settle(i: number): void {
    this.#open[i] = 0;
    this.#kept?.delete(i);
    if (--this.#left === 0) this.#resolve(this.#outcomes);
  }
}

/**
 * A message without headers or a timestamp: rd_kafka_produce and rd_kafka_produce_batch take it (the others go
 * through rd_kafka_produceva), and the report of its failure gives it back whole (see {@link rebuilt}).
 */
function isPlain(m: Message): boolean {
  return !m.headers?.length && m.timestamp === undefined;
}

/**
 * A failed message as librdkafka's report of it gives it back: its value and key (librdkafka's copies, copied
 * out), with the topic and the partition it asked for (PARTITION_UA for none), which its sender kept.
 */
function rebuilt(report: RdEvent, topic: string, partition: number): Message {
  const { value, key } = report.payload();
  const message: Message = { topic, value };
  if (key !== null) message.key = key;
  if (partition !== PARTITION_UA) message.partition = partition;
  return message;
}

/** A message refused with a full queue, waiting for room; it keeps the id it was given. */
interface Waiting {
  msg: Message;
  /** Its value and key bytes, counted against the bound of the waiting queue. */
  bytes: number;
  id: number;
  to: Receiver;
  /** performance.now() after which it fails with _QUEUE_FULL instead of waiting on; Infinity: never. */
  deadline: number;
}

/** How a message meets a full local queue. */
export interface ProduceOptions {
  /**
   * How long it may wait for room, in ms; once over, it fails with _QUEUE_FULL (-184). 0 fails at once. Expiry is
   * checked on the rounds of the producer's event loop (at least every 100 ms), at most every 50 ms, so a wait
   * may last up to 150 ms longer.
   * @default Infinity
   */
  fullQueueWaitMs?: number;
}

/** How produceBatch meets a full local queue. */
export interface ProduceBatchOptions extends ProduceOptions {
  /**
   * Called once no message of the batch waits for room any more (each is in librdkafka, or failed), so that a
   * caller may hold its own client back while the queue is full.
   */
  handedOver?: () => void;
  /**
   * Called before produceBatch returns for each message librdkafka refused at once (its outcome carries the same
   * error), so that a caller that answers before the reports can still answer with it.
   */
  refused?: (index: number, err: KafkaError) => void;
  /**
   * Whether the outcomes give where each delivered message was stored (`partitions`, `offsets`); a caller that
   * does not answer with them saves two arrays per batch held until the reports.
   * @default true
   */
  positions?: boolean;
}

/** One librdkafka producer with a promise per message. */
export class KafkaProducer {
  readonly id: string;
  /** How many messages librdkafka's queue holds at most (queue.buffering.max.messages). */
  readonly queueCapacity: number;
  /** How many value and key bytes may wait for room in the service (queue.buffering.max.kbytes). */
  readonly #maxWaitingBytes: number;
  readonly #lib: RdLibrary;
  readonly #rk: RdProducer;
  readonly #onError?: (err: KafkaError, fatal: boolean) => void;
  readonly #onStats?: (stats: Record<string, unknown>) => void;
  /** Who hears the outcome of the messages handed over or waiting, by slot (see SLOT_SPAN). */
  readonly #receivers: Array<Receiver | undefined> = [];
  readonly #freeSlots: number[] = [];
  /** Messages handed to librdkafka and not reported yet. */
  #inFlight = 0;
  /** Per-message results of one rd_kafka_produce_batch run, reused. */
  #codes = new Int32Array(1024);
  /** Refused with a full queue, in arrival order; [#waitingHead, length) are live. */
  #waiting: Waiting[] = [];
  #waitingHead = 0;
  /** The bytes of the live waiting messages. */
  #waitingBytes = 0;
  /** The earliest finite deadline among the waiting, Infinity when none. */
  #nextExpiry = Infinity;
  /** performance.now() before which no expiry scan runs. */
  #nextScan = 0;
  readonly #idleWaiters = new Set<() => void>();
  /** whenBelow's callers: each is called once the messages in flight or waiting are fewer than its limit. */
  readonly #belowWaiters = new Map<() => void, number>();
  /** The smallest limit among #belowWaiters (Infinity: none), so that a round of reports checks one number. */
  #belowLimit = Infinity;
  readonly #calls = new Set<Promise<unknown>>();
  readonly #acked = new Map<string, number>();
  /** Stops the in-transit and queue-length gauges reading this producer. */
  readonly #unwatch: () => void;
  #running = true;
  #destroyed = false;
  #closing: Promise<void> | null = null;
  readonly #loop: Promise<void>;
  readonly #config: Record<string, string>;
  /**
   * A second producer that sends one record per request, for the records of a batch the broker refused as too
   * large (see #resendAlone); made on first need, with its own event loop. null when it could not be made.
   */
  #lone: { rk: RdProducer; loop: Promise<void> } | null | undefined;
  /** Ids sent again through #lone: refused there too, they are too large for good. */
  readonly #alone = new Set<number>();

  private constructor(
    id: string,
    opts: KafkaProducerOptions,
    lib: RdLibrary,
    rk: RdProducer,
    capacity: { messages: number; bytes: number },
  ) {
    this.id = id;
    this.queueCapacity = capacity.messages;
    this.#maxWaitingBytes = capacity.bytes;
    this.#lib = lib;
    this.#rk = rk;
    this.#config = opts.config;
    this.#onError = opts.onError;
    this.#onStats = opts.onStats;
    // The version as one number, the Go service's value; the label says it in words.
    versionGauge.set({ version: lib.version() }, lib.versionNumber());
    this.#unwatch = watchProducer(this.id, {
      inFlight: () => this.#inFlight,
      queueLength: () => this.queueLength(),
      eventQueueLength: () => this.#destroyed ? 0 : this.#rk.eventQueueLength(),
    });
    this.#loop = this.#run();
  }

  /**
   * Creates a producer; throws an Error naming the bad property when librdkafka refuses the configuration.
   * @example KafkaProducer.open({ id: "p1", config: { "bootstrap.servers": "127.0.0.1:9092" } })
   */
  static open(opts: KafkaProducerOptions): KafkaProducer {
    const lib = RdLibrary.open(opts.libraryPath);
    const conf = buildConfig(lib, opts.config);
    let rk: RdProducer;
    let capacity: { messages: number; bytes: number };
    try {
      // librdkafka's own defaults stand in should the properties ever not read back.
      capacity = {
        messages: Number(conf.get("queue.buffering.max.messages")) || 100_000,
        bytes: (Number(conf.get("queue.buffering.max.kbytes")) || 1_048_576) * 1024,
      };
      rk = lib.newProducer(conf, EVENT_DR | EVENT_ERROR | EVENT_STATS | EVENT_LOG);
    } finally {
      conf.destroy();
    }
    const id = opts.id ?? rk.name();
    log("info", "kafka producer started", { producer_id: id, librdkafka: lib.version() });
    return new KafkaProducer(id, opts, lib, rk, capacity);
  }

  /** Messages handed over and not yet reported (never negative). */
  get inFlight(): number {
    return this.#inFlight;
  }

  /** Messages waiting for room in librdkafka's full queue. */
  get waitingForRoom(): number {
    return this.#waiting.length - this.#waitingHead;
  }

  /** rd_kafka_outq_len. */
  queueLength(): number {
    return this.#destroyed ? 0 : this.#rk.queueLength();
  }

  /**
   * Hands one message to librdkafka; resolves on its delivery report, rejects with a KafkaError.
   * A full local queue makes it wait for deliveries to free room, for up to `fullQueueWaitMs` (see ProduceOptions).
   */
  produce(msg: Message, opts?: ProduceOptions): Promise<Delivery> {
    if (this.#closing !== null) return Promise.reject(this.#fail(this.#closedError(), msg.topic));
    return new Promise<Delivery>((resolve, reject) => this.#send(msg, new Settles(resolve, reject), opts));
  }

  /**
   * {@link produce} without a promise: `listener` hears the outcome, so that a caller with many messages in flight
   * pays one object per message instead of a promise, its resolvers and the reactions chained to it. Returns the
   * error when librdkafka refused the message at once (the listener has heard it already), so that the caller can
   * still answer its client with it.
   */
  send(msg: Message, listener: DeliveryListener, opts?: ProduceOptions): KafkaError | undefined {
    if (this.#closing === null) return this.#send(msg, listener, opts);
    const err = this.#fail(this.#closedError(), msg.topic);
    listener.failed(err, msg);
    return err;
  }

  #send(msg: Message, listener: DeliveryListener, opts?: ProduceOptions): KafkaError | undefined {
    const waitMs = opts?.fullQueueWaitMs ?? Infinity;
    const id = this.#takeSlot();
    const to = new Single(id, listener, msg);
    this.#receivers[id / SLOT_SPAN] = to;
    if (waitMs > 0 && this.#waitingHead < this.#waiting.length) {
      this.#wait(msg, id, to, performance.now() + waitMs); // behind those already waiting, to keep their order
      return undefined;
    }
    const code = this.#handOver(msg, id);
    if (code === ERR.QUEUE_FULL && waitMs > 0) this.#wait(msg, id, to, performance.now() + waitMs);
    else if (code !== 0) return this.#refuse(to, id, code, msg);
    return undefined;
  }

  /**
   * Hands messages to librdkafka in order, with one rd_kafka_produce_batch call per run of messages that share topic
   * and partition and carry neither headers nor a timestamp; the others go one by one as in {@link produce}. Resolves
   * once every message is reported, with one outcome per message in order: its Delivery, or the KafkaError that
   * {@link produce} would have rejected with. A full queue is handled as there: the message and every later one of
   * the batch wait, in order, for room; with `fullQueueWaitMs` 0 each refused message fails with _QUEUE_FULL (-184)
   * and the rest are still tried.
   */
  produceBatch(messages: readonly Message[], opts?: ProduceBatchOptions): Promise<BatchOutcomes> {
    const n = messages.length;
    if (n === 0) return Promise.resolve(new BatchOutcomes(0, ""));
    if (n > SLOT_SPAN) throw new RangeError(`produceBatch: ${n} messages, at most ${SLOT_SPAN} per call`);
    if (this.#closing !== null) {
      const batch = new Batch(messages, 0, opts);
      for (let i = 0; i < n; i++) batch.failed(i, this.#fail(this.#closedError(), messages[i].topic));
      batch.seal();
      return batch.promise;
    }
    const firstId = this.#takeSlot();
    const batch = new Batch(messages, firstId, opts);
    this.#receivers[firstId / SLOT_SPAN] = batch;
    const waitMs = opts?.fullQueueWaitMs ?? Infinity;
    const waits = waitMs > 0;
    let i = 0;
    // Behind those already waiting when there are any, to keep their order.
    const queueBehind = waits && this.#waitingHead < this.#waiting.length;
    while (!queueBehind && i < n) {
      const m = messages[i];
      if (!isPlain(m)) {
        const code = this.#handOver(m, firstId + i);
        if (code === ERR.QUEUE_FULL && waits) break;
        if (code !== 0) this.#refuse(batch, firstId + i, code, m);
        i++;
        continue;
      }
      const stop = this.#runEnd(messages, i);
      const full = this.#handOverRun(messages, i, stop, firstId, batch, waits);
      if (full >= 0) {
        i = full;
        break;
      }
      i = stop;
    }
    // Every message, or those from the first one refused with a full queue on, wait in order.
    if (i < n) {
      const deadline = performance.now() + waitMs;
      for (; i < n; i++) this.#wait(messages[i], firstId + i, batch, deadline);
    }
    batch.seal();
    return batch.promise;
  }

  /**
   * Cluster topics (rd_kafka_metadata, all topics), internal "__*" ones left out, sorted.
   * Rejects with a KafkaError on timeout; the request waits on another thread.
   */
  async listTopics(timeoutMs: number): Promise<string[]> {
    if (this.#closing !== null) throw this.#closedError();
    const call = this.#rk.topicNames(timeoutMs);
    this.#calls.add(call);
    try {
      const { code, names } = await call;
      if (code !== 0) throw this.#error(code);
      return names.filter((n) => !n.startsWith("__")).sort();
    } finally {
      this.#calls.delete(call);
    }
  }

  /**
   * Fails the messages in librdkafka's queues with _PURGE_QUEUE, as a close does; those in flight to a broker
   * wait for its answer or their timeout. A message sent before a connection dropped and queued again for a retry
   * is among them, and may be in Kafka already.
   */
  purgeQueued(): void {
    if (this.#closing !== null) return;
    for (const rk of [this.#rk, this.#lone?.rk]) {
      if (rk === undefined) continue;
      const call = rk.purge(false);
      this.#calls.add(call);
      call.finally(() => this.#calls.delete(call));
    }
  }

  /**
   * Whether a broker answers a metadata request within `timeoutMs`; false too once the producer is closing. Asked
   * again every MIN_PROBE_MS or a fifth of `timeoutMs`: a close waits for the request in progress (librdkafka's
   * thread holds the producer), and one request is all a broker whose connection is up needs.
   */
  async brokerAnswers(timeoutMs: number): Promise<boolean> {
    const deadline = performance.now() + timeoutMs;
    const probeMs = Math.max(MIN_PROBE_MS, timeoutMs / 5);
    for (;;) {
      const left = deadline - performance.now();
      if (this.#closing !== null || left <= 0) return false;
      const askedAt = performance.now();
      const call = this.#rk.metadataProbe(Math.ceil(Math.min(left, probeMs)));
      this.#calls.add(call);
      try {
        if (await call === 0) return true;
      } finally {
        this.#calls.delete(call);
      }
      // Refused before its time (no broker to ask yet): not asked again sooner than probeMs after.
      const early = askedAt + probeMs - performance.now();
      if (early > 0) await new Promise((resolve) => setTimeout(resolve, Math.min(early, left)));
    }
  }

  /** Waits until every accepted message is reported, or the timeout; true when nothing is left in flight. */
  flush(timeoutMs: number): Promise<boolean> {
    if (this.#idle()) return Promise.resolve(true);
    return new Promise<boolean>((resolve) => {
      const done = (): void => {
        clearTimeout(timer);
        resolve(true);
      };
      const timer = setTimeout(() => {
        this.#idleWaiters.delete(done);
        resolve(this.#idle());
      }, Math.min(timeoutMs, MAX_TIMER_MS));
      this.#idleWaiters.add(done);
    });
  }

  /**
   * Waits until fewer than `limit` messages are in flight or waiting for room, or for `timeoutMs`, or until the
   * producer closes; undefined, not a promise, when they are fewer already. The promise resolves to whether they
   * are, so that a caller about to hand over many messages can leave them unread while librdkafka's queue is full.
   */
  whenBelow(limit: number, timeoutMs: number): Promise<boolean> | undefined {
    if (this.#closing !== null || this.#occupancy() < limit) return undefined;
    return new Promise<boolean>((resolve) => {
      const done = (): void => {
        clearTimeout(timer);
        resolve(true);
      };
      const timer = setTimeout(() => {
        this.#belowWaiters.delete(done);
        this.#belowLimit = Infinity;
        for (const other of this.#belowWaiters.values()) this.#belowLimit = Math.min(this.#belowLimit, other);
        resolve(this.#occupancy() < limit);
      }, Math.min(timeoutMs, MAX_TIMER_MS));
      this.#belowWaiters.set(done, limit);
      if (limit < this.#belowLimit) this.#belowLimit = limit;
    });
  }

  /**
   * Test hook: makes librdkafka raise a fabricated fatal error on this producer (rd_kafka_test_fatal_error), which
   * then behaves as after a real one: onError hears it with `fatal` true, what librdkafka holds is purged and, with
   * `enable.idempotence`, every later message fails with _FATAL.
   */
  raiseTestFatalError(reason: string): void {
    if (this.#closing !== null) return;
    const code = this.#rk.testFatalError(ERR.FATAL, reason);
    if (code !== 0) {
      log("warn", "test fatal error not raised", { producer_id: this.id, error: this.#lib.errName(code) });
    }
  }

  /**
   * Flushes up to timeoutMs, then purges what is left (those promises reject with a retryable KafkaError,
   * _PURGE_QUEUE or _PURGE_INFLIGHT), stops the event loop and destroys the producer. Idempotent.
   */
  close(timeoutMs: number): Promise<void> {
    this.#closing ??= this.#shutdown(timeoutMs);
    this.#notifyWaiters(); // whenBelow's callers go on: what they would hand over goes to another producer, or fails
    return this.#closing;
  }

  async #shutdown(timeoutMs: number): Promise<void> {
    if (!await this.flush(timeoutMs)) {
      log("warn", "kafka producer closing with undelivered messages: purging", {
        producer_id: this.id,
        messages: this.#occupancy(),
      });
      this.#rejectWaiting();
      await Promise.all([this.#rk.purge(), this.#lone?.rk.purge()]);
      if (!await this.flush(PURGE_GRACE_MS)) this.#rejectPending();
    }
    this.#running = false;
    this.#rk.wakeUp();
    this.#lone?.rk.wakeUp();
    await Promise.all([this.#loop, this.#lone?.loop]);
    await this.#lone?.rk.destroy();
    await Promise.allSettled(this.#calls);
    this.#unwatch();
    this.#destroyed = true;
    await this.#rk.destroy();
    inTransit.remove({ producer_id: this.id });
    dropStats(this.id);
    log("info", "kafka producer closed", { producer_id: this.id });
  }

  #handOver(msg: Message, id: number, rk = this.#rk): number {
    const code = isPlain(msg)
      ? rk.produce(msg.topic, msg.partition ?? PARTITION_UA, msg.value, msg.key ?? null, id)
      : rk.produceva(msg, id);
    if (code === 0) this.#inFlight++;
    return code;
  }

  /**
   * The broker refuses a whole request for a partition when it is over the topic's `max.message.bytes`, and
   * librdkafka does not split it: records that each fit the topic fail together as too large. Such a record is
   * sent again alone, through #lone, keeping its id; the broker's answer to it alone is its outcome. True when it
   * was handed over again (its report will come from #lone).
   */
  #resendAlone(to: Receiver, id: number, report: RdEvent): boolean {
    if (!this.#running) return false;
    const lone = this.#loneProducer();
    if (lone === null) return false;
    const msg = to.messageOf(id, report);
    if (this.#handOver(msg, id, lone.rk) !== 0) return false;
    this.#inFlight--; // counted again by #handOver
    this.#alone.add(id);
    logRepeated(
      `kafka resend alone ${this.id} ${msg.topic}`,
      "warn",
      "kafka: a request over the topic's max.message.bytes; its records are sent again one by one",
      {
        producer_id: this.id,
        topic: msg.topic,
        hint: "set kafka.batch.size below the topic's max.message.bytes",
      },
    );
    return true;
  }

  #loneProducer(): { rk: RdProducer; loop: Promise<void> } | null {
    if (this.#lone !== undefined) return this.#lone;
    const conf = buildConfig(this.#lib, { ...this.#config, "batch.num.messages": "1", "linger.ms": "0" });
    try {
      const rk = this.#lib.newProducer(conf, EVENT_DR | EVENT_ERROR | EVENT_LOG);
      this.#lone = { rk, loop: this.#runLone(rk) };
    } catch (err) {
      log("error", "kafka: cannot start the producer that sends records one by one", {
        producer_id: this.id,
        error: (err as Error).message,
      });
      this.#lone = null;
    } finally {
      conf.destroy();
    }
    return this.#lone;
  }

  /** The event loop of #lone: its reports go where the main producer's go, by id. */
  async #runLone(rk: RdProducer): Promise<void> {
    const report: DeliveryReport = { id: 0, err: 0, partition: 0, offset: 0 };
    while (this.#running) {
      const ev = await rk.poll(POLL_TIMEOUT_MS);
      if (ev === null) continue;
      try {
        this.#handle(ev, report, Infinity); // few reports: the whole event at once
      } catch (e) {
        log("error", "kafka event loop: event handling failed", { producer_id: this.id, error: e });
      } finally {
        ev.destroy();
      }
    }
  }

  /** A free slot for a new receiver, as the id of its first message. */
  #takeSlot(): number {
    const slot = this.#freeSlots.pop() ?? this.#receivers.length;
    if (slot >= MAX_SLOTS) {
      throw new RangeError(`kafka producer ${this.id}: more than ${MAX_SLOTS} calls in flight`);
    }
    return slot * SLOT_SPAN;
  }

  /** Frees the slot of a receiver whose every message has its outcome. */
  #release(to: Receiver): void {
    const slot = to.firstId / SLOT_SPAN;
    if (this.#receivers[slot] !== to) return;
    this.#receivers[slot] = undefined;
    this.#freeSlots.push(slot);
  }

  /** The end of the run of messages from `start` on that one rd_kafka_produce_batch call can take. */
  #runEnd(messages: readonly Message[], start: number): number {
    const { topic } = messages[start];
    const partition = messages[start].partition ?? PARTITION_UA;
    let end = start + 1;
    for (; end < messages.length; end++) {
      const m = messages[end];
      if (m.topic !== topic || (m.partition ?? PARTITION_UA) !== partition) break;
      if (!isPlain(m)) break;
    }
    return end;
  }

  /**
   * Hands messages[start, end) over in one rd_kafka_produce_batch call. Returns the index of the first message
   * refused with a full queue when it is to wait (it and those after it are not settled), else -1.
   */
  #handOverRun(
    messages: readonly Message[],
    start: number,
    end: number,
    firstId: number,
    batch: Batch,
    waits: boolean,
  ): number {
    if (this.#codes.length < end - start) this.#codes = new Int32Array(2 * (end - start));
    const codes = this.#codes;
    const { topic } = messages[start];
    this.#rk.produceBatch(
      topic,
      messages[start].partition ?? PARTITION_UA,
      messages,
      start,
      end,
      firstId + start,
      codes,
    );
    let waitFrom = -1;
    for (let i = start; i < end; i++) {
      const code = codes[i - start];
      if (code === 0) this.#inFlight++;
      else if (code === ERR.QUEUE_FULL && waits) {
        // librdkafka failed every later message of the run with it too.
        waitFrom = i;
        break;
      } else this.#refuse(batch, firstId + i, code, messages[i]);
    }
    return waitFrom;
  }

  /** {@link #reject} for a message librdkafka refused as it was handed over (see KafkaError.badPartition). */
  #refuse(to: Receiver, id: number, code: number, msg: Message): KafkaError {
    const badPartition = code === ERR.UNKNOWN_PARTITION && msg.partition !== undefined;
    return this.#reject(to, id, code, msg.topic, msg, false, badPartition);
  }

  /** Fails a message that librdkafka refused with `code`; returns the error it failed with. */
  #reject(
    to: Receiver,
    id: number,
    code: number,
    topic: string,
    from?: RdEvent | Message,
    unpartitioned = false,
    badPartition = false,
  ): KafkaError {
    const err = this.#fail(this.#error(code, topic, unpartitioned, badPartition), topic);
    to.failed(id, err, from);
    if (to.done) this.#release(to);
    return err;
  }

  async #run(): Promise<void> {
    const report: DeliveryReport = { id: 0, err: 0, partition: 0, offset: 0 };
    while (this.#running) {
      try {
        await this.#serve(report);
      } catch (e) {
        // A failure here must not end the loop: every pending promise depends on it.
        log("error", "kafka event loop: event handling failed", { producer_id: this.id, error: e });
      }
    }
  }

  /** One round: wait for an event, then handle ready events for up to SLICE_MS. */
  async #serve(report: DeliveryReport): Promise<void> {
    let ev: RdEvent | null = await this.#rk.poll(POLL_TIMEOUT_MS);
    let sliceEnd = performance.now() + SLICE_MS;
    while (ev !== null) {
      try {
        while (!this.#handle(ev, report, sliceEnd)) {
          // Out of time inside a big event: let timers and I/O run, then go on with the same event.
          await this.#rk.queueLengthAsync(); // a pause that lets timers and I/O run
          this.#retryWaiting(performance.now() + SLICE_MS);
          sliceEnd = performance.now() + SLICE_MS;
        }
      } finally {
        ev.destroy();
      }
      if (performance.now() >= sliceEnd) break;
      ev = this.#rk.pollReady();
    }
    this.#retryWaiting(performance.now() + SLICE_MS);
  }

  /** Handles one event until `sliceEnd`; false when a DR event has reports left. */
  #handle(ev: RdEvent, report: DeliveryReport, sliceEnd: number): boolean {
    if (ev.type === EVENT_DR) return this.#deliveries(ev, report, sliceEnd);
    if (ev.type === EVENT_ERROR) this.#reportError(ev.error());
    else if (ev.type === EVENT_STATS) this.#reportStats(ev.stats());
    else if (ev.type === EVENT_LOG) this.#writeLog(ev.log());
    else eventsIgnored.inc();
    return true;
  }

  #deliveries(ev: RdEvent, report: DeliveryReport, sliceEnd: number): boolean {
    let done = true;
    let n = 0;
    // Reports come in runs of one topic: counted per run, then per topic.
    let ackedTopic = "";
    let ackedRun = 0;
    while (ev.nextDelivery(report)) {
      const id = report.id;
      const to = this.#receivers[Math.floor(id / SLOT_SPAN)];
      // Sent again alone already (see #resendAlone): this report is its outcome.
      const alone = this.#alone.size > 0 && this.#alone.delete(id);
      if (
        to !== undefined && to.open(id) &&
        !(report.err === ERR.MSG_SIZE_TOO_LARGE && !alone && this.#resendAlone(to, id, ev))
      ) {
        this.#inFlight--;
        const topic = to.topicOf(id);
        if (report.err === 0) {
          if (topic !== ackedTopic) {
            if (ackedRun > 0) this.#acked.set(ackedTopic, (this.#acked.get(ackedTopic) ?? 0) + ackedRun);
            ackedTopic = topic;
            ackedRun = 0;
          }
          ackedRun++;
          to.delivered(id, report.partition, report.offset);
          if (to.done) this.#release(to);
        } else {
          // A report without a partition: the message never got one (its topic's partitions were never known).
          // Or the partition librdkafka chose for it is gone (its topic deleted, or made again with fewer): sent
          // again, it gets one of the topic as it is now, so it counts as never partitioned.
          const gone = report.err === ERR.UNKNOWN_PARTITION && !to.askedPartition(id);
          this.#reject(to, id, report.err, topic, ev, report.partition < 0 || gone);
        }
      }
      if (++n % CLOCK_EVERY === 0 && performance.now() >= sliceEnd) {
        done = false;
        break;
      }
    }
    if (ackedRun > 0) this.#acked.set(ackedTopic, (this.#acked.get(ackedTopic) ?? 0) + ackedRun);
    for (const [topic, count] of this.#acked) acks.inc({ topic: topicLabel(topic) }, count);
    this.#acked.clear();
    this.#notifyWaiters();
    return done;
  }

  /**
   * Hands over messages that waited for room, oldest first, until the queue is full again or `until`. A stretch
   * of one batch's messages for one partition goes in one rd_kafka_produce_batch call, as produceBatch would.
   */
  #retryWaiting(until: number): void {
    let n = 0;
    const waiting = this.#waiting;
    while (this.#waitingHead < waiting.length) {
      const w = waiting[this.#waitingHead];
      if (w.to instanceof Batch && isPlain(w.msg)) {
        const batch = w.to;
        const start = w.id - batch.firstId;
        const end = this.#waitingRunEnd(batch, start);
        const full = this.#handOverRun(batch.messages, start, end, batch.firstId, batch, true);
        const handed = (full >= 0 ? full : end) - start;
        for (let k = 0; k < handed; k++) this.#waitingBytes -= waiting[this.#waitingHead + k].bytes;
        this.#waitingHead += handed;
        n += handed;
        if (handed > 0) batch.stopsWaiting(handed);
        if (full >= 0) {
          this.#expireIfDue();
          break;
        }
      } else {
        if (!this.#handOverOne(w)) {
          this.#expireIfDue();
          break;
        }
        this.#waitingBytes -= w.bytes;
        this.#waitingHead++;
        n++;
        if (w.to instanceof Batch) w.to.stopsWaiting(1);
      }
      if (n >= CLOCK_EVERY) {
        n = 0;
        if (performance.now() >= until) break;
      }
    }
    if (this.#waitingHead === this.#waiting.length) {
      this.#waiting = [];
      this.#waitingHead = 0;
      this.#waitingBytes = 0;
      this.#nextExpiry = Infinity;
    } else if (this.#waitingHead > 1024 && this.#waitingHead * 2 > this.#waiting.length) {
      this.#waiting = this.#waiting.slice(this.#waitingHead);
      this.#waitingHead = 0;
    }
    this.#notifyWaiters();
  }

  /** Hands over one waiting message; false when the queue is full and it goes on waiting. */
  #handOverOne(w: Waiting): boolean {
    const code = this.#handOver(w.msg, w.id);
    if (code === ERR.QUEUE_FULL) return false;
    if (code !== 0) this.#refuse(w.to, w.id, code, w.msg);
    return true;
  }

  /**
   * The end of the stretch of `batch`'s messages from `start` on that waits at the head of the queue, in order,
   * and that one rd_kafka_produce_batch call can take.
   */
  #waitingRunEnd(batch: Batch, start: number): number {
    const end = this.#runEnd(batch.messages, start);
    const waiting = this.#waiting;
    const head = this.#waitingHead;
    let k = 1;
    while (start + k < end && head + k < waiting.length && waiting[head + k].to === batch) k++;
    return start + k;
  }

  /** Expires waiting messages, at most once per EXPIRY_SCAN_MS: each scan walks the whole waiting queue. */
  #expireIfDue(): void {
    const now = performance.now();
    if (now < this.#nextExpiry || now < this.#nextScan) return;
    this.#nextScan = now + EXPIRY_SCAN_MS;
    this.#expireWaiting(now);
  }

  /** Queues `msg` to wait for room until `deadline` (performance.now() time; Infinity: no bound). */
  #wait(msg: Message, id: number, to: Receiver, deadline: number): void {
    const bytes = msg.value.byteLength + (msg.key?.byteLength ?? 0);
    if (
      deadline !== Infinity &&
      (this.#waiting.length - this.#waitingHead >= MAX_WAITING ||
        this.#waitingBytes + bytes > this.#maxWaitingBytes)
    ) {
      this.#reject(to, id, ERR.QUEUE_FULL, msg.topic, msg);
      return;
    }
    if (deadline < this.#nextExpiry) this.#nextExpiry = deadline;
    this.#waiting.push({ msg, bytes, id, to, deadline });
    this.#waitingBytes += bytes;
    if (to instanceof Batch) to.waits();
  }

  /** Fails, with _QUEUE_FULL, the waiting messages whose deadline has passed; the others keep their order. */
  #expireWaiting(now: number): void {
    const kept: Waiting[] = [];
    let next = Infinity;
    let bytes = 0;
    for (let i = this.#waitingHead; i < this.#waiting.length; i++) {
      const w = this.#waiting[i];
      if (w.deadline <= now) {
        this.#reject(w.to, w.id, ERR.QUEUE_FULL, w.msg.topic, w.msg);
        if (w.to instanceof Batch) w.to.stopsWaiting(1);
      } else {
        kept.push(w);
        bytes += w.bytes;
        if (w.deadline < next) next = w.deadline;
      }
    }
    this.#waiting = kept;
    this.#waitingBytes = bytes;
    this.#waitingHead = 0;
    this.#nextExpiry = next;
  }

  #rejectWaiting(): void {
    for (let i = this.#waitingHead; i < this.#waiting.length; i++) {
      const w = this.#waiting[i];
      this.#reject(w.to, w.id, ERR.PURGE_QUEUE, w.msg.topic, w.msg);
      if (w.to instanceof Batch) w.to.stopsWaiting(1);
    }
    this.#waiting = [];
    this.#waitingHead = 0;
    this.#waitingBytes = 0;
    this.#nextExpiry = Infinity;
  }

  /** Fails, as purged, what librdkafka did not report after a purge (so no promise is left hanging). */
  #rejectPending(): void {
    // Those waiting for room were failed before: every message still open is in librdkafka.
    for (const to of this.#receivers) {
      if (to === undefined) continue;
      const end = to.firstId + (to instanceof Batch ? to.length : 1);
      for (let id = to.firstId; id < end; id++) {
        if (to.open(id)) this.#reject(to, id, ERR.PURGE_QUEUE, to.topicOf(id));
      }
    }
    this.#inFlight = 0;
  }

  #idle(): boolean {
    return this.#inFlight === 0 && this.#waitingHead === this.#waiting.length;
  }

  /** Messages in flight or waiting for room. */
  #occupancy(): number {
    return this.#inFlight + this.#waiting.length - this.#waitingHead;
  }

  /** Tells flush's and whenBelow's callers what they wait for, once it is so. */
  #notifyWaiters(): void {
    if (this.#belowWaiters.size > 0) this.#releaseBelow();
    if (this.#idleWaiters.size === 0 || !this.#idle()) return;
    for (const done of this.#idleWaiters) done();
    this.#idleWaiters.clear();
  }

  /** Calls back the whenBelow callers whose limit the messages in flight or waiting are under (all, once closing). */
  #releaseBelow(): void {
    const occupancy = this.#closing === null ? this.#occupancy() : 0;
    if (occupancy >= this.#belowLimit) return;
    let lowest = Infinity;
    for (const [done, limit] of this.#belowWaiters) {
      if (occupancy >= limit) {
        if (limit < lowest) lowest = limit;
        continue;
      }
      this.#belowWaiters.delete(done);
      done();
    }
    this.#belowLimit = lowest;
  }

  #reportError(e: RdError): void {
    const cause = e.fatal ? this.#rk.fatalError() ?? e : e;
    const name = this.#lib.errName(cause.code);
    const err = new KafkaError(
      cause.code,
      name,
      `kafka: ${cause.reason} (${name})`,
      isRetryable(cause.code),
      this.#lib.errText(cause.code),
    );
    // Refused credentials or certificates do not heal by themselves, unlike a broker that is away.
    const level = e.fatal || isSecurityFailure(cause.code) ? "error" : "warn";
    const fields = {
      producer_id: this.id,
      code: cause.code,
      error: name,
      reason: cause.reason,
      fatal: e.fatal,
    };
    // librdkafka repeats an error on every reconnect (2.12.1 reports all brokers down on every re-bootstrap round,
    // many times a second): one line per error and producer per window, then the count of repeats.
    if (e.fatal) log(level, "kafka error", fields);
    else logRepeated(`kafka error ${this.id} ${cause.code}`, level, "kafka error", fields);
    try {
      this.#onError?.(err, e.fatal);
    } catch (cbErr) {
      log("error", "kafka onError callback failed", { producer_id: this.id, error: cbErr });
    }
  }

  #writeLog(line: RdLog): void {
    // Syslog levels. Debug lines (7) exist only when the user set librdkafka's `debug`, so they are shown as info.
    const level = line.level <= 3 ? "error" : line.level === 4 ? "warn" : "info";
    log(level, "librdkafka", { producer_id: this.id, facility: line.facility, text: line.message });
  }

  #reportStats(json: string): void {
    let stats: Record<string, unknown>;
    try {
      stats = JSON.parse(json);
    } catch (e) {
      log("warn", "kafka: unreadable statistics JSON", { producer_id: this.id, error: e });
      return;
    }
    applyStats(this.id, stats);
    try {
      this.#onStats?.(stats);
    } catch (cbErr) {
      log("error", "kafka onStats callback failed", { producer_id: this.id, error: cbErr });
    }
  }

  #error(code: number, topic?: string, unpartitioned = false, badPartition = false): KafkaError {
    const name = this.#lib.errName(code);
    const text = this.#lib.errText(code);
    const where = topic === undefined ? "" : ` topic "${topic}":`;
    // A partition gone from under a message that did not ask for it: the message itself is fine.
    const partitionGone = unpartitioned && code === ERR.UNKNOWN_PARTITION;
    let when = "";
    if (partitionGone) when = ", the partition chosen for it gone";
    else if (unpartitioned) when = ", before the topic's partitions were known";
    return new KafkaError(
      code,
      name,
      `kafka:${where} ${text} (${name})${when}`,
      isRetryable(code) || partitionGone,
      text,
      unpartitioned,
      badPartition,
    );
  }

  #closedError(): KafkaError {
    const name = this.#lib.errName(ERR.DESTROY);
    const text = this.#lib.errText(ERR.DESTROY);
    return new KafkaError(ERR.DESTROY, name, `kafka: producer ${this.id} is closed (${name})`, true, text);
  }

  /** Counts a failed message in kafka_client_err_cnt and returns its error. */
  #fail(err: KafkaError, topic: string): KafkaError {
    errors.inc({ topic: topicLabel(topic), error: err.errText });
    return err;
  }
}

/** A scratch configuration with the defaults and `config` applied; throws "kafka.<key>: <reason>". */
function buildConfig(lib: RdLibrary, config: Record<string, string>): RdConfig {
  const conf = lib.newConfig();
  for (const [key, value] of Object.entries({ ...LIBRDKAFKA_DEFAULTS, ...config })) {
    const problem = conf.set(key, value);
    if (problem !== null) {
      conf.destroy();
      throw new Error(`kafka.${key}: ${problem}`);
    }
  }
  return conf;
}

/**
 * The most a record adds to its value, key and headers in a message set (librdkafka's
 * RD_KAFKAP_MESSAGE_V2_MAX_OVERHEAD: length, attributes, timestamp and offset deltas, key and value lengths and
 * header count, as varints at their longest). librdkafka refuses a message whose size so counted is over
 * `message.max.bytes`.
 */
export const RECORD_OVERHEAD = 36;

/** A message's size as librdkafka checks it against `message.max.bytes` (rd_kafka_msg_max_wire_size). */
export function recordWireSize(m: Message): number {
  let size = RECORD_OVERHEAD + m.value.byteLength + (m.key?.byteLength ?? 0);
  if (m.headers !== undefined) {
    for (const [name, value] of m.headers) {
      const nameBytes = utf8Length(name);
      size += nameBytes + varintBytes(2 * nameBytes) + value.byteLength + varintBytes(2 * value.byteLength);
    }
  }
  return size;
}

/** Bytes of `text` in UTF-8, as TextEncoder writes it (a lone surrogate as U+FFFD), counted without encoding. */
function utf8Length(text: string): number {
  let bytes = text.length;
  for (let i = 0; i < text.length; i++) {
    const c = text.charCodeAt(i);
    if (c < 0x80) continue;
    if (c < 0x800) bytes += 1;
    else if (
      c >= 0xd800 && c <= 0xdbff && i + 1 < text.length && (text.charCodeAt(i + 1) & 0xfc00) === 0xdc00
    ) {
      bytes += 2; // a pair: two UTF-16 units, four bytes
      i++;
    } else bytes += 2;
  }
  return bytes;
}

/** Bytes of `n` as an unsigned varint (a header's lengths are zigzag varints: 2n for n >= 0). */
function varintBytes(n: number): number {
  let bytes = 1;
  for (; n >= 128; n = Math.floor(n / 128)) bytes++;
  return bytes;
}

/** The librdkafka version string (rd_kafka_version_str). */
export function librdkafkaVersion(libraryPath?: string): string {
  return RdLibrary.open(libraryPath).version();
}

/**
 * Validates librdkafka properties with rd_kafka_conf_set on a scratch configuration.
 * @returns null, or the first problem as "kafka.<key>: <librdkafka's reason>"
 * @example checkKafkaConfig({ "acks": "all" }) // null
 */
export function checkKafkaConfig(config: Record<string, string>, libraryPath?: string): string | null {
  try {
    buildConfig(RdLibrary.open(libraryPath), config).destroy();
    return null;
  } catch (e) {
    return e instanceof Error ? e.message : String(e);
  }
}

/**
 * Whether librdkafka can create a producer from `config`: the files it names (`ssl.*.location`, a keytab) are
 * read only then, not when the properties are set. null when it can, else librdkafka's reason. The producer is
 * destroyed at once; nothing is produced.
 */
export async function checkKafkaProducer(
  config: Record<string, string>,
  libraryPath?: string,
): Promise<string | null> {
  const lib = RdLibrary.open(libraryPath);
  const conf = buildConfig(lib, config);
  let rk: RdProducer;
  try {
    rk = lib.newProducer(conf, EVENT_LOG);
  } catch (e) {
    return e instanceof Error ? e.message : String(e);
  } finally {
    conf.destroy();
  }
  await rk.destroy();
  return null;
}

/** Reads a property back (rd_kafka_conf_get) after applying the defaults and `config`; null when unknown. */
export function effectiveKafkaConfig(
  config: Record<string, string>,
  key: string,
  libraryPath?: string,
): string | null {
  const conf = buildConfig(RdLibrary.open(libraryPath), config);
  try {
    return conf.get(key);
  } finally {
    conf.destroy();
  }
}
