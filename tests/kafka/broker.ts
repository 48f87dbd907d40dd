import { waitFor } from "../support/wait.ts";
import { type KeyPair, keystorePem } from "./certs.ts";
import { runCommand } from "./command.ts";

/** Options for {@linkcode startBroker}. */
export interface BrokerOptions {
  /** Host that clients are told to connect to (default 127.0.0.1), e.g. a fault proxy's. */
  advertisedHost?: string;
  /** Port that clients are told to connect to (default: the client listener's own port). */
  advertisedPort?: number;
  /** Client listener port (default: a free one), so a proxy can be set up before the broker. */
  port?: number;
  /** `num.partitions` for auto-created topics (default 1). */
  partitions?: number;
  /** TLS, and SASL over it, on the CLIENT listener (default: PLAINTEXT). */
  security?: ListenerSecurity;
  /**
   * More client listeners on free loopback ports, by name (upper case, e.g. `TLS`), each with its own
   * protocol and certificate; {@linkcode Broker.address} gives their host:port. INTERNAL and CONTROLLER stay
   * plaintext.
   */
  listeners?: Record<string, ListenerSecurity>;
  /** Users that SASL_SSL listeners accept (default: none). */
  users?: SaslUsers;
  /**
   * Where the broker's temp dir (config, data, logs) is made (default: the system's temp dir), e.g. a tmpfs, so
   * that a benchmark of the WAL's fdatasync does not share a file system's journal with the broker's writes.
   */
  parentDir?: string;
  /** More broker properties, over the defaults (e.g. `{ "auto.create.topics.enable": false }`). */
  properties?: Record<string, string | number | boolean>;
}

/** How a client listener speaks: TLS with the broker's own certificate, optionally SASL inside it. */
export interface ListenerSecurity {
  /** `SSL`, or `SASL_SSL` with the mechanisms SCRAM-SHA-512 and PLAIN. */
  protocol: "SSL" | "SASL_SSL";
  /** The broker's key (unencrypted PKCS#8) and certificate for this listener. */
  keyPair: KeyPair;
  /** A CA file: clients must then present a certificate it signed (`ssl.client.auth=required`). */
  clientCa?: string;
}

/** SASL users by name, with their passwords. */
export interface SaslUsers {
  /**
   * SCRAM-SHA-512 credentials, written into the cluster metadata when storage is formatted. librdkafka before
   * 2.6.1 cannot log in with them: Kafka 4.x refuses its SCRAM final message.
   */
  scram?: Record<string, string>;
  /** PLAIN users, listed in each SASL_SSL listener's JAAS config. */
  plain?: Record<string, string>;
}

const READY_TIMEOUT_MS = 60_000;
const STOP_TIMEOUT_MS = 30_000;
const TOOL_TIMEOUT_MS = 60_000;

const BROKER_JAVA_OPTS = ["-Xms128m", "-Xmx512m", "-XX:+UseSerialGC", "-XX:TieredStopAtLevel=1"];
const TOOL_JAVA_OPTS = ["-Xmx256m", "-XX:+UseSerialGC", "-XX:TieredStopAtLevel=1"];

/**
 * A single-node Apache Kafka (KRaft, combined broker and controller) on loopback, in its own temp dir.
 *
 * @example
 * await using broker = await startBroker();
 * await broker.createTopic("events", 3);
 */
export class Broker implements AsyncDisposable {
  /** host:port that clients should bootstrap from: the advertised address. */
  readonly bootstrap: string;
  /** A listener that always advertises itself: for checks that must bypass a proxy. */
  readonly directBootstrap: string;
  /** Where the broker log (stdout and stderr of the JVM) goes. */
  readonly logPath: string;
  /** The temp dir holding config, data and logs. */
  readonly dir: string;
  /** Real port of the client listener (what a proxy in front of the broker targets). */
  readonly port: number;
  readonly #libs: string;
  readonly #extra: ReadonlyMap<string, number>;
  #child: Deno.ChildProcess | null = null;
  #exited: Promise<Deno.CommandStatus> | null = null;
  #exitCode: number | null = null;

  constructor(
    dir: string,
    port: number,
    internalPort: number,
    advertised: string,
    libs: string,
    extraPorts: ReadonlyMap<string, number> = new Map(),
  ) {
    this.dir = dir;
    this.port = port;
    this.bootstrap = advertised;
    this.directBootstrap = `127.0.0.1:${internalPort}`;
    this.logPath = `${dir}/broker.log`;
    this.#libs = libs;
    this.#extra = extraPorts;
  }

  /** host:port of a listener given in {@linkcode BrokerOptions.listeners}. */
  address(listener: string): string {
    const port = this.#extra.get(listener);
    if (port === undefined) throw new Error(`kafka broker ${this.bootstrap}: no listener ${listener}`);
    return `127.0.0.1:${port}`;
  }

  /** True while the broker process is running (false after stop() or a crash). */
  get running(): boolean {
    return this.#exitCode === null && this.#child !== null;
  }

  /** Starts the broker on its ports and data dir, and waits until it answers metadata requests. */
  async start(): Promise<void> {
    if (this.running) throw new Error(`kafka broker ${this.bootstrap}: already running`);
    await this.stop(); // reaps a process that crashed
    const args = [
      "-c",
      'log="$1"; shift; exec "$@" >>"$log" 2>&1',
      "sh",
      this.logPath,
      javaBinary(),
      ...BROKER_JAVA_OPTS,
      `-Dlog4j2.configurationFile=${this.dir}/log4j2.properties`,
      "-cp",
      `${this.#libs}/*`,
      "kafka.Kafka",
      `${this.dir}/server.properties`,
    ];
    const child = new Deno.Command("sh", { args, stdin: "null", stdout: "null", stderr: "null" }).spawn();
    this.#child = child;
    this.#exitCode = null;
    this.#exited = child.status.then((s) => {
      this.#exitCode = s.code;
      return s;
    });
    try {
      await waitFor(
        `kafka broker ${this.bootstrap} to answer metadata requests`,
        async () => {
          if (this.#exitCode !== null) {
            throw new Error(
              `kafka broker ${this.bootstrap}: exited with code ${this.#exitCode} before it was ready`,
            );
          }
          return await this.#answersMetadata();
        },
        READY_TIMEOUT_MS,
        200,
      );
    } catch (err) {
      await this.stop();
      throw new Error(`${(err as Error).message}\n${await this.logTail()}`);
    }
  }

  /**
   * Stops the broker and waits for the process to exit. SIGTERM is a clean shutdown (SIGKILL follows after
   * 30 s); pass "SIGKILL" to simulate a crash.
   */
  async stop(signal: "SIGTERM" | "SIGKILL" = "SIGTERM"): Promise<void> {
    const child = this.#child;
    const exited = this.#exited;
    if (!child || !exited) return;
    if (this.#exitCode === null) {
      try {
        child.kill(signal);
      } catch {
        // exited in the meantime
      }
    }
    let timer: ReturnType<typeof setTimeout> | undefined;
    const killed = new Promise<void>((resolve) => {
      timer = setTimeout(() => {
        try {
          child.kill("SIGKILL");
        } catch {
          // exited just now
        }
        resolve();
      }, STOP_TIMEOUT_MS);
    });
    await Promise.race([exited, killed]);
    clearTimeout(timer);
    await exited;
    this.#child = null;
    this.#exited = null;
  }

  /**
   * Creates a topic (if it does not exist) with topic `configs` (e.g. `{ "cleanup.policy": "compact" }`) and waits
   * until every partition has a leader.
   */
  async createTopic(name: string, partitions = 1, configs: Record<string, string> = {}): Promise<void> {
    await this.#topicTool(`creating topic ${name}`, [
      "--create",
      "--if-not-exists",
      "--topic",
      name,
      "--partitions",
      String(partitions),
      "--replication-factor",
      "1",
      ...Object.entries(configs).flatMap(([k, v]) => ["--config", `${k}=${v}`]),
    ]);
    await waitFor(
      `kafka broker ${this.bootstrap}: a leader for every partition of topic ${name}`,
      () => this.#topicReady(name, partitions),
      TOOL_TIMEOUT_MS,
    );
  }

  /** Deletes a topic and waits until the broker's metadata no longer lists it (so that it may be made again). */
  async deleteTopic(name: string): Promise<void> {
    await this.#topicTool(`deleting topic ${name}`, ["--delete", "--topic", name]);
    await waitFor(
      `kafka broker ${this.bootstrap}: topic ${name} gone`,
      () => this.#topicGone(name),
      TOOL_TIMEOUT_MS,
    );
  }

  /** Runs Kafka's topic tool against this broker directly; `what` names the task in its error. */
  async #topicTool(what: string, args: string[]): Promise<void> {
    const r = await runCommand(javaBinary(), [
      ...TOOL_JAVA_OPTS,
      `-Dlog4j2.configurationFile=${this.dir}/tools-log4j2.properties`,
      "-cp",
      `${this.#libs}/*`,
      topicCommand(this.#libs),
      "--bootstrap-server",
      this.directBootstrap,
      ...args,
    ], { timeoutMs: TOOL_TIMEOUT_MS });
    if (r.code !== 0) {
      throw new Error(`kafka broker ${this.bootstrap}: ${what} failed (exit ${r.code}): ${r.stderr}`);
    }
  }

  /** Stops the broker and removes its temp dir. */
  async close(): Promise<void> {
    await this.stop();
    await Deno.remove(this.dir, { recursive: true });
  }

  async [Symbol.asyncDispose](): Promise<void> {
    await this.close();
  }

  /** The last lines of the broker log, for error messages. */
  async logTail(lines = 40): Promise<string> {
    try {
      const text = await Deno.readTextFile(this.logPath);
      return `last lines of ${this.logPath}:\n` + text.trimEnd().split("\n").slice(-lines).join("\n");
    } catch (e) {
      return `no broker log at ${this.logPath}: ${e}`;
    }
  }

  async #answersMetadata(): Promise<boolean> {
    const r = await runCommand("kcat", ["-L", "-J", "-b", this.directBootstrap, "-m", "2"], {
      timeoutMs: 5_000,
    });
    if (r.code !== 0) return false;
    const meta = parseMetadata(r.stdout);
    return meta !== null && meta.brokers.length > 0;
  }

  /** Whether the broker's metadata of all topics (asking for one by name may create it) leaves `name` out. */
  async #topicGone(name: string): Promise<boolean> {
    const r = await runCommand("kcat", ["-L", "-J", "-b", this.directBootstrap, "-m", "2"], {
      timeoutMs: 5_000,
    });
    if (r.code !== 0) return false;
    const meta = parseMetadata(r.stdout);
    return meta !== null && !meta.topics.some((t) => t.topic === name);
  }

  async #topicReady(name: string, partitions: number): Promise<boolean> {
    const r = await runCommand("kcat", ["-L", "-J", "-b", this.directBootstrap, "-t", name, "-m", "2"], {
      timeoutMs: 5_000,
    });
    if (r.code !== 0) return false;
    const topic = parseMetadata(r.stdout)?.topics.find((t) => t.topic === name);
    if (!topic || topic.error || topic.partitions.length < partitions) return false;
    return topic.partitions.every((p) => p.leader >= 0 && !p.error);
  }
}

/**
 * Formats storage for and starts a fresh single-node broker on free loopback ports.
 *
 * @example
 * await using broker = await startBroker({ partitions: 3 });
 * @example
 * // CLIENT on SASL_SSL, one more listener on SSL (certificates from ./certs.ts)
 * await using broker = await startBroker({
 *   security: { protocol: "SASL_SSL", keyPair },
 *   listeners: { TLS: { protocol: "SSL", keyPair } },
 *   users: { scram: { alice: "alice-secret" }, plain: { bob: "bob-secret" } },
 * });
 * broker.address("TLS"); // "127.0.0.1:<port>"
 */
export async function startBroker(opts: BrokerOptions = {}): Promise<Broker> {
  // A port from freePort() can still be taken (by another process binding it) before the broker binds it: then
  // the broker exits at start-up, and a second try with fresh ports goes through.
  for (let attempt = 1;; attempt++) {
    try {
      return await startBrokerOnce(opts);
    } catch (err) {
      if (attempt >= START_ATTEMPTS || !(err as Error).message.includes("Address already in use")) throw err;
    }
  }
}

/** Tries to start a broker with ports picked anew. */
async function startBrokerOnce(opts: BrokerOptions): Promise<Broker> {
  const libs = await kafkaLibs();
  const dir = await Deno.makeTempDir({ prefix: "ka-kafka-", dir: opts.parentDir });
  try {
    const names = Object.keys(opts.listeners ?? {});
    const [picked, internalPort, controllerPort, ...extraPicked] = freePorts(3 + names.length, opts.port);
    const port = opts.port ?? picked;
    const advertised = `${opts.advertisedHost ?? "127.0.0.1"}:${opts.advertisedPort ?? port}`;
    const extra = names.map((name, i) => ({ name, port: extraPicked[i], security: opts.listeners![name] }));
    const extraPorts = new Map(extra.map((l) => [l.name, l.port]));
    const broker = new Broker(dir, port, internalPort, advertised, libs, extraPorts);
    const clients: ClientListener[] = [
      { name: "CLIENT", port, advertised, security: opts.security },
      ...extra.map((l) => ({ ...l, advertised: `127.0.0.1:${l.port}` })),
    ];
    for (const l of clients) {
      if (l.security) await keystorePem(l.security.keyPair, keystorePath(dir, l.name));
    }
    await Deno.writeTextFile(
      `${dir}/server.properties`,
      serverProperties({
        dir,
        clients,
        internalPort,
        controllerPort,
        partitions: opts.partitions ?? 1,
        plainUsers: opts.users?.plain ?? {},
        properties: opts.properties ?? {},
      }),
    );
    await Deno.writeTextFile(`${dir}/log4j2.properties`, log4jProperties("INFO", "SYSTEM_OUT"));
    await Deno.writeTextFile(`${dir}/tools-log4j2.properties`, log4jProperties("WARN", "SYSTEM_ERR"));
    await formatStorage(dir, libs, opts.users?.scram ?? {});
    await broker.start();
    return broker;
  } catch (e) {
    await Deno.remove(dir, { recursive: true }).catch(() => {});
    throw e;
  }
}

/** Starts tried when a port was taken before the broker could bind it. */
const START_ATTEMPTS = 3;

/**
 * Where picked ports come from. A port the kernel picks (port 0) comes from its ephemeral range, which outgoing
 * connections draw their local ports from: once released, it can become a load generator's or a client's port,
 * and a broker binding it at start or at a restart fails with "Address already in use". So ports are picked
 * among the 12,000 below that range.
 */
const PICK_RANGE: readonly [number, number] | undefined = (() => {
  try {
    const low = Number(
      Deno.readTextFileSync("/proc/sys/net/ipv4/ip_local_port_range").trim().split(/\s+/)[0],
    );
    return low > 13_024 ? [low - 12_000, low - 1] : undefined;
  } catch {
    return undefined; // not Linux: the kernel's choice
  }
})();

/** A loopback listener on a random port of PICK_RANGE that is free, or on a port the kernel picks. */
function listenOnPickedPort(): Deno.Listener {
  if (PICK_RANGE !== undefined) {
    const [low, high] = PICK_RANGE;
    for (let i = 0; i < 100; i++) {
      const port = low + Math.floor(Math.random() * (high - low + 1));
      try {
        return Deno.listen({ hostname: "127.0.0.1", port });
      } catch (err) {
        if (!(err instanceof Deno.errors.AddrInUse)) throw err;
      }
    }
  }
  return Deno.listen({ hostname: "127.0.0.1", port: 0 });
}

/**
 * Ports handed out in this test run. A port is released before its user binds it, so a later pick could return it
 * again (`freePort()` for a service's HTTP listener and again for its gRPC one gave both the same port: one pick in
 * 12,000, hundreds of picks per run), and a broker's port is free while an outage test has it stopped. Test files
 * run in parallel, each with its own copy of this module, so the ports are claimed where all of them see it: a
 * file per port in a directory of this process (`createNew` is atomic). The directories of ended processes are
 * removed on the way. Without /proc (not Linux), a set of this module's own.
 */
const CLAIMS = claimsDir();
const handedOut = new Set<number>();

/** `<tmp>/kafka-ambassador-test-ports/<pid>-<start time>`, created; undefined without /proc. */
function claimsDir(): string | undefined {
  const self = processStart("self");
  if (self === undefined) return undefined;
  const base = `${Deno.env.get("TMPDIR") ?? "/tmp"}/kafka-ambassador-test-ports`;
  const dir = `${base}/${Deno.pid}-${self}`;
  Deno.mkdirSync(dir, { recursive: true });
  for (const entry of Deno.readDirSync(base)) {
    const [pid, start] = entry.name.split("-");
    if (entry.name === `${Deno.pid}-${self}` || processStart(pid) === start) continue;
    try {
      Deno.removeSync(`${base}/${entry.name}`, { recursive: true });
    } catch { /* another test file removed it first */ }
  }
  return dir;
}

/** The start time of process `pid` (field 22 of /proc/PID/stat), which tells it from a later one with its pid. */
function processStart(pid: string): string | undefined {
  try {
    const stat = Deno.readTextFileSync(`/proc/${pid}/stat`);
    return stat.slice(stat.lastIndexOf(")") + 2).split(" ")[19];
  } catch {
    return undefined;
  }
}

/** Claims `port` for this run: false if it was handed out before, by any test file. */
function claim(port: number): boolean {
  if (CLAIMS === undefined) {
    if (handedOut.has(port)) return false;
    handedOut.add(port);
    return true;
  }
  try {
    Deno.writeFileSync(`${CLAIMS}/${port}`, new Uint8Array(), { createNew: true });
    return true;
  } catch (err) {
    if (err instanceof Deno.errors.AlreadyExists) return false;
    throw err;
  }
}

/**
 * `n` different loopback TCP ports that were free a moment ago, none of them `avoid` or handed out before: each
 * is held until all are picked.
 */
function freePorts(n: number, avoid?: number): number[] {
  const held: Deno.Listener[] = [];
  try {
    for (let refused = 0; held.length < n;) {
      const listener = listenOnPickedPort();
      const port = (listener.addr as Deno.NetAddr).port;
      if (port === avoid || !claim(port)) {
        listener.close();
        if (++refused === 10_000) throw new Error("tests: every port of the pick range was handed out");
        continue;
      }
      held.push(listener);
    }
    return held.map((l) => (l.addr as Deno.NetAddr).port);
  } finally {
    for (const l of held) l.close();
  }
}

/** A loopback TCP port that was free a moment ago. */
export function freePort(): number {
  return freePorts(1)[0];
}

/** A listener that clients use: CLIENT, or one of BrokerOptions.listeners. */
interface ClientListener {
  name: string;
  port: number;
  advertised: string;
  security?: ListenerSecurity;
}

interface ServerConfig {
  dir: string;
  clients: ClientListener[];
  internalPort: number;
  controllerPort: number;
  partitions: number;
  plainUsers: Record<string, string>;
  properties: Record<string, string | number | boolean>;
}

function serverProperties(c: ServerConfig): string {
  const listeners = [
    ...c.clients.map((l) => `${l.name}://127.0.0.1:${l.port}`),
    `INTERNAL://127.0.0.1:${c.internalPort}`,
    `CONTROLLER://127.0.0.1:${c.controllerPort}`,
  ];
  const advertised = [
    ...c.clients.map((l) => `${l.name}://${l.advertised}`),
    `INTERNAL://127.0.0.1:${c.internalPort}`,
  ];
  const protocols = [
    ...c.clients.map((l) => `${l.name}:${l.security?.protocol ?? "PLAINTEXT"}`),
    "INTERNAL:PLAINTEXT",
    "CONTROLLER:PLAINTEXT",
  ];
  const props: Record<string, string | number | boolean> = {
    "process.roles": "broker,controller",
    "node.id": 1,
    "controller.quorum.voters": `1@127.0.0.1:${c.controllerPort}`,
    "listeners": listeners.join(","),
    "advertised.listeners": advertised.join(","),
    "listener.security.protocol.map": protocols.join(","),
    "controller.listener.names": "CONTROLLER",
    "inter.broker.listener.name": "INTERNAL",
    "log.dirs": `${c.dir}/data`,
    "num.partitions": c.partitions,
    "auto.create.topics.enable": true,
    "offsets.topic.replication.factor": 1,
    "offsets.topic.num.partitions": 1,
    "transaction.state.log.replication.factor": 1,
    "transaction.state.log.min.isr": 1,
    "transaction.state.log.num.partitions": 1,
    "share.coordinator.state.topic.replication.factor": 1,
    "share.coordinator.state.topic.min.isr": 1,
    "share.coordinator.state.topic.num.partitions": 1,
    "group.initial.rebalance.delay.ms": 0,
    // After a crash the restarted broker must wait for its old registration to expire: keep that short.
    "broker.heartbeat.interval.ms": 500,
    "broker.session.timeout.ms": 3000,
    "num.network.threads": 2,
    "num.io.threads": 2,
    "background.threads": 2,
    "log.cleaner.enable": false,
  };
  for (const l of c.clients) {
    if (l.security) Object.assign(props, securityProperties(c.dir, l.name, l.security, c.plainUsers));
  }
  Object.assign(props, c.properties);
  return Object.entries(props).map(([k, v]) => `${k}=${v}`).join("\n") + "\n";
}

/** Per-listener TLS (a PEM keystore: key, then certificate, in one file) and SASL settings. */
function securityProperties(
  dir: string,
  name: string,
  security: ListenerSecurity,
  plainUsers: Record<string, string>,
): Record<string, string> {
  const prefix = `listener.name.${name.toLowerCase()}`;
  const props: Record<string, string> = {
    [`${prefix}.ssl.keystore.type`]: "PEM",
    [`${prefix}.ssl.keystore.location`]: keystorePath(dir, name),
  };
  if (security.clientCa !== undefined) {
    props[`${prefix}.ssl.client.auth`] = "required";
    props[`${prefix}.ssl.truststore.type`] = "PEM";
    props[`${prefix}.ssl.truststore.location`] = security.clientCa;
  }
  if (security.protocol === "SASL_SSL") {
    const plain = Object.entries(plainUsers).map(([user, password]) => ` user_${user}="${password}"`).join(
      "",
    );
    props[`${prefix}.sasl.enabled.mechanisms`] = "SCRAM-SHA-512,PLAIN";
    props[`${prefix}.scram-sha-512.sasl.jaas.config`] =
      "org.apache.kafka.common.security.scram.ScramLoginModule required;";
    props[`${prefix}.plain.sasl.jaas.config`] =
      `org.apache.kafka.common.security.plain.PlainLoginModule required${plain};`;
  }
  return props;
}

/** The listener's PEM keystore in the broker's dir. */
function keystorePath(dir: string, listener: string): string {
  return `${dir}/${listener.toLowerCase()}-keystore.pem`;
}

function log4jProperties(level: string, target: string): string {
  return [
    `rootLogger.level=${level}`,
    "rootLogger.appenderRef.out.ref=out",
    "appender.out.type=Console",
    "appender.out.name=out",
    `appender.out.target=${target}`,
    "appender.out.layout.type=PatternLayout",
    "appender.out.layout.pattern=[%d] %p %m (%c)%n",
    "",
  ].join("\n");
}

async function formatStorage(dir: string, libs: string, scramUsers: Record<string, string>): Promise<void> {
  const scram = Object.entries(scramUsers).flatMap(([user, password]) => [
    "--add-scram",
    `SCRAM-SHA-512=[name=${user},password=${password}]`,
  ]);
  const r = await runCommand(javaBinary(), [
    ...TOOL_JAVA_OPTS,
    `-Dlog4j2.configurationFile=${dir}/tools-log4j2.properties`,
    "-cp",
    `${libs}/*`,
    "kafka.tools.StorageTool",
    "format",
    "--cluster-id",
    clusterId(),
    "--config",
    `${dir}/server.properties`,
    ...scram,
  ], { timeoutMs: TOOL_TIMEOUT_MS });
  if (r.code !== 0) {
    const out = new TextDecoder().decode(r.stdout);
    throw new Error(`kafka broker: formatting storage in ${dir} failed (exit ${r.code}): ${out}${r.stderr}`);
  }
}

/** A random Kafka cluster id: 16 bytes, base64url without padding, starting with a letter. */
function clusterId(): string {
  const bytes = crypto.getRandomValues(new Uint8Array(16));
  // An id starting with "-" would be read as a flag by the storage tool's argument parser (1 run in 64).
  bytes[0] %= 104;
  return btoa(String.fromCharCode(...bytes)).replaceAll("+", "-").replaceAll("/", "_").replace(/=+$/, "");
}

/** The broker jars: $KAFKA_LIBS, else the dir that scripts/setup.sh recorded. */
async function kafkaLibs(): Promise<string> {
  const fromEnv = Deno.env.get("KAFKA_LIBS");
  if (fromEnv) return fromEnv;
  const recorded = new URL("../../.tools/kafka-libs-path", import.meta.url);
  try {
    return (await Deno.readTextFile(recorded)).trim();
  } catch {
    throw new Error(
      "kafka broker: KAFKA_LIBS is not set and no jars are recorded; run `bash scripts/setup.sh`",
    );
  }
}

function javaBinary(): string {
  const home = Deno.env.get("JAVA_HOME");
  return home ? `${home}/bin/java` : "java";
}

interface Metadata {
  brokers: { id: number; name: string }[];
  topics: {
    topic: string;
    error?: string;
    partitions: { partition: number; leader: number; error?: string }[];
  }[];
}

function parseMetadata(stdout: Uint8Array): Metadata | null {
  try {
    return JSON.parse(new TextDecoder().decode(stdout)) as Metadata;
  } catch {
    return null;
  }
}

/** The topic tool's class: org.apache.kafka.tools.TopicCommand since Kafka 3.7 (its kafka-tools jar), before it in core. */
function topicCommand(libs: string): string {
  for (const entry of Deno.readDirSync(libs)) {
    const version = /^kafka-tools-(\d+)\.(\d+)\./.exec(entry.name);
    if (version && (Number(version[1]) > 3 || (Number(version[1]) === 3 && Number(version[2]) >= 7))) {
      return "org.apache.kafka.tools.TopicCommand";
    }
  }
  return "kafka.admin.TopicCommand";
}
