/** `wal stats`: what waits in the WAL, per topic, and how old the oldest record is. */
import { formatDuration } from "../duration.ts";
import { listWalDirectory, scanWal } from "../wal/scan.ts";
import { EXIT } from "./exit.ts";
import { LineWriter } from "./output.ts";

/** The figures `wal stats --json` prints. */
export interface WalFigures {
  path: string;
  /** Segment files, and their bytes (what counts against `producer.wal.max_bytes`). */
  segments: number;
  bytes: number;
  /** Records not acked, and the bytes of their lines. */
  records: number;
  recordBytes: number;
  /** Per topic: records not acked and the bytes of their lines. */
  topics: Record<string, { records: number; bytes: number }>;
  /** writtenAt of the oldest record not acked (ms since the epoch) and its age in seconds; null when empty. */
  oldestWrittenAt: number | null;
  oldestAgeSeconds: number | null;
  /** Complete lines that are not valid records; incomplete last lines (cut off at the next start). */
  corrupt: number;
  torn: number;
  /** `.corrupt` files: segments the service has set aside. */
  setAside: string[];
}

/** Reads the whole directory once and sums it up. */
export async function walFigures(dir: string, now = Date.now()): Promise<WalFigures> {
  const listing = await listWalDirectory(dir);
  const figures: WalFigures = {
    path: dir,
    segments: listing.segments.length,
    bytes: listing.segments.reduce((sum, s) => sum + s.bytes, 0),
    records: 0,
    recordBytes: 0,
    topics: {},
    oldestWrittenAt: null,
    oldestAgeSeconds: null,
    corrupt: 0,
    torn: 0,
    setAside: listing.setAside,
  };
  for await (const line of scanWal(dir, listing)) {
    if (line.kind === "damaged") figures.corrupt++;
    if (line.kind === "torn") figures.torn++;
    if (line.kind !== "record" || line.acked) continue;
    const { topic, writtenAt } = line.record;
    const perTopic = figures.topics[topic] ??= { records: 0, bytes: 0 };
    perTopic.records++;
    perTopic.bytes += line.bytes;
    figures.records++;
    figures.recordBytes += line.bytes;
    if (figures.oldestWrittenAt === null || writtenAt < figures.oldestWrittenAt) {
      figures.oldestWrittenAt = writtenAt;
    }
  }
  if (figures.oldestWrittenAt !== null) {
    figures.oldestAgeSeconds = Math.max(0, Math.round((now - figures.oldestWrittenAt) / 1000));
  }
  return figures;
}

export async function statsCommand(dir: string, opts: { json: boolean }): Promise<number> {
  const f = await walFigures(dir);
  const out = new LineWriter();
  if (opts.json) {
    await out.line(JSON.stringify(f));
  } else {
    await out.line(`wal: ${f.path}`);
    await out.line(`segments: ${f.segments} (${f.bytes} bytes)`);
    await out.line(`records waiting: ${f.records} (${f.recordBytes} bytes)`);
    if (f.oldestWrittenAt !== null) {
      const age = f.oldestAgeSeconds === 0 ? "0s" : formatDuration(f.oldestAgeSeconds! * 1000);
      await out.line(`oldest record: ${new Date(f.oldestWrittenAt).toISOString()} (${age} ago)`);
    }
    await out.line(`corrupt lines: ${f.corrupt}${f.torn > 0 ? `, torn last lines: ${f.torn}` : ""}`);
    if (f.setAside.length > 0) await out.line(`set aside: ${f.setAside.join(" ")}`);
    const topics = Object.entries(f.topics).sort(([a], [b]) => a < b ? -1 : a > b ? 1 : 0);
    if (topics.length > 0) {
      const width = Math.max(5, ...topics.map(([t]) => t.length));
      await out.line(`${"topic".padEnd(width)}  ${"records".padStart(10)}  ${"bytes".padStart(14)}`);
      for (const [topic, { records, bytes }] of topics) {
        await out.line(
          `${topic.padEnd(width)}  ${String(records).padStart(10)}  ${String(bytes).padStart(14)}`,
        );
      }
    }
  }
  await out.flush();
  return EXIT.ok;
}
