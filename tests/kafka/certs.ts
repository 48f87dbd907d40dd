/**
 * Test certificates for brokers and their clients: CAs, and keys with certificates a CA signs (made by
 * tests/support/tls.ts). Keys are RSA, PKCS#8 PEM, which both librdkafka and the JVM (`ssl.keystore.type=PEM`)
 * read, so no Java keystore is needed.
 */
import { RSA_KEY, selfSignedCa, signedPair } from "../support/tls.ts";

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

/**
 * A self-signed CA certificate and key in `dir`, named `<name>.crt` and `<name>.key`.
 * @example const ca = await makeCa(dir, "ca");
 */
export async function makeCa(dir: string, name: string): Promise<KeyPair> {
  const { cert, key } = await selfSignedCa(dir, name, RSA_KEY);
  return { certPath: cert, keyPath: key };
}

/**
 * A new key and a certificate for it signed by `ca`, in `dir` as `<name>.crt` and `<name>.key`.
 * @example const broker = await issueCert(ca, dir, "broker", { san: "DNS:localhost,IP:127.0.0.1" });
 */
export async function issueCert(
  ca: KeyPair,
  dir: string,
  name: string,
  opts: IssueOptions,
): Promise<KeyPair> {
  const { cert, key } = await signedPair({
    dir,
    file: name,
    cn: name,
    extensions: `subjectAltName=${opts.san}\nextendedKeyUsage=serverAuth,clientAuth\n`,
    ca: { cert: ca.certPath, key: ca.keyPath },
    newKey: RSA_KEY,
    passphrase: opts.passphrase,
  });
  return { certPath: cert, keyPath: key };
}

/** Writes the key and then the certificate into one file: the JVM's PEM keystore format. */
export async function keystorePem(pair: KeyPair, path: string): Promise<string> {
  const key = await Deno.readTextFile(pair.keyPath);
  const cert = await Deno.readTextFile(pair.certPath);
  await Deno.writeTextFile(path, key + cert);
  return path;
}
