import type { Listener } from "../src/server/listener.ts";
import assert from "node:assert/strict";
import { registry, requests } from "../src/metrics.ts";
import type { Readiness } from "../src/producer/types.ts";
import { startMonitoringServer } from "../src/server/monitoring.ts";

interface Reply {
  status: number;
  headers: Headers;
  body: string;
}

async function withServer(
  fn: (get: (path: string, init?: RequestInit) => Promise<Reply>) => Promise<void>,
  readiness: () => Readiness = () => ({ ready: true, reasons: [] }),
): Promise<void> {
  const server: Listener = await startMonitoringServer({ listen: "127.0.0.1:0", readiness });
  try {
    await fn(async (path, init) => {
      const res = await fetch(`http://127.0.0.1:${server.port}${path}`, init);
      return { status: res.status, headers: res.headers, body: await res.text() };
    });
  } finally {
    await server.shutdown();
  }
}

Deno.test("/metrics serves the registry, kafka_client_requests_cnt included", async () => {
  requests.inc({ topic: "monitoring-test" }, 3);
  await withServer(async (get) => {
    const reply = await get("/metrics");
    assert.deepEqual(reply.status, 200);
    assert.deepEqual(reply.headers.get("content-type"), registry.contentType);
    assert.ok(reply.body.includes("# TYPE kafka_client_requests_cnt counter"), reply.body.slice(0, 500));
    assert.ok(reply.body.includes('kafka_client_requests_cnt{topic="monitoring-test"} 3'));
  });
});

Deno.test("/healthz answers 200 ok", async () => {
  await withServer(async (get) => {
    const reply = await get("/healthz");
    assert.deepEqual([reply.status, reply.body], [200, "ok"]);
  });
});

Deno.test("/readyz answers 200 ready, or 503 with one reason per line", async () => {
  let state: Readiness = { ready: true, reasons: [] };
  await withServer(async (get) => {
    assert.deepEqual(await get("/readyz").then((r) => [r.status, r.body]), [200, "ready"]);
    state = { ready: false, reasons: ["breaker open", "wal not writable"] };
    const reply = await get("/readyz");
    assert.deepEqual([reply.status, reply.body], [503, "breaker open\nwal not writable"]);
    assert.deepEqual(reply.headers.get("content-type"), "text/plain; charset=utf-8");
    state = { ready: true, reasons: [] };
    assert.deepEqual((await get("/readyz")).status, 200);
  }, () => state);
});

Deno.test("other paths get 404, other methods 405", async () => {
  await withServer(async (get) => {
    assert.deepEqual((await get("/")).status, 404);
    assert.deepEqual((await get("/metrics/x")).status, 404);
    const post = await get("/metrics", { method: "POST" });
    assert.deepEqual([post.status, post.headers.get("allow")], [405, "GET, HEAD"]);
  });
});

Deno.test("a monitoring listener that cannot bind names itself and the address", async () => {
  const taken = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const port = (taken.addr as Deno.NetAddr).port;
  try {
    await assert.rejects(
      () =>
        startMonitoringServer({
          listen: `127.0.0.1:${port}`,
          readiness: () => ({ ready: true, reasons: [] }),
        }),
      { message: `monitoring listener 127.0.0.1:${port}: address already in use` },
    );
  } finally {
    taken.close();
  }
});
