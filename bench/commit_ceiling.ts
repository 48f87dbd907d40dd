/**
 * The ceiling of `producer.wal.mode: always` on this machine, without the service: a bare `Deno.serve` that reads
 * each 100-byte POST and answers 200, either at once (`now`) or once a group commit holding its bytes is on disk,
 * alternated in one run under the load of service_ab.ts (wrk -t1 -c64, bench/post.lua). The group commit is the
 * WAL's: appends of one synchronous run go together, one commit at a time, the appends made during a commit go
 * to the next; a commit is a blocking write and an async fdatasync. Two files:
 * - `append`: the file grows with each commit, as a WAL segment does;
 * - `prealloc`: the commits overwrite a file zero-filled and synced beforehand (what a preallocated segment would
 *   do), so that an fdatasync has no file size to journal.
 * Prints requests/s, CPU µs per request of the server's JS thread and of the whole process, commits/s and
 * requests per commit, with the load average.
 *
 *   deno run -A bench/commit_ceiling.ts [--rounds 2] [--seconds 5]
 */
import { runCommand } from "../tests/kafka/command.ts";
import { freePort } from "../tests/support/service.ts";
import { listening } from "../tests/support/wait.ts";

const LINE_BYTES = 230; // a WAL line of a 100-byte value
const PREALLOCATED = 256 * 1024 * 1024;

function flag(name: string, fallback: number): number {
  const i = Deno.args.indexOf(`--${name}`);
  return i < 0 ? fallback : Number(Deno.args[i + 1]);
}

/** Child role: `--serve MODE PORT DIR`. Reports commits and records on stdout when its stdin closes. */
async function serve(mode: string, port: number, dir: string): Promise<void> {
  const file = await Deno.open(`${dir}/segment`, { create: true, read: true, write: true });
  if (mode === "prealloc") {
    const zeros = new Uint8Array(1024 * 1024);
    for (let at = 0; at < PREALLOCATED; at += zeros.length) file.writeSync(zeros);
    file.syncSync();
    file.seekSync(0, Deno.SeekMode.Start);
  }
  let waiting: Array<() => void> = [];
  let running = false;
  let commits = 0;
  let records = 0;
  const commitAll = async () => {
    running = true;
    while (waiting.length > 0) {
      const batch = waiting;
      waiting = [];
      const data = new Uint8Array(batch.length * LINE_BYTES).fill(0x61);
      for (let at = 0; at < data.length;) at += file.writeSync(data.subarray(at));
      await file.syncData();
      commits++;
      records += batch.length;
      for (const resolve of batch) resolve();
    }
    running = false;
  };
  const durable = () =>
    new Promise<void>((resolve) => {
      if (waiting.push(resolve) === 1 && !running) queueMicrotask(commitAll);
    });
  const server = Deno.serve({ port, hostname: "127.0.0.1", onListen() {} }, async (req) => {
    await req.arrayBuffer();
    if (mode !== "now") await durable();
    return new Response(null);
  });
  for await (const _ of Deno.stdin.readable) { /* until the driver closes it */ }
  console.log(JSON.stringify({ commits, records }));
  await server.shutdown();
}

/** utime + stime in clock ticks (CLK_TCK is 100 here) of a `stat` file under /proc. */
function ticks(path: string): number {
  const stat = Deno.readTextFileSync(path);
  const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
  return Number(fields[11]) + Number(fields[12]);
}

async function round(mode: string, seconds: number): Promise<string> {
  const dir = await Deno.makeTempDir({ prefix: "ka-ceiling-" });
  const port = freePort();
  const child = new Deno.Command(Deno.execPath(), {
    args: ["run", "-A", new URL(import.meta.url).pathname, "--serve", mode, String(port), dir],
    stdin: "piped",
    stdout: "piped",
  }).spawn();
  try {
    await listening(port, 120_000);
    const pid = child.pid;
    const mainBefore = ticks(`/proc/${pid}/task/${pid}/stat`);
    const allBefore = ticks(`/proc/${pid}/stat`);
    const wrk = await runCommand("wrk", [
      "-t1",
      "-c64",
      `-d${seconds}s`,
      "-s",
      new URL("post.lua", import.meta.url).pathname,
      `http://127.0.0.1:${port}/`,
    ], { timeoutMs: seconds * 1000 + 30_000 });
    const requests = Number(/(\d+) requests in/.exec(new TextDecoder().decode(wrk.stdout))?.[1] ?? NaN);
    const mainUs = (ticks(`/proc/${pid}/task/${pid}/stat`) - mainBefore) * 1e4 / requests;
    const allUs = (ticks(`/proc/${pid}/stat`) - allBefore) * 1e4 / requests;
    await child.stdin.close();
    const out = new TextDecoder().decode((await child.output()).stdout).trim();
    const { commits, records } = JSON.parse(out) as { commits: number; records: number };
    const loadavg = Deno.readTextFileSync("/proc/loadavg").split(" ").slice(0, 3).join(" ");
    const perCommit = commits > 0
      ? `, ${(commits / seconds).toFixed(0)} commits/s of ${(records / commits).toFixed(1)} requests`
      : "";
    return `${mode.padEnd(8)} ${(requests / seconds).toFixed(0)} req/s, CPU µs/req: JS thread ${
      mainUs.toFixed(1)
    }, process ${allUs.toFixed(1)}${perCommit} (load average ${loadavg})`;
  } finally {
    try {
      child.kill("SIGKILL");
    } catch {
      // exited
    }
    await Deno.remove(dir, { recursive: true });
  }
}

if (Deno.args[0] === "--serve") {
  await serve(Deno.args[1], Number(Deno.args[2]), Deno.args[3]);
} else {
  const rounds = flag("rounds", 2);
  const seconds = flag("seconds", 5);
  for (let r = 0; r < rounds; r++) {
    for (const mode of ["now", "append", "prealloc"]) console.log(await round(mode, seconds));
  }
}
