/**
 * gRPC length-prefixed messages: a 1-byte compressed flag, a 4-byte big-endian length, then the message.
 * The reader parses them incrementally from HTTP/2 DATA chunks, one message at a time, so that a caller that
 * stops taking messages leaves the rest unparsed (and unread, once the HTTP/2 stream is paused).
 *
 * A request may compress its messages with `gzip` or `deflate` (its `grpc-encoding`); a message with the
 * compressed flag is inflated here, at most to the largest message accepted. Replies are never compressed: the
 * protocol lets a server answer in `identity` whatever the client accepts.
 */
import { gunzipSync, inflateSync } from "node:zlib";
import { Status, type StatusCode } from "./status.ts";

/** Bytes before each message. */
export const PREFIX_BYTES = 5;

/** The decompressors of the request encodings supported, by `grpc-encoding` name. */
const DECOMPRESSORS = {
  gzip: gunzipSync,
  deflate: inflateSync, // zlib's format (RFC 1950), as HTTP's and gRPC's "deflate" is
} as const;

/** A `grpc-encoding` a request may use besides `identity`. */
export type Encoding = keyof typeof DECOMPRESSORS;

/** The value of `grpc-accept-encoding`: the encodings a request may use. */
export const ACCEPT_ENCODING = ["identity", ...Object.keys(DECOMPRESSORS)].join(",");

export function isEncoding(name: string): name is Encoding {
  return Object.hasOwn(DECOMPRESSORS, name);
}

/** Why the incoming messages cannot be read any further; the call ends with this status. */
export interface FramingError {
  code: StatusCode;
  message: string;
}

/** Incremental parser of the messages of one call. */
export class MessageReader {
  readonly #maxMessageBytes: number;
  readonly #chunks: Uint8Array[] = [];
  /** Read position in `#chunks[0]`. */
  #offset = 0;
  #buffered = 0;
  readonly #prefix = new Uint8Array(PREFIX_BYTES);
  #prefixLength = 0;
  /** The message being assembled across chunks, once its prefix is known. */
  #body: Uint8Array | undefined;
  #bodyLength = 0;
  #bodyExpected = -1;
  readonly #encoding: Encoding | undefined;
  /** Whether the message being read has the compressed flag. */
  #compressed = false;

  /**
   * @param maxMessageBytes largest message accepted, compressed or not; a longer one is RESOURCE_EXHAUSTED.
   * @param encoding the request's `grpc-encoding`, unless `identity`: what its compressed messages are in.
   */
  constructor(maxMessageBytes: number, encoding?: Encoding) {
    this.#maxMessageBytes = maxMessageBytes;
    this.#encoding = encoding;
  }

  /** Bytes received and not yet returned as part of a message. */
  get buffered(): number {
    return this.#buffered + this.#prefixLength + this.#bodyLength;
  }

  /** Queues a chunk of the HTTP/2 stream; `next` parses it. */
  push(chunk: Uint8Array): void {
    if (chunk.byteLength === 0) return;
    this.#chunks.push(chunk);
    this.#buffered += chunk.byteLength;
  }

  /** The next complete message, undefined when more bytes are needed, or why the stream is unreadable. */
  next(): Uint8Array | FramingError | undefined {
    if (this.#bodyExpected < 0) {
      while (this.#prefixLength < PREFIX_BYTES && this.#buffered > 0) {
        this.#prefix[this.#prefixLength++] = this.#takeByte();
      }
      if (this.#prefixLength < PREFIX_BYTES) return undefined;
      const p = this.#prefix;
      const flag = p[0];
      const length = ((p[1] << 24) | (p[2] << 16) | (p[3] << 8) | p[4]) >>> 0;
      if (flag > 1) return { code: Status.INTERNAL, message: `invalid message flag ${flag}` };
      if (flag === 1 && this.#encoding === undefined) {
        return {
          code: Status.INTERNAL,
          message: "compressed message received but no grpc-encoding was negotiated",
        };
      }
      this.#compressed = flag === 1;
      if (length > this.#maxMessageBytes) {
        return {
          code: Status.RESOURCE_EXHAUSTED,
          message: `received message larger than max (${length} vs. ${this.#maxMessageBytes})`,
        };
      }
      this.#bodyExpected = length;
      this.#bodyLength = 0;
      if (length === 0) return this.#complete(new Uint8Array(0));
      // A message that lies whole in the current chunk is returned as a view, without a copy.
      if (this.#buffered >= length && this.#chunks[0].byteLength - this.#offset >= length) {
        return this.#complete(this.#take(length));
      }
      this.#body = new Uint8Array(length);
    }
    const body = this.#body!;
    while (this.#bodyLength < this.#bodyExpected && this.#buffered > 0) {
      const part = this.#take(this.#bodyExpected - this.#bodyLength);
      body.set(part, this.#bodyLength);
      this.#bodyLength += part.byteLength;
    }
    return this.#bodyLength === this.#bodyExpected ? this.#complete(body) : undefined;
  }

  /** Called at the end of the stream: an error when a message was cut short. */
  finish(): FramingError | undefined {
    if (this.#prefixLength === 0 && this.#bodyExpected < 0) return undefined;
    const got = this.#bodyExpected < 0 ? `${this.#prefixLength} of ${PREFIX_BYTES} prefix bytes` : (
      `${this.#bodyLength} of ${this.#bodyExpected} bytes`
    );
    return { code: Status.INTERNAL, message: `stream ended inside a message (${got})` };
  }

  #complete(message: Uint8Array): Uint8Array | FramingError {
    this.#prefixLength = 0;
    this.#bodyExpected = -1;
    this.#bodyLength = 0;
    this.#body = undefined;
    return this.#compressed ? this.#decompress(message) : message;
  }

  /** A compressed message inflated, as a plain Uint8Array; an error past the size limit or on bad data. */
  #decompress(message: Uint8Array): Uint8Array | FramingError {
    const encoding = this.#encoding!;
    const max = this.#maxMessageBytes;
    let out: Uint8Array | undefined;
    try {
      // zlib stops at maxOutputLength (a RangeError) rather than inflating a small message into a huge one.
      out = DECOMPRESSORS[encoding](message, { maxOutputLength: Math.max(1, max) });
    } catch (err) {
      if (!(err instanceof RangeError)) {
        const reason = err instanceof Error ? err.message : String(err);
        return {
          code: Status.INTERNAL,
          message: `failed to decompress the received message (${encoding}): ${reason}`,
        };
      }
    }
    if (out === undefined || out.byteLength > max) {
      return {
        code: Status.RESOURCE_EXHAUSTED,
        message: `received message after decompression larger than max (${max})`,
      };
    }
    return new Uint8Array(out.buffer, out.byteOffset, out.byteLength);
  }

  /** The byte at the front of the queue (without a view for it). */
  #takeByte(): number {
    const chunk = this.#chunks[0];
    const b = chunk[this.#offset++];
    this.#buffered--;
    if (this.#offset === chunk.byteLength) {
      this.#chunks.shift();
      this.#offset = 0;
    }
    return b;
  }

  /**
   * Up to `max` bytes from the front of the queue, as a plain Uint8Array view of one chunk. A node:tls socket's
   * chunks are Buffers, whose subarray costs several times more (and would make every bytes field decoded from
   * the message a Buffer too).
   */
  #take(max: number): Uint8Array {
    const chunk = this.#chunks[0];
    const available = chunk.byteLength - this.#offset;
    const n = available < max ? available : max;
    const part = new Uint8Array(chunk.buffer, chunk.byteOffset + this.#offset, n);
    this.#buffered -= n;
    if (n === available) {
      this.#chunks.shift();
      this.#offset = 0;
    } else {
      this.#offset += n;
    }
    return part;
  }
}

/** Frames `messages` back to back into one buffer, ready for one write. */
export function frameAll(messages: readonly Uint8Array[], totalBytes: number): Uint8Array {
  const out = new Uint8Array(totalBytes + PREFIX_BYTES * messages.length);
  let pos = 0;
  for (const m of messages) {
    const n = m.byteLength;
    out[pos] = 0;
    out[pos + 1] = n >>> 24;
    out[pos + 2] = (n >>> 16) & 0xff;
    out[pos + 3] = (n >>> 8) & 0xff;
    out[pos + 4] = n & 0xff;
    out.set(m, pos + PREFIX_BYTES);
    pos += PREFIX_BYTES + n;
  }
  return out;
}
