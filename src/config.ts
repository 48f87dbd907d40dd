/**
 * The service configuration: YAML (keys nested, flat with dots, or mixed) plus `KA_*` environment overrides,
 * turned into a typed, validated Config. Every key is one entry of the table in config_keys.ts.
 */
import {
  type Document,
  type DocumentOptions,
  parseAllDocuments,
  type ParseOptions,
  type ScalarTag,
  type SchemaOptions,
} from "yaml";
import {
  BROKERS,
  GO_KEYS_WITHOUT_EFFECT,
  goKeyWithoutEffect,
  Key,
  KEYS,
  SCHEMA,
  type Values,
} from "./config_keys.ts";
import { describe } from "./config_values.ts";
import { log, MIN_REDACTED_LENGTH, redactInLogs } from "./log.ts";

export type { WalMode } from "./config_keys.ts";

/**
 * Why the config keeps no WAL on disk (`mode: disable` or `in_memory: true`, as the file says it), undefined when it
 * does: then `producer.wal.path` is used.
 */
export function noWalOnDisk(wal: Config["producer"]["wal"]): string | undefined {
  if (wal.mode === "disable") return "mode: disable";
  return wal.inMemory ? "in_memory: true" : undefined;
}

/** The validated configuration: the table's values, plus the librdkafka properties. */
export type Config = Values<typeof SCHEMA> & {
  /** librdkafka properties, verbatim; kafka.brokers joined into bootstrap.servers unless that is explicit. */
  kafka: Record<string, string>;
};

/** A configuration problem; the message is one line, `config: <key>: <problem>`. */
export class ConfigError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "ConfigError";
  }
}

/** Returns the default Config (as if the file were empty; parseConfig would still ask for a WAL path). */
export function defaultConfig(): Config {
  return build(new Map());
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
 * spellings are unambiguous. Env wins over the file. Lists are comma- or space-separated (file paths: comma only);
 * an empty value is ignored. `KA_LOG_LEVEL` is `global.log.level`; other `KA_*` names outside the key table are
 * ignored unless they look like a key.
 * Keys of the Go service that have no effect here (GO_KEYS_WITHOUT_EFFECT) are accepted, and logged.
 * `env` defaults to the process environment; pass `{}` to ignore it.
 * @example parseConfig("producer.wal.in_memory: true\nkafka: { brokers: [k1:9092] }", {})
 */
export function parseConfig(yamlText: string, env?: Record<string, string>): Config {
  const entries = new Map<string, Entry>();
  const withoutEffect = new Set<string>();
  flattenInto(entries, withoutEffect, parseYaml(yamlText), "");
  applyEnv(entries, withoutEffect, env ?? Deno.env.toObject());
  const config = build(entries);
  validate(config);
  requireIdempotenceForOrder(config);
  const wal = config.producer.wal;
  if (!entries.has(SCHEMA.producer.wal.path.name) && noWalOnDisk(wal) === undefined) {
    log(
      "warn",
      `config: producer.wal.path not set: the WAL is in ${wal.path}, which may not survive a reboot`,
      {
        key: SCHEMA.producer.wal.path.name,
      },
    );
  }
  for (const name of withoutEffect) {
    log("warn", `config: ${name} has no effect here: ${GO_KEYS_WITHOUT_EFFECT.get(name)}`, { key: name });
  }
  return config;
}

/** A flattened key's raw value and, for env overrides, the variable it came from. */
interface Entry {
  value: unknown;
  from?: string;
}

function isKey(key: string): boolean {
  return KEYS.has(key);
}

/**
 * Booleans as YAML 1.1 spells them, which the Go service's parser (yaml.v2) reads: `in_memory: yes` and
 * `socket.keepalive.enable: on` are true there, so they are here.
 */
const YAML11_BOOL: ScalarTag = {
  tag: "tag:yaml.org,2002:bool",
  default: true,
  identify: (value) => typeof value === "boolean",
  test: /^(?:[YyNn]|[Yy]es|YES|[Nn]o|NO|[Tt]rue|TRUE|[Ff]alse|FALSE|[Oo]n|ON|[Oo]ff|OFF)$/,
  resolve: (text) => /^(?:[Yy]|[Yy]es|YES|[Tt]rue|TRUE|[Oo]n|ON)$/.test(text),
};

/** A plain number with `_` between its digits (`rate_limit: 10_000`), as YAML 1.1 writes them: the digits. */
const YAML11_DIGITS: ScalarTag = {
  tag: "tag:yaml.org,2002:int",
  default: true,
  identify: () => false,
  test: /^[-+]?[0-9]+(?:_[0-9]+)+$/,
  resolve: (text) => text.replaceAll("_", ""),
};

/**
 * The file's YAML as the Go service's parser reads it: YAML 1.1 booleans, digits with `_`, merge keys (`<<`), and
 * only the first document (a trailing `---` is common in templated files); a later one with content is refused
 * rather than ignored.
 */
function parseYaml(text: string): unknown {
  // Scalars stay strings (only null and booleans are typed), so `0.10` reaches librdkafka as written and every
  // key's text is read the same way whether it came from the file or from the environment.
  const options: ParseOptions & DocumentOptions & SchemaOptions = {
    schema: "failsafe",
    customTags: ["null", YAML11_BOOL, YAML11_DIGITS],
    merge: true,
  };
  let docs: Document.Parsed[];
  try {
    const parsed = parseAllDocuments(text, options);
    docs = Array.isArray(parsed) ? parsed : [];
  } catch (err) {
    throw invalidYaml(err);
  }
  for (const doc of docs) {
    if (doc.errors.length > 0) throw invalidYaml(doc.errors[0]);
  }
  let values: unknown[];
  try {
    values = docs.map((doc) => doc.toJS());
  } catch (err) {
    throw invalidYaml(err);
  }
  const extra = values.findIndex((value, i) => i > 0 && value !== null);
  if (extra > 0) {
    throw new ConfigError(
      `config: invalid YAML: document ${extra + 1} has content; a config is one document`,
    );
  }
  return values.length === 0 ? null : values[0];
}

function invalidYaml(err: unknown): ConfigError {
  const firstLine = errorText(err).split("\n")[0].replace(/:$/, "");
  return new ConfigError(`config: invalid YAML: ${firstLine}`);
}

function isMap(value: unknown): value is Record<string, unknown> {
  return typeof value === "object" && value !== null && !Array.isArray(value);
}

/**
 * Flattens nested maps into dotted, lower-cased keys (viper matched keys case-insensitively); the Go service's keys
 * that have no effect here go to `withoutEffect` instead.
 */
function flattenInto(
  entries: Map<string, Entry>,
  withoutEffect: Set<string>,
  value: unknown,
  prefix: string,
): void {
  if (value === null) return;
  if (!isMap(value)) {
    if (prefix === "") {
      throw new ConfigError(`config: top level: expected a map of keys, got ${describe(value)}`);
    }
    throw new ConfigError(`config: ${prefix}: expected a map, got ${describe(value)}`);
  }
  for (const [rawKey, child] of Object.entries(value)) {
    const key = prefix === "" ? rawKey.toLowerCase() : `${prefix}.${rawKey.toLowerCase()}`;
    const goKey = goKeyWithoutEffect(key);
    if (goKey !== undefined) {
      withoutEffect.add(goKey);
      continue;
    }
    const empty = child === null || (isMap(child) && Object.keys(child).length === 0);
    if (empty && !isKey(key) && !key.startsWith("kafka.") && !isPrefixOfKey(key)) {
      // An empty value or section changes nothing, but a misspelt name is refused all the same.
      throw unknownKey(key);
    }
    if (child === null) continue;
    if (isMap(child) && !isKey(key)) {
      flattenInto(entries, withoutEffect, child, key);
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
  return key === "kafka" || [...KEYS.keys()].some((known) => known.startsWith(`${key}.`));
}

/** The endings of the variables Kubernetes sets for each Service (its "service links"), lower case. */
const SERVICE_LINK =
  /_(service_host|service_port(_[a-z0-9_]+)?|port(_\d+_(tcp|udp|sctp)(_(addr|port|proto))?)?)$/;

/** Applies `KA_*` overrides; they win over the file. */
function applyEnv(
  entries: Map<string, Entry>,
  withoutEffect: Set<string>,
  env: Record<string, string>,
): void {
  const seen = new Map<string, string>();
  for (const [name, value] of Object.entries(env)) {
    if (!name.startsWith("KA_")) continue;
    const written = name.slice(3).replaceAll("__", ".").toLowerCase();
    // The short name the service has always read, for the key the Go service read as KA_GLOBAL.LOG.LEVEL.
    const key = written === "log_level" ? SCHEMA.global.log.level.name : written;
    const goKey = goKeyWithoutEffect(key);
    if (goKey !== undefined) {
      withoutEffect.add(goKey);
      continue;
    }
    if (!isKey(key) && !key.startsWith("kafka.")) {
      // A name with a key path in it is meant as an override: a typo must not pass unnoticed. Names without one,
      // and those Kubernetes sets for a Service (KA_SERVICE_HOST for one named "ka", KA_SERVER_PORT_80_TCP for
      // "ka-server"), are not ours.
      if (SERVICE_LINK.test(key)) continue;
      if (key.includes(".") || /^(global|server|producer|kafka)_/.test(key)) throw unknownKey(key, name);
      continue;
    }
    if (value === "") {
      // Set but empty: the Go service (viper) took that as unset, and so do deployments written for it.
      log("warn", `config: ${name} is empty: ignored`, { key });
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
  return { ...valuesOf(SCHEMA, entries), kafka: buildKafka(entries, read(BROKERS, entries)) };
}

/** The values of a schema subtree: each key's entry read by its kind, or its default. */
function valuesOf<S extends object>(schema: S, entries: Map<string, Entry>): Values<S> {
  const out: Record<string, unknown> = {};
  for (const [name, node] of Object.entries(schema)) {
    out[name] = node instanceof Key ? read(node, entries) : valuesOf(node, entries);
  }
  return out as Values<S>;
}

function read<T>(key: Key<T>, entries: Map<string, Entry>): T {
  const entry = entries.get(key.name.toLowerCase());
  if (entry === undefined) return structuredClone(key.defaultValue);
  try {
    return key.kind.read(entry.value);
  } catch (err) {
    throw new ConfigError(`config: ${key.name}: ${errorText(err)}${fromText(entry)}`);
  }
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
  for (const [property, value] of Object.entries(kafka)) {
    if (isSecretProperty(property) && value !== "" && !redactInLogs(value)) {
      log(
        "warn",
        `config: kafka.${property}: shorter than ${MIN_REDACTED_LENGTH} characters, so log lines do not mask it ` +
          "(masking so common a text would garble them and give it away)",
      );
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

/**
 * Whether a librdkafka property holds a secret (the ones librdkafka itself redacts: `sasl.password`,
 * `ssl.key.password`, `ssl.keystore.password`, `ssl.key.pem`, `sasl.oauthbearer.config`, client secrets and
 * private key passphrases). Their values never appear in a log line.
 */
export function isSecretProperty(property: string): boolean {
  return /password|secret|passphrase|(^|\.)key\.pem$/.test(property) ||
    property === "sasl.oauthbearer.config";
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
  if (wal.path === "" && noWalOnDisk(wal) === undefined) {
    throw new ConfigError(
      `config: producer.wal.path: empty, but producer.wal.mode is ${wal.mode} (or set in_memory: true)`,
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

/**
 * `preserve_order: key` needs librdkafka's idempotent producer, the only mode in which it keeps a partition's order
 * across its own retries: turned on unless the config turns it off, which is refused.
 */
function requireIdempotenceForOrder(config: Config): void {
  const wal = config.producer.wal;
  if (wal.preserveOrder !== "key") return;
  if (wal.mode === "always" || wal.alwaysTopics.length > 0) {
    throw new ConfigError(
      "config: producer.wal.preserve_order: key works in fallback mode only, not with mode: always or always_topics",
    );
  }
  const idempotence = config.kafka["enable.idempotence"];
  if (idempotence === undefined) config.kafka["enable.idempotence"] = "true";
  else if (/^(false|f|0)$/i.test(idempotence.trim())) {
    throw new ConfigError(
      "config: producer.wal.preserve_order: key needs kafka.enable.idempotence: true (it keeps each partition's order across retries)",
    );
  }
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
  for (const known of KEYS.keys()) {
    const distance = editDistance(key, known);
    const sameLeaf = known.endsWith(`.${lastSegment}`);
    if ((distance <= 3 || sameLeaf) && distance < bestDistance) {
      best = known;
      bestDistance = distance;
    }
  }
  return best === undefined ? undefined : KEYS.get(best)!.name;
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
