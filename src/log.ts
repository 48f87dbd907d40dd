/**
 * Structured logging: one JSON object per line, on standard output unless `global.log.outputPaths` says otherwise
 * (as the Go service's logger, zap). Never log message payloads or secrets.
 */

export type Level = "debug" | "info" | "warn" | "error";

const ORDER: Record<Level, number> = { debug: 10, info: 20, warn: 30, error: 40 };
/** Every level, lowest first. `KA_LOG_LEVEL` takes one of them (the config refuses anything else). */
export const LEVELS = Object.keys(ORDER) as Level[];

/** Whether `name` is a level. */
export function isLevel(name: string): name is Level {
  return Object.hasOwn(ORDER, name);
}

const fromEnv = Deno.env.get("KA_LOG_LEVEL")?.toLowerCase();
let threshold: number = ORDER[fromEnv !== undefined && isLevel(fromEnv) ? fromEnv : "info"];

/** Sets the lowest level that is written. */
export function setLogLevel(level: Level): void {
  threshold = ORDER[level];
}

/**
 * Writes one log line.
 * @example log("info", "http listening", { addr: "0.0.0.0:18080" })
 */
export function log(level: Level, msg: string, fields: Record<string, unknown> = {}): void {
  if (ORDER[level] < threshold && held === undefined) return;
  // `ts` in seconds since the epoch, as the Go service's logger (zap) wrote it: log pipelines parse it so.
  const line = JSON.stringify({ ts: Date.now() / 1000, level, msg, ...fields }, jsonSafe);
  const bytes = encoder.encode(`${line}\n`);
  if (held !== undefined) {
    if (held.length < MAX_HELD_LINES) held.push({ level, bytes });
    return;
  }
  write(bytes);
}

function write(bytes: Uint8Array): void {
  for (const output of outputs) {
    try {
      for (let done = 0; done < bytes.byteLength;) done += output.writeSync(bytes.subarray(done));
    } catch {
      // A log that cannot be written (a full disk, a closed pipe) must not stop the service; the line is lost.
    }
  }
}

const encoder = new TextEncoder();

type Output = { writeSync(bytes: Uint8Array): number };

/** Where lines are written; zap's default, standard output, until setLogOutputs. */
let outputs: readonly Output[] = [Deno.stdout];

/** Lines logged since holdLogLines, each with its level, for the outputs and the level set by then. */
let held: Array<{ level: Level; bytes: Uint8Array }> | undefined;
/** Reading a config logs a few lines; a bound all the same, as the lines wait in memory. */
const MAX_HELD_LINES = 1000;

/**
 * Keeps every later line (up to 1,000), of any level, until the next setLogOutputs writes those of the level then
 * set or above to the outputs it sets: what is logged while the config is read goes where, and as, the config says.
 */
export function holdLogLines(): void {
  held ??= [];
}

/**
 * Sends every later line, and those held, to each of `paths`, as zap's outputPaths: `stdout`, `stderr`, or a file
 * (a path, or a `file://` URL), opened for appending and created if missing. Throws, naming the path, when a file
 * cannot be opened; the outputs, and the lines held, are then unchanged.
 * @example setLogOutputs(["stdout", "/var/log/kafka-ambassador.log"])
 */
export function setLogOutputs(paths: readonly string[]): void {
  const opened: Output[] = [];
  for (const path of paths) {
    if (path === "stdout") opened.push(Deno.stdout);
    else if (path === "stderr") opened.push(Deno.stderr);
    else {
      const file = filePath(path);
      try {
        opened.push(Deno.openSync(file, { append: true, create: true }));
      } catch (err) {
        for (const done of opened) if (done instanceof Deno.FsFile) done.close();
        throw new Error(`cannot open ${file}: ${(err as Error).message}`);
      }
    }
  }
  if (opened.length === 0) throw new Error("no output given");
  for (const old of outputs) if (old instanceof Deno.FsFile && !opened.includes(old)) old.close();
  outputs = opened;
  outputPaths = [...paths];
  releaseLogLines();
}

/** The paths of the outputs setLogOutputs set, for reopenLogOutputs. */
let outputPaths: readonly string[] = ["stdout"];

/**
 * Opens the log files again at their paths (SIGHUP): after a rotation renamed one, lines go to a new file there,
 * not on into the renamed one. Throws as setLogOutputs would; the outputs are then unchanged.
 */
export function reopenLogOutputs(): void {
  setLogOutputs(outputPaths);
}

/** Writes the lines held since holdLogLines (of the level set or above) to the outputs as they are; holds no more. */
export function releaseLogLines(): void {
  const lines = held ?? [];
  held = undefined;
  for (const { level, bytes } of lines) if (ORDER[level] >= threshold) write(bytes);
}

/**
 * Throws as setLogOutputs would for `paths`, without creating a file: an existing one is opened for appending and
 * closed, a missing one needs its directory (whether that lets the service create the file is not known here).
 */
export function checkLogOutputs(paths: readonly string[]): void {
  if (paths.length === 0) throw new Error("no output given");
  for (const path of paths) {
    if (path === "stdout" || path === "stderr") continue;
    const file = filePath(path);
    try {
      Deno.openSync(file, { append: true }).close();
    } catch (err) {
      if (!(err instanceof Deno.errors.NotFound)) {
        throw new Error(`cannot open ${file}: ${(err as Error).message}`);
      }
      const dir = file.includes("/") ? file.slice(0, file.lastIndexOf("/")) || "/" : ".";
      if (!isDirectory(dir)) throw new Error(`cannot open ${file}: ${dir} is not a directory`);
    }
  }
}

function isDirectory(path: string): boolean {
  try {
    return Deno.statSync(path).isDirectory;
  } catch {
    return false;
  }
}

/** The file a `file://` URL names, or the path as given. */
function filePath(path: string): string {
  return path.startsWith("file://") ? decodeURIComponent(new URL(path).pathname) : path;
}

/** Values that no log line may show (passwords, private keys), longest first so that none is left in part. */
let secrets: string[] = [];

/**
 * The shortest secret that is masked: a shorter one ("kafka") is also a common piece of text, and masking it
 * everywhere would garble every line and give it away.
 */
export const MIN_REDACTED_LENGTH = 8;

/**
 * Makes every later log line show `[redacted]` wherever `secret` would appear, in the message and in any string
 * field, however it got there (an error text, a librdkafka log line). The config registers its secret values.
 * Returns false, masking nothing, for a secret shorter than MIN_REDACTED_LENGTH.
 */
export function redactInLogs(secret: string): boolean {
  if (secret.length < MIN_REDACTED_LENGTH) return false;
  if (!secrets.includes(secret)) secrets = [...secrets, secret].sort((a, b) => b.length - a.length);
  return true;
}

function redact(text: string): string {
  for (const secret of secrets) {
    if (text.includes(secret)) text = text.replaceAll(secret, "[redacted]");
  }
  return text;
}

function jsonSafe(_key: string, value: unknown): unknown {
  if (typeof value === "string") return secrets.length === 0 ? value : redact(value);
  if (typeof value === "bigint") return value.toString();
  if (value instanceof Error) return jsonSafe(_key, value.message);
  return value;
}

interface Burst {
  /** Lines held back in the current window. */
  suppressed: number;
  last: { level: Level; msg: string; fields: Record<string, unknown> };
  /** When the last line held back came (seconds since the epoch, as `ts`). */
  lastTs: number;
}

const bursts = new Map<string, Burst>();

/**
 * Writes a line that may repeat many times a second (a failing disk, a client retrying in a loop): the first of
 * a burst at once, then at most one line per `windowMs` for the same `key`, with the number of lines held back
 * in `repeated`, the fields of the last of them, and when it came (`last_ts`; the line's own `ts` is the end of
 * the window). The key groups the lines; usually it is `msg` itself.
 * @example logRepeated("wal write failed", "error", "wal write failed", { error: "No space left on device" })
 */
export function logRepeated(
  key: string,
  level: Level,
  msg: string,
  fields: Record<string, unknown> = {},
  windowMs = 10_000,
): void {
  const burst = bursts.get(key);
  if (burst !== undefined) {
    burst.suppressed++;
    burst.last = { level, msg, fields };
    burst.lastTs = Date.now() / 1000;
    return;
  }
  log(level, msg, fields);
  const fresh: Burst = { suppressed: 0, last: { level, msg, fields }, lastTs: 0 };
  bursts.set(key, fresh);
  const endWindow = (): void => {
    if (fresh.suppressed === 0) {
      bursts.delete(key);
      return;
    }
    const last = fresh.last;
    log(last.level, last.msg, {
      ...last.fields,
      repeated: fresh.suppressed,
      window_ms: windowMs,
      last_ts: fresh.lastTs,
    });
    fresh.suppressed = 0;
    Deno.unrefTimer(setTimeout(endWindow, windowMs));
  };
  Deno.unrefTimer(setTimeout(endWindow, windowMs));
}
