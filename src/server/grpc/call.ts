/**
 * One gRPC call over one HTTP/2 stream: reads length-prefixed messages, sends replies (those of one event-loop
 * turn in one write), and ends with trailers. Every operation on the stream is guarded: a peer may reset or
 * destroy the stream at any moment, and its bytes must never throw out of here.
 */
import type { ServerHttp2Stream } from "node:http2";
import { setImmediate } from "node:timers";
import { log, logRepeated } from "../../log.ts";
import { frameAll, type FramingError, joinFrames, MessageReader } from "./framing.ts";
import { encodeGrpcMessage } from "./metadata.ts";
import type { SessionOutbound } from "./outbound.ts";
import { Status, type StatusCode } from "./status.ts";

/** What a method implementation is told about its call. */
export interface CallHandlers {
  /** One request message, in order. Not called while reading is paused. */
  onMessage(message: Uint8Array): void;
  /** The client has sent its last message. */
  onHalfClose(): void;
  /** The call is over, with this status, whichever side ended it; called once. */
  onEnd(code: StatusCode): void;
}

/** Options of one call. */
export interface CallOptions {
  /** Largest request message; a longer one ends the call with RESOURCE_EXHAUSTED. */
  maxMessageBytes: number;
  /** Milliseconds from `grpc-timeout`; past them the call ends with DEADLINE_EXCEEDED. */
  timeoutMs?: number;
  /** The connection's outbound bookkeeping; reply bytes are counted there. */
  outbound?: SessionOutbound;
}

/** NGHTTP2_NO_ERROR: sent in RST_STREAM after our trailers when the client is still sending. */
const NO_ERROR = 0;

const RESPONSE_HEADERS = { ":status": 200, "content-type": "application/grpc" };
/** A client cancel this close to the deadline is taken for the deadline passing. */
const DEADLINE_SLACK_MS = 50;

/** A gRPC call; `start` attaches the method implementation. */
export class GrpcCall {
  /** The method path, e.g. "/KafkaAmbassador/Produce". */
  readonly path: string;
  readonly #stream: ServerHttp2Stream;
  readonly #reader: MessageReader;
  readonly #outbound: SessionOutbound | undefined;
  #handlers: CallHandlers | undefined;
  #headersSent = false;
  #ended = false;
  #remoteEnded = false;
  #halfCloseReported = false;
  #readingPaused = false;
  #delivering = false;
  /** Replies of this turn, already framed. */
  #pending: Uint8Array[] = [];
  #pendingBytes = 0;
  #flushScheduled = false;
  #trailers: Record<string, string> | undefined;
  #deadline: ReturnType<typeof setTimeout> | undefined;
  /** performance.now() at which the deadline passes; Infinity without one. */
  #deadlineAt = Infinity;
  /** Called when buffered reply bytes have gone out (the stream's `drain`). */
  onDrain: (() => void) | undefined;

  constructor(stream: ServerHttp2Stream, path: string, opts: CallOptions) {
    this.#stream = stream;
    this.path = path;
    this.#reader = new MessageReader(opts.maxMessageBytes);
    this.#outbound = opts.outbound;
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
   * Reply bytes not yet taken by the client: queued for this turn, buffered in the HTTP/2 stream, and held
   * back by flow control on this connection.
   */
  get bufferedBytes(): number {
    const stream = this.#stream.destroyed ? 0 : this.#stream.writableLength;
    return this.#pendingBytes + stream + (this.#outbound?.unsent() ?? 0);
  }

  /** Attaches the implementation and starts reading. */
  start(handlers: CallHandlers): void {
    this.#handlers = handlers;
    const stream = this.#stream;
    stream.on("data", (chunk: Uint8Array) => {
      this.#reader.push(chunk);
      this.#deliver();
    });
    stream.on("end", () => {
      this.#remoteEnded = true;
      this.#deliver();
    });
    stream.on("drain", () => this.onDrain?.());
    // A reset or a destroyed stream before our trailers went out: the client is gone.
    stream.on("close", () => this.#abort(Status.CANCELLED));
    stream.on("aborted", () => this.#abort(Status.CANCELLED));
    if (stream.destroyed || stream.closed) this.#abort(Status.CANCELLED);
  }

  /** Stops delivering messages and reading the stream, so that HTTP/2 flow control pushes back. */
  pauseReading(): void {
    if (this.#readingPaused) return;
    this.#readingPaused = true;
    guard("pause", () => this.#stream.pause());
  }

  /** Delivers what was read while paused, then reads again. */
  resumeReading(): void {
    if (!this.#readingPaused || this.#ended) return;
    this.#readingPaused = false;
    this.#deliver();
    if (!this.#readingPaused && !this.#ended) guard("resume", () => this.#stream.resume());
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
   * was sent). Later calls do nothing.
   */
  end(code: StatusCode, message = ""): void {
    if (this.#ended) return;
    this.#ended = true;
    this.#clearDeadline();
    const trailers: Record<string, string> = { "grpc-status": String(code) };
    if (message !== "") trailers["grpc-message"] = encodeGrpcMessage(message);
    const stream = this.#stream;
    if (!this.#headersSent && this.#pending.length === 0) {
      guard("respond", () => {
        if (stream.destroyed || stream.closed || stream.headersSent) return;
        stream.respond({ ...RESPONSE_HEADERS, ...trailers }, { endStream: true });
      });
    } else {
      this.#trailers = trailers;
      this.#writePending();
      guard("end", () => {
        if (!stream.destroyed && !stream.writableEnded) stream.end();
      });
    }
    this.#stopReading();
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
    guard("close", () => {
      if (!this.#stream.destroyed) this.#stream.close(NO_ERROR);
    });
    this.#handlers?.onEnd(code);
  }

  /** Delivers complete messages while not paused; handles the end of the client's side. */
  #deliver(): void {
    // onMessage may pause or end the call; a nested call (from a handler) leaves the loop to the outer one.
    if (this.#delivering) return;
    this.#delivering = true;
    try {
      while (!this.#readingPaused && !this.#ended) {
        const next = this.#reader.next();
        if (next === undefined) break;
        if (next instanceof Uint8Array) {
          this.#handlers?.onMessage(next);
        } else {
          this.#protocolError(next);
          return;
        }
      }
      if (this.#remoteEnded && !this.#readingPaused && !this.#ended && !this.#halfCloseReported) {
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
    this.end(err.code, err.message);
  }

  #flush(): void {
    this.#flushScheduled = false;
    if (!this.#ended) this.#writePending();
  }

  #writePending(): void {
    const stream = this.#stream;
    if (stream.destroyed || stream.closed) {
      this.#pending = [];
      this.#pendingBytes = 0;
      return;
    }
    if (!this.#headersSent) {
      this.#headersSent = true;
      guard("respond", () => {
        if (stream.headersSent) return;
        stream.respond(RESPONSE_HEADERS, { waitForTrailers: true });
        stream.on("wantTrailers", () => this.#sendTrailers());
      });
    }
    if (this.#pending.length === 0) return;
    const batch = joinFrames(this.#pending, this.#pendingBytes);
    this.#pending = [];
    this.#pendingBytes = 0;
    guard("write", () => {
      if (stream.destroyed || stream.writableEnded) return;
      stream.write(batch);
      this.#outbound?.queued(batch.byteLength);
    });
  }

  #sendTrailers(): void {
    const stream = this.#stream;
    const trailers = this.#trailers ?? { "grpc-status": String(Status.UNKNOWN) };
    guard("sendTrailers", () => {
      if (!stream.destroyed && !stream.closed) stream.sendTrailers(trailers);
    });
  }

  /** After our end, what the client still sends is unwanted: reset its side instead of buffering it. */
  #stopReading(): void {
    const stream = this.#stream;
    if (this.#remoteEnded) return;
    // Reset only once the trailers are out, or the client would see a reset instead of the status.
    const reset = () =>
      guard("close", () => {
        if (!stream.destroyed && !stream.closed) stream.close(NO_ERROR);
      });
    if (!this.#headersSent) setImmediate(reset);
    else guard("finish", () => stream.once("finish", () => setImmediate(reset)));
  }

  #clearDeadline(): void {
    if (this.#deadline !== undefined) clearTimeout(this.#deadline);
    this.#deadline = undefined;
  }
}

/**
 * Runs one operation on a stream or session that the peer may have torn down already; a failure is logged
 * (rate-limited, at debug level: it is the peer's doing) and swallowed.
 */
export function guard(what: string, op: () => void): void {
  try {
    op();
  } catch (err) {
    logRepeated(`grpc: ${what} failed`, "debug", `grpc: ${what} on a closed stream failed`, { error: err });
  }
}
