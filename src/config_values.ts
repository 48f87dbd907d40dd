/**
 * The kinds of config values: how each is read from the file or the environment, and written back for the
 * reference file. YAML scalars arrive as text (only null and booleans are typed), so the file and `KA_*`
 * variables are read the same way.
 */
import { formatDuration, parseDuration } from "./duration.ts";
import { listenAddress } from "./listen_address.ts";
import { isLevel, type Level, LEVELS } from "./log.ts";

/** How one kind of value is read and shown. */
export interface ValueKind<T> {
  /** Checks and converts a raw value; throws an Error saying what was expected and what came. */
  read(value: unknown): T;
  /** The value as the reference file writes it: `read` of its YAML gives the value back. */
  show(value: T): string;
}

/** Text as it is. */
export const text: ValueKind<string> = {
  read: (value) => scalar(value, "a string"),
  show: (value) => JSON.stringify(value),
};

/** A listen address, or undefined (listener off) for an empty value. */
export const listen: ValueKind<string | undefined> = {
  read(value) {
    const address = scalar(value, "host:port").trim();
    if (address === "") return undefined;
    listenAddress(address);
    return address;
  },
  show: (value) => value ?? '""',
};

/** Go-style durations in milliseconds (`20s`, `1h30m`; a bare number means seconds). */
export const duration: ValueKind<number> = {
  read: (value) => parseDuration(scalar(value, "a duration (e.g. 20s, 10m, 1h30m)")),
  show: formatDuration,
};

/** A duration, as `duration`, that must be more than 0. */
export const positiveDuration: ValueKind<number> = {
  read(value) {
    const ms = duration.read(value);
    if (!(ms > 0)) throw new Error(`must be more than 0, got ${describe(value)}`);
    return ms;
  },
  show: formatDuration,
};

/** true or false (also 1 and 0, as environment variables often say). */
export const bool: ValueKind<boolean> = {
  read(value) {
    if (typeof value === "boolean") return value;
    const word = scalar(value, "true or false").toLowerCase();
    if (word === "true" || word === "1") return true;
    if (word === "false" || word === "0") return false;
    throw new Error(`expected true or false, got ${describe(value)}`);
  },
  show: String,
};

/**
 * A YAML sequence, or text split at commas and white space (env values, `brokers: a:9092,b:9092`; the Go service
 * split at white space: `KA_PRODUCER.WAL.ALWAYS_TOPICS="t1 t2"`); empty items dropped.
 */
export const list: ValueKind<string[]> = {
  read(value) {
    const items = Array.isArray(value) ? value : scalar(value, "a list").split(/[\s,]+/);
    return items.map((item) => {
      if (typeof item !== "string") {
        throw new Error(`expected a list of strings, got an item ${describe(item)}`);
      }
      return item.trim();
    }).filter((item) => item !== "");
  },
  show: (value) => `[${value.map((item) => JSON.stringify(item)).join(", ")}]`,
};

/**
 * A YAML sequence, or text split at commas only (as zap split its outputPaths): for items that may hold white
 * space, such as file paths. Empty items dropped.
 */
export const commaList: ValueKind<string[]> = {
  read(value) {
    return list.read(Array.isArray(value) ? value : scalar(value, "a list").split(","));
  },
  show: list.show,
};

/** One of `choices`, in any case unless `exactCase`. */
export function oneOf<T extends string>(choices: readonly T[], exactCase = false): ValueKind<T> {
  const expected = `one of ${choices.join(", ")}`;
  return {
    read(value) {
      const written = scalar(value, expected);
      const word = exactCase ? written : written.toLowerCase();
      const choice = choices.find((known) => known === word);
      if (choice === undefined) throw new Error(`expected ${expected}, got ${describe(value)}`);
      return choice;
    },
    show: (value) => value,
  };
}

/** zap's levels above `error`, which the Go service's `global.log.level` took: here they log errors only. */
const ZAP_ERROR_LEVELS = ["dpanic", "panic", "fatal"];

/** A log level, in any case; the Go service's `dpanic`, `panic` and `fatal` mean `error`. */
export const logLevel: ValueKind<Level> = {
  read(value) {
    const expected = `one of ${LEVELS.join(", ")}`;
    const word = scalar(value, expected).trim().toLowerCase();
    if (isLevel(word)) return word;
    if (ZAP_ERROR_LEVELS.includes(word)) return "error";
    throw new Error(`expected ${expected}, got ${describe(value)}`);
  },
  show: (value) => value,
};

/** An integer from `min` to `max`; `5.0` is 5, as the Go service read it. */
export function int(min: number, max = Number.MAX_SAFE_INTEGER): ValueKind<number> {
  return {
    read(value) {
      const digits = scalar(value, "an integer").trim();
      const n = Number(digits);
      if (!/^[+-]?\d+(\.0*)?$/.test(digits) || !Number.isSafeInteger(n)) {
        throw new Error(`expected an integer, got ${describe(value)}`);
      }
      if (n < min) throw new Error(`must be at least ${min}, got ${n}`);
      if (n > max) throw new Error(`must be at most ${max}, got ${n}`);
      return n;
    },
    show: String,
  };
}

/**
 * A count of at least 1 where 0 is taken as 1, as the Go service's breaker (gobreaker) took a zero: its configs
 * may say 0.
 */
export const countFromOne: ValueKind<number> = {
  read: (value) => Math.max(1, int(0).read(value)),
  show: String,
};

/**
 * A duration where 0 means `zeroMs`: gobreaker, the Go service's breaker, took a zero `Timeout` as its default,
 * and its configs may say 0.
 */
export function durationZeroMeans(zeroMs: number): ValueKind<number> {
  return {
    read: (value) => duration.read(value) || zeroMs,
    show: formatDuration,
  };
}

/** A positive rate in records per second; 0 is refused with a pointer to `hint`. */
export function rate(hint: string): ValueKind<number> {
  return {
    read(value) {
      const digits = scalar(value, "a number of records per second").trim();
      const n = Number(digits);
      if (digits === "" || !Number.isFinite(n)) {
        throw new Error(`expected a number of records per second, got ${describe(value)}`);
      }
      if (n <= 0) throw new Error(`must be a positive number of records per second, got ${digits} (${hint})`);
      return n;
    },
    show: String,
  };
}

const SIZE = /^(\d+\.?\d*|\.\d+)\s*([kmgt]i?)?b?$/i;
const SIZE_UNITS: Record<string, number> = {
  "": 1,
  k: 1e3,
  m: 1e6,
  g: 1e9,
  t: 1e12,
  ki: 1024,
  mi: 1024 ** 2,
  gi: 1024 ** 3,
  ti: 1024 ** 4,
};
const BINARY_UNITS = [["TiB", 1024 ** 4], ["GiB", 1024 ** 3], ["MiB", 1024 ** 2], ["KiB", 1024]] as const;

/** Sizes in bytes, from 1 to `max`: a number, or with a unit, decimal (`2GB`, `100k`) or binary (`512MiB`). */
export function size(max: number): ValueKind<number> {
  return {
    read(value) {
      const written = scalar(value, "a size").trim();
      const match = SIZE.exec(written);
      if (match === null) {
        throw new Error(`expected a size in bytes (e.g. 1048576, 512MiB, 2GB, 100k), got ${describe(value)}`);
      }
      const bytes = Math.floor(Number(match[1]) * SIZE_UNITS[(match[2] ?? "").toLowerCase()]);
      if (bytes < 1) throw new Error(`must be at least 1 byte, got ${describe(value)}`);
      if (bytes > max) throw new Error(`must be at most ${max} bytes, got ${describe(value)}`);
      return bytes;
    },
    show(bytes) {
      const unit = BINARY_UNITS.find(([, n]) => bytes % n === 0);
      return unit === undefined ? String(bytes) : `${bytes / unit[1]}${unit[0]}`;
    },
  };
}

function scalar(value: unknown, expected: string): string {
  if (typeof value !== "string") throw new Error(`expected ${expected}, got ${describe(value)}`);
  return value;
}

/** A value as an error message names it. */
export function describe(value: unknown): string {
  if (Array.isArray(value)) return "a list";
  if (typeof value === "object" && value !== null) return "a map";
  if (value === null) return "an empty value";
  return JSON.stringify(value);
}
