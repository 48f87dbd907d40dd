/**
 * HTTP/2 frames (RFC 9113 section 4 and 6): the 9-byte header, the constants, and the writers of the frames a
 * server sends. Parsing is the connection's (connection.ts): it reads headers in place from its input buffer.
 *
 * Frame header: length (24 bits), type (8), flags (8), a reserved bit and the stream id (31).
 */

export const FRAME_HEADER_BYTES = 9;

/** Frame types (RFC 9113 6). */
export const FrameType = {
  DATA: 0x0,
  HEADERS: 0x1,
  PRIORITY: 0x2,
  RST_STREAM: 0x3,
  SETTINGS: 0x4,
  PUSH_PROMISE: 0x5,
  PING: 0x6,
  GOAWAY: 0x7,
  WINDOW_UPDATE: 0x8,
  CONTINUATION: 0x9,
} as const;

/** Flags; END_STREAM and ACK share a bit, on different frame types. */
export const Flag = { END_STREAM: 0x1, ACK: 0x1, END_HEADERS: 0x4, PADDED: 0x8, PRIORITY: 0x20 } as const;

/** Error codes of RST_STREAM and GOAWAY (RFC 9113 7). */
export const ErrorCode = {
  NO_ERROR: 0x0,
  PROTOCOL_ERROR: 0x1,
  INTERNAL_ERROR: 0x2,
  FLOW_CONTROL_ERROR: 0x3,
  SETTINGS_TIMEOUT: 0x4,
  STREAM_CLOSED: 0x5,
  FRAME_SIZE_ERROR: 0x6,
  REFUSED_STREAM: 0x7,
  CANCEL: 0x8,
  COMPRESSION_ERROR: 0x9,
  CONNECT_ERROR: 0xa,
  ENHANCE_YOUR_CALM: 0xb,
  INADEQUATE_SECURITY: 0xc,
  HTTP_1_1_REQUIRED: 0xd,
} as const;

/** SETTINGS parameters (RFC 9113 6.5.2). */
export const Setting = {
  HEADER_TABLE_SIZE: 0x1,
  ENABLE_PUSH: 0x2,
  MAX_CONCURRENT_STREAMS: 0x3,
  INITIAL_WINDOW_SIZE: 0x4,
  MAX_FRAME_SIZE: 0x5,
  MAX_HEADER_LIST_SIZE: 0x6,
} as const;

/** The client connection preface (RFC 9113 3.4). */
export const PREFACE = new TextEncoder().encode("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n");

/** Default and bounds of SETTINGS_MAX_FRAME_SIZE, and the default flow-control window (RFC 9113 6.5.2). */
export const DEFAULT_MAX_FRAME_SIZE = 16_384;
export const MAX_MAX_FRAME_SIZE = 16_777_215;
export const DEFAULT_WINDOW = 65_535;
/** The largest flow-control window (2^31 - 1); more is a FLOW_CONTROL_ERROR. */
export const MAX_WINDOW = 0x7fff_ffff;

/** Writes a frame header at `at` of `out`. */
export function writeFrameHeader(
  out: Uint8Array,
  at: number,
  length: number,
  type: number,
  flags: number,
  streamId: number,
): void {
  out[at] = length >>> 16;
  out[at + 1] = length >>> 8;
  out[at + 2] = length;
  out[at + 3] = type;
  out[at + 4] = flags;
  out[at + 5] = streamId >>> 24;
  out[at + 6] = streamId >>> 16;
  out[at + 7] = streamId >>> 8;
  out[at + 8] = streamId;
}

/** One whole frame with its payload. */
export function frame(type: number, flags: number, streamId: number, payload?: Uint8Array): Uint8Array {
  const length = payload?.byteLength ?? 0;
  const out = new Uint8Array(FRAME_HEADER_BYTES + length);
  writeFrameHeader(out, 0, length, type, flags, streamId);
  if (payload !== undefined) out.set(payload, FRAME_HEADER_BYTES);
  return out;
}

/** A SETTINGS frame with these (id, value) pairs. */
export function settingsFrame(settings: ReadonlyArray<readonly [number, number]>): Uint8Array {
  const payload = new Uint8Array(6 * settings.length);
  const view = new DataView(payload.buffer);
  settings.forEach(([id, value], i) => {
    view.setUint16(6 * i, id);
    view.setUint32(6 * i + 2, value);
  });
  return frame(FrameType.SETTINGS, 0, 0, payload);
}

/** A 4-byte payload frame: RST_STREAM (error code) or WINDOW_UPDATE (increment). */
export function uint32Frame(type: number, streamId: number, value: number): Uint8Array {
  const out = new Uint8Array(FRAME_HEADER_BYTES + 4);
  writeFrameHeader(out, 0, 4, type, 0, streamId);
  new DataView(out.buffer).setUint32(FRAME_HEADER_BYTES, value);
  return out;
}

/** GOAWAY with the last stream id we processed and the error code. */
export function goawayFrame(lastStreamId: number, code: number): Uint8Array {
  const out = new Uint8Array(FRAME_HEADER_BYTES + 8);
  writeFrameHeader(out, 0, 8, FrameType.GOAWAY, 0, 0);
  const view = new DataView(out.buffer);
  view.setUint32(FRAME_HEADER_BYTES, lastStreamId & MAX_WINDOW);
  view.setUint32(FRAME_HEADER_BYTES + 4, code);
  return out;
}

/** `chunks` (of `totalBytes` together) as one buffer; a single chunk is returned as it is, not copied. */
export function joinBytes(chunks: readonly Uint8Array[], totalBytes: number): Uint8Array {
  if (chunks.length === 1) return chunks[0];
  const out = new Uint8Array(totalBytes);
  let at = 0;
  for (const c of chunks) {
    out.set(c, at);
    at += c.byteLength;
  }
  return out;
}
