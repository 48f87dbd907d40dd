/** Hostile HTTP/2 peers (tests/h2/*.py) against a running service, and what they can observe of its process. */
import { startService } from "./service.ts";
import type { Service } from "./service.ts";
import { freePort } from "./service.ts";

const CASES = new URL("../h2/cases.py", import.meta.url).pathname;

/** The Debian python3, which has python3-h2 (scripts/setup.sh installs it). */
export const PYTHON = Deno.env.get("KA_H2_PYTHON") ?? "/usr/bin/python3";

/** What came back on the stream a case opened (see tests/h2/rawh2.py, stream_result). */
export interface StreamResult {
  case: string;
  status: number | null;
  grpc_status: number | null;
  grpc_message: string | null;
  /** Present when the response headers or trailers carried it. */
  grpc_accept_encoding?: string;
  data_bytes: number;
  rst: number | null;
  ended: boolean;
  goaway: number[];
  connection_closed: boolean;
}

/** Fails with the install hint when python3-h2 is missing, rather than with a Python traceback. */
export async function requireH2(): Promise<void> {
  const out = await new Deno.Command(PYTHON, {
    args: ["-c", "import h2, hpack, hyperframe"],
    stderr: "piped",
  })
    .output().catch((err) => ({ success: false, stderr: new TextEncoder().encode(String(err)) }));
  if (!out.success) {
    throw new Error(
      `${PYTHON} cannot import h2 (run scripts/setup.sh, or apt-get install python3-h2): ` +
        new TextDecoder().decode(out.stderr).trim(),
    );
  }
}

/** Runs one case of tests/h2/cases.py against `port` and returns its result line. */
export async function runCase(name: string, port: number): Promise<StreamResult> {
  const out = await new Deno.Command(PYTHON, {
    args: [CASES, name, String(port)],
    stdout: "piped",
    stderr: "piped",
    signal: AbortSignal.timeout(20_000),
  }).output();
  const text = new TextDecoder().decode(out.stdout).trim();
  if (!out.success || text === "") {
    throw new Error(`h2 case ${name} failed: ${new TextDecoder().decode(out.stderr)}`);
  }
  return JSON.parse(text);
}

/** A peer that holds its connection open until `release`; `report` is the line it printed after its attack. */
export interface HeldPeer {
  report: Record<string, unknown>;
  release(): Promise<void>;
}

/** Runs a case that prints its report and then waits (window_zero), for the caller to measure meanwhile. */
export async function runHeldCase(name: string, port: number, args: string[] = []): Promise<HeldPeer> {
  const child = new Deno.Command(PYTHON, {
    args: [CASES, name, String(port), ...args],
    stdin: "piped",
    stdout: "piped",
    stderr: "inherit",
  }).spawn();
  const reader = child.stdout.pipeThrough(new TextDecoderStream()).getReader();
  let line = "";
  while (!line.includes("\n")) {
    const { value, done } = await reader.read();
    if (done) break;
    line += value;
  }
  reader.releaseLock();
  const release = async () => {
    await child.stdin.close().catch(() => {});
    await child.stdout.cancel().catch(() => {});
    await child.status;
  };
  if (line.trim() === "") {
    await release();
    throw new Error(`h2 case ${name} printed nothing`);
  }
  return { report: JSON.parse(line), release };
}

/** A service for hostile-peer tests: no Kafka behind it (records go to an in-memory WAL), gRPC on. */
export function startServiceForPeers(): Promise<Service> {
  return startService({
    producer: { wal: { mode: "fallback", in_memory: true } },
    kafka: { brokers: [`127.0.0.1:${freePort()}`] },
  });
}

/** The gRPC port of a service started by startService. */
export function grpcPort(svc: Service): number {
  return Number(svc.grpc.slice(svc.grpc.lastIndexOf(":") + 1));
}

/** Whether the service process is still running. */
export async function alive(svc: Service): Promise<boolean> {
  const exited = await Promise.race([
    svc.exited.then(() => true),
    new Promise((r) => setTimeout(() => r(false), 50)),
  ]);
  return !exited;
}

/** The pid of the service, found by its config path on the command line (Linux /proc). */
export async function servicePid(svc: Service): Promise<number> {
  for await (const entry of Deno.readDir("/proc")) {
    if (!/^\d+$/.test(entry.name)) continue;
    try {
      const cmdline = await Deno.readTextFile(`/proc/${entry.name}/cmdline`);
      if (cmdline.includes(svc.configPath) && cmdline.includes("main.ts")) return Number(entry.name);
    } catch { /* gone meanwhile */ }
  }
  throw new Error(`no process found for ${svc.configPath}`);
}

/** Resident set size of `pid` in bytes. */
export async function rssBytes(pid: number): Promise<number> {
  const status = await Deno.readTextFile(`/proc/${pid}/status`);
  const m = /VmRSS:\s+(\d+) kB/.exec(status);
  if (m === null) throw new Error(`no VmRSS for pid ${pid}`);
  return Number(m[1]) * 1024;
}
