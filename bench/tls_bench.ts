/**
 * What TLS and token checks cost on the HTTP produce listener, side by side in one run: plain text, plain text
 * with a bearer token, TLS (node:https), TLS with a token. The listener runs in a child process with a facade
 * that accepts at once (no Kafka); wrk drives 100-byte POSTs over 64 connections.
 *
 * Run: deno run --allow-all bench/tls_bench.ts [seconds per scenario, default 5]
 */
import { Gate, parseTokens } from "../src/server/auth.ts";
import { startHttpServer } from "../src/server/http.ts";
import { readTls, TlsSource } from "../src/server/tls.ts";
import { freePort } from "../tests/support/service.ts";
import { makeCa, tokenDigest } from "../tests/support/tls.ts";
import { listening } from "../tests/support/wait.ts";
import { instantFacade } from "./instant_facade.ts";

const TOKEN = "bench-token";
const LUA = new URL("./post.lua", import.meta.url).pathname;

/** Child mode: `--serve PORT CERT KEY AUTH` serves until killed (CERT "" = plain text, AUTH "1" = tokens). */
async function serve([port, cert, key, auth]: string[]): Promise<void> {
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
  await startHttpServer({ listen: `127.0.0.1:${port}`, facade: instantFacade, tls, gate });
}

async function wrk(
  url: string,
  seconds: number,
  auth: boolean,
): Promise<{ rps: number; p99: string; errors: number }> {
  const header = auth ? ["-H", `Authorization: Bearer ${TOKEN}`] : [];
  const out = await new Deno.Command("wrk", {
    args: ["-t1", "-c64", `-d${seconds}s`, "--latency", "-s", LUA, ...header, url],
    stdout: "piped",
    stderr: "piped",
  }).output();
  const text = new TextDecoder().decode(out.stdout);
  const rps = Number(/Requests\/sec:\s+([\d.]+)/.exec(text)?.[1] ?? NaN);
  const p99 = /\s99%\s+(\S+)/.exec(text)?.[1] ?? "?";
  const non2xx = Number(/Non-2xx or 3xx responses: (\d+)/.exec(text)?.[1] ?? 0);
  const sockErr = /Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)/.exec(text);
  return { rps, p99, errors: non2xx + (sockErr ? sockErr.slice(1).reduce((a, b) => a + Number(b), 0) : 0) };
}

async function main(seconds: number): Promise<void> {
  const dir = await Deno.makeTempDir({ prefix: "ka-tls-bench-" });
  try {
    const ca = await makeCa(dir, "ca");
    const pair = await ca.server();
    const rows = [];
    for (
      const [scenario, tls, auth] of [["plain", false, false], ["plain + token", false, true], [
        "tls",
        true,
        false,
      ], ["tls + token", true, true]] as const
    ) {
      const port = freePort();
      const child = new Deno.Command(Deno.execPath(), {
        args: [
          "run",
          "-A",
          import.meta.filename!,
          "--serve",
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
        const url = `${tls ? "https" : "http"}://127.0.0.1:${port}/topics/bench/messages`;
        rows.push({ scenario, ...await wrk(url, seconds, auth) });
      } finally {
        child.kill("SIGKILL");
        await child.status;
      }
    }
    const plain = rows[0].rps;
    console.log("| scenario | requests/s | vs plain | p99 | errors |\n| --- | --- | --- | --- | --- |");
    for (const r of rows) {
      console.log(
        `| ${r.scenario} | ${Math.round(r.rps)} | ${(r.rps / plain).toFixed(2)} | ${r.p99} | ${r.errors} |`,
      );
    }
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
}

if (Deno.args[0] === "--serve") await serve(Deno.args.slice(1));
else await main(Number(Deno.args[0] ?? 5));
