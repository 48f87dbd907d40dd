/** Shared pieces of the fault tests: a service config tuned for quick failure detection, the breaker, draining. */
import { type Broker, startBroker } from "../kafka/broker.ts";
import { type FaultProxy, startFaultProxy } from "../kafka/fault_proxy.ts";
import { freePort, type Service } from "./service.ts";
import { waitFor } from "./wait.ts";

/** Deep-merges plain objects (arrays and scalars in `b` replace those in `a`). */
export function merge(a: Record<string, unknown>, b: Record<string, unknown>): Record<string, unknown> {
  const out: Record<string, unknown> = { ...a };
  for (const [k, v] of Object.entries(b)) {
    const prev = out[k];
    out[k] = isPlain(prev) && isPlain(v) ? merge(prev, v) : v;
  }
  return out;
}

function isPlain(v: unknown): v is Record<string, unknown> {
  return typeof v === "object" && v !== null && !Array.isArray(v);
}

/** A config for fault tests: failures show within seconds, replay starts within a second. */
export function faultConfig(
  bootstrap: string,
  walDir: string,
  overrides: Record<string, unknown> = {},
): Record<string, unknown> {
  return merge({
    producer: {
      cb: { timeout: "2s", fails: 5, requests: 3 },
      resend: { period: "1s", rate_limit: 20000 },
      wal: { mode: "fallback", path: walDir },
      shutdown_timeout: "5s",
    },
    kafka: {
      brokers: [bootstrap],
      "message.timeout.ms": 4000,
      "linger.ms": 5,
      "statistics.interval.ms": 1000,
      "reconnect.backoff.max.ms": 1000,
      "socket.connection.setup.timeout.ms": 3000,
    },
  }, overrides);
}

/** Runs `fn`; when it throws, prints the service's log (minus librdkafka's own lines) before rethrowing. */
export async function withServiceLog<T>(svc: Service, fn: () => Promise<T>): Promise<T> {
  try {
    return await fn();
  } catch (err) {
    const lines = (await Deno.readTextFile(svc.logPath)).split("\n");
    console.error(lines.filter((l) => !l.includes('"msg":"librdkafka"')).slice(-60).join("\n"));
    throw err;
  }
}

/** Waits until the service's WAL holds no record (replay has drained it). */
export async function walDrained(svc: Service, timeoutMs = 120_000): Promise<void> {
  await waitFor("the WAL to drain", async () => (await svc.metric("wal_messages")) === 0, timeoutMs);
}

/** Waits until `kafka_cb_current_state` shows the breaker `open` (1) or `closed` (0). */
/** The breaker's changes so far, from the service's log: `from->to`, and why. */
export async function breakerChanges(svc: Service): Promise<Array<{ change: string; reason: string }>> {
  return (await svc.logs()).filter((l) => l.msg === "circuit breaker state changed").map((l) => ({
    change: `${l.from}->${l.to}`,
    reason: String(l.reason),
  }));
}

export async function waitForBreaker(
  svc: Service,
  state: "open" | "closed",
  timeoutMs: number,
): Promise<void> {
  const [verb, value] = state === "open" ? ["open", 1] : ["close", 0];
  await waitFor(
    `the breaker to ${verb}`,
    async () => (await svc.metric("kafka_cb_current_state")) === value,
    timeoutMs,
  );
}

/** GET /readyz status. */
export async function readyStatus(svc: Service): Promise<number> {
  const r = await fetch(`${svc.monitoring}/readyz`);
  await r.body?.cancel();
  return r.status;
}

/** A broker that advertises a fault proxy in front of it, so that every client connection goes through the proxy. */
export interface ProxiedBroker extends AsyncDisposable {
  broker: Broker;
  proxy: FaultProxy;
}

/**
 * Starts a fault proxy on a free port and a broker advertising it; disposing closes both.
 * @example await using net = await startProxiedBroker(); net.proxy.blackhole(true);
 */
export async function startProxiedBroker(): Promise<ProxiedBroker> {
  const proxyPort = freePort();
  const broker = await startBroker({ advertisedHost: "127.0.0.1", advertisedPort: proxyPort });
  const proxy = await startFaultProxy({ host: "127.0.0.1", port: broker.port }, { port: proxyPort });
  return {
    broker,
    proxy,
    async [Symbol.asyncDispose]() {
      await proxy.close();
      await broker.close();
    },
  };
}
