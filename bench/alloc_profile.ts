/**
 * Where the service's JS thread allocates, per message: the service runs against a real broker with V8's
 * inspector open, wrk posts 100-byte messages (bench/post.lua, 64 connections), and over the load V8's sampling
 * heap profiler records every allocation, the ones the next collection frees included. Prints the bytes allocated
 * per accepted message (`kafka_client_requests_cnt`), by function (self) and by the call path that led there.
 * Bytes per message are a steadier figure than CPU on a shared machine: what a request allocates the young
 * generation's collections must scan, and V8's workers share that work.
 *
 * `--promoted` counts only what outlived the young generation's collections: what the old generation (and
 * the external memory of a promoted ArrayBuffer) holds until the next full collection. Check a finding against
 * V8's `--trace-gc` (the old generation's size after each scavenge): a single message's body, which Deno's server
 * hands over whole from native code, shows here (about 220 bytes a message) while the old generation stays level.
 * `--load batch` posts NDJSON batches of 1,000 such records instead (bench/batch.lua); bytes are then per record.
 *
 * Run: deno run -A bench/alloc_profile.ts [--mode fallback|always] [--load single|batch] [--promoted] [--seconds 5]
 *        [--top 20]
 */
import { startBroker } from "../tests/kafka/broker.ts";
import { runCommand } from "../tests/kafka/command.ts";
import { freePort, startService, v8Flags } from "../tests/support/service.ts";

const ROOT = new URL("..", import.meta.url).pathname;
const DENO = Deno.env.get("KA_DENO") ?? Deno.execPath();

function flag(name: string, fallback: string): string {
  const i = Deno.args.indexOf(`--${name}`);
  return i < 0 ? fallback : Deno.args[i + 1];
}
const MODE = flag("mode", "fallback");
const LOAD = flag("load", "single");
const PROMOTED = Deno.args.includes("--promoted");
if (LOAD !== "single" && LOAD !== "batch") throw new Error(`--load: single or batch, not ${LOAD}`);
const SECONDS = Number(flag("seconds", "5"));
const TOP = Number(flag("top", "20"));
/** One sample per this many bytes allocated, on average. */
const SAMPLING_BYTES = 1024;

interface HeapNode {
  id: number;
  callFrame: { functionName: string; url: string; lineNumber: number };
  children: HeapNode[];
}
interface HeapProfile {
  head: HeapNode;
  samples: Array<{ nodeId: number; size: number }>;
}

/** A reply of the DevTools protocol: its result, or its error. */
interface CdpReply {
  id: number;
  result?: Record<string, unknown>;
  error?: unknown;
}

/** A Chrome DevTools Protocol session over the inspector's WebSocket. */
async function inspect(
  port: number,
): Promise<{ send(method: string, params?: object): Promise<Record<string, unknown>> }> {
  const list = await (await fetch(`http://127.0.0.1:${port}/json/list`)).json();
  const ws = new WebSocket(list[0].webSocketDebuggerUrl);
  await new Promise((resolve, reject) => {
    ws.onopen = resolve;
    ws.onerror = reject;
  });
  const waiting = new Map<number, (msg: CdpReply) => void>();
  ws.onmessage = (e) => {
    const msg = JSON.parse(e.data) as CdpReply;
    waiting.get(msg.id)?.(msg);
    waiting.delete(msg.id);
  };
  let next = 1;
  return {
    send(method, params = {}) {
      const id = next++;
      ws.send(JSON.stringify({ id, method, params }));
      return new Promise((resolve, reject) =>
        waiting.set(
          id,
          (msg) => msg.error ? reject(new Error(JSON.stringify(msg.error))) : resolve(msg.result ?? {}),
        )
      );
    },
  };
}

function frameName(n: HeapNode): string {
  const { functionName, url, lineNumber } = n.callFrame;
  const file = url.replace(/^file:\/\/.*?\/(src|tests|bench)\//, "$1/");
  return `${functionName || "(anonymous)"} ${file}${file ? `:${lineNumber + 1}` : ""}`;
}

/** Bytes per message by function (self) and by path (the function and up to 3 callers). */
function summarize(profile: HeapProfile, messages: number): void {
  const nodes = new Map<number, { node: HeapNode; parent: HeapNode | null }>();
  const walk = (node: HeapNode, parent: HeapNode | null) => {
    nodes.set(node.id, { node, parent });
    for (const child of node.children) walk(child, node);
  };
  walk(profile.head, null);
  const self = new Map<string, number>();
  const paths = new Map<string, number>();
  let total = 0;
  for (const { nodeId, size } of profile.samples) {
    total += size;
    let entry = nodes.get(nodeId);
    const name = frameName(entry!.node);
    self.set(name, (self.get(name) ?? 0) + size);
    const path: string[] = [];
    for (let depth = 0; depth < 4 && entry !== undefined; depth++) {
      path.push(frameName(entry.node));
      entry = entry.parent === null ? undefined : nodes.get(entry.parent.id);
    }
    const key = path.join(" < ");
    paths.set(key, (paths.get(key) ?? 0) + size);
  }
  const perMessage = (bytes: number) => (bytes / messages).toFixed(1).padStart(8);
  console.log(`${messages} messages; ${perMessage(total)} B allocated per message (sampled)`);
  console.log("by function (self):");
  for (const [name, bytes] of [...self].sort((a, b) => b[1] - a[1]).slice(0, TOP)) {
    console.log(`${perMessage(bytes)} B  ${name}`);
  }
  console.log("by path:");
  for (const [name, bytes] of [...paths].sort((a, b) => b[1] - a[1]).slice(0, TOP)) {
    console.log(`${perMessage(bytes)} B  ${name}`);
  }
}

await using broker = await startBroker();
const dir = await Deno.makeTempDir({ prefix: "ka-alloc-" });
const inspectorPort = freePort();
await using svc = await startService({
  producer: { wal: { mode: MODE, path: `${dir}/wal` } },
  kafka: {
    brokers: [broker.bootstrap],
    "compression.codec": "none",
    "linger.ms": 5,
    "batch.num.messages": 10000,
    "statistics.interval.ms": 3600000,
  },
}, {
  dir,
  env: { KA_LOG_LEVEL: "warn" },
  command: (config) => ({
    cmd: DENO,
    args: [
      "run",
      "--allow-all",
      `--inspect=127.0.0.1:${inspectorPort}`,
      ...v8Flags(ROOT),
      `${ROOT}src/main.ts`,
      "-config",
      config,
    ],
  }),
});
{
  const url = `${svc.http}/topics/bench/messages`;
  const wrk = (seconds: number) =>
    runCommand("wrk", [
      "-t1",
      "-c64",
      `-d${seconds}s`,
      "-s",
      `${ROOT}bench/${LOAD === "batch" ? "batch" : "post"}.lua`,
      url,
    ], {
      timeoutMs: seconds * 1000 + 30_000,
    });
  await wrk(2); // warm-up: the hot functions optimized before sampling starts
  const session = await inspect(inspectorPort);
  await session.send("HeapProfiler.enable");
  const before = await svc.metric("kafka_client_requests_cnt");
  await session.send("HeapProfiler.startSampling", {
    samplingInterval: SAMPLING_BYTES,
    includeObjectsCollectedByMinorGC: !PROMOTED,
    includeObjectsCollectedByMajorGC: true,
  });
  await wrk(SECONDS);
  const { profile } = await session.send("HeapProfiler.stopSampling") as { profile: HeapProfile };
  const messages = await svc.metric("kafka_client_requests_cnt") - before;
  const shape = LOAD === "batch" ? "NDJSON batches of 1,000 100-byte records" : "100-byte messages";
  console.log(`mode ${MODE}, ${SECONDS} s of wrk -t1 -c64 with ${shape}${PROMOTED ? "; promoted only" : ""}`);
  summarize(profile, messages);
}
