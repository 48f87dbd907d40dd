/**
 * What `producer.wal.preserve_order: key` costs, none against key alternated in one run:
 *
 * - start-up: opening a WAL directory holding RECORDS pending records (100-byte values over 200 keys), with and
 *   without the count per order group that key order makes recovery take;
 * - replay: the same backlog (RECORDS records over KEYS keys, in memory) replayed through the facade into
 *   librdkafka's mock cluster, with none (up to 10,000 in flight) and key (one per key in flight); records/s.
 *
 * Run: deno run --allow-all bench/key_order.ts [records, default 100000] [rounds, default 3] [keys, default 200]
 */
import { orderGroupOf } from "../src/producer/key_order.ts";
import { RateLimiter } from "../src/producer/rate_limiter.ts";
import { Replayer } from "../src/producer/replay.ts";
import { openWal } from "../src/wal/wal.ts";
import { facadeRig } from "../tests/support/facade_rig.ts";
import { tempDir } from "../tests/support/temp_dir.ts";
import { waitFor } from "../tests/support/wait.ts";

const RECORDS = Number(Deno.args[0] ?? 100_000);
const ROUNDS = Number(Deno.args[1] ?? 3);
const KEYS = Number(Deno.args[2] ?? 200);
const VALUE = crypto.getRandomValues(new Uint8Array(100));
const encoder = new TextEncoder();

function backlog(n: number) {
  return Array.from(
    { length: n },
    (_, i) => ({ topic: "bench", key: encoder.encode(`k${i % KEYS}`), value: VALUE }),
  );
}

/** Milliseconds to open the WAL at `path`, counting groups or not. */
async function openMs(path: string, tagged: boolean): Promise<number> {
  const started = performance.now();
  const wal = await openWal({
    path,
    inMemory: false,
    maxBytes: 1 << 30,
    tagOf: tagged ? orderGroupOf : undefined,
  });
  const ms = performance.now() - started;
  if (tagged && wal.recoveredTags().size !== KEYS) throw new Error("recovery did not count every group");
  await wal.close();
  return ms;
}

/** Records/s replaying the backlog through the facade into the mock cluster. */
async function replayRate(order: boolean): Promise<number> {
  await using rig = await facadeRig({ order });
  const { wal } = rig;
  wal.appendMany(backlog(RECORDS));
  await wal.sync();
  const limiter = new RateLimiter(10_000_000);
  const replayer = new Replayer({
    wal,
    gate: rig.breaker,
    limiter,
    send: (record) => rig.facade.replay(record.id, record),
    periodMs: 60_000,
    groupOf: order ? orderGroupOf : undefined,
  });
  const started = performance.now();
  replayer.start();
  await waitFor("the backlog to be replayed", () => wal.stats().records === 0, 120_000, 5);
  const seconds = (performance.now() - started) / 1000;
  await replayer.stop();
  limiter.close();
  return RECORDS / seconds;
}

const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];
const load = () => Deno.readTextFileSync("/proc/loadavg").split(" ").slice(0, 3).join(" ");

await using dir = await tempDir("ka-bench-order-");
{
  const wal = await openWal({ path: dir.path, inMemory: false, maxBytes: 1 << 30 });
  wal.appendMany(backlog(RECORDS));
  await wal.close();
}
const open = { none: [] as number[], key: [] as number[] };
const replay = { none: [] as number[], key: [] as number[] };
for (let r = 0; r < ROUNDS; r++) {
  open.none.push(await openMs(dir.path, false));
  open.key.push(await openMs(dir.path, true));
  replay.none.push(await replayRate(false));
  replay.key.push(await replayRate(true));
  console.error(
    `round ${r + 1}: open none ${open.none[r].toFixed(0)} ms, key ${open.key[r].toFixed(0)} ms; ` +
      `replay none ${replay.none[r].toFixed(0)}/s, key ${replay.key[r].toFixed(0)}/s; load ${load()}`,
  );
}
console.log(
  `${RECORDS} pending records, ${KEYS} keys, median of ${ROUNDS}: ` +
    `open ${median(open.none).toFixed(0)} ms (none) vs ${median(open.key).toFixed(0)} ms (key); ` +
    `replay ${median(replay.none).toFixed(0)} records/s (none) vs ${
      median(replay.key).toFixed(0)
    } records/s (key); ` +
    `load ${load()}`,
);
