/** The service's log lines (JSON on stderr through console.error), captured in-process for a test. */

/** Runs `fn` with console.error captured; returns the JSON lines written, parsed. */
export async function captured(fn: () => Promise<void> | void): Promise<Array<Record<string, unknown>>> {
  const lines: string[] = [];
  const original = console.error;
  console.error = (line: string) => lines.push(String(line));
  try {
    await fn();
  } finally {
    console.error = original;
  }
  return lines.map((l) => JSON.parse(l));
}
