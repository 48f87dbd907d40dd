/** A SegmentStorage that fails on demand, around a real one: disk faults for WAL unit tests. */
import { SegmentedWal } from "../../src/wal/segmented_wal.ts";
import { MemoryStorage } from "../../src/wal/memory_storage.ts";
import { FileStorage } from "../../src/wal/file_storage.ts";
import type { SegmentStorage } from "../../src/wal/storage.ts";
import { denoFs, type WalFile, type WalFs } from "../../src/wal/fs.ts";

/** How an append fails: before any byte is written, or after the bytes reached the file (a failed fdatasync). */
export type AppendFault = { error: Error; after?: boolean } | null;

/** Passes every call to `inner` unless a fault is set. */
export class FaultStorage implements SegmentStorage {
  readonly inner: SegmentStorage;
  /** Decides per append; null lets it through. */
  appendFault: (seq: number) => AppendFault = () => null;
  /** Every append tried: segment and time. */
  readonly attempts: Array<{ seq: number; at: number }> = [];
  /** Every cut: segment and size. */
  readonly truncates: Array<{ seq: number; size: number }> = [];
  /** When set, appends wait for it (after being counted in `attempts`), and probes too. */
  gate: Promise<void> | null = null;
  /** Probes tried (see SegmentStorage.probe): decided by `appendFault` as an append to segment 0, which no segment is. */
  probes = 0;

  constructor(inner: SegmentStorage) {
    this.inner = inner;
  }

  /** Every append fails with `error` until `heal`. */
  fail(error: Error = diskFull(), after = false): void {
    this.appendFault = () => ({ error, after });
  }

  /** The next append fails with `error` (after its bytes reached the segment when `after`), later ones work. */
  failOnce(error: Error, after = false): void {
    this.appendFault = () => {
      this.heal();
      return { error, after };
    };
  }

  heal(): void {
    this.appendFault = () => null;
  }

  async append(seq: number, data: Uint8Array): Promise<void> {
    this.attempts.push({ seq, at: Date.now() });
    await this.gate;
    const fault = this.appendFault(seq);
    if (fault === null) return await this.inner.append(seq, data);
    if (fault.after) await this.inner.append(seq, data);
    throw fault.error;
  }

  truncate(seq: number, size: number): Promise<void> {
    this.truncates.push({ seq, size });
    return this.inner.truncate(seq, size);
  }
  read(seq: number, offset: number, length: number): Promise<Uint8Array> {
    return this.inner.read(seq, offset, length);
  }
  appendAcks(seq: number, ids: number[]): Promise<void> {
    return this.inner.appendAcks(seq, ids);
  }
  syncAcks(): Promise<void> {
    return this.inner.syncAcks();
  }
  async probe(): Promise<void> {
    this.probes++;
    await this.gate;
    const fault = this.appendFault(0);
    if (fault !== null) throw fault.error;
    await this.inner.probe();
  }
  remove(seq: number): Promise<void> {
    return this.inner.remove(seq);
  }
  quarantine(seq: number): Promise<void> {
    return this.inner.quarantine(seq);
  }
  saveNextId(nextId: number): Promise<void> {
    return this.inner.saveNextId(nextId);
  }
  close(): Promise<void> {
    return this.inner.close();
  }
}

/** An error like the one a full disk gives, path included (it must never reach a client). */
export function diskFull(path = "/var/lib/ka/wal/00000001.wal"): Error {
  return new Error(`No space left on device (os error 28): write '${path}'`);
}

/** The error a failed fdatasync gives (EIO). */
export function ioError(): Error {
  return new Error("Input/output error (os error 5)");
}

/** Options of the WAL under test: quick retries. */
export interface FaultyWalOptions {
  maxBytes?: number;
  segmentBytes?: number;
  retryMinMs?: number;
  retryMaxMs?: number;
}

/** A WAL over a FaultStorage: on disk in `dir`, or in memory when `dir` is null. */
export async function openFaultyWal(
  dir: string | null,
  opts: FaultyWalOptions = {},
): Promise<{ wal: SegmentedWal; storage: FaultStorage }> {
  const { storage: inner, recovered } = dir === null
    ? { storage: new MemoryStorage(), recovered: { segments: [], nextSeq: 1, nextId: 1, corrupt: 0 } }
    : await FileStorage.open(dir);
  const storage = new FaultStorage(inner);
  const wal = await SegmentedWal.open(storage, recovered, {
    maxBytes: opts.maxBytes ?? 1 << 24,
    segmentBytes: opts.segmentBytes ?? 1 << 20,
    commitDelayMs: 1,
    retryMinMs: opts.retryMinMs ?? 10,
    retryMaxMs: opts.retryMaxMs ?? 40,
  });
  return { wal, storage };
}

/** The real file system, except that every fdatasync of a file fails with EIO while `failing` is set. */
export interface SyncFaultFs extends WalFs {
  failing: boolean;
}

export function syncFaultFs(): SyncFaultFs {
  const fs: SyncFaultFs = {
    ...denoFs,
    failing: false,
    async open(path, options): Promise<WalFile> {
      const file = await denoFs.open(path, options);
      return {
        read: (p) => file.read(p),
        writeSync: (p) => file.writeSync(p),
        seek: (offset, whence) => file.seek(offset, whence),
        truncate: (len) => file.truncate(len),
        syncData: () => fs.failing ? Promise.reject(ioError()) : file.syncData(),
        stat: () => file.stat(),
        close: () => file.close(),
        [Symbol.dispose]: () => file[Symbol.dispose](),
      };
    },
  };
  return fs;
}
