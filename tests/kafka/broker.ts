import { waitFor } from "../support/wait.ts";
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
  #child: Deno.ChildProcess | null = null;
  #exited: Promise<Deno.CommandStatus> | null = null;
  #exitCode: number | null = null;

  constructor(dir: string, port: number, internalPort: number, advertised: string, libs: string) {
    this.dir = dir;
    this.port = port;
    this.bootstrap = advertised;
    this.directBootstrap = `127.0.0.1:${internalPort}`;
    this.logPath = `${dir}/broker.log`;
    this.#libs = libs;
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

  /** Creates a topic (if it does not exist) and waits until every partition has a leader. */
  async createTopic(name: string, partitions = 1): Promise<void> {
    const r = await runCommand(javaBinary(), [
      ...TOOL_JAVA_OPTS,
      `-Dlog4j2.configurationFile=${this.dir}/tools-log4j2.properties`,
      "-cp",
      `${this.#libs}/*`,
      "org.apache.kafka.tools.TopicCommand",
      "--bootstrap-server",
      this.directBootstrap,
      "--create",
      "--if-not-exists",
      "--topic",
      name,
      "--partitions",
      String(partitions),
      "--replication-factor",
      "1",
    ], { timeoutMs: TOOL_TIMEOUT_MS });
    if (r.code !== 0) {
      throw new Error(
        `kafka broker ${this.bootstrap}: creating topic ${name} failed (exit ${r.code}): ${r.stderr}`,
      );
    }
    await waitFor(
      `kafka broker ${this.bootstrap}: a leader for every partition of topic ${name}`,
      () => this.#topicReady(name, partitions),
      TOOL_TIMEOUT_MS,
    );
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
 */
export async function startBroker(opts: BrokerOptions = {}): Promise<Broker> {
  const libs = await kafkaLibs();
  const dir = await Deno.makeTempDir({ prefix: "ka-kafka-" });
  try {
    const port = opts.port ?? freePort();
    const internalPort = freePort();
    const controllerPort = freePort();
    const advertised = `${opts.advertisedHost ?? "127.0.0.1"}:${opts.advertisedPort ?? port}`;
    const broker = new Broker(dir, port, internalPort, advertised, libs);
    await Deno.writeTextFile(
      `${dir}/server.properties`,
      serverProperties({
        dir,
        port,
        internalPort,
        controllerPort,
        advertised,
        partitions: opts.partitions ?? 1,
      }),
    );
    await Deno.writeTextFile(`${dir}/log4j2.properties`, log4jProperties("INFO", "SYSTEM_OUT"));
    await Deno.writeTextFile(`${dir}/tools-log4j2.properties`, log4jProperties("WARN", "SYSTEM_ERR"));
    await formatStorage(dir, libs);
    await broker.start();
    return broker;
  } catch (e) {
    await Deno.remove(dir, { recursive: true }).catch(() => {});
    throw e;
  }
}

/** A loopback TCP port that was free a moment ago. */
export function freePort(): number {
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const port = (listener.addr as Deno.NetAddr).port;
  listener.close();
  return port;
}

interface ServerConfig {
  dir: string;
  port: number;
  internalPort: number;
  controllerPort: number;
  advertised: string;
  partitions: number;
}

function serverProperties(c: ServerConfig): string {
  const props: Record<string, string | number | boolean> = {
    "process.roles": "broker,controller",
    "node.id": 1,
    "controller.quorum.voters": `1@127.0.0.1:${c.controllerPort}`,
    "listeners":
      `CLIENT://127.0.0.1:${c.port},INTERNAL://127.0.0.1:${c.internalPort},CONTROLLER://127.0.0.1:${c.controllerPort}`,
    "advertised.listeners": `CLIENT://${c.advertised},INTERNAL://127.0.0.1:${c.internalPort}`,
    "listener.security.protocol.map": "CLIENT:PLAINTEXT,INTERNAL:PLAINTEXT,CONTROLLER:PLAINTEXT",
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
  return Object.entries(props).map(([k, v]) => `${k}=${v}`).join("\n") + "\n";
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

async function formatStorage(dir: string, libs: string): Promise<void> {
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
