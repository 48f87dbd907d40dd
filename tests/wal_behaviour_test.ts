/** The WAL contract, run against both variants: on disk and in memory. */
import assert from "node:assert/strict";
import type { Message } from "../src/message.ts";
import { openWal, type Wal, WalFullError, type WalOptions, type WalRecord } from "../src/wal/wal.ts";
import { delay, settle } from "./support/wait.ts";
import { tempDir } from "./support/temp_dir.ts";

type Variant = "file" | "memory";

const enc = new TextEncoder();
const dec = new TextDecoder();

function msg(i: number, topic = "t"): Message {
  return { topic, value: enc.encode(`m${i}`) };
}

async function checkoutAll(wal: Wal, chunk = 1000): Promise<WalRecord[]> {
  const all: WalRecord[] = [];
  for (let got = await wal.checkout(chunk); got.length > 0; got = await wal.checkout(chunk)) all.push(...got);
  return all;
}

async function segmentFiles(dir: string): Promise<string[]> {
  const names: string[] = [];
  for await (const e of Deno.readDir(`${dir}/wal`)) if (e.name.endsWith(".wal")) names.push(e.name);
  return names.sort();
}

/** Registers one test per variant, each with a fresh WAL in a temp dir that is removed afterwards. */
function walTest(
  name: string,
  opts: Partial<WalOptions>,
  fn: (wal: Wal, ctx: { variant: Variant; dir: string }) => Promise<void>,
): void {
  for (const variant of ["file", "memory"] as const) {
    Deno.test(`wal (${variant}): ${name}`, async () => {
      await using dir = await tempDir("wal_test_");
      const wal = await openWal({
        path: `${dir.path}/wal`,
        inMemory: variant === "memory",
        maxBytes: 1 << 24,
        commitDelayMs: 1,
        ...opts,
      });
      try {
        await fn(wal, { variant, dir: dir.path });
      } finally {
        await wal.close();
      }
    });
  }
}

walTest("binary keys, values and headers come back exactly", {}, async (wal) => {
  const random = (n: number) => crypto.getRandomValues(new Uint8Array(n));
  const sent: Message[] = [
    {
      topic: "a",
      value: random(1000),
      key: random(16),
      headers: [["x", random(7)], ["y", new Uint8Array(0)]],
    },
    {
      topic: "b",
      value: new Uint8Array(256).map((_, i) => i),
      key: null,
      partition: 2,
      timestamp: 1_700_000_000_000,
    },
    { topic: "c", value: new Uint8Array(0) },
  ];
  const before = Date.now();
  const ids = sent.map((m) => wal.append(m).id);
  // Checked out before the commit: the WAL writes first, then reads back.
  const got = await wal.checkout(10);
  assert.deepEqual(got.map((r) => r.id), ids);
  for (const [i, r] of got.entries()) {
    const { id: _id, writtenAt, ...message } = r;
    assert.deepEqual(message, sent[i]);
    assert.ok(writtenAt >= before && writtenAt <= Date.now());
  }
});

walTest("equal payloads, on one topic or two, are all kept under distinct ids", {}, async (wal) => {
  const value = enc.encode("same payload");
  const a = wal.append({ topic: "one", value });
  const b = wal.append({ topic: "two", value });
  const c = wal.append({ topic: "one", value });
  await Promise.all([a.durable, b.durable, c.durable]);
  assert.equal(new Set([a.id, b.id, c.id]).size, 3);
  const got = await wal.checkout(10);
  assert.deepEqual(got.map((r) => [r.id, r.topic, dec.decode(r.value)]), [
    [a.id, "one", "same payload"],
    [b.id, "two", "same payload"],
    [c.id, "one", "same payload"],
  ]);
});

walTest(
  "no record is lost across commit boundaries (10,007 records)",
  { segmentBytes: 64 * 1024 },
  async (wal) => {
    const ids: number[] = [];
    const commits = new Set<Promise<void>>();
    for (let i = 0; i < 10_007; i++) {
      const { id, durable } = wal.append(msg(i));
      ids.push(id);
      commits.add(durable);
      // Bursts of 101 meet commits in flight; every third burst waits for its commit, so there are many of them.
      if (i % 303 === 302) await durable;
      else if (i % 101 === 100) await settle();
    }
    await Promise.all(commits);
    assert.ok(commits.size > 20, `only ${commits.size} commits: the test must cross many boundaries`);
    for (let i = 1; i < ids.length; i++) assert.ok(ids[i] > ids[i - 1], "ids increase");
    const got = await checkoutAll(wal, 333);
    assert.deepEqual(got.map((r) => r.id), ids);
    assert.deepEqual(got.map((r) => dec.decode(r.value)), ids.map((_, i) => `m${i}`));
    assert.equal(wal.stats().records, 10_007);
  },
);

walTest("a checked-out record is not handed out twice; a released one comes back", {}, async (wal) => {
  const ids = [1, 2, 3, 4, 5].map((i) => wal.append(msg(i)).id);
  assert.deepEqual((await wal.checkout(2)).map((r) => r.id), ids.slice(0, 2));
  assert.deepEqual((await wal.checkout(2)).map((r) => r.id), ids.slice(2, 4));
  assert.equal(wal.pendingCount(), 1);
  wal.release(ids[0]);
  assert.equal(wal.pendingCount(), 2);
  assert.deepEqual((await wal.checkout(10)).map((r) => r.id), [ids[0], ids[4]], "oldest first");
  assert.deepEqual(await wal.checkout(10), []);
  wal.release(ids[1]);
  wal.release(ids[1]);
  assert.equal(wal.pendingCount(), 1, "release is idempotent");
  wal.ack(ids[2]);
  wal.release(ids[2]);
  assert.equal(wal.pendingCount(), 1, "an acked record cannot be released");
  assert.equal(wal.stats().records, 4);
});

walTest("a record appended checked out is not replayed until released", {}, async (wal) => {
  const direct = wal.append(msg(1), { checkedOut: true });
  const spooled = wal.append(msg(2));
  const delivered = wal.append(msg(3), { checkedOut: true });
  assert.equal(wal.pendingCount(), 1);
  assert.deepEqual((await wal.checkout(10)).map((r) => r.id), [spooled.id]);
  wal.ack(delivered.id);
  wal.release(direct.id);
  assert.deepEqual((await wal.checkout(10)).map((r) => r.id), [direct.id]);
  wal.release(delivered.id);
  assert.deepEqual(await wal.checkout(10), [], "acked while checked out: gone for good");
});

walTest("ack is idempotent, fine before durable, and ignores unknown ids", {}, async (wal) => {
  const { id, durable } = wal.append(msg(1));
  wal.ack(id);
  wal.ack(id);
  wal.ack(id + 1000);
  await durable;
  assert.deepEqual(await wal.checkout(10), []);
  assert.deepEqual(
    { records: wal.stats().records, pending: wal.pendingCount(), oldest: wal.stats().oldestWrittenAt },
    { records: 0, pending: 0, oldest: null },
  );
});

walTest("stats follow appends, checkouts and acks", {}, async (wal) => {
  assert.deepEqual(wal.stats(), {
    records: 0,
    bytes: 0,
    oldestWrittenAt: null,
    corrupt: 0,
    unwritten: 0,
    unwrittenBytes: 0,
  });
  const first = wal.append(msg(1));
  await delay(5);
  const second = wal.append(msg(2));
  const s = wal.stats();
  assert.equal(s.records, 2);
  assert.ok(s.bytes > 2 * "m1".length, "bytes count the encoded lines");
  const got = await wal.checkout(1);
  assert.equal(wal.stats().oldestWrittenAt, got[0].writtenAt, "checked out still counts as held");
  wal.ack(first.id);
  const [secondRecord] = await wal.checkout(1);
  assert.equal(secondRecord.id, second.id);
  assert.equal(wal.stats().oldestWrittenAt, secondRecord.writtenAt);
  assert.ok(secondRecord.writtenAt > got[0].writtenAt);
  assert.equal(wal.stats().records, 1);
});

walTest("many appends share one commit", { segmentBytes: 1 << 20 }, async (wal) => {
  const durables = new Set<Promise<void>>();
  for (let i = 0; i < 1000; i++) durables.add(wal.append(msg(i)).durable);
  assert.equal(durables.size, 1, "appends of one burst wait for the same commit");
  await Promise.all(durables);
});

walTest(
  "segments roll, and fully acked ones are deleted",
  { segmentBytes: 1024 },
  async (wal, { variant, dir }) => {
    const ids = Array.from({ length: 100 }, (_, i) => wal.append(msg(i)).id);
    await wal.sync();
    const full = wal.stats().bytes;
    if (variant === "file") assert.ok((await segmentFiles(dir)).length >= 5, "rolled into several segments");
    // Everything acked except the first record: only its segment and the active one remain.
    for (const id of ids.slice(1)) wal.ack(id);
    await wal.sync();
    const kept = wal.stats().bytes;
    assert.ok(kept <= 2 * 1100 && kept < full / 2, `${kept} of ${full} bytes kept`);
    if (variant === "file") assert.deepEqual((await segmentFiles(dir)).length, 2);
    wal.ack(ids[0]);
    await wal.sync();
    assert.ok(wal.stats().bytes < kept, "the first segment went too");
    assert.ok(wal.stats().bytes <= 1100, "only the active segment is left");
    assert.equal(wal.stats().records, 0);
  },
);

walTest("WalFullError at the bound; appends work again once acks free space", {
  maxBytes: 8192,
  segmentBytes: 1024,
}, async (wal) => {
  const ids: number[] = [];
  let error: unknown;
  try {
    for (let i = 0; i < 10_000; i++) ids.push(wal.append(msg(i)).id);
  } catch (err) {
    error = err;
  }
  assert.ok(error instanceof WalFullError, `expected WalFullError, got ${error}`);
  assert.match(error.message, /^wal: full \(\d+ of 8192 bytes\)$/);
  const { bytes } = wal.stats();
  assert.ok(bytes <= 8192 && bytes > 8000, `${bytes} bytes at the bound`);
  assert.equal(wal.stats().records, ids.length, "the refused record was not kept");
  assert.throws(() => wal.append(msg(0)), WalFullError);

  for (const id of ids) wal.ack(id);
  await wal.sync();
  let more = 0;
  while (more < ids.length / 2) {
    wal.append(msg(more));
    more++;
  }
  await wal.sync();
  assert.equal(wal.stats().records, more);
});

walTest("after close, append and checkout throw; close again is fine", {}, async (wal) => {
  const { durable } = wal.append(msg(1));
  await wal.close();
  await durable;
  assert.throws(() => wal.append(msg(2)), /wal: closed/);
  await assert.rejects(() => wal.checkout(1), /wal: closed/);
  await wal.close();
  await wal.sync();
});
