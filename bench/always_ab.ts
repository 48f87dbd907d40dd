/**
 * The JS thread's cost of an `always`-mode record without HTTP: the facade of a git revision against this
 * worktree's, alternating in one run, each round a fresh process. CLIENTS loops in the process each call
 * `produce(100-byte record, "none")` and call again once answered (the record fdatasynced in the WAL), for SECONDS,
 * WAL on disk in a temp dir, Kafka is librdkafka's mock cluster; then the round waits for every delivery. Prints per
 * round records/s, the JS thread's user and system µs per record (`/proc/thread-self/stat`, load and delivery
 * included), the whole process's µs per record, and records per group commit; then medians.
 *
 * Run: deno run -A bench/always_ab.ts REVISION [--rounds 3] [--seconds 4] [--clients 64]
 */
import { runCommand } from "../tests/kafka/command.ts";

const ROOT = new URL("..", import.meta.url).pathname;
const DENO = Deno.env.get("KA_DENO") ?? Deno.execPath();

function flag(name: string, fallback: string): string {
  const i = Deno.args.indexOf(`--${name}`);
  return i < 0 ? fallback : Deno.args[i + 1];
}

const SECONDS = Number(flag("seconds", "4"));
const CLIENTS = Number(flag("clients", "64"));

interface Figures {
  rate: number;
  jsUserUs: number;
  jsSysUs: number;
  processUs: number;
  perCommit: number;
}

/** utime and stime in µs of the calling thread (`self`) or of the process. */
function cpuUs(of: "thread-self" | "self"): [number, number] {
  const stat = Deno.readTextFileSync(`/proc/${of}/stat`);
  const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
  return [Number(fields[11]) * 1e4, Number(fields[12]) * 1e4]; // CLK_TCK is 100 here
}

/** One round in this process, with the sources of the tree at `tree`. */
async function child(tree: string): Promise<Figures> {
  const { defaultConfig } = await import(`${tree}/src/config.ts`);
  const { KafkaProducer } = await import(`${tree}/src/kafka/producer.ts`);
  const { Breaker } = await import(`${tree}/src/producer/breaker.ts`);
  const { Facade } = await import(`${tree}/src/producer/facade.ts`);
  const { openWal } = await import(`${tree}/src/wal/wal.ts`);
  const metrics = await import(`${tree}/src/metrics.ts`);
  const dir = await Deno.makeTempDir({ prefix: "ka-always-ab-" });
  try {
    const config = defaultConfig();
    config.producer.wal = { ...config.producer.wal, mode: "always", path: `${dir}/wal` };
    config.kafka = { "test.mock.num.brokers": "1", "linger.ms": "5", "batch.num.messages": "10000" };
    const wal = await openWal({ path: `${dir}/wal`, maxBytes: config.producer.wal.maxBytes });
    const breaker = new Breaker({ fails: 5, requests: 3, timeoutMs: 60_000, intervalMs: 0 });
    const producer = KafkaProducer.open({ id: "always-ab", config: config.kafka });
    const facade = new Facade({ config, wal, breaker, producer });
    const value = crypto.getRandomValues(new Uint8Array(100));
    await facade.produce({ topic: "bench", value }, "kafka"); // topic and connection ready
    const fsyncs = async () => (await metrics.walFsyncs.get()).values[0]?.value ?? 0;
    const fsyncsBefore = await fsyncs();
    const [user0, sys0] = cpuUs("thread-self");
    const [puser0, psys0] = cpuUs("self");
    const end = performance.now() + SECONDS * 1000;
    let answered = 0;
    const client = async () => {
      while (performance.now() < end) {
        await facade.produce({ topic: "bench", value }, "none");
        answered++;
      }
    };
    await Promise.all(Array.from({ length: CLIENTS }, client));
    if (!await producer.flush(60_000)) throw new Error("not everything was delivered");
    await new Promise((resolve) => setTimeout(resolve, 50)); // the acks' commit
    const [user1, sys1] = cpuUs("thread-self");
    const [puser1, psys1] = cpuUs("self");
    const commits = await fsyncs() - fsyncsBefore;
    await producer.close(5_000);
    await facade.settle();
    await wal.close();
    breaker.close();
    return {
      rate: answered / SECONDS,
      jsUserUs: (user1 - user0) / answered,
      jsSysUs: (sys1 - sys0) / answered,
      processUs: (puser1 + psys1 - puser0 - psys0) / answered,
      perCommit: answered / commits,
    };
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
}

async function round(tree: string): Promise<Figures> {
  const args = ["run", "-A", `--config=${ROOT}deno.json`, `${ROOT}bench/always_ab.ts`, "--child", tree];
  args.push("--seconds", String(SECONDS), "--clients", String(CLIENTS));
  const r = await runCommand(DENO, args, { timeoutMs: SECONDS * 1000 + 120_000 });
  if (r.code !== 0) throw new Error(`round on ${tree}: exit ${r.code}: ${r.stderr.trim().slice(-500)}`);
  const lines = new TextDecoder().decode(r.stdout).trim().split("\n");
  return JSON.parse(lines[lines.length - 1]);
}

if (Deno.args.includes("--child")) {
  console.log(JSON.stringify(await child(flag("child", ROOT))));
  Deno.exit(0);
}

const REVISION = Deno.args[0];
const ROUNDS = Number(flag("rounds", "3"));
if (REVISION === undefined || REVISION.startsWith("--") || !(ROUNDS >= 1) || !(SECONDS > 0)) {
  console.error("usage: bench/always_ab.ts REVISION [--rounds N] [--seconds N] [--clients N]");
  Deno.exit(2);
}
const before = await Deno.makeTempDir({ prefix: "ka-always-ab-rev-" });
try {
  const archive = await runCommand("bash", [
    "-c",
    `git -C "$0" archive "$1" src deno.json | tar -x -C "$2"`,
    ROOT,
    REVISION,
    before,
  ], { timeoutMs: 60_000 });
  if (archive.code !== 0) throw new Error(`git archive ${REVISION}: ${archive.stderr}`);
  const loadavg = () => Deno.readTextFileSync("/proc/loadavg").split(" ").slice(0, 3).join(" ");
  console.log(`${CLIENTS} clients, ${SECONDS} s per round, load average before: ${loadavg()}`);
  const sides: Array<[string, string]> = [[REVISION, before], ["worktree", ROOT.replace(/\/$/, "")]];
  const all: Record<string, Figures[]> = { [REVISION]: [], worktree: [] };
  for (let i = 0; i < ROUNDS; i++) {
    for (const [name, tree] of sides) {
      const f = await round(tree);
      all[name].push(f);
      console.log(
        `round ${i + 1} ${name}: ${f.rate.toFixed(0)} rec/s, JS thread ${f.jsUserUs.toFixed(1)} + ` +
          `${f.jsSysUs.toFixed(1)} µs/rec (user + system), process ${f.processUs.toFixed(1)} µs/rec, ` +
          `${f.perCommit.toFixed(1)} rec/commit (load average ${loadavg()})`,
      );
    }
  }
  const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];
  for (const [name, fs] of Object.entries(all)) {
    console.log(
      `median ${name}: ${median(fs.map((f) => f.rate)).toFixed(0)} rec/s, JS thread ` +
        `${median(fs.map((f) => f.jsUserUs + f.jsSysUs)).toFixed(1)} µs/rec, process ` +
        `${median(fs.map((f) => f.processUs)).toFixed(1)} µs/rec`,
    );
  }
  console.log(`load average after: ${loadavg()}`);
} finally {
  await Deno.remove(before, { recursive: true });
}
