/**
 * The lock of a WAL directory: exclusive advisory locks (flock) on `<dir>/LOCK` and on the directory itself, held
 * by the one process that uses the WAL, the service or the `wal` tool. The kernel drops them when the process
 * exits, however it exits, so a killed process never leaves a stale lock behind; the LOCK file itself stays and
 * means nothing on its own. The directory's lock holds even when LOCK is deleted (a new LOCK would be another
 * file, free to lock); the file's is kept for versions that locked only it.
 * @example
 * using _lock = await lockWalDirectory("/var/lib/ka/wal");
 */

/** The lock file's name inside the WAL directory. */
export const LOCK_FILE = "LOCK";

/** Thrown when another process holds the WAL directory. */
export class WalInUseError extends Error {
  constructor(readonly dir: string) {
    super(`wal: ${dir} is in use by another process`);
    this.name = "WalInUseError";
  }
}

/** A held lock; disposing of it (or exiting) releases it. */
export interface WalLock extends Disposable {
  release(): void;
}

/**
 * Takes the lock of `dir` without waiting, creating the directory (0700, as the WAL would) when missing.
 * Throws WalInUseError when another process holds it, or an Error naming the directory when it cannot be used.
 * `readOnly` (for inspecting a WAL) creates nothing: without a LOCK file no process has used the directory as a
 * WAL, so there is nothing to take (and a read-only copy, or one another user owns, can be read).
 */
export async function lockWalDirectory(dir: string, opts: { readOnly?: boolean } = {}): Promise<WalLock> {
  const info = await Deno.stat(dir).catch((err) => {
    if (err instanceof Deno.errors.NotFound && !opts.readOnly) return null;
    throw new Error(`wal: directory ${dir}: ${(err as Error).message}`);
  });
  if (info !== null && !info.isDirectory) throw new Error(`wal: ${dir} is not a directory`);
  if (info === null) {
    await Deno.mkdir(dir, { recursive: true, mode: 0o700 }).catch((err) => {
      throw new Error(`wal: directory ${dir}: cannot create it: ${(err as Error).message}`);
    });
  }
  let file: Deno.FsFile;
  try {
    const path = `${dir}/${LOCK_FILE}`;
    // Created if missing, then held open read-only: flock needs no write access, and a file open for writing
    // would keep the file system from being remounted read-only (the WAL handles that, and tests it).
    const opened = await Deno.open(path, { read: true }).catch(async (err) => {
      if (!(err instanceof Deno.errors.NotFound)) throw err;
      if (opts.readOnly) return null;
      (await Deno.open(path, { write: true, create: true, mode: 0o600 })).close();
      return await Deno.open(path, { read: true });
    });
    if (opened === null) return { release: () => {}, [Symbol.dispose]: () => {} };
    file = opened;
  } catch (err) {
    const verb = opts.readOnly ? "open" : "create";
    throw new Error(`wal: directory ${dir}: cannot ${verb} ${LOCK_FILE}: ${(err as Error).message}`);
  }
  await holdExclusive(file, dir, LOCK_FILE);
  let directory: Deno.FsFile;
  try {
    directory = await Deno.open(dir, { read: true }).catch((err) => {
      throw new Error(`wal: directory ${dir}: cannot lock it: ${(err as Error).message}`);
    });
    await holdExclusive(directory, dir, "it");
  } catch (err) {
    file.close();
    throw err;
  }
  let held = true;
  const release = () => {
    if (!held) return;
    held = false;
    // Closing the descriptors drops the flocks.
    directory.close();
    file.close();
  };
  return { release, [Symbol.dispose]: release };
}

/** Takes the exclusive flock of `file`, or closes it and throws: WalInUseError when another process holds it. */
async function holdExclusive(file: Deno.FsFile, dir: string, what: string): Promise<void> {
  let locked: boolean;
  try {
    locked = await file.tryLock(true);
  } catch (err) {
    file.close();
    throw new Error(`wal: directory ${dir}: cannot lock ${what}: ${(err as Error).message}`);
  }
  if (!locked) {
    file.close();
    throw new WalInUseError(dir);
  }
}
