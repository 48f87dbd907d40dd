/** HTTP listeners: how they are bound (plain text or TLS), and their replies, the same for produce and monitoring. */
import https from "node:https";
import type { IncomingMessage, ServerResponse } from "node:http";
import { Readable } from "node:stream";
import type { TLSSocket } from "node:tls";
import { formatHostPort, listenAddress } from "../listen_address.ts";
import { log, logRepeated } from "../log.ts";
import { type ListenerOptions, listenError, nodeListenError } from "./listener.ts";
import { oneLine } from "./refusal.ts";
import { certNameOf, nodeTlsOptions, type TlsSource } from "./tls.ts";

export const TEXT_PLAIN = "text/plain; charset=utf-8";

/**
 * A one-line plain-text reply; `retryAfterSeconds` adds `Retry-After`.
 * @example plain(503, "wal: full", 5)
 */
export function plain(status: number, reason: string, retryAfterSeconds?: number): Response {
  const headers: Record<string, string> = { "content-type": TEXT_PLAIN };
  if (retryAfterSeconds !== undefined) headers["retry-after"] = String(retryAfterSeconds);
  return new Response(`${oneLine(reason)}\n`, { status, headers });
}

/** 405 with the methods the path takes in `Allow`. */
export function notAllowed(allow: string): Response {
  return new Response("method not allowed\n", {
    status: 405,
    headers: { "content-type": TEXT_PLAIN, "allow": allow },
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
 * text is Deno.serve; TLS is node:https (see tls.ts for why), with the same handler. A request that throws gets
 * 500 and a log line. Throws, naming the listener and its address, when it cannot bind.
 */
export function serveHttp(name: string, opts: ListenerOptions, handler: HttpHandler): Promise<BoundHttp> {
  if (opts.tls !== undefined) return serveHttps(name, opts.listen, opts.tls, handler);
  const addr = listenAddress(opts.listen);
  let server: Deno.HttpServer<Deno.NetAddr>;
  try {
    server = Deno.serve({
      hostname: addr.hostname,
      port: addr.port,
      onListen: () => {},
      onError: (err) => {
        log("error", `${name}: request failed`, { error: err });
        return plain(500, "internal error");
      },
    }, (req) => handler(req)); // Deno.serve's second argument is connection info, not a certificate name.
  } catch (err) {
    return Promise.reject(listenError(name, addr, err));
  }
  const address = formatHostPort(server.addr);
  log("info", `${name} listening`, { addr: address });
  return Promise.resolve({ address, port: server.addr.port, shutdown: () => server.shutdown() });
}

/**
 * A TLS listener on node:https: each request becomes a web Request for `handler`, and its Response is written
 * back. A new certificate from `tls` applies to new connections; the listening socket stays open.
 */
async function serveHttps(
  name: string,
  listen: string,
  tls: TlsSource,
  handler: HttpHandler,
): Promise<BoundHttp> {
  const addr = listenAddress(listen);
  const mtls = tls.material.ca !== undefined;
  const server = https.createServer(nodeTlsOptions(tls.material), async (req, res) => {
    const certName = mtls ? certNameOf(req.socket as TLSSocket) : undefined;
    let response: Response;
    try {
      response = await handler(toRequest(req, origin), certName);
    } catch (err) {
      log("error", `${name}: request failed`, { error: err });
      response = plain(500, "internal error");
    }
    await writeResponse(res, response).catch((err) => {
      logRepeated(`${name}: reply failed`, "debug", `${name}: reply failed`, { error: err });
      res.destroy();
    });
  });
  tls.subscribe((material) => server.setSecureContext(nodeTlsOptions(material)));
  server.on("tlsClientError", (err: Error) => {
    logRepeated(`${name}: tls handshake failed`, "debug", `${name}: tls handshake failed`, {
      error: err.message,
    });
  });
  const port = await new Promise<number>((resolve, reject) => {
    const onError = (err: NodeJS.ErrnoException) => reject(listenError(name, addr, nodeListenError(err)));
    server.once("error", onError);
    server.listen({ port: addr.port, host: addr.hostname }, () => {
      server.off("error", onError);
      server.on("error", (err) => log("error", `${name}: listener error`, { error: err }));
      resolve((server.address() as { port: number }).port);
    });
  });
  const address = formatHostPort({ ...addr, port });
  const origin = `https://${address}`;
  log("info", `${name} listening`, { addr: address, tls: true, mtls });
  return {
    address,
    port,
    shutdown: () =>
      new Promise<void>((resolve) => {
        server.close(() => resolve());
        server.closeIdleConnections();
      }),
  };
}

function toRequest(req: IncomingMessage, origin: string): Request {
  const headers = new Headers();
  const raw = req.rawHeaders;
  for (let i = 0; i + 1 < raw.length; i += 2) headers.append(raw[i], raw[i + 1]);
  const method = req.method ?? "GET";
  const body = method === "GET" || method === "HEAD"
    ? null
    : Readable.toWeb(req) as ReadableStream<Uint8Array>;
  return new Request(`${origin}${req.url ?? "/"}`, { method, headers, body });
}

async function writeResponse(res: ServerResponse, response: Response): Promise<void> {
  res.statusCode = response.status;
  for (const [name, value] of response.headers) res.setHeader(name, value);
  // Replies are short (a line, a JSON object, the metrics page): one write.
  res.end(response.body === null ? undefined : new Uint8Array(await response.arrayBuffer()));
}
