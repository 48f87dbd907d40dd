/** The monitoring listener: Prometheus `/metrics`, liveness `/healthz`, readiness `/readyz`. */
import { registry } from "../metrics.ts";
import type { Readiness } from "../producer/types.ts";
import type { Listener, ListenerOptions } from "./listener.ts";
import { notAllowed, plain, serveHttp, TEXT_PLAIN } from "./reply.ts";

/** Options of startMonitoringServer. */
export interface MonitoringServerOptions extends ListenerOptions {
  /** Asked on every `/readyz`. */
  readiness: () => Readiness;
}

/**
 * Starts the monitoring listener. It keeps answering while the service drains (draining changes nothing
 * here: `/readyz` reports it), so that probes see the stop. It takes TLS (and mTLS) but no token: probes and
 * scrapers rarely carry one, and it serves nothing that writes (docs/security.md).
 * @example await startMonitoringServer({ listen: ":9094", readiness: () => facade.readiness() })
 */
export async function startMonitoringServer(opts: MonitoringServerOptions): Promise<Listener> {
  const server = await serveHttp("monitoring", opts, (req) => handle(req, opts.readiness));
  return { address: server.address, port: server.port, setDraining: () => {}, shutdown: server.shutdown };
}

async function handle(req: Request, readiness: () => Readiness): Promise<Response> {
  const path = new URL(req.url).pathname;
  if (path !== "/metrics" && path !== "/healthz" && path !== "/readyz") return plain(404, "not found");
  if (req.method !== "GET" && req.method !== "HEAD") return notAllowed("GET, HEAD");
  if (path === "/metrics") {
    return new Response(await registry.metrics(), { headers: { "content-type": registry.contentType } });
  }
  if (path === "/healthz") return text(200, "ok");
  const state = readiness();
  if (state.ready) return text(200, "ready");
  return text(503, state.reasons.length > 0 ? state.reasons.join("\n") : "not ready");
}

/** A reply whose body is exactly `body` (probes compare it). */
function text(status: number, body: string): Response {
  return new Response(body, { status, headers: { "content-type": TEXT_PLAIN } });
}
