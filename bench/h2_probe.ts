/**
 * What the HTTP/2 layer under gRPC costs per record: echo servers under the same Go gRPC load
 * (bench/load grpc, 4 streams x 1,000 in flight, 100-byte records), alternating in one run. Variants: the gRPC
 * listener's echo (bench/grpc_echo_server.ts), and bench/h2_echo_server.ts's bare echo on node:http2, on our
 * connection layer over node:net, and over Deno.listen. Prints answered records/s and the server's CPU µs per
 * record per round, and the medians.
 *
 *   deno run -A bench/h2_probe.ts [rounds=3] [seconds=5]
 */
import { startChildServer } from "./child_server.ts";

const ROOT = new URL("..", import.meta.url).pathname;
const rounds = Number(Deno.args[0] ?? 3);
const seconds = Number(Deno.args[1] ?? 5);

const VARIANTS: Record<string, string[]> = {
  "grpc listener": [`${ROOT}bench/grpc_echo_server.ts`],
  "bare echo, node:http2": [`${ROOT}bench/h2_echo_server.ts`, "node"],
  "bare echo, ours on node:net": [`${ROOT}bench/h2_echo_server.ts`, "ours-net"],
  "bare echo, ours on Deno.listen": [`${ROOT}bench/h2_echo_server.ts`, "ours-deno"],
};

function cpuMicros(pid: number): number {
  const fields = Deno.readTextFileSync(`/proc/${pid}/stat`).split(") ")[1].split(" ");
  return (Number(fields[11]) + Number(fields[12])) * 10_000;
}

const load = new TextDecoder().decode(
  (await new Deno.Command("bash", { args: [`${ROOT}bench/load/build.sh`], stdout: "piped" }).output()).stdout,
).trim();

async function round(args: string[]): Promise<{ rate: number; cpuUs: number }> {
  const [script, ...rest] = args;
  await using server = await startChildServer(script, rest);
  const before = cpuMicros(server.pid);
  const out = await new Deno.Command(load, {
    args: ["grpc", "-target", `127.0.0.1:${server.port}`, "-seconds", String(seconds)],
    stdout: "piped",
  }).output();
  const cpu = cpuMicros(server.pid) - before;
  const lines = new TextDecoder().decode(out.stdout).trim().split("\n");
  const j = JSON.parse(lines[lines.length - 1]);
  return { rate: j.okPerSec, cpuUs: cpu / j.answered };
}

const results: Record<string, { rate: number[]; cpu: number[] }> = {};
for (let i = 0; i < rounds; i++) {
  for (const [name, args] of Object.entries(VARIANTS)) {
    const r = await round(args);
    (results[name] ??= { rate: [], cpu: [] }).rate.push(r.rate);
    results[name].cpu.push(r.cpuUs);
    console.log(
      `round ${i + 1} ${name}: ${Math.round(r.rate)} records/s, ${r.cpuUs.toFixed(2)} µs CPU/record`,
    );
  }
}
const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];
for (const [name, r] of Object.entries(results)) {
  console.log(
    `median ${name}: ${Math.round(median(r.rate))} records/s, ${median(r.cpu).toFixed(2)} µs CPU/record`,
  );
}
console.log(`load average: ${Deno.readTextFileSync("/proc/loadavg").trim()}`);
