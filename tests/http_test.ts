import assert from "node:assert/strict";
import { httpRequests } from "../src/metrics.ts";
import { ProduceError } from "../src/producer/types.ts";
import {
  arrivedBody,
  type BatchLimits,
  bodyArrived,
  bodyReadFailed,
  cleanPath,
  header,
  startHttpServer,
} from "../src/server/http.ts";
import { formatHostPort } from "../src/listen_address.ts";
import type { Listener } from "../src/server/listener.ts";
import { parseContentLength } from "../src/server/params.ts";
import { readReply, statusAndBody, writeAll } from "./support/attack.ts";
import { delay } from "./support/wait.ts";
import { FakeFacade } from "./support/fake_facade.ts";
import { captured } from "./support/log_capture.ts";

interface Reply {
  status: number;
  headers: Headers;
  body: string;
}

/** Runs `fn` against a fresh listener on an ephemeral loopback port, and always closes it. */
async function withServer(
  fn: (base: string, facade: FakeFacade, server: Listener) => Promise<void>,
  facade = new FakeFacade({ maxMessageBytes: 1000, topics: ["alpha", "beta"] }),
  batch?: BatchLimits,
): Promise<void> {
  const server = await startHttpServer({ listen: "127.0.0.1:0", facade, batch });
  try {
    await fn(`http://127.0.0.1:${server.port}`, facade, server);
  } finally {
    await server.shutdown();
  }
}

async function call(url: string, init: RequestInit = {}): Promise<Reply> {
  const res = await fetch(url, init);
  return { status: res.status, headers: res.headers, body: await res.text() };
}

function post(base: string, path: string, body: BodyInit | null, headers: HeadersInit = {}): Promise<Reply> {
  return call(base + path, { method: "POST", body, headers });
}

/** Sends bytes as they are: fetch would normalise paths like "/topics/../messages" before sending. */
async function rawRequest(port: number, request: string): Promise<Reply> {
  const conn = await Deno.connect({ hostname: "127.0.0.1", port });
  try {
    await conn.write(new TextEncoder().encode(request));
    const chunks: Uint8Array[] = [];
    const buf = new Uint8Array(4096);
    for (;;) {
      const n = await conn.read(buf);
      if (n === null) break;
      chunks.push(buf.slice(0, n));
    }
    const text = new TextDecoder().decode(new Uint8Array(chunks.flatMap((c) => [...c])));
    const [head, body] = text.split("\r\n\r\n", 2);
    const lines = head.split("\r\n");
    const headers = new Headers(
      lines.slice(1).map((l) => [l.slice(0, l.indexOf(":")), l.slice(l.indexOf(":") + 1).trim()]),
    );
    return { status: Number(lines[0].split(" ")[1]), headers, body };
  } finally {
    conn.close();
  }
}

function assertPlain(reply: Reply, status: number, body: string): void {
  assert.deepEqual(reply.status, status, `status; body: ${reply.body}`);
  assert.deepEqual(reply.body, `${body}\n`);
  assert.deepEqual(reply.headers.get("content-type"), "text/plain; charset=utf-8");
  assert.deepEqual(reply.headers.get("x-content-type-options"), "nosniff");
}

Deno.test("POST /topics/{topic}/messages hands the body to the facade unchanged and answers 200 with no body", async () => {
  await withServer(async (base, facade) => {
    const bytes = new Uint8Array(256).map((_, i) => i);
    const reply = await post(base, "/topics/alpha/messages", bytes, {
      "content-type": "application/octet-stream",
    });
    assert.deepEqual(reply.status, 200);
    assert.deepEqual(reply.body, "");
    assert.deepEqual(facade.produced.length, 1);
    const { message, ack } = facade.produced[0];
    assert.deepEqual(ack, "none");
    assert.deepEqual(message.topic, "alpha");
    assert.deepEqual(message.value, bytes);
    assert.deepEqual(message.key, undefined);
    assert.deepEqual(message.partition, undefined);
  });
});

Deno.test("PUT and PATCH produce as POST does, as the Go service took any method", async () => {
  await withServer(async (base, facade) => {
    for (const method of ["PUT", "PATCH"]) {
      const reply = await call(`${base}/topics/beta/messages?key=k`, { method, body: method });
      assert.deepEqual([reply.status, reply.body], [200, ""]);
    }
    assert.deepEqual(
      facade.produced.map((p) => [p.message.topic, new TextDecoder().decode(p.message.value)]),
      [["beta", "PUT"], ["beta", "PATCH"]],
    );
  });
});

Deno.test("a Content-Encoding is not decoded: the bytes sent are the value, as with the Go service", async () => {
  await withServer(async (base, facade) => {
    const gzipped = new Uint8Array(
      await new Response(new Blob(["hello"]).stream().pipeThrough(new CompressionStream("gzip")))
        .arrayBuffer(),
    );
    const reply = await post(base, "/topics/alpha/messages", gzipped, {
      "content-type": "application/octet-stream",
      "content-encoding": "gzip",
    });
    assert.deepEqual(reply.status, 200);
    assert.deepEqual(facade.produced[0].message.value, gzipped);
  });
});

Deno.test("an empty body is produced as an empty value", async () => {
  await withServer(async (base, facade) => {
    assert.deepEqual((await post(base, "/topics/alpha/messages", "")).status, 200);
    assert.deepEqual(facade.produced[0].message.value, new Uint8Array(0));
  });
});

Deno.test("ack, key and partition come from the query string", async () => {
  await withServer(async (base, facade) => {
    const kafka = await post(base, "/topics/alpha/messages?ack=kafka&key=k%C3%A9y+1&partition=3", "v");
    assert.deepEqual(kafka.status, 200);
    assert.deepEqual(kafka.headers.get("content-type"), "application/json");
    assert.deepEqual(JSON.parse(kafka.body), { partition: 3, offset: "0" });
    const wal = await post(base, "/topics/alpha/messages?cb=17&ack=wal", "v");
    assert.deepEqual(wal.status, 200);
    assert.deepEqual(wal.body, "");
    assert.deepEqual((await post(base, "/topics/alpha/messages?ack=none", "v")).status, 200);
    assert.deepEqual(facade.produced.map((p) => p.ack), ["kafka", "wal", "none"]);
    assert.deepEqual(facade.produced[0].message.key, new TextEncoder().encode("kéy 1"));
    assert.deepEqual(facade.produced[0].message.partition, 3);
  });
});

Deno.test("invalid topic names get 400 with the reason", async () => {
  await withServer(async (base, facade, server) => {
    assertPlain(
      await post(base, "/topics/a%20b/messages", "v"),
      400,
      'invalid topic name: "a b": only [a-zA-Z0-9._-] are allowed',
    );
    assertPlain(await post(base, "/topics//messages", "v"), 400, "invalid topic name: empty");
    assertPlain(
      await post(base, `/topics/${"t".repeat(250)}/messages`, "v"),
      400,
      "invalid topic name: 250 characters, at most 249 are allowed",
    );
    assertPlain(await post(base, "/topics/%ZZ/messages", "v"), 400, 'invalid topic name: "%ZZ"');
    for (const name of [".", ".."]) {
      const reply = await rawRequest(
        server.port,
        `POST /topics/${name}/messages HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\nConnection: close\r\n\r\nv`,
      );
      assertPlain(reply, 400, `invalid topic name: "${name}" is reserved`);
    }
    assert.deepEqual((await post(base, `/topics/${"t".repeat(249)}/messages`, "v")).status, 200);
    assert.deepEqual((await post(base, "/topics/Az09._-/messages", "v")).status, 200);
    assert.deepEqual(facade.produced.length, 2);
  });
});

Deno.test("a path that is not clean gets 301 to the clean one, as the Go service's router answered", async () => {
  await withServer(async (base, facade, server) => {
    const raw = (line: string) =>
      rawRequest(server.port, `${line} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n`);
    const topics = await raw("GET //topics");
    assert.equal(topics.status, 301);
    assert.equal(topics.headers.get("location"), "/topics");
    const produce = await raw("POST /topics/alpha//messages?ack=kafka");
    assert.equal(produce.status, 301);
    assert.equal(produce.headers.get("location"), "/topics/alpha/messages?ack=kafka");
    assert.equal((await raw("GET /x/../topics")).headers.get("location"), "/topics");
    // Clean paths that are no route stay 404; nothing was produced.
    for (const path of ["/topics/", "/nope", "/topics/alpha"]) {
      assertPlain(await call(base + path), 404, "not found");
    }
    assert.equal(facade.produced.length, 0);
  });
  assert.equal(cleanPath("//topics/./t/../t/messages"), "/topics/t/messages");
  assert.equal(cleanPath("/a/b/"), "/a/b/");
  assert.equal(cleanPath("/../.."), "/");
});

Deno.test("a bad ack, partition or query encoding gets 400", async () => {
  await withServer(async (base, facade) => {
    assertPlain(
      await post(base, "/topics/alpha/messages?ack=all", "v"),
      400,
      'invalid ack: "all": want none, wal or kafka',
    );
    for (const partition of ["-1", "x", "2147483648", "1.5", ""]) {
      assertPlain(
        await post(base, `/topics/alpha/messages?partition=${partition}`, "v"),
        400,
        `invalid partition: "${partition}": want an integer from 0 to 2147483647`,
      );
    }
    assertPlain(
      await post(base, "/topics/alpha/messages?key=%E0%A4%A", "v"),
      400,
      "invalid query parameter key: bad percent-encoding",
    );
    for (
      const [query, name] of [["ack=kafka&ack=none", "ack"], ["key=a&key=b", "key"], [
        "partition=1&partition=1",
        "partition",
      ], ["ack=kafka&%61ck=none", "ack"]]
    ) {
      assertPlain(
        await post(base, `/topics/alpha/messages?${query}`, "v"),
        400,
        `query parameter ${name} given more than once`,
      );
    }
    // And for a batch, whose only parameter is ack.
    assertPlain(
      await post(base, "/topics/alpha/messages?ack=wal&foo=1&ack=kafka", '{"value":"v"}\n', {
        "content-type": "application/x-ndjson",
      }),
      400,
      "query parameter ack given more than once",
    );
    assert.deepEqual(facade.produced.length, 0);
  });
});

Deno.test("a body over maxMessageBytes gets 413, by Content-Length and while reading a chunked body", async () => {
  await withServer(async (base, facade) => {
    assert.deepEqual((await post(base, "/topics/alpha/messages", new Uint8Array(1000))).status, 200);
    assertPlain(
      await post(base, "/topics/alpha/messages", new Uint8Array(1001)),
      413,
      "message too large: 1001 bytes, at most 1000 bytes are accepted",
    );
    const chunked = new ReadableStream<Uint8Array>({
      start(controller) {
        for (let i = 0; i < 3; i++) controller.enqueue(new Uint8Array(400));
        controller.close();
      },
    });
    assertPlain(
      await post(base, "/topics/alpha/messages", chunked),
      413,
      "message too large: more than 1000 bytes, at most 1000 bytes are accepted",
    );
    assert.deepEqual(facade.produced.length, 1);
  });
});

Deno.test("a refused body (too large, of a type not taken) is read to its end first: a client still sending it reads the refusal", async () => {
  const big = 4 * 1024 * 1024;
  const small = "POST /topics/alpha/messages HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\nok";
  const cases: Array<[string, Uint8Array, string]> = [
    [
      "Content-Length",
      new TextEncoder().encode(
        `POST /topics/alpha/messages HTTP/1.1\r\nHost: x\r\nContent-Length: ${big}\r\n\r\n`,
      ),
      `message too large: ${big} bytes, at most 1000 bytes are accepted\n`,
    ],
    [
      "chunked",
      new TextEncoder().encode(
        "POST /topics/alpha/messages HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n" +
          `${big.toString(16)}\r\n`,
      ),
      "message too large: more than 1000 bytes, at most 1000 bytes are accepted\n",
    ],
    [
      "batch",
      new TextEncoder().encode(
        "POST /topics/alpha/messages HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-ndjson\r\n" +
          `Content-Length: ${big}\r\n\r\n`,
      ),
      `batch too large: ${big} bytes, at most 1048576 bytes are accepted (server.http.batch.max_bytes)\n`,
    ],
    [
      "refused by its type",
      new TextEncoder().encode(
        "POST /topics/alpha/messages HTTP/1.1\r\nHost: x\r\nContent-Type: application/xml\r\n" +
          `Content-Length: ${big}\r\n\r\n`,
      ),
      "unsupported content type: application/xml\n",
    ],
  ];
  await withServer(
    async (_base, facade, server) => {
      for (const [shape, head, refusal] of cases) {
        const conn = await Deno.connect({ hostname: "127.0.0.1", port: server.port });
        try {
          const body = new Uint8Array(big).fill(120);
          const tail = new TextEncoder().encode(shape === "chunked" ? "\r\n0\r\n\r\n" : "");
          const sent = writeAll(conn, new Uint8Array([...head, ...body, ...tail]));
          const status = shape === "refused by its type" ? 415 : 413;
          assert.deepEqual(statusAndBody(await readReply(conn)), { status, body: refusal }, shape);
          assert.ok(await sent, `${shape}: the body could not be sent whole`);
          // The connection goes on.
          assert.ok(await writeAll(conn, new TextEncoder().encode(small)), shape);
          assert.deepEqual((await readReply(conn))?.status, 200, shape);
        } finally {
          conn.close();
        }
      }
      assert.deepEqual(facade.produced.length, cases.length);
    },
    undefined,
    { maxBytes: 1024 * 1024, maxRecords: 100 },
  );
});

Deno.test("a client that waits for 100 Continue gets the 413 at once, and sends no body", async () => {
  await withServer(async (_base, _facade, server) => {
    const conn = await sendPartial(
      server.port,
      "POST /topics/alpha/messages HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\nContent-Length: 2000000\r\n\r\n",
    );
    try {
      assert.deepEqual(statusAndBody(await readReply(conn)), {
        status: 413,
        body: "message too large: 2000000 bytes, at most 1000 bytes are accepted\n",
      });
    } finally {
      conn.close();
    }
  });
});

Deno.test("a chunked body is read whole", async () => {
  await withServer(async (base, facade) => {
    const parts = [new Uint8Array([1, 2, 3]), new Uint8Array([4]), new Uint8Array([5, 6])];
    const body = new ReadableStream<Uint8Array>({
      async pull(controller) {
        const next = parts.shift();
        if (next === undefined) return controller.close();
        // A pause between chunks, so that they reach the server as separate reads.
        await new Promise((r) => setTimeout(r, 5));
        controller.enqueue(next);
      },
    });
    const reply = await post(base, "/topics/alpha/messages", body, { "content-type": "text/plain" });
    assert.deepEqual(reply.status, 200);
    assert.deepEqual(facade.produced[0].message.value, new Uint8Array([1, 2, 3, 4, 5, 6]));
  });
});

Deno.test("content types: the accepted ones in any case and with parameters, none at all, and 415 for others", async () => {
  await withServer(async (base, facade, server) => {
    const accepted = [
      "text/plain",
      "text/plain; charset=utf-8",
      "Text/Plain;charset=ISO-8859-1",
      "application/json",
      "APPLICATION/JSON; charset=UTF-8",
      "application/octet-stream",
    ];
    for (const type of accepted) {
      assert.deepEqual(
        (await post(base, "/topics/alpha/messages", "v", { "content-type": type })).status,
        200,
        type,
      );
    }
    // No Content-Type at all (fetch always adds one for a string body).
    const bare = await rawRequest(
      server.port,
      "POST /topics/alpha/messages HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\nConnection: close\r\n\r\nhi",
    );
    assert.deepEqual(bare.status, 200);
    // Content-Type twice: the first one counts, as in the Go service (Go's Header.Get).
    const twice = await rawRequest(
      server.port,
      "POST /topics/alpha/messages HTTP/1.1\r\nHost: x\r\nContent-Type: text/plain\r\n" +
        "Content-Type: text/html\r\nContent-Length: 2\r\nConnection: close\r\n\r\nhi",
    );
    assert.deepEqual(twice.status, 200);
    assert.deepEqual(facade.produced.length, accepted.length + 2);
    assertPlain(
      await post(base, "/topics/alpha/messages", "v", { "content-type": "image/png; q=1" }),
      415,
      "unsupported content type: image/png",
    );
    assertPlain(
      await post(base, "/topics/alpha/messages", "a=b", {
        "content-type": "application/x-www-form-urlencoded",
      }),
      415,
      "unsupported content type: application/x-www-form-urlencoded",
    );
    assert.deepEqual(facade.produced.length, accepted.length + 2);
  });
});

Deno.test("unknown paths get 404, wrong methods 405 with Allow", async () => {
  await withServer(async (base) => {
    for (
      const path of [
        "/",
        "/topic/alpha/messages",
        "/topics/a/b/messages",
        "/topics/alpha/messages/",
        "/topics/",
      ]
    ) {
      assertPlain(await post(base, path, "v"), 404, "not found");
    }
    for (const method of ["GET", "DELETE", "OPTIONS", "FOO"]) {
      const refused = await call(`${base}/topics/alpha/messages`, { method });
      assertPlain(refused, 405, "method not allowed");
      assert.deepEqual(refused.headers.get("allow"), "POST, PUT, PATCH");
    }
    const postTopics = await post(base, "/topics", "v");
    assertPlain(postTopics, 405, "method not allowed");
    assert.deepEqual(postTopics.headers.get("allow"), "GET");
  });
});

Deno.test("while draining, produce requests get 503 with Retry-After; GET /topics still works", async () => {
  await withServer(async (base, facade, server) => {
    server.setDraining(true);
    const reply = await post(base, "/topics/alpha/messages", "v");
    assertPlain(reply, 503, "shutting down");
    assert.deepEqual(reply.headers.get("retry-after"), "1");
    assert.deepEqual((await call(`${base}/topics`)).status, 200);
    server.setDraining(false);
    assert.deepEqual((await post(base, "/topics/alpha/messages", "v")).status, 200);
    assert.deepEqual(facade.produced.length, 1);
  });
});

Deno.test("each ProduceError kind maps to its status; other errors to 500; the server keeps serving", async () => {
  await withServer(async (base, facade) => {
    const cases: Array<[Error, number, string, string | null]> = [
      [new ProduceError("invalid", "bad record"), 400, "bad record", null],
      [new ProduceError("forbidden", "topic not allowed"), 403, "topic not allowed", null],
      [new ProduceError("too_large", "too big for the WAL"), 413, "too big for the WAL", null],
      [
        new ProduceError("kafka", "Broker: Unknown topic or partition"),
        502,
        "Broker: Unknown topic or partition",
        null,
      ],
      [new ProduceError("unavailable", "queue full\nand WAL full"), 503, "queue full and WAL full", "1"],
      [new ProduceError("unavailable", "breaker open", 7.2), 503, "breaker open", "8"],
      [new Error("secret internals"), 500, "internal error", null],
    ];
    for (const [err, status, reason, retryAfter] of cases) {
      facade.behaviour = () => {
        throw err;
      };
      const reply = await post(base, "/topics/alpha/messages", "v");
      assertPlain(reply, status, reason);
      assert.deepEqual(reply.headers.get("retry-after"), retryAfter);
    }
    const produce = facade.produce;
    facade.produce = () => {
      throw new Error("thrown, not rejected");
    };
    assertPlain(await post(base, "/topics/alpha/messages", "v"), 500, "internal error");
    facade.produce = produce;
    facade.behaviour = (m, ack) => facade.accept(m, ack);
    assert.deepEqual((await post(base, "/topics/alpha/messages", "v")).status, 200);
  });
});

Deno.test("GET /topics lists names one per line; a ProduceError's reason when it fails, else 500", async () => {
  await withServer(async (base, facade) => {
    const ok = await call(`${base}/topics`);
    assert.deepEqual(ok.status, 200);
    assert.deepEqual(ok.body, "alpha\nbeta");
    assert.deepEqual(ok.headers.get("content-type"), "text/plain; charset=utf-8");
    facade.listError = new ProduceError("unavailable", "kafka: cannot list topics", 5);
    const failed = await call(`${base}/topics`);
    assertPlain(failed, 503, "kafka: cannot list topics");
    assert.deepEqual(failed.headers.get("retry-after"), "5");
    facade.listError = new Error("secret internals at 10.0.0.7");
    assertPlain(await call(`${base}/topics`), 500, "internal error");
  });
});

Deno.test("GET /topics failures are logged once per window, not once per call", async () => {
  const lines = await captured(async () => {
    await withServer(async (base, facade) => {
      facade.listError = new ProduceError("unavailable", "kafka: cannot list topics", 5);
      for (let i = 0; i < 20; i++) assert.deepEqual((await call(`${base}/topics`)).status, 503);
    });
  });
  // One line at most: the window may have opened in an earlier test.
  assert.ok(lines.filter((l) => l.msg === "http: cannot list topics").length <= 1, JSON.stringify(lines));
});

Deno.test("shutdown waits for requests in flight", async () => {
  await withServer(async (base, facade, server) => {
    let release = () => {};
    const gate = new Promise<void>((r) => release = r);
    facade.behaviour = async (m, ack) => {
      await gate;
      return facade.accept(m, ack);
    };
    const pending = post(base, "/topics/alpha/messages?ack=kafka", "v");
    while (facade.produced.length === 0) await new Promise((r) => setTimeout(r, 2));
    let stopped = false;
    const stopping = server.shutdown().then(() => stopped = true);
    await new Promise((r) => setTimeout(r, 50));
    assert.deepEqual(stopped, false);
    release();
    const reply = await pending;
    assert.deepEqual(reply.status, 200);
    assert.deepEqual(JSON.parse(reply.body).offset, "0");
    await stopping;
    assert.ok(stopped);
  });
});

Deno.test("requests are counted by route pattern and status code", async () => {
  async function count(route: string, code: string): Promise<number> {
    const metric = await httpRequests.get();
    return metric.values.find((v) => v.labels.route === route && v.labels.code === code)?.value ?? 0;
  }
  const messages = "/topics/{topic}/messages";
  const before = [await count(messages, "200"), await count(messages, "400"), await count("/topics", "200")];
  const unmatched = await count("none", "404");
  await withServer(async (base) => {
    await post(base, "/topics/alpha/messages", "v");
    await post(base, "/topics/beta/messages", "v");
    await post(base, "/topics/a%20b/messages", "v");
    await call(`${base}/topics`);
    await call(`${base}/nowhere/${crypto.randomUUID()}`);
  });
  assert.deepEqual(await count(messages, "200"), before[0] + 2);
  assert.deepEqual(await count(messages, "400"), before[1] + 1);
  assert.deepEqual(await count("/topics", "200"), before[2] + 1);
  assert.deepEqual(await count("none", "404"), unmatched + 1);
  for (const { labels } of (await httpRequests.get()).values) {
    assert.ok(
      ["/topics", messages, "none"].includes(String(labels.route)),
      `raw path as a label: ${labels.route}`,
    );
  }
});

Deno.test("listen addresses: gRPC's form brackets IPv6 hosts", () => {
  assert.deepEqual(formatHostPort({ hostname: "::1", port: 18282 }), "[::1]:18282");
  assert.deepEqual(formatHostPort({ hostname: "0.0.0.0", port: 1 }), "0.0.0.0:1");
});

Deno.test("':port' listens on every interface", async () => {
  const server = await startHttpServer({ listen: ":0", facade: new FakeFacade() });
  try {
    assert.deepEqual(server.address, `[::]:${server.port}`);
    const res = await fetch(`http://127.0.0.1:${server.port}/topics`);
    assert.deepEqual([res.status, await res.text()], [200, ""]);
  } finally {
    await server.shutdown();
  }
});

/** A listener with a 1 MB message limit, for bodies that take the streamed path (over 16 KiB, or chunked). */
async function withStreamingServer(
  fn: (port: number, facade: FakeFacade) => Promise<void>,
  bodyTimeoutMs?: number,
): Promise<void> {
  const facade = new FakeFacade({ maxMessageBytes: 1_000_000 });
  const server = await startHttpServer({ listen: "127.0.0.1:0", facade, bodyTimeoutMs });
  try {
    await fn(server.port, facade);
  } finally {
    await server.shutdown();
  }
}

Deno.test("Content-Length: a repeated identical value is that value; the early 413 applies to it", async () => {
  await withServer(async (_base, facade, server) => {
    const ok = await rawRequest(
      server.port,
      "POST /topics/alpha/messages HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nContent-Length: 5\r\n" +
        "Connection: close\r\n\r\nhello",
    );
    assert.deepEqual(ok.status, 200, ok.body);
    assert.deepEqual(facade.produced[0].message.value, new TextEncoder().encode("hello"));
    // The body is never sent: the reply comes from the headers alone.
    const conn = await sendPartial(
      server.port,
      "POST /topics/alpha/messages HTTP/1.1\r\nHost: x\r\nContent-Length: 300000000\r\n" +
        "Content-Length: 300000000\r\n\r\n",
    );
    try {
      assert.deepEqual(statusAndBody(await readReply(conn)), {
        status: 413,
        body: "message too large: 300000000 bytes, at most 1000 bytes are accepted\n",
      });
    } finally {
      conn.close();
    }
    assert.deepEqual(facade.produced.length, 1);
  });
});

Deno.test("parseContentLength: digits, or identical values; anything else is -1", () => {
  assert.deepEqual(parseContentLength("0"), 0);
  assert.deepEqual(parseContentLength("1000000"), 1000000);
  assert.deepEqual(parseContentLength("300000000, 300000000"), 300000000);
  assert.deepEqual(parseContentLength("7,7 ,  7"), 7);
  for (
    const bad of ["", " ", "3, 4", "+3", "-1", "0x10", "1e3", "3 3", "3,", ",3", "1.0", "1234567890123456"]
  ) {
    assert.deepEqual(parseContentLength(bad), -1, JSON.stringify(bad));
  }
});

Deno.test("a streamed body (Content-Length over 16 KiB) is read whole", async () => {
  await withStreamingServer(async (port, facade) => {
    const bytes = new Uint8Array(200_000).map((_, i) => i % 251);
    const reply = await post(`http://127.0.0.1:${port}`, "/topics/alpha/messages", bytes);
    assert.deepEqual(reply.status, 200, reply.body);
    assert.deepEqual(facade.produced[0].message.value, bytes);
  });
});

Deno.test("a chunked body of many one-byte chunks is read whole, and up to exactly the limit", async () => {
  await withStreamingServer(async (port, facade) => {
    // Past 16 KiB, so the buffer grows while the chunks arrive one at a time.
    const chunks = 40_000;
    const head = "POST /topics/alpha/messages HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n" +
      "Connection: close\r\n\r\n";
    const reply = await rawRequest(port, head + "1\r\nx\r\n".repeat(chunks) + "0\r\n\r\n");
    assert.deepEqual(reply.status, 200, reply.body);
    assert.deepEqual(facade.produced[0].message.value, new Uint8Array(chunks).fill(120));
    const exact = new ReadableStream<Uint8Array>({
      start(controller) {
        for (let i = 0; i < 10; i++) controller.enqueue(new Uint8Array(100_000).fill(i));
        controller.close();
      },
    });
    assert.deepEqual((await post(`http://127.0.0.1:${port}`, "/topics/alpha/messages", exact)).status, 200);
    assert.deepEqual(facade.produced[1].message.value.byteLength, 1_000_000);
    assert.deepEqual(facade.produced[1].message.value[999_999], 9);
  });
});

/** Opens a connection, sends `request` and returns it unread; the caller closes it. */
async function sendPartial(port: number, request: string): Promise<Deno.Conn> {
  const conn = await Deno.connect({ hostname: "127.0.0.1", port });
  await conn.write(new TextEncoder().encode(request));
  return conn;
}

Deno.test("a body that stops arriving gets 408 after the body timeout, and the listener goes on", async () => {
  await withStreamingServer(async (port, facade) => {
    const requests = [
      "POST /topics/alpha/messages HTTP/1.1\r\nHost: x\r\nContent-Length: 1000000\r\n\r\nx",
      "POST /topics/alpha/messages HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n1\r\nx\r\n",
    ];
    for (const request of requests) {
      const started = Date.now();
      const conn = await sendPartial(port, request);
      try {
        assert.deepEqual(statusAndBody(await readReply(conn)), {
          status: 408,
          body: "request body not received within 0.2 s\n",
        });
        const elapsed = Date.now() - started;
        assert.ok(elapsed >= 200 && elapsed < 2000, `408 after ${elapsed} ms`);
      } finally {
        conn.close();
      }
    }
    assert.deepEqual(facade.produced.length, 0);
    assert.deepEqual((await post(`http://127.0.0.1:${port}`, "/topics/alpha/messages", "v")).status, 200);
  }, 200);
});

Deno.test("a listener that cannot bind names itself and the address", async () => {
  const taken = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const port = (taken.addr as Deno.NetAddr).port;
  try {
    await assert.rejects(
      () => startHttpServer({ listen: `127.0.0.1:${port}`, facade: new FakeFacade() }),
      { message: `http listener 127.0.0.1:${port}: address already in use` },
    );
  } finally {
    taken.close();
  }
});

Deno.test("a body the runtime lost is answered 503 with Retry-After; any other body read error is 400", async () => {
  const lost = bodyReadFailed(
    new Deno.errors.BadResource("Cannot read body as underlying resource unavailable"),
    "t",
  );
  assert.equal(lost.status, 503);
  assert.equal(lost.headers.get("retry-after"), "1");
  assert.equal(await lost.text(), "request body lost by the server; retry\n");
  const bad = bodyReadFailed(new TypeError("invalid chunk"), "t");
  assert.equal(bad.status, 400);
  assert.equal(await bad.text(), "could not read request body\n");
});

Deno.test("a body that came with its head is seen as arrived (read without a deadline); one still coming is not", async () => {
  const arrived: boolean[] = [];
  const headers: Array<Array<string | null>> = [];
  /** What arrivedBody took, and what a second call took (nothing: the body is used). */
  const taken: Array<[string | undefined, Uint8Array | undefined, boolean]> = [];
  const server = Deno.serve({ hostname: "127.0.0.1", port: 0, onListen() {} }, async (req) => {
    arrived.push(bodyArrived(req));
    headers.push([header(req, "content-type"), header(req, "content-length"), header(req, "x-none")]);
    const body = arrivedBody(req);
    taken.push([body && new TextDecoder().decode(body), arrivedBody(req), req.bodyUsed]);
    if (body === undefined) await req.bytes();
    return new Response(null);
  });
  const head =
    "POST /topics/alpha/messages HTTP/1.1\r\nHost: x\r\nContent-Type: Text/Plain\r\nContent-Length: 10\r\n\r\n";
  try {
    const whole = await sendPartial(server.addr.port, `${head}0123456789`);
    assert.equal((await readReply(whole))?.status, 200);
    whole.close();
    const split = await sendPartial(server.addr.port, `${head}01234`);
    await delay(100);
    await split.write(new TextEncoder().encode("56789"));
    assert.equal((await readReply(split))?.status, 200);
    split.close();
  } finally {
    await server.shutdown();
  }
  assert.deepEqual(arrived, [true, false]);
  assert.deepEqual(taken, [["0123456789", undefined, true], [undefined, undefined, false]]);
  assert.deepEqual(headers, [["Text/Plain", "10", null], ["Text/Plain", "10", null]]);
  // Requests not from Deno's server: a stream is never whole in advance; headers come from the Headers object.
  const made = new Request("http://x/", {
    method: "POST",
    body: ReadableStream.from([new Uint8Array(1)]),
    headers: { "content-type": "a/b" },
  });
  assert.equal(bodyArrived(made), false);
  assert.equal(header(made, "content-type"), "a/b");
  // Whatever the case the names were given in; repeated ones joined as Headers.get joins them.
  const mixed = new Request("http://x/", { headers: [["Content-Type", "c/d"], ["X-A", "1"], ["x-a", "2"]] });
  for (const name of ["content-type", "x-a", "x-none"]) {
    assert.equal(header(mixed, name), mixed.headers.get(name));
  }
  assert.equal(header(mixed, "x-a"), "1, 2");
});

// Deno 2.8.3 closes the connection after each of these (denoland/deno#36657): the reason Deno is pinned at 2.8.2.
Deno.test("one keep-alive connection carries messages whose body comes after the head, and batches", async () => {
  const facade = new FakeFacade({ maxMessageBytes: 100_000, topics: ["alpha"] });
  await withServer(async (base) => {
    const conn = await Deno.connect({ hostname: "127.0.0.1", port: Number(new URL(base).port) });
    try {
      const encoder = new TextEncoder();
      const value = "v".repeat(2_000);
      const batch = Array.from({ length: 30 }, (_, i) => JSON.stringify({ value: `${i} ${"b".repeat(100)}` }))
        .join("\n");
      const requests: Array<[string, string]> = [
        [`Content-Type: text/plain\r\nContent-Length: ${value.length}`, value],
        [`Content-Type: application/x-ndjson\r\nContent-Length: ${batch.length}`, batch],
        ["Content-Type: text/plain\r\nContent-Length: 5", "small"],
      ];
      for (const [headers, body] of requests) {
        // The head and the body in separate writes, as many clients send them.
        await conn.write(
          encoder.encode(`POST /topics/alpha/messages HTTP/1.1\r\nHost: x\r\n${headers}\r\n\r\n`),
        );
        await delay(20);
        await conn.write(encoder.encode(body));
        const reply = await readReply(conn);
        assert.equal(reply?.status, 200, `${headers}: ${JSON.stringify(reply)}`);
      }
    } finally {
      conn.close();
    }
    assert.equal(facade.produced[0].message.value.byteLength, 2_000);
    assert.equal(facade.produced.length, 32);
  }, facade);
});

Deno.test("a chunked body whose first chunk-size line is malformed is 400, not an empty message", async () => {
  await withServer(async (base, facade) => {
    const port = Number(new URL(base).port);
    const head = "POST /topics/alpha/messages HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n";
    for (
      const body of ["zz\r\nhello\r\n0\r\n\r\n", "-5\r\nhello\r\n0\r\n\r\n", "5 5\r\nhello\r\n0\r\n\r\n"]
    ) {
      assertPlain(
        await rawRequest(port, head + body),
        400,
        "malformed chunked body: no chunk read (an empty message needs Content-Length: 0)",
      );
    }
    assert.equal(facade.produced.length, 0);
    // A valid empty chunked body, sent with its head, is an empty message.
    const empty = await rawRequest(
      port,
      head.replace("\r\n\r\n", "\r\nConnection: close\r\n\r\n") + "0\r\n\r\n",
    );
    assert.equal(empty.status, 200);
    assert.deepEqual(facade.produced.map((p) => p.message.value.byteLength), [0]);
  });
});

Deno.test("a produce request with neither Content-Length nor Transfer-Encoding is 411, not an empty message", async () => {
  await withServer(async (base, facade) => {
    const port = Number(new URL(base).port);
    for (const method of ["POST", "PUT"]) {
      for (const type of ["", "Content-Type: text/plain\r\n", "Content-Type: application/x-ndjson\r\n"]) {
        assertPlain(
          await rawRequest(
            port,
            `${method} /topics/alpha/messages HTTP/1.1\r\nHost: x\r\n${type}Connection: close\r\n\r\n`,
          ),
          411,
          "Content-Length required (Content-Length: 0 for an empty message; over HTTP/1.1 a chunked body will do)",
        );
      }
    }
    assert.equal(facade.produced.length, 0);
    // Content-Length: 0 is how an empty message is sent.
    const empty = await rawRequest(
      port,
      "POST /topics/alpha/messages HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
    );
    assert.equal(empty.status, 200);
    assert.deepEqual(facade.produced.map((p) => p.message.value.byteLength), [0]);
  });
});

Deno.test("HTTP/2 without TLS (h2c): a body cut by RST_STREAM is not produced; a streamed body needs Content-Length", async () => {
  const { connect, constants } = await import("node:http2");
  await withServer(async (base, facade) => {
    const client = connect(base);
    try {
      /** Sends the head and `first`, then either resets the stream or ends it; the status, if any came. */
      const send = (
        headers: Record<string, string>,
        first: string,
        reset: boolean,
      ): Promise<number | undefined> =>
        new Promise((resolve) => {
          const req = client.request({ ":method": "POST", ":path": "/topics/alpha/messages", ...headers });
          let status: number | undefined;
          req.on("response", (h) => status = Number(h[":status"]));
          req.on("error", () => {});
          req.on("close", () => resolve(status));
          req.on("data", () => {});
          req.write(first, () => {
            if (reset) setTimeout(() => req.close(constants.NGHTTP2_CANCEL), 100);
            else setTimeout(() => req.end(), 100);
          });
        });
      // Content-Length 100, 7 bytes, then a reset: Deno's server ends the body there, without an error.
      assert.equal(await send({ "content-length": "100" }, "trunc01", true), undefined);
      // No Content-Length and the body still coming: 411 before a byte of it is taken.
      assert.equal(await send({}, "nolength", false), 411);
      assert.equal(await send({ "content-length": "5" }, "whole", false), 200);
      await delay(200);
      assert.deepEqual(facade.produced.map((p) => new TextDecoder().decode(p.message.value)), ["whole"]);
    } finally {
      client.close();
    }
  });
});

Deno.test("Content-Length with Transfer-Encoding is 400 and closes the connection: nothing after it is served", async () => {
  await withServer(async (base, facade) => {
    // Read until the server closes: a reply to the second request would follow the first one's body.
    const reply = await rawRequest(
      Number(new URL(base).port),
      "POST /topics/alpha/messages HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n" +
        "5\r\nhello\r\n0\r\n\r\n" +
        "POST /topics/alpha/messages HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\n\r\nz",
    );
    assertPlain(reply, 400, "both Content-Length and Transfer-Encoding given");
    assert.equal(facade.produced.length, 0);
  });
});

Deno.test("a Transfer-Encoding other than chunked alone is 501, as Go's net/http answers it; chunked in any case is read", async () => {
  await withServer(async (base, facade) => {
    const port = Number(new URL(base).port);
    const coded = await rawRequest(
      port,
      "POST /topics/alpha/messages HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip, chunked\r\n\r\n" +
        "2\r\ngz\r\n0\r\n\r\n",
    );
    assertPlain(coded, 501, 'unsupported Transfer-Encoding: "gzip, chunked" (only chunked is)');
    const upper = await rawRequest(
      port,
      "POST /topics/alpha/messages HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: Chunked\r\nConnection: close\r\n\r\n" +
        "2\r\nok\r\n0\r\n\r\n",
    );
    assert.equal(upper.status, 200);
    assert.deepEqual(facade.produced.map((p) => new TextDecoder().decode(p.message.value)), ["ok"]);
  });
});
