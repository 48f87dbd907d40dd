/**
 * A failed fdatasync is fail-stop (docs/wal.md, "When fdatasync fails"): the batch is not acknowledged as durable,
 * the segment is cut back to what an earlier fdatasync made durable and never written again, and the records
 * go to a fresh segment. A retried fdatasync is never trusted: after a failure the kernel may have dropped the
 * dirty pages and report the next one as a success.
 */
import assert from "node:assert/strict";
import { ProduceError } from "../src/producer/types.ts";
import { facadeRig } from "./support/facade_rig.ts";
import { ioError, openFaultyWal } from "./support/fault_storage.ts";
import { tempDir } from "./support/temp_dir.ts";
import { waitFor } from "./support/wait.ts";

const enc = new TextEncoder();
const dec = new TextDecoder();

Deno.test("wal fsync: a failed fdatasync answers ack=wal with 503 and keeps ack=none records, in a fresh segment", async () => {
  await using r = await facadeRig();
  r.breaker.trip("test");
  assert.deepEqual(await r.facade.produce({ topic: "t", value: enc.encode("before") }, "wal"), {
    where: "wal",
  });
  const segment = r.storage.attempts.at(-1)!.seq;

  r.storage.failOnce(ioError(), true);
  // One group commit: its bytes reach the segment, its fdatasync fails.
  const [kept, refused] = await Promise.allSettled([
    r.facade.produce({ topic: "t", value: enc.encode("kept") }, "none"),
    r.facade.produce({ topic: "t", value: enc.encode("refused") }, "wal"),
  ]);
  assert.deepEqual(kept, { status: "fulfilled", value: { where: "wal" } });
  assert.equal(refused.status, "rejected");
  const err = (refused as PromiseRejectedResult).reason;
  assert.ok(err instanceof ProduceError);
  assert.deepEqual([err.kind, err.message, err.retryAfterSeconds], ["unavailable", "wal: unavailable", 5]);

  await waitFor("the WAL to be writable again", () => r.wal.writable, 5000, 5);
  assert.deepEqual(await r.facade.produce({ topic: "t", value: enc.encode("after") }, "wal"), {
    where: "wal",
  });
  const failedAt = r.storage.attempts.findLastIndex((a) => a.seq === segment);
  const later = r.storage.attempts.slice(failedAt + 1).map((a) => a.seq);
  assert.ok(later.length >= 2 && later.every((seq) => seq > segment), `appends after the failure: ${later}`);
  assert.deepEqual(r.storage.truncates.map((t) => t.seq), [segment], "cut back once, before the rewrite");

  // The client that got 503 retries: its record must not be in the WAL a second time.
  const values = (await r.wal.checkout(10)).map((m) => dec.decode(m.value));
  assert.deepEqual(values, ["before", "kept", "after"]);
});

Deno.test("wal fsync: on disk, the failed segment keeps exactly its bytes synced before the failure", async () => {
  await using tmp = await tempDir("wal_fsync_test_");
  const path = `${tmp.path}/wal`;
  const { wal, storage } = await openFaultyWal(path);
  try {
    await wal.append({ topic: "t", value: enc.encode("synced") }).durable;
    const good = await Deno.readFile(`${path}/00000001.wal`);
    storage.failOnce(ioError(), true);
    const failed = wal.append({ topic: "t", value: enc.encode("unsynced") });
    await assert.rejects(failed.durable, /os error 5/);
    await waitFor("the WAL to be writable again", () => wal.writable, 5000, 5);
    for (let i = 0; i < 3; i++) await wal.append({ topic: "t", value: enc.encode(`more ${i}`) }).durable;
    assert.deepEqual(await Deno.readFile(`${path}/00000001.wal`), good);
    const records = (await wal.checkout(10)).map((m) => [m.id, dec.decode(m.value)]);
    assert.deepEqual(records, [[1, "synced"], [2, "unsynced"], [3, "more 0"], [4, "more 1"], [5, "more 2"]]);
  } finally {
    await wal.close();
  }
});
