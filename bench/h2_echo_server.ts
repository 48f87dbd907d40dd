/**
 * Stage-1 probe: a Produce echo (every ProdRq answered by a ProdRs, code 0) on our HTTP/2 connection layer
 * (src/server/http2) over node:net or Deno.listen, or on node:http2 with the same handler.
 *
 *   deno run -A bench/h2_echo_server.ts PORT ours-net|ours-deno|node
 */
import net from "node:net";
import http2 from "node:http2";
import { Http2Connection, type Transport } from "../src/server/http2/connection.ts";
import type { Http2Stream } from "../src/server/http2/stream.ts";
import { decodeProdRq, FramedProdRs } from "../src/server/grpc/codec.ts";
import { MessageReader } from "../src/server/grpc/framing.ts";

const port = Number(Deno.args[0]);
const mode = Deno.args[1];

/** The echo of one call: bytes in, framed replies out once per turn. */
function echo(write: (b: Uint8Array) => void, end: () => void) {
  const reader = new MessageReader(4 << 20);
  let replies: FramedProdRs | undefined;
  let ended = false;
  const flush = () => {
    if (replies !== undefined && replies.count > 0) write(replies.finish());
    replies = undefined;
    if (ended) end();
  };
  return {
    data(chunk: Uint8Array) {
      reader.push(chunk);
      for (let m = reader.next(); m instanceof Uint8Array; m = reader.next()) {
        const rq = decodeProdRq(m);
        if (replies === undefined) {
          replies = new FramedProdRs(64);
          setImmediate(flush);
        }
        replies.add(rq.streamOffset, 0, "");
      }
    },
    end() {
      ended = true;
      if (replies === undefined) flush();
    },
  };
}

const RESPONSE: Array<[string, string]> = [[":status", "200"], ["content-type", "application/grpc"]];
const opts = {
  maxConcurrentStreams: 128,
  maxSessionMemory: 10 << 20,
  maxHeaderListSize: 65536,
  onStream(stream: Http2Stream) {
    stream.respond(RESPONSE);
    const e = echo((b) => stream.write(b), () => stream.end([["grpc-status", "0"]]));
    stream.attach({ onData: (c) => e.data(c), onEnd: () => e.end() });
  },
  onClose() {},
};

if (mode === "ours-net") {
  net.createServer((socket) => {
    const transport: Transport = {
      write: (b) => void socket.write(b),
      get writableLength() {
        return socket.writableLength;
      },
      pause: () => void socket.pause(),
      resume: () => void socket.resume(),
      end: () => void socket.end(),
    };
    const conn = new Http2Connection(transport, opts);
    socket.on("data", (c: Uint8Array) => conn.receive(c));
    socket.on("drain", () => conn.drained());
    socket.on("close", () => conn.transportClosed());
    socket.on("error", () => {});
  }).listen(port, "127.0.0.1");
} else if (mode === "ours-deno") {
  const listener = Deno.listen({ hostname: "127.0.0.1", port });
  for await (const c of listener) {
    c.setNoDelay(true);
    let queued = 0, writing: Promise<void> = Promise.resolve(), paused = false;
    let wake: (() => void) | undefined;
    const transport: Transport = {
      write(b) {
        queued += b.byteLength;
        writing = writing.then(async () => {
          for (let at = 0; at < b.byteLength;) at += await c.write(b.subarray(at));
          queued -= b.byteLength;
          if (queued === 0) conn.drained();
        }).catch(() => {});
      },
      get writableLength() {
        return queued;
      },
      pause: () => void (paused = true),
      resume() {
        paused = false;
        wake?.();
      },
      end: () => void writing.then(() => c.close()).catch(() => {}),
    };
    const conn = new Http2Connection(transport, opts);
    (async () => {
      try {
        while (true) {
          if (paused) await new Promise<void>((r) => wake = r);
          const buf = new Uint8Array(65536);
          const n = await c.read(buf);
          if (n === null) break;
          conn.receive(buf.subarray(0, n));
        }
      } catch { /* closed */ }
      conn.transportClosed();
    })();
  }
} else if (mode === "node") {
  const server = http2.createServer();
  server.on("stream", (stream: http2.ServerHttp2Stream) => {
    stream.on("error", () => {});
    stream.respond({ ":status": 200, "content-type": "application/grpc" }, { waitForTrailers: true });
    stream.on("wantTrailers", () => stream.sendTrailers({ "grpc-status": "0" }));
    const e = echo((b) => stream.write(b), () => stream.end());
    stream.on("data", (c: Uint8Array) => e.data(c));
    stream.on("end", () => e.end());
  });
  server.listen(port, "127.0.0.1");
} else {
  console.error("usage: h2_echo_server.ts PORT ours-net|ours-deno|node");
  Deno.exit(2);
}
