/** Broker down mid-load: 50,000 messages over HTTP while the broker is stopped for 20 s; nothing acknowledged is lost. */
import assert from "node:assert/strict";
import { startBroker } from "./kafka/broker.ts";
import { consumeAll } from "./kafka/consume.ts";
import { faultConfig, readyStatus, sleep, waitFor, walDrained } from "./support/fault.ts";
import { type LoadResult, postRange, report, tally } from "./support/load.ts";
import { startService } from "./support/service.ts";

const TOTAL = 50_000;

Deno.test({
  name: "fault: broker stopped for 20 s mid-load, then restarted: 0 missing, WAL drains by itself",
  sanitizeOps: false,
  sanitizeResources: false,
  async fn() {
    await using broker = await startBroker();
    await broker.createTopic("down", 3);
    const dir = await Deno.makeTempDir({ prefix: "ka-down-" });
    const svc = await startService(faultConfig(broker.bootstrap, `${dir}/wal`), { dir });
    try {
      const acked = new Set<number>();
      const add = (r: LoadResult) => r.acked.forEach((id) => acked.add(id));
      // Three phases of a steady load: before, during (paced over the 20 s outage) and after the outage.
      add(await postRange(svc.http, "down", "d", 0, 15_000));
      await broker.stop();
      const outageEnd = Date.now() + 20_000;
      let next = 15_000;
      while (Date.now() < outageEnd && next < 35_000) {
        add(await postRange(svc.http, "down", "d", next, next + 1000));
        next += 1000;
        await sleep(Math.max(0, Math.min(1000, outageEnd - Date.now()) - 200));
      }
      if (next < 35_000) add(await postRange(svc.http, "down", "d", next, 35_000));
      await waitFor(
        "the breaker to open",
        async () => (await svc.metric("kafka_cb_current_state")) === 1,
        15_000,
      );
      // The WAL takes what Kafka cannot: the service stays ready, so no load balancer pulls it out now.
      assert.equal(await readyStatus(svc), 200);
      await sleep(Math.max(0, outageEnd - Date.now()));
      await broker.start();
      add(await postRange(svc.http, "down", "d", 35_000, TOTAL));

      await walDrained(svc);
      assert.equal(await readyStatus(svc), 200);
      const found = await consumeAll(broker.bootstrap, "down", { expected: acked.size, timeoutMs: 90_000 });
      const t = tally("d", TOTAL, acked, found.map((m) => m.value));
      report("broker-down", t);
      assert.equal(t.acknowledged, TOTAL, "every request during the outage still got a 2xx");
      assert.deepEqual(t.missing, []);
      assert.ok((await svc.metric("wal_replayed")) > 0, "the outage made records go through the WAL");
    } finally {
      assert.equal(await svc.stop(), 0);
      await Deno.remove(dir, { recursive: true });
    }
  },
});
