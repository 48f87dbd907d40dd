/**
 * What the disk under a WAL directory costs per group commit, without the WAL: appends of one commit's lines
 * (BYTES, default 5,400: 30 lines of a 100-byte record) each followed by an fdatasync, for SECONDS each way:
 * - one after another with Deno's async file ops (as the WAL commits: a write, then an fdatasync);
 * - the same with the blocking calls (writeSync, syncDataSync), which the event loop cannot afford, to show
 *   what the async ops add;
 * - 2 and 4 commits in flight at once (writes in order, fdatasyncs overlapping): whether overlapping commits
 *   would get more of them done per second on this disk.
 * Prints commits/s and the p50/p99 of one commit, with the load average.
 *
 *   deno run -A bench/fdatasync.ts [dir, default a temp dir under /tmp] [--bytes 5400] [--seconds 3]
 */
function flag(name: string, fallback: number): number {
  const i = Deno.args.indexOf(`--${name}`);
  return i < 0 ? fallback : Number(Deno.args[i + 1]);
}

const BYTES = flag("bytes", 5400);
const SECONDS = flag("seconds", 3);
const base = Deno.args[0] !== undefined && !Deno.args[0].startsWith("--") ? Deno.args[0] : "/tmp";
const dir = await Deno.makeTempDir({ dir: base, prefix: "ka-fdatasync-" });
const data = new Uint8Array(BYTES).fill(0x61);

function report(name: string, latencies: number[]): void {
  latencies.sort((a, b) => a - b);
  const at = (q: number) => latencies[Math.min(latencies.length - 1, Math.floor(latencies.length * q))];
  const loadavg = Deno.readTextFileSync("/proc/loadavg").split(" ").slice(0, 3).join(" ");
  console.log(
    `${name}: ${(latencies.length / SECONDS).toFixed(0)} commits/s, p50 ${at(0.5).toFixed(2)} ms, ` +
      `p99 ${at(0.99).toFixed(2)} ms (load average ${loadavg})`,
  );
}

async function inFlight(file: Deno.FsFile, depth: number): Promise<number[]> {
  const latencies: number[] = [];
  const end = performance.now() + SECONDS * 1000;
  let written: Promise<unknown> = Promise.resolve();
  const committer = async () => {
    while (performance.now() < end) {
      const started = performance.now();
      // Appends stay in order, as a segment's lines must; only the fdatasyncs overlap.
      const write = written.then(() => file.write(data));
      written = write;
      await write;
      await file.syncData();
      latencies.push(performance.now() - started);
    }
  };
  await Promise.all(Array.from({ length: depth }, committer));
  return latencies;
}

function blocking(file: Deno.FsFile): number[] {
  const latencies: number[] = [];
  const end = performance.now() + SECONDS * 1000;
  while (performance.now() < end) {
    const started = performance.now();
    file.writeSync(data);
    file.syncDataSync();
    latencies.push(performance.now() - started);
  }
  return latencies;
}

try {
  using file = await Deno.open(`${dir}/segment`, { create: true, write: true, append: true });
  console.log(`${BYTES} bytes per commit, ${SECONDS} s each, in ${dir}`);
  report("async write + fdatasync, one at a time", await inFlight(file, 1));
  report("blocking write + fdatasync, one at a time", blocking(file));
  report("async, 2 commits in flight", await inFlight(file, 2));
  report("async, 4 commits in flight", await inFlight(file, 4));
} finally {
  await Deno.remove(dir, { recursive: true });
}
