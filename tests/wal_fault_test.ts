/** The WAL when writes fail: records already accepted stay in memory until the disk recovers or Kafka takes them. */
import assert from "node:assert/strict";
import type { Message } from "../src/message.ts";
import * as metrics from "../src/metrics.ts";
import { openWal, type Wal, WalFullError, type WalRecord } from "../src/wal/wal.ts";
import { denoFs } from "../src/wal/fs.ts";
import { encodeRecordLine } from "../src/wal/record_line.ts";
import { recoverDirectory } from "../src/wal/recovery.ts";
import { diskFull, openFaultyWal, syncFaultFs } from "./support/fault_storage.ts";
import { captured, capturing } from "./support/log_capture.ts";
import { tempDir } from "./support/temp_dir.ts";
import { delay, waitFor } from "./support/wait.ts";

const enc = new TextEncoder();
const dec = new TextDecoder();

function msg(i: number): Message {
  return { topic: "t", value: enc.encode(`m${i}`) };
}

async function checkoutAll(wal: Wal): Promise<WalRecord[]> {
  const all: WalRecord[] = [];
  for (let got = await wal.checkout(100); got.length > 0; got = await wal.checkout(100)) all.push(...got);
  return all;
}

async function gauge(g: { get(): Promise<{ values: Array<{ value: number }> }> }): Promise<number> {
  return (await g.get()).values.reduce((sum, v) => sum + v.value, 0);
}

/** Whether each durable resolved (true) or rejected (false). */
function outcomes(durables: Promise<void>[]): Promise<boolean[]> {
  return Promise.all(durables.map((d) => d.then(() => true, () => false)));
}

async function segments(dir: string): Promise<string[]> {
  const names: string[] = [];
  for await (const e of Deno.readDir(dir)) if (e.name.endsWith(".wal")) names.push(e.name);
  return names.sort();
}

async function withDir(fn: (path: string, tmp: string) => Promise<void>): Promise<void> {
  await using tmp = await tempDir("wal_fault_test_");
  await fn(`${tmp.path}/wal`, tmp.path);
}

/** Records of a WAL directory after a restart, as [id, value]. */
async function reopened(path: string): Promise<{ records: Array<[number, string]>; corrupt: number }> {
  const wal = await openWal({ path, inMemory: false, maxBytes: 1 << 24, commitDelayMs: 1 });
  try {
    const records = (await checkoutAll(wal)).map((r): [number, string] => [r.id, dec.decode(r.value)]);
    return { records, corrupt: wal.stats().corrupt };
  } finally {
    await wal.close();
  }
}

for (const after of [false, true]) {
  const how = after ? "a failed fdatasync (the bytes reached the file)" : "a failed write";
  Deno.test(`wal fault: after ${how}, records are held in memory, then written in order under their ids`, async () => {
    await withDir(async (path) => {
      const { wal, storage } = await openFaultyWal(path);
      const expected: Array<[number, string]> = [];
      const add = (i: number) => {
        const r = wal.append(msg(i));
        return { ...r, i };
      };
      const before = [1, 2, 3].map(add);
      assert.deepEqual(await outcomes(before.map((r) => r.durable)), [true, true, true]);
      for (const r of before) expected.push([r.id, `m${r.i}`]);

      storage.fail(diskFull(`${path}/00000001.wal`), after);
      const failed = [4, 5, 6, 7].map(add);
      assert.deepEqual(await outcomes(failed.map((r) => r.durable)), [false, false, false, false]);
      assert.equal(wal.writable, false);
      // While writing is stopped, appends go on in memory; their durable rejects at once.
      const meanwhile = [8, 9].map(add);
      assert.deepEqual(await outcomes(meanwhile.map((r) => r.durable)), [false, false]);
      // Two appenders told their client of the failure, and retract their record.
      wal.ack(failed[1].id);
      wal.ack(meanwhile[0].id);
      for (const r of [...failed, ...meanwhile]) {
        if (r !== failed[1] && r !== meanwhile[0]) expected.push([r.id, `m${r.i}`]);
      }
      assert.equal(wal.stats().unwritten, 4);
      assert.equal(wal.stats().records, 7);

      storage.heal();
      await waitFor("writing to work again", () => wal.writable, 5000, 5);
      assert.equal(wal.stats().unwritten, 0);
      assert.equal(wal.stats().unwrittenBytes, 0);
      const later = add(10);
      await later.durable;
      expected.push([later.id, "m10"]);
      assert.deepEqual(await segments(path), ["00000001.wal", "00000002.wal"], "one fresh segment");
      assert.deepEqual((await checkoutAll(wal)).map((r) => [r.id, dec.decode(r.value)]), expected);
      await wal.close();

      const { records, corrupt } = await reopened(path);
      assert.deepEqual(records, expected, "after a restart: every kept record, once, in id order");
      assert.equal(corrupt, 0, "the failed segment was cut back: no id appears twice");
    });
  });
}

Deno.test("wal fault: held records are handed out by checkout; acked, they are never written", async () => {
  const { wal, storage } = await openFaultyWal(null);
  try {
    storage.fail();
    const ids = [1, 2, 3, 4, 5].map((i) => wal.append(msg(i)).id);
    await wal.sync();
    assert.equal(wal.writable, false);
    const first = await wal.checkout(3);
    assert.deepEqual(
      first.map((r) => [r.id, dec.decode(r.value)]),
      ids.slice(0, 3).map((id, k) => [id, `m${k + 1}`]),
    );
    wal.release(ids[1]);
    assert.deepEqual((await wal.checkout(10)).map((r) => r.id), [ids[1], ids[3], ids[4]]);
    for (const id of ids) wal.ack(id);
    assert.deepEqual(wal.stats(), {
      records: 0,
      bytes: 0,
      oldestWrittenAt: null,
      corrupt: 0,
      unwritten: 0,
      unwrittenBytes: 0,
    });
    const attempts = storage.attempts.length;
    storage.heal();
    await waitFor("writing to work again", () => wal.writable, 5000, 5);
    assert.equal(storage.attempts.length, attempts, "nothing was left to write");
  } finally {
    await wal.close();
  }
});

Deno.test("wal fault: with nothing held, writing resumes only once a probe write works", async () => {
  const { wal, storage } = await openFaultyWal(null);
  try {
    storage.fail();
    const { id } = wal.append(msg(1));
    await wal.sync();
    // Its client heard of the failure and took the record back: nothing is left to write.
    wal.ack(id);
    await waitFor("three retries", () => storage.probes >= 3 || wal.writable, 5000, 5);
    assert.equal(wal.writable, false, "the disk still fails");
    assert.equal(await gauge(metrics.walWriteFailing), 1, "alerting sees it with no record held");
    assert.equal(await gauge(metrics.walUnwrittenRecords), 0);
    storage.heal();
    await waitFor("writing to work again", () => wal.writable, 5000, 5);
    assert.equal(await gauge(metrics.walWriteFailing), 0);
    await wal.append(msg(2)).durable;
  } finally {
    await wal.close();
  }
});

Deno.test("wal fault: close with nothing held makes no probe write", async () => {
  const { wal, storage } = await openFaultyWal(null, { retryMinMs: 60_000, retryMaxMs: 60_000 });
  storage.fail();
  wal.ack(wal.append(msg(1)).id);
  await wal.sync();
  await wal.close();
  assert.equal(storage.probes, 0);
});

Deno.test("wal fault: records appended while the probe write is under way are written after it", async () => {
  await withDir(async (path) => {
    const { wal, storage } = await openFaultyWal(path);
    storage.fail();
    wal.ack(wal.append(msg(1)).id);
    await wal.sync();
    const gate = Promise.withResolvers<void>();
    storage.gate = gate.promise;
    const probes = storage.probes;
    storage.heal();
    await waitFor("a probe to start", () => storage.probes > probes, 5000, 5);
    const { id } = wal.append(msg(2));
    storage.gate = null;
    gate.resolve();
    await waitFor("writing to work again", () => wal.writable, 5000, 5);
    assert.equal(wal.stats().unwritten, 0);
    await wal.close();
    assert.deepEqual((await reopened(path)).records, [[id, "m2"]]);
  });
});

Deno.test("wal fault: a record checked out while held and acked during the rewrite is not replayed", async () => {
  await withDir(async (path) => {
    const { wal, storage } = await openFaultyWal(path);
    storage.fail();
    const ids = [1, 2, 3].map((i) => wal.append(msg(i)).id);
    await wal.sync();
    const out = await wal.checkout(1);
    // The rewrite starts; the delivery report arrives while its write is in flight.
    const gate = Promise.withResolvers<void>();
    const tried = storage.attempts.length;
    storage.gate = gate.promise;
    storage.heal();
    await waitFor("the rewrite to start", () => storage.attempts.length > tried, 5000, 5);
    wal.ack(out[0].id);
    gate.resolve();
    await waitFor("writing to work again", () => wal.writable, 5000, 5);
    await wal.close();
    const { records } = await reopened(path);
    assert.deepEqual(records.map(([id]) => id), ids.slice(1));
  });
});

Deno.test("wal fault: held records count against the bound; acking them frees room at once", async () => {
  const { wal, storage } = await openFaultyWal(null, { maxBytes: 8192, segmentBytes: 2048 });
  try {
    storage.fail();
    const ids: number[] = [];
    assert.throws(() => {
      for (let i = 0; i < 10_000; i++) ids.push(wal.append(msg(i)).id);
    }, WalFullError);
    await wal.sync();
    assert.throws(() => wal.append(msg(0)), WalFullError, "held in memory, still counted");
    const { bytes, unwritten, unwrittenBytes } = wal.stats();
    assert.ok(bytes <= 8192 && bytes > 7000, `${bytes} bytes`);
    assert.equal(unwritten, ids.length);
    assert.equal(unwrittenBytes, bytes);
    for (const id of ids.slice(0, 10)) wal.ack(id);
    assert.ok(wal.stats().bytes < bytes);
    wal.append(msg(0));
  } finally {
    await wal.close();
  }
});

Deno.test("wal fault: names taken by files the WAL did not create are skipped, never followed", async () => {
  await withDir(async (path, tmp) => {
    const { wal } = await openFaultyWal(path);
    const canary = `${tmp}/canary`;
    await Deno.writeTextFile(canary, "untouched");
    for (const seq of ["00000001", "00000002", "00000003"]) await Deno.symlink(canary, `${path}/${seq}.wal`);
    const ids = [1, 2, 3].map((i) => wal.append(msg(i)).id);
    await wal.sync();
    await waitFor("writing to work again", () => wal.writable && wal.stats().unwritten === 0, 5000, 5);
    await wal.close();
    assert.equal(await Deno.readTextFile(canary), "untouched");
    for (const seq of ["00000001", "00000002", "00000003"]) {
      assert.ok((await Deno.lstat(`${path}/${seq}.wal`)).isSymlink, `${seq} is left alone`);
    }
    assert.ok((await Deno.lstat(`${path}/00000004.wal`)).isFile);
    assert.deepEqual((await reopened(path)).records.map(([id]) => id), ids);
  });
});

Deno.test("wal fault: a failure in a segment rolled within the same commit keeps the earlier segments", async () => {
  await withDir(async (path) => {
    const { wal, storage } = await openFaultyWal(path, { segmentBytes: 300 });
    storage.appendFault = (seq) => seq === 3 ? { error: diskFull() } : null;
    const appended = Array.from({ length: 20 }, (_, i) => ({ i, ...wal.append(msg(i)) }));
    const ok = await outcomes(appended.map((r) => r.durable));
    const firstFailed = ok.indexOf(false);
    assert.ok(firstFailed > 0 && ok.slice(firstFailed).every((o) => !o), `${ok}`);
    storage.heal();
    await waitFor("writing to work again", () => wal.writable, 5000, 5);
    await wal.close();
    const { records, corrupt } = await reopened(path);
    assert.deepEqual(records, appended.map((r): [number, string] => [r.id, `m${r.i}`]));
    assert.equal(corrupt, 0);
  });
});

Deno.test("wal fault: close makes a last try to write what is held", async () => {
  await withDir(async (path) => {
    const { wal, storage } = await openFaultyWal(path, { retryMinMs: 60_000, retryMaxMs: 60_000 });
    storage.fail();
    const ids = [1, 2].map((i) => wal.append(msg(i)).id);
    await wal.sync();
    assert.equal(wal.stats().unwritten, 2);
    storage.heal();
    await wal.close();
    assert.deepEqual((await reopened(path)).records.map(([id]) => id), ids);
  });
});

Deno.test("wal fault: what close cannot write is reported lost and no longer counted in the WAL", async () => {
  await withDir(async (path) => {
    const { wal, storage } = await openFaultyWal(path, { retryMinMs: 60_000, retryMaxMs: 60_000 });
    wal.append(msg(1));
    await wal.sync();
    storage.fail();
    wal.append(msg(2));
    await wal.sync();
    assert.equal(wal.stats().records, 2);
    await wal.close();
    assert.equal(wal.stats().records, 1);
    assert.deepEqual((await reopened(path)).records.map(([id]) => id), [1]);
  });
});

Deno.test("wal fault: close on a disk whose fdatasync fails resolves, with one error line", async () => {
  await withDir(async (path) => {
    const fs = syncFaultFs();
    const wal = await openWal({ path, inMemory: false, maxBytes: 1 << 24, commitDelayMs: 1, fs });
    const { id, durable } = wal.append(msg(1));
    await durable;
    fs.failing = true;
    wal.ack(id);
    // The last commit's sync of the ack lists fails, and so does the one of the storage's close.
    const lines = await captured(() => wal.close());
    const errors = lines.filter((l) => l.level === "error");
    assert.deepEqual(errors.map((l) => l.msg), [
      "wal: syncing acks failed; they may be replayed after a restart",
    ]);
    assert.throws(() => wal.append(msg(2)), /wal: closed/);
  });
});

Deno.test("wal fault: retries back off up to the longest wait", async () => {
  const { wal, storage } = await openFaultyWal(null, { retryMinMs: 20, retryMaxMs: 80 });
  try {
    storage.fail();
    wal.append(msg(1));
    await delay(700);
    const at = storage.attempts.map((a) => a.at);
    const gaps = at.slice(1).map((t, i) => t - at[i]);
    // Without backoff there would be about 35 attempts; with it, 20 + 40 + 80 + 80 + ... ms apart.
    assert.ok(at.length >= 4 && at.length <= 12, `${at.length} attempts, gaps ${gaps}`);
    assert.ok(gaps.at(-1)! >= 70, `the last gap is the longest wait: ${gaps}`);
  } finally {
    await wal.close();
  }
});

Deno.test("wal fault: a segment deleted behind the WAL's back: its records are reported lost once, the WAL goes on", async () => {
  await withDir(async (path) => {
    const wal = await openWal({
      path,
      inMemory: false,
      maxBytes: 1 << 24,
      segmentBytes: 200,
      commitDelayMs: 1,
    });
    let capture: ReturnType<typeof capturing> | undefined;
    try {
      // Segments of 200 bytes: two records each.
      for (let i = 1; i <= 6; i++) await wal.append(msg(i)).durable;
      assert.deepEqual(await segments(path), ["00000001.wal", "00000002.wal", "00000003.wal"]);
      await Deno.remove(`${path}/00000002.wal`);
      capture = capturing();
      const lines = capture.lines;
      const values = (await checkoutAll(wal)).map((r) => dec.decode(r.value));
      assert.deepEqual(values, ["m1", "m2", "m5", "m6"]);
      assert.equal(await checkoutAll(wal).then((r) => r.length), 0, "nothing left to retry");
      assert.equal(wal.stats().corrupt, 2);
      assert.equal(wal.stats().records, 4);
      const lost = lines.filter((l) => l.includes("deleted by something else"));
      assert.equal(lost.length, 1, lines.join("\n"));
      assert.match(lost[0], /"segment":"00000002","records":2/);
      // The WAL takes new records, and deletes what is left of the lost segment at the next commit.
      await wal.append(msg(7)).durable;
      assert.ok(!(await Array.fromAsync(Deno.readDir(path))).some((e) => e.name.startsWith("00000002.")));
    } finally {
      capture?.stop();
      await wal.close();
    }
    assert.deepEqual((await reopened(path)).records.map(([, v]) => v), ["m1", "m2", "m5", "m6", "m7"]);
  });
});

Deno.test("wal fault: on a full disk (next-id cannot be written), acked segments are still deleted when a later one holds higher ids", async () => {
  await withDir(async (path) => {
    const { wal, storage } = await openFaultyWal(path, { segmentBytes: 200 });
    try {
      for (let i = 1; i <= 6; i++) await wal.append(msg(i)).durable;
      assert.deepEqual(await segments(path), ["00000001.wal", "00000002.wal", "00000003.wal"]);
      storage.saveNextId = () => Promise.reject(diskFull(`${path}/next-id.tmp`));
      for (const id of [1, 2, 3, 4]) wal.ack(id);
      await wal.sync();
      // Segment 3 holds ids 5 and 6: recovery needs no next-id to continue after 4.
      assert.deepEqual(await segments(path), ["00000003.wal"]);
    } finally {
      await wal.close();
    }
    const again = await openWal({ path, inMemory: false, maxBytes: 1 << 24, commitDelayMs: 1 });
    try {
      assert.equal(again.append(msg(7)).id, 7);
    } finally {
      await again.close();
    }
  });
});

for (const unreadable of ["00000001.wal", "00000001.acks"]) {
  Deno.test(`wal fault: with ${unreadable} unreadable at a start, new ids pass its; readable again, nothing is lost`, async () => {
    await withDir(async (path) => {
      const first = await openWal({ path, inMemory: false, maxBytes: 1 << 24, commitDelayMs: 1 });
      const ids: number[] = [];
      for (let i = 0; i < 30; i++) {
        const { id, durable } = first.append(msg(i));
        await durable;
        ids.push(id);
      }
      for (const id of ids.slice(0, 3)) first.ack(id);
      await first.close();

      // As when the files were copied in as another user, or the disk answers EIO for a while.
      const denied = { ...denoFs };
      denied.open = (file, options) =>
        file.endsWith(`/${unreadable}`)
          ? Promise.reject(new Deno.errors.PermissionDenied(file))
          : denoFs.open(file, options);
      denied.readFile = (file) =>
        file.endsWith(`/${unreadable}`)
          ? Promise.reject(new Deno.errors.PermissionDenied(file))
          : denoFs.readFile(file);
      const second = await openWal({
        path,
        inMemory: false,
        maxBytes: 1 << 24,
        commitDelayMs: 1,
        fs: denied,
      });
      for (let i = 30; i < 35; i++) {
        const { id, durable } = second.append(msg(i));
        await durable;
        assert.ok(id > ids[ids.length - 1], `id ${id} given again`);
      }
      await second.close();

      const { records, corrupt } = await reopened(path);
      assert.equal(corrupt, 0);
      assert.deepEqual(records.map(([, v]) => v), Array.from({ length: 32 }, (_, i) => `m${i + 3}`));
    });
  });
}

/** Writes segment file `name` of record lines with `ids` (values `m<id>`), in that order; returns its bytes. */
async function writeSegment(path: string, name: string, ids: number[]): Promise<Uint8Array> {
  const now = Date.now();
  const bytes = new Uint8Array(ids.flatMap((id) => [...encodeRecordLine(id, now, msg(id))]));
  await Deno.writeFile(`${path}/${name}`, bytes);
  return bytes;
}

Deno.test("wal fault: a whole line out of order at a segment's tail is kept and counted, not cut as a torn write", async () => {
  await withDir(async (path) => {
    await Deno.mkdir(path, { mode: 0o700 });
    await writeSegment(path, "00000001.wal", [1, 2, 3]);
    // Ids 2 and 3 again: as a WAL that gave ids twice would have written them.
    const second = await writeSegment(path, "00000002.wal", [4, 2, 3]);
    const recovered = await recoverDirectory(path);
    assert.equal(recovered.corrupt, 2);
    assert.equal((await Deno.stat(`${path}/00000002.wal`)).size, second.byteLength, "nothing cut");
    assert.equal(recovered.nextId, 5);
  });
});

Deno.test("wal fault: lines of an ack list that are not ids are ignored with a warning; its ids still ack", async () => {
  await withDir(async (path) => {
    await Deno.mkdir(path, { mode: 0o700 });
    await writeSegment(path, "00000001.wal", [1, 2, 3]);
    await Deno.writeTextFile(`${path}/00000001.acks`, "zz\n2\n\n1x\n");
    const capture = capturing();
    let recovered;
    try {
      recovered = await recoverDirectory(path);
    } finally {
      capture.stop();
    }
    const segment = recovered.segments[0];
    assert.deepEqual([segment.count, segment.live], [3, 2]);
    assert.ok(
      capture.lines.some((l) => l.includes("3 lines that are not ids ignored")),
      capture.lines.join("\n"),
    );
  });
});
