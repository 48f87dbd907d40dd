/**
 * The server side of one HTTP/2 connection (RFC 9113) over a byte transport (a node:net or node:tls socket):
 * frames in, streams to the application, frames out.
 *
 * Why our own: Deno's node:http2 runs one JS callback, one Readable push and one 'data' event per DATA frame,
 * and a gRPC client sends one DATA frame per message. Here one socket read (often hundreds of frames) is parsed
 * in one pass, and everything the streams send in one event-loop turn leaves in one socket write.
 *
 * What a peer can make the server hold is bounded: request DATA by the flow-control windows we open only as
 * the application takes data, header blocks by `maxHeaderListSize`, our replies to its control frames by
 * pausing the socket while our own output is not being read. Every protocol error ends the connection with
 * GOAWAY and its code, or the stream with RST_STREAM; nothing a peer sends throws out of `receive`.
 */
import {
  DEFAULT_MAX_FRAME_SIZE,
  DEFAULT_WINDOW,
  ErrorCode,
  Flag,
  frame,
  FRAME_HEADER_BYTES,
  FrameType,
  goawayFrame,
  joinBytes,
  MAX_MAX_FRAME_SIZE,
  MAX_WINDOW,
  PREFACE,
  Setting,
  settingsFrame,
  uint32Frame,
  writeFrameHeader,
} from "./frame.ts";
import { encodeHeaders, type HeaderField, HpackDecoder, HpackError } from "./hpack.ts";
import { Http2Stream, type StreamOwner } from "./stream.ts";
import { type Clock, realClock } from "../../clock.ts";

/** The socket under a connection (node:net or node:tls). */
export interface Transport {
  write(bytes: Uint8Array): void;
  /** Bytes written and not yet taken by the kernel. */
  readonly writableLength: number;
  pause(): void;
  resume(): void;
  /** Closes after what was written has gone out. */
  end(): void;
}

/** Limits and callbacks of a connection. */
export interface ConnectionOptions {
  /** Streams open at once (SETTINGS_MAX_CONCURRENT_STREAMS); more are refused with REFUSED_STREAM. */
  maxConcurrentStreams: number;
  /**
   * Bytes of request DATA the connection may hold that the application has not taken (the connection's
   * receive window), and of our own output not yet taken by the peer before we stop reading it.
   */
  maxSessionMemory: number;
  /** Largest request header list (SETTINGS_MAX_HEADER_LIST_SIZE, RFC 9113 6.5.2 counting). */
  maxHeaderListSize: number;
  /** A new request stream, headers checked; the callee sets `stream.events`. */
  onStream(stream: Http2Stream): void;
  /**
   * A stream's exchange is over: its whole response went out, or it closed (reset, connection gone); once per
   * stream. A stream may stay half-closed after it until the client ends its side.
   */
  onStreamDone?(stream: Http2Stream): void;
  /** The connection is over (both directions); called once. */
  onClose(): void;
  /** A protocol error ended the connection or a stream; for logs. */
  onProtocolError?(what: string, code: number): void;
  /** The clock of the flood guard. @default realClock */
  clock?: Clock;
}

/** Per-stream receive window we advertise. */
const STREAM_WINDOW = 1 << 20;
/**
 * Frames that cost us work and give the application nothing (RST_STREAM, PING, SETTINGS, PRIORITY, empty DATA
 * and CONTINUATION, HEADERS on reset streams): how many a peer may send in a burst, and per second after it.
 */
const CHEAP_FRAME_BURST = 1000;
const CHEAP_FRAMES_PER_SECOND = 200;
/** Streams we reset whose late frames are ignored rather than taken for errors. */
const RESET_MEMORY = 128;
/** Runs of refused streams remembered (see Http2Connection.#refusedRuns). */
const REFUSED_RUNS = 16;

/** A protocol error: the connection ends with GOAWAY `code`. */
class ConnectionError extends Error {
  constructor(readonly code: number, message: string) {
    super(message);
  }
}

/** One HTTP/2 connection, server side. */
export class Http2Connection implements StreamOwner {
  readonly #transport: Transport;
  readonly #opts: ConnectionOptions;
  readonly #decoder: HpackDecoder;
  readonly #streams = new Map<number, Http2Stream>();
  /** Unconsumed input: `#input[#inputStart..]`. */
  #input: Uint8Array = new Uint8Array(0);
  #inputStart = 0;
  #prefaceSeen = false;
  #settingsSeen = false;
  /** Highest client stream id seen; ids above it are idle. */
  #lastStreamId = 0;
  /** Highest stream handed to the application: the last stream id of our GOAWAY. */
  #lastAccepted = 0;
  /** Whether the client acknowledged our SETTINGS, so that it is bound by our limits. */
  #settingsAcked = false;
  /** A header block being gathered from HEADERS + CONTINUATION. */
  #headerBlock: { streamId: number; endStream: boolean; parts: Uint8Array[]; bytes: number } | undefined;
  /** Streams the client ended or reset whose frames may still arrive: ids -> true when we reset them. */
  readonly #recentlyClosed = new Map<number, boolean>();
  /**
   * Ids of streams refused before the client had our SETTINGS, as runs of consecutive ids (first, last): a
   * client that opens all its calls at once refuses in bulk, and their late frames are ignored however many.
   */
  readonly #refusedRuns: Array<[number, number]> = [];
  // flow control
  #sendWindow = DEFAULT_WINDOW;
  #peerInitialWindow = DEFAULT_WINDOW;
  #peerMaxFrameSize = DEFAULT_MAX_FRAME_SIZE;
  readonly #receiveWindowSize: number;
  #receiveWindow: number;
  /** DATA bytes taken since the last connection WINDOW_UPDATE. */
  #unackedConnection = 0;
  readonly #unackedStream = new Map<number, number>();
  // output
  #out: Uint8Array[] = [];
  #outBytes = 0;
  readonly #writable = new Set<Http2Stream>();
  #flushScheduled = false;
  #readPaused = false;
  // the end
  #goawaySent = false;
  #closing = false;
  #transportEnded = false;
  #closed = false;
  // flood guard
  readonly #clock: Clock;
  #cheapTokens = CHEAP_FRAME_BURST;
  #cheapAt: number;
  /**
   * Whether we sent HEADERS or DATA since the last PING. A PING after them is free, as in grpc-go's server: its
   * clients measure the bandwidth with a PING after most DATA frames they receive.
   */
  #sentSincePing = false;

  constructor(transport: Transport, opts: ConnectionOptions) {
    this.#transport = transport;
    this.#opts = opts;
    this.#decoder = new HpackDecoder();
    this.#clock = opts.clock ?? realClock;
    this.#cheapAt = this.#clock.now();
    this.#receiveWindowSize = Math.max(DEFAULT_WINDOW, Math.min(opts.maxSessionMemory, MAX_WINDOW));
    this.#receiveWindow = this.#receiveWindowSize;
    this.#queue(settingsFrame([
      [Setting.MAX_CONCURRENT_STREAMS, opts.maxConcurrentStreams],
      [Setting.INITIAL_WINDOW_SIZE, this.#streamWindow()],
      [Setting.MAX_HEADER_LIST_SIZE, opts.maxHeaderListSize],
    ]));
    if (this.#receiveWindowSize > DEFAULT_WINDOW) {
      this.#queue(uint32Frame(FrameType.WINDOW_UPDATE, 0, this.#receiveWindowSize - DEFAULT_WINDOW));
    }
    this.#scheduleFlush();
  }

  /** Open streams. */
  get streamCount(): number {
    return this.#streams.size;
  }

  /** Bytes read from the socket; parses and acts on every complete frame. Never throws. */
  receive(chunk: Uint8Array): void {
    if (this.#closing) return;
    if (this.#inputStart < this.#input.byteLength) {
      const rest = this.#input.subarray(this.#inputStart);
      const joined = new Uint8Array(rest.byteLength + chunk.byteLength);
      joined.set(rest);
      joined.set(chunk, rest.byteLength);
      this.#input = joined;
    } else {
      this.#input = chunk;
    }
    this.#inputStart = 0;
    try {
      this.#parse();
    } catch (err) {
      if (err instanceof ConnectionError) {
        this.#opts.onProtocolError?.(err.message, err.code);
        this.#goaway(err.code);
      } else {
        this.#opts.onProtocolError?.(`internal: ${(err as Error)?.message ?? err}`, ErrorCode.INTERNAL_ERROR);
        this.#goaway(ErrorCode.INTERNAL_ERROR);
      }
    }
  }

  /** The socket is writable again after a backlog; reading goes on. */
  drained(): void {
    if (this.#readPaused && !this.#closing) {
      this.#readPaused = false;
      this.#transport.resume();
    }
  }

  /** The socket closed (either side); every stream is over. */
  transportClosed(): void {
    if (this.#closed) return;
    this.#closed = true;
    this.#closing = true;
    for (const stream of this.#streams.values()) stream.close(true);
    this.#streams.clear();
    this.#opts.onClose();
  }

  /**
   * Graceful end: GOAWAY NO_ERROR (new streams are refused), and the socket closes once the open streams are
   * over.
   */
  shutdown(): void {
    if (this.#goawaySent) return;
    this.#goawaySent = true;
    this.#queue(goawayFrame(this.#lastAccepted, ErrorCode.NO_ERROR));
    for (const stream of [...this.#streams.values()]) {
      if (stream.responseSent && !stream.remoteEnded) this.#resetComplete(stream);
    }
    this.#scheduleFlush();
    this.#endIfIdle();
  }

  /** Ends the connection now with GOAWAY `code`; open streams are over. */
  abort(code: number = ErrorCode.NO_ERROR): void {
    this.#goaway(code);
  }

  // --- StreamOwner

  wantsWrite(stream: Http2Stream): void {
    if (this.#closing) return;
    this.#writable.add(stream);
    this.#scheduleFlush();
  }

  consumed(stream: Http2Stream, bytes: number): void {
    if (bytes === 0 || this.#closing) return;
    this.#consumedConnection(bytes);
    if (stream.closed || stream.remoteEnded) return;
    const unacked = (this.#unackedStream.get(stream.id) ?? 0) + bytes;
    if (unacked >= this.#streamWindow() / 2) {
      this.#unackedStream.set(stream.id, 0);
      stream.receiveWindow += unacked;
      this.#queue(uint32Frame(FrameType.WINDOW_UPDATE, stream.id, unacked));
      this.#scheduleFlush();
    } else {
      this.#unackedStream.set(stream.id, unacked);
    }
  }

  streamClosed(stream: Http2Stream): void {
    this.#done(stream);
  }

  // --- input

  #parse(): void {
    const input = this.#input;
    let pos = this.#inputStart;
    if (!this.#prefaceSeen) {
      const have = Math.min(input.byteLength - pos, PREFACE.byteLength);
      for (let i = 0; i < have; i++) {
        if (input[pos + i] !== PREFACE[i]) throw new ConnectionError(ErrorCode.PROTOCOL_ERROR, "bad preface");
      }
      if (have < PREFACE.byteLength) return;
      pos += PREFACE.byteLength;
      this.#inputStart = pos;
      this.#prefaceSeen = true;
    }
    while (!this.#closing && input.byteLength - pos >= FRAME_HEADER_BYTES) {
      const length = (input[pos] << 16) | (input[pos + 1] << 8) | input[pos + 2];
      if (length > DEFAULT_MAX_FRAME_SIZE) {
        throw new ConnectionError(ErrorCode.FRAME_SIZE_ERROR, `frame of ${length} bytes over the maximum`);
      }
      if (input.byteLength - pos - FRAME_HEADER_BYTES < length) break;
      const type = input[pos + 3], flags = input[pos + 4];
      const streamId = ((input[pos + 5] & 0x7f) << 24 | (input[pos + 6] << 16) | (input[pos + 7] << 8) |
        input[pos + 8]) >>> 0;
      const payload = input.subarray(pos + FRAME_HEADER_BYTES, pos + FRAME_HEADER_BYTES + length);
      pos += FRAME_HEADER_BYTES + length;
      this.#inputStart = pos;
      this.#frame(type, flags, streamId, payload);
    }
  }

  #frame(type: number, flags: number, streamId: number, payload: Uint8Array): void {
    if (!this.#settingsSeen) {
      // The preface goes on with a SETTINGS frame (RFC 9113 3.4).
      if (type !== FrameType.SETTINGS || (flags & Flag.ACK) !== 0) {
        throw new ConnectionError(ErrorCode.PROTOCOL_ERROR, "the preface is not followed by SETTINGS");
      }
      this.#settingsSeen = true;
    }
    if (
      this.#headerBlock !== undefined &&
      (type !== FrameType.CONTINUATION || streamId !== this.#headerBlock.streamId)
    ) {
      throw new ConnectionError(ErrorCode.PROTOCOL_ERROR, "header block interrupted");
    }
    switch (type) {
      case FrameType.DATA:
        return this.#data(flags, streamId, payload);
      case FrameType.HEADERS:
        return this.#headers(flags, streamId, payload);
      case FrameType.PRIORITY:
        return this.#priority(streamId, payload);
      case FrameType.RST_STREAM:
        return this.#rstStream(streamId, payload);
      case FrameType.SETTINGS:
        return this.#settings(flags, streamId, payload);
      case FrameType.PUSH_PROMISE:
        throw new ConnectionError(ErrorCode.PROTOCOL_ERROR, "PUSH_PROMISE from a client");
      case FrameType.PING:
        return this.#ping(flags, streamId, payload);
      case FrameType.GOAWAY:
        if (streamId !== 0) throw new ConnectionError(ErrorCode.PROTOCOL_ERROR, "GOAWAY on a stream");
        if (payload.byteLength < 8) throw new ConnectionError(ErrorCode.FRAME_SIZE_ERROR, "short GOAWAY");
        // The client opens no more streams; those it has finish as usual.
        return this.#cheap("GOAWAY frames");
      case FrameType.WINDOW_UPDATE:
        return this.#windowUpdate(streamId, payload);
      case FrameType.CONTINUATION:
        return this.#continuation(flags, streamId, payload);
      default:
        // Unknown frame types are ignored (RFC 9113 4.1), as work for nothing.
        return this.#cheap("frames of unknown types");
    }
  }

  /** Strips padding (RFC 9113 6.1, 6.2); `extra` more bytes (priority) must fit before it. */
  #unpad(flags: number, payload: Uint8Array, extra: number): Uint8Array {
    if ((flags & Flag.PADDED) === 0) return payload.subarray(extra);
    if (payload.byteLength < 1 + extra) {
      throw new ConnectionError(ErrorCode.FRAME_SIZE_ERROR, "short padded frame");
    }
    const pad = payload[0];
    if (pad > payload.byteLength - 1 - extra) {
      throw new ConnectionError(ErrorCode.PROTOCOL_ERROR, "padding longer than the frame");
    }
    return payload.subarray(1 + extra, payload.byteLength - pad);
  }

  #data(flags: number, streamId: number, payload: Uint8Array): void {
    if (streamId === 0) throw new ConnectionError(ErrorCode.PROTOCOL_ERROR, "DATA on stream 0");
    if (payload.byteLength > this.#receiveWindow) {
      throw new ConnectionError(ErrorCode.FLOW_CONTROL_ERROR, "DATA beyond the connection window");
    }
    this.#receiveWindow -= payload.byteLength;
    const data = this.#unpad(flags, payload, 0);
    const stream = this.#streams.get(streamId);
    if (stream === undefined || stream.remoteEnded) {
      this.#consumedConnection(payload.byteLength);
      if (stream !== undefined) {
        throw new ConnectionError(ErrorCode.STREAM_CLOSED, `DATA on half-closed stream ${streamId}`);
      }
      this.#notOpen(streamId, "DATA", true);
      return;
    }
    if (payload.byteLength > stream.receiveWindow) {
      this.#consumedConnection(payload.byteLength);
      this.#resetStream(stream, ErrorCode.FLOW_CONTROL_ERROR);
      return;
    }
    stream.receiveWindow -= payload.byteLength;
    const endStream = (flags & Flag.END_STREAM) !== 0;
    if (stream.expectedBytes !== undefined) {
      // DATA that disagrees with content-length makes the request malformed (RFC 9113 8.1.1).
      stream.expectedBytes -= data.byteLength;
      if (stream.expectedBytes < 0 || (endStream && stream.expectedBytes !== 0)) {
        this.#consumedConnection(payload.byteLength);
        this.#resetStream(stream, ErrorCode.PROTOCOL_ERROR);
        return;
      }
    }
    if (stream.responseSent && data.byteLength > 0) {
      // Our response is complete: what the client sends now is unwanted.
      this.#consumedConnection(payload.byteLength);
      this.#resetComplete(stream);
      return;
    }
    if (payload.byteLength === 0 && !endStream) this.#cheap("empty DATA frames");
    // Padding is taken at once; the data when the application reads it.
    this.#consumedConnection(payload.byteLength - data.byteLength);
    if (data.byteLength > 0) stream.receive(data);
    if (endStream) this.#remoteEnd(stream);
  }

  /**
   * A frame on a stream that is not open for it: idle is a protocol error, closed is STREAM_CLOSED. `lenient`
   * (DATA): on a stream closed too long ago to be remembered, ignored.
   */
  #notOpen(streamId: number, what: string, lenient = false): void {
    if (streamId > this.#lastStreamId || streamId % 2 === 0) {
      throw new ConnectionError(ErrorCode.PROTOCOL_ERROR, `${what} on idle stream ${streamId}`);
    }
    // Frames in flight when we reset a stream are expected and ignored (RFC 9113 5.1, closed).
    const byUs = this.#recentlyClosed.get(streamId);
    if (byUs === true || (byUs === undefined && this.#refused(streamId))) return;
    if (byUs === false || !lenient) {
      throw new ConnectionError(ErrorCode.STREAM_CLOSED, `${what} on closed stream ${streamId}`);
    }
    // Closed too long ago to be remembered: maybe one we reset (the DATA of a burst of streams refused before
    // the client had our SETTINGS, say), whose frames are to be ignored; ignored, as work for nothing.
    this.#cheap("DATA frames on closed streams");
  }

  #headers(flags: number, streamId: number, payload: Uint8Array): void {
    if (streamId === 0) throw new ConnectionError(ErrorCode.PROTOCOL_ERROR, "HEADERS on stream 0");
    const priority = (flags & Flag.PRIORITY) !== 0;
    const fragment = this.#unpad(flags, payload, priority ? 5 : 0);
    if (priority) {
      const at = (flags & Flag.PADDED) !== 0 ? 1 : 0;
      const dependency = ((payload[at] & 0x7f) << 24 | payload[at + 1] << 16 | payload[at + 2] << 8 |
        payload[at + 3]) >>> 0;
      if (dependency === streamId) {
        throw new ConnectionError(ErrorCode.PROTOCOL_ERROR, `stream ${streamId} depends on itself`);
      }
    }
    this.#headerBlock = { streamId, endStream: (flags & Flag.END_STREAM) !== 0, parts: [fragment], bytes: 0 };
    this.#headerBlock.bytes = fragment.byteLength;
    this.#checkBlockSize();
    if ((flags & Flag.END_HEADERS) !== 0) this.#headerBlockDone();
  }

  #continuation(flags: number, streamId: number, payload: Uint8Array): void {
    const block = this.#headerBlock;
    if (block === undefined) {
      if (streamId === 0) throw new ConnectionError(ErrorCode.PROTOCOL_ERROR, "CONTINUATION on stream 0");
      throw new ConnectionError(ErrorCode.PROTOCOL_ERROR, "CONTINUATION without HEADERS");
    }
    if (payload.byteLength === 0 && (flags & Flag.END_HEADERS) === 0) {
      this.#cheap("empty CONTINUATION frames");
    }
    block.parts.push(payload);
    block.bytes += payload.byteLength;
    this.#checkBlockSize();
    if ((flags & Flag.END_HEADERS) !== 0) this.#headerBlockDone();
  }

  /** A header block longer than twice the list limit cannot be a list we would accept: a CONTINUATION flood. */
  #checkBlockSize(): void {
    if (this.#headerBlock!.bytes > 2 * this.#opts.maxHeaderListSize + 1024) {
      throw new ConnectionError(ErrorCode.ENHANCE_YOUR_CALM, "header block too large");
    }
  }

  #headerBlockDone(): void {
    const { streamId, endStream, parts, bytes } = this.#headerBlock!;
    this.#headerBlock = undefined;
    const whole = joinBytes(parts, bytes);
    let decoded;
    try {
      decoded = this.#decoder.decode(whole, this.#opts.maxHeaderListSize);
    } catch (err) {
      if (err instanceof HpackError) throw new ConnectionError(ErrorCode.COMPRESSION_ERROR, err.message);
      throw err;
    }
    const tooLarge = decoded.listSize > this.#opts.maxHeaderListSize;
    // Refused, yet read to the end: a token per KiB of the block, so that such blocks cannot keep us busy.
    if (tooLarge) this.#cheap("header lists over the limit", 1 + (bytes >> 10));
    const open = this.#streams.get(streamId);
    if (open !== undefined) {
      // Trailers: they must end the stream and carry no pseudo-header.
      if (open.remoteEnded) {
        throw new ConnectionError(ErrorCode.STREAM_CLOSED, `HEADERS on half-closed stream ${streamId}`);
      }
      if (!endStream || decoded.fields.some(([n]) => n.startsWith(":"))) {
        this.#resetStream(open, ErrorCode.PROTOCOL_ERROR);
        return;
      }
      this.#remoteEnd(open);
      return;
    }
    if (streamId % 2 === 0) {
      throw new ConnectionError(ErrorCode.PROTOCOL_ERROR, `client stream ${streamId} is even`);
    }
    if (streamId <= this.#lastStreamId) {
      this.#notOpen(streamId, "HEADERS");
      // On a stream we reset, trailers are ignored; a HEADERS frame that does not end the stream is malformed
      // in any state, and the client is told so rather than left to guess.
      if (!endStream) {
        this.#cheap("HEADERS on reset streams");
        this.#queue(uint32Frame(FrameType.RST_STREAM, streamId, ErrorCode.PROTOCOL_ERROR));
        this.#scheduleFlush();
      }
      return;
    }
    this.#lastStreamId = streamId;
    if (this.#goawaySent) {
      this.#queue(uint32Frame(FrameType.RST_STREAM, streamId, ErrorCode.REFUSED_STREAM));
      this.#scheduleFlush();
      return;
    }
    const malformed = tooLarge ? "header list too large" : checkRequestHeaders(decoded.fields);
    if (malformed !== undefined) {
      this.#opts.onProtocolError?.(`stream ${streamId}: ${malformed}`, ErrorCode.PROTOCOL_ERROR);
      this.#rememberClosed(streamId, true);
      this.#queue(uint32Frame(FrameType.RST_STREAM, streamId, ErrorCode.PROTOCOL_ERROR));
      this.#scheduleFlush();
      return;
    }
    if (this.#streams.size >= this.#opts.maxConcurrentStreams) {
      // Past a limit the client has acknowledged, it breaks the protocol; before, the SETTINGS may be in flight.
      if (this.#settingsAcked) {
        throw new ConnectionError(
          ErrorCode.PROTOCOL_ERROR,
          "more streams than SETTINGS_MAX_CONCURRENT_STREAMS",
        );
      }
      this.#rememberRefused(streamId);
      this.#queue(uint32Frame(FrameType.RST_STREAM, streamId, ErrorCode.REFUSED_STREAM));
      this.#scheduleFlush();
      return;
    }
    const stream = new Http2Stream(
      this,
      streamId,
      decoded.fields,
      this.#peerInitialWindow,
      this.#streamWindow(),
    );
    this.#streams.set(streamId, stream);
    this.#lastAccepted = streamId;
    this.#opts.onStream(stream);
    if (endStream && !stream.closed) this.#remoteEnd(stream);
  }

  #priority(streamId: number, payload: Uint8Array): void {
    if (streamId === 0) throw new ConnectionError(ErrorCode.PROTOCOL_ERROR, "PRIORITY on stream 0");
    if (payload.byteLength !== 5) {
      throw new ConnectionError(ErrorCode.FRAME_SIZE_ERROR, "PRIORITY not 5 bytes");
    }
    this.#cheap("PRIORITY frames");
    const dependency = ((payload[0] & 0x7f) << 24 | payload[1] << 16 | payload[2] << 8 | payload[3]) >>> 0;
    if (dependency === streamId) {
      const stream = this.#streams.get(streamId);
      if (stream !== undefined) this.#resetStream(stream, ErrorCode.PROTOCOL_ERROR);
      else {
        this.#queue(uint32Frame(FrameType.RST_STREAM, streamId, ErrorCode.PROTOCOL_ERROR));
        this.#scheduleFlush();
      }
    }
    // Priorities are otherwise ignored: every stream is served in turn.
  }

  #rstStream(streamId: number, payload: Uint8Array): void {
    if (streamId === 0) throw new ConnectionError(ErrorCode.PROTOCOL_ERROR, "RST_STREAM on stream 0");
    if (payload.byteLength !== 4) {
      throw new ConnectionError(ErrorCode.FRAME_SIZE_ERROR, "RST_STREAM not 4 bytes");
    }
    if (streamId > this.#lastStreamId) {
      throw new ConnectionError(ErrorCode.PROTOCOL_ERROR, `RST_STREAM on idle stream ${streamId}`);
    }
    const stream = this.#streams.get(streamId);
    // A reset of a stream we have answered is a client done with it (grpc-go cancels a stream once it has what
    // it wanted), and cost it a round trip; one before our answer (rapid reset) or on a closed stream is cheap.
    if (stream === undefined || !stream.headersSent) this.#cheap("RST_STREAM frames");
    if (stream === undefined) return;
    this.#streams.delete(streamId);
    this.#unackedStream.delete(streamId);
    this.#writable.delete(stream);
    this.#rememberClosed(streamId, false);
    stream.close(true);
    this.#endIfIdle();
  }

  #settings(flags: number, streamId: number, payload: Uint8Array): void {
    if (streamId !== 0) throw new ConnectionError(ErrorCode.PROTOCOL_ERROR, "SETTINGS on a stream");
    if ((flags & Flag.ACK) !== 0) {
      if (payload.byteLength !== 0) {
        throw new ConnectionError(ErrorCode.FRAME_SIZE_ERROR, "SETTINGS ACK with a payload");
      }
      this.#settingsAcked = true;
      return this.#cheap("SETTINGS ACK frames");
    }
    if (payload.byteLength % 6 !== 0) {
      throw new ConnectionError(ErrorCode.FRAME_SIZE_ERROR, "SETTINGS not a multiple of 6");
    }
    this.#cheap("SETTINGS frames");
    // Applied once, the last given: a frame of thousands of entries must not walk every stream for each.
    let initialWindow: number | undefined;
    for (let at = 0; at < payload.byteLength; at += 6) {
      const id = (payload[at] << 8) | payload[at + 1];
      const value =
        ((payload[at + 2] << 24) | (payload[at + 3] << 16) | (payload[at + 4] << 8) | payload[at + 5]) >>> 0;
      switch (id) {
        case Setting.ENABLE_PUSH:
          if (value > 1) throw new ConnectionError(ErrorCode.PROTOCOL_ERROR, "ENABLE_PUSH not 0 or 1");
          break;
        case Setting.INITIAL_WINDOW_SIZE: {
          if (value > MAX_WINDOW) {
            throw new ConnectionError(ErrorCode.FLOW_CONTROL_ERROR, "INITIAL_WINDOW_SIZE too large");
          }
          initialWindow = value;
          break;
        }
        case Setting.MAX_FRAME_SIZE:
          if (value < DEFAULT_MAX_FRAME_SIZE || value > MAX_MAX_FRAME_SIZE) {
            throw new ConnectionError(ErrorCode.PROTOCOL_ERROR, "MAX_FRAME_SIZE out of range");
          }
          this.#peerMaxFrameSize = value;
          break;
          // HEADER_TABLE_SIZE: our encoder uses no dynamic table. The others limit what we would send anyway.
      }
    }
    if (initialWindow !== undefined) {
      const delta = initialWindow - this.#peerInitialWindow;
      this.#peerInitialWindow = initialWindow;
      if (delta !== 0) {
        for (const stream of this.#streams.values()) {
          stream.sendWindow += delta;
          if (stream.sendWindow > MAX_WINDOW) {
            throw new ConnectionError(ErrorCode.FLOW_CONTROL_ERROR, "a stream window over 2^31-1");
          }
          if (delta > 0 && stream.outDataBytes > 0) this.#writable.add(stream);
        }
      }
    }
    this.#queue(frame(FrameType.SETTINGS, Flag.ACK, 0));
    this.#scheduleFlush();
  }

  #ping(flags: number, streamId: number, payload: Uint8Array): void {
    if (streamId !== 0) throw new ConnectionError(ErrorCode.PROTOCOL_ERROR, "PING on a stream");
    if (payload.byteLength !== 8) throw new ConnectionError(ErrorCode.FRAME_SIZE_ERROR, "PING not 8 bytes");
    if ((flags & Flag.ACK) !== 0) return this.#cheap("PING ACK frames");
    if (this.#sentSincePing) this.#sentSincePing = false;
    else this.#cheap("PING frames");
    this.#queue(frame(FrameType.PING, Flag.ACK, 0, payload));
    this.#scheduleFlush();
  }

  #windowUpdate(streamId: number, payload: Uint8Array): void {
    if (payload.byteLength !== 4) {
      throw new ConnectionError(ErrorCode.FRAME_SIZE_ERROR, "WINDOW_UPDATE not 4 bytes");
    }
    const increment = ((payload[0] & 0x7f) << 24 | payload[1] << 16 | payload[2] << 8 | payload[3]) >>> 0;
    if (streamId === 0) {
      if (increment === 0) throw new ConnectionError(ErrorCode.PROTOCOL_ERROR, "WINDOW_UPDATE of 0");
      this.#sendWindow += increment;
      if (this.#sendWindow > MAX_WINDOW) {
        throw new ConnectionError(ErrorCode.FLOW_CONTROL_ERROR, "connection window over 2^31-1");
      }
      // Streams with data to send are in #writable until it is all out: no walk over every stream per frame.
      if (this.#writable.size > 0) this.#scheduleFlush();
      return;
    }
    if (streamId > this.#lastStreamId) {
      throw new ConnectionError(ErrorCode.PROTOCOL_ERROR, `WINDOW_UPDATE on idle stream ${streamId}`);
    }
    const stream = this.#streams.get(streamId);
    if (stream === undefined) return this.#cheap("WINDOW_UPDATE frames on closed streams");
    if (increment === 0) {
      this.#resetStream(stream, ErrorCode.PROTOCOL_ERROR);
      return;
    }
    stream.sendWindow += increment;
    if (stream.sendWindow > MAX_WINDOW) {
      this.#resetStream(stream, ErrorCode.FLOW_CONTROL_ERROR);
      return;
    }
    if (stream.outDataBytes > 0) {
      this.#writable.add(stream);
      this.#scheduleFlush();
    }
  }

  /** A token per cheap frame (nothing for the application, a reply or state for us); a flood ends the connection. */
  #cheap(what: string, cost = 1): void {
    const now = this.#clock.now();
    this.#cheapTokens = Math.min(
      CHEAP_FRAME_BURST,
      this.#cheapTokens + (now - this.#cheapAt) * CHEAP_FRAMES_PER_SECOND / 1000,
    );
    this.#cheapAt = now;
    this.#cheapTokens -= cost;
    if (this.#cheapTokens < 0) throw new ConnectionError(ErrorCode.ENHANCE_YOUR_CALM, `flood of ${what}`);
  }

  #remoteEnd(stream: Http2Stream): void {
    this.#unackedStream.delete(stream.id);
    stream.receiveEnd();
    this.#maybeClose(stream);
  }

  /** Closes a stream whose both sides have ended, once its output is all queued. */
  #maybeClose(stream: Http2Stream): void {
    if (stream.closed || !stream.remoteEnded || !stream.localEnded || this.#writable.has(stream)) return;
    if (
      stream.outDataBytes > 0 || stream.pendingTrailers !== undefined || stream.pendingHeaders !== undefined
    ) return;
    this.#streams.delete(stream.id);
    this.#rememberClosed(stream.id, false);
    stream.close(false);
    this.#endIfIdle();
  }

  /** The stream's exchange is over for the application's owner: its whole response went out, or it closed. */
  #done(stream: Http2Stream): void {
    if (stream.doneReported) return;
    stream.doneReported = true;
    this.#opts.onStreamDone?.(stream);
  }

  /** RST_STREAM NO_ERROR on a stream whose response is complete: the client may stop sending (RFC 9113 8.1). */
  #resetComplete(stream: Http2Stream): void {
    this.#sendReset(stream, ErrorCode.NO_ERROR);
    stream.close(false);
    this.#scheduleFlush();
    this.#endIfIdle();
  }

  /** Queues RST_STREAM `code` and forgets the stream; its late frames are then ignored, not errors. */
  #sendReset(stream: Http2Stream, code: number): void {
    this.#queue(uint32Frame(FrameType.RST_STREAM, stream.id, code));
    this.#streams.delete(stream.id);
    this.#unackedStream.delete(stream.id);
    this.#rememberClosed(stream.id, true);
  }

  /** Resets a stream for the peer's error: counted as a cheap frame, or a peer could have us reset streams freely. */
  #resetStream(stream: Http2Stream, code: number): void {
    this.#cheap("streams reset for their errors");
    this.#opts.onProtocolError?.(`stream ${stream.id} reset`, code);
    stream.reset(code);
  }

  #rememberRefused(streamId: number): void {
    const runs = this.#refusedRuns;
    const last = runs[runs.length - 1];
    if (last !== undefined && last[1] === streamId - 2) last[1] = streamId;
    else {
      runs.push([streamId, streamId]);
      if (runs.length > REFUSED_RUNS) runs.shift();
    }
  }

  #refused(streamId: number): boolean {
    return this.#refusedRuns.some(([first, last]) => streamId >= first && streamId <= last);
  }

  #rememberClosed(streamId: number, byUs: boolean): void {
    this.#recentlyClosed.set(streamId, byUs);
    if (this.#recentlyClosed.size > RESET_MEMORY) {
      this.#recentlyClosed.delete(this.#recentlyClosed.keys().next().value!);
    }
  }

  #consumedConnection(bytes: number): void {
    if (bytes === 0) return;
    this.#unackedConnection += bytes;
    if (this.#unackedConnection >= this.#receiveWindowSize / 2) {
      this.#receiveWindow += this.#unackedConnection;
      this.#queue(uint32Frame(FrameType.WINDOW_UPDATE, 0, this.#unackedConnection));
      this.#unackedConnection = 0;
      this.#scheduleFlush();
    }
  }

  #streamWindow(): number {
    return Math.min(STREAM_WINDOW, this.#receiveWindowSize);
  }

  // --- output

  #queue(bytes: Uint8Array): void {
    this.#out.push(bytes);
    this.#outBytes += bytes.byteLength;
  }

  #scheduleFlush(): void {
    if (this.#flushScheduled || this.#closed) return;
    this.#flushScheduled = true;
    setImmediate(() => this.#flush());
  }

  #flush(): void {
    this.#flushScheduled = false;
    if (this.#closed) return;
    for (const stream of this.#writable) {
      if (this.#writeStream(stream)) this.#writable.delete(stream);
    }
    if (this.#outBytes > 0) {
      const out = joinBytes(this.#out, this.#outBytes);
      this.#out = [];
      this.#outBytes = 0;
      this.#transport.write(out);
      // A peer that does not read what we send (PING and SETTINGS acks, replies) is not read either.
      if (!this.#readPaused && this.#transport.writableLength > this.#opts.maxSessionMemory) {
        this.#readPaused = true;
        this.#transport.pause();
      }
    }
    if (this.#goawaySent && this.#closing && !this.#transportEnded) {
      this.#transportEnded = true;
      this.#transport.end();
    }
  }

  /** Queues what the stream has to send that the windows allow; true when nothing is left waiting. */
  #writeStream(stream: Http2Stream): boolean {
    if (stream.closed) return true;
    if (stream.pendingReset !== undefined) {
      this.#sendReset(stream, stream.pendingReset);
      // What the client had in flight to this stream still counts on the connection: it is given back as it comes.
      stream.close(true);
      this.#endIfIdle();
      return true;
    }
    if (stream.pendingHeaders !== undefined) {
      this.#headerFrames(stream.id, encodeHeaders(stream.pendingHeaders), stream.headersEndStream);
      stream.pendingHeaders = undefined;
      stream.headersSent = true;
    }
    while (stream.outDataBytes > 0) {
      const room = Math.min(stream.sendWindow, this.#sendWindow, this.#peerMaxFrameSize);
      if (room <= 0) return false;
      const head = stream.outData[0];
      let chunk: Uint8Array;
      if (head.byteLength <= room) {
        chunk = stream.outData.shift()!;
      } else {
        chunk = head.subarray(0, room);
        stream.outData[0] = head.subarray(room);
      }
      const header = new Uint8Array(FRAME_HEADER_BYTES);
      writeFrameHeader(header, 0, chunk.byteLength, FrameType.DATA, 0, stream.id);
      this.#queue(header);
      this.#queue(chunk);
      stream.outDataBytes -= chunk.byteLength;
      stream.sendWindow -= chunk.byteLength;
      this.#sendWindow -= chunk.byteLength;
      this.#sentSincePing = true;
    }
    stream.sent();
    if (stream.pendingTrailers !== undefined && stream.outDataBytes === 0) {
      const trailers = stream.pendingTrailers;
      stream.pendingTrailers = undefined;
      if (trailers.length > 0) {
        this.#headerFrames(stream.id, encodeHeaders(trailers), true);
      } else {
        // No trailers: an empty DATA frame ends the stream, which every client reads as a plain end of body.
        this.#queue(frame(FrameType.DATA, Flag.END_STREAM, stream.id));
      }
    }
    if (stream.localEnded && stream.pendingTrailers === undefined && stream.outDataBytes === 0) {
      this.#writable.delete(stream);
      this.#done(stream);
      // Complete while the client has not ended its side: the stream stays half-closed (local) until the
      // client ends it, resets it, or sends more DATA (then it is told to stop), so that its frames are still
      // checked by the rules of an open stream. While going away, nothing is waited for.
      if (!stream.remoteEnded && this.#goawaySent) this.#resetComplete(stream);
      else this.#maybeClose(stream);
    }
    return true;
  }

  /** HEADERS, with CONTINUATIONs when the block is longer than the peer's frame size. */
  #headerFrames(streamId: number, block: Uint8Array, endStream: boolean): void {
    const max = this.#peerMaxFrameSize;
    let at = 0;
    let type: number = FrameType.HEADERS;
    do {
      const part = block.subarray(at, at + max);
      at += part.byteLength;
      const last = at >= block.byteLength;
      let flags = last ? Flag.END_HEADERS : 0;
      if (type === FrameType.HEADERS && endStream) flags |= Flag.END_STREAM;
      this.#queue(frame(type, flags, streamId, part));
      type = FrameType.CONTINUATION;
    } while (at < block.byteLength);
    this.#sentSincePing = true;
  }

  #goaway(code: number): void {
    if (this.#closing) return;
    this.#closing = true;
    this.#goawaySent = true;
    this.#headerBlock = undefined;
    this.#queue(goawayFrame(this.#lastAccepted, code));
    for (const stream of this.#streams.values()) stream.close(true);
    this.#streams.clear();
    this.#writable.clear();
    if (this.#readPaused) this.#transport.resume();
    this.#scheduleFlush();
  }

  /** After GOAWAY, the socket ends once no stream is left. */
  #endIfIdle(): void {
    if (this.#goawaySent && this.#streams.size === 0 && !this.#closing) {
      this.#closing = true;
      this.#scheduleFlush();
    }
  }
}

/** Why a request's header list is malformed (RFC 9113 8.2, 8.3.1), or undefined. */
function checkRequestHeaders(fields: ReadonlyArray<HeaderField>): string | undefined {
  let regular = false;
  const seen = new Set<string>();
  for (const [name, value] of fields) {
    if (name.startsWith(":")) {
      if (regular) return `pseudo-header ${name} after a regular header`;
      if (name !== ":method" && name !== ":scheme" && name !== ":path" && name !== ":authority") {
        return `pseudo-header ${name} in a request`;
      }
      if (seen.has(name)) return `pseudo-header ${name} twice`;
      seen.add(name);
      if (name === ":path" && value === "") return "empty :path";
      continue;
    }
    regular = true;
    if (name === "" || BAD_NAME.test(name)) {
      return name !== name.toLowerCase() ? "upper-case header name" : "invalid header name";
    }
    if (BAD_VALUE.test(value)) return `invalid value of header ${name}`;
    if (CONNECTION_HEADERS.has(name)) return `connection-specific header ${name}`;
    if (name === "te" && value !== "trailers") return "te other than trailers";
    if (name === "content-length" && !/^\d{1,15}$/.test(value)) return "content-length not a number";
  }
  for (const required of [":method", ":scheme", ":path"]) {
    if (!seen.has(required)) return `no ${required}`;
  }
  return undefined;
}

/**
 * What a field name or value must not hold (RFC 9113 8.2.1): in a name, controls, space, upper case, colon (but
 * for a pseudo-header's first) and bytes past ASCII; in a value, NUL, CR and LF. (White space at either end of
 * a value is malformed too, but grpc-go clients send it and grpc-go servers take it.)
 */
// deno-lint-ignore no-control-regex -- control characters are what it finds
const BAD_NAME = /[\x00-\x20A-Z:\x7f-\uffff]/;
const BAD_VALUE = /[\0\r\n]/;

const CONNECTION_HEADERS = new Set([
  "connection",
  "keep-alive",
  "proxy-connection",
  "transfer-encoding",
  "upgrade",
]);
