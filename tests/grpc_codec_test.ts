import assert from "node:assert/strict";
import protobuf from "protobufjs";
import {
  CodecError,
  decodeProdRq,
  decodeProdRs,
  encodeProdRq,
  encodeProdRs,
  FramedProdRs,
  type ProdRq,
  type ProdRs,
} from "../src/server/grpc/codec.ts";
import { frameAll } from "../src/server/grpc/framing.ts";
import { PROTO_PATH } from "../src/server/grpc/schema.ts";

const root = protobuf.loadSync(PROTO_PATH);
const RqType = root.lookupType("ProdRq");
const RsType = root.lookupType("ProdRs");
const CONVERT = { longs: String, bytes: Array, defaults: false };

/** A small deterministic PRNG (mulberry32), so that a failure can be replayed. */
function rng(seed: number): () => number {
  return () => {
    seed = (seed + 0x6d2b79f5) | 0;
    let t = Math.imul(seed ^ (seed >>> 15), 1 | seed);
    t = (t + Math.imul(t ^ (t >>> 7), 61 | t)) ^ t;
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

const SEED = Number(Deno.env.get("CODEC_SEED") ?? 20240601);
const ROUNDS = 3000;

function randomBytes(r: () => number, max: number): Uint8Array {
  const out = new Uint8Array(Math.floor(r() * max));
  for (let i = 0; i < out.length; i++) out[i] = Math.floor(r() * 256);
  return out;
}

function randomString(r: () => number): string {
  const alphabets = ["abcXYZ09._-", "héllo wörld", "日本語テキスト", "🙂👍", "\u0000\u007f"];
  let s = "";
  const n = Math.floor(r() * (r() < 0.1 ? 200 : 12));
  for (let i = 0; i < n; i++) {
    const chars = [...alphabets[Math.floor(r() * alphabets.length)]];
    s += chars[Math.floor(r() * chars.length)];
  }
  return s;
}

function randomUint64(r: () => number): bigint {
  switch (Math.floor(r() * 4)) {
    case 0:
      return 0n;
    case 1:
      return BigInt(Math.floor(r() * 1000));
    case 2:
      return 18446744073709551615n - BigInt(Math.floor(r() * 3));
    default:
      return (BigInt(Math.floor(r() * 2 ** 32)) << 32n) | BigInt(Math.floor(r() * 2 ** 32));
  }
}

function randomInt32(r: () => number): number {
  const picks = [0, -1, 1, 2147483647, -2147483648, Math.floor(r() * 2 ** 32) | 0];
  return picks[Math.floor(r() * picks.length)];
}

function randomRq(r: () => number): ProdRq {
  const rq: ProdRq = {
    topic: randomString(r),
    message: randomBytes(r, r() < 0.05 ? 70_000 : 64),
    streamOffset: randomUint64(r),
    ack: randomString(r),
    headers: Array.from(
      { length: Math.floor(r() * 4) },
      () => ({ key: randomString(r), value: randomBytes(r, 16) }),
    ),
  };
  if (r() < 0.5) rq.key = randomBytes(r, 16);
  if (r() < 0.5) rq.partition = randomInt32(r);
  return rq;
}

function randomRs(r: () => number): ProdRs {
  const rs: ProdRs = { streamOffset: randomUint64(r), error: r() < 0.5 ? "" : randomString(r), code: 0 };
  if (r() < 0.5) rs.code = randomInt32(r);
  if (r() < 0.5) rs.partition = randomInt32(r);
  if (r() < 0.5) rs.offset = BigInt.asIntN(64, randomUint64(r));
  return rs;
}

/** A ProdRq as protobufjs's toObject gives it (strings for 64-bit numbers, arrays for bytes). */
function rqAsObject(rq: ProdRq): Record<string, unknown> {
  const o: Record<string, unknown> = {};
  if (rq.topic !== "") o.topic = rq.topic;
  if (rq.message.length > 0) o.message = [...rq.message];
  if (rq.streamOffset !== 0n) o.streamOffset = String(rq.streamOffset);
  if (rq.ack !== "") o.ack = rq.ack;
  if (rq.key !== undefined) o.key = [...rq.key];
  if (rq.headers.length > 0) {
    o.headers = rq.headers.map((h) => {
      const ho: Record<string, unknown> = {};
      if (h.key !== "") ho.key = h.key;
      if (h.value.length > 0) ho.value = [...h.value];
      return ho;
    });
  }
  if (rq.partition !== undefined) o.partition = rq.partition;
  return o;
}

function rsAsObject(rs: ProdRs): Record<string, unknown> {
  const o: Record<string, unknown> = {};
  if (rs.streamOffset !== 0n) o.streamOffset = String(rs.streamOffset);
  if (rs.error !== "") o.error = rs.error;
  if (rs.code !== 0) o.code = rs.code;
  if (rs.partition !== undefined) o.partition = rs.partition;
  if (rs.offset !== undefined) o.offset = String(rs.offset);
  return o;
}

/** protobufjs's encoding of `o` (an object in rqAsObject's shape). */
function pbEncode(type: protobuf.Type, o: Record<string, unknown>): Uint8Array {
  return type.encode(type.fromObject(o)).finish();
}

function pbDecode(type: protobuf.Type, bytes: Uint8Array): Record<string, unknown> {
  const o = type.toObject(type.decode(bytes), CONVERT);
  // protobufjs lists an empty repeated field as []; ours leaves it out.
  if (Array.isArray(o.headers) && o.headers.length === 0) delete o.headers;
  return o;
}

/** Unknown fields of every wire type, for the decoder to skip. */
function unknownFields(r: () => number): Uint8Array {
  const w = protobuf.Writer.create();
  const n = Math.floor(r() * 4);
  for (let i = 0; i < n; i++) {
    const field = 20 + Math.floor(r() * 10_000);
    switch (Math.floor(r() * 5)) {
      case 0:
        w.uint32((field << 3) | 0).uint64(String(randomUint64(r)));
        break;
      case 1:
        w.uint32((field << 3) | 1).fixed64(7);
        break;
      case 2:
        w.uint32((field << 3) | 2).bytes(randomBytes(r, 20));
        break;
      case 3:
        w.uint32((field << 3) | 5).fixed32(9);
        break;
      default:
        // A group holding a varint field, then its end.
        w.uint32((field << 3) | 3).uint32((1 << 3) | 0).uint32(5).uint32((field << 3) | 4);
    }
  }
  return w.finish();
}

function concat(...parts: Uint8Array[]): Uint8Array {
  const out = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
  let pos = 0;
  for (const p of parts) {
    out.set(p, pos);
    pos += p.length;
  }
  return out;
}

Deno.test("ProdRq: what protobufjs encodes, the codec decodes to the same fields (unknown fields skipped)", () => {
  const r = rng(SEED);
  for (let i = 0; i < ROUNDS; i++) {
    const rq = randomRq(r);
    const bytes = concat(unknownFields(r), pbEncode(RqType, rqAsObject(rq)), unknownFields(r));
    const got = decodeProdRq(bytes);
    assert.deepEqual(rqAsObject(got), rqAsObject(rq), `seed ${SEED} round ${i}`);
    assert.equal(got.streamOffset, rq.streamOffset);
  }
});

Deno.test("ProdRq: what the codec encodes, protobufjs decodes to the same fields", () => {
  const r = rng(SEED + 1);
  for (let i = 0; i < ROUNDS; i++) {
    const rq = randomRq(r);
    assert.deepEqual(pbDecode(RqType, encodeProdRq(rq)), rqAsObject(rq), `seed ${SEED + 1} round ${i}`);
  }
});

Deno.test("ProdRs: the codec and protobufjs agree both ways on every field", () => {
  const r = rng(SEED + 2);
  for (let i = 0; i < ROUNDS; i++) {
    const rs = randomRs(r);
    const ours = encodeProdRs(rs);
    assert.deepEqual(pbDecode(RsType, ours), rsAsObject(rs), `seed ${SEED + 2} round ${i}`);
    assert.deepEqual(ours, new Uint8Array(pbEncode(RsType, rsAsObject(rs))), `byte-identical, round ${i}`);
    const back = decodeProdRs(concat(pbEncode(RsType, rsAsObject(rs)), unknownFields(r)));
    assert.deepEqual(rsAsObject(back), rsAsObject(rs), `round ${i}`);
  }
});

Deno.test("a uint64 streamOffset above 2^53 round-trips exactly", () => {
  for (const v of [2n ** 53n + 1n, 18446744073709551615n, 9007199254740993n]) {
    const rq: ProdRq = { topic: "t", message: new Uint8Array(0), streamOffset: v, ack: "", headers: [] };
    assert.equal(decodeProdRq(encodeProdRq(rq)).streamOffset, v);
    assert.equal(decodeProdRs(encodeProdRs({ streamOffset: v, error: "", code: 0 })).streamOffset, v);
  }
});

Deno.test("ProdRq input cut inside a field throws CodecError; cut between fields it decodes", () => {
  const r = rng(SEED + 3);
  let refused = 0;
  for (let i = 0; i < 300; i++) {
    const full = rqAsObject(randomRq(r));
    if ((full.message as number[] | undefined ?? []).length > 1000) continue; // every cut is tried: keep it small
    // Field boundaries: the encodings of the first k fields (protobufjs writes them in field-number order).
    const boundaries = new Set<number>([0]);
    const partial: Record<string, unknown> = {};
    for (const name of ["topic", "message", "streamOffset", "ack", "key", "headers", "partition"]) {
      if (!(name in full)) continue;
      if (name === "headers") {
        for (const h of full.headers as unknown[]) {
          partial.headers = [...(partial.headers as unknown[] ?? []), h];
          boundaries.add(pbEncode(RqType, partial).length);
        }
      } else {
        partial[name] = full[name];
        boundaries.add(pbEncode(RqType, partial).length);
      }
    }
    const bytes = pbEncode(RqType, full);
    for (let cut = 0; cut < bytes.length; cut++) {
      let failure: unknown;
      try {
        decodeProdRq(bytes.subarray(0, cut));
      } catch (err) {
        failure = err;
      }
      if (boundaries.has(cut)) {
        assert.equal(failure, undefined, `round ${i} cut ${cut}`);
      } else {
        assert.ok(failure instanceof CodecError, `round ${i} cut ${cut}: ${failure}`);
        refused++;
      }
    }
  }
  assert.ok(refused > 1000, `only ${refused} truncations refused`);
});

Deno.test("malformed input is refused with CodecError, never another exception", () => {
  const r = rng(SEED + 4);
  const cases: Uint8Array[] = [
    new Uint8Array([0x00]), // field number 0
    new Uint8Array([0x0e]), // field 1, wire type 6
    new Uint8Array([0x18, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01]), // 11-byte varint
    new Uint8Array([0x0a, 0x05, 0x61]), // length past the end
    new Uint8Array([0x08, 0x01]), // topic as a varint
    new Uint8Array([0x1a, 0x00]), // streamOffset as bytes
    new Uint8Array([0x32, 0x02, 0x08, 0x01]), // header key as a varint
    new Uint8Array([0x32, 0x05, 0x0a, 0x03, 0x6b, 0xff, 0x79]), // header key "k\xffy": not UTF-8
    new Uint8Array([0xa3, 0x01, 0xa4, 0x02]), // group ended by another field's end
    new Uint8Array([0x0c]), // end group at the top level
  ];
  for (const bytes of cases) {
    let failure: unknown;
    try {
      decodeProdRq(bytes);
    } catch (err) {
      failure = err;
    }
    assert.ok(failure instanceof CodecError, `${bytes}: ${failure}`);
  }
  for (let i = 0; i < 20_000; i++) {
    try {
      decodeProdRq(randomBytes(r, 40));
      decodeProdRs(randomBytes(r, 40));
    } catch (err) {
      assert.ok(err instanceof CodecError, String(err));
    }
  }
});

Deno.test("FramedProdRs writes exactly the framed encodeProdRs of each reply, back to back", () => {
  const r = rng(SEED + 7);
  for (let round = 0; round < 300; round++) {
    // Up to 200 replies, long errors included, so the writer grows while framing.
    const replies = Array.from({ length: Math.floor(r() * 200) }, () => randomRs(r));
    const singly = replies.map(encodeProdRs);
    const expected = frameAll(singly, singly.reduce((n, m) => n + m.byteLength, 0));
    const framed = new FramedProdRs(replies.length);
    for (const rs of replies) framed.add(rs.streamOffset, rs.code, rs.error, rs.partition, rs.offset);
    assert.equal(framed.count, replies.length);
    assert.deepEqual(framed.finish(), expected, `round ${round}`);
  }
});

Deno.test("a topic that repeats decodes to the same string; one byte different, or the input reused, is read anew", () => {
  const rq = (topic: string): ProdRq => ({
    topic,
    message: new Uint8Array(0),
    streamOffset: 1n,
    ack: "",
    headers: [],
  });
  const r = rng(SEED + 8);
  const names = ["orders", "orderz", "orders", "örders", "", "orders.v2", "Orders"];
  for (let i = 0; i < 500; i++) {
    const topic = names[Math.floor(r() * names.length)];
    assert.equal(decodeProdRq(encodeProdRq(rq(topic))).topic, topic, `round ${i}`);
  }
  // The remembered topic is a copy: the buffer it was read from may be refilled with the next read's bytes.
  const buffer = encodeProdRq(rq("abc"));
  assert.equal(decodeProdRq(buffer).topic, "abc");
  buffer.set(new TextEncoder().encode("abd"), buffer.indexOf(0x61));
  assert.equal(decodeProdRq(buffer).topic, "abd");
});
