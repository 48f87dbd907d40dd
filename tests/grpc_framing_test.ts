import assert from "node:assert/strict";
import { Buffer } from "node:buffer";
import { deflateSync, gzipSync } from "node:zlib";
import { frameAll, type FramingError, MessageReader } from "../src/server/grpc/framing.ts";
import {
  encodeGrpcMessage,
  isGrpcContentType,
  parseTimeout,
  shownHeader,
} from "../src/server/grpc/metadata.ts";
import { Status } from "../src/server/grpc/status.ts";

/** Every message `reader` yields until it needs more bytes or fails. */
function drain(reader: MessageReader): Array<Uint8Array | FramingError> {
  const out: Array<Uint8Array | FramingError> = [];
  for (;;) {
    const next = reader.next();
    if (next === undefined) return out;
    out.push(next);
    if (!(next instanceof Uint8Array)) return out;
  }
}

const bytes = (...b: number[]) => new Uint8Array(b);

Deno.test("messages split at every possible point across chunks come out whole and in order", () => {
  const messages = [bytes(), bytes(1), bytes(2, 3, 4), new Uint8Array(300).fill(7)];
  const wire = frameAll(messages, messages.reduce((n, m) => n + m.byteLength, 0));
  for (let a = 0; a <= wire.length; a += 7) {
    for (let b = a; b <= wire.length; b += 13) {
      const reader = new MessageReader(1000);
      const got: Array<Uint8Array | FramingError> = [];
      for (const chunk of [wire.subarray(0, a), wire.subarray(a, b), wire.subarray(b)]) {
        reader.push(chunk);
        got.push(...drain(reader));
      }
      assert.deepEqual(
        got.map((m) => [...(m as Uint8Array)]),
        messages.map((m) => [...m]),
        `split ${a} ${b}`,
      );
      assert.equal(reader.finish(), undefined);
    }
  }
});

Deno.test("a message over the limit is RESOURCE_EXHAUSTED before its bytes arrive", () => {
  const reader = new MessageReader(10);
  reader.push(bytes(0, 0, 0, 0, 11));
  const [err] = drain(reader) as FramingError[];
  assert.equal(err.code, Status.RESOURCE_EXHAUSTED);
});

Deno.test("the compressed flag without an encoding, or an unknown flag, is INTERNAL", () => {
  for (const flag of [1, 2, 0x80]) {
    const reader = new MessageReader(10);
    reader.push(bytes(flag, 0, 0, 0, 1, 9));
    const [err] = drain(reader) as FramingError[];
    assert.equal(err.code, Status.INTERNAL, `flag ${flag}`);
  }
});

/** One message on the wire with the compressed flag: prefix, then `body`. */
function compressedFrame(body: Uint8Array): Uint8Array {
  const wire = new Uint8Array(5 + body.byteLength);
  wire[0] = 1;
  new DataView(wire.buffer).setUint32(1, body.byteLength);
  wire.set(body, 5);
  return wire;
}

Deno.test("gzip and deflate messages are inflated, mixed with uncompressed ones and split across chunks", () => {
  const messages = [bytes(), bytes(1, 2, 3), new Uint8Array(3000).map((_, i) => i % 251)];
  for (const [encoding, compress] of [["gzip", gzipSync], ["deflate", deflateSync]] as const) {
    // Every other message compressed: the flag is per message, the encoding per call.
    const frames = messages.map((m, i) =>
      i % 2 === 0 ? frameAll([m], m.byteLength) : compressedFrame(compress(m))
    );
    const wire = Buffer.concat(frames);
    for (let cut = 0; cut <= wire.length; cut += 101) {
      const reader = new MessageReader(4000, encoding);
      reader.push(wire.subarray(0, cut));
      const got = drain(reader);
      reader.push(wire.subarray(cut));
      got.push(...drain(reader));
      assert.deepEqual(
        got.map((m) => [...(m as Uint8Array)]),
        messages.map((m) => [...m]),
        `${encoding} cut ${cut}`,
      );
      assert.ok(got.every((m) => Object.getPrototypeOf(m) === Uint8Array.prototype), "plain Uint8Arrays");
    }
  }
});

Deno.test("a compressed message inflating past the limit is RESOURCE_EXHAUSTED; bad compressed data is INTERNAL", () => {
  const bomb = gzipSync(new Uint8Array(10_000_000)); // about 10 KB on the wire
  const reader = new MessageReader(1_000_000, "gzip");
  reader.push(compressedFrame(bomb));
  const [err] = drain(reader) as FramingError[];
  assert.equal(err.code, Status.RESOURCE_EXHAUSTED);
  assert.equal(err.message, "received message after decompression larger than max (1000000)");

  const exact = new MessageReader(1000, "deflate");
  exact.push(compressedFrame(deflateSync(new Uint8Array(1000))));
  assert.equal((drain(exact)[0] as Uint8Array).byteLength, 1000, "exactly the limit is accepted");
  const over = new MessageReader(1000, "deflate");
  over.push(compressedFrame(deflateSync(new Uint8Array(1001))));
  assert.equal((drain(over)[0] as FramingError).code, Status.RESOURCE_EXHAUSTED, "one byte over");

  for (const [encoding, body] of [["gzip", deflateSync(bytes(1))], ["deflate", bytes(1, 2, 3)]] as const) {
    const bad = new MessageReader(1000, encoding);
    bad.push(compressedFrame(body));
    const [e] = drain(bad) as FramingError[];
    assert.equal(e.code, Status.INTERNAL, encoding);
    assert.match(e.message, new RegExp(`^failed to decompress the received message \\(${encoding}\\): `));
  }
});

Deno.test("a stream that ends inside a prefix or a message is INTERNAL, with nothing returned from it", () => {
  for (const wire of [bytes(0, 0), bytes(0, 0, 0, 0, 4, 1, 2)]) {
    const reader = new MessageReader(10);
    reader.push(wire);
    assert.deepEqual(drain(reader), []);
    assert.equal(reader.finish()?.code, Status.INTERNAL);
  }
});

Deno.test("gRPC content types, timeouts and status messages", () => {
  for (const ok of ["application/grpc", "application/grpc+proto", "application/grpc;charset=utf-8"]) {
    assert.ok(isGrpcContentType(ok), ok);
  }
  for (
    const bad of [
      undefined,
      "",
      "text/plain",
      "application/grpc+json",
      "application/grpcx",
      "application/json",
    ]
  ) {
    assert.ok(!isGrpcContentType(bad), String(bad));
  }
  assert.deepEqual(
    ["1H", "2M", "3S", "250m", "1000u", "5000000n", "123456789S", "1s", "", "-1S"].map(parseTimeout),
    [3_600_000, 120_000, 3000, 250, 1, 5, "malformed", "malformed", "malformed", "malformed"],
  );
  assert.equal(encodeGrpcMessage("plain text"), "plain text");
  assert.equal(encodeGrpcMessage("100% sure\nnext: é"), "100%25 sure%0Anext: %C3%A9");
  // A header value's octets (UTF-8 "é" arrives as two characters), not re-encoded as if they were text; cut short.
  assert.equal(shownHeader("/a\u00c3\u00a9\\b"), "/a\\xC3\\xA9\\x5Cb");
  assert.equal(shownHeader("/".repeat(6000)), `${"/".repeat(128)}...`);
});

Deno.test("a message whole in a Buffer chunk comes out as a plain Uint8Array view of it, not a copy", () => {
  const framed = frameAll([bytes(1, 2, 3), bytes(4, 5)], 5);
  // Inside a larger allocation, as a node:tls socket's chunks are.
  const chunk = Buffer.from(new Uint8Array([9, 9, ...framed, 9]).buffer).subarray(2, 2 + framed.byteLength);
  const reader = new MessageReader(100);
  reader.push(chunk);
  const [first, second] = drain(reader) as Uint8Array[];
  assert.equal(first.constructor, Uint8Array);
  assert.deepEqual([...first, ...second], [1, 2, 3, 4, 5]);
  chunk[5] = 42; // the first message's first byte
  assert.equal(first[0], 42);
});
