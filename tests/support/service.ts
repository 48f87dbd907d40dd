/** Runs kafka-ambassador as a child process, the way a user runs it, for end-to-end tests. */
import { stringify } from "yaml";
import { freePort } from "../kafka/broker.ts";

export { freePort };

const MAIN = new URL("../../src/main.ts", import.meta.url).pathname;
const DENO = Deno.env.get("KA_DENO") ?? Deno.execPath();

/** A running service and the addresses of its listeners. */
export interface Service {
  readonly http: string;
  readonly grpc: string;
  readonly monitoring: string;
  readonly logPath: string;
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
  opts: { dir?: string; env?: Record<string, string>; readyTimeoutMs?: number } = {},
): Promise<Service> {
  const dir = opts.dir ?? await Deno.makeTempDir({ prefix: "ka-svc-" });
  const full = structuredClone(config) as Record<string, Record<string, unknown>>;
  const server = (full.server ??= {}) as Record<string, Record<string, unknown>>;
  const httpPort = freePort(), grpcPort = freePort(), monPort = freePort();
  server.http ??= { listen: `127.0.0.1:${httpPort}` };
  server.grpc ??= { listen: `127.0.0.1:${grpcPort}` };
  server.monitoring ??= { listen: `127.0.0.1:${monPort}` };
  const configPath = `${dir}/config.yaml`;
  await Deno.writeTextFile(configPath, stringify(full));
  const logPath = `${dir}/service-${Date.now()}.log`;
  const logFile = await Deno.open(logPath, { write: true, create: true, append: true });
  const child = new Deno.Command(DENO, {
    args: ["run", "--allow-all", MAIN, "-config", configPath],
    env: { KA_LOG_LEVEL: "info", ...opts.env },
    stdin: "null",
    stdout: "null",
    stderr: "piped",
  }).spawn();
  // The service logs on stderr only. Written chunk by chunk so that tests can read the log while it runs.
  const pump = (async () => {
    try {
      for await (const chunk of child.stderr) await logFile.write(chunk);
    } finally {
      logFile.close();
    }
  })();
  const exited = child.status.then(async (s) => {
    await pump.catch(() => {});
    return s.code;
  });
  const http = `http://${server.http.listen}`;
  const monitoring = `http://${server.monitoring.listen}`;
  const svc: Service = {
    http,
    grpc: String(server.grpc.listen),
    monitoring,
    logPath,
    configPath,
    exited,
    signal: (sig) => child.kill(sig),
    async stop(sig: Deno.Signal = "SIGTERM") {
      try {
        child.kill(sig);
      } catch { /* already gone */ }
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
  };
  const deadline = Date.now() + (opts.readyTimeoutMs ?? 30_000);
  let done = false;
  exited.then(() => done = true);
  while (true) {
    if (done) {
      throw new Error(`service exited during start-up:\n${await Deno.readTextFile(logPath)}`);
    }
    try {
      const r = await fetch(`${monitoring}/healthz`);
      await r.body?.cancel();
      if (r.ok) break;
    } catch { /* not up yet */ }
    if (Date.now() > deadline) {
      await svc.stop("SIGKILL");
      throw new Error(`service not healthy in time:\n${await Deno.readTextFile(logPath)}`);
    }
    await new Promise((r) => setTimeout(r, 100));
  }
  return svc;
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
