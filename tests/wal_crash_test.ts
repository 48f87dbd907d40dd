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
 * `KA_CRASH_STATES` sets how many (crash point, disk state) pairs are explored (default 3000, seed by
 * `KA_CRASH_SEED`).
 */
import assert from "node:assert/strict";
import type { Message } from "../src/message.ts";
import { openWal, type Wal, type WalRecord } from "../src/wal/wal.ts";
import type { WalFs } from "../src/wal/fs.ts";
import { CrashDisk, crashStates, type DiskState, prng, stateKey } from "./support/crash_storage.ts";

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

/** Appends, acks, rolls, deletes segments, syncs, is killed with acks unsynced, restarts, drains and closes. */
async function workload(disk: CrashDisk): Promise<Map<number, Life>> {
  const lives = new Map<number, Life>();
  const at = () => disk.ops.length;
  let n = 0;
  const append = (wal: Wal): Promise<void> => {
    const value = `record ${++n}`;
    const { id, durable } = wal.append(msg(value));
    const life: Life = { value };
    lives.set(id, life);
    return durable.then(() => {
      life.durableAt = at();
    });
  };
  const appendMany = (wal: Wal, count: number): Promise<void> => {
    const values = Array.from({ length: count }, () => `record ${++n}`);
    const { ids, durable } = wal.appendMany(values.map(msg));
    const batch = ids.map((id, i) => {
      const life: Life = { value: values[i] };
      lives.set(id as number, life);
      return life;
    });
    return durable.then(() => {
      for (const life of batch) life.durableAt = at();
    });
  };
  const ack = (wal: Wal, id: number) => {
    wal.ack(id);
    lives.get(id)!.ackedAt ??= at();
  };
  const synced = async (done: Promise<void>) => {
    const acked = [...lives.values()].filter((l) => l.ackedAt !== undefined && l.ackSyncedAt === undefined);
    await done;
    for (const life of acked) life.ackSyncedAt = at();
  };

  const first = await open(disk.process());
  for (let i = 0; i < 3; i++) await append(first);
  await appendMany(first, 4);
  for (const id of [1, 2, 3]) ack(first, id);
  await synced(first.sync());
  // One group commit of several appends, two of them acked before their line is written.
  const group = Array.from({ length: 6 }, () => append(first));
  ack(first, 9);
  ack(first, 10);
  await Promise.all(group);
  for (const id of [4, 5, 6, 7]) ack(first, id);
  await synced(first.sync());
  await append(first);
  ack(first, 8);
  await append(first);
  // Killed with acks written but not synced.
  disk.kill();
  await first.close().catch(() => {});

  const second = await open(disk.process());
  const back = await checkoutAll(second);
  for (const r of back.slice(0, back.length >> 1)) ack(second, r.id);
  for (let i = 0; i < 3; i++) await append(second);
  await synced(second.sync());
  for (const r of back.slice(back.length >> 1)) ack(second, r.id);
  for (const r of await checkoutAll(second)) ack(second, r.id);
  await synced(second.close());
  return lives;
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

Deno.test("wal crash: every state a crash can leave recovers every durable record once, and no synced ack", async () => {
  const disk = new CrashDisk(DIR);
  // Killed-process errors and recovery warnings by the thousand: counted, not printed.
  const printed = console.error;
  let logLines = 0;
  console.error = () => logLines++;
  const failures: string[] = [];
  let pairs = 0;
  const cache = new Map<string, Recovery | Error>();
  let lives: Map<number, Life>;
  try {
    lives = await workload(disk);
    const random = prng(SEED);
    const points = disk.ops.length + 1;
    for (let k = 0; k < points; k++) {
      // The budget is spread over the crash points; early points have few states and leave theirs to later ones.
      const max = Math.max(1, Math.ceil((STATES - pairs) / (points - k)));
      for (const { label, state } of crashStates(disk.ops, k, max, random)) {
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
    `wal crash model: ${disk.ops.length} file-system operations, ${lives.size} records (${durable} durable), ` +
      `${pairs} (crash point, disk state) pairs, ${cache.size} distinct disk states recovered, ` +
      `${logLines} log lines, ${failures.length} violations`,
  );
  const kinds = new Map<string, number>();
  for (const f of failures) {
    const kind = f.slice(f.lastIndexOf("): ") + 3).replace(/\d+/g, "N");
    kinds.set(kind, (kinds.get(kind) ?? 0) + 1);
  }
  for (const [kind, count] of kinds) console.log(`  ${count} x ${kind}`);
  for (const f of failures.slice(0, 5)) console.log(`  ${f}`);
  assert.equal(failures.length, 0, `${failures.length} invariant violations, first: ${failures[0]}`);
  // The model must have explored something worth the name: crashes with unsynced data, renames and deletes.
  assert.ok(pairs >= Math.min(STATES, 1000) * 0.9, `only ${pairs} pairs explored`);
  assert.ok(disk.ops.some((op) => op.kind === "unlink") && disk.ops.some((op) => op.kind === "rename"));
});
