/**
 * The Grafana dashboard and the Prometheus alert rules query only metrics the service really serves: every
 * metric name (and every `label="value"` matcher) in their expressions is looked up in the /metrics of a
 * service that has produced to a real broker, failed a delivery, written to its WAL and served gRPC. Each
 * expression must also parse with Prometheus' own PromQL grammar.
 */
import assert from "node:assert/strict";
// Prometheus' PromQL grammar, used by this test only (deno.json's imports are left to the service's dependencies).
// deno-lint-ignore no-import-prefix
import { parser } from "npm:@prometheus-io/lezer-promql@0.315.0";
import { parse } from "yaml";
import { startBroker } from "./kafka/broker.ts";
import { runCommand } from "./kafka/command.ts";
import { startService } from "./support/service.ts";
import { tempDir } from "./support/temp_dir.ts";
import { waitFor } from "./support/wait.ts";

const REPO = new URL("../", import.meta.url).pathname;
const GRPCURL = `${REPO}.tools/bin/grpcurl`;

interface Selector {
  name: string;
  /** The `label="value"` matchers (regex and negative matchers are left out). */
  equals: [string, string][];
}

/**
 * The metric selectors of a PromQL expression, read with Prometheus' own PromQL grammar (the one its web UI
 * uses); throws on a syntax error. Grafana's `$__rate_interval` is replaced by a duration first, as Grafana does.
 */
function selectors(expr: string): Selector[] {
  const text = expr.replaceAll("$__rate_interval", "5m");
  const tree = parser.parse(text);
  const found: Selector[] = [];
  tree.iterate({
    enter(node) {
      if (node.type.isError) throw new Error(`PromQL syntax error at ${node.from}: ${expr}`);
      if (node.name !== "VectorSelector") return;
      const name = node.node.getChild("Identifier");
      const equals: [string, string][] = [];
      for (const m of node.node.getChild("LabelMatchers")?.getChildren("UnquotedLabelMatcher") ?? []) {
        const [label, op, value] = [
          m.getChild("LabelName"),
          m.getChild("MatchOp"),
          m.getChild("StringLiteral"),
        ];
        if (label && value && op?.firstChild?.name === "EqlSingle") {
          equals.push([text.slice(label.from, label.to), JSON.parse(text.slice(value.from, value.to))]);
        }
      }
      if (name) found.push({ name: text.slice(name.from, name.to), equals });
    },
  });
  return found;
}

/** Every sample of a Prometheus text exposition: its name and labels. */
function samples(text: string): { name: string; labels: Record<string, string> }[] {
  return text.split("\n").filter((l) => l !== "" && !l.startsWith("#")).map((line) => {
    const name = /^[\w:]+/.exec(line)![0];
    const labels: Record<string, string> = {};
    const braces = line.startsWith("{", name.length) ? line.slice(name.length, line.indexOf("}") + 1) : "";
    for (const [, k, v] of braces.matchAll(/(\w+)="([^"]*)"/g)) labels[k] = v;
    return { name, labels };
  });
}

async function dashboardExpressions(): Promise<string[]> {
  const dashboard = JSON.parse(await Deno.readTextFile(`${REPO}deploy/grafana/kafka-ambassador.json`));
  const exprs: string[] = [];
  for (const panel of dashboard.panels) for (const t of panel.targets ?? []) exprs.push(t.expr);
  // Grafana's label_values(metric, label) queries the series of `metric`.
  for (const v of dashboard.templating.list) {
    if (v.type === "query") {
      exprs.push(String(v.query.query ?? v.query).replace(/^label_values\((.+), *\w+\)$/, "$1"));
    }
  }
  return exprs;
}

async function alertExpressions(): Promise<string[]> {
  const rules = parse(await Deno.readTextFile(`${REPO}deploy/prometheus/alerts.yaml`));
  return rules.groups.flatMap((g: { rules: { alert: string; expr: string }[] }) =>
    g.rules.map((r) => r.expr)
  );
}

Deno.test("selectors: names and equality matchers out of PromQL, syntax errors refused", () => {
  assert.deepEqual(
    selectors(
      "histogram_quantile(0.99, sum by (le, route) (rate(http_request_duration_seconds_bucket[$__rate_interval])))",
    ),
    [{ name: "http_request_duration_seconds_bucket", equals: [] }],
  );
  assert.deepEqual(selectors('max by (broker) (rdkafka_broker{metric="rtt",window=~"p9."}) / 1e6'), [
    { name: "rdkafka_broker", equals: [["metric", "rtt"]] },
  ]);
  assert.deepEqual(selectors("(wal_bytes + wal_unwritten_bytes) / wal_max_bytes > 0.8").map((s) => s.name), [
    "wal_bytes",
    "wal_unwritten_bytes",
    "wal_max_bytes",
  ]);
  assert.throws(() => selectors("sum(rate(wal_writes[5m])"), /PromQL syntax error/);
});

Deno.test({
  name: "dashboards: every metric the dashboard and the alerts query is served by a running service",
  sanitizeOps: false,
  sanitizeResources: false,
  async fn() {
    const dashboard = await dashboardExpressions();
    const alerts = await alertExpressions();
    assert.ok(
      dashboard.length >= 10 && alerts.length >= 4,
      `${dashboard.length} panels' queries, ${alerts.length} alerts`,
    );
    // Parsed before anything starts: a syntax error fails at once.
    const queried = [...dashboard, ...alerts].map((expr) => ({ expr, found: selectors(expr) }));

    await using broker = await startBroker();
    await broker.createTopic("dash-kafka");
    await broker.createTopic("dash-drop");
    await using dir = await tempDir("ka-dash-");
    await using svc = await startService({
      producer: { wal: { mode: "fallback", path: `${dir.path}/wal`, always_topics: ["dash-wal"] } },
      kafka: { brokers: [broker.bootstrap], "statistics.interval.ms": 500 },
    }, { dir: dir.path });
    const post = async (path: string) => {
      const r = await fetch(`${svc.http}${path}`, { method: "POST", body: "x" });
      await r.body?.cancel();
      return r.status;
    };
    assert.equal(await post("/topics/dash-kafka/messages?ack=kafka"), 200);
    assert.equal(await post("/topics/dash-wal/messages?ack=wal"), 200);
    // A partition the topic does not have, asked for before librdkafka knows the topic (its first message): it is
    // taken, then refused for good on its report, so it is counted as failed and dropped. (Once the topic is known,
    // librdkafka refuses such a message at once, and the client's 400 is no drop.)
    await post("/topics/dash-drop/messages?ack=kafka&partition=7");
    const listed = await runCommand(GRPCURL, ["-plaintext", svc.grpc, "KafkaAmbassador/ListTopics"], {
      timeoutMs: 30_000,
    });
    assert.equal(listed.code, 0, listed.stderr);

    let text = "";
    await waitFor("librdkafka's broker statistics and the dropped message in /metrics", async () => {
      text = await (await fetch(`${svc.monitoring}/metrics`)).text();
      return text.includes("rdkafka_broker{") && /^kafka_client_dropped_cnt\{/m.test(text);
    }, 20_000);
    const served = samples(text);
    const missing: string[] = [];
    for (const { expr, found } of queried) {
      for (const { name, equals } of found) {
        const match = served.some((s) => s.name === name && equals.every(([k, v]) => s.labels[k] === v));
        if (!match) missing.push(`${name}${equals.map(([k, v]) => `{${k}="${v}"}`).join("")} (in ${expr})`);
      }
    }
    assert.deepEqual(missing, [], `not served:\n${missing.join("\n")}`);
    assert.equal(await svc.stop(), 0);
  },
});
