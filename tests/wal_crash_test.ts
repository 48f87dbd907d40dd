/**
 * Crash consistency of the WAL on disk: a workload runs the real FileStorage over a recording file system
 * (tests/support/crash_storage.ts); for every point of the recording, the disk states a crash there could leave are
 * built and the real recovery (`openWal`) runs on each. Invariants:
 *
 * - every record whose `durable` resolved and that was not acked is recovered, exactly once, with its content;
 * - no record comes back twice, or with other content, or that was never appended;
 * - a record whose ack was made durable (`sync` or `close` returned after the ack) never comes back;
 * - recovery never throws and converges: opening the recovered directory again finds the same records;
 * - ids are never reused: the first id after recovery is above every id made durable before the crash.
 *
 * `KA_CRASH_STATES` sets how many (crash point, disk state) pairs each workload may explore (default 3000; seed by
 * `KA_CRASH_SEED`).
 */
import assert from "node:assert/strict";
import type { Message } from "../src/message.ts";
import { openWal, type Wal, type WalRecord } from "../src/wal/wal.ts";
import type { WalFs } from "../src/wal/fs.ts";
import { FileStorage } from "../src/wal/file_storage.ts";
import { SegmentedWal } from "../src/wal/segmented_wal.ts";
import { waitFor } from "./support/wait.ts";
import {
  CrashDisk,
  crashStates,
  type DiskState,
  type FsOp,
  prng,
  stateKey,
} from "./support/crash_storage.ts";

const DIR = "/crash/wal";
const STATES = Number(Deno.env.get("KA_CRASH_STATES") ?? 3000);
const SEED = Number(Deno.env.get("KA_CRASH_SEED") ?? 1);
const enc = new TextEncoder();
const dec = new TextDecoder();

function open(fs: WalFs): Promise<Wal> {
  // Small segments: the workload rolls and deletes several.
  return openWal({ path: DIR, inMemory: false, maxBytes: 1 << 20, segmentBytes: 400, commitDelayMs: 0, fs });
}

function msg(value: string): Message {
  return { topic: "t", value: enc.encode(value) };
}

async function checkoutAll(wal: Wal): Promise<WalRecord[]> {
  const all: WalRecord[] = [];
  for (let got = await wal.checkout(100); got.length > 0; got = await wal.checkout(100)) all.push(...got);
  return all;
}

/** What the workload knows of one record, as positions in the recording (`ops.length` at the time). */
interface Life {
  value: string;
  /** `durable` had resolved once this many operations were recorded. */
  durableAt?: number;
  /** ack() was called when this many operations were recorded: a crash after that may have kept the ack. */
  ackedAt?: number;
  /** A sync or close called after the ack had returned. */
  ackSyncedAt?: number;
}

/** Appends and acks records, noting in `lives` when each became durable, acked, and its ack synced. */
class Tracker {
  readonly lives = new Map<number, Life>();
  readonly #disk: CrashDisk;
  #n = 0;

  constructor(disk: CrashDisk) {
    this.#disk = disk;
  }

  get #at(): number {
    return this.#disk.ops.length;
  }

  /** Appends `count` records in one call; resolves true once durable, false if that write failed. */
  append(wal: Wal, count = 1): Promise<boolean> {
    const values = Array.from({ length: count }, () => `record ${++this.#n}`);
    const { ids, durable } = count === 1
      ? (({ id, durable }) => ({ ids: [id], durable }))(wal.append(msg(values[0])))
      : wal.appendMany(values.map(msg));
    const batch = ids.map((id, i) => {
      const life: Life = { value: values[i] };
      this.lives.set(id as number, life);
      return life;
    });
    return durable.then(() => {
      for (const life of batch) life.durableAt = this.#at;
      return true;
    }, () => false);
  }

  ack(wal: Wal, id: number): void {
    wal.ack(id);
    this.lives.get(id)!.ackedAt ??= this.#at;
  }

  /** Awaits a sync or close; the acks made before it are synced from the end of its ack-list syncs on. */
  async synced(done: Promise<void>): Promise<void> {
    const acked = [...this.lives.values()].filter((l) =>
      l.ackedAt !== undefined && l.ackSyncedAt === undefined
    );
    const start = this.#at;
    await done;
    const at = ackListsSyncedAt(this.#disk.ops, start, this.#at);
    for (const life of acked) life.ackSyncedAt = at;
  }

  /** Records written by other means than their own `durable` (held ones, written again): durable from now on. */
  nowDurable(): void {
    for (const life of this.lives.values()) if (life.ackedAt === undefined) life.durableAt ??= this.#at;
  }
}

/**
 * Appends, acks, rolls, deletes segments, syncs, is killed with acks unsynced, restarts, drains and closes; starts
 * again on a directory where everything is acked.
 */
async function workload(disk: CrashDisk): Promise<Map<number, Life>> {
  const t = new Tracker(disk);
  const first = await open(disk.process());
  for (let i = 0; i < 3; i++) await t.append(first);
  await t.append(first, 4);
  for (const id of [1, 2, 3]) t.ack(first, id);
  await t.synced(first.sync());
  // One group commit of several appends, two of them acked before their line is written.
  const group = Array.from({ length: 6 }, () => t.append(first));
  t.ack(first, 9);
  t.ack(first, 10);
  await Promise.all(group);
  for (const id of [4, 5, 6, 7]) t.ack(first, id);
  await t.synced(first.sync());
  await t.append(first);
  t.ack(first, 8);
  await t.append(first);
  // Killed with acks written but not synced.
  disk.kill();
  await first.close().catch(() => {});

  const second = await open(disk.process());
  const back = await checkoutAll(second);
  for (const r of back.slice(0, back.length >> 1)) t.ack(second, r.id);
  for (let i = 0; i < 3; i++) await t.append(second);
  await t.synced(second.sync());
  for (const r of back.slice(back.length >> 1)) t.ack(second, r.id);
  for (const r of await checkoutAll(second)) t.ack(second, r.id);
  await t.synced(second.close());

  // Every record is acked: the next start deletes every segment, saving next-id first (nothing else on disk
  // would tell recovery which ids were used).
  const third = await open(disk.process());
  await t.append(third);
  await t.synced(third.close());
  return t.lives;
}

/**
 * A batch larger than a segment (several segments in one commit), checkouts released and acked while commits
 * run, a kill in the middle of a commit (the page cache keeps what was written), a restart that drains all.
 */
async function batchesAndRaces(disk: CrashDisk): Promise<Map<number, Life>> {
  const t = new Tracker(disk);
  const first = await open(disk.process());
  await t.append(first, 12);
  const out = await first.checkout(5);
  first.release(out[0].id);
  first.release(out[1].id);
  const batch = t.append(first, 3);
  for (const r of out.slice(2)) t.ack(first, r.id);
  await batch;
  await t.synced(first.sync());
  for (const r of await first.checkout(4)) t.ack(first, r.id);
  // Killed while this commit is under way: some of its lines are written, none synced.
  void t.append(first, 6);
  await Promise.resolve();
  disk.kill();
  await first.close().catch(() => {});

  const second = await open(disk.process());
  for (const r of await checkoutAll(second)) t.ack(second, r.id);
  await t.append(second, 2);
  await t.synced(second.close());
  return t.lives;
}

/**
 * next-id cannot be saved (no inode left for its name) when a restart has every segment acked: the
 * newest segment stays to tell recovery the ids, the others go; it goes once a newer segment holds a record.
 */
async function nextIdUnsaved(disk: CrashDisk): Promise<Map<number, Life>> {
  const t = new Tracker(disk);
  const first = await open(disk.process());
  await t.append(first, 10);
  await first.close();

  disk.failNextCreate((name) => name.startsWith("next-id."));
  const second = await open(disk.process());
  for (const r of await checkoutAll(second)) t.ack(second, r.id);
  await t.synced(second.sync());
  assert.ok(await t.append(second));
  await t.synced(second.sync());
  await t.synced(second.close());
  return t.lives;
}

/**
 * An fdatasync of a segment fails: that batch is not durable (its appenders hear so; one retracts its record as
 * the facade does after a 503), the records wait in memory, then go to a fresh segment; the WAL goes on.
 */
async function fsyncFailure(disk: CrashDisk): Promise<Map<number, Life>> {
  const t = new Tracker(disk);
  const { storage, recovered } = await FileStorage.open(DIR, disk.process());
  const wal = await SegmentedWal.open(storage, recovered, {
    maxBytes: 1 << 20,
    segmentBytes: 400,
    commitDelayMs: 0,
    retryMinMs: 1,
    retryMaxMs: 4,
  });
  assert.ok(await t.append(wal));
  assert.ok(await t.append(wal));
  disk.failNextSync((name) => name.endsWith(".wal"));
  const failed = [t.append(wal), t.append(wal), t.append(wal)];
  const meanwhile = t.append(wal);
  assert.deepEqual(await Promise.all([...failed, meanwhile]), [false, false, false, false]);
  assert.equal(wal.writable, false);
  t.ack(wal, 3);
  await waitFor("the held records to be written again", () => wal.writable, 5000, 1);
  t.nowDurable();
  assert.ok(await t.append(wal, 2));
  for (const id of [1, 2, 4]) t.ack(wal, id);
  await t.synced(wal.sync());
  assert.ok(await t.append(wal));
  await t.synced(wal.close());
  return t.lives;
}

/**
 * Where a sync's ack-list part ended in ops[start, end): after its last fdatasync of an ack list or directory
 * fsync that comes before the next-id save of the deletions that follow (the commit syncs acks, then deletes).
 */
function ackListsSyncedAt(ops: readonly FsOp[], start: number, end: number): number {
  const ackLists = new Set<number>();
  for (const op of ops) if (op.kind === "create" && op.name.endsWith(".acks")) ackLists.add(op.ino);
  let at = end;
  for (let i = start; i < end; i++) {
    const op = ops[i];
    if (op.kind === "create" && op.name === "next-id.tmp") break;
    if ((op.kind === "fsync" && ackLists.has(op.ino)) || op.kind === "syncdir") at = i + 1;
  }
  return at;
}

/**
 * A directory left damaged: segment 1 holds a line with a bad checksum (record 2) and ends in a torn line,
 * segment 2 is whole. Records 1 and 3 to 6 are durable from the start.
 */
async function damagedDirectory(): Promise<{ base: DiskState; durable: Map<number, string> }> {
  const disk = new CrashDisk(DIR);
  const wal = await open(disk.process());
  const durable = new Map<number, string>();
  for (let i = 1; i <= 6; i++) {
    const { id, durable: written } = wal.append(msg(`record ${i}`));
    await written;
    if (i !== 2) durable.set(id, `record ${i}`);
  }
  await wal.close();
  const base = disk.snapshot();
  const first = base.get("00000001.wal")!;
  const lines = first.reduce((n, b) => n + (b === 0x0a ? 1 : 0), 0);
  assert.ok(lines >= 3, `segment 1 holds ${lines} lines`);
  const damaged = first.slice();
  // A byte of record 2's value flipped; then half a line, as a write cut by a power loss leaves.
  const second = damaged.indexOf(0x0a) + 1;
  damaged[damaged.indexOf(0x0a, second) - 20] ^= 0x01;
  const torn = enc.encode('{"id":99,"writtenAt":1,"topic":"t","val');
  const out = new Uint8Array(damaged.length + torn.length);
  out.set(damaged);
  out.set(torn, damaged.length);
  base.set("00000001.wal", out);
  return { base, durable };
}

/** Recovery of a damaged directory, then everything acked: the damaged segment is set aside, the rest deleted. */
function damagedThenDrained(durable: Map<number, string>): (disk: CrashDisk) => Promise<Map<number, Life>> {
  return async (disk) => {
    const t = new Tracker(disk);
    for (const [id, value] of durable) t.lives.set(id, { value, durableAt: 0 });
    const wal = await open(disk.process());
    assert.equal(wal.stats().corrupt, 1);
    const back = await checkoutAll(wal);
    assert.deepEqual(back.map((r) => r.id), [...durable.keys()]);
    await t.append(wal, 2);
    for (const r of back) t.ack(wal, r.id);
    await t.synced(wal.sync());
    await t.append(wal);
    await t.synced(wal.close());
    return t.lives;
  };
}

interface Recovery {
  /** id -> value of every record recovered. */
  records: Map<number, string>;
  duplicates: number[];
  /** The id of a record appended right after recovery. */
  nextId: number;
  /** The records found by a second recovery of the same directory, after that append. */
  again: Map<number, string>;
}

async function recover(state: DiskState): Promise<Recovery> {
  const disk = new CrashDisk(DIR, state);
  const wal = await open(disk.process());
  const records = new Map<number, string>();
  const duplicates: number[] = [];
  for (const r of await checkoutAll(wal)) {
    if (records.has(r.id)) duplicates.push(r.id);
    records.set(r.id, dec.decode(r.value));
  }
  const { id: nextId, durable } = wal.append(msg("after recovery"));
  await durable;
  await wal.close();
  const reopened = await open(disk.process());
  const again = new Map((await checkoutAll(reopened)).map((r) => [r.id, dec.decode(r.value)]));
  await reopened.close();
  return { records, duplicates, nextId, again };
}

/** The invariants broken by recovering `got` after a crash at point `k`; empty when none. */
function violations(lives: Map<number, Life>, k: number, got: Recovery): string[] {
  const out: string[] = [];
  for (const id of got.duplicates) out.push(`record ${id} recovered twice`);
  let maxDurable = 0;
  for (const [id, life] of lives) {
    const durable = life.durableAt !== undefined && life.durableAt <= k;
    if (durable) maxDurable = Math.max(maxDurable, id);
    const acked = life.ackedAt !== undefined && life.ackedAt < k;
    const ackSynced = life.ackSyncedAt !== undefined && life.ackSyncedAt <= k;
    const value = got.records.get(id);
    if (durable && !acked && value === undefined) out.push(`durable record ${id} lost`);
    if (ackSynced && value !== undefined) out.push(`record ${id} came back after its ack was synced`);
    if (value !== undefined && value !== life.value) {
      out.push(`record ${id} came back as ${JSON.stringify(value)}`);
    }
  }
  for (const id of got.records.keys()) if (!lives.has(id)) out.push(`record ${id} was never appended`);
  const maxFound = Math.max(0, ...got.records.keys());
  if (got.nextId <= Math.max(maxDurable, maxFound)) {
    out.push(`id ${got.nextId} reused (durable up to ${maxDurable}, found up to ${maxFound})`);
  }
  const expected = new Map(got.records).set(got.nextId, "after recovery");
  if (stateKeyOfRecords(got.again) !== stateKeyOfRecords(expected)) {
    out.push(`a second recovery found ${[...got.again.keys()]} instead of ${[...expected.keys()]}`);
  }
  return out;
}

function stateKeyOfRecords(records: Map<number, string>): string {
  return [...records].sort(([a], [b]) => a - b).map(([id, v]) => `${id}=${v}`).join(",");
}

function describe(state: DiskState): string {
  return [...state].map(([name, data]) => `${name}(${data.length})`).join(" ");
}

/** Runs `work` on a fresh recording disk, then recovers every crash state of the recording and checks each. */
async function explore(
  name: string,
  work: (disk: CrashDisk) => Promise<Map<number, Life>>,
  base?: DiskState,
): Promise<CrashDisk> {
  const disk = new CrashDisk(DIR, base);
  // Killed-process errors and recovery warnings by the thousand: counted, not printed.
  const printed = console.error;
  let logLines = 0;
  console.error = () => logLines++;
  const failures: string[] = [];
  let pairs = 0;
  const cache = new Map<string, Recovery | Error>();
  let lives: Map<number, Life>;
  try {
    lives = await work(disk);
    const random = prng(SEED);
    const points = disk.ops.length + 1;
    for (let k = 0; k < points; k++) {
      // The budget is spread over the crash points; early points have few states and leave theirs to later ones.
      const max = Math.max(1, Math.ceil((STATES - pairs) / (points - k)));
      for (const { label, state } of crashStates(disk.ops, k, max, random, base)) {
        pairs++;
        const key = stateKey(state);
        let got = cache.get(key);
        if (got === undefined) {
          got = await recover(state).catch((err: Error) => err);
          cache.set(key, got);
        }
        const broken = got instanceof Error ? [`recovery threw: ${got.message}`] : violations(lives, k, got);
        for (const b of broken) failures.push(`crash before op ${k} (${label}; ${describe(state)}): ${b}`);
      }
    }
  } finally {
    console.error = printed;
  }
  const durable = [...lives.values()].filter((l) => l.durableAt !== undefined).length;
  console.log(
    `wal crash model, ${name}: ${disk.ops.length} file-system operations, ${lives.size} records ` +
      `(${durable} durable), ${pairs} (crash point, disk state) pairs, ${cache.size} distinct disk states ` +
      `recovered, ${logLines} log lines, ${failures.length} violations`,
  );
  const kinds = new Map<string, number>();
  for (const f of failures) {
    const kind = f.slice(f.lastIndexOf("): ") + 3).replace(/\d+/g, "N");
    kinds.set(kind, (kinds.get(kind) ?? 0) + 1);
  }
  for (const [kind, count] of kinds) console.log(`  ${count} x ${kind}`);
  for (const f of failures.slice(0, 5)) console.log(`  ${f}`);
  assert.equal(failures.length, 0, `${failures.length} invariant violations, first: ${failures[0]}`);
  // The model must have explored something worth the name.
  assert.ok(pairs >= Math.min(STATES, 100), `only ${pairs} pairs explored`);
  return disk;
}

Deno.test("wal crash: every state a crash can leave recovers every durable record once, and no synced ack", async () => {
  const disk = await explore("appends, acks, rolls, deletes, kill, restart", workload);
  // Crashes with next-id saves and deletes pending were among those explored.
  assert.ok(disk.ops.some((op) => op.kind === "create" && op.name.startsWith("next-id.")));
  assert.ok(disk.ops.some((op) => op.kind === "unlink" && op.name.endsWith(".wal")));
});

Deno.test("wal crash: batches over several segments, racing acks and a kill mid-commit lose nothing", async () => {
  await explore("batches, racing acks, kill mid-commit", batchesAndRaces);
});

Deno.test("wal crash: when next-id cannot be saved, the newest acked segment stays until a newer one holds ids", async () => {
  const disk = await explore("next-id cannot be saved", nextIdUnsaved);
  const unlinked = disk.ops.flatMap((op) =>
    op.kind === "unlink" && op.name.endsWith(".wal") ? [op.name] : []
  );
  assert.deepEqual(unlinked, ["00000001.wal", "00000002.wal", "00000003.wal"]);
  // The failed save is tried again before the kept segment goes, and made then.
  const unlinkAt = (name: string) => disk.ops.findIndex((op) => op.kind === "unlink" && op.name === name);
  const savedAt = disk.ops.findIndex((op) => op.kind === "create" && op.name.startsWith("next-id."));
  assert.ok(
    savedAt > unlinkAt("00000002.wal") && savedAt < unlinkAt("00000003.wal"),
    `next-id saved at op ${savedAt}, segments 2 and 3 unlinked at ${unlinkAt("00000002.wal")} and ${
      unlinkAt("00000003.wal")
    }`,
  );
});

Deno.test("wal crash: a failed fdatasync is fail-stop: the segment is cut back for good and never written again", async () => {
  const disk = await explore("a failed fdatasync", fsyncFailure);
  const failedAt = disk.ops.findIndex((op) => op.kind === "fsyncfail");
  assert.ok(failedAt >= 0);
  const failed = (disk.ops[failedAt] as { ino: number }).ino;
  const later = disk.ops.slice(failedAt + 1).filter((op) => "ino" in op && op.ino === failed).map((op) =>
    op.kind
  );
  // Cut back to what was synced before the failure, that cut made durable, and nothing more.
  assert.deepEqual(later, ["truncate", "fsync"]);
});

Deno.test("wal crash: recovering a damaged directory and draining it is crash-safe at every step", async () => {
  const { base, durable } = await damagedDirectory();
  const disk = await explore("a damaged directory recovered and drained", damagedThenDrained(durable), base);
  // The damaged segment was set aside rather than deleted.
  assert.ok(disk.ops.some((op) => op.kind === "rename" && op.to === "00000001.corrupt"));
});
