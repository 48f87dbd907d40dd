/**
 * Broker down mid-load: 50,000 messages over HTTP while the broker is stopped for 20 s; nothing acknowledged is lost.
 * And no broker at all: librdkafka's repeated "all brokers down" reports open the breaker, a half-open one once a
 * metadata request gets no answer either.
 */
import assert from "node:assert/strict";
import { startBroker } from "./kafka/broker.ts";
import { consumeAll } from "./kafka/consume.ts";
import {
  breakerChanges,
  faultConfig,
  readyStatus,
  startProxiedBroker,
  waitForBreaker,
  walDrained,
} from "./support/fault.ts";
import { assertAllDelivered, type LoadResult, postRange, tally } from "./support/load.ts";
import { freePort, startService } from "./support/service.ts";
import { tempDir } from "./support/temp_dir.ts";
import { delay, waitFor } from "./support/wait.ts";

const TOTAL = 50_000;

Deno.test({
  name: "fault: broker stopped for 20 s mid-load, then restarted: 0 missing, WAL drains by itself",
  sanitizeOps: false,
  sanitizeResources: false,
  async fn() {
    await using broker = await startBroker();
    await broker.createTopic("down", 3);
    await using dir = await tempDir("ka-down-");
    await using svc = await startService(faultConfig(broker.bootstrap, `${dir.path}/wal`), { dir: dir.path });
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
      await delay(Math.max(0, Math.min(1000, outageEnd - Date.now()) - 200));
    }
    if (next < 35_000) add(await postRange(svc.http, "down", "d", next, 35_000));
    await waitForBreaker(svc, "open", 15_000);
    // The WAL takes what Kafka cannot: the service stays ready, so no load balancer pulls it out now.
    assert.equal(await readyStatus(svc), 200);
    await delay(Math.max(0, outageEnd - Date.now()));
    await broker.start();
    add(await postRange(svc.http, "down", "d", 35_000, TOTAL));

    await walDrained(svc);
    assert.equal(await readyStatus(svc), 200);
    const found = await consumeAll(broker.bootstrap, "down", { expected: acked.size, timeoutMs: 90_000 });
    const t = tally("d", TOTAL, acked, found.map((m) => m.value));
    assertAllDelivered("broker-down", t);
    assert.equal(t.acknowledged, TOTAL, "every request during the outage still got a 2xx");
    assert.ok((await svc.metric("wal_replayed")) > 0, "the outage made records go through the WAL");
    assert.equal(await svc.stop(), 0);
  },
});

Deno.test({
  name:
    "fault: no broker answers: all-brokers-down opens the breaker, and opens a half-open one again once none answers",
  sanitizeOps: false,
  sanitizeResources: false,
  async fn() {
    await using dir = await tempDir("ka-nobroker-");
    // Nothing listens there: every connection is refused, and librdkafka reports all brokers down again and
    // again (each re-bootstrap round).
    await using svc = await startService(
      faultConfig(`127.0.0.1:${freePort()}`, `${dir.path}/wal`, { producer: { cb: { timeout: "1s" } } }),
      { dir: dir.path },
    );
    const changes = async () => (await breakerChanges(svc)).map((c) => `${c.change}: ${c.reason}`);
    await waitFor("the half-open breaker to open again", async () => (await changes()).length >= 3, 30_000);
    // No probe was sent (no traffic): without the report, half-open would wait for one.
    assert.deepEqual((await changes()).slice(0, 3), [
      "closed->open: all brokers down",
      "open->half: open for 1000 ms",
      "half->open: all brokers down, and none answered",
    ]);
  },
});

Deno.test({
  name:
    "fault: the one broker's connections cut (Kafka up), on a fast and on a slow link: the breaker opens and closes again at once",
  sanitizeOps: false,
  sanitizeResources: false,
  async fn() {
    await using net = await startProxiedBroker();
    const { broker, proxy } = net;
    await broker.createTopic("cut", 3);
    await using dir = await tempDir("ka-cut-");
    // A long cb.timeout: had the breaker stayed open, ack=kafka would get 503 for the rest of the test. A
    // confirm_timeout of 10s asks a broker every 2 s, long enough for a round trip on the slow link below.
    await using svc = await startService(
      faultConfig(broker.bootstrap, `${dir.path}/wal`, {
        producer: { cb: { timeout: "60s", confirm_timeout: "10s" } },
      }),
      { dir: dir.path },
    );
    const acked = new Set<number>();
    const add = (r: LoadResult) => r.acked.forEach((id) => acked.add(id));
    add(await postRange(svc.http, "cut", "c", 0, 2000, { ack: "kafka" }));
    const changes = async () => (await breakerChanges(svc)).map((c) => `${c.change}: ${c.reason}`);
    proxy.cutAll();
    // librdkafka reports all brokers down (the one broker's connections were cut), it reconnects, and the broker
    // answers a metadata request: the breaker closes again, long before cb.timeout.
    await waitFor("the breaker opened and closed again", async () => (await changes()).length >= 2, 20_000);
    assert.deepEqual(await changes(), [
      "closed->open: all brokers down",
      "open->closed: a broker answered after all were reported down",
    ]);
    const after = await postRange(svc.http, "cut", "c", 2000, 4000, { ack: "kafka" });
    add(after);
    assert.deepEqual(
      new Set(after.refused.values()),
      new Set(),
      "no ack=kafka request refused after the cut",
    );
    // A slow link (a round trip of 1.4 s through the proxy): the new connection's handshakes and the metadata
    // request take seconds, and the broker's answer still comes within producer.cb.confirm_timeout.
    proxy.delay(700);
    proxy.cutAll();
    await waitFor(
      "the breaker opened and closed again on the slow link",
      async () => (await changes()).length >= 4,
      20_000,
    );
    proxy.delay(0);
    assert.deepEqual((await changes()).slice(2), [
      "closed->open: all brokers down",
      "open->closed: a broker answered after all were reported down",
    ]);
    const found = await consumeAll(broker.bootstrap, "cut", { expected: 4000, timeoutMs: 60_000 });
    const t = tally("c", 4000, acked, found.map((m) => m.value));
    assertAllDelivered("cut", t);
    assert.equal(t.acknowledged, 4000, "every ack=kafka request got a 2xx");
    assert.equal((await changes()).length, 4, "the breaker changed only on the two cuts");
  },
});
