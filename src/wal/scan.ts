/**
 * A read-only pass over a WAL directory, line by line, for inspection (the `wal` tool): unlike recovery it never
 * cuts, removes or renames anything, and it reports every damaged line instead of skipping it. It reads the same
 * files as recovery (`walFiles`) and the same line format (record_line.ts).
 */
import { decodeRecordLine } from "./record_line.ts";
import { segmentFileOf, walFiles } from "./recovery.ts";
import { segmentName } from "./segment_index.ts";
import type { WalRecord } from "./types.ts";

const NEWLINE = 0x0a;

/** The files of a WAL directory that hold records. */
export interface WalDirectory {
  /** Segment files, oldest first. */
  segments: Array<{ seq: number; name: string; bytes: number }>;
  /** `.corrupt` files: segments set aside by the service, never read again. */
  setAside: string[];
}

/** One line of a segment, as the scan found it. `line` counts from 1; `bytes` includes the newline. */
export type ScannedLine =
  | { kind: "record"; segment: string; line: number; bytes: number; record: WalRecord; acked: boolean }
  /** A complete line that is not a valid record: bad checksum, malformed, or an id out of order. */
  | { kind: "damaged"; segment: string; line: number; bytes: number; reason: string }
  /** The last line of a segment without its newline: a write cut short; the next start cuts it off. */
  | { kind: "torn"; segment: string; line: number; bytes: number };

/** Lists the segment files of `dir`; throws an Error naming the directory when it cannot be read. */
export async function listWalDirectory(dir: string): Promise<WalDirectory> {
  const segments: WalDirectory["segments"] = [];
  const setAside: string[] = [];
  try {
    for await (const entry of Deno.readDir(dir)) {
      if (!entry.isFile) continue;
      const file = segmentFileOf(entry.name);
      if (file?.kind === "wal") {
        const bytes = (await Deno.stat(`${dir}/${entry.name}`)).size;
        segments.push({ seq: file.seq, name: segmentName(file.seq), bytes });
      } else if (file?.kind === "corrupt") {
        setAside.push(entry.name);
      }
    }
  } catch (err) {
    throw new Error(`wal: directory ${dir}: ${(err as Error).message}`);
  }
  segments.sort((a, b) => a.seq - b.seq);
  setAside.sort();
  return { segments, setAside };
}

/**
 * Every line of every segment of `listing`, oldest first. A record is `acked` when its segment's ack list names
 * it. Ids must increase across the directory, as recovery requires; a line whose id does not is damaged.
 */
export async function* scanWal(dir: string, listing: WalDirectory): AsyncGenerator<ScannedLine> {
  let lastId = 0;
  for (const { seq, name: segment } of listing.segments) {
    const bytes = await Deno.readFile(`${dir}/${walFiles.segment(seq)}`);
    const acked = await readAcks(`${dir}/${walFiles.acks(seq)}`);
    let start = 0;
    for (let line = 1; start < bytes.length; line++) {
      const nl = bytes.indexOf(NEWLINE, start);
      if (nl < 0) {
        yield { kind: "torn", segment, line, bytes: bytes.length - start };
        break;
      }
      const size = nl + 1 - start;
      let record: WalRecord | null = null;
      let reason = "";
      try {
        record = decodeRecordLine(bytes, start, nl);
      } catch (err) {
        reason = (err as Error).message;
      }
      if (record !== null && record.id <= lastId) {
        reason = `id ${record.id} out of order`;
        record = null;
      }
      if (record === null) {
        yield { kind: "damaged", segment, line, bytes: size, reason };
      } else {
        lastId = record.id;
        yield { kind: "record", segment, line, bytes: size, record, acked: acked.has(record.id) };
      }
      start = nl + 1;
    }
  }
}

/**
 * The ids of an ack list; none when the file is missing or is not a regular file (a FIFO would block the read, a
 * link to a device never end it), as the service ignores it. An incomplete last line is not an ack yet.
 */
async function readAcks(path: string): Promise<Set<number>> {
  let text: string;
  try {
    if (!(await Deno.lstat(path)).isFile) return new Set();
    text = await Deno.readTextFile(path);
  } catch (err) {
    if (err instanceof Deno.errors.NotFound) return new Set();
    throw err;
  }
  const ids = new Set<number>();
  const lines = text.split("\n");
  lines.pop();
  for (const line of lines) if (/^\d+$/.test(line)) ids.add(Number(line));
  return ids;
}
