/** WAL modes against a real broker: damaged WAL recovery, `always` exactly once, `disable` and `disable_topics`. */
import assert from "node:assert/strict";
import { startBroker } from "./kafka/broker.ts";
import { consumeAll } from "./kafka/consume.ts";
import { faultConfig, waitForBreaker, walDrained, withServiceLog } from "./support/fault.ts";
import { assertAllDelivered, postRange, tally } from "./support/load.ts";
import { startFaultProxy } from "./kafka/fault_proxy.ts";
import { freePort, startService } from "./support/service.ts";
import { tempDir } from "./support/temp_dir.ts";
import { delay, waitFor } from "./support/wait.ts";

async function segmentFiles(walDir: string): Promise<string[]> {
  const names: string[] = [];
  for await (const e of Deno.readDir(walDir)) if (e.isFile && e.name.endsWith(".wal")) names.push(e.name);
  return names.sort().map((n) => `${walDir}/${n}`);
}

Deno.test({
  name:
    "fault: a WAL with a torn last line and a garbage line: starts, replays every good record, counts the bad",
  sanitizeOps: false,
  sanitizeResources: false,
  async fn() {
    await using broker = await startBroker();
    await broker.createTopic("damaged", 1);
    await broker.stop();
    await using dir = await tempDir("ka-dmg-");
    const config = faultConfig(broker.bootstrap, `${dir.path}/wal`);
    await using first = await startService(config, { dir: dir.path });
    await waitForBreaker(first, "open", 30_000);
    const load = await postRange(first.http, "damaged", "x", 0, 500, { ack: "wal" });
    assert.equal(load.acked.size, 500);
    assert.equal(await first.stop(), 0);

    const [segment] = await segmentFiles(`${dir.path}/wal`);
    assert.ok(segment, "a segment file exists");
    const lines = (await Deno.readTextFile(segment)).split("\n").filter((l) => l.length > 0);
    assert.ok(lines.length >= 500);
    lines.splice(100, 0, "this is not a wal record");
    await Deno.writeTextFile(segment, lines.join("\n") + "\n" + lines[lines.length - 1].slice(0, 25));

    await broker.start();
    await using svc = await startService(config, { dir: dir.path });
    await walDrained(svc);
    assert.equal(await svc.metric("wal_corrupt_records"), 1);
    const found = await consumeAll(broker.bootstrap, "damaged", { expected: 500, timeoutMs: 60_000 });
    assertAllDelivered("damaged-wal", tally("x", 500, load.acked, found.map((m) => m.value)));
    assert.equal(await svc.stop(), 0);
  },
});

Deno.test({
  name: "fault: always mode delivers each message exactly once; equal payloads on two topics both arrive",
  sanitizeOps: false,
  sanitizeResources: false,
  async fn() {
    await using broker = await startBroker();
    await broker.createTopic("always-a", 1);
    await broker.createTopic("always-b", 1);
    await using dir = await tempDir("ka-always-");
    const config = faultConfig(broker.bootstrap, `${dir.path}/wal`, {
      producer: { wal: { mode: "always" } },
    });
    await using first = await startService(config, { dir: dir.path });
    const a = await postRange(first.http, "always-a", "s", 0, 5000);
    const b = await postRange(first.http, "always-b", "s", 0, 5000);
    assert.equal(a.acked.size + b.acked.size, 10_000);
    await walDrained(first);
    // A restart must not replay what was delivered.
    assert.equal(await first.stop(), 0);
    await using svc = await startService(config, { dir: dir.path });
    await delay(3000);
    for (const [topic, r] of [["always-a", a], ["always-b", b]] as const) {
      const found = await consumeAll(broker.bootstrap, topic, { expected: 5000, timeoutMs: 60_000 });
      await delay(500);
      const again = await consumeAll(broker.bootstrap, topic, { expected: 5000, timeoutMs: 10_000 });
      assertAllDelivered(`always-${topic}`, tally("s", 5000, r.acked, again.map((m) => m.value)), {
        maxDuplicated: 0,
      });
      assert.equal(found.length, 5000);
      assert.equal(again.length, 5000);
    }
    assert.equal(await svc.stop(), 0);
  },
});

Deno.test({
  name: "fault: disable mode and disable_topics never touch the disk for those topics; failures are dropped",
  sanitizeOps: false,
  sanitizeResources: false,
  async fn() {
    // A blackholed address: messages are queued, then time out (a broker that is down would trip the breaker
    // before the first message and every request would get 503 instead).
    await using proxy = await startFaultProxy({ host: "127.0.0.1", port: freePort() });
    proxy.blackhole(true);
    const bootstrap = `127.0.0.1:${proxy.port}`;
    await using dir = await tempDir("ka-off-");
    const fast = { kafka: { "message.timeout.ms": 1500 } };
    await using off = await startService(
      faultConfig(bootstrap, `${dir.path}/off`, { ...fast, producer: { wal: { mode: "disable" } } }),
      { dir: dir.path },
    );
    const load = await postRange(off.http, "nowal", "n", 0, 50, { concurrency: 4 });
    await waitFor(
      "drops to be counted",
      async () => (await off.metric("kafka_client_dropped_cnt")) >= 1,
      20_000,
    );
    await waitForBreaker(off, "open", 20_000);
    const refused = await fetch(`${off.http}/topics/nowal/messages`, { method: "POST", body: "late" });
    assert.equal(refused.status, 503, "no WAL and the breaker open: refused, not silently dropped");
    await refused.body?.cancel();
    console.log(
      `disable: acknowledged=${load.acked.size} dropped=${await off.metric("kafka_client_dropped_cnt")}`,
    );
    assert.equal(await exists(`${dir.path}/off`), false, "mode disable created no WAL directory");
    assert.equal(await off.stop(), 0);

    await using some = await startService(
      faultConfig(bootstrap, `${dir.path}/some`, {
        ...fast,
        producer: { wal: { disable_topics: ["volatile"] } },
      }),
      { dir: dir.path },
    );
    await postRange(some.http, "volatile", "v", 0, 20, { concurrency: 2 });
    await postRange(some.http, "kept", "k", 0, 20, { concurrency: 2 });
    await waitFor(
      "the kept topic's failures to reach the WAL",
      async () => (await some.metric("wal_writes", { topic: "kept" })) === 20,
      20_000,
    );
    assert.equal(await some.metric("wal_writes", { topic: "volatile" }), 0);
    await waitFor(
      "volatile failures to be dropped",
      async () => (await some.metric("kafka_client_dropped_cnt", { topic: "volatile" })) === 20,
      20_000,
    );
    assert.equal(await some.stop(), 0);
  },
});

async function exists(path: string): Promise<boolean> {
  try {
    await Deno.stat(path);
    return true;
  } catch {
    return false;
  }
}

Deno.test({
  name:
    "fault: SIGHUP under load swaps the producer: 0 missing, both producer ids in metrics during the drain",
  sanitizeOps: false,
  sanitizeResources: false,
  async fn() {
    await using broker = await startBroker();
    await broker.createTopic("hup", 3);
    await using dir = await tempDir("ka-hup-");
    // A long linger keeps messages inside the old producer for a while after the swap.
    await using svc = await startService(
      faultConfig(broker.bootstrap, `${dir.path}/wal`, { kafka: { "linger.ms": 1000 } }),
      { dir: dir.path },
    );
    await withServiceLog(svc, async () => {
      let stop = false;
      const load = postRange(svc.http, "hup", "h", 0, 30_000, { concurrency: 64, stop: () => stop });
      await delay(1500);
      svc.signal("SIGHUP");
      // Polled without a pause: the two producers are both listed only while the old one drains.
      await waitFor(
        "old (0) and new (1) producer both visible in kafka_active_producer",
        async () => {
          const text = await (await fetch(`${svc.monitoring}/metrics`)).text();
          return /kafka_active_producer\{producer_id="rdkafka#producer-1"\} 0/.test(text) &&
            /kafka_active_producer\{producer_id="rdkafka#producer-2"\} 1/.test(text);
        },
        5000,
        0,
      );
      const result = await load;
      stop = true;
      await walDrained(svc);
      await waitFor("the old producer to close", async () => {
        const logs = await svc.logs();
        return logs.some((l) => l.msg === "old kafka producer closed");
      }, 30_000);
      const found = await consumeAll(broker.bootstrap, "hup", {
        expected: result.acked.size,
        timeoutMs: 60_000,
      });
      assertAllDelivered("sighup", tally("h", 30_000, result.acked, found.map((m) => m.value)));
      assert.equal(result.acked.size, 30_000);
    });
    assert.equal(await svc.stop(), 0);
  },
});
