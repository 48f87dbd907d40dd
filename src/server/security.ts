/**
 * The security settings of every listener, built from the config: each listener's TLS material and the shared
 * access Gate. The files are read at start-up (a problem is a ConfigError: exit 2) and again on SIGHUP, when a
 * file that cannot be used keeps the old material and logs one error.
 */
import { type Config, ConfigError } from "../config.ts";
import { log } from "../log.ts";
import { Gate, parseTokens, type Principals } from "./auth.ts";
import { readTls, type TlsFiles, type TlsMaterial, TlsSource } from "./tls.ts";

const LISTENERS = ["http", "grpc", "monitoring"] as const;
type ListenerName = typeof LISTENERS[number];

/** What the listeners are given, and how SIGHUP renews it. */
export interface Security {
  /** TLS per listener; absent for a plain-text listener. */
  readonly tls: Partial<Record<ListenerName, TlsSource>>;
  /** The access check of the produce listeners; undefined when there is neither authentication nor allow-list. */
  readonly gate?: Gate;
  /** Reads every file again; what cannot be used is kept as it was and logged. Returns whether all were used. */
  reload(): boolean;
}

/**
 * Reads the TLS and token files named in `config`. Throws a ConfigError naming the key and the file
 * (`config: server.http.tls.cert_file: /x.crt: file not found`).
 */
export function loadSecurity(config: Config): Security {
  const tls: Partial<Record<ListenerName, TlsSource>> = {};
  for (const name of LISTENERS) {
    const files = tlsFiles(config, name);
    if (files === undefined) continue;
    tls[name] = new TlsSource(configured(() => readTls(`server.${name}.tls`, files)));
  }
  const { tokensFile, mtlsPrincipal } = config.auth;
  const principals = tokensFile === "" ? undefined : configured(() => readTokens(tokensFile));
  if (mtlsPrincipal !== "none" && principals === undefined) {
    throw new ConfigError(`config: auth.mtls_principal: ${mtlsPrincipal} needs auth.tokens_file`);
  }
  const allow = config.topics.allow;
  const gate = principals === undefined && allow.length === 0
    ? undefined
    : new Gate({ principals, certNames: mtlsPrincipal === "cn", allow });

  const reload = (): boolean => {
    let ok = true;
    for (const name of LISTENERS) {
      const source = tls[name];
      if (source === undefined) continue;
      try {
        source.replace(readTls(`server.${name}.tls`, tlsFiles(config, name)!));
      } catch (err) {
        ok = false;
        log("error", `SIGHUP: ${name} listener keeps its certificate: ${(err as Error).message}`);
      }
    }
    if (principals !== undefined) {
      try {
        gate!.replace(readTokens(tokensFile));
      } catch (err) {
        ok = false;
        log("error", `SIGHUP: keeping the principals read before: ${(err as Error).message}`);
      }
    }
    if (ok && (principals !== undefined || Object.keys(tls).length > 0)) {
      log("info", "security files read again");
    }
    return ok;
  };
  return { tls, gate, reload };
}

/** One listener's TLS files read, or undefined for plain text (`--healthcheck` needs no more). */
export function listenerTls(config: Config, name: ListenerName): TlsMaterial | undefined {
  const files = tlsFiles(config, name);
  return files === undefined ? undefined : configured(() => readTls(`server.${name}.tls`, files));
}

function tlsFiles(config: Config, name: ListenerName): TlsFiles | undefined {
  const files = config.server[name].tls;
  if (files.certFile === "" && files.keyFile === "" && files.clientCaFile === "") return undefined;
  return files;
}

/** The principals of the tokens file; errors name the key and the file. */
function readTokens(path: string): Principals {
  let text: string;
  try {
    text = Deno.readTextFileSync(path);
  } catch (err) {
    const reason = err instanceof Deno.errors.NotFound ? "file not found" : "cannot read";
    throw new Error(`auth.tokens_file: ${path}: ${reason}`);
  }
  try {
    return parseTokens(text);
  } catch (err) {
    throw new Error(`auth.tokens_file: ${path}: ${(err as Error).message}`);
  }
}

function configured<T>(read: () => T): T {
  try {
    return read();
  } catch (err) {
    throw new ConfigError(`config: ${(err as Error).message}`);
  }
}
