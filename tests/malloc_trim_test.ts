import assert from "node:assert/strict";
import { startMallocTrim, trimMalloc } from "../src/malloc_trim.ts";

/** This process's anonymous resident memory, in bytes. */
function rssAnon(): number {
  const kb = /RssAnon:\s+(\d+) kB/.exec(Deno.readTextFileSync("/proc/self/status"))?.[1];
  return Number(kb) * 1024;
}

Deno.test("trimMalloc gives back memory that was freed and that malloc kept", () => {
  // The C library's own malloc and free, to make the state trimMalloc is for: blocks below the mmap threshold,
  // touched, and every second one freed, so that what is free lies between blocks in use (as a burst's buffers
  // do among what lives on) and free() cannot give it back by shrinking the heap.
  const libc = Deno.dlopen("libc.so.6", {
    malloc: { parameters: ["usize"], result: "pointer" },
    free: { parameters: ["pointer"], result: "void" },
    memset: { parameters: ["pointer", "i32", "usize"], result: "pointer" },
  });
  const BLOCK = 64 * 1024, BLOCKS = 3200; // 200 MiB, half of it freed
  const blocks = Array.from({ length: BLOCKS }, () => libc.symbols.malloc(BigInt(BLOCK)));
  try {
    for (const b of blocks) libc.symbols.memset(b, 1, BigInt(BLOCK));
    blocks.forEach((b, i) => i % 2 === 1 && libc.symbols.free(b));
    const kept = rssAnon();
    assert.equal(trimMalloc(), true);
    const given = kept - rssAnon();
    assert.ok(given > 80 * 1024 * 1024, `gave back ${given} bytes of the 100 MiB freed`);
  } finally {
    blocks.forEach((b, i) => i % 2 === 0 && libc.symbols.free(b));
    libc.close();
  }
});

Deno.test("startMallocTrim refuses an interval that is not a whole number of ms, and stops", () => {
  assert.throws(() => startMallocTrim(0), RangeError);
  assert.throws(() => startMallocTrim(1.5), RangeError);
  startMallocTrim(1_000).stop();
});
