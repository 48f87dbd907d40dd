/**
 * librdkafka repeats an error on every reconnect; 2.12.1 reports all brokers down on every re-bootstrap round while
 * no broker answers. The log gets the first of each error at once and then one line per window with the count.
 */
import assert from "node:assert/strict";
import { freePort, startService } from "./support/service.ts";

Deno.test({
  name: "kafka errors: a broker that is not there is logged once per error and window, not once per retry",
  sanitizeOps: false,
  sanitizeResources: false,
  async fn() {
    await using svc = await startService({
      kafka: { brokers: [`127.0.0.1:${freePort()}`] },
      producer: { wal: { in_memory: true } },
    });
    // librdkafka retries its bootstrap broker within a second (reconnect.backoff.ms 100 ms by default).
    await new Promise((r) => setTimeout(r, 5_000));
    const errors = (await svc.logs()).filter((l) => l.msg === "kafka error");
    const byCode = Map.groupBy(errors, (l) => l.error as string);
    assert.ok(byCode.has("_ALL_BROKERS_DOWN"), JSON.stringify(errors));
    for (const [code, lines] of byCode) {
      assert.equal(lines.length, 1, `${code} logged ${lines.length} times in 5 s: ${JSON.stringify(lines)}`);
    }
  },
});
