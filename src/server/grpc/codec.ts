/**
 * ProdRq and ProdRs (proto/kafka_ambassador.proto) on the protobuf wire, written by hand: they are decoded and
 * encoded once per record, and a generic codec costs several times more. Unknown fields are skipped; truncated
 * or malformed input throws a CodecError. Decoded `bytes` fields are views of the input, not copies.
 */

import { PREFIX_BYTES } from "./framing.ts";
/** A Kafka record header. */
export interface Header {
  key: string;
  value: Uint8Array;
}

/** One record on a Produce stream; proto3 defaults for absent fields, undefined for absent optional ones. */
export interface ProdRq {
  topic: string;
  message: Uint8Array;
  /** uint64, exact over the whole range. */
  streamOffset: bigint;
  ack: string;
  key?: Uint8Array;
  headers: readonly Header[];
  partition?: number;
}

/** The reply to one record. */
export interface ProdRs {
  streamOffset: bigint;
  error: string;
  code: number;
  partition?: number;
  /** int64. */
  offset?: bigint;
}

/** Input that is not a valid encoding of the expected message. */
export class CodecError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "CodecError";
  }
}

const EMPTY = new Uint8Array(0);
/** The headers of a record without any: shared, so that a record without headers allocates no array. */
const NO_HEADERS: readonly Header[] = Object.freeze([]);
const utf8 = new TextDecoder();
const strictUtf8 = new TextDecoder("utf-8", { fatal: true });
const utf8Encoder = new TextEncoder();

const VARINT = 0;
const FIXED64 = 1;
const LENGTH = 2;
const START_GROUP = 3;
const END_GROUP = 4;
const FIXED32 = 5;

/** A read position over one encoded message (or submessage), ending at `end`. */
class Cursor {
  pos: number;
  constructor(readonly buf: Uint8Array, start: number, readonly end: number) {
    this.pos = start;
  }
}

/** Reads a varint and returns its low 32 bits (as a signed int32); `hiOut[0]` receives the high 32 bits. */
function readVarint(c: Cursor, hiOut?: Int32Array): number {
  const buf = c.buf, end = c.end;
  let i = c.pos, lo = 0, hi = 0, b = 0;
  for (let shift = 0; shift < 28; shift += 7) {
    if (i >= end) throw truncated();
    b = buf[i++];
    lo |= (b & 0x7f) << shift;
    if (b < 0x80) return done(c, i, lo, 0, hiOut);
  }
  if (i >= end) throw truncated();
  b = buf[i++];
  lo |= (b & 0x7f) << 28;
  hi = (b & 0x7f) >>> 4;
  if (b < 0x80) return done(c, i, lo, hi, hiOut);
  for (let shift = 3; shift < 32; shift += 7) {
    if (i >= end) throw truncated();
    b = buf[i++];
    hi |= (b & 0x7f) << shift;
    if (b < 0x80) return done(c, i, lo, hi, hiOut);
  }
  throw new CodecError("invalid varint: more than 10 bytes");
}

function done(c: Cursor, pos: number, lo: number, hi: number, hiOut: Int32Array | undefined): number {
  c.pos = pos;
  if (hiOut !== undefined) hiOut[0] = hi;
  return lo;
}

const hiBits = new Int32Array(1);

function readUint64(c: Cursor): bigint {
  const lo = readVarint(c, hiBits) >>> 0;
  const hi = hiBits[0] >>> 0;
  return hi === 0 ? BigInt(lo) : (BigInt(hi) << 32n) | BigInt(lo);
}

/** Reads a length prefix and returns the end of the delimited field. */
function readLength(c: Cursor): number {
  const n = readVarint(c, hiBits);
  if (hiBits[0] !== 0 || n < 0) throw new CodecError("invalid length: too large");
  const end = c.pos + n;
  if (end > c.end) throw truncated();
  return end;
}

function readBytes(c: Cursor): Uint8Array {
  const end = readLength(c);
  const bytes = c.buf.subarray(c.pos, end);
  c.pos = end;
  return bytes;
}

function readString(c: Cursor): string {
  const end = readLength(c);
  const s = decodeUtf8(c.buf, c.pos, end);
  c.pos = end;
  return s;
}

function decodeUtf8(buf: Uint8Array, start: number, end: number): string {
  // Topics and ack levels are short ASCII; building them directly is cheaper than a TextDecoder call.
  if (end - start > 64) return utf8.decode(buf.subarray(start, end));
  let s = "";
  for (let i = start; i < end; i++) {
    const b = buf[i];
    if (b >= 0x80) return utf8.decode(buf.subarray(start, end));
    s += String.fromCharCode(b);
  }
  return s;
}

/** Topic names this long or shorter are remembered by readTopic (Kafka allows 249 characters). */
const MAX_REMEMBERED_TOPIC = 255;
/** The last topic read, as bytes and as a string. */
let lastTopicBytes = EMPTY;
let lastTopic = "";

/**
 * Reads a topic name. Records of a stream name the same topic over and over: the same bytes as the last time
 * give the same string back, which costs no string building, and lookups by topic (Sets, Maps) reuse its hash.
 */
function readTopic(c: Cursor): string {
  const end = readLength(c);
  const buf = c.buf, start = c.pos, n = end - start;
  c.pos = end;
  if (n === lastTopicBytes.byteLength) {
    let i = 0;
    while (i < n && buf[start + i] === lastTopicBytes[i]) i++;
    if (i === n) return lastTopic;
  }
  const s = decodeUtf8(buf, start, end);
  if (n <= MAX_REMEMBERED_TOPIC) {
    lastTopicBytes = buf.slice(start, end);
    lastTopic = s;
  }
  return s;
}

/** Skips one field of wire type `wireType` whose tag has been read. */
function skipField(c: Cursor, wireType: number, field: number): void {
  switch (wireType) {
    case VARINT:
      readVarint(c);
      return;
    case FIXED64:
      advance(c, 8);
      return;
    case LENGTH:
      c.pos = readLength(c);
      return;
    case FIXED32:
      advance(c, 4);
      return;
    case START_GROUP:
      for (;;) {
        const tag = readVarint(c) >>> 0;
        const wt = tag & 7;
        if (wt === END_GROUP) {
          if (tag >>> 3 !== field) throw new CodecError(`invalid end group for field ${field}`);
          return;
        }
        skipField(c, wt, tag >>> 3);
      }
  }
  throw new CodecError(`invalid wire type ${wireType} for field ${field}`);
}

function advance(c: Cursor, n: number): void {
  if (c.pos + n > c.end) throw truncated();
  c.pos += n;
}

function truncated(): CodecError {
  return new CodecError("truncated message");
}

function wrongType(message: string, field: number, wireType: number): CodecError {
  return new CodecError(`${message} field ${field}: unexpected wire type ${wireType}`);
}

function readTag(c: Cursor): number {
  const tag = readVarint(c) >>> 0;
  if (tag >>> 3 === 0) throw new CodecError("invalid field number 0");
  return tag;
}

/** Decodes a ProdRq; throws CodecError on malformed input. */
export function decodeProdRq(buf: Uint8Array): ProdRq {
  const c = new Cursor(buf, 0, buf.byteLength);
  const rq: ProdRq = { topic: "", message: EMPTY, streamOffset: 0n, ack: "", headers: NO_HEADERS };
  while (c.pos < c.end) {
    const tag = readTag(c);
    const field = tag >>> 3, wt = tag & 7;
    switch (field) {
      case 1:
        if (wt !== LENGTH) throw wrongType("ProdRq", field, wt);
        rq.topic = readTopic(c);
        break;
      case 2:
        if (wt !== LENGTH) throw wrongType("ProdRq", field, wt);
        rq.message = readBytes(c);
        break;
      case 3:
        if (wt !== VARINT) throw wrongType("ProdRq", field, wt);
        rq.streamOffset = readUint64(c);
        break;
      case 4:
        if (wt !== LENGTH) throw wrongType("ProdRq", field, wt);
        rq.ack = readString(c);
        break;
      case 5:
        if (wt !== LENGTH) throw wrongType("ProdRq", field, wt);
        rq.key = readBytes(c);
        break;
      case 6: {
        if (wt !== LENGTH) throw wrongType("ProdRq", field, wt);
        const end = readLength(c);
        const header = decodeHeader(new Cursor(buf, c.pos, end));
        if (rq.headers === NO_HEADERS) rq.headers = [header];
        else (rq.headers as Header[]).push(header);
        c.pos = end;
        break;
      }
      case 7:
        if (wt !== VARINT) throw wrongType("ProdRq", field, wt);
        rq.partition = readVarint(c);
        break;
      default:
        skipField(c, wt, field);
    }
  }
  return rq;
}

function decodeHeader(c: Cursor): Header {
  const h: Header = { key: "", value: EMPTY };
  while (c.pos < c.end) {
    const tag = readTag(c);
    const field = tag >>> 3, wt = tag & 7;
    if (field === 1) {
      if (wt !== LENGTH) throw wrongType("Header", field, wt);
      // A Kafka header key is a string: one that is not UTF-8 would reach Kafka rewritten, so it is refused, as
      // protobuf refuses a string field that is not (and the Go service's call failed on it).
      const end = readLength(c);
      try {
        h.key = strictUtf8.decode(c.buf.subarray(c.pos, end));
      } catch {
        throw new CodecError("Header.key is not valid UTF-8");
      }
      c.pos = end;
    } else if (field === 2) {
      if (wt !== LENGTH) throw wrongType("Header", field, wt);
      h.value = readBytes(c);
    } else {
      skipField(c, wt, field);
    }
  }
  return h;
}

/** Decodes a ProdRs (clients, tests and benchmarks use it); throws CodecError on malformed input. */
export function decodeProdRs(buf: Uint8Array): ProdRs {
  const c = new Cursor(buf, 0, buf.byteLength);
  const rs: ProdRs = { streamOffset: 0n, error: "", code: 0 };
  while (c.pos < c.end) {
    const tag = readTag(c);
    const field = tag >>> 3, wt = tag & 7;
    switch (field) {
      case 3:
        if (wt !== VARINT) throw wrongType("ProdRs", field, wt);
        rs.streamOffset = readUint64(c);
        break;
      case 4:
        if (wt !== LENGTH) throw wrongType("ProdRs", field, wt);
        rs.error = readString(c);
        break;
      case 5:
        if (wt !== VARINT) throw wrongType("ProdRs", field, wt);
        rs.code = readVarint(c);
        break;
      case 6:
        if (wt !== VARINT) throw wrongType("ProdRs", field, wt);
        rs.partition = readVarint(c);
        break;
      case 7:
        if (wt !== VARINT) throw wrongType("ProdRs", field, wt);
        rs.offset = BigInt.asIntN(64, readUint64(c));
        break;
      default:
        skipField(c, wt, field);
    }
  }
  return rs;
}

/** A growable output buffer for the encoders. */
class Writer {
  buf: Uint8Array;
  pos = 0;
  constructor(size: number) {
    this.buf = new Uint8Array(size);
  }

  reserve(n: number): void {
    if (this.pos + n <= this.buf.byteLength) return;
    const bigger = new Uint8Array(Math.max(this.buf.byteLength * 2, this.pos + n));
    bigger.set(this.buf.subarray(0, this.pos));
    this.buf = bigger;
  }

  /** A varint of the unsigned 32-bit value `v`. */
  varint32(v: number): void {
    this.reserve(5);
    const buf = this.buf;
    v >>>= 0;
    while (v > 0x7f) {
      buf[this.pos++] = (v & 0x7f) | 0x80;
      v >>>= 7;
    }
    buf[this.pos++] = v;
  }

  /** A varint of the 64-bit value given as two unsigned 32-bit halves. */
  varint64(lo: number, hi: number): void {
    if (hi === 0) return this.varint32(lo);
    this.reserve(10);
    const buf = this.buf;
    lo >>>= 0;
    hi >>>= 0;
    while (hi > 0 || lo > 0x7f) {
      buf[this.pos++] = (lo & 0x7f) | 0x80;
      lo = ((lo >>> 7) | (hi << 25)) >>> 0;
      hi >>>= 7;
    }
    buf[this.pos++] = lo;
  }

  /** An int32 varint: negative values take 10 bytes, sign-extended, as protobuf wants. */
  int32(v: number): void {
    if (v >= 0) this.varint32(v);
    else this.varint64(v >>> 0, 0xffffffff);
  }

  /** A 64-bit integer (two's complement for negative values). */
  int64(v: bigint): void {
    if (v >= 0n && v <= 0xffffffffn) return this.varint32(Number(v)); // most values, without a new BigInt
    const u = BigInt.asUintN(64, v);
    if (u <= 0xffffffffn) this.varint32(Number(u));
    else this.varint64(Number(u & 0xffffffffn), Number(u >> 32n));
  }

  bytes(b: Uint8Array): void {
    this.varint32(b.byteLength);
    this.reserve(b.byteLength);
    this.buf.set(b, this.pos);
    this.pos += b.byteLength;
  }

  string(s: string): void {
    // ASCII needs no encoder; the length is the byte count.
    if (s.length < 128) {
      let ascii = true;
      for (let i = 0; i < s.length; i++) {
        if (s.charCodeAt(i) >= 0x80) {
          ascii = false;
          break;
        }
      }
      if (ascii) {
        this.varint32(s.length);
        this.reserve(s.length);
        const buf = this.buf;
        for (let i = 0; i < s.length; i++) buf[this.pos++] = s.charCodeAt(i);
        return;
      }
    }
    this.bytes(utf8Encoder.encode(s));
  }

  tag(field: number, wireType: number): void {
    this.varint32((field << 3) | wireType);
  }

  finish(): Uint8Array {
    return this.buf.subarray(0, this.pos);
  }
}

/** Encodes a ProdRs; fields at their proto3 default are left out, optional ones are written when set. */
export function encodeProdRs(rs: ProdRs): Uint8Array {
  const w = new Writer(16 + (rs.error.length === 0 ? 0 : rs.error.length * 3 + 5));
  writeProdRs(w, rs.streamOffset, rs.code, rs.error, rs.partition, rs.offset);
  return w.finish();
}

/**
 * ProdRs messages framed back to back (each after its 5-byte gRPC prefix), written from their fields, ready for
 * one write: one buffer for a turn's replies, without a ProdRs object per reply or a copy to frame them.
 */
export class FramedProdRs {
  readonly #w: Writer;
  #count = 0;

  /** @param expected replies to make room for at first (the buffer grows past them) */
  constructor(expected: number) {
    this.#w = new Writer(expected * 16 + 16);
  }

  /** Appends one reply, as encodeProdRs would encode it. */
  add(streamOffset: bigint, code: number, error: string, partition?: number, offset?: bigint): void {
    const w = this.#w;
    w.reserve(PREFIX_BYTES);
    const at = w.pos;
    w.pos += PREFIX_BYTES;
    writeProdRs(w, streamOffset, code, error, partition, offset);
    const n = w.pos - at - PREFIX_BYTES;
    const buf = w.buf; // read after writing: the writer may have grown
    buf[at] = 0;
    buf[at + 1] = n >>> 24;
    buf[at + 2] = (n >>> 16) & 0xff;
    buf[at + 3] = (n >>> 8) & 0xff;
    buf[at + 4] = n & 0xff;
    this.#count++;
  }

  /** Replies written so far. */
  get count(): number {
    return this.#count;
  }

  finish(): Uint8Array {
    return this.#w.finish();
  }
}

function writeProdRs(
  w: Writer,
  streamOffset: bigint,
  code: number,
  error: string,
  partition: number | undefined,
  offset: bigint | undefined,
): void {
  if (streamOffset !== 0n) {
    w.tag(3, VARINT);
    w.int64(streamOffset);
  }
  if (error.length > 0) {
    w.tag(4, LENGTH);
    w.string(error);
  }
  if (code !== 0) {
    w.tag(5, VARINT);
    w.int32(code);
  }
  if (partition !== undefined) {
    w.tag(6, VARINT);
    w.int32(partition);
  }
  if (offset !== undefined) {
    w.tag(7, VARINT);
    w.int64(offset);
  }
}

/** Encodes a ProdRq (clients, tests and benchmarks use it). */
export function encodeProdRq(rq: ProdRq): Uint8Array {
  const w = new Writer(32 + rq.topic.length + rq.message.byteLength);
  if (rq.topic.length > 0) {
    w.tag(1, LENGTH);
    w.string(rq.topic);
  }
  if (rq.message.byteLength > 0) {
    w.tag(2, LENGTH);
    w.bytes(rq.message);
  }
  if (rq.streamOffset !== 0n) {
    w.tag(3, VARINT);
    w.int64(rq.streamOffset);
  }
  if (rq.ack.length > 0) {
    w.tag(4, LENGTH);
    w.string(rq.ack);
  }
  if (rq.key !== undefined) {
    w.tag(5, LENGTH);
    w.bytes(rq.key);
  }
  for (const h of rq.headers) {
    const sub = new Writer(8 + h.key.length + h.value.byteLength);
    if (h.key.length > 0) {
      sub.tag(1, LENGTH);
      sub.string(h.key);
    }
    if (h.value.byteLength > 0) {
      sub.tag(2, LENGTH);
      sub.bytes(h.value);
    }
    w.tag(6, LENGTH);
    w.bytes(sub.finish());
  }
  if (rq.partition !== undefined) {
    w.tag(7, VARINT);
    w.int32(rq.partition);
  }
  return w.finish();
}
