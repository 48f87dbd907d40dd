/** The monitoring listener: Prometheus `/metrics`, liveness `/healthz`, readiness `/readyz`. */
import { log } from "../log.ts";
import { registry } from "../metrics.ts";
import type { Readiness } from "../producer/types.ts";
import { formatHostPort, listenAddress } from "../listen_address.ts";
import { type Listener, type ListenerOptions, listenError } from "./listener.ts";
import { notAllowed, plain, TEXT_PLAIN } from "./reply.ts";

/** Options of startMonitoringServer. */
export interface MonitoringServerOptions extends ListenerOptions {
  /** Asked on every `/readyz`. */
  readiness: () => Readiness;
}

/**
 * Starts the monitoring listener. It keeps answering while the service drains (draining changes nothing
 * here: `/readyz` reports it), so that probes see the stop.
 * @example startMonitoringServer({ listen: ":9094", readiness: () => facade.readiness() })
 */
export function startMonitoringServer(opts: MonitoringServerOptions): Listener {
  const addr = listenAddress(opts.listen);
  let server: Deno.HttpServer<Deno.NetAddr>;
  try {
    server = Deno.serve({
      hostname: addr.hostname,
      port: addr.port,
      onListen: () => {},
      onError: (err) => {
        log("error", "monitoring: request failed", { error: err });
        return plain(500, "internal error");
      },
    }, (req) => handle(req, opts.readiness));
  } catch (err) {
    throw listenError("monitoring", addr, err);
  }
  const address = formatHostPort(server.addr);
  log("info", "monitoring listening", { addr: address });
  return { address, port: server.addr.port, setDraining: () => {}, shutdown: () => server.shutdown() };
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
