/**
 * Messages that differ in every field a client can set, for tests of what becomes of a message whose delivery
 * fails: the producer does not hold it once librdkafka has it, and rebuilds it from librdkafka's report.
 */
import type { Message } from "../../src/message.ts";

const encoder = new TextEncoder();

/** Unreachable brokers: every delivery fails once message.timeout.ms is over. */
export const DEAD_KAFKA = {
  "test.mock.num.brokers": "0",
  "bootstrap.servers": "127.0.0.1:1",
  "reconnect.backoff.max.ms": "500",
  "message.timeout.ms": "300",
};

/** Messages of two topics, with and without keys, partitions, headers, a timestamp; values of several sizes. */
export function variedMessages(n: number): Message[] {
  const [a, b] = [`t-${crypto.randomUUID().slice(0, 8)}`, `t-${crypto.randomUUID().slice(0, 8)}`];
  return Array.from({ length: n }, (_, i) => {
    const m: Message = {
      topic: i % 5 === 4 ? b : a,
      value: crypto.getRandomValues(new Uint8Array(i * 37 % 300)),
    };
    if (i % 3 === 1) m.key = encoder.encode(`k${i}`);
    if (i % 11 === 5) m.key = new Uint8Array(0);
    if (i % 4 === 2) m.partition = i % 3;
    if (i % 13 === 7) m.headers = [["h", encoder.encode(`${i}`)]];
    if (i === 9) m.timestamp = 1_700_000_000_000;
    return m;
  });
}

/** The fields of a message a client sent, comparable with deepEqual (no key and a null key alike). */
export function sent(m: Message) {
  return {
    topic: m.topic,
    value: Array.from(m.value),
    key: m.key ? Array.from(m.key) : null,
    partition: m.partition,
    headers: m.headers?.map(([name, value]) => [name, Array.from(value)]),
    timestamp: m.timestamp,
  };
}
