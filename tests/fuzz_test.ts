/**
 * Random and mutated requests against the real service (no broker; `producer.wal.mode: always`, so every
 * accepted record is in the WAL): HTTP/1.1 over raw TCP (methods, paths, percent-encoding, headers, content
 * types, truncated, oversized and chunked bodies, pipelining, flipped bytes) and HTTP/2 frames on the gRPC
 * port. What must hold: the service never exits, every reply parses as HTTP, no 5xx other than 503, its peak
 * resident memory stays under a bound, and each record that got a 2xx is in the WAL afterwards.
 *
 * KA_FUZZ_CASES sets the number of cases (default 20,000); KA_FUZZ_SEED repeats a run (its seed is printed).
 */
import assert from "node:assert/strict";
import { encodeProdRq } from "../src/server/grpc/codec.ts";
import { frameAll } from "../src/server/grpc/framing.ts";
import { listWalDirectory, scanWal } from "../src/wal/scan.ts";
import { memoryOf, portOf, servicePid } from "./support/attack.ts";
import { FLAG, FRAME, frame, grpcHeaders, hpack, PREFACE } from "./support/h2_raw.ts";
import { freePort, startService } from "./support/service.ts";

const CASES = Number(Deno.env.get("KA_FUZZ_CASES") ?? 20_000);
const SEED = Number(Deno.env.get("KA_FUZZ_SEED") ?? Math.floor(Math.random() * 2 ** 32));
/** Cases in flight at once. */
const PARALLEL = 48;
/** How long a case waits for the server to close its connection. */
const CASE_TIMEOUT_MS = 5_000;
/** Peak resident memory allowed (the service alone peaks near 100 MiB at start-up). */
const BOUND_KIB = 400 * 1024;
const MAX_MESSAGE_BYTES = 64 * 1024;

const encoder = new TextEncoder();
const decoder = new TextDecoder();

/** mulberry32: small, fast, and the same sequence for the same seed. */
class Rng {
  #state: number;
  constructor(seed: number) {
    this.#state = seed >>> 0;
  }
  next(): number {
    let t = (this.#state = (this.#state + 0x6d2b79f5) >>> 0);
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 2 ** 32;
  }
  int(min: number, max: number): number {
    return min + Math.floor(this.next() * (max - min + 1));
  }
  chance(p: number): boolean {
    return this.next() < p;
  }
  pick<T>(items: readonly T[]): T {
    return items[Math.floor(this.next() * items.length)];
  }
  bytes(n: number): Uint8Array {
    const out = new Uint8Array(n);
    for (let i = 0; i < n; i++) out[i] = Math.floor(this.next() * 256);
    return out;
  }
  text(n: number, alphabet: string): string {
    let out = "";
    for (let i = 0; i < n; i++) out += alphabet[Math.floor(this.next() * alphabet.length)];
    return out;
  }
}

const TOPIC_CHARS = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._-";
const PRINTABLE = TOPIC_CHARS + " !\"#$&'()*+,/:;<=>?@[\\]^`{|}~%";
const ENCODINGS = ["%41", "%2F", "%2f", "%20", "%zz", "%", "%E9", "%C3%A9", "%00", "%7E", "+"];

/** One request of a case, when its outcome can be known: which topic a 2xx put records in. */
interface Known {
  topic: string;
  batch: boolean;
}

interface HttpRequest {
  bytes: Uint8Array;
  head: boolean;
  /** Whether its body is framed as it says (else the server may wait for more). */
  complete: boolean;
  known: Known | undefined;
}

function topicOf(r: Rng): string {
  if (r.chance(0.6)) return r.pick(["fuzz", "fuzz.a", "fuzz_b-1", "Fuzz.C"]);
  let topic = "";
  const parts = r.int(0, 6);
  for (let i = 0; i < parts; i++) {
    topic += r.chance(0.3) ? r.pick(ENCODINGS) : r.text(r.int(1, 8), r.chance(0.8) ? TOPIC_CHARS : PRINTABLE);
  }
  if (r.chance(0.02)) topic = r.text(r.int(240, 300), TOPIC_CHARS);
  return topic;
}

function queryOf(r: Rng): string {
  if (r.chance(0.5)) return "";
  const params: string[] = [];
  const n = r.int(1, 4);
  for (let i = 0; i < n; i++) {
    const name = r.pick(["ack", "ack", "key", "partition", "x", "ack[]", ""]);
    const value = name === "ack"
      ? r.pick(["none", "wal", "kafka", "NONE", "", "bogus", "%6Eone"])
      : name === "partition"
      ? r.pick(["0", "1", "-1", "2147483648", "abc", "", "1e3"])
      : r.text(r.int(0, 10), PRINTABLE.replace("&", "").replace("#", "")) +
        (r.chance(0.2) ? r.pick(ENCODINGS) : "");
    params.push(r.chance(0.1) ? name : `${name}=${value}`);
  }
  return `?${params.join("&")}`;
}

function bodyOf(r: Rng, batch: boolean): Uint8Array {
  if (batch) {
    const lines: string[] = [];
    const n = r.int(0, 20);
    for (let i = 0; i < n; i++) {
      lines.push(
        r.pick([
          () => JSON.stringify({ value: r.text(r.int(0, 50), PRINTABLE) }),
          () =>
            JSON.stringify({ key: r.text(r.int(0, 5), TOPIC_CHARS), value: r.text(r.int(0, 50), PRINTABLE) }),
          () => JSON.stringify({ value: r.text(4, PRINTABLE), partition: r.int(-2, 3) }),
          () => "",
          () => "{not json",
          () => JSON.stringify([1, 2]),
          () => r.text(r.int(1, 30), PRINTABLE),
        ])(),
      );
    }
    return encoder.encode(lines.join(r.chance(0.8) ? "\n" : "\r\n"));
  }
  const size = r.chance(0.6)
    ? r.int(0, 200)
    : r.chance(0.8)
    ? r.int(200, 20_000)
    : r.int(MAX_MESSAGE_BYTES - 10, MAX_MESSAGE_BYTES + 100);
  return r.chance(0.5) ? r.bytes(size) : encoder.encode(r.text(size, PRINTABLE));
}

/** A chunked body: valid chunks, or (`garbage`) bad sizes and missing line ends. */
function chunked(r: Rng, body: Uint8Array, garbage: boolean): Uint8Array {
  const parts: Uint8Array[] = [];
  for (let at = 0; at < body.byteLength;) {
    const n = Math.min(body.byteLength - at, r.int(1, 4096));
    const size = garbage && r.chance(0.3)
      ? r.pick(["zz", "-1", "fffffffffffffff", "", "1;ext=1"])
      : n.toString(16);
    parts.push(
      encoder.encode(`${size}\r\n`),
      body.subarray(at, at + n),
      encoder.encode(garbage && r.chance(0.3) ? "" : "\r\n"),
    );
    at += n;
  }
  parts.push(encoder.encode(garbage && r.chance(0.5) ? "0\r\n" : "0\r\n\r\n"));
  return concat(parts);
}

function concat(parts: Uint8Array[]): Uint8Array {
  const out = new Uint8Array(parts.reduce((n, p) => n + p.byteLength, 0));
  let at = 0;
  for (const p of parts) {
    out.set(p, at);
    at += p.byteLength;
  }
  return out;
}

function httpRequest(r: Rng, last: boolean, allowHead: boolean): HttpRequest {
  const methods = [
    "POST",
    "POST",
    "POST",
    "POST",
    "POST",
    "POST",
    "POST",
    "POST",
    "GET",
    "PUT",
    "DELETE",
    "OPTIONS",
    "PATCH",
    "FOO",
  ];
  const method = allowHead && r.chance(0.03) ? "HEAD" : r.pick(methods);
  const rawTopic = topicOf(r);
  const route = r.chance(0.85);
  const path = route ? `/topics/${rawTopic}/messages` : r.pick([
    "/topics",
    "/openapi.json",
    "/",
    "*",
    `/topics/${rawTopic}`,
    `/topics/${rawTopic}/messages/x`,
    `/${r.text(r.int(0, 30), PRINTABLE.replace("?", "").replace("#", "").replace(" ", ""))}`,
    `/${"a".repeat(r.int(8_000, 20_000))}`,
  ]);
  const query = queryOf(r);
  const type = r.pick([
    undefined,
    "text/plain",
    "application/json",
    "application/octet-stream",
    "text/plain; charset=utf-8",
    "TEXT/PLAIN",
    "application/x-ndjson",
    "application/jsonl",
    "multipart/form-data; boundary=x",
    r.text(r.int(0, 20), PRINTABLE),
  ]);
  const batch = type === "application/x-ndjson" || type === "application/jsonl";
  const body = method === "GET" || method === "HEAD" ? new Uint8Array(0) : bodyOf(r, batch);
  const version = r.chance(0.96)
    ? "HTTP/1.1"
    : r.pick(["HTTP/1.0", "HTTP/2.0", "HTTP/9.9", "http/1.1", "HTTP/1.1x"]);
  const headers: string[] = ["Host: fuzz"];
  if (type !== undefined) headers.push(`Content-Type: ${type}`);
  const framing = r.next();
  let payload = body;
  let valid = version === "HTTP/1.1";
  if (framing < 0.8) {
    headers.push(`Content-Length: ${body.byteLength}`);
  } else if (framing < 0.85) {
    headers.push(
      `Content-Length: ${
        r.pick([body.byteLength + r.int(1, 100), Math.max(0, body.byteLength - r.int(1, 10)), -1])
      }`,
    );
    valid = false;
  } else if (framing < 0.95) {
    headers.push("Transfer-Encoding: chunked");
    payload = chunked(r, body, false);
  } else {
    headers.push("Transfer-Encoding: chunked");
    if (r.chance(0.5)) headers.push(`Content-Length: ${body.byteLength}`);
    payload = chunked(r, body, true);
    valid = false;
  }
  const extra = r.int(0, 3);
  for (let i = 0; i < extra; i++) headers.push(`X-Fuzz-${i}: ${r.text(r.int(0, 40), PRINTABLE)}`);
  if (r.chance(0.02)) {
    headers.push(r.pick([
      `X-Big: ${"b".repeat(r.int(10_000, 70_000))}`,
      "X-Bad\u0000: x",
      "Bad Header: x",
      ": empty",
      `Content-Length: ${body.byteLength}`,
      "Expect: 100-continue-ish",
      ...Array.from({ length: 5 }, (_, i) => `X-Many-${i}: ${"m".repeat(100)}`),
    ]));
    valid = false;
  }
  if (last) headers.push("Connection: close");
  const head = encoder.encode(`${method} ${path}${query} ${version}\r\n${headers.join("\r\n")}\r\n\r\n`);
  const known = valid && ["POST", "PUT", "PATCH"].includes(method) && route
    ? { topic: decodeTopic(rawTopic), batch }
    : undefined;
  const complete = framing < 0.8 || (framing >= 0.85 && framing < 0.95);
  return { bytes: concat([head, payload]), head: method === "HEAD", complete, known };
}

function decodeTopic(raw: string): string {
  try {
    return raw.includes("%") ? decodeURIComponent(raw) : raw;
  } catch {
    return raw;
  }
}

interface HttpCase {
  bytes: Uint8Array;
  /** Per request, in order; undefined when bytes were mutated, cut or framed wrong (outcomes not attributable). */
  requests: HttpRequest[] | undefined;
  /** Per request, whether it is HEAD (its reply has no body); none is when bytes were mutated or cut. */
  heads: boolean[];
  /** Whether to shut the write side after sending: the request may never be complete. */
  halfClose: boolean;
}

function httpCase(r: Rng): HttpCase {
  const mutate = r.chance(0.15);
  const cut = !mutate && r.chance(0.08);
  const n = r.chance(0.15) ? r.int(2, 4) : 1;
  // A HEAD reply has no body: only a lone HEAD request keeps its reply attributable.
  const requests = Array.from(
    { length: n },
    (_, i) => httpRequest(r, i === n - 1, !mutate && !cut && n === 1),
  );
  let bytes = concat(requests.map((q) => q.bytes));
  if (mutate) {
    bytes = bytes.slice();
    const flips = r.int(1, 8);
    for (let i = 0; i < flips; i++) bytes[r.int(0, bytes.byteLength - 1)] = r.int(0, 255);
  }
  if (cut) bytes = bytes.subarray(0, r.int(0, bytes.byteLength - 1));
  // A body framed wrong takes bytes of the next request, or leaves some: replies no longer match requests.
  const complete = requests.every((q) => q.complete);
  const attributable = !mutate && !cut && complete;
  return {
    bytes,
    heads: requests.map((q) => q.head),
    requests: attributable ? requests : undefined,
    halfClose: !attributable,
  };
}

/** A reply as parsed off the wire. */
interface Reply {
  status: number;
  body: string;
}

/** Parses the replies in `bytes`; throws, saying where, if they are not well-formed HTTP/1.1. */
function parseReplies(bytes: Uint8Array, heads: boolean[]): Reply[] {
  const replies: Reply[] = [];
  const text = decoder.decode(bytes);
  // Latin-1 would keep offsets exact; the replies are ASCII except in bodies, which are read by length.
  const raw = bytes;
  let at = 0;
  while (at < raw.byteLength) {
    const headEnd = indexOf(raw, "\r\n\r\n", at);
    if (headEnd < 0) throw new Error(`truncated reply head: ${JSON.stringify(text.slice(at, at + 80))}`);
    const head = decoder.decode(raw.subarray(at, headEnd));
    const m = /^HTTP\/1\.[01] (\d{3}) [^\r\n]*/.exec(head);
    if (m === null) throw new Error(`bad status line: ${JSON.stringify(head.slice(0, 80))}`);
    const status = Number(m[1]);
    const length = /\r\ncontent-length: *(\d+)/i.exec(head);
    const isChunked = /\r\ntransfer-encoding: *chunked/i.test(head);
    let bodyStart = headEnd + 4;
    let body = "";
    if (
      heads[replies.length] === true || status === 204 || status === 304 || (status >= 100 && status < 200)
    ) {
      // no body
    } else if (length !== null) {
      const n = Number(length[1]);
      if (bodyStart + n > raw.byteLength) throw new Error(`truncated reply body (status ${status})`);
      body = decoder.decode(raw.subarray(bodyStart, bodyStart + n));
      bodyStart += n;
    } else if (isChunked) {
      for (;;) {
        const lineEnd = indexOf(raw, "\r\n", bodyStart);
        if (lineEnd < 0) throw new Error(`truncated chunked reply (status ${status})`);
        const size = parseInt(decoder.decode(raw.subarray(bodyStart, lineEnd)), 16);
        if (!(size >= 0)) throw new Error(`bad chunk size in a reply (status ${status})`);
        body += decoder.decode(raw.subarray(lineEnd + 2, lineEnd + 2 + size));
        bodyStart = lineEnd + 2 + size + 2;
        if (size === 0) break;
      }
    } else {
      body = decoder.decode(raw.subarray(bodyStart));
      bodyStart = raw.byteLength;
    }
    replies.push({ status, body });
    at = bodyStart;
  }
  return replies;
}

function indexOf(bytes: Uint8Array, needle: string, from: number): number {
  const n = encoder.encode(needle);
  outer: for (let i = from; i + n.byteLength <= bytes.byteLength; i++) {
    for (let j = 0; j < n.byteLength; j++) if (bytes[i + j] !== n[j]) continue outer;
    return i;
  }
  return -1;
}

/** Writes `bytes`, optionally shuts the write side, and reads until the server closes (or the case times out). */
async function exchange(
  port: number,
  bytes: Uint8Array,
  halfClose: boolean,
): Promise<{ data: Uint8Array; timedOut: boolean }> {
  const conn = await Deno.connect({ hostname: "127.0.0.1", port });
  const chunks: Uint8Array[] = [];
  let timedOut = false;
  const timer = setTimeout(() => {
    timedOut = true;
    try {
      conn.close();
    } catch { /* closed */ }
  }, CASE_TIMEOUT_MS);
  const reading = (async () => {
    const buf = new Uint8Array(64 * 1024);
    for (;;) {
      const n = await conn.read(buf).catch(() => null);
      if (n === null) return;
      chunks.push(buf.slice(0, n));
    }
  })();
  try {
    for (let at = 0; at < bytes.byteLength;) at += await conn.write(bytes.subarray(at));
    if (halfClose) await conn.closeWrite();
  } catch {
    // The server closed first (a refused head, an oversized body): what it said is still read.
  }
  await reading;
  clearTimeout(timer);
  try {
    conn.close();
  } catch { /* closed */ }
  return { data: concat(chunks), timedOut };
}

/** Random HTTP/2 frames on the gRPC port: a preface (mostly right), then frames valid, odd or random. */
function h2Case(r: Rng): Uint8Array {
  const parts: Uint8Array[] = [r.chance(0.95) ? PREFACE : r.bytes(24)];
  parts.push(frame(FRAME.SETTINGS, 0, 0, new Uint8Array(0)));
  const n = r.int(1, 10);
  const stream = () => r.pick([1, 3, 5, 7, 2, 0, 2 ** 31 - 1]);
  for (let i = 0; i < n; i++) {
    parts.push(
      r.pick([
        () => {
          const id = stream();
          const rq = encodeProdRq({
            topic: r.pick(["fuzz.grpc", "", "bad topic", r.text(r.int(1, 20), TOPIC_CHARS)]),
            message: r.bytes(r.int(0, 100)),
            streamOffset: BigInt(r.int(0, 1000)),
            ack: r.pick(["", "none", "wal", "kafka", "bogus"]),
            headers: [],
          });
          const path = r.pick([
            "/KafkaAmbassador/Produce",
            "/KafkaAmbassador/ListTopics",
            "/grpc.health.v1.Health/Check",
            "/x/y",
          ]);
          return concat([
            frame(FRAME.HEADERS, FLAG.END_HEADERS, id, grpcHeaders(path)),
            frame(FRAME.DATA, r.chance(0.5) ? FLAG.END_STREAM : 0, id, frameAll([rq], rq.byteLength)),
          ]);
        },
        () =>
          frame(
            FRAME.HEADERS,
            r.pick([0, FLAG.END_HEADERS, FLAG.END_HEADERS | FLAG.END_STREAM]),
            stream(),
            hpack([[
              r.pick([":method", ":path", "content-type", "te", "x"]),
              r.text(r.int(0, 20), PRINTABLE),
            ]]),
          ),
        () => frame(FRAME.HEADERS, FLAG.END_HEADERS, stream(), r.bytes(r.int(0, 40))),
        () => frame(FRAME.DATA, r.pick([0, FLAG.END_STREAM]), stream(), r.bytes(r.int(0, 300))),
        () => frame(FRAME.RST_STREAM, 0, stream(), r.bytes(r.pick([4, 4, 3]))),
        () => frame(FRAME.PING, r.pick([0, FLAG.ACK]), r.pick([0, 1]), r.bytes(r.pick([8, 8, 7]))),
        () => frame(FRAME.WINDOW_UPDATE, 0, r.pick([0, 1]), r.bytes(4)),
        () => frame(FRAME.SETTINGS, r.pick([0, FLAG.ACK]), r.pick([0, 0, 1]), r.bytes(r.pick([0, 6, 12, 5]))),
        () => frame(FRAME.GOAWAY, 0, 0, r.bytes(8)),
        () => frame(r.int(0, 20), r.int(0, 255), stream(), r.bytes(r.int(0, 50))),
        () => r.bytes(r.int(1, 30)),
      ])(),
    );
  }
  return concat(parts);
}

Deno.test(`fuzz: ${CASES} random HTTP and HTTP/2 cases against the service`, async () => {
  console.log(`fuzz: seed ${SEED} (KA_FUZZ_SEED=${SEED} repeats this run), ${CASES} cases`);
  const dir = await Deno.makeTempDir({ prefix: "ka-fuzz-" });
  const limits = { header_timeout: "1s", idle_timeout: "1s" };
  const svc = await startService({
    server: {
      http: { listen: `127.0.0.1:${freePort()}`, body_timeout: "1s", ...limits },
      grpc: { listen: `127.0.0.1:${freePort()}`, ...limits },
    },
    kafka: { brokers: ["127.0.0.1:1"], "message.max.bytes": String(MAX_MESSAGE_BYTES) },
    producer: { wal: { mode: "always", path: `${dir}/wal` } },
  }, { dir });
  const pid = servicePid(svc);
  const httpPort = portOf(svc.http);
  const grpcPort = Number(svc.grpc.split(":").pop());
  const r = new Rng(SEED);
  const accepted = new Map<string, number>();
  const statuses = new Map<number, number>();
  const problems: string[] = [];
  /** The distinct reasons of 503 replies, for the summary. */
  const unavailable = new Set<string>();
  let exited = false;
  svc.exited.then(() => exited = true);
  let timedOut = 0, h2TimedOut = 0, h2Cases = 0, next = 0;

  const runOne = async (index: number, rng: Rng) => {
    if (rng.chance(0.15)) {
      h2Cases++;
      const { timedOut: late } = await exchange(grpcPort, h2Case(rng), true);
      if (late) h2TimedOut++;
      return;
    }
    const c = httpCase(rng);
    const { data, timedOut: late } = await exchange(httpPort, c.bytes, c.halfClose);
    if (late) timedOut++;
    let replies: Reply[];
    try {
      replies = parseReplies(data, c.heads);
    } catch (err) {
      problems.push(`case ${index}: ${(err as Error).message}`);
      return;
    }
    for (const [i, reply] of replies.entries()) {
      statuses.set(reply.status, (statuses.get(reply.status) ?? 0) + 1);
      if (reply.status === 503) unavailable.add(reply.body.startsWith("{") ? "(a batch)" : reply.body.trim());
      if (reply.status >= 500 && reply.status !== 503) {
        problems.push(`case ${index}: status ${reply.status}: ${reply.body.slice(0, 100)}`);
      }
      const known = c.requests?.[i]?.known;
      if (known === undefined || reply.status < 200 || reply.status > 299) continue;
      const records = known.batch ? JSON.parse(reply.body).count - JSON.parse(reply.body).errors.length : 1;
      accepted.set(known.topic, (accepted.get(known.topic) ?? 0) + records);
    }
  };
  // Each case draws from its own generator, seeded from the run's, so a case can be replayed alone.
  const worker = async () => {
    while (next < CASES && !exited) {
      const index = next++;
      await runOne(index, new Rng(r.next() * 2 ** 32));
    }
  };
  const started = performance.now();
  await Promise.all(Array.from({ length: PARALLEL }, worker));
  const seconds = (performance.now() - started) / 1000;

  const memory = memoryOf(pid);
  assert.equal(exited, false, "the service exited during the run");
  const health = await fetch(`${svc.monitoring}/healthz`);
  await health.body?.cancel();
  assert.equal(health.status, 200);
  assert.equal(await svc.stop("SIGTERM"), 0);

  const inWal = new Map<string, number>();
  for await (const line of scanWal(`${dir}/wal`, await listWalDirectory(`${dir}/wal`))) {
    if (line.kind === "record") inWal.set(line.record.topic, (inWal.get(line.record.topic) ?? 0) + 1);
  }
  const missing = [...accepted].filter(([topic, n]) => (inWal.get(topic) ?? 0) < n);
  console.log(JSON.stringify({
    seed: SEED,
    cases: CASES,
    h2_cases: h2Cases,
    seconds: Number(seconds.toFixed(1)),
    statuses: Object.fromEntries([...statuses].sort((a, b) => a[0] - b[0])),
    timed_out: { http: timedOut, h2: h2TimedOut },
    reasons_503: [...unavailable],
    accepted_records: [...accepted.values()].reduce((a, b) => a + b, 0),
    wal_records: [...inWal.values()].reduce((a, b) => a + b, 0),
    peak_rss_mib: Math.round(memory.hwmKiB / 1024),
    problems: problems.length,
  }));
  await Deno.remove(dir, { recursive: true });
  assert.deepEqual(problems.slice(0, 20), [], `seed ${SEED}`);
  assert.deepEqual(missing, [], `seed ${SEED}: records answered 2xx but not in the WAL`);
  assert.ok(memory.hwmKiB < BOUND_KIB, `seed ${SEED}: peak RSS ${memory.hwmKiB} KiB, bound ${BOUND_KIB} KiB`);
});
