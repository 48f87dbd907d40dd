/**
 * docs/openapi.json against the running service (no Kafka: the WAL takes messages): every route the HTTP listener
 * serves is in the document and every operation of the document is served (found by probing every method on
 * the documented paths and on paths near them), GET /openapi.json serves the document, and sample requests get
 * a documented status with a documented content type.
 */
import assert from "node:assert/strict";
import doc from "../docs/openapi.json" with { type: "json" };
import { freePort, type Service, startService } from "./support/service.ts";
import { tempDir } from "./support/temp_dir.ts";
import { tokenDigest } from "./support/tls.ts";

const METHODS = ["GET", "POST", "PUT", "DELETE", "PATCH", "HEAD", "OPTIONS"];
/** Paths near the documented ones that must not be served. */
const NEAR_PATHS = [
  "/",
  "/topics/t",
  "/topics/t/messages/x",
  "/topics/a/b/messages",
  "/openapi.yaml",
  "/metrics",
  "/healthz",
  "/readyz",
  "/docs",
];
const MAX_MESSAGE_BYTES = 1000;
const MAX_RECORDS = 3;

type Operation = { responses: Record<string, DocResponse | { $ref: string }> };
type DocResponse = {
  content?: Record<string, unknown>;
  headers?: Record<string, { $ref?: string; required?: boolean }>;
};
const paths = doc.paths as unknown as Record<string, Record<string, Operation>>;
const responses = doc.components.responses as unknown as Record<string, DocResponse>;
const RESPONSE_REF = "#/components/responses/";

/** A documented response, its `$ref` followed. */
function response(found: DocResponse | { $ref: string } | undefined): DocResponse | undefined {
  if (found === undefined || !("$ref" in found)) return found;
  assert.ok(found.$ref.startsWith(RESPONSE_REF), `unexpected $ref ${found.$ref}`);
  const target = responses[found.$ref.slice(RESPONSE_REF.length)];
  assert.ok(target, `$ref ${found.$ref} names no response`);
  return target;
}

/** A documented path with its template filled in, as a request path. */
function concrete(template: string): string {
  return template.replace("{topic}", "t");
}

/** A service without Kafka; `tokens`, when given, is the content of its `auth.tokens_file`. */
async function withService(fn: (svc: Service) => Promise<void>, tokens?: string): Promise<void> {
  await using dir = await tempDir("ka-openapi-");
  const auth: Record<string, string> = {};
  if (tokens !== undefined) {
    auth.tokens_file = `${dir.path}/tokens.yaml`;
    await Deno.writeTextFile(auth.tokens_file, tokens);
  }
  const svc = await startService({
    auth,
    kafka: {
      brokers: [`127.0.0.1:${freePort()}`],
      "message.timeout.ms": 1000,
      "message.max.bytes": MAX_MESSAGE_BYTES,
    },
    producer: { wal: { path: `${dir.path}/wal` } },
    server: { http: { listen: `127.0.0.1:${freePort()}`, batch: { max_records: MAX_RECORDS } } },
  }, { dir: dir.path });
  try {
    await fn(svc);
  } finally {
    assert.equal(await svc.stop(), 0);
  }
}

/** Whether the listener serves `method` on `path`: anything but 404 (no such path) and 405 (no such method). */
async function served(
  base: string,
  path: string,
  method: string,
): Promise<{ served: boolean; allow: string | null }> {
  const res = await fetch(`${base}${path}`, { method, body: method === "POST" ? "x" : undefined });
  await res.body?.cancel();
  return { served: res.status !== 404 && res.status !== 405, allow: res.headers.get("allow") };
}

Deno.test({
  name: "openapi: the routes served and the operations of the document are the same",
  sanitizeResources: false,
  sanitizeOps: false,
  async fn() {
    await withService(async (svc) => {
      const documented = new Set<string>();
      for (const [template, ops] of Object.entries(paths)) {
        for (const method of Object.keys(ops)) {
          documented.add(`${method.toUpperCase()} ${concrete(template)}`);
        }
      }
      const found = new Set<string>();
      for (const path of [...Object.keys(paths).map(concrete), ...NEAR_PATHS]) {
        for (const method of METHODS) {
          const probe = await served(svc.http, path, method);
          if (probe.served) found.add(`${method} ${path}`);
          else if (probe.allow !== null) {
            // A 405 names the methods the path does take: those must be the documented ones.
            const template = Object.keys(paths).find((t) => concrete(t) === path);
            assert.ok(template, `405 with Allow on ${path}, which the document does not have`);
            assert.deepEqual(
              probe.allow.split(",").map((m) => m.trim()).sort(),
              Object.keys(paths[template]).map((m) => m.toUpperCase()).sort(),
              `Allow of ${path}`,
            );
          }
        }
      }
      assert.deepEqual([...found].sort(), [...documented].sort());
    });
  },
});

/** One sample request and why it gets what it gets. */
interface Sample {
  name: string;
  template: string;
  method: string;
  path: string;
  init?: RequestInit;
  status: number;
}

const ndjson = { "content-type": "application/x-ndjson" };
const SAMPLES: Sample[] = [
  {
    name: "one message",
    template: "/topics/{topic}/messages",
    method: "POST",
    path: "/topics/t/messages",
    init: { body: "hi" },
    status: 200,
  },
  {
    name: "one message by PUT",
    template: "/topics/{topic}/messages",
    method: "PUT",
    path: "/topics/t/messages",
    init: { body: "hi" },
    status: 200,
  },
  {
    name: "a batch by PATCH",
    template: "/topics/{topic}/messages",
    method: "PATCH",
    path: "/topics/t/messages",
    init: { headers: ndjson, body: '{"value":"a"}\n' },
    status: 200,
  },
  {
    name: "ack=wal",
    template: "/topics/{topic}/messages",
    method: "POST",
    path: "/topics/t/messages?ack=wal",
    init: { body: "hi" },
    status: 200,
  },
  {
    name: "ack=kafka without Kafka",
    template: "/topics/{topic}/messages",
    method: "POST",
    path: "/topics/t/messages?ack=kafka",
    init: { body: "hi" },
    status: 503,
  },
  {
    name: "bad ack",
    template: "/topics/{topic}/messages",
    method: "POST",
    path: "/topics/t/messages?ack=maybe",
    init: { body: "hi" },
    status: 400,
  },
  {
    name: "bad topic",
    template: "/topics/{topic}/messages",
    method: "POST",
    path: "/topics/a%20b/messages",
    init: { body: "hi" },
    status: 400,
  },
  {
    name: "bad partition",
    template: "/topics/{topic}/messages",
    method: "POST",
    path: "/topics/t/messages?partition=-1",
    init: { body: "hi" },
    status: 400,
  },
  {
    name: "too large",
    template: "/topics/{topic}/messages",
    method: "POST",
    path: "/topics/t/messages",
    init: { body: "x".repeat(MAX_MESSAGE_BYTES + 1) },
    status: 413,
  },
  {
    name: "unsupported type",
    template: "/topics/{topic}/messages",
    method: "POST",
    path: "/topics/t/messages",
    init: { body: "x", headers: { "content-type": "image/png" } },
    status: 415,
  },
  {
    name: "batch",
    template: "/topics/{topic}/messages",
    method: "POST",
    path: "/topics/t/messages?ack=wal",
    init: { body: '{"value":"a"}\n{"nope":1}\n', headers: ndjson },
    status: 200,
  },
  {
    name: "batch, all invalid",
    template: "/topics/{topic}/messages",
    method: "POST",
    path: "/topics/t/messages",
    init: { body: "{}\n[]\n", headers: ndjson },
    status: 400,
  },
  {
    name: "batch, ack=kafka without Kafka",
    template: "/topics/{topic}/messages",
    method: "POST",
    path: "/topics/t/messages?ack=kafka",
    init: { body: '{"value":"a"}\n', headers: ndjson },
    status: 503,
  },
  {
    name: "batch with ?key=",
    template: "/topics/{topic}/messages",
    method: "POST",
    path: "/topics/t/messages?key=k",
    init: { body: '{"value":"a"}\n', headers: ndjson },
    status: 400,
  },
  {
    name: "batch, too many records",
    template: "/topics/{topic}/messages",
    method: "POST",
    path: "/topics/t/messages",
    init: { body: '{"value":"a"}\n'.repeat(MAX_RECORDS + 1), headers: ndjson },
    status: 413,
  },
  { name: "topics without Kafka", template: "/topics", method: "GET", path: "/topics", status: 503 },
  { name: "the document", template: "/openapi.json", method: "GET", path: "/openapi.json", status: 200 },
];

/** Sends each sample and checks its reply against the document. */
async function checkSamples(svc: Service, samples: Sample[]): Promise<void> {
  for (const sample of samples) {
    const res = await fetch(`${svc.http}${sample.path}`, { method: sample.method, ...sample.init });
    const body = await res.text();
    const what = `${sample.name}: ${sample.method} ${sample.path} -> ${res.status} ${body.trim()}`;
    assert.equal(res.status, sample.status, what);
    const documented = response(
      paths[sample.template][sample.method.toLowerCase()].responses[String(res.status)],
    );
    assert.ok(documented, `${what}: status not documented`);
    const type = res.headers.get("content-type")?.split(";")[0].trim() ?? null;
    if (type === null) {
      // The one reply the document describes in words: a single message's 200 with ack=none|wal is empty.
      assert.equal(res.status, 200, what);
      assert.equal(body, "", what);
    } else {
      assert.ok(
        Object.hasOwn(documented.content ?? {}, type),
        `${what}: content type ${type} not documented`,
      );
      if (type === "application/json") JSON.parse(body);
      if (type === "text/plain") assert.match(body, /^[^\n]+\n$/, `${what}: one line`);
    }
    for (const [name, header] of Object.entries(documented.headers ?? {})) {
      const required = header.required ?? header.$ref !== undefined;
      if (required) {
        assert.match(res.headers.get(name) ?? "", HEADER_VALUES[name] ?? /^[1-9]\d*$/, `${what}: ${name}`);
      }
    }
  }
}

/** What a required header must look like, when not a positive number of seconds. */
const HEADER_VALUES: Record<string, RegExp> = { "WWW-Authenticate": /^Bearer$/ };

Deno.test({
  name: "openapi: sample requests get a documented status, content type and headers",
  sanitizeResources: false,
  sanitizeOps: false,
  async fn() {
    await withService(async (svc) => {
      await checkSamples(svc, SAMPLES);
      const served = await (await fetch(`${svc.http}/openapi.json`)).json();
      assert.deepEqual(served, doc);
    });
  },
});

const TOKEN = "openapi-token";
/** With authentication on: the refusals the document lists for it. */
const AUTH_SAMPLES: Sample[] = [
  {
    name: "no token",
    template: "/topics/{topic}/messages",
    method: "POST",
    path: "/topics/t/messages",
    init: { body: "hi" },
    status: 401,
  },
  {
    name: "unknown token",
    template: "/topics/{topic}/messages",
    method: "POST",
    path: "/topics/t/messages",
    init: { body: "hi", headers: { authorization: "Bearer nope" } },
    status: 401,
  },
  {
    name: "forbidden topic",
    template: "/topics/{topic}/messages",
    method: "POST",
    path: "/topics/other/messages",
    init: { body: "hi", headers: { authorization: `Bearer ${TOKEN}` } },
    status: 403,
  },
  {
    name: "forbidden topic, batch",
    template: "/topics/{topic}/messages",
    method: "POST",
    path: "/topics/other/messages",
    init: { body: '{"value":"a"}\n', headers: { ...ndjson, authorization: `Bearer ${TOKEN}` } },
    status: 403,
  },
  {
    name: "allowed topic",
    template: "/topics/{topic}/messages",
    method: "POST",
    path: "/topics/t/messages",
    init: { body: "hi", headers: { authorization: `Bearer ${TOKEN}` } },
    status: 200,
  },
  { name: "topics without a token", template: "/topics", method: "GET", path: "/topics", status: 401 },
  {
    name: "the document without a token",
    template: "/openapi.json",
    method: "GET",
    path: "/openapi.json",
    status: 200,
  },
];

Deno.test({
  name: "openapi: with authentication on, 401 and 403 are documented with their headers",
  sanitizeResources: false,
  sanitizeOps: false,
  async fn() {
    const tokens = `- principal: client\n  sha256: "${await tokenDigest(TOKEN)}"\n  topics: ["t"]\n`;
    await withService((svc) => checkSamples(svc, AUTH_SAMPLES), tokens);
  },
});
