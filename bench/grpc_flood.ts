/**
 * What a gRPC flood costs the service in memory: CONNECTIONS clients that each open 128 Produce streams with a
 * stream window of 0 (the service can never send them a reply) and send records of SIZE bytes on all of them as
 * fast as the service's HTTP/2 flow-control windows allow, for SECONDS. The service (this worktree, against one
 * real broker, WAL fallback) runs once per round with its defaults and once with the `--b KEY=VALUE` settings
 * (repeatable, e.g. `--b server.grpc.max_session_memory=10MiB`), alternating; per run: peak RSS (VmHWM), RSS
 * sampled every second, RSS 15 s after the flood (what the service keeps once it is over), records the clients
 * sent, and connections the service ended (GOAWAY).
 *
 * The clients run in a child process (this script with `--client`), so that they do not share the service's
 * event loop; on 2 cores they share its CPU, as any local attacker would.
 *
 * Run: deno run -A bench/grpc_flood.ts [--connections 32] [--seconds 20] [--size 1000] [--rounds 3]
 *      [--b KEY=VALUE ...]
 */
import { parse } from "yaml";
import { startBroker } from "../tests/kafka/broker.ts";
import { freePort, startService } from "../tests/support/service.ts";
import {
  Flag,
  frame,
  FRAME_HEADER_BYTES,
  FrameType,
  PREFACE,
  Setting,
  settingsFrame,
} from "../src/server/http2/frame.ts";
import { encodeHeaders } from "../src/server/http2/hpack.ts";
import { memoryMb, pidListeningOn } from "./process.ts";

const ROOT = new URL("..", import.meta.url).pathname;
const STREAMS = 128;

function flag(name: string, fallback: string): string {
  const i = Deno.args.indexOf(`--${name}`);
  return i < 0 ? fallback : Deno.args[i + 1];
}

const CONNECTIONS = Number(flag("connections", "32"));
const SECONDS = Number(flag("seconds", "20"));
const SIZE = Number(flag("size", "1000"));
const ROUNDS = Number(flag("rounds", "3"));

/** A varint as protobuf writes it. */
function varint(n: number): number[] {
  const out: number[] = [];
  while (n >= 0x80) {
    out.push((n & 0x7f) | 0x80);
    n >>>= 7;
  }
  out.push(n);
  return out;
}

/** `count` gRPC messages of one ProdRq (topic, message, stream_offset) each. */
function records(topic: string, size: number, count: number): Uint8Array {
  const t = new TextEncoder().encode(topic);
  const body = [
    0x0a,
    ...varint(t.length),
    ...t,
    0x12,
    ...varint(size),
    ...new Uint8Array(size).fill(0x76),
    0x18,
    1,
  ];
  const one = new Uint8Array([0, ...[24, 16, 8, 0].map((s) => (body.length >>> s) & 0xff), ...body]);
  const out = new Uint8Array(one.length * count);
  for (let i = 0; i < count; i++) out.set(one, i * one.length);
  return out;
}

/** One flooding connection; resolves with the records sent and whether the service sent GOAWAY. */
async function floodConnection(port: number, topic: string, until: number): Promise<[number, boolean]> {
  const conn = await Deno.connect({ hostname: "127.0.0.1", port });
  const perFrame = Math.max(1, Math.floor(16_000 / (SIZE + 30)));
  const data = records(topic, SIZE, perFrame);
  const streams = new Map<number, number>(); // id -> send window
  let connWindow = 65_535, initial = 65_535, goaway = false, closed = false;
  /** SETTINGS acknowledgements owed, sent with the next write (one writer, so that frames never interleave). */
  let acks = 0;
  let wake: (() => void) | undefined;
  const block = encodeHeaders([
    [":method", "POST"],
    [":scheme", "http"],
    [":path", "/KafkaAmbassador/Produce"],
    [":authority", "bench"],
    ["content-type", "application/grpc"],
    ["te", "trailers"],
  ]);
  const opening = [PREFACE, settingsFrame([[Setting.INITIAL_WINDOW_SIZE, 0]])];
  for (let i = 0; i < STREAMS; i++) {
    streams.set(1 + 2 * i, initial);
    opening.push(frame(FrameType.HEADERS, Flag.END_HEADERS, 1 + 2 * i, block));
  }
  for (const bytes of opening) await conn.write(bytes);
  // Reads what the service sends: its windows, SETTINGS (acknowledged), GOAWAY and resets.
  const reading = (async () => {
    let buf = new Uint8Array(0);
    const chunk = new Uint8Array(64 * 1024);
    for (;;) {
      const n = await conn.read(chunk).catch(() => null);
      if (n === null) break;
      const joined = new Uint8Array(buf.length + n);
      joined.set(buf);
      joined.set(chunk.subarray(0, n), buf.length);
      buf = joined;
      while (buf.length >= FRAME_HEADER_BYTES) {
        const view = new DataView(buf.buffer, buf.byteOffset);
        const length = view.getUint32(0) >>> 8, type = buf[3], flags = buf[4];
        const id = view.getUint32(5) & 0x7fff_ffff;
        if (buf.length < FRAME_HEADER_BYTES + length) break;
        const p = new DataView(buf.buffer, buf.byteOffset + FRAME_HEADER_BYTES, length);
        if (type === FrameType.WINDOW_UPDATE) {
          const inc = p.getUint32(0) & 0x7fff_ffff;
          if (id === 0) connWindow += inc;
          else if (streams.has(id)) streams.set(id, streams.get(id)! + inc);
        } else if (type === FrameType.SETTINGS && !(flags & Flag.ACK)) {
          for (let at = 0; at + 6 <= length; at += 6) {
            if (p.getUint16(at) !== Setting.INITIAL_WINDOW_SIZE) continue;
            const value = p.getUint32(at + 2);
            for (const [sid, w] of streams) streams.set(sid, w + value - initial);
            initial = value;
          }
          acks++;
        } else if (type === FrameType.GOAWAY) goaway = true;
        else if (type === FrameType.RST_STREAM) streams.delete(id);
        buf = buf.subarray(FRAME_HEADER_BYTES + length);
      }
      wake?.();
    }
    closed = true;
    wake?.();
  })();
  let sent = 0;
  while (Date.now() < until && !goaway && !closed) {
    const out: Uint8Array[] = [];
    for (; acks > 0; acks--) out.push(frame(FrameType.SETTINGS, Flag.ACK, 0));
    let frames = 0;
    for (const [id, w] of streams) {
      if (w < data.length || connWindow < data.length) continue;
      streams.set(id, w - data.length);
      connWindow -= data.length;
      out.push(frame(FrameType.DATA, 0, id, data));
      frames++;
    }
    if (frames === 0 && out.length === 0) {
      await new Promise<void>((r) => {
        wake = r;
        setTimeout(r, 200);
      });
      continue;
    }
    const all = new Uint8Array(out.reduce((n, f) => n + f.length, 0));
    let at = 0;
    for (const f of out) {
      all.set(f, at);
      at += f.length;
    }
    try {
      for (let w = 0; w < all.length;) w += await conn.write(all.subarray(w));
    } catch {
      break;
    }
    sent += perFrame * frames;
  }
  try {
    conn.close();
  } catch { /* closed by the service */ }
  await reading;
  return [sent, goaway];
}

if (Deno.args.includes("--client")) {
  const port = Number(flag("port", "0"));
  const until = Date.now() + SECONDS * 1000;
  const results = await Promise.all(
    Array.from({ length: CONNECTIONS }, () => floodConnection(port, "flood", until)),
  );
  console.log(JSON.stringify({
    records: results.reduce((n, [s]) => n + s, 0),
    goaways: results.filter(([, g]) => g).length,
  }));
  Deno.exit(0);
}

/** The `--b KEY=VALUE` settings as a nested config. */
function overrides(): Record<string, unknown> {
  const out: Record<string, unknown> = {};
  for (let i = 0; i < Deno.args.length - 1; i++) {
    if (Deno.args[i] !== "--b") continue;
    const [key, value] = Deno.args[i + 1].split("=", 2);
    const path = key.split(".");
    let at = out as Record<string, unknown>;
    for (const part of path.slice(0, -1)) at = (at[part] ??= {}) as Record<string, unknown>;
    at[path.at(-1)!] = parse(value);
  }
  return out;
}

/** `b` merged into a copy of `a`. */
function merge(a: Record<string, unknown>, b: Record<string, unknown>): Record<string, unknown> {
  const out = structuredClone(a);
  for (const [k, v] of Object.entries(b)) {
    out[k] = typeof v === "object" && v !== null && typeof out[k] === "object"
      ? merge(out[k] as Record<string, unknown>, v as Record<string, unknown>)
      : v;
  }
  return out;
}

/** One run: a fresh service with `extra` over the base config, flooded; its figures as a line. */
async function floodRun(dir: string, extra: Record<string, unknown>): Promise<string> {
  const base = {
    server: { grpc: { listen: `127.0.0.1:${freePort()}` } },
    producer: { wal: { mode: "fallback", path: `${dir}/wal` } },
    kafka: { brokers: [broker.bootstrap] },
  };
  await using svc = await startService(merge(base, extra), { dir, env: { KA_LOG_LEVEL: "warn" } });
  const port = svc.grpc.split(":").at(-1)!;
  const pid = await pidListeningOn(svc.http);
  const client = new Deno.Command(Deno.execPath(), {
    args: [
      "run",
      "-A",
      `--config=${ROOT}deno.json`,
      new URL(import.meta.url).pathname,
      "--client",
      "--port",
      port,
    ]
      .concat(["--connections", String(CONNECTIONS), "--seconds", String(SECONDS), "--size", String(SIZE)]),
    stdout: "piped",
  }).spawn();
  const rss: number[] = [];
  const sampler = setInterval(() => rss.push(Math.round(memoryMb(pid, "VmRSS"))), 1000);
  const result = JSON.parse(new TextDecoder().decode((await client.output()).stdout));
  await new Promise((r) => setTimeout(r, 15_000));
  clearInterval(sampler);
  return `peak RSS ${Math.round(memoryMb(pid, "VmHWM"))} MB, RSS 15 s after ${
    Math.round(memoryMb(pid, "VmRSS"))
  } MB, ` +
    `records sent ${result.records}, connections ended by the service ${result.goaways}; ` +
    `RSS each second: ${rss.join(" ")}`;
}

await using broker = await startBroker();
const sides: Array<[string, Record<string, unknown>]> = [["defaults", {}], ["--b", overrides()]];
console.log(`${CONNECTIONS} connections x ${STREAMS} streams, ${SIZE}-byte records, ${SECONDS} s a run`);
for (let round = 1; round <= ROUNDS; round++) {
  for (const [name, extra] of round % 2 ? sides : [...sides].reverse()) {
    if (name === "--b" && Object.keys(extra).length === 0) continue;
    const dir = await Deno.makeTempDir({ prefix: "ka-flood-" });
    try {
      console.log(`round ${round} ${name}: ${await floodRun(dir, extra)}`);
    } finally {
      await Deno.remove(dir, { recursive: true }).catch(() => {});
    }
  }
}
