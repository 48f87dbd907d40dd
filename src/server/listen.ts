/** Listen addresses as the config file gives them: "host:port", ":port", "[v6]:port". */

/** Where a listener binds. */
export interface ListenAddr {
  hostname: string;
  port: number;
}

/**
 * Parses a listen address; an empty host means every IPv4 interface.
 * @example parseListen("0.0.0.0:18080") // { hostname: "0.0.0.0", port: 18080 }
 * @example parseListen(":9094") // { hostname: "0.0.0.0", port: 9094 }
 * @example parseListen("[::1]:0") // { hostname: "::1", port: 0 }
 */
export function parseListen(listen: string): ListenAddr {
  const colon = listen.lastIndexOf(":");
  if (colon < 0) throw new Error(`listen: "${listen}": want "host:port" or ":port"`);
  let hostname = listen.slice(0, colon);
  const portText = listen.slice(colon + 1);
  if (hostname.startsWith("[") && hostname.endsWith("]")) {
    hostname = hostname.slice(1, -1);
  } else if (hostname.includes(":")) {
    throw new Error(`listen: "${listen}": an IPv6 host must be in brackets, e.g. "[::1]:18080"`);
  }
  if (hostname === "") hostname = "0.0.0.0";
  if (!/^\d{1,5}$/.test(portText) || Number(portText) > 65535) {
    throw new Error(`listen: "${listen}": port must be a number from 0 to 65535`);
  }
  return { hostname, port: Number(portText) };
}

/**
 * Formats a bind address the way gRPC expects it ("host:port", IPv6 hosts in brackets).
 * @example formatHostPort({ hostname: "::1", port: 80 }) // "[::1]:80"
 */
export function formatHostPort(addr: ListenAddr): string {
  return addr.hostname.includes(":") ? `[${addr.hostname}]:${addr.port}` : `${addr.hostname}:${addr.port}`;
}
