/** The NDJSON batch parser: one record per line, and each malformed line as its own problem. */
import assert from "node:assert/strict";
import type { Message } from "../src/message.ts";
import {
  LineProblem,
  type NdjsonLimits,
  parseNdjson,
  plainValue,
  TOO_MANY_RECORDS,
} from "../src/server/ndjson.ts";
import type { WalRecord } from "../src/wal/types.ts";
import { exportedRecord } from "../src/wal_tool/export.ts";

const encoder = new TextEncoder();
const LIMITS: NdjsonLimits = { maxRecords: 100, maxValueBytes: 16 };

function parse(text: string | Uint8Array, limits = LIMITS): Array<Message | LineProblem> {
  const parsed = parseNdjson(typeof text === "string" ? encoder.encode(text) : text, "t", limits);
  assert.ok(parsed !== TOO_MANY_RECORDS, "within the record limit");
  assert.ok(!(parsed instanceof LineProblem), "within the limit of lines that are not records");
  return parsed;
}

function bytes(text: string): Uint8Array {
  return encoder.encode(text);
}

Deno.test("ndjson: one message per line, in order; blank lines, CRLF and a missing final newline are fine", () => {
  const records = parse('{"value":"a"}\n\n  \t\n{"value":"b"}\r\n\r\n{"value":"c"}');
  assert.deepEqual(records, [
    { topic: "t", value: bytes("a") },
    { topic: "t", value: bytes("b") },
    { topic: "t", value: bytes("c") },
  ]);
});

Deno.test("ndjson: an empty body, or one of blank lines, holds no records", () => {
  assert.deepEqual(parse(""), []);
  assert.deepEqual(parse("\n\n\r\n \n"), []);
});

Deno.test("ndjson: value and key as text are their UTF-8 bytes; as base64 exactly the bytes given", () => {
  const binary = new Uint8Array(256).map((_, i) => i);
  const b64 = binary.toBase64();
  const limits = { maxRecords: 10, maxValueBytes: 1000 };
  const records = parse(
    [
      JSON.stringify({ value: "héllo ☃ \u{1F600}", key: "ключ" }),
      JSON.stringify({ value_b64: b64, key_b64: "AP8=" }),
      JSON.stringify({ value: "", key: "" }),
      JSON.stringify({ value_b64: "" }),
    ].join("\n"),
    limits,
  );
  assert.deepEqual(records, [
    { topic: "t", value: bytes("héllo ☃ \u{1F600}"), key: bytes("ключ") },
    { topic: "t", value: binary, key: new Uint8Array([0, 255]) },
    { topic: "t", value: new Uint8Array(0), key: new Uint8Array(0) },
    { topic: "t", value: new Uint8Array(0) },
  ]);
});

Deno.test("ndjson: headers and partition; null optional fields are absent", () => {
  const records = parse(
    [
      JSON.stringify({ value: "v", headers: { "trace-id": "abc", "é": "ü" }, partition: 7 }),
      JSON.stringify({ value: "v", key: null, key_b64: null, headers: null, partition: null }),
      JSON.stringify({ value: "v", headers: {}, partition: 2147483647 }),
    ].join("\n"),
  );
  assert.deepEqual(records, [
    { topic: "t", value: bytes("v"), headers: [["trace-id", bytes("abc")], ["é", bytes("ü")]], partition: 7 },
    { topic: "t", value: bytes("v") },
    { topic: "t", value: bytes("v"), partition: 2147483647 },
  ]);
});

Deno.test("ndjson: partition -0 is partition 0", () => {
  const [record] = parse('{"value":"v","partition":-0}') as Message[];
  assert.ok(
    Object.is(record.partition, 0),
    `partition ${Object.is(record.partition, -0) ? "-0" : record.partition}`,
  );
});

Deno.test("ndjson: each malformed line is its own problem, with its line number and status", () => {
  const lines: Array<[string, 400 | 413, string]> = [
    ["{not json", 400, "not JSON: "],
    ['["value","a"]', 400, "expected a JSON object, got an array"],
    ['"text"', 400, "expected a JSON object, got a string"],
    ["null", 400, "expected a JSON object, got null"],
    ["{}", 400, "a record needs value or value_b64"],
    ['{"value":null}', 400, "a record needs value or value_b64"],
    ['{"value":"a","value_b64":"YQ=="}', 400, "both value and value_b64: give one of them"],
    ['{"value":"a","key":"k","key_b64":"aw=="}', 400, "both key and key_b64: give one of them"],
    ['{"value_b64":"not base64!"}', 400, "value_b64: not valid base64"],
    ['{"value_b64":"YQ"}', 400, "value_b64: not valid base64"],
    ['{"value":"a","key_b64":"@@@@"}', 400, "key_b64: not valid base64"],
    ['{"value":12}', 400, "value: expected a string, got a number"],
    ['{"value_b64":true}', 400, "value_b64: expected a base64 string, got a boolean"],
    ['{"value":"a","key":{"x":1}}', 400, "key: expected a string, got an object"],
    ['{"value":"a","headers":["x"]}', 400, "headers: expected an object of names to strings, got an array"],
    ['{"value":"a","headers":{"n":1}}', 400, "headers.n: expected a string, got a number"],
    ['{"value":"a","partition":-1}', 400, "partition: expected an integer from 0 to 2147483647, got -1"],
    ['{"value":"a","partition":1.5}', 400, "partition: expected an integer from 0 to 2147483647, got 1.5"],
    ['{"value":"a","partition":"3"}', 400, 'partition: expected an integer from 0 to 2147483647, got "3"'],
    ['{"value":"a","partition":2147483648}', 400, "got 2147483648"],
    ['{"value":"a","partiton":3}', 400, 'unknown field "partiton"'],
    [
      '{"value":"\\ud800"}',
      400,
      "value: a lone surrogate escape is not valid Unicode; send such bytes as value_b64",
    ],
    [
      '{"value":"12345678901234567"}',
      413,
      "message too large: 17 bytes, at most 16 bytes are accepted",
    ],
    [
      '{"value_b64":"AAAAAAAAAAAAAAAAAAAAAAAA"}',
      413,
      "message too large: 18 bytes, at most 16 bytes are accepted",
    ],
  ];
  // A good record first, and a blank line between each, so that line numbers and record order differ.
  const text = ['{"value":"ok"}', ...lines.map(([line]) => line)].join("\n\n");
  const records = parse(text);
  assert.equal(records.length, lines.length + 1);
  assert.deepEqual(records[0], { topic: "t", value: bytes("ok") });
  lines.forEach(([line, status, reason], i) => {
    const record = records[i + 1];
    assert.ok(record instanceof LineProblem, `${line}: a problem`);
    const lineNumber = 2 * (i + 1) + 1;
    assert.equal(record.line, lineNumber, line);
    assert.equal(record.status, status, line);
    assert.ok(record.reason.startsWith(`line ${lineNumber}: `), record.reason);
    assert.ok(record.reason.includes(reason), `${line}: ${record.reason}`);
  });
});

Deno.test("ndjson: a line that is not UTF-8 is a problem; the lines around it are records", () => {
  const body = new Uint8Array([
    ...bytes('{"value":"a"}\n{"value":"'),
    0xff,
    0xfe,
    ...bytes('"}\n{"value":"b"}\n'),
  ]);
  const records = parse(body);
  assert.deepEqual(records[0], { topic: "t", value: bytes("a") });
  assert.ok(records[1] instanceof LineProblem);
  assert.equal(records[1].reason, "line 2: not valid UTF-8 (send binary values as value_b64)");
  assert.deepEqual(records[2], { topic: "t", value: bytes("b") });
});

Deno.test("ndjson: a value of exactly message.max.bytes is a record", () => {
  const records = parse(`{"value":"${"x".repeat(16)}"}\n`);
  assert.deepEqual(records, [{ topic: "t", value: new Uint8Array(16).fill(0x78) }]);
});

Deno.test("ndjson: more records than maxRecords is TOO_MANY_RECORDS; malformed lines count, blank lines do not", () => {
  const limits = { maxRecords: 3, maxValueBytes: 16 };
  assert.equal(parse('{"value":"a"}\n\n\nbad\n{"value":"c"}\n\n', limits).length, 3);
  assert.equal(
    parseNdjson(bytes('{"value":"a"}\nbad\n{"value":"c"}\n{"value":"d"}\n'), "t", limits),
    TOO_MANY_RECORDS,
  );
});

Deno.test("ndjson: the plain-value fast path reads a line exactly as JSON.parse does, on random lines", () => {
  // Seeded, so a failure can be replayed.
  let seed = 20261128;
  const rand = (n: number) => {
    seed = (seed * 1103515245 + 12345) % 2 ** 31;
    return seed % n;
  };
  const alphabet = [
    "a",
    "Z",
    "0",
    " ",
    "~",
    '"',
    "\\",
    "\t",
    "\u0001",
    "\u007f",
    "é",
    "€",
    "😀",
    "/",
    "{",
    "}",
  ];
  const pieces = ['{"value":"', '{"value": "', '{ "value":"', '{"key":"k","value":"', '{"value_b64":"'];
  let fast = 0;
  for (let i = 0; i < 20_000; i++) {
    let inner = "";
    for (let k = rand(12); k > 0; k--) inner += alphabet[rand(rand(4) === 0 ? alphabet.length : 5)];
    const line = rand(3) === 0
      ? `${pieces[rand(pieces.length)]}${inner}"}${["", "\r", " ", "x"][rand(4)]}`
      : `{"value":${JSON.stringify(inner)}}${["", "\r"][rand(2)]}`;
    const bytes = encoder.encode(line);
    // Inside a larger body, as parseNdjson reads it.
    const body = new Uint8Array([0x0a, ...bytes, 0x0a]);
    const value = plainValue(body, 1, body.byteLength - 1);
    if (value === undefined) continue;
    fast++;
    const parsed = JSON.parse(line);
    assert.deepEqual(Object.keys(parsed), ["value"], line);
    assert.deepEqual(value, encoder.encode(parsed.value), line);
  }
  assert.ok(fast > 2_000, `the fast path took ${fast} lines`);
  const whole = (line: string) => plainValue(encoder.encode(line), 0, encoder.encode(line).byteLength);
  assert.equal(whole('{"value":"a\\"b"}'), undefined, "an escape goes the general way");
  assert.equal(whole('{"value":"é"}'), undefined, "non-ASCII goes the general way");
  assert.equal(whole('{"value":"a\tb"}'), undefined, "a control byte goes the general way");
  assert.deepEqual(whole('{"value":"a b~"}'), encoder.encode("a b~"));
});

Deno.test("ndjson: what wal export writes (less its topic) is read back as the same record: headers_b64, timestamp", () => {
  const records: WalRecord[] = [
    { id: 1, writtenAt: 0, topic: "t", value: bytes("v"), headers: [["h", new Uint8Array([0xff, 0x00])]] },
    {
      id: 2,
      writtenAt: 0,
      topic: "t",
      value: bytes("w"),
      key: bytes("k"),
      headers: [["h", bytes("1")], ["h", bytes("2")], ["7", bytes("x")]],
      partition: 3,
      timestamp: 1_700_000_000_123,
    },
  ];
  for (const record of records) {
    const { topic: _, ...line } = exportedRecord(record);
    const [message] = parse(JSON.stringify(line), { maxRecords: 10, maxValueBytes: 1024 });
    const { id: _id, writtenAt: _at, ...expected } = record;
    assert.deepEqual(message, expected);
  }
  const problems = parse(
    [
      '{"value":"a","headers":{"h":"v"},"headers_b64":[["h","dg=="]]}',
      '{"value":"a","headers_b64":[["h"]]}',
      '{"value":"a","headers_b64":[["h","not base64!"]]}',
      '{"value":"a","headers_b64":{"h":"dg=="}}',
      '{"value":"a","timestamp":-1}',
      '{"value":"a","timestamp":1.5}',
    ].join("\n"),
  ) as LineProblem[];
  assert.deepEqual(problems.map((p) => p.reason), [
    "line 1: both headers and headers_b64: give one of them",
    "line 2: headers_b64: expected a list of [name, base64 value] pairs",
    'line 3: headers_b64[0]: not valid base64 (standard alphabet, padded with "=")',
    "line 4: headers_b64: expected a list of [name, base64 value] pairs, got an object",
    "line 5: timestamp: expected milliseconds since the epoch, got -1",
    "line 6: timestamp: expected milliseconds since the epoch, got 1.5",
  ]);
});
