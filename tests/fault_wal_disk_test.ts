/**
 * The WAL disk fails while Kafka is down: a full tmpfs, a tmpfs remounted read-only, a symlink planted at the next
 * segment name. Every post that got a 2xx must reach Kafka once the disk, and then the broker, are back.
 */
import assert from "node:assert/strict";
import { startBroker } from "./kafka/broker.ts";
import { consumeAll } from "./kafka/consume.ts";
import { faultConfig, waitForBreaker, walDrained, withServiceLog } from "./support/fault.ts";
import { assertAllDelivered, type LoadResult, postRange, tally } from "./support/load.ts";
import { type Service, startService } from "./support/service.ts";
import { tempDir } from "./support/temp_dir.ts";
import { canMount, fillUp, mountTmpfs } from "./support/tmpfs.ts";
import { waitFor } from "./support/wait.ts";

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
