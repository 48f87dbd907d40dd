/** grpcurl, a client that knows nothing but what server reflection tells it, against the real service. */
import assert from "node:assert/strict";
import { grpcPort, startServiceForPeers } from "./support/h2_peer.ts";

const GRPCURL = Deno.env.get("KA_GRPCURL") ?? new URL("../.tools/bin/grpcurl", import.meta.url).pathname;

async function grpcurl(args: string[]): Promise<string> {
  const out = await new Deno.Command(GRPCURL, {
    args: ["-plaintext", "-max-time", "10", ...args],
    stdout: "piped",
    stderr: "piped",
  }).output();
  const text = new TextDecoder().decode(out.stdout);
  if (!out.success) {
    throw new Error(`grpcurl ${args.join(" ")}: ${new TextDecoder().decode(out.stderr)}${text}`);
  }
  return text;
}

Deno.test("grpcurl lists and describes the services by reflection, and produces a record", async () => {
  try {
    await Deno.stat(GRPCURL);
  } catch {
    throw new Error(`grpcurl not found at ${GRPCURL} (run scripts/setup.sh)`);
  }
  const svc = await startServiceForPeers();
  try {
    const target = `127.0.0.1:${grpcPort(svc)}`;
    assert.deepEqual((await grpcurl([target, "list"])).trim().split("\n").sort(), [
      "KafkaAmbassador",
      "grpc.health.v1.Health",
    ]);
    const described = await grpcurl([target, "describe", "KafkaAmbassador"]);
    assert.ok(described.includes("rpc Produce ( stream .ProdRq ) returns ( stream .ProdRs )"), described);
    const prodRq = await grpcurl([target, "describe", "ProdRq"]);
    assert.ok(prodRq.includes("optional int32 partition = 7;"), prodRq);

    const request = JSON.stringify({
      topic: "grpcurl",
      message: btoa("hello"),
      streamOffset: "18446744073709551615",
    });
    const reply = JSON.parse(await grpcurl(["-d", request, target, "KafkaAmbassador/Produce"]));
    assert.equal(reply.streamOffset, "18446744073709551615");
    const health = JSON.parse(await grpcurl([target, "grpc.health.v1.Health/Check"]));
    assert.ok(["SERVING", "NOT_SERVING"].includes(health.status), JSON.stringify(health));
  } finally {
    await svc.stop("SIGKILL");
  }
});
