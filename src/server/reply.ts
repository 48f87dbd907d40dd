/** Plain-text HTTP listeners: how they are bound, and their replies, the same for produce and monitoring. */
import { formatHostPort, listenAddress } from "../listen_address.ts";
import { log } from "../log.ts";
import { type ListenerOptions, listenError } from "./listener.ts";
import { oneLine } from "./refusal.ts";

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

/** A Deno.serve listener that is bound and logged. */
export interface BoundHttp {
  server: Deno.HttpServer<Deno.NetAddr>;
  /** "host:port" as bound. */
  address: string;
}

/**
 * Binds a Deno.serve listener for `name` ("http", "monitoring"): the one place where the plain-text HTTP
 * listeners are bound, so options such as TLS are added once. A request that throws gets 500 and a log line.
 * Throws, naming the listener and its address, when it cannot bind.
 */
export function serveHttp(
  name: string,
  opts: ListenerOptions,
  handler: (req: Request) => Response | Promise<Response>,
): BoundHttp {
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
    }, handler);
  } catch (err) {
    throw listenError(name, addr, err);
  }
  const address = formatHostPort(server.addr);
  log("info", `${name} listening`, { addr: address });
  return { server, address };
}
