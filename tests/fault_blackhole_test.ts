/** Blackhole: a TCP fault proxy in front of the broker drops all traffic; the breaker opens, the WAL takes over. */
import assert from "node:assert/strict";
import { consumeAll } from "./kafka/consume.ts";
import {
  breakerChanges,
  faultConfig,
  readyStatus,
  startProxiedBroker,
  waitForBreaker,
  walDrained,
} from "./support/fault.ts";
import { assertAllDelivered, postRange, tally } from "./support/load.ts";
import { startService } from "./support/service.ts";
import { tempDir } from "./support/temp_dir.ts";
import { delay } from "./support/wait.ts";

const RATE = 2000;
const BACKLOG = 24_000;

Deno.test({
  name: "fault: blackholed broker opens the breaker, requests still get 2xx, backlog drains at rate_limit",
  sanitizeOps: false,
  sanitizeResources: false,
  async fn() {
    await using net = await startProxiedBroker();
    const { broker, proxy } = net;
    await using dir = await tempDir("ka-bh-");
    await broker.createTopic("bh", 1);
    await using svc = await startService(
      faultConfig(broker.bootstrap, `${dir.path}/wal`, {
        producer: { resend: { rate_limit: RATE }, cb: { fails: 5, timeout: "2s" } },
      }),
      { dir: dir.path },
    );
    const before = await postRange(svc.http, "bh", "b", 0, 1000);
    assert.equal(before.acked.size, 1000);

    proxy.blackhole(true);
    const during = await postRange(svc.http, "bh", "b", 1000, 2000, { concurrency: 8 });
    await waitForBreaker(svc, "open", 30_000);
    assert.equal(await readyStatus(svc), 200, "ready while the WAL has room");
    const open = await postRange(svc.http, "bh", "b", 2000, 2000 + BACKLOG);
    assert.equal(open.acked.size, BACKLOG, "requests keep getting 2xx while the breaker is open");
    assert.ok((await svc.metric("wal_messages")) >= BACKLOG);

    proxy.blackhole(false);
    await waitForBreaker(svc, "closed", 30_000);
    // Measure the drain rate over a window well inside the drain.
    await delay(2000);
    const r0 = await svc.metric("wal_replayed"), t0 = Date.now();
    await delay(5000);
    const r1 = await svc.metric("wal_replayed"), t1 = Date.now();
    const rate = (r1 - r0) / ((t1 - t0) / 1000);
    console.log(`blackhole: replay rate ${rate.toFixed(0)} records/s with rate_limit ${RATE}`);
    assert.ok(
      Math.abs(rate - RATE) <= RATE * 0.1,
      `replay rate ${rate.toFixed(0)}/s is not within 10% of ${RATE}`,
    );
    await walDrained(svc);
    assert.equal(await readyStatus(svc), 200);

    const acked = new Set([...before.acked, ...during.acked, ...open.acked]);
    const found = await consumeAll(broker.bootstrap, "bh", { expected: acked.size, timeoutMs: 60_000 });
    assertAllDelivered("blackhole", tally("b", 2000 + BACKLOG, acked, found.map((m) => m.value)));
    const changes = (await breakerChanges(svc)).map((c) => c.change);
    assert.ok(
      changes.includes("closed->open") && changes.includes("open->half") && changes.includes("half->closed"),
    );
    assert.equal(await svc.stop(), 0);
  },
});
