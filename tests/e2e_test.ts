/** End to end against a real broker: HTTP and gRPC produce, consumed back with kcat; metrics; topics. */
import assert from "node:assert/strict";
import * as grpc from "@grpc/grpc-js";
import * as protoLoader from "@grpc/proto-loader";
import { startBroker } from "./kafka/broker.ts";
import { consumeAll } from "./kafka/consume.ts";
import { parseId, postRange, tally } from "./support/load.ts";
import { startService, sumMetric } from "./support/service.ts";
import { tempDir } from "./support/temp_dir.ts";
import { waitFor } from "./support/wait.ts";

const COMPAT_PROTO = new URL("./fixtures/compat.proto", import.meta.url).pathname;
const N = 10_000;

/** Every metric of the Go service, but its WAL store's own badger_* (docs/compatibility.md, Metrics). */
const GO_METRICS = [
  "kafka_client_requests_cnt",
  "kafka_client_ack_cnt",
  "kafka_client_err_cnt",
  "kafka_client_dropped_cnt",
  "kafka_client_events_ignored_cnt",
  "kafka_client_messages_in_transit",
  "producer_cb_state",
  "kafka_cb_current_state",
  "producer_kafka_queue_len",
  "producer_kafka_librdkafka_version",
  "kafka_active_producer",
  "kafka_last_producer_start_time",
  "kafka_cert_expiration_time",
  "kafka_ca_expiration_time",
  "kafka_events_queue_len",
  "rdkafka_global",
  "rdkafka_broker",
  "rdkafka_topic",
  "rdkafka_partition",
  "wal_reads",
  "wal_writes",
  "wal_deletes",
  "wal_messages",
  "wal_write_batch_ch_len",
  "wal_delete_batch_ch_len",
  "grpc_server_started_total",
  "grpc_server_handled_total",
  "grpc_server_msg_received_total",
  "grpc_server_msg_sent_total",
  "grpc_server_handling_seconds",
];

Deno.test({
  name: "e2e: 10k over HTTP and 10k over one gRPC stream all reach Kafka; metrics and topic lists agree",
  sanitizeOps: false,
  sanitizeResources: false,
  async fn() {
    await using broker = await startBroker();
    await broker.createTopic("e2e-http", 3);
    await broker.createTopic("e2e-grpc", 3);
    await using dir = await tempDir("ka-e2e-");
    await using svc = await startService({
      producer: { wal: { mode: "fallback", path: `${dir.path}/wal` } },
      kafka: { brokers: [broker.bootstrap], "statistics.interval.ms": 500, "linger.ms": 5 },
    }, { dir: dir.path });
    const http = await postRange(svc.http, "e2e-http", "h", 0, N, { concurrency: 32 });
    assert.equal(http.refused.size, 0, `refused: ${[...http.refused].slice(0, 5)}`);

    const client = compatClient(svc.grpc);
    try {
      const echoed = await produceOverStream(client, "e2e-grpc", "g", N);
      assert.equal(echoed.size, N);

      const viaHttp = await consumeAll(broker.bootstrap, "e2e-http", { expected: N, timeoutMs: 60_000 });
      const viaGrpc = await consumeAll(broker.bootstrap, "e2e-grpc", { expected: N, timeoutMs: 60_000 });
      const all = new Set(Array.from({ length: N }, (_, i) => i));
      const h = tally("h", N, all, viaHttp.map((m) => m.value));
      const g = tally("g", N, all, viaGrpc.map((m) => m.value));
      assert.deepEqual([h.found, h.missing.length, h.duplicated, viaHttp.length], [N, 0, 0, N]);
      assert.deepEqual([g.found, g.missing.length, g.duplicated, viaGrpc.length], [N, 0, 0, N]);
      assert.ok(viaGrpc.every((m) => parseId("g", m.value) !== null));

      const topics = await listTopicsCompat(client);
      assert.ok(topics.includes("e2e-http") && topics.includes("e2e-grpc"), `topics: ${topics}`);
      assert.ok(!topics.some((t) => t.startsWith("__")));
    } finally {
      client.close();
    }

    const httpTopics = (await (await fetch(`${svc.http}/topics`)).text()).split("\n");
    assert.ok(httpTopics.includes("e2e-http") && !httpTopics.some((t) => t.startsWith("__")));

    const bad = await fetch(`${svc.http}/topics/bad%20topic/messages`, { method: "POST", body: "x" });
    assert.equal(bad.status, 400);
    assert.ok((await bad.text()).includes("invalid topic name"));
    const strong = await fetch(`${svc.http}/topics/e2e-http/messages?ack=kafka`, {
      method: "POST",
      body: "k",
    });
    assert.equal(strong.status, 200);
    const where = await strong.json();
    assert.ok(where.partition >= 0 && BigInt(where.offset) >= 0n, JSON.stringify(where));

    await waitFor(
      "every record in kafka_client_ack_cnt",
      async () => sumMetric(await metricsText(svc.monitoring), "kafka_client_ack_cnt") >= 2 * N + 1,
      20_000,
    );
    const text = await metricsText(svc.monitoring);
    assert.equal(sumMetric(text, "kafka_client_requests_cnt", { topic: "e2e-http" }), N + 1);
    assert.equal(sumMetric(text, "kafka_client_requests_cnt", { topic: "e2e-grpc" }), N);
    assert.equal(sumMetric(text, "kafka_client_ack_cnt", { topic: "e2e-http" }), N + 1);
    assert.equal(sumMetric(text, "kafka_client_ack_cnt", { topic: "e2e-grpc" }), N);
    await waitFor(
      "librdkafka's statistics in the metrics",
      async () => (await metricsText(svc.monitoring)).includes("rdkafka_broker{"),
      20_000,
    );
    const later = await metricsText(svc.monitoring);
    assert.ok(/^rdkafka_global\{[^}]*metric="msg_cnt"/m.test(later), "rdkafka_global gauges missing");
    assert.ok(
      /^rdkafka_topic\{/m.test(later) && /^rdkafka_partition\{/m.test(later),
      "rdkafka_topic/partition missing",
    );
    for (const name of GO_METRICS) {
      assert.match(later, new RegExp(`^# TYPE ${name} `, "m"), `${name} missing`);
    }
    // As the Go service: the version in words in the label, as rd_kafka_version()'s number (0xMMmmrrff) in the value.
    const version = /^producer_kafka_librdkafka_version\{version="(\d+)\.(\d+)\.(\d+)"\} (\d+)$/m.exec(later);
    assert.ok(version, "producer_kafka_librdkafka_version missing");
    const [major, minor, revision, value] = version.slice(1).map(Number);
    assert.equal(value, major * 2 ** 24 + minor * 2 ** 16 + revision * 2 ** 8 + 0xff);
    // A partition the topic does not have: librdkafka knows the topic by now, so even ack=none is refused.
    for (const ack of ["none", "wal", "kafka"]) {
      const lacking = await fetch(`${svc.http}/topics/e2e-http/messages?partition=7&ack=${ack}`, {
        method: "POST",
        body: "p",
      });
      assert.equal(lacking.status, 400, `ack=${ack}`);
      assert.equal(await lacking.text(), `partition 7 does not exist in topic "e2e-http"\n`);
    }
    const code = await svc.stop();
    if (code !== 0) console.error(await Deno.readTextFile(svc.logPath));
    assert.equal(code, 0);
  },
});

async function metricsText(base: string): Promise<string> {
  return await (await fetch(`${base}/metrics`)).text();
}

type CompatClient = grpc.Client & {
  Produce(): grpc.ClientDuplexStream<unknown, { streamOffset: string }>;
  ListTopics(req: object, cb: (err: grpc.ServiceError | null, res: { topics: string[] }) => void): void;
};

/**
 * A client built only from the Go service's proto (docs/compatibility.md), as an existing user of the Go service
 * has it.
 */
export function compatClient(address: string): CompatClient {
  const def = protoLoader.loadSync(COMPAT_PROTO, { longs: String, defaults: true });
  const pkg = grpc.loadPackageDefinition(def) as unknown as {
    KafkaAmbassador: new (addr: string, creds: grpc.ChannelCredentials) => CompatClient;
  };
  return new pkg.KafkaAmbassador(address, grpc.credentials.createInsecure());
}

/** Sends `n` messages on one Produce stream; resolves with the set of echoed stream offsets. */
export function produceOverStream(
  client: CompatClient,
  topic: string,
  run: string,
  n: number,
): Promise<Set<string>> {
  return new Promise((resolve, reject) => {
    const echoed = new Set<string>();
    const stream = client.Produce();
    stream.on("data", (rs: { streamOffset: string }) => {
      echoed.add(rs.streamOffset);
      if (echoed.size === n) stream.end();
    });
    stream.on("error", reject);
    stream.on("end", () => resolve(echoed));
    for (let i = 0; i < n; i++) {
      stream.write({ topic, message: new TextEncoder().encode(`${run}:${i}`), streamOffset: String(i + 1) });
    }
  });
}

function listTopicsCompat(client: CompatClient): Promise<string[]> {
  return new Promise((resolve, reject) => {
    client.ListTopics({}, (err, res) => err ? reject(err) : resolve(res.topics));
  });
}
