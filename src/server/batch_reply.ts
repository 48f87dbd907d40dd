/**
 * The reply to an HTTP batch: one status for the whole batch, and what became of each record, in request order
 * (the contract is in README.md, HTTP).
 */
import type { AckLevel } from "../message.ts";
import { recordsRefused } from "../metrics.ts";
import type { ProduceResult } from "../producer/types.ts";
import type { Refusal } from "./refusal.ts";

/** What became of one record: accepted (where it is), or refused (why). */
export type RecordOutcome = ProduceResult | Refusal;

/** The batch's status and, for 503, the `Retry-After` seconds. */
export interface BatchStatus {
  status: number;
  retryAfterSeconds?: number;
}

/** One refused record in the reply. */
interface RecordError {
  index: number;
  status: number;
  error: string;
}

const JSON_TYPE = "application/json";

/** Whether an outcome is a refusal (a ProduceResult has no status). */
export function isRefusal(outcome: RecordOutcome): outcome is Refusal {
  return "status" in outcome;
}

/**
 * 200 when at least one record was accepted, or there were none: a client must read `errors` whatever the
 * status. When every record was refused, the status they share; when they differ, the most pressing server-side
 * one (503, then 502, then 500), else 400. A 503 carries the longest `Retry-After` of its records.
 * @example batchStatus([{ where: "queued" }, refusal]) // { status: 200 }
 */
export function batchStatus(outcomes: readonly RecordOutcome[]): BatchStatus {
  let shared = 0;
  let mixed = false;
  const seen = new Set<number>();
  let retryAfterSeconds = 0;
  for (const outcome of outcomes) {
    if (!isRefusal(outcome)) return { status: 200 };
    if (shared === 0) shared = outcome.status;
    else if (outcome.status !== shared) mixed = true;
    seen.add(outcome.status);
    if (outcome.status === 503) {
      retryAfterSeconds = Math.max(retryAfterSeconds, outcome.retryAfterSeconds ?? 1);
    }
  }
  if (shared === 0) return { status: 200 };
  const status = !mixed ? shared : [503, 502, 500].find((s) => seen.has(s)) ?? 400;
  return status === 503 ? { status, retryAfterSeconds } : { status };
}

/**
 * The JSON reply: `{"count": N, "errors": [{"index", "status", "error"}]}`, and with ack=kafka `"results"`:
 * one entry per record, `{"partition", "offset"}` or null for a refused record, so that `results[i]` is record i.
 * Each refused record is counted in ka_records_refused_total.
 */
export function batchReply(outcomes: readonly RecordOutcome[], ack: AckLevel): Response {
  const errors: RecordError[] = [];
  const results: Array<{ partition: number; offset: string } | null> | undefined = ack === "kafka"
    ? []
    : undefined;
  for (let index = 0; index < outcomes.length; index++) {
    const outcome = outcomes[index];
    if (isRefusal(outcome)) {
      errors.push({ index, status: outcome.status, error: outcome.reason });
      recordsRefused.hot("http", String(outcome.status)).inc();
      results?.push(null);
    } else {
      results?.push({ partition: outcome.partition ?? -1, offset: outcome.offset ?? "-1" });
    }
  }
  const { status, retryAfterSeconds } = batchStatus(outcomes);
  const headers: Record<string, string> = { "content-type": JSON_TYPE };
  if (retryAfterSeconds !== undefined) headers["retry-after"] = String(retryAfterSeconds);
  const body = results === undefined
    ? { count: outcomes.length, errors }
    : { count: outcomes.length, errors, results };
  return new Response(JSON.stringify(body), { status, headers });
}
