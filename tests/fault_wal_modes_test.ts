/** WAL modes against a real broker: damaged WAL recovery, `always` exactly once, `disable` and `disable_topics`. */
import assert from "node:assert/strict";
import { startBroker } from "./kafka/broker.ts";
import { consumeAll } from "./kafka/consume.ts";
import { faultConfig, sleep, waitFor, walDrained, withServiceLog } from "./support/fault.ts";
import { postRange, report, tally } from "./support/load.ts";
import { startFaultProxy } from "./kafka/fault_proxy.ts";
import { freePort, startService } from "./support/service.ts";

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
    const dir = await Deno.makeTempDir({ prefix: "ka-dmg-" });
    const config = faultConfig(broker.bootstrap, `${dir}/wal`);
    const first = await startService(config, { dir });
    await waitFor(
      "the breaker to open",
      async () => (await first.metric("kafka_cb_current_state")) === 1,
      30_000,
    );
    const load = await postRange(first.http, "damaged", "x", 0, 500, { ack: "wal" });
    assert.equal(load.acked.size, 500);
    assert.equal(await first.stop(), 0);

    const [segment] = await segmentFiles(`${dir}/wal`);
    assert.ok(segment, "a segment file exists");
    const lines = (await Deno.readTextFile(segment)).split("\n").filter((l) => l.length > 0);
    assert.ok(lines.length >= 500);
    lines.splice(100, 0, "this is not a wal record");
    await Deno.writeTextFile(segment, lines.join("\n") + "\n" + lines[lines.length - 1].slice(0, 25));

    await broker.start();
    const svc = await startService(config, { dir });
    try {
      await walDrained(svc);
      assert.equal(await svc.metric("wal_corrupt_records"), 1);
      const found = await consumeAll(broker.bootstrap, "damaged", { expected: 500, timeoutMs: 60_000 });
      const t = tally("x", 500, load.acked, found.map((m) => m.value));
      report("damaged-wal", t);
      assert.deepEqual(t.missing, []);
    } finally {
      assert.equal(await svc.stop(), 0);
      await Deno.remove(dir, { recursive: true });
    }
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
    const dir = await Deno.makeTempDir({ prefix: "ka-always-" });
    const config = faultConfig(broker.bootstrap, `${dir}/wal`, { producer: { wal: { mode: "always" } } });
    let svc = await startService(config, { dir });
    try {
      const a = await postRange(svc.http, "always-a", "s", 0, 5000);
      const b = await postRange(svc.http, "always-b", "s", 0, 5000);
      assert.equal(a.acked.size + b.acked.size, 10_000);
      await walDrained(svc);
      // A restart must not replay what was delivered.
      assert.equal(await svc.stop(), 0);
      svc = await startService(config, { dir });
      await sleep(3000);
      for (const [topic, r] of [["always-a", a], ["always-b", b]] as const) {
        const found = await consumeAll(broker.bootstrap, topic, { expected: 5000, timeoutMs: 60_000 });
        await sleep(500);
        const again = await consumeAll(broker.bootstrap, topic, { expected: 5000, timeoutMs: 10_000 });
        const t = tally("s", 5000, r.acked, again.map((m) => m.value));
        report(`always-${topic}`, t);
        assert.equal(found.length, 5000);
        assert.deepEqual([t.missing.length, t.duplicated, again.length], [0, 0, 5000]);
      }
    } finally {
      assert.equal(await svc.stop(), 0);
      await Deno.remove(dir, { recursive: true });
    }
  },
});

Deno.test({
  name: "fault: disable mode and disable_topics never touch the disk for those topics; failures are dropped",
  sanitizeOps: false,
  sanitizeResources: false,
  async fn() {
    // A blackholed address: messages are queued, then time out (a broker that is down would trip the breaker
    // before the first message and every request would get 503 instead).
    const proxy = await startFaultProxy({ host: "127.0.0.1", port: freePort() });
    proxy.blackhole(true);
    const bootstrap = `127.0.0.1:${proxy.port}`;
    const dir = await Deno.makeTempDir({ prefix: "ka-off-" });
    const fast = { kafka: { "message.timeout.ms": 1500 } };
    const off = await startService(
      faultConfig(bootstrap, `${dir}/off`, { ...fast, producer: { wal: { mode: "disable" } } }),
      { dir },
    );
    try {
      const load = await postRange(off.http, "nowal", "n", 0, 50, { concurrency: 4 });
      await waitFor(
        "drops to be counted",
        async () => (await off.metric("kafka_client_dropped_cnt")) >= 1,
        20_000,
      );
      await waitFor(
        "the breaker to open",
        async () => (await off.metric("kafka_cb_current_state")) === 1,
        20_000,
      );
      const refused = await fetch(`${off.http}/topics/nowal/messages`, { method: "POST", body: "late" });
      assert.equal(refused.status, 503, "no WAL and the breaker open: refused, not silently dropped");
      await refused.body?.cancel();
      console.log(
        `disable: acknowledged=${load.acked.size} dropped=${await off.metric("kafka_client_dropped_cnt")}`,
      );
      assert.equal(await exists(`${dir}/off`), false, "mode disable created no WAL directory");
    } finally {
      assert.equal(await off.stop(), 0);
    }

    const some = await startService(
      faultConfig(bootstrap, `${dir}/some`, { ...fast, producer: { wal: { disable_topics: ["volatile"] } } }),
      { dir },
    );
    try {
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
    } finally {
      assert.equal(await some.stop(), 0);
      await proxy.close();
      await Deno.remove(dir, { recursive: true });
    }
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
    const dir = await Deno.makeTempDir({ prefix: "ka-hup-" });
    // A long linger keeps messages inside the old producer for a while after the swap.
    const svc = await startService(
      faultConfig(broker.bootstrap, `${dir}/wal`, { kafka: { "linger.ms": 1000 } }),
      {
        dir,
      },
    );
    try {
      await withServiceLog(svc, async () => {
        let stop = false;
        const load = postRange(svc.http, "hup", "h", 0, 30_000, { concurrency: 64, stop: () => stop });
        await sleep(1500);
        svc.signal("SIGHUP");
        let both = false;
        const end = Date.now() + 5000;
        while (!both && Date.now() < end) {
          const text = await (await fetch(`${svc.monitoring}/metrics`)).text();
          both = /kafka_active_producer\{producer_id="producer-1"\} 0/.test(text) &&
            /kafka_active_producer\{producer_id="producer-2"\} 1/.test(text);
        }
        assert.ok(both, "old (0) and new (1) producer both visible in kafka_active_producer");
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
        const t = tally("h", 30_000, result.acked, found.map((m) => m.value));
        report("sighup", t);
        assert.equal(result.acked.size, 30_000);
        assert.deepEqual(t.missing, []);
      });
    } finally {
      assert.equal(await svc.stop(), 0);
      await Deno.remove(dir, { recursive: true });
    }
  },
});
