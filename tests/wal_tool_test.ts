/**
 * `kafka-ambassador wal stats|verify|export|replay`, run as a user runs it, on a WAL written through the WAL API
 * with the service stopped; replay into a real broker; the lock against a running service and after kill -9.
 */
import assert from "node:assert/strict";
import { stringify } from "yaml";
import type { Message } from "../src/message.ts";
import { encodeRecordLine } from "../src/wal/record_line.ts";
import { parseConfig } from "../src/config.ts";
import { exportedRecord } from "../src/wal_tool/export.ts";
import { replayCommand } from "../src/wal_tool/replay.ts";
import { openWal, type WalOptions } from "../src/wal/wal.ts";
import { freePort, startBroker } from "./kafka/broker.ts";
import { consumeAll } from "./kafka/consume.ts";
import { denoFlags, startService } from "./support/service.ts";
import { tempDir } from "./support/temp_dir.ts";

const MAIN = new URL("../src/main.ts", import.meta.url).pathname;
const DENO = Deno.env.get("KA_DENO") ?? Deno.execPath();
const encoder = new TextEncoder();
const decoder = new TextDecoder();

interface Run {
  code: number;
  out: string;
  err: string;
}

/** The permissions and V8 settings the service ships with (deploy/deno-flags.txt), as the tool runs in production. */
const SHIPPED = denoFlags(await Deno.readTextFile(new URL("../deploy/deno-flags.txt", import.meta.url)));

async function wal(args: string[]): Promise<Run> {
  const out = await new Deno.Command(DENO, {
    args: ["run", ...SHIPPED, MAIN, "wal", ...args],
    stdin: "null",
    signal: AbortSignal.timeout(60_000), // a command that hangs fails instead
  }).output();
  return { code: out.code, out: decoder.decode(out.stdout), err: decoder.decode(out.stderr) };
}

/** A config file whose WAL is `walDir`; brokers default to a port where nothing listens. */
async function writeConfig(
  dir: string,
  walDir: string,
  brokers = `127.0.0.1:${freePort()}`,
): Promise<string> {
  const path = `${dir}/wal-tool.yaml`;
  await Deno.writeTextFile(
    path,
    stringify({ kafka: { brokers: [brokers] }, producer: { wal: { path: walDir } } }),
  );
  return path;
}

/** The backlog written: per topic, its messages not acked, in append order. */
type Backlog = Map<string, Message[]>;

/**
 * Writes three topics through the WAL API with small segments (so there are several), acks the first 5 records
 * of "orders", and closes the WAL.
 */
async function writeBacklog(walDir: string): Promise<{ backlog: Backlog; before: number; after: number }> {
  const w = await openWal({ path: walDir, inMemory: false, maxBytes: 64 << 20, segmentBytes: 4096 });
  const backlog: Backlog = new Map();
  const before = Date.now();
  const messages: Message[] = [];
  for (let i = 0; i < 40; i++) messages.push({ topic: "orders", value: encoder.encode(`order-${i}`) });
  for (let i = 0; i < 25; i++) {
    messages.push({
      topic: "clicks",
      key: encoder.encode(`user-${i % 3}`),
      value: new Uint8Array([i, 0, 255]),
    });
  }
  for (let i = 0; i < 6; i++) {
    messages.push({
      topic: "audit",
      value: encoder.encode(`audit-${i}`),
      headers: [["source", encoder.encode("tool-test")], ["n", encoder.encode(String(i))]],
      partition: 0,
    });
  }
  const ids: number[] = [];
  for (const m of messages) {
    const { id, durable } = w.append(m);
    await durable;
    ids.push(id);
  }
  for (let i = 0; i < 5; i++) w.ack(ids[i]);
  await w.close();
  const after = Date.now();
  messages.forEach((m, i) => {
    if (m.topic === "orders" && i < 5) return;
    const list = backlog.get(m.topic) ?? [];
    list.push(m);
    backlog.set(m.topic, list);
  });
  return { backlog, before, after };
}

/** The bytes of a record's WAL line: the line format is fixed once id and writtenAt have their digit counts. */
function lineBytes(id: number, m: Message): number {
  return encodeRecordLine(id, Date.now(), m).length;
}

async function segmentFiles(walDir: string): Promise<string[]> {
  const names: string[] = [];
  for await (const e of Deno.readDir(walDir)) if (e.name.endsWith(".wal")) names.push(e.name);
  return names.sort();
}

Deno.test("wal tool: stats gives the exact backlog per topic, total bytes, segments and the oldest record", async () => {
  await using dir = await tempDir("ka-waltool-");
  const walDir = `${dir.path}/wal`;
  const { backlog, before, after } = await writeBacklog(walDir);
  const config = await writeConfig(dir.path, walDir);

  const r = await wal(["stats", "-config", config, "--json"]);
  assert.equal(r.code, 0, r.err);
  const f = JSON.parse(r.out);
  const segments = await segmentFiles(walDir);
  let fileBytes = 0;
  for (const name of segments) fileBytes += (await Deno.stat(`${walDir}/${name}`)).size;
  assert.ok(segments.length > 1, "the backlog spans several segments");
  assert.equal(f.segments, segments.length);
  assert.equal(f.bytes, fileBytes);
  // Ids run 1..71 in append order; the first five (orders) are acked.
  let id = 0;
  const expected: Record<string, { records: number; bytes: number }> = {};
  for (const topic of ["orders", "clicks", "audit"]) {
    const all = backlog.get(topic)!;
    if (topic === "orders") id += 5;
    expected[topic] = { records: all.length, bytes: all.reduce((sum, m) => sum + lineBytes(++id, m), 0) };
  }
  assert.deepEqual(f.topics, expected);
  assert.equal(f.records, 35 + 25 + 6);
  assert.equal(f.recordBytes, Object.values(expected).reduce((sum, t) => sum + t.bytes, 0));
  assert.equal(f.corrupt, 0);
  assert.ok(f.oldestWrittenAt >= before && f.oldestWrittenAt <= after, `oldest ${f.oldestWrittenAt}`);

  const text = await wal(["stats", "-config", config]);
  assert.equal(text.code, 0, text.err);
  assert.match(text.out, /^records waiting: 66 \(\d+ bytes\)$/m);
  assert.match(text.out, /^orders +35 +\d+$/m);
  assert.match(text.out, /^oldest record: \d{4}-\d\d-\d\dT/m);
});

Deno.test("wal tool: an ack list that is not a regular file is read as none, as the service reads it", async () => {
  await using dir = await tempDir("ka-waltool-");
  const walDir = `${dir.path}/wal`;
  await writeBacklog(walDir);
  const config = await writeConfig(dir.path, walDir);
  // The first segment's ack list (the five acked orders) becomes a FIFO, which a read would wait on for ever.
  const acks = `${walDir}/${(await segmentFiles(walDir))[0].replace(/\.wal$/, ".acks")}`;
  await Deno.remove(acks);
  const fifo = await new Deno.Command("mkfifo", { args: [acks] }).output();
  assert.equal(fifo.code, 0);
  for (const command of [["stats", "--json"], ["verify"], ["export"]]) {
    const r = await wal([command[0], "-config", config, ...command.slice(1)]);
    assert.equal(r.code, 0, `${command[0]}: ${r.err}`);
    if (command[0] === "stats") assert.equal(JSON.parse(r.out).records, 66 + 5);
  }
});

Deno.test("wal tool: verify is 0 on a healthy WAL, 3 on a flipped byte and names segment and line; export names the count", async () => {
  await using dir = await tempDir("ka-waltool-");
  const walDir = `${dir.path}/wal`;
  await writeBacklog(walDir);
  const config = await writeConfig(dir.path, walDir);

  const healthy = await wal(["verify", "-config", config]);
  assert.equal(healthy.code, 0, healthy.out + healthy.err);
  assert.match(healthy.out, /: ok \(\d+ segments, 71 lines\)$/m);

  const [first, second] = await segmentFiles(walDir);
  const bytes = await Deno.readFile(`${walDir}/${second}`);
  let start = 0;
  for (let line = 1; line < 3; line++) start = bytes.indexOf(0x0a, start) + 1;
  bytes[start + 30] ^= 0x01; // inside line 3
  await Deno.writeFile(`${walDir}/${second}`, bytes);

  const damaged = await wal(["verify", "-config", config]);
  assert.equal(damaged.code, 3, damaged.out + damaged.err);
  const segment = second.replace(".wal", "");
  assert.match(damaged.out, new RegExp(`^wal: segment ${segment}: bad checksum at line 3$`, "m"));
  assert.doesNotMatch(damaged.out, new RegExp(`segment ${first.replace(".wal", "")}:`));
  assert.match(damaged.out, /1 damaged lines/);
  const stats = JSON.parse((await wal(["stats", "-config", config, "--json"])).out);
  assert.equal(stats.corrupt, 1);
  assert.equal(stats.records, 65);
  // export leaves the damaged line out, and says so on stderr.
  const exported = await wal(["export", "-config", config]);
  assert.equal(exported.code, 0, exported.err);
  assert.equal(exported.out.trimEnd().split("\n").length, 65);
  assert.equal(exported.err, `wal export: ${walDir}: 1 damaged lines left out (wal verify names them)\n`);
});

Deno.test("wal tool: verify names an incomplete last line (a crash mid-write) but calls the WAL healthy", async () => {
  await using dir = await tempDir("ka-waltool-");
  const walDir = `${dir.path}/wal`;
  await writeBacklog(walDir);
  const config = await writeConfig(dir.path, walDir);
  const last = (await segmentFiles(walDir)).at(-1)!;
  const lines = (await Deno.readTextFile(`${walDir}/${last}`)).split("\n").length - 1;
  await Deno.writeTextFile(`${walDir}/${last}`, `{"id":999,"writtenAt":17`, { append: true });

  const r = await wal(["verify", "-config", config]);
  assert.equal(r.code, 0, r.out + r.err);
  const segment = last.replace(".wal", "");
  assert.match(
    r.out,
    new RegExp(`^wal: segment ${segment}: incomplete last line ${lines + 1} \\(cut off`, "m"),
  );
  const stats = JSON.parse((await wal(["stats", "-config", config, "--json"])).out);
  assert.equal(stats.torn, 1);
  assert.equal(stats.records, 66);
});

Deno.test("wal tool: export prints every record waiting, in the batch record shape, oldest first", async () => {
  await using dir = await tempDir("ka-waltool-");
  const walDir = `${dir.path}/wal`;
  const { backlog } = await writeBacklog(walDir);
  const config = await writeConfig(dir.path, walDir);

  const r = await wal(["export", "-config", config]);
  assert.equal(r.code, 0, r.err);
  const lines = r.out.trimEnd().split("\n").map((l) => JSON.parse(l));
  const expected = [...backlog.values()].flat().map((m) => {
    const o: Record<string, unknown> = { topic: m.topic, value_b64: m.value.toBase64() };
    if (m.key) o.key_b64 = m.key.toBase64();
    if (m.headers) o.headers = Object.fromEntries(m.headers.map(([k, v]) => [k, decoder.decode(v)]));
    if (m.partition !== undefined) o.partition = m.partition;
    return o;
  });
  assert.deepEqual(lines, expected);

  const only = await wal(["export", "-config", config, "--topic", "audit"]);
  assert.equal(only.code, 0, only.err);
  const audit = only.out.trimEnd().split("\n").map((l) => JSON.parse(l));
  assert.deepEqual(audit, expected.filter((o) => o.topic === "audit"));
});

Deno.test("wal tool: export keeps headers that are not an object of strings exactly, as headers_b64", () => {
  const base = { id: 1, writtenAt: 0, topic: "t", value: encoder.encode("v") };
  const binary = exportedRecord({ ...base, headers: [["h", new Uint8Array([0xff, 0x00])]] });
  assert.deepEqual(binary.headers_b64, [["h", "/wA="]]);
  assert.equal(binary.headers, undefined);
  const repeated = exportedRecord({
    ...base,
    headers: [["h", encoder.encode("1")], ["h", encoder.encode("2")]],
  });
  assert.deepEqual(repeated.headers_b64, [["h", "MQ=="], ["h", "Mg=="]]);
  const text = exportedRecord({ ...base, key: null, headers: [["a", encoder.encode("é")]], timestamp: 5 });
  assert.deepEqual(text, { topic: "t", value_b64: "dg==", headers: { a: "é" }, timestamp: 5 });
});

Deno.test("wal tool: bad command lines and configs without a WAL on disk exit 2 with one reason", async () => {
  await using dir = await tempDir("ka-waltool-");
  const config = await writeConfig(dir.path, `${dir.path}/wal`);
  const cases: Array<[string[], RegExp]> = [
    [["stats"], /no config file given/],
    [["scrub", "-config", config], /unknown command "scrub"/],
    [["stats", "-config", config, "--topic", "t"], /--topic is an option of wal export only/],
    [["replay", "-config", config, "--timeout", "soon"], /--timeout soon/],
  ];
  for (const [args, reason] of cases) {
    const r = await wal(args);
    assert.equal(r.code, 2, `${args.join(" ")}: ${r.err}`);
    assert.match(r.err, reason);
  }
  const inMemory = `${dir.path}/memory.yaml`;
  await Deno.writeTextFile(inMemory, "kafka.brokers: [a:1]\nproducer.wal.in_memory: true\n");
  const r = await wal(["stats", "-config", inMemory]);
  assert.equal(r.code, 2);
  assert.match(r.err, /no WAL on disk \(in_memory: true\)/);
  const help = await wal(["--help"]);
  assert.equal(help.code, 0);
  assert.match(help.out, /^usage: kafka-ambassador wal <command>/);
});

Deno.test({
  name: "wal tool: replay delivers every record to a real broker exactly once and leaves the WAL empty",
  sanitizeResources: false,
  sanitizeOps: false,
  async fn() {
    await using broker = await startBroker();
    await using dir = await tempDir("ka-waltool-");
    const walDir = `${dir.path}/wal`;
    const { backlog } = await writeBacklog(walDir);
    for (const topic of backlog.keys()) await broker.createTopic(topic, 1);
    const config = await writeConfig(dir.path, walDir, broker.bootstrap);

    const r = await wal(["replay", "-config", config]);
    assert.equal(r.code, 0, r.out + r.err);
    assert.match(r.out, /66 records delivered; the WAL is empty/);
    assert.match(
      r.out,
      /^wal replay: 66\/66 delivered \(100%\)$/m,
      "plain progress lines when not a terminal",
    );

    for (const [topic, sent] of backlog) {
      const got = await consumeAll(broker.bootstrap, topic, { expected: sent.length, timeoutMs: 30_000 });
      assert.deepEqual(got.map((m) => m.valueBytes), sent.map((m) => m.value), topic);
      assert.deepEqual(got.map((m) => m.keyBytes), sent.map((m) => m.key ?? null), topic);
    }
    const audit = await consumeAll(broker.bootstrap, "audit", { expected: 6 });
    assert.deepEqual(audit[5].headers, [["source", "tool-test"], ["n", "5"]]);

    const stats = JSON.parse((await wal(["stats", "-config", config, "--json"])).out);
    assert.equal(stats.records, 0);
    const again = await wal(["replay", "-config", config]);
    assert.equal(again.code, 0, again.err);
    assert.match(again.out, /nothing to replay/);
  },
});

Deno.test({
  name:
    "wal tool: replay whose WAL read fails mid-run keeps the acks of what it delivered, says why and exits 5",
  sanitizeResources: false,
  sanitizeOps: false,
  async fn() {
    await using broker = await startBroker();
    await using dir = await tempDir("ka-waltool-");
    const walDir = `${dir.path}/wal`;
    // More records than one checkout takes (2,000), so that the run delivers some before its second read.
    const total = 2500;
    const w = await openWal({ path: walDir, inMemory: false, maxBytes: 64 << 20 });
    const durables = [];
    for (let i = 0; i < total; i++) {
      durables.push(w.append({ topic: "disk", value: encoder.encode(`r-${i}`) }).durable);
    }
    await Promise.all(durables);
    await w.close();
    await broker.createTopic("disk", 1);
    const config = parseConfig(
      stringify({ kafka: { brokers: [broker.bootstrap] }, producer: { wal: { path: walDir } } }),
    );

    let checkouts = 0;
    const failingSecondRead = async (opts: WalOptions) => {
      const wal = await openWal(opts);
      const checkout = wal.checkout.bind(wal);
      wal.checkout = (max) => {
        if (++checkouts === 2) {
          return Promise.reject(new Error("segment 00000001: Input/output error (os error 5)"));
        }
        return checkout(max);
      };
      return wal;
    };
    const errors: string[] = [];
    const consoleError = console.error;
    console.error = (...args: unknown[]) => errors.push(args.join(" "));
    let code: number;
    try {
      code = await replayCommand(config, { idleTimeoutMs: 30_000, open: failingSecondRead });
    } finally {
      console.error = consoleError;
    }
    assert.equal(checkouts, 2);
    assert.equal(code, 5, errors.join("\n"));
    assert.match(
      errors.join("\n"),
      /2000 records delivered, 500 remain \(stopped: reading the WAL failed: segment 00000001: Input\/output error/,
    );
    // The acks reached the disk: the next run sends only the 500 left, so Kafka holds every record once.
    const again = await wal(["replay", "-config", await writeConfig(dir.path, walDir, broker.bootstrap)]);
    assert.equal(again.code, 0, again.err);
    assert.match(again.out, /500 records delivered; the WAL is empty/);
    const got = await consumeAll(broker.bootstrap, "disk", { expected: total, timeoutMs: 30_000 });
    assert.equal(got.length, total);
    assert.equal(new Set(got.map((m) => m.value)).size, total);
  },
});

Deno.test("wal tool: replay with Kafka down keeps every record and exits 5", async () => {
  await using dir = await tempDir("ka-waltool-");
  const walDir = `${dir.path}/wal`;
  await writeBacklog(walDir);
  const config = await writeConfig(dir.path, walDir);

  const r = await wal(["replay", "-config", config, "--timeout", "20s"]);
  assert.equal(r.code, 5, r.out + r.err);
  assert.match(r.err, /0 records delivered, 66 remain \(stopped: /);
  const stats = JSON.parse((await wal(["stats", "-config", config, "--json"])).out);
  assert.equal(stats.records, 66);
});

Deno.test("wal tool: replay stopped by SIGINT or SIGTERM keeps what is left, says so and exits 5", async () => {
  for (const signal of ["SIGINT", "SIGTERM"] as const) {
    await using dir = await tempDir("ka-waltool-");
    const walDir = `${dir.path}/wal`;
    await writeBacklog(walDir);
    // A "broker" that takes connections and never answers: the run waits, up to its 60 s timeout.
    const silent = Deno.listen({ hostname: "127.0.0.1", port: 0 });
    const held: Deno.Conn[] = [];
    const accepting = (async () => {
      for await (const conn of silent) held.push(conn);
    })();
    const config = await writeConfig(dir.path, walDir, `127.0.0.1:${silent.addr.port}`);
    const child = new Deno.Command(DENO, {
      args: ["run", ...SHIPPED, MAIN, "wal", "replay", "-config", config, "--timeout", "60s"],
      stdin: "null",
      stdout: "piped",
      stderr: "piped",
    }).spawn();
    await new Promise((resolve) => setTimeout(resolve, 1500));
    child.kill(signal);
    const out = await child.output();
    const err = decoder.decode(out.stderr);
    assert.equal(out.code, 5, err);
    assert.match(err, new RegExp(`0 records delivered, 66 remain \\(stopped: interrupted by ${signal}\\)`));
    silent.close();
    await accepting;
    for (const conn of held) conn.close();
    const stats = JSON.parse((await wal(["stats", "-config", config, "--json"])).out);
    assert.equal(stats.records, 66);
  }
});

Deno.test({
  name:
    "wal tool: refuses a WAL a running service holds (exit 4), its LOCK file deleted too; so does a second service; none after kill -9",
  sanitizeResources: false,
  sanitizeOps: false,
  async fn() {
    await using dir = await tempDir("ka-waltool-");
    const walDir = `${dir.path}/wal`;
    await writeBacklog(walDir);
    const serviceConfig = {
      kafka: { brokers: [`127.0.0.1:${freePort()}`] },
      producer: { wal: { path: walDir }, resend: { period: "1h" } },
    };
    const config = await writeConfig(dir.path, walDir);
    const svc = await startService(serviceConfig, { dir: dir.path });
    try {
      for (const command of ["stats", "verify", "export", "replay"]) {
        const r = await wal([command, "-config", config]);
        assert.equal(r.code, 4, `${command}: ${r.out}${r.err}`);
        assert.equal(r.err, `wal: ${walDir} is in use by another process\n`);
        assert.equal(r.out, "");
      }
      const second = await new Deno.Command(DENO, {
        args: ["run", ...SHIPPED, MAIN, "-config", svc.configPath],
        stdin: "null",
      }).output();
      assert.equal(second.code, 1);
      assert.match(decoder.decode(second.stdout), new RegExp(`wal: ${walDir} is in use by another process`));
      // LOCK deleted behind the service's back: a new one would be another file, free to lock; the directory is not.
      await Deno.remove(`${walDir}/LOCK`);
      const replay = await wal(["replay", "-config", config]);
      assert.equal(replay.code, 4, `${replay.out}${replay.err}`);
      assert.equal(replay.err, `wal: ${walDir} is in use by another process\n`);
    } finally {
      svc.signal("SIGKILL");
      await svc.exited;
    }
    const after = await wal(["stats", "-config", config, "--json"]);
    assert.equal(after.code, 0, after.err);
    assert.equal(JSON.parse(after.out).records, 66);
    // The next start is not blocked either.
    const restarted = await startService(serviceConfig, { dir: dir.path });
    assert.equal(await restarted.stop(), 0);
  },
});

Deno.test("wal tool: stats, verify and export create nothing; replay as root refuses another user's WAL", async () => {
  await using dir = await tempDir("ka-waltool-");
  const walDir = `${dir.path}/wal`;
  await writeBacklog(walDir); // through the WAL API: no LOCK file, as in a copy of a WAL
  const config = await writeConfig(dir.path, walDir);
  const listing = async () => (await Array.fromAsync(Deno.readDir(walDir))).map((e) => e.name).sort();
  const before = await listing();
  for (const command of ["stats", "verify", "export"]) {
    const r = await wal([command, "-config", config]);
    assert.equal(r.code, 0, `${command}: ${r.err}`);
  }
  assert.deepEqual(await listing(), before);

  await Deno.mkdir(`${dir.path}/other`);
  const notDir = await writeConfig(`${dir.path}/other`, config);
  const file = await wal(["stats", "-config", notDir]);
  assert.equal(file.code, 1);
  assert.equal(file.err.trim(), `wal: ${config} is not a directory`);

  if (Deno.uid() !== 0) {
    console.log("skipped the owner check: needs root");
    return;
  }
  // The service's user (the image runs as 65532); root replaying there would leave root's ack files behind.
  for (const name of ["", ...before]) await Deno.chown(`${walDir}/${name}`, 65532, 65532);
  const replay = await wal(["replay", "-config", config]);
  assert.equal(replay.code, 1, replay.out + replay.err);
  assert.equal(
    replay.err.trim(),
    `wal: ${walDir} belongs to uid 65532; run wal replay as that user (e.g. sudo -u '#65532' ...): ` +
      "files root writes there could not be read by the service",
  );
  assert.deepEqual(await listing(), before);
  // Reading it as root still works, and leaves nothing of root's behind.
  const stats = JSON.parse((await wal(["stats", "-config", config, "--json"])).out);
  assert.equal(stats.records, 66);
  for (const entry of await Array.fromAsync(Deno.readDir(walDir))) {
    assert.equal((await Deno.stat(`${walDir}/${entry.name}`)).uid, 65532, entry.name);
  }
});
