/**
 * Who may write where: the tokens file, the principals' topics, mTLS principals and the global allow-list, on
 * HTTP (fetch, curl for client certificates) and gRPC (@grpc/grpc-js, grpcurl). Whatever is refused must never
 * reach the facade, so it reaches neither Kafka nor the WAL.
 */
import assert from "node:assert/strict";
import { Buffer } from "node:buffer";
import { fileURLToPath } from "node:url";
import * as grpc from "@grpc/grpc-js";
import * as protoLoader from "@grpc/proto-loader";
import { authRequests } from "../src/metrics.ts";
import { Gate, parseTokens, TopicPatterns } from "../src/server/auth.ts";
import { startGrpcServer } from "../src/server/grpc/server.ts";
import { PROTO_PATH } from "../src/server/grpc/schema.ts";
import { startHttpServer } from "../src/server/http.ts";
import type { Listener } from "../src/server/listener.ts";
import { readTls, TlsSource } from "../src/server/tls.ts";
import { FakeFacade } from "./support/fake_facade.ts";
import { makeCa, tokenDigest } from "./support/tls.ts";

const GRPCURL = Deno.env.get("KA_GRPCURL") ??
  fileURLToPath(new URL("../.tools/bin/grpcurl", import.meta.url));

const BILLING_TOKEN = "billing-token-1";
const OPS_TOKEN = "ops-token-2";
const TOKENS = `
- principal: billing
  sha256: "${await tokenDigest(BILLING_TOKEN)}"
  topics: ["billing.*", "audit"]
- principal: ops
  sha256: "${(await tokenDigest(OPS_TOKEN)).toUpperCase()}"
  topics: ["*"]
- principal: edge-gw
  topics: ["edge.*"]
`;
/** Every topic but secret.* is allowed; ops may write anywhere, so only the allow-list stops it there. */
const ALLOW = ["billing.*", "audit", "edge.*", "ops.*"];
const TOPICS = ["audit", "billing.a", "edge.a", "ops.a", "secret.a"];

function gate(certNames = false): Gate {
  return new Gate({ principals: parseTokens(TOKENS), certNames, allow: ALLOW });
}

const bearer = (token: string) => ({ authorization: `Bearer ${token}` });

async function authCount(principal: string, result: string): Promise<number> {
  const sample = (await authRequests.get()).values.find((v) =>
    v.labels.principal === principal && v.labels.result === result
  );
  return sample?.value ?? 0;
}

Deno.test("topic patterns: names and prefixes", () => {
  const patterns = new TopicPatterns(["orders", "logs.*"]);
  assert.equal(patterns.matches("orders"), true);
  assert.equal(patterns.matches("orders.v2"), false);
  assert.equal(patterns.matches("logs.app"), true);
  assert.equal(patterns.matches("logs"), false);
  assert.equal(new TopicPatterns(["*"]).matches("anything"), true);
});

Deno.test("tokens file: a bad entry is refused naming it, and a digest is never quoted back", () => {
  const digest = "ab".repeat(32);
  const bad: Array<[string, RegExp]> = [
    [
      `- principal: a\n  sha256: "${digest.slice(1)}"\n  topics: [x]\n`,
      /entry 1 \(a\): sha256: expected 64 hex/,
    ],
    [`- principal: a\n  sha256: "${"zz".repeat(32)}"\n  topics: [x]\n`, /entry 1 \(a\): sha256/],
    [`- principal: a\n  topics: x\n`, /entry 1 \(a\): topics/],
    [`- principal: a\n  topics: ["a/b"]\n`, /entry 1 \(a\): topics/],
    [`- sha256: "${digest}"\n  topics: [x]\n`, /entry 1: principal/],
    [
      `- principal: a\n  topics: [x]\n- principal: a\n  topics: [y]\n`,
      /entry 2 \(a\): a second entry without sha256 for a/,
    ],
    [
      `- principal: a\n  sha256: "${digest}"\n  topics: [x]\n- principal: b\n  sha256: "${digest}"\n  topics: [x]\n`,
      /entry 2 \(b\): sha256: the same digest is given twice/,
    ],
    [`- principal: a\n  token: "${digest}"\n  topics: [x]\n`, /entry 1: unknown field "token"/],
    [`principal: a\n`, /expected a list/],
    ["", /no entries/],
    ["# all removed\n[]\n", /no entries/],
  ];
  for (const [text, expected] of bad) {
    assert.throws(() => parseTokens(text), (err: Error) => {
      assert.match(err.message, expected);
      assert.ok(!err.message.includes(digest.slice(1, 40)), err.message);
      return true;
    });
  }
});

Deno.test("tokens file: one principal may have several tokens (rotation) and a certificate entry", async () => {
  const text = `
- principal: billing
  sha256: "${await tokenDigest("old")}"
  topics: ["billing.*"]
- principal: billing
  sha256: "${await tokenDigest("new")}"
  topics: ["billing.*"]
- principal: billing
  topics: ["billing.*"]
`;
  const g = new Gate({ principals: parseTokens(text), certNames: true, allow: [] });
  assert.equal(g.authenticate("Bearer old", undefined)?.name, "billing");
  assert.equal(g.authenticate("Bearer new", undefined)?.name, "billing");
  assert.equal(g.authenticate(undefined, "billing")?.name, "billing");
  assert.equal(g.authenticate("Bearer other", "billing"), undefined, "a token, when given, decides");
});

/** Runs `fn` against a plain-text HTTP listener with `gate`. */
async function withHttp(
  g: Gate,
  fn: (url: (path: string) => string, facade: FakeFacade) => Promise<void>,
): Promise<void> {
  const facade = new FakeFacade({ topics: TOPICS });
  const server = await startHttpServer({ listen: "127.0.0.1:0", facade, gate: g });
  try {
    await fn((path) => `http://127.0.0.1:${server.port}${path}`, facade);
  } finally {
    await server.shutdown();
  }
}

async function post(url: string, headers: Record<string, string> = {}, body = "x"): Promise<Response> {
  const r = await fetch(url, { method: "POST", headers: { "content-type": "text/plain", ...headers }, body });
  await r.text();
  return r;
}

Deno.test("http: no token, a bad token, a good one, a forbidden topic, the allow-list, batches", async () => {
  await withHttp(gate(), async (url, facade) => {
    const before = await authCount("billing", "ok");
    const none = await post(url("/topics/billing.a/messages"));
    assert.equal(none.status, 401);
    assert.equal(none.headers.get("www-authenticate"), "Bearer");
    assert.equal((await post(url("/topics/billing.a/messages"), bearer("wrong"))).status, 401);
    assert.equal(
      (await post(url("/topics/billing.a/messages"), { authorization: "Basic YTpi" })).status,
      401,
    );
    assert.equal((await post(url("/topics/billing.a/messages"), bearer(""))).status, 401);
    // The scheme is case-insensitive.
    assert.equal(
      (await post(url("/topics/billing.a/messages"), { authorization: `bearer ${BILLING_TOKEN}` })).status,
      200,
    );
    assert.equal((await post(url("/topics/audit/messages"), bearer(BILLING_TOKEN))).status, 200);
    const forbidden = await fetch(url("/topics/edge.a/messages"), {
      method: "POST",
      headers: bearer(BILLING_TOKEN),
    });
    assert.equal(forbidden.status, 403);
    assert.equal(await forbidden.text(), 'forbidden: principal "billing" may not write to topic "edge.a"\n');
    assert.equal((await post(url("/topics/ops.a/messages"), bearer(OPS_TOKEN))).status, 200);
    const notAllowed = await fetch(url("/topics/secret.a/messages"), {
      method: "POST",
      headers: bearer(OPS_TOKEN),
    });
    assert.equal(notAllowed.status, 403);
    assert.equal(await notAllowed.text(), 'forbidden: topic "secret.a" is not in topics.allow\n');

    const batch = { "content-type": "application/x-ndjson" };
    const lines = '{"value":"1"}\n{"value":"2"}\n';
    assert.equal(
      (await post(url("/topics/edge.a/messages"), { ...batch, ...bearer(BILLING_TOKEN) }, lines)).status,
      403,
    );
    assert.equal((await post(url("/topics/billing.b/messages"), batch, lines)).status, 401);
    assert.equal(
      (await post(url("/topics/billing.b/messages"), { ...batch, ...bearer(BILLING_TOKEN) }, lines)).status,
      200,
    );

    assert.deepEqual(
      facade.produced.map((p) => p.message.topic),
      ["billing.a", "audit", "ops.a", "billing.b", "billing.b"],
    );
    assert.equal(await authCount("billing", "ok") - before, 5);
  });
});

Deno.test("http: GET /topics needs a principal and lists only the topics it may write to", async () => {
  await withHttp(gate(), async (url) => {
    const none = await fetch(url("/topics"));
    await none.body?.cancel();
    assert.equal(none.status, 401);
    assert.equal(
      await (await fetch(url("/topics"), { headers: bearer(BILLING_TOKEN) })).text(),
      "audit\nbilling.a",
    );
    assert.equal(
      await (await fetch(url("/topics"), { headers: bearer(OPS_TOKEN) })).text(),
      "audit\nbilling.a\nedge.a\nops.a",
    );
  });
});

Deno.test("http: the allow-list applies without authentication, to every caller", async () => {
  const g = new Gate({ certNames: false, allow: ["orders", "logs.*"] });
  await withHttp(g, async (url, facade) => {
    assert.equal((await post(url("/topics/orders/messages"))).status, 200);
    assert.equal((await post(url("/topics/logs.app/messages"))).status, 200);
    assert.equal((await post(url("/topics/billing.a/messages"), bearer("anything"))).status, 403);
    assert.equal(await (await fetch(url("/topics"))).text(), "");
    assert.deepEqual(facade.produced.map((p) => p.message.topic), ["orders", "logs.app"]);
  });
});

const dir = await Deno.makeTempDir({ prefix: "ka-auth-" });
globalThis.addEventListener("unload", () => Deno.removeSync(dir, { recursive: true }));
const ca = await makeCa(dir, "ca");
const serverPair = await ca.server();
const edgeClient = await ca.client("edge-gw");
const strangerClient = await ca.client("stranger");
const mtls = () =>
  new TlsSource(
    readTls("test", { certFile: serverPair.cert, keyFile: serverPair.key, clientCaFile: ca.cert }),
  );

async function curlStatus(args: string[]): Promise<string> {
  const out = await new Deno.Command("curl", {
    args: ["-s", "-o", "/dev/null", "-w", "%{http_code}", "--max-time", "10", "--cacert", ca.cert, ...args],
    stdin: "null",
    stdout: "piped",
    stderr: "null",
  }).output();
  return new TextDecoder().decode(out.stdout);
}

Deno.test("http: an mTLS principal is named by its certificate's CN; a bearer token also works", async () => {
  const facade = new FakeFacade({ topics: TOPICS });
  const server = await startHttpServer({ listen: "127.0.0.1:0", facade, gate: gate(true), tls: mtls() });
  try {
    const url = (topic: string) => `https://127.0.0.1:${server.port}/topics/${topic}/messages`;
    const postAs = (pair: { cert: string; key: string }, topic: string, extra: string[] = []) =>
      curlStatus([
        "--cert",
        pair.cert,
        "--key",
        pair.key,
        "-H",
        "content-type: text/plain",
        "-d",
        "x",
        ...extra,
        url(topic),
      ]);
    assert.equal(await postAs(edgeClient, "edge.a"), "200");
    assert.equal(await postAs(edgeClient, "billing.a"), "403");
    assert.equal(await postAs(strangerClient, "edge.a"), "401");
    assert.equal(
      await postAs(strangerClient, "billing.a", ["-H", `authorization: Bearer ${BILLING_TOKEN}`]),
      "200",
    );
    assert.deepEqual(facade.produced.map((p) => p.message.topic), ["edge.a", "billing.a"]);
  } finally {
    await server.shutdown();
  }
});

// deno-lint-ignore no-explicit-any
type Client = any;

function grpcClient(port: number, credentials = grpc.credentials.createInsecure()): Client {
  const definition = protoLoader.loadSync(PROTO_PATH, { keepCase: true, longs: String, defaults: true });
  const Service = grpc.loadPackageDefinition(definition).KafkaAmbassador as grpc.ServiceClientConstructor;
  return new Service(`127.0.0.1:${port}`, credentials, { "grpc.ssl_target_name_override": "localhost" });
}

function metadata(token?: string): grpc.Metadata {
  const md = new grpc.Metadata();
  if (token !== undefined) md.set("authorization", `Bearer ${token}`);
  return md;
}

/** Writes one record per topic on one Produce stream: each reply's code, and the call's status. */
function produce(
  client: Client,
  md: grpc.Metadata,
  topics: string[],
): Promise<{ codes: number[]; status: number }> {
  return new Promise((resolve) => {
    const call = client.Produce(md);
    const codes: number[] = [];
    call.on("data", (rs: { code: number }) => codes.push(rs.code));
    call.on("error", () => {});
    call.on("status", (status: grpc.StatusObject) => resolve({ codes, status: status.code }));
    topics.forEach((topic, i) =>
      call.write({ topic, message: new TextEncoder().encode("x"), streamOffset: String(i) })
    );
    call.end();
  });
}

function listTopics(client: Client, md: grpc.Metadata): Promise<{ topics?: string[]; status: number }> {
  return new Promise((resolve) => {
    client.ListTopics({}, md, (err: grpc.ServiceError | null, rs: { topics: string[] }) => {
      resolve(err ? { status: err.code } : { topics: rs.topics, status: grpc.status.OK });
    });
  });
}

async function withGrpc(
  g: Gate,
  tls: TlsSource | undefined,
  fn: (server: Listener, facade: FakeFacade, clients: Client[]) => Promise<void>,
): Promise<void> {
  const facade = new FakeFacade({ topics: TOPICS });
  const server = await startGrpcServer({
    listen: "127.0.0.1:0",
    facade,
    maxRequestSize: 65536,
    gate: g,
    tls,
  });
  const clients: Client[] = [];
  try {
    await fn(server, facade, clients);
  } finally {
    for (const client of clients) client.close();
    await server.shutdown();
  }
}

Deno.test("grpc: no or bad token ends the call UNAUTHENTICATED; a forbidden record gets 403 and the stream goes on", async () => {
  await withGrpc(gate(), undefined, async (server, facade, clients) => {
    const client = grpcClient(server.port);
    clients.push(client);
    assert.deepEqual(await produce(client, metadata(), ["billing.a"]), {
      codes: [],
      status: grpc.status.UNAUTHENTICATED,
    });
    assert.deepEqual(await produce(client, metadata("wrong"), ["billing.a"]), {
      codes: [],
      status: grpc.status.UNAUTHENTICATED,
    });
    assert.deepEqual(await produce(client, metadata(BILLING_TOKEN), ["billing.a", "edge.a", "audit"]), {
      codes: [0, 403, 0],
      status: grpc.status.OK,
    });
    assert.deepEqual(await produce(client, metadata(OPS_TOKEN), ["secret.a", "ops.a"]), {
      codes: [403, 0],
      status: grpc.status.OK,
    });
    assert.deepEqual(await listTopics(client, metadata()), { status: grpc.status.UNAUTHENTICATED });
    assert.deepEqual(await listTopics(client, metadata(BILLING_TOKEN)), {
      topics: ["audit", "billing.a"],
      status: grpc.status.OK,
    });
    assert.deepEqual(facade.produced.map((p) => p.message.topic), ["billing.a", "audit", "ops.a"]);

    // Health and reflection need no token; grpcurl finds Produce by reflection and sends the token as metadata.
    const grpcurl = async (args: string[]) => {
      const out = await new Deno.Command(GRPCURL, {
        args: ["-plaintext", "-max-time", "10", ...args],
        stdout: "piped",
        stderr: "piped",
      }).output();
      const dec = new TextDecoder();
      return { code: out.code, out: dec.decode(out.stdout) + dec.decode(out.stderr) };
    };
    const target = `127.0.0.1:${server.port}`;
    const health = await grpcurl([target, "grpc.health.v1.Health/Check"]);
    assert.equal(health.code, 0, health.out);
    assert.match(health.out, /SERVING/);
    const record = JSON.stringify({ topic: "audit", message: btoa("x"), streamOffset: "7" });
    const denied = await grpcurl(["-d", record, target, "KafkaAmbassador/Produce"]);
    assert.notEqual(denied.code, 0);
    assert.match(denied.out, /Unauthenticated/);
    const produced = await grpcurl([
      "-H",
      `authorization: Bearer ${BILLING_TOKEN}`,
      "-d",
      record,
      target,
      "KafkaAmbassador/Produce",
    ]);
    assert.equal(produced.code, 0, produced.out);
    assert.equal(JSON.parse(produced.out).streamOffset, "7");
    assert.equal(facade.produced.at(-1)?.message.topic, "audit");
  });
});

Deno.test("grpc: an open stream is checked again when the tokens change: revoked, its next records get 401 and the call ends UNAUTHENTICATED", async () => {
  const g = gate();
  await withGrpc(g, undefined, async (server, facade, clients) => {
    const client = grpcClient(server.port);
    clients.push(client);
    const open = (token: string) => {
      // The deadline makes a call the server leaves open fail the test rather than hang it.
      const call = client.Produce(metadata(token), { deadline: Date.now() + 10_000 });
      const codes: number[] = [];
      const replies: Array<() => void> = [];
      call.on("data", (rs: { code: number }) => {
        codes.push(rs.code);
        replies.shift()?.();
      });
      call.on("error", () => {});
      const status = new Promise<number>((resolve) =>
        call.on("status", (st: grpc.StatusObject) => resolve(st.code))
      );
      const send = (topic: string) =>
        new Promise<void>((answered) => {
          replies.push(answered);
          call.write({ topic, message: new TextEncoder().encode("x"), streamOffset: String(codes.length) });
        });
      return { call, codes, status, send };
    };
    const billing = open(BILLING_TOKEN);
    const ops = open(OPS_TOKEN);
    await billing.send("billing.a");
    await ops.send("ops.a");
    // billing's token is gone; ops may now write to ops.* only.
    g.replace(parseTokens(`
- principal: ops
  sha256: "${await tokenDigest(OPS_TOKEN)}"
  topics: ["ops.*"]
`));
    await billing.send("billing.a");
    await ops.send("audit");
    await ops.send("ops.a");
    assert.equal(await billing.status, grpc.status.UNAUTHENTICATED);
    assert.deepEqual(billing.codes, [0, 401]);
    ops.call.end();
    assert.equal(await ops.status, grpc.status.OK);
    assert.deepEqual(ops.codes, [0, 403, 0]);
    assert.deepEqual(facade.produced.map((p) => p.message.topic), ["billing.a", "ops.a", "ops.a"]);
  });
});

Deno.test("grpc: the mTLS principal is the certificate's CN; an unknown CN without a token is UNAUTHENTICATED", async () => {
  await withGrpc(gate(true), mtls(), async (server, facade, clients) => {
    const caPem = Buffer.from(Deno.readFileSync(ca.cert));
    const as = (pair: { cert: string; key: string }) =>
      grpcClient(
        server.port,
        grpc.credentials.createSsl(
          caPem,
          Buffer.from(Deno.readFileSync(pair.key)),
          Buffer.from(Deno.readFileSync(pair.cert)),
        ),
      );
    const edge = as(edgeClient);
    const stranger = as(strangerClient);
    clients.push(edge, stranger);
    assert.deepEqual(await produce(edge, metadata(), ["edge.a", "billing.a"]), {
      codes: [0, 403],
      status: grpc.status.OK,
    });
    assert.deepEqual(await produce(stranger, metadata(), ["edge.a"]), {
      codes: [],
      status: grpc.status.UNAUTHENTICATED,
    });
    assert.deepEqual(await produce(stranger, metadata(BILLING_TOKEN), ["billing.a"]), {
      codes: [0],
      status: grpc.status.OK,
    });
    assert.deepEqual(facade.produced.map((p) => p.message.topic), ["edge.a", "billing.a"]);
  });
});
