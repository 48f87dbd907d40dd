/**
 * The same requests to this service and to the Go kafka-ambassador, side by side against one real broker: a
 * report of where their answers differ, to read against docs/compatibility.md (where each difference is meant to
 * be listed). Not a pass/fail check: the Go service answers some requests wrongly on purpose of this project
 * (200 for a message Kafka will refuse), and those rows differ by design.
 *
 *   deno run -A bench/compat_probe.ts --go-binary PATH
 *
 * HTTP: methods, content types, bodies, topic names, paths and query parameters on the produce listener, and
 * the monitoring listener's paths; status, Content-Type and body of each answer. gRPC (with grpcurl from
 * scripts/setup.sh, `.tools/bin/grpcurl`): ListTopics, Produce with good and bad records, an oversized message,
 * reflection and health. Both services get the same config (fallback WAL in a temp dir, the broker's address).
 */
import { stringify } from "yaml";
import { startBroker } from "../tests/kafka/broker.ts";
import { startService } from "../tests/support/service.ts";
import { freePorts, type Ports, serviceConfig, waitForPort } from "./side_by_side.ts";

const goAt = Deno.args.indexOf("--go-binary");
const GO_BINARY = goAt >= 0 ? Deno.args[goAt + 1] : undefined;
if (!GO_BINARY) {
  console.error("usage: deno run -A bench/compat_probe.ts --go-binary PATH");
  Deno.exit(2);
}
const ROOT = new URL("..", import.meta.url).pathname;
const GRPCURL = `${ROOT}.tools/bin/grpcurl`;
const TOPIC = "existing";
/** Made by a probe's message; the topic lists are asked for once both services see it. */
const NEW_TOPIC = "probe.new";
/** Longer bodies are shown by their length. */
const SHOWN_CHARS = 100;

interface HttpProbe {
  name: string;
  method: string;
  path: string;
  type?: string;
  body?: string;
  /** On the monitoring listener. */
  monitoring?: boolean;
}

const MESSAGES = `/topics/${TOPIC}/messages`;
const HTTP_PROBES: HttpProbe[] = [
  { name: "text/plain", method: "POST", path: MESSAGES, type: "text/plain", body: "hello" },
  { name: "application/json", method: "POST", path: MESSAGES, type: "application/json", body: '{"a":1}' },
  { name: "charset parameter", method: "POST", path: MESSAGES, type: "text/plain; charset=utf-8", body: "x" },
  { name: "octet-stream", method: "POST", path: MESSAGES, type: "application/octet-stream", body: "x" },
  { name: "no Content-Type", method: "POST", path: MESSAGES, body: "x" },
  { name: "application/xml", method: "POST", path: MESSAGES, type: "application/xml", body: "x" },
  { name: "empty body", method: "POST", path: MESSAGES, type: "text/plain", body: "" },
  { name: "PUT", method: "PUT", path: MESSAGES, type: "text/plain", body: "x" },
  { name: "PATCH", method: "PATCH", path: MESSAGES, type: "text/plain", body: "x" },
  { name: "GET", method: "GET", path: MESSAGES },
  { name: "DELETE", method: "DELETE", path: MESSAGES },
  { name: "OPTIONS", method: "OPTIONS", path: MESSAGES },
  { name: "HEAD", method: "HEAD", path: MESSAGES },
  { name: "new topic", method: "POST", path: `/topics/${NEW_TOPIC}/messages`, type: "text/plain", body: "x" },
  { name: "topic with $", method: "POST", path: "/topics/bad$topic/messages", type: "text/plain", body: "x" },
  {
    name: "250-character topic",
    method: "POST",
    path: `/topics/${"a".repeat(250)}/messages`,
    type: "text/plain",
  },
  { name: "percent-encoded topic", method: "POST", path: "/topics/ex%69sting/messages", type: "text/plain" },
  { name: "trailing slash", method: "POST", path: `${MESSAGES}/`, type: "text/plain", body: "x" },
  { name: "no /messages", method: "POST", path: `/topics/${TOPIC}`, type: "text/plain", body: "x" },
  { name: "double slash", method: "POST", path: `/${MESSAGES}`, type: "text/plain", body: "x" },
  {
    name: "upper-case path",
    method: "POST",
    path: `/Topics/${TOPIC}/messages`,
    type: "text/plain",
    body: "x",
  },
  { name: "ack=kafka", method: "POST", path: `${MESSAGES}?ack=kafka`, type: "text/plain", body: "x" },
  { name: "unknown parameter", method: "POST", path: `${MESSAGES}?foo=bar`, type: "text/plain", body: "x" },
  { name: "1.1 MB body", method: "POST", path: MESSAGES, type: "text/plain", body: "x".repeat(1_100_000) },
  {
    name: "NDJSON batch",
    method: "POST",
    path: MESSAGES,
    type: "application/x-ndjson",
    body: '{"value":"a"}\n',
  },
  { name: "root", method: "GET", path: "/" },
  { name: "topic list", method: "GET", path: "/topics" },
  { name: "topic list, slash", method: "GET", path: "/topics/" },
  { name: "POST topic list", method: "POST", path: "/topics" },
  { name: "metrics", method: "GET", path: "/metrics", monitoring: true },
  { name: "healthz", method: "GET", path: "/healthz", monitoring: true },
  { name: "pprof", method: "GET", path: "/debug/pprof/", monitoring: true },
];

const produce = (records: Array<Record<string, string>>) => records.map((r) => JSON.stringify(r)).join("");
const record = (topic: string, message: string, streamOffset: string) => ({ topic, message, streamOffset });
const GRPC_PROBES: Array<{ name: string; args: string[]; input?: string }> = [
  { name: "list (reflection)", args: ["list"] },
  { name: "health Check", args: ["grpc.health.v1.Health/Check"] },
  { name: "ListTopics", args: ["KafkaAmbassador/ListTopics"] },
  {
    name: "Produce, 3 records",
    args: ["-d", "@", "KafkaAmbassador/Produce"],
    input: produce(["1", "2", "3"].map((o) => record(TOPIC, btoa("hi"), o))),
  },
  {
    name: "Produce, empty topic",
    args: ["-d", "@", "KafkaAmbassador/Produce"],
    input: produce([record("", "", "7")]),
  },
  {
    name: "Produce, topic with $",
    args: ["-d", "@", "KafkaAmbassador/Produce"],
    input: produce([record("bad$t", btoa("hi"), "7")]),
  },
  {
    name: "Produce, 1.1 MB record",
    args: ["-max-msg-sz", "10000000", "-d", "@", "KafkaAmbassador/Produce"],
    input: produce([record(TOPIC, btoa("y".repeat(1_100_000)), "5")]),
  },
  {
    name: "Produce, 5 MB record",
    args: ["-max-msg-sz", "10000000", "-d", "@", "KafkaAmbassador/Produce"],
    input: produce([record(TOPIC, btoa("y".repeat(5_000_000)), "5")]),
  },
];

/** One line for an answer: status, media type and body (shortened). */
function shown(status: number | string, type: string | null, body: string): string {
  const text = body.length > SHOWN_CHARS ? `${body.slice(0, SHOWN_CHARS)}... (${body.length} chars)` : body;
  return `${status} ${type ?? "-"} ${JSON.stringify(text)}`;
}

async function httpAnswer(ports: Ports, probe: HttpProbe): Promise<string> {
  const port = probe.monitoring ? ports.monitoring : ports.http;
  const headers: Record<string, string> = probe.type ? { "content-type": probe.type } : {};
  try {
    const res = await fetch(`http://127.0.0.1:${port}${probe.path}`, {
      method: probe.method,
      headers,
      body: probe.body,
      redirect: "manual",
    });
    const body = await res.text();
    const location = res.headers.get("location");
    const type = res.headers.get("content-type")?.split(";")[0] ?? null;
    // The metrics' text differs by design (names added here); the Go names are compared below.
    return shown(res.status, type, probe.path === "/metrics" ? "" : location ? `-> ${location}` : body);
  } catch (err) {
    return `error: ${(err as Error).message}`;
  }
}

async function grpcAnswer(ports: Ports, probe: { args: string[]; input?: string }): Promise<string> {
  const method = probe.args[probe.args.length - 1];
  const proto = method.startsWith("KafkaAmbassador/")
    ? ["-import-path", `${ROOT}proto`, "-proto", "kafka_ambassador.proto"]
    : [];
  const child = new Deno.Command(GRPCURL, {
    args: ["-plaintext", ...proto, ...probe.args.slice(0, -1), `127.0.0.1:${ports.grpc}`, method],
    stdin: "piped",
    stdout: "piped",
    stderr: "piped",
  }).spawn();
  const writer = child.stdin.getWriter();
  await writer.write(new TextEncoder().encode(probe.input ?? ""));
  await writer.close();
  const out = await child.output();
  const text = (new TextDecoder().decode(out.stdout) + new TextDecoder().decode(out.stderr)).replace(
    /\s+/g,
    " ",
  );
  return shown(`exit ${out.code}`, null, text.trim());
}

/** Waits (10 s at most) until the service's topic list has `topic`: a new topic takes a moment to be listed. */
async function waitForTopic(ports: Ports, topic: string): Promise<void> {
  const deadline = Date.now() + 10_000;
  while (Date.now() < deadline) {
    const res = await fetch(`http://127.0.0.1:${ports.http}/topics`);
    if ((await res.text()).split("\n").includes(topic)) return;
    await new Promise((r) => setTimeout(r, 200));
  }
}

function metricNames(text: string): Set<string> {
  return new Set(text.split("\n").filter((l) => l.startsWith("# TYPE ")).map((l) => l.split(" ")[2]));
}

await using broker = await startBroker();
await broker.createTopic(TOPIC, 1);
const dir = await Deno.makeTempDir({ prefix: "ka-compat-" });
const goPorts = freePorts();
await Deno.mkdir(`${dir}/go/wal`, { recursive: true }); // the Go service does not create its WAL directory
await Deno.writeTextFile(`${dir}/go.yaml`, stringify(serviceConfig(`${dir}/go`, broker.bootstrap, goPorts)));
const go = new Deno.Command(GO_BINARY, {
  args: ["-config", `${dir}/go.yaml`],
  stdin: "null",
  stdout: "null",
  stderr: "null",
}).spawn();
let goExited = false;
go.status.then(() => goExited = true);
try {
  await Deno.mkdir(`${dir}/ours`);
  const ourPorts = freePorts();
  await using _ours = await startService(serviceConfig(`${dir}/ours`, broker.bootstrap, ourPorts), {
    dir: `${dir}/ours`,
    env: { KA_LOG_LEVEL: "warn" },
  });
  await waitForPort(goPorts.http, () => goExited, "the Go service");
  await waitForPort(goPorts.grpc, () => goExited, "the Go service (gRPC)");

  const rows: Array<[string, string, string]> = [];
  for (const probe of HTTP_PROBES) {
    if (probe.path === "/topics" && probe.method === "GET") {
      for (const ports of [goPorts, ourPorts]) await waitForTopic(ports, NEW_TOPIC);
    }
    const name = `HTTP ${probe.method} ${probe.name}`;
    rows.push([name, await httpAnswer(goPorts, probe), await httpAnswer(ourPorts, probe)]);
  }
  try {
    await Deno.stat(GRPCURL);
    for (const probe of GRPC_PROBES) {
      rows.push([`gRPC ${probe.name}`, await grpcAnswer(goPorts, probe), await grpcAnswer(ourPorts, probe)]);
    }
  } catch {
    console.log(`(no gRPC rows: ${GRPCURL} not found; run scripts/setup.sh)`);
  }
  const metrics = async (ports: Ports) =>
    metricNames(await (await fetch(`http://127.0.0.1:${ports.monitoring}/metrics`)).text());
  const [goNames, ourNames] = [await metrics(goPorts), await metrics(ourPorts)];

  const cell = (s: string) => s.replaceAll("|", "\\|");
  console.log("| request | Go service | this service | |\n|---|---|---|---|");
  for (const [name, theirs, ours] of rows) {
    console.log(
      `| ${cell(name)} | ${cell(theirs)} | ${cell(ours)} | ${theirs === ours ? "same" : "differs"} |`,
    );
  }
  const differing = rows.filter(([, a, b]) => a !== b).length;
  console.log(`\n${rows.length} requests, ${differing} answered differently.`);
  const missing = [...goNames].filter((n) => !ourNames.has(n));
  console.log(`Go metric names not served here: ${missing.length === 0 ? "none" : missing.join(", ")}`);
} finally {
  try {
    go.kill("SIGTERM");
  } catch { /* gone */ }
  await go.status;
  await Deno.remove(dir, { recursive: true }).catch(() => {});
}
