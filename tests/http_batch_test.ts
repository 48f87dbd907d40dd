/** HTTP batches (`Content-Type: application/x-ndjson`) against a fake facade: parsing, outcomes, limits. */
import assert from "node:assert/strict";
import type { AckLevel, Message } from "../src/message.ts";
import { recordsRefused } from "../src/metrics.ts";
import { ProduceError, type ProduceResult } from "../src/producer/types.ts";
import { type BatchLimits, startHttpServer } from "../src/server/http.ts";
import { ReadSlots } from "../src/server/read_slots.ts";
import { readReply, statusAndBody } from "./support/attack.ts";
import { FakeFacade } from "./support/fake_facade.ts";
import { collectGarbage } from "./support/gc.ts";
import { delay, waitFor } from "./support/wait.ts";

const NDJSON = { "content-type": "application/x-ndjson" };
const encoder = new TextEncoder();

/** A listener with small limits, and every produceMany call the facade got. */
interface Harness {
  base: string;
  port: number;
  facade: FakeFacade;
  /** The messages and ack of each produceMany call. */
  batches: Array<{ messages: readonly Message[]; ack: AckLevel }>;
}

interface BatchBody {
  count: number;
  errors: Array<{ index: number; status: number; error: string }>;
  results?: Array<{ partition: number; offset: string } | null>;
}

interface Reply {
  status: number;
  headers: Headers;
  text: string;
}

const LIMITS: BatchLimits = { maxRecords: 50, maxBytes: 64 * 1024 };

async function withServer(fn: (h: Harness) => Promise<void>, batch = LIMITS): Promise<void> {
  const facade = new FakeFacade({ maxMessageBytes: 100 });
  const batches: Harness["batches"] = [];
  const produceMany = facade.produceMany.bind(facade);
  facade.produceMany = (messages, ack) => {
    batches.push({ messages, ack });
    return produceMany(messages, ack);
  };
  const server = await startHttpServer({ listen: "127.0.0.1:0", facade, batch });
  try {
    await fn({ base: `http://127.0.0.1:${server.port}`, port: server.port, facade, batches });
  } finally {
    await server.shutdown();
  }
}

/** The body of a batch: each record as a JSON line (strings are sent as they are), with a final newline. */
function ndjson(...records: unknown[]): string {
  return records.map((r) => typeof r === "string" ? r : JSON.stringify(r)).join("\n") + "\n";
}

async function post(
  base: string,
  path: string,
  body: BodyInit,
  headers: HeadersInit = NDJSON,
): Promise<Reply> {
  const res = await fetch(base + path, { method: "POST", body, headers });
  return { status: res.status, headers: res.headers, text: await res.text() };
}

/** The JSON body of a batch reply, after checking its status and content type. */
function json(reply: Reply, status: number): BatchBody {
  assert.equal(reply.status, status, reply.text);
  assert.equal(reply.headers.get("content-type"), "application/json");
  return JSON.parse(reply.text);
}

function plainText(reply: Reply, status: number, text: string): void {
  assert.equal(reply.status, status, reply.text);
  assert.equal(reply.headers.get("content-type"), "text/plain; charset=utf-8");
  assert.equal(reply.text, `${text}\n`);
}

/** A chunked body: each part is sent as its own chunk. */
function chunked(parts: string[]): ReadableStream<Uint8Array> {
  return new ReadableStream<Uint8Array>({
    pull(controller) {
      const next = parts.shift();
      if (next === undefined) controller.close();
      else controller.enqueue(encoder.encode(next));
    },
  });
}

function bytes(text: string): Uint8Array {
  return encoder.encode(text);
}

Deno.test("batch: records go to produceMany in one call, in order; 200 with count and no errors", async () => {
  await withServer(async ({ base, batches, facade }) => {
    const body = ndjson(...Array.from({ length: 20 }, (_, i) => ({ value: `m${i}` })));
    assert.deepEqual(json(await post(base, "/topics/alpha/messages", body), 200), { count: 20, errors: [] });
    assert.equal(batches.length, 1);
    assert.equal(batches[0].ack, "none");
    assert.deepEqual(batches[0].messages.map((m) => new TextDecoder().decode(m.value)), [
      ...Array.from({ length: 20 }, (_, i) => `m${i}`),
    ]);
    assert.ok(batches[0].messages.every((m) => m.topic === "alpha"));
    assert.equal(facade.produced.length, 20);
  });
});

Deno.test("batch: values, keys (text and base64, binary exact), headers and partition reach the facade", async () => {
  await withServer(async ({ base, batches }) => {
    const binary = new Uint8Array(100).map((_, i) => (i * 37 + 200) % 256);
    const body = ndjson(
      { value: "héllo ☃", key: "k1", headers: { "trace-id": "t-1", source: "cli" }, partition: 3 },
      { value_b64: binary.toBase64(), key_b64: new Uint8Array([0, 1, 255]).toBase64() },
      { value: "" },
    );
    assert.deepEqual(json(await post(base, "/topics/alpha/messages", body), 200), { count: 3, errors: [] });
    assert.deepEqual(batches[0].messages, [
      {
        topic: "alpha",
        value: bytes("héllo ☃"),
        key: bytes("k1"),
        headers: [["trace-id", bytes("t-1")], ["source", bytes("cli")]],
        partition: 3,
      },
      { topic: "alpha", value: binary, key: new Uint8Array([0, 1, 255]) },
      { topic: "alpha", value: new Uint8Array(0) },
    ]);
  });
});

Deno.test("batch: each malformed line is its record's error (400, or 413 over message.max.bytes); the rest go on", async () => {
  await withServer(async ({ base, batches }) => {
    const body = ndjson(
      { value: "good-0" },
      "{oops",
      { value: "a", value_b64: "YQ==" },
      { value_b64: "%%%%" },
      { value: 5 },
      { value: "a", partition: -2 },
      { value: "x".repeat(101) },
      { value: "good-7" },
      { key: "no value" },
      ["an", "array"],
    );
    const reply = json(await post(base, "/topics/alpha/messages", body), 200);
    assert.equal(reply.count, 10);
    assert.deepEqual(reply.errors.map((e) => [e.index, e.status]), [
      [1, 400],
      [2, 400],
      [3, 400],
      [4, 400],
      [5, 400],
      [6, 413],
      [8, 400],
      [9, 400],
    ]);
    assert.ok(reply.errors[0].error.startsWith("line 2: not JSON: "), reply.errors[0].error);
    assert.equal(reply.errors[1].error, "line 3: both value and value_b64: give one of them");
    assert.equal(
      reply.errors[5].error,
      "line 7: message too large: 101 bytes, at most 100 bytes are accepted",
    );
    assert.deepEqual(batches[0].messages.map((m) => new TextDecoder().decode(m.value)), ["good-0", "good-7"]);
  });
});

Deno.test("batch: ack=kafka answers one result per record in order, null for a refused one", async () => {
  await withServer(async ({ base, batches }) => {
    const body = ndjson({ value: "a", partition: 4 }, "nope", { value: "b" }, { value: "c", partition: 1 });
    const reply = json(await post(base, "/topics/alpha/messages?ack=kafka", body), 200);
    assert.equal(batches[0].ack, "kafka");
    assert.deepEqual(reply.results, [
      { partition: 4, offset: "0" },
      null,
      { partition: 0, offset: "1" },
      { partition: 1, offset: "2" },
    ]);
    assert.deepEqual(reply.errors.map((e) => e.index), [1]);
    // Other ack levels answer no results.
    const weak = json(await post(base, "/topics/alpha/messages?ack=wal", ndjson({ value: "d" })), 200);
    assert.deepEqual(weak, { count: 1, errors: [] });
    assert.equal(batches[1].ack, "wal");
  });
});

/** ka_records_refused_total{listener="http"} for `status`. */
async function refused(status: number): Promise<number> {
  const found = (await recordsRefused.get()).values.find((v) =>
    v.labels.listener === "http" && v.labels.status === String(status)
  );
  return found?.value ?? 0;
}

Deno.test("batch: a partial refusal by the facade is 200 with the refused records listed, and counted", async () => {
  const before = [await refused(503), await refused(403)];
  await withServer(async ({ base, facade }) => {
    facade.behaviour = (message, ack) => {
      const text = new TextDecoder().decode(message.value);
      if (text === "full") throw new ProduceError("unavailable", "wal: full", 7);
      if (text === "denied") throw new ProduceError("forbidden", "topic is not allowed");
      return facade.accept(message, ack);
    };
    const body = ndjson({ value: "ok" }, { value: "full" }, { value: "denied" }, { value: "ok" });
    const reply = await post(base, "/topics/alpha/messages", body);
    assert.equal(reply.headers.get("retry-after"), null);
    assert.deepEqual(json(reply, 200), {
      count: 4,
      errors: [
        { index: 1, status: 503, error: "wal: full" },
        { index: 2, status: 403, error: "topic is not allowed" },
      ],
    });
  });
  assert.deepEqual([await refused(503), await refused(403)], [before[0] + 1, before[1] + 1]);
});

Deno.test("batch: every record refused: the shared status, 503 (with Retry-After) over 4xx when they differ", async () => {
  await withServer(async ({ base, facade }) => {
    facade.behaviour = () => {
      throw new ProduceError("unavailable", "breaker open", 4.2);
    };
    const unavailable = await post(base, "/topics/alpha/messages", ndjson({ value: "a" }, { value: "b" }));
    assert.equal(unavailable.headers.get("retry-after"), "5");
    assert.deepEqual(json(unavailable, 503).errors.map((e) => [e.index, e.status, e.error]), [
      [0, 503, "breaker open"],
      [1, 503, "breaker open"],
    ]);

    const mixed = await post(base, "/topics/alpha/messages", ndjson("bad", { value: "a" }));
    assert.equal(mixed.headers.get("retry-after"), "5");
    assert.deepEqual(json(mixed, 503).errors.map((e) => e.status), [400, 503]);

    facade.behaviour = () => {
      throw new ProduceError("kafka", "Broker: Unknown topic or partition");
    };
    assert.deepEqual(json(await post(base, "/topics/alpha/messages", ndjson({ value: "a" })), 502).count, 1);

    const malformed = await post(base, "/topics/alpha/messages", ndjson("bad", { value: "x".repeat(200) }));
    assert.equal(malformed.headers.get("retry-after"), null);
    assert.deepEqual(json(malformed, 400).errors.map((e) => e.status), [400, 413]);
    facade.behaviour = (message, ack) => facade.accept(message, ack);
    assert.deepEqual(json(await post(base, "/topics/alpha/messages", ndjson({ value_b64: "" }, "[]")), 200), {
      count: 2,
      errors: [{ index: 1, status: 400, error: "line 2: expected a JSON object, got an array" }],
    });
  });
});

Deno.test("batch: a facade failure that is no ProduceError is 500 internal error for its records", async () => {
  await withServer(async ({ base, facade }) => {
    facade.behaviour = () => {
      throw new TypeError("a bug");
    };
    const reply = json(await post(base, "/topics/alpha/messages", ndjson({ value: "a" }, "bad")), 500);
    assert.deepEqual(reply.errors.map((e) => [e.index, e.status]), [
      [0, 500],
      [1, 400],
    ]);
    assert.equal(reply.errors[0].error, "internal error");
    assert.ok(reply.errors[1].error.startsWith("line 2: not JSON: "), reply.errors[1].error);
  });
});

Deno.test("batch: an empty body or only blank lines is 200 with count 0; the facade is not called", async () => {
  await withServer(async ({ base, batches }) => {
    assert.deepEqual(json(await post(base, "/topics/alpha/messages", ""), 200), { count: 0, errors: [] });
    assert.deepEqual(json(await post(base, "/topics/alpha/messages", "\n\r\n  \n"), 200), {
      count: 0,
      errors: [],
    });
    assert.deepEqual(json(await post(base, "/topics/alpha/messages?ack=kafka", ""), 200), {
      count: 0,
      errors: [],
      results: [],
    });
    assert.equal(batches.length, 0);
  });
});

Deno.test("batch: content types x-ndjson and jsonl, in any case and with parameters", async () => {
  await withServer(async ({ base, batches }) => {
    const types = [
      "application/x-ndjson",
      "application/x-ndjson; charset=utf-8",
      "Application/X-NDJSON;charset=UTF-8",
      "application/jsonl",
    ];
    for (const type of types) {
      const reply = await post(base, "/topics/alpha/messages", ndjson({ value: "a" }, { value: "b" }), {
        "content-type": type,
      });
      assert.deepEqual(json(reply, 200), { count: 2, errors: [] }, type);
    }
    assert.equal(batches.length, types.length);
    // Other types are still one message each, or 415.
    const single = await post(base, "/topics/alpha/messages", ndjson({ value: "a" }), {
      "content-type": "application/json",
    });
    assert.deepEqual([single.status, single.text], [200, ""]);
    plainText(
      await post(base, "/topics/alpha/messages", "x", { "content-type": "application/x-jsonlines" }),
      415,
      "unsupported content type: application/x-jsonlines",
    );
    assert.equal(batches.length, types.length);
  });
});

Deno.test("batch: key and partition query parameters are refused with 400; ack is checked", async () => {
  await withServer(async ({ base, batches }) => {
    const body = ndjson({ value: "a" });
    plainText(
      await post(base, "/topics/alpha/messages?key=k", body),
      400,
      'query parameter key does not apply to a batch: set "key" on each record',
    );
    plainText(
      await post(base, "/topics/alpha/messages?ack=wal&partition=1", body),
      400,
      'query parameter partition does not apply to a batch: set "partition" on each record',
    );
    plainText(
      await post(base, "/topics/alpha/messages?ack=all", body),
      400,
      'invalid ack: "all": want none, wal or kafka',
    );
    // Parameters of the client's own are ignored, as for one message.
    assert.equal((await post(base, "/topics/alpha/messages?ack=wal&cb=1", body)).status, 200);
    plainText(
      await post(base, "/topics/bad%20name/messages", body),
      400,
      'invalid topic name: "bad name": only [a-zA-Z0-9._-] are allowed',
    );
    assert.equal(batches.length, 1);
  });
});

Deno.test("batch: more than max_records is 413 naming the limit, with Content-Length and chunked", async () => {
  await withServer(async ({ base, batches }) => {
    const records = Array.from({ length: 5 }, (_, i) => ({ value: `m${i}` }));
    assert.equal(
      (await post(base, "/topics/alpha/messages", ndjson(...records.slice(0, 4), ""))).status,
      200,
    );
    const text = "batch too large: more than 4 records, at most 4 records are accepted " +
      "(server.http.batch.max_records)";
    plainText(await post(base, "/topics/alpha/messages", ndjson(...records)), 413, text);
    plainText(await post(base, "/topics/alpha/messages", chunked(records.map((r) => ndjson(r)))), 413, text);
    assert.equal(batches.length, 1);
  }, { maxRecords: 4, maxBytes: 1024 });
});

Deno.test("batch: more than 100 lines that are not records refuse the whole batch (400, one line); 100 do not", async () => {
  await withServer(async ({ base, batches }) => {
    const bad = (n: number) => `${Array(n).fill("1").join("\n")}\n{"value":"ok"}\n`;
    const hundred = await post(base, "/topics/alpha/messages", bad(100), NDJSON);
    assert.equal(hundred.status, 200);
    assert.equal(JSON.parse(hundred.text).errors.length, 100);
    assert.equal(batches.length, 1);
    // A reply of one error per line of 2 bytes would be 50 times the body: garbage is refused whole, taking nothing.
    const more = await post(base, "/topics/alpha/messages", bad(101), NDJSON);
    assert.equal(more.status, 400);
    assert.match(
      more.text,
      /^more than 100 lines are not records \(the last: line 101: expected a JSON object, got a number\); none was taken\n$/,
    );
    assert.equal(batches.length, 1, "nothing of it reached the facade");
    // A client's field name is quoted cut short, however long it is.
    const long = await post(
      base,
      "/topics/alpha/messages",
      `{"value":"v","${"n".repeat(100_000)}":1}\n`,
      NDJSON,
    );
    const { errors } = JSON.parse(long.text);
    assert.ok(errors[0].error.length < 200, errors[0].error);
  }, { maxRecords: 1000, maxBytes: 1024 * 1024 });
});

Deno.test("batch: a body over max_bytes is 413 naming the limit, by Content-Length and while reading a chunked one", async () => {
  // Larger than message.max.bytes (100) and than the inline read (16 KiB): the body is streamed.
  const maxBytes = 40_000;
  await withServer(async ({ base, port, batches }) => {
    const line = ndjson({ value: "v".repeat(87) }); // 100 bytes with its newline
    const exact = line.repeat(maxBytes / line.length);
    assert.equal(exact.length, maxBytes);
    assert.deepEqual(json(await post(base, "/topics/alpha/messages", exact), 200), {
      count: 400,
      errors: [],
    });
    assert.deepEqual(json(await post(base, "/topics/alpha/messages", chunked([exact])), 200).count, 400);

    plainText(
      await post(base, "/topics/alpha/messages", exact + "\n"),
      413,
      "batch too large: 40001 bytes, at most 40000 bytes are accepted (server.http.batch.max_bytes)",
    );
    plainText(
      await post(base, "/topics/alpha/messages", chunked([exact, "\n"])),
      413,
      "batch too large: more than 40000 bytes, at most 40000 bytes are accepted (server.http.batch.max_bytes)",
    );
    // The declared length alone is enough: nothing of the body is sent.
    const conn = await Deno.connect({ hostname: "127.0.0.1", port });
    try {
      await conn.write(encoder.encode(
        "POST /topics/alpha/messages HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-ndjson\r\n" +
          "Content-Length: 300000000\r\n\r\n",
      ));
      assert.deepEqual(statusAndBody(await readReply(conn)), {
        status: 413,
        body:
          "batch too large: 300000000 bytes, at most 40000 bytes are accepted (server.http.batch.max_bytes)\n",
      });
    } finally {
      conn.close();
    }
    assert.equal(batches.length, 2);
  }, { maxRecords: 10_000, maxBytes });
});

Deno.test("batch: while the facade has no room, a batch waits unread and holds no in-flight bytes; one message goes on", async () => {
  const facade = new FakeFacade({ maxMessageBytes: 100 });
  const room = Promise.withResolvers<void>();
  facade.room = room.promise;
  const body = ndjson(...Array.from({ length: 20 }, (_, i) => ({ value: `m${i}` })));
  // Room for one batch's bytes, not for a batch's and a message's at once.
  const server = await startHttpServer({
    listen: "127.0.0.1:0",
    facade,
    batch: LIMITS,
    maxInflightBytes: bytes(body).byteLength + 2,
  });
  const base = `http://127.0.0.1:${server.port}`;
  try {
    const batch = post(base, "/topics/alpha/messages", body);
    await delay(100);
    assert.equal(facade.producedMany.length, 0, "not produced before there is room");
    const single = await fetch(`${base}/topics/alpha/messages`, { method: "POST", body: "one" });
    assert.equal(single.status, 200, await single.text());
    assert.equal(facade.produced.length, 1);
    room.resolve();
    assert.deepEqual(json(await batch, 200), { count: 20, errors: [] });
    assert.equal(facade.producedMany.length, 1);
  } finally {
    room.resolve(); // a failed check must not leave the batch waiting through shutdown
    await server.shutdown();
  }
});

Deno.test("batch: bodies are read a slot at a time; a body slow to arrive gives its slot up after the lease", async () => {
  const facade = new FakeFacade({ maxMessageBytes: 100 });
  const server = await startHttpServer({
    listen: "127.0.0.1:0",
    facade,
    batch: LIMITS,
    batchReads: new ReadSlots({ slots: 1, leaseMs: 1_000 }),
  });
  const base = `http://127.0.0.1:${server.port}`;
  const slowBody = bytes(ndjson({ value: "slow" }, { value: "late" }));
  const conn = await Deno.connect({ hostname: "127.0.0.1", port: server.port });
  try {
    // The slow batch takes the one slot and sends half its body.
    await conn.write(encoder.encode(
      "POST /topics/alpha/messages HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-ndjson\r\n" +
        `Content-Length: ${slowBody.byteLength}\r\n\r\n`,
    ));
    await conn.write(slowBody.subarray(0, 10));
    await delay(50);
    const quick = post(base, "/topics/alpha/messages", ndjson({ value: "quick" }));
    await delay(200);
    assert.equal(facade.producedMany.length, 0, "the whole batch behind it waits for the slot, unread");
    // Its lease over, the slow one reads on without the slot and the quick one goes ahead of it.
    assert.deepEqual(json(await quick, 200), { count: 1, errors: [] });
    assert.deepEqual(facade.produced.map((p) => new TextDecoder().decode(p.message.value)), ["quick"]);
    await conn.write(slowBody.subarray(10));
    const reply = await readReply(conn);
    assert.equal(reply?.status, 200, reply?.body ?? "no reply");
    assert.deepEqual(facade.produced.map((p) => new TextDecoder().decode(p.message.value)), [
      "quick",
      "slow",
      "late",
    ]);
  } finally {
    conn.close();
    await server.shutdown();
  }
});

Deno.test("batch: while the reply waits for the facade, the listener keeps none of the batch's records", async () => {
  const facade = new FakeFacade({ maxMessageBytes: 100 });
  const refs: Array<WeakRef<object>> = [];
  const answer = Promise.withResolvers<Array<ProduceResult | ProduceError>>();
  let count = 0;
  // A facade that has let go of the records and answers later, as one waiting for Kafka's reports.
  facade.produceMany = (messages) => {
    for (const m of messages) refs.push(new WeakRef(m), new WeakRef(m.value));
    count = messages.length;
    return answer.promise;
  };
  const server = await startHttpServer({ listen: "127.0.0.1:0", facade, batch: LIMITS });
  try {
    const reply = post(
      `http://127.0.0.1:${server.port}`,
      "/topics/alpha/messages",
      ndjson({ value: "a" }, "{", {
        value: "b",
      }),
    );
    await waitFor("the batch handed over", () => count === 2, 5_000);
    collectGarbage();
    assert.equal(refs.filter((ref) => ref.deref() !== undefined).length, 0, "records kept while waiting");
    answer.resolve([{ where: "kafka", partition: 0, offset: "7" }, {
      where: "kafka",
      partition: 0,
      offset: "8",
    }]);
    const body = json(await reply, 200);
    assert.equal(body.count, 3);
    assert.deepEqual(body.errors.map((e) => e.index), [1], "the line problem keeps its place");
  } finally {
    answer.resolve([]);
    await server.shutdown();
  }
});

Deno.test("batch: while draining, a batch gets 503 with Retry-After like one message", async () => {
  const facade = new FakeFacade();
  const server = await startHttpServer({ listen: "127.0.0.1:0", facade });
  try {
    server.setDraining(true);
    const reply = await post(
      `http://127.0.0.1:${server.port}`,
      "/topics/alpha/messages",
      ndjson({ value: "a" }),
    );
    plainText(reply, 503, "shutting down");
    assert.equal(reply.headers.get("retry-after"), "1");
    assert.equal(facade.produced.length, 0);
  } finally {
    await server.shutdown();
  }
});

Deno.test("batch: the default limits are those of the config key table", async () => {
  const facade = new FakeFacade({ maxMessageBytes: 100 });
  const server = await startHttpServer({ listen: "127.0.0.1:0", facade });
  try {
    const body = ndjson(...Array.from({ length: 10_001 }, () => ({ value: "" })));
    const reply = await post(`http://127.0.0.1:${server.port}`, "/topics/alpha/messages", body);
    plainText(
      reply,
      413,
      "batch too large: more than 10000 records, at most 10000 records are accepted (server.http.batch.max_records)",
    );
  } finally {
    await server.shutdown();
  }
});
