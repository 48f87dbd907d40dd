/** SIGKILL with ack=wal, and SIGTERM with the broker down: whatever got a 2xx reaches Kafka after a restart. */
import assert from "node:assert/strict";
import { startBroker } from "./kafka/broker.ts";
import { consumeAll } from "./kafka/consume.ts";
import { faultConfig, startProxiedBroker, waitForBreaker, walDrained } from "./support/fault.ts";
import { assertAllDelivered, postRange, tally } from "./support/load.ts";
import { startService } from "./support/service.ts";
import { tempDir } from "./support/temp_dir.ts";
import { delay, waitFor } from "./support/wait.ts";

Deno.test({
  name:
    "fault: kill -9 mid-load with ack=wal (broker partly down), restart on the same WAL: every 2xx in Kafka",
  sanitizeOps: false,
  sanitizeResources: false,
  async fn() {
    await using broker = await startBroker();
    await broker.createTopic("crash", 1);
    await using dir = await tempDir("ka-kill-");
    const config = faultConfig(broker.bootstrap, `${dir.path}/wal`);
    await using svc = await startService(config, { dir: dir.path });
    let stop = false;
    const load = postRange(svc.http, "crash", "k", 0, 200_000, { ack: "wal", stop: () => stop });
    await delay(2000);
    await broker.stop(); // from here on, 2xx means "fsynced in the WAL"
    await delay(6000);
    svc.signal("SIGKILL");
    await svc.exited;
    stop = true;
    const result = await load;
    assert.ok(result.acked.size > 0 && result.refused.size > 0, "the kill happened mid-load");

    await broker.start();
    await using restarted = await startService(config, { dir: dir.path });
    await walDrained(restarted);
    const found = await consumeAll(broker.bootstrap, "crash", {
      expected: result.acked.size,
      timeoutMs: 90_000,
    });
    const sent = result.acked.size + result.refused.size;
    assertAllDelivered("sigkill-ack-wal", tally("k", sent, result.acked, found.map((m) => m.value)));
    assert.equal(await restarted.stop(), 0);
  },
});

Deno.test({
  name:
    "fault: SIGTERM with the broker unreachable spools what librdkafka holds, exit 0; after restart all in Kafka",
  sanitizeOps: false,
  sanitizeResources: false,
  async fn() {
    // Behind a blackholed proxy the brokers neither answer nor refuse: messages stay queued inside librdkafka
    // (a long message timeout, the breaker still closed) until SIGTERM has to spool them.
    await using net = await startProxiedBroker();
    const { broker, proxy } = net;
    await broker.createTopic("term", 1);
    await using dir = await tempDir("ka-term-");
    const config = faultConfig(broker.bootstrap, `${dir.path}/wal`, {
      kafka: { "message.timeout.ms": 120000 },
      producer: { shutdown_timeout: "3s" },
    });
    await using svc = await startService(config, { dir: dir.path });
    const first = await postRange(svc.http, "term", "t", 0, 2000);
    await waitFor(
      "the first messages to be delivered",
      async () => (await svc.metric("kafka_client_ack_cnt")) >= 2000,
    );
    proxy.blackhole(true);
    const second = await postRange(svc.http, "term", "t", 2000, 12_000);
    const acked = new Set([...first.acked, ...second.acked]);
    assert.equal(acked.size, 12_000);
    assert.equal(await svc.metric("kafka_cb_current_state"), 0, "the breaker is still closed");
    assert.ok(
      (await svc.metric("kafka_client_messages_in_transit")) > 9000,
      "messages wait inside librdkafka",
    );

    const t0 = Date.now();
    assert.equal(await svc.stop("SIGTERM"), 0);
    const stopMs = Date.now() - t0;
    const stopped = (await svc.logs()).find((l) => l.msg === "stopped");
    assert.ok(stopped, "a 'stopped' log line");
    console.log(`sigterm: exit 0 after ${stopMs} ms with ${stopped.wal_records} records in the WAL`);
    assert.ok(Number(stopped.wal_records) >= 10_000, `WAL holds the undelivered: ${stopped.wal_records}`);

    proxy.blackhole(false);
    await using restarted = await startService(config, { dir: dir.path });
    await walDrained(restarted);
    const found = await consumeAll(broker.bootstrap, "term", { expected: acked.size, timeoutMs: 90_000 });
    assertAllDelivered("sigterm-broker-unreachable", tally("t", 12_000, acked, found.map((m) => m.value)));
    assert.equal(await restarted.stop(), 0);
  },
});

Deno.test({
  name: "fault: WAL at its bound answers 503 with Retry-After; nothing that got a 2xx is lost",
  sanitizeOps: false,
  sanitizeResources: false,
  async fn() {
    await using broker = await startBroker();
    await broker.createTopic("bound", 1);
    await broker.stop();
    await using dir = await tempDir("ka-bound-");
    await using svc = await startService(
      faultConfig(broker.bootstrap, `${dir.path}/wal`, { producer: { wal: { max_bytes: "512KiB" } } }),
      { dir: dir.path },
    );
    await waitForBreaker(svc, "open", 30_000);
    const load = await postRange(svc.http, "bound", "w", 0, 20_000, { concurrency: 16 });
    assert.ok(load.acked.size > 1000, `some accepted: ${load.acked.size}`);
    assert.ok(load.refused.size > 0, "some refused at the bound");
    assert.ok([...load.refused.values()].every((s) => s === 503), "refusals are 503");
    const r = await fetch(`${svc.http}/topics/bound/messages`, { method: "POST", body: "x".repeat(2000) });
    assert.equal(r.status, 503);
    assert.ok(Number(r.headers.get("retry-after")) > 0, "Retry-After set");
    assert.match(await r.text(), /wal/i);

    await broker.start();
    await walDrained(svc);
    const found = await consumeAll(broker.bootstrap, "bound", {
      expected: load.acked.size,
      timeoutMs: 60_000,
    });
    assertAllDelivered("wal-bound", tally("w", 20_000, load.acked, found.map((m) => m.value)));
    assert.equal(await svc.stop(), 0);
  },
});

Deno.test({
  name: "fault: a second SIGTERM exits at once; what was already in the WAL reaches Kafka after a restart",
  sanitizeOps: false,
  sanitizeResources: false,
  async fn() {
    // Blackholed from the start, with timeouts longer than the test: the records sit in librdkafka, the breaker
    // stays closed, and the first SIGTERM waits for the flush when the second one comes.
    await using net = await startProxiedBroker();
    const { broker, proxy } = net;
    await broker.createTopic("twice", 1);
    proxy.blackhole(true);
    await using dir = await tempDir("ka-twice-");
    const slow = { "message.timeout.ms": 120000, "socket.connection.setup.timeout.ms": 120000 };
    const config = faultConfig(broker.bootstrap, `${dir.path}/wal`, {
      kafka: { ...slow, "socket.timeout.ms": 120000 },
      producer: { shutdown_timeout: "60s", wal: { always_topics: ["twice"] } },
    });
    await using svc = await startService(config, { dir: dir.path });
    const load = await postRange(svc.http, "twice", "2", 0, 1000);
    assert.equal(load.acked.size, 1000, "always_topics: each reply came after the WAL write was durable");
    svc.signal("SIGTERM");
    await delay(1_500); // a repeat within a second is taken as the same request
    const t0 = Date.now();
    svc.signal("SIGTERM");
    const code = await svc.exited;
    const ms = Date.now() - t0;
    console.log(`second signal: exit ${code} after ${ms} ms`);
    assert.notEqual(code, 0, "the second signal did not wait for the flush");
    assert.ok(ms < 2000, `exited ${ms} ms after the second signal`);

    proxy.blackhole(false);
    await using restarted = await startService(faultConfig(broker.bootstrap, `${dir.path}/wal`), {
      dir: dir.path,
    });
    await walDrained(restarted);
    const found = await consumeAll(broker.bootstrap, "twice", { expected: 1000, timeoutMs: 60_000 });
    assertAllDelivered("second-sigterm", tally("2", 1000, load.acked, found.map((m) => m.value)));
    assert.equal(await restarted.stop(), 0);
  },
});
