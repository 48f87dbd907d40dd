/**
 * A gRPC load generator in JavaScript, kept as an alternative to bench/load (Go, which bench/compare.ts uses): a
 * grpc-js client (not our server code) built from proto/kafka_ambassador.proto. On one JS thread it caps at
 * about 30,000 to 50,000 records/s, below what the servers can do. Opens STREAMS bidirectional `Produce`
 * streams, each on its own connection, and keeps up to WINDOW unanswered ProdRq of SIZE bytes in flight on each,
 * for SECONDS; then stops sending, waits (bounded) for the outstanding replies and prints one JSON line on
 * stdout.
 *
 *   deno run -A bench/grpc_load.ts --target 127.0.0.1:18282 --topic bench [--seconds 15] [--streams 4]
 *     [--window 1000] [--size 100]
 *
 * Output fields: sent, answered (ProdRs received), ok (answered without error), errors, firstError, seconds
 * (sending time), okPerSec (ok / seconds), p50Ms and p99Ms (per record, write to reply), cpuSeconds (this
 * process: user + system, so a caller can tell whether the generator itself is the limit).
 */
import * as grpc from "@grpc/grpc-js";
import * as protoLoader from "@grpc/proto-loader";
import { Buffer } from "node:buffer";

function flag(name: string, fallback: string): string {
  const i = Deno.args.indexOf(`--${name}`);
  return i >= 0 && i + 1 < Deno.args.length ? Deno.args[i + 1] : fallback;
}

const TARGET = flag("target", "127.0.0.1:18282");
const TOPIC = flag("topic", "bench");
const SECONDS = Number(flag("seconds", "15"));
const STREAMS = Number(flag("streams", "4"));
const WINDOW = Number(flag("window", "1000"));
const SIZE = Number(flag("size", "100"));
/** How long to wait for the replies still outstanding once sending stops. */
const DRAIN_MS = 15_000;

const PROTO = new URL("../proto/kafka_ambassador.proto", import.meta.url).pathname;
const definition = protoLoader.loadSync(PROTO, { longs: String, defaults: true });
// deno-lint-ignore no-explicit-any
const Client = (grpc.loadPackageDefinition(definition) as any)
  .KafkaAmbassador as grpc.ServiceClientConstructor;

interface ProdRs {
  streamOffset: string;
  error: string;
  code: number;
}

/** Clock ticks per second of the times in /proc/PID/stat. */
const TICK = Number(
  new TextDecoder().decode(
    new Deno.Command("getconf", { args: ["CLK_TCK"], stdout: "piped" }).outputSync().stdout,
  )
    .trim(),
) || 100;

/** User plus system CPU seconds of this process. */
function cpuSeconds(): number {
  const fields = Deno.readTextFileSync("/proc/self/stat").split(") ")[1].split(" ");
  return (Number(fields[11]) + Number(fields[12])) / TICK;
}

const value = Buffer.alloc(SIZE, "g");
let sending = true;
let sent = 0, answered = 0, ok = 0, errors = 0;
let firstError = "";
const latencies: number[] = [];

interface StreamState {
  client: grpc.Client;
  call: grpc.ClientDuplexStream<unknown, ProdRs>;
  next: number;
  inFlight: number;
  blocked: boolean;
  sentAt: Map<number, number>;
  ended: Promise<void>;
}

function pump(s: StreamState): void {
  while (sending && !s.blocked && s.inFlight < WINDOW) {
    const offset = ++s.next;
    s.sentAt.set(offset, performance.now());
    s.inFlight++;
    sent++;
    if (!s.call.write({ topic: TOPIC, message: value, streamOffset: offset })) s.blocked = true;
  }
}

function open(): StreamState {
  // A local subchannel pool gives each client its own HTTP/2 connection.
  const client = new Client(TARGET, grpc.credentials.createInsecure(), {
    "grpc.use_local_subchannel_pool": 1,
    "grpc.max_receive_message_length": 16 << 20,
  });
  const call = (client as unknown as {
    Produce(): grpc.ClientDuplexStream<unknown, ProdRs>;
  }).Produce();
  const s: StreamState = {
    client,
    call,
    next: 0,
    inFlight: 0,
    blocked: false,
    sentAt: new Map(),
    ended: Promise.resolve(),
  };
  s.ended = new Promise<void>((resolve) => {
    call.on("data", (rs: ProdRs) => {
      const offset = Number(rs.streamOffset);
      const at = s.sentAt.get(offset);
      if (at !== undefined) {
        latencies.push(performance.now() - at);
        s.sentAt.delete(offset);
      }
      s.inFlight--;
      answered++;
      if (rs.code === 0 && rs.error === "") ok++;
      else {
        errors++;
        firstError ||= `code ${rs.code}: ${rs.error}`;
      }
      pump(s);
    });
    call.on("drain", () => {
      s.blocked = false;
      pump(s);
    });
    call.on("error", (err: Error) => {
      firstError ||= `stream: ${err.message}`;
      resolve();
    });
    call.on("status", () => resolve());
    call.on("end", () => resolve());
  });
  return s;
}

function percentile(sorted: Float64Array, p: number): number {
  if (sorted.length === 0) return NaN;
  return sorted[Math.min(sorted.length - 1, Math.floor(sorted.length * p))];
}

const streams = Array.from({ length: STREAMS }, open);
const cpu0 = cpuSeconds();
const t0 = performance.now();
for (const s of streams) pump(s);
await new Promise((r) => setTimeout(r, SECONDS * 1000));
sending = false;
const seconds = (performance.now() - t0) / 1000;
const okAtStop = ok;
// Wait for the outstanding replies (bounded), then end the streams.
const deadline = Date.now() + DRAIN_MS;
while (streams.some((s) => s.inFlight > 0) && Date.now() < deadline) {
  await new Promise((r) => setTimeout(r, 50));
}
for (const s of streams) s.call.end();
await Promise.race([Promise.all(streams.map((s) => s.ended)), new Promise((r) => setTimeout(r, 5_000))]);
const cpu = cpuSeconds() - cpu0;
for (const s of streams) s.client.close();
const sorted = Float64Array.from(latencies).sort();
console.log(JSON.stringify({
  target: TARGET,
  streams: STREAMS,
  window: WINDOW,
  sent,
  answered,
  ok,
  errors,
  okAtStop,
  unanswered: sent - answered,
  firstError,
  seconds,
  okPerSec: ok / seconds,
  p50Ms: percentile(sorted, 0.5),
  p99Ms: percentile(sorted, 0.99),
  cpuSeconds: cpu,
}));
Deno.exit(0);
