/**
 * Summarizes a V8 .cpuprofile (`deno run --cpu-prof`, or bench/service_ab.ts --cpu-prof): self time per function,
 * as a share of the time the JS thread was busy (idle excluded), for the hottest ones the callers their self time
 * came from, and total time (self and callees) per function. Functions are told apart by name, file and line.
 * The profiler samples wall time: a thread preempted inside a call (on a loaded machine, by the thread it just
 * woke) counts that wait to the call.
 *
 * `--records N` also prints each figure as µs per record, for a profile of a load of N records.
 *
 * Run: deno run -A bench/cpu_profile.ts FILE.cpuprofile [--top 25] [--callers 8] [--records N]
 */

interface ProfileNode {
  id: number;
  callFrame: { functionName: string; url: string; lineNumber: number };
  children?: number[];
}

interface Profile {
  nodes: ProfileNode[];
  samples: number[];
  timeDeltas: number[];
}

function flag(name: string, fallback: number): number {
  const i = Deno.args.indexOf(`--${name}`);
  return i < 0 ? fallback : Number(Deno.args[i + 1]);
}

const file = Deno.args[0];
if (file === undefined || file.startsWith("--")) {
  console.error("usage: bench/cpu_profile.ts FILE.cpuprofile [--top N] [--callers N]");
  Deno.exit(2);
}
const TOP = flag("top", 25);
const CALLERS = flag("callers", 8);
const RECORDS = flag("records", 0);

const profile: Profile = JSON.parse(await Deno.readTextFile(file));
const byId = new Map(profile.nodes.map((n) => [n.id, n]));
const parentOf = new Map<number, number>();
for (const n of profile.nodes) for (const c of n.children ?? []) parentOf.set(c, n.id);

function label(n: ProfileNode | undefined): string {
  if (n === undefined) return "(root)";
  const { functionName, url, lineNumber } = n.callFrame;
  if (url === "") return functionName || "(anonymous)";
  const path = url.replace(/^.*\/(src|bench|ext|node)\//, "$1/");
  return `${functionName || "(anonymous)"} ${path}:${lineNumber + 1}`;
}

// A sample's time is the delta to the next sample (the profiler's convention).
const selfUs = new Map<number, number>();
for (let i = 0; i < profile.samples.length; i++) {
  const us = profile.timeDeltas[i + 1] ?? 0;
  selfUs.set(profile.samples[i], (selfUs.get(profile.samples[i]) ?? 0) + us);
}

const self = new Map<string, number>();
const inclusive = new Map<string, number>();
const callers = new Map<string, Map<string, number>>();
let total = 0;
let idle = 0;
for (const [id, us] of selfUs) {
  const node = byId.get(id)!;
  const name = label(node);
  total += us;
  if (name === "(idle)") {
    idle += us;
    continue;
  }
  self.set(name, (self.get(name) ?? 0) + us);
  // Each function on the sample's stack counts once, however deep it recurses.
  const seen = new Set<string>();
  for (let at: number | undefined = id; at !== undefined; at = parentOf.get(at)) {
    const f = label(byId.get(at));
    if (seen.has(f)) continue;
    seen.add(f);
    inclusive.set(f, (inclusive.get(f) ?? 0) + us);
  }
  const caller = label(byId.get(parentOf.get(id) ?? -1));
  const of = callers.get(name) ?? new Map<string, number>();
  of.set(caller, (of.get(caller) ?? 0) + us);
  callers.set(name, of);
}

const busy = total - idle;
const pct = (us: number) =>
  `${(us / busy * 100).toFixed(1).padStart(5)} %` +
  (RECORDS > 0 ? ` ${(us / RECORDS).toFixed(2).padStart(6)} µs/rec` : "");
console.log(
  `${file}: ${(total / 1e6).toFixed(1)} s profiled, busy ${(busy / 1e6).toFixed(1)} s ` +
    `(${(busy / total * 100).toFixed(0)} %${
      RECORDS > 0 ? `, ${(busy / RECORDS).toFixed(2)} µs/rec` : ""
    }); ` +
    "self time as a share of busy time",
);
const top = [...self].sort(([, a], [, b]) => b - a).slice(0, TOP);
for (const [name, us] of top) console.log(`${pct(us)}  ${name}`);
for (const [name, us] of top.slice(0, CALLERS)) {
  console.log(`\ncallers of ${name} (${pct(us).trim()}):`);
  const of = [...callers.get(name)!].sort(([, a], [, b]) => b - a).slice(0, 5);
  for (const [caller, cus] of of) console.log(`  ${pct(cus)}  ${caller}`);
}

console.log("\ntotal time (self and callees):");
const skip = new Set(["(root)", "(program)", "(garbage collector)"]);
for (
  const [name, us] of [...inclusive].filter(([n]) => !skip.has(n)).sort(([, a], [, b]) => b - a).slice(0, TOP)
) {
  console.log(`${pct(us)}  ${name}`);
}
