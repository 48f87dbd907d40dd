/**
 * Produce throughput of the gRPC listener: one stream, a facade that accepts at once, a raw node:http2 client
 * in the same process. Prints msg/s and process CPU µs per message (client and server together; Linux only).
 *
 *   deno run -A bench/grpc_bench.ts [records=300000]
 */
import http2 from "node:http2";
import { startGrpcServer } from "../src/server/grpc/server.ts";
import { instantFacade } from "./instant_facade.ts";
import { decodeProdRs, encodeProdRq } from "../src/server/grpc/codec.ts";
import { frameAll } from "../src/server/grpc/framing.ts";

const TOTAL = Number(Deno.args[0] ?? 300_000);
/** Records sent but not answered, at most: like a client pipelining with a bounded window. */
const WINDOW = 900;
const BATCH = 300;

/** User plus system CPU seconds of this process, from /proc/self/stat. */
function cpuSeconds(): number {
  const fields = Deno.readTextFileSync("/proc/self/stat").split(") ")[1].split(" ");
  return (Number(fields[11]) + Number(fields[12])) / 100;
}

const server = await startGrpcServer({
  listen: "127.0.0.1:0",
  facade: instantFacade,
  maxRequestSize: 4 << 20,
});
const client = http2.connect(`http://127.0.0.1:${server.port}`);
const stream = client.request({
  ":method": "POST",
  ":path": "/KafkaAmbassador/Produce",
  "content-type": "application/grpc",
  te: "trailers",
});
const value = new Uint8Array(100);
let sent = 0, answered = 0, pending = new Uint8Array(0);
const send = () => {
  while (sent < TOTAL && sent - answered < WINDOW) {
    const n = Math.min(BATCH, TOTAL - sent);
    const msgs = Array.from(
      { length: n },
      (_, i) =>
        encodeProdRq({
          topic: "bench",
          message: value,
          streamOffset: BigInt(sent + i + 1),
          ack: "",
          headers: [],
        }),
    );
    stream.write(frameAll(msgs, msgs.reduce((s, m) => s + m.byteLength, 0)));
    sent += n;
  }
  if (sent === TOTAL) stream.end();
};
const done = new Promise<void>((resolve) => {
  stream.on("data", (chunk: Uint8Array) => {
    const buf = new Uint8Array(pending.byteLength + chunk.byteLength);
    buf.set(pending);
    buf.set(chunk, pending.byteLength);
    let pos = 0;
    while (buf.byteLength - pos >= 5) {
      const len = new DataView(buf.buffer, buf.byteOffset + pos + 1, 4).getUint32(0);
      if (buf.byteLength - pos - 5 < len) break;
      decodeProdRs(buf.subarray(pos + 5, pos + 5 + len));
      pos += 5 + len;
      answered++;
    }
    pending = buf.slice(pos);
    if (answered === TOTAL) resolve();
    else send();
  });
});
const t0 = performance.now(), c0 = cpuSeconds();
send();
await done;
const seconds = (performance.now() - t0) / 1000, cpu = cpuSeconds() - c0;
console.log(
  `${TOTAL} records in ${seconds.toFixed(2)} s: ${Math.round(TOTAL / seconds)} msg/s, ` +
    `${(cpu / TOTAL * 1e6).toFixed(1)} µs CPU per message (client and server)`,
);
client.close();
await server.shutdown();
