/**
 * Memory kept per closed gRPC connection: the gRPC echo server (bench/grpc_echo_server.ts) of a tree, and
 * ROUNDS x N HTTP/2 connections (50 at a time) that each send the preface and SETTINGS, read the server's
 * SETTINGS and close. Prints the server's RSS before and 3 s after each round: a runtime that keeps memory per
 * closed connection grows every round, one that does not levels off after the first.
 *
 *   deno run -A bench/grpc_conn_memory.ts [N=20000] [ROUNDS=3] [TREE=this worktree]
 */
import { startChildServer } from "./child_server.ts";

const ROOT = new URL("..", import.meta.url).pathname;
const n = Number(Deno.args[0] ?? 20_000);
const rounds = Number(Deno.args[1] ?? 3);
const tree = Deno.args[2] ?? ROOT;

const PREFACE_AND_SETTINGS = new Uint8Array([
  ...new TextEncoder().encode("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"),
  ...[0, 0, 0, 4, 0, 0, 0, 0, 0],
]);

const rssMb = (pid: number) =>
  Number(/VmRSS:\s+(\d+)/.exec(Deno.readTextFileSync(`/proc/${pid}/status`))?.[1] ?? NaN) / 1024;

async function connectAndClose(port: number): Promise<void> {
  const conn = await Deno.connect({ hostname: "127.0.0.1", port });
  try {
    await conn.write(PREFACE_AND_SETTINGS);
    await conn.read(new Uint8Array(1024));
  } finally {
    conn.close();
  }
}

await using echo = await startChildServer(`${tree}/bench/grpc_echo_server.ts`);
const port = echo.port;
{
  for (let round = 1; round <= rounds; round++) {
    const before = rssMb(echo.pid);
    let started = 0, failed = 0;
    await Promise.all(Array.from({ length: 50 }, async () => {
      while (started < n) {
        started++;
        await connectAndClose(port).catch(() => failed++);
      }
    }));
    await new Promise((resolve) => setTimeout(resolve, 3000));
    console.log(
      `round ${round}: ${n} connections (${failed} failed), RSS ${before.toFixed(0)} -> ${
        rssMb(echo.pid).toFixed(0)
      } MiB`,
    );
  }
  console.log(`load average: ${Deno.readTextFileSync("/proc/loadavg").trim()}`);
}
