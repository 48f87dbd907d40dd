/**
 * HTTP/2 frames written by hand over TCP, for peers that a real client library would not be (too many streams,
 * random frames). Headers are HPACK literals without indexing or Huffman coding, which every decoder takes.
 */
const encoder = new TextEncoder();

export const PREFACE = encoder.encode("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n");

export const FRAME = {
  DATA: 0,
  HEADERS: 1,
  RST_STREAM: 3,
  SETTINGS: 4,
  PING: 6,
  GOAWAY: 7,
  WINDOW_UPDATE: 8,
} as const;
export const FLAG = { END_STREAM: 0x1, ACK: 0x1, END_HEADERS: 0x4 } as const;

/** One frame: 9-byte header and payload. */
export function frame(type: number, flags: number, streamId: number, payload: Uint8Array): Uint8Array {
  const out = new Uint8Array(9 + payload.byteLength);
  const view = new DataView(out.buffer);
  view.setUint32(0, payload.byteLength << 8);
  out[3] = type;
  out[4] = flags;
  view.setUint32(5, streamId & 0x7fffffff);
  out.set(payload, 9);
  return out;
}

/** A SETTINGS frame with these (id, value) pairs. */
export function settingsFrame(settings: Array<[number, number]>): Uint8Array {
  const payload = new Uint8Array(6 * settings.length);
  const view = new DataView(payload.buffer);
  settings.forEach(([id, value], i) => {
    view.setUint16(6 * i, id);
    view.setUint32(6 * i + 2, value);
  });
  return frame(FRAME.SETTINGS, 0, 0, payload);
}

/** An HPACK block of `headers`, each a literal without indexing (RFC 7541 6.2.2), lengths under 127. */
export function hpack(headers: Array<[string, string]>): Uint8Array {
  const bytes: number[] = [];
  for (const [name, value] of headers) {
    const n = encoder.encode(name), v = encoder.encode(value);
    bytes.push(0, n.byteLength, ...n, v.byteLength, ...v);
  }
  return new Uint8Array(bytes);
}

/** The request headers of a gRPC call to `path` on `authority`. */
export function grpcHeaders(path: string, authority = "limits"): Uint8Array {
  return hpack([
    [":method", "POST"],
    [":scheme", "http"],
    [":path", path],
    [":authority", authority],
    ["content-type", "application/grpc"],
    ["te", "trailers"],
  ]);
}

/** A frame as read back: its type, flags, stream and payload. */
export interface Frame {
  type: number;
  flags: number;
  streamId: number;
  payload: Uint8Array;
}

/** Reads frames off `conn` (after the server's preface) until it closes; never throws. */
export async function* readFrames(conn: Deno.Conn): AsyncGenerator<Frame> {
  let buf = new Uint8Array(0);
  const chunk = new Uint8Array(64 * 1024);
  for (;;) {
    while (buf.byteLength >= 9) {
      const length = (buf[0] << 16) | (buf[1] << 8) | buf[2];
      if (buf.byteLength < 9 + length) break;
      const view = new DataView(buf.buffer, buf.byteOffset);
      yield {
        type: buf[3],
        flags: buf[4],
        streamId: view.getUint32(5) & 0x7fffffff,
        payload: buf.slice(9, 9 + length),
      };
      buf = buf.subarray(9 + length);
    }
    let n: number | null;
    try {
      n = await conn.read(chunk);
    } catch {
      return;
    }
    if (n === null) return;
    const next = new Uint8Array(buf.byteLength + n);
    next.set(buf);
    next.set(chunk.subarray(0, n), buf.byteLength);
    buf = next;
  }
}
