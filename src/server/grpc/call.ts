/**
 * One gRPC call over one HTTP/2 stream (src/server/http2): reads length-prefixed messages, sends replies (those
 * of one event-loop turn in one write), and ends with trailers. The stream never throws; once the client has
 * reset it or the connection is gone, what is sent to it is dropped.
 */
import { setImmediate } from "node:timers";
import { log, logRepeated } from "../../log.ts";
import { ErrorCode, joinBytes } from "../http2/frame.ts";
import type { HeaderField } from "../http2/hpack.ts";
import type { Http2Stream } from "../http2/stream.ts";
import { type Encoding, frameAll, type FramingError, MessageReader } from "./framing.ts";
import { encodeGrpcMessage } from "./metadata.ts";
import { Status, type StatusCode } from "./status.ts";
/** What a method implementation is told about its call. */
export interface CallHandlers {
  /** One request message, in order. Not called while reading is paused. */
  onMessage(message: Uint8Array): void;
  /** The client has sent its last message. */
  onHalfClose(): void;
  /**
   * The request cannot be read on (a message too large, cut short, or not decompressible): nothing more is
   * delivered, and the handler ends the call with `code` once it has answered what it read. Without it the call
   * ends at once.
   */
  onBadRequest?(code: StatusCode, message: string): void;
  /** The call is over, with this status, whichever side ended it; called once. */
  onEnd(code: StatusCode): void;
}

/** Options of one call. */
export interface CallOptions {
  /** Largest request message; a longer one ends the call with RESOURCE_EXHAUSTED. */
  maxMessageBytes: number;
  /** Milliseconds from `grpc-timeout`; past them the call ends with DEADLINE_EXCEEDED. */
  timeoutMs?: number;
  /** The request's `grpc-encoding` unless `identity`: what its compressed messages are in. */
  encoding?: Encoding;
}

const RESPONSE_HEADERS: HeaderField[] = [[":status", "200"], ["content-type", "application/grpc"]];
/** A client cancel this close to the deadline is taken for the deadline passing. */
const DEADLINE_SLACK_MS = 50;

/** A gRPC call; `start` attaches the method implementation. */
export class GrpcCall {
  /** The method path, e.g. "/KafkaAmbassador/Produce". */
  readonly path: string;
  readonly #stream: Http2Stream;
  readonly #reader: MessageReader;
  #handlers: CallHandlers | undefined;
  #headersSent = false;
  #ended = false;
  #remoteEnded = false;
  #halfCloseReported = false;
  #readingPaused = false;
  /** A request message could not be read: nothing more is. */
  #broken = false;
  #delivering = false;
  /** Replies of this turn, already framed. */
  #pending: Uint8Array[] = [];
  #pendingBytes = 0;
  #flushScheduled = false;
  #deadline: ReturnType<typeof setTimeout> | undefined;
  /** performance.now() at which the deadline passes; Infinity without one. */
  #deadlineAt = Infinity;
  /** Called when buffered reply bytes have gone out (the stream's queue is empty again). */
  onDrain: (() => void) | undefined;

  constructor(stream: Http2Stream, path: string, opts: CallOptions) {
    this.#stream = stream;
    this.path = path;
    this.#reader = new MessageReader(opts.maxMessageBytes, opts.encoding);
    if (opts.timeoutMs !== undefined) {
      this.#deadlineAt = performance.now() + opts.timeoutMs;
      this.#deadline = setTimeout(() => {
        this.#deadline = undefined;
        this.end(Status.DEADLINE_EXCEEDED, "deadline exceeded");
      }, opts.timeoutMs);
    }
  }

  /** Whether the call is over (ended by either side). */
  get ended(): boolean {
    return this.#ended;
  }

  /**
   * Reply bytes not yet taken by the client: queued for this turn, and held in the stream by HTTP/2 flow
   * control (the client's window is full).
   */
  get bufferedBytes(): number {
    return this.#pendingBytes + this.#stream.bufferedBytes;
  }

  /** Attaches the implementation and starts reading. */
  start(handlers: CallHandlers): void {
    this.#handlers = handlers;
    const stream = this.#stream;
    stream.attach({
      onData: (chunk) => {
        if (this.#ended || this.#broken) return;
        this.#reader.push(chunk);
        this.#deliver();
      },
      onEnd: () => {
        this.#remoteEnded = true;
        this.#deliver();
      },
      onDrain: () => this.onDrain?.(),
      // Closed before our trailers went out: the client reset the stream, or the connection is gone.
      onClose: () => this.#abort(Status.CANCELLED),
    });
    if (stream.closed) this.#abort(Status.CANCELLED);
  }

  /** Stops delivering messages and reading the stream, so that HTTP/2 flow control pushes back. */
  pauseReading(): void {
    if (this.#readingPaused) return;
    this.#readingPaused = true;
    this.#stream.pause();
  }

  /** Delivers what was read while paused, then reads again. */
  resumeReading(): void {
    if (!this.#readingPaused || this.#ended || this.#broken) return;
    this.#readingPaused = false;
    this.#deliver();
    if (!this.#readingPaused && !this.#ended) this.#stream.resume();
  }

  /** Queues one reply message; the replies of one event-loop turn go out in one write. */
  send(message: Uint8Array): void {
    this.sendFramed(frameAll([message], message.byteLength));
  }

  /** Queues reply messages already framed (length-prefixed), as send would. */
  sendFramed(framed: Uint8Array): void {
    if (this.#ended) return;
    this.#pending.push(framed);
    this.#pendingBytes += framed.byteLength;
    if (!this.#flushScheduled) {
      this.#flushScheduled = true;
      setImmediate(() => this.#flush());
    }
  }

  /**
   * Ends the call with `code`: queued replies go out, then trailers (or a trailers-only response when nothing
   * was sent). A client that goes on sending after them gets RST_STREAM NO_ERROR (http2/connection.ts). Later
   * calls do nothing.
   */
  end(code: StatusCode, message = ""): void {
    if (this.#ended) return;
    this.#ended = true;
    this.#clearDeadline();
    const trailers: HeaderField[] = [["grpc-status", String(code)]];
    if (message !== "") trailers.push(["grpc-message", encodeGrpcMessage(message)]);
    if (!this.#headersSent && this.#pending.length === 0) {
      this.#headersSent = true;
      this.#stream.respond([...RESPONSE_HEADERS, ...trailers], true);
    } else {
      this.#writePending();
      this.#stream.end(trailers);
    }
    this.#handlers?.onEnd(code);
  }

  #abort(code: StatusCode): void {
    if (this.#ended) return;
    // The client's own timer fires a moment before ours (its deadline was set before the request travelled):
    // a cancel at the deadline is the deadline passing, and is counted so.
    if (code === Status.CANCELLED && performance.now() >= this.#deadlineAt - DEADLINE_SLACK_MS) {
      code = Status.DEADLINE_EXCEEDED;
    }
    this.#ended = true;
    this.#clearDeadline();
    this.#pending = [];
    this.#pendingBytes = 0;
    this.#stream.reset(ErrorCode.NO_ERROR);
    this.#handlers?.onEnd(code);
  }
  /** Delivers complete messages while not paused; handles the end of the client's side. */
  #deliver(): void {
    // onMessage may pause or end the call; a nested call (from a handler) leaves the loop to the outer one.
    if (this.#delivering) return;
    this.#delivering = true;
    try {
      while (!this.#readingPaused && !this.#ended && !this.#broken) {
        const next = this.#reader.next();
        if (next === undefined) break;
        if (next instanceof Uint8Array) {
          this.#handlers?.onMessage(next);
        } else {
          this.#protocolError(next);
          return;
        }
      }
      if (
        this.#remoteEnded && !this.#readingPaused && !this.#ended && !this.#broken && !this.#halfCloseReported
      ) {
        const cut = this.#reader.finish();
        if (cut !== undefined) {
          this.#protocolError(cut);
          return;
        }
        this.#halfCloseReported = true;
        this.#handlers?.onHalfClose();
      }
    } catch (err) {
      // A method implementation failed on this request: the call ends, the server goes on.
      log("error", "grpc: call handler failed", { error: err });
      this.end(Status.INTERNAL, "internal error");
    } finally {
      this.#delivering = false;
    }
  }

  #protocolError(err: FramingError): void {
    logRepeated("grpc: bad request framing", "debug", "grpc: bad request framing", { reason: err.message });
    const onBadRequest = this.#handlers?.onBadRequest;
    if (onBadRequest === undefined) return this.end(err.code, err.message);
    this.#broken = true;
    this.pauseReading();
    onBadRequest(err.code, err.message);
  }

  #flush(): void {
    this.#flushScheduled = false;
    if (!this.#ended) this.#writePending();
  }

  #writePending(): void {
    const stream = this.#stream;
    if (!this.#headersSent) {
      this.#headersSent = true;
      stream.respond(RESPONSE_HEADERS);
    }
    if (this.#pending.length === 0) return;
    const batch = joinBytes(this.#pending, this.#pendingBytes);
    this.#pending = [];
    this.#pendingBytes = 0;
    stream.write(batch);
  }

  #clearDeadline(): void {
    if (this.#deadline !== undefined) clearTimeout(this.#deadline);
    this.#deadline = undefined;
  }
}
