/** How a failed produce is reported to a client, the same on every listener. */
import { log } from "../log.ts";
import { ProduceError, type ProduceErrorKind } from "../producer/types.ts";

/** A refusal as the listeners send it: a status and a one-line reason. */
export interface Refusal {
  /**
   * A ProduceError kind; "unauthenticated" for a gRPC stream's record sent after its credentials were revoked;
   * "internal" for anything unexpected.
   */
  kind: ProduceErrorKind | "unauthenticated" | "internal";
  /** The HTTP status; gRPC replies carry it in `ProdRs.code`. */
  status: number;
  reason: string;
  /** Seconds, for `Retry-After`; set for status 503. */
  retryAfterSeconds?: number;
}

/** HTTP status per ProduceError kind (see ProduceErrorKind). */
export const STATUS_BY_KIND: Readonly<Record<ProduceErrorKind, number>> = {
  invalid: 400,
  forbidden: 403,
  too_large: 413,
  kafka: 502,
  unavailable: 503,
};

/**
 * Turns whatever `facade.produce` rejected with into a refusal. Errors other than ProduceError are logged
 * (they are bugs or surprises) and reported with a generic reason, as their text may not be fit for clients.
 */
export function refusalOf(err: unknown, where: string, topic: string): Refusal {
  if (err instanceof ProduceError) {
    const refusal: Refusal = {
      kind: err.kind,
      status: STATUS_BY_KIND[err.kind],
      reason: oneLine(err.message),
    };
    if (err.kind === "unavailable") refusal.retryAfterSeconds = retryAfter(err.retryAfterSeconds);
    return refusal;
  }
  log("error", `${where}: produce failed`, { topic, error: err });
  return { kind: "internal", status: 500, reason: "internal error" };
}

/** Whole seconds of at least 1 (1 when unknown), as `Retry-After` wants them. */
export function retryAfter(seconds: number | undefined): number {
  return seconds === undefined || !(seconds > 1) ? 1 : Math.ceil(seconds);
}

/** Replies are one line: line breaks in a reason become spaces. */
export function oneLine(text: string): string {
  return text.includes("\n") || text.includes("\r") ? text.replace(/[\r\n]+/g, " ") : text;
}
