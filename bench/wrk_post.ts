/**
 * Helper of the HTTP listener benchmarks (limits_cost.ts, http_layers.ts): one load of wrk -t1 -c64 -d10s with
 * 100-byte POSTs (bench/post.lua) on a server that runs as process `pid`, and what it cost that process.
 */
import { freePort } from "../tests/support/service.ts";
import { listening } from "../tests/support/wait.ts";

const LUA = new URL("./post.lua", import.meta.url).pathname;

/** CPU time of a process so far, in µs (utime + stime; clock ticks of 10 ms, as getconf CLK_TCK says 100). */
export function cpuMicros(pid: number): number {
  const fields = Deno.readTextFileSync(`/proc/${pid}/stat`).split(") ")[1].split(" ");
  return (Number(fields[11]) + Number(fields[12])) * 10_000;
}

/** Requests/s, p99 and the server's CPU µs per request, for one load on 127.0.0.1:`port`. */
export async function postLoad(
  pid: number,
  port: number,
): Promise<{ rps: number; p99: string; cpuUs: number }> {
  const cpuBefore = cpuMicros(pid);
  const out = await new Deno.Command("wrk", {
    args: ["-t1", "-c64", "-d10s", "--latency", "-s", LUA, `http://127.0.0.1:${port}/topics/bench/messages`],
    stdout: "piped",
  }).output();
  const cpu = cpuMicros(pid) - cpuBefore;
  const text = new TextDecoder().decode(out.stdout);
  const requests = Number(/(\d+) requests in/.exec(text)?.[1] ?? NaN);
  if (!(requests > 0)) throw new Error(`wrk on port ${port}: ${text}`);
  return {
    rps: Number(/Requests\/sec:\s+([\d.]+)/.exec(text)?.[1] ?? NaN),
    p99: /\s99%\s+(\S+)/.exec(text)?.[1] ?? "?",
    cpuUs: cpu / requests,
  };
}

/**
 * Starts `deno run --allow-all --quiet ...args PORT` (a free port appended; output dropped), puts postLoad on it
 * once it listens, and stops it.
 */
export async function postLoadOnChild(args: string[]): Promise<{ rps: number; p99: string; cpuUs: number }> {
  const port = freePort();
  const child = new Deno.Command(Deno.execPath(), {
    args: ["run", "--allow-all", "--quiet", ...args, String(port)],
    stdout: "null",
    stderr: "null",
  }).spawn();
  try {
    await listening(port, 10_000);
    return await postLoad(child.pid, port);
  } finally {
    child.kill();
    await child.status;
  }
}
