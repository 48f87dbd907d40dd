/**
 * WAL throughput: 200k records of 100 bytes, appended in bursts of 500 (each burst one macrotask, as request
 * handlers would), on disk and in memory, with and without acking each record once it is durable.
 * Prints append calls/s (time spent inside append only), durable records/s (wall time until the last commit) and
 * group commits/s.
 *
 *   deno run --allow-all bench/wal_bench.ts [records] [dir]
 */
import * as metrics from "../src/metrics.ts";
import { openWal } from "../src/wal/wal.ts";

const RECORDS = Number(Deno.args[0] ?? 200_000);
const BASE_DIR = Deno.args[1];
const BURST = 500;
const VALUE = crypto.getRandomValues(new Uint8Array(100));

interface Row {
  variant: string;
  acks: string;
  appendsPerSec: number;
  durablePerSec: number;
  commits: number;
  commitsPerSec: number;
}

async function counterValue(): Promise<number> {
  return (await metrics.walFsyncs.get()).values[0]?.value ?? 0;
}

async function run(inMemory: boolean, ack: boolean): Promise<Row> {
  const dir = await Deno.makeTempDir({ dir: BASE_DIR, prefix: "wal_bench_" });
  const wal = await openWal({ path: `${dir}/wal`, inMemory, maxBytes: 1 << 30 });
  let commits = 0;
  let lastDurable: Promise<void> = Promise.resolve();
  const countCommit = () => commits++;
  const fsyncsBefore = await counterValue();
  let appendMs = 0;
  const started = performance.now();
  for (let sent = 0; sent < RECORDS;) {
    const t = performance.now();
    let previous: Promise<void> | null = null;
    const ids: number[] = [];
    for (const end = Math.min(sent + BURST, RECORDS); sent < end; sent++) {
      const { id, durable } = wal.append({ topic: "bench", value: VALUE });
      ids.push(id);
      // Records of one commit share a promise: count each promise once.
      if (durable !== previous) durable.then(countCommit);
      previous = durable;
      lastDurable = durable;
    }
    appendMs += performance.now() - t;
    if (ack) lastDurable.then(() => ids.forEach((id) => wal.ack(id)));
    await new Promise((resolve) => setTimeout(resolve, 0));
  }
  await lastDurable;
  const wallMs = performance.now() - started;
  await wal.close();
  const fsyncs = (await counterValue()) - fsyncsBefore;
  await Deno.remove(dir, { recursive: true });
  return {
    variant: inMemory ? "memory" : "file",
    acks: ack ? "ack" : "no ack",
    appendsPerSec: Math.round(RECORDS / (appendMs / 1000)),
    durablePerSec: Math.round(RECORDS / (wallMs / 1000)),
    commits: inMemory ? commits : fsyncs,
    commitsPerSec: Math.round((inMemory ? commits : fsyncs) / (wallMs / 1000)),
  };
}

const rows: Row[] = [];
for (const inMemory of [false, true]) {
  for (const ack of [false, true]) rows.push(await run(inMemory, ack));
}
console.log(`${RECORDS} records of ${VALUE.length} bytes, bursts of ${BURST}`);
console.log("variant | acks   | appends/s  | durable records/s | commits | commits/s");
for (const r of rows) {
  console.log(
    `${r.variant.padEnd(7)} | ${r.acks.padEnd(6)} | ${String(r.appendsPerSec).padStart(10)} | ` +
      `${String(r.durablePerSec).padStart(17)} | ${String(r.commits).padStart(7)} | ${r.commitsPerSec}`,
  );
}
