/**
 * What the scripts that run this service and the Go kafka-ambassador side by side share (compare.ts,
 * compat_probe.ts): the listener ports, the one config both get, and waiting for a process's port.
 */
import { freePort } from "../tests/support/service.ts";

/** The listeners of one service. */
export interface Ports {
  http: number;
  grpc: number;
  monitoring: number;
}

/** Free loopback ports for the three listeners. */
export function freePorts(): Ports {
  return { http: freePort(), grpc: freePort(), monitoring: freePort() };
}

/**
 * The config both services get: the three listeners on loopback, a fallback WAL in `dir`/wal (the Go service
 * needs that directory made beforehand), the broker, and `kafka` as further librdkafka properties.
 */
export function serviceConfig(
  dir: string,
  bootstrap: string,
  ports: Ports,
  kafka: Record<string, number | string> = {},
): Record<string, unknown> {
  return {
    server: {
      http: { listen: `127.0.0.1:${ports.http}` },
      grpc: { listen: `127.0.0.1:${ports.grpc}` },
      monitoring: { listen: `127.0.0.1:${ports.monitoring}` },
    },
    producer: { wal: { mode: "fallback", path: `${dir}/wal` } },
    kafka: { brokers: [bootstrap], ...kafka },
  };
}

/**
 * Waits until something accepts TCP connections on `port`; throws once `exited()` says the process `what` is gone,
 * or after `timeoutMs`.
 */
export async function waitForPort(
  port: number,
  exited: () => boolean,
  what: string,
  timeoutMs = 30_000,
): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    if (exited()) throw new Error(`${what} exited during start-up`);
    try {
      (await Deno.connect({ hostname: "127.0.0.1", port })).close();
      return;
    } catch {
      await new Promise((r) => setTimeout(r, 100));
    }
  }
  throw new Error(`${what}: nothing listens on port ${port} after ${timeoutMs / 1000} s`);
}
