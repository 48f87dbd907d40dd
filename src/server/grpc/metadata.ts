/** gRPC request and response metadata: content type, timeouts, status messages. */

/**
 * Whether a request content-type names gRPC: `application/grpc`, optionally followed by `+proto` or
 * `;params`. Anything else gets HTTP 415, so that a plain HTTP client never mistakes an error for a success.
 */
export function isGrpcContentType(value: string | undefined): boolean {
  if (value === undefined || !value.startsWith("application/grpc")) return false;
  const rest = value.slice("application/grpc".length);
  return rest === "" || rest === "+proto" || rest.startsWith(";") || rest.startsWith("+proto;");
}

const TIMEOUT_UNIT_MS: Record<string, number> = { H: 3_600_000, M: 60_000, S: 1000, m: 1, u: 1e-3, n: 1e-6 };

/** Longest delay a timer takes; longer deadlines are as good as none. */
const MAX_TIMER_MS = 2_147_483_647;

/**
 * Reads `grpc-timeout` (1 to 8 digits and a unit H, M, S, m, u or n) into milliseconds. Undefined when absent or
 * too long for a timer; "malformed" otherwise (the call is refused with INTERNAL, as grpc-go refuses it).
 * @example parseTimeout("250m") // 250
 */
export function parseTimeout(value: string | undefined): number | undefined | "malformed" {
  if (value === undefined) return undefined;
  const m = /^(\d{1,8})([HMSmun])$/.exec(value);
  if (m === null) return "malformed";
  const ms = Number(m[1]) * TIMEOUT_UNIT_MS[m[2]];
  return ms > MAX_TIMER_MS ? undefined : ms;
}

const encoder = new TextEncoder();
const HEX = "0123456789ABCDEF";
/** Most characters of a client's header value quoted back in a status message. */
const SHOWN_CHARS = 128;

/**
 * A header value a client sent, as a status message may quote it: its octets (one character each, as HTTP/2
 * gives them) outside printable ASCII as `\xNN`, cut to SHOWN_CHARS characters.
 * @example shownHeader("/x\u00c3\u00a9") // "/x\\xC3\\xA9"
 */
export function shownHeader(value: string): string {
  const cut = value.length > SHOWN_CHARS ? value.slice(0, SHOWN_CHARS) : value;
  let out = "";
  for (let i = 0; i < cut.length; i++) {
    const c = cut.charCodeAt(i);
    out += c >= 0x20 && c <= 0x7e && c !== 0x5c ? cut[i] : `\\x${HEX[(c >> 4) & 15]}${HEX[c & 15]}`;
  }
  return cut === value ? out : `${out}...`;
}

/**
 * Percent-encodes a status message for `grpc-message`: UTF-8 bytes outside printable ASCII, and `%`, become
 * `%XX`, as the gRPC HTTP/2 protocol asks.
 * @example encodeGrpcMessage("100% ok") // "100%25 ok"
 */
export function encodeGrpcMessage(text: string): string {
  let plain = true;
  for (let i = 0; i < text.length; i++) {
    const c = text.charCodeAt(i);
    if (c < 0x20 || c > 0x7e || c === 0x25) {
      plain = false;
      break;
    }
  }
  if (plain) return text;
  let out = "";
  for (const b of encoder.encode(text)) {
    out += b < 0x20 || b > 0x7e || b === 0x25 ? `%${HEX[b >> 4]}${HEX[b & 15]}` : String.fromCharCode(b);
  }
  return out;
}
