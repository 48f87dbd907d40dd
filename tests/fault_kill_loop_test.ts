/**
 * kill -9 at random moments, over and over, under ack=wal load while the broker flaps (a fault proxy blackholes
 * and cuts its connections): after the last restart every record that got a 2xx is in Kafka. Duplicates are
 * counted and reported (records in flight at a kill are sent again: delivery is at least once).
 *
 * `KA_KILL_ITERATIONS` (default 8, about a minute) sets the number of kills, `KA_KILL_SEED` the random moments;
 * for a long run: `KA_KILL_ITERATIONS=40 deno test --allow-all tests/fault_kill_loop_test.ts`.
 */
import assert from "node:assert/strict";
import { consumeAll } from "./kafka/consume.ts";
import { prng } from "./support/crash_storage.ts";
import { faultConfig, startProxiedBroker, walDrained } from "./support/fault.ts";
import { assertAllDelivered, type LoadResult, postRange, tally } from "./support/load.ts";
import { startService } from "./support/service.ts";
import { tempDir } from "./support/temp_dir.ts";
import { delay } from "./support/wait.ts";

const ITERATIONS = Number(Deno.env.get("KA_KILL_ITERATIONS") ?? 8);
const SEED = Number(Deno.env.get("KA_KILL_SEED") ?? 7);
/** Ids of iteration i are i * SPAN + 0, 1, ... */
const SPAN = 1_000_000;

Deno.test({
  name: "fault: kill -9 at random moments under ack=wal load, broker flapping, restart each time: 0 missing",
  sanitizeOps: false,
  sanitizeResources: false,
  async fn() {
    const random = prng(SEED);
    await using net = await startProxiedBroker();
    const { broker, proxy } = net;
    await broker.createTopic("kill-loop", 1);
    await using dir = await tempDir("ka-kill-loop-");
    const config = faultConfig(broker.bootstrap, `${dir.path}/wal`);

    // The broker flaps until the loop is over: blackholed or cut for a moment, then back.
    let flapping = true;
    const flaps = (async () => {
      while (flapping) {
        await delay(300 + random() * 900);
        if (!flapping) break;
        if (random() < 0.5) proxy.cutAll();
        else {
          proxy.blackhole(true);
          await delay(200 + random() * 1500);
          proxy.blackhole(false);
        }
      }
    })();

    const runs: LoadResult[] = [];
    try {
      for (let i = 0; i < ITERATIONS; i++) {
        await using svc = await startService(config, { dir: dir.path });
        let stop = false;
        const load = postRange(svc.http, "kill-loop", "k", i * SPAN, (i + 1) * SPAN, {
          ack: "wal",
          concurrency: 8,
          stop: () => stop,
        });
        await delay(500 + random() * 2500);
        svc.signal("SIGKILL");
        stop = true;
        await svc.exited;
        runs.push(await load);
      }
    } finally {
      flapping = false;
      await flaps;
      proxy.blackhole(false);
    }

    await using last = await startService(config, { dir: dir.path });
    await walDrained(last);
    const acked = new Set(runs.flatMap((r) => [...r.acked]));
    const found = await consumeAll(broker.bootstrap, "kill-loop", {
      expected: acked.size,
      timeoutMs: 90_000,
    });
    const values = found.map((m) => m.value);
    console.log(`kill loop: ${ITERATIONS} kills, seed ${SEED}`);
    let sent = 0;
    for (const [i, r] of runs.entries()) {
      const mine = values.filter((v) => v !== null && Math.floor(Number(v.slice(2)) / SPAN) === i);
      const n = r.acked.size + r.refused.size;
      sent += n;
      assertAllDelivered(`kill-loop-${i + 1}`, tally("k", n, r.acked, mine));
    }
    assertAllDelivered("kill-loop-total", tally("k", sent, acked, values));
    // Records were acknowledged, and kills caught requests in flight. Not every run does both: a kill may fall
    // between replies, or while the broker is blackholed and every request waits.
    assert.ok(runs.filter((r) => r.acked.size > 0).length >= ITERATIONS / 2, "records were acknowledged");
    assert.ok(runs.some((r) => r.refused.size > 0), "kills caught requests in flight");
    assert.equal(await last.stop(), 0);
  },
});
