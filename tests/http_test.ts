import { deepStrictEqual as assertEquals, ok as assert } from "node:assert/strict";
import { httpRequests } from "../src/metrics.ts";
import { ProduceError } from "../src/producer/types.ts";
import { type HttpServer, startHttpServer } from "../src/server/http.ts";
import { formatHostPort } from "../src/server/listen.ts";
import { FakeFacade } from "./support/fake_facade.ts";

interface Reply {
  status: number;
  headers: Headers;
  body: string;
}

/** Runs `fn` against a fresh listener on an ephemeral loopback port, and always closes it. */
async function withServer(
  fn: (base: string, facade: FakeFacade, server: HttpServer) => Promise<void>,
  facade = new FakeFacade({ maxMessageBytes: 1000, topics: ["alpha", "beta"] }),
): Promise<void> {
  const server = startHttpServer({ listen: "127.0.0.1:0", facade });
  try {
    await fn(`http://127.0.0.1:${server.addr.port}`, facade, server);
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
  assertEquals(reply.status, status, `status; body: ${reply.body}`);
  assertEquals(reply.body, `${body}\n`);
  assertEquals(reply.headers.get("content-type"), "text/plain; charset=utf-8");
}

Deno.test("POST /topics/{topic}/messages hands the body to the facade unchanged and answers 200 with no body", async () => {
  await withServer(async (base, facade) => {
    const bytes = new Uint8Array(256).map((_, i) => i);
    const reply = await post(base, "/topics/alpha/messages", bytes, {
      "content-type": "application/octet-stream",
    });
    assertEquals(reply.status, 200);
    assertEquals(reply.body, "");
    assertEquals(facade.produced.length, 1);
    const { message, ack } = facade.produced[0];
    assertEquals(ack, "none");
    assertEquals(message.topic, "alpha");
    assertEquals(message.value, bytes);
    assertEquals(message.key, undefined);
    assertEquals(message.partition, undefined);
  });
});

Deno.test("an empty body is produced as an empty value", async () => {
  await withServer(async (base, facade) => {
    assertEquals((await post(base, "/topics/alpha/messages", "")).status, 200);
    assertEquals(facade.produced[0].message.value, new Uint8Array(0));
  });
});

Deno.test("ack, key and partition come from the query string", async () => {
  await withServer(async (base, facade) => {
    const kafka = await post(base, "/topics/alpha/messages?ack=kafka&key=k%C3%A9y+1&partition=3", "v");
    assertEquals(kafka.status, 200);
    assertEquals(kafka.headers.get("content-type"), "application/json");
    assertEquals(JSON.parse(kafka.body), { partition: 3, offset: "0" });
    const wal = await post(base, "/topics/alpha/messages?cb=17&ack=wal", "v");
    assertEquals(wal.status, 200);
    assertEquals(wal.body, "");
    assertEquals((await post(base, "/topics/alpha/messages?ack=none", "v")).status, 200);
    assertEquals(facade.produced.map((p) => p.ack), ["kafka", "wal", "none"]);
    assertEquals(facade.produced[0].message.key, new TextEncoder().encode("kéy 1"));
    assertEquals(facade.produced[0].message.partition, 3);
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
        server.addr.port,
        `POST /topics/${name}/messages HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\nConnection: close\r\n\r\nv`,
      );
      assertPlain(reply, 400, `invalid topic name: "${name}" is reserved`);
    }
    assertEquals((await post(base, `/topics/${"t".repeat(249)}/messages`, "v")).status, 200);
    assertEquals((await post(base, "/topics/Az09._-/messages", "v")).status, 200);
    assertEquals(facade.produced.length, 2);
  });
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
    assertEquals(facade.produced.length, 0);
  });
});

Deno.test("a body over maxMessageBytes gets 413, by Content-Length and while reading a chunked body", async () => {
  await withServer(async (base, facade) => {
    assertEquals((await post(base, "/topics/alpha/messages", new Uint8Array(1000))).status, 200);
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
    assertEquals(facade.produced.length, 1);
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
    assertEquals(reply.status, 200);
    assertEquals(facade.produced[0].message.value, new Uint8Array([1, 2, 3, 4, 5, 6]));
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
      assertEquals(
        (await post(base, "/topics/alpha/messages", "v", { "content-type": type })).status,
        200,
        type,
      );
    }
    // No Content-Type at all (fetch always adds one for a string body).
    const bare = await rawRequest(
      server.addr.port,
      "POST /topics/alpha/messages HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\nConnection: close\r\n\r\nhi",
    );
    assertEquals(bare.status, 200);
    assertEquals(facade.produced.length, accepted.length + 1);
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
    assertEquals(facade.produced.length, accepted.length + 1);
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
    const get = await call(`${base}/topics/alpha/messages`);
    assertPlain(get, 405, "method not allowed");
    assertEquals(get.headers.get("allow"), "POST");
    const postTopics = await post(base, "/topics", "v");
    assertPlain(postTopics, 405, "method not allowed");
    assertEquals(postTopics.headers.get("allow"), "GET");
  });
});

Deno.test("while draining, produce requests get 503 with Retry-After; GET /topics still works", async () => {
  await withServer(async (base, facade, server) => {
    server.setDraining(true);
    const reply = await post(base, "/topics/alpha/messages", "v");
    assertPlain(reply, 503, "shutting down");
    assertEquals(reply.headers.get("retry-after"), "1");
    assertEquals((await call(`${base}/topics`)).status, 200);
    server.setDraining(false);
    assertEquals((await post(base, "/topics/alpha/messages", "v")).status, 200);
    assertEquals(facade.produced.length, 1);
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
      assertEquals(reply.headers.get("retry-after"), retryAfter);
    }
    const produce = facade.produce;
    facade.produce = () => {
      throw new Error("thrown, not rejected");
    };
    assertPlain(await post(base, "/topics/alpha/messages", "v"), 500, "internal error");
    facade.produce = produce;
    facade.behaviour = (m, ack) => facade.accept(m, ack);
    assertEquals((await post(base, "/topics/alpha/messages", "v")).status, 200);
  });
});

Deno.test("GET /topics lists names one per line; 503 with the reason when the cluster cannot be asked", async () => {
  await withServer(async (base, facade) => {
    const ok = await call(`${base}/topics`);
    assertEquals(ok.status, 200);
    assertEquals(ok.body, "alpha\nbeta");
    assertEquals(ok.headers.get("content-type"), "text/plain; charset=utf-8");
    facade.listError = new Error("metadata request timed out");
    const failed = await call(`${base}/topics`);
    assertPlain(failed, 503, "cannot list topics: metadata request timed out");
    assertEquals(failed.headers.get("retry-after"), "1");
  });
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
    assertEquals(stopped, false);
    release();
    const reply = await pending;
    assertEquals(reply.status, 200);
    assertEquals(JSON.parse(reply.body).offset, "0");
    await stopping;
    assert(stopped);
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
  assertEquals(await count(messages, "200"), before[0] + 2);
  assertEquals(await count(messages, "400"), before[1] + 1);
  assertEquals(await count("/topics", "200"), before[2] + 1);
  assertEquals(await count("none", "404"), unmatched + 1);
  for (const { labels } of (await httpRequests.get()).values) {
    assert(
      ["/topics", messages, "none"].includes(String(labels.route)),
      `raw path as a label: ${labels.route}`,
    );
  }
});

Deno.test("listen addresses: gRPC's form brackets IPv6 hosts", () => {
  assertEquals(formatHostPort({ hostname: "::1", port: 18282 }), "[::1]:18282");
  assertEquals(formatHostPort({ hostname: "0.0.0.0", port: 1 }), "0.0.0.0:1");
});

Deno.test("':port' listens on every interface", async () => {
  const server = startHttpServer({ listen: ":0", facade: new FakeFacade() });
  try {
    assertEquals(server.addr.hostname, "0.0.0.0");
    const res = await fetch(`http://127.0.0.1:${server.addr.port}/topics`);
    assertEquals([res.status, await res.text()], [200, ""]);
  } finally {
    await server.shutdown();
  }
});
