/** The HTTP produce listener (COMPAT.md, HTTP): `POST /topics/{topic}/messages` and `GET /topics`. */
import { log } from "../log.ts";
import { httpRequests } from "../metrics.ts";
import type { AckLevel, Message, ProducerFacade } from "../producer/types.ts";
import { listenAddress } from "../config.ts";
import { ackProblem, parseAck, parsePartition, partitionProblem } from "./params.ts";
import { oneLine, type Refusal, refusalOf } from "./refusal.ts";
import { topicProblem } from "./topic.ts";

/** A running HTTP listener. */
export interface HttpServer {
  readonly addr: Deno.NetAddr;
  /** While on, produce requests get 503 "shutting down" with `Retry-After`. */
  setDraining(on: boolean): void;
  /** Stops taking requests, waits for those in flight, then closes the listener. */
  shutdown(): Promise<void>;
}

const ROUTE_MESSAGES = "/topics/{topic}/messages";
const ROUTE_TOPICS = "/topics";
/** The route label for paths that match no route, so raw paths never become label values. */
const ROUTE_NONE = "none";

const PREFIX = "/topics/";
const SUFFIX = "/messages";

const TEXT_PLAIN = "text/plain; charset=utf-8";
const JSON_TYPE = "application/json";
const ACCEPTED_TYPES = new Set(["text/plain", "application/json", "application/octet-stream"]);

const encoder = new TextEncoder();

/**
 * Starts the HTTP listener on `listen` ("host:port" or ":port"; port 0 picks a free one).
 * @example const http = startHttpServer({ listen: "127.0.0.1:0", facade }); console.log(http.addr.port);
 */
export function startHttpServer(opts: { listen: string; facade: ProducerFacade }): HttpServer {
  const { hostname, port } = listenAddress(opts.listen);
  const handler = new HttpHandler(opts.facade);
  const server = Deno.serve({
    hostname,
    port,
    onListen: () => {},
    onError: (err) => {
      log("error", "http: request failed", { error: err });
      return plain(500, "internal error");
    },
  }, (req) => handler.handle(req));
  log("info", "http listening", { addr: `${server.addr.hostname}:${server.addr.port}` });
  return {
    addr: server.addr,
    setDraining: (on) => handler.draining = on,
    shutdown: async () => {
      handler.draining = true;
      await server.shutdown();
    },
  };
}

/** Routes and answers requests; kept apart from the listener so the hot path is plain method calls. */
class HttpHandler {
  draining = false;
  /** Counter children per "route code", so a request does not rebuild its label set. */
  private readonly counted = new Map<string, { inc(): void }>();

  constructor(private readonly facade: ProducerFacade) {}

  async handle(req: Request): Promise<Response> {
    // Slicing the URL string is much cheaper than `new URL()`, and these routes need no more.
    const url = req.url;
    const pathStart = url.indexOf("/", url.indexOf("//") + 2);
    const queryStart = url.indexOf("?", pathStart);
    const path = queryStart < 0 ? url.slice(pathStart) : url.slice(pathStart, queryStart);
    let route = ROUTE_NONE;
    let res: Response;
    if (path.length >= PREFIX.length + SUFFIX.length && path.startsWith(PREFIX) && path.endsWith(SUFFIX)) {
      const topic = path.slice(PREFIX.length, path.length - SUFFIX.length);
      if (topic.includes("/")) {
        res = plain(404, "not found");
      } else {
        route = ROUTE_MESSAGES;
        res = req.method === "POST"
          ? await this.produce(req, topic, queryStart < 0 ? "" : url.slice(queryStart + 1))
          : notAllowed("POST");
      }
    } else if (path === ROUTE_TOPICS) {
      route = ROUTE_TOPICS;
      res = req.method === "GET" ? await this.listTopics() : notAllowed("GET");
    } else {
      res = plain(404, "not found");
    }
    this.count(route, res.status);
    return res;
  }

  private async produce(req: Request, rawTopic: string, query: string): Promise<Response> {
    if (this.draining) return plain(503, "shutting down", 1);
    const topic = rawTopic.includes("%") ? decode(rawTopic) : rawTopic;
    if (topic === undefined) return plain(400, `invalid topic name: ${JSON.stringify(rawTopic)}`);
    const bad = topicProblem(topic);
    if (bad !== undefined) return plain(400, bad);
    // An empty body is a valid, empty Kafka value (not a tombstone: that would need a null value).
    const message: Message = { topic, value: EMPTY };
    let ack: AckLevel = "none";
    if (query.length > 0) {
      const parsed = readQuery(query, message);
      if (typeof parsed === "string") return plain(400, parsed);
      ack = parsed.ack;
    }

    const contentType = req.headers.get("content-type");
    if (contentType !== null && !acceptedType(contentType)) {
      return plain(415, `unsupported content type: ${mediaType(contentType)}`);
    }
    const max = this.facade.maxMessageBytes;
    const length = req.headers.get("content-length");
    if (length !== null && Number(length) > max) return tooLarge(max, `${length} bytes`);
    let value: Uint8Array | undefined;
    try {
      value = length !== null ? new Uint8Array(await req.arrayBuffer()) : await readCapped(req.body, max);
    } catch (err) {
      log("debug", "http: could not read request body", { topic, error: err });
      return plain(400, "could not read request body");
    }
    if (value === undefined) return tooLarge(max, `more than ${max} bytes`);
    message.value = value;

    try {
      const result = await this.facade.produce(message, ack);
      if (ack !== "kafka") return new Response(null);
      const body = JSON.stringify({ partition: result.partition ?? -1, offset: result.offset ?? "-1" });
      return new Response(body, { headers: { "content-type": JSON_TYPE } });
    } catch (err) {
      return refused(refusalOf(err, "http", message.topic));
    }
  }

  private async listTopics(): Promise<Response> {
    try {
      const names = await this.facade.listTopics();
      return new Response(names.join("\n"), { headers: { "content-type": TEXT_PLAIN } });
    } catch (err) {
      log("warn", "http: cannot list topics", { error: err });
      const reason = err instanceof Error ? err.message : String(err);
      return plain(503, `cannot list topics: ${reason}`, 1);
    }
  }

  private count(route: string, status: number): void {
    const key = `${route} ${status}`;
    let child = this.counted.get(key);
    if (child === undefined) {
      child = httpRequests.labels(route, String(status));
      this.counted.set(key, child);
    }
    child.inc();
  }
}

const EMPTY = new Uint8Array(0);

/**
 * Applies `ack`, `key` and `partition` from a query string to `message`; returns the ack level, or why the
 * query is refused. Other parameters are ignored, so clients may add their own (e.g. cache busters).
 */
function readQuery(query: string, message: Message): { ack: AckLevel } | string {
  let ack: AckLevel = "none";
  for (const pair of query.split("&")) {
    const eq = pair.indexOf("=");
    const name = eq < 0 ? pair : pair.slice(0, eq);
    if (name !== "ack" && name !== "key" && name !== "partition") continue;
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

/** Reads a body of unknown length (chunked); gives up, returning undefined, as soon as it passes `max` bytes. */
async function readCapped(
  body: ReadableStream<Uint8Array> | null,
  max: number,
): Promise<Uint8Array | undefined> {
  if (body === null) return EMPTY;
  const chunks: Uint8Array[] = [];
  let size = 0;
  const reader = body.getReader();
  for (;;) {
    const { done, value } = await reader.read();
    if (done) break;
    size += value.byteLength;
    if (size > max) {
      await reader.cancel();
      return undefined;
    }
    chunks.push(value);
  }
  if (chunks.length === 1) return chunks[0];
  const out = new Uint8Array(size);
  let at = 0;
  for (const chunk of chunks) {
    out.set(chunk, at);
    at += chunk.byteLength;
  }
  return out;
}

/** text/plain, application/json and application/octet-stream, in any case, with or without parameters. */
function acceptedType(header: string): boolean {
  if (ACCEPTED_TYPES.has(header)) return true;
  return ACCEPTED_TYPES.has(mediaType(header).toLowerCase());
}

function mediaType(header: string): string {
  const semi = header.indexOf(";");
  return (semi < 0 ? header : header.slice(0, semi)).trim();
}

function decode(text: string): string | undefined {
  try {
    return decodeURIComponent(text);
  } catch {
    return undefined;
  }
}

function tooLarge(max: number, size: string): Response {
  return plain(413, `message too large: ${size}, at most ${max} bytes are accepted`);
}

function notAllowed(allow: string): Response {
  return new Response("method not allowed\n", {
    status: 405,
    headers: { "content-type": TEXT_PLAIN, "allow": allow },
  });
}

function refused(refusal: Refusal): Response {
  return plain(refusal.status, refusal.reason, refusal.retryAfterSeconds);
}

/** A one-line plain-text reply; `retryAfterSeconds` adds `Retry-After`. */
function plain(status: number, reason: string, retryAfterSeconds?: number): Response {
  const headers: Record<string, string> = { "content-type": TEXT_PLAIN };
  if (retryAfterSeconds !== undefined) headers["retry-after"] = String(retryAfterSeconds);
  return new Response(`${oneLine(reason)}\n`, { status, headers });
}
