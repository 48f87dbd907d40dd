import assert from "node:assert/strict";
import { freePort, startBroker } from "./broker.ts";
import { type CommandResult, runCommand } from "./command.ts";
import { consumeAll, type ConsumedMessage } from "./consume.ts";
import { hangUp, startFaultProxy } from "./fault_proxy.ts";
import { waitFor } from "../support/wait.ts";

const TOPIC = "harness";

/** Produces "key:value" lines with kcat; message.timeout.ms bounds how long a record may wait for Kafka. */
function produce(bootstrap: string, lines: string[], messageTimeoutMs = 30_000): Promise<CommandResult> {
  return runCommand(
    "kcat",
    ["-P", "-b", bootstrap, "-t", TOPIC, "-K", ":", "-X", `message.timeout.ms=${messageTimeoutMs}`],
    { stdin: lines.join("\n") + "\n", timeoutMs: messageTimeoutMs + 20_000 },
  );
}

function records(msgs: ConsumedMessage[]): string[] {
  return msgs.map((m) => `${m.key}:${m.value}`).sort();
}

function range(prefix: string, from: number, to: number): string[] {
  return Array.from({ length: to - from }, (_, i) => `k${prefix}${from + i}:v${prefix}${from + i}`);
}

Deno.test("kafka harness: real broker behind a fault proxy, restart keeps data", async (t) => {
  // The proxy comes first, on the port the broker will advertise, and dials the broker per connection.
  const brokerPort = freePort();
  await using proxy = await startFaultProxy({ host: "127.0.0.1", port: brokerPort }, { port: freePort() });
  await using broker = await startBroker({ port: brokerPort, advertisedPort: proxy.port });
  assert.equal(broker.bootstrap, `127.0.0.1:${proxy.port}`);
  const expected: string[] = [];

  await t.step("100 records round-trip on a 3-partition topic", async () => {
    await broker.createTopic(TOPIC, 3);
    const lines = range("", 0, 100);
    const r = await produce(broker.directBootstrap, lines);
    assert.equal(r.code, 0, r.stderr);
    expected.push(...lines);
    const msgs = await consumeAll(broker.directBootstrap, TOPIC, { expected: 100, timeoutMs: 30_000 });
    assert.deepEqual(records(msgs), [...expected].sort());
    for (const p of new Set(msgs.map((m) => m.partition))) {
      const offsets = msgs.filter((m) => m.partition === p).map((m) => m.offset).sort((a, b) => a - b);
      assert.deepEqual(offsets, offsets.map((_, i) => i), `partition ${p} offsets are not contiguous`);
    }
    assert.ok(msgs.every((m) => m.partition >= 0 && m.partition < 3));
  });

  await t.step("produce and consume through the proxy", async () => {
    const lines = range("p", 0, 10);
    const r = await produce(broker.bootstrap, lines);
    assert.equal(r.code, 0, r.stderr);
    expected.push(...lines);
    const msgs = await consumeAll(broker.bootstrap, TOPIC, { expected: expected.length, timeoutMs: 30_000 });
    assert.deepEqual(records(msgs), [...expected].sort());
  });

  await t.step("a blackhole makes produce time out, healing makes it work again", async () => {
    proxy.blackhole(true);
    const failed = await produce(broker.bootstrap, ["klost:vlost"], 3_000);
    assert.ok(
      failed.code !== 0 && !failed.timedOut,
      `produce through a blackhole exited ${failed.code}: ${failed.stderr}`,
    );
    proxy.blackhole(false);
    const lines = range("h", 0, 10);
    const r = await produce(broker.bootstrap, lines);
    assert.equal(r.code, 0, r.stderr);
    expected.push(...lines);
    const msgs = await consumeAll(broker.directBootstrap, TOPIC, {
      expected: expected.length,
      timeoutMs: 30_000,
    });
    assert.deepEqual(records(msgs), [...expected].sort());
  });

  await t.step("cutAll closes open connections", async () => {
    const conn = await Deno.connect({ hostname: "127.0.0.1", port: proxy.port });
    try {
      await waitFor("the proxy to accept the connection", () => proxy.connections > 0, 10_000, 10);
      proxy.cutAll();
      const n = await conn.read(new Uint8Array(16)).catch(() => null);
      assert.equal(n, null);
    } finally {
      conn.close();
    }
  });

  await t.step("data survives a broker restart on the same ports", async () => {
    await broker.stop();
    assert.ok(!broker.running);
    await broker.start();
    const before = await consumeAll(broker.directBootstrap, TOPIC, {
      expected: expected.length,
      timeoutMs: 30_000,
    });
    assert.deepEqual(records(before), [...expected].sort());
    const lines = range("r", 0, 10);
    const r = await produce(broker.bootstrap, lines);
    assert.equal(r.code, 0, r.stderr);
    expected.push(...lines);
    const after = await consumeAll(broker.bootstrap, TOPIC, { expected: expected.length, timeoutMs: 30_000 });
    assert.deepEqual(records(after), [...expected].sort());
  });

  await t.step("data survives a broker crash (SIGKILL)", async () => {
    await broker.stop("SIGKILL");
    await broker.start();
    const msgs = await consumeAll(broker.directBootstrap, TOPIC, {
      expected: expected.length,
      timeoutMs: 30_000,
    });
    assert.deepEqual(records(msgs), [...expected].sort());
  });
});

Deno.test("consumeAll returns exact bytes, keys, headers and tombstones", async () => {
  await using broker = await startBroker();
  const topic = "bytes";
  await broker.createTopic(topic);
  const payload = new Uint8Array(512).map((_, i) => i % 256);
  const file = await Deno.makeTempFile();
  try {
    await Deno.writeFile(file, payload);
    const r = await runCommand(
      "kcat",
      ["-P", "-b", broker.bootstrap, "-t", topic, "-k", "ключ", "-H", "h1=värde", "-H", "h2=x", file],
      { timeoutMs: 30_000 },
    );
    assert.equal(r.code, 0, r.stderr);
    const tomb = await runCommand("kcat", ["-P", "-b", broker.bootstrap, "-t", topic, "-K", ":", "-Z"], {
      stdin: "gone:\n",
      timeoutMs: 30_000,
    });
    assert.equal(tomb.code, 0, tomb.stderr);
  } finally {
    await Deno.remove(file);
  }
  const [bin, gone] = await consumeAll(broker.bootstrap, topic, { expected: 2, timeoutMs: 30_000 });
  assert.deepEqual(bin.valueBytes, payload);
  assert.equal(bin.key, "ключ");
  assert.deepEqual(bin.headers, [["h1", "värde"], ["h2", "x"]]);
  assert.equal(gone.key, "gone");
  assert.equal(gone.value, null);
  assert.equal(gone.offset, 1);
});

/** A loopback echo server, to test the proxy without a broker. */
function startEcho(port: number): { close: () => Promise<void> } {
  const listener = Deno.listen({ hostname: "127.0.0.1", port });
  const conns = new Set<Deno.TcpConn>();
  const tasks: Promise<void>[] = [];
  const accepting = (async () => {
    for await (const conn of listener) {
      conns.add(conn);
      tasks.push(conn.readable.pipeTo(conn.writable).catch(() => {}).finally(() => conns.delete(conn)));
    }
  })();
  return {
    close: async () => {
      listener.close();
      await accepting.catch(() => {});
      for (const conn of conns) hangUp(conn);
      await Promise.all(tasks);
    },
  };
}

/** A read still in flight after an earlier readOrSilence gave up waiting, per connection. */
const pendingReads = new WeakMap<Deno.TcpConn, Promise<string | null>>();

/** Reads once (null at end of stream or on error), or returns "silence" when nothing arrives within waitMs. */
async function readOrSilence(conn: Deno.TcpConn, waitMs: number): Promise<string | null> {
  let read = pendingReads.get(conn);
  if (!read) {
    const buf = new Uint8Array(64);
    read = conn.read(buf).then((n) => n === null ? null : new TextDecoder().decode(buf.subarray(0, n)))
      .catch(() => null);
  }
  let timer: ReturnType<typeof setTimeout> | undefined;
  const silence = new Promise<"silence">((resolve) => timer = setTimeout(() => resolve("silence"), waitMs));
  const first = await Promise.race([read, silence]);
  clearTimeout(timer);
  if (first === "silence") pendingReads.set(conn, read);
  else pendingReads.delete(conn);
  return first;
}

Deno.test("fault proxy: target down, forwarding, blackhole and heal, fixed port reuse", async () => {
  const targetPort = freePort();
  const proxyPort = freePort();
  const encoder = new TextEncoder();
  const open: Deno.TcpConn[] = [];
  const connect = async () => {
    const conn = await Deno.connect({ hostname: "127.0.0.1", port: proxyPort });
    open.push(conn);
    return conn;
  };
  let proxy = await startFaultProxy({ host: "127.0.0.1", port: targetPort }, { port: proxyPort });
  const echo = { server: null as { close: () => Promise<void> } | null };
  try {
    assert.equal(proxy.port, proxyPort);
    // Nothing listens on the target yet: the proxy accepts, fails to dial, and closes.
    assert.equal(await readOrSilence(await connect(), 5_000), null);

    echo.server = startEcho(targetPort);
    const a = await connect();
    await a.write(encoder.encode("ping"));
    assert.equal(await readOrSilence(a, 5_000), "ping");

    proxy.blackhole(true);
    await a.write(encoder.encode("held"));
    assert.equal(await readOrSilence(a, 300), "silence");
    const b = await connect();
    await b.write(encoder.encode("new"));
    assert.equal(await readOrSilence(b, 300), "silence");

    proxy.blackhole(false);
    assert.equal(await readOrSilence(a, 5_000), null);
    assert.equal(await readOrSilence(b, 5_000), null);
    const c = await connect();
    await c.write(encoder.encode("healed"));
    assert.equal(await readOrSilence(c, 5_000), "healed");

    // Our side hangs up first: a peer that ignores the proxy's FIN would hold its pump open.
    hangUp(c);
    await proxy.close();
    assert.equal(proxy.connections, 0);
    proxy = await startFaultProxy({ host: "127.0.0.1", port: targetPort }, { port: proxyPort });
    const d = await connect();
    await d.write(encoder.encode("again"));
    assert.equal(await readOrSilence(d, 5_000), "again");
  } finally {
    for (const conn of open) hangUp(conn);
    await proxy.close();
    await echo.server?.close();
  }
});

// Test files run in parallel, each with its own copy of broker.ts: a second copy of the module stands for another
// file. Picked independently, 1,000 ports from each of 12,000 would share about 80.
Deno.test("freePort never hands out a port twice, across copies of the module (test files run in parallel)", async () => {
  const other: { freePort(): number } = await import("./broker.ts?another-test-file");
  const mine = new Set<number>();
  const theirs = new Set<number>();
  for (let i = 0; i < 1_000; i++) {
    mine.add(freePort());
    theirs.add(other.freePort());
  }
  assert.equal(mine.size, 1_000);
  assert.equal(theirs.size, 1_000);
  const shared = [...mine].filter((port) => theirs.has(port));
  assert.deepEqual(shared, []);
});
