/** The producer facade's decisions, on librdkafka's mock cluster and an in-memory WAL (the fault tests use a real broker). */
import assert from "node:assert/strict";
import type { KafkaProducer as KafkaProducerType } from "../src/kafka/producer.ts";
import type { Message } from "../src/message.ts";
import * as metrics from "../src/metrics.ts";
import { ProduceError } from "../src/producer/types.ts";
import { STATUS_BY_KIND } from "../src/server/refusal.ts";
import type { Wal } from "../src/wal/wal.ts";
import { type FacadeRig, facadeRig, refusal } from "./support/facade_rig.ts";
import { captured } from "./support/log_capture.ts";
import { DEAD_KAFKA, sent, variedMessages } from "./support/varied_messages.ts";
import { waitFor } from "./support/wait.ts";

const text = (s: string) => new TextEncoder().encode(s);

Deno.test("facade: ack=kafka answers with partition and offset; ack=none with 'queued'", async () => {
  await using r = await facadeRig();
  const strong = await r.facade.produce({ topic: "t", value: text("a") }, "kafka");
  assert.equal(strong.where, "kafka");
  assert.ok(strong.partition! >= 0 && BigInt(strong.offset!) >= 0n);
  assert.deepEqual(await r.facade.produce({ topic: "t", value: text("b") }, "none"), { where: "queued" });
  assert.ok(await r.producer.flush(5000));
  assert.equal(r.wal.stats().records, 0, "nothing touched the WAL");
});

Deno.test("facade: breaker open spools to the WAL; ack=kafka and WAL-less topics get 503", async () => {
  await using r = await facadeRig({ wal: { disableTopics: ["volatile"] } });
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
  assert.deepEqual(r.facade.readiness(), { ready: true, reasons: [] }, "the WAL takes what Kafka cannot");
});

Deno.test("facade: a full librdkafka queue spools to the WAL once producer.full_queue_wait is over", async () => {
  await using r = await facadeRig({
    kafka: { "queue.buffering.max.messages": "1", "linger.ms": "2000" },
    fullQueueWaitMs: 100,
  });
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

Deno.test("facade: a producer dead of a fatal error spools every message; the breaker stays closed", async () => {
  await using r = await facadeRig({ kafka: { "linger.ms": "500", "enable.idempotence": "true" } });
  // Held by librdkafka when the fatal error comes: purged, then spooled.
  const held = Array.from(
    { length: 10 },
    (_, i) => r.facade.produce({ topic: "t", value: text(`h${i}`) }, "wal"),
  );
  r.producer.raiseTestFatalError("facade test");
  const later = Array.from(
    { length: 10 },
    (_, i) => r.facade.produce({ topic: "t", value: text(`l${i}`) }, "wal"),
  );
  const results = await Promise.all([...held, ...later]);
  assert.deepEqual(results.map((x) => x.where), Array(20).fill("wal"), "every message is in the WAL");
  assert.equal(r.wal.stats().records, 20);
  assert.equal(r.breaker.state, "closed", "a dead producer says nothing about the brokers");
});

Deno.test("facade: always mode makes the record durable, sends it, and forgets it once Kafka has it", async () => {
  await using r = await facadeRig({ wal: { mode: "always" } });
  assert.equal((await r.facade.produce({ topic: "t", value: text("a") }, "none")).where, "wal");
  assert.ok(await r.producer.flush(5000));
  assert.equal(r.wal.stats().records, 0);
  assert.equal(r.wal.pendingCount(), 0);
});

Deno.test("facade: a send that throws instead of reporting is handled as a failed delivery: nothing is lost", async () => {
  for (const mode of ["fallback", "always"] as const) {
    await using r = await facadeRig({ wal: { mode } });
    (r.producer as { send: unknown }).send = () => {
      throw new RangeError("kafka producer: more calls in flight than slots");
    };
    const none = await r.facade.produce({ topic: "t", value: text("a") }, "none");
    const wal = await r.facade.produce({ topic: "t", value: text("b") }, "wal");
    await r.facade.settle();
    if (mode === "fallback") assert.deepEqual([none.where, wal.where], ["queued", "wal"]);
    else assert.deepEqual([none.where, wal.where], ["wal", "wal"]);
    assert.equal(r.wal.stats().records, 2, `${mode}: both records are in the WAL`);
    assert.equal(r.wal.pendingCount(), 2, `${mode}: both wait for the replay, none is left checked out`);
    assert.deepEqual(
      r.facade.readiness(),
      { ready: true, reasons: [] },
      `${mode}: no WAL room stays reserved`,
    );
  }
});

Deno.test("facade: the WAL bound answers 503 with Retry-After; every accepted record is in the WAL", async () => {
  await using r = await facadeRig({ wal: { maxBytes: 4096 } });
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

Deno.test("facade: a message is too large as librdkafka counts it: value, key, headers and its record overhead", async () => {
  await using r = await facadeRig();
  const max = r.facade.maxMessageBytes;
  const delivered = async (m: Omit<Message, "topic">) =>
    (await r.facade.produce({ topic: "t", ...m }, "kafka")).where === "kafka";
  // The largest value librdkafka takes: message.max.bytes (1,000,000 by default) less 36 bytes.
  assert.equal(max, 1_000_000 - 36);
  assert.ok(await delivered({ value: new Uint8Array(max) }));
  assert.equal(
    (await refusal(r.facade.produce({ topic: "t", value: new Uint8Array(max + 1) }, "none"))).kind,
    "too_large",
  );
  // A key and headers count too: a header "h" of n bytes takes 1 + n + one byte for each length.
  assert.ok(await delivered({ value: new Uint8Array(max - 10), headers: [["h", new Uint8Array(7)]] }));
  const over = {
    topic: "t",
    value: new Uint8Array(max - 10),
    headers: [["h", new Uint8Array(8)]],
  } as Message;
  const refused = await refusal(r.facade.produce(over, "none"));
  assert.equal(refused.kind, "too_large");
  assert.match(
    refused.message,
    /^message too large: 1000001 bytes as librdkafka counts it \(.*\), at most 1000000 bytes are accepted$/,
  );
  const keyed = { topic: "t", value: new Uint8Array(max), key: new Uint8Array(1) };
  assert.equal((await refusal(r.facade.produce(keyed, "none"))).kind, "too_large");
  const [batchRefusal] = await r.facade.produceMany([keyed], "none");
  assert.equal((batchRefusal as ProduceError).kind, "too_large");
});

Deno.test("facade: a message Kafka will never take is dropped, counted under librdkafka's text and logged; one its client hears refused is not", async () => {
  await using r = await facadeRig();
  let topic = "";
  const known = `refused-${crypto.randomUUID().slice(0, 8)}`;
  const dropped = (name: string) =>
    metrics.dropped.get().then((m) =>
      m.values.find((v) => v.labels.topic === name && v.labels.error === "Local: Unknown partition")?.value ??
        0
    );
  const lines = await captured(async () => {
    // The mock cluster's topics have 4 partitions: partition 9 does not exist, which no retry will change. A message
    // sent before librdkafka knows its topic is answered at once (200), and dropped on its report: counted.
    // The metadata may come first on a busy machine (all three refused at once): then again with another topic.
    let accepted = 0;
    for (let attempt = 0; attempt < 5 && accepted === 0; attempt++) {
      topic = `dropped-${crypto.randomUUID().slice(0, 8)}`;
      for (let i = 0; i < 3; i++) {
        await r.facade.produce({ topic, value: text(`${i}`), partition: 9 }, "none").then(
          () => accepted++,
          (err) => {
            if (!(err instanceof ProduceError && err.kind === "invalid")) throw err; // the metadata came first
          },
        );
      }
    }
    assert.ok(accepted > 0);
    await waitFor("the drops to be counted", async () => (await dropped(topic)) === accepted);
    // Once librdkafka knows the topic it refuses such a message at once, and the client hears 400: not a drop.
    await r.facade.produce({ topic: known, value: text("make the topic known"), partition: 0 }, "kafka");
    for (let i = 0; i < 3; i++) {
      const refused = await refusal(
        r.facade.produce({ topic: known, value: text(`${i}`), partition: 9 }, "none"),
      );
      assert.equal(refused.kind, "invalid");
    }
    assert.equal(await dropped(known), 0);
  });
  const logged = lines.filter((l) => l.msg === "message dropped: Kafka will never take it");
  // Once per error within the window; the repeats are counted when it ends.
  assert.equal(logged.length, 1, JSON.stringify(lines));
  assert.equal(logged[0].topic, topic);
  assert.equal(logged[0].error, "Local: Unknown partition");
});

Deno.test("facade: drops of many topics for one reason are logged once a window, not once a topic", async () => {
  await using r = await facadeRig();
  const prefix = `scattered-${crypto.randomUUID().slice(0, 8)}`;
  const topics = Array.from({ length: 20 }, (_, i) => `${prefix}-${i}`);
  const dropped = () =>
    metrics.dropped.get().then((m) =>
      m.values.filter((v) => v.labels.error === "Local: Unknown partition").reduce((n, v) => n + v.value, 0)
    );
  const before = await dropped();
  const lines = await captured(async () => {
    // Partition 9 of topics the mock cluster makes with 4: each message is dropped on its report.
    let accepted = 0;
    for (const topic of topics) {
      await r.facade.produce({ topic, value: text(topic), partition: 9 }, "none").then(
        () => accepted++,
        (err) => {
          if (!(err instanceof ProduceError && err.kind === "invalid")) throw err;
        },
      );
    }
    assert.ok(accepted > 1);
    await waitFor("the drops to be counted", async () => (await dropped()) - before === accepted);
  });
  const logged = lines.filter((l) => l.msg === "message dropped: Kafka will never take it");
  // The first drop of the window names its topic (an earlier test's drop for the same reason may have opened the
  // window); the others are counted in the line that ends it.
  assert.ok(logged.length <= 1, JSON.stringify(logged));
  for (const line of logged) assert.ok(topics.includes(String(line.topic)));
});

Deno.test("facade: records timed out before their topic was known open the breaker only while all brokers are down", async () => {
  for (const clusterDown of [false, true]) {
    await using r = await facadeRig({ kafka: { ...DEAD_KAFKA, "message.timeout.ms": "300" } });
    r.facade.clusterDown = clusterDown;
    const results = await Promise.all(
      Array.from({ length: 6 }, (_, i) => r.facade.produce({ topic: "t", value: text(`${i}`) }, "wal")),
    );
    assert.deepEqual(results.map((x) => x.where), Array(6).fill("wal"), "kept in the WAL either way");
    // A topic that does not exist on a cluster that answers must not open the breaker for every other topic; a
    // cluster that does not answer (a login it refuses, say) must, or half-open probes would wait out each timeout.
    assert.equal(r.breaker.state, clusterDown ? "open" : "closed", `all brokers down: ${clusterDown}`);
  }
});

for (const mode of ["fallback", "always"] as const) {
  Deno.test(`facade (${mode} mode): a partition its topic lacks is refused with 400 at every ack level`, async () => {
    await using r = await facadeRig({ wal: { mode } });
    const topic = `partitions-${crypto.randomUUID().slice(0, 8)}`;
    await r.facade.produce({ topic, value: text("make the topic known"), partition: 0 }, "kafka");
    for (const ack of ["none", "wal", "kafka"] as const) {
      const refused = await refusal(r.facade.produce({ topic, value: text(ack), partition: 9 }, ack));
      assert.equal(refused.kind, "invalid", `ack=${ack}: ${refused.message}`);
      assert.equal(refused.message, `partition 9 does not exist in topic ${JSON.stringify(topic)}`);
      assert.equal(STATUS_BY_KIND[refused.kind], 400);
    }
    await r.facade.produce({ topic, value: text("last"), partition: 3 }, "wal");
    await r.producer.flush(5_000);
    await waitFor("the WAL to forget every record", () => r.wal.stats().records === 0);
    assert.equal(r.breaker.state, "closed", "the client's mistake says nothing about the brokers");
  });
}

Deno.test("facade: draining and oversized messages are refused with their kind", async () => {
  await using r = await facadeRig();
  const big = new Uint8Array(r.facade.maxMessageBytes + 1);
  assert.equal((await refusal(r.facade.produce({ topic: "t", value: big }, "none"))).kind, "too_large");
  r.facade.setDraining(true);
  assert.equal(
    (await refusal(r.facade.produce({ topic: "t", value: text("a") }, "none"))).kind,
    "unavailable",
  );
  assert.deepEqual(r.facade.readiness().reasons, ["shutting down"]);
});

Deno.test("facade: with kafka acks 0 (no broker confirms a write), ack=wal and ack=kafka are refused, ack=none taken", async () => {
  for (const key of ["acks", "request.required.acks"]) {
    await using r = await facadeRig({ kafka: { [key]: "0" } });
    for (const ack of ["wal", "kafka"] as const) {
      const refused = await refusal(r.facade.produce({ topic: "t", value: text("a") }, ack));
      assert.equal(refused.kind, "invalid", key);
      assert.match(refused.message, new RegExp(`^ack=${ack} is not available: kafka acks is 0`));
      const batch = await r.facade.produceMany([{ topic: "t", value: text("b") }, {
        topic: "t",
        value: text("c"),
      }], ack);
      assert.deepEqual(batch.map((o) => o instanceof ProduceError ? o.kind : o.where), [
        "invalid",
        "invalid",
      ]);
    }
    assert.deepEqual(await r.facade.produce({ topic: "t", value: text("d") }, "none"), { where: "queued" });
    assert.ok(await r.producer.flush(5000));
  }
  // acks 1: as usual.
  await using r = await facadeRig({ kafka: { acks: "1" } });
  assert.equal((await r.facade.produce({ topic: "t", value: text("e") }, "kafka")).where, "kafka");
});

Deno.test("facade: replay acks a delivered record, which leaves the WAL", async () => {
  await using r = await facadeRig();
  r.breaker.trip("test");
  await r.facade.produce({ topic: "t", value: text("a") }, "wal");
  const [record] = await r.wal.checkout(10);
  assert.equal(await r.facade.replay(record.id, record), true);
  assert.equal(r.wal.stats().records, 0);
});

/** Appends directly until less than `room` bytes are left under the bound. */
function fill(wal: Wal, maxBytes: number, room: number): void {
  while (maxBytes - wal.stats().bytes > room) wal.append({ topic: "t", value: text("x".repeat(100)) });
}

/** Makes the WAL fail its next write and waits until it knows. */
async function breakWal(r: FacadeRig): Promise<void> {
  r.storage.fail();
  r.wal.append({ topic: "t", value: text("held") });
  await r.wal.sync();
  assert.equal(r.wal.writable, false);
}

Deno.test("facade: readiness is 'a message posted now would be accepted', for every breaker and WAL state", async (t) => {
  const cases: Array<{
    name: string;
    mode?: "fallback" | "always" | "disable";
    breaker: "closed" | "open";
    wal: "ok" | "full" | "failing" | "disabled";
    reasons: string[];
  }> = [
    { name: "kafka up, WAL fine", breaker: "closed", wal: "ok", reasons: [] },
    { name: "kafka up, WAL failing", breaker: "closed", wal: "failing", reasons: [] },
    { name: "kafka up, WAL full", breaker: "closed", wal: "full", reasons: ["wal: full"] },
    { name: "kafka up, WAL disabled", mode: "disable", breaker: "closed", wal: "disabled", reasons: [] },
    { name: "kafka down, WAL has room", breaker: "open", wal: "ok", reasons: [] },
    {
      name: "kafka down, WAL failing",
      breaker: "open",
      wal: "failing",
      reasons: ["circuit breaker open", "wal: unavailable"],
    },
    {
      name: "kafka down, WAL full",
      breaker: "open",
      wal: "full",
      reasons: ["circuit breaker open", "wal: full"],
    },
    {
      name: "kafka down, WAL disabled",
      mode: "disable",
      breaker: "open",
      wal: "disabled",
      reasons: ["circuit breaker open", "wal: disabled"],
    },
    { name: "always mode, kafka down, WAL fine", mode: "always", breaker: "open", wal: "ok", reasons: [] },
    {
      name: "always mode, WAL failing",
      mode: "always",
      breaker: "closed",
      wal: "failing",
      reasons: ["wal: unavailable"],
    },
    { name: "always mode, WAL full", mode: "always", breaker: "closed", wal: "full", reasons: ["wal: full"] },
  ];
  for (const c of cases) {
    await t.step(c.name, async () => {
      const maxBytes = 64 * 1024;
      await using r = await facadeRig({ wal: { mode: c.mode ?? "fallback", maxBytes } });
      if (c.wal === "failing") await breakWal(r);
      if (c.wal === "full") fill(r.wal, maxBytes, 1000);
      if (c.breaker === "open") r.breaker.trip("test");
      assert.deepEqual(r.facade.readiness(), { ready: c.reasons.length === 0, reasons: c.reasons });
      // Readiness tells the truth: a 1 KiB message posted now is accepted exactly when the facade says ready.
      const posted = await r.facade.produce({ topic: "t", value: new Uint8Array(1024) }, "none").then(
        () => "accepted",
        (err) => err instanceof ProduceError && err.kind === "unavailable" ? "refused" : String(err),
      );
      assert.equal(posted, c.reasons.length === 0 ? "accepted" : "refused");
      r.facade.setDraining(true);
      assert.deepEqual(r.facade.readiness().reasons, ["shutting down", ...c.reasons]);
    });
  }
});

Deno.test("facade: WAL failing, kafka down: answered records are kept, refused ones retracted, new ones refused", async () => {
  await using r = await facadeRig();
  r.breaker.trip("test");
  r.storage.fail();
  // One commit holds both: the ack=none client is answered at once, the ack=wal one hears of the failure.
  const [kept, refused] = await Promise.allSettled([
    r.facade.produce({ topic: "t", value: text("kept") }, "none"),
    r.facade.produce({ topic: "t", value: text("refused") }, "wal"),
  ]);
  assert.deepEqual(kept, { status: "fulfilled", value: { where: "wal" } });
  assert.equal(refused.status, "rejected");
  const err = (refused as PromiseRejectedResult).reason as ProduceError;
  assert.deepEqual([err.kind, err.message, err.retryAfterSeconds], ["unavailable", "wal: unavailable", 5]);
  assert.deepEqual(
    r.wal.stats().unwritten,
    1,
    "the refused record was retracted: a retry will not duplicate it",
  );

  for (const ack of ["none", "wal"] as const) {
    const later = await refusal(r.facade.produce({ topic: "t", value: text("later") }, ack));
    assert.deepEqual(
      [later.kind, later.message],
      ["unavailable", "wal: unavailable"],
      "no OS error, no path",
    );
  }
  assert.deepEqual(r.facade.readiness().reasons, ["circuit breaker open", "wal: unavailable"]);
  assert.deepEqual((await r.wal.checkout(10)).map((m) => new TextDecoder().decode(m.value)), ["kept"]);

  r.storage.heal();
  await waitFor("the WAL to be writable again", () => r.wal.writable, 5000, 10);
  assert.equal((await r.facade.produce({ topic: "t", value: text("again") }, "wal")).where, "wal");
  assert.deepEqual(r.facade.readiness(), { ready: true, reasons: [] });
});

Deno.test("facade: WAL failing, kafka down, every refused record taken back: not ready until a write works", async () => {
  await using r = await facadeRig();
  r.breaker.trip("test");
  r.storage.fail();
  const err = await refusal(r.facade.produce({ topic: "t", value: text("a") }, "wal"));
  assert.deepEqual([err.kind, err.message], ["unavailable", "wal: unavailable"]);
  assert.equal(r.wal.stats().unwritten, 0, "nothing held");
  await waitFor("three retries", () => r.storage.probes >= 3 || r.wal.writable, 5000, 5);
  assert.deepEqual(r.facade.readiness().reasons, ["circuit breaker open", "wal: unavailable"]);
  r.storage.heal();
  await waitFor("the WAL to be writable again", () => r.wal.writable, 5000, 10);
  assert.deepEqual(r.facade.readiness(), { ready: true, reasons: [] });
});

Deno.test("facade: WAL failing, kafka up: the Kafka path keeps serving", async () => {
  await using r = await facadeRig();
  await breakWal(r);
  assert.deepEqual(await r.facade.produce({ topic: "t", value: text("a") }, "none"), { where: "queued" });
  assert.equal((await r.facade.produce({ topic: "t", value: text("b") }, "wal")).where, "kafka");
  assert.ok(await r.producer.flush(5000));
  assert.deepEqual(r.facade.readiness(), { ready: true, reasons: [] });
});

Deno.test("facade: always mode with a failing WAL refuses with 'wal: unavailable' and keeps nothing", async () => {
  await using r = await facadeRig({ wal: { mode: "always" } });
  r.storage.fail();
  const err = await refusal(r.facade.produce({ topic: "t", value: text("a") }, "none"));
  assert.deepEqual([err.kind, err.message], ["unavailable", "wal: unavailable"]);
  assert.equal(r.wal.stats().records, 0, "retracted");
  // Nothing is held, so only a probe write can show the disk works again: it still fails.
  await waitFor("three retries", () => r.storage.probes >= 3 || r.wal.writable, 5000, 5);
  assert.deepEqual(r.facade.readiness(), { ready: false, reasons: ["wal: unavailable"] });
  assert.ok(await r.producer.flush(5000));
});

Deno.test("facade: a full WAL answers 'wal: full'", async () => {
  await using r = await facadeRig({ wal: { maxBytes: 8192 } });
  r.breaker.trip("test");
  fill(r.wal, 8192, 300);
  // Its line (value base64-encoded, plus the record's fields) takes more than the 300 bytes left.
  const full = await refusal(r.facade.produce({ topic: "t", value: text("x".repeat(300)) }, "none"));
  assert.deepEqual([full.kind, full.message], ["unavailable", "wal: full"]);
});

Deno.test("facade: ListTopics errors do not carry librdkafka's text; with the breaker open the cluster is not asked", async () => {
  await using r = await facadeRig();
  let asked = 0;
  const failing = {
    listTopics: () => {
      asked++;
      return Promise.reject(new Error("Local: Broker transport failure (librdkafka internals)"));
    },
  } as unknown as KafkaProducerType;
  const previous = r.facade.swapProducer(failing);
  try {
    const err = await refusal(r.facade.listTopics());
    assert.deepEqual([err.kind, err.message, asked], ["unavailable", "kafka: cannot list topics", 1]);
    r.breaker.trip("test");
    const open = await refusal(r.facade.listTopics());
    assert.deepEqual([open.kind, open.message, asked], [
      "unavailable",
      "kafka unavailable (circuit breaker open)",
      1,
    ]);
  } finally {
    r.facade.swapProducer(previous);
  }
});

for (const ack of ["none", "wal"] as const) {
  Deno.test(`facade ack=${ack}: failed single messages reach the WAL byte for byte, rebuilt from librdkafka's reports`, async () => {
    await using r = await facadeRig({ kafka: DEAD_KAFKA });
    const messages = variedMessages(25);
    const results = await Promise.all(messages.map((m) => r.facade.produce(m, ack)));
    assert.deepEqual(results.map((o) => o.where), Array(25).fill(ack === "none" ? "queued" : "wal"));
    await waitFor("every failed delivery spooled", () => r.wal.stats().records === 25, 10_000);
    const byValue = (x: { value: number[] }, y: { value: number[] }) =>
      String(x.value) < String(y.value) ? -1 : 1;
    const spooled = (await r.wal.checkout(100)).map(sent).sort(byValue);
    assert.deepEqual(spooled, messages.map(sent).sort(byValue));
  });
}

Deno.test("facade: wal_reserved_bytes shows the WAL room held for records in librdkafka, and frees it on delivery", async () => {
  await using r = await facadeRig({ kafka: { "linger.ms": "1000" } });
  const reserved = async () => (await metrics.walReservedBytes.get()).values[0]?.value ?? 0;
  const accepted = Array.from(
    { length: 10 },
    (_, i) => r.facade.produce({ topic: "t", value: text(`r${i}`) }, "none"),
  );
  await Promise.all(accepted);
  const held = await reserved();
  assert.ok(held >= 10 * "r0".length, `${held} bytes reserved for 10 records in librdkafka`);
  assert.equal(r.wal.stats().bytes, 0, "none of it in the WAL's own bytes");
  assert.ok(await r.producer.flush(5000));
  await waitFor("the reservations to be freed", async () => (await reserved()) === 0, 5000);
});
