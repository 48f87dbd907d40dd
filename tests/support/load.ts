/** Numbered-message load for end-to-end tests: every id is accounted for, from the client to the consumer. */
import assert from "node:assert/strict";

/** What happened to each id sent. */
export interface LoadResult {
  /** Ids that got a 2xx. */
  acked: Set<number>;
  /** Ids refused, with the status (0 = connection error). */
  refused: Map<number, number>;
}

/** The payload for message `id` of run `run`; `parseId` reverses it. */
export function payload(run: string, id: number): string {
  return `${run}:${id}`;
}

/** The id in a payload made by `payload`, or null for a foreign payload. */
export function parseId(run: string, value: string | null): number | null {
  if (value === null || !value.startsWith(`${run}:`)) return null;
  const id = Number(value.slice(run.length + 1));
  return Number.isInteger(id) ? id : null;
}

/** POSTs messages `from`..`to-1` to `topic` with `concurrency` requests at a time. */
export async function postRange(
  baseUrl: string,
  topic: string,
  run: string,
  from: number,
  to: number,
  opts: { concurrency?: number; ack?: string; stop?: () => boolean } = {},
): Promise<LoadResult> {
  const result: LoadResult = { acked: new Set(), refused: new Map() };
  const query = opts.ack ? `?ack=${opts.ack}` : "";
  const url = `${baseUrl}/topics/${topic}/messages${query}`;
  let next = from;
  const worker = async () => {
    while (next < to && !(opts.stop?.() ?? false)) {
      const id = next++;
      try {
        const r = await fetch(url, {
          method: "POST",
          headers: { "content-type": "text/plain" },
          body: payload(run, id),
        });
        await r.body?.cancel();
        if (r.ok) result.acked.add(id);
        else result.refused.set(id, r.status);
      } catch {
        result.refused.set(id, 0);
      }
    }
  };
  await Promise.all(Array.from({ length: opts.concurrency ?? 32 }, worker));
  return result;
}

/** The end-to-end count of a fault test. */
export interface Tally {
  sent: number;
  acknowledged: number;
  found: number;
  missing: number[];
  duplicated: number;
}

/** Compares what got a 2xx with what a consumer found in Kafka. */
export function tally(run: string, sent: number, acked: Set<number>, values: Array<string | null>): Tally {
  const seen = new Map<number, number>();
  for (const v of values) {
    const id = parseId(run, v);
    if (id !== null) seen.set(id, (seen.get(id) ?? 0) + 1);
  }
  let duplicated = 0;
  for (const n of seen.values()) if (n > 1) duplicated += n - 1;
  const missing = [...acked].filter((id) => !seen.has(id)).sort((a, b) => a - b);
  return { sent, acknowledged: acked.size, found: seen.size, missing, duplicated };
}

/** Options for {@linkcode assertAllDelivered}. */
export interface DeliveryOptions {
  /** How many extra copies may arrive (default: any; delivery is at least once). */
  maxDuplicated?: number;
}

/**
 * Prints the tally as one line (`<name>: sent=.. acknowledged=.. found=.. missing=.. duplicated=..`, which
 * tools read from the test log) and asserts that every acknowledged id reached Kafka.
 */
export function assertAllDelivered(name: string, t: Tally, opts: DeliveryOptions = {}): void {
  console.log(
    `${name}: sent=${t.sent} acknowledged=${t.acknowledged} found=${t.found} missing=${t.missing.length} ` +
      `duplicated=${t.duplicated}` +
      (t.missing.length ? ` first-missing=${t.missing.slice(0, 10).join(",")}` : ""),
  );
  assert.deepEqual(t.missing, [], `${name}: every acknowledged id is in Kafka`);
  if (opts.maxDuplicated !== undefined) {
    assert.ok(t.duplicated <= opts.maxDuplicated, `${name}: ${t.duplicated} duplicated`);
  }
}
