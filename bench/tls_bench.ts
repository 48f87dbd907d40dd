/**
 * What TLS and token checks cost on the produce listeners, side by side in one run. HTTP: plain text, plain text
 * with a bearer token, TLS, TLS with a token; wrk drives 100-byte POSTs over 64 connections. gRPC: plain text and
 * TLS (node:tls under our HTTP/2 layer); bench/load grpc drives 4 Produce streams of 100-byte records, 1,000
 * unanswered each. The listener runs in a child process with a facade that accepts at once (no Kafka). Each row
 * gives messages/s, the child's CPU µs per message (utime + stime from /proc), and its ratio to plain text.
 *
 * Run: deno run --allow-all bench/tls_bench.ts [seconds per scenario, default 5]
 */
import { Gate, parseTokens } from "../src/server/auth.ts";
import { startGrpcServer } from "../src/server/grpc/server.ts";
import { startHttpServer } from "../src/server/http.ts";
import { readTls, TlsSource } from "../src/server/tls.ts";
import { freePort } from "../tests/support/service.ts";
import { makeCa, tokenDigest } from "../tests/support/tls.ts";
import { listening } from "../tests/support/wait.ts";
import { instantFacade } from "./instant_facade.ts";

const TOKEN = "bench-token";
const LUA = new URL("./post.lua", import.meta.url).pathname;

/**
 * Child mode: `--serve KIND PORT CERT KEY AUTH` serves the `http` or `grpc` listener until killed (CERT "" = plain
 * text, AUTH "1" = tokens).
 */
async function serve([kind, port, cert, key, auth]: string[]): Promise<void> {
  const tls = cert === ""
    ? undefined
    : new TlsSource(readTls("bench", { certFile: cert, keyFile: key, clientCaFile: "" }));
  const gate = auth === "1"
    ? new Gate({
      principals: parseTokens(
        `- principal: bench\n  sha256: "${await tokenDigest(TOKEN)}"\n  topics: ["*"]\n`,
      ),
      certNames: false,
      allow: [],
    })
    : undefined;
  const listen = `127.0.0.1:${port}`;
  if (kind === "grpc") await startGrpcServer({ listen, facade: instantFacade, tls, maxRequestSize: 4 << 20 });
  else await startHttpServer({ listen, facade: instantFacade, tls, gate });
}

interface Row {
  scenario: string;
  /** Messages (requests, or gRPC records) answered per second. */
  rate: number;
  /** The child's CPU per message, µs. */
  cpuUs: number;
  p99: string;
  errors: number;
}

function cpuSeconds(pid: number): number {
  const stat = Deno.readTextFileSync(`/proc/${pid}/stat`);
  const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
  return (Number(fields[11]) + Number(fields[12])) / 100; // CLK_TCK is 100 here
}

async function wrk(
  url: string,
  seconds: number,
  auth: boolean,
): Promise<{ messages: number; p99: string; errors: number }> {
  const header = auth ? ["-H", `Authorization: Bearer ${TOKEN}`] : [];
  const out = await new Deno.Command("wrk", {
    args: ["-t1", "-c64", `-d${seconds}s`, "--latency", "-s", LUA, ...header, url],
    stdout: "piped",
    stderr: "piped",
  }).output();
  const text = new TextDecoder().decode(out.stdout);
  const messages = Number(/(\d+) requests in/.exec(text)?.[1] ?? NaN);
  const p99 = /\s99%\s+(\S+)/.exec(text)?.[1] ?? "?";
  const non2xx = Number(/Non-2xx or 3xx responses: (\d+)/.exec(text)?.[1] ?? 0);
  const sockErr = /Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)/.exec(text);
  return {
    messages,
    p99,
    errors: non2xx + (sockErr ? sockErr.slice(1).reduce((a, b) => a + Number(b), 0) : 0),
  };
}

/** bench/load grpc against `target` for `seconds`, over TLS when `ca` is given. */
async function grpcLoad(
  loader: string,
  target: string,
  seconds: number,
  ca: string | undefined,
): Promise<{ messages: number; p99: string; errors: number }> {
  const args = ["grpc", "-seconds", String(seconds), "-target", target, "-topic", "bench", "-size", "100"];
  if (ca !== undefined) args.push("-ca", ca);
  const out = await new Deno.Command(loader, { args, stdout: "piped", stderr: "piped" }).output();
  if (!out.success) throw new Error(`bench/load grpc: ${new TextDecoder().decode(out.stderr).trim()}`);
  const r = JSON.parse(new TextDecoder().decode(out.stdout));
  return { messages: r.ok, p99: `${r.p99Ms?.toFixed(2) ?? "?"}ms`, errors: r.errors };
}

async function main(seconds: number): Promise<void> {
  const dir = await Deno.makeTempDir({ prefix: "ka-tls-bench-" });
  const build = await new Deno.Command("bash", {
    args: [new URL("./load/build.sh", import.meta.url).pathname],
    stdout: "piped",
  }).output();
  if (!build.success) throw new Error("bench/load/build.sh failed");
  const loader = new TextDecoder().decode(build.stdout).trim();
  try {
    const ca = await makeCa(dir, "ca");
    const pair = await ca.server();
    const scenarios = [
      ["http", "http plain", false, false],
      ["http", "http plain + token", false, true],
      ["http", "http tls", true, false],
      ["http", "http tls + token", true, true],
      ["grpc", "grpc plain", false, false],
      ["grpc", "grpc tls", true, false],
    ] as const;
    const rows: Row[] = [];
    for (const [kind, scenario, tls, auth] of scenarios) {
      const port = freePort();
      const child = new Deno.Command(Deno.execPath(), {
        args: [
          "run",
          "-A",
          import.meta.filename!,
          "--serve",
          kind,
          String(port),
          tls ? pair.cert : "",
          tls ? pair.key : "",
          auth ? "1" : "0",
        ],
        stdout: "null",
        stderr: "null",
      }).spawn();
      try {
        await listening(port, 10_000);
        const cpu0 = cpuSeconds(child.pid);
        const run = kind === "grpc"
          ? await grpcLoad(loader, `127.0.0.1:${port}`, seconds, tls ? ca.cert : undefined)
          : await wrk(`${tls ? "https" : "http"}://127.0.0.1:${port}/topics/bench/messages`, seconds, auth);
        const cpuUs = (cpuSeconds(child.pid) - cpu0) * 1e6 / run.messages;
        rows.push({ scenario, rate: run.messages / seconds, cpuUs, p99: run.p99, errors: run.errors });
      } finally {
        child.kill("SIGKILL");
        await child.status;
      }
    }
    console.log(
      "| scenario | messages/s | vs plain | CPU µs/message | vs plain | p99 | errors |\n" +
        "| --- | --- | --- | --- | --- | --- | --- |",
    );
    for (const r of rows) {
      const plain = rows.find((p) => p.scenario === `${r.scenario.split(" ")[0]} plain`)!;
      console.log(
        `| ${r.scenario} | ${Math.round(r.rate)} | ${(r.rate / plain.rate).toFixed(2)} | ${
          r.cpuUs.toFixed(1)
        } | ` +
          `${(r.cpuUs / plain.cpuUs).toFixed(2)} | ${r.p99} | ${r.errors} |`,
      );
    }
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
}

if (Deno.args[0] === "--serve") await serve(Deno.args.slice(1));
else await main(Number(Deno.args[0] ?? 5));
