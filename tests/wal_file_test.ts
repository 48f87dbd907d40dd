/** The file WAL: persistence across restarts and crashes, recovery from damaged files, group commit, file modes. */
import assert from "node:assert/strict";
import * as metrics from "../src/metrics.ts";
import type { Message } from "../src/message.ts";
import { openWal, type Wal, type WalOptions, type WalRecord } from "../src/wal/wal.ts";
import { openFaultyWal } from "./support/fault_storage.ts";
import { canMount, fillUp, mountTmpfs } from "./support/tmpfs.ts";
import { lockWalDirectory } from "../src/wal/lock.ts";
import { capturing } from "./support/log_capture.ts";
import { tempDir } from "./support/temp_dir.ts";
import { settle, waitFor } from "./support/wait.ts";

const enc = new TextEncoder();
const dec = new TextDecoder();

function msg(i: number): Message {
  return { topic: "t", value: enc.encode(`m${i}`) };
}

function open(path: string, opts: Partial<WalOptions> = {}): Promise<Wal> {
  return openWal({ path, inMemory: false, maxBytes: 1 << 24, commitDelayMs: 1, ...opts });
}

async function checkoutAll(wal: Wal): Promise<WalRecord[]> {
  const all: WalRecord[] = [];
  for (let got = await wal.checkout(100); got.length > 0; got = await wal.checkout(100)) all.push(...got);
  return all;
}

async function names(dir: string): Promise<string[]> {
  const all: string[] = [];
  for await (const e of Deno.readDir(dir)) all.push(e.name);
  return all.sort();
}

async function counter(c: { get(): Promise<{ values: Array<{ value: number }> }> }): Promise<number> {
  return (await c.get()).values.reduce((sum, v) => sum + v.value, 0);
}

/** A temp directory for one test, removed afterwards; the WAL goes in `<tmp>/wal`. */
async function withDir(fn: (path: string, tmp: string) => Promise<void>): Promise<void> {
  await using tmp = await tempDir("wal_file_test_");
  await fn(`${tmp.path}/wal`, tmp.path);
}

/** Copies the WAL directory as it is on disk now: what a restart after a crash at this moment would find. */
async function snapshot(path: string, to: string): Promise<void> {
  await Deno.mkdir(to, { mode: 0o700 });
  for (const name of await names(path)) await Deno.copyFile(`${path}/${name}`, `${to}/${name}`);
}

/** Captures log lines while `fn` runs. */
async function captureLog<T>(fn: () => Promise<T>): Promise<{ result: T; lines: string[] }> {
  const capture = capturing();
  try {
    return { result: await fn(), lines: capture.lines };
  } finally {
    capture.stop();
  }
}

Deno.test("wal file: acks survive a clean restart; unacked records come back oldest first", async () => {
  await withDir(async (path) => {
    let wal = await open(path, { segmentBytes: 512 });
    const ids: number[] = [];
    for (let i = 0; i < 60; i++) {
      // Every third record goes straight to Kafka, as in `always` mode, and is acked on delivery.
      const direct = i % 3 === 0;
      const { id } = wal.append(msg(i), { checkedOut: direct });
      ids.push(id);
      if (direct) wal.ack(id);
    }
    await wal.sync();
    const replayed = await wal.checkout(10);
    for (const r of replayed.slice(0, 5)) wal.ack(r.id);
    await wal.close();
    const acked = new Set([...ids.filter((_, i) => i % 3 === 0), ...replayed.slice(0, 5).map((r) => r.id)]);
    const expected = ids.filter((id) => !acked.has(id));

    wal = await open(path, { segmentBytes: 512 });
    try {
      assert.equal(wal.pendingCount(), expected.length);
      assert.equal(wal.stats().records, expected.length);
      const got = await checkoutAll(wal);
      assert.deepEqual(got.map((r) => r.id), expected, "checked out but unacked at stop: replayed too");
      assert.deepEqual(got.map((r) => dec.decode(r.value)), expected.map((id) => `m${ids.indexOf(id)}`));
    } finally {
      await wal.close();
    }
  });
});

Deno.test("wal file: after a crash, every record whose durable resolved is there", async () => {
  await withDir(async (path, tmp) => {
    const wal = await open(path, { segmentBytes: 2048 });
    const ids: number[] = [];
    const durables: Promise<void>[] = [];
    for (let i = 0; i < 500; i++) {
      const { id, durable } = wal.append(msg(i));
      ids.push(id);
      durables.push(durable);
      if (i % 50 === 49) await settle();
    }
    await Promise.all(durables);
    await snapshot(path, `${tmp}/crashed`);
    await wal.close();

    const after = await open(`${tmp}/crashed`, { segmentBytes: 2048 });
    try {
      assert.deepEqual((await checkoutAll(after)).map((r) => r.id), ids);
      assert.equal(after.stats().corrupt, 0);
    } finally {
      await after.close();
    }
  });
});

Deno.test("wal file: ids continue after a restart and are never reused, even once every segment is gone", async () => {
  await withDir(async (path) => {
    let wal = await open(path);
    const first = [1, 2, 3].map((i) => wal.append(msg(i)).id);
    for (const id of first) wal.ack(id);
    await wal.close();

    // This start deletes the fully acked segment; it stops before appending anything.
    wal = await open(path);
    await wal.close();
    assert.deepEqual((await names(path)).filter((n) => n.endsWith(".wal")), [], "no segment left");

    wal = await open(path);
    const next = wal.append(msg(4)).id;
    assert.ok(next > first[2], `id ${next} after ${first[2]}`);
    await wal.close();

    wal = await open(path);
    try {
      assert.ok(wal.append(msg(5)).id > next);
    } finally {
      await wal.close();
    }
  });
});

Deno.test("wal file: many appends share a few fdatasyncs", async () => {
  await withDir(async (path) => {
    const wal = await open(path, { commitDelayMs: 5 });
    try {
      const before = await counter(metrics.walFsyncs);
      const durables = Array.from({ length: 2000 }, (_, i) => wal.append(msg(i)).durable);
      await Promise.all(durables);
      const fsyncs = (await counter(metrics.walFsyncs)) - before;
      assert.ok(fsyncs >= 1 && fsyncs <= 2, `${fsyncs} fdatasyncs for 2000 appends`);
      const lines = (await Deno.readTextFile(`${path}/00000001.wal`)).split("\n");
      assert.equal(lines.length, 2001, "every record is one line");
    } finally {
      await wal.close();
    }
  });
});

Deno.test("wal file: commits of many lines, non-ASCII topics and a large record between them, come back whole", async () => {
  await withDir(async (path) => {
    const messages: Message[] = Array.from({ length: 1500 }, (_, i) => ({
      topic: i % 11 === 0 ? `tøpic-${i}` : "t",
      value: enc.encode(i === 700 ? "x".repeat(50_000) : `m${i}`),
    }));
    let wal = await open(path);
    try {
      // Appends one by one in one commit, then a batch in the next.
      const one = messages.slice(0, 900).map((m) => wal.append(m).durable);
      await Promise.all([...one, wal.appendMany(messages.slice(900)).durable]);
    } finally {
      await wal.close();
    }
    wal = await open(path);
    try {
      const back = (await checkoutAll(wal)).map((r) => ({ topic: r.topic, value: dec.decode(r.value) }));
      assert.deepEqual(back, messages.map((m) => ({ topic: m.topic, value: dec.decode(m.value) })));
    } finally {
      await wal.close();
    }
  });
});

Deno.test("wal file: a torn last line is cut off", async () => {
  await withDir(async (path) => {
    let wal = await open(path);
    const ids = [1, 2, 3].map((i) => wal.append(msg(i)).id);
    await wal.close();
    const file = `${path}/00000001.wal`;
    const size = (await Deno.stat(file)).size;

    for (const tail of [`{"id":4,"writtenAt":17`, `{"id":4,"writtenAt":17,"topic":"t","crc":"00000000"}\n`]) {
      await Deno.writeTextFile(file, tail, { append: true });
      wal = await open(path);
      try {
        assert.equal((await Deno.stat(file)).size, size, `tail ${JSON.stringify(tail)} cut`);
        assert.deepEqual(wal.stats().corrupt, 0, "a torn tail is not counted as damage");
        assert.deepEqual((await checkoutAll(wal)).map((r) => r.id), ids);
      } finally {
        await wal.close();
      }
    }
  });
});

Deno.test("wal file: garbage and bad-checksum lines are skipped, counted, logged and kept", async () => {
  await withDir(async (path) => {
    let wal = await open(path);
    const ids = Array.from({ length: 10 }, (_, i) => wal.append(msg(i)).id);
    await wal.close();
    const file = `${path}/00000001.wal`;
    const lines = (await Deno.readTextFile(file)).split("\n");
    // "m5" becomes "m6": still valid JSON, but not what the checksum covers.
    assert.ok(lines[5].includes(`"value":"bTU="`));
    lines[5] = lines[5].replace(`"value":"bTU="`, `"value":"bTY="`);
    lines.splice(3, 0, "this is not JSON");
    await Deno.writeTextFile(file, lines.join("\n"));
    const damaged = await Deno.readFile(file);

    const corruptBefore = await counter(metrics.walCorrupt);
    const { result, lines: logged } = await captureLog(() => open(path));
    wal = result;
    try {
      assert.equal(wal.stats().corrupt, 2);
      assert.equal((await counter(metrics.walCorrupt)) - corruptBefore, 2);
      const text = logged.join("\n");
      assert.match(text, /wal: segment 00000001: malformed record at line 4/);
      assert.match(text, /wal: segment 00000001: bad checksum at line 7/);
      assert.deepEqual(await Deno.readFile(file), damaged, "the damaged file is left as it was");

      const got = await checkoutAll(wal);
      assert.deepEqual(got.map((r) => r.id), ids.filter((_, i) => i !== 5));
      for (const r of got) wal.ack(r.id);
      await wal.sync();
      const left = await names(path);
      assert.ok(left.includes("00000001.corrupt"), `kept for inspection: ${left}`);
      assert.ok(!left.includes("00000001.wal") && !left.includes("00000001.acks"), `${left}`);
    } finally {
      await wal.close();
    }
  });
});

Deno.test("wal file: a segment of pure garbage does not stop start-up", async () => {
  await withDir(async (path) => {
    await Deno.mkdir(path, { mode: 0o700 });
    const junk = crypto.getRandomValues(new Uint8Array(4096)).map((b, i) => (i % 97 === 0 ? 0x0a : b));
    await Deno.writeFile(`${path}/00000001.wal`, junk, { mode: 0o600 });
    const { result: wal } = await captureLog(() => open(path));
    try {
      assert.ok(wal.stats().corrupt > 10);
      assert.equal(wal.stats().records, 0);
      const { id, durable } = wal.append(msg(1));
      await durable;
      assert.deepEqual((await wal.checkout(10)).map((r) => r.id), [id]);
      assert.ok((await names(path)).includes("00000001.corrupt"));
    } finally {
      await wal.close();
    }
  });
});

Deno.test("wal file: an ack list with a torn tail is cut, so later acks are not glued to it", async () => {
  await withDir(async (path) => {
    let wal = await open(path);
    const ids = [1, 2, 3, 4, 5].map((i) => wal.append(msg(i)).id);
    wal.ack(ids[0]);
    await wal.close();
    // Half of an ack for ids[2] reached the file before a crash: the digits without their newline.
    await Deno.writeTextFile(`${path}/00000001.acks`, String(ids[2]).slice(0, 1), { append: true });

    wal = await open(path);
    assert.equal(wal.pendingCount(), 4);
    wal.ack(ids[3]);
    await wal.close();

    wal = await open(path);
    try {
      assert.deepEqual((await checkoutAll(wal)).map((r) => r.id), [ids[1], ids[2], ids[4]]);
    } finally {
      await wal.close();
    }
  });
});

Deno.test("wal file: the directory is created 0700 and every file 0600", async () => {
  await withDir(async (path) => {
    const nested = `${path}/deeper`;
    let wal = await open(nested, { segmentBytes: 256 });
    const ids = Array.from({ length: 10 }, (_, i) => wal.append(msg(i)).id);
    wal.ack(ids[0]);
    await wal.close();
    wal = await open(nested, { segmentBytes: 256 });
    for (const id of ids) wal.ack(id);
    await wal.sync();
    wal.append(msg(11));
    await wal.close();
    assert.equal((await Deno.stat(nested)).mode! & 0o777, 0o700);
    const files = await names(nested);
    assert.ok(
      files.some((n) => n.endsWith(".wal")) && files.some((n) => n.startsWith("next-id.")),
      `${files}`,
    );
    for (const name of files) assert.equal((await Deno.stat(`${nested}/${name}`)).mode! & 0o777, 0o600, name);
  });
});

Deno.test("wal file: an ack list left without its segment is removed at start-up", async () => {
  await withDir(async (path) => {
    await Deno.mkdir(path, { mode: 0o700 });
    await Deno.writeTextFile(`${path}/00000007.acks`, "1\n2\n", { mode: 0o600 });
    const wal = await open(path);
    try {
      assert.deepEqual(await names(path), []);
      assert.equal(wal.stats().records, 0);
    } finally {
      await wal.close();
    }
  });
});

Deno.test("wal file: names this WAL does not write (padded wider, past 2^53) are left alone with a warning", async () => {
  await withDir(async (path) => {
    const wal = await open(path);
    const { durable } = wal.append(msg(1));
    await durable;
    await wal.close();
    const strangers = ["000000001.wal", "99999999999999999999.wal", "000000001.acks"];
    for (const name of strangers) await Deno.writeTextFile(`${path}/${name}`, "1\n", { mode: 0o600 });
    const { result: again, lines } = await captureLog(() => open(path));
    try {
      assert.deepEqual((await checkoutAll(again)).map((r) => dec.decode(r.value)), ["m1"]);
      for (const name of strangers) {
        assert.ok(lines.some((l) => l.includes(`wal: ${name} is not a segment name this WAL writes`)), name);
      }
      for (const name of strangers) assert.ok((await names(path)).includes(name), `${name} left in place`);
    } finally {
      await again.close();
    }
  });
});

Deno.test("wal file: a world-writable directory is refused; one open to others is used with a warning, to its group without", async () => {
  await withDir(async (path) => {
    await Deno.mkdir(path);
    await Deno.chmod(path, 0o777);
    const err = await open(path).then(() => null, (e: Error) => e);
    assert.ok(err, "refused");
    assert.equal(err.message, `wal: directory ${path} is writable by every user (mode 0777); make it 0700`);

    await Deno.chmod(path, 0o755);
    const { result: wal, lines } = await captureLog(() => open(path));
    await wal.close();
    assert.ok(
      lines.some((l) => l.includes(`wal: directory ${path} is open to other users (mode 0755)`)),
      lines.join("\n"),
    );

    // A Kubernetes volume given to the pod's fsGroup.
    await Deno.chmod(path, 0o2770);
    const { result: grouped, lines: groupLines } = await captureLog(() => open(path));
    await grouped.close();
    assert.ok(!groupLines.some((l) => l.includes("open to other users")), groupLines.join("\n"));
  });
});

Deno.test("wal file: a directory that cannot be written stops start-up with one line naming it", async () => {
  await withDir(async (path, tmp) => {
    let err: Error | null;
    if (canMount) {
      // Permission bits do not stop root: a read-only mount does.
      await using disk = await mountTmpfs(`${tmp}/disk`, 1 << 20);
      await Deno.mkdir(`${disk.path}/wal`, { mode: 0o700 });
      await disk.remount("ro");
      err = await open(`${disk.path}/wal`).then(() => null, (e: Error) => e);
      path = `${disk.path}/wal`;
    } else {
      await Deno.mkdir(path, { mode: 0o500 });
      err = await open(path).then(() => null, (e: Error) => e);
    }
    assert.ok(err, "refused");
    assert.ok(err.message.startsWith(`wal: directory ${path} is not writable: `), err.message);
    assert.ok(!err.message.includes("\n"));
  });
});

Deno.test({
  name: "wal lock: a missing directory that cannot be created is named as such, not as its LOCK file",
  ignore: !canMount,
  async fn() {
    await withDir(async (_path, tmp) => {
      await using disk = await mountTmpfs(`${tmp}/disk`, 1 << 20);
      await disk.remount("ro");
      const dir = `${disk.path}/wal`;
      const err = await lockWalDirectory(dir).then(() => null, (e: Error) => e);
      assert.ok(err, "refused");
      assert.match(
        err.message,
        new RegExp(`^wal: directory ${dir}: cannot create it: Read-only file system`),
      );
    });
  },
});

Deno.test({
  name: "wal file: a full disk does not stop start-up; draining it deletes every segment (next-id is a name)",
  ignore: !canMount,
  async fn() {
    await withDir(async (_path, tmp) => {
      await using disk = await mountTmpfs(`${tmp}/disk`, 256 * 1024);
      const path = `${disk.path}/wal`;
      const first = await open(path, { segmentBytes: 16 * 1024 });
      const big = (i: number): Message => ({ topic: "t", value: enc.encode(`${i}`.padEnd(1000, ".")) });
      for (let i = 0; i < 60; i++) await first.append(big(i)).durable;
      await first.close();
      const segments = (await names(path)).filter((n) => n.endsWith(".wal"));
      assert.ok(segments.length >= 3, `${segments}`);
      await fillUp(`${disk.path}/filler`, 0);

      const capture = capturing();
      const lines = capture.lines;
      try {
        const wal = await open(path, { segmentBytes: 16 * 1024 });
        assert.ok(lines.some((l) => l.includes("is full; starting with writing stopped")), lines.join("\n"));
        assert.equal(wal.writable, false, "it takes nothing it cannot keep");
        for (const r of await checkoutAll(wal)) wal.ack(r.id);
        await wal.sync();
        // next-id needs no data block: saved on the full disk, then every segment goes.
        assert.deepEqual((await names(path)).filter((n) => !n.endsWith(".acks")), ["next-id.61"]);
        // Room again: the next probe write works, and writing resumes.
        await waitFor("writing to resume", () => wal.writable, 10_000);
        const { id, durable } = wal.append(msg(1));
        assert.equal(id, 61);
        await durable;
        await wal.close();
      } finally {
        capture.stop();
      }
      const again = await open(path);
      assert.deepEqual((await checkoutAll(again)).map((r) => r.id), [61]);
      assert.equal(again.append(msg(2)).id, 62);
      await again.close();
    });
  },
});

Deno.test({
  name: "wal file: on a full disk with nothing held, the WAL stays unwritable until there is room again",
  ignore: !canMount,
  async fn() {
    await withDir(async (_path, tmp) => {
      await using disk = await mountTmpfs(`${tmp}/disk`, 256 * 1024);
      const path = `${disk.path}/wal`;
      // A segment a record: each append needs a new block.
      const { wal, storage } = await openFaultyWal(path, { segmentBytes: 1 });
      try {
        await wal.append(msg(1)).durable;
        await fillUp(`${disk.path}/filler`, 0).catch((err) => {
          if (err.code !== "ENOSPC") throw err;
        });
        // Refused and taken back by its client: nothing held, only the probe can tell that the disk works.
        const { id, durable } = wal.append(msg(2));
        await assert.rejects(durable, /No space left on device/);
        wal.ack(id);
        await waitFor("three retries", () => storage.probes >= 3 || wal.writable, 10_000, 5);
        assert.equal(wal.writable, false, "the disk is still full");
        await Deno.remove(`${disk.path}/filler`);
        await waitFor("writing to work again", () => wal.writable, 10_000, 5);
        await wal.append(msg(3)).durable;
        assert.ok(!(await names(path)).includes(".write-probe"), "the probe file is removed");
      } finally {
        await wal.close();
      }
    });
  },
});

Deno.test("wal file: an ack list that is not a regular file is moved aside before acks are written, not opened", async () => {
  for (const kind of ["fifo", "symlink"] as const) {
    await withDir(async (path, tmp) => {
      const first = await open(path);
      for (let i = 0; i < 4; i++) await first.append(msg(i)).durable;
      await first.close();
      const canary = `${tmp}/canary`;
      await Deno.writeTextFile(canary, "do not touch\n");
      const acks = `${path}/00000001.acks`;
      await Deno.remove(acks).catch(() => {});
      // A FIFO: opening it to append would wait for a reader for ever (and a stop with it). A link: followed.
      if (kind === "fifo") {
        assert.equal((await new Deno.Command("mkfifo", { args: [acks] }).output()).code, 0);
      } else await Deno.symlink(canary, acks);
      const { result: wal, lines } = await captureLog(async () => {
        const wal = await open(path);
        const records = await checkoutAll(wal);
        assert.equal(records.length, 4, `${kind}: read as no acks`);
        for (const r of records) wal.ack(r.id);
        await wal.sync();
        return wal;
      });
      await wal.close();
      assert.ok(
        lines.some((l) => l.includes("00000001.acks is not a regular file; moved aside")),
        lines.join("\n"),
      );
      const aside = await Deno.lstat(`${path}/00000001.acks.not-a-file`);
      assert.ok(kind === "fifo" ? aside.isFifo : aside.isSymlink, kind);
      assert.equal(
        await Deno.readTextFile(canary),
        "do not touch\n",
        `${kind}: the link's target is untouched`,
      );
      const again = await open(path);
      assert.equal((await checkoutAll(again)).length, 0, `${kind}: the acks reached a regular file`);
      await again.close();
    });
  }
});
