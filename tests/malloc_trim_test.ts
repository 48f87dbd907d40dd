import assert from "node:assert/strict";
import { startMallocTrim, trimMalloc } from "../src/malloc_trim.ts";

const PAGE = 4096;

Deno.test("trimMalloc gives back memory that was freed and that malloc kept", () => {
  // The C library's own malloc and free, to make the state trimMalloc is for: blocks below the mmap threshold,
  // touched, and every second one freed, so that what is free lies between blocks in use (as a burst's buffers
  // do among what lives on) and free() cannot give it back by shrinking the heap. What is resident is asked of
  // the kernel page by page (mincore) for these blocks alone: the process's RSS moves with the test files that
  // run beside this one.
  const libc = Deno.dlopen("libc.so.6", {
    malloc: { parameters: ["usize"], result: "pointer" },
    free: { parameters: ["pointer"], result: "void" },
    memset: { parameters: ["pointer", "i32", "usize"], result: "pointer" },
    mincore: { parameters: ["pointer", "usize", "buffer"], result: "i32" },
  });
  /** Resident pages among the whole pages inside `blocks` (a block's first bytes hold malloc's own header). */
  const resident = (blocks: Deno.PointerObject[]): number => {
    const vec = new Uint8Array(BLOCK / PAGE);
    let pages = 0;
    for (const block of blocks) {
      const at = Deno.UnsafePointer.value(block) as bigint;
      const first = (at + BigInt(PAGE - 1)) / BigInt(PAGE) * BigInt(PAGE);
      const length = (at + BigInt(BLOCK)) / BigInt(PAGE) * BigInt(PAGE) - first;
      const rc = libc.symbols.mincore(Deno.UnsafePointer.create(first), length, vec);
      assert.equal(rc, 0, "mincore failed");
      for (let i = 0; i < Number(length) / PAGE; i++) pages += vec[i] & 1;
    }
    return pages;
  };
  const BLOCK = 64 * 1024, BLOCKS = 3200; // 200 MiB, half of it freed
  const blocks = Array.from({ length: BLOCKS }, () => libc.symbols.malloc(BigInt(BLOCK))!);
  const freed = blocks.filter((_, i) => i % 2 === 1);
  const used = blocks.filter((_, i) => i % 2 === 0);
  try {
    for (const b of blocks) libc.symbols.memset(b, 1, BigInt(BLOCK));
    for (const b of freed) libc.symbols.free(b);
    const kept = resident(freed);
    const inUse = resident(used);
    assert.ok(kept > 0.9 * freed.length * (BLOCK / PAGE - 1), `${kept} pages of the freed blocks resident`);
    assert.equal(trimMalloc(), true);
    const left = resident(freed);
    assert.ok(left < kept / 10, `${left} of ${kept} freed pages still resident after the trim`);
    assert.equal(resident(used), inUse, "the trim gave back memory in use");
  } finally {
    for (const b of used) libc.symbols.free(b);
    libc.close();
  }
});

Deno.test("startMallocTrim refuses an interval that is not a whole number of ms, and stops", () => {
  assert.throws(() => startMallocTrim(0), RangeError);
  assert.throws(() => startMallocTrim(1.5), RangeError);
  startMallocTrim(1_000).stop();
});
