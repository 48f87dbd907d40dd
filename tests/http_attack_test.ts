/**
 * The HTTP listener under hostile bodies: the real service (no broker, WAL on disk) keeps its resident memory
 * under a bound through each attack and still takes an ordinary message afterwards. Sizes are scaled down from
 * bench/http_attack_memory.ts so that each test takes a few seconds.
 */
import assert from "node:assert/strict";
import {
  closeAll,
  type Memory,
  memoryOf,
  openUnsentBodies,
  portOf,
  postDuplicatedLength,
  postNormal,
  postTinyChunks,
  servicePid,
} from "./support/attack.ts";
import { type Service, startService } from "./support/service.ts";

/** Peak resident memory allowed through an attack (the service alone peaks near 100 MiB at start-up). */
const BOUND_KIB = 300 * 1024;
const TOPIC = "attack";

async function withService(fn: (svc: Service, pid: number) => Promise<void>): Promise<void> {
  const dir = await Deno.makeTempDir({ prefix: "ka-attack-" });
  const svc = await startService({
    kafka: { brokers: ["127.0.0.1:1"] },
    producer: { wal: { mode: "fallback", path: `${dir}/wal` } },
  }, { dir });
  try {
    await fn(svc, servicePid(svc));
  } finally {
    await svc.stop("SIGKILL");
    await Deno.remove(dir, { recursive: true });
  }
}

function mib(kib: number): string {
  return `${(kib / 1024).toFixed(0)} MiB`;
}

function assertBounded(what: string, before: Memory, after: Memory): void {
  assert.ok(
    after.hwmKiB < BOUND_KIB,
    `${what}: peak RSS ${mib(before.hwmKiB)} -> ${mib(after.hwmKiB)}, bound ${mib(BOUND_KIB)}`,
  );
}

Deno.test("attack: chunked bodies of one-byte chunks do not hold a buffer per chunk", async () => {
  await withService(async (svc, pid) => {
    assert.equal(await postNormal(svc.http, TOPIC), 200);
    const before = memoryOf(pid);
    for (let i = 0; i < 2; i++) assert.equal(await postTinyChunks(portOf(svc.http), TOPIC, 20_000), 200);
    const after = memoryOf(pid);
    assertBounded("2 requests of 20,000 one-byte chunks", before, after);
    assert.equal(await postNormal(svc.http, TOPIC), 200);
  });
});

Deno.test("attack: declared but unsent bodies do not reserve their declared length", async () => {
  await withService(async (svc, pid) => {
    assert.equal(await postNormal(svc.http, TOPIC), 200);
    const before = memoryOf(pid);
    const conns = await openUnsentBodies(portOf(svc.http), TOPIC, 500, 1_000_000);
    try {
      // Let the service take every request in before reading its memory.
      await new Promise((r) => setTimeout(r, 1000));
      const after = memoryOf(pid);
      assertBounded("500 connections declaring 1,000,000 bytes and sending 1", before, after);
      assert.equal(await postNormal(svc.http, TOPIC), 200);
    } finally {
      closeAll(conns);
    }
  });
});

Deno.test("attack: a duplicated Content-Length over the limit gets 413 before the body is read", async () => {
  await withService(async (svc, pid) => {
    assert.equal(await postNormal(svc.http, TOPIC), 200);
    const before = memoryOf(pid);
    const { status } = await postDuplicatedLength(portOf(svc.http), TOPIC, 300_000_000);
    const after = memoryOf(pid);
    assert.equal(status, 413);
    assertBounded("a 300,000,000-byte body with Content-Length twice", before, after);
    assert.equal(await postNormal(svc.http, TOPIC), 200);
  });
});
