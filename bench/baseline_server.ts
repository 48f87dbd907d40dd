/**
 * The ceiling for the HTTP benchmarks: Deno.serve reading the body and answering 200, nothing else.
 * `deno run --allow-net bench/baseline_server.ts PORT [whole|stream]`: `whole` (default) reads the body in one
 * call, as the service reads a small body that came with its head; `stream` reads it with a BYOB reader into one
 * growing buffer, as the service reads a large one (src/server/http.ts), so that the batch benchmark shows what
 * Deno's server alone costs in CPU and memory for the same bodies.
 */
const port = Number(Deno.args[0]);
const stream = Deno.args[1] === "stream";

async function readStreamed(body: ReadableStream<Uint8Array>): Promise<number> {
  let reader: ReadableStreamBYOBReader;
  try {
    reader = body.getReader({ mode: "byob" });
  } catch {
    // Not a byte stream (Deno 2.8.2's HTTP/1.1 bodies): the chunks are counted as they come.
    let size = 0;
    for await (const chunk of body) size += chunk.byteLength;
    return size;
  }
  let buf = new Uint8Array(16 * 1024);
  let size = 0;
  for (;;) {
    if (buf.byteLength - size < 4096) {
      const next = new Uint8Array(buf.byteLength * 2);
      next.set(buf.subarray(0, size));
      buf = next;
    }
    const result = await reader.read(buf.subarray(size));
    if (result.value !== undefined) buf = new Uint8Array(result.value.buffer);
    if (result.done) return size;
    size += result.value.byteLength;
  }
}

Deno.serve({ hostname: "127.0.0.1", port, onListen: () => {} }, async (req) => {
  if (stream && req.body !== null) await readStreamed(req.body);
  else await req.arrayBuffer();
  return new Response(null, { status: 200 });
});
