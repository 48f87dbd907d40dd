/**
 * TLS for the listeners: certificate and key files read and checked, and the material a listener serves, which
 * SIGHUP replaces without closing the listening socket (`setSecureContext`: new connections get the new
 * certificate, open ones keep theirs).
 *
 * Every TLS listener is a node:tls server (node:https; gRPC's HTTP/2 on node:tls sockets): Deno.serve takes a
 * certificate but cannot verify client certificates, and binding a second Deno.serve TLS listener on the same
 * port (`reusePort`) needs --unstable-net, so neither mTLS nor rotation without a gap would be possible there.
 */
import { createPrivateKey, X509Certificate } from "node:crypto";
import type { TLSSocket } from "node:tls";

/** The files of one listener's `tls` section (`server.<listener>.tls.*`). */
export interface TlsFiles {
  certFile: string;
  keyFile: string;
  /** When set, a client certificate signed by this CA is required (mTLS). */
  clientCaFile: string;
}

/** What a TLS listener serves: PEM text, checked. */
export interface TlsMaterial {
  cert: string;
  key: string;
  /** The client CA (mTLS), or undefined. */
  ca?: string;
}

/** The node:tls server options for `material`: with a client CA, a client certificate signed by it is required. */
export function nodeTlsOptions(material: TlsMaterial): {
  cert: string;
  key: string;
  ca?: string;
  requestCert: boolean;
  rejectUnauthorized: boolean;
} {
  const mtls = material.ca !== undefined;
  return {
    cert: material.cert,
    key: material.key,
    ca: material.ca,
    requestCert: mtls,
    rejectUnauthorized: mtls,
  };
}

/**
 * Reads and checks a listener's files: each is readable PEM, the key is the certificate's, the client CA is a
 * certificate. Throws an Error naming the key and the file (`server.http.tls.key_file: /x.key: cannot read: ...`);
 * the text of a key never appears in it.
 * @param prefix the keys' common name, e.g. "server.http.tls"
 */
export function readTls(prefix: string, files: TlsFiles): TlsMaterial {
  const cert = readPem(`${prefix}.cert_file`, files.certFile);
  const key = readPem(`${prefix}.key_file`, files.keyFile);
  let x509: X509Certificate;
  try {
    x509 = new X509Certificate(cert);
  } catch {
    throw new Error(`${prefix}.cert_file: ${files.certFile}: not a PEM certificate`);
  }
  let privateKey;
  try {
    privateKey = createPrivateKey(key);
  } catch {
    throw new Error(`${prefix}.key_file: ${files.keyFile}: not a PEM private key`);
  }
  if (!x509.checkPrivateKey(privateKey)) {
    throw new Error(`${prefix}.key_file: ${files.keyFile}: not the key of ${files.certFile}`);
  }
  if (files.clientCaFile === "") return { cert, key };
  const ca = readPem(`${prefix}.client_ca_file`, files.clientCaFile);
  try {
    new X509Certificate(ca);
  } catch {
    throw new Error(`${prefix}.client_ca_file: ${files.clientCaFile}: not a PEM certificate`);
  }
  return { cert, key, ca };
}

function readPem(key: string, path: string): string {
  if (path === "") throw new Error(`${key}: required when TLS is on`);
  try {
    return Deno.readTextFileSync(path);
  } catch (err) {
    const reason = err instanceof Deno.errors.NotFound
      ? "file not found"
      : err instanceof Deno.errors.PermissionDenied
      ? "permission denied"
      : "cannot read";
    throw new Error(`${key}: ${path}: ${reason}`);
  }
}

/** The subject CN of the client certificate of a TLS connection, if it has one; looked up once per connection. */
export function certNameOf(socket: TLSSocket | undefined): string | undefined {
  if (socket === undefined) return undefined;
  let name = certNames.get(socket);
  if (name === undefined) {
    const cn = socket.getPeerCertificate?.()?.subject?.CN;
    name = typeof cn === "string" ? cn : "";
    certNames.set(socket, name);
  }
  return name === "" ? undefined : name;
}
const certNames = new WeakMap<TLSSocket, string>();

/**
 * The TLS material a listener serves, replaced on SIGHUP. A listener subscribes once and applies each new
 * material to its server.
 */
export class TlsSource {
  #material: TlsMaterial;
  readonly #listeners: Array<(material: TlsMaterial) => void> = [];

  constructor(material: TlsMaterial) {
    this.#material = material;
  }

  get material(): TlsMaterial {
    return this.#material;
  }

  /** Calls `apply` with every new material from now on. */
  subscribe(apply: (material: TlsMaterial) => void): void {
    this.#listeners.push(apply);
  }

  replace(material: TlsMaterial): void {
    this.#material = material;
    for (const apply of this.#listeners) apply(material);
  }
}
