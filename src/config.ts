/**
 * The service configuration: YAML (keys nested, flat with dots, or mixed) plus `KA_*` environment
 * overrides, turned into a typed, validated Config. Keys and defaults are those of COMPAT.md.
 */
import { parse } from "yaml";
import { parseDuration } from "./duration.ts";
import { isLevel, LEVELS, log } from "./log.ts";

export type WalMode = "fallback" | "always" | "disable";

export interface Config {
  server: {
    http: { listen?: string };
    grpc: { listen?: string; maxRequestSize: number };
    monitoring: { listen?: string };
  };
  producer: {
    cb: { intervalMs: number; timeoutMs: number; fails: number; requests: number };
    resend: { periodMs: number; rateLimit: number };
    wal: {
      mode: WalMode;
      inMemory: boolean;
      path: string;
      alwaysTopics: string[];
      disableTopics: string[];
      maxBytes: number;
    };
    oldProducerKillTimeoutMs: number;
    shutdownTimeoutMs: number;
  };
  /** librdkafka properties, verbatim; kafka.brokers joined into bootstrap.servers unless bootstrap.servers is explicit. */
  kafka: Record<string, string>;
}

/** A configuration problem; the message is one line, `config: <key>: <problem>`. */
export class ConfigError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "ConfigError";
  }
}

/** A listen address split for a socket API; an empty host (`:18080`) means all interfaces. */
export interface ListenAddress {
  hostname: string;
  port: number;
}

const WAL_MODES: readonly WalMode[] = ["fallback", "always", "disable"];
const MAX_INT32 = 2 ** 31 - 1;
const LISTEN = /^(?:\[([0-9A-Fa-f:.]+(?:%[\w.-]+)?)\]|([A-Za-z0-9._-]*)):(\d{1,5})$/;

/**
 * Splits `host:port` (`:18080`, `0.0.0.0:18080`, `[::1]:18080`); an empty host becomes `0.0.0.0`.
 * Throws an Error on a malformed address (parseConfig has already rejected those).
 * @example listenAddress(":18080") // { hostname: "0.0.0.0", port: 18080 }
 */
export function listenAddress(listen: string): ListenAddress {
  const match = LISTEN.exec(listen);
  const port = match === null ? NaN : Number(match[3]);
  if (match === null || port > 65535) {
    throw new Error(`expected host:port (e.g. 0.0.0.0:18080 or :18080), got ${JSON.stringify(listen)}`);
  }
  const hostname = match[1] ?? match[2];
  return { hostname: hostname === "" ? "0.0.0.0" : hostname, port };
}

/** Returns the default Config (as if the file were empty; parseConfig would still ask for a WAL path). */
export function defaultConfig(): Config {
  return {
    server: {
      http: { listen: undefined },
      grpc: { listen: undefined, maxRequestSize: 4 * 1024 * 1024 },
      monitoring: { listen: undefined },
    },
    producer: {
      cb: { intervalMs: 0, timeoutMs: 20_000, fails: 5, requests: 3 },
      resend: { periodMs: 33_000, rateLimit: 10_000 },
      wal: {
        mode: "fallback",
        inMemory: false,
        path: "",
        alwaysTopics: [],
        disableTopics: [],
        maxBytes: 1024 ** 3,
      },
      oldProducerKillTimeoutMs: 600_000,
      shutdownTimeoutMs: 30_000,
    },
    kafka: {},
  };
}

/**
 * Reads and parses a config file; a missing or unreadable file is a ConfigError too.
 * `env` defaults to the process environment.
 */
export async function loadConfig(path: string, env?: Record<string, string>): Promise<Config> {
  let text: string;
  try {
    text = await Deno.readTextFile(path);
  } catch (err) {
    const problem = err instanceof Deno.errors.NotFound ? "file not found" : `cannot read: ${errorText(err)}`;
    throw new ConfigError(`config: ${path}: ${problem}`);
  }
  return parseConfig(text, env);
}

/**
 * Parses YAML text plus env overrides into a validated Config.
 *
 * Environment: `KA_<KEY>` with the key upper-cased and its dots kept (`KA_PRODUCER.RESEND.PERIOD=5s`) or, for
 * shells that refuse dots, written as `__` (`KA_PRODUCER__RESEND__PERIOD=5s`); no key contains `__`, so both
 * spellings are unambiguous. Env wins over the file. Lists are comma-separated. `KA_LOG_LEVEL` and other
 * `KA_*` names outside `server`, `producer` and `kafka` are not config keys and are ignored.
 * `env` defaults to the process environment; pass `{}` to ignore it.
 * @example parseConfig("producer.wal.in_memory: true\nkafka: { brokers: [k1:9092] }", {})
 */
export function parseConfig(yamlText: string, env?: Record<string, string>): Config {
  const entries = new Map<string, Entry>();
  flattenInto(entries, parseYaml(yamlText), "");
  applyEnv(entries, env ?? Deno.env.toObject());
  const config = build(entries);
  validate(config);
  return config;
}

/** A flattened key's raw value and, for env overrides, the variable it came from. */
interface Entry {
  value: unknown;
  from?: string;
}

type Converter<T> = (value: unknown) => T;

/** Every key outside `kafka.*`, with the converter that checks and types its value. */
const KEYS = {
  "server.http.listen": toListen,
  "server.grpc.listen": toListen,
  "server.grpc.max.request.size": sizeConverter(MAX_INT32),
  "server.monitoring.listen": toListen,
  "producer.cb.interval": toDuration,
  "producer.cb.timeout": toDuration,
  "producer.cb.fails": intConverter(1),
  "producer.cb.requests": intConverter(1),
  "producer.resend.period": toDuration,
  "producer.resend.rate_limit": toRateLimit,
  "producer.wal.mode": toWalMode,
  "producer.wal.in_memory": toBool,
  "producer.wal.path": toText,
  "producer.wal.always_topics": toList,
  "producer.wal.disable_topics": toList,
  "producer.wal.max_bytes": sizeConverter(Number.MAX_SAFE_INTEGER),
  "producer.old_producer_kill_timeout": toDuration,
  "producer.shutdown_timeout": toDuration,
  "kafka.brokers": toList,
} satisfies Record<string, Converter<unknown>>;

type Key = keyof typeof KEYS;

function isKey(key: string): key is Key {
  return Object.hasOwn(KEYS, key);
}

function parseYaml(text: string): unknown {
  try {
    // Scalars stay strings (only null and booleans are typed), so `0.10` reaches librdkafka as written and
    // every key's text is read the same way whether it came from the file or from the environment.
    return parse(text, { schema: "failsafe", customTags: ["null", "bool"] });
  } catch (err) {
    const firstLine = errorText(err).split("\n")[0].replace(/:$/, "");
    throw new ConfigError(`config: invalid YAML: ${firstLine}`);
  }
}

function isMap(value: unknown): value is Record<string, unknown> {
  return typeof value === "object" && value !== null && !Array.isArray(value);
}

/** Flattens nested maps into dotted, lower-cased keys (viper matched keys case-insensitively). */
function flattenInto(entries: Map<string, Entry>, value: unknown, prefix: string): void {
  if (value === null) return;
  if (!isMap(value)) {
    if (prefix === "") {
      throw new ConfigError(`config: top level: expected a map of keys, got ${describe(value)}`);
    }
    throw new ConfigError(`config: ${prefix}: expected a map, got ${describe(value)}`);
  }
  for (const [rawKey, child] of Object.entries(value)) {
    const key = prefix === "" ? rawKey.toLowerCase() : `${prefix}.${rawKey.toLowerCase()}`;
    if (child === null) continue;
    if (isMap(child) && !isKey(key)) {
      flattenInto(entries, child, key);
      continue;
    }
    if (!key.startsWith("kafka.") && !isKey(key)) {
      if (isPrefixOfKey(key)) throw new ConfigError(`config: ${key}: expected a map, got ${describe(child)}`);
      throw unknownKey(key);
    }
    if (entries.has(key)) throw new ConfigError(`config: ${key}: set more than once`);
    entries.set(key, { value: child });
  }
}

function isPrefixOfKey(key: string): boolean {
  return key === "kafka" || Object.keys(KEYS).some((known) => known.startsWith(`${key}.`));
}

/** Applies `KA_*` overrides; they win over the file. */
function applyEnv(entries: Map<string, Entry>, env: Record<string, string>): void {
  const seen = new Map<string, string>();
  for (const [name, value] of Object.entries(env)) {
    if (!name.startsWith("KA_")) continue;
    const key = name.slice(3).replaceAll("__", ".").toLowerCase();
    if (key === "log_level") {
      if (!isLevel(value.toLowerCase())) {
        throw new ConfigError(
          `config: ${name}: expected one of ${LEVELS.join(", ")}, got ${JSON.stringify(value)}`,
        );
      }
      continue;
    }
    if (!isKey(key) && !key.startsWith("kafka.")) {
      // A name with a key path in it is meant as an override: a typo must not pass unnoticed. Names without one
      // (KA_SERVICE_HOST, as Kubernetes sets for a Service named "ka") are not ours.
      if (key.includes(".") || /^(server|producer|kafka)_/.test(key)) throw unknownKey(key, name);
      continue;
    }
    const earlier = seen.get(key);
    if (earlier !== undefined) {
      throw new ConfigError(`config: ${key}: set by both ${earlier} and ${name}`);
    }
    seen.set(key, name);
    entries.set(key, { value, from: name });
  }
}

function build(entries: Map<string, Entry>): Config {
  const defaults = defaultConfig();
  const get = <K extends Key>(key: K, fallback: ReturnType<typeof KEYS[K]>): ReturnType<typeof KEYS[K]> => {
    const entry = entries.get(key);
    if (entry === undefined) return fallback;
    try {
      return KEYS[key](entry.value) as ReturnType<typeof KEYS[K]>;
    } catch (err) {
      throw new ConfigError(`config: ${key}: ${errorText(err)}${fromText(entry)}`);
    }
  };
  const { server, producer } = defaults;
  return {
    server: {
      http: { listen: get("server.http.listen", server.http.listen) },
      grpc: {
        listen: get("server.grpc.listen", server.grpc.listen),
        maxRequestSize: get("server.grpc.max.request.size", server.grpc.maxRequestSize),
      },
      monitoring: { listen: get("server.monitoring.listen", server.monitoring.listen) },
    },
    producer: {
      cb: {
        intervalMs: get("producer.cb.interval", producer.cb.intervalMs),
        timeoutMs: get("producer.cb.timeout", producer.cb.timeoutMs),
        fails: get("producer.cb.fails", producer.cb.fails),
        requests: get("producer.cb.requests", producer.cb.requests),
      },
      resend: {
        periodMs: get("producer.resend.period", producer.resend.periodMs),
        rateLimit: get("producer.resend.rate_limit", producer.resend.rateLimit),
      },
      wal: {
        mode: get("producer.wal.mode", producer.wal.mode),
        inMemory: get("producer.wal.in_memory", producer.wal.inMemory),
        path: get("producer.wal.path", producer.wal.path),
        alwaysTopics: get("producer.wal.always_topics", producer.wal.alwaysTopics),
        disableTopics: get("producer.wal.disable_topics", producer.wal.disableTopics),
        maxBytes: get("producer.wal.max_bytes", producer.wal.maxBytes),
      },
      oldProducerKillTimeoutMs: get("producer.old_producer_kill_timeout", producer.oldProducerKillTimeoutMs),
      shutdownTimeoutMs: get("producer.shutdown_timeout", producer.shutdownTimeoutMs),
    },
    kafka: buildKafka(entries, get("kafka.brokers", [])),
  };
}

/** librdkafka properties: every `kafka.*` key but brokers, values as strings, brokers as bootstrap.servers. */
function buildKafka(entries: Map<string, Entry>, brokers: string[]): Record<string, string> {
  const kafka: Record<string, string> = {};
  for (const [key, entry] of entries) {
    if (!key.startsWith("kafka.") || key === "kafka.brokers") continue;
    const property = key.slice("kafka.".length);
    if (property === "") {
      throw new ConfigError(`config: ${key}: empty librdkafka property name${fromText(entry)}`);
    }
    try {
      kafka[property] = toKafkaValue(entry.value);
    } catch (err) {
      throw new ConfigError(`config: ${key}: ${errorText(err)}${fromText(entry)}`);
    }
  }
  const joined = brokers.join(",");
  const explicit = kafka["bootstrap.servers"];
  if (explicit === undefined) {
    if (joined !== "") kafka["bootstrap.servers"] = joined;
  } else if (joined !== "" && joined !== explicit) {
    log("warn", "config: kafka.brokers ignored, kafka.bootstrap.servers is set", {
      brokers: joined,
      bootstrap_servers: explicit,
    });
  }
  return kafka;
}

function toKafkaValue(value: unknown): string {
  if (typeof value === "string" || typeof value === "boolean") return String(value);
  if (Array.isArray(value)) {
    // librdkafka's list-valued properties (debug, sasl.kerberos.*, ...) take comma-separated text.
    return value.map((item) => {
      if (typeof item !== "string" && typeof item !== "boolean") {
        throw new Error(`expected a value or a list of values, got a list containing ${describe(item)}`);
      }
      return String(item);
    }).join(",");
  }
  throw new Error(`expected a value, got ${describe(value)}`);
}

function validate(config: Config): void {
  const wal = config.producer.wal;
  if (wal.path === "" && wal.mode !== "disable" && !wal.inMemory) {
    throw new ConfigError(
      `config: producer.wal.path: required when producer.wal.mode is ${wal.mode} (or set in_memory: true)`,
    );
  }
  const both = wal.alwaysTopics.find((topic) => wal.disableTopics.includes(topic));
  if (both !== undefined) {
    throw new ConfigError(
      `config: producer.wal.always_topics: topic ${
        JSON.stringify(both)
      } is also in producer.wal.disable_topics`,
    );
  }
}

function toText(value: unknown): string {
  if (typeof value !== "string") throw new Error(`expected a string, got ${describe(value)}`);
  return value;
}

function toListen(value: unknown): string | undefined {
  const text = toText(value).trim();
  if (text === "") return undefined;
  listenAddress(text);
  return text;
}

function toDuration(value: unknown): number {
  return parseDuration(expectScalarText(value, "a duration (e.g. 20s, 10m, 1h30m)"));
}

function toBool(value: unknown): boolean {
  if (typeof value === "boolean") return value;
  const text = expectScalarText(value, "true or false").toLowerCase();
  if (text === "true" || text === "1") return true;
  if (text === "false" || text === "0") return false;
  throw new Error(`expected true or false, got ${describe(value)}`);
}

function toWalMode(value: unknown): WalMode {
  const text = expectScalarText(value, `one of ${WAL_MODES.join(", ")}`).toLowerCase();
  const mode = WAL_MODES.find((known) => known === text);
  if (mode === undefined) throw new Error(`expected one of ${WAL_MODES.join(", ")}, got ${describe(value)}`);
  return mode;
}

/** A list from a YAML sequence, or from comma-separated text (env values, `brokers: a:9092,b:9092`). */
function toList(value: unknown): string[] {
  const items = Array.isArray(value) ? value : expectScalarText(value, "a list").split(",");
  return items.map((item) => {
    if (typeof item !== "string") {
      throw new Error(`expected a list of strings, got an item ${describe(item)}`);
    }
    return item.trim();
  }).filter((item) => item !== "");
}

function intConverter(min: number): Converter<number> {
  return (value) => {
    const text = expectScalarText(value, "an integer").trim();
    const n = Number(text);
    if (!/^[+-]?\d+$/.test(text) || !Number.isSafeInteger(n)) {
      throw new Error(`expected an integer, got ${describe(value)}`);
    }
    if (n < min) throw new Error(`must be at least ${min}, got ${n}`);
    return n;
  };
}

function toRateLimit(value: unknown): number {
  const text = expectScalarText(value, "a number of records per second").trim();
  const n = Number(text);
  if (text === "" || !Number.isFinite(n)) {
    throw new Error(`expected a number of records per second, got ${describe(value)}`);
  }
  if (n <= 0) {
    throw new Error(
      `must be a positive number of records per second, got ${text} (to turn replay off, set producer.resend.period: 0)`,
    );
  }
  return n;
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

/** Sizes: bytes, or a number with a unit, decimal (`2GB`, `100k`) or binary (`512MiB`, `4Mi`). */
function sizeConverter(max: number): Converter<number> {
  return (value) => {
    const text = expectScalarText(value, "a size").trim();
    const match = SIZE.exec(text);
    if (match === null) {
      throw new Error(`expected a size in bytes (e.g. 1048576, 512MiB, 2GB, 100k), got ${describe(value)}`);
    }
    const bytes = Math.floor(Number(match[1]) * SIZE_UNITS[(match[2] ?? "").toLowerCase()]);
    if (bytes < 1) throw new Error(`must be at least 1 byte, got ${describe(value)}`);
    if (bytes > max) throw new Error(`must be at most ${max} bytes, got ${describe(value)}`);
    return bytes;
  };
}

function expectScalarText(value: unknown, expected: string): string {
  if (typeof value !== "string") throw new Error(`expected ${expected}, got ${describe(value)}`);
  return value;
}

function describe(value: unknown): string {
  if (Array.isArray(value)) return "a list";
  if (isMap(value)) return "a map";
  if (value === null) return "an empty value";
  return JSON.stringify(value);
}

function fromText(entry: Entry): string {
  return entry.from === undefined ? "" : ` (from ${entry.from})`;
}

function unknownKey(key: string, from?: string): ConfigError {
  const suggestion = closestKey(key);
  const hint = suggestion === undefined ? "" : `; did you mean ${suggestion}?`;
  const source = from === undefined ? "" : ` (from ${from})`;
  return new ConfigError(`config: ${key}: unknown key${source}${hint}`);
}

/** The known key nearest to a misspelt one, if any is near enough to be a plausible meaning. */
function closestKey(key: string): string | undefined {
  let best: string | undefined;
  let bestDistance = Infinity;
  const lastSegment = key.slice(key.lastIndexOf(".") + 1);
  for (const known of Object.keys(KEYS)) {
    const distance = editDistance(key, known);
    const sameLeaf = known.endsWith(`.${lastSegment}`);
    if ((distance <= 3 || sameLeaf) && distance < bestDistance) {
      best = known;
      bestDistance = distance;
    }
  }
  return best;
}

function editDistance(a: string, b: string): number {
  let previous = Array.from({ length: b.length + 1 }, (_, j) => j);
  for (let i = 1; i <= a.length; i++) {
    const current = [i];
    for (let j = 1; j <= b.length; j++) {
      const substitution = previous[j - 1] + (a[i - 1] === b[j - 1] ? 0 : 1);
      current.push(Math.min(previous[j] + 1, current[j - 1] + 1, substitution));
    }
    previous = current;
  }
  return previous[b.length];
}

function errorText(err: unknown): string {
  return err instanceof Error ? err.message : String(err);
}
