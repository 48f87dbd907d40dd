/**
 * Broker down mid-load on the paths beside single HTTP messages: two gRPC Produce streams (grpc-js, ack "none" and
 * "wal") and NDJSON batches (ack=wal) keep sending while the broker is stopped for 15 s; every record that got a
 * success reply is in Kafka once the WAL has drained (duplicates are counted and printed: delivery is at least
 * once).
 */
import assert from "node:assert/strict";
import * as grpc from "@grpc/grpc-js";
import * as protoLoader from "@grpc/proto-loader";
import { startBroker } from "./kafka/broker.ts";
import { consumeAll } from "./kafka/consume.ts";
import { faultConfig, walDrained, withServiceLog } from "./support/fault.ts";
import { assertAllDelivered, payload, tally } from "./support/load.ts";
import { startService } from "./support/service.ts";
import { tempDir } from "./support/temp_dir.ts";
import { delay } from "./support/wait.ts";

const PROTO = new URL("../proto/kafka_ambassador.proto", import.meta.url).pathname;
/** Records per gRPC stream, and records sent in NDJSON batches. */
const PER_STREAM = 12_000;
const BATCHES = 60;
const PER_BATCH = 200;
const OUTAGE_MS = 15_000;

// deno-lint-ignore no-explicit-any
type Client = any;

function client(address: string): Client {
  const def = protoLoader.loadSync(PROTO, { longs: String, defaults: true });
  // deno-lint-ignore no-explicit-any
  const Service = (grpc.loadPackageDefinition(def) as any).KafkaAmbassador;
  return new Service(address, grpc.credentials.createInsecure());
}

/**
 * One Produce stream sending records 0..n-1 of `run` with `ack`, spread over `spreadMs`; resolves with the ids
 * whose reply had code 0.
 */
function streamRecords(c: Client, topic: string, run: string, n: number, ack: string, spreadMs: number) {
  return new Promise<Set<number>>((resolve, reject) => {
    const acked = new Set<number>();
    let answered = 0;
    const stream = c.Produce();
    stream.on("data", (rs: { streamOffset: string; code: number }) => {
      if (rs.code === 0) acked.add(Number(rs.streamOffset));
      if (++answered === n) stream.end();
    });
    stream.on("error", reject);
    stream.on("end", () => resolve(acked));
    (async () => {
      const step = 100;
      for (let i = 0; i < n; i += step) {
        for (let j = i; j < Math.min(n, i + step); j++) {
          const ok = stream.write({
            topic,
            message: new TextEncoder().encode(payload(run, j)),
            streamOffset: j,
            ack,
          });
          if (!ok) await new Promise((r) => stream.once("drain", r));
        }
        await delay(spreadMs / (n / step));
      }
    })().catch(reject);
  });
}

/** NDJSON batches of records 0..BATCHES*PER_BATCH-1 of `run` with ack=wal, spread over `spreadMs`. */
async function postBatches(base: string, topic: string, run: string, spreadMs: number): Promise<Set<number>> {
  const acked = new Set<number>();
  for (let b = 0; b < BATCHES; b++) {
    const first = b * PER_BATCH;
    const body = Array.from(
      { length: PER_BATCH },
      (_, k) => JSON.stringify({ value: payload(run, first + k) }),
    )
      .join("\n");
    try {
      const r = await fetch(`${base}/topics/${topic}/messages?ack=wal`, {
        method: "POST",
        headers: { "content-type": "application/x-ndjson" },
        body,
      });
      const reply = await r.json().catch(() => null);
      if (r.status === 200) {
        const failed = new Set<number>((reply?.errors ?? []).map((e: { index: number }) => e.index));
        for (let k = 0; k < PER_BATCH; k++) if (!failed.has(k)) acked.add(first + k);
      }
    } catch {
      // a refused batch is not acknowledged
    }
    await delay(spreadMs / BATCHES);
  }
  return acked;
}

Deno.test({
  name: "fault: gRPC streams and NDJSON batches across a 15 s broker outage: none refused, 0 missing",
  sanitizeOps: false,
  sanitizeResources: false,
  async fn() {
    await using broker = await startBroker();
    await broker.createTopic("gdown", 3);
    await broker.createTopic("bdown", 3);
    await using dir = await tempDir("ka-grpc-down-");
    await using svc = await startService(faultConfig(broker.bootstrap, `${dir.path}/wal`), { dir: dir.path });
    const c = client(svc.grpc);
    try {
      await withServiceLog(svc, async () => {
        // The loads run for about 25 s; the broker is down from 5 s to 20 s into them.
        const spread = 25_000;
        const loads = Promise.all([
          streamRecords(c, "gdown", "none", PER_STREAM, "none", spread),
          streamRecords(c, "gdown", "wal", PER_STREAM, "wal", spread),
          postBatches(svc.http, "bdown", "batch", spread),
        ]);
        await delay(5_000);
        await broker.stop();
        await delay(OUTAGE_MS);
        await broker.start();
        const [none, wal, batch] = await loads;

        await walDrained(svc);
        assert.ok((await svc.metric("wal_replayed")) > 0, "the outage made records go through the WAL");
        const streamed = await consumeAll(broker.bootstrap, "gdown", {
          expected: none.size + wal.size,
          timeoutMs: 90_000,
        });
        const values = streamed.map((m) => m.value);
        assertAllDelivered("grpc-none", tally("none", PER_STREAM, none, values));
        assertAllDelivered("grpc-wal", tally("wal", PER_STREAM, wal, values));
        const batched = await consumeAll(broker.bootstrap, "bdown", {
          expected: batch.size,
          timeoutMs: 90_000,
        });
        assertAllDelivered(
          "batch-wal",
          tally("batch", BATCHES * PER_BATCH, batch, batched.map((m) => m.value)),
        );
        // The WAL takes what Kafka cannot, so the outage refuses nothing.
        assert.equal(none.size, PER_STREAM);
        assert.equal(wal.size, PER_STREAM);
        assert.equal(batch.size, BATCHES * PER_BATCH);
      });
    } finally {
      c.close();
    }
    assert.equal(await svc.stop(), 0);
  },
});
