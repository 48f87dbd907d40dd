/**
 * Opening a WAL directory after a clean stop or a crash: indexes every segment, cuts a torn last line, skips damaged
 * lines (counted and logged, left in the file), applies the ack lists. A damaged segment never stops start-up.
 */
import { log } from "../log.ts";
import type { Message } from "../message.ts";
import * as metrics from "../metrics.ts";
import { readLineHead, readLineRouting } from "./record_line.ts";
import { ACKED, PENDING, SegmentIndex, segmentName } from "./segment_index.ts";
import type { Recovered } from "./storage.ts";
import { denoFs, type WalFs } from "./fs.ts";

const CHUNK_BYTES = 1 << 20;
/** Damaged lines logged one by one per segment; the rest are summed up. */
const LOGGED_LINES = 20;
const NEWLINE = 0x0a;
const SEGMENT_FILE = /^(\d{8,})\.(wal|acks|corrupt)$/;
const NEXT_ID_FILE = /^next-id\.(\d+)$/;
/**
 * How far past the ids known before it a segment that cannot be read may reach: one segment spans at most 2^32
 * ids (scanSegment), and ids taken since next-id was last saved but never written (records lost at a stop
 * while the disk failed) come before it. 2^53 leaves room for a million such starts.
 */
const UNREAD_ID_SPAN = 2 ** 33;

/**
 * The segment number and kind of a segment's file name; null for any other name, including a number past 2^53 or
 * one not written as walFiles writes it (`000000042.wal`), which would be read as another segment's.
 */
export function segmentFileOf(name: string): { seq: number; kind: "wal" | "acks" | "corrupt" } | null {
  const m = SEGMENT_FILE.exec(name);
  if (m === null) return null;
  const seq = Number(m[1]);
  if (!Number.isSafeInteger(seq) || segmentName(seq) !== m[1]) return null;
  return { seq, kind: m[2] as "wal" | "acks" | "corrupt" };
}

/** File names inside a WAL directory. */
export const walFiles = {
  segment: (seq: number): string => `${segmentName(seq)}.wal`,
  acks: (seq: number): string => `${segmentName(seq)}.acks`,
  corrupt: (seq: number): string => `${segmentName(seq)}.corrupt`,
  /**
   * An empty file whose name says that ids below `id` are used: a name needs no data block, so it can be made
   * durable (create, directory fsync) on a full disk too. The highest one found counts.
   */
  nextId: (id: number): string => `next-id.${id}`,
  /** Written by earlier versions: the next id in decimal. Still read; removed at the next save. */
  legacyNextId: "next-id",
  legacyNextIdTemp: "next-id.tmp",
  /** Written and removed at start-up to check that the directory is writable. */
  probe: ".write-probe",
};

/**
 * Reads every segment of `dir` back into indexes. With `tagOf`, each record left unacknowledged is also counted
 * under its tag (in `Recovered.tags`), from the bytes this pass reads anyway; `tagOf` sees the record's topic, key
 * and partition (readLineRouting: value and headers are not decoded).
 */
export async function recoverDirectory(
  dir: string,
  fs: WalFs = denoFs,
  tagOf?: (message: Message) => string,
): Promise<Recovered> {
  const segmentSeqs: number[] = [];
  const ackSeqs = new Set<number>();
  let maxSeq = 0;
  let saved = 1;
  for await (const entry of fs.readDir(dir)) {
    if (entry.name === walFiles.legacyNextIdTemp) await fs.remove(`${dir}/${entry.name}`);
    saved = Math.max(saved, nextIdOf(entry.name) ?? 1);
    const file = segmentFileOf(entry.name);
    if (file === null) {
      if (SEGMENT_FILE.test(entry.name)) {
        log("warn", `wal: ${entry.name} is not a segment name this WAL writes; ignored`, {
          file: entry.name,
        });
      }
      continue;
    }
    // A name in use is never given to a new segment, whatever it is.
    maxSeq = Math.max(maxSeq, file.seq);
    if (!entry.isFile) {
      if (file.kind !== "acks") {
        log("warn", `wal: ${entry.name} is not a regular file; ignored`, { file: entry.name });
        continue;
      }
      // Read as no acks; out of the way before an ack is appended, which would follow a link, or wait for ever on
      // a FIFO for a reader.
      const aside = `${entry.name}.not-a-file`;
      await fs.rename(`${dir}/${entry.name}`, `${dir}/${aside}`);
      log("warn", `wal: ${entry.name} is not a regular file; moved aside as ${aside}`, { file: entry.name });
      continue;
    }
    if (file.kind === "wal") segmentSeqs.push(file.seq);
    if (file.kind === "acks") ackSeqs.add(file.seq);
  }
  segmentSeqs.sort((a, b) => a - b);
  saved = Math.max(saved, await readLegacyNextId(fs, dir));

  const segments: SegmentIndex[] = [];
  let lastId = 0;
  /** Past every id a segment that could not be read may hold; new ids start above it. */
  let unreadFloor = 0;
  let corrupt = 0;
  const tags = tagOf && new Map<string, number>();
  for (const seq of segmentSeqs) {
    try {
      // Per indexed line, in index order: its tag (acks are applied after the scan, so acked lines have one too).
      const lineTags: Array<string | null> = [];
      const visit = tagOf && ((bytes: Uint8Array, start: number, end: number) => {
        let tag: string | null = null;
        try {
          tag = tagOf(readLineRouting(bytes, start, end));
        } catch {
          // Not a record after all: checkout will drop it as damaged, so it counts under no tag.
        }
        lineTags.push(tag);
      });
      const index = await scanSegment(fs, `${dir}/${walFiles.segment(seq)}`, seq, lastId, visit);
      if (ackSeqs.has(seq)) await applyAcks(fs, `${dir}/${walFiles.acks(seq)}`, index);
      if (tags) {
        for (let i = 0; i < index.count; i++) {
          const tag = lineTags[i];
          if (tag !== null && index.state(i) !== ACKED) tags.set(tag, (tags.get(tag) ?? 0) + 1);
        }
      }
      corrupt += index.corrupt;
      if (index.count > 0) lastId = index.lastId();
      segments.push(index);
    } catch (err) {
      // Its ids are unknown: they follow those before it, which next-id (saved at every deletion) and the
      // segments read so far bound. New ids start far past them, so that none is given again and the segment,
      // once readable, still fits before the later ones.
      unreadFloor = Math.max(unreadFloor, saved, lastId) + UNREAD_ID_SPAN;
      log("error", `wal: segment ${segmentName(seq)}: cannot be read, left in place`, {
        error: err,
        next_id_from: unreadFloor + 1,
      });
    }
  }
  for (const seq of ackSeqs) {
    // An ack list whose segment is gone: the segment was deleted and the process stopped before its acks were.
    if (!segmentSeqs.includes(seq)) await fs.remove(`${dir}/${walFiles.acks(seq)}`);
  }
  return {
    segments,
    nextSeq: maxSeq + 1,
    nextId: Math.max(saved, lastId + 1, unreadFloor + 1),
    corrupt,
    tags,
  };
}

/** A damaged line seen while scanning, not yet known to be in the middle or at the tail. */
interface Damage {
  offset: number;
  line: number;
  reason: string;
  /** Whether the line itself is broken (a torn write, at the tail), rather than a whole line out of place. */
  torn: boolean;
}

/**
 * Indexes one segment file. Ids must exceed `lastId` (the previous segment's last), so every index stays sorted.
 * A damaged or incomplete last line is cut off; damaged lines before it are counted in `corrupt`. `visit` sees
 * each indexed line `bytes[start, end)` (newline excluded, checksum checked), in index order.
 */
export async function scanSegment(
  fs: WalFs,
  path: string,
  seq: number,
  lastId: number,
  visit?: (bytes: Uint8Array, start: number, end: number) => void,
): Promise<SegmentIndex> {
  const name = segmentName(seq);
  const file = await fs.open(path, { read: true, write: true });
  try {
    const size = (await file.stat()).size;
    let index: SegmentIndex | null = null;
    let buf = new Uint8Array(Math.max(1, Math.min(CHUNK_BYTES, size)));
    let bufStart = 0;
    let filled = 0;
    let pos = 0;
    let line = 0;
    let eof = false;
    let damage: Damage | null = null;
    let logged = 0;
    let cutAt = -1;
    const countDamage = (d: Damage) => {
      index ??= new SegmentIndex(seq, lastId + 1);
      index.corrupt++;
      metrics.walCorrupt.inc();
      if (++logged <= LOGGED_LINES) {
        log("warn", `wal: segment ${name}: ${d.reason} at line ${d.line}`, { segment: name, line: d.line });
      }
    };
    while (true) {
      const nl = buf.indexOf(NEWLINE, pos);
      if (nl < 0 || nl >= filled) {
        if (eof) {
          if (filled > pos) {
            if (damage) countDamage(damage);
            damage = null;
            cutAt = bufStart + pos;
          }
          break;
        }
        buf.copyWithin(0, pos, filled);
        bufStart += pos;
        filled -= pos;
        pos = 0;
        if (filled === buf.length) {
          const bigger = new Uint8Array(buf.length * 2);
          bigger.set(buf);
          buf = bigger;
        }
        const n = await file.read(buf.subarray(filled));
        if (n === null) eof = true;
        else filled += n;
        continue;
      }
      line++;
      if (damage) countDamage(damage);
      damage = null;
      const head = readLineHead(buf, pos, nl);
      if ("error" in head) {
        damage = { offset: bufStart + pos, line, reason: head.error, torn: true };
      } else if (head.id <= lastId || (index !== null && head.id - index.baseId > 0xffffffff)) {
        damage = { offset: bufStart + pos, line, reason: `id ${head.id} out of order`, torn: false };
      } else {
        index ??= new SegmentIndex(seq, head.id);
        index.push(head.id, head.writtenAt, bufStart + pos, nl + 1 - pos, PENDING);
        visit?.(buf, pos, nl);
        lastId = head.id;
      }
      pos = nl + 1;
    }
    if (logged > LOGGED_LINES) {
      log("warn", `wal: segment ${name}: ${logged - LOGGED_LINES} more damaged lines`, { segment: name });
    }
    // A whole line out of order at the tail is kept, counted like one in the middle: its checksum holds, so it
    // is no torn write, and cutting it could destroy a record that was acknowledged.
    if (damage?.torn) cutAt = damage.offset;
    else if (damage) countDamage(damage);
    if (cutAt >= 0) {
      await file.truncate(cutAt);
      log("warn", `wal: segment ${name}: torn last line cut off at byte ${cutAt}`, {
        segment: name,
        bytes: size - cutAt,
      });
    }
    const segment: SegmentIndex = index ?? new SegmentIndex(seq, lastId + 1);
    segment.compact();
    segment.settled = segment.count;
    segment.bytes = segment.writtenBytes = cutAt >= 0 ? cutAt : size;
    return segment;
  } finally {
    file.close();
  }
}

/** Marks the ids listed in an ack list as acked; cuts an incomplete last line so later appends stay aligned. */
export async function applyAcks(fs: WalFs, path: string, index: SegmentIndex): Promise<void> {
  const bytes = await fs.readFile(path);
  const end = bytes.lastIndexOf(NEWLINE) + 1;
  if (end < bytes.length) {
    using file = await fs.open(path, { write: true });
    await file.truncate(end);
  }
  let id = 0;
  let digits = 0;
  let junk = false;
  let junkLines = 0;
  for (let i = 0; i < end; i++) {
    const c = bytes[i];
    if (c === NEWLINE) {
      const at = digits > 0 && !junk ? index.find(id) : -1;
      if (at >= 0) index.setState(at, ACKED);
      if (junk || digits === 0) junkLines++;
      id = digits = 0;
      junk = false;
    } else if (c >= 0x30 && c <= 0x39) {
      id = id * 10 + (c - 0x30);
      digits++;
    } else {
      junk = true;
    }
  }
  if (junkLines > 0) {
    // Not written by this WAL: its records stay pending (replayed, at worst a duplicate), never acked by guess.
    log("warn", `wal: ${path}: ${junkLines} lines that are not ids ignored`, {
      file: path,
      lines: junkLines,
    });
  }
}

/** The id a `next-id.<id>` name records, or null for any other name. */
export function nextIdOf(name: string): number | null {
  const m = NEXT_ID_FILE.exec(name);
  const n = m ? Number(m[1]) : NaN;
  return Number.isSafeInteger(n) && n > 0 ? n : null;
}

async function readLegacyNextId(fs: WalFs, dir: string): Promise<number> {
  const path = `${dir}/${walFiles.legacyNextId}`;
  let text: string;
  try {
    text = new TextDecoder().decode(await fs.readFile(path));
  } catch (err) {
    if (err instanceof Deno.errors.NotFound) return 1;
    throw err;
  }
  const n = Number(text.trim());
  if (Number.isSafeInteger(n) && n > 0) return n;
  log("warn", `wal: ${walFiles.legacyNextId}: not a number, ignored`, { path });
  return 1;
}
