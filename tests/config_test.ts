/** Config: defaults, the three key spellings, env overrides, kafka passthrough and every error message. */
import assert from "node:assert/strict";
import { type Config, ConfigError, defaultConfig, loadConfig, parseConfig } from "../src/config.ts";
import { formatDuration, parseDuration } from "../src/duration.ts";
import { listenAddress } from "../src/listen_address.ts";
import { filesUnder } from "./support/files.ts";

const FIXTURES = new URL("./fixtures/", import.meta.url).pathname;
const REPO = new URL("../", import.meta.url).pathname;
/** The smallest valid file: everything else at its default. */
const MINIMAL = "producer.wal.in_memory: true\n";

function parse(yaml: string, env: Record<string, string> = {}): Config {
  return parseConfig(yaml, env);
}

/** Asserts that parsing fails with exactly `message`, which must be one line. */
function assertConfigError(yaml: string, message: string, env: Record<string, string> = {}): void {
  assert.throws(() => parse(yaml, env), (err: unknown) => {
    assert.ok(err instanceof ConfigError, `expected a ConfigError, got ${err}`);
    assert.equal(err.message, message);
    assert.ok(!err.message.includes("\n"), "message must be one line");
    return true;
  });
}

Deno.test("config: defaults are those of the Go service (docs/compatibility.md) plus max_bytes and shutdown_timeout", () => {
  const config = defaultConfig();
  assert.equal(config.server.http.listen, undefined);
  assert.equal(config.server.grpc.listen, undefined);
  assert.equal(config.server.monitoring.listen, undefined);
  assert.equal(config.server.grpc.maxRequestSize, 4 * 1024 * 1024);
  // confirm_timeout is ours: the Go service has no such wait.
  assert.deepEqual(config.producer.cb, {
    intervalMs: 0,
    timeoutMs: 20_000,
    fails: 5,
    requests: 3,
    confirmTimeoutMs: 5_000,
  });
  assert.deepEqual(config.producer.resend, { periodMs: 33_000, rateLimit: 10_000 });
  assert.deepEqual(config.producer.wal, {
    mode: "fallback",
    inMemory: false,
    path: "/tmp/wal",
    alwaysTopics: [],
    disableTopics: [],
    maxBytes: 1024 ** 3,
    preserveOrder: "none",
  });
  assert.equal(config.producer.oldProducerKillTimeoutMs, 10 * 60_000);
  assert.equal(config.producer.shutdownTimeoutMs, 30_000);
  assert.deepEqual(config.kafka, {});
});

Deno.test("config: a minimal file gives the defaults", () => {
  const expected = defaultConfig();
  expected.producer.wal.inMemory = true;
  assert.deepEqual(parse(MINIMAL), expected);
});

Deno.test("config: defaultConfig returns a fresh object each time", () => {
  const a = defaultConfig();
  a.producer.wal.alwaysTopics.push("x");
  assert.deepEqual(defaultConfig().producer.wal.alwaysTopics, []);
});

Deno.test("config: nested, flat and mixed spellings give the same config", async () => {
  const nested = await loadConfig(`${FIXTURES}config_nested.yaml`, {});
  const flat = await loadConfig(`${FIXTURES}config_flat.yaml`, {});
  const mixed = await loadConfig(`${FIXTURES}config_mixed.yaml`, {});
  assert.equal(nested.server.http.listen, ":18080");
  assert.equal(nested.producer.cb.fails, 7);
  assert.equal(nested.producer.cb.timeoutMs, 60_000);
  assert.equal(nested.producer.resend.rateLimit, 500);
  assert.equal(nested.producer.wal.path, "/var/lib/ka/wal");
  assert.deepEqual(nested.producer.wal.alwaysTopics, ["audit"]);
  assert.deepEqual(nested.kafka, {
    "bootstrap.servers": "k1:9092,k2:9092",
    "compression.codec": "lz4",
    "acks": "all",
    "batch.num.messages": "1000",
  });
  assert.deepEqual(flat, nested);
  assert.deepEqual(mixed, nested);
});

Deno.test("config: keys match case-insensitively, as viper did", () => {
  const config = parse(
    "Producer:\n  CB:\n    Fails: 9\n  WAL.In_Memory: true\nKafka:\n  Compression.Codec: zstd\n",
  );
  assert.equal(config.producer.cb.fails, 9);
  assert.equal(config.kafka["compression.codec"], "zstd");
});

Deno.test("config: durations in every accepted form", () => {
  const cases: Array<[string, number]> = [
    ["20s", 20_000],
    ["10m", 600_000],
    ["1h30m", 5_400_000],
    ["250ms", 250],
    ["1.5s", 1500],
    ["300us", 0.3],
    ["300µs", 0.3],
    ["0", 0],
    ["20", 20_000],
    ["0.25", 250],
  ];
  for (const [text, ms] of cases) {
    assert.equal(parseDuration(text), ms, text);
    assert.equal(parse(`${MINIMAL}producer.resend.period: ${text}\n`).producer.resend.periodMs, ms, text);
  }
  assert.equal(parseDuration(2), 2000);
  for (const ms of [0, 250, 1500, 20_000, 600_000, 5_400_000, 0.3, 90_061_001]) {
    assert.equal(parseDuration(formatDuration(ms)), ms, formatDuration(ms));
  }
  assert.equal(formatDuration(5_400_000), "1h30m");
  for (const bad of ["5x", "s", "1h-5m", "", "1.2.3s", "5 s", "h1"]) {
    assert.throws(() => parseDuration(bad), /invalid duration/, bad);
  }
  assert.throws(() => parseDuration("-5s"), /negative duration "-5s"/);
  assert.throws(() => parseDuration("1000h"), /too long/);
});

Deno.test("config: sizes for max_bytes and max.request.size", () => {
  const maxBytes = (text: string) =>
    parse(`${MINIMAL}producer.wal.max_bytes: ${text}\n`).producer.wal.maxBytes;
  assert.equal(maxBytes("1048576"), 1_048_576);
  assert.equal(maxBytes("512MiB"), 512 * 1024 ** 2);
  assert.equal(maxBytes("2GB"), 2e9);
  assert.equal(maxBytes("100k"), 100_000);
  assert.equal(maxBytes("1.5GiB"), 1.5 * 1024 ** 3);
  assert.equal(
    parse(`${MINIMAL}server.grpc.max.request.size: 16Mi\n`).server.grpc.maxRequestSize,
    16 * 1024 ** 2,
  );
});

Deno.test("config: env overrides a duration, an int, a kafka key and a list, with dots or __", () => {
  const yaml = `${MINIMAL}producer.resend.period: 1m\nproducer.cb.fails: 2\nkafka.compression.codec: gzip\n`;
  const config = parse(yaml, {
    "KA_PRODUCER.RESEND.PERIOD": "5s",
    "KA_PRODUCER__CB__FAILS": "11",
    "KA_KAFKA.COMPRESSION.CODEC": "lz4",
    "KA_PRODUCER.WAL.DISABLE_TOPICS": "a, b,,c",
    "KA_KAFKA__BROKERS": "e1:9092,e2:9092",
    "KA_KAFKA.ENABLE.IDEMPOTENCE": "true",
    "KA_LOG_LEVEL": "debug",
    "KA_DENO": "/usr/local/bin/deno",
    "PATH": "/usr/bin",
  });
  assert.equal(config.producer.resend.periodMs, 5000);
  assert.equal(config.producer.cb.fails, 11);
  assert.equal(config.kafka["compression.codec"], "lz4");
  assert.deepEqual(config.producer.wal.disableTopics, ["a", "b", "c"]);
  assert.equal(config.kafka["bootstrap.servers"], "e1:9092,e2:9092");
  assert.equal(config.kafka["enable.idempotence"], "true");
  assert.equal(
    parse(MINIMAL, { KA_PRODUCER__WAL__IN_MEMORY: "false", KA_PRODUCER__WAL__PATH: "/w" }).producer.wal
      .inMemory,
    false,
  );
});

/**
 * The KA_* variables the project's scripts, tests and benchmarks read for themselves (`Deno.env.get("KA_...")`,
 * `$KA_...` in shell), so that one of them set in the environment never reaches a service as an override.
 */
async function harnessVariables(): Promise<Set<string>> {
  const names = new Set<string>();
  for (const dir of ["scripts", "tests", "bench", ".ci"]) {
    for await (const file of filesUnder(`${REPO}${dir}`)) {
      if (!/(\.ts|\.sh|^run)$/.test(file)) continue;
      const text = await Deno.readTextFile(`${REPO}${dir}/${file}`);
      for (const m of text.matchAll(/Deno\.env\.get\("(KA_[A-Z0-9_]+)"\)|\$\{?(KA_[A-Z0-9_]+)/g)) {
        names.add(m[1] ?? m[2]);
      }
    }
  }
  // The service's own short name for global.log.level, which the tests set on purpose.
  names.delete("KA_LOG_LEVEL");
  return names;
}

Deno.test("config: values as the Go service read them: lists split at white space, cb.timeout 0, empty env, 5.0", () => {
  const config = parse(`${MINIMAL}producer.wal.disable_topics: "d1 d2"\nproducer.cb.timeout: 0\n`, {
    "KA_PRODUCER.WAL.ALWAYS_TOPICS": "t1 t2\tt3",
    "KA_PRODUCER.RESEND.PERIOD": "",
    "KA_PRODUCER.CB.FAILS": "7.0",
  });
  assert.deepEqual(config.producer.wal.alwaysTopics, ["t1", "t2", "t3"]);
  assert.deepEqual(config.producer.wal.disableTopics, ["d1", "d2"]);
  assert.equal(config.producer.cb.timeoutMs, 60_000, "gobreaker's default for a zero Timeout");
  assert.equal(config.producer.resend.periodMs, defaultConfig().producer.resend.periodMs);
  assert.equal(config.producer.cb.fails, 7);
  // The Go service matched the word exactly and ran any other as fallback: "Always" was never always mode.
  assertConfigError(
    `${MINIMAL}producer.wal.mode: Always\n`,
    'config: producer.wal.mode: expected one of fallback, always, disable, got "Always"',
  );
  assertConfigError(
    `${MINIMAL}producer.cb.fails: 7.5\n`,
    'config: producer.cb.fails: expected an integer, got "7.5"',
  );
});

Deno.test("config: the KA_* variables of the scripts, tests and benchmarks are not taken for overrides", async () => {
  const names = await harnessVariables();
  assert.ok(names.has("KA_DENO") && names.has("KA_CACHE_DIR"), `the scan found ${[...names].join(", ")}`);
  const plain = parse(MINIMAL);
  for (const name of names) assert.deepEqual(parse(MINIMAL, { [name]: "1" }), plain, name);
  // What such a name must avoid: one that starts like a key is refused as a misspelt override.
  assertConfigError(MINIMAL, "config: kafka_version: unknown key (from KA_KAFKA_VERSION)", {
    KA_KAFKA_VERSION: "3.9.1",
  });
});

// In a child process: test files run in parallel, and a service another file starts meanwhile would inherit the
// variable from this process's environment.
Deno.test("config: env defaults to the process environment", async () => {
  const module = JSON.stringify(new URL("../src/config.ts", import.meta.url).href);
  const code = `import { parseConfig } from ${module};
console.log(parseConfig(${JSON.stringify(MINIMAL)}).producer.cb.requests);`;
  const out = await new Deno.Command(Deno.execPath(), {
    args: ["eval", "--config", `${REPO}deno.json`, code],
    env: { "KA_PRODUCER.CB.REQUESTS": "4" },
  }).output();
  assert.equal(new TextDecoder().decode(out.stderr), "");
  assert.equal(new TextDecoder().decode(out.stdout).trim(), "4");
});

Deno.test("config: kafka keys pass through, with or without dots, values as strings as written", () => {
  const config = parse(`${MINIMAL}
kafka:
  acks: all
  debug: [broker, topic]
  retries: 5
  enable.idempotence: true
  linger.ms: 0.50
  ssl:
    ca.location: /etc/ca.pem
  Message.Timeout.MS: 30000
kafka.security.protocol: ssl
`);
  assert.deepEqual(config.kafka, {
    "acks": "all",
    "debug": "broker,topic",
    "retries": "5",
    "enable.idempotence": "true",
    "linger.ms": "0.50",
    "ssl.ca.location": "/etc/ca.pem",
    "message.timeout.ms": "30000",
    "security.protocol": "ssl",
  });
});

Deno.test("config: kafka.brokers becomes bootstrap.servers; an explicit bootstrap.servers wins", () => {
  assert.equal(parse(`${MINIMAL}kafka.brokers: [a:1, b:2]\n`).kafka["bootstrap.servers"], "a:1,b:2");
  assert.equal(parse(`${MINIMAL}kafka.brokers: "a:1, b:2"\n`).kafka["bootstrap.servers"], "a:1,b:2");
  const both = parse(`${MINIMAL}kafka: { brokers: [a:1], bootstrap.servers: "x:9,y:9" }\n`);
  assert.equal(both.kafka["bootstrap.servers"], "x:9,y:9");
  assert.equal(both.kafka["brokers"], undefined);
  assert.equal(parse(MINIMAL).kafka["bootstrap.servers"], undefined);
});

Deno.test("config: listen addresses", () => {
  const listen = (addr: string) => parse(`${MINIMAL}server.http.listen: "${addr}"\n`).server.http.listen;
  assert.equal(listen(":18080"), ":18080");
  assert.equal(listen("127.0.0.1:0"), "127.0.0.1:0");
  assert.equal(listen("[::1]:18080"), "[::1]:18080");
  assert.equal(listen("kafka-ambassador.local:80"), "kafka-ambassador.local:80");
  assert.equal(listen(""), undefined);
  assert.deepEqual(listenAddress(":18080"), { hostname: "0.0.0.0", port: 18080 });
  assert.deepEqual(listenAddress("[::]:1"), { hostname: "::", port: 1 });
  assert.deepEqual(listenAddress("10.0.0.1:18282"), { hostname: "10.0.0.1", port: 18282 });
});

Deno.test("config: wal.path may be empty in memory or with mode disable", () => {
  assert.equal(parse("producer.wal.mode: disable\n").producer.wal.mode, "disable");
});

Deno.test("config: unknown keys are named, with the closest known key", () => {
  assertConfigError(
    `${MINIMAL}producer.cb.fail: 3\n`,
    "config: producer.cb.fail: unknown key; did you mean producer.cb.fails?",
  );
  assertConfigError(
    `${MINIMAL}producer:\n  resend:\n    ratelimit: 3\n`,
    "config: producer.resend.ratelimit: unknown key; did you mean producer.resend.rate_limit?",
  );
  assertConfigError(
    `${MINIMAL}producer.fails: 3\n`,
    "config: producer.fails: unknown key; did you mean producer.cb.fails?",
  );
  assertConfigError(`${MINIMAL}metrics: {port: 1}\n`, "config: metrics.port: unknown key");
  assertConfigError(
    MINIMAL,
    "config: producer.cb.fail: unknown key (from KA_PRODUCER__CB__FAIL); did you mean producer.cb.fails?",
    { KA_PRODUCER__CB__FAIL: "3" },
  );
  assertConfigError(
    MINIMAL,
    "config: kafka_brokers: unknown key (from KA_KAFKA_BROKERS); did you mean kafka.brokers?",
    { KA_KAFKA_BROKERS: "a:1" },
  );
});

Deno.test("config: an env override with a key path must name a known key; other KA_ names are not ours", () => {
  assertConfigError(MINIMAL, "config: foo.bar: unknown key (from KA_FOO__BAR)", { KA_FOO__BAR: "1" });
  assertConfigError(MINIMAL, "config: foo.bar: unknown key (from KA_FOO.BAR)", { "KA_FOO.BAR": "1" });
  // As Kubernetes sets them for a Service named "ka" (or "ka-server", "ka-kafka"), and as the project's scripts use.
  const config = parse(MINIMAL, {
    KA_SERVICE_HOST: "10.0.0.1",
    KA_PORT: "tcp://10.0.0.1:80",
    KA_DENO: "/x",
    KA_SERVER_SERVICE_HOST: "10.0.0.2",
    KA_SERVER_SERVICE_PORT: "80",
    KA_SERVER_SERVICE_PORT_HTTP: "80",
    KA_SERVER_PORT: "tcp://10.0.0.2:80",
    KA_SERVER_PORT_80_TCP: "tcp://10.0.0.2:80",
    KA_KAFKA_PORT_9092_TCP_ADDR: "10.0.0.3",
    KA_KAFKA_PORT_9092_TCP_PORT: "9092",
    KA_KAFKA_PORT_9092_TCP_PROTO: "tcp",
  });
  assert.deepEqual(config.producer.wal, defaultConfigWal());
  assertConfigError(MINIMAL, "config: server_listen: unknown key (from KA_SERVER_LISTEN)", {
    KA_SERVER_LISTEN: ":1",
  });
});

Deno.test("config: global.log.level, from the file, KA_GLOBAL.LOG.LEVEL or KA_LOG_LEVEL, must be a level", () => {
  assert.equal(defaultConfig().global.log.level, "info");
  assert.equal(parse(`${MINIMAL}global: {log: {level: debug}}\n`).global.log.level, "debug");
  // zap's levels above error, which the Go service took.
  assert.equal(parse(`${MINIMAL}global.log.level: FATAL\n`).global.log.level, "error");
  assert.equal(
    parse(`${MINIMAL}global.log.level: debug\n`, { KA_LOG_LEVEL: "WARN" }).global.log.level,
    "warn",
  );
  assert.equal(parse(MINIMAL, { "KA_GLOBAL.LOG.LEVEL": "error" }).global.log.level, "error");
  assertConfigError(
    MINIMAL,
    'config: global.log.level: expected one of debug, info, warn, error, got "verbose" (from KA_LOG_LEVEL)',
    { KA_LOG_LEVEL: "verbose" },
  );
  assertConfigError(
    MINIMAL,
    "config: global.log.level: set by both KA_GLOBAL.LOG.LEVEL and KA_LOG_LEVEL",
    { "KA_GLOBAL.LOG.LEVEL": "info", KA_LOG_LEVEL: "debug" },
  );
});

Deno.test("config: the Go service's keys that have no effect here are accepted, in the file and the environment", () => {
  // Every key the Go service read (main.go's defaults, zap's config, its gRPC server and its WAL's yaml fields),
  // and the Go repository's own configs/ka.yaml, which has skip_topics.
  const goFile = `
global:
  log:
    level: warn
    encoding: console
    outputPaths: [stdout, /var/log/ka.log]
    errorOutputPaths: [stderr]
    development: false
    disableCaller: true
    disableStacktrace: true
    sampling: {initial: 100, thereafter: 100}
    initialFields: {service: ka}
    encoderConfig: {messageKey: msg, levelKey: level, timeKey: ts, levelEncoder: lowercase}
server:
  grpc:
    listen: "0.0.0.0:19094"
    max.request.size: 4194304
    monitoring: {enable: true, histogram: {enable: false}}
producer:
  get_metadata_timeout: 2s
  resend: {period: 1m, rate_limit: 10000}
  wal:
    mode: fallback
    path: /data/wal
    skip_topics: [test1]
    collect_metrics_period: 10s
    write_batch_timeout: 100ms
    delete_batch_timeout: 100ms
    write_batch_size: 100
    delete_batch_size: 100
    log_gc_idle_time: 1m
    log_gc_discard_ratio: 0.5
    iterator_prefetch_size: 100
    write_ch_size: 1000
    delete_ch_size: 1000
kafka:
  brokers: [k1:9092]
`;
  const config = parse(goFile, {
    "KA_GLOBAL.LOG.ENCODING": "json",
    "KA_PRODUCER.WAL.WRITE_BATCH_SIZE": "10",
    "KA_SERVER.GRPC.MONITORING.ENABLE": "false",
  });
  assert.equal(config.global.log.level, "warn");
  assert.deepEqual(config.global.log.outputPaths, ["stdout", "/var/log/ka.log"]);
  assert.deepEqual(defaultConfig().global.log.outputPaths, ["stdout"]);
  // One string is split at commas only, as zap split it: a path may hold spaces.
  const paths = (text: string) =>
    parse(`${MINIMAL}global.log.outputPaths: "${text}"\n`, {}).global.log.outputPaths;
  assert.deepEqual(paths("/var/log/k a.log"), ["/var/log/k a.log"]);
  assert.deepEqual(paths("stdout, /x.log"), ["stdout", "/x.log"]);
  assert.equal(config.producer.getMetadataTimeoutMs, 2_000);
  assert.equal(config.producer.wal.path, "/data/wal");
  assert.equal(config.server.grpc.listen, "0.0.0.0:19094");
  assert.equal(defaultConfig().producer.getMetadataTimeoutMs, 5_000);
  // Only those keys: a neighbour of theirs is still refused.
  assertConfigError(`${MINIMAL}global.log.colour: true\n`, "config: global.log.colour: unknown key");
  assertConfigError(
    `${MINIMAL}server.grpc.monitoring.enabled: true\n`,
    "config: server.grpc.monitoring.enabled: unknown key",
  );
});

function defaultConfigWal(): Config["producer"]["wal"] {
  return { ...defaultConfig().producer.wal, inMemory: true };
}

Deno.test("config: wrong types name the key, the expected type and the value", () => {
  assertConfigError(
    `${MINIMAL}producer.cb.fails: abc\n`,
    'config: producer.cb.fails: expected an integer, got "abc"',
  );
  assertConfigError(
    `${MINIMAL}producer.cb.fails: 2.5\n`,
    'config: producer.cb.fails: expected an integer, got "2.5"',
  );
  assertConfigError(
    `${MINIMAL}producer.wal.path: [a, b]\n`,
    "config: producer.wal.path: expected a string, got a list",
  );
  assertConfigError(
    `${MINIMAL}producer.cb.timeout: {s: 1}\n`,
    "config: producer.cb.timeout: expected a duration (e.g. 20s, 10m, 1h30m), got a map",
  );
  assertConfigError(
    "producer.wal.in_memory: maybe\n",
    'config: producer.wal.in_memory: expected true or false, got "maybe"',
  );
  assertConfigError(
    `${MINIMAL}producer.wal.always_topics: [a, [b]]\n`,
    "config: producer.wal.always_topics: expected a list of strings, got an item a list",
  );
  assertConfigError(
    `${MINIMAL}producer.wal.max_bytes: lots\n`,
    'config: producer.wal.max_bytes: expected a size in bytes (e.g. 1048576, 512MiB, 2GB, 100k), got "lots"',
  );
  assertConfigError(
    `${MINIMAL}kafka.acks: {a: [1, {b: 2}]}\n`,
    "config: kafka.acks.a: expected a value or a list of values, got a list containing a map",
  );
  assertConfigError(`${MINIMAL}producer: 5\n`, 'config: producer: expected a map, got "5"');
  assertConfigError("- a\n- b\n", "config: top level: expected a map of keys, got a list");
  assertConfigError(
    MINIMAL,
    'config: producer.cb.requests: expected an integer, got "x" (from KA_PRODUCER.CB.REQUESTS)',
    { "KA_PRODUCER.CB.REQUESTS": "x" },
  );
});

Deno.test("config: bad values are rejected with the reason", () => {
  assertConfigError(
    `${MINIMAL}producer.cb.timeout: 20 seconds\n`,
    'config: producer.cb.timeout: invalid duration "20 seconds" (expected e.g. 250ms, 20s, 10m, 1h30m, or a number of seconds)',
  );
  assertConfigError(
    `${MINIMAL}producer.cb.interval: -1s\n`,
    'config: producer.cb.interval: negative duration "-1s"',
  );
  assertConfigError(
    `${MINIMAL}producer.cb.confirm_timeout: 0s\n`,
    'config: producer.cb.confirm_timeout: must be more than 0, got "0s"',
  );
  assertConfigError(
    `${MINIMAL}producer.wal.mode: sometimes\n`,
    'config: producer.wal.mode: expected one of fallback, always, disable, got "sometimes"',
  );
  assertConfigError(
    `${MINIMAL}server.grpc.max_concurrent_streams: 4294967296\n`,
    "config: server.grpc.max_concurrent_streams: must be at most 4294967295, got 4294967296",
  );
  assertConfigError(
    `${MINIMAL}producer.cb.requests: -2\n`,
    "config: producer.cb.requests: must be at least 0, got -2",
  );
  assertConfigError(
    `${MINIMAL}producer.resend.rate_limit: 0\n`,
    "config: producer.resend.rate_limit: must be a positive number of records per second, got 0 " +
      "(to turn replay off, set producer.resend.period: 0)",
  );
  assertConfigError(
    `${MINIMAL}producer.resend.rate_limit: -5\n`,
    "config: producer.resend.rate_limit: must be a positive number of records per second, got -5 " +
      "(to turn replay off, set producer.resend.period: 0)",
  );
  assertConfigError(
    `${MINIMAL}server.grpc.listen: 18282\n`,
    'config: server.grpc.listen: expected host:port (e.g. 0.0.0.0:18080 or :18080), got "18282"',
  );
  assertConfigError(
    `${MINIMAL}server.monitoring.listen: "0.0.0.0:99999"\n`,
    'config: server.monitoring.listen: expected host:port (e.g. 0.0.0.0:18080 or :18080), got "0.0.0.0:99999"',
  );
  assertConfigError(
    `${MINIMAL}producer.wal: {always_topics: [a, b], disable_topics: [b]}\n`,
    'config: producer.wal.always_topics: topic "b" is also in producer.wal.disable_topics',
  );
  assertConfigError(
    `${MINIMAL}producer.cb.fails: 1\nproducer: {cb: {fails: 2}}\n`,
    "config: producer.cb.fails: set more than once",
  );
  assert.throws(() => parse("a: [1\nb: 2\n"), (err: unknown) => {
    assert.ok(err instanceof ConfigError);
    assert.match(err.message, /^config: invalid YAML: [^\n]* at line 2, column 1$/);
    return true;
  });
});

Deno.test("config: without producer.wal.path the WAL is in /tmp/wal, as in the Go service; an empty one is refused", () => {
  assert.equal(parse("").producer.wal.path, "/tmp/wal");
  assert.equal(parse("producer.wal.mode: always\n").producer.wal.path, "/tmp/wal");
  assertConfigError(
    'producer.wal.path: ""\n',
    "config: producer.wal.path: empty, but producer.wal.mode is fallback (or set in_memory: true)",
  );
});

Deno.test("config: YAML as the Go service's parser read it: 1.1 booleans, digits with _, merge keys, a trailing ---", () => {
  const config = parse(`
producer:
  wal: { in_memory: yes, path: /w }
  resend.rate_limit: 10_000
  cb: { fails: 0, requests: 0 }
kafka:
  <<: { compression.codec: lz4, linger.ms: 5 }
  linger.ms: 1_0
  socket.keepalive.enable: on
  enable.idempotence: "no"
  client.id: Off
---
`);
  assert.equal(config.producer.wal.inMemory, true);
  assert.equal(config.producer.resend.rateLimit, 10_000);
  // gobreaker took a zero budget as one; the Go service opened its breaker at the first failure with fails: 0.
  assert.deepEqual([config.producer.cb.fails, config.producer.cb.requests], [1, 1]);
  assert.deepEqual(config.kafka, {
    "compression.codec": "lz4",
    "linger.ms": "10",
    "socket.keepalive.enable": "true",
    "enable.idempotence": "no", // quoted: a string, as in YAML 1.1
    "client.id": "false",
  });
  for (
    const [word, value] of [["n", false], ["NO", false], ["Y", true], ["ON", true], ["off", false]] as const
  ) {
    assert.equal(parse(`producer.wal.in_memory: ${word}\n`).producer.wal.inMemory, value, word);
  }
  assertConfigError(
    `${MINIMAL}---\nkafka.acks: 1\n`,
    "config: invalid YAML: document 2 has content; a config is one document",
  );
  assertConfigError(
    `${MINIMAL}kafka:\n  <<: [1]\n`,
    "config: invalid YAML: Merge sources must be maps or map aliases",
  );
});

Deno.test("config: a misspelt key is refused even with an empty value", () => {
  assertConfigError(
    `${MINIMAL}producer.wal.max_bites:\n`,
    "config: producer.wal.max_bites: unknown key; did you mean producer.wal.max_bytes?",
  );
  assertConfigError(
    `${MINIMAL}server: {htttp: {listen: }}\n`,
    "config: server.htttp.listen: unknown key; did you mean server.http.listen?",
  );
  assertConfigError(`${MINIMAL}serverz: {}\n`, "config: serverz: unknown key");
  assertConfigError(`${MINIMAL}server: {htttp: {}}\n`, "config: server.htttp: unknown key");
  // Known keys, sections and kafka.* with empty values stay at their defaults.
  assert.deepEqual(
    parse(`${MINIMAL}server: {http: {listen: }, grpc: {}}\nkafka:\nkafka.linger.ms:\nproducer.cb:\n`),
    parse(MINIMAL),
  );
});

Deno.test("config: a missing file is a ConfigError naming the path", async () => {
  const path = `${FIXTURES}config_does_not_exist.yaml`;
  await assert.rejects(loadConfig(path, {}), (err: unknown) => {
    assert.ok(err instanceof ConfigError);
    assert.equal(err.message, `config: ${path}: file not found`);
    return true;
  });
});

Deno.test("config: config/default.yaml and config/example.yaml parse", async () => {
  const def = await loadConfig(`${REPO}config/default.yaml`, {});
  assert.equal(def.server.http.listen, "0.0.0.0:18080");
  assert.equal(def.server.grpc.listen, "0.0.0.0:18282");
  assert.equal(def.server.monitoring.listen, "0.0.0.0:28080");
  assert.equal(def.kafka["bootstrap.servers"], "127.0.0.1:9092");
  assert.equal(def.producer.wal.mode, "fallback");
  assert.equal(def.producer.wal.path, "./data/wal");

  const example = await loadConfig(`${REPO}config/example.yaml`, {});
  const expected = defaultConfig();
  expected.server.http.listen = "0.0.0.0:18080";
  expected.server.grpc.listen = "0.0.0.0:18282";
  expected.server.monitoring.listen = "0.0.0.0:28080";
  expected.producer.wal.path = "./data/wal";
  assert.deepEqual(example, expected, "example.yaml must show the defaults");
});

Deno.test("config: preserve_order: key turns on the idempotent producer and refuses what cannot keep order", () => {
  assert.equal(parse(MINIMAL).producer.wal.preserveOrder, "none");
  assert.equal(parse(MINIMAL).kafka["enable.idempotence"], undefined, "left to librdkafka without key order");
  const keyed = parse(`${MINIMAL}producer.wal.preserve_order: key\n`);
  assert.equal(keyed.producer.wal.preserveOrder, "key");
  assert.equal(keyed.kafka["enable.idempotence"], "true");
  assert.equal(
    parse(`${MINIMAL}producer.wal.preserve_order: KEY\nkafka.enable.idempotence: true\n`)
      .kafka["enable.idempotence"],
    "true",
  );
  assertConfigError(
    `${MINIMAL}producer.wal.preserve_order: key\nkafka.enable.idempotence: false\n`,
    "config: producer.wal.preserve_order: key needs kafka.enable.idempotence: true " +
      "(it keeps each partition's order across retries)",
  );
  assertConfigError(
    `${MINIMAL}producer.wal: {preserve_order: key, mode: always}\n`,
    "config: producer.wal.preserve_order: key works in fallback mode only, not with mode: always or always_topics",
  );
  assertConfigError(
    `${MINIMAL}producer.wal: {preserve_order: key, always_topics: [a]}\n`,
    "config: producer.wal.preserve_order: key works in fallback mode only, not with mode: always or always_topics",
  );
  assertConfigError(
    `${MINIMAL}producer.wal.preserve_order: partition\n`,
    'config: producer.wal.preserve_order: expected one of none, key, got "partition"',
  );
});
