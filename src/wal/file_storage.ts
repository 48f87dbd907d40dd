/** Segment storage on disk: `00000042.wal` segments, `00000042.acks` ack lists, files 0600 in a 0700 directory. */
import { log } from "../log.ts";
import * as metrics from "../metrics.ts";
import { segmentName } from "./segment_index.ts";
import type { Recovered, SegmentStorage } from "./storage.ts";
import { recoverDirectory, walFiles } from "./recovery.ts";

/** An open ack list and whether it has writes not yet synced. */
interface AckList {
  file: Deno.FsFile;
  size: number;
  dirty: boolean;
  /** A failed append could not be undone: further ids would be glued to a partial line. */
  broken: boolean;
}

/** Segment files in one directory. Segments are only ever appended to by the run that created them. */
export class FileStorage implements SegmentStorage {
  readonly #dir: string;
  readonly #writers = new Map<number, Deno.FsFile>();
  readonly #acks = new Map<number, AckList>();
  /** Files were created since the directory was last synced. */
  #dirDirty = false;

  private constructor(dir: string) {
    this.#dir = dir;
  }

  /** Creates the directory if needed (0700) and recovers what is in it. */
  static async open(dir: string): Promise<{ storage: FileStorage; recovered: Recovered }> {
    try {
      const info = await Deno.stat(dir);
      if (!info.isDirectory) throw new Error(`wal: ${dir} is not a directory`);
    } catch (err) {
      if (!(err instanceof Deno.errors.NotFound)) throw err;
      await Deno.mkdir(dir, { recursive: true, mode: 0o700 });
      await Deno.chmod(dir, 0o700);
    }
    return { storage: new FileStorage(dir), recovered: await recoverDirectory(dir) };
  }

  #path(name: string): string {
    return `${this.#dir}/${name}`;
  }

  async append(seq: number, data: Uint8Array): Promise<void> {
    let file = this.#writers.get(seq);
    if (!file) {
      file = await Deno.open(this.#path(walFiles.segment(seq)), {
        createNew: true,
        write: true,
        append: true,
        mode: 0o600,
      });
      this.#writers.set(seq, file);
      // The new name must survive a power loss as much as the data in it.
      await this.#syncDir();
    }
    await writeAll(file, data);
    await file.syncData();
    metrics.walFsyncs.inc();
  }

  async truncate(seq: number, size: number): Promise<void> {
    const file = this.#writers.get(seq);
    if (!file) throw new Error(`wal: segment ${segmentName(seq)}: not open for writing`);
    await file.truncate(size);
  }

  async read(seq: number, offset: number, length: number): Promise<Uint8Array> {
    // A handle per read: concurrent checkouts must not share a file position.
    using file = await Deno.open(this.#path(walFiles.segment(seq)), { read: true });
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
      const file = await Deno.open(this.#path(walFiles.acks(seq)), {
        create: true,
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
      await writeAll(list.file, data);
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

  async remove(seq: number): Promise<void> {
    this.#closeFiles(seq);
    // The segment goes first: an ack list left alone is cleaned up at start-up, a segment left without its acks
    // would be replayed again.
    await removeIfExists(this.#path(walFiles.segment(seq)));
    await removeIfExists(this.#path(walFiles.acks(seq)));
  }

  async quarantine(seq: number): Promise<void> {
    this.#closeFiles(seq);
    await Deno.rename(this.#path(walFiles.segment(seq)), this.#path(walFiles.corrupt(seq)));
    await removeIfExists(this.#path(walFiles.acks(seq)));
    log(
      "warn",
      `wal: segment ${segmentName(seq)}: damaged lines kept for inspection as ${walFiles.corrupt(seq)}`,
      {
        segment: segmentName(seq),
      },
    );
  }

  async saveNextId(nextId: number): Promise<void> {
    const temp = this.#path(walFiles.nextIdTemp);
    {
      using file = await Deno.open(temp, { create: true, write: true, truncate: true, mode: 0o600 });
      await writeAll(file, new TextEncoder().encode(`${nextId}\n`));
      await file.syncData();
    }
    await Deno.rename(temp, this.#path(walFiles.nextId));
    await this.#syncDir();
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
    using dir = await Deno.open(this.#dir, { read: true });
    await dir.sync();
    this.#dirDirty = false;
  }
}

async function writeAll(file: Deno.FsFile, data: Uint8Array): Promise<void> {
  for (let written = 0; written < data.length;) written += await file.write(data.subarray(written));
}

async function removeIfExists(path: string): Promise<void> {
  try {
    await Deno.remove(path);
  } catch (err) {
    if (!(err instanceof Deno.errors.NotFound)) throw err;
  }
}
