/** kafka-ambassador: the command line, the signals and the exit codes; src/service.ts does the rest. */
import { type Config, ConfigError, loadConfig } from "./config.ts";
import { checkKafkaConfig, librdkafkaVersion } from "./kafka/producer.ts";
import { log } from "./log.ts";
import { loadSecurity } from "./server/security.ts";
import { type Service, startService } from "./service.ts";
import { VERSION } from "./version.ts";

const USAGE = `usage: kafka-ambassador -config PATH [--check-config]
       kafka-ambassador --version`;

interface Args {
  configPath?: string;
  checkOnly: boolean;
  version: boolean;
}

/** Parses Go-style (`-config x`) and GNU-style (`--config=x`) flags. */
export function parseArgs(argv: string[]): Args {
  const args: Args = { checkOnly: false, version: false };
  for (let i = 0; i < argv.length; i++) {
    const [flag, inline] = argv[i].replace(/^--?/, "").split(/=(.*)/s, 2);
    switch (flag) {
      case "config":
        args.configPath = inline ?? argv[++i];
        if (!args.configPath) throw new ConfigError("flag -config needs a path");
        break;
      case "check-config":
        args.checkOnly = true;
        break;
      case "version":
        args.version = true;
        break;
      default:
        throw new ConfigError(`unknown flag ${argv[i]}\n${USAGE}`);
    }
  }
  return args;
}

/** Exit codes: 0 after a clean stop, 1 when the service cannot start, 2 for a bad command line or config. */
async function main(): Promise<number> {
  let args: Args;
  let config: Config;
  try {
    args = parseArgs(Deno.args);
    if (args.version) {
      console.log(`kafka-ambassador ${VERSION} (librdkafka ${librdkafkaVersion()})`);
      return 0;
    }
    if (!args.configPath) throw new ConfigError(`no config file given\n${USAGE}`);
    config = await loadConfig(args.configPath, Deno.env.toObject());
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
    if (!(err instanceof ConfigError)) throw err;
    log("error", err.message);
    return 2;
  }
  if (args.checkOnly) {
    console.log(`config ok: ${args.configPath}`);
    return 0;
  }
  let service: Service;
  try {
    service = await startService(config);
  } catch (err) {
    log("error", "kafka-ambassador cannot run", { error: (err as Error).message });
    return 1;
  }
  Deno.addSignalListener("SIGHUP", () => service.reload());
  const { promise: signalled, resolve } = Promise.withResolvers<Deno.Signal>();
  for (const signal of ["SIGTERM", "SIGINT"] as const) {
    Deno.addSignalListener(signal, () => resolve(signal));
  }
  const signal = await signalled;
  // From here on a second signal means "now": the WAL keeps what it has synced.
  for (const again of ["SIGTERM", "SIGINT"] as const) {
    Deno.addSignalListener(again, () => {
      log("warn", "second signal: exiting at once", { signal: again });
      Deno.exit(1);
    });
  }
  await service.stop(signal);
  return 0;
}

if (import.meta.main) Deno.exit(await main());
