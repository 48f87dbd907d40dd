/**
 * Batch produce: KafkaProducer.produceBatch and Facade.produceMany on librdkafka's mock cluster and an in-memory
 * WAL, including a property test that produceMany decides as produce called per message does.
 */
import assert from "node:assert/strict";
import { type BatchOutcomes, type Delivery, KafkaError, KafkaProducer } from "../src/kafka/producer.ts";
import type { Message } from "../src/message.ts";
import type { AckLevel } from "../src/message.ts";
import { ProduceError, type ProduceResult } from "../src/producer/types.ts";
import { type FacadeRig, facadeRig, MOCK_KAFKA } from "./support/facade_rig.ts";
import { collectGarbage } from "./support/gc.ts";
import { DEAD_KAFKA, sent, variedMessages } from "./support/varied_messages.ts";
import { delay, waitFor, within } from "./support/wait.ts";

const text = (s: string) => new TextEncoder().encode(s);

function topicName(): string {
  return `t-${crypto.randomUUID().slice(0, 8)}`;
}

/** A batch's outcomes as produce() would give them one by one: a Delivery or a KafkaError per message. */
function listed(o: BatchOutcomes): Array<Delivery | KafkaError> {
  return Array.from(
    { length: o.length },
    (_, i) => o.error(i) ?? { partition: o.partitions[i], offset: BigInt(o.offsets[i]) },
  );
}

/** What a client would see of an outcome: offsets left out (they differ between two clusters). */
function shape(o: ProduceResult | ProduceError): string {
  return o instanceof ProduceError ? `${o.kind}: ${o.message}` : o.where;
}

Deno.test("produceBatch: outcomes in order; headers and two topics mixed; one outcome per message", async () => {
  const p = KafkaProducer.open({ id: "batch-order", config: MOCK_KAFKA });
  const [a, b] = [topicName(), topicName()];
  try {
    const messages: Message[] = Array.from({ length: 60 }, (_, i) => ({
      topic: i % 20 < 10 ? a : b,
      value: text(`m${i}`),
      partition: 0,
      ...(i % 7 === 3 ? { headers: [["h", text(`${i}`)]] as Array<[string, Uint8Array]> } : {}),
      ...(i === 11 ? { timestamp: 1_700_000_000_000, key: new Uint8Array(0) } : {}),
    }));
    const outcomes = listed(await p.produceBatch(messages));
    assert.equal(outcomes.length, 60);
    for (const topic of [a, b]) {
      const offsets = messages.flatMap((m, i) => m.topic === topic ? [outcomes[i]] : []).map((o) => {
        assert.ok(!(o instanceof Error), String(o));
        return o.offset;
      });
      assert.deepEqual(offsets, offsets.map((_, i) => BigInt(i)), `topic ${topic}: in request order`);
    }
    assert.equal(p.inFlight, 0);
    assert.equal((await p.produceBatch([])).length, 0);
  } finally {
    await p.close(1000);
  }
});

Deno.test("produceBatch and produce calls in flight together each hear their own messages' outcomes", async () => {
  const p = KafkaProducer.open({ id: "batch-receivers", config: MOCK_KAFKA });
  const topic = topicName();
  try {
    // Three rounds, so that the later ones hand over messages under the ids of calls already settled.
    for (let round = 0; round < 3; round++) {
      const calls: Array<Promise<number[]>> = [];
      for (let c = 0; c < 30; c++) {
        if (c % 3 === 1) {
          calls.push(
            p.produce({ topic, value: text(`${round}-${c}`), partition: 0 }).then((d) => [Number(d.offset)]),
          );
          continue;
        }
        const n = 1 + (c * 7) % 40;
        const messages = Array.from(
          { length: n },
          (_, i) => ({ topic, value: text(`${round}-${c}-${i}`), partition: 0 }),
        );
        calls.push(
          p.produceBatch(messages).then((o) => {
            assert.equal(o.length, n);
            for (let i = 0; i < n; i++) {
              assert.equal(o.error(i), undefined);
              assert.equal(o.partitions[i], 0);
            }
            return [...o.offsets];
          }),
        );
      }
      // One partition: offsets follow the order of the calls, each call's messages in a row.
      const offsets = (await Promise.all(calls)).flat();
      assert.deepEqual(offsets, offsets.map((_, i) => offsets[0] + i), `round ${round}`);
      assert.equal(p.inFlight, 0);
    }
  } finally {
    await p.close(1000);
  }
});

Deno.test("produceBatch: a full queue fails the rest with -184, or makes them wait in order", async () => {
  const p = KafkaProducer.open({
    id: "batch-full",
    config: { ...MOCK_KAFKA, "queue.buffering.max.messages": "10", "linger.ms": "200" },
  });
  const topic = topicName();
  try {
    const refused = listed(
      await p.produceBatch(
        Array.from({ length: 25 }, (_, i) => ({ topic, value: text(`r${i}`), partition: 0 })),
        { fullQueueWaitMs: 0 },
      ),
    );
    const codes = refused.map((o) => o instanceof KafkaError ? o.code : 0);
    assert.deepEqual(codes, [...Array(10).fill(0), ...Array(15).fill(-184)], "the first ten fit");
    assert.ok((refused[24] as KafkaError).retryable);

    const waited = listed(
      await p.produceBatch(
        Array.from({ length: 200 }, (_, i) => ({ topic, value: text(`w${i}`), partition: 0 })),
      ),
    );
    const offsets = waited.map((o) => {
      assert.ok(!(o instanceof Error), String(o));
      return o.offset;
    });
    assert.deepEqual(offsets, offsets.map((_, i) => offsets[0] + BigInt(i)), "every one delivered, in order");

    // Batches that arrive while others wait queue behind them, and are all delivered.
    const behind = await within(
      "batches queued behind waiting ones",
      Promise.all(
        [0, 1, 2].map((b) =>
          p.produceBatch(
            Array.from({ length: 30 }, (_, i) => ({ topic, value: text(`b${b}-${i}`), partition: 0 })),
          )
        ),
      ),
      20_000,
    );
    const all = behind.flatMap(listed).map((o) => {
      assert.ok(!(o instanceof Error), String(o));
      return o.offset;
    });
    assert.deepEqual(all, all.map((_, i) => all[0] + BigInt(i)), "batches behind waiting ones, in order");
  } finally {
    await p.close(1000);
  }
});

Deno.test("produceBatch: per-message errors (too large, unknown partition) fail that message only", async () => {
  const p = KafkaProducer.open({
    id: "batch-errors",
    config: { ...MOCK_KAFKA, "message.max.bytes": "1000" },
  });
  const topic = topicName();
  try {
    await p.produce({ topic, value: text("make the topic known"), partition: 0 });
    const outcomes = listed(
      await p.produceBatch([
        { topic, value: text("a"), partition: 0 },
        { topic, value: new Uint8Array(5000), partition: 0 },
        { topic, value: text("b"), partition: 0 },
        { topic, value: text("c"), partition: 99 },
      ]),
    );
    assert.equal((outcomes[1] as KafkaError).errName, "MSG_SIZE_TOO_LARGE");
    assert.equal((outcomes[3] as KafkaError).retryable, false);
    assert.deepEqual([outcomes[0], outcomes[2]].map((o) => (o as { offset: bigint }).offset), [1n, 2n]);
  } finally {
    await p.close(1000);
  }
});

Deno.test("produceBatch: a message whose delivery fails comes back as it was sent, from librdkafka's report", async () => {
  const p = KafkaProducer.open({ id: "batch-failed", config: DEAD_KAFKA });
  try {
    const messages = variedMessages(60);
    const outcomes = await p.produceBatch(messages);
    for (let i = 0; i < messages.length; i++) {
      assert.equal(outcomes.error(i)?.errName, "_MSG_TIMED_OUT", `message ${i}`);
      assert.equal(outcomes.topic(i), messages[i].topic);
      const back = outcomes.message(i);
      assert.ok(back !== undefined, `message ${i} came back`);
      assert.deepEqual(sent(back), sent(messages[i]), `message ${i}`);
      // The batch let go of the messages once librdkafka had them; only those a report cannot rebuild are kept.
      const kept = messages[i].headers !== undefined || messages[i].timestamp !== undefined;
      assert.equal(back === messages[i], kept, `message ${i}: kept ${kept}`);
    }
  } finally {
    await p.close(1000);
  }
});

for (const ack of ["none", "wal"] as const) {
  Deno.test(`produceMany ack=${ack}: failed deliveries reach the WAL byte for byte, though the batch let go of them`, async () => {
    await using r = await facadeRig({ kafka: DEAD_KAFKA });
    const messages = variedMessages(40);
    const out = await r.facade.produceMany(messages, ack);
    assert.deepEqual(out.map(shape), Array(40).fill(ack === "none" ? "queued" : "wal"));
    await waitFor("every failed delivery spooled", () => r.wal.stats().records === 40, 10_000);
    const spooled = (await r.wal.checkout(100)).map(sent);
    const byValue = (x: { value: number[] }, y: { value: number[] }) =>
      String(x.value) < String(y.value) ? -1 : 1;
    assert.deepEqual(spooled.sort(byValue), messages.map(sent).sort(byValue));
  });
}

Deno.test("produceMany: outcomes in request order for each ack level; refusals in their slot", async () => {
  await using r = await facadeRig({ wal: { disableTopics: ["volatile"] } });
  const topic = topicName();
  const big = new Uint8Array(r.facade.maxMessageBytes + 1);
  const messages: Message[] = [
    { topic, value: text("a"), partition: 0 },
    { topic, value: big },
    { topic, value: text("b"), partition: 0 },
  ];
  const strong = await r.facade.produceMany(messages, "kafka");
  assert.deepEqual(strong.map(shape), [
    "kafka",
    "too_large: " + (strong[1] as ProduceError).message,
    "kafka",
  ]);
  assert.deepEqual(strong.map((o) => (o as ProduceResult).offset), ["0", undefined, "1"]);
  assert.deepEqual((await r.facade.produceMany(messages, "none")).map(shape)[0], "queued");
  assert.ok(await r.producer.flush(5000));
  assert.equal(r.wal.stats().records, 0);
  r.facade.setDraining(true);
  assert.deepEqual(
    (await r.facade.produceMany(messages, "none")).map(shape),
    Array(3).fill("unavailable: shutting down"),
  );
});

Deno.test("produceMany: breaker open spools the batch to the WAL; WAL-less topics and ack=kafka get 503", async () => {
  await using r = await facadeRig({ wal: { disableTopics: ["volatile"] } });
  r.breaker.trip("test");
  const out = await r.facade.produceMany([
    { topic: "t", value: text("a") },
    { topic: "volatile", value: text("b") },
    { topic: "t", value: text("c") },
  ], "wal");
  assert.deepEqual(out.map(shape), [
    "wal",
    "unavailable: kafka unavailable (circuit breaker open) and WAL disabled",
    "wal",
  ]);
  assert.deepEqual((await r.wal.checkout(10)).map((m) => new TextDecoder().decode(m.value)), ["a", "c"]);
  const strong = await r.facade.produceMany([{ topic: "t", value: text("d") }], "kafka");
  assert.deepEqual(strong.map(shape), ["unavailable: kafka unavailable (circuit breaker open)"]);
});

Deno.test("produceMany: always mode makes the batch durable, sends it, and the WAL forgets what Kafka took", async () => {
  await using r = await facadeRig({ wal: { mode: "always" } });
  const out = await r.facade.produceMany(
    Array.from({ length: 50 }, (_, i) => ({ topic: "t", value: text(`m${i}`) })),
    "none",
  );
  assert.deepEqual(new Set(out.map(shape)), new Set(["wal"]));
  assert.ok(await r.producer.flush(5000));
  await waitFor("the WAL to forget delivered records", () => r.wal.stats().records === 0, 5000, 10);
  assert.equal(r.wal.pendingCount(), 0);
});

Deno.test("produceMany: a full queue spools the rest of the batch once producer.full_queue_wait is over", async () => {
  await using r = await facadeRig({
    kafka: { "queue.buffering.max.messages": "5", "linger.ms": "200" },
    fullQueueWaitMs: 0,
  });
  const out = await r.facade.produceMany(
    Array.from({ length: 30 }, (_, i) => ({ topic: "t", value: text(`m${i}`), partition: 0 })),
    "wal",
  );
  const shapes = out.map(shape);
  assert.deepEqual(shapes.slice(0, 5), Array(5).fill("kafka"));
  assert.deepEqual(shapes.slice(5), Array(25).fill("wal"), "queue full, no wait: spooled");
  assert.equal(r.wal.stats().records, 25);
  assert.equal(r.breaker.state, "closed", "local back-pressure does not count against the brokers");
});

Deno.test("produceMany ack=none: the reply waits until no record of the batch waits for queue room", async () => {
  await using r = await facadeRig({
    kafka: { "queue.buffering.max.messages": "5", "linger.ms": "20" },
    fullQueueWaitMs: 30_000,
  });
  const out = await r.facade.produceMany(
    Array.from({ length: 40 }, (_, i) => ({ topic: "t", value: text(`m${i}`), partition: 0 })),
    "none",
  );
  assert.deepEqual(out.map(shape), Array(40).fill("queued"));
  assert.equal(r.producer.waitingForRoom, 0, "every record is in librdkafka (or delivered) by the reply");
  assert.ok(r.producer.inFlight <= 5, `in flight ${r.producer.inFlight}`);
  assert.equal(r.wal.stats().records, 0);
});

Deno.test("roomForBatch: a batch waits while a quarter of librdkafka's queue is taken, not when the records would not go to Kafka", async () => {
  await using r = await facadeRig({
    kafka: { "queue.buffering.max.messages": "40", "linger.ms": "300" },
    fullQueueWaitMs: 30_000,
  });
  assert.equal(r.facade.roomForBatch(), undefined, "an empty queue has room");
  const queued = r.facade.produceMany(
    Array.from({ length: 10 }, (_, i) => ({ topic: "t", value: text(`m${i}`), partition: 0 })),
    "kafka",
  );
  assert.equal(r.producer.inFlight, 10, "a quarter of 40, held by linger.ms");
  const room = r.facade.roomForBatch();
  assert.ok(room !== undefined, "a batch waits while 10 of 40 are in flight");
  let settled = false;
  room.then(() => settled = true);
  await delay(100);
  assert.equal(settled, false, "still waiting before librdkafka sends");
  r.breaker.trip("test");
  assert.equal(r.facade.roomForBatch(), undefined, "breaker open: the records go to the WAL, no wait");
  r.breaker.close();
  await within("room for a batch, long before producer.full_queue_wait", room, 5_000);
  assert.ok(r.producer.inFlight < 10, "the wait ended once deliveries made room");
  assert.deepEqual((await queued).map(shape), Array(10).fill("kafka"));
});

Deno.test("roomForBatch: no wait when a full queue does not wait (producer.full_queue_wait 0)", async () => {
  await using r = await facadeRig({
    kafka: { "queue.buffering.max.messages": "4", "linger.ms": "300" },
    fullQueueWaitMs: 0,
  });
  const queued = r.facade.produceMany(
    Array.from({ length: 4 }, (_, i) => ({ topic: "t", value: text(`m${i}`), partition: 0 })),
    "kafka",
  );
  assert.equal(r.producer.inFlight, 4);
  assert.equal(r.facade.roomForBatch(), undefined);
  await queued;
});

Deno.test("produceMany: within producer.full_queue_wait a full queue makes the batch wait for Kafka", async () => {
  await using r = await facadeRig({
    kafka: { "queue.buffering.max.messages": "5", "linger.ms": "20" },
    fullQueueWaitMs: 30_000,
  });
  const out = await r.facade.produceMany(
    Array.from({ length: 30 }, (_, i) => ({ topic: "t", value: text(`m${i}`), partition: 0 })),
    "wal",
  );
  assert.deepEqual(out.map(shape), Array(30).fill("kafka"), "every record waited for room and reached Kafka");
  assert.equal(r.wal.stats().records, 0);
});

Deno.test("produceMany: the WAL fills up mid-batch: earlier records accepted, later ones refused 'wal: full'", async () => {
  await using r = await facadeRig({ wal: { maxBytes: 4096 } });
  r.breaker.trip("test");
  const out = await r.facade.produceMany(
    Array.from({ length: 40 }, () => ({ topic: "t", value: text("x".repeat(200)) })),
    "wal",
  );
  const accepted = out.filter((o) => shape(o) === "wal").length;
  assert.ok(accepted > 0 && accepted < 40, `accepted ${accepted}`);
  assert.deepEqual(out.map(shape).slice(accepted), Array(40 - accepted).fill("unavailable: wal: full"));
  assert.equal(r.wal.stats().records, accepted, "every accepted record is in the WAL");
});

for (const ack of ["none", "wal", "kafka"] as const) {
  Deno.test(`produceMany ack=${ack}: a record for a partition its topic lacks is refused with 400 alone; nothing of it is kept`, async () => {
    await using r = await facadeRig();
    const topic = topicName();
    await r.facade.produce({ topic, value: text("make the topic known"), partition: 0 }, "kafka");
    const out = await r.facade.produceMany([
      { topic, value: text("a"), partition: 0 },
      { topic, value: text("b"), partition: 99 },
      { topic, value: text("c"), partition: 0 },
    ], ack);
    const good = ack === "none" ? "queued" : "kafka";
    assert.deepEqual(out.map((o) => o instanceof ProduceError ? o.kind : o.where), [good, "invalid", good]);
    assert.equal(
      (out[1] as ProduceError).message,
      `partition 99 does not exist in topic ${JSON.stringify(topic)}`,
    );
    await r.producer.flush(5_000);
    assert.equal(r.wal.stats().records, 0);
    assert.equal(r.breaker.state, "closed");
  });
}

/** A small deterministic generator (mulberry32), so that a failing seed can be replayed. */
function random(seed: number): () => number {
  return () => {
    seed = (seed + 0x6d2b79f5) | 0;
    let t = Math.imul(seed ^ (seed >>> 15), 1 | seed);
    t = (t + Math.imul(t ^ (t >>> 7), 61 | t)) ^ t;
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

type Breakers = "closed" | "open" | "half";
type WalState = "ok" | "nearly full" | "failing";

interface Case {
  seed: number;
  mode: "fallback" | "always";
  breaker: Breakers;
  wal: WalState;
  ack: AckLevel;
  messages: Message[];
}

function makeCase(seed: number): Case {
  const rnd = random(seed);
  const pick = <T>(xs: readonly T[]): T => xs[Math.floor(rnd() * xs.length)];
  const messages: Message[] = Array.from({ length: 1 + Math.floor(rnd() * 40) }, () => {
    const size = rnd() < 0.05 ? 2100 : Math.floor(rnd() * 600);
    return {
      topic: pick(["a", "b", "volatile", "durable"]),
      value: new Uint8Array(size),
      ...(rnd() < 0.2 ? { headers: [["h", text("v")]] as Array<[string, Uint8Array]> } : {}),
      ...(rnd() < 0.3 ? { partition: pick([0, 1]) } : {}),
    };
  });
  return {
    seed,
    mode: pick(["fallback", "fallback", "always"] as const),
    breaker: pick(["closed", "open", "half"] as const),
    wal: pick(["ok", "nearly full", "failing"] as const),
    ack: pick(["none", "wal", "kafka"] as const),
    messages,
  };
}

const MAX_BYTES = 16 * 1024;

/** A rig in the case's state; two rigs built from one case are in the same state. */
async function rigFor(c: Case): Promise<FacadeRig> {
  const r = await facadeRig({
    wal: { mode: c.mode, maxBytes: MAX_BYTES, disableTopics: ["volatile"], alwaysTopics: ["durable"] },
    kafka: { "message.max.bytes": "2000" },
    breakerTimeoutMs: 1,
  });
  if (c.wal === "nearly full") {
    const room = 500 + (c.seed % 7) * 300;
    while (MAX_BYTES - r.wal.stats().bytes > room) r.wal.append({ topic: "a", value: new Uint8Array(100) });
  }
  if (c.wal === "failing") {
    r.storage.fail();
    r.wal.append({ topic: "a", value: text("held") });
    await r.wal.sync();
  }
  if (c.breaker !== "closed") {
    r.breaker.trip("test");
    if (c.breaker === "half") await waitFor("half-open", () => r.breaker.state === "half", 2000, 1);
  }
  return r;
}

/** WAL records once every delivery is reported and acted on (`always` mode acks what Kafka took). */
async function settledWalRecords(r: FacadeRig): Promise<number> {
  assert.ok(await r.producer.flush(5000));
  await delay(20);
  await r.facade.settle();
  return r.wal.stats().records;
}

Deno.test("produceMany decides as produce per message does, for random batches across breaker and WAL states", async () => {
  for (let seed = 1; seed <= 60; seed++) {
    const c = makeCase(seed);
    const label = `seed ${seed}: ${c.mode}, breaker ${c.breaker}, WAL ${c.wal}, ack=${c.ack}`;
    let single: string[];
    let singleWal: number;
    let singleBreaker: string;
    {
      await using r = await rigFor(c);
      const outcomes = await Promise.all(
        c.messages.map((m) => r.facade.produce(m, c.ack).catch((err: ProduceError) => err)),
      );
      single = outcomes.map(shape);
      singleWal = await settledWalRecords(r);
      singleBreaker = r.breaker.state;
    }
    {
      await using r = await rigFor(c);
      const outcomes = await r.facade.produceMany(c.messages, c.ack);
      assert.deepEqual(outcomes.map(shape), single, label);
      assert.equal(await settledWalRecords(r), singleWal, `${label}: WAL records`);
      assert.equal(r.breaker.state, singleBreaker, `${label}: breaker`);
    }
  }
});

Deno.test("produceMany: while the reply waits for the reports, nothing keeps the records of the batch", async () => {
  await using r = await facadeRig({ kafka: { "linger.ms": "500" } });
  const refs: Array<WeakRef<object>> = [];
  // The records are made here, out of the test's own frame, as a request's are out of its listener's.
  const reply = (() => {
    const messages: Message[] = Array.from(
      { length: 20 },
      (_, i) => ({ topic: "t", value: text(`m${i}`), partition: 0 }),
    );
    for (const m of messages) refs.push(new WeakRef(m), new WeakRef(m.value));
    return r.facade.produceMany(messages, "kafka");
  })();
  let settled = false;
  reply.then(() => settled = true);
  await delay(50);
  collectGarbage();
  assert.equal(settled, false, "the reports are still to come (linger.ms 500)");
  assert.deepEqual(refs.filter((ref) => ref.deref() !== undefined).length, 0, "records kept while waiting");
  assert.deepEqual((await reply).map(shape), Array(20).fill("kafka"));
});
