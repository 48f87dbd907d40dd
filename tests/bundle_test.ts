/**
 * The one-file bundle (`deno task bundle`) runs alone: copied into an empty directory and started there with the
 * pinned `deno run` and the service's flags (deploy/deno-flags.txt), it serves /healthz and produces to a real broker.
 */
import assert from "node:assert/strict";
import { startBroker } from "./kafka/broker.ts";
import { runCommand } from "./kafka/command.ts";
import { consumeAll } from "./kafka/consume.ts";
import { buildBundle, DENO, serviceFlags } from "./support/bundle.ts";
import { startService } from "./support/service.ts";
import { tempDir } from "./support/temp_dir.ts";

Deno.test({
  name: "bundle: one file in an empty directory starts, answers /healthz and produces to Kafka",
  sanitizeOps: false,
  sanitizeResources: false,
  async fn() {
    const bundle = await buildBundle();
    await using run = await tempDir("ka-bundle-run-");
    await Deno.copyFile(bundle, `${run.path}/kafka-ambassador.js`);
    assert.deepEqual([...Deno.readDirSync(run.path)].map((e) => e.name), ["kafka-ambassador.js"]);
    const flags = await serviceFlags();

    const version = await runCommand(
      "bash",
      [
        "-c",
        `cd "${run.path}" && "${DENO}" run --no-prompt ${flags.join(" ")} kafka-ambassador.js --version`,
      ],
      { timeoutMs: 30_000 },
    );
    assert.equal(version.code, 0, version.stderr);
    assert.match(
      new TextDecoder().decode(version.stdout),
      /^kafka-ambassador \S+ \(librdkafka \d+\.\d+\.\d+\)/,
    );

    await using broker = await startBroker();
    await broker.createTopic("bundle-demo");
    await using state = await tempDir("ka-bundle-state-");
    await using svc = await startService({
      producer: { wal: { mode: "fallback", path: `${state.path}/wal` } },
      kafka: { brokers: [broker.bootstrap] },
    }, {
      dir: state.path,
      command: (configPath) => ({
        cmd: DENO,
        args: ["run", "--no-prompt", ...flags, "kafka-ambassador.js", "-config", configPath],
        cwd: run.path,
      }),
    });
    const health = await fetch(`${svc.monitoring}/healthz`);
    assert.equal(health.status, 200, await health.text());

    const value = `from the bundle ${crypto.randomUUID()}`;
    const r = await fetch(`${svc.http}/topics/bundle-demo/messages?ack=kafka`, {
      method: "POST",
      headers: { "content-type": "text/plain" },
      body: value,
    });
    assert.equal(r.status, 200, await r.clone().text());
    const where = await r.json();
    const read = await consumeAll(broker.bootstrap, "bundle-demo", { expected: 1 });
    assert.deepEqual(read.map((m) => [m.value, m.partition, String(m.offset)]), [[
      value,
      where.partition,
      where.offset,
    ]]);
    // With the shipped permissions (no --allow-all), /proc/self cannot be read: the resident size still is.
    const rss = await svc.metric("process_resident_memory_bytes");
    assert.ok(rss > 20e6 && rss < 2e9, `process_resident_memory_bytes ${rss}`);
    assert.equal(await svc.stop(), 0);
  },
});

Deno.test({
  name:
    "compile: deno task compile builds a binary that runs, or says in one line that denort is out of reach",
  sanitizeOps: false,
  sanitizeResources: false,
  async fn() {
    await using out = await tempDir("ka-compile-");
    const binary = `${out.path}/kafka-ambassador`;
    const root = new URL("../", import.meta.url).pathname;
    const r = await runCommand("bash", [`${root}scripts/compile.sh`, binary], { timeoutMs: 300_000 });
    if (r.code === 0) {
      const version = await runCommand(binary, ["--version"], { timeoutMs: 30_000 });
      assert.equal(version.code, 0, version.stderr);
      assert.match(new TextDecoder().decode(version.stdout), /^kafka-ambassador \S+ \(librdkafka /);
      return;
    }
    // Deno's download server cannot be reached (as where this was written): one line, no stack trace.
    assert.equal(r.code, 1);
    assert.equal(r.stderr.trim().split("\n").length, 1, r.stderr);
    assert.match(r.stderr, /^compile: deno compile could not download its runtime \(\S*denort\S*\)/);
  },
});
