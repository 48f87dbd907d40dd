import { delay } from "../support/wait.ts";
import { runCommand } from "./command.ts";

/** One record read back from Kafka. */
export interface ConsumedMessage {
  partition: number;
  offset: number;
  /** Broker or producer timestamp in ms since the epoch. */
  timestamp: number;
  /** The key as UTF-8 text, null when absent. */
  key: string | null;
  /** The value as UTF-8 text, null for a tombstone. */
  value: string | null;
  /** The exact key bytes, null when absent. */
  keyBytes: Uint8Array | null;
  /** The exact value bytes, null for a tombstone. */
  valueBytes: Uint8Array | null;
  /** Headers in record order, values as UTF-8 text. */
  headers: [string, string | null][];
}

/** Options for {@linkcode consumeAll}. */
export interface ConsumeOptions {
  /** Keep re-reading the topic until at least this many records are seen (default: read once). */
  expected?: number;
  /** Give up re-reading after this long and return what the last read saw (default 30 s); throws
   * if no read succeeded. */
  timeoutMs?: number;
}

interface KcatEnvelope {
  partition: number;
  offset: number;
  ts: number;
  key: string | null;
  payload: string | null;
  headers?: (string | null)[];
}

/**
 * Reads every record of a topic from the beginning with `kcat -C -J`.
 *
 * Binary-safe: kcat writes payload bytes into its JSON unchanged (escaping only control characters, quote and
 * backslash), so the output is decoded as Latin-1 to recover each byte exactly. Header keys and values are
 * decoded as UTF-8 text.
 *
 * @example
 * const msgs = await consumeAll(broker.bootstrap, "events", { expected: 100, timeoutMs: 20_000 });
 */
export async function consumeAll(
  bootstrap: string,
  topic: string,
  opts: ConsumeOptions = {},
): Promise<ConsumedMessage[]> {
  const deadline = Date.now() + (opts.timeoutMs ?? 30_000);
  let last: ConsumedMessage[] | null = null;
  let lastError = "";
  while (true) {
    const r = await runCommand(
      "kcat",
      ["-C", "-J", "-q", "-e", "-o", "beginning", "-b", bootstrap, "-t", topic],
      { timeoutMs: Math.max(deadline - Date.now(), 1_000) },
    );
    if (r.code === 0) {
      last = parseEnvelopes(r.stdout);
      if (opts.expected === undefined || last.length >= opts.expected) return last;
    } else {
      lastError = r.timedOut ? "kcat timed out" : `kcat exited ${r.code}: ${r.stderr.trim()}`;
    }
    if (Date.now() + 250 >= deadline) {
      if (last === null) throw new Error(`consume ${topic} from ${bootstrap}: ${lastError}`);
      return last;
    }
    await delay(250);
  }
}

function parseEnvelopes(stdout: Uint8Array): ConsumedMessage[] {
  const out: ConsumedMessage[] = [];
  // Line by line: the whole output as one string would pass V8's longest string past a few million records.
  for (let start = 0; start < stdout.length;) {
    let end = stdout.indexOf(0x0a, start);
    if (end < 0) end = stdout.length;
    const line = latin1String(stdout.subarray(start, end));
    start = end + 1;
    if (line.trim() === "") continue;
    const e = JSON.parse(line) as KcatEnvelope;
    const keyBytes = e.key === null ? null : latin1Bytes(e.key);
    const valueBytes = e.payload === null ? null : latin1Bytes(e.payload);
    out.push({
      partition: e.partition,
      offset: e.offset,
      timestamp: e.ts,
      key: keyBytes && utf8(keyBytes),
      value: valueBytes && utf8(valueBytes),
      keyBytes,
      valueBytes,
      headers: headerPairs(e.headers ?? []),
    });
  }
  return out;
}

function headerPairs(flat: (string | null)[]): [string, string | null][] {
  const pairs: [string, string | null][] = [];
  for (let i = 0; i + 1 < flat.length; i += 2) {
    const value = flat[i + 1];
    pairs.push([utf8(latin1Bytes(flat[i] ?? "")), value === null ? null : utf8(latin1Bytes(value))]);
  }
  return pairs;
}

/** Maps each byte to the code point of the same number (TextDecoder's "latin1" is windows-1252). */
function latin1String(bytes: Uint8Array): string {
  let s = "";
  for (let i = 0; i < bytes.length; i += 8192) {
    s += String.fromCharCode(...bytes.subarray(i, i + 8192));
  }
  return s;
}

function latin1Bytes(s: string): Uint8Array {
  const bytes = new Uint8Array(s.length);
  for (let i = 0; i < s.length; i++) bytes[i] = s.charCodeAt(i);
  return bytes;
}

function utf8(bytes: Uint8Array): string {
  return new TextDecoder().decode(bytes);
}
