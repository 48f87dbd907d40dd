/** What a finished command printed, and how it ended. */
export interface CommandResult {
  /** Exit code; -1 when it was killed for running past its time limit. */
  code: number;
  stdout: Uint8Array;
  stderr: string;
  timedOut: boolean;
}

/** Options for {@linkcode runCommand}. */
export interface RunOptions {
  /** Kill the command (SIGKILL) after this long. */
  timeoutMs: number;
  /** Bytes or text written to the command's standard input, which is then closed. */
  stdin?: Uint8Array | string;
  /** Variables added to the environment the command inherits. */
  env?: Record<string, string>;
}

/**
 * Runs a command to completion with a time limit, collecting its output.
 *
 * @example
 * const r = await runCommand("kcat", ["-L", "-b", "127.0.0.1:9092"], { timeoutMs: 5_000 });
 */
export async function runCommand(cmd: string, args: string[], opts: RunOptions): Promise<CommandResult> {
  const child = new Deno.Command(cmd, {
    args,
    env: opts.env,
    stdin: opts.stdin === undefined ? "null" : "piped",
    stdout: "piped",
    stderr: "piped",
  }).spawn();
  let timedOut = false;
  const timer = setTimeout(() => {
    timedOut = true;
    try {
      child.kill("SIGKILL");
    } catch {
      // it exited in the meantime
    }
  }, opts.timeoutMs);
  try {
    if (opts.stdin !== undefined) {
      const input = typeof opts.stdin === "string" ? new TextEncoder().encode(opts.stdin) : opts.stdin;
      const writer = child.stdin.getWriter();
      try {
        await writer.write(input);
        await writer.close();
      } catch {
        // the command exited without reading all of its input; its exit code tells the rest
      }
    }
    const out = await child.output();
    return {
      code: timedOut ? -1 : out.code,
      stdout: out.stdout,
      stderr: new TextDecoder().decode(out.stderr),
      timedOut,
    };
  } finally {
    clearTimeout(timer);
  }
}
