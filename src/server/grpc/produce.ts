/** One `Produce` bidi stream: a reply per record, with bounds on what is read but not answered or not taken. */
import type { AckLevel, Message } from "../../message.ts";
import type { ProducerFacade } from "../../producer/types.ts";
import { parseAck } from "../params.ts";
import { type Refusal, refusalOf } from "../refusal.ts";
import { topicProblem } from "../topic.ts";
import type { GrpcCall } from "./call.ts";
import { CodecError, decodeProdRq, encodeProdRs, type ProdRq, type ProdRs } from "./codec.ts";
import type { CallMetrics, MethodMetrics } from "./metrics.ts";
import { Status, type StatusCode } from "./status.ts";

/**
 * Records read but not yet answered, per stream. Past it the stream stops reading, so HTTP/2 flow control
 * pushes back on the client instead of the server buffering without bound.
 */
export const MAX_IN_FLIGHT = 1024;

/**
 * Reply bytes the client has not taken yet (its HTTP/2 window is full), per stream. Past it the stream stops
 * reading too: a client that never reads its replies must not make the server read and produce without end.
 */
export const MAX_UNSENT_REPLY_BYTES = 64 * 1024;

/** How often a stream paused for unsent replies looks whether the client has taken them. */
const RECHECK_MS = 20;

/** Drives one Produce call until it ends; `onClose` runs once when it does. */
export class ProduceStream {
  readonly #call: GrpcCall;
  readonly #facade: ProducerFacade;
  readonly #isDraining: () => boolean;
  readonly #metrics: CallMetrics;
  readonly #onClose: (stream: ProduceStream) => void;
  #inFlight = 0;
  #paused = false;
  #halfClosed = false;
  #closeWhenIdleRequested = false;
  #closed = false;
  #recheck: ReturnType<typeof setTimeout> | undefined;

  constructor(
    call: GrpcCall,
    facade: ProducerFacade,
    isDraining: () => boolean,
    methodMetrics: MethodMetrics,
    onClose: (stream: ProduceStream) => void,
  ) {
    this.#call = call;
    this.#facade = facade;
    this.#isDraining = isDraining;
    this.#onClose = onClose;
    this.#metrics = methodMetrics.begin();
    call.onDrain = () => this.#maybeResume();
    call.start({
      onMessage: (bytes) => this.#onRecord(bytes),
      onHalfClose: () => {
        this.#halfClosed = true;
        this.#maybeFinish();
      },
      onEnd: (code) => this.#close(code),
    });
  }

  /** Ends the stream with UNAVAILABLE once every record read so far has been answered (server shutdown). */
  closeWhenIdle(): void {
    this.#closeWhenIdleRequested = true;
    this.#maybeFinish();
  }

  #onRecord(bytes: Uint8Array): void {
    this.#metrics.method.received.inc();
    let rq: ProdRq;
    try {
      rq = decodeProdRq(bytes);
    } catch (err) {
      const reason = err instanceof CodecError ? err.message : String(err);
      this.#call.end(Status.INTERNAL, `cannot decode ProdRq: ${reason}`);
      return;
    }
    this.#inFlight++;
    if (!this.#paused && this.#saturated()) {
      this.#paused = true;
      this.#call.pauseReading();
    }
    const offset = rq.streamOffset;
    if (this.#isDraining()) {
      this.#refuse(offset, {
        kind: "unavailable",
        status: 503,
        reason: "shutting down",
        retryAfterSeconds: 1,
      });
      return;
    }
    const parsed = this.#parse(rq);
    if (typeof parsed === "string") {
      this.#refuse(offset, { kind: "invalid", status: 400, reason: parsed });
      return;
    }
    const { message, ack } = parsed;
    if (message.value.byteLength > this.#facade.maxMessageBytes) {
      const reason = `message too large: ${message.value.byteLength} bytes, at most ` +
        `${this.#facade.maxMessageBytes} bytes are accepted`;
      this.#refuse(offset, { kind: "too_large", status: 413, reason });
      return;
    }
    this.#facade.produce(message, ack).then(
      (result) => {
        const rs: ProdRs = { streamOffset: offset, error: "", code: 0 };
        if (ack === "kafka") {
          rs.partition = result.partition;
          rs.offset = toInt64(result.offset);
        }
        this.#reply(rs);
      },
      (err) => this.#refuse(offset, refusalOf(err, "grpc", message.topic)),
    );
  }

  /** Turns a ProdRq into a message and ack level, or says why it is invalid. */
  #parse(rq: ProdRq): { message: Message; ack: AckLevel } | string {
    const bad = topicProblem(rq.topic);
    if (bad !== undefined) return bad;
    const ack = parseAck(rq.ack);
    if (ack === undefined) return `invalid ack: ${JSON.stringify(rq.ack)}: want none, wal or kafka`;
    const message: Message = { topic: rq.topic, value: rq.message };
    if (rq.key !== undefined) message.key = rq.key;
    if (rq.headers.length > 0) message.headers = rq.headers.map((h) => [h.key, h.value]);
    if (rq.partition !== undefined && rq.partition !== -1) {
      if (rq.partition < 0) return `invalid partition: ${rq.partition}: want -1 (any) or a partition >= 0`;
      message.partition = rq.partition;
    }
    return { message, ack };
  }

  #refuse(streamOffset: bigint, refusal: Refusal): void {
    this.#reply({ streamOffset, error: `${refusal.kind}: ${refusal.reason}`, code: refusal.status });
  }

  #reply(rs: ProdRs): void {
    this.#inFlight--;
    if (this.#closed) return;
    this.#call.send(encodeProdRs(rs));
    this.#metrics.method.sent.inc();
    if (this.#paused) this.#maybeResume();
    this.#maybeFinish();
  }

  /** Too many records unanswered, or too many reply bytes the client has not taken. */
  #saturated(): boolean {
    return this.#inFlight >= MAX_IN_FLIGHT || this.#call.bufferedBytes >= MAX_UNSENT_REPLY_BYTES;
  }

  #maybeResume(): void {
    if (!this.#paused || this.#closed) return;
    // Resuming at half the bounds, not just below them, keeps the stream from flapping on every reply.
    if (this.#inFlight > MAX_IN_FLIGHT / 2) return;
    if (this.#call.bufferedBytes > MAX_UNSENT_REPLY_BYTES / 2) {
      // Nothing announces that the client took its replies (see outbound.ts): look again a little later.
      this.#recheck ??= setTimeout(() => {
        this.#recheck = undefined;
        this.#maybeResume();
      }, RECHECK_MS);
      return;
    }
    this.#paused = false;
    this.#call.resumeReading();
  }

  #maybeFinish(): void {
    if (this.#closed || this.#inFlight > 0) return;
    if (this.#halfClosed) {
      this.#call.end(Status.OK);
    } else if (this.#closeWhenIdleRequested) {
      this.#call.end(Status.UNAVAILABLE, "shutting down");
    }
  }

  #close(code: StatusCode): void {
    if (this.#closed) return;
    this.#closed = true;
    if (this.#recheck !== undefined) clearTimeout(this.#recheck);
    this.#metrics.handled(code);
    this.#onClose(this);
  }
}

/** The facade's decimal offset as an int64; undefined when it is not one. */
function toInt64(offset: string | undefined): bigint | undefined {
  if (offset === undefined || !/^-?\d{1,19}$/.test(offset)) return undefined;
  return BigInt.asIntN(64, BigInt(offset));
}
