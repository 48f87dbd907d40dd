/** The start-up warning for SCRAM with a librdkafka that Kafka 4.x brokers refuse (src/kafka/scram_version.ts). */
import assert from "node:assert/strict";
import { SCRAM_MIN_VERSION, scramVersionProblem, versionAtLeast } from "../src/kafka/scram_version.ts";

Deno.test("versionAtLeast compares dotted versions part by part, as numbers", () => {
  const cases: Array<[string, boolean]> = [
    ["2.0.2", false],
    ["2.6.0", false],
    ["1.9.9", false],
    ["2.6.1", true],
    ["2.6.10", true],
    ["2.10.0", true], // not a string comparison: 10 > 6
    ["2.12.1", true],
    ["3.0.0", true],
    ["2.6.1-RC3", true],
    ["2.6", false],
  ];
  for (const [version, expected] of cases) {
    assert.equal(versionAtLeast(version, SCRAM_MIN_VERSION), expected, version);
  }
});

Deno.test("a SCRAM mechanism with librdkafka older than 2.6.1 gets one line naming both; anything else none", () => {
  const problem = scramVersionProblem("2.0.2", { "sasl.mechanisms": "SCRAM-SHA-512" });
  assert.ok(problem !== null);
  assert.match(problem, /^librdkafka 2\.0\.2 is older than 2\.6\.1: .*SCRAM-SHA-512/);
  assert.ok(!problem.includes("\n"));
  // The alias librdkafka also takes, and the other SCRAM variant.
  assert.match(scramVersionProblem("2.3.0", { "sasl.mechanism": "SCRAM-SHA-256" }) ?? "", /SCRAM-SHA-256/);

  assert.equal(scramVersionProblem("2.6.1", { "sasl.mechanisms": "SCRAM-SHA-512" }), null);
  assert.equal(scramVersionProblem("2.12.1", { "sasl.mechanisms": "SCRAM-SHA-256" }), null);
  assert.equal(scramVersionProblem("2.0.2", { "sasl.mechanisms": "PLAIN" }), null);
  assert.equal(scramVersionProblem("2.0.2", { "security.protocol": "SSL" }), null);
});
