/**
 * One `Produce` bidi stream: a reply per record, with bounds on what is read but not answered or not taken. The
 * records of one read go to the facade together, one `produceMany` call per ack level, so that a busy stream
 * costs one librdkafka call per partition run and one WAL group per read instead of one of each per record.
 */
import { type AckLevel, type Message, tooLargeReason } from "../../message.ts";
import { recordsRefused } from "../../metrics.ts";
import { ProduceError, type ProduceResult, type ProducerFacade } from "../../producer/types.ts";
import { type Gate, type Principal, UNAUTHENTICATED_REASON } from "../auth.ts";
import { parseAck } from "../params.ts";
import { type Refusal, refusalOf, STATUS_BY_KIND } from "../refusal.ts";
import { topicProblem } from "../topic.ts";
import type { GrpcCall } from "./call.ts";
import { CodecError, decodeProdRq, FramedProdRs, type ProdRq } from "./codec.ts";
import type { CallMetrics, MethodMetrics } from "./metrics.ts";
import type { RecordBudget } from "./record_budget.ts";
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

/** The refusal of records read while the server drains. */
const SHUTTING_DOWN: Refusal = {
  kind: "unavailable",
  status: 503,
  reason: "shutting down",
  retryAfterSeconds: 1,
};

/** The refusal of records read after the stream's credentials were revoked (a new tokens file, SIGHUP). */
const REVOKED: Refusal = { kind: "unauthenticated", status: 401, reason: UNAUTHENTICATED_REASON };

/**
 * The records of one ack level in a turn that passed the checks and go to the facade, in request order, as
 * parallel arrays (no object per record besides its message).
 */
class Group {
  /** Each record's position among the records of its turn; replies that go out together keep this order. */
  readonly indices: number[] = [];
  readonly streamOffsets: bigint[] = [];
  readonly messages: Message[] = [];
  /** The records' bytes as read, counted in the listener's RecordBudget until they are answered. */
  bytes = 0;
}

/** A record refused without the facade, with its position in its turn. */
interface Refused {
  readonly index: number;
  readonly streamOffset: bigint;
  readonly refusal: Refusal;
}

/** The records read in one turn of the event loop: one read of the stream, or what a resume delivered. */
class Turn {
  /** Records read, refused and undecodable ones included. */
  received = 0;
  /** The records for the facade, per ack level. */
  readonly byAck = new Map<AckLevel, Group>();
  /** Records refused up front, in request order; they are answered with the first ack level that completes. */
  refused: Refused[] = [];
  /**
   * Whether the client had not taken MAX_UNSENT_REPLY_BYTES of replies when the turn began. Asked once per turn:
   * no reply goes out while a turn's records are read, and asking costs more than reading a record.
   */
  readonly repliesBacklogged: boolean;

  constructor(repliesBacklogged: boolean) {
    this.repliesBacklogged = repliesBacklogged;
  }

  add(ack: AckLevel, index: number, streamOffset: bigint, message: Message, bytes: number): void {
    let group = this.byAck.get(ack);
    if (group === undefined) {
      group = new Group();
      this.byAck.set(ack, group);
    }
    group.indices.push(index);
    group.streamOffsets.push(streamOffset);
    group.messages.push(message);
    group.bytes += bytes;
  }

  refuse(index: number, streamOffset: bigint, refusal: Refusal): void {
    this.refused.push({ index, streamOffset, refusal });
  }
}

/**
 * The caller of a stream and the check of each record's topic; absent when no Gate is configured. When the Gate's
 * principals are replaced, the stream's credentials are checked again before its next record.
 */
export interface StreamAccess {
  gate: Gate;
  /** undefined once the stream's credentials name no principal any more. */
  principal: Principal | undefined;
  /** The Gate's generation `principal` was found in. */
  generation: number;
  /** Authenticates the stream's credentials (its metadata, its client certificate) again. */
  authenticate(): Principal | undefined;
}

/** Drives one Produce call until it ends; `onClose` runs once when it does. */
export class ProduceStream {
  readonly #call: GrpcCall;
  readonly #facade: ProducerFacade;
  readonly #budget: RecordBudget;
  readonly #isDraining: () => boolean;
  readonly #metrics: CallMetrics;
  readonly #onClose: (stream: ProduceStream) => void;
  readonly #access: StreamAccess | undefined;
  #inFlight = 0;
  #paused = false;
  /** Paused until the listener's RecordBudget is half free. */
  #waitingForBudget = false;
  readonly #budgetFree = () => {
    this.#waitingForBudget = false;
    this.#maybeResume();
  };
  #halfClosed = false;
  #closeWhenIdleRequested = false;
  /**
   * Why the call fails once every record read is answered (a request it cannot read on, revoked credentials);
   * nothing more is read.
   */
  #failed: { code: StatusCode; message: string } | undefined;
  #closed = false;
  /** The turn records are being added to; undefined between turns. */
  #turn: Turn | undefined;

  constructor(
    call: GrpcCall,
    facade: ProducerFacade,
    budget: RecordBudget,
    isDraining: () => boolean,
    methodMetrics: MethodMetrics,
    onClose: (stream: ProduceStream) => void,
    access?: StreamAccess,
  ) {
    this.#call = call;
    this.#access = access;
    this.#facade = facade;
    this.#budget = budget;
    this.#isDraining = isDraining;
    this.#onClose = onClose;
    this.#metrics = methodMetrics.begin();
    call.onDrain = () => this.#maybeResume();
    call.start({
      onMessage: (bytes) => this.#onRecord(bytes),
      onBadRequest: (code, message) => this.#fail(code, message),
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
      this.#fail(Status.INTERNAL, `cannot decode ProdRq: ${reason}`);
      return;
    }
    // A record counts against the bound from here until its reply is sent, the wait for its turn's dispatch too.
    this.#inFlight++;
    if (!this.#paused && (this.#inFlight >= MAX_IN_FLIGHT || turn.repliesBacklogged)) {
      this.#paused = true;
      this.#call.pauseReading();
    }
    const offset = rq.streamOffset;
    if (this.#isDraining()) {
      turn.refuse(index, offset, SHUTTING_DOWN);
      return;
    }
    const problem = this.#problem(rq);
    if (problem !== undefined) {
      turn.refuse(index, offset, { kind: "invalid", status: 400, reason: problem });
      return;
    }
    const message = messageOf(rq);
    const access = this.#access;
    if (access !== undefined) {
      if (access.generation !== access.gate.generation) this.#authenticateAgain(access);
      const principal = access.principal;
      if (principal === undefined) {
        turn.refuse(index, offset, REVOKED);
        return;
      }
      if (!access.gate.mayWrite(principal, message.topic)) {
        access.gate.count(principal.name, "forbidden");
        const reason = access.gate.forbidden(principal, message.topic);
        turn.refuse(index, offset, { kind: "forbidden", status: STATUS_BY_KIND.forbidden, reason });
        return;
      }
    }
    if (message.value.byteLength > this.#facade.maxMessageBytes) {
      const reason = tooLargeReason(`${message.value.byteLength} bytes`, this.#facade.maxMessageBytes);
      turn.refuse(index, offset, { kind: "too_large", status: 413, reason });
      return;
    }
    turn.add(parseAck(rq.ack)!, index, offset, message, bytes.byteLength);
    if (this.#budget.take(bytes.byteLength) && !this.#waitingForBudget) {
      this.#waitingForBudget = true;
      if (!this.#paused) {
        this.#paused = true;
        this.#call.pauseReading();
      }
      this.#budget.whenHalfFree(this.#budgetFree);
    }
  }

  /** The current turn, started with the first record read after the last one was dispatched. */
  #currentTurn(): Turn {
    let turn = this.#turn;
    if (turn === undefined) {
      turn = new Turn(this.#call.bufferedBytes >= MAX_UNSENT_REPLY_BYTES);
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
      const replies = new FramedProdRs(turn.refused.length);
      for (const r of turn.refused) addRefused(replies, r.streamOffset, r.refusal);
      turn.refused = [];
      this.#answer(replies);
      return;
    }
    for (const [ack, group] of turn.byAck) this.#produce(turn, ack, group);
  }

  #produce(turn: Turn, ack: AckLevel, group: Group): void {
    let outcomes: Promise<Array<ProduceResult | ProduceError>>;
    try {
      outcomes = this.#facade.produceMany(group.messages, ack);
    } catch (err) {
      // Outside the call's handler there is nothing to catch a throw: it must not end the process.
      outcomes = Promise.reject(err);
    }
    outcomes.then(
      (results) => this.#settle(turn, ack, group, results),
      (err) => {
        // produceMany refuses records one by one and never rejects; if it does anyway, each record is refused
        // with it, and it is logged once.
        const refusal = refusalOf(err, "grpc", group.messages[0].topic);
        this.#settle(turn, ack, group, group.messages.map(() => refusal));
      },
    );
  }

  /**
   * Answers one ack level of a turn from the facade's outcomes (or one refusal per record), with the turn's
   * up-front refusals if they are still waiting, in request order.
   */
  #settle(
    turn: Turn,
    ack: AckLevel,
    group: Group,
    outcomes: ReadonlyArray<ProduceResult | ProduceError | Refusal>,
  ): void {
    const { indices, streamOffsets, messages } = group;
    this.#budget.give(group.bytes);
    const refused = turn.refused;
    turn.refused = [];
    const replies = new FramedProdRs(indices.length + refused.length);
    let j = 0;
    for (let i = 0; i < indices.length; i++) {
      while (j < refused.length && refused[j].index < indices[i]) {
        addRefused(replies, refused[j].streamOffset, refused[j].refusal);
        j++;
      }
      const outcome = outcomes[i];
      if (outcome instanceof ProduceError) {
        addRefused(replies, streamOffsets[i], refusalOf(outcome, "grpc", messages[i].topic));
      } else if ("where" in outcome) {
        if (ack === "kafka") replies.add(streamOffsets[i], 0, "", outcome.partition, toInt64(outcome.offset));
        else replies.add(streamOffsets[i], 0, "");
      } else addRefused(replies, streamOffsets[i], outcome);
    }
    for (; j < refused.length; j++) addRefused(replies, refused[j].streamOffset, refused[j].refusal);
    this.#answer(replies);
  }

  /** Why a ProdRq is invalid (its topic, then its ack level, then its partition), or undefined. */
  #problem(rq: ProdRq): string | undefined {
    const bad = topicProblem(rq.topic);
    if (bad !== undefined) return bad;
    if (parseAck(rq.ack) === undefined) {
      return `invalid ack: ${JSON.stringify(rq.ack)}: want none, wal or kafka`;
    }
    if (rq.partition !== undefined && rq.partition < -1) {
      return `invalid partition: ${rq.partition}: want -1 (any) or a partition >= 0`;
    }
    return undefined;
  }

  /**
   * The principals changed: the stream's credentials are checked again (a principal's topics may have changed
   * too). Revoked, the stream reads no more; the records read get 401, and once all are answered the call ends
   * with UNAUTHENTICATED.
   */
  #authenticateAgain(access: StreamAccess): void {
    access.generation = access.gate.generation;
    access.principal = access.authenticate();
    if (access.principal !== undefined) return;
    this.#fail(Status.UNAUTHENTICATED, UNAUTHENTICATED_REASON);
  }

  /**
   * The call fails with `code`: nothing more is read (records already read still get their replies), and it ends
   * once they are all answered, so that no record the facade took goes unanswered.
   */
  #fail(code: StatusCode, message: string): void {
    this.#failed ??= { code, message };
    this.#paused = true;
    this.#call.pauseReading();
    // From the call's delivery loop: the turn's records are dispatched in a microtask, after which this finishes.
    queueMicrotask(() => this.#maybeFinish());
  }

  /** Sends replies that are ready together; they go out in this order, in one write with the rest of the turn. */
  #answer(replies: FramedProdRs): void {
    const count = replies.count;
    this.#inFlight -= count;
    if (this.#closed) return;
    if (count > 0) this.#call.sendFramed(replies.finish());
    this.#metrics.method.sent.inc(count);
    if (this.#paused) this.#maybeResume();
    this.#maybeFinish();
  }

  #maybeResume(): void {
    if (!this.#paused || this.#closed || this.#failed !== undefined || this.#waitingForBudget) return;
    // Resuming at half the bounds, not just below them, keeps the stream from flapping on every reply.
    if (this.#inFlight > MAX_IN_FLIGHT / 2) return;
    // The call's onDrain comes back here once the client has taken its replies.
    if (this.#call.bufferedBytes > MAX_UNSENT_REPLY_BYTES / 2) return;
    this.#paused = false;
    this.#call.resumeReading();
  }

  #maybeFinish(): void {
    if (this.#closed || this.#inFlight > 0) return;
    if (this.#failed !== undefined) {
      this.#call.end(this.#failed.code, this.#failed.message);
    } else if (this.#halfClosed) {
      this.#call.end(Status.OK);
    } else if (this.#closeWhenIdleRequested) {
      this.#call.end(Status.UNAVAILABLE, "shutting down");
    }
  }

  #close(code: StatusCode): void {
    if (this.#closed) return;
    this.#closed = true;
    // Its records' bytes come back as they are answered, closed or not; its wait for them to free is over.
    if (this.#waitingForBudget) this.#budget.forget(this.#budgetFree);
    this.#metrics.handled(code);
    this.#onClose(this);
  }
}

/** The message of a valid ProdRq. */
function messageOf(rq: ProdRq): Message {
  const message: Message = { topic: rq.topic, value: rq.message };
  if (rq.key !== undefined) message.key = rq.key;
  if (rq.headers.length > 0) message.headers = rq.headers.map((h) => [h.key, h.value]);
  if (rq.partition !== undefined && rq.partition !== -1) message.partition = rq.partition;
  return message;
}

/**
 * Adds the reply to a refused ProdRq, its error `<kind>: <reason>` (a reason that starts with its kind, as
 * librdkafka's do with `kafka: `, is not prefixed twice), and counts it in ka_records_refused_total.
 */
function addRefused(replies: FramedProdRs, streamOffset: bigint, refusal: Refusal): void {
  const { kind, reason } = refusal;
  replies.add(streamOffset, refusal.status, reason.startsWith(`${kind}: `) ? reason : `${kind}: ${reason}`);
  recordsRefused.hot("grpc", String(refusal.status)).inc();
}

/** The facade's decimal offset as an int64; undefined when it is not one. */
function toInt64(offset: string | undefined): bigint | undefined {
  if (offset === undefined || !/^-?\d{1,19}$/.test(offset)) return undefined;
  return BigInt.asIntN(64, BigInt(offset));
}
