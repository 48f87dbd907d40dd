/** The HTTP produce listener (docs/compatibility.md): `POST /topics/{topic}/messages` and `GET /topics`. */
import { SCHEMA } from "../config_keys.ts";
import { log, logRepeated } from "../log.ts";
import { httpDuration, httpRequests } from "../metrics.ts";
import { type AckLevel, type Message, tooLargeReason } from "../message.ts";
import { ProduceError, type ProduceResult, type ProducerFacade, QUEUED_NOW } from "../producer/types.ts";
import { type Gate, type Principal, UNAUTHENTICATED_REASON } from "./auth.ts";
import { batchReply, type RecordOutcome } from "./batch_reply.ts";
import type { Listener, ListenerOptions } from "./listener.ts";
import { LineProblem, MAX_LINE_PROBLEMS, parseNdjson, TOO_MANY_RECORDS } from "./ndjson.ts";
import { OPENAPI_ROUTE, openapiReply } from "./openapi.ts";
import { ackProblem, parseAck, parseContentLength, parsePartition, partitionProblem } from "./params.ts";
import { type Refusal, refusalOf, STATUS_BY_KIND } from "./refusal.ts";
import { notAllowed, plain, serveHttp, TEXT_PLAIN } from "./reply.ts";
import { type Held, InFlightBytes } from "./limits.ts";
import { type ReadSlot, ReadSlots } from "./read_slots.ts";
import { topicProblem } from "./topic.ts";

const ROUTE_MESSAGES = "/topics/{topic}/messages";
const ROUTE_TOPICS = "/topics";
/** The route label for paths that match no route, so raw paths never become label values. */
const ROUTE_NONE = "none";

const PREFIX = "/topics/";
const SUFFIX = "/messages";
/**
 * The methods that produce. PUT and PATCH as POST: the Go kafka-ambassador took any method on this path, and
 * clients written against it may send these. GET, HEAD, OPTIONS and DELETE are refused: by convention they carry
 * no body, and browsers, crawlers and proxies send the first three on their own.
 */
const PRODUCE_METHODS = "POST, PUT, PATCH";

const JSON_TYPE = "application/json";
const ACCEPTED_TYPES = new Set(["text/plain", "application/json", "application/octet-stream"]);
/** Content types of a batch: one JSON record per line (see ndjson.ts). */
const BATCH_TYPES = new Set(["application/x-ndjson", "application/jsonl"]);

const encoder = new TextEncoder();

/**
 * Bodies declared this small are read in one call (BodyDeadlines.readSmall), the fast path for the usual
 * message; one that stalls past the body timeout gets 408 and holds at most this much until its connection
 * goes. Larger and chunked bodies are streamed into a buffer that grows as bytes arrive; this is also the first
 * size of that buffer. Both are under the body timeout.
 */
const INLINE_BODY_BYTES = 16 * 1024;
/** The least room a streamed body read is given (see readBody). */
const MIN_READ_BYTES = 4 * 1024;

/** Options of startHttpServer. */
export interface HttpServerOptions extends ListenerOptions {
  facade: ProducerFacade;
  /**
   * How long a request body may take to arrive (`server.http.body_timeout`); past it the read and its buffer
   * are dropped and the request gets 408. The reply carries `Connection: close`, but Deno's server lets the
   * socket go only once the client has sent the declared rest (read and discarded) or hung up.
   * @default 30_000
   */
  bodyTimeoutMs?: number;
  /**
   * Request body bytes read or held at once, until the facade answered (`server.http.max_inflight_bytes`);
   * a request that would go past it gets 503 with `Retry-After`. A body without Content-Length counts as
   * the largest it may be (message.max.bytes, or the batch bound) while it is read.
   * @default 268_435_456
   */
  maxInflightBytes?: number;
  /** Bounds of a batch request; the defaults are those of `server.http.batch.*`. */
  batch?: BatchLimits;
  /** How many batch bodies are read at once (read_slots.ts). */
  batchReads?: ReadSlots;
}

/** Bounds of one batch request (`server.http.batch.*`); past either, the whole batch gets 413. */
export interface BatchLimits {
  /** Most records (non-blank lines). */
  maxRecords: number;
  /** Largest body, in bytes; never buffered past it. */
  maxBytes: number;
}

/** A batch handed to the facade: what its reply is made of once the facade answers. */
interface HandedBatch {
  /** Records and lines that are not records (blank lines aside), in request order. */
  count: number;
  /** The lines that are not records, by their index among `count`. */
  problems: Map<number, LineProblem>;
  /** The facade's outcome for each record that is one, in order. */
  produced: Promise<Array<ProduceResult | ProduceError | Refusal>>;
}

const DEFAULT_BATCH_LIMITS: BatchLimits = {
  maxRecords: SCHEMA.server.http.batch.maxRecords.defaultValue,
  maxBytes: SCHEMA.server.http.batch.maxBytes.defaultValue,
};

/**
 * Starts the HTTP listener. While draining, produce requests get 503 "shutting down" with `Retry-After`. Rejects,
 * naming the address, when it cannot bind.
 * @example const http = await startHttpServer({ listen: "127.0.0.1:0", facade }); console.log(http.port);
 */
export async function startHttpServer(opts: HttpServerOptions): Promise<Listener> {
  const handler = new HttpHandler(
    opts.facade,
    new BodyDeadlines(opts.bodyTimeoutMs ?? SCHEMA.server.http.bodyTimeoutMs.defaultValue),
    new InFlightBytes(opts.maxInflightBytes ?? SCHEMA.server.http.maxInflightBytes.defaultValue),
    opts.batch ?? DEFAULT_BATCH_LIMITS,
    opts.batchReads ?? new ReadSlots(),
    opts.gate,
  );
  const server = await serveHttp("http", opts, (req, certName) => handler.handle(req, certName));
  return {
    address: server.address,
    port: server.port,
    setDraining: (on) => handler.setDraining(on),
    shutdown: async () => {
      handler.setDraining(true);
      await server.shutdown();
      handler.stop();
    },
  };
}

/** Routes and answers requests; kept apart from the listener so the hot path is plain method calls. */
class HttpHandler {
  draining = false;
  readonly #facade: ProducerFacade;
  readonly #deadlines: BodyDeadlines;
  readonly #inflight: InFlightBytes;
  readonly #batch: BatchLimits;
  readonly #batchReads: ReadSlots;
  readonly #gate: Gate | undefined;
  /**
   * Per route (a constant string), its duration histogram child and its counter children by status code: a
   * request looks them up without building a label set or a key string.
   */
  readonly #routes = new Map<
    string,
    { timer: { observe(seconds: number): void }; codes: Map<number, { inc(): void }> }
  >();

  constructor(
    facade: ProducerFacade,
    deadlines: BodyDeadlines,
    inflight: InFlightBytes,
    batch: BatchLimits,
    batchReads: ReadSlots,
    gate: Gate | undefined,
  ) {
    this.#facade = facade;
    this.#deadlines = deadlines;
    this.#inflight = inflight;
    this.#batch = batch;
    this.#batchReads = batchReads;
    this.#gate = gate;
  }

  /**
   * While draining, produce requests get 503 "shutting down", and body reads end (those under way at once, a
   * refusal's read of a body to drop at its deadline's next sweep): their records would be refused the same once
   * read, and the service's shutdown does not wait for a slow client.
   */
  setDraining(on: boolean): void {
    this.draining = on;
    this.#deadlines.setEnding(on);
  }

  /** Stops the body deadline timer; for shutdown, once no request is in flight. */
  stop(): void {
    this.#deadlines.stop();
  }

  /**
   * `certName`: the client certificate's subject CN, on an mTLS listener. Not an async function, nor is the
   * synchronous part of a produce request: an async frame is garbage at every request, and holds every local.
   */
  handle(req: Request, certName?: string): Response | Promise<Response> {
    const started = performance.now();
    // Slicing the URL string is much cheaper than `new URL()`, and these routes need no more.
    const url = req.url;
    const pathStart = url.indexOf("/", url.indexOf("//") + 2);
    const queryStart = url.indexOf("?", pathStart);
    const path = queryStart < 0 ? url.slice(pathStart) : url.slice(pathStart, queryStart);
    let route = ROUTE_NONE;
    let res: Response | Promise<Response>;
    // A throw here is a bug; as a rejection it reaches the listener's error handler like one from a promise.
    try {
      if (path.length >= PREFIX.length + SUFFIX.length && path.startsWith(PREFIX) && path.endsWith(SUFFIX)) {
        const topic = path.slice(PREFIX.length, path.length - SUFFIX.length);
        if (topic.includes("/")) {
          res = notFound(url, path, queryStart);
        } else {
          route = ROUTE_MESSAGES;
          const method = req.method;
          res = method === "POST" || method === "PUT" || method === "PATCH"
            ? this.#produce(req, topic, queryStart < 0 ? "" : url.slice(queryStart + 1), certName)
            : notAllowed(PRODUCE_METHODS);
        }
      } else if (path === ROUTE_TOPICS) {
        route = ROUTE_TOPICS;
        res = req.method === "GET" ? this.#listTopics(req, certName) : notAllowed("GET");
      } else if (path === OPENAPI_ROUTE) {
        route = OPENAPI_ROUTE;
        res = req.method === "GET" ? openapiReply() : notAllowed("GET");
      } else {
        res = notFound(url, path, queryStart);
      }
    } catch (err) {
      return Promise.reject(err);
    }
    if (!(res instanceof Promise)) return this.#answer(req, route, started, res);
    return res.then((answered) => this.#answer(req, route, started, answered));
  }

  /** `res`, counted; a refusal (4xx) of a request whose body is still unread, once that body is dropped. */
  #answer(req: Request, route: string, started: number, res: Response): Response | Promise<Response> {
    const status = res.status;
    this.#count(route, started, status);
    return status >= 400 && status < 500 ? this.#refuseUnread(req, res) : res;
  }

  #produce(req: Request, rawTopic: string, query: string, certName?: string): Response | Promise<Response> {
    if (this.draining) return shuttingDown(req, false);
    const gate = this.#gate;
    let principal: Principal | undefined;
    if (gate !== undefined) {
      principal = gate.authenticate(header(req, "authorization"), certName);
      if (principal === undefined) return unauthenticated();
    }
    const topic = rawTopic.includes("%") ? decode(rawTopic) : rawTopic;
    if (topic === undefined) return plain(400, `invalid topic name: ${JSON.stringify(rawTopic)}`);
    const bad = topicProblem(topic);
    if (bad !== undefined) return plain(400, bad);
    // Every record of a batch is for the URL's topic, so this one check covers batches too.
    if (principal !== undefined && !gate!.mayWrite(principal, topic)) {
      return forbidden(gate!, principal, topic);
    }
    const length = header(req, "content-length");
    const encoding = header(req, "transfer-encoding");
    if (encoding !== null) {
      if (length !== null) return framedTwice();
      // Deno's server takes any coding list ending in chunked, and would hand over the body still coded (gzip).
      if (encoding !== "chunked" && encoding.trim().toLowerCase() !== "chunked") return notChunked(encoding);
    }
    // Neither: HTTP/1.1 reads that as an empty body, which is more likely a client's mistake than an empty message
    // (the Go service refused it too); and HTTP/2 cannot tell a cancelled upload from a whole one without a length.
    if (length === null && encoding === null) return plain(411, LENGTH_REQUIRED);
    // The one content-type check: batches branch off where other types are refused, so a single message pays
    // nothing for them.
    const contentType = header(req, "content-type");
    if (contentType !== null && !acceptedType(contentType)) {
      const type = mediaType(contentType);
      if (BATCH_TYPES.has(type.toLowerCase())) return this.#produceBatch(req, topic, query, length);
      return plain(415, `unsupported content type: ${type}`);
    }
    // An empty body is a valid, empty Kafka value (not a tombstone: that would need a null value).
    const message: Message = { topic, value: EMPTY };
    let ack: AckLevel = "none";
    if (query.length > 0) {
      const parsed = readQuery(query, message);
      if (typeof parsed === "string") return plain(400, parsed);
      ack = parsed.ack;
    }

    const max = this.#facade.maxMessageBytes;
    let declared = -1;
    if (length !== null) {
      declared = parseContentLength(length);
      if (declared < 0) return plain(400, `invalid Content-Length: ${JSON.stringify(length)}`);
      if (declared > max) return tooLarge(max, `${declared} bytes`);
    }
    // A body without Content-Length counts as the largest it may be until it is read.
    const held = this.#inflight.hold(declared >= 0 ? declared : max + 1);
    if (held === undefined) return this.#overloaded();
    // The usual small POST came whole with its head: no read to wait for.
    const arrived = declared >= 0 && declared <= INLINE_BODY_BYTES ? arrivedBody(req) : undefined;
    if (arrived !== undefined) {
      if (arrived.byteLength === declared) return this.#produceValue(message, arrived, ack, held);
      held.release();
      return plain(400, cutShort(arrived.byteLength, declared));
    }
    return this.#produceRead(req, message, ack, declared, held);
  }

  /** The rest of #produce for a body still to read: reads it, then as #produceValue. */
  async #produceRead(
    req: Request,
    message: Message,
    ack: AckLevel,
    declared: number,
    held: Held,
  ): Promise<Response> {
    const max = this.#facade.maxMessageBytes;
    let value: Uint8Array | BodyFailure;
    try {
      value = await this.#readBody(req, declared, max);
    } catch (err) {
      held.release();
      return bodyReadFailed(err, message.topic);
    }
    if (value === TOO_LARGE || value === TIMED_OUT) {
      held.release();
      return value === TOO_LARGE ? tooLarge(max, `more than ${max} bytes`) : this.#timedOut(req);
    }
    return await this.#produceValue(message, value, ack, held);
  }

  /**
   * Hands the message with its value to the facade; the reply once it is accepted (or refused), at once when
   * librdkafka took it and there is nothing to wait for (the usual ack=none message: no promise per request).
   */
  #produceValue(
    message: Message,
    value: Uint8Array,
    ack: AckLevel,
    held: Held,
  ): Response | Promise<Response> {
    held.shrinkTo(value.byteLength);
    message.value = value;
    let accepted: Promise<ProduceResult>;
    try {
      accepted = this.#facade.produce(message, ack);
    } catch (err) {
      accepted = Promise.reject(err); // a bug: answered as any refusal, and what is held is given back
    }
    if (accepted === QUEUED_NOW) {
      held.release();
      return new Response(null);
    }
    return accepted.then((result) => {
      held.release();
      if (ack !== "kafka") return new Response(null);
      const body = JSON.stringify({ partition: result.partition ?? -1, offset: result.offset ?? "-1" });
      return new Response(body, { headers: { "content-type": JSON_TYPE } });
    }, (err) => {
      held.release();
      return refused(refusalOf(err, "http", message.topic));
    });
  }

  /**
   * A batch (Content-Type application/x-ndjson): every record that parses goes to the facade in one call, and
   * the reply lists what became of each (batch_reply.ts). Refusals of the whole batch (query, size, body) are
   * plain text, as for one message.
   */
  /** `length`: the request's Content-Length header, as read by #produce. */
  async #produceBatch(req: Request, topic: string, query: string, length: string | null): Promise<Response> {
    let ack: AckLevel = "none";
    if (query.length > 0) {
      const parsed = readBatchQuery(query);
      if (typeof parsed === "string") return plain(400, parsed);
      ack = parsed.ack;
    }
    const { maxBytes } = this.#batch;
    let declared = -1;
    if (length !== null) {
      declared = parseContentLength(length);
      if (declared < 0) return plain(400, `invalid Content-Length: ${JSON.stringify(length)}`);
      if (declared > maxBytes) return batchTooLarge(`${declared} bytes`, `${maxBytes} bytes`, "max_bytes");
    }
    // A few batches at a time, each read and handed over at once, while the others wait unread.
    const slot = await this.#batchReads.enter();
    try {
      // Before its bytes are held: a batch waiting for Kafka's queue to drain must not crowd others out.
      const room = this.#facade.roomForBatch();
      if (room !== undefined) await room;
      const held = this.#inflight.hold(declared >= 0 ? declared : maxBytes + 1);
      if (held === undefined) return this.#overloaded();
      try {
        return await this.#produceRecords(req, topic, ack, declared, held, slot);
      } finally {
        held.release();
      }
    } finally {
      slot.release();
    }
  }

  /** The rest of #produceBatch, with the body's bytes held. */
  async #produceRecords(
    req: Request,
    topic: string,
    ack: AckLevel,
    declared: number,
    held: Held,
    slot: ReadSlot,
  ): Promise<Response> {
    slot.startLease();
    // The body and its records are never locals here: while the reply waits for Kafka or the disk, they are let go
    // (kept that long, a batch's records outlived V8's young-generation collections).
    const handed = await this.#readBody(req, declared, this.#batch.maxBytes).then(
      (body) => this.#handOverBody(req, body, topic, ack, held, slot),
      (err) => bodyReadFailed(err, topic),
    );
    if (handed instanceof Response) return handed;
    const { count, problems } = handed;
    const produced = await handed.produced;
    const outcomes: RecordOutcome[] = new Array(count);
    let next = 0;
    for (let i = 0; i < count; i++) {
      const problem = problems.get(i);
      if (problem !== undefined) {
        outcomes[i] = {
          kind: problem.status === 413 ? "too_large" : "invalid",
          status: problem.status,
          reason: problem.reason,
        };
      } else {
        const outcome = produced[next++];
        outcomes[i] = outcome instanceof Error ? refusalOf(outcome, "http", topic) : outcome;
      }
    }
    return batchReply(outcomes, ack);
  }

  /**
   * Parses a batch's body and hands its records to the facade, then gives up the read slot; the reply, or what
   * the reply is made of once the facade answers: the records' count, the lines that are not records, and the
   * facade's outcomes (one per record, in order).
   */
  #handOverBody(
    req: Request,
    body: Uint8Array | BodyFailure,
    topic: string,
    ack: AckLevel,
    held: Held,
    slot: ReadSlot,
  ): Response | HandedBatch {
    const { maxBytes, maxRecords } = this.#batch;
    if (body === TOO_LARGE) {
      return batchTooLarge(`more than ${maxBytes} bytes`, `${maxBytes} bytes`, "max_bytes");
    }
    if (body === TIMED_OUT) return this.#timedOut(req);
    held.shrinkTo(body.byteLength);
    const records = parseNdjson(body, topic, { maxRecords, maxValueBytes: this.#facade.maxMessageBytes });
    if (records === TOO_MANY_RECORDS) {
      return batchTooLarge(`more than ${maxRecords} records`, `${maxRecords} records`, "max_records");
    }
    if (records instanceof LineProblem) {
      return plain(
        400,
        `more than ${MAX_LINE_PROBLEMS} lines are not records (the last: ${records.reason}); none was taken`,
      );
    }
    const messages: Message[] = [];
    const problems = new Map<number, LineProblem>();
    for (let i = 0; i < records.length; i++) {
      const record = records[i];
      if (record instanceof LineProblem) problems.set(i, record);
      else messages.push(record);
    }
    const n = messages.length;
    const produced = n === 0 ? Promise.resolve([]) : this.#facade.produceMany(messages, ack).catch((err) => {
      // produceMany does not reject; if it does anyway, each record gets the same refusal (logged once).
      const refusal = refusalOf(err, "http", topic);
      return new Array<Refusal>(n).fill(refusal);
    });
    // Handed over (produceMany's synchronous part): the next batch may be read.
    slot.release();
    return { count: records.length, problems, produced };
  }

  /**
   * `reply`, a refusal, once the request's body (not read: refused by its head, or before it was read) is read to
   * its end and dropped. A client still sending when the connection closes gets a reset instead of the reply
   * (Deno's server closes a connection whose request body is left unread), which it may retry as a network
   * error: a body over message.max.bytes is the usual case. At once when the body is over DISCARD_BYTES, or when
   * the read's buffer does not fit under max_inflight_bytes; the body deadline bounds the read. A client that
   * waits for `100 Continue` never got it: its reply closes the connection.
   */
  #refuseUnread(req: Request, reply: Response): Response | Promise<Response> {
    // Before `req.body`, which makes a body already in memory a stream.
    if (bodyArrived(req)) return reply;
    const body = req.body;
    if (body === null || body.locked || req.bodyUsed) return reply;
    // A reply that closes its connection anyway (a request framed twice) needs none of this.
    if (reply.headers.get("connection") === "close") return reply;
    if (header(req, "expect")?.toLowerCase() === "100-continue") {
      // Never asked for, the body may come all the same (a client waits for `100 Continue` only so long), where
      // the next request would be read: the connection ends with this reply, as Go's net/http ends it.
      return closeConnection(req, reply);
    }
    const length = header(req, "content-length");
    const declared = length === null ? 0 : parseContentLength(length);
    if (declared < 0 || declared > DISCARD_BYTES) return reply;
    const held = this.#inflight.hold(DISCARD_CHUNK_BYTES);
    if (held === undefined) return reply;
    const reader = byobReader(body) ?? body.getReader();
    const read = this.#deadlines.watch(reader);
    return discardRest(reader, DISCARD_BYTES, new Uint8Array(DISCARD_CHUNK_BYTES)).catch(() => false).then(
      (ended) => {
        this.#deadlines.done(read);
        held.release();
        // A read the deadline cancelled ends as if the body had.
        if (!ended || read.timedOut) {
          reader.cancel().catch(() => {});
          closeConnection(req, reply, this.draining);
        }
        return reply;
      },
    );
  }

  /** 503: the request bodies read or held now are at server.http.max_inflight_bytes. */
  #overloaded(): Response {
    return plain(
      503,
      `too many request bytes in flight: server.http.max_inflight_bytes (${this.#inflight.max}) reached`,
      1,
    );
  }

  /** The reply to a request whose body read the deadline ended, or draining did. */
  #timedOut(req: Request): Response {
    if (this.draining) return shuttingDown(req, true);
    // The rest of the body may still come: the connection cannot be read on.
    return closeConnection(
      req,
      plain(408, `request body not received within ${this.#deadlines.timeoutMs / 1000} s`),
    );
  }

  /** The topics of the cluster; with a Gate, those the caller may write to. */
  async #listTopics(req: Request, certName?: string): Promise<Response> {
    const gate = this.#gate;
    let principal: Principal | undefined;
    if (gate !== undefined) {
      principal = gate.authenticate(header(req, "authorization"), certName);
      if (principal === undefined) return unauthenticated();
    }
    try {
      let names = await this.#facade.listTopics();
      if (principal !== undefined) names = names.filter((name) => gate!.mayWrite(principal, name));
      return new Response(names.join("\n"), { headers: { "content-type": TEXT_PLAIN } });
    } catch (err) {
      // Clients poll this; a cluster that is down must not write a line per call.
      if (err instanceof ProduceError) {
        logRepeated("http: cannot list topics", "warn", "http: cannot list topics", { error: err });
        return refused(refusalOf(err, "http", ""));
      }
      // Anything else is a bug or a surprise: logged, but its text is not for clients.
      logRepeated("http: list topics failed", "error", "http: list topics failed", { error: err });
      return plain(500, "internal error");
    }
  }

  /**
   * A body of `declared` bytes (-1: none declared), at most `max`: in one call when it is small, else streamed.
   * Rejects with a BodyRefused when the body cannot be known to be whole.
   */
  #readBody(req: Request, declared: number, max: number): Promise<Uint8Array | BodyFailure> {
    // Deno's own server (not node:https, whose parser reports every cut body) and a body still on its way.
    const suspect = stateOf(req) !== undefined && !bodyArrived(req);
    const read = declared >= 0 && declared <= INLINE_BODY_BYTES
      ? this.#deadlines.readSmall(req)
      : readBody(req.body, declared, max, this.#deadlines);
    return read.then((body) => typeof body === "symbol" ? body : wholeBody(body, declared, suspect));
  }

  /** Counts a reply under its route and status, with the time since `started`. */
  #count(route: string, started: number, status: number): void {
    const seconds = (performance.now() - started) / 1000;
    let counted = this.#routes.get(route);
    if (counted === undefined) {
      counted = { timer: httpDuration.child(route), codes: new Map() };
      this.#routes.set(route, counted);
    }
    let code = counted.codes.get(status);
    if (code === undefined) {
      code = httpRequests.hot(route, String(status));
      counted.codes.set(status, code);
    }
    code.inc();
    counted.timer.observe(seconds);
  }
}

const EMPTY = new Uint8Array(0);

/**
 * Applies `ack`, `key` and `partition` from a query string to `message`; returns the ack level, or why the
 * query is refused. Other parameters are ignored, so clients may add their own (e.g. cache busters).
 */
function readQuery(query: string, message: Message): { ack: AckLevel } | string {
  let ack: AckLevel = "none";
  let seen = "";
  for (const pair of query.split("&")) {
    const eq = pair.indexOf("=");
    const name = paramName(eq < 0 ? pair : pair.slice(0, eq));
    if (name !== "ack" && name !== "key" && name !== "partition") continue;
    // Given twice, the value that wins would be a guess (`ack=kafka&ack=none` must not quietly drop to none).
    if (seen.includes(name[0])) return repeated(name);
    seen += name[0];
    const raw = eq < 0 ? "" : pair.slice(eq + 1);
    const text = raw.includes("%") || raw.includes("+") ? decode(raw.replaceAll("+", " ")) : raw;
    if (text === undefined) return `invalid query parameter ${name}: bad percent-encoding`;
    if (name === "ack") {
      const level = parseAck(text);
      if (level === undefined) return ackProblem(text);
      ack = level;
    } else if (name === "key") {
      message.key = encoder.encode(text);
    } else {
      const partition = parsePartition(text);
      if (partition === undefined) return partitionProblem(text);
      message.partition = partition;
    }
  }
  return { ack };
}

/**
 * Reads `ack` from a batch's query string; returns the ack level, or why the query is refused. `key` and
 * `partition` are refused rather than ignored: they are set per record in a batch, and a client that expects
 * them to apply to every record must not have its records land elsewhere unnoticed.
 */
function readBatchQuery(query: string): { ack: AckLevel } | string {
  let ack: AckLevel = "none";
  let seen = false;
  for (const pair of query.split("&")) {
    const eq = pair.indexOf("=");
    const name = paramName(eq < 0 ? pair : pair.slice(0, eq));
    if (name === "key" || name === "partition") {
      return `query parameter ${name} does not apply to a batch: set "${name}" on each record`;
    }
    if (name !== "ack") continue;
    if (seen) return repeated(name);
    seen = true;
    const raw = eq < 0 ? "" : pair.slice(eq + 1);
    const text = raw.includes("%") || raw.includes("+") ? decode(raw.replaceAll("+", " ")) : raw;
    if (text === undefined) return `invalid query parameter ${name}: bad percent-encoding`;
    const level = parseAck(text);
    if (level === undefined) return ackProblem(text);
    ack = level;
  }
  return { ack };
}

/** A query parameter's name, percent-decoded as Go's URL.Query() decodes it (`%61ck` is `ack`). */
function paramName(raw: string): string {
  return raw.includes("%") || raw.includes("+") ? decode(raw.replaceAll("+", " ")) ?? raw : raw;
}

function repeated(name: string): string {
  return `query parameter ${name} given more than once`;
}

/**
 * The reply to a body that could not be read. Deno 2.8.3 sometimes lost a body it was still receiving when many
 * large uploads ran at once ("Cannot read body as underlying resource unavailable", BadResource; 6 % of 64
 * concurrent 110 KB uploads here): the client did nothing wrong, so it is told to retry (503), not that its
 * request was bad. Anything else (a malformed chunked body, a client gone mid-body) is 400.
 */
export function bodyReadFailed(err: unknown, topic: string): Response {
  if (err instanceof BodyRefused) {
    log("debug", "http: request body refused", { topic, status: err.status, reason: err.message });
    return plain(err.status, err.message);
  }
  if (err instanceof Deno.errors.BadResource) {
    logRepeated("http: request body lost by the runtime", "warn", "http: request body lost; answered 503", {
      error: err,
    });
    return plain(503, "request body lost by the server; retry", 1);
  }
  log("debug", "http: could not read request body", { topic, error: err });
  return plain(400, "could not read request body");
}

/**
 * A body that cannot be told whole, refused rather than produced cut short. Deno's server (2.8) ends a body
 * without an error in two cases: an HTTP/2 stream the client reset mid-body (h2c, served on the plain-text
 * port) reads as the bytes that came before the reset, and an HTTP/1.1 chunked body whose first chunk-size line
 * is malformed reads as empty. So a body must have as many bytes as its Content-Length says (an HTTP/2 body
 * without one gets 411 in #produce: there a reset is not seen), and an empty chunked body that did not come with
 * the head is refused (a valid one comes whole with it, as clients send it).
 */
class BodyRefused extends Error {
  constructor(readonly status: 400, message: string) {
    super(message);
  }
}

const LENGTH_REQUIRED =
  "Content-Length required (Content-Length: 0 for an empty message; over HTTP/1.1 a chunked body will do)";

function cutShort(got: number, declared: number): string {
  return `request body ended after ${got} of ${declared} bytes (Content-Length)`;
}

/**
 * `body` if it is whole for its Content-Length (`declared`, -1 when none), else throws a BodyRefused. `suspect`:
 * read from Deno's server after its head, where an empty chunked body may be a malformed one.
 */
function wholeBody(body: Uint8Array, declared: number, suspect: boolean): Uint8Array {
  if (declared >= 0 && body.byteLength !== declared) {
    throw new BodyRefused(400, cutShort(body.byteLength, declared));
  }
  if (declared < 0 && suspect && body.byteLength === 0) {
    throw new BodyRefused(
      400,
      "malformed chunked body: no chunk read (an empty message needs Content-Length: 0)",
    );
  }
  return body;
}

const TOO_LARGE = Symbol("too large");
const TIMED_OUT = Symbol("timed out");
/** Why a body was not read whole. */
type BodyFailure = typeof TOO_LARGE | typeof TIMED_OUT;

/**
 * Reads a streamed body into one buffer that grows as bytes arrive: never by the declared length up front,
 * never past `max` bytes whatever the headers say, and only until the body deadline.
 *
 * A default reader on Deno.serve's body allocates a 64 KiB buffer per read and hands out a view on it, so
 * keeping the chunks of a body sent a byte per chunk kept 64 KiB per byte. A BYOB reader reads straight into
 * our buffer instead. A body that was already whole when the request arrived comes as a plain stream; its
 * chunks are copied, so none of them is kept.
 * @param declared the Content-Length, or -1 when there is none (chunked)
 */
async function readBody(
  body: ReadableStream<Uint8Array> | null,
  declared: number,
  max: number,
  deadlines: BodyDeadlines,
): Promise<Uint8Array | BodyFailure> {
  if (body === null) return EMPTY;
  // One byte over max tells a chunked body that is too large from one that is exactly max.
  const limit = declared >= 0 ? Math.min(declared, max) : max + 1;
  const reader = byobReader(body) ?? body.getReader();
  const read = deadlines.watch(reader);
  let buf: Uint8Array = new Uint8Array(INLINE_BODY_BYTES);
  let size = 0;
  try {
    for (;;) {
      if (reader instanceof ReadableStreamBYOBReader) {
        // Deno's body reads can stall for good when handed a view of a few bytes: leave room for a whole read.
        if (buf.byteLength - size < MIN_READ_BYTES) {
          buf = grow(buf, size, limit + MIN_READ_BYTES, size + MIN_READ_BYTES);
        }
        // The view's buffer is transferred to the reader and comes back in the result.
        const result = await reader.read(buf.subarray(size));
        if (result.value !== undefined) buf = new Uint8Array(result.value.buffer);
        if (result.done) break;
        size += result.value.byteLength;
      } else {
        const result = await reader.read();
        if (result.done) break;
        const take = Math.min(result.value.byteLength, limit - size);
        if (size + take > buf.byteLength) buf = grow(buf, size, limit, size + take);
        buf.set(result.value.subarray(0, take), size);
        size += take;
      }
      if (size > max) {
        // (Only a chunked body gets here.) Read to its end unless it goes on past DISCARD_BYTES: see
        // HttpHandler.#refuseUnread. What was read is let go first.
        buf = EMPTY;
        const ended = await discardRest(reader, DISCARD_BYTES - size, new Uint8Array(DISCARD_CHUNK_BYTES))
          .catch(() => false);
        if (!ended) await reader.cancel().catch(() => {});
        return TOO_LARGE;
      }
      // A Content-Length body ends at its length; no need to wait for the end of the stream.
      if (size === declared) break;
    }
  } finally {
    deadlines.done(read);
  }
  if (read.timedOut) return TIMED_OUT;
  // A view keeps the whole buffer alive: worth a copy only when much of it is unused.
  return buf.byteLength - size > size / 4 ? buf.slice(0, size) : buf.subarray(0, size);
}

/**
 * Most bytes of a body refused for its size that are read and dropped before the refusal goes out (see
 * HttpHandler.#refuseUnread); a larger one is refused at once, and its connection closed.
 */
const DISCARD_BYTES = 64 * 1024 * 1024;
/** The buffer of one such read, held from server.http.max_inflight_bytes while it lasts. */
const DISCARD_CHUNK_BYTES = 64 * 1024;

/**
 * Reads and drops the rest of a body, into `buf` when the reader is a BYOB one; true when it ended within `most`
 * bytes (a Content-Length body: at its length), false when it went past them or the read was cancelled.
 */
async function discardRest(
  reader: ReadableStreamBYOBReader | ReadableStreamDefaultReader<Uint8Array>,
  most: number,
  buf: Uint8Array,
): Promise<boolean> {
  let left = most;
  for (;;) {
    let result: ReadableStreamReadResult<Uint8Array>;
    if (reader instanceof ReadableStreamBYOBReader) {
      result = await reader.read(buf);
      if (result.value !== undefined) buf = new Uint8Array(result.value.buffer);
    } else {
      result = await reader.read();
    }
    if (result.done) return left >= 0;
    left -= result.value.byteLength;
    if (left < 0) return false;
  }
}

/** A BYOB reader on `body`, or undefined when it is not a byte stream. */
function byobReader(body: ReadableStream<Uint8Array>): ReadableStreamBYOBReader | undefined {
  try {
    return body.getReader({ mode: "byob" });
  } catch {
    return undefined;
  }
}

/** A copy of the first `size` bytes of `buf` in a buffer twice as large (at least `need`), at most `limit`. */
function grow(buf: Uint8Array, size: number, limit: number, need: number): Uint8Array {
  const next = new Uint8Array(Math.min(limit, Math.max(need, buf.byteLength * 2, INLINE_BODY_BYTES)));
  next.set(buf.subarray(0, size));
  return next;
}

/** A body read in progress, as BodyDeadlines sees it. */
interface PendingRead {
  readonly deadline: number;
  /** A streamed read's reader (cancelled on time-out), or what ends a one-call read. */
  readonly reader:
    | ReadableStreamBYOBReader
    | ReadableStreamDefaultReader<Uint8Array>
    | ((value: typeof TIMED_OUT) => void);
  timedOut: boolean;
}

/**
 * Cancels body reads that outlive the timeout. One interval serves every read (a timer per request would cost
 * more than the rest of a small request); it runs only while reads are pending, so a read ends between
 * `timeoutMs` and `timeoutMs` plus a quarter of it (at most a second) after it began.
 */
class BodyDeadlines {
  readonly timeoutMs: number;
  readonly #periodMs: number;
  readonly #reads = new Set<PendingRead>();
  #timer: ReturnType<typeof setInterval> | undefined;
  #ending = false;

  constructor(timeoutMs: number) {
    if (!(timeoutMs > 0)) throw new Error(`http: body timeout must be positive, got ${timeoutMs} ms`);
    this.timeoutMs = timeoutMs;
    this.#periodMs = Math.min(1000, Math.max(5, timeoutMs / 4));
  }

  /**
   * Reads a body of at most INLINE_BODY_BYTES in one call (`bytes`), or TIMED_OUT. A body that came whole with
   * its head cannot stall and is read without a deadline (a deadline is a promise per request, about a fifth of
   * the CPU time of a small request). Otherwise the read cannot be cancelled: on time-out it is left to end with
   * its connection.
   */
  readSmall(req: Request): Promise<Uint8Array | BodyFailure> {
    if (bodyArrived(req)) return req.bytes();
    return new Promise((resolve, reject) => {
      const read = this.watch(resolve);
      req.bytes().then((body) => {
        this.done(read);
        resolve(body);
      }, (err) => {
        this.done(read);
        reject(err);
      });
    });
  }

  watch(reader: PendingRead["reader"]): PendingRead {
    const deadline = this.#ending ? 0 : Date.now() + this.timeoutMs;
    const read: PendingRead = { deadline, reader, timedOut: false };
    this.#reads.add(read);
    this.#timer ??= setInterval(() => this.#sweep(), this.#periodMs);
    return read;
  }

  done(read: PendingRead): void {
    this.#reads.delete(read);
  }

  stop(): void {
    clearInterval(this.#timer);
    this.#timer = undefined;
  }

  /**
   * While on, body reads end as if their deadline had passed: those under way now, later ones at the next sweep
   * (for the service's stop, which would otherwise wait for a slow client).
   */
  setEnding(on: boolean): void {
    this.#ending = on;
    if (on && this.#reads.size > 0) this.#sweep(Infinity);
  }

  #sweep(now = Date.now()): void {
    for (const read of this.#reads) {
      if (read.deadline > now) continue;
      read.timedOut = true;
      this.#reads.delete(read);
      // A pending read then resolves as done, and readBody sees timedOut; a one-call read gets TIMED_OUT.
      if (typeof read.reader === "function") read.reader(TIMED_OUT);
      else read.reader.cancel().catch(() => {});
    }
    if (this.#reads.size === 0) this.stop();
  }
}

/**
 * Deno keeps a Request's state under a private symbol. For a request of Deno's HTTP server, that state gives
 * its headers without building a Headers object (`req.headers` would build one of every header, and a reply to a
 * request whose headers were built costs more to send): Deno 2.8.3 reads one header at a time (`header`), 2.8.2
 * gives them all as name and value pairs (`headerList`, one call for every header); and its body is a buffer,
 * not a stream, when the whole body arrived with the head (the usual small POST). For other requests
 * (node:https, or a Deno without the symbol) none of them is found, and the public API is used.
 */
const REQUEST_STATE = Object.getOwnPropertySymbols(new Request("http://localhost/"))
  .find((symbol) => symbol.description === "request");

/** The part of that state used here; every member may be missing. */
interface RequestState {
  header?: unknown;
  headerList?: unknown;
  body?: { streamOrStatic?: unknown } | null;
}

function stateOf(req: Request): RequestState | undefined {
  if (REQUEST_STATE === undefined) return undefined;
  return (req as unknown as Record<symbol, RequestState | undefined>)[REQUEST_STATE];
}

/**
 * The last request whose headerList was taken, and that list: a request's headers are read a few at a time. It
 * keeps that one request alive until the next one's headers are read.
 */
let listedRequest: Request | undefined;
let listed: Array<[string, string]> = [];

/** The value of header `name` (lower case). */
export function header(req: Request, name: string): string | null {
  const state = stateOf(req);
  if (typeof state?.header === "function") return state.header(name);
  if (state === undefined || !("headerList" in state)) return req.headers.get(name);
  if (listedRequest !== req) {
    listed = state.headerList as Array<[string, string]>;
    listedRequest = req;
  }
  // The server gives names in lower case, a Request built from a Headers keeps theirs; a repeated header's values
  // are joined as Headers.get joins them.
  let value: string | null = null;
  for (const [n, v] of listed) {
    if (n === name || (n.length === name.length && n.toLowerCase() === name)) {
      value = value === null ? v : `${value}, ${v}`;
    }
  }
  return value;
}

/**
 * The body of `req` when it came whole with the head, taken as Deno's own read takes it (the request's body is
 * used after); undefined when it did not, or when the request is not one of Deno's HTTP server.
 */
export function arrivedBody(req: Request): Uint8Array | undefined {
  const body = stateOf(req)?.body?.streamOrStatic;
  if (typeof body !== "object" || body === null || body instanceof ReadableStream) return undefined;
  const whole = body as { body?: unknown; consumed?: unknown };
  if (!(whole.body instanceof Uint8Array) || whole.consumed !== false) return undefined;
  whole.consumed = true;
  return whole.body;
}

/** Whether the body of `req` is already in memory, so reading it cannot stall. */
export function bodyArrived(req: Request): boolean {
  const body = stateOf(req)?.body;
  return body === null ||
    (typeof body?.streamOrStatic === "object" && !(body.streamOrStatic instanceof ReadableStream));
}

/** text/plain, application/json and application/octet-stream, in any case, with or without parameters. */
function acceptedType(header: string): boolean {
  if (ACCEPTED_TYPES.has(header)) return true;
  return ACCEPTED_TYPES.has(mediaType(header).toLowerCase());
}

/** The media type without parameters; of a header sent twice (joined with ", "), the first, as Go's Header.Get. */
function mediaType(header: string): string {
  const end = header.search(/[;,]/);
  return (end < 0 ? header : header.slice(0, end)).trim();
}

function decode(text: string): string | undefined {
  try {
    return decodeURIComponent(text);
  } catch {
    return undefined;
  }
}

/**
 * 404; but a path that is not clean (`//topics`, `/topics/./t/messages`) gets 301 to the clean one, query kept, as
 * the Go service's router (Go's ServeMux) answered: a client whose base URL ends in `/` still lists topics.
 */
function notFound(url: string, path: string, queryStart: number): Response {
  const clean = cleanPath(path);
  if (clean === path) return plain(404, "not found");
  const location = queryStart < 0 ? clean : clean + url.slice(queryStart);
  return new Response(null, { status: 301, headers: { location } });
}

/**
 * A path with empty, `.` and `..` segments resolved, a trailing slash kept (Go's net/http cleanPath).
 * @example cleanPath("//topics/./t/../t/messages") // "/topics/t/messages"
 */
export function cleanPath(path: string): string {
  const segments: string[] = [];
  for (const segment of path.split("/")) {
    if (segment === "" || segment === ".") continue;
    if (segment === "..") segments.pop();
    else segments.push(segment);
  }
  const clean = `/${segments.join("/")}`;
  return path.endsWith("/") && clean !== "/" ? `${clean}/` : clean;
}

/**
 * 503 while the service stops. On HTTP/1 it closes its connection (as Go's net/http does once shutting down): a
 * client then sends its next request elsewhere rather than into the listener's close. On HTTP/2 only when the
 * stop cut the read of the request's body (`cut`): Deno's server would keep that stream, and with it the
 * connection, open for the rest of a body that stopped coming; the other connections get GOAWAY.
 */
function shuttingDown(req: Request, cut: boolean): Response {
  return closeConnection(req, plain(503, "shutting down", 1), cut);
}

/**
 * `reply`, closing its connection when that is HTTP/1, which is when the request has a Host header (Deno gives an
 * HTTP/2 request its authority, never a Host header); on HTTP/2 a reply ends its own stream, and the connection
 * goes on serving the others, unless `evenHttp2`. The listener closes the connection once its requests are done
 * (reply.ts).
 */
function closeConnection(req: Request, reply: Response, evenHttp2 = false): Response {
  if (evenHttp2 || header(req, "host") !== null) reply.headers.set("connection", "close");
  return reply;
}

/**
 * 400 for a request with both Content-Length and Transfer-Encoding, and the connection closed after it (RFC 9112
 * 6.1): Deno's server reads such a body as chunked and keeps the connection, so a proxy before it that went by
 * the Content-Length would see the rest of the body as another request. Only seen when Content-Length comes
 * first: after Transfer-Encoding, Deno's server (hyper) drops it before the handler sees the request.
 */
function framedTwice(): Response {
  const res = plain(400, "both Content-Length and Transfer-Encoding given");
  res.headers.set("connection", "close");
  return res;
}

/** 501 for a transfer coding other than chunked alone, as Go's net/http answers it; the connection is closed. */
function notChunked(encoding: string): Response {
  const res = plain(501, `unsupported Transfer-Encoding: ${JSON.stringify(encoding)} (only chunked is)`);
  res.headers.set("connection", "close");
  return res;
}

function tooLarge(max: number, size: string): Response {
  return plain(413, tooLargeReason(size, max));
}

/** 413 for a whole batch, naming the config key of the limit it is over. */
function batchTooLarge(size: string, limit: string, key: "max_bytes" | "max_records"): Response {
  return plain(413, `batch too large: ${size}, at most ${limit} are accepted (server.http.batch.${key})`);
}

/** 401: no principal; the reply says which scheme to use. */
function unauthenticated(): Response {
  return new Response(`${UNAUTHENTICATED_REASON}\n`, {
    status: 401,
    headers: { "content-type": TEXT_PLAIN, "www-authenticate": "Bearer" },
  });
}

function forbidden(gate: Gate, principal: Principal, topic: string): Response {
  gate.count(principal.name, "forbidden");
  return plain(STATUS_BY_KIND.forbidden, `forbidden: ${gate.forbidden(principal, topic)}`);
}

function refused(refusal: Refusal): Response {
  return plain(refusal.status, refusal.reason, refusal.retryAfterSeconds);
}
