/**
 * The command line: --version, --help, --check-config, exit code 2 with one line on bad config or a usage on a bad
 * command line, the shipped default config.
 */
import assert from "node:assert/strict";
import { existsSync } from "node:fs";
import { freePort, shippedFlags, startService } from "./support/service.ts";
import { parse } from "yaml";
import { tempDir } from "./support/temp_dir.ts";
import { delay, waitFor } from "./support/wait.ts";
import { openWal } from "../src/wal/wal.ts";

const MAIN = new URL("../src/main.ts", import.meta.url).pathname;
const SHIPPED = shippedFlags(new URL("../", import.meta.url).pathname);
const DEFAULT_CONFIG = new URL("../config/default.yaml", import.meta.url).pathname;

async function run(
  args: string[],
  env: Record<string, string> = {},
): Promise<{ code: number; out: string; err: string }> {
  const out = await new Deno.Command(Deno.execPath(), {
    args: ["run", ...SHIPPED, MAIN, ...args],
    env,
    stdin: "null",
    signal: AbortSignal.timeout(60_000), // a run that should have exited but serves fails instead of hanging
  }).output();
  const dec = new TextDecoder();
  return { code: out.code, out: dec.decode(out.stdout), err: dec.decode(out.stderr) };
}

async function withConfig(yaml: string, fn: (path: string) => Promise<void>): Promise<void> {
  const path = await Deno.makeTempFile({ suffix: ".yaml" });
  try {
    await Deno.writeTextFile(path, yaml);
    await fn(path);
  } finally {
    await Deno.remove(path);
  }
}

Deno.test("cli: --version names the product and librdkafka", async () => {
  const r = await run(["--version"]);
  assert.equal(r.code, 0);
  assert.match(r.out, /^kafka-ambassador \S+ \(librdkafka \d+\.\d+\.\d+\)/);
});

Deno.test("cli: -h and --help print the usage on stdout and exit 0, as Go's flag package does", async () => {
  for (const flag of ["-h", "--help", "-help"]) {
    const r = await run([flag]);
    assert.equal(r.code, 0, `${flag}: ${r.err}`);
    assert.match(r.out, /^usage: kafka-ambassador -config PATH/, flag);
    assert.equal(r.err, "", flag);
  }
});

Deno.test("cli: a bad command line exits 2 with a plain-text reason and the usage on stderr", async () => {
  for (
    const [args, reason] of [
      [["--bogus"], "unknown flag --bogus"],
      [["serve"], 'unexpected argument "serve"'],
      [["-config"], "flag -config needs a path"],
      [[], "no config file given (-config PATH)"],
    ] as const
  ) {
    const r = await run([...args]);
    assert.equal(r.code, 2, `${args.join(" ")}: ${r.err}`);
    const lines = r.err.trim().split("\n");
    assert.equal(lines[0], `kafka-ambassador: ${reason}`);
    assert.match(lines[1], /^usage: kafka-ambassador -config PATH/);
    assert.equal(r.out, "");
  }
});

Deno.test("cli: a first argument naming the program is skipped, as the Go image's manifests pass it", async () => {
  // The Go chart: `args: [/bin/kafka-ambassador, -config, /etc/kafka-ambassador/config.yaml]`, after our entrypoint.
  for (const self of ["/bin/kafka-ambassador", "kafka-ambassador"]) {
    const check = await run([self, "-config", DEFAULT_CONFIG, "--check-config"]);
    assert.equal(check.code, 0, `${self}: ${check.err}`);
    const wal = await run([self, "wal", "--help"]);
    assert.equal(wal.code, 0, `${self} wal --help: ${wal.err}`);
  }
  const other = await run(["/bin/other-program", "-config", DEFAULT_CONFIG]);
  assert.equal(other.code, 2);
  assert.match(other.err, /unexpected argument "\/bin\/other-program"/);
});

Deno.test("cli: --check-config accepts the shipped default config", async () => {
  const r = await run(["-config", DEFAULT_CONFIG, "--check-config"]);
  assert.equal(r.code, 0, r.err);
  assert.match(r.out, /config ok/);
});

const NO_WAL = "producer.wal.mode: disable\n";
const INVALID: Array<[string, string, Record<string, string>, RegExp]> = [
  ["unknown key", NO_WAL + "producer.cb.failz: 3\n", {}, /producer\.cb\.failz/],
  ["bad duration", NO_WAL + "producer.cb.timeout: soon\n", {}, /producer\.cb\.timeout/],
  ["wrong type", NO_WAL + "producer.cb.fails: many\n", {}, /producer\.cb\.fails/],
  ["rate_limit 0", NO_WAL + "producer.resend.rate_limit: 0\n", {}, /producer\.resend\.rate_limit/],
  ["empty WAL path", 'producer.wal.path: ""\n', {}, /producer\.wal\.path: empty/],
  ["unknown librdkafka property", NO_WAL + "kafka.no.such.property: 1\n", {}, /kafka\.no\.such\.property/],
  ["bad librdkafka value", NO_WAL + "kafka:\n  acks: maybe\n", {}, /kafka\.acks/],
  ["bad env override", NO_WAL, { "KA_PRODUCER.CB.FAILS": "x" }, /producer\.cb\.fails/],
  ["no broker", NO_WAL, {}, /kafka\.brokers: no broker/],
  ["brokers blanked by env", NO_WAL + "kafka.brokers: [a:1]\n", { KA_KAFKA__BROKERS: " " }, /kafka\.brokers/],
  ["unknown env key path", NO_WAL + "kafka.brokers: [a:1]\n", { KA_FOO__BAR: "1" }, /foo\.bar/],
  ["bad log level", NO_WAL + "kafka.brokers: [a:1]\n", { KA_LOG_LEVEL: "verbose" }, /KA_LOG_LEVEL/],
  [
    "a log file that cannot be opened",
    NO_WAL + "kafka.brokers: [a:1]\nglobal.log.outputPaths: [stdout, /nonexistent/ka.log]\n",
    {},
    /"msg":"config: global\.log\.outputPaths: cannot open \/nonexistent\/ka\.log: /,
  ],
  [
    "a WAL path that is a file",
    "producer.wal.path: /etc/hostname\nkafka.brokers: [a:1]\n",
    {},
    /config: producer\.wal\.path: \/etc\/hostname is not a directory/,
  ],
  [
    "a librdkafka file that is not there",
    NO_WAL + "kafka: { brokers: [a:1], security.protocol: ssl, ssl.ca.location: /nonexistent/ca.pem }\n",
    {},
    /^\{.*"msg":"config: kafka: librdkafka: cannot create producer: ssl\.ca\.location failed: .*\}$/,
  ],
];

for (const [name, yaml, env, expected] of INVALID) {
  Deno.test(`cli: invalid config (${name}) exits 2 with one line naming the key`, async () => {
    await withConfig(yaml, async (path) => {
      const r = await run(["-config", path, "--check-config"], env);
      assert.equal(r.code, 2, `${r.out}${r.err}`);
      const lines = r.err.trim().split("\n"); // --check-config's own output, whatever the config's log
      assert.equal(lines.length, 1, r.err);
      assert.match(lines[0], expected);
    });
  });
}

Deno.test("cli: a config librdkafka cannot create a producer from exits 2 at start too", async () => {
  await using dir = await tempDir("ka-badssl-");
  const yaml = `producer.wal.path: ${dir.path}\n` +
    "kafka: { brokers: [a:1], security.protocol: ssl, ssl.ca.location: /nonexistent/ca.pem }\n";
  await withConfig(yaml, async (path) => {
    const r = await run(["-config", path]);
    assert.equal(r.code, 2, r.out);
    assert.match(
      r.out,
      /"msg":"config: kafka: librdkafka: cannot create producer: ssl\.ca\.location failed: /,
    );
  });
});

Deno.test("cli: a missing config file exits 2", async () => {
  const r = await run(["-config", "/nonexistent/ka.yaml"]);
  assert.equal(r.code, 2);
  assert.match(r.out, /nonexistent/);
});

Deno.test({
  name: "cli: the default config starts without any Kafka and accepted messages go to the WAL",
  sanitizeOps: false,
  sanitizeResources: false,
  async fn() {
    await using dir = await tempDir("ka-default-");
    const config = parse(await Deno.readTextFile(DEFAULT_CONFIG)) as Record<string, unknown>;
    const kafka = config.kafka as Record<string, unknown>;
    kafka.brokers = [`127.0.0.1:${freePort()}`]; // nothing listens there
    (config.producer as Record<string, Record<string, unknown>>).wal.path = `${dir.path}/wal`;
    delete config.server;
    await using svc = await startService(config, { dir: dir.path });
    const r = await fetch(`${svc.http}/topics/default-check/messages`, { method: "POST", body: "hello" });
    assert.equal(r.status, 200);
    await r.body?.cancel();
    await waitFor(
      "the message to reach the WAL",
      async () => (await svc.metric("wal_messages")) >= 1,
      60_000,
      200,
    );
    assert.equal(await svc.stop(), 0);
  },
});

Deno.test({
  name:
    "cli: cert expiry is exported; a SIGHUP that cannot build a new producer (key gone) keeps the current one",
  sanitizeOps: false,
  sanitizeResources: false,
  async fn() {
    await using dir = await tempDir("ka-hup-fail-");
    const { cert, key } = await writeClientCertificate(dir.path);
    await using svc = await startService({
      producer: { wal: { mode: "fallback", in_memory: true } },
      kafka: {
        brokers: [`127.0.0.1:${freePort()}`],
        "security.protocol": "ssl",
        "ssl.certificate.location": cert,
        "ssl.key.location": key,
      },
    }, { dir: dir.path });
    const post = async () => {
      const r = await fetch(`${svc.http}/topics/hup/messages`, { method: "POST", body: "x" });
      await r.body?.cancel();
      return r.status;
    };
    assert.equal(await post(), 200);
    const expiry = await svc.metric("kafka_cert_expiration_time");
    assert.ok(Math.abs(expiry - (Date.now() / 1000 + 30 * 86400)) < 86400, `cert expiry ${expiry}`);
    await Deno.remove(key);
    svc.signal("SIGHUP");
    await waitFor(
      "the failed swap to be logged",
      async () =>
        (await svc.logs()).some((l) => String(l.msg).startsWith("SIGHUP: cannot start a new kafka producer")),
      10_000,
    );
    assert.equal(await post(), 200);
    assert.equal(await svc.metric("kafka_active_producer", { producer_id: "rdkafka#producer-1" }), 1);
    assert.equal(await svc.stop(), 0);
  },
});

/** A self-signed client certificate and its key (openssl), as librdkafka's ssl.*.location read them. */
async function writeClientCertificate(dir: string): Promise<{ cert: string; key: string }> {
  const cert = `${dir}/client.pem`, key = `${dir}/client.key`;
  const out = await new Deno.Command("openssl", {
    args: [
      "req",
      "-x509",
      "-newkey",
      "rsa:2048",
      "-nodes",
      "-days",
      "30",
      "-subj",
      "/CN=kafka-ambassador-test",
    ]
      .concat(["-keyout", key, "-out", cert]),
    stdout: "null",
    stderr: "piped",
  }).output();
  assert.equal(out.code, 0, new TextDecoder().decode(out.stderr));
  return { cert, key };
}

Deno.test("cli: a listener that cannot bind ends the process with exit 1 and one reason", async () => {
  const taken = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  try {
    const port = (taken.addr as Deno.NetAddr).port;
    const yaml =
      `producer.wal.mode: disable\nserver.http.listen: "127.0.0.1:${port}"\nkafka.brokers: [127.0.0.1:1]\n`;
    await withConfig(yaml, async (path) => {
      const r = await run(["-config", path]);
      assert.equal(r.code, 1, r.out);
      const line = r.out.split("\n").find((l) => l.includes("cannot run"));
      assert.ok(line, r.out);
      assert.equal(JSON.parse(line).error, `http listener 127.0.0.1:${port}: address already in use`);
    });
  } finally {
    taken.close();
  }
});

/**
 * A service that takes a while to start, spawned: a WAL of 200,000 records to recover. `logged(msg)` says whether
 * it logged `msg`; `recovering` resolves once it holds the WAL's lock (it is recovering); disposing of it kills
 * the process and waits for it.
 */
async function slowStart(dir: string): Promise<
  AsyncDisposable & {
    child: Deno.ChildProcess;
    monitoring: string;
    lines: string[];
    logged(msg: string): boolean;
    recovering: Promise<void>;
    reading: Promise<void>;
  }
> {
  const walPath = `${dir}/wal`;
  const wal = await openWal({ path: walPath, inMemory: false, maxBytes: 1 << 30 });
  const value = new Uint8Array(100);
  let durable: Promise<void> = Promise.resolve();
  for (let i = 0; i < 200_000; i++) durable = wal.append({ topic: "slow", value }).durable;
  await durable;
  await wal.close();
  const monitoring = `127.0.0.1:${freePort()}`;
  const config = `${dir}/config.yaml`;
  await Deno.writeTextFile(
    config,
    `server: { http: { listen: "127.0.0.1:${freePort()}" }, monitoring: { listen: "${monitoring}" } }\n` +
      `producer.wal.path: ${walPath}\nkafka.brokers: ["127.0.0.1:${freePort()}"]\n`,
  );
  const child = new Deno.Command(Deno.execPath(), {
    args: ["run", ...SHIPPED, MAIN, "-config", config],
    stdin: "null",
    stdout: "piped",
    stderr: "null",
  }).spawn();
  const lines: string[] = [];
  const reading = (async () => {
    for await (const chunk of child.stdout.pipeThrough(new TextDecoderStream())) {
      lines.push(...chunk.split("\n"));
    }
  })();
  return {
    child,
    monitoring,
    lines,
    logged: (msg: string) => lines.some((l) => l.includes(`"msg":"${msg}"`)),
    recovering: waitFor("the WAL to be locked", () => holds(child.pid, `${walPath}/LOCK`), 30_000, 1),
    reading,
    async [Symbol.asyncDispose]() {
      try {
        child.kill("SIGKILL");
      } catch { /* ended */ }
      await child.status;
      await reading;
    },
  };
}

Deno.test("cli: a SIGHUP while the service starts does not end it; the producer is replaced once it runs", async () => {
  await using dir = await tempDir("ka-hup-start-");
  await using service = await slowStart(dir.path);
  const { child, monitoring, lines, logged, recovering } = service;
  // From the moment the service holds the WAL's lock (it is recovering) until it listens, a SIGHUP every few ms.
  await recovering;
  let hups = 0;
  // A bound, so that a service that never logs it fails the test rather than taking SIGHUPs for good.
  const deadline = performance.now() + 60_000;
  while (!logged("monitoring listening")) {
    assert.ok(performance.now() < deadline, `not listening after ${hups} SIGHUPs:\n${lines.join("\n")}`);
    child.kill("SIGHUP");
    hups++;
    const ended = await Promise.race([child.status.then(() => true), delay(3).then(() => false)]);
    assert.ok(!ended, `the service ended after ${hups} SIGHUPs:\n${lines.join("\n")}`);
  }
  assert.ok(hups > 0);
  assert.ok(logged("SIGHUP while starting: the producer is replaced once started"), lines.join("\n"));
  await waitFor(
    "the producer to be replaced",
    () => logged("kafka producer replaced; the old one drains"),
    20_000,
  );
  const health = await fetch(`http://${monitoring}/healthz`);
  await health.body?.cancel();
  assert.equal(health.status, 200);
  child.kill("SIGTERM");
  assert.equal((await child.status).code, 0);
});

Deno.test("cli: a SIGTERM while the service starts stops it once it runs, with exit 0", async () => {
  await using dir = await tempDir("ka-term-start-");
  await using service = await slowStart(dir.path);
  const { child, lines, logged, recovering, reading } = service;
  await recovering;
  assert.ok(!logged("monitoring listening"), "started before the signal: the WAL recovered too fast");
  child.kill("SIGTERM");
  assert.equal((await child.status).code, 0, lines.join("\n"));
  await reading;
  assert.ok(logged("SIGTERM while starting: stopping once started"), lines.join("\n"));
  assert.ok(logged("stopped"), lines.join("\n"));
});

/** Whether process `pid` has `path` open. */
function holds(pid: number, path: string): boolean {
  try {
    for (const fd of Deno.readDirSync(`/proc/${pid}/fd`)) {
      try {
        if (Deno.readLinkSync(`/proc/${pid}/fd/${fd.name}`) === path) return true;
      } catch { /* closed meanwhile */ }
    }
  } catch { /* ended */ }
  return false;
}

Deno.test({
  name:
    "cli: SIGUSR1, SIGUSR2 and SIGALRM are ignored, as by the Go service; SIGINT sent twice at once is one clean stop",
  sanitizeOps: false,
  sanitizeResources: false,
  async fn() {
    await using dir = await tempDir("ka-signals-");
    const walPath = `${dir.path}/wal`;
    await using svc = await startService({
      kafka: { brokers: [`127.0.0.1:${freePort()}`] }, // nothing listens there
      producer: { shutdown_timeout: "1s", wal: { path: walPath } },
    }, { dir: dir.path });
    for (let i = 0; i < 5; i++) {
      const r = await fetch(`${svc.http}/topics/signals/messages`, { method: "POST", body: `m${i}` });
      assert.equal(r.status, 200);
      await r.body?.cancel();
    }
    for (const signal of ["SIGUSR1", "SIGUSR2", "SIGALRM"] as const) svc.signal(signal);
    await waitFor(
      "three ignored signals logged",
      async () => (await svc.logs()).filter((l) => l.msg === "signal ignored").length === 3,
      10_000,
      50,
    );
    const health = await fetch(`${svc.monitoring}/healthz`);
    assert.equal(health.status, 200, "the service still runs");
    await health.body?.cancel();
    // A terminal's Ctrl-C under `deno task`: the task passes it on, so the service gets it twice.
    svc.signal("SIGINT");
    svc.signal("SIGINT");
    assert.equal(await svc.exited, 0, "one stop, not the second signal's exit at once");
    const wal = await openWal({ path: walPath, inMemory: false, maxBytes: 1 << 30 });
    try {
      assert.equal(wal.pendingCount(), 5, "what librdkafka held is in the WAL");
    } finally {
      await wal.close();
    }
  },
});

Deno.test({
  name:
    "cli: global.log.outputPaths sends the log to a file and stderr rather than stdout, as the Go service's zap",
  sanitizeOps: false,
  sanitizeResources: false,
  async fn() {
    await using dir = await tempDir("ka-log-paths-");
    const file = `${dir.path}/ka.log`;
    await using svc = await startService({
      // encoding: a key without effect here, warned of while the config is read, before the outputs are known.
      global: { log: { outputPaths: [file, "stderr"], encoding: "console" } },
      producer: { wal: { mode: "fallback", in_memory: true } },
      kafka: { brokers: [`127.0.0.1:${freePort()}`] },
    }, { dir: dir.path });
    assert.equal(await svc.stop(), 0);
    const lines = (path: string) =>
      Deno.readTextFileSync(path).split("\n").filter((l) => l.startsWith("{")).map((l) => JSON.parse(l).msg);
    assert.ok(lines(file).includes("http listening"), JSON.stringify(lines(file)));
    assert.ok(lines(file).some((msg) => msg.startsWith("config: global.log.encoding has no effect here")));
    assert.deepEqual(lines(svc.stderrPath), lines(file));
    assert.deepEqual(lines(svc.logPath), []); // stdout
  },
});

Deno.test({
  name:
    "cli: SIGHUP opens the log files again: after a rotation renamed one, lines go to a new file at its path",
  sanitizeOps: false,
  sanitizeResources: false,
  async fn() {
    await using dir = await tempDir("ka-log-reopen-");
    const file = `${dir.path}/ka.log`;
    await using svc = await startService({
      global: { log: { outputPaths: [file] } },
      producer: { wal: { mode: "fallback", in_memory: true } },
      kafka: { brokers: [`127.0.0.1:${freePort()}`] },
    }, { dir: dir.path });
    const messages = (path: string): string[] =>
      existsSync(path)
        ? Deno.readTextFileSync(path).split("\n").filter((l) => l.startsWith("{")).map((l) =>
          JSON.parse(l).msg
        )
        : [];
    await Deno.rename(file, `${file}.1`);
    svc.signal("SIGHUP");
    await waitFor(
      "the swap to be logged in a new file",
      () => messages(file).some((msg) => msg.startsWith("kafka producer replaced")),
      10_000,
    );
    assert.equal(await svc.stop(), 0);
    assert.ok(messages(`${file}.1`).includes("http listening"), JSON.stringify(messages(`${file}.1`)));
    assert.ok(!messages(`${file}.1`).some((msg) => msg.startsWith("kafka producer replaced")));
  },
});

Deno.test("cli: --check-config checks a log file it would create without creating it", async () => {
  await using dir = await tempDir("ka-log-check-");
  const file = `${dir.path}/not-yet.log`;
  await withConfig(`${NO_WAL}kafka.brokers: [a:1]\nglobal.log.outputPaths: "${file}"\n`, async (path) => {
    const r = await run(["-config", path, "--check-config"]);
    assert.equal(r.code, 0, r.err);
    assert.equal(r.out, `config ok: ${path}\n`);
    assert.ok(!existsSync(file), `${file} was created`);
  });
});

Deno.test("cli: librdkafka that cannot be loaded is logged where the config sends the log", async () => {
  await using dir = await tempDir("ka-log-nolib-");
  const file = `${dir.path}/ka.log`;
  await withConfig(`${NO_WAL}kafka.brokers: [a:1]\nglobal.log.outputPaths: [${file}]\n`, async (path) => {
    const r = await run(["-config", path], { LIBRDKAFKA_PATH: `${dir.path}/no-such-librdkafka.so` });
    assert.equal(r.code, 1, `${r.out}${r.err}`);
    assert.equal(r.out, "");
    const lines = Deno.readTextFileSync(file).trim().split("\n").map((l) => JSON.parse(l));
    assert.ok(
      lines.some((l) => l.level === "error" && String(l.msg).includes("librdkafka")),
      JSON.stringify(lines),
    );
  });
});
