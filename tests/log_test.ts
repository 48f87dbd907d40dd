/** logRepeated: the first line of a burst at once, then one line per window with the count held back. */
import assert from "node:assert/strict";
import { log, logRepeated } from "../src/log.ts";
import { captured } from "./support/log_capture.ts";
import { delay } from "./support/wait.ts";

Deno.test("logRepeated: 1,000 lines in a burst become the first line and one line with repeated=999", async () => {
  const key = `burst-${crypto.randomUUID()}`;
  const lines = await captured(async () => {
    for (let i = 0; i < 1000; i++) logRepeated(key, "error", "wal write failed", { attempt: i }, 50);
    await delay(80);
  });
  assert.deepEqual(lines.map((l) => [l.msg, l.attempt, l.repeated]), [
    ["wal write failed", 0, undefined],
    ["wal write failed", 999, 999],
  ]);
});

Deno.test("logRepeated: a quiet window ends the burst; the next line is written at once", async () => {
  const key = `quiet-${crypto.randomUUID()}`;
  const lines = await captured(async () => {
    logRepeated(key, "warn", "kafka: cannot list topics", {}, 30);
    await delay(70);
    logRepeated(key, "warn", "kafka: cannot list topics", {}, 30);
    await delay(50);
  });
  assert.equal(lines.length, 2);
  assert.ok(lines.every((l) => l.repeated === undefined));
});

Deno.test("log: one JSON object per line, ts in seconds since the epoch as the Go service's zap wrote it", async () => {
  const before = Date.now() / 1000;
  const [line] = await captured(() => Promise.resolve(log("warn", "kafka error", { code: -195 })));
  assert.deepEqual(Object.keys(line), ["ts", "level", "msg", "code"]);
  assert.equal(typeof line.ts, "number");
  assert.ok((line.ts as number) >= before && (line.ts as number) <= Date.now() / 1000, String(line.ts));
  assert.deepEqual([line.level, line.msg, line.code], ["warn", "kafka error", -195]);
});
