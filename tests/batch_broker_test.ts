/** Batch produce against a real broker: 50,000 records in batches of 1,000 through the facade, read back whole. */
import assert from "node:assert/strict";
import { defaultConfig } from "../src/config.ts";
import { KafkaProducer } from "../src/kafka/producer.ts";
import { Breaker } from "../src/producer/breaker.ts";
import { Facade } from "../src/producer/facade.ts";
import { ProduceError } from "../src/producer/types.ts";
import { openWal } from "../src/wal/wal.ts";
import { startBroker } from "./kafka/broker.ts";
import { consumeAll } from "./kafka/consume.ts";

const TOTAL = 50_000;
const BATCH = 1_000;

Deno.test({
  name: "produceMany: 50,000 records in batches of 1,000 reach a real broker: 0 missing, 0 duplicated",
  sanitizeOps: false,
  sanitizeResources: false,
  async fn() {
    await using broker = await startBroker();
    await broker.createTopic("batch", 3);
    const config = defaultConfig();
    config.producer.wal = { ...config.producer.wal, inMemory: true };
    config.kafka = { "bootstrap.servers": broker.bootstrap, "linger.ms": "5" };
    const wal = await openWal({ path: "", inMemory: true, maxBytes: config.producer.wal.maxBytes });
    const breaker = new Breaker({ fails: 5, requests: 3, timeoutMs: 60_000, intervalMs: 0 });
    const producer = KafkaProducer.open({ id: "batch-broker", config: config.kafka });
    const facade = new Facade({ config, wal, breaker, producer });
    try {
      const encoder = new TextEncoder();
      for (let start = 0; start < TOTAL; start += BATCH) {
        const messages = Array.from({ length: BATCH }, (_, k) => ({
          topic: "batch",
          key: encoder.encode(`k${(start + k) % 97}`),
          value: encoder.encode(`m${start + k}`),
          // Every tenth record goes through produceva: a batch mixes both paths.
          ...((start + k) % 10 === 0
            ? { headers: [["n", encoder.encode(`${start + k}`)]] as [string, Uint8Array][] }
            : {}),
        }));
        const outcomes = await facade.produceMany(messages, "wal");
        const refused = outcomes.filter((o) => o instanceof ProduceError);
        assert.equal(refused.length, 0, `batch at ${start}: ${refused[0]}`);
        assert.ok(
          outcomes.every((o) => !(o instanceof ProduceError) && o.where === "kafka"),
          `batch at ${start}`,
        );
      }
      assert.equal(wal.stats().records, 0, "nothing needed the WAL");
    } finally {
      await producer.close(10_000);
      await facade.settle();
      await wal.close();
      breaker.close();
    }
    const consumed = await consumeAll(broker.bootstrap, "batch", { expected: TOTAL, timeoutMs: 60_000 });
    const seen = new Map<string, number>();
    for (const m of consumed) seen.set(m.value!, (seen.get(m.value!) ?? 0) + 1);
    const missing = Array.from({ length: TOTAL }, (_, i) => `m${i}`).filter((v) => !seen.has(v));
    const duplicated = [...seen].filter(([, n]) => n > 1);
    assert.deepEqual([missing.length, duplicated.length], [0, 0], `missing ${missing.slice(0, 5)}`);
    assert.equal(consumed.length, TOTAL);
    const withHeader = consumed.filter((m) => m.headers.length === 1);
    assert.equal(withHeader.length, TOTAL / 10);
    assert.ok(withHeader.every((m) => `m${m.headers[0][1]}` === m.value), "headers stay with their record");
  },
});
