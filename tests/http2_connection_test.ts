/**
 * The HTTP/2 connection (src/server/http2/connection.ts) on a fake transport: the frames a client sends,
 * byte for byte, and the frames that come back. Each protocol error must end the connection with GOAWAY and its
 * code, or the stream with RST_STREAM; floods and peers that do not read are bounded.
 */
import assert from "node:assert/strict";
import { setImmediate } from "node:timers";
import { type ConnectionOptions, Http2Connection, type Transport } from "../src/server/http2/connection.ts";
import { ErrorCode, Flag, FrameType, Setting } from "../src/server/http2/frame.ts";
import type { Http2Stream } from "../src/server/http2/stream.ts";
import { FakeClock } from "./support/fake_clock.ts";
import { type Frame, frame, grpcHeaders, hpack, PREFACE, settingsFrame } from "./support/h2_raw.ts";

/** A transport that keeps what is written; `backlog` is what the fake kernel has not taken. */
class FakeTransport implements Transport {
  readonly written: Uint8Array[] = [];
  backlog = 0;
  paused = false;
  ended = false;

  write(bytes: Uint8Array): void {
    this.written.push(bytes);
  }
  get writableLength(): number {
    return this.backlog;
  }
  pause(): void {
    this.paused = true;
  }
  resume(): void {
    this.paused = false;
  }
  end(): void {
    this.ended = true;
  }
}

/** A connection under test, with the streams it opened and the frames it sent (taken once each). */
class Peer {
  readonly transport = new FakeTransport();
  readonly streams: Http2Stream[] = [];
  readonly conn: Http2Connection;
  #read = 0;

  constructor(opts: Partial<ConnectionOptions> = {}) {
    this.conn = new Http2Connection(this.transport, {
      maxConcurrentStreams: 100,
      maxSessionMemory: 1 << 20,
      maxHeaderListSize: 16 * 1024,
      onStream: (stream) => this.streams.push(stream),
      onClose: () => {},
      ...opts,
    });
  }

  /** Sends bytes as one read, and lets the connection write. */
  async send(...chunks: Uint8Array[]): Promise<void> {
    const all = new Uint8Array(chunks.reduce((n, c) => n + c.byteLength, 0));
    let at = 0;
    for (const c of chunks) {
      all.set(c, at);
      at += c.byteLength;
    }
    this.conn.receive(all);
    await turn();
  }

  /** Preface and SETTINGS (with `settings`), and our ACK of the server's SETTINGS; the replies are read. */
  async open(settings: Array<[number, number]> = []): Promise<Frame[]> {
    await this.send(
      PREFACE,
      settingsFrame(settings),
      frame(FrameType.SETTINGS, Flag.ACK, 0, new Uint8Array()),
    );
    return this.frames();
  }

  /** The frames written since the last call. */
  frames(): Frame[] {
    const out: Frame[] = [];
    for (const bytes of this.transport.written.slice(this.#read)) {
      let at = 0;
      while (at < bytes.byteLength) {
        const length = (bytes[at] << 16) | (bytes[at + 1] << 8) | bytes[at + 2];
        const view = new DataView(bytes.buffer, bytes.byteOffset + at);
        out.push({
          type: bytes[at + 3],
          flags: bytes[at + 4],
          streamId: view.getUint32(5) & 0x7fffffff,
          payload: bytes.slice(at + 9, at + 9 + length),
        });
        at += 9 + length;
      }
    }
    this.#read = this.transport.written.length;
    return out;
  }

  /** The GOAWAY error code sent since the last read, or undefined; the transport must then be ended. */
  goaway(): number | undefined {
    const g = this.frames().find((f) => f.type === FrameType.GOAWAY);
    if (g === undefined) return undefined;
    assert.ok(this.transport.ended, "the connection ends after GOAWAY");
    return new DataView(g.payload.buffer).getUint32(4);
  }
}

const turn = () => new Promise<void>((resolve) => setImmediate(resolve));

const u32 = (n: number) => {
  const b = new Uint8Array(4);
  new DataView(b.buffer).setUint32(0, n);
  return b;
};

const headers = (id: number, flags = 0) =>
  frame(FrameType.HEADERS, Flag.END_HEADERS | flags, id, grpcHeaders("/x/Y"));
const rstOf = (f: Frame[], id: number) =>
  f.filter((x) => x.type === FrameType.RST_STREAM && x.streamId === id).map((x) =>
    new DataView(x.payload.buffer).getUint32(0)
  );

Deno.test("http2: SETTINGS both ways, a request in, headers, data and trailers out in one write", async () => {
  const peer = new Peer();
  const first = await peer.open();
  const settings = first.find((f) => f.type === FrameType.SETTINGS && f.flags === 0)!;
  const view = new DataView(settings.payload.buffer);
  const advertised = new Map<number, number>();
  for (let at = 0; at < settings.payload.byteLength; at += 6) {
    advertised.set(view.getUint16(at), view.getUint32(at + 2));
  }
  assert.equal(advertised.get(Setting.MAX_CONCURRENT_STREAMS), 100);
  assert.equal(advertised.get(Setting.MAX_HEADER_LIST_SIZE), 16 * 1024);
  assert.ok(first.some((f) => f.type === FrameType.SETTINGS && f.flags === Flag.ACK), "our SETTINGS acked");

  const data = new Uint8Array([1, 2, 3]);
  await peer.send(headers(1), frame(FrameType.DATA, Flag.END_STREAM, 1, data));
  const [stream] = peer.streams;
  assert.equal(stream.header(":path"), "/x/Y");
  const got: Uint8Array[] = [];
  let ended = false, closed: boolean | undefined;
  // DATA and END_STREAM came in the same read as HEADERS: held until the owner attaches.
  stream.attach({
    onData: (c) => got.push(c),
    onEnd: () => ended = true,
    onClose: (reset) => closed = reset,
  });
  assert.deepEqual(got, [data]);
  assert.equal(ended, true);

  const before = peer.transport.written.length;
  stream.respond([[":status", "200"], ["content-type", "application/grpc"]]);
  stream.write(new Uint8Array(10));
  stream.end([["grpc-status", "0"]]);
  await turn();
  assert.equal(peer.transport.written.length, before + 1, "one write");
  const out = peer.frames();
  assert.deepEqual(out.map((f) => [f.type, f.flags, f.streamId]), [
    [FrameType.HEADERS, Flag.END_HEADERS, 1],
    [FrameType.DATA, 0, 1],
    [FrameType.HEADERS, Flag.END_HEADERS | Flag.END_STREAM, 1],
  ]);
  assert.equal(closed, false, "both sides ended: closed without a reset");
  assert.equal(peer.conn.streamCount, 0);
});

Deno.test("http2: response DATA waits for the client's windows, and trailers wait for the DATA", async () => {
  const peer = new Peer();
  await peer.open([[Setting.INITIAL_WINDOW_SIZE, 10]]);
  await peer.send(headers(1, Flag.END_STREAM));
  const [stream] = peer.streams;
  let drained = 0;
  stream.attach({ onDrain: () => drained++ });
  stream.respond([[":status", "200"]]);
  stream.write(new Uint8Array(25));
  stream.end([["grpc-status", "0"]]);
  await turn();
  const dataLength = (f: Frame[]) =>
    f.filter((x) => x.type === FrameType.DATA).map((x) => x.payload.byteLength);
  let out = peer.frames();
  assert.deepEqual(dataLength(out), [10]);
  assert.equal(stream.bufferedBytes, 15);
  assert.equal(out.filter((f) => f.type === FrameType.HEADERS).length, 1, "no trailers yet");
  await peer.send(frame(FrameType.WINDOW_UPDATE, 0, 1, u32(5)));
  assert.deepEqual(dataLength(peer.frames()), [5]);
  await peer.send(frame(FrameType.WINDOW_UPDATE, 0, 1, u32(100)));
  out = peer.frames();
  assert.deepEqual(dataLength(out), [10]);
  assert.equal(
    out.filter((f) => f.type === FrameType.HEADERS && (f.flags & Flag.END_STREAM) !== 0).length,
    1,
  );
  assert.equal(drained, 1, "onDrain once the queue is empty");
});

Deno.test("http2: a response ended without trailers ends with an empty DATA frame, once its DATA is out", async () => {
  const peer = new Peer();
  await peer.open([[Setting.INITIAL_WINDOW_SIZE, 0]]);
  await peer.send(headers(1, Flag.END_STREAM));
  const [stream] = peer.streams;
  stream.respond([[":status", "415"]]);
  stream.write(new Uint8Array(4));
  stream.end([]);
  await turn();
  const ends = (f: Frame[]) => f.filter((x) => (x.flags & Flag.END_STREAM) !== 0).map((x) => x.type);
  assert.deepEqual(ends(peer.frames()), [], "held by a zero window: the stream stays open");
  assert.equal(peer.conn.streamCount, 1);
  await peer.send(frame(FrameType.WINDOW_UPDATE, 0, 1, u32(4)));
  const out = peer.frames();
  assert.deepEqual(ends(out), [FrameType.DATA]);
  assert.deepEqual(out.filter((f) => f.type === FrameType.DATA).map((f) => f.payload.byteLength), [4, 0]);
  assert.equal(out.filter((f) => f.type === FrameType.HEADERS).length, 0, "no trailer HEADERS frame");
  assert.equal(peer.conn.streamCount, 0);
});

Deno.test("http2: a paused stream opens no window; resuming delivers and opens it", async () => {
  const peer = new Peer({ maxSessionMemory: 64 * 1024 });
  await peer.open();
  await peer.send(headers(1));
  const [stream] = peer.streams;
  const got: number[] = [];
  stream.attach({ onData: (c) => got.push(c.byteLength) });
  stream.pause();
  // The stream window is the whole 64 KiB: three DATA frames of 16 KiB, then the window is full.
  const chunk = new Uint8Array(16 * 1024);
  await peer.send(...[1, 2, 3].map(() => frame(FrameType.DATA, 0, 1, chunk)));
  assert.deepEqual(got, []);
  assert.equal(peer.frames().filter((f) => f.type === FrameType.WINDOW_UPDATE).length, 0);
  stream.resume();
  await turn();
  assert.deepEqual(got, [16384, 16384, 16384]);
  const updates = peer.frames().filter((f) => f.type === FrameType.WINDOW_UPDATE).map((f) => f.streamId);
  assert.deepEqual(updates.sort(), [0, 1], "connection and stream windows reopened");
  // More than the stream's window (1 MiB, 64 frames) is a FLOW_CONTROL_ERROR on the stream, within the
  // connection's window.
  const peer2 = new Peer({ maxSessionMemory: 4 << 20 });
  await peer2.open();
  await peer2.send(headers(1));
  await peer2.send(...Array.from({ length: 65 }, () => frame(FrameType.DATA, 0, 1, chunk)));
  const out = peer2.frames();
  assert.deepEqual(rstOf(out, 1), [ErrorCode.FLOW_CONTROL_ERROR]);
  // DATA of a stream that ends before it is read is given back to the connection's window.
  const peer3 = new Peer({ maxSessionMemory: 64 * 1024 });
  await peer3.open();
  await peer3.send(headers(1), ...[1, 2, 3].map(() => frame(FrameType.DATA, 0, 1, chunk)));
  peer3.streams[0].reset(ErrorCode.CANCEL);
  await turn();
  const credit = peer3.frames().filter((f) => f.type === FrameType.WINDOW_UPDATE && f.streamId === 0);
  assert.deepEqual(credit.map((f) => new DataView(f.payload.buffer).getUint32(0)), [3 * 16384]);
});

Deno.test("http2: protocol errors end the connection with GOAWAY and their code", async () => {
  const cases: Array<[string, Uint8Array[], number]> = [
    ["a frame over 16 KiB", [frame(FrameType.DATA, 0, 1, new Uint8Array(16385))], ErrorCode.FRAME_SIZE_ERROR],
    ["PING of 7 bytes", [frame(FrameType.PING, 0, 0, new Uint8Array(7))], ErrorCode.FRAME_SIZE_ERROR],
    ["SETTINGS of 5 bytes", [frame(FrameType.SETTINGS, 0, 0, new Uint8Array(5))], ErrorCode.FRAME_SIZE_ERROR],
    ["DATA on stream 0", [frame(FrameType.DATA, 0, 0, new Uint8Array(1))], ErrorCode.PROTOCOL_ERROR],
    ["DATA on an idle stream", [frame(FrameType.DATA, 0, 5, new Uint8Array(1))], ErrorCode.PROTOCOL_ERROR],
    ["an even stream id", [headers(2)], ErrorCode.PROTOCOL_ERROR],
    ["a stream id lower than the last", [headers(5), headers(3)], ErrorCode.STREAM_CLOSED],
    ["HEADERS on a half-closed stream", [headers(1, Flag.END_STREAM), headers(1)], ErrorCode.STREAM_CLOSED],
    [
      "a frame inside a header block",
      [frame(FrameType.HEADERS, 0, 1, grpcHeaders("/x/Y")), frame(FrameType.PING, 0, 0, new Uint8Array(8))],
      ErrorCode.PROTOCOL_ERROR,
    ],
    ["CONTINUATION alone", [frame(FrameType.CONTINUATION, Flag.END_HEADERS, 1, new Uint8Array())], 1],
    ["a bad HPACK index", [frame(FrameType.HEADERS, Flag.END_HEADERS, 1, Uint8Array.of(0xff, 0x7f))], 9],
    ["WINDOW_UPDATE of 0 on the connection", [frame(FrameType.WINDOW_UPDATE, 0, 0, u32(0))], 1],
    [
      "the connection window over 2^31-1",
      [frame(FrameType.WINDOW_UPDATE, 0, 0, u32(0x7fffffff))],
      ErrorCode.FLOW_CONTROL_ERROR,
    ],
    ["INITIAL_WINDOW_SIZE over 2^31-1", [settingsFrame([[Setting.INITIAL_WINDOW_SIZE, 2 ** 31]])], 3],
    ["ENABLE_PUSH 2", [settingsFrame([[Setting.ENABLE_PUSH, 2]])], ErrorCode.PROTOCOL_ERROR],
    ["PUSH_PROMISE from a client", [frame(FrameType.PUSH_PROMISE, 0, 1, new Uint8Array(4))], 1],
    ["DATA beyond the connection window", [headers(1), ...bigData(1, 5)], ErrorCode.FLOW_CONTROL_ERROR],
  ];
  for (const [what, chunks, code] of cases) {
    // A connection window of 64 KiB: the default, so that five 16 KiB DATA frames overrun it.
    const peer = new Peer({ maxSessionMemory: 65_535 });
    await peer.open();
    peer.conn.receive(concat(chunks)); // must not throw
    await turn();
    assert.equal(peer.goaway(), code, what);
  }
  // A bad preface: GOAWAY, and nothing more is read.
  const bad = new Peer();
  await bad.send(new TextEncoder().encode("GET / HTTP/1.1\r\nHost: x\r\n\r\n"));
  assert.equal(bad.goaway(), ErrorCode.PROTOCOL_ERROR);
});

function bigData(id: number, n: number): Uint8Array[] {
  return Array.from({ length: n }, () => frame(FrameType.DATA, 0, id, new Uint8Array(16 * 1024)));
}

function concat(chunks: Uint8Array[]): Uint8Array {
  const out = new Uint8Array(chunks.reduce((n, c) => n + c.byteLength, 0));
  let at = 0;
  for (const c of chunks) {
    out.set(c, at);
    at += c.byteLength;
  }
  return out;
}

Deno.test("http2: malformed requests reset their stream; the connection goes on", async () => {
  const peer = new Peer({ maxHeaderListSize: 1024 });
  await peer.open();
  const requests: Array<[string, Array<[string, string]>]> = [
    ["no :path", [[":method", "POST"], [":scheme", "http"]]],
    ["upper-case name", [[":method", "POST"], [":scheme", "http"], [":path", "/a"], ["X-Id", "1"]]],
    ["connection header", [[":method", "POST"], [":scheme", "http"], [":path", "/a"], [
      "connection",
      "close",
    ]]],
    ["pseudo after regular", [[":method", "POST"], [":scheme", "http"], ["a", "b"], [":path", "/a"]]],
    ...[["x\0y", "1"], ["", "1"], ["x y", "1"], ["x:y", "1"], ["x\u00e9", "1"]].map((
      field,
    ): [string, Array<[string, string]>] => [`name ${JSON.stringify(field[0])}`, [
      [":method", "POST"],
      [":scheme", "http"],
      [":path", "/a"],
      field as [string, string],
    ]]),
    ...["a\0b", "a\rb", "a\nb"].map((value): [string, Array<[string, string]>] => [
      `value ${JSON.stringify(value)}`,
      [[":method", "POST"], [":scheme", "http"], [":path", "/a"], ["x-id", value]],
    ]),
    ["te: gzip", [[":method", "POST"], [":scheme", "http"], [":path", "/a"], ["te", "gzip"]]],
    ["a header list over 1024 bytes", [
      [":method", "POST"],
      [":scheme", "http"],
      [":path", "/a"],
      ["a", "x".repeat(100)],
      ["b", "x".repeat(100)],
      ["c", "x".repeat(100)],
      ["d", "x".repeat(100)],
      ["e", "x".repeat(100)],
      ["f", "x".repeat(100)],
      ["g", "x".repeat(100)],
      ["h", "x".repeat(100)],
    ]],
  ];
  let id = 1;
  for (const [what, fields] of requests) {
    await peer.send(frame(FrameType.HEADERS, Flag.END_HEADERS, id, hpack(fields)));
    assert.deepEqual(rstOf(peer.frames(), id), [ErrorCode.PROTOCOL_ERROR], what);
    id += 2;
  }
  assert.equal(peer.streams.length, 0);
  // content-length that the DATA does not match.
  await peer.send(
    frame(
      FrameType.HEADERS,
      Flag.END_HEADERS,
      id,
      hpack([[":method", "POST"], [":scheme", "http"], [":path", "/a"], ["content-length", "2"]]),
    ),
    frame(FrameType.DATA, Flag.END_STREAM, id, new Uint8Array(3)),
  );
  assert.deepEqual(rstOf(peer.frames(), id), [ErrorCode.PROTOCOL_ERROR]);
  // The connection still serves.
  await peer.send(headers(id + 2, Flag.END_STREAM));
  assert.equal(peer.streams.length, 2);
  assert.equal(peer.goaway(), undefined);
});

Deno.test("http2: MAX_CONCURRENT_STREAMS: REFUSED_STREAM before the client's ACK, GOAWAY after", async () => {
  const early = new Peer({ maxConcurrentStreams: 2 });
  // No ACK of our SETTINGS yet: the client may not have seen the limit.
  await early.send(PREFACE, settingsFrame([]), headers(1), headers(3), headers(5));
  assert.deepEqual(rstOf(early.frames(), 5), [ErrorCode.REFUSED_STREAM]);
  assert.equal(early.streams.length, 2);

  const late = new Peer({ maxConcurrentStreams: 2 });
  await late.open();
  await late.send(headers(1), headers(3), headers(5));
  const out = late.frames();
  const goaway = out.find((f) => f.type === FrameType.GOAWAY)!;
  const view = new DataView(goaway.payload.buffer);
  assert.deepEqual(
    [view.getUint32(0), view.getUint32(4)],
    [3, ErrorCode.PROTOCOL_ERROR],
    "last stream taken: 3",
  );
  assert.deepEqual(late.streams.map((s) => s.closed), [true, true], "the open streams are over");
});

Deno.test("http2: the DATA of many streams refused before the client had our SETTINGS is ignored, not an error", async () => {
  const peer = new Peer({ maxConcurrentStreams: 128 });
  // 3,000 streams' HEADERS, then their DATA, before the client could have seen the limit (as a client that opens
  // all its calls at once does): 128 taken, 2,872 refused, and the DATA of the refused ones ignored.
  const ids = Array.from({ length: 3000 }, (_, i) => 2 * i + 1);
  await peer.send(PREFACE, settingsFrame([]), ...ids.map((id) => headers(id)));
  await peer.send(...ids.map((id) => frame(FrameType.DATA, Flag.END_STREAM, id, new Uint8Array(5))));
  const out = peer.frames();
  assert.equal(out.find((f) => f.type === FrameType.GOAWAY), undefined);
  assert.equal(peer.streams.length, 128);
  assert.equal(ids.filter((id) => rstOf(out, id)[0] === ErrorCode.REFUSED_STREAM).length, 2872);
  assert.ok(peer.streams.every((s) => !s.closed), "the streams taken go on");
});

Deno.test("http2: floods of frames that do nothing, or make us reset streams: ENHANCE_YOUR_CALM", async () => {
  const floods: Array<[string, (i: number) => Uint8Array]> = [
    ["rapid reset", (i) => concat([headers(2 * i + 1), frame(FrameType.RST_STREAM, 0, 2 * i + 1, u32(8))])],
    ["PING", () => frame(FrameType.PING, 0, 0, new Uint8Array(8))],
    ["PING ACK", () => frame(FrameType.PING, Flag.ACK, 0, new Uint8Array(8))],
    ["SETTINGS", () => settingsFrame([])],
    ["SETTINGS ACK", () => frame(FrameType.SETTINGS, Flag.ACK, 0, new Uint8Array())],
    ["empty DATA", () => frame(FrameType.DATA, 0, 1, new Uint8Array())],
    ["unknown frame types", () => frame(0x20, 0, 0, new Uint8Array(8))],
    ["GOAWAY", () => frame(FrameType.GOAWAY, 0, 0, new Uint8Array(8))],
    // Stream 1 is open throughout; stream id 1 + 2i + 2 is opened, then made to be reset by us.
    [
      "resets we are made to send",
      (i) => concat([headers(2 * i + 3), frame(FrameType.WINDOW_UPDATE, 0, 2 * i + 3, u32(0))]),
    ],
    [
      "WINDOW_UPDATE on a closed stream",
      (i) =>
        concat([
          ...(i === 1 ? [headers(3), frame(FrameType.RST_STREAM, 0, 3, u32(8))] : []),
          frame(FrameType.WINDOW_UPDATE, 0, 3, u32(1)),
        ]),
    ],
  ];
  for (const [what, make] of floods) {
    const clock = new FakeClock();
    // Streams enough for a burst of resets in one read (they are let go as the reset goes out).
    const peer = new Peer({ clock, maxConcurrentStreams: 100_000 });
    await peer.open();
    await peer.send(headers(1));
    // 900 now, 900 more 5 s later (the bucket refilled at 200 a second): within bounds; 900 more at once: not.
    const burst = (from: number) => concat(Array.from({ length: 900 }, (_, i) => make(from + i + 1)));
    await peer.send(burst(0));
    assert.equal(peer.goaway(), undefined, `${what}: 900 in a burst`);
    clock.advance(5000);
    await peer.send(burst(900));
    assert.equal(peer.goaway(), undefined, `${what}: 900 more after 5 s`);
    await peer.send(burst(1800));
    assert.equal(peer.goaway(), ErrorCode.ENHANCE_YOUR_CALM, what);
  }
  // A header block that never ends: bounded by the header list size, not by the frame count.
  const peer = new Peer({ maxHeaderListSize: 4096 });
  await peer.open();
  const piece = frame(FrameType.CONTINUATION, 0, 1, new Uint8Array(1000).fill(0x40));
  await peer.send(
    frame(FrameType.HEADERS, 0, 1, new Uint8Array()),
    ...Array.from({ length: 10 }, () => piece),
  );
  assert.equal(peer.goaway(), ErrorCode.ENHANCE_YOUR_CALM);
});

Deno.test("http2: resets of streams we answered are no flood (grpc-go cancels a stream once it has its answer)", async () => {
  const peer = new Peer({ clock: new FakeClock() });
  await peer.open();
  for (let i = 0; i < 3000; i++) {
    const id = 2 * i + 1;
    await peer.send(headers(id));
    const stream = peer.streams[peer.streams.length - 1];
    stream.respond([[":status", "200"], ["content-type", "application/grpc"]]);
    stream.write(new Uint8Array(10));
    await turn();
    await peer.send(frame(FrameType.RST_STREAM, 0, id, u32(ErrorCode.CANCEL)));
  }
  assert.equal(peer.goaway(), undefined);
});

Deno.test("http2: a header value with white space at its ends is taken, as grpc-go takes it", async () => {
  const peer = new Peer();
  await peer.open();
  const fields: Array<[string, string]> = [[":method", "POST"], [":scheme", "http"], [":path", "/a"], [
    "x-id",
    " a ",
  ]];
  await peer.send(frame(FrameType.HEADERS, Flag.END_HEADERS, 1, hpack(fields)));
  assert.deepEqual(rstOf(peer.frames(), 1), []);
  assert.equal(peer.streams.length, 1);
});

Deno.test("http2: a PING after each DATA we send is no flood (grpc-go clients measure bandwidth that way)", async () => {
  const peer = new Peer({ clock: new FakeClock() });
  await peer.open();
  await peer.send(headers(1));
  const [stream] = peer.streams;
  stream.respond([[":status", "200"], ["content-type", "application/grpc"]]);
  for (let i = 0; i < 3000; i++) {
    stream.write(new Uint8Array(10));
    await turn();
    await peer.send(frame(FrameType.PING, 0, 0, new Uint8Array(8)));
  }
  const acks = peer.frames().filter((f) => f.type === FrameType.PING && f.flags === Flag.ACK);
  assert.equal(peer.goaway(), undefined);
  assert.equal(acks.length, 3000);
  // PINGs with no DATA between them still count.
  await peer.send(concat(Array.from({ length: 1100 }, () => frame(FrameType.PING, 0, 0, new Uint8Array(8)))));
  assert.equal(peer.goaway(), ErrorCode.ENHANCE_YOUR_CALM);
});

Deno.test("http2: header blocks of references to one large table entry are refused, and cost their size: a flood", async () => {
  const peer = new Peer({ clock: new FakeClock(), maxHeaderListSize: 16 * 1024 });
  await peer.open();
  // A 4,000-byte field into the dynamic table (literal with incremental indexing, new name; 4000 = 127 + 3873).
  const value = new Uint8Array(4000).fill(0x76);
  const entry = concat([
    new Uint8Array([0x40, 5]),
    new TextEncoder().encode("x-big"),
    new Uint8Array([0x7f, 3873 & 0x7f | 0x80, 3873 >> 7]),
    value,
  ]);
  await peer.send(frame(FrameType.HEADERS, Flag.END_HEADERS, 1, concat([grpcHeaders("/x/Y"), entry])));
  assert.equal(peer.streams.length, 1);
  // Then blocks of 30,000 one-byte references to it (index 62, the newest): 120 MB of header list each.
  const refs = new Uint8Array(30_000).fill(0x80 | 62);
  const bomb = (id: number) =>
    concat([
      frame(FrameType.HEADERS, 0, id, refs.subarray(0, 16384)),
      frame(FrameType.CONTINUATION, Flag.END_HEADERS, id, refs.subarray(16384)),
    ]);
  let refused = 0;
  for (let id = 3; id < 3 + 2 * 100 && peer.goaway() === undefined; id += 2) {
    await peer.send(bomb(id));
    refused++;
  }
  assert.equal(peer.streams.length, 1, "no bomb became a stream");
  assert.ok(refused < 50, `GOAWAY after ${refused} blocks`);
  assert.equal(peer.conn.streamCount, 0);
});

Deno.test("http2: SETTINGS with many INITIAL_WINDOW_SIZE entries apply the last one once", async () => {
  const peer = new Peer();
  await peer.open();
  await peer.send(headers(1, Flag.END_STREAM));
  const [stream] = peer.streams;
  const entries = Array.from(
    { length: 2730 },
    (_, i): [number, number] => [Setting.INITIAL_WINDOW_SIZE, 65535 + i],
  );
  await peer.send(settingsFrame(entries));
  assert.equal(stream.sendWindow, 65535 + 2729);
  stream.respond([[":status", "200"]]);
  stream.write(new Uint8Array(70_000));
  await turn();
  const data = peer.frames().filter((f) => f.type === FrameType.DATA).map((f) => f.payload.byteLength);
  assert.equal(data.reduce((a, b) => a + b, 0), 65535, "the connection's own window still bounds it");
  await peer.send(frame(FrameType.WINDOW_UPDATE, 0, 0, u32(10_000)));
  const more = peer.frames().filter((f) => f.type === FrameType.DATA).map((f) => f.payload.byteLength);
  assert.equal(
    more.reduce((a, b) => a + b, 0),
    2729, // the connection's window opened by 10,000; the stream's own has 2,729 left of its 68,264
    "what the stream's window allows, once the connection's opens",
  );
  assert.equal(peer.goaway(), undefined);
});

Deno.test("http2: a peer that does not read our output is not read either, until the output drains", async () => {
  const peer = new Peer({ maxSessionMemory: 100_000 });
  await peer.open();
  peer.transport.backlog = 200_000;
  await peer.send(frame(FrameType.PING, 0, 0, new Uint8Array(8)));
  assert.equal(peer.transport.paused, true);
  peer.transport.backlog = 0;
  peer.conn.drained();
  assert.equal(peer.transport.paused, false);
});

Deno.test("http2: a stream stays half-closed after our response; more DATA gets RST_STREAM NO_ERROR", async () => {
  const done: number[] = [];
  const peer = new Peer({ onStreamDone: (s) => done.push(s.id) });
  await peer.open();
  await peer.send(headers(1), headers(3));
  const [one, three] = peer.streams;
  for (const s of [one, three]) s.respond([[":status", "200"], ["grpc-status", "3"]], true);
  await turn();
  assert.deepEqual(peer.frames().map((f) => f.type), [FrameType.HEADERS, FrameType.HEADERS]);
  assert.deepEqual(done, [1, 3], "the exchanges are over for the owner");
  assert.deepEqual([one.closed, three.closed], [false, false], "half-closed (local)");
  // Frames on them still follow the rules of an open stream: a WINDOW_UPDATE past 2^31-1 resets the stream.
  await peer.send(frame(FrameType.WINDOW_UPDATE, 0, 3, u32(0x7fffffff)));
  assert.deepEqual(rstOf(peer.frames(), 3), [ErrorCode.FLOW_CONTROL_ERROR]);
  // More DATA: the client is told to stop, without an error; what it had in flight after that is ignored.
  await peer.send(frame(FrameType.DATA, 0, 1, new Uint8Array(10)));
  assert.deepEqual(rstOf(peer.frames(), 1), [ErrorCode.NO_ERROR]);
  assert.equal(one.closed, true);
  await peer.send(frame(FrameType.DATA, 0, 1, new Uint8Array(10)));
  assert.equal(peer.goaway(), undefined);
  assert.deepEqual(done, [1, 3], "reported once each");
});

Deno.test("http2: shutdown resets streams whose response is complete instead of waiting for the client", async () => {
  const peer = new Peer();
  await peer.open();
  await peer.send(headers(1));
  peer.streams[0].respond([[":status", "200"], ["grpc-status", "0"]], true);
  await turn();
  peer.frames();
  peer.conn.shutdown();
  await turn();
  assert.deepEqual(rstOf(peer.frames(), 1), [ErrorCode.NO_ERROR]);
  assert.equal(peer.transport.ended, true);
});

Deno.test("http2: shutdown: GOAWAY NO_ERROR, new streams refused, the end once the open ones are over", async () => {
  const peer = new Peer();
  await peer.open();
  await peer.send(headers(1, Flag.END_STREAM));
  peer.conn.shutdown();
  await turn();
  const goaway = peer.frames().find((f) => f.type === FrameType.GOAWAY)!;
  assert.deepEqual([...goaway.payload], [0, 0, 0, 1, 0, 0, 0, 0], "last stream 1, NO_ERROR");
  await peer.send(headers(3));
  assert.deepEqual(rstOf(peer.frames(), 3), [ErrorCode.REFUSED_STREAM]);
  assert.equal(peer.transport.ended, false, "stream 1 is still open");
  peer.streams[0].respond([[":status", "200"], ["grpc-status", "0"]], true);
  await turn();
  assert.equal(peer.transport.ended, true);
});

Deno.test("http2: random frames never throw out of receive", async () => {
  let seed = 42;
  const rand = (n: number) => {
    seed = (seed * 1103515245 + 12345) & 0x7fffffff;
    return seed % n;
  };
  for (let run = 0; run < 300; run++) {
    const peer = new Peer();
    await peer.open();
    const frames: Uint8Array[] = [];
    for (let i = 0; i < 20; i++) {
      const payload = Uint8Array.from({ length: rand(20) }, () => rand(256));
      const candidates = [payload, grpcHeaders("/a/B"), u32(rand(2 ** 31))];
      frames.push(frame(rand(11), rand(256), rand(8), candidates[rand(3)]));
    }
    assert.doesNotThrow(() => peer.conn.receive(concat(frames)), `run ${run}`);
    await turn();
  }
});
