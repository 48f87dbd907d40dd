/** Plain-text HTTP replies, the same on the produce and the monitoring listener. */
import { oneLine } from "./refusal.ts";

export const TEXT_PLAIN = "text/plain; charset=utf-8";

/**
 * A one-line plain-text reply; `retryAfterSeconds` adds `Retry-After`.
 * @example plain(503, "wal: full", 5)
 */
export function plain(status: number, reason: string, retryAfterSeconds?: number): Response {
  const headers: Record<string, string> = { "content-type": TEXT_PLAIN };
  if (retryAfterSeconds !== undefined) headers["retry-after"] = String(retryAfterSeconds);
  return new Response(`${oneLine(reason)}\n`, { status, headers });
}

/** 405 with the methods the path takes in `Allow`. */
export function notAllowed(allow: string): Response {
  return new Response("method not allowed\n", {
    status: 405,
    headers: { "content-type": TEXT_PLAIN, "allow": allow },
  });
}
