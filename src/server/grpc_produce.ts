/** One `Produce` bidi stream: a reply per record, with a bound on the records not yet answered. */
import { status as GrpcStatus } from "@grpc/grpc-js";
import type { ServerDuplexStream } from "@grpc/grpc-js";
import type { AckLevel, Message, ProducerFacade } from "../producer/types.ts";
import type { CallMetrics, MethodMetrics } from "./grpc_metrics.ts";
import { parseAck } from "./params.ts";
import { type Refusal, refusalOf } from "./refusal.ts";
import { topicProblem } from "./topic.ts";

/** ProdRq as proto-loader decodes it (keepCase, no defaults: absent fields are undefined). */
export interface ProdRq {
  topic?: string;
  message?: Uint8Array;
  /** A Long; only echoed, never read. */
  streamOffset?: unknown;
  ack?: string;
  key?: Uint8Array;
  headers?: Array<{ key?: string; value?: Uint8Array }>;
  partition?: number;
}

/** ProdRs as proto-loader encodes it. */
export interface ProdRs {
  streamOffset?: unknown;
  error?: string;
  code?: number;
  partition?: number;
  offset?: string;
}

/**
 * Records read but not yet answered, per stream. Past it the stream stops reading, so HTTP/2 flow control
 * pushes back on the client instead of the server buffering without bound.
 */
export const MAX_IN_FLIGHT = 1024;

const EMPTY = new Uint8Array(0);

/** Drives one Produce call until it ends; `onClose` runs once when it does. */
export class ProduceStream {
  private inFlight = 0;
  private paused = false;
  private halfClosed = false;
  private closeWhenIdleRequested = false;
  private closed = false;
  private readonly metrics: CallMetrics;

  constructor(
    private readonly call: ServerDuplexStream<ProdRq, ProdRs>,
    private readonly facade: ProducerFacade,
    private readonly isDraining: () => boolean,
    methodMetrics: MethodMetrics,
    private readonly onClose: (stream: ProduceStream) => void,
  ) {
    this.metrics = methodMetrics.begin();
    call.on("data", (rq: ProdRq) => this.onRecord(rq));
    call.on("end", () => {
      this.halfClosed = true;
      this.maybeFinish();
    });
    call.on("drain", () => this.maybeResume());
    call.on("cancelled", () => this.close(GrpcStatus.CANCELLED));
    // grpc-js turns a stream error into the call's status itself; this only records that the call is over.
    call.on("error", () => this.close(GrpcStatus.UNKNOWN));
  }

  /** Ends the stream with UNAVAILABLE once every record read so far has been answered (server shutdown). */
  closeWhenIdle(): void {
    this.closeWhenIdleRequested = true;
    this.maybeFinish();
  }

  private onRecord(rq: ProdRq): void {
    this.metrics.method.received.inc();
    if (this.closed) return;
    this.inFlight++;
    if (!this.paused && this.saturated()) {
      this.paused = true;
      this.call.pause();
    }
    const offset = rq.streamOffset;
    if (this.isDraining()) {
      this.refuse(offset, {
        kind: "unavailable",
        status: 503,
        reason: "shutting down",
        retryAfterSeconds: 1,
      });
      return;
    }
    const parsed = this.parse(rq);
    if (typeof parsed === "string") {
      this.refuse(offset, { kind: "invalid", status: 400, reason: parsed });
      return;
    }
    if (parsed.message.value.byteLength > this.facade.maxMessageBytes) {
      const reason = `message too large: ${parsed.message.value.byteLength} bytes, at most ` +
        `${this.facade.maxMessageBytes} bytes are accepted`;
      this.refuse(offset, { kind: "too_large", status: 413, reason });
      return;
    }
    const { message, ack } = parsed;
    this.facade.produce(message, ack).then(
      (result) => {
        this.reply(
          ack === "kafka"
            ? { streamOffset: offset, partition: result.partition, offset: result.offset }
            : { streamOffset: offset },
        );
      },
      (err) => this.refuse(offset, refusalOf(err, "grpc", message.topic)),
    );
  }

  /** Turns a ProdRq into a message and ack level, or says why it is invalid. */
  private parse(rq: ProdRq): { message: Message; ack: AckLevel } | string {
    const topic = rq.topic ?? "";
    const bad = topicProblem(topic);
    if (bad !== undefined) return bad;
    const ack = parseAck(rq.ack);
    if (ack === undefined) return `invalid ack: ${JSON.stringify(rq.ack)}: want none, wal or kafka`;
    const message: Message = { topic, value: rq.message ?? EMPTY };
    if (rq.key !== undefined) message.key = rq.key;
    if (rq.headers !== undefined && rq.headers.length > 0) {
      message.headers = rq.headers.map((h) => [h.key ?? "", h.value ?? EMPTY]);
    }
    if (rq.partition !== undefined && rq.partition !== -1) {
      if (rq.partition < 0) return `invalid partition: ${rq.partition}: want -1 (any) or a partition >= 0`;
      message.partition = rq.partition;
    }
    return { message, ack };
  }

  private refuse(streamOffset: unknown, refusal: Refusal): void {
    this.reply({ streamOffset, error: `${refusal.kind}: ${refusal.reason}`, code: refusal.status });
  }

  private reply(rs: ProdRs): void {
    this.inFlight--;
    if (this.closed) return;
    this.call.write(rs);
    this.metrics.method.sent.inc();
    this.maybeResume();
    this.maybeFinish();
  }

  /** Too many records unanswered, or too many answers the client has not read yet. */
  private saturated(): boolean {
    return this.inFlight >= MAX_IN_FLIGHT || this.call.writableLength >= MAX_IN_FLIGHT;
  }

  private maybeResume(): void {
    if (!this.paused || this.closed) return;
    // Resuming at half the bound, not just below it, keeps the stream from flapping on every reply.
    if (this.inFlight > MAX_IN_FLIGHT / 2 || this.call.writableLength > MAX_IN_FLIGHT / 2) return;
    this.paused = false;
    this.call.resume();
  }

  private maybeFinish(): void {
    if (this.closed || this.inFlight > 0) return;
    if (this.halfClosed) {
      this.close(GrpcStatus.OK);
      this.call.end();
    } else if (this.closeWhenIdleRequested) {
      this.close(GrpcStatus.UNAVAILABLE);
      this.call.emit("error", { code: GrpcStatus.UNAVAILABLE, details: "shutting down" });
    }
  }

  private close(code: number): void {
    if (this.closed) return;
    this.closed = true;
    this.metrics.handled(code);
    this.onClose(this);
  }
}
