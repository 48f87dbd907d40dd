/**
 * Test certificates made with the `openssl` command line: CAs, and keys with certificates a CA signs. Keys are
 * PKCS#8 PEM, which both librdkafka and the JVM (`ssl.keystore.type=PEM`) read, so no Java keystore is needed.
 */
import { runCommand } from "./command.ts";

/** A key and its certificate, as PEM files. */
export interface KeyPair {
  /** The certificate (PEM). */
  certPath: string;
  /** The private key (PKCS#8 PEM; encrypted when made with a passphrase). */
  keyPath: string;
}

/** Options for {@linkcode issueCert}. */
export interface IssueOptions {
  /** subjectAltName, e.g. `DNS:localhost,IP:127.0.0.1`. */
  san: string;
  /** Encrypts the key with this passphrase (AES-256); default: unencrypted. */
  passphrase?: string;
}

const DAYS = "2";
const TIMEOUT_MS = 20_000;

/**
 * A self-signed CA certificate and key in `dir`, named `<name>.pem` and `<name>.key`.
 * @example const ca = await makeCa(dir, "ca");
 */
export async function makeCa(dir: string, name: string): Promise<KeyPair> {
  const pair = { certPath: `${dir}/${name}.pem`, keyPath: `${dir}/${name}.key` };
  await openssl([
    "req",
    "-x509",
    ...NEW_KEY,
    "-nodes",
    "-keyout",
    pair.keyPath,
    "-out",
    pair.certPath,
    "-days",
    DAYS,
    "-subj",
    `/CN=${name}`,
    "-addext",
    "basicConstraints=critical,CA:TRUE",
    "-addext",
    "keyUsage=critical,keyCertSign,cRLSign",
  ]);
  return pair;
}

/**
 * A new key and a certificate for it signed by `ca`, in `dir` as `<name>.pem` and `<name>.key`.
 * @example const broker = await issueCert(ca, dir, "broker", { san: "DNS:localhost,IP:127.0.0.1" });
 */
export async function issueCert(
  ca: KeyPair,
  dir: string,
  name: string,
  opts: IssueOptions,
): Promise<KeyPair> {
  const pair = { certPath: `${dir}/${name}.pem`, keyPath: `${dir}/${name}.key` };
  const csr = `${dir}/${name}.csr`;
  const ext = `${dir}/${name}.ext`;
  const keyProtection = opts.passphrase === undefined ? ["-nodes"] : ["-passout", `pass:${opts.passphrase}`];
  await openssl([
    "req",
    ...NEW_KEY,
    ...keyProtection,
    "-keyout",
    pair.keyPath,
    "-out",
    csr,
    "-subj",
    `/CN=${name}`,
  ]);
  await Deno.writeTextFile(ext, `subjectAltName=${opts.san}\nextendedKeyUsage=serverAuth,clientAuth\n`);
  await openssl([
    "x509",
    "-req",
    "-in",
    csr,
    "-CA",
    ca.certPath,
    "-CAkey",
    ca.keyPath,
    "-set_serial",
    String(Date.now()),
    "-days",
    DAYS,
    "-extfile",
    ext,
    "-out",
    pair.certPath,
  ]);
  return pair;
}

/** Writes the key and then the certificate into one file: the JVM's PEM keystore format. */
export async function keystorePem(pair: KeyPair, path: string): Promise<string> {
  const key = await Deno.readTextFile(pair.keyPath);
  const cert = await Deno.readTextFile(pair.certPath);
  await Deno.writeTextFile(path, key + cert);
  return path;
}

/** RSA is what every TLS stack in the tests reads; 2048 bits keeps key generation short. */
const NEW_KEY = ["-newkey", "rsa:2048"];

async function openssl(args: string[]): Promise<void> {
  const r = await runCommand("openssl", args, { timeoutMs: TIMEOUT_MS });
  if (r.code !== 0) throw new Error(`openssl ${args[0]} failed (exit ${r.code}): ${r.stderr.trim()}`);
}
