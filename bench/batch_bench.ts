/**
 * Facade throughput, one message at a time against batches: records of 100 bytes sent as `produce` per record or
 * `produceMany` per 1,000, ack=none, each round timed until librdkafka has delivered everything. Against
 * librdkafka's mock cluster, and with --broker also a real single-node broker (tests/kafka/broker.ts; needs
 * KAFKA_LIBS or scripts/setup.sh). Prints msg/s and process CPU µs per message (Linux only).
 *
 *   deno run -A bench/batch_bench.ts [records=200000] [--broker]
 */
import { defaultConfig } from "../src/config.ts";
import { KafkaProducer } from "../src/kafka/producer.ts";
import type { Message } from "../src/message.ts";
import { Breaker } from "../src/producer/breaker.ts";
import { Facade } from "../src/producer/facade.ts";
import { openWal } from "../src/wal/wal.ts";
import { startBroker } from "../tests/kafka/broker.ts";

const args = Deno.args.filter((a) => !a.startsWith("--"));
const TOTAL = Number(args[0] ?? 200_000);
const BATCH = 1_000;
const VALUE = crypto.getRandomValues(new Uint8Array(100));

interface Row {
  cluster: string;
  api: string;
  msgPerSec: number;
  cpuMicrosPerMsg: number;
}

/** User plus system CPU seconds of this process, from /proc/self/stat. */
function cpuSeconds(): number {
  const fields = Deno.readTextFileSync("/proc/self/stat").split(") ")[1].split(" ");
  return (Number(fields[11]) + Number(fields[12])) / 100;
}

async function run(cluster: string, kafka: Record<string, string>, batched: boolean): Promise<Row> {
  const config = defaultConfig();
  config.producer.wal = { ...config.producer.wal, inMemory: true };
  config.kafka = { "linger.ms": "5", ...kafka };
  const wal = await openWal({ path: "", inMemory: true, maxBytes: config.producer.wal.maxBytes });
  const breaker = new Breaker({ fails: 5, requests: 3, timeoutMs: 60_000, intervalMs: 0 });
  const producer = KafkaProducer.open({ id: `bench-${batched ? "many" : "one"}`, config: config.kafka });
  const facade = new Facade({ config, wal, breaker, producer });
  const batch: Message[] = Array.from({ length: BATCH }, () => ({ topic: "bench", value: VALUE }));
  await facade.produceMany(batch.slice(0, 10), "kafka"); // topic and connection ready
  const cpu = cpuSeconds();
  const started = performance.now();
  for (let sent = 0; sent < TOTAL; sent += BATCH) {
    if (batched) await facade.produceMany(batch, "none");
    else await Promise.all(batch.map((m) => facade.produce(m, "none")));
    // Let the event loop take delivery reports between batches, as a server would between requests.
    await new Promise((resolve) => setTimeout(resolve, 0));
  }
  if (!await producer.flush(60_000)) throw new Error(`${cluster}: not everything was delivered`);
  const seconds = (performance.now() - started) / 1000;
  const cpuUsed = cpuSeconds() - cpu;
  await producer.close(5_000);
  await facade.settle();
  await wal.close();
  breaker.close();
  if (wal.stats().records !== 0) throw new Error(`${cluster}: records went to the WAL`);
  return {
    cluster,
    api: batched ? `produceMany x${BATCH}` : "produce",
    msgPerSec: Math.round(TOTAL / seconds),
    cpuMicrosPerMsg: Math.round((cpuUsed * 1e6) / TOTAL * 10) / 10,
  };
}

const rows: Row[] = [];
const mock = { "test.mock.num.brokers": "1" };
rows.push(await run("mock", mock, false), await run("mock", mock, true));
if (Deno.args.includes("--broker")) {
  await using broker = await startBroker();
  await broker.createTopic("bench", 3);
  const real = { "bootstrap.servers": broker.bootstrap };
  rows.push(await run("broker", real, false), await run("broker", real, true));
}

console.log(`${TOTAL} records of ${VALUE.length} bytes, ack=none, until delivered`);
console.log("cluster  api                 msg/s    CPU µs/msg");
for (const r of rows) {
  console.log(
    `${r.cluster.padEnd(8)} ${r.api.padEnd(18)} ${String(r.msgPerSec).padStart(8)}  ${
      String(r.cpuMicrosPerMsg).padStart(10)
    }`,
  );
}
