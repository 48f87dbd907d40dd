/**
 * The WAL disk fails while Kafka is down: a full tmpfs, a tmpfs remounted read-only, a symlink planted at the next
 * segment name. Every post that got a 2xx must reach Kafka once the disk, and then the broker, are back. And with
 * Kafka up: a tmpfs filled under load refuses what needs the WAL, keeps serving the rest, damages no segment and
 * drains once there is room, without a restart.
 */
import assert from "node:assert/strict";
import { startBroker } from "./kafka/broker.ts";
import { consumeAll } from "./kafka/consume.ts";
import { faultConfig, waitForBreaker, walDrained, withServiceLog } from "./support/fault.ts";
import { assertAllDelivered, type LoadResult, postRange, tally } from "./support/load.ts";
import { type Service, startService } from "./support/service.ts";
import { tempDir } from "./support/temp_dir.ts";
import { canMount, fillUp, mountTmpfs } from "./support/tmpfs.ts";
import { delay, waitFor } from "./support/wait.ts";
import { recoverDirectory } from "../src/wal/recovery.ts";

if (!canMount) console.warn("fault_wal_disk_test: tmpfs cases skipped: mounting a tmpfs needs root");

interface DiskFault {
  topic: string;
  /** Temp dir of the test: config, logs. */
  dir: string;
  walPath: string;
  config?: Record<string, unknown>;
  posts: { none: number; wal: number };
  /** Called with the service up and the breaker open. */
  breakDisk(svc: Service): Promise<void>;
  repairDisk(): Promise<void>;
  /** A post made right after the load is refused (the disk is still broken then). */
  refusedAfterLoad: boolean;
}

function statuses(r: LoadResult): string {
  const count = new Map<number, number>([[200, r.acked.size]]);
  for (const status of r.refused.values()) count.set(status, (count.get(status) ?? 0) + 1);
  return [...count].map(([s, n]) => `${s}=${n}`).join(" ");
}

/** Runs the load against a broken disk, repairs it, restarts the service, starts the broker and counts. */
async function runDiskFault(name: string, f: DiskFault): Promise<void> {
  await using broker = await startBroker();
  await broker.createTopic(f.topic, 1);
  await broker.stop();
  const config = faultConfig(broker.bootstrap, f.walPath, f.config);
  await using first = await startService(config, { dir: f.dir });
  await withServiceLog(first, async () => {
    await waitForBreaker(first, "open", 30_000);
    await f.breakDisk(first);
    const [none, wal] = await Promise.all([
      postRange(first.http, f.topic, "n", 0, f.posts.none, { concurrency: 16 }),
      postRange(first.http, f.topic, "w", 0, f.posts.wal, { concurrency: 4, ack: "wal" }),
    ]);
    console.log(
      `${name}: ack=none posts=${f.posts.none} ${statuses(none)}; ack=wal posts=${f.posts.wal} ${
        statuses(wal)
      }`,
    );
    assert.ok(none.acked.size > 0, "some ack=none posts were accepted");

    const late = await fetch(`${first.http}/topics/${f.topic}/messages?ack=wal`, {
      method: "POST",
      body: "late",
    });
    const body = await late.text();
    const ready = await fetch(`${first.monitoring}/readyz`);
    const readyBody = await ready.text();
    console.log(
      `${name}: a post after the load: ${late.status} ${JSON.stringify(body)}; readyz ${ready.status}`,
    );

    await f.repairDisk();
    await waitFor(
      "the records held in memory to be written",
      async () => (await first.metric("wal_unwritten_records")) === 0,
      30_000,
    );
    assert.equal(await first.stop(), 0);
    // The failed writes left no damaged line behind (a cut tail is not damage).
    assert.equal(await damagedLines(f.walPath, `${f.dir}/copy-repaired`), 0, `${name}: no damaged line`);
    // What was accepted must now be on disk: a restart finds it.
    await using svc = await startService(config, { dir: f.dir });
    await broker.start();
    await walDrained(svc);
    const found = await consumeAll(broker.bootstrap, f.topic, {
      expected: none.acked.size + wal.acked.size,
      timeoutMs: 60_000,
    });
    const values = found.map((m) => m.value);
    assertAllDelivered(`${name} ack=none`, tally("n", f.posts.none, none.acked, values));
    assertAllDelivered(`${name} ack=wal`, tally("w", f.posts.wal, wal.acked, values));
    if (f.refusedAfterLoad) {
      assert.equal(late.status, 503);
      assert.ok(late.headers.has("retry-after"));
      assert.match(body.trim(), /^wal: (unavailable|full)$/);
      assert.equal(ready.status, 503, "kafka down and the WAL cannot take messages: not ready");
      assert.match(readyBody, /circuit breaker open/);
    }
    assert.ok(!body.includes(f.dir) && !/os error/i.test(body), `no internals in the reply: ${body}`);
  });
}

Deno.test({
  name:
    "fault: WAL on a full tmpfs, Kafka down: 200s are kept in memory, written once there is room, 0 missing",
  ignore: !canMount,
  sanitizeOps: false,
  sanitizeResources: false,
  async fn() {
    await using dir = await tempDir("ka-disk-full-");
    await using disk = await mountTmpfs(`${dir.path}/disk`, 1 << 20);
    const filler = `${disk.path}/filler`;
    await runDiskFault("full-tmpfs", {
      topic: "disk-full",
      dir: dir.path,
      walPath: `${disk.path}/wal`,
      posts: { none: 1000, wal: 200 },
      breakDisk: () => fillUp(filler, 48 * 1024),
      repairDisk: () => Deno.remove(filler),
      refusedAfterLoad: true,
    });
  },
});

Deno.test({
  name:
    "fault: WAL tmpfs remounted read-only, Kafka down: 200s are kept in memory, written once rw, 0 missing",
  ignore: !canMount,
  sanitizeOps: false,
  sanitizeResources: false,
  async fn() {
    await using dir = await tempDir("ka-disk-ro-");
    await using disk = await mountTmpfs(`${dir.path}/disk`, 64 << 20);
    await runDiskFault("read-only-tmpfs", {
      topic: "disk-ro",
      dir: dir.path,
      walPath: `${disk.path}/wal`,
      posts: { none: 300, wal: 50 },
      // Nothing in the WAL is open for writing yet, so the remount is allowed.
      breakDisk: () => disk.remount("ro"),
      repairDisk: () => disk.remount("rw"),
      refusedAfterLoad: true,
    });
  },
});

Deno.test({
  name: "fault: symlinks planted at the next segment names are never followed; 0 missing",
  sanitizeOps: false,
  sanitizeResources: false,
  async fn() {
    await using dir = await tempDir("ka-disk-link-");
    const walPath = `${dir.path}/wal`;
    const canary = `${dir.path}/canary`;
    await Deno.writeTextFile(canary, "do not touch\n");
    await runDiskFault("symlink", {
      topic: "disk-link",
      dir: dir.path,
      walPath,
      // Segments of 256 KiB: the load below rolls twice.
      config: { producer: { wal: { max_bytes: 1 << 20 } } },
      posts: { none: 6000, wal: 300 },
      async breakDisk(svc) {
        await postRange(svc.http, "disk-link", "warm-up", 0, 10, { ack: "wal" });
        await Deno.stat(`${walPath}/00000001.wal`);
        for (const seq of ["00000002", "00000003"]) await Deno.symlink(canary, `${walPath}/${seq}.wal`);
      },
      repairDisk: () => Promise.resolve(),
      refusedAfterLoad: false,
    });
    assert.equal(await Deno.readTextFile(canary), "do not touch\n", "the symlink target is untouched");
    assert.ok((await Deno.lstat(`${walPath}/00000002.wal`)).isSymlink);
  },
});

/** Damaged lines in a copy of the WAL directory, as recovery counts them (a torn last line is not damage). */
async function damagedLines(walPath: string, copy: string): Promise<number> {
  await Deno.mkdir(copy, { recursive: true, mode: 0o700 });
  for await (const e of Deno.readDir(walPath)) {
    if (!e.isFile) continue;
    // The running service deletes a segment once all of its records are acknowledged: gone, it holds no damage.
    await Deno.copyFile(`${walPath}/${e.name}`, `${copy}/${e.name}`).catch((err) => {
      if (!(err instanceof Deno.errors.NotFound)) throw err;
    });
  }
  return (await recoverDirectory(copy)).corrupt;
}

Deno.test({
  name:
    "fault: WAL tmpfs filled under load, Kafka up: WAL requests get 503 + Retry-After, Kafka ones 200; no damage, drains without a restart",
  ignore: !canMount,
  sanitizeOps: false,
  sanitizeResources: false,
  async fn() {
    await using broker = await startBroker();
    await broker.createTopic("fill-wal", 1);
    await broker.createTopic("fill-kafka", 1);
    await using dir = await tempDir("ka-disk-fill-");
    await using disk = await mountTmpfs(`${dir.path}/disk`, 1 << 20);
    const walPath = `${disk.path}/wal`;
    const filler = `${disk.path}/filler`;
    // Records of fill-wal always go through the WAL: a reply means "fdatasynced".
    const config = faultConfig(broker.bootstrap, walPath, {
      producer: { wal: { always_topics: ["fill-wal"] } },
    });
    await using svc = await startService(config, { dir: dir.path });
    await withServiceLog(svc, async () => {
      let stop = false;
      const loads = Promise.all([
        postRange(svc.http, "fill-wal", "w", 0, 1_000_000, { concurrency: 8, stop: () => stop }),
        postRange(svc.http, "fill-kafka", "k", 0, 1_000_000, {
          concurrency: 8,
          ack: "wal",
          stop: () => stop,
        }),
      ]);
      await delay(1000);
      // The WAL writes meanwhile, so the filler itself may hit the end of the disk: full all the same.
      await fillUp(filler, 0).catch((err) => {
        if (err.code !== "ENOSPC") throw err;
      });
      // The WAL fails, then frees room as Kafka takes records and their segments go: probe until refused.
      let refusal: { status: number; retryAfter: string | null; body: string } | null = null;
      await waitFor(
        "a WAL request to be refused",
        async () => {
          const r = await fetch(`${svc.http}/topics/fill-wal/messages`, { method: "POST", body: "probe" });
          refusal = { status: r.status, retryAfter: r.headers.get("retry-after"), body: await r.text() };
          return r.status !== 200;
        },
        30_000,
        20,
      );
      const kafkaReply = await fetch(`${svc.http}/topics/fill-kafka/messages?ack=wal`, {
        method: "POST",
        body: "probe",
      });
      await kafkaReply.body?.cancel();
      const { status, retryAfter, body } = refusal!;
      console.log(`disk full: fill-wal ${status} ${JSON.stringify(body)}, fill-kafka ${kafkaReply.status}`);
      assert.equal(status, 503);
      assert.ok(Number(retryAfter) > 0, "Retry-After set");
      assert.match(body.trim(), /^wal: (unavailable|full)$/);
      assert.equal(kafkaReply.status, 200, "the Kafka path keeps serving");
      assert.equal(await damagedLines(walPath, `${dir.path}/copy-full`), 0, "no damaged line while full");

      await Deno.remove(filler);
      await waitFor(
        "writing to work again",
        async () => (await svc.metric("wal_unwritten_records")) === 0,
        30_000,
      );
      await delay(1000);
      stop = true;
      const [wal, kafka] = await loads;
      await walDrained(svc);
      assert.equal(await damagedLines(walPath, `${dir.path}/copy-after`), 0, "no damaged line after");
      assert.equal(await svc.metric("wal_corrupt_records"), 0);

      const refusedWal = [...wal.refused.values()];
      console.log(
        `disk full under load: fill-wal ${statuses(wal)}; fill-kafka ${statuses(kafka)}`,
      );
      assert.ok(refusedWal.length > 0 && refusedWal.every((s) => s === 503), "WAL requests refused with 503");
      assert.equal(kafka.refused.size, 0, "no Kafka request refused");
      for (const [topic, run, r] of [["fill-wal", "w", wal], ["fill-kafka", "k", kafka]] as const) {
        const found = await consumeAll(broker.bootstrap, topic, {
          expected: r.acked.size,
          timeoutMs: 60_000,
        });
        const sent = r.acked.size + r.refused.size;
        assertAllDelivered(
          `disk-full-under-load ${topic}`,
          tally(run, sent, r.acked, found.map((m) => m.value)),
        );
      }
      assert.equal(await svc.stop(), 0);
    });
  },
});

Deno.test({
  name:
    "fault: a segment file deleted behind the service's back: reported lost once (log, metric), the rest delivered, a clean restart",
  sanitizeOps: false,
  sanitizeResources: false,
  async fn() {
    await using broker = await startBroker();
    await broker.createTopic("deleted", 1);
    await broker.stop();
    await using dir = await tempDir("ka-disk-deleted-");
    const walPath = `${dir.path}/wal`;
    // Segments of 256 KiB: the load fills three.
    const config = faultConfig(broker.bootstrap, walPath, { producer: { wal: { max_bytes: 1 << 20 } } });
    await using svc = await startService(config, { dir: dir.path });
    await withServiceLog(svc, async () => {
      await waitForBreaker(svc, "open", 30_000);
      const load = await postRange(svc.http, "deleted", "d", 0, 6000, { concurrency: 8, ack: "wal" });
      assert.equal(load.acked.size, 6000);
      await Deno.stat(`${walPath}/00000003.wal`);
      await Deno.remove(`${walPath}/00000001.wal`);

      await broker.start();
      await walDrained(svc);
      const lost = (await svc.logs()).filter((l) => String(l.msg).includes("deleted by something else"));
      assert.equal(lost.length, 1, "logged once");
      const records = Number(lost[0].records);
      assert.equal(await svc.metric("wal_corrupt_records"), records);
      const found = await consumeAll(broker.bootstrap, "deleted", {
        expected: 6000 - records,
        timeoutMs: 60_000,
      });
      const t = tally("d", 6000, load.acked, found.map((m) => m.value));
      console.log(
        `segment-deleted: sent=${t.sent} acknowledged=${t.acknowledged} found=${t.found} ` +
          `missing=${t.missing.length} duplicated=${t.duplicated} reported-lost=${records}`,
      );
      assert.ok(records > 0);
      assert.equal(t.missing.length, records, "exactly the records of the deleted file are missing");
      assert.equal(await svc.stop(), 0);
    });
    await using again = await startService(config, { dir: dir.path });
    assert.equal(await again.metric("wal_messages"), 0);
    assert.equal(await again.stop(), 0, "a clean restart");
  },
});

Deno.test({
  name:
    "fault: the WAL fills its own disk with Kafka down, kill -9, restart on the full disk: it starts and drains, 0 missing",
  ignore: !canMount,
  sanitizeOps: false,
  sanitizeResources: false,
  async fn() {
    await using broker = await startBroker();
    await broker.createTopic("self-full", 1);
    await broker.stop();
    await using dir = await tempDir("ka-disk-self-full-");
    // One segment (a quarter of max_bytes) is larger than the disk: the WAL itself fills it.
    await using disk = await mountTmpfs(`${dir.path}/disk`, 512 * 1024);
    const config = faultConfig(broker.bootstrap, `${disk.path}/wal`, {
      producer: { wal: { max_bytes: "64MiB" } },
    });
    await using first = await startService(config, { dir: dir.path });
    const load = await withServiceLog(first, async () => {
      await waitForBreaker(first, "open", 30_000);
      const load = await postRange(first.http, "self-full", "s", 0, 8000, { concurrency: 8, ack: "wal" });
      console.log(`self-full: ${statuses(load)}`);
      assert.ok(load.acked.size > 0 && load.refused.size > 0, "the disk filled up under the load");
      return load;
    });
    first.signal("SIGKILL");
    await first.exited;

    // Before, start-up refused a full directory: a crash loop, since only a running service can free it.
    await using svc = await startService(config, { dir: dir.path });
    await withServiceLog(svc, async () => {
      assert.ok(
        (await svc.logs()).some((l) => String(l.msg).includes("is full; starting with writing stopped")),
      );
      await broker.start();
      await walDrained(svc);
      const after = await fetch(`${svc.http}/topics/self-full/messages?ack=wal`, {
        method: "POST",
        body: "s:8000",
      });
      await after.body?.cancel();
      assert.equal(after.status, 200, "room again");
      const found = await consumeAll(broker.bootstrap, "self-full", {
        expected: load.acked.size,
        timeoutMs: 60_000,
      });
      assertAllDelivered("self-full-restart", tally("s", 8000, load.acked, found.map((m) => m.value)));
      assert.equal(await svc.stop(), 0);
    });
  },
});
