/**
 * A floor under `Deno.serve` for bench/http_layers.ts: HTTP/1.1 answered by hand on `Deno.listen`, with only what a
 * keep-alive POST needs: the head found and decoded to a string, the request line split, `Content-Length` read,
 * the body copied out, and a fixed `200` with an empty body written once per read. Nothing is checked (no chunked
 * bodies, no `Expect`, no limits, no smuggling defences): it shows what a server of our own could save at most
 * against Deno's (hyper), before the parsing a public listener needs.
 *
 * `deno run --allow-net bench/http1_floor_server.ts PORT`
 */
const port = Number(Deno.args[0]);
const OK = new TextEncoder().encode("HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n");
const latin1 = new TextDecoder("latin1");

/** The value of header `name` (lower case) in a head that starts at its first header's CRLF, or null. */
function header(head: string, name: string): string | null {
  const key = `\r\n${name}:`;
  let at = head.indexOf(key);
  if (at < 0) at = head.toLowerCase().indexOf(key);
  if (at < 0) return null;
  const end = head.indexOf("\r\n", at + key.length);
  return head.slice(at + key.length, end < 0 ? head.length : end).trim();
}

/** The end of the head (after its blank line) at or after `from`, or -1. */
function headEnd(buf: Uint8Array, from: number, to: number): number {
  for (let i = from + 3; i < to; i++) {
    if (buf[i] === 10 && buf[i - 1] === 13 && buf[i - 2] === 10 && buf[i - 3] === 13) return i + 1;
  }
  return -1;
}

let bodyBytes = 0;

async function serve(conn: Deno.TcpConn): Promise<void> {
  conn.setNoDelay(true);
  const buf = new Uint8Array(64 * 1024);
  let have = 0;
  for (;;) {
    const n = await conn.read(buf.subarray(have));
    if (n === null) return;
    have += n;
    let start = 0;
    let answers = 0;
    for (;;) {
      const end = headEnd(buf, start, have);
      if (end < 0) break;
      const head = latin1.decode(buf.subarray(start, end - 2));
      const lineEnd = head.indexOf("\r\n");
      const [method, target] = head.slice(0, lineEnd).split(" ");
      const length = Number(header(head.slice(lineEnd), "content-length") ?? 0);
      if (end + length > have) break;
      const body = buf.slice(end, end + length);
      bodyBytes += body.byteLength + method.length + target.length;
      start = end + length;
      answers++;
    }
    if (start > 0) {
      buf.copyWithin(0, start, have);
      have -= start;
    }
    for (let i = 0; i < answers; i++) await conn.write(OK);
  }
}

for await (const conn of Deno.listen({ hostname: "127.0.0.1", port })) {
  serve(conn).catch(() => {}).finally(() => {
    try {
      conn.close();
    } catch {
      // closed by the client
    }
  });
}
