/**
 * HTTP produce throughput against a real broker, side by side in one run: a bare Deno.serve (the ceiling on this
 * machine) and the service at each ack level and WAL mode. wrk drives 100-byte POSTs over 64 connections.
 *
 * Run: deno run --allow-all bench/http_bench.ts [seconds per scenario, default 10]
 * Prints a table of requests/s, the ratio to the bare server, p99 latency, and messages Kafka acknowledged.
 */
import { startBroker } from "../tests/kafka/broker.ts";
import { freePort, type Service, startService } from "../tests/support/service.ts";

const SECONDS = Number(Deno.args[0] ?? 10);
const LUA = new URL("./post.lua", import.meta.url).pathname;
const BASELINE = new URL("./baseline_server.ts", import.meta.url).pathname;

interface Row {
  scenario: string;
  rps: number;
  p99: string;
  acked: number | null;
  errors: number;
}

async function wrk(url: string): Promise<{ rps: number; p99: string; errors: number }> {
  const out = await new Deno.Command("wrk", {
    args: ["-t1", "-c64", `-d${SECONDS}s`, "--latency", "-s", LUA, url],
    stdout: "piped",
    stderr: "piped",
  }).output();
  const text = new TextDecoder().decode(out.stdout);
  const rps = Number(/Requests\/sec:\s+([\d.]+)/.exec(text)?.[1] ?? NaN);
  const p99 = /\s99%\s+(\S+)/.exec(text)?.[1] ?? "?";
  const non2xx = Number(/Non-2xx or 3xx responses: (\d+)/.exec(text)?.[1] ?? 0);
  const sockErr = /Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)/.exec(text);
  const errors = non2xx + (sockErr ? sockErr.slice(1).reduce((a, b) => a + Number(b), 0) : 0);
  return { rps, p99, errors };
}

async function baseline(): Promise<Row> {
  const port = freePort();
  const child = new Deno.Command(Deno.execPath(), {
    args: ["run", "--allow-net", BASELINE, String(port)],
    stdout: "null",
    stderr: "null",
  }).spawn();
  try {
    for (let i = 0; i < 100; i++) {
      try {
        (await fetch(`http://127.0.0.1:${port}/`, { method: "POST", body: "x" })).body?.cancel();
        break;
      } catch {
        await new Promise((r) => setTimeout(r, 50));
      }
    }
    const r = await wrk(`http://127.0.0.1:${port}/topics/bench/messages`);
    return { scenario: "bare Deno.serve (ceiling)", ...r, acked: null };
  } finally {
    child.kill();
    await child.status;
  }
}

async function scenario(
  name: string,
  bootstrap: string,
  dir: string,
  wal: Record<string, unknown>,
  ack: string,
): Promise<Row> {
  const svc: Service = await startService({
    producer: { wal: { path: `${dir}/${name.replace(/\W+/g, "-")}`, ...wal } },
    kafka: { brokers: [bootstrap], "linger.ms": 5, "batch.num.messages": 10000 },
  }, { dir });
  try {
    const topic = "bench";
    const query = ack === "none" ? "" : `?ack=${ack}`;
    const before = await svc.metric("kafka_client_ack_cnt");
    const r = await wrk(`${svc.http}/topics/${topic}/messages${query}`);
    await new Promise((res) => setTimeout(res, 2000));
    const acked = (await svc.metric("kafka_client_ack_cnt")) - before;
    return { scenario: name, ...r, acked };
  } finally {
    await svc.stop();
  }
}

const dir = await Deno.makeTempDir({ prefix: "ka-bench-" });
await using broker = await startBroker();
await broker.createTopic("bench", 3);
const rows: Row[] = [await baseline()];
rows.push(await scenario("service, fallback, ack=none", broker.bootstrap, dir, { mode: "fallback" }, "none"));
rows.push(await scenario("service, fallback, ack=wal", broker.bootstrap, dir, { mode: "fallback" }, "wal"));
rows.push(
  await scenario("service, fallback, ack=kafka", broker.bootstrap, dir, { mode: "fallback" }, "kafka"),
);
rows.push(
  await scenario("service, always (fsynced WAL first)", broker.bootstrap, dir, { mode: "always" }, "none"),
);
await Deno.remove(dir, { recursive: true });

const ceiling = rows[0].rps;
console.log(`\nHTTP produce, 100-byte bodies, wrk -t1 -c64, ${SECONDS}s per row, real broker on loopback\n`);
console.log("| scenario | req/s | vs bare Deno.serve | p99 | acked by Kafka | errors |");
console.log("|---|---|---|---|---|---|");
for (const r of rows) {
  console.log(
    `| ${r.scenario} | ${Math.round(r.rps)} | ${(r.rps / ceiling).toFixed(2)} | ${r.p99} | ${
      r.acked ?? "-"
    } | ${r.errors} |`,
  );
}
