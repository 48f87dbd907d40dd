/**
 * One HTTP/2 request stream as the gRPC layer sees it: request headers, DATA in order (with flow control
 * pushing back while reading is paused), a response of headers, DATA and trailers, and a reset. What happens
 * on the wire is the connection's (connection.ts); this object holds the stream's state and its queues.
 */
import type { HeaderField } from "./hpack.ts";

/** What the owner of a stream is told; each may be left unset. */
export interface StreamEvents {
  /** A DATA payload, in order. Not called while paused. */
  onData?(chunk: Uint8Array): void;
  /** The client's side ended (END_STREAM), after its last onData. Not called while paused. */
  onEnd?(): void;
  /** Queued response bytes have gone out (after `bufferedBytes` had grown). */
  onDrain?(): void;
  /**
   * The stream is over; `reset` when it ended by RST_STREAM (from either side) or with its connection rather
   * than by both sides ending. Called once.
   */
  onClose?(reset: boolean): void;
}

/** What a stream asks of its connection. */
export interface StreamOwner {
  /** The stream has something to send (headers, DATA, trailers or a reset). */
  wantsWrite(stream: Http2Stream): void;
  /** `bytes` of the stream's DATA were taken by the application; the peer may send that much more. */
  consumed(stream: Http2Stream, bytes: number): void;
  /** The stream is over (after its onClose). */
  streamClosed(stream: Http2Stream): void;
}

/** A request stream of a connection; states per RFC 9113 5.1 on the server's side. */
export class Http2Stream {
  readonly id: number;
  /** The request headers, names in lower case, in order (pseudo-headers first). */
  readonly headers: ReadonlyArray<HeaderField>;
  #events: StreamEvents = {};

  readonly #owner: StreamOwner;
  // --- inbound
  /** DATA held while paused or not yet attached. */
  #inbound: Uint8Array[] = [];
  /** Until `attach`, DATA is held as if paused. */
  #paused = true;
  #attached = false;
  #remoteEnded = false;
  #endDelivered = false;
  // --- outbound (read by the connection)
  /** Response headers to send, once. */
  pendingHeaders: ReadonlyArray<HeaderField> | undefined;
  /** Whether those headers end the stream (a trailers-only response). */
  headersEndStream = false;
  headersSent = false;
  /** DATA waiting for flow-control window or the next write. */
  readonly outData: Uint8Array[] = [];
  outDataBytes = 0;
  /** Trailers to send once outData is out. */
  pendingTrailers: ReadonlyArray<HeaderField> | undefined;
  /** An RST_STREAM to send, with this error code. */
  pendingReset: number | undefined;
  /** Bytes the peer lets us send on this stream. */
  sendWindow: number;
  /** DATA bytes we may still receive before the peer overruns our window. */
  receiveWindow: number;
  /** The request's content-length less the DATA bytes received so far; undefined without one. */
  expectedBytes: number | undefined;
  /** Whether the connection has told the owner the exchange is over (ConnectionOptions.onStreamDone). */
  doneReported = false;
  #localEnded = false;
  #closed = false;
  #drainWanted = false;

  constructor(
    owner: StreamOwner,
    id: number,
    headers: ReadonlyArray<HeaderField>,
    sendWindow: number,
    receiveWindow: number,
  ) {
    this.#owner = owner;
    this.id = id;
    this.headers = headers;
    this.sendWindow = sendWindow;
    this.receiveWindow = receiveWindow;
    const length = this.header("content-length");
    this.expectedBytes = length === undefined ? undefined : Number(length);
  }

  /** The first value of a request header, if present. */
  header(name: string): string | undefined {
    for (const [n, v] of this.headers) if (n === name) return v;
    return undefined;
  }

  /** Whether the stream is over (both sides ended, or reset). */
  get closed(): boolean {
    return this.#closed;
  }

  /** Whether we have ended our side (trailers, a trailers-only response, or a reset). */
  get localEnded(): boolean {
    return this.#localEnded;
  }

  /** Whether the client has ended its side. */
  get remoteEnded(): boolean {
    return this.#remoteEnded;
  }

  /** Whether our whole response (headers, DATA, trailers) has been written, without a reset. */
  get responseSent(): boolean {
    return this.#localEnded && !this.#closed && this.pendingHeaders === undefined &&
      this.outDataBytes === 0 &&
      this.pendingTrailers === undefined && this.pendingReset === undefined;
  }

  /** Response DATA bytes queued and not yet written to the connection. */
  get bufferedBytes(): number {
    return this.outDataBytes;
  }

  /** Starts delivering to `events` what arrived and arrives (unless paused since). */
  attach(events: StreamEvents): void {
    this.#events = events;
    if (this.#attached) return;
    this.#attached = true;
    this.resume();
  }

  /** Sends the response headers; `endStream` makes them the whole response (trailers-only). */
  respond(headers: ReadonlyArray<HeaderField>, endStream = false): void {
    if (this.#localEnded || this.pendingHeaders !== undefined || this.headersSent) return;
    this.pendingHeaders = headers;
    this.headersEndStream = endStream;
    if (endStream) this.#localEnded = true;
    this.#owner.wantsWrite(this);
  }

  /** Queues response DATA (after the headers); it goes out as the peer's flow-control windows allow. */
  write(data: Uint8Array): void {
    if (this.#localEnded || data.byteLength === 0) return;
    this.outData.push(data);
    this.outDataBytes += data.byteLength;
    this.#drainWanted = true;
    this.#owner.wantsWrite(this);
  }

  /** Ends the response with trailers, after the queued DATA; with none, an empty DATA frame ends it. */
  end(trailers: ReadonlyArray<HeaderField>): void {
    if (this.#localEnded) return;
    this.#localEnded = true;
    this.pendingTrailers = trailers;
    this.#owner.wantsWrite(this);
  }

  /** Resets the stream (RST_STREAM with `code`); queued output is dropped. */
  reset(code: number): void {
    if (this.#closed || this.pendingReset !== undefined) return;
    this.#localEnded = true;
    this.pendingReset = code;
    this.outData.length = 0;
    this.outDataBytes = 0;
    this.pendingTrailers = undefined;
    this.#owner.wantsWrite(this);
  }

  /** Stops delivering DATA; the client's window is no longer opened, so flow control pushes back. */
  pause(): void {
    this.#paused = true;
  }

  /** Delivers what was held, then goes on delivering. */
  resume(): void {
    if (!this.#paused || !this.#attached) return;
    this.#paused = false;
    while (!this.#paused && this.#inbound.length > 0 && !this.#closed) {
      const chunk = this.#inbound.shift()!;
      this.#deliver(chunk);
    }
    this.#maybeEnd();
  }

  // --- called by the connection

  /** DATA from the client (already counted against the windows). */
  receive(chunk: Uint8Array): void {
    if (this.#paused || this.#inbound.length > 0) this.#inbound.push(chunk);
    else this.#deliver(chunk);
  }

  /** END_STREAM from the client. */
  receiveEnd(): void {
    this.#remoteEnded = true;
    this.#maybeEnd();
  }

  /** The connection wrote our DATA; tells the owner once the queue is empty. */
  sent(): void {
    if (this.outDataBytes === 0 && this.#drainWanted) {
      this.#drainWanted = false;
      this.#events.onDrain?.();
    }
  }

  /** The stream is over; `reset` as in StreamEvents.onClose. */
  close(reset: boolean): void {
    if (this.#closed) return;
    this.#closed = true;
    this.#localEnded = true;
    // DATA never taken still counts against the connection's window: give it back.
    let held = 0;
    for (const chunk of this.#inbound) held += chunk.byteLength;
    this.#inbound = [];
    this.#owner.consumed(this, held);
    this.outData.length = 0;
    this.outDataBytes = 0;
    this.#events.onClose?.(reset);
    this.#owner.streamClosed(this);
  }

  #deliver(chunk: Uint8Array): void {
    this.#owner.consumed(this, chunk.byteLength);
    this.#events.onData?.(chunk);
  }

  #maybeEnd(): void {
    if (
      this.#remoteEnded && !this.#endDelivered && !this.#paused && this.#inbound.length === 0 && !this.#closed
    ) {
      this.#endDelivered = true;
      this.#events.onEnd?.();
    }
  }
}
