/**
 * Hostile HTTP clients and memory readings for the listener's resource tests and bench/http_attack_memory.ts.
 * Each attack speaks raw HTTP/1.1 over TCP (fetch would not send duplicated headers or stall a body) and
 * targets loopback only.
 */
import type { Service } from "./service.ts";

const encoder = new TextEncoder();
const decoder = new TextDecoder();

/** Resident memory of a process, in KiB: now (VmRSS) and the peak so far (VmHWM). */
export interface Memory {
  rssKiB: number;
  hwmKiB: number;
}

/** Reads VmRSS and VmHWM from /proc/PID/status. */
export function memoryOf(pid: number): Memory {
  const status = Deno.readTextFileSync(`/proc/${pid}/status`);
  const field = (name: string): number => {
    const match = new RegExp(`^${name}:\\s+(\\d+) kB`, "m").exec(status);
    if (match === null) throw new Error(`no ${name} in /proc/${pid}/status`);
    return Number(match[1]);
  };
  return { rssKiB: field("VmRSS"), hwmKiB: field("VmHWM") };
}

/** The pid of a service started by startService: the process whose command line holds its config path. */
export function servicePid(service: Service): number {
  for (const entry of Deno.readDirSync("/proc")) {
    if (!/^\d+$/.test(entry.name)) continue;
    let cmdline: string;
    try {
      cmdline = Deno.readTextFileSync(`/proc/${entry.name}/cmdline`);
    } catch {
      continue; // gone meanwhile
    }
    if (cmdline.split("\0").includes(service.configPath)) return Number(entry.name);
  }
  throw new Error(`no process runs with ${service.configPath}`);
}

/** The port of an "http://host:port" base URL. */
export function portOf(base: string): number {
  return Number(new URL(base).port);
}

/** A reply read off a raw connection: the status and the body (by Content-Length). */
export interface RawReply {
  status: number;
  /** The status line and the headers. */
  head: string;
  body: string;
}

/** The status and body of a reply (or null), for comparing it whole. */
export function statusAndBody(reply: RawReply | null): { status: number; body: string } | null {
  return reply === null ? null : { status: reply.status, body: reply.body };
}

/**
 * Reads one reply from `conn`; null when the connection closes or fails before a whole one arrives.
 * Bytes left over past the reply are dropped (one request per connection here).
 */
export async function readReply(conn: Deno.Conn): Promise<RawReply | null> {
  let text = "";
  const buf = new Uint8Array(16 * 1024);
  for (;;) {
    const head = text.indexOf("\r\n\r\n");
    if (head >= 0) {
      const length = Number(/\r\ncontent-length:\s*(\d+)/i.exec(text.slice(0, head))?.[1] ?? 0);
      if (text.length >= head + 4 + length) {
        return {
          status: Number(text.split(" ", 2)[1]),
          head: text.slice(0, head),
          body: text.slice(head + 4, head + 4 + length),
        };
      }
    }
    let n: number | null;
    try {
      n = await conn.read(buf);
    } catch {
      return null;
    }
    if (n === null) return null;
    text += decoder.decode(buf.subarray(0, n));
  }
}

/** Writes all of `bytes`; false when the peer closed or reset the connection. */
export async function writeAll(conn: Deno.Conn, bytes: Uint8Array): Promise<boolean> {
  try {
    for (let at = 0; at < bytes.byteLength;) at += await conn.write(bytes.subarray(at));
    return true;
  } catch {
    return false;
  }
}

/**
 * Sends one chunked POST of `chunks` one-byte chunks ("1\r\nx\r\n" each) and returns the reply's status
 * (0 when there was none).
 */
export async function postTinyChunks(port: number, topic: string, chunks: number): Promise<number> {
  const conn = await Deno.connect({ hostname: "127.0.0.1", port });
  try {
    const head = `POST /topics/${topic}/messages HTTP/1.1\r\nHost: attack\r\nTransfer-Encoding: chunked\r\n` +
      `Content-Type: application/octet-stream\r\nConnection: close\r\n\r\n`;
    await writeAll(conn, encoder.encode(head + "1\r\nx\r\n".repeat(chunks) + "0\r\n\r\n"));
    return (await readReply(conn))?.status ?? 0;
  } finally {
    conn.close();
  }
}

/**
 * Opens `count` connections that each declare a `declared`-byte body and send one byte of it; they stay open
 * until closed. Opened `parallel` at a time.
 */
export async function openUnsentBodies(
  port: number,
  topic: string,
  count: number,
  declared: number,
  parallel = 50,
): Promise<Deno.Conn[]> {
  const request = encoder.encode(
    `POST /topics/${topic}/messages HTTP/1.1\r\nHost: attack\r\nContent-Length: ${declared}\r\n` +
      `Content-Type: application/octet-stream\r\n\r\nx`,
  );
  const conns: Deno.Conn[] = [];
  let next = 0;
  const open = async () => {
    while (next < count) {
      next++;
      const conn = await Deno.connect({ hostname: "127.0.0.1", port });
      conns.push(conn);
      await writeAll(conn, request);
    }
  };
  await Promise.all(Array.from({ length: Math.min(parallel, count) }, open));
  return conns;
}

/** Closes connections, ignoring those already closed. */
export function closeAll(conns: Deno.Conn[]): void {
  for (const conn of conns) {
    try {
      conn.close();
    } catch { /* closed by the server */ }
  }
}

/**
 * Sends a `bytes`-byte body declared by two identical Content-Length headers, 1 MiB per write, and stops early
 * once the server has replied. Returns the reply's status (0 when there was none) and how much was sent.
 */
export async function postDuplicatedLength(
  port: number,
  topic: string,
  bytes: number,
): Promise<{ status: number; sent: number }> {
  const conn = await Deno.connect({ hostname: "127.0.0.1", port });
  try {
    const head = `POST /topics/${topic}/messages HTTP/1.1\r\nHost: attack\r\nContent-Length: ${bytes}\r\n` +
      `Content-Length: ${bytes}\r\nContent-Type: application/octet-stream\r\nConnection: close\r\n\r\n`;
    let replied = false;
    const reply = readReply(conn).then((r) => {
      replied = true;
      return r;
    });
    let sent = 0;
    if (await writeAll(conn, encoder.encode(head))) {
      const block = new Uint8Array(1024 * 1024).fill(120);
      while (sent < bytes && !replied) {
        const n = Math.min(block.byteLength, bytes - sent);
        if (!await writeAll(conn, block.subarray(0, n))) break;
        sent += n;
      }
    }
    return { status: (await reply)?.status ?? 0, sent };
  } finally {
    conn.close();
  }
}

/** POSTs one small message the ordinary way and returns the status. */
export async function postNormal(base: string, topic: string): Promise<number> {
  const res = await fetch(`${base}/topics/${topic}/messages`, { method: "POST", body: "still serving" });
  await res.body?.cancel();
  return res.status;
}
