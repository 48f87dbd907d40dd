/**
 * Which librdkafka can log in with SCRAM to Kafka 4.x. Brokers since Kafka 4.0 check the nonce of the SCRAM
 * client-final-message strictly; librdkafka sent a wrong one until 2.6.1, so older versions fail to authenticate
 * there even with the right password (Kafka 3.x brokers accept it).
 */

/** The first librdkafka whose SCRAM login Kafka 4.x accepts. */
export const SCRAM_MIN_VERSION = "2.6.1";

/** Whether dotted version `version` (e.g. "2.0.2", "2.12.1-RC1") is at least `min` ("2.6.1"). */
export function versionAtLeast(version: string, min: string): boolean {
  const have = version.split(/[.-]/).map((part) => Number.parseInt(part, 10) || 0);
  const want = min.split(".").map(Number);
  for (let i = 0; i < want.length; i++) {
    const part = have[i] ?? 0;
    if (part !== want[i]) return part > want[i];
  }
  return true;
}

/**
 * A one-line warning when the librdkafka properties `kafka` choose a SCRAM mechanism and librdkafka `version` is
 * older than {@link SCRAM_MIN_VERSION}; else null.
 * @example scramVersionProblem("2.0.2", { "sasl.mechanisms": "SCRAM-SHA-512" }) // "librdkafka 2.0.2 ..."
 */
export function scramVersionProblem(version: string, kafka: Record<string, string>): string | null {
  // librdkafka takes either name; sasl.mechanism is its alias.
  const mechanism = kafka["sasl.mechanisms"] ?? kafka["sasl.mechanism"] ?? "";
  if (!/^SCRAM-/i.test(mechanism.trim()) || versionAtLeast(version, SCRAM_MIN_VERSION)) return null;
  return `librdkafka ${version} is older than ${SCRAM_MIN_VERSION}: Kafka 4.x brokers refuse its ` +
    `${mechanism.trim()} login (set LIBRDKAFKA_PATH to a newer librdkafka, see docs/kafka-security.md)`;
}
