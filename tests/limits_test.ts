/**
 * Connection and request bounds (docs/security.md, Limits) on the HTTP and gRPC listeners, with timeouts of a
 * fraction of a second: slowloris and idle connections are closed, connections past the limit are refused,
 * request bodies past the in-flight bound get 503, and the listener keeps serving throughout.
 */
import assert from "node:assert/strict";
import { startGrpcServer } from "../src/server/grpc/server.ts";
import { type HttpServerOptions, startHttpServer } from "../src/server/http.ts";
import { abortServer } from "../src/server/reply.ts";
import { type ConnectionLimits, Connections } from "../src/server/limits.ts";
import { startMonitoringServer } from "../src/server/monitoring.ts";
import { readTls, TlsSource } from "../src/server/tls.ts";
import { readReply, writeAll } from "./support/attack.ts";
import { FakeFacade } from "./support/fake_facade.ts";
import { makeCa } from "./support/tls.ts";
import {
  FLAG,
  FRAME,
  frame,
  grpcHeaders,
  hpack,
  PREFACE,
  readFrames,
  settingsFrame,
} from "./support/h2_raw.ts";
import { HpackDecoder } from "../src/server/http2/hpack.ts";
import { tempDir } from "./support/temp_dir.ts";
import { delay, waitFor, within } from "./support/wait.ts";

const encoder = new TextEncoder();
const TOPIC = "limits";
const SHORT: ConnectionLimits = { maxConnections: 100, headerTimeoutMs: 300, idleTimeoutMs: 500 };

async function withHttp(
  opts: Partial<HttpServerOptions>,
  fn: (port: number) => Promise<void>,
): Promise<void> {
  const server = await startHttpServer({ listen: "127.0.0.1:0", facade: new FakeFacade(), ...opts });
  try {
    await fn(server.port);
  } finally {
    await server.shutdown();
  }
}

/** A server certificate of a new CA in `dir`, as a listener takes it, and the CA as a client trusts it. */
async function serverTls(dir: string): Promise<{ tls: TlsSource; caCerts: string[] }> {
  const ca = await makeCa(dir, "ca");
  const pair = await ca.server();
  const tls = new TlsSource(readTls("test", { certFile: pair.cert, keyFile: pair.key, clientCaFile: "" }));
  return { tls, caCerts: [await Deno.readTextFile(ca.cert)] };
}

function connect(port: number): Promise<Deno.TcpConn> {
  return Deno.connect({ hostname: "127.0.0.1", port });
}

function post(body: string, extra = ""): string {
  return `POST /topics/${TOPIC}/messages HTTP/1.1\r\nHost: limits\r\nContent-Length: ${body.length}\r\n` +
    `${extra}\r\n${body}`;
}

/** A fetch POST of one small message; its status. */
async function postFetch(port: number): Promise<number> {
  const res = await fetch(`http://127.0.0.1:${port}/topics/${TOPIC}/messages`, { method: "POST", body: "m" });
  await res.body?.cancel();
  return res.status;
}

/** Sends `text` a byte every `gapMs`; "closed" if the server closed first, else "answered" with its reply. */
async function drip(conn: Deno.Conn, text: string, gapMs: number): Promise<"closed" | "answered"> {
  const bytes = encoder.encode(text);
  try {
    for (let i = 0; i < bytes.byteLength; i++) {
      await conn.write(bytes.subarray(i, i + 1));
      await delay(gapMs);
    }
  } catch {
    return "closed";
  }
  return (await readReply(conn)) === null ? "closed" : "answered";
}

/** Resolves once the server has closed `conn` (a read returns end of stream or fails). */
async function closedByServer(conn: Deno.Conn): Promise<boolean> {
  const buf = new Uint8Array(1024);
  for (;;) {
    try {
      if (await conn.read(buf) === null) return true;
    } catch {
      return true;
    }
  }
}

Deno.test("http: slowloris connections are closed after the header timeout; a normal client gets 200s", async () => {
  await withHttp({ limits: SHORT }, async (port) => {
    const slow = await Promise.all(Array.from({ length: 20 }, () => connect(port)));
    // About 3 s to send a whole head at one byte every 40 ms: ten times the header timeout.
    const dripping = Promise.all(slow.map((conn) => drip(conn, post("x"), 40)));
    let done = false;
    dripping.finally(() => done = true);
    const statuses: number[] = [];
    while (!done) statuses.push(await postFetch(port));
    const outcomes = await dripping;
    for (const conn of slow) conn.close();
    assert.deepEqual(outcomes, slow.map(() => "closed"));
    assert.deepEqual(statuses, statuses.map(() => 200));
  });
});

Deno.test("http: an idle keep-alive connection is closed after the idle timeout", async () => {
  await withHttp({ limits: SHORT }, async (port) => {
    const conn = await connect(port);
    await conn.write(encoder.encode(post("m")));
    assert.equal((await readReply(conn))?.status, 200);
    assert.equal(await within("the idle connection to be closed", closedByServer(conn), 10_000), true);
    conn.close();
    assert.equal(await postFetch(port), 200);
  });
});

Deno.test("http: connections past max_connections get 503 and are closed; the others are served", async () => {
  await withHttp({ limits: { ...SHORT, maxConnections: 3, headerTimeoutMs: 30_000 } }, async (port) => {
    const held = await Promise.all([connect(port), connect(port), connect(port)]);
    const extra = await connect(port);
    await extra.write(encoder.encode(post("m")));
    const refused = await readReply(extra);
    extra.close();
    assert.equal(refused?.status, 503);
    assert.match(refused?.body ?? "", /^too many connections: server\.http\.max_connections \(3\) are open/);
    // The held connections are still served.
    await held[0].write(encoder.encode(post("m")));
    assert.equal((await readReply(held[0]))?.status, 200);
    // Once one closes, a new connection is taken.
    held[1].close();
    let status = 0;
    await waitFor("a new connection to be served", async () => {
      const conn = await connect(port);
      await conn.write(encoder.encode(post("m", "Connection: close\r\n")));
      status = (await readReply(conn))?.status ?? 0;
      conn.close();
      return status === 200;
    }, 10_000);
    assert.equal(status, 200);
    held[0].close();
    held[2].close();
  });
});

Deno.test("monitoring: at max_connections a new connection takes the place of the oldest idle one", async () => {
  const server = await startMonitoringServer({
    listen: "127.0.0.1:0",
    readiness: () => ({ ready: true, reasons: [] }),
    limits: { maxConnections: 3, headerTimeoutMs: 30_000, idleTimeoutMs: 30_000 },
  });
  const get = (path: string, extra = "") => encoder.encode(`GET ${path} HTTP/1.1\r\nHost: m\r\n${extra}\r\n`);
  try {
    // Three idle connections, the oldest first: without a request, they would lock /healthz out until their timeout.
    const idle = [];
    for (let i = 0; i < 3; i++) {
      idle.push(await connect(server.port));
      await delay(20);
    }
    const probes = [];
    for (let i = 0; i < 2; i++) {
      const probe = await connect(server.port);
      await probe.write(get("/healthz"));
      assert.equal((await readReply(probe))?.status, 200, `probe ${i}`);
      probes.push(probe); // kept open: each one takes a place
    }
    assert.equal(
      await within("the oldest idle connection to be closed", closedByServer(idle[0]), 5_000),
      true,
    );
    assert.equal(await within("the next one to be closed", closedByServer(idle[1]), 5_000), true);
    // The newest is still open and served.
    await idle[2].write(get("/healthz"));
    assert.equal((await readReply(idle[2]))?.status, 200);
    for (const conn of [...idle, ...probes]) conn.close();
  } finally {
    await server.shutdown();
  }
});

Deno.test("http: a small body that stalls gets 408 after the body timeout, and its connection is closed", async () => {
  // An idle timeout far beyond the test: the 408 itself must end the connection, which Deno's server keeps open
  // waiting for the rest of the body.
  const limits = { ...SHORT, idleTimeoutMs: 60_000 };
  await withHttp({ limits, bodyTimeoutMs: 300 }, async (port) => {
    const conn = await connect(port);
    await conn.write(encoder.encode(post("m".repeat(100)).slice(0, -90)));
    const reply = await readReply(conn);
    assert.equal(reply?.status, 408);
    assert.match(reply?.body ?? "", /request body not received within 0\.3 s/);
    assert.match(reply?.head ?? "", /\r\nconnection: close\r\n/i, "the rest of the body may still come");
    try {
      assert.equal(await within("the server to close the connection", closedByServer(conn), 5_000), true);
    } finally {
      conn.close();
    }
  });
});

Deno.test("http: a refusal whose unread body stalls comes after the body timeout and closes its connection", async () => {
  const limits = { ...SHORT, idleTimeoutMs: 60_000 };
  await withHttp({ limits, bodyTimeoutMs: 300 }, async (port) => {
    const conn = await connect(port);
    // Refused by its head (415); the service reads the rest of the body to drop it, which never comes.
    await conn.write(encoder.encode(post("m".repeat(100), "Content-Type: image/png\r\n").slice(0, -90)));
    const reply = await readReply(conn);
    assert.equal(reply?.status, 415);
    assert.match(reply?.head ?? "", /\r\nconnection: close\r\n/i, "the rest of the body may still come");
    try {
      assert.equal(await within("the server to close the connection", closedByServer(conn), 5_000), true);
    } finally {
      conn.close();
    }
  });
});

/** Timeouts beyond any test: only what the test is about may end a read or a connection. */
const LONG: ConnectionLimits = { maxConnections: 100, headerTimeoutMs: 60_000, idleTimeoutMs: 60_000 };

/** An HTTP listener with LONG limits and body timeout, for a test that shuts it down itself. */
function startLongHttp(opts: Partial<HttpServerOptions> = {}) {
  return startHttpServer({
    listen: "127.0.0.1:0",
    facade: new FakeFacade(),
    limits: LONG,
    bodyTimeoutMs: 60_000,
    ...opts,
  });
}

Deno.test("http: shutdown answers a body read under way with 503 and waits for no client", async () => {
  const server = await startLongHttp();
  const [conn, idle, half] = await Promise.all([
    connect(server.port),
    connect(server.port),
    connect(server.port),
  ]);
  try {
    await conn.write(encoder.encode(post("m".repeat(100)).slice(0, -90)));
    // Half a request head: Deno's server waits for the rest, and a graceful close with it.
    await half.write(encoder.encode(post("m").slice(0, 40)));
    await delay(100);
    const stopped = server.shutdown();
    const reply = await within("the reply", readReply(conn), 5_000);
    assert.equal(reply?.status, 503);
    assert.match(reply?.body ?? "", /^shutting down/);
    assert.match(reply?.head ?? "", /\r\nconnection: close\r\n/i);
    await within("the listener to shut down, the clients still there", stopped, 5_000);
    for (const [what, c] of [["stalled", conn], ["idle", idle], ["half a head", half]] as const) {
      assert.equal(await within(`the ${what} connection to be closed`, closedByServer(c), 1_000), true);
    }
  } finally {
    for (const c of [conn, idle, half]) c.close();
  }
});

Deno.test("http: shutdown closes a keep-alive connection in constant use, each request answered", async () => {
  const server = await startLongHttp();
  const conn = await connect(server.port);
  let answered = 0;
  let stop = false;
  // Never idle for long: a request as soon as the last is answered, until the server closes.
  const loop = (async () => {
    while (!stop && await writeAll(conn, encoder.encode("GET /topics HTTP/1.1\r\nHost: limits\r\n\r\n"))) {
      const reply = await readReply(conn);
      if (reply === null) return;
      assert.equal(reply.status, 200);
      answered++;
    }
  })();
  try {
    await waitFor("requests answered", () => answered > 10, 5_000);
    await within("the listener to shut down, the client still sending", server.shutdown(), 5_000);
    await within("the client to see its connection closed", loop, 5_000);
  } finally {
    stop = true;
    conn.close();
  }
});

Deno.test("http: while draining, produce requests get 503 and lose their connection, whole or not", async () => {
  const server = await startLongHttp();
  const [stalled, whole] = await Promise.all([connect(server.port), connect(server.port)]);
  try {
    server.setDraining(true);
    // The rest of this body may still come; the next request of this one would go into the listener's close.
    await stalled.write(encoder.encode(post("m".repeat(100)).slice(0, -90)));
    await whole.write(encoder.encode(post("m".repeat(100))));
    for (const [what, conn] of [["stalled", stalled], ["whole", whole]] as const) {
      const reply = await within(`the reply to the ${what} request`, readReply(conn), 5_000);
      assert.equal(reply?.status, 503, what);
      assert.match(reply?.head ?? "", /\r\nconnection: close\r\n/i, what);
      assert.equal(await within(`the ${what} connection to be closed`, closedByServer(conn), 5_000), true);
    }
    await within("the listener to shut down", server.shutdown(), 5_000);
  } finally {
    stalled.close();
    whole.close();
  }
});

Deno.test("http: closing a connection whose server is closing already is no uncaught error", () => {
  // Deno's server cancels itself from a listener on the abort signal, which throws so when it is closing.
  const abort = new AbortController();
  abort.signal.addEventListener("abort", () => {
    throw new Deno.errors.BadResource("Bad resource ID");
  });
  abortServer(abort);
  assert.ok(abort.signal.aborted);
});

Deno.test("http over h2c: a 408 ends its stream only; the connection serves the next one", async () => {
  await withHttp({ limits: LONG, bodyTimeoutMs: 300 }, async (port) => {
    const conn = await connect(port);
    try {
      const request = (length: number) =>
        hpack([
          [":method", "POST"],
          [":scheme", "http"],
          [":path", `/topics/${TOPIC}/messages`],
          [":authority", "limits"],
          ["content-length", String(length)],
        ]);
      await conn.write(PREFACE);
      await conn.write(settingsFrame([]));
      // Stream 1: 10 of 100 bytes, then nothing.
      await conn.write(frame(FRAME.HEADERS, FLAG.END_HEADERS, 1, request(100)));
      await conn.write(frame(FRAME.DATA, 0, 1, encoder.encode("m".repeat(10))));
      const decoder = new HpackDecoder();
      const statuses = new Map<number, string>();
      const frames = readFrames(conn);
      // Read by hand: leaving a for-await loop would end the generator.
      const next = async (stream: number): Promise<string | undefined> => {
        for (let r = await frames.next(); !r.done; r = await frames.next()) {
          const f = r.value;
          if (f.type === FRAME.SETTINGS && (f.flags & FLAG.ACK) === 0) {
            await conn.write(frame(FRAME.SETTINGS, FLAG.ACK, 0, new Uint8Array(0)));
          }
          if (f.type !== FRAME.HEADERS) continue;
          statuses.set(
            f.streamId,
            decoder.decode(f.payload).fields.find(([n]) => n === ":status")?.[1] ?? "",
          );
          if (statuses.has(stream)) return statuses.get(stream);
        }
        return undefined;
      };
      assert.equal(await within("the 408", next(1), 5_000), "408");
      // Beyond two sweep periods (1 s each with these timeouts): a connection marked to close would be gone.
      await delay(2_500);
      await conn.write(frame(FRAME.HEADERS, FLAG.END_HEADERS, 3, request(1)));
      await conn.write(frame(FRAME.DATA, FLAG.END_STREAM, 3, encoder.encode("m")));
      assert.equal(await within("the next stream's reply", next(3), 5_000), "200");
    } finally {
      conn.close();
    }
  });
});

Deno.test("http: request bodies past max_inflight_bytes get 503 with Retry-After", async () => {
  await withHttp({ maxInflightBytes: 1000 }, async (port) => {
    // 800 bytes declared, 10 sent: the listener holds 800 of its 1000 while it waits for the rest.
    const slow = await connect(port);
    const body = "s".repeat(800);
    const request = post(body);
    await slow.write(encoder.encode(request.slice(0, request.length - 790)));
    let reply: { status: number; body: string; retryAfter: string | null } | undefined;
    await waitFor("a request over the bound to be refused", async () => {
      const res = await fetch(`http://127.0.0.1:${port}/topics/${TOPIC}/messages`, {
        method: "POST",
        body: "f".repeat(300),
      });
      reply = { status: res.status, body: await res.text(), retryAfter: res.headers.get("retry-after") };
      return res.status !== 200;
    }, 10_000);
    assert.equal(reply?.status, 503);
    assert.equal(reply?.retryAfter, "1");
    assert.match(
      reply?.body ?? "",
      /^too many request bytes in flight: server\.http\.max_inflight_bytes \(1000\)/,
    );
    // Smaller ones still fit, and once the slow body is whole the room is back.
    assert.equal(await postFetch(port), 200);
    await slow.write(encoder.encode(request.slice(request.length - 790)));
    assert.equal((await readReply(slow))?.status, 200);
    slow.close();
    const res = await fetch(`http://127.0.0.1:${port}/topics/${TOPIC}/messages`, {
      method: "POST",
      body: "f".repeat(300),
    });
    await res.body?.cancel();
    assert.equal(res.status, 200);
  });
});

/** Opens an HTTP/2 connection by hand: preface and empty SETTINGS. */
async function h2Connect(port: number): Promise<Deno.Conn> {
  const conn = await connect(port);
  await conn.write(PREFACE);
  await conn.write(frame(FRAME.SETTINGS, 0, 0, new Uint8Array(0)));
  return conn;
}

/** Sends a health check on stream `id`; true once it is answered (trailers with END_STREAM) on `conn`. */
async function healthCheck(conn: Deno.Conn, id = 1): Promise<boolean> {
  await conn.write(frame(FRAME.HEADERS, FLAG.END_HEADERS, id, grpcHeaders("/grpc.health.v1.Health/Check")));
  await conn.write(frame(FRAME.DATA, FLAG.END_STREAM, id, new Uint8Array(5))); // an empty message
  for await (const f of readFrames(conn)) {
    if (f.type === FRAME.HEADERS && f.streamId === id && (f.flags & FLAG.END_STREAM) !== 0) return true;
  }
  return false;
}

Deno.test("grpc: a peer opening more than max_concurrent_streams loses its connection; others are served", async () => {
  const server = await startGrpcServer({
    listen: "127.0.0.1:0",
    facade: new FakeFacade(),
    maxRequestSize: 1 << 20,
    maxConcurrentStreams: 3,
  });
  try {
    const conn = await h2Connect(server.port);
    let goaway: { lastStream: number; code: number } | undefined;
    for await (const f of readFrames(conn)) {
      if (f.type === FRAME.SETTINGS && (f.flags & FLAG.ACK) === 0) {
        await conn.write(frame(FRAME.SETTINGS, FLAG.ACK, 0, new Uint8Array(0)));
        // Four Produce streams, none ended, where the server's SETTINGS allow three.
        for (const id of [1, 3, 5, 7]) {
          await conn.write(
            frame(FRAME.HEADERS, FLAG.END_HEADERS, id, grpcHeaders("/KafkaAmbassador/Produce")),
          );
        }
      }
      if (f.type === FRAME.GOAWAY) {
        const view = new DataView(f.payload.buffer);
        goaway = { lastStream: view.getUint32(0), code: view.getUint32(4) };
      }
    }
    conn.close();
    assert.equal(goaway?.lastStream, 5, "GOAWAY names the last stream taken");
    const next = await h2Connect(server.port);
    assert.equal(await healthCheck(next), true);
    next.close();
  } finally {
    await server.shutdown();
  }
});

Deno.test("grpc: a connection that opens no stream, and one idle after its call, are closed", async () => {
  const server = await startGrpcServer({
    listen: "127.0.0.1:0",
    facade: new FakeFacade(),
    maxRequestSize: 1 << 20,
    limits: SHORT,
  });
  try {
    // Preface and SETTINGS, then nothing: closed after the header timeout.
    const silent = await h2Connect(server.port);
    assert.equal(await within("a silent connection to be closed", closedByServer(silent), 10_000), true);
    silent.close();

    // One health check answered, then idle: closed after the idle timeout.
    const conn = await h2Connect(server.port);
    assert.equal(await healthCheck(conn), true);
    assert.equal(await within("the idle connection to be closed", closedByServer(conn), 10_000), true);
    conn.close();
  } finally {
    await server.shutdown();
  }
});

Deno.test("grpc: shutdown closes the socket of a peer that reads nothing", async () => {
  const server = await startGrpcServer({
    listen: "127.0.0.1:0",
    facade: new FakeFacade(),
    maxRequestSize: 1 << 20,
  });
  const conn = await connect(server.port);
  try {
    // Flow-control windows opened as wide as they go, then reflection requests whose replies (kilobytes each)
    // fill the socket: the server's writes cannot finish, as this peer reads nothing.
    const settings = new Uint8Array(6);
    new DataView(settings.buffer).setUint16(0, 0x4); // SETTINGS_INITIAL_WINDOW_SIZE
    new DataView(settings.buffer).setUint32(2, 0x7fffffff);
    const increment = new Uint8Array(4);
    new DataView(increment.buffer).setUint32(0, 0x7fffffff - 65_535);
    await conn.write(PREFACE);
    await conn.write(frame(FRAME.SETTINGS, 0, 0, settings));
    await conn.write(frame(FRAME.WINDOW_UPDATE, 0, 0, increment));
    const path = "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo";
    await conn.write(frame(FRAME.HEADERS, FLAG.END_HEADERS, 1, grpcHeaders(path)));
    const symbol = encoder.encode("KafkaAmbassador");
    const request = Uint8Array.of(0, 0, 0, 0, symbol.byteLength + 2, 0x22, symbol.byteLength, ...symbol);
    const batch = new Uint8Array(request.byteLength * 500);
    for (let i = 0; i < 500; i++) batch.set(request, i * request.byteLength);
    for (let i = 0; i < 10; i++) await conn.write(frame(FRAME.DATA, 0, 1, batch));
    await waitFor("the server's socket to hold a megabyte unread", async () => {
      const out = await new Deno.Command("ss", { args: ["-Htn", `sport = :${server.port}`], stdout: "piped" })
        .output();
      const sendQueue = Number(new TextDecoder().decode(out.stdout).trim().split(/\s+/)[2] ?? 0);
      return sendQueue > 1 << 20;
    }, 30_000);
    // Shutdown cuts what is still open after its bound; the socket must then close, unread bytes and all.
    await within("the shutdown", server.shutdown(), 30_000);
    assert.equal(await within("the socket to be closed", closedByServer(conn), 30_000), true);
  } finally {
    conn.close();
  }
});

Deno.test("https: connections without a handshake, idle ones, and those past max_connections are closed", async () => {
  const dir = await Deno.makeTempDir({ prefix: "ka-limits-" });
  try {
    const { tls, caCerts } = await serverTls(dir);
    await withHttp({ limits: SHORT, tls }, async (port) => {
      const silent = await connect(port);
      assert.equal(
        await within("a connection without a handshake to be closed", closedByServer(silent), 10_000),
        true,
      );
      silent.close();
      const conn = await Deno.connectTls({ hostname: "localhost", port, caCerts });
      await conn.write(encoder.encode(post("m")));
      assert.equal((await readReply(conn))?.status, 200);
      assert.equal(await within("the idle connection to be closed", closedByServer(conn), 10_000), true);
      conn.close();
    });
    await withHttp(
      { limits: { ...SHORT, maxConnections: 2, headerTimeoutMs: 30_000 }, tls },
      async (port) => {
        const held = [
          await Deno.connectTls({ hostname: "localhost", port, caCerts }),
          await Deno.connectTls({ hostname: "localhost", port, caCerts }),
        ];
        const third = await connect(port);
        assert.equal(await within("the third connection to be closed", closedByServer(third), 10_000), true);
        third.close();
        await held[0].write(encoder.encode(post("m")));
        assert.equal((await readReply(held[0]))?.status, 200);
        for (const conn of held) conn.close();
      },
    );
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("https: shutdown closes connections in their handshake or half way through a head at once", async () => {
  await using dir = await tempDir("ka-limits-");
  const { tls, caCerts } = await serverTls(dir.path);
  const server = await startLongHttp({ tls });
  const silent = await connect(server.port);
  const half = await Deno.connectTls({ hostname: "localhost", port: server.port, caCerts });
  const done = await Deno.connectTls({ hostname: "localhost", port: server.port, caCerts });
  try {
    await half.write(encoder.encode(post("m").slice(0, 40)));
    await done.write(encoder.encode(post("m")));
    assert.equal((await readReply(done))?.status, 200);
    await delay(100);
    await within("the listener to shut down, the clients still there", server.shutdown(), 5_000);
    for (const [what, c] of [["silent", silent], ["half a head", half], ["answered", done]] as const) {
      assert.equal(await within(`the ${what} connection to be closed`, closedByServer(c), 1_000), true);
    }
  } finally {
    for (const c of [silent, half, done]) c.close();
  }
});

Deno.test("a connection waits from its open for a head, and is idle from the sweep that sees its requests end", () => {
  const conns = new Connections("test", { maxConnections: 1, headerTimeoutMs: 100, idleTimeoutMs: 1000 });
  const opened = Date.now();
  const conn = conns.open(() => {})!;
  try {
    assert.equal(conn.expired(opened + 50, 1000, 10), false);
    conn.requestStarted();
    conn.requestStarted();
    conn.requestEnded();
    // Busy: no deadline, however long.
    assert.equal(conn.expired(opened + 10_000, 1000, 10), false);
    conn.requestEnded();
    // This sweep sees the last request ended: idle from now on, with the idle timeout.
    assert.equal(conn.expired(opened + 20_000, 1000, 10), false);
    assert.equal(conn.expired(opened + 20_999, 1000, 10), false);
    assert.equal(conn.expired(opened + 21_000, 1000, 10), true);
  } finally {
    conn.closed();
  }
  assert.equal(conns.size, 0);
  const late = conns.open(() => {})!;
  try {
    assert.equal(late.expired(Date.now() + 100, 1000, 10), true);
  } finally {
    late.closed();
  }
});

Deno.test("a connection to close once done: idle, once it has been for the grace; busy, the grace after it ends", () => {
  const conns = new Connections("test", {
    maxConnections: 2,
    headerTimeoutMs: 100_000,
    idleTimeoutMs: 100_000,
  });
  const idle = conns.open(() => {})!;
  const busy = conns.open(() => {})!;
  const now = Date.now(); // not before either opened
  try {
    busy.requestStarted();
    idle.closeWhenDone();
    busy.closeWhenDone();
    // A client that has just connected has the grace to send the request it connected for.
    assert.equal(idle.expired(now, 100_000, 500), false, "just opened");
    assert.equal(idle.expired(now + 500, 100_000, 500), true, "no request for the grace");
    assert.equal(busy.expired(now + 500, 100_000, 500), false, "a request in flight");
    busy.requestEnded();
    assert.equal(busy.expired(now + 600, 100_000, 500), false, "its reply gets the grace to be written");
    assert.equal(busy.expired(now + 1_099, 100_000, 500), false);
    assert.equal(busy.expired(now + 1_100, 100_000, 500), true);
  } finally {
    idle.closed();
    busy.closed();
  }
});

Deno.test("grpc over TLS: shutdown closes a connection in its handshake at once", async () => {
  await using dir = await tempDir("ka-limits-");
  const { tls } = await serverTls(dir.path);
  const server = await startGrpcServer({
    listen: "127.0.0.1:0",
    facade: new FakeFacade(),
    maxRequestSize: 1 << 20,
    limits: LONG,
    tls,
  });
  const silent = await connect(server.port);
  try {
    await delay(100);
    await within("the listener to shut down, the client still there", server.shutdown(), 5_000);
    assert.equal(await within("the connection to be closed", closedByServer(silent), 1_000), true);
  } finally {
    silent.close();
  }
});

Deno.test("grpc over TLS: connections without a handshake count, and are closed after the header timeout", async () => {
  const dir = await Deno.makeTempDir({ prefix: "ka-limits-" });
  try {
    const { tls, caCerts } = await serverTls(dir);
    const server = await startGrpcServer({
      listen: "127.0.0.1:0",
      facade: new FakeFacade(),
      maxRequestSize: 1 << 20,
      limits: { ...SHORT, maxConnections: 2 },
      tls,
    });
    const opened: Deno.Conn[] = [];
    const open = async () => {
      const conn = await connect(server.port);
      opened.push(conn);
      return conn;
    };
    try {
      const silent = [await open(), await open()];
      // Past max_connections: closed at once, although the other two have not even begun a handshake.
      const third = await open();
      assert.equal(await within("the third connection to be closed", closedByServer(third), 2_000), true);
      for (const conn of silent) {
        assert.equal(
          await within("a connection without a handshake to be closed", closedByServer(conn), 10_000),
          true,
        );
      }
      // And the listener serves a client that does its handshake.
      const conn = await Deno.connectTls({
        hostname: "localhost",
        port: server.port,
        caCerts,
        alpnProtocols: ["h2"],
      });
      await conn.write(PREFACE);
      await conn.write(frame(FRAME.SETTINGS, 0, 0, new Uint8Array(0)));
      assert.equal(await healthCheck(conn), true);
      conn.close();
    } finally {
      for (const conn of opened) {
        try {
          conn.close();
        } catch { /* closed already */ }
      }
      await server.shutdown();
    }
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});
