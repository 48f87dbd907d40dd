/** Wal.appendMany: one group per batch, ids in order, the bound per record, behaviour while writes fail. */
import assert from "node:assert/strict";
import { WalFullError } from "../src/wal/wal.ts";
import { openFaultyWal } from "./support/fault_storage.ts";
import { waitFor } from "./support/wait.ts";

const text = (s: string) => new TextEncoder().encode(s);
const batch = (n: number, size = 10) =>
  Array.from({ length: n }, (_, i) => ({ topic: "t", value: text(`${i}`.padEnd(size, "x")) }));

Deno.test("appendMany: ids in order, one write for the batch, one durable promise, records come back in order", async () => {
  const { wal, storage } = await openFaultyWal(null);
  try {
    wal.append({ topic: "t", value: text("before") });
    const { ids, durable } = wal.appendMany(batch(100));
    assert.deepEqual(ids, Array.from({ length: 100 }, (_, i) => i + 2));
    await durable;
    assert.equal(storage.attempts.length, 1, "the single append and the batch share one group commit");
    const records = await wal.checkout(1000);
    assert.deepEqual(records.map((r) => r.id), [1, ...ids]);
    assert.equal(new TextDecoder().decode(records[100].value), "99".padEnd(10, "x"));
  } finally {
    await wal.close();
  }
});

Deno.test("appendMany: a batch that fits a segment is not split across two", async () => {
  const { wal, storage } = await openFaultyWal(null, { segmentBytes: 8192, maxBytes: 1 << 20 });
  try {
    for (let i = 0; i < 30; i++) wal.append({ topic: "t", value: text("x".repeat(100)) });
    await wal.sync();
    const before = storage.attempts.length;
    const { durable } = wal.appendMany(batch(30, 100));
    await durable;
    const seqs = new Set(storage.attempts.slice(before).map((a) => a.seq));
    assert.equal(seqs.size, 1, `segments written: ${[...seqs]}`);
  } finally {
    await wal.close();
  }
});

Deno.test("appendMany: the bound applies per record, in order; refused records take no id", async () => {
  const { wal } = await openFaultyWal(null, { maxBytes: 2000, segmentBytes: 500 });
  try {
    const messages = [
      ...batch(10, 100),
      { topic: "t", value: text("x".repeat(1500)) }, // cannot fit
      { topic: "t", value: text("small") },
    ];
    const { ids, durable } = wal.appendMany(messages);
    await durable;
    const accepted = ids.filter((id) => typeof id === "number");
    const refused = ids.filter((id) => id instanceof WalFullError);
    assert.equal(accepted.length + refused.length, messages.length);
    assert.ok(ids[10] instanceof WalFullError, "the big one is refused");
    assert.ok(refused.length >= 1 && accepted.length >= 8, `accepted ${accepted.length}`);
    assert.deepEqual(accepted, Array.from({ length: accepted.length }, (_, i) => i + 1), "ids stay dense");
    assert.equal(wal.stats().records, accepted.length);
    assert.ok(wal.stats().bytes <= 2000);

    const reserved = wal.appendMany([{ topic: "t", value: text("y") }], { reservedBytes: 2000 });
    assert.ok(reserved.ids[0] instanceof WalFullError, "room reserved for others is left alone");
    assert.match((reserved.ids[0] as Error).message, /reserved/);
  } finally {
    await wal.close();
  }
});

Deno.test("appendMany: while writes fail, records are held in memory and durable rejects; written once healed", async () => {
  const { wal, storage } = await openFaultyWal(null);
  try {
    storage.fail();
    const first = wal.appendMany(batch(5));
    await assert.rejects(first.durable);
    assert.equal(wal.writable, false);
    const second = wal.appendMany(batch(5), { checkedOut: true });
    await assert.rejects(second.durable, /wal: unavailable/);
    assert.deepEqual(wal.stats().unwritten, 10);
    assert.equal(wal.pendingCount(), 5, "checked-out records are not handed out");
    storage.heal();
    await waitFor("the held records to be written", () => wal.writable, 5000, 10);
    assert.equal(wal.stats().unwritten, 0);
    assert.deepEqual((await wal.checkout(100)).map((r) => r.id), first.ids);
  } finally {
    await wal.close();
  }
});

Deno.test("appendMany: a record that cannot be encoded is refused alone; a closed WAL throws", async () => {
  const { wal } = await openFaultyWal(null);
  const { ids } = wal.appendMany([
    { topic: "t", value: text("a") },
    { topic: "t", value: text("b"), partition: NaN },
    { topic: "t", value: text("c") },
  ]);
  assert.equal(ids[0], 1);
  assert.ok(ids[1] instanceof TypeError);
  assert.equal(ids[2], 2);
  await wal.close();
  assert.throws(() => wal.appendMany(batch(1)), /closed/);
});
