/** The status and body of a batch reply, from the outcome of each record. */
import assert from "node:assert/strict";
import { batchReply, batchStatus, type RecordOutcome } from "../src/server/batch_reply.ts";
import type { Refusal } from "../src/server/refusal.ts";

const QUEUED: RecordOutcome = { where: "queued" };

function refusal(status: number, retryAfterSeconds?: number): Refusal {
  const kind = status === 503
    ? "unavailable"
    : status === 502
    ? "kafka"
    : status === 500
    ? "internal"
    : "invalid";
  return { kind, status, reason: `refused ${status}`, retryAfterSeconds };
}

Deno.test("batch status: 200 when any record was accepted, or there were none", () => {
  assert.deepEqual(batchStatus([]), { status: 200 });
  assert.deepEqual(batchStatus([QUEUED, QUEUED]), { status: 200 });
  assert.deepEqual(batchStatus([refusal(503, 5), QUEUED, refusal(400)]), { status: 200 });
});

Deno.test("batch status: every record refused: their shared status, else 503, 502, 500, else 400", () => {
  assert.deepEqual(batchStatus([refusal(413), refusal(413)]), { status: 413 });
  assert.deepEqual(batchStatus([refusal(403)]), { status: 403 });
  assert.deepEqual(batchStatus([refusal(502), refusal(502)]), { status: 502 });
  assert.deepEqual(batchStatus([refusal(400), refusal(503, 2), refusal(502)]), {
    status: 503,
    retryAfterSeconds: 2,
  });
  assert.deepEqual(batchStatus([refusal(400), refusal(500), refusal(502)]), { status: 502 });
  assert.deepEqual(batchStatus([refusal(413), refusal(500)]), { status: 500 });
  assert.deepEqual(batchStatus([refusal(413), refusal(400), refusal(403)]), { status: 400 });
});

Deno.test("batch status: a 503 carries the longest Retry-After of its records, at least 1", () => {
  assert.deepEqual(batchStatus([refusal(503, 2), refusal(503, 9), refusal(503, 4)]), {
    status: 503,
    retryAfterSeconds: 9,
  });
  assert.deepEqual(batchStatus([refusal(503)]), { status: 503, retryAfterSeconds: 1 });
});

Deno.test("batch reply: count, errors by index, and with ack=kafka one result per record (null when refused)", async () => {
  const outcomes: RecordOutcome[] = [
    { where: "kafka", partition: 2, offset: "40" },
    refusal(400),
    { where: "kafka", partition: 0, offset: "7" },
  ];
  const reply = batchReply(outcomes, "kafka");
  assert.equal(reply.status, 200);
  assert.equal(reply.headers.get("content-type"), "application/json");
  assert.equal(reply.headers.get("retry-after"), null);
  assert.deepEqual(await reply.json(), {
    count: 3,
    errors: [{ index: 1, status: 400, error: "refused 400" }],
    results: [{ partition: 2, offset: "40" }, null, { partition: 0, offset: "7" }],
  });
  const weak = batchReply([QUEUED, refusal(503, 3)], "wal");
  assert.deepEqual(await weak.json(), {
    count: 2,
    errors: [{ index: 1, status: 503, error: "refused 503" }],
  });
  const refused = batchReply([refusal(503, 3)], "none");
  assert.equal(refused.status, 503);
  assert.equal(refused.headers.get("retry-after"), "3");
  await refused.body?.cancel();
});
