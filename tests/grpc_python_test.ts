/**
 * Python's grpcio (gRPC's C core), a client we did not write, against the gRPC listener: a bidi Produce stream of
 * keyed records with headers and one bad record among them, streams in gzip and deflate, a message over the size
 * limit, an unknown method, ListTopics without Kafka, and the health service. The client is tests/python_grpc/client.py; stubs are made from
 * proto/ at run time. No broker: the WAL takes the records, and its gauge must count every one answered OK.
 */
import assert from "node:assert/strict";
import { runCommand } from "./kafka/command.ts";
import { freePort, startService } from "./support/service.ts";
import { tempDir } from "./support/temp_dir.ts";

const ROOT = new URL("..", import.meta.url).pathname;
const PYTHON = `${ROOT}.tools/grpcio-venv/bin/python`;
const RECORDS = 3_000;
/** Records in each of the client's two compressed streams (gzip, deflate). */
const COMPRESSED = 200;

Deno.test({
  name:
    "gRPC with Python grpcio: every record answered in the stream, refusals as gRPC statuses, health SERVING",
  sanitizeOps: false,
  sanitizeResources: false,
  async fn() {
    try {
      await Deno.stat(PYTHON);
    } catch {
      throw new Error(`grpcio not found at ${PYTHON} (run scripts/setup.sh)`);
    }
    await using dir = await tempDir("ka-pygrpc-");
    await using svc = await startService({
      kafka: { brokers: [`127.0.0.1:${freePort()}`] },
      producer: { wal: { path: `${dir.path}/wal` } },
    }, { dir: dir.path });
    const run = await runCommand(PYTHON, [
      `${ROOT}tests/python_grpc/client.py`,
      svc.grpc,
      "py.grpc",
      String(RECORDS),
      `${ROOT}proto`,
    ], { timeoutMs: 90_000 });
    assert.equal(run.code, 0, run.stderr);
    const seen = JSON.parse(new TextDecoder().decode(run.stdout));
    assert.equal(seen.answered, RECORDS, "every streamOffset answered");
    assert.equal(seen.ok, RECORDS - 1, "all but the bad record accepted");
    assert.equal(seen.bad[0], 400);
    assert.match(seen.bad[1], /^invalid: invalid topic name/);
    assert.equal(seen.too_large, "RESOURCE_EXHAUSTED");
    assert.equal(seen.unknown_method, "UNIMPLEMENTED");
    assert.equal(seen.list_topics, "UNAVAILABLE");
    assert.equal(seen.health, "SERVING");
    assert.equal(seen.gzip, COMPRESSED, "every record of the gzip stream accepted");
    assert.equal(seen.deflate, COMPRESSED, "every record of the deflate stream accepted");
    assert.equal(
      await svc.metric("wal_messages"),
      RECORDS - 1 + 2 * COMPRESSED,
      "the WAL holds every accepted record",
    );
  },
});
