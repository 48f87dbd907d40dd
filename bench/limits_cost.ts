/**
 * What a change costs on the HTTP hot path, before against after in one run: the HTTP listener of a git
 * revision (exported to a temp dir) and of this worktree, each in its own process with a facade that accepts
 * at once (no Kafka), under wrk -t1 -c64 -d10s with 100-byte POSTs (bench/post.lua), alternating so that both
 * see the same machine. Prints requests/s, p99 and the listener's CPU time per request (utime + stime from
 * /proc, steadier than requests/s on a shared machine) per round, and the medians.
 *
 * Run: deno run --allow-all bench/limits_cost.ts REVISION [rounds, default 3]
 * e.g. deno run -A bench/limits_cost.ts 026a4ff (the listener before connection limits)
 */
import { postLoadOnChild } from "./wrk_post.ts";

const ROOT = new URL("..", import.meta.url).pathname;

/** Child mode: `--serve ROOT PORT` serves the HTTP listener of the tree at ROOT until killed. */
async function serve(root: string, port: string): Promise<void> {
  const { startHttpServer } = await import(`${root}/src/server/http.ts`);
  const { instantFacade } = await import(`${root}/bench/instant_facade.ts`);
  await startHttpServer({ listen: `127.0.0.1:${port}`, facade: instantFacade });
}

function round(root: string): Promise<{ rps: number; p99: string; cpuUs: number }> {
  return postLoadOnChild([`--config=${ROOT}deno.json`, import.meta.filename!, "--serve", root]);
}

async function main(revision: string, rounds: number): Promise<void> {
  const before = await Deno.makeTempDir({ prefix: "ka-limits-cost-" });
  try {
    const archive = new Deno.Command("bash", {
      args: [
        "-c",
        `git -C "$0" archive "$1" src bench docs proto deno.json | tar -x -C "$2"`,
        ROOT,
        revision,
        before,
      ],
    });
    if (!(await archive.output()).success) throw new Error(`cannot export revision ${revision}`);
    const rows: Record<"before" | "after", number[]> = { before: [], after: [] };
    const cpu: Record<"before" | "after", number[]> = { before: [], after: [] };
    for (let i = 0; i < rounds; i++) {
      for (const [name, root] of [["before", before], ["after", ROOT]] as const) {
        const { rps, p99, cpuUs } = await round(root);
        rows[name].push(rps);
        cpu[name].push(cpuUs);
        console.log(
          `round ${i + 1} ${name}: ${rps.toFixed(0)} req/s, p99 ${p99}, ${cpuUs.toFixed(1)} µs CPU/request`,
        );
      }
    }
    const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];
    const b = median(rows.before), a = median(rows.after);
    console.log(`median: before ${b.toFixed(0)} req/s, after ${a.toFixed(0)} req/s (${(a / b).toFixed(2)})`);
    const cb = median(cpu.before), ca = median(cpu.after);
    console.log(
      `median CPU/request: before ${cb.toFixed(1)} µs, after ${ca.toFixed(1)} µs (${(ca / cb).toFixed(2)})`,
    );
  } finally {
    await Deno.remove(before, { recursive: true });
  }
}

if (Deno.args[0] === "--serve") {
  await serve(Deno.args[1], Deno.args[2]);
} else {
  if (Deno.args[0] === undefined) throw new Error("usage: bench/limits_cost.ts REVISION [rounds]");
  await main(Deno.args[0], Number(Deno.args[1] ?? 3));
}
