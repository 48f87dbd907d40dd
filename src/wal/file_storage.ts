/** Segment storage on disk: `00000042.wal` segments, `00000042.acks` ack lists, files 0600 in a 0700 directory. */
import { log } from "../log.ts";
import type { Message } from "../message.ts";
import * as metrics from "../metrics.ts";
import { segmentName } from "./segment_index.ts";
import type { Recovered, SegmentStorage } from "./storage.ts";
import { nextIdOf, recoverDirectory, walFiles } from "./recovery.ts";
import { denoFs, type WalFile, type WalFileInfo, type WalFs } from "./fs.ts";

/** An open ack list and whether it has writes not yet synced. */
interface AckList {
  file: WalFile;
  size: number;
  dirty: boolean;
  /** A failed append could not be undone: further ids would be glued to a partial line. */
  broken: boolean;
}

/** Segment files in one directory. Segments are only ever appended to by the run that created them. */
export class FileStorage implements SegmentStorage {
  readonly #dir: string;
  readonly #fs: WalFs;
  readonly #writers = new Map<number, WalFile>();
  readonly #acks = new Map<number, AckList>();
  /** Files were created since the directory was last synced. */
  #dirDirty = false;

  private constructor(dir: string, fs: WalFs) {
    this.#dir = dir;
    this.#fs = fs;
  }

  /**
   * Creates the directory if needed (0700), checks that it is private and writable, and recovers what is in it
   * (counting pending records per `tagOf`, see recoverDirectory).
   * Throws a one-line error naming the directory when it cannot be used.
   */
  static async open(
    dir: string,
    fs: WalFs = denoFs,
    tagOf?: (message: Message) => string,
  ): Promise<{ storage: FileStorage; recovered: Recovered }> {
    let info: WalFileInfo | null = null;
    try {
      info = await fs.stat(dir);
    } catch (err) {
      if (!(err instanceof Deno.errors.NotFound)) {
        throw new Error(`wal: directory ${dir}: ${(err as Error).message}`);
      }
    }
    if (info === null) {
      await fs.mkdir(dir, { recursive: true, mode: 0o700 });
      await fs.chmod(dir, 0o700);
    } else {
      if (!info.isDirectory) throw new Error(`wal: ${dir} is not a directory`);
      checkMode(dir, info.mode);
    }
    const unwritable = await checkWritable(dir, fs);
    const recovered = await recoverDirectory(dir, fs, tagOf);
    return { storage: new FileStorage(dir, fs), recovered: { ...recovered, unwritable } };
  }

  #path(name: string): string {
    return `${this.#dir}/${name}`;
  }

  async append(seq: number, data: Uint8Array): Promise<void> {
    let file = this.#writers.get(seq);
    if (!file) {
      file = await this.#fs.open(this.#path(walFiles.segment(seq)), {
        createNew: true,
        write: true,
        append: true,
        mode: 0o600,
      });
      this.#writers.set(seq, file);
      // The new name must survive a power loss as much as the data in it.
      await this.#syncDir();
    }
    writeAllSync(file, data);
    await file.syncData();
    metrics.walFsyncs.inc();
  }

  async truncate(seq: number, size: number): Promise<void> {
    // Without a writer this run never created the file (the name may be someone else's): nothing to cut.
    const file = this.#writers.get(seq);
    if (!file) return;
    await file.truncate(size);
    // The cut lines are written again elsewhere under the same ids: a crash must not find them here too.
    await file.syncData();
  }

  async read(seq: number, offset: number, length: number): Promise<Uint8Array> {
    // A handle per read: concurrent checkouts must not share a file position.
    using file = await this.#fs.open(this.#path(walFiles.segment(seq)), { read: true });
    await file.seek(offset, Deno.SeekMode.Start);
    const out = new Uint8Array(length);
    for (let filled = 0; filled < length;) {
      const n = await file.read(out.subarray(filled));
      if (n === null) {
        throw new Error(
          `wal: segment ${segmentName(seq)}: ends at ${offset + filled}, expected ${offset + length}`,
        );
      }
      filled += n;
    }
    return out;
  }

  async appendAcks(seq: number, ids: number[]): Promise<void> {
    let list = this.#acks.get(seq);
    if (!list) {
      // A segment of this run has no ack list yet: an existing name is not ours, and is not followed.
      const fresh = this.#writers.has(seq);
      const file = await this.#fs.open(this.#path(walFiles.acks(seq)), {
        create: !fresh,
        createNew: fresh,
        write: true,
        append: true,
        mode: 0o600,
      });
      list = { file, size: (await file.stat()).size, dirty: false, broken: false };
      this.#acks.set(seq, list);
      this.#dirDirty = true;
    }
    if (list.broken) {
      throw new Error(`wal: segment ${segmentName(seq)}: ack list unusable after a failed write`);
    }
    const data = new TextEncoder().encode(`${ids.join("\n")}\n`);
    try {
      writeAllSync(list.file, data);
    } catch (err) {
      await list.file.truncate(list.size).catch(() => {
        list.broken = true;
      });
      throw err;
    }
    list.size += data.length;
    list.dirty = true;
  }

  async syncAcks(): Promise<void> {
    for (const list of this.#acks.values()) {
      if (!list.dirty) continue;
      await list.file.syncData();
      list.dirty = false;
    }
    if (this.#dirDirty) await this.#syncDir();
  }

  probe(): Promise<void> {
    return writeProbe(this.#dir, this.#fs);
  }

  async remove(seq: number): Promise<void> {
    this.#closeFiles(seq);
    // The segment goes first, and its unlink is made durable before the ack list's: an ack list left alone is
    // cleaned up at start-up, but a segment left without its acks (unlinks not synced may reach the disk in any
    // order, or not at all) would be replayed again, acks that `sync` called durable included.
    await removeOwn(this.#fs, this.#path(walFiles.segment(seq)));
    await this.#syncDir();
    await removeOwn(this.#fs, this.#path(walFiles.acks(seq)));
  }

  async quarantine(seq: number): Promise<void> {
    this.#closeFiles(seq);
    await this.#fs.rename(this.#path(walFiles.segment(seq)), this.#path(walFiles.corrupt(seq)));
    // As in remove: the segment is out of the way for good before its acks go.
    await this.#syncDir();
    await removeIfExists(this.#fs, this.#path(walFiles.acks(seq)));
    log(
      "warn",
      `wal: segment ${segmentName(seq)}: damaged lines kept for inspection as ${walFiles.corrupt(seq)}`,
      {
        segment: segmentName(seq),
      },
    );
  }

  async saveNextId(nextId: number): Promise<void> {
    const name = walFiles.nextId(nextId);
    try {
      const file = await this.#fs.open(this.#path(name), { createNew: true, write: true, mode: 0o600 });
      file.close();
    } catch (err) {
      // Saved before with the same id; but a name taken by anything else (a symlink, say) is not ours.
      if (!(err instanceof Deno.errors.AlreadyExists) || !(await this.#fs.lstat(this.#path(name))).isFile) {
        throw err;
      }
    }
    await this.#syncDir();
    // Older names are now redundant (the highest counts): removed without a sync.
    for await (const entry of this.#fs.readDir(this.#dir)) {
      const id = nextIdOf(entry.name);
      if ((id !== null && id < nextId) || entry.name === walFiles.legacyNextId) {
        await removeOwn(this.#fs, this.#path(entry.name));
      }
    }
  }

  async close(): Promise<void> {
    try {
      await this.syncAcks();
    } finally {
      for (const seq of [...this.#writers.keys(), ...this.#acks.keys()]) this.#closeFiles(seq);
    }
  }

  #closeFiles(seq: number): void {
    this.#writers.get(seq)?.close();
    this.#writers.delete(seq);
    this.#acks.get(seq)?.file.close();
    this.#acks.delete(seq);
  }

  async #syncDir(): Promise<void> {
    await this.#fs.syncDir(this.#dir);
    this.#dirDirty = false;
  }
}

/**
 * The commit's appends block the thread: they only copy into the page cache (the fdatasync after them is what waits
 * for the disk, and stays async). An async write costs a hand-off to a blocking-pool thread and an event-loop turn
 * to hear back, and each commit waits for it.
 */
function writeAllSync(file: WalFile, data: Uint8Array): void {
  for (let written = 0; written < data.length;) written += file.writeSync(data.subarray(written));
}

async function removeIfExists(fs: WalFs, path: string): Promise<void> {
  try {
    await fs.remove(path);
  } catch (err) {
    if (!(err instanceof Deno.errors.NotFound)) throw err;
  }
}

/** Removes a regular file; anything else under a WAL name (a symlink, say) was not made by the WAL and stays. */
async function removeOwn(fs: WalFs, path: string): Promise<void> {
  let info: WalFileInfo;
  try {
    info = await fs.lstat(path);
  } catch (err) {
    if (err instanceof Deno.errors.NotFound) return;
    throw err;
  }
  if (info.isFile) await removeIfExists(fs, path);
}

/**
 * Refuses a directory every user may write to; warns when others have any access. Not for its group's: Kubernetes
 * gives a volume to the pod's fsGroup (mode 2770), and a group is granted on purpose.
 */
function checkMode(dir: string, mode: number | null): void {
  if (mode === null) return;
  const octal = (mode & 0o7777).toString(8).padStart(4, "0");
  if (mode & 0o002) {
    throw new Error(`wal: directory ${dir} is writable by every user (mode ${octal}); make it 0700`);
  }
  if (mode & 0o007) {
    log("warn", `wal: directory ${dir} is open to other users (mode ${octal}); 0700 is recommended`, {
      path: dir,
    });
  }
}

/** Creates, writes, fdatasyncs and removes the probe file: the directory takes durable writes now. */
async function writeProbe(dir: string, fs: WalFs): Promise<void> {
  const path = `${dir}/${walFiles.probe}`;
  try {
    await removeIfExists(fs, path);
    {
      using file = await fs.open(path, { createNew: true, write: true, mode: 0o600 });
      writeAllSync(file, new TextEncoder().encode("probe\n"));
      await file.syncData();
    }
    await fs.remove(path);
  } catch (err) {
    await removeIfExists(fs, path).catch(() => {});
    throw err;
  }
}

/**
 * Writes the probe file, so that a directory the WAL cannot use stops start-up. Returns why writing cannot start
 * when the disk is full, else undefined.
 */
async function checkWritable(dir: string, fs: WalFs): Promise<string | undefined> {
  try {
    await writeProbe(dir, fs);
    return undefined;
  } catch (err) {
    if (!isOutOfSpace(err)) {
      throw new Error(`wal: directory ${dir} is not writable: ${(err as Error).message}`);
    }
    // A full disk is no reason to stop: only a running service can free room (replay delivers records, their
    // segments are deleted). The WAL starts with writing stopped, so that it takes nothing it cannot keep.
    log("warn", `wal: directory ${dir} is full; starting with writing stopped until there is room`, {
      path: dir,
    });
    return `wal: directory ${dir} is full: ${(err as Error).message}`;
  }
}

/** ENOSPC or EDQUOT: the disk or the quota is full. */
function isOutOfSpace(err: unknown): boolean {
  const code = (err as { code?: unknown }).code;
  return code === "ENOSPC" || code === "EDQUOT";
}
