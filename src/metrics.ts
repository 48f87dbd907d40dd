/**
 * Every metric of the service, defined once. Names, types and labels of the Go service are kept
 * (docs/compatibility.md).
 */
import client from "prom-client";
import { TopicSeries } from "./topic_series.ts";

/** The registry served on `/metrics`. */
export const registry = new client.Registry();
client.collectDefaultMetrics({ register: registry });

const r = [registry];

// prom-client reads these three from /proc/self/status, which Deno lets only --allow-all read: with the service's
// permissions they read 0. The resident size comes from the runtime instead; the other two are not served rather
// than served as 0.
for (const name of ["process_resident_memory_bytes", "process_virtual_memory_bytes", "process_heap_bytes"]) {
  registry.removeSingleMetric(name);
}
new client.Gauge({
  name: "process_resident_memory_bytes",
  help: "Resident memory size in bytes.",
  registers: r,
  collect() {
    this.set(Deno.memoryUsage().rss);
  },
});

/**
 * A counter child for hot paths. prom-client's own child `inc()` hashes the label set on every call (about
 * 1.3 µs here, per HTTP request and per record); this one adds to a plain number, handed over to prom-client
 * whenever the counter is read (its `collect` hook runs on every /metrics scrape and every `get()`).
 */
export class HotCount {
  #pending = 0;
  readonly #child: client.Counter.Internal;

  constructor(child: client.Counter.Internal) {
    this.#child = child;
  }

  inc(count = 1): void {
    this.#pending += count;
  }

  flush(): void {
    if (this.#pending === 0) return;
    this.#child.inc(this.#pending);
    this.#pending = 0;
  }
}

/** A prom-client Counter whose `hot(...labels)` children are HotCounts (one per label set). */
export class HotCounter<T extends string> extends client.Counter<T> {
  readonly #hot = new Map<string, HotCount>();

  constructor(config: client.CounterConfiguration<T>) {
    super({ ...config, collect: () => this.flushHot() });
  }

  hot(...labels: string[]): HotCount {
    const key = labels.join("\u0000");
    let child = this.#hot.get(key);
    if (child === undefined) {
      child = new HotCount(this.labels(...labels));
      this.#hot.set(key, child);
    }
    return child;
  }

  flushHot(): void {
    for (const child of this.#hot.values()) child.flush();
  }
}

/**
 * A histogram for hot paths with one label, its buckets counted in plain numbers: prom-client's `observe()` hashes
 * the label set on every call (about 1.9 µs here, per HTTP request). Registered as a custom metric; read, it gives
 * what a prom-client Histogram would.
 */
export class HotHistogram {
  readonly type = "histogram";
  readonly aggregator = "sum";
  readonly #children = new Map<string, HotBuckets>();

  constructor(
    readonly name: string,
    readonly help: string,
    readonly labelName: string,
    readonly upperBounds: readonly number[],
    registries: client.Registry[],
  ) {
    for (const registry of registries) registry.registerMetric(this as unknown as client.Metric);
  }

  /** The child for one label value. */
  child(labelValue: string): HotBuckets {
    let child = this.#children.get(labelValue);
    if (child === undefined) {
      child = new HotBuckets(this.upperBounds);
      this.#children.set(labelValue, child);
    }
    return child;
  }

  get(): Promise<client.MetricObjectWithValues<client.MetricValueWithName<string>>> {
    const values: client.MetricValueWithName<string>[] = [];
    for (const [labelValue, child] of this.#children) {
      let cumulative = 0;
      for (let i = 0; i <= this.upperBounds.length; i++) {
        cumulative += child.counts[i];
        const le = i < this.upperBounds.length ? this.upperBounds[i] : "+Inf";
        values.push({
          metricName: `${this.name}_bucket`,
          labels: { le, [this.labelName]: labelValue },
          value: cumulative,
        });
      }
      const labels = { [this.labelName]: labelValue };
      values.push({ metricName: `${this.name}_sum`, labels, value: child.sum });
      values.push({ metricName: `${this.name}_count`, labels, value: child.count });
    }
    return Promise.resolve({
      name: this.name,
      help: this.help,
      type: "histogram" as unknown as client.MetricType,
      values,
      aggregator: this.aggregator,
      collect: () => {},
    });
  }

  reset(): void {
    this.#children.clear();
  }
}

/** The buckets of one HotHistogram child. */
export class HotBuckets {
  /** Per bucket (the last one is +Inf), not cumulative. */
  readonly counts: Float64Array;
  sum = 0;
  count = 0;

  constructor(readonly upperBounds: readonly number[]) {
    this.counts = new Float64Array(upperBounds.length + 1);
  }

  observe(value: number): void {
    const bounds = this.upperBounds;
    let i = 0;
    while (i < bounds.length && value > bounds[i]) i++;
    this.counts[i]++;
    this.sum += value;
    this.count++;
  }
}

export const requests = new HotCounter({
  name: "kafka_client_requests_cnt",
  help: "Messages accepted for production, by topic.",
  labelNames: ["topic"],
  registers: r,
});
export const acks = new client.Counter({
  name: "kafka_client_ack_cnt",
  help: "Messages acknowledged by Kafka, by topic.",
  labelNames: ["topic"],
  registers: r,
});
export const errors = new client.Counter({
  name: "kafka_client_err_cnt",
  help: "Delivery errors reported by librdkafka, by topic and librdkafka's error text.",
  labelNames: ["topic", "error"],
  registers: r,
});
export const dropped = new client.Counter({
  name: "kafka_client_dropped_cnt",
  help:
    "Messages given up on (non-retryable error, or no WAL for the topic), by topic and librdkafka's error " +
    "text (wal_full, wal_error: the WAL refused them).",
  labelNames: ["topic", "error"],
  registers: r,
});
/** What the gauges below read from a producer when scraped. */
export interface WatchedProducer {
  /** Messages handed to librdkafka and not yet reported. */
  inFlight: () => number;
  /** rd_kafka_outq_len. */
  queueLength: () => number;
  /** Events librdkafka has ready for the service and that it has not polled yet. */
  eventQueueLength: () => number;
}

/** Live producers, by producer_id: the gauges below read them when scraped, not on every message. */
const watched = new Map<string, WatchedProducer>();

/** Lets the producer gauges read a producer; call the returned function before it is gone. */
export function watchProducer(id: string, producer: WatchedProducer): () => void {
  watched.set(id, producer);
  return () => void watched.delete(id);
}

/** `read` of every live producer, summed. */
function sumOverProducers(read: (p: WatchedProducer) => number): number {
  let sum = 0;
  for (const p of watched.values()) sum += read(p);
  return sum;
}

export const inTransit = new client.Gauge({
  name: "kafka_client_messages_in_transit",
  help: "Messages handed to librdkafka and not yet reported delivered or failed.",
  labelNames: ["producer_id"],
  registers: r,
  collect() {
    for (const [id, p] of watched) this.set({ producer_id: id }, p.inFlight());
  },
});
export const cbStateChanges = new client.Counter({
  name: "producer_cb_state",
  help: "Circuit breaker state changes, by state entered.",
  labelNames: ["name", "state"],
  registers: r,
});
export const cbCurrentState = new client.Gauge({
  name: "kafka_cb_current_state",
  help: "Circuit breaker state: 0 closed, 0.5 half-open, 1 open.",
  registers: r,
});
export const kafkaQueueLen = new client.Gauge({
  name: "producer_kafka_queue_len",
  help: "Messages and requests waiting in librdkafka's queues (rd_kafka_outq_len), all producers together.",
  registers: r,
  collect() {
    this.set(sumOverProducers((p) => p.queueLength()));
  },
});
export const kafkaEventsQueueLen = new client.Gauge({
  name: "kafka_events_queue_len",
  help:
    "Delivery reports and other librdkafka events ready for the service and not yet handled, all producers.",
  registers: r,
  collect() {
    this.set(sumOverProducers((p) => p.eventQueueLength()));
  },
});
export const eventsIgnored = new client.Counter({
  name: "kafka_client_events_ignored_cnt",
  help: "librdkafka events of a kind the service does not act on.",
  registers: r,
});
export const librdkafkaVersion = new client.Gauge({
  name: "producer_kafka_librdkafka_version",
  help: "The librdkafka version in use: in words as a label, as rd_kafka_version()'s number as the value.",
  labelNames: ["version"],
  registers: r,
});
export const activeProducer = new client.Gauge({
  name: "kafka_active_producer",
  help: "1 for the producer taking new messages, 0 for one that is draining.",
  labelNames: ["producer_id"],
  registers: r,
});
export const lastProducerStart = new client.Gauge({
  name: "kafka_last_producer_start_time",
  help: "Unix time in seconds when the current producer was started.",
  registers: r,
});
export const producerReplaced = new client.Counter({
  name: "kafka_producer_replaced_total",
  help:
    "librdkafka producers replaced by a new one, by reason: reload (SIGHUP) or fatal (a fatal librdkafka error).",
  labelNames: ["reason"],
  registers: r,
});
export const certExpiration = new client.Gauge({
  name: "kafka_cert_expiration_time",
  help: "Unix time in seconds when the client certificate (ssl.certificate.location) expires.",
  registers: r,
});
export const caExpiration = new client.Gauge({
  name: "kafka_ca_expiration_time",
  help: "Unix time in seconds when the CA certificate (ssl.ca.location) expires.",
  registers: r,
});
export const rdkafkaGlobal = new client.Gauge({
  name: "rdkafka_global",
  help: "librdkafka statistics: top-level numbers.",
  labelNames: ["producer_id", "metric"],
  registers: r,
});
export const rdkafkaBroker = new client.Gauge({
  name: "rdkafka_broker",
  help: "librdkafka statistics: per broker.",
  labelNames: ["producer_id", "metric", "broker", "window"],
  registers: r,
});
export const rdkafkaTopic = new client.Gauge({
  name: "rdkafka_topic",
  help: "librdkafka statistics: per topic.",
  labelNames: ["producer_id", "metric", "topic", "window"],
  registers: r,
});
export const rdkafkaPartition = new client.Gauge({
  name: "rdkafka_partition",
  help: "librdkafka statistics: per partition.",
  labelNames: ["producer_id", "metric", "topic", "partition"],
  registers: r,
});

export const walWrites = new client.Counter({
  name: "wal_writes",
  help: "Records written to the WAL, by topic.",
  labelNames: ["topic"],
  registers: r,
});
export const walReads = new client.Counter({
  name: "wal_reads",
  help: "Records read back from the WAL for replay, by topic.",
  labelNames: ["topic"],
  registers: r,
});
export const walDeletes = new client.Counter({
  name: "wal_deletes",
  help: "Records removed from the WAL (delivered or dropped).",
  registers: r,
});
export const walMessages = new client.Gauge({
  name: "wal_messages",
  help: "Records in the WAL not yet delivered.",
  registers: r,
});
export const walBytes = new client.Gauge({
  name: "wal_bytes",
  help: "Bytes held by the WAL (segment files, or memory when in_memory).",
  registers: r,
});
export const walMaxBytes = new client.Gauge({
  name: "wal_max_bytes",
  help:
    "producer.wal.max_bytes: past it (wal_bytes + wal_unwritten_bytes + wal_reserved_bytes), requests that need the WAL get 503.",
  registers: r,
});

let reservedWalBytes: () => number = () => 0;
/** Where wal_reserved_bytes is read from at each scrape: the facade that holds the reservations. */
export function watchWalReservations(read: () => number): void {
  reservedWalBytes = read;
}
export const walReservedBytes = new client.Gauge({
  name: "wal_reserved_bytes",
  help:
    "WAL room held for records in librdkafka or waiting for it, in case their delivery fails (counted against producer.wal.max_bytes).",
  registers: r,
  collect() {
    this.set(reservedWalBytes());
  },
});
export const walOldestAge = new client.Gauge({
  name: "wal_oldest_record_age_seconds",
  help: "Age of the oldest record still in the WAL; 0 when empty.",
  registers: r,
});
export const walCorrupt = new client.Counter({
  name: "wal_corrupt_records",
  help: "WAL lines skipped at recovery because of a bad checksum or bad JSON.",
  registers: r,
});
export const walReplayed = new client.Counter({
  name: "wal_replayed",
  help: "Records replayed from the WAL and acknowledged by Kafka.",
  registers: r,
});
export const keyOrderBroken = new client.Counter({
  name: "kafka_key_order_broken_total",
  help:
    "Under producer.wal.preserve_order: key, failed records spooled after a newer record of their key reached Kafka.",
  registers: r,
});
export const walFsyncs = new client.Counter({
  name: "wal_fsyncs",
  help: "Group commits (one write and one fdatasync each).",
  registers: r,
});
export const walWriteQueue = new client.Gauge({
  name: "wal_write_batch_ch_len",
  help: "Records appended to the WAL and waiting for the next group commit (its write and fdatasync).",
  registers: r,
});
export const walDeleteQueue = new client.Gauge({
  name: "wal_delete_batch_ch_len",
  help: "Acks (records delivered) waiting for the next group commit to be written to the WAL.",
  registers: r,
});
export const walUnwrittenRecords = new client.Gauge({
  name: "wal_unwritten_records",
  help: "Records held in memory since a WAL write failed; written once the disk recovers.",
  registers: r,
});
export const walUnwrittenBytes = new client.Gauge({
  name: "wal_unwritten_bytes",
  help: "Bytes of the records held in memory since a write failed (counted against producer.wal.max_bytes).",
  registers: r,
});
/** "Failing" rather than "writable": a service without a WAL serves this gauge as 0 too, which must read as healthy. */
export const walWriteFailing = new client.Gauge({
  name: "wal_write_failing",
  help: "1 from a failed WAL write until a write works again (records held in memory or not), else 0.",
  registers: r,
});

const grpcLabels = ["grpc_type", "grpc_service", "grpc_method"];
/** Latency buckets of gRPC and HTTP alike, so that their dashboards compare. */
const LATENCY_BUCKETS = [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10];
export const grpcStarted = new client.Counter({
  name: "grpc_server_started_total",
  help: "RPCs started on the server.",
  labelNames: grpcLabels,
  registers: r,
});
export const grpcHandled = new client.Counter({
  name: "grpc_server_handled_total",
  help: "RPCs completed on the server, regardless of success or failure.",
  labelNames: [...grpcLabels, "grpc_code"],
  registers: r,
});
export const grpcReceived = new client.Counter({
  name: "grpc_server_msg_received_total",
  help: "Stream messages received on the server.",
  labelNames: grpcLabels,
  registers: r,
});
export const grpcSent = new client.Counter({
  name: "grpc_server_msg_sent_total",
  help: "Stream messages sent by the server.",
  labelNames: grpcLabels,
  registers: r,
});
export const grpcHandling = new client.Histogram({
  name: "grpc_server_handling_seconds",
  help: "Time from the start of an RPC to its end.",
  labelNames: grpcLabels,
  buckets: LATENCY_BUCKETS,
  registers: r,
});

export const httpRequests = new HotCounter({
  name: "http_requests_total",
  help: "HTTP requests on the produce listener, by route and status code.",
  labelNames: ["route", "code"],
  registers: r,
});
export const httpDuration = new HotHistogram(
  "http_request_duration_seconds",
  "Time from an HTTP request's arrival on the produce listener to its response (headers), by route.",
  "route",
  LATENCY_BUCKETS,
  r,
);

export const recordsRefused = new HotCounter({
  name: "ka_records_refused_total",
  help: "Records refused one by one, by listener (http: a record of an NDJSON batch; grpc: a ProdRq of a " +
    "Produce stream) and the status in its error. A single HTTP message's refusal is its request's code in " +
    "http_requests_total.",
  labelNames: ["listener", "status"],
  registers: r,
});

export const authRequests = new client.Counter({
  name: "ka_auth_requests_total",
  help: "Authentications and topic refusals, by principal (empty when none was found) and result " +
    "(ok, unauthenticated, forbidden); counted only when auth.tokens_file is set.",
  labelNames: ["principal", "result"],
  registers: r,
});

/** The topics that have series of their own; the rest are counted under OTHER_TOPICS (see TopicSeries). */
export const topicSeries = new TopicSeries();
/** Every metric with a `topic` label that is counted per message. */
const PER_TOPIC = [requests, acks, errors, dropped, walWrites, walReads];
/**
 * How often, at most, idle topics' series are looked for. The look happens on a use, so no timer is needed; the
 * clock is read once every SWEEP_CHECK_EVERY uses, not on each (this runs for every message).
 */
const SWEEP_EVERY_MS = 60_000;
const SWEEP_CHECK_EVERY = 1024;
let nextSweep = performance.now() + SWEEP_EVERY_MS;
let usesToCheck = SWEEP_CHECK_EVERY;

/**
 * The `topic` label value to count `topic` under: the topic itself, or OTHER_TOPICS past the bound.
 * @example acks.inc({ topic: topicLabel(message.topic) })
 */
export function topicLabel(topic: string): string {
  const label = topicSeries.label(topic);
  if (--usesToCheck === 0) {
    usesToCheck = SWEEP_CHECK_EVERY;
    const now = performance.now();
    if (now >= nextSweep) {
      nextSweep = now + SWEEP_EVERY_MS;
      removeIdleTopics().catch(() => {});
    }
  }
  return label;
}

/** Removes the series of the topics that have been idle for TopicSeries' idleMs. */
export async function removeIdleTopics(): Promise<void> {
  const idle = new Set(topicSeries.sweep());
  if (idle.size === 0) return;
  for (const metric of PER_TOPIC) {
    for (const { labels } of (await metric.get()).values) {
      const topic = String(labels.topic);
      // Used again since the sweep: its series is live.
      if (idle.has(topic) && !topicSeries.has(topic)) metric.remove(labels);
    }
  }
}
