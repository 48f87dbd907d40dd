/** Listen addresses as the listeners print them; parsing lives with the config that validates them. */
import type { ListenAddress } from "../config.ts";

/**
 * Formats a bind address as "host:port", IPv6 hosts in brackets (the form gRPC expects, and users read).
 * @example formatHostPort({ hostname: "::1", port: 80 }) // "[::1]:80"
 */
export function formatHostPort(addr: ListenAddress): string {
  return addr.hostname.includes(":") ? `[${addr.hostname}]:${addr.port}` : `${addr.hostname}:${addr.port}`;
}

/**
 * The start-up error for a listener that cannot bind: names the listener and the address, as the OS error
 * alone ("Address already in use (os error 98)") does not say which port of which listener.
 * @example listenError("http", { hostname: "0.0.0.0", port: 18080 }, err).message
 * // "http: cannot listen on 0.0.0.0:18080: address already in use"
 */
export function listenError(listener: string, addr: ListenAddress, err: unknown): Error {
  const text = (err instanceof Error ? err.message : String(err)).replace(/ \(os error \d+\)$/, "");
  const reason = text.charAt(0).toLowerCase() + text.slice(1);
  return new Error(`${listener}: cannot listen on ${formatHostPort(addr)}: ${reason}`, { cause: err });
}
