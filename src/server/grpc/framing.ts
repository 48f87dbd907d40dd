/**
 * gRPC length-prefixed messages: a 1-byte compressed flag, a 4-byte big-endian length, then the message.
 * The reader parses them incrementally from HTTP/2 DATA chunks, one message at a time, so that a caller that
 * stops taking messages leaves the rest unparsed (and unread, once the HTTP/2 stream is paused).
 */
import { Status, type StatusCode } from "./status.ts";

/** Bytes before each message. */
export const PREFIX_BYTES = 5;

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

  /** @param maxMessageBytes largest message accepted; a longer one is RESOURCE_EXHAUSTED. */
  constructor(maxMessageBytes: number) {
    this.#maxMessageBytes = maxMessageBytes;
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
      if (flag !== 0) {
        // No grpc-encoding is supported (calls naming one are refused up front), so a compressed message
        // cannot be read; a flag other than 0 or 1 is a protocol error.
        const message = flag === 1
          ? "compressed message received but no grpc-encoding was negotiated"
          : `invalid message flag ${flag}`;
        return { code: Status.INTERNAL, message };
      }
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

  #complete(message: Uint8Array): Uint8Array {
    this.#prefixLength = 0;
    this.#bodyExpected = -1;
    this.#bodyLength = 0;
    this.#body = undefined;
    return message;
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
