/** applyStats against a statistics sample taken from librdkafka 2.0.2 producing to its mock cluster. */
import assert from "node:assert/strict";
import { applyStats, dropStats } from "../src/kafka/stats.ts";
import {
  rdkafkaBroker,
  rdkafkaGlobal,
  rdkafkaPartition,
  rdkafkaTopic,
  topicLabel,
  topicSeries,
} from "../src/metrics.ts";
import type { Gauge } from "prom-client";

type Obj = Record<string, unknown>;
// deno-lint-ignore no-explicit-any
type Json = any;

const sample: Json = JSON.parse(
  await Deno.readTextFile(new URL("./fixtures/rdkafka_stats.json", import.meta.url)),
);

async function series(gauge: Gauge, producerId: string): Promise<Array<{ labels: Obj; value: number }>> {
  const all = (await gauge.get()).values;
  return all.filter((v) => v.labels.producer_id === producerId).map((v) => ({
    labels: v.labels,
    value: v.value,
  }));
}

async function value(gauge: Gauge, labels: Record<string, string>): Promise<number | undefined> {
  const all = (await gauge.get()).values;
  const hit = all.find((v) => Object.entries(labels).every(([k, x]) => v.labels[k] === x));
  return hit?.value;
}

const brokerName: string = Object.keys(sample.brokers)[0];
const broker = sample.brokers[brokerName];
const topicName: string = Object.keys(sample.topics)[0];
const topic = sample.topics[topicName];
// Gauges are kept for topics the service counts messages of: this one has been produced to.
topicLabel(topicName);

Deno.test("applyStats sets global, broker, topic and partition gauges from a real statistics sample", async () => {
  const id = "stats-sample";
  try {
    applyStats(id, sample);
    assert.equal(await value(rdkafkaGlobal, { producer_id: id, metric: "txmsgs" }), sample.txmsgs);
    assert.equal(await value(rdkafkaGlobal, { producer_id: id, metric: "txmsg_bytes" }), sample.txmsg_bytes);
    // Under the Go service's (misspelt) names too, with the values it meant.
    assert.equal(await value(rdkafkaGlobal, { producer_id: id, metric: "txmsgs_bytes" }), sample.txmsg_bytes);
    assert.equal(await value(rdkafkaGlobal, { producer_id: id, metric: "rxmsgs_bytes" }), sample.rxmsg_bytes);
    assert.equal(await value(rdkafkaGlobal, { producer_id: id, metric: "msg_cnt" }), sample.msg_cnt);

    const b = { producer_id: id, broker: brokerName };
    assert.equal(await value(rdkafkaBroker, { ...b, metric: "state_up", window: "" }), 1);
    assert.equal(await value(rdkafkaBroker, { ...b, metric: "tx", window: "" }), broker.tx);
    assert.equal(await value(rdkafkaBroker, { ...b, metric: "rtt", window: "avg" }), broker.rtt.avg);
    assert.equal(await value(rdkafkaBroker, { ...b, metric: "rtt", window: "p99" }), broker.rtt.p99);
    assert.equal(
      await value(rdkafkaBroker, { ...b, metric: "outbuf_latency", window: "max" }),
      broker.outbuf_latency.max,
    );
    assert.equal(
      await value(rdkafkaBroker, { ...b, metric: "throttle", window: "p50" }),
      broker.throttle.p50,
    );
    assert.equal(await value(rdkafkaBroker, { ...b, metric: "state", window: "" }), undefined);

    const t = { producer_id: id, topic: topicName };
    assert.equal(
      await value(rdkafkaTopic, { ...t, metric: "batchsize", window: "avg" }),
      topic.batchsize.avg,
    );
    assert.equal(await value(rdkafkaTopic, { ...t, metric: "batchcnt", window: "p95" }), topic.batchcnt.p95);

    const partitions = Object.keys(topic.partitions);
    assert.ok(partitions.length > 1, "the sample has partitions");
    for (const partition of partitions) {
      const p = topic.partitions[partition];
      assert.equal(await value(rdkafkaPartition, { ...t, partition, metric: "txmsgs" }), p.txmsgs);
      assert.equal(await value(rdkafkaPartition, { ...t, partition, metric: "msgq_cnt" }), p.msgq_cnt);
    }
    const total = partitions.reduce((n, k) => n + topic.partitions[k].txmsgs, 0);
    assert.ok(total > 0, "the sample carries traffic");
  } finally {
    dropStats(id);
  }
});

Deno.test("applyStats removes series of brokers and topics that left; dropStats removes the producer's series", async () => {
  const id = "stats-stale";
  const other = "stats-other";
  try {
    applyStats(id, sample);
    applyStats(other, sample);
    const next: Json = structuredClone(sample);
    delete next.brokers[brokerName];
    next.brokers["10.0.0.9:9092/7"] = { ...broker, name: "10.0.0.9:9092/7", state: "DOWN" };
    delete next.topics[topicName];
    next.txmsgs = sample.txmsgs + 5;
    applyStats(id, next);

    assert.equal(await value(rdkafkaGlobal, { producer_id: id, metric: "txmsgs" }), sample.txmsgs + 5);
    assert.equal(
      await value(rdkafkaBroker, { producer_id: id, broker: brokerName, metric: "tx" }),
      undefined,
    );
    assert.equal(
      await value(rdkafkaBroker, { producer_id: id, broker: "10.0.0.9:9092/7", metric: "state_up" }),
      0,
    );
    assert.equal((await series(rdkafkaTopic, id)).length, 0);
    assert.equal((await series(rdkafkaPartition, id)).length, 0);
    assert.ok((await series(rdkafkaTopic, other)).length > 0, "another producer's series are kept");

    dropStats(id);
    for (const g of [rdkafkaGlobal, rdkafkaBroker, rdkafkaTopic, rdkafkaPartition]) {
      assert.equal((await series(g, id)).length, 0);
    }
    assert.ok((await series(rdkafkaBroker, other)).length > 0);
  } finally {
    dropStats(id);
    dropStats(other);
  }
});

Deno.test("applyStats ignores missing sections and non-numeric values", async () => {
  const id = "stats-sparse";
  try {
    applyStats(id, {
      name: "x",
      msg_cnt: "7",
      tx: 3,
      brokers: null,
      topics: { t: { topic: "t", partitions: 5 } },
    });
    assert.equal(await value(rdkafkaGlobal, { producer_id: id, metric: "tx" }), 3);
    assert.equal(await value(rdkafkaGlobal, { producer_id: id, metric: "msg_cnt" }), undefined);
    assert.equal((await series(rdkafkaBroker, id)).length, 0);
  } finally {
    dropStats(id);
  }
});

Deno.test("applyStats keeps no gauges for topics without series of their own", async () => {
  const id = "stats-untracked";
  const untracked = structuredClone(sample);
  untracked.topics = { "never-counted": { ...structuredClone(topic), topic: "never-counted" } };
  assert.equal(topicSeries.has("never-counted"), false);
  try {
    applyStats(id, untracked);
    const series = (await rdkafkaTopic.get()).values.filter((v) => v.labels.producer_id === id);
    assert.deepEqual(series, []);
    const partitions = (await rdkafkaPartition.get()).values.filter((v) => v.labels.producer_id === id);
    assert.deepEqual(partitions, []);
  } finally {
    dropStats(id);
  }
});
