/** The JavaScript event loop stays responsive while librdkafka works: nothing waits on librdkafka in-line. */
import assert from "node:assert/strict";
import { KafkaProducer } from "../src/kafka/producer.ts";
import { settle } from "./support/wait.ts";

const MESSAGES = 100_000;
const TICK_MS = 10;
/** Generous: the box is shared; a blocking poll or an unsliced batch of reports stalls for far longer. */
const MAX_LATENESS_MS = 250;

Deno.test("100k messages to the mock cluster: all delivered, a 10 ms timer is never held up long", async () => {
  const p = KafkaProducer.open({ id: "event-loop", config: { "test.mock.num.brokers": "1" } });
  let maxLateness = 0;
  let last = performance.now();
  const timer = setInterval(() => {
    const now = performance.now();
    maxLateness = Math.max(maxLateness, now - last - TICK_MS);
    last = now;
  }, TICK_MS);
  try {
    const value = new Uint8Array(100).fill(0x61);
    let delivered = 0;
    let failed = 0;
    const reports: Promise<void>[] = [];
    for (let i = 0; i < MESSAGES; i++) {
      reports.push(
        p.produce({ topic: "event-loop", value }).then(() => void delivered++, () => void failed++),
      );
      if (i % 1000 === 999) await settle();
    }
    await Promise.all(reports);
    assert.equal(failed, 0);
    assert.equal(delivered, MESSAGES);
    assert.equal(p.inFlight, 0);
    assert.ok(maxLateness < MAX_LATENESS_MS, `timer late by ${maxLateness.toFixed(1)} ms`);
  } finally {
    clearInterval(timer);
    await p.close(1000);
  }
});
