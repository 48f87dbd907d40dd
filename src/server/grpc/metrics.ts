/** gRPC server metrics with the labels of go-grpc-prometheus, so dashboards built for the Go service keep working. */
import { grpcHandled, grpcHandling, grpcReceived, grpcSent, grpcStarted } from "../../metrics.ts";

/** The service name in every `grpc_service` label. */
export const GRPC_SERVICE = "KafkaAmbassador";

/** grpc_code label values, indexed by status number: the names Go's `codes.Code.String()` gives. */
const CODE_NAMES = [
  "OK",
  "Canceled",
  "Unknown",
  "InvalidArgument",
  "DeadlineExceeded",
  "NotFound",
  "AlreadyExists",
  "PermissionDenied",
  "ResourceExhausted",
  "FailedPrecondition",
  "Aborted",
  "OutOfRange",
  "Unimplemented",
  "Internal",
  "Unavailable",
  "DataLoss",
  "Unauthenticated",
];

/** The metric children of one method, looked up once rather than per call or per message. */
export class MethodMetrics {
  readonly #started: { inc(): void };
  /** Request messages; `inc(n)` counts n of them at once. */
  readonly received: { inc(count?: number): void };
  /** Reply messages; `inc(n)` counts n of them at once. */
  readonly sent: { inc(count?: number): void };
  readonly handling: { observe(seconds: number): void };

  constructor(readonly type: "unary" | "bidi_stream", readonly method: string) {
    this.#started = grpcStarted.labels(type, GRPC_SERVICE, method);
    this.received = grpcReceived.labels(type, GRPC_SERVICE, method);
    this.sent = grpcSent.labels(type, GRPC_SERVICE, method);
    this.handling = grpcHandling.labels(type, GRPC_SERVICE, method);
  }

  /** Counts a started call and returns the handle that counts its end. */
  begin(): CallMetrics {
    this.#started.inc();
    return new CallMetrics(this);
  }
}

/** Metrics of one call; its end is counted once, whichever way the call ends first. */
export class CallMetrics {
  readonly #startedAt = performance.now();
  #ended = false;

  constructor(readonly method: MethodMetrics) {}

  /** Counts the end of the call with gRPC status `code`. */
  handled(code: number): void {
    if (this.#ended) return;
    this.#ended = true;
    const m = this.method;
    grpcHandled.labels(m.type, GRPC_SERVICE, m.method, CODE_NAMES[code] ?? String(code)).inc();
    m.handling.observe((performance.now() - this.#startedAt) / 1000);
  }
}
