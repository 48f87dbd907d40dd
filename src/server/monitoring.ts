/** The monitoring listener: Prometheus `/metrics`, liveness `/healthz`, readiness `/readyz`. */
import { log } from "../log.ts";
import { registry } from "../metrics.ts";
import type { Readiness } from "../producer/types.ts";
import { listenAddress } from "../config.ts";
import { listenError } from "./listen.ts";

/** A running monitoring listener. */
export interface MonitoringServer {
  readonly addr: Deno.NetAddr;
  shutdown(): Promise<void>;
}

const TEXT_PLAIN = "text/plain; charset=utf-8";

/**
 * Starts the monitoring listener on `listen` ("host:port" or ":port"); `readiness` is asked on every `/readyz`.
 * @example startMonitoringServer({ listen: ":9094", readiness: () => facade.readiness() })
 */
export function startMonitoringServer(
  opts: { listen: string; readiness: () => Readiness },
): MonitoringServer {
  const addr = listenAddress(opts.listen);
  let server: Deno.HttpServer<Deno.NetAddr>;
  try {
    server = Deno.serve({
      hostname: addr.hostname,
      port: addr.port,
      onListen: () => {},
      onError: (err) => {
        log("error", "monitoring: request failed", { error: err });
        return text(500, "internal error\n");
      },
    }, (req) => handle(req, opts.readiness));
  } catch (err) {
    throw listenError("monitoring", addr, err);
  }
  log("info", "monitoring listening", { addr: `${server.addr.hostname}:${server.addr.port}` });
  return { addr: server.addr, shutdown: () => server.shutdown() };
}

async function handle(req: Request, readiness: () => Readiness): Promise<Response> {
  const path = new URL(req.url).pathname;
  if (path !== "/metrics" && path !== "/healthz" && path !== "/readyz") return text(404, "not found\n");
  if (req.method !== "GET" && req.method !== "HEAD") {
    return new Response("method not allowed\n", {
      status: 405,
      headers: { "content-type": TEXT_PLAIN, "allow": "GET, HEAD" },
    });
  }
  if (path === "/metrics") {
    return new Response(await registry.metrics(), { headers: { "content-type": registry.contentType } });
  }
  if (path === "/healthz") return text(200, "ok");
  const state = readiness();
  if (state.ready) return text(200, "ready");
  return text(503, state.reasons.length > 0 ? state.reasons.join("\n") : "not ready");
}

function text(status: number, body: string): Response {
  return new Response(body, { status, headers: { "content-type": TEXT_PLAIN } });
}
