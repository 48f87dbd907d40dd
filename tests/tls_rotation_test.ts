/**
 * SIGHUP reads the listeners' certificates and the tokens file again, with the service running: under HTTP and
 * gRPC load no request fails, new connections get the new certificate, and a file that cannot be used keeps the
 * old one.
 */
import assert from "node:assert/strict";
import { Buffer } from "node:buffer";
import * as grpc from "@grpc/grpc-js";
import * as protoLoader from "@grpc/proto-loader";
import { PROTO_PATH } from "../src/server/grpc/schema.ts";
import { freePort, startService } from "./support/service.ts";
import { tempDir } from "./support/temp_dir.ts";
import { fileSerial, makeCa, servedSerial, tokenDigest } from "./support/tls.ts";
import { waitFor } from "./support/wait.ts";

/** Most requests of the load, and how many run at once. */
const REQUESTS = 4000;
const WORKERS = 8;
/** Each worker opens a new connection (a new TLS handshake) after this many requests. */
const REQUESTS_PER_CONNECTION = 20;

/** gRPC load: connections made one after another, each with one Produce stream of this many records. */
const GRPC_WORKERS = 2;
const RECORDS_PER_STREAM = 20;

/** One connection, one Produce stream of RECORDS_PER_STREAM records; what went wrong, if anything. */
async function grpcRound(port: number, ca: Buffer, token: string): Promise<string | undefined> {
  const definition = protoLoader.loadSync(PROTO_PATH, { keepCase: true, longs: String, defaults: true });
  const Service = grpc.loadPackageDefinition(definition).KafkaAmbassador as grpc.ServiceClientConstructor;
  const client = new Service(`127.0.0.1:${port}`, grpc.credentials.createSsl(ca), {
    "grpc.ssl_target_name_override": "localhost",
  });
  try {
    return await new Promise((resolve) => {
      const md = new grpc.Metadata();
      md.set("authorization", `Bearer ${token}`);
      const call = client.Produce(md);
      const codes: number[] = [];
      call.on("data", (rs: { code: number }) => codes.push(rs.code));
      call.on("error", () => {});
      call.on("status", (status: grpc.StatusObject) => {
        const ok = status.code === grpc.status.OK && codes.length === RECORDS_PER_STREAM &&
          codes.every((c) => c === 0);
        resolve(ok ? undefined : `grpc status ${status.code} ${status.details}, codes ${codes}`);
      });
      for (let i = 0; i < RECORDS_PER_STREAM; i++) {
        call.write({ topic: "load.grpc", message: new TextEncoder().encode("x"), streamOffset: String(i) });
      }
      call.end();
    });
  } finally {
    client.close();
  }
}

async function tokensFile(path: string, token: string): Promise<void> {
  await Deno.writeTextFile(
    path,
    `- principal: load\n  sha256: "${await tokenDigest(token)}"\n  topics: ["load.*"]\n`,
  );
}

Deno.test({
  name:
    "SIGHUP under load: 0 failed requests, new connections get the new certificate, bad files are not taken",
  sanitizeOps: false,
  sanitizeResources: false,
  async fn() {
    await using dir = await tempDir("ka-rotate-");
    const ca = await makeCa(dir.path, "ca");
    const before = await ca.server("server-before");
    const after = await ca.server("server-after");
    const live = { cert: `${dir.path}/live.crt`, key: `${dir.path}/live.key` };
    await Deno.copyFile(before.cert, live.cert);
    await Deno.copyFile(before.key, live.key);
    const tokens = `${dir.path}/tokens.yaml`;
    await tokensFile(tokens, "token-before");
    const tls = { cert_file: live.cert, key_file: live.key };
    const httpPort = freePort(), grpcPort = freePort();
    await using svc = await startService({
      server: {
        http: { listen: `127.0.0.1:${httpPort}`, tls },
        grpc: { listen: `127.0.0.1:${grpcPort}`, tls },
      },
      auth: { tokens_file: tokens },
      producer: { wal: { mode: "fallback", in_memory: true } },
      kafka: { brokers: [`127.0.0.1:${freePort()}`] }, // nothing listens there: ack=none needs no broker
    }, { dir: dir.path });
    const caPem = await Deno.readTextFile(ca.cert);
    const url = `https://127.0.0.1:${httpPort}/topics/load.a/messages`;
    const post = async (client: Deno.HttpClient, token: string): Promise<number> => {
      const r = await fetch(url, {
        method: "POST",
        body: "x",
        headers: { authorization: `Bearer ${token}` },
        client,
      });
      await r.body?.cancel();
      return r.status;
    };

    const countReads = async () =>
      (await svc.logs()).filter((l) => l.msg === "security files read again").length;

    assert.equal(await servedSerial(httpPort, ca.cert), await fileSerial(before.cert));
    // The load runs until REQUESTS / 2 requests were sent after the service logged that it read the new files
    // (so the rotation happened under load), and never past REQUESTS in all.
    let done = 0;
    let afterReload = -1;
    const failures: string[] = [];
    const hup = Promise.withResolvers<void>();
    const worker = async () => {
      let client = Deno.createHttpClient({ caCerts: [caPem] });
      try {
        for (let sent = 0; done < REQUESTS && afterReload < REQUESTS / 2; sent++) {
          if (sent > 0 && sent % REQUESTS_PER_CONNECTION === 0) {
            client.close();
            client = Deno.createHttpClient({ caCerts: [caPem] });
          }
          if (afterReload >= 0) afterReload++;
          try {
            const status = await post(client, "token-before");
            if (status !== 200) failures.push(`status ${status}`);
          } catch (err) {
            failures.push((err as Error).message);
          }
          if (++done === REQUESTS / 4) hup.resolve();
        }
      } finally {
        client.close();
      }
    };
    let grpcRounds = 0;
    const grpcWorker = async () => {
      const caBytes = Buffer.from(caPem);
      while (done < REQUESTS && afterReload < REQUESTS / 2) {
        const failure = await grpcRound(grpcPort, caBytes, "token-before");
        if (failure !== undefined) failures.push(failure);
        grpcRounds++;
      }
    };
    const load = Promise.all([
      ...Array.from({ length: WORKERS }, worker),
      ...Array.from({ length: GRPC_WORKERS }, grpcWorker),
    ]);
    await hup.promise;
    await Deno.copyFile(after.cert, live.cert);
    await Deno.copyFile(after.key, live.key);
    svc.signal("SIGHUP");
    await waitFor("the certificate to be read again", async () => await countReads() > 0, 30_000, 10);
    afterReload = 0;
    await load;
    assert.deepEqual(failures, [], `${failures.length} of ${done} requests failed`);
    assert.ok(afterReload >= REQUESTS / 2, `only ${afterReload} requests were sent after the reload`);
    assert.equal(await servedSerial(httpPort, ca.cert), await fileSerial(after.cert));
    assert.equal(await servedSerial(grpcPort, ca.cert), await fileSerial(after.cert));

    // A new tokens file: the old token is refused, the new one taken.
    await tokensFile(tokens, "token-after");
    const reads = await countReads();
    svc.signal("SIGHUP");
    await waitFor("the files to be read again", async () => await countReads() > reads);
    const client = Deno.createHttpClient({ caCerts: [caPem] });
    try {
      assert.equal(await post(client, "token-before"), 401);
      assert.equal(await post(client, "token-after"), 200);

      // Files that cannot be used: the old certificate and principals stay, one error line each.
      await Deno.writeTextFile(tokens, `- principal: load\n  sha256: "not-a-digest"\n  topics: ["load.*"]\n`);
      await Deno.writeTextFile(live.key, "not a key");
      svc.signal("SIGHUP");
      const errors = async () =>
        (await svc.logs()).filter((l) => l.level === "error" && String(l.msg).startsWith("SIGHUP:")).map((
          l,
        ) => String(l.msg));
      await waitFor("the errors to be logged", async () => (await errors()).length >= 3);
      const logged = await errors();
      assert.equal(logged.filter((m) => m.includes("keeping the principals")).length, 1, logged.join("\n"));
      assert.equal(logged.filter((m) => m.includes("keeps its certificate")).length, 2, logged.join("\n"));
      assert.ok(
        logged.every((m) => !m.includes("not-a-digest") && !m.includes("token-after")),
        logged.join("\n"),
      );
      assert.equal(await post(client, "token-after"), 200);
      assert.equal(await servedSerial(httpPort, ca.cert), await fileSerial(after.cert));
    } finally {
      client.close();
    }
    const log = await Deno.readTextFile(svc.logPath);
    for (const secret of ["token-before", "token-after", "PRIVATE KEY"]) {
      assert.ok(!log.includes(secret), `the log shows ${secret}`);
    }
    console.log(
      `rotation: ${done} HTTP requests (${afterReload} after the reload), ${grpcRounds} gRPC connections of ` +
        `${RECORDS_PER_STREAM} records, ${failures.length} failed`,
    );
  },
});
