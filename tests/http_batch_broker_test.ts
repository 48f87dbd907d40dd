/** HTTP batches end to end: 20 NDJSON batches of 1,000 records with ack=wal through the service into a real broker. */
import assert from "node:assert/strict";
import { startBroker } from "./kafka/broker.ts";
import { consumeAll } from "./kafka/consume.ts";
import { assertAllDelivered, payload, tally } from "./support/load.ts";
import { startService } from "./support/service.ts";
import { tempDir } from "./support/temp_dir.ts";

const BATCHES = 20;
const PER_BATCH = 1_000;
const TOTAL = BATCHES * PER_BATCH;
const RUN = "nd";
const TOPIC = "http-batch";

/** Batch `b` as NDJSON: ids b*1000 .. b*1000+999; every tenth value goes as base64, every record has a key. */
function batchBody(b: number): string {
  const encoder = new TextEncoder();
  let body = "";
  for (let id = b * PER_BATCH; id < (b + 1) * PER_BATCH; id++) {
    const value = payload(RUN, id);
    const record = id % 10 === 0
      ? { value_b64: encoder.encode(value).toBase64(), key: `k${id % 97}`, headers: { id: String(id) } }
      : { value, key: `k${id % 97}` };
    body += `${JSON.stringify(record)}\n`;
  }
  return body;
}

Deno.test({
  name: "http batch e2e: 20 batches of 1,000 with ack=wal reach Kafka: 0 missing, 0 duplicated",
  sanitizeOps: false,
  sanitizeResources: false,
  async fn() {
    await using broker = await startBroker();
    await broker.createTopic(TOPIC, 3);
    await using dir = await tempDir("ka-http-batch-");
    await using svc = await startService({
      producer: { wal: { mode: "fallback", path: `${dir.path}/wal` } },
      kafka: { brokers: [broker.bootstrap], "linger.ms": 5 },
    }, { dir: dir.path });

    const acked = new Set<number>();
    // Four batches in flight at a time, so that batches share the producer as concurrent clients would.
    let next = 0;
    const worker = async () => {
      while (next < BATCHES) {
        const b = next++;
        const res = await fetch(`${svc.http}/topics/${TOPIC}/messages?ack=wal`, {
          method: "POST",
          headers: { "content-type": "application/x-ndjson" },
          body: batchBody(b),
        });
        const reply = await res.json();
        assert.equal(res.status, 200, `batch ${b}: ${JSON.stringify(reply).slice(0, 300)}`);
        assert.deepEqual(reply, { count: PER_BATCH, errors: [] }, `batch ${b}`);
        for (let id = b * PER_BATCH; id < (b + 1) * PER_BATCH; id++) acked.add(id);
      }
    };
    await Promise.all(Array.from({ length: 4 }, worker));
    assert.equal(acked.size, TOTAL);

    const consumed = await consumeAll(broker.bootstrap, TOPIC, { expected: TOTAL, timeoutMs: 60_000 });
    const t = tally(RUN, TOTAL, acked, consumed.map((m) => m.value));
    assertAllDelivered("http batch e2e", t, { maxDuplicated: 0 });
    assert.equal(t.found, TOTAL);
    assert.equal(consumed.length, TOTAL);
    const withHeader = consumed.filter((m) => m.headers.length === 1);
    assert.equal(withHeader.length, TOTAL / 10);
    assert.ok(withHeader.every((m) => payload(RUN, Number(m.headers[0][1])) === m.value), "headers stay put");
    assert.ok(consumed.every((m) => m.key !== null && m.key.startsWith("k")), "every record has its key");
  },
});
