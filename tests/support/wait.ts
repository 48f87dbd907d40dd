/** Waiting in tests: one pause and one poll loop, so that every timeout names what it was waiting for. */

/** Resolves after `ms` of real time. */
export function delay(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

/** Lets every promise continuation and zero-delay timer that is ready run (a fake clock moves no real time). */
export function settle(): Promise<void> {
  return delay(0);
}

/**
 * Polls `cond` every `intervalMs` until it holds, or throws after `timeoutMs` naming `what`.
 * @example await waitFor("the WAL to drain", async () => (await svc.metric("wal_messages")) === 0, 30_000);
 */
export async function waitFor(
  what: string,
  cond: () => Promise<boolean> | boolean,
  timeoutMs = 60_000,
  intervalMs = 100,
): Promise<void> {
  const end = Date.now() + timeoutMs;
  while (!(await cond())) {
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await delay(intervalMs);
  }
}

/**
 * Waits until something accepts TCP connections on 127.0.0.1:`port`, for a server started as a child process.
 * @example await listening(port, 10_000);
 */
export async function listening(port: number, timeoutMs = 30_000): Promise<void> {
  await waitFor(`something to listen on port ${port}`, async () => {
    try {
      (await Deno.connect({ hostname: "127.0.0.1", port })).close();
      return true;
    } catch {
      return false;
    }
  }, timeoutMs);
}

/**
 * Resolves as `promise` does, or throws after `timeoutMs` naming `what`: a test fails instead of hanging.
 * @example const outcomes = await within("the batches' reports", Promise.all(batches), 20_000);
 */
export async function within<T>(what: string, promise: Promise<T>, timeoutMs = 60_000): Promise<T> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`timed out waiting for ${what}`)), timeoutMs);
  });
  try {
    return await Promise.race([promise, timeout]);
  } finally {
    clearTimeout(timer);
  }
}
