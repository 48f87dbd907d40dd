/**
 * The whole service of a git revision against this worktree's, in one run against one real broker, alternating
 * (the first side swapped every round) so that both see the same machine: what a change costs or saves with
 * Kafka in the path. Per round and side, a fresh service gets one load for SECONDS into a new topic of 3
 * partitions, and the figures are taken once the records it acknowledged to Kafka stop moving:
 * - msg/s: records Kafka acknowledged (`kafka_client_ack_cnt`) over the load's seconds;
 * - CPU µs/msg: utime + stime of the service (all threads) over the load and the settling, per acknowledged record;
 * - peak RSS (VmHWM), and RSS sampled every second of the load (at a tenth, half and the end of it).
 * Scenarios: `http` (wrk -t1 -c64, 100-byte POSTs or KA_VALUE_BYTES from the environment, bench/post.lua; WAL
 * fallback), `always` (the same with `producer.wal.mode: always`), `batch` (bench/load http: 64 connections of
 * NDJSON batches of 1,000 records), `always-batch` (the batches with `producer.wal.mode: always`), `grpc`
 * (bench/load grpc: 4 Produce streams of 100-byte records or KA_VALUE_BYTES, 1,000 in flight each; WAL
 * fallback), and `grpc-echo` (that gRPC load on bench/grpc_echo_server.ts, no Kafka: records answered instead of
 * acknowledged, CPU per answered record).
 * librdkafka settings are those of compare.ts; `--codec` sets compression.codec (default none); `--kafka K=V`
 * sets any other librdkafka property, e.g. `--kafka queue.buffering.max.messages=30000` (repeatable). Each side
 * runs with the V8 flags of its own tree's deploy/deno-flags.txt, as it ships. The service inherits this process's
 * environment, so `DENO_V8_FLAGS=...` before the command adds to both sides (a flag the tree's file sets too keeps
 * the file's value); `--env K=V` (repeatable) sets one for the worktree's side only, e.g. `HEAD --env
 * DENO_V8_FLAGS=--heap-growing-percent=50` to measure a V8 flag on the same code. REVISION `none` runs the
 * worktree alone (e.g. one long batch load to see whether RSS grows). `--deno PATH` runs the REVISION side on
 * another Deno (REVISION HEAD and a clean worktree: one runtime against the other, same code). `--threads` also
 * prints, per round, where the CPU went: user and system µs per record for each kind of thread of the service
 * (`/proc/PID/task/*`, threads named alike summed: the JS thread `deno`, tokio's blocking pool, librdkafka's
 * `rdk:*`, V8's workers).
 * `--cpu-prof DIR` runs each service under V8's CPU profiler: DIR/<side>-<scenario>-<round>/*.cpuprofile, written
 * when the service exits (bench/cpu_profile.ts summarizes one); the profiler costs some throughput on both sides.
 * `--broker-dir DIR` keeps the broker's data in DIR (a tmpfs, say) rather than in the temp dir beside the
 * services' WALs, so that the broker's writes share neither the disk nor the file system's journal with them.
 * `--loads N` gives each start of the service N loads in a row (each into a new topic, each reported): whether
 * a spread of figures comes with the start (V8's decisions early in a process) or with the machine.
 * `--connections N` sets the HTTP loads' keep-alive connections (default 64; wrk's, and bench/load's for batches).
 *
 * Run: deno run -A bench/service_ab.ts REVISION [--only http,always,batch,always-batch,grpc,grpc-echo] [--rounds 2]
 *      [--seconds 8] [--codec none|gzip|lz4] [--kafka K=V] [--env K=V] [--deno PATH] [--threads] [--cpu-prof DIR]
 *      [--broker-dir DIR] [--loads 1] [--connections 64]
 */
import { startBroker } from "../tests/kafka/broker.ts";
import { runCommand } from "../tests/kafka/command.ts";
import { startService, v8Flags } from "../tests/support/service.ts";
import { startChildServer } from "./child_server.ts";
import { memoryMb, pidListeningOn } from "./process.ts";

const ROOT = new URL("..", import.meta.url).pathname;
const DENO = Deno.env.get("KA_DENO") ?? Deno.execPath();

function flag(name: string, fallback: string): string {
  const i = Deno.args.indexOf(`--${name}`);
  return i < 0 ? fallback : Deno.args[i + 1];
}

const REVISION = Deno.args[0];
const SCENARIOS = flag("only", "http,always,batch").split(",");
const ROUNDS = Number(flag("rounds", "2"));
const SECONDS = Number(flag("seconds", "8"));
const CODEC = flag("codec", "none");
const LOADS = Number(flag("loads", "1"));
const CONNECTIONS = Number(flag("connections", "64"));
/** Every `--NAME K=V` of the command line, as an object. */
function pairs(name: string): Record<string, string> {
  const out: Record<string, string> = {};
  for (let i = 0; i < Deno.args.length - 1; i++) {
    if (Deno.args[i] !== `--${name}`) continue;
    const [key, value] = Deno.args[i + 1].split(/=(.*)/s, 2);
    if (value === undefined) throw new Error(`--${name} ${Deno.args[i + 1]}: expected KEY=VALUE`);
    out[key] = value;
  }
  return out;
}
const KAFKA_EXTRA = pairs("kafka");
/** `--env K=V`: environment of the worktree's service only (DENO_V8_FLAGS=..., KA_...). */
const WORKTREE_ENV = pairs("env");
const THREADS = Deno.args.includes("--threads");
const CPU_PROF = flag("cpu-prof", "");
/** The Deno that runs the REVISION side. */
const REVISION_DENO = flag("deno", DENO);
const BROKER_DIR = flag("broker-dir", "") || undefined;
if (
  REVISION === undefined || REVISION.startsWith("--") || !(ROUNDS >= 1) || !(SECONDS > 0) ||
  !Number.isInteger(LOADS) || LOADS < 1 || !Number.isInteger(CONNECTIONS) || CONNECTIONS < 1
) {
  console.error(
    "usage: bench/service_ab.ts REVISION [--only http,always,batch,always-batch,grpc,grpc-echo] [--rounds N] " +
      "[--seconds N] [--codec C] [--kafka K=V] [--env K=V] [--deno PATH] [--threads] [--cpu-prof DIR] " +
      "[--broker-dir DIR] [--loads N] [--connections N]",
  );
  Deno.exit(2);
}

interface Figures {
  rate: number;
  cpuUs: number;
  peakMb: number;
  /** RSS at a tenth, half and the end of the load. */
  rssMb: [number, number, number];
  /** User and system µs per record, per kind of thread of the service (printed with --threads). */
  threads?: Map<string, { userUs: number; sysUs: number }>;
}

/** utime and stime (clock ticks) per kind of thread: the name without its trailing number. */
function threadTicks(pid: number): Map<string, [number, number]> {
  const out = new Map<string, [number, number]>();
  for (const task of Deno.readDirSync(`/proc/${pid}/task`)) {
    let stat: string;
    try {
      stat = Deno.readTextFileSync(`/proc/${pid}/task/${task.name}/stat`);
    } catch {
      continue; // ended meanwhile
    }
    const name = stat.slice(stat.indexOf("(") + 1, stat.lastIndexOf(")")).replace(/[\d-]+$/, "");
    const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
    const [user, sys] = out.get(name) ?? [0, 0];
    out.set(name, [user + Number(fields[11]), sys + Number(fields[12])]);
  }
  return out;
}

function cpuSeconds(pid: number): number {
  const stat = Deno.readTextFileSync(`/proc/${pid}/stat`);
  const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
  return (Number(fields[11]) + Number(fields[12])) / 100; // CLK_TCK is 100 here
}

async function loadBinary(): Promise<string> {
  return new TextDecoder().decode(
    (await runCommand("bash", [`${ROOT}bench/load/build.sh`], { timeoutMs: 600_000 })).stdout,
  ).trim();
}

/** bench/load grpc against `target` (host:port); returns the records answered. */
async function grpcLoad(target: string, topic: string): Promise<number> {
  const size = Deno.env.get("KA_VALUE_BYTES") ?? "100";
  const args = ["grpc", "-seconds", String(SECONDS), "-target", target, "-topic", topic, "-size", size];
  const r = await runCommand(await loadBinary(), args, { timeoutMs: SECONDS * 1000 + 60_000 });
  const lines = new TextDecoder().decode(r.stdout).trim().split("\n");
  if (r.code !== 0) throw new Error(`bench/load grpc exit ${r.code}: ${r.stderr.trim().slice(-300)}`);
  const j = JSON.parse(lines[lines.length - 1]);
  if (j.errors > 0 || j.unanswered > 0) {
    console.log(`  bench/load grpc: ${j.errors} refused (${j.firstError}), ${j.unanswered} unanswered`);
  }
  return j.answered;
}

async function load(scenario: string, svc: { http: string; grpc: string }, topic: string): Promise<void> {
  if (scenario === "grpc") {
    await grpcLoad(svc.grpc, topic);
  } else if (scenario.endsWith("batch")) {
    const url = `${svc.http}/topics/${topic}/messages`;
    const args = ["http", "-seconds", String(SECONDS), "-url", url, "-ndjson", "1000", "-size", "100"];
    await runCommand(await loadBinary(), [...args, "-connections", String(CONNECTIONS)], {
      timeoutMs: SECONDS * 1000 + 60_000,
    });
  } else {
    const url = `${svc.http}/topics/${topic}/messages`;
    const args = ["-t1", `-c${CONNECTIONS}`, `-d${SECONDS}s`, "-s", `${ROOT}bench/post.lua`, url];
    await runCommand("wrk", args, { timeoutMs: SECONDS * 1000 + 30_000 });
  }
}

/** The gRPC echo of the tree at `root` (no Kafka) under the gRPC load. */
async function echoRound(root: string): Promise<Figures> {
  await using echo = await startChildServer(`${root}/bench/grpc_echo_server.ts`);
  const cpuBefore = cpuSeconds(echo.pid);
  const rss: number[] = [];
  const sampler = setInterval(() => rss.push(memoryMb(echo.pid, "VmRSS")), 1000);
  const answered = await grpcLoad(`127.0.0.1:${echo.port}`, "echo").finally(() => clearInterval(sampler));
  return {
    rate: answered / SECONDS,
    cpuUs: (cpuSeconds(echo.pid) - cpuBefore) * 1e6 / answered,
    peakMb: memoryMb(echo.pid, "VmHWM"),
    rssMb: [rss[Math.floor(rss.length / 10)], rss[Math.floor(rss.length / 2)], rss[rss.length - 1]],
  };
}

/** One load of `scenario` into `topic` on the running service `pid`, once its acknowledgements stop moving. */
async function measuredLoad(
  pid: number,
  scenario: string,
  svc: { http: string; grpc: string; metric(name: string): Promise<number> },
  topic: string,
): Promise<Figures> {
  const ackedBefore = await svc.metric("kafka_client_ack_cnt");
  const cpuBefore = cpuSeconds(pid);
  const threadsBefore = threadTicks(pid);
  const rss: number[] = [];
  const sampler = setInterval(() => rss.push(memoryMb(pid, "VmRSS")), 1000);
  await load(scenario, svc, topic).finally(() => clearInterval(sampler));
  let total = await svc.metric("kafka_client_ack_cnt");
  for (let i = 0; i < 30; i++) {
    await new Promise((r) => setTimeout(r, 1000));
    const now = await svc.metric("kafka_client_ack_cnt");
    if (now === total) break;
    total = now;
  }
  const acked = total - ackedBefore;
  const threads = new Map<string, { userUs: number; sysUs: number }>();
  for (const [name, [user, sys]] of threadTicks(pid)) {
    const [user0, sys0] = threadsBefore.get(name) ?? [0, 0];
    // Threads that ended during the load are missing here: their time only shows in the process total.
    threads.set(name, {
      userUs: (user - user0) / 100 * 1e6 / acked,
      sysUs: (sys - sys0) / 100 * 1e6 / acked,
    });
  }
  return {
    threads,
    rate: acked / SECONDS,
    cpuUs: (cpuSeconds(pid) - cpuBefore) * 1e6 / acked,
    peakMb: memoryMb(pid, "VmHWM"),
    rssMb: [rss[Math.floor(rss.length / 10)], rss[Math.floor(rss.length / 2)], rss[rss.length - 1]],
  };
}

/** One start of the service: a load into each of `topics` in turn, the figures of each. */
async function round(
  root: string,
  scenario: string,
  bootstrap: string,
  topics: readonly string[],
  profileDir: string,
): Promise<Figures[]> {
  if (scenario === "grpc-echo") return [await echoRound(root)];
  const dir = await Deno.makeTempDir({ prefix: "ka-ab-" });
  const svc = await startService({
    producer: { wal: { mode: scenario.startsWith("always") ? "always" : "fallback", path: `${dir}/wal` } },
    kafka: {
      brokers: [bootstrap],
      "compression.codec": CODEC,
      "linger.ms": 5,
      "batch.num.messages": 10000,
      "statistics.interval.ms": 3_600_000,
      ...KAFKA_EXTRA,
    },
  }, {
    dir,
    env: { KA_LOG_LEVEL: "warn", ...(root === ROOT ? WORKTREE_ENV : {}) },
    command: (config) => ({
      cmd: root === ROOT ? DENO : REVISION_DENO,
      args: [
        "run",
        "--allow-all",
        ...v8Flags(root),
        `--config=${ROOT}deno.json`,
        ...(CPU_PROF === "" ? [] : [`--cpu-prof-dir=${profileDir}`]),
        `${root}/src/main.ts`,
        "-config",
        config,
      ],
    }),
  });
  try {
    const pid = await pidListeningOn(svc.http);
    const figures: Figures[] = [];
    for (const topic of topics) figures.push(await measuredLoad(pid, scenario, svc, topic));
    return figures;
  } finally {
    await svc.stop();
    await Deno.remove(dir, { recursive: true });
  }
}

const before = await Deno.makeTempDir({ prefix: "ka-ab-rev-" });
try {
  const archive = REVISION === "none" ? { code: 0, stderr: "" } : await runCommand("bash", [
    "-c",
    `git -C "$0" archive "$1" src bench docs proto deploy deno.json | tar -x -C "$2"`,
    ROOT,
    REVISION,
    before,
  ], { timeoutMs: 60_000 });
  if (archive.code !== 0) throw new Error(`git archive ${REVISION}: ${archive.stderr}`);
  await using broker = await startBroker({ parentDir: BROKER_DIR });
  const loadavg = () => Deno.readTextFileSync("/proc/loadavg").split(" ").slice(0, 3).join(" ");
  console.log(`codec ${CODEC}, ${SECONDS} s per load, load average before: ${loadavg()}`);
  for (const scenario of SCENARIOS) {
    const sides = REVISION === "none" ? [["worktree", ROOT]] : [[REVISION, before], ["worktree", ROOT]];
    const all: Record<string, Figures[]> = Object.fromEntries(sides.map(([name]) => [name, []]));
    for (let i = 0; i < ROUNDS; i++) {
      // The side that goes first swaps every round, so that neither always runs just after the other (on a broker
      // and page cache the other has just warmed).
      for (const [name, root] of i % 2 === 0 ? sides : sides.toReversed()) {
        const topics = Array.from(
          { length: LOADS },
          (_, l) => `ab-${scenario}-${name.replace(/\W/g, "")}-${i}-${l}`,
        );
        if (scenario !== "grpc-echo") { for (const topic of topics) await broker.createTopic(topic, 3); }
        const profileDir = `${CPU_PROF}/${name.replace(/\W/g, "")}-${scenario}-${i + 1}`;
        const figures = await round(root, scenario, broker.bootstrap, topics, profileDir);
        all[name].push(...figures);
        for (const [l, f] of figures.entries()) {
          const which = figures.length > 1 ? `round ${i + 1} load ${l + 1}` : `round ${i + 1}`;
          console.log(
            `${scenario} ${which} ${name}: ${f.rate.toFixed(0)} msg/s, ${f.cpuUs.toFixed(2)} µs CPU/msg, ` +
              `peak RSS ${f.peakMb.toFixed(0)} MB, RSS ${f.rssMb.map((x) => x.toFixed(0)).join(" / ")} MB ` +
              `at a tenth / half / end of the load (load average ${loadavg()})`,
          );
          if (THREADS && f.threads) {
            const parts = [...f.threads].filter(([, t]) => t.userUs + t.sysUs >= 0.05)
              .sort(([, a], [, b]) => b.userUs + b.sysUs - a.userUs - a.sysUs)
              .map(([name, t]) => `${name} ${t.userUs.toFixed(1)} + ${t.sysUs.toFixed(1)}`);
            console.log(`  µs CPU/msg per thread, user + system: ${parts.join(", ")}`);
          }
        }
      }
    }
    const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];
    for (const [name, fs] of Object.entries(all)) {
      console.log(
        `${scenario} median ${name}: ${median(fs.map((f) => f.rate)).toFixed(0)} msg/s, ` +
          `${median(fs.map((f) => f.cpuUs)).toFixed(2)} µs CPU/msg, peak RSS ${
            median(fs.map((f) => f.peakMb)).toFixed(0)
          } MB`,
      );
    }
  }
  console.log(`load average after: ${loadavg()}`);
} finally {
  await Deno.remove(before, { recursive: true });
}
