/** Helpers of the benchmarks that watch a process from outside: its pid by port, its memory from /proc. */
import { runCommand } from "../tests/kafka/command.ts";

/** The pid of the process listening on a loopback TCP port (a number, or the port of a URL). */
export async function pidListeningOn(port: number | string): Promise<number> {
  const p = typeof port === "string" && port.includes("://") ? new URL(port).port : String(port);
  const r = await runCommand("ss", ["-Hltnp", `sport = :${p}`], { timeoutMs: 5_000 });
  const pid = Number(/pid=(\d+)/.exec(new TextDecoder().decode(r.stdout))?.[1] ?? NaN);
  if (Number.isNaN(pid)) throw new Error(`no process listens on port ${p}`);
  return pid;
}

/** A process's peak (VmHWM) or current (VmRSS) resident set size, in MB. */
export function memoryMb(pid: number, field: "VmHWM" | "VmRSS"): number {
  const status = Deno.readTextFileSync(`/proc/${pid}/status`);
  return Number(new RegExp(`${field}:\\s+(\\d+)`).exec(status)?.[1] ?? NaN) / 1024;
}
