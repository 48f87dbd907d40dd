/**
 * The write-ahead log: where accepted messages wait while Kafka cannot take them.
 * @example
 * const wal = await openWal({ path: "/var/lib/ka/wal", inMemory: false, maxBytes: 1 << 30 });
 * const { id, durable } = wal.append({ topic: "t", value: new TextEncoder().encode("hello") });
 * await durable;
 * wal.ack(id);
 * await wal.close();
 */
import { FileStorage } from "./file_storage.ts";
import { MemoryStorage } from "./memory_storage.ts";
import { SegmentedWal } from "./segmented_wal.ts";
import type { Wal, WalOptions } from "./types.ts";

export {
  type AppendedMany,
  type AppendOptions,
  type Wal,
  WalFullError,
  type WalOptions,
  type WalRecord,
  type WalStats,
} from "./types.ts";

const DEFAULT_SEGMENT_BYTES = 64 * 1024 * 1024;
/** Line offsets are 32-bit; a segment overshoots its roll size by at most one line. */
const MAX_SEGMENT_BYTES = 1024 * 1024 * 1024;

/** Opens (recovering what is on disk) or creates a WAL. */
export async function openWal(opts: WalOptions): Promise<Wal> {
  if (!(opts.maxBytes > 0)) throw new Error(`wal: maxBytes must be positive, got ${opts.maxBytes}`);
  const requested = opts.segmentBytes ?? DEFAULT_SEGMENT_BYTES;
  if (!(requested > 0)) throw new Error(`wal: segmentBytes must be positive, got ${requested}`);
  // The active segment is never deleted, so it may hold at most a quarter of the bound.
  const segmentBytes = Math.max(1, Math.min(requested, MAX_SEGMENT_BYTES, Math.floor(opts.maxBytes / 4)));
  if (opts.inMemory) {
    const recovered = { segments: [], nextSeq: 1, nextId: 1, corrupt: 0, tags: opts.tagOf && new Map() };
    return await SegmentedWal.open(new MemoryStorage(), recovered, {
      maxBytes: opts.maxBytes,
      segmentBytes,
      commitDelayMs: opts.commitDelayMs ?? 0,
    });
  }
  if (opts.path === "") throw new Error("wal: path is required unless inMemory");
  const { storage, recovered } = await FileStorage.open(opts.path, opts.fs, opts.tagOf);
  return await SegmentedWal.open(storage, recovered, {
    maxBytes: opts.maxBytes,
    segmentBytes,
    commitDelayMs: opts.commitDelayMs ?? 0,
  });
}
