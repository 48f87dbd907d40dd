/**
 * One run, side by side: our service, its ceilings and (optionally) the Go kafka-ambassador, against one real
 * single-node broker (tests/kafka/broker.ts), so that the ratios come from the same machine state.
 *
 *   deno run -A bench/compare.ts [--seconds N] [--go-binary PATH] [--only http,batch,grpc,kcat] [--value-bytes N]
 *     [--rounds N] [--connections N] [--codec none]
 *
 * Per scenario: a fresh process (service, Go service or ceiling), a 2 s warm-up, then a fixed load for N seconds
 * (default 15) into a new topic of 3 partitions, then a wait until the topic's end offsets stop moving. Measured:
 * - msg/s delivered: the sum of the topic's end offsets (kcat -Q) divided by N;
 * - CPU µs per delivered message of the process under test: utime + stime from /proc/PID/stat, before the load
 *   and after delivery settled, in clock ticks of `getconf CLK_TCK` (the PID is the one listening on its port);
 * - peak RSS: VmHWM from /proc/PID/status at the end;
 * - latency p50/p99: per request from wrk --latency or bench/load (HTTP; a batch request carries 1,000
 *   records), per record from bench/load (gRPC).
 * Scenarios: HTTP one message per request (wrk -c64, bench/post.lua), HTTP NDJSON batches of 1,000 records
 * (bench/load `http`, 64 keep-alive connections; `--connections` sets both 64s), gRPC Produce streams
 * (bench/load `grpc`: grpc-go, 4 streams x 1,000 in flight); values of 100 bytes, or `--value-bytes` for the
 * single messages and gRPC records. The Go load generator is built on first use by bench/load/build.sh.
 * Ceilings: bare Deno.serve (bench/baseline_server.ts) under the same wrk load, our gRPC layer with an echo
 * facade (bench/grpc_echo_server.ts) under the same gRPC load, and `kcat -P` sending the same number of
 * messages; for the batches also bare Deno.serve reading the same bodies, the floor of their CPU and memory.
 * `--rounds N` (default 1) measures our service and the Go service N times each for every scenario, alternated
 * (ours first in odd rounds, Go first in even ones, so that drift over the run falls on both), a fresh process
 * each time; their rows give the median of every figure, the figures of each round in the notes, and ours the
 * ratio to Go of each round, and as its ratio to Go the median of those. On a shared machine one round's ratio
 * can be 20 % off; the median of a few is steadier.
 * Ceilings are measured once.
 * Prints a markdown table and the command line. A failing scenario prints its error in its row.
 */
import { stringify } from "yaml";
import { type Broker, startBroker } from "../tests/kafka/broker.ts";
import { runCommand } from "../tests/kafka/command.ts";
import { freePort, type Service, startService } from "../tests/support/service.ts";
import { memoryMb, pidListeningOn } from "./process.ts";
import { freePorts, serviceConfig, waitForPort } from "./side_by_side.ts";

// ---------------------------------------------------------------------------------------------------------
// Command line

function flag(name: string): string | undefined {
  const i = Deno.args.findIndex((a) => a === `--${name}` || a.startsWith(`--${name}=`));
  if (i < 0) return undefined;
  const a = Deno.args[i];
  return a.includes("=") ? a.slice(a.indexOf("=") + 1) : Deno.args[i + 1];
}

const SECONDS = Number(flag("seconds") ?? 15);
const GO_BINARY = flag("go-binary");
/** Scenario groups to run (default all): http, batch, grpc, kcat. */
const ONLY = new Set((flag("only") ?? "http,batch,grpc,kcat").split(",").map((x) => x.trim()));
/** The value of one HTTP message (bench/post.lua reads it from KA_VALUE_BYTES) and of one gRPC record. */
const VALUE_BYTES = Number(flag("value-bytes") ?? 100);
/** Alternated measurements of ours and Go per scenario; their rows give medians. */
const ROUNDS = Number(flag("rounds") ?? 1);
/** Keep-alive connections of the HTTP loads (wrk's, and bench/load's for batches). */
const CONNECTIONS = Number(flag("connections") ?? 64);
/** librdkafka's compression.codec for every producer of the run. */
const CODEC = flag("codec") ?? "none";
if (
  !(SECONDS > 0) || !Number.isInteger(VALUE_BYTES) || VALUE_BYTES < 1 || !Number.isInteger(ROUNDS) ||
  ROUNDS < 1 || !Number.isInteger(CONNECTIONS) || CONNECTIONS < 1 ||
  !["none", "gzip", "snappy", "lz4", "zstd"].includes(CODEC)
) {
  console.error(
    "usage: deno run -A bench/compare.ts [--seconds N] [--go-binary PATH] [--only http,batch,grpc,kcat] " +
      "[--value-bytes N] [--rounds N] [--connections N] [--codec none|gzip|snappy|lz4|zstd]",
  );
  Deno.exit(2);
}

const DENO = Deno.env.get("KA_DENO") ?? Deno.execPath();
const here = (p: string) => new URL(p, import.meta.url).pathname;
const POST_LUA = here("./post.lua");
const BASELINE = here("./baseline_server.ts");
const LOAD_BUILD = here("./load/build.sh");
const GRPC_ECHO = here("./grpc_echo_server.ts");

const PARTITIONS = 3;
const WARMUP_SECONDS = 2;
const BATCH_RECORDS = 1000;
const RECORD_BYTES = 100;
const GRPC_STREAMS = 4;
const GRPC_WINDOW = 1000;
/**
 * librdkafka settings shared by our service, the Go service and kcat. Compression is `none` unless `--codec`
 * says otherwise: both services default to gzip (this one keeps the Go service's default), kcat to none, and
 * without it the CPU figures are the proxies' own rather than zlib's.
 */
const KAFKA_SETTINGS: Record<string, number | string> = {
  "compression.codec": CODEC,
  "linger.ms": 5,
  "batch.num.messages": 10000,
  "statistics.interval.ms": 3_600_000,
};
const STOP_TIMEOUT_MS = 20_000;
const SETTLE_TIMEOUT_MS = 30_000;

// ---------------------------------------------------------------------------------------------------------
// Cleanup: every child registers how to end it; SIGINT/SIGTERM runs them all.

const cleanups = new Set<() => Promise<void>>();
async function cleanupAll(): Promise<void> {
  for (const c of [...cleanups].reverse()) await c().catch(() => {});
}
for (const sig of ["SIGINT", "SIGTERM"] as const) {
  Deno.addSignalListener(sig, async () => {
    console.error(`\n${sig}: stopping children`);
    await cleanupAll();
    Deno.exit(130);
  });
}

function killQuietly(child: Deno.ChildProcess, sig: Deno.Signal): void {
  try {
    child.kill(sig);
  } catch { /* already gone */ }
}

/** Spawns a long-running child and registers a bounded stop (SIGTERM, then SIGKILL) for it. */
function spawnTracked(
  cmd: string,
  args: string[],
  logPath: string,
  env?: Record<string, string>,
): { child: Deno.ChildProcess; stop: () => Promise<void> } {
  const child = new Deno.Command("sh", {
    args: ["-c", 'log="$1"; shift; exec "$@" >>"$log" 2>&1', "sh", logPath, cmd, ...args],
    env,
    stdin: "null",
    stdout: "null",
    stderr: "null",
  }).spawn();
  let stopped: Promise<void> | null = null;
  const stop = () => {
    stopped ??= (async () => {
      killQuietly(child, "SIGTERM");
      const timer = setTimeout(() => killQuietly(child, "SIGKILL"), STOP_TIMEOUT_MS);
      await child.status;
      clearTimeout(timer);
      cleanups.delete(stop);
    })();
    return stopped;
  };
  cleanups.add(stop);
  return { child, stop };
}

// ---------------------------------------------------------------------------------------------------------
// /proc and kcat helpers

const CLK_TCK = Number(
  new TextDecoder().decode(
    (await runCommand("getconf", ["CLK_TCK"], { timeoutMs: 5_000 })).stdout,
  ).trim(),
) || 100;

/** utime + stime of a process (all its threads), in seconds. */
async function cpuSecondsOf(pid: number): Promise<number> {
  const stat = await Deno.readTextFile(`/proc/${pid}/stat`);
  const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
  return (Number(fields[11]) + Number(fields[12])) / CLK_TCK;
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** Sum of the end offsets (high watermarks) of every partition of a topic. */
async function endOffsets(broker: Broker, topic: string, partitions: number): Promise<number> {
  const args = ["-Q", "-b", broker.directBootstrap];
  for (let p = 0; p < partitions; p++) args.push("-t", `${topic}:${p}:-1`);
  const r = await runCommand("kcat", args, { timeoutMs: 10_000 });
  if (r.code !== 0) throw new Error(`kcat -Q ${topic}: exit ${r.code}: ${r.stderr.trim()}`);
  const text = new TextDecoder().decode(r.stdout);
  const found = [...text.matchAll(/\[(\d+)\]\s+offset\s+(-?\d+)/g)];
  if (found.length !== partitions) throw new Error(`kcat -Q ${topic}: unexpected output: ${text.trim()}`);
  return found.reduce((sum, m) => sum + Math.max(0, Number(m[2])), 0);
}

/** Polls the end offsets until they have not moved for 1.5 s (bounded). */
async function settledOffsets(broker: Broker, topic: string, partitions: number): Promise<number> {
  const deadline = Date.now() + SETTLE_TIMEOUT_MS;
  let last = await endOffsets(broker, topic, partitions);
  let stableSince = Date.now();
  while (Date.now() < deadline) {
    await sleep(500);
    const now = await endOffsets(broker, topic, partitions);
    if (now !== last) {
      last = now;
      stableSince = Date.now();
    } else if (Date.now() - stableSince >= 1500) break;
  }
  return last;
}

// ---------------------------------------------------------------------------------------------------------
// Load generators

interface LoadResult {
  /** Requests (HTTP) or records (gRPC) answered with success. */
  okCount: number;
  /** What the generator itself reports per second (requests/s for wrk, ok records/s for gRPC). */
  rate: number;
  p50Ms: number;
  p99Ms: number;
  errors: number;
  note: string;
  /** Cores the load generator itself used (bench/load only). */
  generatorCores?: number;
}

function toMs(text: string | undefined): number {
  const m = /^([\d.]+)(us|ms|s|m)$/.exec(text ?? "");
  if (!m) return NaN;
  const v = Number(m[1]);
  return m[2] === "us" ? v / 1000 : m[2] === "ms" ? v : m[2] === "s" ? v * 1000 : v * 60_000;
}

async function wrk(url: string, lua: string, seconds: number): Promise<LoadResult> {
  const r = await runCommand(
    "wrk",
    ["-t1", `-c${CONNECTIONS}`, `-d${seconds}s`, "--timeout", "10s", "--latency", "-s", lua, url],
    { timeoutMs: seconds * 1000 + 30_000, env: { KA_VALUE_BYTES: String(VALUE_BYTES) } },
  );
  const text = new TextDecoder().decode(r.stdout);
  if (r.code !== 0) throw new Error(`wrk exit ${r.code}: ${r.stderr.trim() || text.trim()}`);
  const total = Number(/(\d+) requests in/.exec(text)?.[1] ?? NaN);
  const non2xx = Number(/Non-2xx or 3xx responses: (\d+)/.exec(text)?.[1] ?? 0);
  const sock = /Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)/.exec(text);
  const sockErrors = sock ? sock.slice(1).reduce((a, b) => a + Number(b), 0) : 0;
  return {
    okCount: total - non2xx,
    rate: Number(/Requests\/sec:\s+([\d.]+)/.exec(text)?.[1] ?? NaN),
    p50Ms: toMs(/\s50%\s+(\S+)/.exec(text)?.[1]),
    p99Ms: toMs(/\s99%\s+(\S+)/.exec(text)?.[1]),
    errors: non2xx + sockErrors,
    note: non2xx + sockErrors > 0 ? `wrk: ${non2xx} non-2xx, ${sockErrors} socket errors` : "",
  };
}

let loadBinary: Promise<string> | null = null;

/** Builds the Go load generator (bench/load) on first use and returns its path. */
function goLoadBinary(): Promise<string> {
  loadBinary ??= (async () => {
    const r = await runCommand("bash", [LOAD_BUILD], { timeoutMs: 600_000 });
    const path = new TextDecoder().decode(r.stdout).trim();
    if (r.code !== 0 || !path) {
      throw new Error(`bench/load/build.sh exit ${r.code}: ${r.stderr.trim().slice(-400)}`);
    }
    return path;
  })();
  return loadBinary;
}

/** The JSON line of `bench/load grpc` (the fields used here; see bench/load/grpc.go). */
interface GrpcLoadOutput {
  ok: number;
  errors: number;
  unanswered: number;
  firstError: string;
  seconds: number;
  okPerSec: number;
  p50Ms: number | null;
  p99Ms: number | null;
  cpuSeconds: number;
  /** OK records by the second their reply arrived. */
  timeline: number[];
}

/** The JSON line of `bench/load http` (the fields used here; see bench/load/http.go). */
interface HttpLoadOutput {
  requests: number;
  ok: number;
  errors: number;
  firstError: string;
  seconds: number;
  okPerSec: number;
  p50Ms: number | null;
  p99Ms: number | null;
  dials: number;
  cpuSeconds: number;
  /** Per second, by the second each answer arrived. */
  timeline: { ok: number }[];
}

/** The lowest and highest of the per-second counts of the window's whole seconds: a stall shows as a low. */
function perSecondRange(timeline: number[], seconds: number): string {
  const full = timeline.slice(0, Math.floor(seconds));
  return full.length === 0 ? "-" : `${fmtInt(Math.min(...full))} to ${fmtInt(Math.max(...full))}`;
}

/** Runs the Go load generator (its own process, so its CPU is not the server's) and parses its JSON line. */
async function goLoad<T>(mode: "grpc" | "http", args: string[], seconds: number): Promise<T> {
  const bin = await goLoadBinary();
  const r = await runCommand(bin, [mode, "-seconds", String(seconds), ...args], {
    timeoutMs: seconds * 1000 + 60_000,
  });
  const lines = new TextDecoder().decode(r.stdout).trim().split("\n");
  if (r.code !== 0) throw new Error(`bench/load ${mode} exit ${r.code}: ${r.stderr.trim().slice(-500)}`);
  return JSON.parse(lines[lines.length - 1]);
}

/** gRPC Produce streams from bench/load; its CPU share is reported so a capped generator shows. */
async function grpcLoad(target: string, topic: string, seconds: number): Promise<LoadResult> {
  const j = await goLoad<GrpcLoadOutput>("grpc", [
    "-target",
    target,
    "-topic",
    topic,
    "-streams",
    String(GRPC_STREAMS),
    "-window",
    String(GRPC_WINDOW),
    "-size",
    String(VALUE_BYTES),
  ], seconds);
  const genCores = j.cpuSeconds / j.seconds;
  const notes = [
    `answered ${perSecondRange(j.timeline, j.seconds)} records per second`,
    `generator used ${genCores.toFixed(2)} cores`,
  ];
  if (j.errors > 0) notes.push(`${j.errors} refused (${j.firstError})`);
  if (j.unanswered > 0) notes.push(`${j.unanswered} unanswered`);
  if (j.firstError && j.errors === 0) notes.push(j.firstError);
  return {
    okCount: j.ok,
    rate: j.okPerSec,
    p50Ms: j.p50Ms ?? NaN,
    p99Ms: j.p99Ms ?? NaN,
    errors: j.errors + j.unanswered,
    note: notes.join("; "),
    generatorCores: genCores,
  };
}

/**
 * NDJSON batches of BATCH_RECORDS records from bench/load over CONNECTIONS keep-alive connections. The note
 * gives how many connections the client had to open: a server that closes the connection after each request
 * costs one per request.
 */
async function batchLoad(url: string, seconds: number): Promise<LoadResult> {
  const j = await goLoad<HttpLoadOutput>("http", [
    "-url",
    url,
    "-connections",
    String(CONNECTIONS),
    "-ndjson",
    String(BATCH_RECORDS),
    "-size",
    String(RECORD_BYTES),
  ], seconds);
  const genCores = j.cpuSeconds / j.seconds;
  const refused = j.requests - j.ok - j.errors;
  const notes = [
    `2xx ${perSecondRange(j.timeline.map((t) => t.ok), j.seconds)} per second`,
    `client opened ${j.dials} connections for ${j.requests} requests`,
  ];
  if (refused > 0 || j.errors > 0) {
    notes.push(`${refused} non-2xx, ${j.errors} without answer (${j.firstError})`);
  }
  notes.push(`generator used ${genCores.toFixed(2)} cores`);
  return {
    okCount: j.ok,
    rate: j.okPerSec,
    p50Ms: j.p50Ms ?? NaN,
    p99Ms: j.p99Ms ?? NaN,
    errors: j.requests - j.ok,
    note: notes.join("; "),
    generatorCores: genCores,
  };
}

// ---------------------------------------------------------------------------------------------------------
// Processes under test

interface Target {
  http: string;
  grpc: string;
  /** Base URL of the monitoring listener ("" for ceilings). */
  monitoring: string;
  pid: number;
  stop(): Promise<void>;
}

async function startOurs(dir: string, bootstrap: string): Promise<Target> {
  const ports = freePorts();
  const svc: Service = await startService(serviceConfig(dir, bootstrap, ports, KAFKA_SETTINGS), {
    dir,
    env: { KA_LOG_LEVEL: "warn" },
  });
  let stopped: Promise<void> | null = null;
  const stop = () => {
    stopped ??= (async () => {
      const signal = (sig: Deno.Signal) => {
        try {
          svc.signal(sig);
        } catch { /* gone */ }
      };
      signal("SIGTERM");
      const timer = setTimeout(() => signal("SIGKILL"), STOP_TIMEOUT_MS);
      await svc.exited;
      clearTimeout(timer);
      cleanups.delete(stop);
    })().catch(() => {});
    return stopped;
  };
  cleanups.add(stop);
  try {
    return {
      http: svc.http,
      grpc: svc.grpc,
      monitoring: svc.monitoring,
      pid: await pidListeningOn(ports.http),
      stop,
    };
  } catch (e) {
    await stop();
    throw e;
  }
}

async function startGo(binary: string, dir: string, bootstrap: string): Promise<Target> {
  const ports = freePorts();
  const configPath = `${dir}/go-config.yaml`;
  await Deno.mkdir(`${dir}/wal`); // the Go service does not create its WAL directory
  await Deno.writeTextFile(configPath, stringify(serviceConfig(dir, bootstrap, ports, KAFKA_SETTINGS)));
  const p = spawnTracked(binary, ["-config", configPath], `${dir}/go.log`);
  let exited = false;
  p.child.status.then(() => exited = true);
  try {
    await waitForPort(ports.http, () => exited, "Go service");
    await waitForPort(ports.grpc, () => exited, "Go service (gRPC)");
    return {
      http: `http://127.0.0.1:${ports.http}`,
      grpc: `127.0.0.1:${ports.grpc}`,
      monitoring: `http://127.0.0.1:${ports.monitoring}`,
      pid: await pidListeningOn(ports.http),
      stop: p.stop,
    };
  } catch (e) {
    await p.stop();
    const log = await Deno.readTextFile(`${dir}/go.log`).catch(() => "");
    throw new Error(`${(e as Error).message}; log: ${log.trim().split("\n").slice(-3).join(" | ")}`);
  }
}

async function startBaseline(dir: string, read: "whole" | "stream"): Promise<Target> {
  const port = freePort();
  const p = spawnTracked(DENO, ["run", "--allow-net", BASELINE, String(port), read], `${dir}/baseline.log`);
  let exited = false;
  p.child.status.then(() => exited = true);
  try {
    await waitForPort(port, () => exited, "bare Deno.serve");
    return {
      http: `http://127.0.0.1:${port}`,
      grpc: "",
      monitoring: "",
      pid: await pidListeningOn(port),
      stop: p.stop,
    };
  } catch (e) {
    await p.stop();
    throw e;
  }
}

async function startEcho(dir: string): Promise<Target> {
  const port = freePort();
  const p = spawnTracked(DENO, ["run", "-A", GRPC_ECHO, String(port)], `${dir}/echo.log`, {
    KA_LOG_LEVEL: "warn",
  });
  let exited = false;
  p.child.status.then(() => exited = true);
  try {
    await waitForPort(port, () => exited, "echo gRPC server");
    return {
      http: "",
      grpc: `127.0.0.1:${port}`,
      monitoring: "",
      pid: await pidListeningOn(port),
      stop: p.stop,
    };
  } catch (e) {
    await p.stop();
    throw e;
  }
}

// ---------------------------------------------------------------------------------------------------------
// Scenarios

type Kind = "http" | "batch" | "grpc";

interface Row {
  scenario: string;
  /** Short name used in the ratio column of the rows that this row is the ceiling of. */
  label?: string;
  /** ours, go or ceiling. */
  who: "ours" | "go" | "ceiling";
  kind: Kind | "kcat";
  /** Messages (or, for bare Deno.serve, requests) per second; null when not measured. */
  rate: number | null;
  /** Unit of `rate` when it is not "delivered msg/s". */
  rateUnit?: string;
  cpuUs: number | null;
  rssMb: number | null;
  p50Ms: number | null;
  p99Ms: number | null;
  note: string;
  /** Cores the load generator itself used (bench/load only). */
  generatorCores?: number;
  /** The row could not be measured: shown instead of the numbers. */
  failure?: string;
  /** Ours, over several rounds: the ratio to Go column (medians of each round's ratios). */
  goRatio?: string;
}

let topicSeq = 0;
function newTopic(label: string): string {
  return `cmp-${++topicSeq}-${label}`;
}

function emptyRow(scenario: string, who: Row["who"], kind: Row["kind"]): Row {
  return { scenario, who, kind, rate: null, cpuUs: null, rssMb: null, p50Ms: null, p99Ms: null, note: "" };
}

async function loadFor(kind: Kind, t: Target, topic: string, seconds: number): Promise<LoadResult> {
  const url = `${t.http}/topics/${topic}/messages`;
  if (kind === "grpc") return await grpcLoad(t.grpc, topic, seconds);
  if (kind === "batch") return await batchLoad(url, seconds);
  return await wrk(url, POST_LUA, seconds);
}

/**
 * Posts one NDJSON body of 1,000 records and checks that it became 1,000 Kafka records: returns a reason
 * why the batch row cannot be measured, or null.
 */
async function batchProbe(broker: Broker, t: Target): Promise<string | null> {
  const topic = newTopic("probe");
  await broker.createTopic(topic, 1);
  const line = `{"value":"${"b".repeat(RECORD_BYTES)}"}\n`;
  const r = await fetch(`${t.http}/topics/${topic}/messages`, {
    method: "POST",
    headers: { "content-type": "application/x-ndjson" },
    body: line.repeat(BATCH_RECORDS),
    signal: AbortSignal.timeout(15_000),
  });
  const text = (await r.text()).trim().slice(0, 120);
  if (r.status === 415) return "n/a (no batch endpoint)";
  if (!r.ok) return `n/a (no batch endpoint: ${r.status} ${text})`;
  const n = await settledOffsets(broker, topic, 1);
  if (n !== BATCH_RECORDS) {
    return `n/a (one NDJSON body of ${BATCH_RECORDS} records became ${n} Kafka records)`;
  }
  return null;
}

/** The `wal_messages` gauge (same name in the Go service), or null when it cannot be read. */
async function walMessages(monitoring: string): Promise<number | null> {
  if (!monitoring) return null;
  try {
    const r = await fetch(`${monitoring}/metrics`, { signal: AbortSignal.timeout(5_000) });
    const m = /^wal_messages(?:\{[^}]*\})? (\S+)$/m.exec(await r.text());
    return m ? Number(m[1]) : null;
  } catch {
    return null;
  }
}

/** The broker's JVM, whose CPU is shown per scenario (everything shares the same cores). */
let brokerPid = -1;

/** A fresh process, a warm-up, the measured load, delivery settled, then CPU and memory. */
async function measure(
  broker: Broker,
  scenario: string,
  who: Row["who"],
  kind: Kind,
  start: () => Promise<Target>,
  opts: { kafka: boolean },
): Promise<Row> {
  const row = emptyRow(scenario, who, kind);
  let target: Target | null = null;
  try {
    target = await start();
    if (kind === "batch" && opts.kafka) {
      const why = await batchProbe(broker, target);
      if (why) {
        row.failure = why;
        return row;
      }
    }
    const warmTopic = newTopic(`warm-${kind}`);
    const topic = newTopic(`${who}-${kind}`);
    if (opts.kafka) {
      await broker.createTopic(warmTopic, PARTITIONS);
      await broker.createTopic(topic, PARTITIONS);
    }
    await loadFor(kind, target, warmTopic, WARMUP_SECONDS);
    if (opts.kafka) await settledOffsets(broker, warmTopic, PARTITIONS);
    else await sleep(500);

    const cpu0 = await cpuSecondsOf(target.pid);
    const brokerCpu0 = await cpuSecondsOf(brokerPid).catch(() => NaN);
    const load = await loadFor(kind, target, topic, SECONDS);
    const brokerCpu = (await cpuSecondsOf(brokerPid).catch(() => NaN)) - brokerCpu0;
    const delivered = opts.kafka ? await settledOffsets(broker, topic, PARTITIONS) : null;
    const cpu = (await cpuSecondsOf(target.pid)) - cpu0;
    row.rssMb = memoryMb(target.pid, "VmHWM");
    const notes = [load.note].filter(Boolean);
    if (delivered !== null) {
      row.rate = delivered / SECONDS;
      row.cpuUs = delivered > 0 ? cpu * 1e6 / delivered : null;
      const accepted = kind === "batch" ? load.okCount * BATCH_RECORDS : load.okCount;
      if (delivered < accepted) {
        const wal = await walMessages(target.monitoring);
        notes.push(
          `${accepted - delivered} accepted but not in Kafka once offsets settled` +
            (wal === null ? "" : ` (wal_messages ${wal})`),
        );
      }
      if (kind === "batch") notes.push(`${Math.round(load.rate)} req/s`);
    } else {
      const units = kind === "batch" ? load.okCount * BATCH_RECORDS : load.okCount;
      row.rate = units / SECONDS;
      row.rateUnit = kind === "grpc"
        ? "answered/s, no Kafka"
        : kind === "batch"
        ? "records/s, no Kafka"
        : "req/s, no Kafka";
      row.cpuUs = units > 0 ? cpu * 1e6 / units : null;
    }
    row.generatorCores = load.generatorCores;
    row.p50Ms = load.p50Ms;
    row.p99Ms = load.p99Ms;
    notes.push(`process ${(cpu / SECONDS).toFixed(2)} cores`);
    if (opts.kafka && !Number.isNaN(brokerCpu)) {
      notes.push(`broker ${(brokerCpu / SECONDS).toFixed(2)} cores`);
    }
    row.note = notes.join("; ");
  } catch (e) {
    row.failure = `error: ${(e as Error).message.replace(/\s+/g, " ").slice(0, 300)}`;
  } finally {
    await target?.stop().catch(() => {});
  }
  return row;
}

/** kcat -P (librdkafka without us) sending `count` 100-byte messages; CPU and peak RSS from /usr/bin/time. */
async function kcatCeiling(broker: Broker, dir: string, count: number): Promise<Row> {
  const row = emptyRow(`kcat -P, ${count} msgs (librdkafka, no proxy; ceiling)`, "ceiling", "kcat");
  row.label = "kcat -P";
  const file = `${dir}/kcat-input.txt`;
  try {
    const line = new TextEncoder().encode("k".repeat(RECORD_BYTES) + "\n");
    const data = new Uint8Array(line.length * count);
    for (let i = 0; i < count; i++) data.set(line, i * line.length);
    await Deno.writeFile(file, data);
    const topic = newTopic("kcat");
    await broker.createTopic(topic, PARTITIONS);
    const x = Object.entries(KAFKA_SETTINGS).flatMap(([k, v]) => ["-X", `${k}=${v}`]);
    const t0 = performance.now();
    const r = await runCommand(
      "/usr/bin/time",
      ["-f", "TIME %U %S %M", "kcat", "-P", "-b", broker.bootstrap, "-t", topic, ...x, "-l", file],
      { timeoutMs: 180_000 },
    );
    const seconds = (performance.now() - t0) / 1000;
    if (r.code !== 0) throw new Error(`kcat exit ${r.code}: ${r.stderr.trim().slice(-300)}`);
    const m = /TIME ([\d.]+) ([\d.]+) (\d+)/.exec(r.stderr);
    const delivered = await settledOffsets(broker, topic, PARTITIONS);
    row.rate = delivered / seconds;
    row.cpuUs = m && delivered > 0 ? (Number(m[1]) + Number(m[2])) * 1e6 / delivered : null;
    row.rssMb = m ? Number(m[3]) / 1024 : null;
    row.note = `${delivered} delivered in ${seconds.toFixed(2)} s (process start to exit)`;
    if (m) row.note += `; ${((Number(m[1]) + Number(m[2])) / seconds).toFixed(2)} cores`;
  } catch (e) {
    row.failure = `error: ${(e as Error).message.replace(/\s+/g, " ").slice(0, 300)}`;
  } finally {
    await Deno.remove(file).catch(() => {});
  }
  return row;
}

/** The median of `values` (the mean of the middle two for an even count). */
function median(values: number[]): number {
  const sorted = [...values].sort((a, b) => a - b);
  const mid = sorted.length >> 1;
  return sorted.length % 2 === 1 ? sorted[mid] : (sorted[mid - 1] + sorted[mid]) / 2;
}

/**
 * One row named `scenario` for its rounds: the median of each figure over the rounds that were measured, each
 * round's msg/s, CPU and peak RSS in the note. One round is its own row.
 */
function combine(scenario: string, rounds: Row[]): Row {
  if (rounds.length === 1) return rounds[0];
  const ok = rounds.filter((r) => !r.failure);
  if (ok.length === 0) return { ...rounds[0], scenario };
  const row = emptyRow(scenario, ok[0].who, ok[0].kind);
  row.rateUnit = ok[0].rateUnit;
  const mid = (pick: (r: Row) => number | null): number | null => {
    const values = ok.map(pick).filter((v): v is number => v !== null && !Number.isNaN(v));
    return values.length === 0 ? null : median(values);
  };
  row.rate = mid((r) => r.rate);
  row.cpuUs = mid((r) => r.cpuUs);
  row.rssMb = mid((r) => r.rssMb);
  row.p50Ms = mid((r) => r.p50Ms);
  row.p99Ms = mid((r) => r.p99Ms);
  const cores = ok.map((r) => r.generatorCores).filter((c): c is number => c !== undefined);
  if (cores.length > 0) row.generatorCores = Math.max(...cores);
  const list = (pick: (r: Row) => number | null, fmt: (n: number) => string) =>
    ok.map((r) => (pick(r) === null ? "-" : fmt(pick(r)!))).join(" / ");
  row.note = `median of ${ok.length} rounds: msg/s ${list((r) => r.rate, fmtInt)}; CPU µs ${
    list((r) => r.cpuUs, (n) => n.toFixed(1))
  }; peak RSS MB ${list((r) => r.rssMb, (n) => n.toFixed(0))}`;
  const failed = rounds.filter((r) => r.failure);
  if (failed.length > 0) row.note += `; ${failed.length} round(s) failed: ${failed[0].failure}`;
  return row;
}

// ---------------------------------------------------------------------------------------------------------
// Output

const fmtInt = (n: number) => Math.round(n).toLocaleString("en-US");
const fmtMs = (n: number | null) =>
  n === null || Number.isNaN(n)
    ? "-"
    : n < 1
    ? `${(n * 1000).toFixed(0)} µs`
    : `${n.toFixed(n < 10 ? 2 : 1)} ms`;

/** `a`'s msg/s and CPU per message over `b`'s (cpu null when not both measured); null without both rates. */
function ratios(a: Row, b: Row | undefined): { rate: number; cpu: number | null } | null {
  if (!b || a.failure || b.failure || a.rate === null || b.rate === null || b.rate === 0) return null;
  const cpu = a.cpuUs !== null && b.cpuUs !== null && b.cpuUs > 0 ? a.cpuUs / b.cpuUs : null;
  return { rate: a.rate / b.rate, cpu };
}

function formatRatios(rate: number, cpu: number | null): string {
  return cpu === null ? `${rate.toFixed(2)}x msg/s` : `${rate.toFixed(2)}x msg/s, ${cpu.toFixed(2)}x CPU/msg`;
}

function ratio(a: Row, b: Row | undefined): string {
  const r = ratios(a, b);
  return r === null ? "-" : formatRatios(r.rate, r.cpu);
}

/**
 * The median of each round's ratio, ours to Go, over the rounds where both were measured ("-" for none): the
 * rounds are pairs taken side by side, so their ratios are steadier than the ratio of the two medians.
 */
function medianRatio(ours: Row[], go: Row[]): string {
  const each = ours.map((a, i) => ratios(a, go[i])).filter((r) => r !== null);
  if (each.length === 0) return "-";
  const cpus = each.map((r) => r.cpu).filter((c) => c !== null);
  const text = formatRatios(median(each.map((r) => r.rate)), cpus.length > 0 ? median(cpus) : null);
  return `${text} (medians of ${each.length} rounds)`;
}

function table(rows: Row[], ceilingOf: Map<Row, Row>, goOf: Map<Row, Row>): string {
  const out = [
    "| scenario | msg/s delivered | CPU µs/msg | peak RSS MB | p50 | p99 | ratio to its ceiling | ratio to Go | notes |",
    "|---|---|---|---|---|---|---|---|---|",
  ];
  for (const r of rows) {
    if (r.failure) {
      out.push(`| ${r.scenario} | ${r.failure.replaceAll("|", "\\|")} | | | | | | | |`);
      continue;
    }
    const ceiling = ceilingOf.get(r);
    const rate = r.rate === null ? "-" : `${fmtInt(r.rate)}${r.rateUnit ? ` (${r.rateUnit})` : ""}`;
    out.push(
      `| ${r.scenario} | ${rate} | ${r.cpuUs === null ? "-" : r.cpuUs.toFixed(1)} | ${
        r.rssMb === null ? "-" : r.rssMb.toFixed(0)
      } | ${fmtMs(r.p50Ms)} | ${fmtMs(r.p99Ms)} | ${
        ceiling ? `${ratio(r, ceiling)} (vs ${ceiling.label ?? ceiling.scenario})` : "-"
      } | ${r.who === "ours" ? r.goRatio ?? ratio(r, goOf.get(r)) : "-"} | ${r.note} |`,
    );
  }
  return out.join("\n");
}

// ---------------------------------------------------------------------------------------------------------
// Main

/** Jiffies of all CPUs from /proc/stat: total and stolen by the hypervisor. */
async function cpuJiffies(): Promise<{ total: number; steal: number }> {
  const line = (await Deno.readTextFile("/proc/stat")).split("\n")[0].trim().split(/\s+/).slice(1).map(
    Number,
  );
  return { total: line.slice(0, 8).reduce((a, b) => a + b, 0), steal: line[7] ?? 0 };
}
const jiffiesBefore = await cpuJiffies();
const loadBefore = (await Deno.readTextFile("/proc/loadavg")).split(" ").slice(0, 3).join(" ");
const startedAt = new Date();
const dir = await Deno.makeTempDir({ prefix: "ka-compare-" });
let broker: Broker | null = null;
const rows: Row[] = [];
const ceilingOf = new Map<Row, Row>();
const goOf = new Map<Row, Row>();
const log = (s: string) => console.error(`[compare ${new Date().toISOString().slice(11, 19)}] ${s}`);
let goNote = "";

try {
  if (ONLY.has("grpc") || ONLY.has("batch")) {
    // Built before the broker starts; a failure shows in the rows that need it.
    await goLoadBinary().then(
      (path) => log(`load generator: ${path}`),
      (e) => log(`no load generator for the batch and gRPC rows: ${(e as Error).message}`),
    );
  }
  log(`starting the broker (${SECONDS} s per scenario)`);
  broker = await startBroker();
  const b = broker;
  cleanups.add(() => b.close()); // stops the JVM and removes its temp dir
  brokerPid = await pidListeningOn(b.port);
  const scenarioDir = async (name: string) => await Deno.makeTempDir({ dir, prefix: `${name}-` });
  const ours = async () => await startOurs(await scenarioDir("ours"), b.bootstrap);
  const go = GO_BINARY ? async () => await startGo(GO_BINARY, await scenarioDir("go"), b.bootstrap) : null;
  if (GO_BINARY) {
    try {
      await Deno.stat(GO_BINARY);
    } catch (e) {
      goNote = `Go service: ${GO_BINARY}: ${(e as Error).message}`;
    }
  } else goNote = "Go service: not given (--go-binary PATH)";

  const measureLogged = async (
    name: string,
    who: Row["who"],
    kind: Kind,
    start: () => Promise<Target>,
    kafka = true,
  ) => {
    log(`${name} ...`);
    const row = await measure(b, name, who, kind, start, { kafka });
    log(`${name}: ${row.failure ?? `${row.rate === null ? "-" : fmtInt(row.rate)}/s, ${row.note}`}`);
    return row;
  };
  const run = async (...args: Parameters<typeof measureLogged>) => {
    const row = await measureLogged(...args);
    rows.push(row);
    return row;
  };
  /** Ours and (when given) Go for one scenario, alternated over the rounds; a row of medians each. */
  const pair = async (kind: Kind, scenario: string): Promise<{ ours: Row; go: Row | null }> => {
    const oursRounds: Row[] = [];
    const goRounds: Row[] = [];
    for (let i = 0; i < ROUNDS; i++) {
      const tag = ROUNDS > 1 ? ` (round ${i + 1})` : "";
      const measureOurs = async () =>
        oursRounds.push(await measureLogged(`${scenario}, ours${tag}`, "ours", kind, ours));
      const measureGo = async () => {
        if (go) goRounds.push(await measureLogged(`${scenario}, Go${tag}`, "go", kind, go));
      };
      if (i % 2 === 0) await measureOurs().then(measureGo);
      else await measureGo().then(measureOurs);
    }
    const o = combine(`${scenario}, ours`, oursRounds);
    rows.push(o);
    if (!go) return { ours: o, go: null };
    const g = combine(`${scenario}, Go`, goRounds);
    rows.push(g);
    goOf.set(o, g);
    const medians = medianRatio(oursRounds, goRounds);
    if (ROUNDS > 1 && medians !== "-") {
      o.note += `; vs Go by round: ${oursRounds.map((r, i) => ratio(r, goRounds[i])).join(" / ")}`;
      o.goRatio = medians;
    }
    return { ours: o, go: g };
  };

  // HTTP, one message per request.
  if (ONLY.has("http")) {
    const bare = await run(
      "bare Deno.serve answering 200 (ceiling)",
      "ceiling",
      "http",
      () => startBaseline(dir, "whole"),
      false,
    );
    bare.label = "Deno.serve";
    const http = await pair("http", "HTTP 1 msg/request");
    ceilingOf.set(http.ours, bare);
    if (http.go) ceilingOf.set(http.go, bare);
  }
  // HTTP, NDJSON batches: its ceiling is kcat (Kafka is the limit, not HTTP), filled in below.
  const batchRows: Row[] = [];
  if (ONLY.has("batch")) {
    // Not a ratio's ceiling (kcat is): what Deno's server alone costs, in CPU and memory, for the same bodies.
    await run(
      `bare Deno.serve reading the ${BATCH_RECORDS}-record bodies (floor)`,
      "ceiling",
      "batch",
      () => startBaseline(dir, "stream"),
      false,
    );
    const batch = await pair("batch", `HTTP NDJSON ${BATCH_RECORDS} records/request`);
    batchRows.push(batch.ours);
    if (batch.go) batchRows.push(batch.go);
  }
  // gRPC Produce streams.
  if (ONLY.has("grpc")) {
    const echo = await run(
      "echo gRPC server, our layer (ceiling)",
      "ceiling",
      "grpc",
      () => startEcho(dir),
      false,
    );
    echo.label = "echo gRPC";
    const grpc = await pair("grpc", `gRPC ${GRPC_STREAMS} streams x ${GRPC_WINDOW} in flight`);
    ceilingOf.set(grpc.ours, echo);
    if (grpc.go) ceilingOf.set(grpc.go, echo);
  }
  // kcat -P with as many messages as the most any scenario delivered.
  if (ONLY.has("kcat")) {
    const most = Math.max(
      ...rows.filter((r) => r.who !== "ceiling" && !r.failure && r.rate !== null).map((r) =>
        r.rate! * SECONDS
      ),
      0,
    );
    const count = Math.min(2_000_000, Math.max(500_000, Math.round(most)));
    log(`kcat -P ${count} messages ...`);
    const kcat = await kcatCeiling(b, dir, count);
    log(`kcat: ${kcat.failure ?? `${fmtInt(kcat.rate ?? 0)}/s, ${kcat.note}`}`);
    rows.push(kcat);
    for (const r of batchRows) ceilingOf.set(r, kcat);
  }
} catch (e) {
  log(`run aborted: ${(e as Error).stack ?? e}`);
} finally {
  await cleanupAll();
  await Deno.remove(dir, { recursive: true }).catch(() => {});
}

const loadAfter = (await Deno.readTextFile("/proc/loadavg")).split(" ").slice(0, 3).join(" ");
const jiffiesAfter = await cpuJiffies();
const stealPct = 100 * (jiffiesAfter.steal - jiffiesBefore.steal) /
  Math.max(1, jiffiesAfter.total - jiffiesBefore.total);
const cmd = `deno run -A bench/compare.ts ${Deno.args.join(" ")}`.trim();
console.log(`\n## kafka-ambassador compare, ${startedAt.toISOString()}\n`);
console.log(
  `${SECONDS} s per scenario after a ${WARMUP_SECONDS} s warm-up${
    ROUNDS > 1 ? `, ours and Go ${ROUNDS} rounds each, alternated (medians)` : ""
  }; HTTP 1 msg/request: wrk -t1 -c${CONNECTIONS}; ` +
    `NDJSON batches: bench/load, ${CONNECTIONS} keep-alive connections; gRPC: bench/load, ${GRPC_STREAMS} streams ` +
    `x ${GRPC_WINDOW} in flight; ${VALUE_BYTES}-byte messages and gRPC records, ${RECORD_BYTES}-byte batch ` +
    `records; one single-node broker (KRaft, loopback), new topic of ${PARTITIONS} partitions per scenario; ` +
    `librdkafka ${
      Object.entries(KAFKA_SETTINGS).map(([k, v]) => `${k}=${v}`).join(", ")
    }; WAL fallback in a ` +
    `temp dir. ${navigator.hardwareConcurrency} cores shared by everything (broker, load generator, service).\n`,
);
console.log(table(rows, ceilingOf, goOf));
console.log("");
if (goNote) console.log(goNote);
const generatorCores = (kind: Kind) =>
  Math.max(0, ...rows.filter((r) => r.kind === kind).map((r) => r.generatorCores ?? 0)).toFixed(2);
if (rows.some((r) => r.generatorCores !== undefined)) {
  const grpcCores = generatorCores("grpc"), batchCores = generatorCores("batch");
  console.log(
    `Load generator bench/load (Go): up to ${grpcCores} cores in the gRPC rows, ${batchCores} in the batch ` +
      `rows. When generator, process and broker together use about all ${navigator.hardwareConcurrency} ` +
      "cores, the machine is the limit of that row.",
  );
}
console.log(
  `load average (1/5/15 min): before ${loadBefore}, after ${loadAfter}; CPU time stolen by the hypervisor ` +
    `during the run: ${stealPct.toFixed(1)}%`,
);
console.log(`command: ${cmd}`);
