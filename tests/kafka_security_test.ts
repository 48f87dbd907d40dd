/**
 * Kafka over TLS and SASL against a real broker: the produce round trip over SSL, SASL_SSL (PLAIN, SCRAM-SHA-512)
 * and mutual TLS, and what the service does when the broker refuses its password or its certificate checks fail.
 * No secret given in the config may show in the service's output. One broker serves every case: its CLIENT
 * listener is SASL_SSL, further listeners are SSL; records are read back over its plaintext INTERNAL listener.
 */
import assert from "node:assert/strict";
import { isSecretProperty, parseConfig } from "../src/config.ts";
import { log } from "../src/log.ts";
import { startBroker } from "./kafka/broker.ts";
import { issueCert, makeCa } from "./kafka/certs.ts";
import { runCommand } from "./kafka/command.ts";
import { consumeAll } from "./kafka/consume.ts";
import { type Service, shippedFlags, startService } from "./support/service.ts";
import { captured } from "./support/log_capture.ts";
import { tempDir } from "./support/temp_dir.ts";
import { waitFor } from "./support/wait.ts";

const MAIN = new URL("../src/main.ts", import.meta.url).pathname;
const SHIPPED = shippedFlags(new URL("../", import.meta.url).pathname);
const DENO = Deno.env.get("KA_DENO") ?? Deno.execPath();

const SCRAM_PASSWORD = "scram-Pa55-alice-7f3c";
const PLAIN_PASSWORD = "plain-Pa55-bob-91d2";
const WRONG_PASSWORD = "wrong-Pa55-bob-c0de";
const KEY_PASSPHRASE = "key-Pa55-client-5e8a";
const SECRETS = [SCRAM_PASSWORD, PLAIN_PASSWORD, WRONG_PASSWORD, KEY_PASSPHRASE];

Deno.test("secrets: librdkafka's secret properties are recognised, and a registered secret is redacted", async () => {
  for (const p of ["sasl.password", "ssl.key.password", "ssl.keystore.password", "ssl.key.pem"]) {
    assert.ok(isSecretProperty(p), p);
  }
  assert.ok(
    isSecretProperty("sasl.oauthbearer.client.secret") && isSecretProperty("sasl.oauthbearer.config"),
  );
  for (const p of ["sasl.username", "ssl.ca.location", "ssl.key.location", "ssl.certificate.pem"]) {
    assert.ok(!isSecretProperty(p), p);
  }
  const secret = "unit-secret-4242";
  parseConfig(`producer: {wal: {in_memory: true}}\nkafka: {brokers: [k:9092], sasl.password: ${secret}}`, {});
  const lines = await captured(() =>
    log("error", `msg ${secret}`, { reason: `x${secret}y`, error: new Error(`e ${secret}`) })
  );
  assert.equal(lines.length, 1);
  const line = lines[0];
  assert.deepEqual([line.msg, line.reason, line.error], ["msg [redacted]", "x[redacted]y", "e [redacted]"]);
});

Deno.test("secrets: one too short to mask without garbling the log is not masked, and the config says so", async () => {
  const parsed = await captured(() => {
    parseConfig(`producer: {wal: {in_memory: true}}\nkafka: {brokers: [k:9092], sasl.password: kafka}`, {});
    log("info", "kafka producer started", { producer_id: "rdkafka#producer-1" });
  });
  assert.equal(parsed.length, 2, JSON.stringify(parsed));
  assert.equal(parsed[0].level, "warn");
  assert.match(
    String(parsed[0].msg),
    /^config: kafka\.sasl\.password: shorter than 8 characters, so log lines do not mask it/,
  );
  assert.deepEqual([parsed[1].msg, parsed[1].producer_id], ["kafka producer started", "rdkafka#producer-1"]);
});

Deno.test({
  name:
    "kafka security: SSL, SASL_SSL (PLAIN, SCRAM-SHA-512) and mTLS round trips; refusals are logged as errors, " +
    "open the breaker and lose nothing; no secret is ever printed",
  sanitizeOps: false,
  sanitizeResources: false,
  async fn(t) {
    await using certs = await tempDir("ka-certs-");
    const ca = await makeCa(certs.path, "ca");
    const otherCa = await makeCa(certs.path, "other-ca");
    const brokerCert = await issueCert(ca, certs.path, "broker", { san: "DNS:localhost,IP:127.0.0.1" });
    const elsewhereCert = await issueCert(ca, certs.path, "broker-elsewhere", { san: "DNS:kafka.example" });
    const client = await issueCert(ca, certs.path, "client", {
      san: "DNS:kafka-ambassador",
      passphrase: KEY_PASSPHRASE,
    });
    await using broker = await startBroker({
      security: { protocol: "SASL_SSL", keyPair: brokerCert },
      listeners: {
        TLS: { protocol: "SSL", keyPair: brokerCert },
        ELSEWHERE: { protocol: "SSL", keyPair: elsewhereCert },
        MTLS: { protocol: "SSL", keyPair: brokerCert, clientCa: ca.certPath },
      },
      users: { scram: { alice: SCRAM_PASSWORD }, plain: { bob: PLAIN_PASSWORD } },
    });
    await using dir = await tempDir("ka-sec-");
    const outputs: string[] = [];
    let runs = 0;
    const run = async (kafka: Record<string, string>, walPath = `${dir.path}/wal-${++runs}`) => {
      const svc = await startService({
        producer: { wal: { mode: "fallback", path: walPath }, cb: { timeout: "60s" } },
        kafka: { "message.timeout.ms": "5000", "statistics.interval.ms": "1000", ...kafka },
      }, { dir: dir.path });
      outputs.push(svc.logPath, svc.stderrPath);
      return svc;
    };
    const tls = { "security.protocol": "SSL", "ssl.ca.location": ca.certPath };
    const plain = {
      "security.protocol": "SASL_SSL",
      "ssl.ca.location": ca.certPath,
      "sasl.mechanisms": "PLAIN",
      "sasl.username": "bob",
    };

    await t.step("SSL, hostname verified against the SAN: ack=kafka round trip", async () => {
      await using svc = await run({ brokers: broker.address("TLS"), ...tls });
      await roundTrip(svc, broker.directBootstrap, "sec-ssl");
    });

    await t.step("SASL_SSL with PLAIN: ack=kafka round trip", async () => {
      await using svc = await run({ brokers: broker.bootstrap, ...plain, "sasl.password": PLAIN_PASSWORD });
      await roundTrip(svc, broker.directBootstrap, "sec-plain");
    });

    await t.step("SASL_SSL with SCRAM-SHA-512, hostname verified: ack=kafka round trip", async () => {
      await using svc = await run({
        brokers: broker.bootstrap,
        "security.protocol": "SASL_SSL",
        "ssl.ca.location": ca.certPath,
        "sasl.mechanisms": "SCRAM-SHA-512",
        "sasl.username": "alice",
        "sasl.password": SCRAM_PASSWORD,
      });
      await roundTrip(svc, broker.directBootstrap, "sec-scram");
    });

    await t.step("mutual TLS with an encrypted client key: ack=kafka round trip", async () => {
      await using svc = await run({
        brokers: broker.address("MTLS"),
        ...tls,
        "ssl.certificate.location": client.certPath,
        "ssl.key.location": client.keyPath,
        "ssl.key.password": KEY_PASSPHRASE,
      });
      await roundTrip(svc, broker.directBootstrap, "sec-mtls");
    });

    await t.step(
      "wrong password: one clear error, breaker open, still ready, WAL keeps every message",
      async () => {
        const walPath = `${dir.path}/wal-wrong-password`;
        const n = 20;
        {
          await using svc = await run({
            brokers: broker.bootstrap,
            ...plain,
            "sasl.password": WRONG_PASSWORD,
          }, walPath);
          await refused(svc, "_AUTHENTICATION", "Authentication failed");
          for (let i = 0; i < n; i++) {
            const r = await post(svc, "sec-recovered", `m${i}`, "wal");
            assert.equal(r.status, 200, `message ${i}: ${r.status} ${await r.text()}`);
          }
          assert.equal(await svc.stop(), 0);
          const stopped = (await svc.logs()).find((l) => l.msg === "stopped");
          assert.equal(stopped?.wal_records, n, JSON.stringify(stopped));
        }
        // The password fixed: what the WAL kept reaches Kafka, all of it.
        await using svc = await run(
          { brokers: broker.bootstrap, ...plain, "sasl.password": PLAIN_PASSWORD },
          walPath,
        );
        const got = await consumeAll(broker.directBootstrap, "sec-recovered", {
          expected: n,
          timeoutMs: 30_000,
        });
        assert.deepEqual(got.map((m) => m.value).sort(), Array.from({ length: n }, (_, i) => `m${i}`).sort());
        await waitFor("the WAL to drain", async () => await svc.metric("wal_messages") === 0, 20_000);
      },
    );

    await t.step("a CA that did not sign the broker's certificate: refused, breaker open", async () => {
      await using svc = await run({
        brokers: broker.address("TLS"),
        ...tls,
        "ssl.ca.location": otherCa.certPath,
      });
      await refused(svc, "_SSL", "certificate verify failed");
    });

    await t.step(
      "a broker certificate whose SAN does not name the address: refused unless verification is off",
      async () => {
        {
          await using svc = await run({ brokers: broker.address("ELSEWHERE"), ...tls });
          await refused(svc, "_SSL", "certificate verify failed");
        }
        // Same CA, same listener: only the name check differs.
        await using svc = await run({
          brokers: broker.address("ELSEWHERE"),
          ...tls,
          "ssl.endpoint.identification.algorithm": "none",
        });
        await roundTrip(svc, broker.directBootstrap, "sec-unverified-name");
      },
    );

    await t.step("--check-config with every secret prints none of them", async () => {
      const config = `${dir.path}/check.yaml`;
      await Deno.writeTextFile(
        config,
        [
          "producer: {wal: {in_memory: true}}",
          "kafka:",
          `  brokers: [${broker.bootstrap}]`,
          "  security.protocol: SASL_SSL",
          `  sasl.password: ${PLAIN_PASSWORD}`,
          `  ssl.key.password: ${KEY_PASSPHRASE}`,
          `  ssl.keystore.password: ${SCRAM_PASSWORD}`,
          `  no.such.property: ${WRONG_PASSWORD}`,
        ].join("\n"),
      );
      const r = await runCommand(DENO, ["run", ...SHIPPED, MAIN, "-config", config, "--check-config"], {
        timeoutMs: 30_000,
      });
      const out = new TextDecoder().decode(r.stdout) + r.stderr;
      assert.equal(r.code, 2, out);
      assert.match(out, /kafka\.no\.such\.property/);
      assertNoSecret(out, "--check-config output");
    });

    await t.step("no secret appears in any service output of this file", async () => {
      assert.ok(outputs.length >= 18, `outputs: ${outputs.length}`);
      for (const path of outputs) assertNoSecret(await Deno.readTextFile(path), path);
    });
  },
});

/** POSTs one message; for ack=kafka the reply says where it went. */
function post(svc: Service, topic: string, value: string, ack: "kafka" | "wal"): Promise<Response> {
  return fetch(`${svc.http}/topics/${topic}/messages?ack=${ack}`, { method: "POST", body: value });
}

/** ack=kafka answers 200 with an offset, the record is in the topic, and /metrics shows no secret. */
async function roundTrip(svc: Service, readFrom: string, topic: string): Promise<void> {
  const value = `over ${topic}`;
  const r = await post(svc, topic, value, "kafka");
  const body = await r.text();
  assert.equal(r.status, 200, body);
  assert.ok(BigInt(JSON.parse(body).offset) >= 0n, body);
  const got = await consumeAll(readFrom, topic, { expected: 1, timeoutMs: 20_000 });
  assert.deepEqual(got.map((m) => m.value), [value]);
  assertNoSecret(await (await fetch(`${svc.monitoring}/metrics`)).text(), "/metrics");
}

/**
 * The broker refuses the connection: one error line names the librdkafka error (`code`) and its reason, the
 * breaker opens, /readyz stays ready (the WAL has room), ack=kafka gets 503 and nothing crashes.
 */
async function refused(svc: Service, code: string, reason: string): Promise<void> {
  await waitFor("the breaker to open", async () => await svc.metric("kafka_cb_current_state") === 1, 20_000);
  const errors = (await svc.logs()).filter((l) => l.msg === "kafka error" && l.error === code);
  assert.ok(errors.length >= 1, `no "kafka error" line with ${code}`);
  assert.equal(errors[0].level, "error");
  assert.ok(String(errors[0].reason).includes(reason), String(errors[0].reason));
  const ready = await fetch(`${svc.monitoring}/readyz`);
  assert.equal([ready.status, await ready.text()].join(" "), "200 ready");
  const strong = await post(svc, "sec-refused", "x", "kafka");
  assert.equal(
    `${strong.status} ${(await strong.text()).trim()}`,
    "503 kafka unavailable (circuit breaker open)",
  );
  const metrics = await (await fetch(`${svc.monitoring}/metrics`)).text();
  assertNoSecret(metrics, "/metrics");
}

function assertNoSecret(text: string, where: string): void {
  for (const secret of SECRETS) assert.ok(!text.includes(secret), `${where} shows a secret`);
}
