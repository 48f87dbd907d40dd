/** The service's log lines (JSON, on standard output: global.log.outputPaths' default), captured in-process. */

/**
 * Starts capturing what is written to Deno.stdout: `lines` holds the lines written so far (unparsed), until
 * `stop()` puts Deno.stdout back.
 */
export function capturing(): { lines: string[]; stop(): void } {
  const lines: string[] = [];
  let partial = "";
  const decoder = new TextDecoder();
  const stdout = Deno.stdout as { writeSync(bytes: Uint8Array): number };
  const original = stdout.writeSync;
  stdout.writeSync = (bytes: Uint8Array) => {
    const parts = (partial + decoder.decode(bytes, { stream: true })).split("\n");
    partial = parts.pop()!;
    lines.push(...parts);
    return bytes.byteLength;
  };
  return { lines, stop: () => void (stdout.writeSync = original) };
}

/** Runs `fn` with what is written to Deno.stdout captured; returns the JSON lines written, parsed. */
export async function captured(fn: () => Promise<void> | void): Promise<Array<Record<string, unknown>>> {
  const capture = capturing();
  try {
    await fn();
  } finally {
    capture.stop();
  }
  return capture.lines.filter((line) => line !== "").map((line) => JSON.parse(line));
}
