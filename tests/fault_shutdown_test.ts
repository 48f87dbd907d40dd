/**
 * SIGTERM ends within `producer.shutdown_timeout` in every breaker state, also while replay has records in
 * librdkafka that Kafka will not answer for minutes (`message.timeout.ms` 300 s); those records stay in the WAL.
 */
import assert from "node:assert/strict";
import { faultConfig, waitForBreaker } from "./support/fault.ts";
import { postRange } from "./support/load.ts";
import { freePort, type Service, startService } from "./support/service.ts";
import { tempDir } from "./support/temp_dir.ts";
import { waitFor } from "./support/wait.ts";

const SHUTDOWN_TIMEOUT_MS = 3_000;
/** What a stop may take beyond the deadline: purging librdkafka, closing listeners and the WAL. */
const MARGIN_MS = 3_000;
const RECORDS = 20;
/** A stop still running after this is a hang: the process is killed and the test fails. */
const GIVE_UP_MS = 30_000;

/** A port that accepts connections and never answers: librdkafka neither fails nor delivers. */
function silentBroker(): { bootstrap: string } & Disposable {
  const listener = Deno.listen({ hostname: "127.0.0.1", port: freePort() });
  const conns: Deno.Conn[] = [];
  (async () => {
    for await (const conn of listener) conns.push(conn);
  })().catch(() => {});
  return {
    bootstrap: `127.0.0.1:${listener.addr.port}`,
    [Symbol.dispose]() {
      listener.close();
      for (const c of conns) c.close();
    },
  };
}

function config(bootstrap: string, walDir: string, cbTimeout: string): Record<string, unknown> {
  return faultConfig(bootstrap, walDir, {
    producer: { cb: { timeout: cbTimeout }, shutdown_timeout: `${SHUTDOWN_TIMEOUT_MS}ms` },
    // Kafka's default: a record handed to librdkafka is reported only after 5 minutes.
    kafka: { "message.timeout.ms": 300_000 },
  });
}

/** Sends SIGTERM; returns how long the process took to exit and what its last log line says the WAL holds. */
async function timedStop(svc: Service): Promise<{ ms: number; walRecords: number }> {
  const started = performance.now();
  svc.signal("SIGTERM");
  const limit = setTimeout(() => svc.signal("SIGKILL"), GIVE_UP_MS);
  const code = await svc.exited;
  clearTimeout(limit);
  const ms = performance.now() - started;
  assert.equal(code, 0, `exit code ${code} after ${ms.toFixed(0)} ms (killed after ${GIVE_UP_MS} ms)`);
  const stopped = (await svc.logs()).find((l) => l.msg === "stopped");
  assert.ok(stopped, "the service logs that it stopped");
  return { ms, walRecords: Number(stopped.wal_records) };
}

Deno.test({
  name:
    "fault: SIGTERM ends within shutdown_timeout with the breaker open, closed and half-open; the WAL keeps all",
  sanitizeOps: false,
  sanitizeResources: false,
  async fn() {
    await using dir = await tempDir("ka-stop-");
    const walDir = `${dir.path}/wal`;
    const deadPort = `127.0.0.1:${freePort()}`;

    // Open: nothing listens, every broker is down at once; the records are spooled.
    await using open = await startService(config(deadPort, walDir, "60s"), { dir: dir.path });
    await waitForBreaker(open, "open", 60_000);
    const load = await postRange(open.http, "stop", "s", 0, RECORDS, { ack: "wal" });
    assert.equal(load.acked.size, RECORDS);
    const openStop = await timedStop(open);
    assert.equal(openStop.walRecords, RECORDS);

    // Closed: the broker accepts connections and never answers; replay hands the records to librdkafka.
    using silent = silentBroker();
    await using closed = await startService(config(silent.bootstrap, walDir, "60s"), { dir: dir.path });
    await waitFor("replay to take the records", async () => (await closed.metric("wal_reads")) >= RECORDS);
    assert.equal(await closed.metric("kafka_cb_current_state"), 0);
    const closedStop = await timedStop(closed);
    assert.equal(closedStop.walRecords, RECORDS);

    // Half-open: the breaker lets replay's probes through to a broker that is down; they hang in librdkafka.
    await using half = await startService(config(deadPort, walDir, "1s"), { dir: dir.path });
    await waitFor("half-open", async () => (await half.metric("producer_cb_state", { state: "half" })) > 0);
    await waitFor(
      "replay's probes to wait in librdkafka",
      async () => (await half.metric("kafka_client_messages_in_transit")) > 0,
    );
    const halfStop = await timedStop(half);
    assert.equal(halfStop.walRecords, RECORDS);

    console.log(
      `shutdown: open ${openStop.ms.toFixed(0)} ms, closed ${closedStop.ms.toFixed(0)} ms, ` +
        `half-open ${halfStop.ms.toFixed(0)} ms (shutdown_timeout ${SHUTDOWN_TIMEOUT_MS} ms)`,
    );
    for (
      const [state, { ms }] of [["open", openStop], ["closed", closedStop], ["half", halfStop]] as const
    ) {
      assert.ok(ms < SHUTDOWN_TIMEOUT_MS + MARGIN_MS, `${state}: exit took ${ms.toFixed(0)} ms`);
    }
  },
});
