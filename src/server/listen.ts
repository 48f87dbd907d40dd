/** Listen addresses as gRPC wants them; parsing lives with the config that validates them. */
import type { ListenAddress } from "../config.ts";

/**
 * Formats a bind address the way gRPC expects it ("host:port", IPv6 hosts in brackets).
 * @example formatHostPort({ hostname: "::1", port: 80 }) // "[::1]:80"
 */
export function formatHostPort(addr: ListenAddress): string {
  return addr.hostname.includes(":") ? `[${addr.hostname}]:${addr.port}` : `${addr.hostname}:${addr.port}`;
}
