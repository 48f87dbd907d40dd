/**
 * Every config key, once: its name in the file, its kind of value, its default and one line for the reference.
 * The typed Config, the defaults, the checks of every value, the `KA_*` overrides and `config/example.yaml` all
 * come from this table; adding a key is adding one entry. `kafka.*` keys other than `kafka.brokers` are not
 * listed: they go to librdkafka as they are.
 */
import {
  bool,
  commaList,
  countFromOne,
  duration,
  durationZeroMeans,
  int,
  list,
  listen,
  logLevel,
  oneOf,
  positiveDuration,
  rate,
  size,
  text,
  type ValueKind,
} from "./config_values.ts";

/** One config key. */
export class Key<T> {
  constructor(
    /** The dotted name, lower case, as in the file (`producer.cb.timeout`). */
    readonly name: string,
    readonly kind: ValueKind<T>,
    readonly defaultValue: T,
    /** One line for the reference. */
    readonly doc: string,
    /** Shown in the reference instead of the default, for keys that are off or empty by default. */
    readonly example?: string,
  ) {}
}

/** `producer.wal.path` when the file does not say: the Go service's default. */
export const DEFAULT_WAL_PATH = "/tmp/wal";

/** The WAL modes, as `producer.wal.mode` names them. */
export const WAL_MODES = ["fallback", "always", "disable"] as const;
export type WalMode = typeof WAL_MODES[number];

/** What `producer.wal.preserve_order` keeps in order through the WAL: nothing, or each key's records. */
export const ORDER_MODES = ["none", "key"] as const;

const MAX_INT32 = 2 ** 31 - 1;

/** How a client certificate names its principal (`auth.mtls_principal`): not at all, or by its subject CN. */
export const MTLS_PRINCIPALS = ["none", "cn"] as const;

/**
 * The `tls` section of a listener (docs/security.md); TLS is on when cert_file is set. The reference shows them
 * empty (off): example paths would be files that a copied config cannot start without.
 */
function tlsKeys(listener: string) {
  const prefix = `server.${listener}.tls`;
  return {
    certFile: new Key(
      `${prefix}.cert_file`,
      text,
      "",
      `PEM certificate (chain) of the ${listener} listener, e.g. /etc/ka/tls/server.crt; plain text when unset`,
    ),
    keyFile: new Key(
      `${prefix}.key_file`,
      text,
      "",
      "PEM private key of cert_file, e.g. /etc/ka/tls/server.key",
    ),
    clientCaFile: new Key(
      `${prefix}.client_ca_file`,
      text,
      "",
      "PEM CA, e.g. /etc/ka/tls/clients-ca.crt: when set, a client certificate signed by it is required (mTLS)",
    ),
  };
}

/**
 * The connection bounds of a listener (docs/security.md, Limits). `what` names what a connection must send
 * within header_timeout.
 */
function connectionKeys(
  listener: string,
  defaults: { maxConnections: number; idleTimeoutMs: number },
  what: string,
) {
  const prefix = `server.${listener}`;
  return {
    maxConnections: new Key(
      `${prefix}.max_connections`,
      int(1),
      defaults.maxConnections,
      "most connections open at once; a new one past it is refused and closed",
    ),
    headerTimeoutMs: new Key(
      `${prefix}.header_timeout`,
      positiveDuration,
      10_000,
      `a new connection that has not sent ${what} within this is closed (slowloris)`,
    ),
    idleTimeoutMs: new Key(
      `${prefix}.idle_timeout`,
      positiveDuration,
      defaults.idleTimeoutMs,
      "a connection with no request in flight for this long is closed",
    ),
  };
}

/** The keys, nested as Config is: section names are those of the file, a leaf is one key. */
export const SCHEMA = {
  global: {
    log: {
      level: new Key(
        "global.log.level",
        logLevel,
        "info",
        "lowest level logged: debug, info, warn, error (zap's dpanic, panic, fatal: error); KA_LOG_LEVEL too",
      ),
      outputPaths: new Key(
        "global.log.outputPaths",
        commaList,
        ["stdout"],
        "where log lines go: stdout, stderr or files (appended to), each line to all",
      ),
    },
  },
  server: {
    http: {
      listen: new Key(
        "server.http.listen",
        listen,
        undefined,
        'HTTP produce listener, host:port (":18080" = all interfaces); off when unset',
        "0.0.0.0:18080",
      ),
      batch: {
        maxRecords: new Key(
          "server.http.batch.max_records",
          int(1),
          10_000,
          "most records in one HTTP batch (Content-Type application/x-ndjson); more get 413",
        ),
        maxBytes: new Key(
          "server.http.batch.max_bytes",
          size(MAX_INT32),
          16 * 1024 * 1024,
          "largest HTTP batch body (message.max.bytes still bounds each record's value); more get 413",
        ),
      },
      // Idle connections are kept longer than the clients and load balancers before them keep theirs (Go's
      // net/http 90 s, AWS's ALB 60 s, Google's 600 s, Java's HttpClient 20 min), as the Go service kept them for
      // good: the side that closes first must be theirs, or a POST sent as the close crosses it fails (a reset,
      // a 502 from the balancer).
      ...connectionKeys("http", { maxConnections: 10_000, idleTimeoutMs: 1_800_000 }, "a whole request head"),
      bodyTimeoutMs: new Key(
        "server.http.body_timeout",
        positiveDuration,
        30_000,
        "a request body not received whole within this gets 408",
      ),
      maxInflightBytes: new Key(
        "server.http.max_inflight_bytes",
        size(Number.MAX_SAFE_INTEGER),
        256 * 1024 * 1024,
        "request body bytes read or held at once, until Kafka or the WAL took them; past it, 503",
      ),
      tls: tlsKeys("http"),
    },
    grpc: {
      listen: new Key(
        "server.grpc.listen",
        listen,
        undefined,
        "gRPC listener; off when unset",
        "0.0.0.0:18282",
      ),
      maxRequestSize: new Key(
        "server.grpc.max.request.size",
        size(MAX_INT32),
        4 * 1024 * 1024,
        "largest gRPC message accepted",
      ),
      ...connectionKeys("grpc", { maxConnections: 10_000, idleTimeoutMs: 300_000 }, "its first stream"),
      maxConcurrentStreams: new Key(
        "server.grpc.max_concurrent_streams",
        int(1, 2 ** 32 - 1), // a 32-bit HTTP/2 setting
        128,
        "streams open at once on one connection (HTTP/2 SETTINGS_MAX_CONCURRENT_STREAMS); more are refused",
      ),
      maxSessionMemory: new Key(
        "server.grpc.max_session_memory",
        size(MAX_INT32),
        // Not node's 10MiB: a client that sends faster than the service takes records fills each connection's
        // window, so a flood holds this much per connection (docs/security.md#limits).
        2 * 1024 * 1024,
        "bytes one HTTP/2 connection may hold: request data not yet read, replies the client has not read",
      ),
      // Not HTTP's 256MiB: past it gRPC pauses rather than refuses, and under a flood of large records a larger
      // bound held more memory and read fewer records (docs/security.md#limits).
      maxInflightBytes: new Key(
        "server.grpc.max_inflight_bytes",
        size(Number.MAX_SAFE_INTEGER),
        32 * 1024 * 1024,
        "Produce record bytes read and not yet answered, over all streams; past it, streams stop reading a while",
      ),
      tls: tlsKeys("grpc"),
    },
    monitoring: {
      listen: new Key(
        "server.monitoring.listen",
        listen,
        undefined,
        "/metrics, /healthz, /readyz; off when unset",
        "0.0.0.0:28080",
      ),
      ...connectionKeys("monitoring", { maxConnections: 128, idleTimeoutMs: 60_000 }, "a whole request head"),
      tls: tlsKeys("monitoring"),
    },
  },
  auth: {
    tokensFile: new Key(
      "auth.tokens_file",
      text,
      "",
      "YAML list of principals, token digests and topics (docs/security.md); no authentication when unset",
    ),
    mtlsPrincipal: new Key(
      "auth.mtls_principal",
      oneOf(MTLS_PRINCIPALS),
      "none",
      "cn: a client certificate's subject CN names a tokens_file principal that has no sha256",
    ),
  },
  topics: {
    allow: new Key(
      "topics.allow",
      list,
      [],
      'the only topics anyone may write to ("prefix*" matches a prefix); every topic when empty',
    ),
  },
  producer: {
    cb: {
      intervalMs: new Key(
        "producer.cb.interval",
        duration,
        0,
        "reset the breaker's closed-state failure count every interval; 0 = never",
      ),
      timeoutMs: new Key(
        "producer.cb.timeout",
        durationZeroMeans(60_000),
        20_000,
        "time in Open before trying Half-Open (0 is taken as 60s)",
      ),
      fails: new Key(
        "producer.cb.fails",
        countFromOne,
        5,
        "consecutive failed deliveries that open the breaker (0 is taken as 1)",
      ),
      requests: new Key(
        "producer.cb.requests",
        countFromOne,
        3,
        "Half-Open probe budget, and consecutive successes that close it (0 is taken as 1)",
      ),
      confirmTimeoutMs: new Key(
        "producer.cb.confirm_timeout",
        positiveDuration,
        5_000,
        "after all brokers were reported down: a broker answering within it makes that a connection cut (the " +
          "breaker closes again), none an outage (librdkafka's queue goes to the WAL); allow 4 round trips, more " +
          "with TLS or SASL, and each try (a fifth of it, 1s at least) must outlast one",
      ),
    },
    resend: {
      periodMs: new Key(
        "producer.resend.period",
        duration,
        33_000,
        "how often the WAL is replayed into Kafka (skipped while Open); 0 = never",
      ),
      rateLimit: new Key(
        "producer.resend.rate_limit",
        rate("to turn replay off, set producer.resend.period: 0"),
        10_000,
        "max records per second read from the WAL when replaying (must be > 0)",
      ),
    },
    wal: {
      mode: new Key(
        "producer.wal.mode",
        oneOf(WAL_MODES, true),
        "fallback",
        "fallback (WAL only for undelivered messages), always (every message), disable (never)",
      ),
      inMemory: new Key(
        "producer.wal.in_memory",
        bool,
        false,
        "keep the WAL in memory (lost when the process exits); then path is not used",
      ),
      path: new Key(
        "producer.wal.path",
        text,
        DEFAULT_WAL_PATH,
        "WAL directory, created if missing; the default (the Go service's) may not survive a reboot",
        "./data/wal",
      ),
      alwaysTopics: new Key("producer.wal.always_topics", list, [], "topics that always go through the WAL"),
      disableTopics: new Key(
        "producer.wal.disable_topics",
        list,
        [],
        "topics that never touch the WAL, even on failure",
      ),
      maxBytes: new Key(
        "producer.wal.max_bytes",
        size(Number.MAX_SAFE_INTEGER),
        1024 ** 3,
        "size bound of the WAL; when full, produce requests that need it get 503",
      ),
      preserveOrder: new Key(
        "producer.wal.preserve_order",
        oneOf(ORDER_MODES),
        "none",
        "key: each key's records reach Kafka in the order accepted, WAL or not (docs/delivery.md)",
      ),
    },
    fullQueueWaitMs: new Key(
      "producer.full_queue_wait",
      duration,
      1_000,
      "fallback mode: how long a message waits for room in librdkafka's full queue before it goes to the WAL",
    ),
    oldProducerKillTimeoutMs: new Key(
      "producer.old_producer_kill_timeout",
      duration,
      600_000,
      "on SIGHUP or after a fatal producer error, how long the replaced producer may drain before it is closed",
    ),
    getMetadataTimeoutMs: new Key(
      "producer.get_metadata_timeout",
      duration,
      5_000,
      "how long GET /topics and gRPC ListTopics wait for the cluster's topic list",
    ),
    shutdownTimeoutMs: new Key(
      "producer.shutdown_timeout",
      duration,
      30_000,
      "on SIGTERM/SIGINT, how long to flush to Kafka before spooling the rest to the WAL",
    ),
  },
};

/** `kafka.brokers`: the one `kafka.*` key that is ours; it becomes librdkafka's `bootstrap.servers`. */
export const BROKERS = new Key(
  "kafka.brokers",
  list,
  [] as string[],
  'joined with "," into bootstrap.servers (an explicit kafka.bootstrap.servers wins)',
);

/**
 * Keys that the Go service read and that have no effect here, each with the reason: a Go service's config file
 * starts this one unchanged, and the start logs each of these it finds. A name also covers every key under it.
 */
export const GO_KEYS_WITHOUT_EFFECT: ReadonlyMap<string, string> = new Map([
  ...under("global.log", "logs are JSON lines (ts, level, msg and fields)", [
    "encoding",
    "erroroutputpaths",
    "encoderconfig",
    "development",
    "disablecaller",
    "disablestacktrace",
    "sampling",
    "initialfields",
  ]),
  ["server.grpc.monitoring.enable", "the gRPC metrics are always on"],
  ["server.grpc.monitoring.histogram.enable", "grpc_server_handling_seconds is always on"],
  ...under("producer.wal", "it tuned the Go service's WAL store, which this WAL does not use", [
    "collect_metrics_period",
    "write_batch_timeout",
    "delete_batch_timeout",
    "write_batch_size",
    "delete_batch_size",
    "log_gc_idle_time",
    "log_gc_discard_ratio",
    "iterator_prefetch_size",
    "write_ch_size",
    "delete_ch_size",
  ]),
  ["producer.wal.skip_topics", "the Go service never read it either; producer.wal.disable_topics is the key"],
]);

/** `[prefix.field, why]` for each field. */
function under(prefix: string, why: string, fields: string[]): Array<[string, string]> {
  return fields.map((field) => [`${prefix}.${field}`, why]);
}

/** The entry of GO_KEYS_WITHOUT_EFFECT that `key` is or lies under, if any. */
export function goKeyWithoutEffect(key: string): string | undefined {
  for (const name of GO_KEYS_WITHOUT_EFFECT.keys()) {
    if (key === name || key.startsWith(`${name}.`)) return name;
  }
  return undefined;
}

/** A schema subtree as the values it describes. */
export type Values<S> = { [K in keyof S]: S[K] extends Key<infer T> ? T : Values<S[K]> };

/** Every key, `kafka.brokers` included, by its name in lower case: names in a file or the environment match so. */
export const KEYS: ReadonlyMap<string, Key<unknown>> = new Map(
  [...keysOf(SCHEMA), BROKERS].map((key) => [key.name.toLowerCase(), key]),
);

/** The keys of a schema subtree, in table order. */
export function keysOf(schema: object): Key<unknown>[] {
  return Object.values(schema).flatMap((node) => node instanceof Key ? [node] : keysOf(node));
}
