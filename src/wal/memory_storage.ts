/** Segment storage in memory: the in_memory WAL (lost on exit, bounded like the file WAL). */
import type { SegmentStorage } from "./storage.ts";

/** The commits of one segment, each a run of whole lines, with the offset where each starts. */
interface MemorySegment {
  chunks: Uint8Array[];
  starts: number[];
  size: number;
}

/** Keeps each segment as the list of chunks its commits wrote. */
export class MemoryStorage implements SegmentStorage {
  readonly #segments = new Map<number, MemorySegment>();

  append(seq: number, data: Uint8Array): Promise<void> {
    let segment = this.#segments.get(seq);
    if (!segment) this.#segments.set(seq, segment = { chunks: [], starts: [], size: 0 });
    segment.chunks.push(data);
    segment.starts.push(segment.size);
    segment.size += data.length;
    return Promise.resolve();
  }

  truncate(seq: number, size: number): Promise<void> {
    const segment = this.#segments.get(seq);
    if (!segment) return Promise.resolve();
    while (segment.size > size) {
      const last = segment.chunks.pop()!;
      segment.starts.pop();
      segment.size -= last.length;
    }
    return Promise.resolve();
  }

  read(seq: number, offset: number, length: number): Promise<Uint8Array> {
    const { chunks, starts } = this.#get(seq);
    let lo = 0;
    let hi = starts.length - 1;
    while (lo < hi) {
      const mid = (lo + hi + 1) >>> 1;
      if (starts[mid] <= offset) lo = mid;
      else hi = mid - 1;
    }
    const first = chunks[lo].subarray(offset - starts[lo]);
    if (first.length >= length) return Promise.resolve(first.subarray(0, length));
    const out = new Uint8Array(length);
    let filled = 0;
    for (let c = lo; filled < length; c++) {
      const part = c === lo ? first : chunks[c];
      const n = Math.min(part.length, length - filled);
      out.set(part.subarray(0, n), filled);
      filled += n;
    }
    return Promise.resolve(out);
  }

  #get(seq: number): MemorySegment {
    const segment = this.#segments.get(seq);
    if (!segment) throw new Error(`wal: segment ${seq} is not in memory`);
    return segment;
  }

  appendAcks(): Promise<void> {
    return Promise.resolve();
  }

  syncAcks(): Promise<void> {
    return Promise.resolve();
  }

  probe(): Promise<void> {
    return Promise.resolve();
  }

  remove(seq: number): Promise<void> {
    this.#segments.delete(seq);
    return Promise.resolve();
  }

  quarantine(seq: number): Promise<void> {
    return this.remove(seq);
  }

  saveNextId(): Promise<void> {
    return Promise.resolve();
  }

  close(): Promise<void> {
    this.#segments.clear();
    return Promise.resolve();
  }
}
