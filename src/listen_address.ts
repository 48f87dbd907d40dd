/**
 * Listen addresses: the config checks them, the listeners bind to them. A leaf module, so that both may import
 * it without the config depending on the servers.
 */

/** A listen address split for a socket API. */
export interface ListenAddress {
  hostname: string;
  port: number;
}

const LISTEN = /^(?:\[([0-9A-Fa-f:.]+(?:%[\w.-]+)?)\]|([A-Za-z0-9._-]*)):(\d{1,5})$/;

/**
 * Splits `host:port` (`:18080`, `0.0.0.0:18080`, `[::1]:18080`); an empty host becomes `0.0.0.0`, which the
 * listeners bind as IPv4 and IPv6 (bindHost in server/listener.ts).
 * Throws an Error on a malformed address (the config has already refused those).
 * @example listenAddress(":18080") // { hostname: "0.0.0.0", port: 18080 }
 */
export function listenAddress(listen: string): ListenAddress {
  const match = LISTEN.exec(listen);
  const port = match === null ? NaN : Number(match[3]);
  if (match === null || port > 65535) {
    throw new Error(`expected host:port (e.g. 0.0.0.0:18080 or :18080), got ${JSON.stringify(listen)}`);
  }
  const hostname = match[1] ?? match[2];
  return { hostname: hostname === "" ? "0.0.0.0" : hostname, port };
}

/**
 * Formats a bind address as "host:port", IPv6 hosts in brackets (the form gRPC expects, and users read).
 * @example formatHostPort({ hostname: "::1", port: 80 }) // "[::1]:80"
 */
export function formatHostPort(addr: ListenAddress): string {
  return addr.hostname.includes(":") ? `[${addr.hostname}]:${addr.port}` : `${addr.hostname}:${addr.port}`;
}
