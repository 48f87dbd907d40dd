/** Go-style durations (`20s`, `1h30m`, `250ms`) as milliseconds. */

/** Longest duration accepted: the largest delay a JavaScript timer honours (about 24.8 days). */
export const MAX_DURATION_MS = 2 ** 31 - 1;

const UNIT_MS: Record<string, number> = {
  ns: 1e-6,
  us: 1e-3,
  "µs": 1e-3, // U+00B5 micro sign, as Go accepts
  "μs": 1e-3, // U+03BC Greek mu, as Go accepts
  ms: 1,
  s: 1000,
  m: 60_000,
  h: 3_600_000,
};

const BARE_NUMBER = /^\+?(\d+\.?\d*|\.\d+)$/;
const TERM = /(\d+\.?\d*|\.\d+)(ns|us|µs|μs|ms|s|m|h)/y;

/**
 * Parses a duration into milliseconds (fractions kept, e.g. `300us` is 0.3).
 *
 * Accepts Go's `time.ParseDuration` syntax (`1h30m`, `1.5s`, `300us`, `0`) and bare numbers.
 * A bare number, from YAML or from an environment variable, means SECONDS: `timeout: 20` is 20 s.
 * (Go's viper read a bare number as nanoseconds, which nobody meant; seconds is what people write.)
 * Negative durations and durations above MAX_DURATION_MS are rejected with an Error saying why.
 * @example parseDuration("1m30s") // 90000
 * @example parseDuration(1.5) // 1500
 */
export function parseDuration(value: string | number): number {
  const text = String(value).trim();
  if (text.startsWith("-")) throw new Error(`negative duration ${JSON.stringify(text)}`);
  let ms: number;
  if (BARE_NUMBER.test(text)) {
    ms = Number(text) * 1000;
  } else {
    ms = parseGoDuration(text);
  }
  if (ms > MAX_DURATION_MS) {
    throw new Error(
      `duration ${JSON.stringify(text)} is too long (at most 596h31m23s; a bare number means seconds)`,
    );
  }
  return ms;
}

function parseGoDuration(text: string): number {
  const body = text.startsWith("+") ? text.slice(1) : text;
  const invalid = new Error(
    `invalid duration ${JSON.stringify(text)} (expected e.g. 250ms, 20s, 10m, 1h30m, or a number of seconds)`,
  );
  if (body === "") throw invalid;
  let ms = 0;
  TERM.lastIndex = 0;
  while (TERM.lastIndex < body.length) {
    const match = TERM.exec(body);
    if (match === null) throw invalid;
    ms += Number(match[1]) * UNIT_MS[match[2]];
  }
  return ms;
}

const FORMAT_UNITS = [["h", 3_600_000], ["m", 60_000], ["s", 1000], ["ms", 1]] as const;

/**
 * Writes milliseconds as a Go-style duration, largest units first; parseDuration reads it back.
 * @example formatDuration(5_400_000) // "1h30m"
 * @example formatDuration(0) // "0"
 */
export function formatDuration(ms: number): string {
  if (ms === 0) return "0";
  let rest = ms;
  let out = "";
  for (const [unit, size] of FORMAT_UNITS) {
    const n = Math.floor(rest / size);
    if (n === 0) continue;
    out += `${n}${unit}`;
    rest -= n * size;
  }
  // What is left is a fraction of a millisecond.
  if (rest > 0) out += `${Math.round(rest * 1000)}us`;
  return out;
}
