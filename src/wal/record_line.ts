/**
 * One WAL record as one NDJSON line:
 * `{"id":7,"writtenAt":1700000000000,"topic":"t","key":"<b64>","value":"<b64>","headers":[["h","<b64>"]],
 * "partition":0,"timestamp":1700000000000,"crc":"<8 hex>"}\n`.
 * key, headers, partition and timestamp appear only when the message has them, so a record round-trips exactly
 * (absent stays absent, null stays null). Bytes are base64. `id` and `writtenAt` come first so recovery can index a
 * line without parsing all of it. The CRC-32C covers the line's exact bytes before `,"crc":`, and `crc` is always the
 * last field, so checking it needs no re-serialisation.
 */
import type { Message } from "../message.ts";
import { crc32c } from "./crc32c.ts";
import type { WalRecord } from "./types.ts";

const encoder = new TextEncoder();
const decoder = new TextDecoder("utf-8", { fatal: true });

/** `,"crc":"` + 8 hex digits + `"}`: the fixed tail of every line (newline excluded). */
const CRC_TAIL = 18;
const CRC_OPEN = encoder.encode(`,"crc":"`);
const ID_OPEN = encoder.encode(`{"id":`);
const WRITTEN_AT_OPEN = encoder.encode(`,"writtenAt":`);
const HEX = encoder.encode("0123456789abcdef");

/**
 * Lines are encoded into shared chunks of this size, each line a view of its bytes: a buffer of its own per line (a
 * backing store to allocate and for the GC to track) costs more than encoding the line. The lines of a chunk are
 * written in the same few commits and dropped together, so a chunk does not outlive its lines for long.
 */
const CHUNK_BYTES = 64 * 1024;
/** Longer lines get a buffer of their own. */
const MAX_SHARED_LINE = CHUNK_BYTES / 8;
let chunk = new Uint8Array(CHUNK_BYTES);
let chunkUsed = 0;

const BASE64 = encoder.encode("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/");
const LINE_END = `,"crc":"00000000"}\n`;

/**
 * Encodes a record as one line, newline included. The result may be a view into a buffer shared with other lines.
 * @example encodeRecordLine(1, Date.now(), { topic: "t", value: new Uint8Array([1]) })
 */
export function encodeRecordLine(id: number, writtenAt: number, msg: Message): Uint8Array {
  // The fields before the key and after the headers, the same text for either way of writing the line.
  const head = `{"id":${id},"writtenAt":${writtenAt},"topic":${JSON.stringify(msg.topic)}`;
  let tail = "";
  if (msg.partition !== undefined) tail += `,"partition":${finite(msg.partition, "partition")}`;
  if (msg.timestamp !== undefined) tail += `,"timestamp":${finite(msg.timestamp, "timestamp")}`;
  tail += LINE_END;
  const line = asciiLine(head, tail, msg) ?? encoder.encode(lineText(head, tail, msg));
  let crc = crc32c(line, 0, line.length - CRC_TAIL - 1);
  for (let i = line.length - 4; i >= line.length - 11; i--, crc >>>= 4) line[i] = HEX[crc & 0xf];
  return line;
}

/**
 * The line (crc digits still 0) written byte by byte, base64 included: building it as a string and encoding that
 * allocates the string, its base64 parts and their flattening, twice the line's size, for every record. Undefined
 * when the topic or a header name is not ASCII (its bytes are then more than its characters); see lineText.
 */
function asciiLine(head: string, tail: string, msg: Message): Uint8Array | undefined {
  const { key, value, headers } = msg;
  let length = head.length + 10 + base64Length(value) + 1 + tail.length; // `,"value":"` and `"`
  if (key !== undefined) length += key === null ? 11 : 9 + base64Length(key); // `,"key":null`, `,"key":"` `"`
  let names: string[] | undefined;
  if (headers !== undefined) {
    names = headers.map(([name]) => JSON.stringify(name));
    length += 13; // `,"headers":[` and `]`
    for (let i = 0; i < headers.length; i++) {
      length += (i === 0 ? 0 : 1) + names[i].length + 5 + base64Length(headers[i][1]);
    }
  }
  let out = chunk;
  let start = chunkUsed;
  if (length > MAX_SHARED_LINE) {
    out = new Uint8Array(length);
    start = 0;
  } else if (CHUNK_BYTES - chunkUsed < length) {
    chunk = out = new Uint8Array(CHUNK_BYTES);
    chunkUsed = start = 0;
  }
  // Written over by the next line when a name turns out not to be ASCII.
  let at = putAscii(out, start, head);
  if (at < 0) return undefined;
  if (key !== undefined) {
    at = putAscii(out, at, key === null ? `,"key":null` : `,"key":"`);
    if (key !== null) at = putQuote(out, putBase64(out, at, key));
  }
  at = putQuote(out, putBase64(out, putAscii(out, at, `,"value":"`), value));
  if (headers !== undefined) {
    at = putAscii(out, at, `,"headers":[`);
    for (let i = 0; i < headers.length; i++) {
      at = putAscii(out, at, i === 0 ? "[" : ",[");
      at = putAscii(out, at, names![i]);
      if (at < 0) return undefined;
      at = putAscii(out, putQuote(out, putBase64(out, putAscii(out, at, `,"`), headers[i][1])), "]");
    }
    at = putAscii(out, at, "]");
  }
  at = putAscii(out, at, tail);
  if (out === chunk) chunkUsed = at;
  return out.subarray(start, at);
}

/** The line as text: for a line asciiLine cannot write. */
function lineText(head: string, tail: string, msg: Message): string {
  let s = head;
  if (msg.key !== undefined) s += msg.key === null ? `,"key":null` : `,"key":"${msg.key.toBase64()}"`;
  s += `,"value":"${msg.value.toBase64()}"`;
  if (msg.headers !== undefined) {
    s += `,"headers":[`;
    for (let i = 0; i < msg.headers.length; i++) {
      const [name, value] = msg.headers[i];
      s += `${i === 0 ? "" : ","}[${JSON.stringify(name)},"${value.toBase64()}"]`;
    }
    s += "]";
  }
  return s + tail;
}

function base64Length(bytes: Uint8Array): number {
  return Math.ceil(bytes.byteLength / 3) * 4;
}

/** Writes `text` at `at`; the index after it, or -1 when a character is not ASCII. */
function putAscii(out: Uint8Array, at: number, text: string): number {
  for (let i = 0; i < text.length; i++) {
    const c = text.charCodeAt(i);
    if (c > 0x7f) return -1;
    out[at++] = c;
  }
  return at;
}

function putQuote(out: Uint8Array, at: number): number {
  out[at] = 0x22;
  return at + 1;
}

/** Writes `bytes` as base64 (standard alphabet, padded) at `at`; the index after it. */
function putBase64(out: Uint8Array, at: number, bytes: Uint8Array): number {
  const n = bytes.byteLength;
  let i = 0;
  for (; i + 3 <= n; i += 3, at += 4) {
    const v = (bytes[i] << 16) | (bytes[i + 1] << 8) | bytes[i + 2];
    out[at] = BASE64[v >>> 18];
    out[at + 1] = BASE64[(v >>> 12) & 63];
    out[at + 2] = BASE64[(v >>> 6) & 63];
    out[at + 3] = BASE64[v & 63];
  }
  if (i < n) {
    const v = (bytes[i] << 16) | (i + 1 < n ? bytes[i + 1] << 8 : 0);
    out[at] = BASE64[v >>> 18];
    out[at + 1] = BASE64[(v >>> 12) & 63];
    out[at + 2] = i + 1 < n ? BASE64[(v >>> 6) & 63] : 0x3d;
    out[at + 3] = 0x3d;
    at += 4;
  }
  return at;
}

function finite(n: number, field: string): number {
  // NaN or Infinity would make the line invalid JSON and lose the record at replay.
  if (!Number.isFinite(n)) throw new TypeError(`wal: ${field} must be a finite number, got ${n}`);
  return n;
}

/** What recovery needs from a line, or why the line is unusable. */
export type LineHead = { id: number; writtenAt: number } | { error: "bad checksum" | "malformed record" };

/**
 * Checks the checksum of the line `bytes[start, end)` (newline excluded) and reads its id and writtenAt.
 * @example readLineHead(line, 0, line.length - 1)
 */
export function readLineHead(bytes: Uint8Array, start: number, end: number): LineHead {
  const body = end - CRC_TAIL;
  if (body - start < ID_OPEN.length || !matches(bytes, body, CRC_OPEN)) return { error: "malformed record" };
  if (bytes[end - 2] !== 0x22 || bytes[end - 1] !== 0x7d) return { error: "malformed record" };
  let stored = 0;
  for (let i = body + CRC_OPEN.length; i < end - 2; i++) {
    const digit = hexValue(bytes[i]);
    if (digit < 0) return { error: "malformed record" };
    stored = stored * 16 + digit;
  }
  if (crc32c(bytes, start, body) !== stored) return { error: "bad checksum" };
  if (!matches(bytes, start, ID_OPEN)) return { error: "malformed record" };
  const id = readInteger(bytes, start + ID_OPEN.length, body);
  if (id === null || !matches(bytes, id.next, WRITTEN_AT_OPEN)) return { error: "malformed record" };
  const writtenAt = readInteger(bytes, id.next + WRITTEN_AT_OPEN.length, body);
  if (writtenAt === null || bytes[writtenAt.next] !== 0x2c) return { error: "malformed record" };
  return { id: id.value, writtenAt: writtenAt.value };
}

function matches(bytes: Uint8Array, at: number, expected: Uint8Array): boolean {
  if (at < 0 || at + expected.length > bytes.length) return false;
  for (let i = 0; i < expected.length; i++) if (bytes[at + i] !== expected[i]) return false;
  return true;
}

function hexValue(c: number): number {
  if (c >= 0x30 && c <= 0x39) return c - 0x30;
  if (c >= 0x61 && c <= 0x66) return c - 0x57;
  return -1;
}

function readInteger(bytes: Uint8Array, at: number, limit: number): { value: number; next: number } | null {
  let value = 0;
  let i = at;
  for (; i < limit && bytes[i] >= 0x30 && bytes[i] <= 0x39; i++) value = value * 10 + (bytes[i] - 0x30);
  if (i === at || i - at > 16 || !Number.isSafeInteger(value)) return null;
  return { value, next: i };
}

const TOPIC_OPEN = encoder.encode(`,"topic":"`);
const KEY_OPEN = encoder.encode(`,"key":`);
const NULL = encoder.encode("null");
const PARTITION_OPEN = encoder.encode(`,"partition":`);
const TIMESTAMP_OPEN = encoder.encode(`,"timestamp":`);
const EMPTY = new Uint8Array(0);

/**
 * The topic, key and partition of the line `bytes[start, end)` (newline excluded), whose checksum readLineHead has
 * checked, without decoding its value or headers: what recovery needs to count records per order group. The
 * message it returns has an empty value and no headers. Throws "malformed record" as decodeRecordLine would.
 */
export function readLineRouting(bytes: Uint8Array, start: number, end: number): Message {
  // Past the id and writtenAt: the topic follows them.
  let at = bytes.indexOf(0x2c, bytes.indexOf(0x2c, start) + 1);
  if (at < 0 || !matches(bytes, at, TOPIC_OPEN)) throw new Error("malformed record");
  at += TOPIC_OPEN.length;
  const topicEnd = bytes.indexOf(0x22, at);
  // A topic with escapes (never a valid Kafka name) is read the slow way.
  if (topicEnd < 0 || topicEnd >= end || bytes.subarray(at, topicEnd).includes(0x5c)) {
    return decodeRecordLine(bytes, start, end);
  }
  const message: Message = { topic: decoder.decode(bytes.subarray(at, topicEnd)), value: EMPTY };
  at = topicEnd + 1;
  if (matches(bytes, at, KEY_OPEN)) {
    at += KEY_OPEN.length;
    if (matches(bytes, at, NULL)) message.key = null;
    else {
      const keyEnd = bytes.indexOf(0x22, at + 1);
      if (bytes[at] !== 0x22 || keyEnd < 0 || keyEnd >= end) throw new Error("malformed record");
      message.key = Uint8Array.fromBase64(decoder.decode(bytes.subarray(at + 1, keyEnd)));
    }
  }
  // partition and timestamp are the last fields before crc, in that order: read backwards from it.
  let tail = end - CRC_TAIL;
  const timestamp = numberBefore(bytes, tail, TIMESTAMP_OPEN);
  if (timestamp !== null) tail = timestamp;
  const partition = numberBefore(bytes, tail, PARTITION_OPEN);
  if (partition !== null) {
    message.partition = Number(decoder.decode(bytes.subarray(partition + PARTITION_OPEN.length, tail)));
  }
  return message;
}

/** Where `<field><number>` starts when it ends at `end`, or null. */
function numberBefore(bytes: Uint8Array, end: number, field: Uint8Array): number | null {
  let at = end;
  while (at > 0 && isNumberByte(bytes[at - 1])) at--;
  if (at === end) return null;
  at -= field.length;
  return matches(bytes, at, field) ? at : null;
}

/** Digits, sign, decimal point and exponent: what JSON.stringify writes for a finite number. */
function isNumberByte(c: number): boolean {
  return (c >= 0x30 && c <= 0x39) || c === 0x2d || c === 0x2b || c === 0x2e || c === 0x65 || c === 0x45;
}

/**
 * Decodes the line `bytes[start, end)` (newline excluded) after checking its checksum; throws with the reason
 * ("bad checksum" or "malformed record") when the line is damaged.
 */
export function decodeRecordLine(bytes: Uint8Array, start: number, end: number): WalRecord {
  const head = readLineHead(bytes, start, end);
  if ("error" in head) throw new Error(head.error);
  try {
    return toRecord(JSON.parse(decoder.decode(bytes.subarray(start, end))));
  } catch {
    throw new Error("malformed record");
  }
}

function toRecord(o: Record<string, unknown>): WalRecord {
  if (typeof o.id !== "number" || typeof o.writtenAt !== "number" || typeof o.topic !== "string") {
    throw new Error();
  }
  if (typeof o.value !== "string") throw new Error();
  const record: WalRecord = { id: o.id, writtenAt: o.writtenAt, topic: o.topic, value: fromBase64(o.value) };
  if (o.key !== undefined) record.key = o.key === null ? null : fromBase64(o.key);
  if (o.headers !== undefined) {
    if (!Array.isArray(o.headers)) throw new Error();
    record.headers = o.headers.map((h: unknown): [string, Uint8Array] => {
      if (!Array.isArray(h) || h.length !== 2 || typeof h[0] !== "string") throw new Error();
      return [h[0], fromBase64(h[1])];
    });
  }
  if (o.partition !== undefined) record.partition = number(o.partition);
  if (o.timestamp !== undefined) record.timestamp = number(o.timestamp);
  return record;
}

function fromBase64(v: unknown): Uint8Array {
  if (typeof v !== "string") throw new Error();
  return Uint8Array.fromBase64(v);
}

function number(v: unknown): number {
  if (typeof v !== "number") throw new Error();
  return v;
}
