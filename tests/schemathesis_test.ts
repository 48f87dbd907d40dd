/**
 * A bounded schemathesis run (property-based requests generated from docs/openapi.json) against the running
 * service without Kafka, where the WAL takes messages. Any finding fails the test: a 5xx other than the
 * documented 503s, a status, content type, header or JSON body the document does not have, a method that is
 * not refused with 405 and `Allow`, invalid data accepted.
 *
 * Left out: content_type_conformance and response_schema_conformance run inside the hook `documented_reply`
 * (tests/schemathesis/hooks.py), which knows the one reply OpenAPI cannot describe (a single message's empty 200
 * with ack=none|wal); positive_data_acceptance, as the document cannot say that `?key=` and `?partition=` are
 * refused on a batch body. The seed and the number of examples are fixed, so a run is repeatable.
 *
 * By hand, with the service running:
 * SCHEMATHESIS_HOOKS=tests/schemathesis/hooks.py .tools/schemathesis-venv/bin/st \
 *   --config-file tests/schemathesis/schemathesis.toml run http://127.0.0.1:18080/openapi.json
 */
import assert from "node:assert/strict";
import { freePort, startService } from "./support/service.ts";
import { tempDir } from "./support/temp_dir.ts";

const ROOT = new URL("..", import.meta.url).pathname;
const ST = `${ROOT}.tools/schemathesis-venv/bin/st`;
const MAX_EXAMPLES = 30;
const SEED = 1;
/** The run takes about 20 s; past this it is killed and the test fails. */
const RUN_TIMEOUT_MS = 55_000;
const EXCLUDED_CHECKS = [
  "content_type_conformance",
  "response_schema_conformance",
  "positive_data_acceptance",
];

Deno.test({
  name: "schemathesis: generated requests find nothing the document does not say (no undocumented 5xx)",
  sanitizeResources: false,
  sanitizeOps: false,
  async fn() {
    try {
      await Deno.stat(ST);
    } catch {
      throw new Error(`schemathesis not found at ${ST} (run scripts/setup.sh)`);
    }
    await using dir = await tempDir("ka-schemathesis-");
    await using svc = await startService({
      // message.timeout.ms bounds ack=kafka requests, which wait for a Kafka that is not there.
      kafka: { brokers: [`127.0.0.1:${freePort()}`], "message.timeout.ms": 1000 },
      producer: { wal: { path: `${dir.path}/wal` } },
    }, { dir: dir.path });
    const started = Date.now();
    const out = await new Deno.Command(ST, {
      args: [
        "--no-color",
        "--config-file",
        `${ROOT}tests/schemathesis/schemathesis.toml`,
        "run",
        `${svc.http}/openapi.json`,
        "--max-examples",
        String(MAX_EXAMPLES),
        "--seed",
        String(SEED),
        "--workers",
        "1",
        "--request-timeout",
        "10",
        "--exclude-checks",
        EXCLUDED_CHECKS.join(","),
      ],
      // Its example database and crash files go to the temp dir.
      cwd: dir.path,
      env: { SCHEMATHESIS_HOOKS: `${ROOT}tests/schemathesis/hooks.py` },
      stdin: "null",
      signal: AbortSignal.timeout(RUN_TIMEOUT_MS),
    }).output();
    const seconds = (Date.now() - started) / 1000;
    const text = new TextDecoder().decode(out.stdout) + new TextDecoder().decode(out.stderr);
    const cases = /(\d+) generated/.exec(text)?.[1] ?? "?";
    console.log(`schemathesis: ${cases} cases, exit ${out.code}, ${seconds.toFixed(1)} s`);
    assert.equal(out.code, 0, text);
    assert.match(text, /No issues found/, text);
    assert.ok(Number(cases) > 0, text);
  },
});
