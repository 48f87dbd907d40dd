/** The producer facade's decisions, on librdkafka's mock cluster and an in-memory WAL (the fault tests use a real broker). */
import assert from "node:assert/strict";
import { type Config, defaultConfig } from "../src/config.ts";
import { KafkaProducer } from "../src/kafka/producer.ts";
import { Breaker } from "../src/producer/breaker.ts";
import { Facade } from "../src/producer/facade.ts";
import { ProduceError } from "../src/producer/types.ts";
import { openWal, type Wal } from "../src/wal/wal.ts";

const text = (s: string) => new TextEncoder().encode(s);

interface Rig {
  facade: Facade;
  wal: Wal;
  breaker: Breaker;
  producer: KafkaProducer;
  [Symbol.asyncDispose](): Promise<void>;
}

async function rig(
  opts: { wal?: Partial<Config["producer"]["wal"]>; kafka?: Record<string, string> } = {},
): Promise<Rig> {
  const config = defaultConfig();
  config.producer.wal = { ...config.producer.wal, inMemory: true, ...opts.wal };
  config.kafka = { "test.mock.num.brokers": "1", "linger.ms": "1", ...opts.kafka };
  const wal = await openWal({ path: "", inMemory: true, maxBytes: config.producer.wal.maxBytes });
  const breaker = new Breaker({ fails: 5, requests: 3, timeoutMs: 60_000, intervalMs: 0 });
  const producer = KafkaProducer.open({ id: `facade-test-${crypto.randomUUID()}`, config: config.kafka });
  const facade = new Facade({ config, wal, breaker, producer });
  return {
    facade,
    wal,
    breaker,
    producer,
    async [Symbol.asyncDispose]() {
      await producer.close(1000);
      await facade.settle();
      await wal.close();
      breaker.close();
    },
  };
}

async function refusal(p: Promise<unknown>): Promise<ProduceError> {
  try {
    await p;
  } catch (err) {
    assert.ok(err instanceof ProduceError, String(err));
    return err;
  }
  throw new Error("expected a ProduceError");
}

Deno.test("facade: ack=kafka answers with partition and offset; ack=none with 'queued'", async () => {
  await using r = await rig();
  const strong = await r.facade.produce({ topic: "t", value: text("a") }, "kafka");
  assert.equal(strong.where, "kafka");
  assert.ok(strong.partition! >= 0 && BigInt(strong.offset!) >= 0n);
  assert.deepEqual(await r.facade.produce({ topic: "t", value: text("b") }, "none"), { where: "queued" });
  assert.ok(await r.producer.flush(5000));
  assert.equal(r.wal.stats().records, 0, "nothing touched the WAL");
});

Deno.test("facade: breaker open spools to the WAL; ack=kafka and WAL-less topics get 503", async () => {
  await using r = await rig({ wal: { disableTopics: ["volatile"] } });
  r.breaker.trip("test");
  assert.equal((await r.facade.produce({ topic: "t", value: text("a") }, "wal")).where, "wal");
  assert.equal((await r.facade.produce({ topic: "t", value: text("b") }, "none")).where, "wal");
  assert.equal(r.wal.stats().records, 2);
  assert.equal(
    (await refusal(r.facade.produce({ topic: "t", value: text("c") }, "kafka"))).kind,
    "unavailable",
  );
  assert.equal(
    (await refusal(r.facade.produce({ topic: "volatile", value: text("d") }, "none"))).kind,
    "unavailable",
  );
  assert.deepEqual(r.facade.readiness(), { ready: false, reasons: ["circuit breaker open"] });
});

Deno.test("facade: a full librdkafka queue spools to the WAL instead of waiting", async () => {
  await using r = await rig({ kafka: { "queue.buffering.max.messages": "1", "linger.ms": "500" } });
  const results = await Promise.all(
    Array.from({ length: 20 }, (_, i) => r.facade.produce({ topic: "t", value: text(`m${i}`) }, "none")),
  );
  assert.equal(results.length, 20);
  await r.facade.settle();
  await r.producer.flush(5000);
  await r.facade.settle();
  assert.ok(r.wal.stats().records >= 18, `spooled: ${r.wal.stats().records}`);
  assert.equal(r.breaker.state, "closed", "local back-pressure does not count against the brokers");
});

Deno.test("facade: always mode makes the record durable, sends it, and forgets it once Kafka has it", async () => {
  await using r = await rig({ wal: { mode: "always" } });
  assert.equal((await r.facade.produce({ topic: "t", value: text("a") }, "none")).where, "wal");
  assert.ok(await r.producer.flush(5000));
  assert.equal(r.wal.stats().records, 0);
  assert.equal(r.wal.pendingCount(), 0);
});

Deno.test("facade: the WAL bound answers 503 with Retry-After; every accepted record is in the WAL", async () => {
  await using r = await rig({ wal: { maxBytes: 4096 } });
  r.breaker.trip("test");
  let accepted = 0;
  let refused: ProduceError | null = null;
  for (let i = 0; i < 100 && !refused; i++) {
    try {
      await r.facade.produce({ topic: "t", value: text("x".repeat(200)) }, "wal");
      accepted++;
    } catch (err) {
      refused = err as ProduceError;
    }
  }
  assert.ok(accepted > 0 && refused, `accepted ${accepted}`);
  assert.equal(refused.kind, "unavailable");
  assert.ok((refused.retryAfterSeconds ?? 0) > 0);
  assert.equal(r.wal.stats().records, accepted, "every accepted record is in the WAL");
});

Deno.test("facade: draining and oversized messages are refused with their kind", async () => {
  await using r = await rig();
  const big = new Uint8Array(r.facade.maxMessageBytes + 1);
  assert.equal((await refusal(r.facade.produce({ topic: "t", value: big }, "none"))).kind, "too_large");
  r.facade.setDraining(true);
  assert.equal(
    (await refusal(r.facade.produce({ topic: "t", value: text("a") }, "none"))).kind,
    "unavailable",
  );
  assert.deepEqual(r.facade.readiness().reasons, ["shutting down"]);
});

Deno.test("facade: replay acks a delivered record, which leaves the WAL", async () => {
  await using r = await rig();
  r.breaker.trip("test");
  await r.facade.produce({ topic: "t", value: text("a") }, "wal");
  const [record] = await r.wal.checkout(10);
  assert.equal(await r.facade.replay(record.id, record), true);
  assert.equal(r.wal.stats().records, 0);
});
