/** The service object in-process: start-up order, stop order and what a part that cannot start leaves behind. */
import assert from "node:assert/strict";
import { parseConfig } from "../src/config.ts";
import { startService } from "../src/service.ts";
import { freePort } from "./kafka/broker.ts";
import { captured, capturing } from "./support/log_capture.ts";
import { tempDir } from "./support/temp_dir.ts";
import { waitFor } from "./support/wait.ts";

/** A config with every listener on a free loopback port, the WAL in `dir` and a broker that is not there. */
function config(dir: string, extra = "") {
  return parseConfig(
    `server: { http: { listen: "127.0.0.1:0" }, grpc: { listen: "127.0.0.1:0" }, monitoring: { listen: "127.0.0.1:0" } }
producer: { wal: { path: "${dir}/wal" }, shutdown_timeout: 1s }
kafka: { brokers: ["127.0.0.1:${freePort()}"], "message.timeout.ms": 60000 }
${extra}`,
    {},
  );
}

Deno.test("service: starts every listener, takes a message, and stop() leaves it in the WAL", async () => {
  await using dir = await tempDir("ka-service-");
  const service = await startService(config(dir.path));
  const { http, grpc, monitoring } = service.addresses;
  assert.match(http ?? "", /^127\.0\.0\.1:\d+$/);
  assert.match(grpc ?? "", /^127\.0\.0\.1:\d+$/);
  assert.notEqual(grpc, "127.0.0.1:0");
  const ready = await fetch(`http://${monitoring}/healthz`);
  assert.equal(ready.status, 200);
  await ready.body?.cancel();
  const posted = await fetch(`http://${http}/topics/t/messages`, { method: "POST", body: "kept" });
  assert.equal(posted.status, 200);
  await posted.body?.cancel();

  const stopping = service.stop("test");
  assert.equal(service.stop("again"), stopping, "stop is idempotent");
  // Kafka never answered: the message is in the WAL, whether it got there before or at the stop.
  assert.equal((await stopping).walRecords, 1);
  await assert.rejects(fetch(`http://${http}/topics/t/messages`, { method: "POST", body: "late" }));

  // The next start finds the record where the last one left it.
  await using again = await startService(config(dir.path));
  const metrics = await (await fetch(`http://${again.addresses.monitoring}/metrics`)).text();
  assert.match(metrics, /^wal_messages 1$/m);
});

Deno.test("service: a listener that cannot bind names itself, and what had started is stopped again", async () => {
  await using dir = await tempDir("ka-service-");
  using taken = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const port = taken.addr.port;
  const bad = config(dir.path);
  bad.server.grpc.listen = `127.0.0.1:${port}`;
  // Deno's sanitizers fail this test if the WAL, the producer, replay or the HTTP listener were left running.
  await assert.rejects(startService(bad), (err: Error) => {
    assert.match(err.message, new RegExp(`^grpc listener 127\\.0\\.0\\.1:${port}: `));
    return true;
  });
  // The WAL was closed: it opens again at once.
  await using service = await startService(config(dir.path));
  assert.ok(service.addresses.http);
});

Deno.test("service: started without a WAL on disk, it says that the WAL directory still holds segments", async () => {
  await using dir = await tempDir("ka-service-");
  const first = await startService(config(dir.path));
  const posted = await fetch(`http://${first.addresses.http}/topics/t/messages`, {
    method: "POST",
    body: "kept",
  });
  await posted.body?.cancel();
  assert.equal((await first.stop("test")).walRecords, 1);

  for (const [setting, why] of [["mode: disable", "mode: disable"], ["in_memory: true", "in_memory: true"]]) {
    const lines = await captured(async () => {
      const service = await startService(config(dir.path, `producer.wal.${setting}\n`));
      await service.stop("test");
    });
    const warned = lines.filter((l) => String(l.msg).includes("not read"));
    assert.equal(warned.length, 1, JSON.stringify(lines));
    assert.equal(
      warned[0].msg,
      `wal: ${dir.path}/wal holds 1 segment file, not read (${why}): records pending there are not replayed; ` +
        "`kafka-ambassador wal stats` counts them and `wal replay` drains them (with a config whose WAL is there)",
    );
  }
});

Deno.test("service: records left in an in-memory WAL at the stop are reported lost; a resend.period of 0 is warned of", async () => {
  await using dir = await tempDir("ka-service-");
  const lines = await captured(async () => {
    const service = await startService(
      config(dir.path, "producer.wal.in_memory: true\nproducer.resend.period: 0s\n"),
    );
    for (const body of ["one", "two"]) {
      const posted = await fetch(`http://${service.addresses.http}/topics/t/messages?ack=wal`, {
        method: "POST",
        body,
      });
      assert.equal(posted.status, 200);
      await posted.body?.cancel();
    }
    assert.equal((await service.stop("test")).walRecords, 2);
  });
  const at = (msg: string) => lines.filter((l) => String(l.msg).startsWith(msg));
  assert.equal(at("producer.resend.period is 0").length, 1, JSON.stringify(lines));
  const lost = at("stopped with records in the in-memory WAL");
  assert.deepEqual(lost.map((l) => [l.level, l.records]), [["error", 2]]);
});

Deno.test("service: when the breaker opens and no broker answers, what librdkafka holds goes to the WAL at once, not after message.timeout.ms", async () => {
  await using dir = await tempDir("ka-service-");
  // A "broker" that takes connections and never answers: librdkafka gives up on each after socket.timeout.ms,
  // then reports all brokers down, which opens the breaker.
  const silent = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const held: Deno.Conn[] = [];
  const accepting = (async () => {
    for await (const conn of silent) held.push(conn);
  })();
  const service = await startService(parseConfig(
    `server: { http: { listen: "127.0.0.1:0" }, grpc: { listen: "127.0.0.1:0" }, monitoring: { listen: "127.0.0.1:0" } }
producer: { wal: { path: "${dir.path}/wal" }, shutdown_timeout: 1s }
kafka: { brokers: ["127.0.0.1:${silent.addr.port}"], "message.timeout.ms": 300000, "socket.timeout.ms": 1500 }
`,
    {},
  ));
  try {
    const post = async (ack: string) => {
      const res = await fetch(`http://${service.addresses.http}/topics/t/messages?ack=${ack}`, {
        method: "POST",
        body: ack,
        // Far below message.timeout.ms: without the purge these replies would wait five minutes.
        signal: AbortSignal.timeout(60_000),
      });
      return { status: res.status, body: await res.text() };
    };
    // The operator is told why the queue went to the WAL: no answer within the confirm wait, not a connection cut.
    const noAnswer = "kafka: no broker answered within producer.cb.confirm_timeout";
    const capture = capturing();
    let wal, kafka;
    try {
      [wal, kafka] = await Promise.all([post("wal"), post("kafka")]);
      await waitFor("the warning", () => capture.lines.some((l) => l.includes(noAnswer)), 15_000);
    } finally {
      capture.stop();
    }
    const told = capture.lines.map((l) => JSON.parse(l)).filter((l) => l.msg === noAnswer);
    assert.deepEqual(told.map((l) => [l.level, l.confirm_timeout_ms, l.queued_messages]), [[
      "warn",
      5000,
      "purged",
    ]]);
    assert.deepEqual(wal, { status: 200, body: "" });
    assert.equal(kafka.status, 503, kafka.body);
    const metrics = await (await fetch(`http://${service.addresses.monitoring}/metrics`)).text();
    assert.match(metrics, /^wal_messages 1$/m);
  } finally {
    await service.stop("test");
    silent.close();
    await accepting.catch(() => {});
    for (const conn of held) conn.close();
  }
});

Deno.test("service: a Kafka certificate that has expired is named at start (the broker's refusal would not say so)", async () => {
  await using dir = await tempDir("ka-service-");
  // A self-signed CA valid from 2020-01-01 to 2021-01-01 (openssl ca -selfsign -startdate -enddate).
  const expired = new URL("./fixtures/expired_ca.pem", import.meta.url).pathname;
  const lines = await captured(async () => {
    const service = await startService(
      config(dir.path, `kafka.security.protocol: ssl\nkafka.ssl.ca.location: "${expired}"\n`),
    );
    await service.stop("test");
  });
  const named = lines.filter((l) =>
    String(l.msg).startsWith("kafka.ssl.ca.location: the certificate expired")
  );
  assert.deepEqual(
    named.map((l) => [l.level, l.msg, l.path]),
    [["error", "kafka.ssl.ca.location: the certificate expired on 2021-01-01T00:00:00.000Z", expired]],
  );
});
