/**
 * The shape every listener shares (HTTP, gRPC, monitoring): how it is bound, where it is bound, how it drains and
 * stops, how a failure to bind is reported, and its TLS and access check (docs/security.md).
 */
import type { AddressInfo, Server, Socket } from "node:net";
import type { TLSSocket } from "node:tls";
import { formatHostPort, type ListenAddress } from "../listen_address.ts";
import { log } from "../log.ts";
import type { Gate } from "./auth.ts";
import type { Connection, ConnectionLimits, Connections } from "./limits.ts";
import type { TlsSource } from "./tls.ts";

/** How a listener is bound. */
export interface ListenerOptions {
  /** "host:port" or ":port" (all interfaces, IPv4 and IPv6: see bindHost); port 0 picks a free one. */
  listen: string;
  /** TLS (and mTLS when it has a client CA); plain text when absent. */
  tls?: TlsSource;
  /** Who may write to which topic; absent: anyone, anywhere, at no cost per request. */
  gate?: Gate;
  /** Connection count and timeouts; absent: the defaults of `server.<listener>.*`. */
  limits?: ConnectionLimits;
}

/** A running listener. */
export interface Listener {
  /** "host:port" as bound: the real port when the config said 0, `[::]` for `:port` and `0.0.0.0` (bindHost). */
  readonly address: string;
  readonly port: number;
  /** While on, new requests are refused (503, or UNAVAILABLE), and health reports that the service is stopping. */
  setDraining(on: boolean): void;
  /** Stops taking requests, lets those in flight end (within a bound), then closes. */
  shutdown(): Promise<void>;
}

/**
 * The start-up error for a listener that cannot bind: names the listener and the address, as the OS error
 * alone ("Address already in use (os error 98)") does not say which port of which listener.
 * @example listenError("http", { hostname: "0.0.0.0", port: 18080 }, err).message
 * // "http listener 0.0.0.0:18080: address already in use"
 */
export function listenError(listener: string, addr: ListenAddress, err: unknown): Error {
  const text = (err instanceof Error ? err.message : String(err)).replace(/ \(os error \d+\)$/, "");
  const reason = text.charAt(0).toLowerCase() + text.slice(1);
  return new Error(`${listener} listener ${formatHostPort(addr)}: ${reason}`, { cause: err });
}

/** Errors of node's listen() in words, as Deno.serve reports them. */
const LISTEN_ERRORS: Record<string, string> = {
  EADDRINUSE: "address already in use",
  EACCES: "permission denied",
  EADDRNOTAVAIL: "address not available",
};

/** A node:net listen() error in the words listenError reports. */
function nodeListenError(err: NodeJS.ErrnoException): string {
  return LISTEN_ERRORS[err.code ?? ""] ?? err.message;
}

/** The IPv4 wildcard, which listenAddress also gives for an empty host. */
const IPV4_ANY = "0.0.0.0";

/**
 * Binds with `bind` to `hostname`, the way the Go service's net.Listen does: the IPv4 wildcard (`0.0.0.0`, or
 * `:port`) binds `::`, which takes IPv4 and IPv6 on one socket as IPV6_V6ONLY is off (the Linux default,
 * `dualStack`), and binds `0.0.0.0` instead on a host without IPv6 or whose sockets are IPv6-only by default
 * (neither Deno.listen nor node:net here can turn IPV6_V6ONLY off, as Go does). Any other host, `::` included, is
 * bound as given. Resolves with what `bind` returned; rejects with its error.
 * @example const listener = await bindHost("0.0.0.0", (hostname) => Deno.listen({ hostname, port: 18080 }));
 */
export async function bindHost<T>(
  hostname: string,
  bind: (hostname: string) => T | Promise<T>,
  dualStack: boolean = wildcardIsDualStack(),
): Promise<T> {
  if (hostname !== IPV4_ANY || !dualStack) return await bind(hostname);
  try {
    return await bind("::");
  } catch (err) {
    if (!noIpv6(err)) throw err;
    return await bind(IPV4_ANY);
  }
}

/**
 * Whether a socket bound to `::` also takes IPv4: net.ipv6.bindv6only is 0. Unreadable (no IPv6 in the kernel,
 * or not Linux): assumed so, and a host without IPv6 fails the bind of `::` instead.
 */
function wildcardIsDualStack(): boolean {
  try {
    return Deno.readTextFileSync("/proc/sys/net/ipv6/bindv6only").trim() !== "1";
  } catch {
    return true;
  }
}

/** Whether a bind failed because the host has no IPv6 (EAFNOSUPPORT: the kernel has IPv6 off). */
function noIpv6(err: unknown): boolean {
  const { code, message } = err as { code?: unknown; message?: unknown };
  return code === "EAFNOSUPPORT" || /address family not supported/i.test(String(message));
}

/**
 * Binds a node:net or node:tls server (the gRPC and TLS HTTP listeners) as bindHost does and resolves with the
 * address it is bound to; rejects with listenError when it cannot bind. Later server errors are logged.
 */
export async function listenNode(
  server: Server,
  listener: string,
  addr: ListenAddress,
): Promise<ListenAddress> {
  try {
    await bindHost(addr.hostname, (host) => listenOnce(server, host, addr.port));
  } catch (err) {
    throw listenError(listener, addr, nodeListenError(err as NodeJS.ErrnoException));
  }
  server.on("error", (err) => log("error", `${listener}: listener error`, { error: err }));
  rearmAccepts(server);
  const bound = server.address() as AddressInfo;
  return { hostname: bound.address, port: bound.port };
}

/** A connection counted from its TCP accept, and what its deadline does (the socket destroyed, until re-pointed). */
export interface Counted {
  conn: Connection;
  close: () => void;
}

/**
 * Counts a node:tls server's connections against `conns` from their TCP accept, so that the handshake is under
 * max_connections and header_timeout: a client that never finishes one would otherwise hold its socket for good,
 * uncounted. Past max_connections the socket is closed at once (nothing can be said before the handshake).
 * Returns the count of a TLS socket of the server.
 */
export function countFromAccept(
  server: Server,
  conns: Connections,
): (socket: TLSSocket) => Counted | undefined {
  const counted = new WeakMap<Socket, Counted>();
  server.on("connection", (raw: Socket) => {
    const entry: Counted = { conn: undefined!, close: () => void raw.destroy() };
    const conn = conns.open(() => entry.close());
    if (conn === undefined) return void raw.destroy();
    entry.conn = conn;
    counted.set(raw, entry);
    raw.once("close", () => conn.closed());
  });
  // node:tls keeps the TCP socket a TLS socket wraps as `_parent`.
  return (socket) => counted.get((socket as TLSSocket & { _parent?: Socket })._parent as Socket);
}

/** How often a node:net listener's accepting is started again (see rearmAccepts). */
const REARM_MS = 1000;

/**
 * Deno 2.8's node:net stops accepting after an accept that failed (EMFILE: the process is out of file
 * descriptors) and says nothing: its listening handle is not polled again, and new connections wait in the
 * kernel's queue for good, long after descriptors are free. listen() on a handle that listens already polls it,
 * which accepts what waits: done once a second, so a listener accepts again within a second of descriptors
 * coming back. Elsewhere it costs one poll that finds nothing.
 */
function rearmAccepts(server: Server): void {
  const handle = () =>
    (server as unknown as { _handle?: { listen?(backlog: number): unknown } | null })._handle;
  const timer = setInterval(() => handle()?.listen?.(NODE_BACKLOG), REARM_MS);
  Deno.unrefTimer(timer);
  server.once("close", () => clearInterval(timer));
}

/** node:net's default backlog; ignored by a handle that listens already. */
const NODE_BACKLOG = 511;

/** One listen() of a node:net server; a server whose listen() failed may listen() again. */
function listenOnce(server: Server, host: string, port: number): Promise<void> {
  return new Promise<void>((resolve, reject) => {
    server.once("error", reject);
    server.listen({ port, host }, () => {
      server.off("error", reject);
      resolve();
    });
  });
}
