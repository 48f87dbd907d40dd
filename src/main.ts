/** kafka-ambassador: the command line, the signals and the exit codes; src/service.ts does the rest. */
import http from "node:http";
import https from "node:https";
import { type Config, ConfigError, loadConfig, noWalOnDisk } from "./config.ts";
import { LibraryLoadError } from "./kafka/librdkafka.ts";
import { checkKafkaConfig, checkKafkaProducer, librdkafkaVersion } from "./kafka/producer.ts";
import { formatHostPort, listenAddress } from "./listen_address.ts";
import {
  checkLogOutputs,
  holdLogLines,
  log,
  releaseLogLines,
  reopenLogOutputs,
  setLogLevel,
  setLogOutputs,
} from "./log.ts";
import { listenerTls, loadSecurity } from "./server/security.ts";
import type { TlsMaterial } from "./server/tls.ts";
import { type Service, startService } from "./service.ts";
import { VERSION } from "./version.ts";
import { runWalTool } from "./wal_tool/cli.ts";

const USAGE = `usage: kafka-ambassador -config PATH [--check-config | --healthcheck]
       kafka-ambassador --version
       kafka-ambassador wal stats|verify|export|replay -config PATH (see: kafka-ambassador wal --help)`;
/** How long `--healthcheck` waits for /healthz. */
const HEALTHCHECK_TIMEOUT_MS = 2_000;
/** A stop signal this soon after the first is the same request, not the second that means "exit now". */
const REPEATED_SIGNAL_MS = 1_000;
/** Signals that do nothing, rather than end the process as by default. */
const IGNORED_SIGNALS: readonly Deno.Signal[] = ["SIGUSR1", "SIGUSR2", "SIGALRM"];

interface Args {
  configPath?: string;
  checkOnly: boolean;
  healthcheck: boolean;
  version: boolean;
  help: boolean;
}

/** A bad command line: printed as plain text with the usage, exit 2. */
export class UsageError extends Error {}

/** Parses Go-style (`-config x`) and GNU-style (`--config=x`) flags. */
export function parseArgs(argv: string[]): Args {
  const args: Args = { checkOnly: false, healthcheck: false, version: false, help: false };
  for (let i = 0; i < argv.length; i++) {
    if (!argv[i].startsWith("-")) throw new UsageError(`unexpected argument ${JSON.stringify(argv[i])}`);
    const [flag, inline] = argv[i].replace(/^--?/, "").split(/=(.*)/s, 2);
    switch (flag) {
      case "h":
      case "help":
        args.help = true;
        break;
      case "config":
        args.configPath = inline ?? argv[++i];
        if (!args.configPath) throw new UsageError("flag -config needs a path");
        break;
      case "check-config":
        args.checkOnly = true;
        break;
      case "healthcheck":
        args.healthcheck = true;
        break;
      case "version":
        args.version = true;
        break;
      default:
        throw new UsageError(`unknown flag ${argv[i]}`);
    }
  }
  if (!args.configPath && !args.help && !args.version) {
    throw new UsageError("no config file given (-config PATH)");
  }
  return args;
}

/**
 * Exit codes: 0 after a clean stop, 1 when the service cannot start (librdkafka missing included), 2 for a bad
 * command line or config.
 */
async function main(argv: string[]): Promise<number> {
  let args: Args;
  let config: Config;
  try {
    args = parseArgs(argv);
  } catch (err) {
    if (!(err instanceof UsageError)) throw err;
    console.error(`kafka-ambassador: ${err.message}\n${USAGE}`);
    return 2;
  }
  if (args.help) {
    console.log(USAGE);
    return 0;
  }
  // The commands that answer and exit tell whoever ran them what went wrong on stderr, wherever the config sends
  // the service's log.
  const answersAndExits = args.version || args.checkOnly || args.healthcheck;
  if (answersAndExits) setLogOutputs(["stderr"]);
  else holdLogLines(); // what reading the config logs goes where the config sends the log
  // The Go service ignores these (Go's runtime catches every signal it is not told to act on), and scripts may send
  // them (log rotation's USR1); Deno's default would end the process and lose what librdkafka holds.
  for (const ignored of IGNORED_SIGNALS) {
    Deno.addSignalListener(ignored, () => log("info", "signal ignored", { signal: ignored }));
  }
  // SIGHUP's default action ends the process, and starting (reading the config, recovering a large WAL) may take
  // a while: a reload sent then is done once the service runs. (The process exits by Deno.exit in every case.)
  let service: Service | undefined;
  let reloadWhenStarted = false;
  Deno.addSignalListener("SIGHUP", () => {
    if (service !== undefined) {
      reload(service);
    } else if (!reloadWhenStarted) {
      log("info", "SIGHUP while starting: the producer is replaced once started");
      reloadWhenStarted = true;
    }
  });
  try {
    if (args.version) {
      console.log(`kafka-ambassador ${VERSION} (librdkafka ${librdkafkaVersion()})`);
      return 0;
    }
    config = await loadConfig(args.configPath!, Deno.env.toObject());
    setLogLevel(config.global.log.level);
    try {
      if (args.checkOnly) checkLogOutputs(config.global.log.outputPaths);
      else if (!answersAndExits) setLogOutputs(config.global.log.outputPaths);
    } catch (err) {
      throw new ConfigError(`config: global.log.outputPaths: ${(err as Error).message}`);
    }
    // Nothing runs without librdkafka; loaded once its failure can be logged where the config says.
    librdkafkaVersion();
    // Only the monitoring listener's address and TLS: a health check answers 0 or 1 (Docker reserves 2), and the
    // tokens file or a librdkafka key are none of its business.
    if (args.healthcheck) return await healthcheck(config);
    const kafkaProblem = checkKafkaConfig(config.kafka);
    if (kafkaProblem) throw new ConfigError(`config: ${kafkaProblem}`);
    if (!config.kafka["bootstrap.servers"]?.trim()) {
      throw new ConfigError(
        "config: kafka.brokers: no broker given (set kafka.brokers or kafka.bootstrap.servers)",
      );
    }
    // Certificate, key and tokens files: a bad one is a config error (exit 2), found by --check-config too.
    loadSecurity(config);
  } catch (err) {
    if (err instanceof LibraryLoadError) {
      log("error", err.message);
      return 1;
    }
    if (!(err instanceof ConfigError)) throw err;
    log("error", args.healthcheck ? `healthcheck: ${err.message}` : err.message);
    return args.healthcheck ? 1 : 2;
  } finally {
    releaseLogLines(); // to standard output when the config named no outputs
  }
  if (args.checkOnly) {
    const problem = await checkKafkaProducer(config.kafka);
    if (problem !== null) {
      log("error", `config: kafka: ${problem}`);
      return 2;
    }
    const path = config.producer.wal.path;
    const walPath = noWalOnDisk(config.producer.wal) ? null : await Deno.stat(path).catch(() => null);
    if (walPath && !walPath.isDirectory) {
      log("error", `config: producer.wal.path: ${path} is not a directory`);
      return 2;
    }
    console.log(`config ok: ${args.configPath}`);
    return 0;
  }
  // The first SIGTERM or SIGINT stops the service; one asked for while starting (recovering a large WAL may take a
  // while) once it runs, as the signal's default action would end the process half way through, without a word.
  // A second signal means "now": the WAL keeps what it has synced. One that follows the first within a second is
  // the same request sent twice: a terminal's Ctrl-C reaches both `deno task` (which passes it on) and the
  // service, and `timeout` signals the process and its group.
  const { promise: signalled, resolve } = Promise.withResolvers<Deno.Signal>();
  let firstSignalAt: number | undefined;
  for (const signal of ["SIGTERM", "SIGINT"] as const) {
    Deno.addSignalListener(signal, () => {
      if (firstSignalAt === undefined) {
        firstSignalAt = performance.now();
        if (service === undefined) log("info", `${signal} while starting: stopping once started`);
        resolve(signal);
      } else if (performance.now() - firstSignalAt < REPEATED_SIGNAL_MS) {
        log("info", "signal repeated: already stopping", { signal });
      } else {
        log("warn", "second signal: exiting at once", { signal });
        Deno.exit(1);
      }
    });
  }
  try {
    service = await startService(config);
  } catch (err) {
    if (err instanceof ConfigError) {
      log("error", err.message);
      return 2;
    }
    log("error", "kafka-ambassador cannot run", { error: (err as Error).message });
    return 1;
  }
  if (reloadWhenStarted) reload(service);
  const signal = await signalled;
  await service.stop(signal);
  return 0;
}

/**
 * SIGHUP: log files opened again (a rotation renamed them; on failure the lines go where they went), then the
 * service's reload.
 */
function reload(service: Service): void {
  try {
    reopenLogOutputs();
  } catch (err) {
    log(
      "error",
      `SIGHUP: log files not opened again, lines go on where they went: ${(err as Error).message}`,
    );
  }
  service.reload();
}

/**
 * `--healthcheck`: exit 0 when the running service's /healthz (on the config's monitoring listener) answers 200,
 * else 1 with one line. For container health checks in images that have no shell and no curl.
 *
 * Over TLS it asks without verifying the server's certificate: it talks to its own port on loopback, sends nothing
 * secret and only reads a status, and the certificate names a host, not 127.0.0.1. With mTLS it presents the
 * listener's own certificate, which the listener accepts when one CA signed both (the usual case).
 */
async function healthcheck(config: Config): Promise<number> {
  const listen = config.server.monitoring.listen;
  if (!listen) {
    log("error", "healthcheck: server.monitoring.listen is not set");
    return 1;
  }
  const { hostname, port } = listenAddress(listen);
  const wildcard = hostname === "0.0.0.0" || hostname === "::";
  const hostPort = formatHostPort({ hostname: wildcard ? "127.0.0.1" : hostname, port });
  const tls = listenerTls(config, "monitoring");
  const url = `${tls ? "https" : "http"}://${hostPort}/healthz`;
  try {
    const status = await healthzStatus(url, tls);
    if (status === 200) return 0;
    log("error", `healthcheck: ${url} answered ${status}`);
  } catch (err) {
    log("error", `healthcheck: ${url}: ${(err as Error).message}`);
  }
  return 1;
}

/**
 * The status /healthz answers with. node:http and node:https rather than fetch: fetch goes through a proxy named
 * in HTTP_PROXY, and a container may have one that does not exempt loopback.
 */
function healthzStatus(url: string, tls: TlsMaterial | undefined): Promise<number> {
  const { promise, resolve, reject } = Promise.withResolvers<number>();
  const options = {
    timeout: HEALTHCHECK_TIMEOUT_MS,
    ...(tls && {
      rejectUnauthorized: false,
      // Unused unverified, but without a CA node:tls reads the system's, which needs --allow-sys (not shipped).
      ca: tls.ca ?? tls.cert,
      cert: tls.cert,
      key: tls.key,
    }),
  };
  const req = (tls === undefined ? http : https).get(url, options, (res) => {
    res.resume();
    resolve(res.statusCode ?? 0);
  });
  req.on("timeout", () => req.destroy(new Error(`no answer in ${HEALTHCHECK_TIMEOUT_MS} ms`)));
  req.on("error", reject);
  return promise;
}

/**
 * The arguments without a first one that names this program: the Go service's image had no entrypoint, so the
 * manifests written for it pass the binary's path first (`args: [/bin/kafka-ambassador, -config, PATH]`).
 */
export function programArgs(argv: readonly string[]): string[] {
  return argv.length > 0 && /(^|\/)kafka-ambassador$/.test(argv[0]) ? argv.slice(1) : [...argv];
}

if (import.meta.main) {
  const argv = programArgs(Deno.args);
  Deno.exit(argv[0] === "wal" ? await runWalTool(argv.slice(1)) : await main(argv));
}
