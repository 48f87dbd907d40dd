/** The hot-path metric children read as prom-client's own would. */
import assert from "node:assert/strict";
import client from "prom-client";
import { HotCounter, HotHistogram } from "../src/metrics.ts";

const BUCKETS = [0.005, 0.01, 0.025, 0.05, 0.1];

Deno.test("HotHistogram reads exactly as a prom-client Histogram fed the same values", async () => {
  const ours = new client.Registry();
  const theirs = new client.Registry();
  const hot = new HotHistogram("t_seconds", "help", "route", BUCKETS, [ours]);
  const ref = new client.Histogram({
    name: "t_seconds",
    help: "help",
    labelNames: ["route"],
    buckets: BUCKETS,
    registers: [theirs],
  });
  // Values on, below and above every bound, for two label values.
  const values = [0, 0.004, 0.005, 0.0051, 0.01, 0.02, 0.025, 0.07, 0.1, 0.1000001, 3];
  for (const [i, v] of values.entries()) {
    const route = i % 2 === 0 ? "/a" : "/b";
    hot.child(route).observe(v);
    ref.labels(route).observe(v);
  }
  assert.equal(await ours.metrics(), await theirs.metrics());
  hot.reset();
  ref.reset();
  assert.equal(await ours.metrics(), await theirs.metrics());
});

Deno.test("HotCounter: increments are handed to prom-client whenever the counter is read", async () => {
  const registry = new client.Registry();
  const counter = new HotCounter({
    name: "t_total",
    help: "help",
    labelNames: ["route", "code"],
    registers: [registry],
  });
  const ok = counter.hot("/a", "200");
  assert.equal(counter.hot("/a", "200"), ok, "one child per label set");
  for (let i = 0; i < 5; i++) ok.inc();
  counter.hot("/a", "503").inc(3);
  const values = (await counter.get()).values.map((v) => `${v.labels.route} ${v.labels.code} ${v.value}`)
    .sort();
  assert.deepEqual(values, ["/a 200 5", "/a 503 3"]);
  ok.inc();
  assert.match(await registry.metrics(), /t_total\{route="\/a",code="200"\} 6/);
});
