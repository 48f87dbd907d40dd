/**
 * `kafka-ambassador wal <command> -config PATH`: inspects or drains the WAL of a stopped service. The WAL
 * directory is the config's `producer.wal.path`; each command holds the directory's lock while it runs, so it
 * refuses a WAL that a running service uses (and a service cannot start on it meanwhile).
 */
import { type Config, ConfigError, loadConfig, noWalOnDisk } from "../config.ts";
import { parseDuration } from "../duration.ts";
import { checkKafkaConfig } from "../kafka/producer.ts";
import { isLevel, setLogLevel, setLogOutputs } from "../log.ts";
import { lockWalDirectory, WalInUseError } from "../wal/lock.ts";
import { EXIT } from "./exit.ts";
import { exportCommand } from "./export.ts";
import { replayCommand } from "./replay.ts";
import { statsCommand } from "./stats.ts";
import { verifyCommand } from "./verify.ts";

export const WAL_USAGE = `usage: kafka-ambassador wal <command> -config PATH [options]

Works on the WAL (producer.wal.path) of a stopped service; refuses one that a running service holds.

commands:
  stats    records waiting per topic, oldest record, bytes, segments, damaged lines   [--json]
  verify   checks every line's checksum; names each damaged line
  export   the records waiting, as NDJSON on stdout (the HTTP batch record shape)    [--topic T]
  replay   sends the records waiting to Kafka (kafka.brokers), acking each delivered [--timeout 30s]

options:
  --json         stats as one JSON object
  --topic T      export only the records of topic T
  --timeout D    replay gives up when Kafka acknowledged nothing for D (Go-style duration; default 30s)
  -h, --help     this text

exit codes: 0 done, 1 failed, 2 bad command line or config, 3 damaged lines (verify),
            4 the WAL is in use by another process, 5 records remain (replay)`;

const COMMANDS = ["stats", "verify", "export", "replay"] as const;
type Command = typeof COMMANDS[number];

interface WalArgs {
  command: Command;
  configPath: string;
  json: boolean;
  topic?: string;
  idleTimeoutMs: number;
}

/** Thrown for a bad command line: the message is printed with the usage. */
class UsageError extends Error {}

/** Parses what follows `wal`; null for --help. Flags are written `-x v`, `--x v` or `--x=v`, as in main.ts. */
export function parseWalArgs(argv: string[]): WalArgs | null {
  let command: Command | undefined;
  let configPath: string | undefined;
  let json = false;
  let topic: string | undefined;
  let idleTimeoutMs = 30_000;
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i];
    if (!arg.startsWith("-")) {
      if (command !== undefined) throw new UsageError(`unexpected argument ${JSON.stringify(arg)}`);
      if (!(COMMANDS as readonly string[]).includes(arg)) {
        throw new UsageError(`unknown command ${JSON.stringify(arg)}`);
      }
      command = arg as Command;
      continue;
    }
    const [flag, inline] = arg.replace(/^--?/, "").split(/=(.*)/s, 2);
    const value = (): string => {
      const v = inline ?? argv[++i];
      if (v === undefined || v === "") throw new UsageError(`flag ${arg} needs a value`);
      return v;
    };
    switch (flag) {
      case "h":
      case "help":
        return null;
      case "config":
        configPath = value();
        break;
      case "json":
        json = true;
        break;
      case "topic":
        topic = value();
        break;
      case "timeout": {
        const v = value();
        try {
          idleTimeoutMs = parseDuration(v);
        } catch (err) {
          throw new UsageError(`--timeout ${v}: ${(err as Error).message}`);
        }
        if (!(idleTimeoutMs > 0)) throw new UsageError(`--timeout must be positive, got ${v}`);
        break;
      }
      default:
        throw new UsageError(`unknown flag ${arg}`);
    }
  }
  if (command === undefined) throw new UsageError("no command given");
  if (configPath === undefined) throw new UsageError("no config file given (-config PATH)");
  const onlyFor: Array<[boolean, string, Command]> = [
    [json, "--json", "stats"],
    [topic !== undefined, "--topic", "export"],
  ];
  for (const [given, flagName, owner] of onlyFor) {
    if (given && command !== owner) throw new UsageError(`${flagName} is an option of wal ${owner} only`);
  }
  return { command, configPath, json, topic, idleTimeoutMs };
}

/** Runs `wal ...` with the arguments after `wal`; returns the exit code. */
export async function runWalTool(argv: string[]): Promise<number> {
  // Only problems are logged, on stderr whatever the config says of the service's log: the command's own output
  // (export's records, say) is its answer, on stdout.
  const level = Deno.env.get("KA_LOG_LEVEL")?.toLowerCase();
  setLogLevel(level !== undefined && isLevel(level) ? level : "warn");
  setLogOutputs(["stderr"]);
  let args: WalArgs | null;
  let config: Config;
  try {
    args = parseWalArgs(argv);
    if (args === null) {
      console.log(WAL_USAGE);
      return EXIT.ok;
    }
    config = await loadConfig(args.configPath, Deno.env.toObject());
    const noWal = noWalOnDisk(config.producer.wal);
    if (noWal !== undefined) throw new ConfigError(`config: producer.wal: no WAL on disk (${noWal})`);
    if (args.command === "replay") {
      const problem = checkKafkaConfig(config.kafka);
      if (problem) throw new ConfigError(`config: ${problem}`);
      if (!config.kafka["bootstrap.servers"]?.trim()) {
        throw new ConfigError("config: kafka.brokers: no broker given");
      }
    }
  } catch (err) {
    if (!(err instanceof UsageError || err instanceof ConfigError)) throw err;
    console.error(`wal: ${err.message}`);
    if (err instanceof UsageError) console.error(WAL_USAGE);
    return EXIT.usage;
  }
  const dir = config.producer.wal.path;
  try {
    // A directory that is not there is reported, not created.
    const { uid: owner } = await Deno.stat(dir);
    const replay = args.command === "replay";
    if (replay) await refuseAnotherUsersWal(dir, owner);
    using _lock = await lockWalDirectory(dir, { readOnly: !replay });
    switch (args.command) {
      case "stats":
        return await statsCommand(dir, { json: args.json });
      case "verify":
        return await verifyCommand(dir);
      case "export":
        return await exportCommand(dir, { topic: args.topic });
      case "replay":
        return await replayCommand(config, { idleTimeoutMs: args.idleTimeoutMs });
    }
  } catch (err) {
    if (err instanceof WalInUseError) {
      console.error(err.message);
      return EXIT.inUse;
    }
    const message = (err as Error).message;
    console.error(message.startsWith("wal") ? message : `wal: ${dir}: ${message}`);
    return EXIT.failed;
  }
}

/**
 * replay writes into the WAL (ack files, LOCK): as root in a directory another user owns (the service's), those
 * files would be root's, and the service, running as that user, could not read them at its next start.
 */
async function refuseAnotherUsersWal(dir: string, owner: number | null): Promise<void> {
  if (owner === null || owner === 0) return;
  // The process's own uid, as the owner of /proc/self: Deno.uid() would need --allow-sys, which the service
  // does not run with (elsewhere than Linux there is no /proc, and no check).
  const self = await Deno.stat("/proc/self").then((info) => info.uid, () => null);
  if (self !== 0) return;
  throw new Error(
    `wal: ${dir} belongs to uid ${owner}; run wal replay as that user (e.g. sudo -u '#${owner}' ...): ` +
      "files root writes there could not be read by the service",
  );
}
