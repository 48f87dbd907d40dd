/**
 * librdkafka statistics JSON (statistics.interval.ms) to the rdkafka_global / rdkafka_broker / rdkafka_topic /
 * rdkafka_partition gauges. The metric names are librdkafka's field names (see librdkafka STATISTICS.md).
 */
import type { Gauge } from "prom-client";
import { rdkafkaBroker, rdkafkaGlobal, rdkafkaPartition, rdkafkaTopic, topicSeries } from "../metrics.ts";

const GLOBAL = [
  "replyq",
  "msg_cnt",
  "msg_size",
  "msg_max",
  "msg_size_max",
  "tx",
  "tx_bytes",
  "rx",
  "rx_bytes",
  "txmsgs",
  "txmsg_bytes",
  "rxmsgs",
  "rxmsg_bytes",
  "metadata_cache_cnt",
];
/**
 * The Go service's names for two global fields, misspelt there (so always 0): served too, with the values of the
 * fields they meant, so that its dashboards find their series.
 */
const GO_GLOBAL_NAMES: Readonly<Record<string, string>> = {
  txmsgs_bytes: "txmsg_bytes",
  rxmsgs_bytes: "rxmsg_bytes",
};
const BROKER = [
  "outbuf_cnt",
  "outbuf_msg_cnt",
  "waitresp_cnt",
  "waitresp_msg_cnt",
  "tx",
  "txbytes",
  "txerrs",
  "txretries",
  "req_timeouts",
  "rx",
  "rxbytes",
  "rxerrs",
  "connects",
  "disconnects",
];
const BROKER_WINDOWED = ["int_latency", "outbuf_latency", "rtt", "throttle"];
const TOPIC_WINDOWED = ["batchsize", "batchcnt"];
const WINDOWS = ["min", "max", "avg", "p50", "p95", "p99"];
const PARTITION = [
  "msgq_cnt",
  "msgq_bytes",
  "xmit_msgq_cnt",
  "xmit_msgq_bytes",
  "msgs_inflight",
  "txmsgs",
  "txbytes",
  "msgs",
];

type Labels = Record<string, string>;
type Obj = Record<string, unknown>;

/** Label sets written by the last applyStats of each producer, so that vanished brokers and topics are removed. */
const written = new Map<string, Map<string, { gauge: Gauge; labels: Labels }>>();

function obj(v: unknown): Obj | null {
  return typeof v === "object" && v !== null && !Array.isArray(v) ? v as Obj : null;
}

/**
 * Sets the rdkafka_* gauges of `producerId` from one statistics object and removes the label sets it no
 * longer mentions.
 * @example applyStats("p1", JSON.parse(statsJson))
 */
export function applyStats(producerId: string, stats: Obj): void {
  const now = new Map<string, { gauge: Gauge; labels: Labels }>();
  const set = (gauge: Gauge, labels: Labels, value: unknown): void => {
    if (typeof value !== "number" || !Number.isFinite(value)) return;
    gauge.set(labels, value);
    // Each gauge has its own set of label names, so the labels alone identify the series.
    now.set(JSON.stringify(labels), { gauge, labels });
  };
  const producer_id = producerId;

  for (const metric of GLOBAL) set(rdkafkaGlobal, { producer_id, metric }, stats[metric]);
  for (const [metric, field] of Object.entries(GO_GLOBAL_NAMES)) {
    set(rdkafkaGlobal, { producer_id, metric }, stats[field]);
  }

  for (const b of Object.values(obj(stats.brokers) ?? {})) {
    const broker = obj(b);
    if (broker === null) continue;
    const name = String(broker.name ?? "");
    const labels = (metric: string, window = ""): Labels => ({ producer_id, metric, broker: name, window });
    set(rdkafkaBroker, labels("state_up"), broker.state === "UP" ? 1 : 0);
    for (const metric of BROKER) set(rdkafkaBroker, labels(metric), broker[metric]);
    for (const metric of BROKER_WINDOWED) {
      const histogram = obj(broker[metric]);
      if (histogram === null) continue;
      for (const window of WINDOWS) set(rdkafkaBroker, labels(metric, window), histogram[window]);
    }
  }

  for (const t of Object.values(obj(stats.topics) ?? {})) {
    const topicStats = obj(t);
    if (topicStats === null) continue;
    const topic = String(topicStats.topic ?? "");
    // Only topics that have counters of their own get gauges: the same bound on series.
    if (!topicSeries.has(topic)) continue;
    for (const metric of TOPIC_WINDOWED) {
      const histogram = obj(topicStats[metric]);
      if (histogram === null) continue;
      for (const window of WINDOWS) {
        set(rdkafkaTopic, { producer_id, metric, topic, window }, histogram[window]);
      }
    }
    for (const [partition, p] of Object.entries(obj(topicStats.partitions) ?? {})) {
      const partitionStats = obj(p);
      if (partitionStats === null) continue;
      for (const metric of PARTITION) {
        set(rdkafkaPartition, { producer_id, metric, topic, partition }, partitionStats[metric]);
      }
    }
  }

  for (const [key, { gauge, labels }] of written.get(producerId) ?? []) {
    if (!now.has(key)) gauge.remove(labels);
  }
  written.set(producerId, now);
}

/** Removes every rdkafka_* label set of `producerId` (when the producer is closed). */
export function dropStats(producerId: string): void {
  for (const { gauge, labels } of written.get(producerId)?.values() ?? []) gauge.remove(labels);
  written.delete(producerId);
}
