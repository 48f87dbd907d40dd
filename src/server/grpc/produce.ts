/**
 * One `Produce` bidi stream: a reply per record, with bounds on what is read but not answered or not taken. The
 * records of one read go to the facade together, one `produceMany` call per ack level, so that a busy stream
 * costs one librdkafka call per partition run and one WAL group per read instead of one of each per record.
 */
import type { AckLevel, Message } from "../../message.ts";
import { ProduceError, type ProduceResult, type ProducerFacade } from "../../producer/types.ts";
import type { Gate, Principal } from "../auth.ts";
import { parseAck } from "../params.ts";
import { type Refusal, refusalOf, STATUS_BY_KIND } from "../refusal.ts";
import { topicProblem } from "../topic.ts";
import type { GrpcCall } from "./call.ts";
import { CodecError, decodeProdRq, encodeProdRsFramed, type ProdRq, type ProdRs } from "./codec.ts";
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

/** The refusal of records read while the server drains. */
const SHUTTING_DOWN: Refusal = {
  kind: "unavailable",
  status: 503,
  reason: "shutting down",
  retryAfterSeconds: 1,
};

/** A record of a turn that passed the checks and goes to the facade. */
interface Slot {
  /** Position among the records of its turn; replies that go out together keep this order. */
  readonly index: number;
  readonly streamOffset: bigint;
  readonly message: Message;
}

/** A reply decided without the facade, with its record's position in its turn. */
interface Placed {
  readonly index: number;
  readonly rs: ProdRs;
}

/** The records read in one turn of the event loop: one read of the stream, or what a resume delivered. */
class Turn {
  /** Records read, refused and undecodable ones included. */
  received = 0;
  /** The records for the facade, per ack level, in request order. */
  readonly byAck = new Map<AckLevel, Slot[]>();
  /** Records refused up front, in request order; they are answered with the first ack level that completes. */
  refused: Placed[] = [];

  add(ack: AckLevel, slot: Slot): void {
    const slots = this.byAck.get(ack);
    if (slots === undefined) this.byAck.set(ack, [slot]);
    else slots.push(slot);
  }

  refuse(index: number, streamOffset: bigint, refusal: Refusal): void {
    this.refused.push({ index, rs: refusedReply(streamOffset, refusal) });
  }
}

/** The caller of a stream and the check of each record's topic; absent when no Gate is configured. */
export interface StreamAccess {
  gate: Gate;
  principal: Principal;
}

/** Drives one Produce call until it ends; `onClose` runs once when it does. */
export class ProduceStream {
  readonly #call: GrpcCall;
  readonly #facade: ProducerFacade;
  readonly #isDraining: () => boolean;
  readonly #metrics: CallMetrics;
  readonly #onClose: (stream: ProduceStream) => void;
  readonly #access: StreamAccess | undefined;
  #inFlight = 0;
  #paused = false;
  #halfClosed = false;
  #closeWhenIdleRequested = false;
  #closed = false;
  /** The turn records are being added to; undefined between turns. */
  #turn: Turn | undefined;
  #recheck: ReturnType<typeof setTimeout> | undefined;

  constructor(
    call: GrpcCall,
    facade: ProducerFacade,
    isDraining: () => boolean,
    methodMetrics: MethodMetrics,
    onClose: (stream: ProduceStream) => void,
    access?: StreamAccess,
  ) {
    this.#call = call;
    this.#access = access;
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
    const turn = this.#currentTurn();
    const index = turn.received++;
    let rq: ProdRq;
    try {
      rq = decodeProdRq(bytes);
    } catch (err) {
      const reason = err instanceof CodecError ? err.message : String(err);
      this.#call.end(Status.INTERNAL, `cannot decode ProdRq: ${reason}`);
      return;
    }
    // A record counts against the bound from here until its reply is sent, the wait for its turn's dispatch too.
    this.#inFlight++;
    if (!this.#paused && this.#saturated()) {
      this.#paused = true;
      this.#call.pauseReading();
    }
    const offset = rq.streamOffset;
    if (this.#isDraining()) {
      turn.refuse(index, offset, SHUTTING_DOWN);
      return;
    }
    const parsed = this.#parse(rq);
    if (typeof parsed === "string") {
      turn.refuse(index, offset, { kind: "invalid", status: 400, reason: parsed });
      return;
    }
    const { message, ack } = parsed;
    const access = this.#access;
    if (access !== undefined && !access.gate.mayWrite(access.principal, message.topic)) {
      access.gate.count(access.principal.name, "forbidden");
      const reason = access.gate.forbidden(access.principal, message.topic);
      turn.refuse(index, offset, { kind: "forbidden", status: STATUS_BY_KIND.forbidden, reason });
      return;
    }
    if (message.value.byteLength > this.#facade.maxMessageBytes) {
      const reason = `message too large: ${message.value.byteLength} bytes, at most ` +
        `${this.#facade.maxMessageBytes} bytes are accepted`;
      turn.refuse(index, offset, { kind: "too_large", status: 413, reason });
      return;
    }
    turn.add(ack, { index, streamOffset: offset, message });
  }

  /** The current turn, started with the first record read after the last one was dispatched. */
  #currentTurn(): Turn {
    let turn = this.#turn;
    if (turn === undefined) {
      turn = new Turn();
      this.#turn = turn;
      // The call delivers the complete messages of a read (or of a resume) synchronously, until it pauses or
      // ends; a microtask runs after that and before any further read, so the turn holds what was delivered.
      queueMicrotask(() => this.#dispatch());
    }
    return turn;
  }

  /**
   * Hands the records of the current turn to the facade, one call per ack level. Records read before the call
   * ended in the same read (a later record cut short or undecodable) are produced, as each read record is.
   */
  #dispatch(): void {
    const turn = this.#turn!;
    this.#turn = undefined;
    this.#metrics.method.received.inc(turn.received);
    if (turn.byAck.size === 0) {
      this.#answer(turn.refused.map((p) => p.rs));
      turn.refused = [];
      return;
    }
    for (const [ack, slots] of turn.byAck) this.#produce(turn, ack, slots);
  }

  #produce(turn: Turn, ack: AckLevel, slots: readonly Slot[]): void {
    const messages = slots.map((slot) => slot.message);
    let outcomes: Promise<Array<ProduceResult | ProduceError>>;
    try {
      outcomes = this.#facade.produceMany(messages, ack);
    } catch (err) {
      // Outside the call's handler there is nothing to catch a throw: it must not end the process.
      outcomes = Promise.reject(err);
    }
    outcomes.then(
      (results) => this.#settle(turn, slots, slots.map((slot, i) => replyOf(slot, ack, results[i]))),
      (err) => {
        // produceMany refuses records one by one and never rejects; if it does anyway, each record is refused
        // with it, and it is logged once.
        const refusal = refusalOf(err, "grpc", messages[0].topic);
        this.#settle(turn, slots, slots.map((slot) => refusedReply(slot.streamOffset, refusal)));
      },
    );
  }

  /** Answers one ack level of a turn, with the turn's up-front refusals if they are still waiting. */
  #settle(turn: Turn, slots: readonly Slot[], replies: ProdRs[]): void {
    const refused = turn.refused;
    if (refused.length === 0) {
      this.#answer(replies);
      return;
    }
    turn.refused = [];
    this.#answer(inRequestOrder(slots, replies, refused));
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

  /** Sends replies that are ready together; they go out in this order, in one write with the rest of the turn. */
  #answer(replies: readonly ProdRs[]): void {
    this.#inFlight -= replies.length;
    if (this.#closed) return;
    if (replies.length > 0) this.#call.sendFramed(encodeProdRsFramed(replies));
    this.#metrics.method.sent.inc(replies.length);
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

/** The reply to a record the facade took or refused. */
function replyOf(slot: Slot, ack: AckLevel, outcome: ProduceResult | ProduceError): ProdRs {
  if (outcome instanceof ProduceError) {
    return refusedReply(slot.streamOffset, refusalOf(outcome, "grpc", slot.message.topic));
  }
  const rs: ProdRs = { streamOffset: slot.streamOffset, error: "", code: 0 };
  if (ack === "kafka") {
    rs.partition = outcome.partition;
    rs.offset = toInt64(outcome.offset);
  }
  return rs;
}

function refusedReply(streamOffset: bigint, refusal: Refusal): ProdRs {
  return { streamOffset, error: `${refusal.kind}: ${refusal.reason}`, code: refusal.status };
}

/** The replies of `slots` merged with `refused` by position in the turn; both are in request order already. */
function inRequestOrder(
  slots: readonly Slot[],
  replies: readonly ProdRs[],
  refused: readonly Placed[],
): ProdRs[] {
  const out: ProdRs[] = [];
  let j = 0;
  for (let i = 0; i < slots.length; i++) {
    while (j < refused.length && refused[j].index < slots[i].index) out.push(refused[j++].rs);
    out.push(replies[i]);
  }
  while (j < refused.length) out.push(refused[j++].rs);
  return out;
}

/** The facade's decimal offset as an int64; undefined when it is not one. */
function toInt64(offset: string | undefined): bigint | undefined {
  if (offset === undefined || !/^-?\d{1,19}$/.test(offset)) return undefined;
  return BigInt.asIntN(64, BigInt(offset));
}
