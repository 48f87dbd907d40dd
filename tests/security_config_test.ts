/** Security settings that cannot be used stop the service before it starts: exit 2 with one line naming the key. */
import assert from "node:assert/strict";
import { stringify } from "yaml";
import { shippedFlags } from "./support/service.ts";
import { tempDir } from "./support/temp_dir.ts";
import { makeCa, tokenDigest } from "./support/tls.ts";

const MAIN = new URL("../src/main.ts", import.meta.url).pathname;
const SHIPPED = shippedFlags(new URL("../", import.meta.url).pathname);

async function checkConfig(path: string): Promise<{ code: number; out: string; err: string }> {
  const out = await new Deno.Command(Deno.execPath(), {
    args: ["run", ...SHIPPED, MAIN, "-config", path, "--check-config"],
    env: {},
    stdin: "null",
  }).output();
  const dec = new TextDecoder();
  return { code: out.code, out: dec.decode(out.stdout), err: dec.decode(out.stderr) };
}

const dir = await tempDir("ka-sec-config-");
globalThis.addEventListener("unload", () => Deno.removeSync(dir.path, { recursive: true }));
const ca = await makeCa(dir.path, "ca");
const server = await ca.server();
const other = await ca.server("other");
const goodTokens = `${dir.path}/tokens.yaml`;
await Deno.writeTextFile(
  goodTokens,
  `- principal: billing\n  sha256: "${await tokenDigest("t")}"\n  topics: ["billing.*"]\n`,
);
const badTokens = `${dir.path}/bad-tokens.yaml`;
await Deno.writeTextFile(
  badTokens,
  `- principal: billing\n  sha256: "my-secret-token"\n  topics: ["billing.*"]\n`,
);

function config(extra: Record<string, unknown>): Record<string, unknown> {
  return {
    producer: { wal: { mode: "disable" } },
    kafka: { brokers: ["127.0.0.1:1"] },
    ...extra,
  };
}
const httpTls = (tls: Record<string, string>) => ({ server: { http: { listen: "127.0.0.1:0", tls } } });

const INVALID: Array<[string, Record<string, unknown>, RegExp]> = [
  [
    "a certificate file that cannot be read",
    httpTls({ cert_file: `${dir.path}/missing.crt`, key_file: server.key }),
    /config: server\.http\.tls\.cert_file: \S+missing\.crt: file not found/,
  ],
  [
    "a key that is not the certificate's",
    httpTls({ cert_file: server.cert, key_file: other.key }),
    /config: server\.http\.tls\.key_file: \S+other\.key: not the key of /,
  ],
  [
    "a certificate without its key",
    { server: { grpc: { listen: "127.0.0.1:0", tls: { cert_file: server.cert } } } },
    /config: server\.grpc\.tls\.key_file: required when TLS is on/,
  ],
  [
    "a client CA that is not a certificate",
    {
      server: {
        monitoring: {
          listen: "127.0.0.1:0",
          tls: { cert_file: server.cert, key_file: server.key, client_ca_file: server.key },
        },
      },
    },
    /config: server\.monitoring\.tls\.client_ca_file: \S+: not a PEM certificate/,
  ],
  [
    "a tokens file with a bad digest",
    { auth: { tokens_file: badTokens } },
    /config: auth\.tokens_file: \S+bad-tokens\.yaml: entry 1 \(billing\): sha256: expected 64 hex digits/,
  ],
  [
    "a tokens file that is missing",
    { auth: { tokens_file: `${dir.path}/nope.yaml` } },
    /auth\.tokens_file: .*file not found/,
  ],
  [
    "an unknown mtls_principal",
    { auth: { tokens_file: goodTokens, mtls_principal: "ou" } },
    /config: auth\.mtls_principal: expected one of none, cn, got "ou"/,
  ],
  [
    "mtls_principal without a tokens file",
    { auth: { mtls_principal: "cn" } },
    /auth\.mtls_principal: cn needs auth\.tokens_file/,
  ],
];

for (const [name, extra, expected] of INVALID) {
  Deno.test(`security config: ${name} exits 2 with one line naming the key`, async () => {
    const path = `${dir.path}/config.yaml`;
    await Deno.writeTextFile(path, stringify(config(extra)));
    const r = await checkConfig(path);
    assert.equal(r.code, 2, `${r.out}${r.err}`);
    const lines = r.err.trim().split("\n");
    assert.equal(lines.length, 1, r.err);
    assert.match(JSON.parse(lines[0]).msg, expected);
    assert.ok(!r.err.includes("my-secret-token"), "a token pasted as a digest is not echoed");
  });
}

Deno.test("security config: TLS on every listener, mTLS, tokens and an allow-list pass --check-config", async () => {
  const tls = { cert_file: server.cert, key_file: server.key, client_ca_file: ca.cert };
  const path = `${dir.path}/good.yaml`;
  await Deno.writeTextFile(
    path,
    stringify(config({
      server: {
        http: { listen: "127.0.0.1:0", tls },
        grpc: { listen: "127.0.0.1:0", tls },
        monitoring: { listen: "127.0.0.1:0", tls },
      },
      auth: { tokens_file: goodTokens, mtls_principal: "cn" },
      topics: { allow: ["billing.*"] },
    })),
  );
  const r = await checkConfig(path);
  assert.equal(r.code, 0, r.err);
  assert.match(r.out, /config ok/);
});
