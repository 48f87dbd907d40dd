/**
 * Gives the memory the process has freed back to the operating system, now and then. glibc's malloc keeps what
 * is freed for its next allocations, and V8's buffers (socket reads, request bodies) come from it: after a burst
 * the process's RSS stays near its peak although V8 and librdkafka hold a fraction of it, which a container's
 * memory accounting and an operator's dashboard take for use. Measured 15 s after a gRPC flood that peaked at
 * 0.7 GB (bench/grpc_flood.ts, 32 connections), with 16 MB left in V8's heap: 489 and 653 MB of RSS without
 * this, 133 and 137 MB with it. A call takes 0.1 ms on an idle process, 1 to 2 ms under the usual gRPC load,
 * 25 ms when it gives back hundreds of MB; it does not lower a peak, only what stays after it.
 *
 * `malloc_trim` is glibc's: on a libc without it (musl) nothing is done.
 *
 * @example
 * const trim = startMallocTrim();
 * // at shutdown:
 * trim.stop();
 */

import { libcMallocTrim } from "./kafka/librdkafka.ts";

/** How often freed memory is given back. */
export const TRIM_INTERVAL_MS = 10_000;

/** glibc's malloc_trim(0) once loaded; null when the C library has none; undefined before the first call. */
let trimFn: (() => boolean) | null | undefined;

/**
 * Gives freed memory back to the operating system once. Returns whether any was given back; null when the C
 * library has no malloc_trim.
 */
export function trimMalloc(): boolean | null {
  if (trimFn === undefined) trimFn = libcMallocTrim();
  return trimFn === null ? null : trimFn();
}

/** Runs trimMalloc every `intervalMs` until stopped; the timer does not keep the process alive. */
export function startMallocTrim(intervalMs: number = TRIM_INTERVAL_MS): { stop(): void } {
  if (!Number.isSafeInteger(intervalMs) || intervalMs < 1) {
    throw new RangeError(
      `malloc trim: the interval must be a whole number of ms of at least 1, got ${intervalMs}`,
    );
  }
  if (trimMalloc() === null) return { stop() {} };
  const timer = setInterval(trimMalloc, intervalMs);
  Deno.unrefTimer(timer);
  return { stop: () => clearInterval(timer) };
}
