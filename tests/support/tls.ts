/**
 * Certificates for TLS tests, made with the openssl command line: a CA, server certificates for 127.0.0.1 and
 * localhost, client certificates with a given CN. Keys are P-256 (fast to make); every certificate is X.509 v3,
 * which rustls-based TLS (Deno's) requires of client certificates.
 */

/** Paths of PEM files in the directory given to makeCa. */
export interface Ca {
  readonly dir: string;
  readonly cert: string;
  readonly key: string;
  /** A server certificate for 127.0.0.1 and localhost, signed by this CA; `name` sets the file names. */
  server(name?: string): Promise<KeyPair>;
  /** A client certificate with subject CN `cn`, signed by this CA. */
  client(cn: string): Promise<KeyPair>;
}

export interface KeyPair {
  readonly cert: string;
  readonly key: string;
}

/** Makes a CA named `name` in `dir`. */
export async function makeCa(dir: string, name = "test-ca"): Promise<Ca> {
  const { cert, key } = await selfSignedCa(dir, name);
  const issue = (file: string, cn: string, extensions: string) =>
    signedPair({ dir, file, cn, extensions, ca: { cert, key } });
  return {
    dir,
    cert,
    key,
    server: (file = `${name}-server`) =>
      issue(file, "localhost", "subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth\n"),
    client: (cn) => issue(`${name}-client-${cn}`, cn, "extendedKeyUsage=clientAuth\n"),
  };
}

/** openssl `req` key options: P-256 by default (fast to make); the JVM's PEM keystore wants RSA. */
export const EC_KEY = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256"];
export const RSA_KEY = ["-newkey", "rsa:2048"];

/** A self-signed CA certificate and unencrypted key: `<dir>/<name>.crt` and `.key`. */
export async function selfSignedCa(dir: string, name: string, newKey = EC_KEY): Promise<KeyPair> {
  const pair = { cert: `${dir}/${name}.crt`, key: `${dir}/${name}.key` };
  await openssl([
    "req",
    "-x509",
    ...newKey,
    "-nodes",
    "-keyout",
    pair.key,
    "-out",
    pair.cert,
    "-days",
    "2",
    "-subj",
    `/CN=${name}`,
    "-addext",
    "basicConstraints=critical,CA:TRUE",
    "-addext",
    "keyUsage=critical,keyCertSign,cRLSign",
  ]);
  return pair;
}

/** How signedPair makes a key and its certificate. */
export interface SignedPairOptions {
  dir: string;
  /** File names: `<dir>/<file>.crt` and `.key`. */
  file: string;
  /** The subject CN. */
  cn: string;
  /** X.509 v3 extensions, one `name=value` per line (subjectAltName, extendedKeyUsage ...). */
  extensions: string;
  ca: KeyPair;
  /** @default EC_KEY */
  newKey?: string[];
  /** Encrypts the key with this passphrase (AES-256); default: unencrypted. */
  passphrase?: string;
}

/** A new key and a certificate for it signed by `opts.ca`; every certificate is X.509 v3 (see the top). */
export async function signedPair(opts: SignedPairOptions): Promise<KeyPair> {
  const { dir, file } = opts;
  const pair = { cert: `${dir}/${file}.crt`, key: `${dir}/${file}.key` };
  const csr = `${dir}/${file}.csr`;
  const ext = `${dir}/${file}.ext`;
  await Deno.writeTextFile(ext, opts.extensions);
  const protection = opts.passphrase === undefined ? ["-nodes"] : ["-passout", `pass:${opts.passphrase}`];
  const newKey = opts.newKey ?? EC_KEY;
  await openssl([
    "req",
    ...newKey,
    ...protection,
    "-keyout",
    pair.key,
    "-out",
    csr,
    "-subj",
    `/CN=${opts.cn}`,
  ]);
  const serial = `0x${
    crypto.getRandomValues(new Uint8Array(8)).reduce((h, b) => h + b.toString(16).padStart(2, "0"), "")
  }`;
  await openssl([
    "x509",
    "-req",
    "-in",
    csr,
    "-CA",
    opts.ca.cert,
    "-CAkey",
    opts.ca.key,
    "-set_serial",
    serial,
    "-out",
    pair.cert,
    "-days",
    "2",
    "-extfile",
    ext,
  ]);
  return pair;
}

/** Runs openssl; throws with its stderr when it fails. */
export async function openssl(args: string[], stdin?: string): Promise<string> {
  const child = new Deno.Command("openssl", {
    args,
    stdin: stdin === undefined ? "null" : "piped",
    stdout: "piped",
    stderr: "piped",
  }).spawn();
  if (stdin !== undefined) {
    const writer = child.stdin.getWriter();
    await writer.write(new TextEncoder().encode(stdin));
    await writer.close();
  }
  const out = await child.output();
  const text = new TextDecoder().decode(out.stdout);
  if (!out.success) throw new Error(`openssl ${args[0]} failed: ${new TextDecoder().decode(out.stderr)}`);
  return text;
}

/** The serial number of the certificate a TLS server at `port` on 127.0.0.1 presents (`openssl s_client`). */
export async function servedSerial(port: number, caFile: string): Promise<string> {
  const out = await new Deno.Command("openssl", {
    args: ["s_client", "-connect", `127.0.0.1:${port}`, "-CAfile", caFile, "-verify_return_error"],
    stdin: "null",
    stdout: "piped",
    stderr: "null",
  }).output();
  const pem = new TextDecoder().decode(out.stdout);
  return (await openssl(["x509", "-noout", "-serial"], pem)).trim();
}

/** The serial number of a certificate file. */
export async function fileSerial(certFile: string): Promise<string> {
  return (await openssl(["x509", "-noout", "-serial", "-in", certFile])).trim();
}

/** Hex SHA-256 of `token`, as the tokens file keeps it. */
export async function tokenDigest(token: string): Promise<string> {
  const digest = await crypto.subtle.digest("SHA-256", new TextEncoder().encode(token));
  return Array.from(new Uint8Array(digest), (b) => b.toString(16).padStart(2, "0")).join("");
}
