/**
 * A client naming a new topic in every request: how large `/metrics` and the service's memory grow. Runs the
 * service with no broker (every message goes to the WAL), posts one message to each of N distinct topics over 32
 * connections, then reads `/metrics` and the child's RSS.
 *
 * Run: deno run --allow-all bench/topic_flood.ts [topics, default 40000]
 * Prints /metrics size and RSS before and after, and the number of `topic` label values in `/metrics`.
 */
import { freePort, startService } from "../tests/support/service.ts";

const TOPICS = Number(Deno.args[0] ?? 40_000);
const CONNECTIONS = 32;

async function rssMb(pid: number): Promise<{ rss: number; peak: number }> {
  const status = await Deno.readTextFile(`/proc/${pid}/status`);
  const kb = (name: string) => Number(new RegExp(`${name}:\\s+(\\d+)`).exec(status)?.[1] ?? NaN);
  return { rss: kb("VmRSS") / 1024, peak: kb("VmHWM") / 1024 };
}

/** The pid of the process listening on the service's monitoring port. */
async function servicePid(monitoring: string): Promise<number> {
  const port = new URL(monitoring).port;
  const out = await new Deno.Command("ss", { args: ["-Hltnp", `sport = :${port}`], stdout: "piped" })
    .output();
  const pid = Number(/pid=(\d+)/.exec(new TextDecoder().decode(out.stdout))?.[1] ?? NaN);
  if (Number.isNaN(pid)) throw new Error(`no process listens on port ${port}`);
  return pid;
}

async function metricsShape(monitoring: string): Promise<{ kb: number; topics: number }> {
  const text = await (await fetch(`${monitoring}/metrics`)).text();
  const topics = new Set([...text.matchAll(/topic="([^"]*)"/g)].map((m) => m[1]));
  return { kb: new TextEncoder().encode(text).length / 1024, topics: topics.size };
}

const dir = await Deno.makeTempDir({ prefix: "ka-flood-" });
const svc = await startService({
  producer: { wal: { mode: "fallback", path: `${dir}/wal` }, cb: { timeout: "60s" } },
  kafka: { brokers: [`127.0.0.1:${freePort()}`], "statistics.interval.ms": 1000 },
}, { dir });
try {
  // Let the breaker open so that every message goes to the WAL at once.
  await new Promise((r) => setTimeout(r, 1500));
  const pid = await servicePid(svc.monitoring);
  const before = { ...await metricsShape(svc.monitoring), ...await rssMb(pid) };
  let next = 0;
  let failed = 0;
  const started = performance.now();
  await Promise.all(Array.from({ length: CONNECTIONS }, async () => {
    for (let i = next++; i < TOPICS; i = next++) {
      const r = await fetch(`${svc.http}/topics/flood-${i}/messages`, { method: "POST", body: "x" });
      await r.body?.cancel();
      if (!r.ok) failed++;
    }
  }));
  const seconds = (performance.now() - started) / 1000;
  const after = { ...await metricsShape(svc.monitoring), ...await rssMb(pid) };
  console.log(`${TOPICS} topics posted in ${seconds.toFixed(1)} s, ${failed} refused`);
  console.log("| | /metrics KB | topic label values | RSS MB | peak RSS MB |");
  console.log("|---|---|---|---|---|");
  for (const [name, m] of [["before", before], ["after", after]] as const) {
    console.log(
      `| ${name} | ${m.kb.toFixed(0)} | ${m.topics} | ${m.rss.toFixed(0)} | ${m.peak.toFixed(0)} |`,
    );
  }
} finally {
  await svc.stop();
  await Deno.remove(dir, { recursive: true });
}
