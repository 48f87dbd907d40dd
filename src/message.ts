/**
 * A message and its ack level, as every part of the service sees them: the servers parse them, the producer
 * decides, librdkafka and the WAL carry them. It imports nothing, so every folder may import it.
 */

/** One message as a client sent it. */
export interface Message {
  topic: string;
  value: Uint8Array;
  key?: Uint8Array | null;
  headers?: Array<[string, Uint8Array]>;
  /** Explicit partition; undefined lets librdkafka's partitioner choose. */
  partition?: number;
  /** Milliseconds since the epoch; undefined means "now". */
  timestamp?: number;
}

/**
 * Why a message over `message.max.bytes` is refused (413), the same on every path: `size` is what was counted
 * (a value's bytes, or a whole record's as librdkafka counts it), `max` the most accepted of it.
 * @example tooLargeReason("1001 bytes", 1000) // "message too large: 1001 bytes, at most 1000 bytes are accepted"
 */
export function tooLargeReason(size: string, max: number): string {
  return `message too large: ${size}, at most ${max} bytes are accepted`;
}

/** When the reply to a produce request may be sent (see docs/delivery.md, ack levels). */
export type AckLevel = "none" | "wal" | "kafka";
