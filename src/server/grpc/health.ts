/**
 * grpc.health.v1.Health, Check and Watch, for "" (the server) and "KafkaAmbassador": SERVING while the server
 * is not draining and the facade would accept a message posted now, else NOT_SERVING.
 */
import type { ProducerFacade } from "../../producer/types.ts";
import type { GrpcCall } from "./call.ts";
import { GRPC_SERVICE } from "./metrics.ts";
import type { Schemas } from "./schema.ts";
import { Status } from "./status.ts";
import { CallError, serveUnary } from "./unary.ts";

/** HealthCheckResponse.ServingStatus. */
const SERVING = 1;
const NOT_SERVING = 2;
const SERVICE_UNKNOWN = 3;

/** How often Watch calls look at readiness, which the facade does not announce. */
const WATCH_INTERVAL_MS = 1000;

/** One Watch call and the status it last sent. */
interface Watch {
  call: GrpcCall;
  service: string;
  last: number;
}

/** The health service of one server. */
export class Health {
  readonly #schemas: Schemas;
  readonly #facade: ProducerFacade;
  readonly #isDraining: () => boolean;
  readonly #watches = new Set<Watch>();
  #timer: ReturnType<typeof setInterval> | undefined;

  constructor(schemas: Schemas, facade: ProducerFacade, isDraining: () => boolean) {
    this.#schemas = schemas;
    this.#facade = facade;
    this.#isDraining = isDraining;
  }

  /** The status of `service`; undefined for a service not served. */
  status(service: string): number | undefined {
    if (service !== "" && service !== GRPC_SERVICE) return undefined;
    return !this.#isDraining() && this.#facade.readiness().ready ? SERVING : NOT_SERVING;
  }

  check(call: GrpcCall): void {
    serveUnary(call, (bytes) => {
      const service = this.#service(bytes);
      const status = this.status(service);
      if (status === undefined) return Promise.reject(new CallError(Status.NOT_FOUND, "unknown service"));
      return Promise.resolve(this.#encode(status));
    });
  }

  watch(call: GrpcCall): void {
    let watch: Watch | undefined;
    call.start({
      onMessage: (bytes) => {
        if (watch !== undefined) return;
        let service: string;
        try {
          service = this.#service(bytes);
        } catch (err) {
          call.end(Status.INTERNAL, (err as Error).message);
          return;
        }
        watch = { call, service, last: this.status(service) ?? SERVICE_UNKNOWN };
        call.send(this.#encode(watch.last));
        this.#watches.add(watch);
        this.#timer ??= setInterval(() => this.notify(), WATCH_INTERVAL_MS);
      },
      onHalfClose: () => {
        if (watch === undefined) call.end(Status.UNIMPLEMENTED, "no request message");
      },
      onEnd: () => {
        if (watch !== undefined) this.#watches.delete(watch);
        if (this.#watches.size === 0 && this.#timer !== undefined) {
          clearInterval(this.#timer);
          this.#timer = undefined;
        }
      },
    });
  }

  /** Sends the new status to every Watch whose status changed. */
  notify(): void {
    for (const watch of this.#watches) {
      const status = this.status(watch.service) ?? SERVICE_UNKNOWN;
      if (status === watch.last) continue;
      watch.last = status;
      watch.call.send(this.#encode(status));
    }
  }

  /** Ends every Watch call (server shutdown). */
  endAll(): void {
    for (const watch of [...this.#watches]) watch.call.end(Status.UNAVAILABLE, "shutting down");
  }

  /** The service a HealthCheckRequest names; throws a CallError (INTERNAL) on one that does not decode. */
  #service(bytes: Uint8Array): string {
    const t = this.#schemas.healthCheckRequest;
    let request: { service?: string };
    try {
      request = t.toObject(t.decode(bytes)) as { service?: string };
    } catch (err) {
      throw new CallError(Status.INTERNAL, `cannot decode HealthCheckRequest: ${(err as Error).message}`);
    }
    return request.service ?? "";
  }

  #encode(status: number): Uint8Array {
    const t = this.#schemas.healthCheckResponse;
    return t.encode(t.fromObject({ status })).finish();
  }
}
