/**
 * Who may write to which topic, the same on every listener: bearer tokens (kept as SHA-256 digests only), client
 * certificates (their subject CN names a principal), each principal's topics, and the global allow-list.
 *
 * The tokens file (`auth.tokens_file`) is a YAML list:
 *   - principal: billing           # a name, for logs and metrics
 *     sha256: "9f86d0...0a08"       # hex SHA-256 of the token: printf %s "$TOKEN" | sha256sum
 *     topics: ["billing.*", "audit"]
 *   - principal: edge-gw           # no sha256: a client certificate with CN=edge-gw (auth.mtls_principal: cn)
 *     topics: ["edge.*"]
 * A topic pattern is a name, or a prefix followed by `*`. Several entries may name the same principal (an old and a
 * new token while clients move over, a token and a certificate); a digest, or a certificate name, is given once.
 */
import { createHash } from "node:crypto";
import { parse } from "yaml";
import { authRequests } from "../metrics.ts";

/**
 * Topic names and prefixes (`"logs.*"` matches every topic that starts with `logs.`; `"*"` matches all).
 * @example new TopicPatterns(["orders", "logs.*"]).matches("logs.app") // true
 */
export class TopicPatterns {
  readonly #names = new Set<string>();
  readonly #prefixes: string[] = [];

  constructor(patterns: readonly string[]) {
    for (const pattern of patterns) {
      if (pattern.endsWith("*")) this.#prefixes.push(pattern.slice(0, -1));
      else this.#names.add(pattern);
    }
  }

  matches(topic: string): boolean {
    if (this.#names.has(topic)) return true;
    for (const prefix of this.#prefixes) if (topic.startsWith(prefix)) return true;
    return false;
  }
}

/** A caller that authenticated (or everyone, when authentication is off). */
export interface Principal {
  /** The name from the tokens file; "anonymous" when authentication is off. */
  readonly name: string;
  /** The principal's topics; undefined means every topic (authentication off). */
  readonly topics?: TopicPatterns;
}

const ANONYMOUS: Principal = { name: "anonymous" };

/** The principals of a tokens file: by token digest, and by certificate name. */
export interface Principals {
  byDigest: Map<string, Principal & { digest: string }>;
  byCertName: Map<string, Principal>;
}

const HEX_DIGEST = /^[0-9a-f]{64}$/;
const TOPIC_PATTERN = /^[a-zA-Z0-9._-]*\*?$/;

/**
 * Parses a tokens file. Throws an Error naming the entry and the problem (`entry 2 (billing): sha256: expected
 * 64 hex digits`); digests are never quoted back, in case a token was pasted instead.
 */
export function parseTokens(text: string): Principals {
  let entries: unknown;
  try {
    entries = parse(text, { schema: "failsafe" });
  } catch (err) {
    throw new Error(`invalid YAML: ${(err instanceof Error ? err.message : String(err)).split("\n")[0]}`);
  }
  if (entries === null || entries === undefined) entries = [];
  if (!Array.isArray(entries)) throw new Error("expected a list of entries");
  // Every caller would be refused; more likely a file caught while being rewritten (write it aside, then rename).
  if (entries.length === 0) throw new Error("no entries");
  const principals: Principals = { byDigest: new Map(), byCertName: new Map() };
  entries.forEach((entry: unknown, i) => {
    const at = `entry ${i + 1}`;
    if (typeof entry !== "object" || entry === null || Array.isArray(entry)) {
      throw new Error(`${at}: expected a map with principal and topics`);
    }
    const { principal: name, sha256, topics, ...rest } = entry as Record<string, unknown>;
    const unknown = Object.keys(rest)[0];
    if (unknown !== undefined) throw new Error(`${at}: unknown field ${JSON.stringify(unknown)}`);
    if (typeof name !== "string" || name.trim() === "") throw new Error(`${at}: principal: expected a name`);
    const where = `${at} (${name})`;
    if (!Array.isArray(topics) || topics.some((t) => typeof t !== "string" || !TOPIC_PATTERN.test(t))) {
      throw new Error(`${where}: topics: expected a list of topic names or prefixes ending in *`);
    }
    const principal = { name, topics: new TopicPatterns(topics as string[]) };
    if (sha256 === undefined) {
      if (principals.byCertName.has(name)) {
        throw new Error(`${where}: a second entry without sha256 for ${name}`);
      }
      principals.byCertName.set(name, principal);
      return;
    }
    if (typeof sha256 !== "string" || !HEX_DIGEST.test(sha256.toLowerCase())) {
      throw new Error(`${where}: sha256: expected 64 hex digits (printf %s "$TOKEN" | sha256sum)`);
    }
    const hex = sha256.toLowerCase();
    if (principals.byDigest.has(hex)) throw new Error(`${where}: sha256: the same digest is given twice`);
    principals.byDigest.set(hex, { ...principal, digest: hex });
  });
  return principals;
}

/** How an authentication ended, as `ka_auth_requests_total{result}` counts it. */
export type AuthResult = "ok" | "unauthenticated" | "forbidden";

/** Options of Gate. */
export interface GateOptions {
  /** From the tokens file; undefined when authentication is off (`auth.tokens_file` unset). */
  principals?: Principals;
  /** Whether a client certificate's subject CN names the principal (`auth.mtls_principal: cn`). */
  certNames: boolean;
  /** `topics.allow`; empty means no global restriction. */
  allow: readonly string[];
}

/**
 * The access check the listeners share. A listener without authentication and without an allow-list gets no
 * Gate at all, so it does nothing per request. The principals are replaced on SIGHUP (`replace`).
 */
export class Gate {
  readonly certNames: boolean;
  readonly #allow: TopicPatterns | undefined;
  #principals: Principals | undefined;
  #generation = 0;
  /** Counter children per "principal result", so a request does not rebuild its label set. */
  readonly #counted = new Map<string, { inc(): void }>();

  constructor(opts: GateOptions) {
    this.#principals = opts.principals;
    this.certNames = opts.certNames;
    this.#allow = opts.allow.length > 0 ? new TopicPatterns(opts.allow) : undefined;
  }

  /** Whether callers must authenticate. */
  get authenticates(): boolean {
    return this.#principals !== undefined;
  }

  /** Takes the principals of a new tokens file. */
  replace(principals: Principals): void {
    this.#principals = principals;
    this.#generation++;
  }

  /** How many times the principals were replaced: a caller that authenticated before a change does it again. */
  get generation(): number {
    return this.#generation;
  }

  /**
   * The principal behind an `Authorization` value and/or a client certificate's CN; undefined when neither
   * names one. A bearer token, when given, decides; else the certificate does. With authentication off,
   * everyone is the anonymous principal.
   */
  authenticate(
    authorization: string | null | undefined,
    certName: string | undefined,
  ): Principal | undefined {
    const principals = this.#principals;
    if (principals === undefined) return ANONYMOUS;
    let found: Principal | undefined;
    if (authorization) {
      found = byToken(principals, authorization);
    } else if (this.certNames && certName !== undefined) {
      found = principals.byCertName.get(certName);
    }
    this.count(found?.name ?? "", found === undefined ? "unauthenticated" : "ok");
    return found;
  }

  /** Whether `principal` may write to `topic`: its own topics and the global allow-list both allow it. */
  mayWrite(principal: Principal, topic: string): boolean {
    if (this.#allow !== undefined && !this.#allow.matches(topic)) return false;
    return principal.topics === undefined || principal.topics.matches(topic);
  }

  /** The refusal reason for a topic `principal` may not write to; it names no secret. */
  forbidden(principal: Principal, topic: string): string {
    if (this.#allow !== undefined && !this.#allow.matches(topic)) {
      return `topic ${JSON.stringify(topic)} is not in topics.allow`;
    }
    return `principal ${JSON.stringify(principal.name)} may not write to topic ${JSON.stringify(topic)}`;
  }

  /** Counts one outcome in `ka_auth_requests_total` (only when authentication is on). */
  count(principal: string, result: AuthResult): void {
    if (this.#principals === undefined) return;
    const key = `${principal} ${result}`;
    let child = this.#counted.get(key);
    if (child === undefined) {
      child = authRequests.labels(principal, result);
      this.#counted.set(key, child);
    }
    child.inc();
  }
}

/** Why a request without a known principal is refused; it never says which of the two was wrong. */
export const UNAUTHENTICATED_REASON =
  "unauthenticated: a valid bearer token or client certificate is required";

/**
 * The principal of a bearer token. The token is hashed once; the digest is looked up, then compared in constant
 * time. A lookup keyed by a digest tells a timing observer nothing about the token, as the digest of a guess
 * cannot be steered character by character.
 */
function byToken(principals: Principals, authorization: string): Principal | undefined {
  if (authorization.length < 8 || authorization.slice(0, 7).toLowerCase() !== "bearer ") return undefined;
  const token = authorization.slice(7).trim();
  if (token === "") return undefined;
  const digest = createHash("sha256").update(token).digest("hex");
  const found = principals.byDigest.get(digest);
  if (found === undefined || !sameText(found.digest, digest)) return undefined;
  return found;
}

/** Whether two strings of the same length are equal, in a time that depends on their length alone. */
function sameText(a: string, b: string): boolean {
  if (a.length !== b.length) return false;
  let diff = 0;
  for (let i = 0; i < a.length; i++) diff |= a.charCodeAt(i) ^ b.charCodeAt(i);
  return diff === 0;
}
