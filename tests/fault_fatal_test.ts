/**
 * A fatal librdkafka error mid-load (raised with rd_kafka_test_fatal_error through the service's test hook): the
 * producer is replaced by itself, what the dead one held reaches Kafka through the WAL, and a second fatal error
 * right after waits for its turn instead of starting producers in a loop.
 */
import assert from "node:assert/strict";
import { startBroker } from "./kafka/broker.ts";
import { consumeAll } from "./kafka/consume.ts";
import { faultConfig, readyStatus, walDrained, withServiceLog } from "./support/fault.ts";
import { assertAllDelivered, type LoadResult, postRange, tally } from "./support/load.ts";
import { startService } from "./support/service.ts";
import { tempDir } from "./support/temp_dir.ts";
import { waitFor } from "./support/wait.ts";

const TOTAL = 20_000;
const REPLACED = "kafka producer replaced after a fatal error; the old one drains";
const POSTPONED = "kafka producer replacement postponed: at most one per interval after fatal errors";
const DRAINED = "old kafka producer closed";

Deno.test({
  name:
    "fault: fatal producer error mid-load: replaced by itself, 0 missing, later records go to Kafka directly",
  sanitizeOps: false,
  sanitizeResources: false,
  async fn() {
    await using broker = await startBroker();
    await broker.createTopic("fatal", 3);
    await using dir = await tempDir("ka-fatal-");
    const config = faultConfig(broker.bootstrap, `${dir.path}/wal`, {
      kafka: { "enable.idempotence": true, "linger.ms": 1000 },
    });
    await using svc = await startService(config, {
      dir: dir.path,
      env: { KA_TEST_FATAL_ERROR_ON_SIGUSR2: "1" },
    });
    const replaced = () => svc.metric("kafka_producer_replaced_total", { reason: "fatal" });
    const logged = async (msg: string) => (await svc.logs()).filter((l) => l.msg === msg);
    await withServiceLog(svc, async () => {
      const acked = new Set<number>();
      const add = (r: LoadResult) => r.acked.forEach((id) => acked.add(id));
      add(await postRange(svc.http, "fatal", "f", 0, 3_000));

      // The first fatal error hits while requests keep coming and librdkafka holds messages.
      const during = postRange(svc.http, "fatal", "f", 3_000, 13_000);
      await waitFor(
        "load to be under way, with messages held by librdkafka",
        async () =>
          (await svc.metric("kafka_client_requests_cnt")) >= 5_000 &&
          (await svc.metric("kafka_client_messages_in_transit", { producer_id: "rdkafka#producer-1" })) > 0,
      );
      svc.signal("SIGUSR2");
      await waitFor("the first replacement", async () => (await replaced()) === 1, 10_000);
      assert.equal(await svc.metric("kafka_active_producer", { producer_id: "rdkafka#producer-2" }), 1);
      await waitFor("the dead producer to close", async () => (await logged(DRAINED)).length === 1);
      // linger.ms (1 s) keeps messages in librdkafka's queue: the fatal error fails them, and they are spooled.
      const spooled = await svc.metric("wal_writes");
      assert.ok(spooled > 0, "what the dead producer held went to the WAL");

      // A second one at once: the replacement waits for its turn, and says so.
      svc.signal("SIGUSR2");
      await waitFor("the postponement", async () => (await logged(POSTPONED)).length === 1, 10_000);
      assert.equal(await replaced(), 1, "no second replacement within the interval");
      add(await during);
      await waitFor("the second replacement", async () => (await replaced()) === 2, 15_000);
      assert.equal(await svc.metric("kafka_active_producer", { producer_id: "rdkafka#producer-3" }), 1);
      assert.equal(await readyStatus(svc), 200, "the service stays ready");
      // The log reaches its file a little after the metric moves.
      await waitFor("one log line per replacement", async () => (await logged(REPLACED)).length === 2, 5_000);

      // Once the dead producers have closed, new records go to Kafka, not to the WAL.
      await waitFor("the dead producers to close", async () => (await logged(DRAINED)).length === 2, 15_000);
      const walWrites = await svc.metric("wal_writes");
      add(await postRange(svc.http, "fatal", "f", 13_000, TOTAL));
      assert.equal(await svc.metric("wal_writes"), walWrites, "records after the replacement skip the WAL");
      // A fatal error is the producer's, not the brokers': the breaker stays closed throughout.
      assert.equal(await svc.metric("producer_cb_state", { state: "open" }), 0, "the breaker never opened");

      await walDrained(svc, 30_000);
      const replayed = await svc.metric("wal_replayed");
      console.log(`fatal: spooled_at_first=${spooled} wal_writes=${walWrites} wal_replayed=${replayed}`);
      const found = await consumeAll(broker.bootstrap, "fatal", { expected: acked.size, timeoutMs: 30_000 });
      assertAllDelivered("fatal", tally("f", TOTAL, acked, found.map((m) => m.value)));
      assert.equal(acked.size, TOTAL, "every request got a 2xx");
    });
    assert.equal(await svc.stop(), 0);
  },
});
