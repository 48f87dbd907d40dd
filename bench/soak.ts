/**
 * Soak: the service under a steady HTTP load for minutes, with the broker stopped and started again during the
 * run, sampled every few seconds: RSS, event-loop lag (p99), request p99, WAL records, records acknowledged by
 * Kafka. At the end it waits for the WAL to drain and counts every id in Kafka: missing must be 0.
 * Writes `soak.csv` and a chart, `soak.png` (Python matplotlib in a venv under `.tools/`, made on first use).
 *
 *   deno run -A bench/soak.ts [--minutes 10] [--rate 10000] [--restarts 2] [--outage 20] [--out bench/results]
 *
 * `--rate` is the offered load in messages per second (one 100-byte-ish POST each, 32 keep-alive connections);
 * choose half of what `bench/compare.ts` measured for HTTP on the same machine.
 */
import { startBroker } from "../tests/kafka/broker.ts";
import { consumeAll } from "../tests/kafka/consume.ts";
import { parseId, payload } from "../tests/support/load.ts";
import { startService } from "../tests/support/service.ts";
import { delay, waitFor } from "../tests/support/wait.ts";

interface Options {
  minutes: number;
  rate: number;
  restarts: number;
  outageSeconds: number;
  out: string;
}

function parseOptions(args: string[]): Options {
  const opts: Options = { minutes: 10, rate: 10_000, restarts: 2, outageSeconds: 20, out: "bench/results" };
  for (let i = 0; i < args.length; i += 2) {
    const value = args[i + 1];
    switch (args[i]) {
      case "--minutes":
        opts.minutes = Number(value);
        break;
      case "--rate":
        opts.rate = Number(value);
        break;
      case "--restarts":
        opts.restarts = Number(value);
        break;
      case "--outage":
        opts.outageSeconds = Number(value);
        break;
      case "--out":
        opts.out = value;
        break;
      default:
        throw new Error(
          `unknown option ${
            args[i]
          }; usage: soak.ts [--minutes N] [--rate MSG/S] [--restarts N] [--outage S] [--out DIR]`,
        );
    }
  }
  if (!(opts.minutes > 0 && opts.rate > 0 && opts.restarts >= 0 && opts.outageSeconds > 0)) {
    throw new RangeError(`soak: bad options ${JSON.stringify(opts)}`);
  }
  return opts;
}

const SAMPLE_MS = 5_000;
const CONNECTIONS = 32;

interface Sample {
  t: number;
  rssMb: number;
  lagP99Ms: number;
  p99Ms: number;
  sentPerS: number;
  walRecords: number;
  kafkaAcked: number;
  brokerUp: boolean;
}

const opts = parseOptions(Deno.args);
await Deno.mkdir(opts.out, { recursive: true });
const log = (msg: string) => console.error(`[soak ${new Date().toISOString().slice(11, 19)}] ${msg}`);

await using broker = await startBroker();
const topic = `soak-${Date.now()}`;
await broker.createTopic(topic, 3);
const walDir = await Deno.makeTempDir({ prefix: "ka-soak-wal-" });
await using svc = await startService({
  producer: { wal: { mode: "fallback", path: walDir }, resend: { period: "5s" } },
  kafka: {
    brokers: [broker.bootstrap],
    "linger.ms": 5,
    "statistics.interval.ms": 5000,
    "message.timeout.ms": 30000,
  },
}, { env: { KA_LOG_LEVEL: "warn" } });
const pid = await pidOn(new URL(svc.http).port);
const run = crypto.randomUUID().slice(0, 8);
log(`service pid ${pid}, ${opts.rate} msg/s for ${opts.minutes} min, ${opts.restarts} broker restarts`);

// Load: CONNECTIONS workers share one schedule, one message every 1/rate s.
const url = `${svc.http}/topics/${topic}/messages`;
const start = performance.now();
const end = start + opts.minutes * 60_000;
let nextId = 0;
const acked = new Set<number>();
let refused = 0;
let latencies: number[] = [];
const worker = async () => {
  while (performance.now() < end) {
    const id = nextId++;
    const due = start + (id * 1000) / opts.rate;
    const wait = due - performance.now();
    if (wait > 1) await delay(wait);
    const t0 = performance.now();
    try {
      const r = await fetch(url, {
        method: "POST",
        headers: { "content-type": "text/plain" },
        body: payload(run, id),
      });
      await r.body?.cancel();
      if (r.ok) acked.add(id);
      else refused++;
    } catch {
      refused++;
    }
    latencies.push(performance.now() - t0);
  }
};
const load = Promise.all(Array.from({ length: CONNECTIONS }, worker));

// Broker outages, evenly spread.
const outages = (async () => {
  for (let k = 1; k <= opts.restarts; k++) {
    const at = start + (k * opts.minutes * 60_000) / (opts.restarts + 1);
    await delay(Math.max(0, at - performance.now()));
    log(`broker stop ${k}`);
    await broker.stop();
    await delay(opts.outageSeconds * 1000);
    await broker.start();
    log(`broker started again`);
  }
})();

const samples: Sample[] = [];
let lastSent = 0;
while (performance.now() < end) {
  await delay(SAMPLE_MS);
  const lat = latencies;
  latencies = [];
  lat.sort((a, b) => a - b);
  const sent = nextId;
  samples.push({
    t: (performance.now() - start) / 1000,
    rssMb: await rssMb(pid),
    lagP99Ms: (await svc.metric("nodejs_eventloop_lag_p99_seconds").catch(() => NaN)) * 1000,
    p99Ms: lat.length ? lat[Math.floor(lat.length * 0.99)] : NaN,
    sentPerS: (sent - lastSent) / (SAMPLE_MS / 1000),
    walRecords: await svc.metric("wal_messages").catch(() => NaN),
    kafkaAcked: await svc.metric("kafka_client_ack_cnt").catch(() => NaN),
    brokerUp: broker.running,
  });
  lastSent = sent;
  const s = samples.at(-1)!;
  log(
    `t=${s.t.toFixed(0)}s rss=${s.rssMb.toFixed(0)}MB lag_p99=${s.lagP99Ms.toFixed(1)}ms p99=${
      s.p99Ms.toFixed(1)
    }ms sent/s=${s.sentPerS.toFixed(0)} wal=${s.walRecords} broker=${s.brokerUp ? "up" : "down"}`,
  );
}
await load;
await outages;
log(
  `load done: ${nextId} sent, ${acked.size} acknowledged, ${refused} refused; waiting for the WAL to drain`,
);
await waitFor("the WAL to drain", async () => (await svc.metric("wal_messages")) === 0, 300_000, 1000);
const records = await consumeAll(broker.bootstrap, topic, { expected: acked.size, timeoutMs: 120_000 });
const seen = new Map<number, number>();
for (const r of records) {
  const id = parseId(run, r.value);
  if (id !== null) seen.set(id, (seen.get(id) ?? 0) + 1);
}
let missing = 0;
for (const id of acked) if (!seen.has(id)) missing++;
let duplicated = 0;
for (const n of seen.values()) if (n > 1) duplicated += n - 1;

const csv = ["t_s,rss_mb,eventloop_lag_p99_ms,request_p99_ms,sent_per_s,wal_records,kafka_acked,broker_up"]
  .concat(
    samples.map((s) =>
      [s.t.toFixed(1), s.rssMb.toFixed(1), s.lagP99Ms.toFixed(2), s.p99Ms.toFixed(2), s.sentPerS.toFixed(0)]
        .concat([String(s.walRecords), String(s.kafkaAcked), s.brokerUp ? "1" : "0"]).join(",")
    ),
  );
await Deno.writeTextFile(`${opts.out}/soak.csv`, csv.join("\n") + "\n");
const rss = samples.map((s) => s.rssMb);
const summary = {
  minutes: opts.minutes,
  rate: opts.rate,
  restarts: opts.restarts,
  sent: nextId,
  acknowledged: acked.size,
  refused,
  inKafka: seen.size,
  missing,
  duplicated,
  rssMb: { first: rss[0], max: Math.max(...rss), last: rss.at(-1) },
  // Growth: the last fifth of the run against the second fifth (after warm-up), in MB.
  rssGrowthMb: mean(rss.slice(Math.floor(rss.length * 0.8))) -
    mean(rss.slice(Math.floor(rss.length * 0.2), Math.floor(rss.length * 0.4))),
};
await Deno.writeTextFile(`${opts.out}/soak.json`, JSON.stringify(summary, null, 2) + "\n");
console.log(JSON.stringify(summary));
await chart(`${opts.out}/soak.csv`, `${opts.out}/soak.png`, summary);
await Deno.remove(walDir, { recursive: true }).catch(() => {});
if (missing > 0) Deno.exitCode = 1;

function mean(xs: number[]): number {
  return xs.reduce((a, b) => a + b, 0) / Math.max(1, xs.length);
}

async function rssMb(pid: number): Promise<number> {
  const status = await Deno.readTextFile(`/proc/${pid}/status`);
  return Number(status.match(/VmRSS:\s+(\d+)/)?.[1] ?? NaN) / 1024;
}

async function pidOn(port: string): Promise<number> {
  const out = await new Deno.Command("ss", { args: ["-Hltnp", `sport = :${port}`] }).output();
  const pid = new TextDecoder().decode(out.stdout).match(/pid=(\d+)/)?.[1];
  if (!pid) throw new Error(`soak: no process listens on port ${port}`);
  return Number(pid);
}

/** Draws the CSV with matplotlib, installed on first use into .tools/bench-venv. */
async function chart(csvPath: string, pngPath: string, summary: Record<string, unknown>): Promise<void> {
  const venv = ".tools/bench-venv";
  const python = `${venv}/bin/python3`;
  let has = false;
  try {
    has = (await new Deno.Command(python, { args: ["-c", "import matplotlib"] }).output()).success;
  } catch { /* no venv yet */ }
  if (!has) {
    log("installing matplotlib into .tools/bench-venv");
    const made = await new Deno.Command("python3", { args: ["-m", "venv", venv] }).output();
    if (!made.success) {
      throw new Error(`soak: python3 -m venv failed: ${new TextDecoder().decode(made.stderr)}`);
    }
    const pip = await new Deno.Command(`${venv}/bin/pip`, { args: ["install", "-q", "matplotlib"] }).output();
    if (!pip.success) {
      throw new Error(`soak: pip install matplotlib failed: ${new TextDecoder().decode(pip.stderr)}`);
    }
  }
  const title =
    `soak: ${summary.minutes} min at ${summary.rate} msg/s, ${summary.restarts} broker restarts; ` +
    `sent ${summary.sent}, missing ${summary.missing}, duplicated ${summary.duplicated}`;
  const script = `
import csv, sys
import matplotlib
matplotlib.use("Agg")
import matplotlib.pyplot as plt
rows = list(csv.DictReader(open(sys.argv[1])))
t = [float(r["t_s"]) / 60 for r in rows]
panels = [("rss_mb", "RSS (MB)"), ("eventloop_lag_p99_ms", "event-loop lag p99 (ms)"),
          ("request_p99_ms", "request p99 (ms)"), ("wal_records", "WAL records")]
fig, axes = plt.subplots(len(panels), 1, figsize=(10, 10), sharex=True)
down = [float(r["t_s"]) / 60 for r in rows if r["broker_up"] == "0"]
for ax, (key, label) in zip(axes, panels):
    ax.plot(t, [float(r[key]) for r in rows], lw=1.2)
    for x in down:
        ax.axvspan(x - 5 / 120, x + 5 / 120, color="red", alpha=0.12, lw=0)
    ax.set_ylabel(label)
    ax.grid(alpha=0.3)
axes[-1].set_xlabel("minutes (red: broker down)")
fig.suptitle(sys.argv[3], fontsize=9)
fig.tight_layout()
fig.savefig(sys.argv[2], dpi=90)
`;
  const r = await new Deno.Command(python, { args: ["-c", script, csvPath, pngPath, title] }).output();
  if (!r.success) throw new Error(`soak: chart failed: ${new TextDecoder().decode(r.stderr)}`);
  log(`chart: ${pngPath}`);
}
