/**
 * The body of an HTTP batch (`Content-Type: application/x-ndjson`): one record per line, each a JSON object
 * with `value` or `value_b64`, and optionally `key` or `key_b64`, `headers` or `headers_b64`, `partition` and
 * `timestamp` (the shape `wal export` writes, less its `topic`). A line that is not a valid record is that
 * record's problem, not the batch's: the other records still go to Kafka.
 */
import { type Message, tooLargeReason } from "../message.ts";
import { MAX_PARTITION } from "./params.ts";

/** Why one line is not a record. */
export class LineProblem {
  constructor(
    /** The line's number in the body, from 1 (blank lines count). */
    readonly line: number,
    /** 400, or 413 for a value larger than `message.max.bytes`. */
    readonly status: 400 | 413,
    /** For the client; starts with the line number. */
    readonly reason: string,
  ) {}
}

/** What parseNdjson returns when the body holds more records than allowed; nothing past the limit is parsed. */
export const TOO_MANY_RECORDS = Symbol("too many records");

/**
 * Most lines of one body that are not records. Past it the body is garbage rather than a batch with a few bad
 * records, and is refused whole: one error of about 100 bytes per line of 2 would make a reply 50 times the body,
 * which no bound on request bytes covers.
 */
export const MAX_LINE_PROBLEMS = 100;

/** Most characters of a client's text (a field name) quoted in a line's problem. */
const QUOTED_CHARS = 64;

/** The bounds parseNdjson applies. */
export interface NdjsonLimits {
  /** Most records (non-blank lines) in one body. */
  maxRecords: number;
  /** The largest value of one record, in bytes (`message.max.bytes` less librdkafka's record overhead). */
  maxValueBytes: number;
}

/** The fields a record may have; any other is refused, so that a misspelt `partiton` is not silently ignored. */
const FIELDS = new Set([
  "value",
  "value_b64",
  "key",
  "key_b64",
  "headers",
  "headers_b64",
  "partition",
  "timestamp",
]);
const NEWLINE = 0x0a;
const EMPTY = new Uint8Array(0);
/** Fatal: a value that is not UTF-8 is refused rather than altered; binary values go as value_b64. */
const utf8 = new TextDecoder("utf-8", { fatal: true });
const encoder = new TextEncoder();

/**
 * Reads one record per line of `body` for `topic`: a Message, or the line's problem, in body order. Blank lines
 * (nothing but spaces, tabs and a CR) are skipped, so a trailing newline and CRLF line ends are fine. Lines are
 * read one at a time from the bytes, so the body never exists as one string; a plain-text value is a view of the
 * body's bytes (plainValue). Returns TOO_MANY_RECORDS past `limits.maxRecords`, and the problem of the line that
 * made MAX_LINE_PROBLEMS too many when there are more.
 * @example parseNdjson(encoder.encode('{"value":"a"}\n'), "t", limits) // [{ topic: "t", value: [0x61] }]
 */
export function parseNdjson(
  body: Uint8Array,
  topic: string,
  limits: NdjsonLimits,
): Array<Message | LineProblem> | typeof TOO_MANY_RECORDS | LineProblem {
  const records: Array<Message | LineProblem> = [];
  let problems = 0;
  let line = 0;
  let start = 0;
  while (start < body.byteLength) {
    let end = body.indexOf(NEWLINE, start);
    if (end < 0) end = body.byteLength;
    const lineStart = start;
    start = end + 1;
    line++;
    // A plain line is not blank, and needs no view of its own bytes.
    const value = plainValue(body, lineStart, end);
    if (value !== undefined && value.byteLength <= limits.maxValueBytes) {
      if (records.length === limits.maxRecords) return TOO_MANY_RECORDS;
      records.push({ topic, value });
      continue;
    }
    const bytes = body.subarray(lineStart, end);
    if (isBlank(bytes)) continue;
    if (records.length === limits.maxRecords) return TOO_MANY_RECORDS;
    const record = parseLine(bytes, line, topic, limits.maxValueBytes);
    if (record instanceof LineProblem && ++problems > MAX_LINE_PROBLEMS) return record;
    records.push(record);
  }
  return records;
}

const PLAIN_PREFIX = encoder.encode('{"value":"');
const QUOTE = 0x22;
const BACKSLASH = 0x5c;
const CLOSE_BRACE = 0x7d;
const CR = 0x0d;

/** 1 for the bytes a plain value holds as they are: printable ASCII but `"` and `\`. */
const PLAIN_BYTE = new Uint8Array(256);
for (let b = 0x20; b <= 0x7e; b++) PLAIN_BYTE[b] = b === QUOTE || b === BACKSLASH ? 0 : 1;

/**
 * The value of the most common line, `{"value":"<printable ASCII but " and \>"}` (a CR may end it), the line
 * being `body` from `start` to `end`: those bytes are the value as they are, so the line needs no UTF-8
 * decoding, no JSON.parse and no encoding back (together about a third of a batch's CPU). undefined for any
 * other line, which parseLine reads; both give the same record (tests/ndjson_test.ts checks it on random lines).
 */
export function plainValue(body: Uint8Array, start: number, end: number): Uint8Array | undefined {
  if (end > start && body[end - 1] === CR) end--;
  const valueStart = start + PLAIN_PREFIX.byteLength;
  if (end < valueStart + 2 || body[end - 1] !== CLOSE_BRACE || body[end - 2] !== QUOTE) return undefined;
  for (let i = 0; i < PLAIN_PREFIX.byteLength; i++) if (body[start + i] !== PLAIN_PREFIX[i]) return undefined;
  const valueEnd = end - 2;
  // One look-up per byte and no branch: nearly every value is plain, so there is seldom anything to stop for.
  let plain = 1;
  for (let i = valueStart; i < valueEnd; i++) plain &= PLAIN_BYTE[body[i]];
  return plain === 1 ? body.subarray(valueStart, valueEnd) : undefined;
}

/** A field that cannot be taken as it is; becomes a LineProblem with the line number. */
class FieldError extends Error {
  constructor(message: string, readonly status: 400 | 413 = 400) {
    super(message);
  }
}

function parseLine(
  bytes: Uint8Array,
  line: number,
  topic: string,
  maxValueBytes: number,
): Message | LineProblem {
  let text: string;
  try {
    text = utf8.decode(bytes);
  } catch {
    return new LineProblem(line, 400, `line ${line}: not valid UTF-8 (send binary values as value_b64)`);
  }
  let parsed: unknown;
  try {
    parsed = JSON.parse(text);
  } catch (err) {
    return new LineProblem(
      line,
      400,
      `line ${line}: not JSON: ${cut((err as Error).message, 2 * QUOTED_CHARS)}`,
    );
  }
  if (!isObject(parsed)) {
    return new LineProblem(line, 400, `line ${line}: expected a JSON object, got ${kindOf(parsed)}`);
  }
  try {
    return toMessage(parsed, topic, maxValueBytes);
  } catch (err) {
    if (!(err instanceof FieldError)) throw err;
    return new LineProblem(line, err.status, `line ${line}: ${err.message}`);
  }
}

/** The Message a parsed line describes; throws FieldError naming the field that is wrong. */
function toMessage(record: Record<string, unknown>, topic: string, maxValueBytes: number): Message {
  for (const name of Object.keys(record)) {
    if (!FIELDS.has(name)) {
      throw new FieldError(
        `unknown field ${quoted(name)}: a record has value or value_b64, key or key_b64, headers or ` +
          "headers_b64, partition, timestamp",
      );
    }
  }
  const value = bytesOf(record, "value", "value_b64");
  if (value === undefined) {
    throw new FieldError("a record needs value or value_b64 (null values are not sent)");
  }
  if (value.byteLength > maxValueBytes) {
    throw new FieldError(
      tooLargeReason(`${value.byteLength} bytes`, maxValueBytes),
      413,
    );
  }
  const message: Message = { topic, value };
  const key = bytesOf(record, "key", "key_b64");
  if (key !== undefined) message.key = key;
  const headers = headersOf(record.headers, record.headers_b64);
  if (headers !== undefined) message.headers = headers;
  const timestamp = record.timestamp;
  if (timestamp !== undefined && timestamp !== null) {
    if (typeof timestamp !== "number" || !Number.isSafeInteger(timestamp) || timestamp < 0) {
      throw new FieldError(
        `timestamp: expected milliseconds since the epoch, got ${JSON.stringify(timestamp)}`,
      );
    }
    message.timestamp = timestamp;
  }
  const partition = record.partition;
  if (partition !== undefined && partition !== null) {
    if (
      typeof partition !== "number" || !Number.isInteger(partition) || partition < 0 ||
      partition > MAX_PARTITION
    ) {
      throw new FieldError(
        `partition: expected an integer from 0 to ${MAX_PARTITION}, got ${JSON.stringify(partition)}`,
      );
    }
    message.partition = partition === 0 ? 0 : partition; // JSON's -0 is partition 0 (and no int32 to FFI)
  }
  return message;
}

/** The bytes of a field given as text (`name`, sent as UTF-8) or base64 (`name_b64`); undefined when neither. */
function bytesOf(record: Record<string, unknown>, name: string, b64Name: string): Uint8Array | undefined {
  const text = record[name];
  const b64 = record[b64Name];
  const hasText = text !== undefined && text !== null;
  const hasB64 = b64 !== undefined && b64 !== null;
  if (hasText && hasB64) throw new FieldError(`both ${name} and ${b64Name}: give one of them`);
  if (hasText) return textBytes(name, text, b64Name);
  if (hasB64) return base64Bytes(b64Name, b64);
  return undefined;
}

function textBytes(name: string, text: unknown, b64Name?: string): Uint8Array {
  if (typeof text !== "string") throw new FieldError(`${name}: expected a string, got ${kindOf(text)}`);
  if (text.length === 0) return EMPTY;
  // A lone surrogate (a "\ud800" escape) has no UTF-8 form: encoding would quietly turn it into U+FFFD.
  if (!text.isWellFormed()) {
    const hint = b64Name === undefined ? "" : `; send such bytes as ${b64Name}`;
    throw new FieldError(`${name}: a lone surrogate escape is not valid Unicode${hint}`);
  }
  return encoder.encode(text);
}

function base64Bytes(name: string, b64: unknown): Uint8Array {
  if (typeof b64 !== "string") throw new FieldError(`${name}: expected a base64 string, got ${kindOf(b64)}`);
  try {
    // Strict: missing padding or stray bits are refused, so a truncated value is never taken for a shorter one.
    return Uint8Array.fromBase64(b64, { lastChunkHandling: "strict" });
  } catch {
    throw new FieldError(`${name}: not valid base64 (standard alphabet, padded with "=")`);
  }
}

/**
 * `headers` (`{"name": "value", ...}`, values as UTF-8) or `headers_b64` (`[["name", "<base64>"], ...]`, for
 * values that are not text and names that repeat) as Kafka headers; undefined when absent or empty. An object
 * keeps its order, except that JSON.parse puts integer-like names ("1", "2") first; a list keeps it exactly.
 */
function headersOf(headers: unknown, b64: unknown): Array<[string, Uint8Array]> | undefined {
  const hasB64 = b64 !== undefined && b64 !== null;
  if (headers === undefined || headers === null) return hasB64 ? headerPairs(b64) : undefined;
  if (hasB64) throw new FieldError("both headers and headers_b64: give one of them");
  if (!isObject(headers)) {
    throw new FieldError(`headers: expected an object of names to strings, got ${kindOf(headers)}`);
  }
  const out: Array<[string, Uint8Array]> = [];
  for (const [name, value] of Object.entries(headers)) {
    out.push([name, textBytes(`headers.${cut(name)}`, value)]);
  }
  return out.length === 0 ? undefined : out;
}

/** `headers_b64`: `[["name", "<base64>"], ...]`, in order; undefined when empty. */
function headerPairs(b64: unknown): Array<[string, Uint8Array]> | undefined {
  if (!Array.isArray(b64)) {
    throw new FieldError(`headers_b64: expected a list of [name, base64 value] pairs, got ${kindOf(b64)}`);
  }
  const out: Array<[string, Uint8Array]> = [];
  for (const pair of b64) {
    if (!Array.isArray(pair) || pair.length !== 2 || typeof pair[0] !== "string") {
      throw new FieldError("headers_b64: expected a list of [name, base64 value] pairs");
    }
    out.push([pair[0], base64Bytes(`headers_b64[${out.length}]`, pair[1])]);
  }
  return out.length === 0 ? undefined : out;
}

function isObject(value: unknown): value is Record<string, unknown> {
  return typeof value === "object" && value !== null && !Array.isArray(value);
}

/** A JSON value's kind, as a problem names it. */
function kindOf(value: unknown): string {
  if (value === null) return "null";
  if (Array.isArray(value)) return "an array";
  if (typeof value === "object") return "an object";
  return `a ${typeof value}`;
}

/** Nothing but spaces, tabs and CR. */
function isBlank(bytes: Uint8Array): boolean {
  for (let i = 0; i < bytes.byteLength; i++) {
    const c = bytes[i];
    if (c !== 0x20 && c !== 0x09 && c !== 0x0d) return false;
  }
  return true;
}

/** `text` JSON-quoted, cut to QUOTED_CHARS characters. */
function quoted(text: string): string {
  return text.length <= QUOTED_CHARS
    ? JSON.stringify(text)
    : `${JSON.stringify(text.slice(0, QUOTED_CHARS))}...`;
}

/** `text` cut to `max` characters. */
function cut(text: string, max = QUOTED_CHARS): string {
  return text.length <= max ? text : `${text.slice(0, max)}...`;
}
