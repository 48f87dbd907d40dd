/** Runs kafka-ambassador as a child process, the way a user runs it, for end-to-end tests. */
import { stringify } from "yaml";
import { freePort } from "../kafka/broker.ts";
import { LIBRDKAFKA_PATH } from "./librdkafka.ts";
import { waitFor } from "./wait.ts";

export { freePort };

const ROOT = new URL("../../", import.meta.url).pathname;
const MAIN = `${ROOT}src/main.ts`;
const DENO = Deno.env.get("KA_DENO") ?? Deno.execPath();
/** Disposal sends SIGTERM, then SIGKILL after this long (the longest shutdown_timeout in the tests is 60 s). */
const DISPOSE_KILL_MS = 90_000;

/** The flags of a `deploy/deno-flags.txt` text: one a line, `#` comments and blank lines left out. */
export function denoFlags(text: string): string[] {
  return text.split("\n").map((l) => l.trim()).filter((l) => l !== "" && !l.startsWith("#"));
}

/**
 * The V8 settings the service of the tree at `root` ships with (its deploy/deno-flags.txt; none in a tree without
 * it), so that tests and benchmarks run it with the heap it has in production.
 */
export function v8Flags(root: string): string[] {
  let text: string;
  try {
    text = Deno.readTextFileSync(`${root.replace(/\/?$/, "/")}deploy/deno-flags.txt`);
  } catch (err) {
    if (err instanceof Deno.errors.NotFound) return [];
    throw err;
  }
  return denoFlags(text).filter((flag) => flag.startsWith("--v8-flags="));
}

/**
 * The flags the service of the tree at `root` ships with, permissions and V8 settings (its deploy/deno-flags.txt),
 * so that tests run it as it runs in production; `--allow-all` and no V8 flags in a tree without the file.
 */
export function shippedFlags(root: string): string[] {
  try {
    return denoFlags(Deno.readTextFileSync(`${root.replace(/\/?$/, "/")}deploy/deno-flags.txt`));
  } catch (err) {
    if (err instanceof Deno.errors.NotFound) return ["--allow-all"];
    throw err;
  }
}

/**
 * A running service and the addresses of its listeners. Disposing it sends SIGTERM if it is still running and
 * waits for the exit without judging the code: a test that cares about the code calls `stop()` itself.
 */
export interface Service extends AsyncDisposable {
  readonly http: string;
  readonly grpc: string;
  readonly monitoring: string;
  readonly logPath: string;
  /** Where the service's stderr goes (it writes nothing there while it serves). */
  readonly stderrPath: string;
  readonly configPath: string;
  /** Sends a signal; resolves when the process has exited, with its exit code. */
  stop(signal?: Deno.Signal): Promise<number>;
  signal(signal: Deno.Signal): void;
  /** Resolves with the exit code once the process has exited. */
  readonly exited: Promise<number>;
  /** The log lines written so far, parsed. */
  logs(): Promise<Array<Record<string, unknown>>>;
  /** Fetches /metrics and returns the value of one sample (sum over samples matching every given label). */
  metric(name: string, labels?: Record<string, string>): Promise<number>;
}

/**
 * Starts the service with `config` (nested YAML shape; listeners are filled in with free ports unless given)
 * and waits until /healthz answers.
 */
export async function startService(
  config: Record<string, unknown>,
  opts: {
    dir?: string;
    env?: Record<string, string>;
    readyTimeoutMs?: number;
    /** The command line that runs the service, given the config path (default: `deno run` of src/main.ts). */
    command?: (configPath: string) => { cmd: string; args: string[]; cwd?: string };
  } = {},
): Promise<Service> {
  const dir = opts.dir ?? await ownTempDir();
  const full = structuredClone(config) as Record<string, Record<string, unknown>>;
  const server = (full.server ??= {}) as Record<string, Record<string, unknown>>;
  const httpPort = freePort(), grpcPort = freePort(), monPort = freePort();
  server.http ??= { listen: `127.0.0.1:${httpPort}` };
  server.grpc ??= { listen: `127.0.0.1:${grpcPort}` };
  server.monitoring ??= { listen: `127.0.0.1:${monPort}` };
  const configPath = `${dir}/config.yaml`;
  await Deno.writeTextFile(configPath, stringify(full));
  const logPath = `${dir}/service-${Date.now()}.log`;
  const stderrPath = `${logPath}.stderr`;
  const command = opts.command?.(configPath) ??
    { cmd: DENO, args: ["run", ...shippedFlags(ROOT), MAIN, "-config", configPath] };
  const child = new Deno.Command(command.cmd, {
    args: command.args,
    cwd: command.cwd,
    env: { KA_LOG_LEVEL: "info", ...(LIBRDKAFKA_PATH ? { LIBRDKAFKA_PATH } : {}), ...opts.env },
    stdin: "null",
    stdout: "piped",
    stderr: "piped",
  }).spawn();
  // The service logs on stdout only (global.log.outputPaths' default). Written chunk by chunk so that tests can read
  // the log while it runs.
  const pumps = [pump(child.stdout, logPath), pump(child.stderr, stderrPath)];
  const exited = child.status.then(async (s) => {
    await Promise.allSettled(pumps);
    return s.code;
  });
  const kill = (sig: Deno.Signal) => {
    try {
      child.kill(sig);
    } catch { /* already gone */ }
  };
  const http = `http://${server.http.listen}`;
  const monitoring = `http://${server.monitoring.listen}`;
  const svc: Service = {
    http,
    grpc: String(server.grpc.listen),
    monitoring,
    logPath,
    stderrPath,
    configPath,
    exited,
    signal: (sig) => child.kill(sig),
    async stop(sig: Deno.Signal = "SIGTERM") {
      kill(sig);
      return await exited;
    },
    async logs() {
      const text = await Deno.readTextFile(logPath);
      return text.split("\n").filter((l) => l.startsWith("{")).map((l) => JSON.parse(l));
    },
    async metric(name, labels = {}) {
      const text = await (await fetch(`${monitoring}/metrics`)).text();
      return sumMetric(text, name, labels);
    },
    async [Symbol.asyncDispose]() {
      // Bounded, like Broker.stop: a service that hangs on SIGTERM must not hang the test run.
      const timer = setTimeout(() => kill("SIGKILL"), DISPOSE_KILL_MS);
      try {
        await svc.stop();
      } finally {
        clearTimeout(timer);
      }
    },
  };
  let done = false;
  exited.then(() => done = true);
  try {
    await waitFor("the service to answer /healthz", async () => {
      if (done) throw new Error("service exited during start-up");
      return await healthy(monitoring);
    }, opts.readyTimeoutMs ?? 30_000);
  } catch (err) {
    await svc.stop("SIGKILL");
    throw new Error(`${(err as Error).message}:\n${await Deno.readTextFile(logPath)}`);
  }
  return svc;
}

/** Appends a stream to a file as it arrives. */
async function pump(stream: ReadableStream<Uint8Array>, path: string): Promise<void> {
  const file = await Deno.open(path, { write: true, create: true, append: true });
  try {
    for await (const chunk of stream) await file.write(chunk);
  } finally {
    file.close();
  }
}

/** Whether GET /healthz answers 200; false while nothing listens yet. */
async function healthy(monitoring: string): Promise<boolean> {
  try {
    const r = await fetch(`${monitoring}/healthz`);
    await r.body?.cancel();
    return r.ok;
  } catch {
    return false;
  }
}

/** Sums the samples of `name` in Prometheus text whose labels include every entry of `labels`. */
export function sumMetric(text: string, name: string, labels: Record<string, string> = {}): number {
  let sum = 0;
  for (const line of text.split("\n")) {
    if (!line.startsWith(name)) continue;
    const rest = line.slice(name.length);
    if (rest[0] !== "{" && rest[0] !== " ") continue;
    if (!Object.entries(labels).every(([k, v]) => rest.includes(`${k}="${v}"`))) continue;
    sum += Number(line.slice(line.lastIndexOf(" ") + 1));
  }
  return sum;
}

/** A temp dir for a service started without one: it lives as long as the test file runs (logs stay readable). */
async function ownTempDir(): Promise<string> {
  const dir = await Deno.makeTempDir({ prefix: "ka-svc-" });
  globalThis.addEventListener("unload", () => Deno.removeSync(dir, { recursive: true }));
  return dir;
}
