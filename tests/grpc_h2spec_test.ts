/**
 * h2spec (an HTTP/2 conformance suite) against the gRPC port of the real service. Not every case can pass on
 * a gRPC endpoint unless a request that is not gRPC gets a body: h2spec sends GET / and waits for DATA, or uses
 * that DATA, held back by a zero window, to keep streams open. The service answers such requests 415 with a
 * plain-text reason, so every case must pass, the process must survive them all, and a normal call must work
 * afterwards. The summary and any failing case ids are printed for the record.
 */
import assert from "node:assert/strict";
import { alive, grpcPort, requireH2, runCase, startServiceForPeers } from "./support/h2_peer.ts";

const H2SPEC = Deno.env.get("KA_H2SPEC") ??
  new URL("../.tools/bin/h2spec", import.meta.url).pathname;

/** Seconds h2spec waits for each expected frame. */
const CASE_TIMEOUT_S = 1;

/** The failed test cases in h2spec's JUnit report: section and title, e.g. "http2/6.7: Sends a PING frame with ACK". */
function failedCases(junit: string): string[] {
  const failed: string[] = [];
  for (
    const m of junit.matchAll(/<testcase package="([^"]*)" classname="([^"]*)"[^>]*>([\s\S]*?)<\/testcase>/g)
  ) {
    if (m[3].includes("<failure") || m[3].includes("<error")) failed.push(`${m[1]}: ${m[2]}`);
  }
  return failed;
}

Deno.test("h2spec: every HTTP/2 conformance case passes, and the process lives through them", async () => {
  try {
    await Deno.stat(H2SPEC);
  } catch {
    throw new Error(`h2spec not found at ${H2SPEC} (run scripts/setup.sh)`);
  }
  await requireH2();
  const svc = await startServiceForPeers();
  const dir = await Deno.makeTempDir({ prefix: "ka-h2spec-" });
  try {
    const port = grpcPort(svc);
    const out = await new Deno.Command(H2SPEC, {
      args: ["-h", "127.0.0.1", "-p", String(port), "-o", String(CASE_TIMEOUT_S), "-j", `${dir}/report.xml`],
      stdout: "piped",
      stderr: "piped",
      signal: AbortSignal.timeout(600_000),
    }).output();
    const text = new TextDecoder().decode(out.stdout);
    const summary = text.trim().split("\n").filter((l) => /\d+ tests, \d+ passed/.test(l)).pop();
    assert.ok(summary !== undefined, `no h2spec summary:\n${text}\n${new TextDecoder().decode(out.stderr)}`);
    const junit = await Deno.readTextFile(`${dir}/report.xml`).catch(() => "");
    console.log(`h2spec: ${summary}`);
    const failed = failedCases(junit);
    for (const id of failed) console.log(`  failed: ${id}`);
    assert.ok(junit !== "", "no h2spec JUnit report");
    assert.deepEqual(failed, [], "h2spec cases failing");

    assert.ok(await alive(svc), `the service died during h2spec:\n${await Deno.readTextFile(svc.logPath)}`);
    const ok = await runCase("produce_ok", port);
    assert.ok(
      ok.grpc_status === 0 && ok.data_bytes > 0,
      `no normal call after h2spec: ${JSON.stringify(ok)}`,
    );
  } finally {
    await svc.stop("SIGKILL");
    await Deno.remove(dir, { recursive: true });
  }
});
