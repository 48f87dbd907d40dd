/**
 * Records the broker refuses, or cannot place, must not cost the other topics anything: a record Kafka refuses for
 * good is dropped and counted, and a topic that does not exist does not open the breaker for every other topic. A
 * record that lost its partition with its topic is not refused: it is sent again.
 */
import assert from "node:assert/strict";
import { type Broker, startBroker } from "./kafka/broker.ts";
import { consumeAll } from "./kafka/consume.ts";
import {
  breakerChanges,
  faultConfig,
  startProxiedBroker,
  walDrained,
  withServiceLog,
} from "./support/fault.ts";
import { type Service, startService } from "./support/service.ts";
import { tempDir } from "./support/temp_dir.ts";
import { delay } from "./support/wait.ts";

async function post(
  base: string,
  topic: string,
  query: string,
  body: string,
): Promise<{ status: number; text: string }> {
  const r = await fetch(`${base}/topics/${topic}/messages${query}`, { method: "POST", body });
  return { status: r.status, text: await r.text() };
}

/**
 * A broker (with more `properties`) holding `topics` (name: topic configs, one partition each) and a service in the
 * fault tests' config against it; `fn` runs with the service's log printed should it fail.
 */
async function withBroker(
  topics: Record<string, Record<string, string>>,
  fn: (svc: Service, broker: Broker) => Promise<void>,
  properties?: Record<string, string | number | boolean>,
): Promise<void> {
  await using broker = await startBroker({ properties });
  for (const [name, configs] of Object.entries(topics)) await broker.createTopic(name, 1, configs);
  await using dir = await tempDir("ka-refused-");
  await using svc = await startService(faultConfig(broker.bootstrap, `${dir.path}/wal`), { dir: dir.path });
  await withServiceLog(svc, () => fn(svc, broker));
}

/** `n` ack=kafka requests to `topic`, one after another; their statuses. */
async function statuses(base: string, topic: string, n: number, gapMs = 0): Promise<number[]> {
  const out: number[] = [];
  for (let i = 0; i < n; i++) {
    out.push((await post(base, topic, "?ack=kafka", `h${i}`)).status);
    if (gapMs > 0) await delay(gapMs);
  }
  return out;
}

Deno.test({
  name:
    "refused: a record the broker refuses for good (no key on a compacted topic) is dropped, the breaker stays closed",
  sanitizeOps: false,
  sanitizeResources: false,
  async fn() {
    await withBroker({ compacted: { "cleanup.policy": "compact" }, healthy: {} }, async (svc) => {
      // Twice the breaker's cb.fails, unkeyed: INVALID_RECORD from the broker.
      for (let i = 0; i < 10; i++) assert.equal((await post(svc.http, "compacted", "", `c${i}`)).status, 200);
      for (const ack of ["kafka", "wal"]) {
        const refused = await post(svc.http, "compacted", `?ack=${ack}`, "c");
        assert.equal(refused.status, 502, refused.text);
        assert.match(refused.text, /INVALID_RECORD/);
      }
      const keyed = await post(svc.http, "compacted", "?ack=kafka&key=k", "c");
      assert.equal(keyed.status, 200, keyed.text);
      assert.deepEqual(await statuses(svc.http, "healthy", 50), Array(50).fill(200));
      await delay(3000); // a replay period and more: nothing was spooled to come back
      assert.deepEqual(await breakerChanges(svc), []);
      assert.equal(await svc.metric("wal_messages"), 0);
      assert.equal(
        await svc.metric("kafka_client_dropped_cnt", { topic: "compacted" }),
        12,
        "each unkeyed record dropped once",
      );
    });
  },
});

Deno.test({
  name:
    "refused: records for a topic that does not exist time out without opening the breaker for the others",
  sanitizeOps: false,
  sanitizeResources: false,
  async fn() {
    // message.timeout.ms (4 s) is below librdkafka's wait for a topic to appear (30 s): the records time out first.
    await withBroker({ healthy: {} }, async (svc) => {
      const typos = await Promise.all(
        Array.from({ length: 20 }, (_, i) => post(svc.http, "no-such-topic", "", `t${i}`)),
      );
      assert.deepEqual(typos.map((r) => r.status), Array(20).fill(200));
      const waited = post(svc.http, "no-such-topic", "?ack=kafka", "t");
      // Over the 4 s in which those time out, and after: the other topic is served as before.
      const healthy = await statuses(svc.http, "healthy", 80, 100);
      assert.deepEqual(healthy, Array(80).fill(200));
      const timedOut = await waited;
      assert.equal(timedOut.status, 502, timedOut.text);
      assert.match(
        timedOut.text,
        /Message timed out \(_MSG_TIMED_OUT\), before the topic's partitions were known/,
      );
      assert.deepEqual(await breakerChanges(svc), []);
    }, { "auto.create.topics.enable": false });
  },
});

Deno.test({
  name:
    "refused: records that each fit a topic's max.message.bytes but not together are sent again alone, none lost",
  sanitizeOps: false,
  sanitizeResources: false,
  async fn() {
    // librdkafka builds requests of up to batch.size (1,000,000 bytes); the broker refuses one over the topic's
    // limit whole, as "message size too large" for every record in it.
    await withBroker({ small: { "max.message.bytes": "1000" } }, async (svc, broker) => {
      // Random text: compression (gzip by default) must not make a request fit.
      const noise = (n: number) => btoa(String.fromCharCode(...crypto.getRandomValues(new Uint8Array(n))));
      const value = (i: number, ack: string) => `${ack}${i}:${noise(375)}`;
      const replies = await Promise.all(
        ["none", "wal", "kafka"].flatMap((ack) =>
          Array.from({ length: 40 }, (_, i) => post(svc.http, "small", `?ack=${ack}`, value(i, ack)))
        ),
      );
      assert.deepEqual(replies.filter((r) => r.status !== 200), []);
      // One record over the limit on its own is refused for good.
      const big = await post(svc.http, "small", "?ack=kafka", noise(2250));
      assert.equal(big.status, 502, big.text);
      assert.match(big.text, /MSG_SIZE_TOO_LARGE/);
      await walDrained(svc, 30_000);
      const got = await consumeAll(broker.bootstrap, "small", { expected: 120, timeoutMs: 30_000 });
      const values = new Set(got.map((m) => new TextDecoder().decode(m.valueBytes!)));
      assert.equal(values.size, 120);
      assert.equal(await svc.metric("kafka_client_dropped_cnt", { topic: "small" }), 1, "the big one only");
      assert.deepEqual(await breakerChanges(svc), []);
    });
  },
});

Deno.test({
  name:
    "refused: records whose partition went with their topic (made again with fewer) are sent again, none lost",
  sanitizeOps: false,
  sanitizeResources: false,
  async fn() {
    await using net = await startProxiedBroker();
    const { broker, proxy } = net;
    await broker.createTopic("remade", 3);
    await using dir = await tempDir("ka-refused-");
    // A message timeout longer than the topic takes to be made again: the records wait in their partitions.
    const config = faultConfig(broker.bootstrap, `${dir.path}/wal`, {
      kafka: { "message.timeout.ms": 60_000 },
    });
    await using svc = await startService(config, { dir: dir.path });
    await withServiceLog(svc, async () => {
      assert.equal((await post(svc.http, "remade", "?ack=kafka", "known")).status, 200, "partitions known");
      proxy.blackhole(true);
      // librdkafka's partitioner keeps a partition for 10 ms of unkeyed records: spread over a second, they go to
      // all three.
      const sent: string[] = [];
      for (let i = 0; i < 50; i++) {
        const value = `r${i}`;
        assert.equal((await post(svc.http, "remade", "", value)).status, 200);
        sent.push(value);
        await delay(20);
      }
      await broker.deleteTopic("remade");
      await broker.createTopic("remade", 1);
      proxy.blackhole(false);
      // Those of partitions 1 and 2 fail with _UNKNOWN_PARTITION, go to the WAL and are replayed into partition 0.
      await walDrained(svc, 60_000);
      const got = await consumeAll(broker.bootstrap, "remade", { expected: sent.length, timeoutMs: 60_000 });
      assert.deepEqual(got.map((m) => m.value).sort(), sent.sort());
      assert.equal(await svc.metric("kafka_client_dropped_cnt", { topic: "remade" }), 0);
      assert.ok((await svc.metric("wal_replayed")) > 0, "some records had lost their partition");
      // The proxy's end of the blackhole drops the connection ("all brokers down"); the lost partitions count for
      // nothing.
      const changes = await breakerChanges(svc);
      assert.deepEqual(changes.filter((c) => /PARTITION/.test(c.reason)), [], JSON.stringify(changes));
    });
  },
});
