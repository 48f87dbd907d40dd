/** Per-record options that both listeners accept (HTTP query parameters, gRPC fields). */
import type { AckLevel } from "../message.ts";

/**
 * Reads an ack level; empty or absent means "none". Returns undefined for anything else.
 * @example parseAck("kafka") // "kafka"
 */
export function parseAck(text: string | undefined): AckLevel | undefined {
  switch (text) {
    case undefined:
    case "":
    case "none":
      return "none";
    case "wal":
      return "wal";
    case "kafka":
      return "kafka";
  }
  return undefined;
}

/** Why an ack level was refused, for the client. */
export function ackProblem(text: string): string {
  return `invalid ack: ${JSON.stringify(text)}: want none, wal or kafka`;
}

/** Kafka partitions are int32 ids. */
export const MAX_PARTITION = 2147483647;

/**
 * Reads a partition number written in decimal digits; undefined when it is not an int32 >= 0.
 * @example parsePartition("3") // 3
 */
export function parsePartition(text: string): number | undefined {
  if (text.length === 0 || text.length > 10) return undefined;
  for (let i = 0; i < text.length; i++) {
    const c = text.charCodeAt(i);
    if (c < 48 || c > 57) return undefined;
  }
  const n = Number(text);
  return n <= MAX_PARTITION ? n : undefined;
}

/** Why a partition was refused, for the client. */
export function partitionProblem(text: string): string {
  return `invalid partition: ${JSON.stringify(text)}: want an integer from 0 to ${MAX_PARTITION}`;
}

/**
 * Reads a Content-Length header value strictly: decimal digits, or a list of identical values (a repeated
 * header arrives joined with ", "; RFC 9110 section 8.6 makes it that one value). Returns -1 for anything
 * else: differing values, signs, spaces inside a number, or more than 15 digits.
 * @example parseContentLength("300, 300") // 300
 */
export function parseContentLength(text: string): number {
  if (isDecimal(text)) return Number(text);
  if (!text.includes(",")) return -1;
  const values = text.split(",").map((v) => v.trim());
  const first = values[0];
  return isDecimal(first) && values.every((v) => v === first) ? Number(first) : -1;
}

/** 1 to 15 ASCII digits: within Number's exact integers, and far above any message size. */
function isDecimal(text: string): boolean {
  if (text.length === 0 || text.length > 15) return false;
  for (let i = 0; i < text.length; i++) {
    const c = text.charCodeAt(i);
    if (c < 48 || c > 57) return false;
  }
  return true;
}
