/** HTTP listeners: how they are bound (plain text or TLS), and their replies, the same for produce and monitoring. */
import https from "node:https";
import type { IncomingMessage, ServerResponse } from "node:http";
import type { Socket } from "node:net";
import { Readable } from "node:stream";
import type { TLSSocket } from "node:tls";
import { formatHostPort, listenAddress } from "../listen_address.ts";
import { log, logRepeated } from "../log.ts";
import { type Connection, Connections, defaultLimits } from "./limits.ts";
import { bindHost, countFromAccept, type ListenerOptions, listenError, listenNode } from "./listener.ts";
import { oneLine } from "./refusal.ts";
import { certNameOf, nodeTlsOptions, type TlsSource } from "./tls.ts";

export const TEXT_PLAIN = "text/plain; charset=utf-8";

/**
 * A one-line plain-text reply; `retryAfterSeconds` adds `Retry-After`.
 * @example plain(503, "wal: full", 5)
 */
export function plain(status: number, reason: string, retryAfterSeconds?: number): Response {
  // As Go's http.Error set it on the Go service's error replies: a browser must not read the reason as HTML.
  const headers: Record<string, string> = { "content-type": TEXT_PLAIN, "x-content-type-options": "nosniff" };
  if (retryAfterSeconds !== undefined) headers["retry-after"] = String(retryAfterSeconds);
  return new Response(`${oneLine(reason)}\n`, { status, headers });
}

/** 405 with the methods the path takes in `Allow`. */
export function notAllowed(allow: string): Response {
  return new Response("method not allowed\n", {
    status: 405,
    headers: { "content-type": TEXT_PLAIN, "x-content-type-options": "nosniff", "allow": allow },
  });
}

/** Answers one request; `certName` is the client certificate's subject CN, on an mTLS listener. */
export type HttpHandler = (req: Request, certName?: string) => Response | Promise<Response>;

/** An HTTP listener that is bound and logged. */
export interface BoundHttp {
  /** "host:port" as bound. */
  address: string;
  port: number;
  /** Stops taking connections and resolves once those open are done. */
  shutdown(): Promise<void>;
}

/**
 * Binds the HTTP listener `name` ("http", "monitoring"): the one place where HTTP listeners are bound. Plain
 * text is Deno's own HTTP server on connections we accept (see serveTcp); TLS is node:https (see tls.ts for
 * why), with the same handler. Both count connections and close those past their deadlines (limits.ts). A
 * request that throws gets 500 and a log line. Throws, naming the listener and its address, when it cannot bind.
 */
export function serveHttp(
  name: "http" | "monitoring",
  opts: ListenerOptions,
  handler: HttpHandler,
): Promise<BoundHttp> {
  // Monitoring's requests are GETs a client may send again: there, idle connections give way to new ones.
  const conns = new Connections(name, opts.limits ?? defaultLimits(name), name === "monitoring");
  if (opts.tls !== undefined) return serveHttps(name, opts.listen, opts.tls, conns, handler);
  return serveTcp(name, opts.listen, conns, handler);
}

/**
 * Deno.serve's machinery (hyper) for one connection; Deno.serve itself accepts its connections unseen.
 * Aborting `signal` closes the connection at once; `shutdown()` closes it once its requests are answered.
 */
type ServeOnConnection = (
  conn: Deno.Conn,
  signal: AbortSignal,
  handler: (req: Request) => Response | Promise<Response>,
  onError: (err: unknown) => Response,
  onListen: () => void,
) => { finished: Promise<void>; shutdown(): Promise<void> };

/**
 * Deno 2.8 exposes it only among its internals. It lets us see every connection, at a cost per request
 * measured in docs/security.md (Limits).
 */
function serveOnConnection(): ServeOnConnection {
  const deno = Deno as unknown as { internal: symbol } & Record<symbol, { serveHttpOnConnection?: unknown }>;
  const serve = deno[deno.internal]?.serveHttpOnConnection;
  if (typeof serve !== "function") {
    throw new Error("this Deno has no per-connection HTTP server (Deno 2.8.2, the pinned one, has it)");
  }
  return serve as ServeOnConnection;
}

/**
 * A plain-text listener: an accept loop that counts connections (one past max_connections gets a 503 and is
 * closed) and hands each one to Deno's HTTP server with its own abort signal, which the sweep of `conns` uses
 * to close a connection past its deadline (never one with a request in flight: it has none). Shutdown closes
 * each connection once its requests are answered.
 */
async function serveTcp(
  name: string,
  listen: string,
  conns: Connections,
  handler: HttpHandler,
): Promise<BoundHttp> {
  const serve = serveOnConnection();
  const addr = listenAddress(listen);
  let listener: Deno.TcpListener;
  try {
    listener = await bindHost(addr.hostname, (hostname) => Deno.listen({ hostname, port: addr.port }));
  } catch (err) {
    throw listenError(name, addr, err);
  }
  const onError = (err: unknown) => {
    log("error", `${name}: request failed`, { error: err });
    return plain(500, "internal error");
  };
  /** Each connection's server, and the connection as counted. */
  const served = new Map<Served, Connection>();
  const refusal = tooManyConnections(name, conns.limits.maxConnections);

  const accept = (conn: Deno.Conn) => {
    const abort = new AbortController();
    const tracked = conns.open(() => abortServer(abort));
    if (tracked === undefined) return void refuseConnection(conn, refusal);
    const answered = (reply: Response): Response => {
      // Only refusals close their connection; the status alone keeps the usual reply off the headers.
      if (reply.status >= 400 && reply.headers.get("connection") === "close") tracked.closeWhenDone();
      tracked.requestEnded();
      return reply;
    };
    const failed = (err: unknown): never => {
      tracked.requestEnded();
      throw err;
    };
    const server = serve(
      conn,
      abort.signal,
      (req) => {
        tracked.requestStarted();
        // No async wrapper, try or finally here: this runs for every request.
        const reply = handler(req);
        return reply instanceof Promise ? reply.then(answered, failed) : answered(reply);
      },
      onError,
      () => {},
    );
    served.set(server, tracked);
    server.finished
      .catch(() => {}) // a reset connection ends here; nothing to report
      .finally(() => {
        tracked.closed();
        served.delete(server);
      });
  };
  const accepting = (async () => {
    for (;;) {
      let conn: Deno.Conn;
      try {
        conn = await listener.accept();
      } catch (err) {
        if (err instanceof Deno.errors.BadResource) return; // closed by shutdown
        // Out of file descriptors and the like: say so, and keep accepting once some are free.
        logRepeated(`${name}: accept failed`, "error", `${name}: accept failed`, { error: err });
        await new Promise((resolve) => setTimeout(resolve, 100));
        continue;
      }
      accept(conn);
    }
  })();

  const address = formatHostPort(listener.addr);
  log("info", `${name} listening`, { addr: address });
  let stopping: Promise<void> | undefined;
  return {
    address,
    port: listener.addr.port,
    shutdown: () =>
      stopping ??= (async () => {
        listener.close();
        await accepting;
        // Deno's graceful close answers what is in flight first (HTTP/2: with GOAWAY), but waits for the rest of a
        // body or of a first request head, and a connection it is closing can no longer be closed at once. So a
        // connection whose reply closes it, and one that never had a request (it may be half way through its
        // first head), are left to the sweep, which closes them once done; the others close gracefully.
        conns.closeWhenDone((conn) => !conn.used);
        for (const [server, tracked] of served) {
          if (!tracked.closing) server.shutdown().catch(() => {});
        }
        await Promise.all([...served.keys()].map((server) => server.finished.catch(() => {})));
        conns.stop();
      })(),
  };
}

/** One connection's server, as serveHttpOnConnection returns it. */
type Served = ReturnType<ServeOnConnection>;

/**
 * Closes one connection's server at once through its abort signal. Deno's server cancels itself from a listener
 * on that signal, which throws BadResource when the server is already closing (a graceful shutdown under way, or
 * its client gone and the close not done yet); an error thrown in an event listener is reported as uncaught and
 * ends the process. That one error is kept from the global handler for the length of the call: the connection is
 * closing already.
 */
export function abortServer(abort: AbortController): void {
  const closing = (event: ErrorEvent) => {
    if (event.error instanceof Deno.errors.BadResource) event.preventDefault();
  };
  globalThis.addEventListener("error", closing);
  try {
    abort.abort();
  } finally {
    globalThis.removeEventListener("error", closing);
  }
}

/** The reply to a connection past max_connections: a whole HTTP response, written before any request is read. */
function tooManyConnections(name: string, max: number): Uint8Array {
  return closingReply(
    "503 Service Unavailable",
    `too many connections: server.${name}.max_connections (${max}) are open`,
    "retry-after: 1\r\n",
  );
}

/**
 * A whole HTTP/1.1 response written straight to a socket (no server's response object is there): `reason` as
 * the one-line plain-text body, and the connection closed after it. `headers`: more header lines, each ending
 * in CRLF. `toHead`: the reply to a HEAD request, which says how long its body would be and has none (RFC 9110
 * 9.3.2).
 */
function closingReply(status: string, reason: string, headers = "", toHead = false): Uint8Array {
  const body = new TextEncoder().encode(`${oneLine(reason)}\n`);
  const head = new TextEncoder().encode(
    `HTTP/1.1 ${status}\r\ncontent-type: ${TEXT_PLAIN}\r\nx-content-type-options: nosniff\r\n${headers}` +
      `connection: close\r\ncontent-length: ${body.byteLength}\r\n\r\n`,
  );
  if (toHead) return head;
  const reply = new Uint8Array(head.byteLength + body.byteLength);
  reply.set(head);
  reply.set(body, head.byteLength);
  return reply;
}

/**
 * Writes the 503 and closes. What the client sent is read (once, for at most a second) before the close, as
 * closing with unread bytes resets the connection and the client may never see the reply.
 */
async function refuseConnection(conn: Deno.Conn, reply: Uint8Array): Promise<void> {
  const timer = setTimeout(() => conn.close(), 1000);
  try {
    await conn.write(reply);
    await conn.closeWrite();
    await conn.read(new Uint8Array(16 * 1024));
    clearTimeout(timer);
    conn.close();
  } catch {
    // Closed by the timer, or by the client.
    clearTimeout(timer);
    try {
      conn.close();
    } catch {
      // already closed
    }
  }
}

/**
 * A TLS listener on node:https: each request becomes a web Request for `handler`, and its Response is written
 * back. A new certificate from `tls` applies to new connections; the listening socket stays open. Connections
 * are counted from the TCP accept, so the TLS handshake counts against the header timeout.
 */
async function serveHttps(
  name: string,
  listen: string,
  tls: TlsSource,
  conns: Connections,
  handler: HttpHandler,
): Promise<BoundHttp> {
  const addr = listenAddress(listen);
  const mtls = tls.material.ca !== undefined;
  /** `continued`: the request waits for `100 Continue`, sent when its body is first read. */
  const serve = async (req: IncomingMessage, res: ServerResponse, continued: boolean) => {
    const socket = req.socket as TLSSocket;
    const conn = countOf(socket)?.conn;
    conn?.requestStarted();
    res.once("close", () => conn?.requestEnded());
    const certName = mtls ? certNameOf(socket) : undefined;
    const target = originForm(req.url ?? "/");
    const askForBody = continued
      ? () => {
        if (!res.headersSent && !res.writableEnded) res.writeContinue();
      }
      : undefined;
    let response: Response;
    try {
      response = target === undefined
        ? plain(400, "invalid request target")
        : await handler(toRequest(req, origin + target, askForBody), certName);
    } catch (err) {
      log("error", `${name}: request failed`, { error: err });
      response = plain(500, "internal error");
    }
    await writeResponse(res, response).catch((err) => {
      logRepeated(`${name}: reply failed`, "debug", `${name}: reply failed`, { error: err });
      res.destroy();
    });
  };
  const server = https.createServer(nodeTlsOptions(tls.material), (req, res) => {
    lastExchange.set(req.socket, { req, res });
    serve(req, res, false);
  });
  const countOf = countFromAccept(server, conns);
  // Idle connections are closed by `conns` at the listener's idle_timeout, not by node's 5 s default.
  server.keepAliveTimeout = conns.limits.idleTimeoutMs;
  server.on("clientError", (err: Error & { code?: string }, socket: Socket) => badRequest(name, err, socket));
  // node:http would answer `Expect: 100-continue` as it parses the head. Here, as Deno's own server and Go's do,
  // the `100 Continue` goes out when the body is first read, so a request refused by its head is not sent. A
  // pipelined one is served once its reply has the socket: neither its `100 Continue` (which node would put
  // inside the reply before it) nor its body deadline starts behind an earlier request's reply.
  server.on("checkContinue", (req: IncomingMessage, res: ServerResponse) => {
    lastExchange.set(req.socket, { req, res });
    if (res.socket) serve(req, res, true);
    else res.once("socket", () => serve(req, res, true));
  });
  // node:http hands CONNECT to this event, and closes the socket when no one listens.
  server.on("connect", (_req: IncomingMessage, socket: Socket) => {
    socket.end(closingReply("405 Method Not Allowed", "method not allowed"));
  });
  tls.subscribe((material) => server.setSecureContext(nodeTlsOptions(material)));
  server.on("tlsClientError", (err: Error) => {
    logRepeated(`${name}: tls handshake failed`, "debug", `${name}: tls handshake failed`, {
      error: err.message,
    });
  });
  const bound = await listenNode(server, name, addr);
  const address = formatHostPort(bound);
  const origin = `https://${address}`;
  log("info", `${name} listening`, { addr: address, tls: true, mtls });
  return {
    address,
    port: bound.port,
    shutdown: () =>
      new Promise<void>((resolve) => {
        server.close(() => {
          conns.stop();
          resolve();
        });
        server.closeIdleConnections();
        // node:http closes neither a connection in its TLS handshake nor one half way through a request head.
        conns.closeWhenDone(() => true);
      }),
  };
}

/**
 * The last request node:http parsed on each HTTPS connection, and its reply. Replies go out in request order, so
 * once this one is written every reply before it is too.
 */
const lastExchange = new WeakMap<Socket, { req: IncomingMessage; res: ServerResponse }>();

/**
 * A request node:http cannot parse: a one-line 400 (431 for a head too large), as the plain-text listener
 * answers, then the close. The requests before it on the connection are answered first, each in its turn:
 * their records may be produced already, and the client must not take the close for their failure.
 */
function badRequest(name: string, err: Error & { code?: string }, socket: Socket): void {
  logRepeated(`${name}: bad request`, "debug", `${name}: bad request`, { error: err.message });
  const problem = err.message.replace(/^Parse Error: /, "");
  const reply = () => {
    if (!socket.writable) return void socket.destroy();
    const status = err.code === "HPE_HEADER_OVERFLOW"
      ? "431 Request Header Fields Too Large"
      : "400 Bad Request";
    socket.end(closingReply(status, `invalid request: ${problem}`, "", failedMethod(err) === "HEAD"));
  };
  const last = lastExchange.get(socket);
  if (last === undefined || last.res.writableFinished) return reply();
  const { req, res: pending } = last;
  pending.once("close", () => pending.writableFinished || socket.destroy()); // cut short: nothing to answer
  if (!req.complete) {
    // The error is in that request's own body (a bad chunk size): its read fails, its reply says so, and the
    // connection ends after it.
    pending.once("finish", () => socket.end());
    // Not req.destroy(), which would take the socket down before the reply: the reader sees the error. A
    // request whose body no one reads (a GET) has no reader to tell, and an error event with no listener throws.
    if (req.listenerCount("error") > 0) {
      req.emit("error", new Error(`invalid request body: ${problem}`));
    }
  } else {
    pending.once("finish", reply);
  }
}

/**
 * The method of the request node:http could not parse: that of the last request line before the point where
 * parsing failed, in the bytes of the read that failed (earlier pipelined requests may come first in them).
 */
function failedMethod(err: Error & { rawPacket?: Uint8Array; bytesParsed?: number }): string | undefined {
  const raw = err.rawPacket;
  if (!(raw instanceof Uint8Array)) return undefined;
  const parsed = new TextDecoder("latin1").decode(raw.subarray(0, err.bytesParsed ?? raw.byteLength));
  return [...parsed.matchAll(/(?:^|\n)([A-Z]+) [^ \r\n]+ HTTP\//g)].at(-1)?.[1];
}

/**
 * The request target as a path and query: the origin form as it is, the absolute form (`http://host/path`,
 * which RFC 9112 has servers accept) reduced to its path and query; undefined for the others (`*`, an authority).
 */
function originForm(target: string): string | undefined {
  if (target.startsWith("/")) return target;
  if (!/^https?:\/\//i.test(target)) return undefined;
  try {
    const url = new URL(target);
    return url.pathname + url.search;
  } catch {
    return undefined;
  }
}

/**
 * A web Request for `req`; `url` is absolute. `askForBody`: called once, when the body is first read (to send
 * `100 Continue`).
 */
function toRequest(req: IncomingMessage, url: string, askForBody?: () => void): Request {
  const headers = new Headers();
  const raw = req.rawHeaders;
  for (let i = 0; i + 1 < raw.length; i += 2) headers.append(raw[i], raw[i + 1]);
  const method = req.method ?? "GET";
  let body: ReadableStream<Uint8Array> | null = null;
  if (method !== "GET" && method !== "HEAD") {
    const stream = Readable.toWeb(req) as ReadableStream<Uint8Array>;
    body = askForBody === undefined ? stream : onFirstRead(stream, askForBody);
  }
  return new Request(url, { method, headers, body });
}

/** `stream`, calling `first` when a reader first asks it for bytes (not before: it pulls nothing ahead). */
function onFirstRead(stream: ReadableStream<Uint8Array>, first: () => void): ReadableStream<Uint8Array> {
  const reader = stream.getReader();
  let asked = false;
  return new ReadableStream<Uint8Array>({
    async pull(controller) {
      if (!asked) {
        asked = true;
        first();
      }
      const { done, value } = await reader.read();
      if (done) controller.close();
      else controller.enqueue(value);
    },
    cancel: (reason) => reader.cancel(reason),
  }, { highWaterMark: 0 });
}

async function writeResponse(res: ServerResponse, response: Response): Promise<void> {
  res.statusCode = response.status;
  for (const [name, value] of response.headers) res.setHeader(name, value);
  // Replies are short (a line, a JSON object, the metrics page): one write.
  res.end(response.body === null ? undefined : new Uint8Array(await response.arrayBuffer()));
}
