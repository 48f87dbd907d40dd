/**
 * The HTTP/2 listener's sockets, as opposed to the protocol on them (http2_connection_test.ts): what a closed
 * connection leaves behind in the heap.
 */
import assert from "node:assert/strict";
import v8 from "node:v8";
import { Connections, defaultLimits } from "../src/server/limits.ts";
import { listenHttp2 } from "../src/server/http2/listen.ts";
import { FRAME, frame, PREFACE } from "./support/h2_raw.ts";

/** How many objects named `name` a heap snapshot of this process holds (V8 collects garbage before it). */
async function liveObjects(name: string): Promise<number> {
  const chunks: string[] = [];
  for await (const chunk of v8.getHeapSnapshot()) chunks.push(String(chunk));
  const snapshot = JSON.parse(chunks.join(""));
  const fields: string[] = snapshot.snapshot.meta.node_fields;
  const types: string[] = snapshot.snapshot.meta.node_types[0];
  const [nameAt, typeAt] = [fields.indexOf("name"), fields.indexOf("type")];
  const nodes: number[] = snapshot.nodes;
  let count = 0;
  for (let i = 0; i < nodes.length; i += fields.length) {
    if (types[nodes[i + typeAt]] === "object" && snapshot.strings[nodes[i + nameAt]] === name) count++;
  }
  return count;
}

/** One connection: the preface and SETTINGS, or bytes that are not HTTP/2, then our end; read until closed. */
async function connectAndLeave(port: number, bytes: Uint8Array): Promise<void> {
  const conn = await Deno.connect({ hostname: "127.0.0.1", port });
  try {
    if (bytes.byteLength > 0) await conn.write(bytes);
    await conn.closeWrite();
    const buf = new Uint8Array(16 * 1024);
    while (await conn.read(buf).catch(() => null) !== null) { /* until the server closes */ }
  } finally {
    conn.close();
  }
}

Deno.test("http2 listener: a closed connection leaves none of its objects behind, however it ended", async () => {
  const listener = await listenHttp2({
    name: "grpc",
    address: { hostname: "127.0.0.1", port: 0 },
    conns: new Connections("grpc", defaultLimits("grpc")),
    connection: { maxConcurrentStreams: 8, maxSessionMemory: 1 << 20, maxHeaderListSize: 16 * 1024 },
    onStream: (stream) => stream.reset(0),
  });
  try {
    const settings = frame(FRAME.SETTINGS, 0, 0, new Uint8Array(0));
    const preface = new Uint8Array([...PREFACE, ...settings]);
    const notHttp2 = new TextEncoder().encode("GET / HTTP/1.1\r\nHost: x\r\n\r\n");
    const kinds = [new Uint8Array(0), preface, notHttp2];
    const n = 300;
    for (let i = 0; i < n; i += 30) {
      await Promise.all(
        Array.from({ length: 30 }, (_, k) => connectAndLeave(listener.port, kinds[(i + k) % 3])),
      );
    }
    await new Promise((resolve) => setTimeout(resolve, 200)); // the last sockets' close events
    const left = await liveObjects("Http2Connection");
    assert.ok(left < n / 10, `${left} of ${n} closed connections still in the heap`);
  } finally {
    listener.destroyAll();
    await listener.close();
  }
});
