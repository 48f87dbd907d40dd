/** The service object in-process: start-up order, stop order and what a part that cannot start leaves behind. */
import assert from "node:assert/strict";
import { parseConfig } from "../src/config.ts";
import { startService } from "../src/service.ts";
import { freePort } from "./kafka/broker.ts";
import { tempDir } from "./support/temp_dir.ts";

/** A config with every listener on a free loopback port, the WAL in `dir` and a broker that is not there. */
function config(dir: string, extra = "") {
  return parseConfig(
    `server: { http: { listen: "127.0.0.1:0" }, grpc: { listen: "127.0.0.1:0" }, monitoring: { listen: "127.0.0.1:0" } }
producer: { wal: { path: "${dir}/wal" }, shutdown_timeout: 1s }
kafka: { brokers: ["127.0.0.1:${freePort()}"], "message.timeout.ms": 60000 }
${extra}`,
    {},
  );
}

Deno.test("service: starts every listener, takes a message, and stop() leaves it in the WAL", async () => {
  await using dir = await tempDir("ka-service-");
  const service = await startService(config(dir.path));
  const { http, grpc, monitoring } = service.addresses;
  assert.match(http ?? "", /^127\.0\.0\.1:\d+$/);
  assert.match(grpc ?? "", /^127\.0\.0\.1:\d+$/);
  assert.notEqual(grpc, "127.0.0.1:0");
  const ready = await fetch(`http://${monitoring}/healthz`);
  assert.equal(ready.status, 200);
  await ready.body?.cancel();
  const posted = await fetch(`http://${http}/topics/t/messages`, { method: "POST", body: "kept" });
  assert.equal(posted.status, 200);
  await posted.body?.cancel();

  const stopping = service.stop("test");
  assert.equal(service.stop("again"), stopping, "stop is idempotent");
  // Kafka never answered: the message is in the WAL, whether it got there before or at the stop.
  assert.equal((await stopping).walRecords, 1);
  await assert.rejects(fetch(`http://${http}/topics/t/messages`, { method: "POST", body: "late" }));

  // The next start finds the record where the last one left it.
  await using again = await startService(config(dir.path));
  const metrics = await (await fetch(`http://${again.addresses.monitoring}/metrics`)).text();
  assert.match(metrics, /^wal_messages 1$/m);
});

Deno.test("service: a listener that cannot bind names itself, and what had started is stopped again", async () => {
  await using dir = await tempDir("ka-service-");
  using taken = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const port = taken.addr.port;
  const bad = config(dir.path);
  bad.server.grpc.listen = `127.0.0.1:${port}`;
  // Deno's sanitizers fail this test if the WAL, the producer, replay or the HTTP listener were left running.
  await assert.rejects(startService(bad), (err: Error) => {
    assert.match(err.message, new RegExp(`^grpc listener 127\\.0\\.0\\.1:${port}: `));
    return true;
  });
  // The WAL was closed: it opens again at once.
  await using service = await startService(config(dir.path));
  assert.ok(service.addresses.http);
});
