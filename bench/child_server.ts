/**
 * A bench server started as a child process: a Deno script that takes its port as first argument (e.g.
 * grpc_echo_server.ts), run with this repository's deno.json, and handed back once the port accepts connections.
 * @example
 * await using echo = await startChildServer(`${tree}/bench/grpc_echo_server.ts`);
 * // load 127.0.0.1:${echo.port}, read /proc/${echo.pid}/stat
 */
import { freePort } from "../tests/support/service.ts";
import { listening } from "../tests/support/wait.ts";

const ROOT = new URL("..", import.meta.url).pathname;

/** A running child server; disposing it kills it and waits for its exit. */
export interface ChildServer extends AsyncDisposable {
  readonly port: number;
  readonly pid: number;
}

/** Starts `deno run --allow-all <script> PORT ...args` (stdout and stderr dropped, logs at warn). */
export async function startChildServer(script: string, args: string[] = []): Promise<ChildServer> {
  const port = freePort();
  const child = new Deno.Command(Deno.env.get("KA_DENO") ?? Deno.execPath(), {
    args: ["run", "--allow-all", "--quiet", `--config=${ROOT}deno.json`, script, String(port), ...args],
    stdout: "null",
    stderr: "null",
    env: { KA_LOG_LEVEL: "warn" },
  }).spawn();
  const stop = async () => {
    try {
      child.kill();
    } catch {
      // already gone
    }
    await child.status;
  };
  try {
    await listening(port, 10_000);
  } catch (err) {
    await stop();
    throw err;
  }
  return { port, pid: child.pid, [Symbol.asyncDispose]: stop };
}
