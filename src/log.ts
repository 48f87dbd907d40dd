/** Structured logging: one JSON object per line on stderr. Never log message payloads. */

export type Level = "debug" | "info" | "warn" | "error";

const ORDER: Record<Level, number> = { debug: 10, info: 20, warn: 30, error: 40 };
let threshold: number = ORDER[(Deno.env.get("KA_LOG_LEVEL") as Level | undefined) ?? "info"] ?? ORDER.info;

/** Sets the lowest level that is written. */
export function setLogLevel(level: Level): void {
  threshold = ORDER[level];
}

/**
 * Writes one log line.
 * @example log("info", "http listening", { addr: "0.0.0.0:18080" })
 */
export function log(level: Level, msg: string, fields: Record<string, unknown> = {}): void {
  if (ORDER[level] < threshold) return;
  const line = JSON.stringify({ ts: new Date().toISOString(), level, msg, ...fields }, jsonSafe);
  console.error(line);
}

function jsonSafe(_key: string, value: unknown): unknown {
  if (typeof value === "bigint") return value.toString();
  if (value instanceof Error) return value.message;
  return value;
}
