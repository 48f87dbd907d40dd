/** KafkaProducer against librdkafka's in-process mock cluster (and a dead address for failures). */
import assert from "node:assert/strict";
import {
  checkKafkaConfig,
  effectiveKafkaConfig,
  KafkaError,
  KafkaProducer,
  type KafkaProducerOptions,
  librdkafkaVersion,
} from "../src/kafka/producer.ts";
import { acks, errors, inTransit } from "../src/metrics.ts";
import type { Counter } from "prom-client";
import type { Message } from "../src/message.ts";
import { DEAD_KAFKA, sent, variedMessages } from "./support/varied_messages.ts";
import { delay, waitFor } from "./support/wait.ts";

const enc = new TextEncoder();
const MOCK = { "test.mock.num.brokers": "1" };
const DEAD = { "bootstrap.servers": "127.0.0.1:1", "reconnect.backoff.max.ms": "500" };

function open(config: Record<string, string>, opts: Partial<KafkaProducerOptions> = {}): KafkaProducer {
  return KafkaProducer.open({ id: `test-${crypto.randomUUID().slice(0, 8)}`, config, ...opts });
}

async function counterValue(counter: Counter, labels: Record<string, string>): Promise<number> {
  const hit = (await counter.get()).values.find((v) =>
    Object.entries(labels).every(([k, x]) => v.labels[k] === x)
  );
  return hit?.value ?? 0;
}

async function rejection(p: Promise<unknown>): Promise<KafkaError> {
  try {
    await p;
  } catch (e) {
    assert.ok(e instanceof KafkaError, `expected a KafkaError, got ${e}`);
    return e;
  }
  assert.fail("expected a rejection");
}

function topicName(): string {
  return `t-${crypto.randomUUID().slice(0, 8)}`;
}

Deno.test("delivers with partition and offset, counts acks, keeps in-transit at zero after", async () => {
  const p = open(MOCK);
  const topic = topicName();
  try {
    const first = await p.produce({ topic, value: enc.encode("one"), partition: 1 });
    assert.equal(first.partition, 1);
    assert.equal(first.offset, 0n);
    const more = await Promise.all(
      [0, 1, 2].map((i) => p.produce({ topic, value: enc.encode(`m${i}`), partition: 1 })),
    );
    assert.deepEqual(more.map((d) => d.offset), [1n, 2n, 3n]);
    const anyPartition = await p.produce({ topic, value: enc.encode("free"), key: enc.encode("k1") });
    assert.ok(anyPartition.partition >= 0);
    assert.equal(await counterValue(acks, { topic }), 5);
    assert.equal(p.inFlight, 0);
    const gauge = (await inTransit.get()).values.find((v) => v.labels.producer_id === p.id);
    assert.equal(gauge?.value, 0);
  } finally {
    await p.close(1000);
  }
});

Deno.test("partition -0 is partition 0, alone and in a batch (Deno's FFI refuses -0 as an int32)", async () => {
  const p = open(MOCK);
  const topic = topicName();
  try {
    const one = await p.produce({ topic, value: enc.encode("one"), partition: -0 });
    assert.equal(one.partition, 0);
    const many = await p.produceBatch(
      [1, 2, 3].map((i) => ({ topic, value: enc.encode(`m${i}`), partition: -0 })),
    );
    assert.deepEqual([...many.partitions], [0, 0, 0]);
  } finally {
    await p.close(1000);
  }
});

Deno.test("key, headers, explicit partition and timestamp reach the broker (read back with kcat)", async () => {
  let bootstrap = "";
  const p = open({ ...MOCK, "statistics.interval.ms": "100" }, {
    onStats: (s) => {
      for (const b of Object.values(s.brokers as Record<string, { nodename: string }>)) {
        bootstrap = b.nodename;
      }
    },
  });
  const topic = topicName();
  try {
    const d = await p.produce({
      topic,
      value: enc.encode("the value"),
      key: enc.encode("the key"),
      headers: [["h1", enc.encode("x")], ["h2", enc.encode("yy")], ["h1", enc.encode("again")]],
      partition: 2,
      timestamp: 1_700_000_000_123,
    });
    assert.equal(d.partition, 2);
    const plain = await p.produce({ topic, value: enc.encode("plain"), partition: 2 });
    assert.equal(plain.offset, d.offset + 1n);
    await p.produce({ topic, value: new Uint8Array(0), partition: 2 });
    await waitFor("statistics to name the mock broker", () => bootstrap !== "", 2000, 20);
    const args = `-C -b ${bootstrap} -t ${topic} -p 2 -o beginning -c 3 -e -q -f`.split(" ");
    const out = await new Deno.Command("kcat", {
      args: [...args, "%K|%k|%S|%s|%T|%h|%p\\n"],
      stdout: "piped",
      stderr: "piped",
    }).output();
    assert.ok(out.success, new TextDecoder().decode(out.stderr));
    const lines = new TextDecoder().decode(out.stdout).trim().split("\n");
    assert.equal(lines.length, 3);
    assert.equal(lines[0], "7|the key|9|the value|1700000000123|h1=x,h2=yy,h1=again|2");
    assert.match(lines[1], /^-1\|\|5\|plain\|\d{13}\|\|2$/, "no key: null; timestamp: now");
    assert.match(lines[2], /^-1\|\|0\|\|\d{13}\|\|2$/, "an empty value stays empty, not null");
  } finally {
    await p.close(1000);
  }
});

Deno.test("a dead address: messages fail with retryable _MSG_TIMED_OUT, counted under its text as the Go service did; onError sees the transport", async () => {
  const seen: number[] = [];
  const p = open({ ...DEAD, "message.timeout.ms": "1500" }, { onError: (e) => seen.push(e.code) });
  const topic = topicName();
  try {
    // The `error` label holds librdkafka's text for the code, as the Go service's did.
    const label = { topic, error: "Local: Message timed out" };
    const before = await counterValue(errors, label);
    const results = await Promise.allSettled(
      [1, 2, 3].map((i) => p.produce({ topic, value: enc.encode(`${i}`) })),
    );
    for (const r of results) {
      assert.equal(r.status, "rejected");
      const e = (r as PromiseRejectedResult).reason;
      assert.ok(e instanceof KafkaError);
      assert.equal(e.code, -192);
      assert.equal(e.errName, "_MSG_TIMED_OUT");
      assert.equal(e.errText, "Local: Message timed out");
      assert.equal(e.retryable, true);
      assert.match(e.message, new RegExp(topic));
    }
    assert.equal(p.inFlight, 0);
    assert.equal(await counterValue(errors, label), before + 3);
    assert.ok(seen.includes(-195) || seen.includes(-187), `error events: ${seen}`);
  } finally {
    await p.close(1000);
  }
});

Deno.test("a full queue rejects with -184 without waiting, and delivers everything when waiting", async () => {
  const p = open({ ...MOCK, "queue.buffering.max.messages": "10" });
  const topic = topicName();
  try {
    await p.produce({ topic, value: enc.encode("warm-up") });
    const accepted = Array.from({ length: 10 }, (_, i) => p.produce({ topic, value: enc.encode(`a${i}`) }));
    const e = await rejection(p.produce({ topic, value: enc.encode("over") }, { fullQueueWaitMs: 0 }));
    assert.equal(e.code, -184);
    assert.equal(e.errName, "_QUEUE_FULL");
    assert.equal(e.retryable, true);
    await Promise.all(accepted);

    let maxInFlight = 0;
    const waited = Array.from({ length: 200 }, (_, i) => {
      const d = p.produce({ topic, value: enc.encode(`w${i}`), partition: 0 });
      maxInFlight = Math.max(maxInFlight, p.inFlight);
      return d;
    });
    assert.ok(maxInFlight <= 10, `in flight ${maxInFlight}`);
    const deliveries = await Promise.all(waited);
    const offsets = deliveries.map((d) => d.offset);
    assert.deepEqual(
      offsets,
      [...offsets].sort((a, b) => (a < b ? -1 : 1)),
      "waiting messages keep their order",
    );
    assert.equal(new Set(offsets).size, 200);
    assert.equal(await p.flush(1000), true);
  } finally {
    await p.close(1000);
  }
});

Deno.test("a message waits for room in a full queue up to fullQueueWaitMs, even behind one that waits on", async () => {
  // No broker: the ten queued messages stay until message.timeout.ms, so the queue stays full.
  const p = open({
    "bootstrap.servers": "127.0.0.1:1",
    "queue.buffering.max.messages": "10",
    "message.timeout.ms": "60000",
  });
  const topic = topicName();
  try {
    const queued = Array.from({ length: 10 }, (_, i) => p.produce({ topic, value: enc.encode(`q${i}`) }));
    queued.forEach((d) => d.catch(() => {}));
    const forever = p.produce({ topic, value: enc.encode("forever") });
    forever.catch(() => {});
    const started = performance.now();
    const [single, batch] = await Promise.all([
      rejection(p.produce({ topic, value: enc.encode("single") }, { fullQueueWaitMs: 300 })),
      p.produceBatch([{ topic, value: enc.encode("b0") }, { topic, value: enc.encode("b1") }], {
        fullQueueWaitMs: 300,
      }),
    ]);
    const waited = performance.now() - started;
    assert.equal(single.code, -184);
    assert.deepEqual([0, 1].map((i) => batch.error(i)?.code ?? 0), [-184, -184]);
    assert.ok(waited >= 300, `gave up after ${waited.toFixed(0)} ms`);
    assert.equal(p.inFlight, 10, "the queued ten are still in librdkafka");
    let settled = false;
    forever.then(() => settled = true, () => settled = true);
    await delay(150);
    assert.equal(settled, false, "a message without a bound still waits");
  } finally {
    await p.close(0);
  }
});

Deno.test("a message over message.max.bytes is refused at once as not retryable", async () => {
  const p = open({ ...MOCK, "message.max.bytes": "1000" });
  try {
    const e = await rejection(p.produce({ topic: topicName(), value: new Uint8Array(5000) }));
    assert.equal(e.code, 10);
    assert.equal(e.errName, "MSG_SIZE_TOO_LARGE");
    assert.equal(e.errText, "Broker: Message size too large");
    assert.equal(e.retryable, false);
    assert.equal(p.inFlight, 0);
  } finally {
    await p.close(1000);
  }
});

Deno.test("send: the listener hears each delivery, a refusal at once, and a send after close", async () => {
  const p = open({ ...MOCK, "message.max.bytes": "1000" });
  const topic = topicName();
  const heard: string[] = [];
  const listener = (name: string) => ({
    delivered: (partition: number, offset: number) => heard.push(`${name} ${partition}:${offset}`),
    failed: (err: KafkaError) => heard.push(`${name} ${err.errName} retryable=${err.retryable}`),
  });
  try {
    p.send({ topic, value: enc.encode("a"), partition: 0 }, listener("a"));
    p.send({ topic, value: enc.encode("b"), partition: 0 }, listener("b"));
    p.send({ topic, value: new Uint8Array(5000) }, listener("big"));
    assert.deepEqual(heard, ["big MSG_SIZE_TOO_LARGE retryable=false"], "a refusal is heard within send");
    assert.equal(await p.flush(5000), true);
    assert.deepEqual(heard.slice(1), ["a 0:0", "b 0:1"]);
    assert.equal(p.inFlight, 0);
  } finally {
    await p.close(1000);
  }
  p.send({ topic, value: enc.encode("late") }, listener("late"));
  assert.equal(heard[3], "late _DESTROY retryable=true");
});

Deno.test("send: a listener that throws is logged; the reports after it in the same event still arrive", async () => {
  const p = open({ ...MOCK, "linger.ms": "50" });
  const topic = topicName();
  const heard: string[] = [];
  try {
    p.send({ topic, value: enc.encode("a"), partition: 0 }, {
      delivered: () => {
        throw new Error("listener bug");
      },
      failed: () => {},
    });
    for (const name of ["b", "c"]) {
      p.send({ topic, value: enc.encode(name), partition: 0 }, {
        delivered: (_partition, offset) => heard.push(`${name} ${offset}`),
        failed: (err) => heard.push(`${name} ${err.errName}`),
      });
    }
    assert.equal(await p.flush(5000), true);
    assert.deepEqual(heard, ["b 1", "c 2"], "one event, three reports: the two after the throwing one");
    assert.equal(p.inFlight, 0);
  } finally {
    await p.close(1000);
  }
});

Deno.test("flush resolves true when all is delivered, false on timeout", async () => {
  const ok = open(MOCK);
  const dead = open({ ...DEAD, "message.timeout.ms": "60000" });
  const topic = topicName();
  try {
    const sent = Array.from({ length: 50 }, (_, i) => ok.produce({ topic, value: enc.encode(`${i}`) }));
    assert.equal(await ok.flush(5000), true);
    assert.equal(ok.inFlight, 0);
    await Promise.all(sent);

    const stuck = dead.produce({ topic, value: enc.encode("stuck") });
    stuck.catch(() => {});
    assert.equal(await dead.flush(200), false);
    assert.equal(dead.inFlight, 1);
    assert.ok(dead.queueLength() >= 1);
  } finally {
    await ok.close(1000);
    await dead.close(100);
  }
});

Deno.test("whenBelow: undefined under the limit; otherwise resolves once deliveries bring it under, or false at the timeout", async () => {
  const ok = open({ ...MOCK, "queue.buffering.max.messages": "40" });
  const dead = open({ ...DEAD, "message.timeout.ms": "60000", "queue.buffering.max.messages": "3" });
  const topic = topicName();
  try {
    assert.equal(ok.queueCapacity, 40);
    assert.equal(dead.queueCapacity, 3);
    assert.equal(ok.whenBelow(1, 1000), undefined, "nothing in flight");

    await ok.produce({ topic, value: enc.encode("warm-up") });
    const sent = Array.from({ length: 30 }, (_, i) => ok.produce({ topic, value: enc.encode(`${i}`) }));
    const below = ok.whenBelow(10, 5000);
    assert.ok(below !== undefined, "30 in flight is not under 10");
    assert.equal(await below, true);
    assert.ok(ok.inFlight < 10, `${ok.inFlight} in flight`);
    await Promise.all(sent);

    // Three queued and two waiting for room towards a dead address: five, for as long as the timeout.
    const stuck = Array.from({ length: 5 }, (_, i) => dead.produce({ topic, value: enc.encode(`${i}`) }));
    stuck.forEach((s) => s.catch(() => {}));
    assert.equal(dead.inFlight, 3);
    assert.equal(dead.whenBelow(6, 1000), undefined, "five is under six");
    const started = performance.now();
    assert.equal(await dead.whenBelow(5, 200), false);
    assert.ok(performance.now() - started >= 190, "waited for the timeout");

    // Closing lets waiters go at once: what they hold back would not reach this producer anyway.
    const waiting = dead.whenBelow(2, 60_000);
    assert.ok(waiting !== undefined);
    const closed = dead.close(100);
    assert.equal(await waiting, true);
    await closed;
    assert.equal(dead.whenBelow(1, 1000), undefined, "a closed producer holds nothing back");
  } finally {
    await ok.close(1000);
    await dead.close(100);
  }
});

Deno.test("whenBelow: a waiter that timed out does not hold back one with a higher limit", async () => {
  const p = open({ ...MOCK, "linger.ms": "600" });
  const topic = topicName();
  try {
    await p.produce({ topic, value: enc.encode("warm-up") });
    const first = Array.from(
      { length: 3 },
      (_, i) => p.produce({ topic, value: enc.encode(`a${i}`), partition: 0 }),
    );
    assert.equal(await p.whenBelow(2, 50), false, "three in flight for the whole 50 ms");
    await delay(300);
    const second = Array.from(
      { length: 3 },
      (_, i) => p.produce({ topic, value: enc.encode(`b${i}`), partition: 1 }),
    );
    const below = p.whenBelow(6, 10_000);
    assert.ok(below !== undefined);
    // Resolves when the first three are delivered, while the later three (another partition, so another
    // linger) are still held.
    const inFlightThen = await below.then(() => p.inFlight);
    assert.equal(inFlightThen, 3);
    await Promise.all([...first, ...second]);
  } finally {
    await p.close(1000);
  }
});

Deno.test("by default librdkafka's queue holds at most 64 MiB of records, however few they are", async () => {
  // Its own default (1 GiB) would take 100,000 records of any size: 400 MB of 4 KiB ones, held twice.
  const p = open({ ...DEAD, "message.timeout.ms": "60000" });
  const topic = topicName();
  const value = new Uint8Array(4096);
  const sent: Promise<unknown>[] = [];
  try {
    while (sent.length < 100_000) {
      const before = p.inFlight;
      const s = p.produce({ topic, value }, { fullQueueWaitMs: 0 });
      s.catch(() => {});
      sent.push(s);
      if (p.inFlight === before) break;
    }
    assert.equal(p.inFlight, 16_384, "64 MiB of 4 KiB records");
    assert.equal((await rejection(sent[sent.length - 1])).errName, "_QUEUE_FULL");
  } finally {
    await p.close(200);
  }
});

Deno.test("close purges what is left with a retryable error, never hangs, and is idempotent", async () => {
  const p = open({ ...DEAD, "message.timeout.ms": "60000", "queue.buffering.max.messages": "2" });
  const topic = topicName();
  const sent = Array.from({ length: 5 }, (_, i) => p.produce({ topic, value: enc.encode(`${i}`) }));
  sent.forEach((s) => s.catch(() => {}));
  assert.equal(p.inFlight, 2, "two handed over, three waiting for room");
  const first = p.close(200);
  const second = p.close(200);
  await Promise.all([first, second]);
  for (const s of sent) {
    const e = await rejection(s);
    assert.ok([-152, -151].includes(e.code), `${e.code} ${e.errName}`);
    assert.equal(e.retryable, true);
  }
  assert.equal(p.inFlight, 0);
  assert.equal(p.queueLength(), 0);
  await p.close(200);

  const after = await rejection(p.produce({ topic, value: enc.encode("late") }));
  assert.equal(after.errName, "_DESTROY");
  assert.equal(after.retryable, true);
  await rejection(p.listTopics(100));
});

Deno.test("listTopics lists the cluster's topics, sorted, without internal ones; rejects on timeout", async () => {
  const p = open(MOCK);
  const dead = open(DEAD);
  const a = `b-${topicName()}`;
  const b = `a-${topicName()}`;
  try {
    await Promise.all([a, b, "__internal_x"].map((topic) => p.produce({ topic, value: enc.encode("x") })));
    const topics = await p.listTopics(5000);
    assert.deepEqual(topics, [b, a]);

    const e = await rejection(dead.listTopics(300));
    assert.ok(["_TIMED_OUT", "_TRANSPORT"].includes(e.errName), e.message);
    assert.equal(e.retryable, true);
  } finally {
    await p.close(1000);
    await dead.close(100);
  }
});

Deno.test("configuration: checked, read back, defaults, refused at open with the property named", () => {
  assert.equal(checkKafkaConfig({ acks: "all", "compression.codec": "lz4", "linger.ms": "20" }), null);
  assert.match(checkKafkaConfig({ "no.such.property": "1" }) ?? "", /^kafka\.no\.such\.property: .*No such/);
  assert.match(
    checkKafkaConfig({ acks: "all", "compression.codec": "rot13" }) ?? "",
    /^kafka\.compression\.codec: /,
  );

  assert.equal(effectiveKafkaConfig({ "linger.ms": "42" }, "linger.ms"), "42");
  assert.equal(effectiveKafkaConfig({ acks: "all" }, "acks"), "-1");
  assert.equal(effectiveKafkaConfig({}, "statistics.interval.ms"), "15000");
  assert.equal(effectiveKafkaConfig({}, "log.queue"), "true");
  assert.equal(effectiveKafkaConfig({}, "queue.buffering.max.kbytes"), "65536");
  assert.equal(
    effectiveKafkaConfig({ "queue.buffering.max.kbytes": "1024" }, "queue.buffering.max.kbytes"),
    "1024",
  );
  assert.equal(effectiveKafkaConfig({}, "compression.codec"), "gzip", "the Go service's default");
  assert.equal(effectiveKafkaConfig({}, "message.timeout.ms"), "60000", "the Go service's default");
  assert.equal(effectiveKafkaConfig({ "compression.codec": "none" }, "compression.codec"), "none");
  assert.equal(effectiveKafkaConfig({ "statistics.interval.ms": "0" }, "statistics.interval.ms"), "0");
  assert.equal(effectiveKafkaConfig({}, "no.such.property"), null);

  assert.throws(() => open({ ...MOCK, "batch.num.messages": "many" }), /kafka\.batch\.num\.messages: /);
  assert.match(librdkafkaVersion(), /^\d+\.\d+\.\d+/);
  assert.throws(() => librdkafkaVersion("/nonexistent/librdkafka.so"), /LIBRDKAFKA_PATH/);
});

Deno.test("send: a failed message reaches its listener as it was sent, rebuilt from librdkafka's report", async () => {
  // Twenty messages fit librdkafka's queue; the others wait for room until their 50 ms are over.
  const p = open({ ...DEAD_KAFKA, "queue.buffering.max.messages": "20" });
  const failures: Array<{ err: KafkaError; message: Message | undefined }> = [];
  try {
    const messages = variedMessages(30);
    for (const m of messages) {
      p.send(m, {
        delivered: () => assert.fail("delivered to a dead address"),
        failed: (err, message) => failures.push({ err, message }),
      }, { fullQueueWaitMs: 50 });
    }
    await waitFor("every message failed", () => failures.length === messages.length, 10_000);
    const names = new Set(failures.map((f) => f.err.errName));
    assert.deepEqual([...names].sort(), ["_MSG_TIMED_OUT", "_QUEUE_FULL"]);
    for (const { err, message } of failures) {
      assert.ok(message !== undefined, `${err.errName}: the message came back`);
      const original = messages.find((m) => m === message) ??
        messages.find((m) => JSON.stringify(sent(m)) === JSON.stringify(sent(message)));
      assert.ok(original !== undefined, `${err.errName}: an unknown message came back`);
      // A message librdkafka had comes back rebuilt (none is held), unless it has headers or a timestamp; one
      // that never left the wait for room comes back as it is.
      const kept = err.errName === "_QUEUE_FULL" || original.headers !== undefined ||
        original.timestamp !== undefined;
      assert.equal(message === original, kept, `${err.errName}: kept ${kept}`);
    }
    assert.equal(new Set(failures.map((f) => f.message)).size, messages.length, "each message once");
  } finally {
    await p.close(1000);
  }
});

Deno.test("send: no more bytes wait for room in the service than librdkafka's queue holds; the rest fail at once", async () => {
  // librdkafka takes 16 messages of 4 KiB (64 KiB); 16 more may wait for room; the 8 after them are refused.
  const p = open({ ...DEAD, "message.timeout.ms": "60000", "queue.buffering.max.kbytes": "64" });
  const failures: Array<{ err: KafkaError; message: Message | undefined }> = [];
  try {
    const messages = Array.from({ length: 40 }, () => ({ topic: "t", value: new Uint8Array(4096) }));
    for (const m of messages) {
      p.send(m, {
        delivered: () => assert.fail("delivered to a dead address"),
        failed: (err, message) => failures.push({ err, message }),
      }, { fullQueueWaitMs: 60_000 });
    }
    assert.ok(failures.length >= 8, `${failures.length} refused at once, expected at least 8`);
    assert.ok(failures.length < 40, "some wait or are in librdkafka's queue");
    for (const [k, { err, message }] of failures.entries()) {
      assert.equal(err.errName, "_QUEUE_FULL");
      assert.equal(message, messages[40 - failures.length + k], "the last ones, each with its message");
    }
  } finally {
    await p.close(1000);
  }
});
