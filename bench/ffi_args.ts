/**
 * What an FFI call costs by how its arguments are written: libc's `memchr(buffer, i32, usize)` called 5 million
 * times, the `i32` as a literal, as `x ?? -1` and as `(x ?? -1) | 0`, the `usize` as a BigInt or a number.
 * Deno's fast path takes 64-bit integers as BigInt: given a number, the call goes the slow way.
 *
 * Usage: deno run -A bench/ffi_args.ts [--calls 5000000]
 */
const calls = Number(Deno.args[Deno.args.indexOf("--calls") + 1] || 5_000_000);
const lib = Deno.dlopen("libc.so.6", {
  memchr: { parameters: ["buffer", "i32", "usize"], result: "pointer" },
});
const buf = new Uint8Array(64).fill(1);
const message: { partition?: number } = {};

function time(name: string, call: () => unknown): void {
  for (let i = 0; i < 200_000; i++) call(); // optimized before it is timed
  const started = performance.now();
  for (let i = 0; i < calls; i++) call();
  const ns = (performance.now() - started) * 1e6 / calls;
  console.log(`${name.padEnd(36)} ${ns.toFixed(1)} ns a call`);
}

for (let pass = 1; pass <= 2; pass++) {
  console.log(`pass ${pass}`);
  time("i32 literal, usize BigInt", () => lib.symbols.memchr(buf, 0, 16n));
  // Deno's types ask for a BigInt; a number is taken at run time, the slow way.
  time("i32 literal, usize number", () => lib.symbols.memchr(buf, 0, 16 as unknown as bigint));
  time("i32 x ?? -1, usize BigInt", () => lib.symbols.memchr(buf, message.partition ?? -1, 16n));
  time("i32 (x ?? -1) | 0, usize BigInt", () => lib.symbols.memchr(buf, (message.partition ?? -1) | 0, 16n));
}
lib.close();
