/**
 * TLS and mTLS on the three listeners, with clients we did not write: curl and openssl s_client for HTTP and
 * monitoring, grpcurl and @grpc/grpc-js for gRPC. Certificates are made per run with openssl (support/tls.ts).
 */
import assert from "node:assert/strict";
import { Buffer } from "node:buffer";
import { fileURLToPath } from "node:url";
import * as grpc from "@grpc/grpc-js";
import * as protoLoader from "@grpc/proto-loader";
import { startGrpcServer } from "../src/server/grpc/server.ts";
import { PROTO_PATH } from "../src/server/grpc/schema.ts";
import { startHttpServer } from "../src/server/http.ts";
import type { Listener } from "../src/server/listener.ts";
import { startMonitoringServer } from "../src/server/monitoring.ts";
import { readTls, TlsSource } from "../src/server/tls.ts";
import { FakeFacade } from "./support/fake_facade.ts";
import { type Ca, type KeyPair, makeCa } from "./support/tls.ts";

const GRPCURL = Deno.env.get("KA_GRPCURL") ??
  fileURLToPath(new URL("../.tools/bin/grpcurl", import.meta.url));

interface Pki {
  ca: Ca;
  server: KeyPair;
  /** A CA the listeners do not trust, and a client certificate it signed. */
  otherCa: Ca;
  otherClient: KeyPair;
  client: KeyPair;
}

const dir = await Deno.makeTempDir({ prefix: "ka-tls-" });
globalThis.addEventListener("unload", () => Deno.removeSync(dir, { recursive: true }));
const pki: Pki = await (async () => {
  const ca = await makeCa(dir, "ca");
  const otherCa = await makeCa(dir, "other-ca");
  return {
    ca,
    server: await ca.server(),
    otherCa,
    otherClient: await otherCa.client("edge-gw"),
    client: await ca.client("edge-gw"),
  };
})();

function tlsSource(mtls: boolean): TlsSource {
  return new TlsSource(readTls("test", {
    certFile: pki.server.cert,
    keyFile: pki.server.key,
    clientCaFile: mtls ? pki.ca.cert : "",
  }));
}

/** curl's exit code and the HTTP status it got ("000" when none). */
async function curl(args: string[]): Promise<{ exit: number; status: string }> {
  const out = await new Deno.Command("curl", {
    args: ["-s", "-o", "/dev/null", "-w", "%{http_code}", "--max-time", "10", ...args],
    stdin: "null",
    stdout: "piped",
    stderr: "null",
  }).output();
  return { exit: out.code, status: new TextDecoder().decode(out.stdout) };
}

/** `openssl s_client` against 127.0.0.1:port: whether the handshake verified (and, for mTLS, was accepted). */
async function sClient(port: number, caFile: string, client?: KeyPair): Promise<boolean> {
  const args = [
    "s_client",
    "-connect",
    `127.0.0.1:${port}`,
    "-CAfile",
    caFile,
    "-verify_return_error",
    "-ign_eof",
  ];
  if (client) args.push("-cert", client.cert, "-key", client.key);
  const child = new Deno.Command("openssl", { args, stdin: "piped", stdout: "piped", stderr: "piped" })
    .spawn();
  // A request, so that a server that refuses the client certificate has said so before the connection ends.
  const writer = child.stdin.getWriter();
  await writer.write(new TextEncoder().encode("GET /healthz HTTP/1.0\r\n\r\n"));
  await writer.close();
  const out = await child.output();
  return out.success && new TextDecoder().decode(out.stdout).includes("HTTP/1.1 200");
}

/** grpcurl's exit code and output. A dial that fails is retried until the time is up: failures take 2 s. */
async function grpcurl(args: string[]): Promise<{ exit: number; out: string }> {
  const out = await new Deno.Command(GRPCURL, {
    args: ["-connect-timeout", "2", "-max-time", "10", ...args],
    stdin: "null",
    stdout: "piped",
    stderr: "piped",
  }).output();
  const dec = new TextDecoder();
  return { exit: out.code, out: dec.decode(out.stdout) + dec.decode(out.stderr) };
}

const POST = ["-X", "POST", "-H", "content-type: text/plain", "--data-binary", "x"];
const clientCert = (pair: KeyPair) => ["--cert", pair.cert, "--key", pair.key];

Deno.test("http over TLS: curl trusting the CA is served; a wrong CA and plain text are refused", async () => {
  const facade = new FakeFacade();
  const server = await startHttpServer({ listen: "127.0.0.1:0", facade, tls: tlsSource(false) });
  try {
    const url = `https://127.0.0.1:${server.port}/topics/tls/messages`;
    assert.deepEqual(await curl([...POST, "--cacert", pki.ca.cert, url]), { exit: 0, status: "200" });
    const localhost = `https://localhost:${server.port}/topics/tls/messages`;
    assert.deepEqual(await curl([...POST, "--cacert", pki.ca.cert, localhost]), { exit: 0, status: "200" });
    // 60: the peer's certificate cannot be authenticated with the given CA.
    assert.equal((await curl([...POST, "--cacert", pki.otherCa.cert, url])).exit, 60);
    const plain = await curl([...POST, `http://127.0.0.1:${server.port}/topics/tls/messages`]);
    assert.notEqual(plain.exit, 0);
    assert.equal(plain.status, "000");
    // A body larger than one read, with Content-Length and chunked, arrives whole through node:https.
    const big = `${dir}/big.bin`;
    await Deno.writeFile(big, new Uint8Array(200_000).fill(0x61));
    const upload = [
      "-X",
      "POST",
      "-H",
      "content-type: text/plain",
      "--data-binary",
      `@${big}`,
      "--cacert",
      pki.ca.cert,
    ];
    assert.deepEqual(await curl([...upload, url]), { exit: 0, status: "200" });
    assert.deepEqual(await curl([...upload, "-H", "transfer-encoding: chunked", url]), {
      exit: 0,
      status: "200",
    });
    assert.deepEqual(facade.produced.slice(2).map((p) => p.message.value.byteLength), [200_000, 200_000]);
    assert.equal(facade.produced.length, 4);
    // The absolute form of a target is served by its path (RFC 9112 3.2.2); `*` is refused with 400, not 500.
    const absolute = ["--request-target", "https://elsewhere.example/topics/absolute/messages"];
    assert.deepEqual(await curl([...POST, ...absolute, "--cacert", pki.ca.cert, url]), {
      exit: 0,
      status: "200",
    });
    assert.equal(facade.produced[4].message.topic, "absolute");
    const star = ["-X", "OPTIONS", "--request-target", "*", "--cacert", pki.ca.cert, url];
    assert.deepEqual(await curl(star), { exit: 0, status: "400" });
  } finally {
    await server.shutdown();
  }
});

/** Writes `request` on a new TLS connection trusting the CA, and reads until the server closes (at most 10 s). */
async function rawTls(port: number, request: string): Promise<string> {
  const talk = await tlsTalk(port);
  try {
    await talk.write(request);
    return await talk.readUntil(/(?!)/); // to the end of the connection (or 10 s)
  } finally {
    talk.close();
  }
}

/** The replies in `text` as "status body", interim `100 Continue` skipped; throws where they do not parse. */
function repliesOf(text: string): string[] {
  const out: string[] = [];
  for (let at = 0; at < text.length;) {
    const headEnd = text.indexOf("\r\n\r\n", at);
    const head = text.slice(at, headEnd);
    const status = /^HTTP\/1\.1 (\d{3}) /.exec(head)?.[1];
    if (headEnd < 0 || status === undefined) {
      throw new Error(`no reply head at ${at}: ${JSON.stringify(text.slice(at))}`);
    }
    at = headEnd + 4;
    if (status === "100") continue;
    const length = Number(/^content-length: (\d+)$/im.exec(head)?.[1] ?? 0);
    out.push(`${status} ${text.slice(at, at + length)}`);
    at += length;
  }
  return out;
}

Deno.test("http over TLS: a pipelined request that expects 100 Continue gets it before its reply, not inside it", async () => {
  const server = await startHttpServer({
    listen: "127.0.0.1:0",
    facade: new FakeFacade(),
    tls: tlsSource(false),
  });
  try {
    // The second request's reply waits behind the first's; node:http had put the interim reply in its body.
    const refused = (topic: string, extra: string) =>
      `POST /topics/${topic}/messages HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n${extra}\r\nabc`;
    const text = await rawTls(
      server.port,
      refused("a%zz", "") + refused("b%zz", "Expect: 100-continue\r\nConnection: close\r\n"),
    );
    assert.deepEqual(repliesOf(text), [
      '400 invalid topic name: "a%zz"\n',
      '400 invalid topic name: "b%zz"\n',
    ]);
  } finally {
    await server.shutdown();
  }
});

/** A TLS connection to `port`, written to and read from by turns. */
async function tlsTalk(port: number) {
  const conn = await Deno.connectTls({
    hostname: "127.0.0.1",
    port,
    caCerts: [await Deno.readTextFile(pki.ca.cert)],
  });
  const decoder = new TextDecoder();
  const buf = new Uint8Array(16 * 1024);
  let text = "";
  /** The server closed the connection (not a read given up after 10 s). */
  let ended = false;
  let timedOut = false;
  return {
    write: (data: string) => conn.write(new TextEncoder().encode(data)),
    /** What was read once it matches `pattern`, or the server closed the connection, or 10 s passed. */
    async readUntil(pattern: RegExp): Promise<string> {
      const timer = setTimeout(() => {
        timedOut = true;
        conn.close();
      }, 10_000);
      try {
        while (!pattern.test(text) && !ended && !timedOut) {
          const n = await conn.read(buf).catch(() => null);
          if (n === null) ended = !timedOut;
          else text += decoder.decode(buf.subarray(0, n), { stream: true });
        }
      } finally {
        clearTimeout(timer);
      }
      return text;
    },
    get ended(): boolean {
      return ended;
    },
    close(): void {
      try {
        conn.close();
      } catch { /* closed already */ }
    },
  };
}

Deno.test("http over TLS: 100 Continue comes when the body is read; a request refused by its head gets none, and its connection closes", async () => {
  const facade = new FakeFacade();
  const server = await startHttpServer({ listen: "127.0.0.1:0", facade, tls: tlsSource(false) });
  const head = (topic: string) =>
    `POST /topics/${topic}/messages HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nExpect: 100-continue\r\n\r\n`;
  try {
    const taken = await tlsTalk(server.port);
    try {
      await taken.write(head("tls"));
      assert.equal(await taken.readUntil(/\r\n\r\n/), "HTTP/1.1 100 Continue\r\n\r\n");
      await taken.write("abc");
      assert.deepEqual(repliesOf(await taken.readUntil(/\r\n\r\nHTTP\/1\.1 200 [^]*\r\n\r\n/)), ["200 "]);
    } finally {
      taken.close();
    }
    // Refused by its head: no 100, so no body; the request after it would be read as that body, so it is not
    // read at all (its client sees the connection close unanswered, and may send it again).
    const refused = await tlsTalk(server.port);
    try {
      const post = "POST /topics/tls/messages HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\nabc";
      await refused.write(head("a%zz") + post);
      const text = await refused.readUntil(/(?!)/);
      assert.ok(refused.ended);
      assert.deepEqual(repliesOf(text), ['400 invalid topic name: "a%zz"\n']);
      assert.doesNotMatch(text, /100 Continue/);
      assert.match(text, /^connection: close\r$/im);
    } finally {
      refused.close();
    }
    assert.equal(facade.produced.length, 1);
  } finally {
    await server.shutdown();
  }
});

Deno.test("http over TLS: a pipelined request waiting for 100 Continue is not timed out behind a slow reply", async () => {
  const facade = new FakeFacade();
  const accept = facade.behaviour;
  facade.behaviour = async (message, ack) => {
    if (ack === "kafka") await new Promise((resolve) => setTimeout(resolve, 1000));
    return accept(message, ack);
  };
  // The body deadline is shorter than the wait for the reply before it: it must start only once the body is asked for.
  const server = await startHttpServer({
    listen: "127.0.0.1:0",
    facade,
    tls: tlsSource(false),
    bodyTimeoutMs: 300,
  });
  const talk = await tlsTalk(server.port);
  try {
    await talk.write(
      "POST /topics/tls/messages?ack=kafka HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\n\r\na" +
        "POST /topics/tls/messages HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\nExpect: 100-continue\r\n\r\n",
    );
    const first = await talk.readUntil(
      /HTTP\/1\.1 100 Continue\r\n\r\n|HTTP\/1\.1 [2-5]\d\d [^]*HTTP\/1\.1 [2-5]/,
    );
    assert.match(
      first,
      /^HTTP\/1\.1 200 [^]*\r\n\r\n\{"partition":\d+,"offset":"\d+"\}HTTP\/1\.1 100 Continue\r\n\r\n$/,
    );
    await talk.write("b");
    const text = await talk.readUntil(/100 Continue\r\n\r\nHTTP\/1\.1 \d{3} [^]*\r\n\r\n/);
    assert.deepEqual(repliesOf(text).map((r) => r.slice(0, 3)), ["200", "200"]);
    assert.deepEqual(facade.produced.map((p) => new TextDecoder().decode(p.message.value)), ["a", "b"]);
  } finally {
    talk.close();
    await server.shutdown();
  }
});

Deno.test("http over TLS: a request node:http cannot parse gets a one-line 400; one before it is answered first", async () => {
  const facade = new FakeFacade();
  const server = await startHttpServer({ listen: "127.0.0.1:0", facade, tls: tlsSource(false) });
  try {
    const post = "POST /topics/tls/messages HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\nabc";
    // Each request before it gets its own reply first (their records are produced): not only the one being written.
    const answered = await rawTls(server.port, `${post.repeat(6)}GARBAGE\r\n\r\n`);
    assert.deepEqual(repliesOf(answered), [
      ...new Array(6).fill("200 "),
      "400 invalid request: Invalid method encountered\n",
    ]);
    assert.match(answered, /connection: close\r\n.*\r\n\r\ninvalid request: .+\n$/s);
    assert.equal(facade.produced.length, 6);
    const framedTwice = await rawTls(
      server.port,
      "POST /topics/tls/messages HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n" +
        "3\r\nabc\r\n0\r\n\r\n",
    );
    assert.match(framedTwice, /^HTTP\/1\.1 400 Bad Request\r\n.*invalid request: .*Content-Length/s);
    // A bad chunk size in the body being read: that request's reply says so, at once (not after body_timeout).
    const badChunk = await rawTls(
      server.port,
      "POST /topics/tls/messages HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nx\r\n0\r\n\r\n",
    );
    assert.match(badChunk, /^HTTP\/1\.1 400 .*could not read request body\n$/s);
    // The same in a body no one reads: answered, nothing thrown.
    const unread = await rawTls(
      server.port,
      "GET /topics HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nx\r\n0\r\n\r\n",
    );
    assert.match(unread, /^HTTP\/1\.1 \d{3} /);
    const connect = await rawTls(server.port, "CONNECT x:80 HTTP/1.1\r\nHost: x:80\r\n\r\n");
    assert.match(connect, /^HTTP\/1\.1 405 /);
    // A HEAD request gets the 400's head and no body, behind a pipelined GET's whole reply.
    const head = await rawTls(server.port, "HEAD /topics HTTP/1.1\r\nHost: x\r\nBad Header\r\n\r\n");
    assert.match(head, /^HTTP\/1\.1 400 Bad Request\r\n[^]*content-length: [1-9]\d*\r\n\r\n$/);
    const afterGet = await rawTls(
      server.port,
      "GET /healthz HTTP/1.1\r\nHost: x\r\n\r\nHEAD /topics HTTP/1.1\r\nHost: x\r\nBad Header\r\n\r\n",
    );
    assert.match(afterGet, /^HTTP\/1\.1 \d{3} [^]*\r\n\r\n[^]*HTTP\/1\.1 400 Bad Request\r\n[^]*\r\n\r\n$/);
    assert.equal(facade.produced.length, 6);
  } finally {
    await server.shutdown();
  }
});

Deno.test("http over mTLS: a client certificate signed by the client CA is required", async () => {
  const facade = new FakeFacade();
  const server = await startHttpServer({ listen: "127.0.0.1:0", facade, tls: tlsSource(true) });
  try {
    const url = `https://127.0.0.1:${server.port}/topics/mtls/messages`;
    const trusted = ["--cacert", pki.ca.cert];
    assert.equal((await curl([...POST, ...trusted, url])).status, "000", "no client certificate");
    assert.equal((await curl([...POST, ...trusted, ...clientCert(pki.otherClient), url])).status, "000");
    assert.deepEqual(await curl([...POST, ...trusted, ...clientCert(pki.client), url]), {
      exit: 0,
      status: "200",
    });
    assert.equal(facade.produced.length, 1);
  } finally {
    await server.shutdown();
  }
});

Deno.test("monitoring over TLS and mTLS: curl and openssl s_client", async () => {
  const readiness = () => ({ ready: true, reasons: [] });
  let server: Listener = await startMonitoringServer({
    listen: "127.0.0.1:0",
    readiness,
    tls: tlsSource(false),
  });
  try {
    const url = `https://127.0.0.1:${server.port}/healthz`;
    assert.deepEqual(await curl(["--cacert", pki.ca.cert, url]), { exit: 0, status: "200" });
    assert.equal((await curl(["--cacert", pki.otherCa.cert, url])).exit, 60);
    assert.equal((await curl([`http://127.0.0.1:${server.port}/healthz`])).status, "000");
    assert.equal(await sClient(server.port, pki.ca.cert), true);
    assert.equal(await sClient(server.port, pki.otherCa.cert), false);
  } finally {
    await server.shutdown();
  }
  server = await startMonitoringServer({ listen: "127.0.0.1:0", readiness, tls: tlsSource(true) });
  try {
    const url = `https://127.0.0.1:${server.port}/healthz`;
    assert.equal((await curl(["--cacert", pki.ca.cert, url])).status, "000", "no client certificate");
    assert.deepEqual(await curl(["--cacert", pki.ca.cert, ...clientCert(pki.client), url]), {
      exit: 0,
      status: "200",
    });
    assert.equal(await sClient(server.port, pki.ca.cert), false);
    assert.equal(await sClient(server.port, pki.ca.cert, pki.client), true);
    assert.equal(await sClient(server.port, pki.ca.cert, pki.otherClient), false);
  } finally {
    await server.shutdown();
  }
});

// deno-lint-ignore no-explicit-any
type Client = any;

function grpcClient(port: number, credentials: grpc.ChannelCredentials): Client {
  const definition = protoLoader.loadSync(PROTO_PATH, { keepCase: true, longs: String, defaults: true });
  const Service = grpc.loadPackageDefinition(definition).KafkaAmbassador as grpc.ServiceClientConstructor;
  // Deno's node:tls refuses an IP address as the server name, so the name checked is the certificate's DNS one.
  return new Service(`127.0.0.1:${port}`, credentials, { "grpc.ssl_target_name_override": "localhost" });
}

/** One record on a Produce stream: the reply's code, or the call's status code when there is no reply. */
function produceOne(client: Client, topic: string): Promise<{ code?: number; status: number }> {
  return new Promise((resolve) => {
    const call = client.Produce();
    let code: number | undefined;
    call.on("data", (rs: { code: number }) => code = rs.code);
    call.on("error", () => {});
    call.on("status", (status: grpc.StatusObject) => resolve({ code, status: status.code }));
    call.write({ topic, message: new TextEncoder().encode("x"), streamOffset: "1" });
    call.end();
  });
}

const read = (path: string) => Buffer.from(Deno.readFileSync(path));

Deno.test("grpc over TLS: grpcurl -cacert and grpc-js with the CA are served; a wrong CA and plain text fail", async () => {
  const facade = new FakeFacade();
  const server = await startGrpcServer({
    listen: "127.0.0.1:0",
    facade,
    maxRequestSize: 64 * 1024,
    tls: tlsSource(false),
  });
  const clients: Client[] = [];
  try {
    const target = `127.0.0.1:${server.port}`;
    const listed = await grpcurl(["-cacert", pki.ca.cert, target, "list"]);
    assert.equal(listed.exit, 0, listed.out);
    assert.match(listed.out, /KafkaAmbassador/);
    assert.notEqual((await grpcurl(["-cacert", pki.otherCa.cert, target, "list"])).exit, 0);
    assert.notEqual((await grpcurl(["-plaintext", target, "list"])).exit, 0);

    const good = grpcClient(server.port, grpc.credentials.createSsl(read(pki.ca.cert)));
    clients.push(good);
    assert.deepEqual(await produceOne(good, "grpc-tls"), { code: 0, status: grpc.status.OK });
    const wrongCa = grpcClient(server.port, grpc.credentials.createSsl(read(pki.otherCa.cert)));
    clients.push(wrongCa);
    assert.equal((await produceOne(wrongCa, "grpc-tls")).status, grpc.status.UNAVAILABLE);
    const plain = grpcClient(server.port, grpc.credentials.createInsecure());
    clients.push(plain);
    assert.equal((await produceOne(plain, "grpc-tls")).status, grpc.status.UNAVAILABLE);
    assert.equal(facade.produced.length, 1);
  } finally {
    for (const client of clients) client.close();
    await server.shutdown();
  }
});

Deno.test("grpc over mTLS: without a client certificate the call fails; with one signed by the CA it is served", async () => {
  const facade = new FakeFacade();
  const server = await startGrpcServer({
    listen: "127.0.0.1:0",
    facade,
    maxRequestSize: 64 * 1024,
    tls: tlsSource(true),
  });
  const clients: Client[] = [];
  try {
    const target = `127.0.0.1:${server.port}`;
    assert.notEqual((await grpcurl(["-cacert", pki.ca.cert, target, "list"])).exit, 0);
    const withCert = await grpcurl([
      "-cacert",
      pki.ca.cert,
      "-cert",
      pki.client.cert,
      "-key",
      pki.client.key,
      target,
      "list",
    ]);
    assert.equal(withCert.exit, 0, withCert.out);

    const ca = read(pki.ca.cert);
    const noCert = grpcClient(server.port, grpc.credentials.createSsl(ca));
    clients.push(noCert);
    assert.equal((await produceOne(noCert, "grpc-mtls")).status, grpc.status.UNAVAILABLE);
    const foreign = grpcClient(
      server.port,
      grpc.credentials.createSsl(ca, read(pki.otherClient.key), read(pki.otherClient.cert)),
    );
    clients.push(foreign);
    assert.equal((await produceOne(foreign, "grpc-mtls")).status, grpc.status.UNAVAILABLE);
    const good = grpcClient(
      server.port,
      grpc.credentials.createSsl(ca, read(pki.client.key), read(pki.client.cert)),
    );
    clients.push(good);
    assert.deepEqual(await produceOne(good, "grpc-mtls"), { code: 0, status: grpc.status.OK });
    assert.equal(facade.produced.length, 1);
  } finally {
    for (const client of clients) client.close();
    await server.shutdown();
  }
});
