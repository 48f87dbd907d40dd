import assert from "node:assert/strict";
import { Buffer } from "node:buffer";
import http2 from "node:http2";
import { fileURLToPath } from "node:url";
import * as grpc from "@grpc/grpc-js";
import * as protoLoader from "@grpc/proto-loader";
import { protoPath as healthProtoPath } from "grpc-health-check";
import { grpcHandled, grpcReceived, grpcSent, grpcStarted, recordsRefused } from "../src/metrics.ts";
import { ProduceError } from "../src/producer/types.ts";
import { decodeProdRs, encodeProdRq, type ProdRq, type ProdRs } from "../src/server/grpc/codec.ts";
import { frameAll, PREFIX_BYTES } from "../src/server/grpc/framing.ts";
import { PROTO_PATH } from "../src/server/grpc/schema.ts";
import { startGrpcServer } from "../src/server/grpc/server.ts";
import type { Listener } from "../src/server/listener.ts";
import { MAX_IN_FLIGHT } from "../src/server/grpc/produce.ts";
import { FakeFacade } from "./support/fake_facade.ts";
import { delay, waitFor } from "./support/wait.ts";

const COMPAT_PROTO = fileURLToPath(new URL("./fixtures/compat.proto", import.meta.url));

// deno-lint-ignore no-explicit-any
type Client = any;
// deno-lint-ignore no-explicit-any
type Reply = Record<string, any>;

/** A client for `service` (a dotted name for packaged services) built from `protoFile` alone. */
function clientFor(protoFile: string, service: string, port: number): Client {
  const definition = protoLoader.loadSync(protoFile, {
    keepCase: true,
    longs: String,
    enums: String,
    defaults: true,
  });
  const Service = service.split(".").reduce(
    (o: Client, name) => o[name],
    grpc.loadPackageDefinition(definition),
  );
  return new Service(`127.0.0.1:${port}`, grpc.credentials.createInsecure());
}

/** Runs `fn` against a fresh listener on an ephemeral loopback port; closes the clients, then the server. */
async function withServer(
  fn: (server: Listener, facade: FakeFacade, clients: Client[]) => Promise<void>,
  facade = new FakeFacade({ maxMessageBytes: 1000, topics: ["alpha", "beta"] }),
): Promise<void> {
  const server = await startGrpcServer({ listen: "127.0.0.1:0", facade, maxRequestSize: 64 * 1024 });
  const clients: Client[] = [];
  try {
    await fn(server, facade, clients);
  } finally {
    for (const client of clients) client.close();
    await server.shutdown();
  }
}

/** Writes every request on one Produce stream, half-closes it, and collects the replies and the final status. */
function produceAll(
  client: Client,
  requests: Reply[],
): Promise<{ replies: Reply[]; status: grpc.StatusObject }> {
  return new Promise((resolve) => {
    const call = client.Produce();
    const replies: Reply[] = [];
    call.on("data", (rs: Reply) => replies.push(rs));
    call.on("error", () => {}); // the status event carries the outcome
    call.on("status", (status: grpc.StatusObject) => resolve({ replies, status }));
    for (const rq of requests) call.write(rq);
    call.end();
  });
}

/**
 * Writes `requests` to a Produce stream in a single write, so that the server reads them together, then
 * half-closes; returns the replies in the order they came and the grpc-status.
 */
function produceInOneWrite(
  port: number,
  requests: ReadonlyArray<Partial<ProdRq> & { streamOffset: bigint }>,
  after: Uint8Array = new Uint8Array(),
): Promise<{ replies: ProdRs[]; status: string }> {
  const messages = requests.map((rq) =>
    encodeProdRq({ topic: "alpha", message: text(""), ack: "", headers: [], ...rq })
  );
  const framed = frameAll(messages, messages.reduce((n, m) => n + m.byteLength, 0));
  const body = new Uint8Array(framed.byteLength + after.byteLength);
  body.set(framed);
  body.set(after, framed.byteLength);
  return produceRaw(port, body);
}

/** Writes `body` (gRPC-framed ProdRq, or not) to a Produce stream in one write and half-closes; as above. */
async function produceRaw(port: number, body: Uint8Array): Promise<{ replies: ProdRs[]; status: string }> {
  const session = http2.connect(`http://127.0.0.1:${port}`);
  session.on("error", () => {}); // the stream's end or error carries the outcome
  try {
    const stream = session.request({
      ":method": "POST",
      ":path": "/KafkaAmbassador/Produce",
      "content-type": "application/grpc",
      te: "trailers",
    });
    const chunks: Uint8Array[] = [];
    let status = "";
    stream.on("data", (chunk: Uint8Array) => chunks.push(chunk));
    stream.on("trailers", (trailers) => status = String(trailers["grpc-status"]));
    const ended = new Promise<void>((resolve, reject) => {
      stream.on("end", resolve);
      stream.on("error", reject);
    });
    stream.end(body);
    await ended;
    const got = Buffer.concat(chunks);
    const replies: ProdRs[] = [];
    for (let pos = 0; pos < got.byteLength;) {
      const length = got.readUInt32BE(pos + 1);
      replies.push(decodeProdRs(got.subarray(pos + PREFIX_BYTES, pos + PREFIX_BYTES + length)));
      pos += PREFIX_BYTES + length;
    }
    return { replies, status };
  } finally {
    session.close();
  }
}

function unary(client: Client, method: string, request: Reply): Promise<Reply> {
  return new Promise((resolve, reject) => {
    client[method](
      request,
      (err: grpc.ServiceError | null, reply: Reply) => err ? reject(err) : resolve(reply),
    );
  });
}

const text = (s: string) => new TextEncoder().encode(s);

Deno.test("a client built from the Go service's proto streams 100 records; every streamOffset comes back", async () => {
  await withServer(async (server, facade, clients) => {
    const client = clientFor(COMPAT_PROTO, "KafkaAmbassador", server.port);
    clients.push(client);
    const requests = Array.from({ length: 100 }, (_, i) => ({
      topic: i % 2 ? "alpha" : "beta",
      message: text(`payload ${i}`),
      streamOffset: String(1000 + i),
    }));
    const { replies, status } = await produceAll(client, requests);
    assert.equal(status.code, grpc.status.OK);
    assert.deepEqual(replies.map((r) => r.streamOffset).sort(), requests.map((r) => r.streamOffset).sort());
    assert.deepEqual(Object.keys(replies[0]), ["streamOffset"]);
    assert.equal(facade.produced.length, 100);
    for (let i = 0; i < 100; i++) {
      const { message, ack } = facade.produced[i];
      assert.equal(ack, "none");
      assert.equal(message.topic, requests[i].topic);
      assert.deepEqual(new Uint8Array(message.value), requests[i].message);
      assert.equal(message.key, undefined);
      assert.equal(message.partition, undefined);
    }
  });
});

Deno.test("500 records written at once reach the facade in a few produceMany calls; replies in request order", async () => {
  await withServer(async (server, facade) => {
    const requests = Array.from({ length: 500 }, (_, i) => ({
      message: text(`payload ${i}`.padEnd(100, ".")),
      streamOffset: BigInt(i),
    }));
    const { replies, status } = await produceInOneWrite(server.port, requests);
    assert.equal(status, "0");
    assert.deepEqual(replies.map((r) => [r.streamOffset, r.code]), requests.map((r) => [r.streamOffset, 0]));
    // About 55 KB, within the initial HTTP/2 window: one read, or a few when the socket splits it.
    assert.ok(facade.producedMany.length <= 8, `${facade.producedMany.length} produceMany calls`);
    assert.equal(facade.producedMany.reduce((n, call) => n + call.count, 0), 500);
    assert.ok(facade.producedMany.every((call) => call.ack === "none"));
    const decoder = new TextDecoder();
    assert.deepEqual(
      facade.produced.map((p) => decoder.decode(p.message.value)),
      requests.map((r) => decoder.decode(r.message)),
    );
  });
});

Deno.test("records of one read with mixed ack levels: one produceMany per ack level, each reply to its record", async () => {
  await withServer(async (server, facade) => {
    const acks = ["", "wal", "kafka"];
    const requests = Array.from({ length: 30 }, (_, i) => ({
      ack: acks[i % 3],
      message: text(String(i)),
      streamOffset: BigInt(i),
    }));
    const { replies, status } = await produceInOneWrite(server.port, requests);
    assert.equal(status, "0");
    assert.deepEqual(facade.producedMany, [
      { ack: "none", count: 10 },
      { ack: "wal", count: 10 },
      { ack: "kafka", count: 10 },
    ]);
    assert.equal(replies.length, 30);
    for (const ack of acks) {
      // Each ack level is one call whose replies come back together, in request order.
      const offsets = requests.filter((r) => r.ack === ack).map((r) => r.streamOffset);
      const answered = replies.filter((r) => offsets.includes(r.streamOffset));
      assert.deepEqual(answered.map((r) => r.streamOffset), offsets, ack);
      assert.ok(answered.every((r) => r.code === 0), ack);
      assert.ok(answered.every((r) => (r.offset !== undefined) === (ack === "kafka")), ack);
    }
  });
});

/** ka_records_refused_total of `listener`, by status. */
async function refusedCounts(listener: string): Promise<Record<string, number>> {
  const counts: Record<string, number> = {};
  for (const v of (await recordsRefused.get()).values) {
    if (v.labels.listener === listener) counts[String(v.labels.status)] = v.value;
  }
  return counts;
}

Deno.test("a record refused in the middle of a read keeps its own reply, and the replies stay in request order", async () => {
  const before = await refusedCounts("grpc");
  await withServer(async (server, facade) => {
    facade.behaviour = (message, ack) => {
      if (new TextDecoder().decode(message.value) === "forbidden") {
        throw new ProduceError("forbidden", "topic not allowed");
      }
      return facade.accept(message, ack);
    };
    const { replies, status } = await produceInOneWrite(server.port, [
      { message: text("ok"), streamOffset: 1n },
      { message: text("ok"), streamOffset: 2n },
      { topic: "a b", message: text("ok"), streamOffset: 3n },
      { message: text("forbidden"), streamOffset: 4n },
      { message: new Uint8Array(1001), streamOffset: 5n },
      { message: text("ok"), streamOffset: 6n },
    ]);
    assert.equal(status, "0");
    assert.deepEqual(replies.map((r) => [r.streamOffset, r.code, r.error]), [
      [1n, 0, ""],
      [2n, 0, ""],
      [3n, 400, 'invalid: invalid topic name: "a b": only [a-zA-Z0-9._-] are allowed'],
      [4n, 403, "forbidden: topic not allowed"],
      [5n, 413, "too_large: message too large: 1001 bytes, at most 1000 bytes are accepted"],
      [6n, 0, ""],
    ]);
    assert.deepEqual(facade.producedMany, [{ ack: "none", count: 4 }]);
  });
  const after = await refusedCounts("grpc");
  for (const status of ["400", "403", "413"]) assert.equal(after[status], (before[status] ?? 0) + 1, status);
});

Deno.test("a produceMany call that fails as a whole refuses each of its records; the other ack levels and the stream go on", async () => {
  await withServer(async (server, facade) => {
    facade.behaviour = (message, ack) => {
      if (new TextDecoder().decode(message.value) === "surprise") throw new Error("internal detail");
      return facade.accept(message, ack);
    };
    const { replies, status } = await produceInOneWrite(server.port, [
      { message: text("ok"), streamOffset: 1n },
      { message: text("ok"), ack: "wal", streamOffset: 2n },
      { message: text("surprise"), streamOffset: 3n },
    ]);
    assert.equal(status, "0");
    const byOffset = new Map(replies.map((r) => [r.streamOffset, [r.code, r.error]]));
    assert.deepEqual(Object.fromEntries(byOffset), {
      "1": [500, "internal: internal error"],
      "2": [0, ""],
      "3": [500, "internal: internal error"],
    });
  });
});

Deno.test("a streamOffset above 2^53 is echoed exactly", async () => {
  await withServer(async (server, _facade, clients) => {
    const client = clientFor(COMPAT_PROTO, "KafkaAmbassador", server.port);
    clients.push(client);
    const { replies } = await produceAll(client, [{
      topic: "alpha",
      message: text("x"),
      streamOffset: "18446744073709551615",
    }]);
    assert.equal(replies[0].streamOffset, "18446744073709551615");
  });
});

Deno.test("ListTopics answers from the facade, and UNAVAILABLE when the cluster cannot be asked", async () => {
  await withServer(async (server, facade, clients) => {
    const client = clientFor(COMPAT_PROTO, "KafkaAmbassador", server.port);
    clients.push(client);
    assert.deepEqual(await unary(client, "ListTopics", {}), { topics: ["alpha", "beta"] });
    facade.listError = new ProduceError("unavailable", "kafka: cannot list topics", 5);
    const err = await unary(client, "ListTopics", {}).then(() => undefined, (e: grpc.ServiceError) => e);
    assert.equal(err?.code, grpc.status.UNAVAILABLE);
    assert.equal(err?.details, "kafka: cannot list topics");
    // Anything else is a surprise: logged, and not shown to the client.
    facade.listError = new Error("secret internals at 10.0.0.7");
    const internal = await unary(client, "ListTopics", {}).then(() => undefined, (e: grpc.ServiceError) => e);
    assert.equal(internal?.code, grpc.status.INTERNAL);
    assert.equal(internal?.details, "internal error");
  });
});

Deno.test("refused records get error and code, and the stream goes on", async () => {
  await withServer(async (server, facade, clients) => {
    const client = clientFor(PROTO_PATH, "KafkaAmbassador", server.port);
    clients.push(client);
    facade.behaviour = (message, ack) => {
      const reason = new TextDecoder().decode(message.value);
      if (reason === "unavailable") throw new ProduceError("unavailable", "queue full", 5);
      // As the facade words a failed delivery: librdkafka's error, prefixed "kafka: ".
      if (reason === "kafka") {
        throw new ProduceError("kafka", 'kafka: topic "alpha": Broker: Unknown topic or partition');
      }
      if (reason === "forbidden") throw new ProduceError("forbidden", "topic not allowed");
      if (reason === "surprise") throw new Error("internal detail");
      return facade.accept(message, ack);
    };
    const requests = [
      { topic: "a b", message: text("ok"), streamOffset: "1" },
      { topic: "alpha", message: new Uint8Array(1001), streamOffset: "2" },
      { topic: "alpha", message: text("ok"), ack: "all", streamOffset: "3" },
      { topic: "alpha", message: text("ok"), partition: -2, streamOffset: "4" },
      { topic: "alpha", message: text("unavailable"), streamOffset: "5" },
      { topic: "alpha", message: text("kafka"), ack: "kafka", streamOffset: "6" },
      { topic: "alpha", message: text("forbidden"), streamOffset: "7" },
      // An unexpected failure fails the whole produceMany call it is in: alone at its ack level here.
      { topic: "alpha", message: text("surprise"), ack: "wal", streamOffset: "8" },
      { topic: "alpha", message: text("ok"), streamOffset: "9" },
    ];
    const { replies, status } = await produceAll(client, requests);
    assert.equal(status.code, grpc.status.OK);
    const byOffset = new Map(replies.map((r) => [r.streamOffset, [r.code, r.error]]));
    assert.deepEqual(Object.fromEntries(byOffset), {
      "1": [400, 'invalid: invalid topic name: "a b": only [a-zA-Z0-9._-] are allowed'],
      "2": [413, "too_large: message too large: 1001 bytes, at most 1000 bytes are accepted"],
      "3": [400, 'invalid: invalid ack: "all": want none, wal or kafka'],
      "4": [400, "invalid: invalid partition: -2: want -1 (any) or a partition >= 0"],
      "5": [503, "unavailable: queue full"],
      "6": [502, 'kafka: topic "alpha": Broker: Unknown topic or partition'],
      "7": [403, "forbidden: topic not allowed"],
      "8": [500, "internal: internal error"],
      "9": [0, ""],
    });
    assert.equal(facade.produced.length, 5);
  });
});

Deno.test("ack, key, headers and partition reach the facade; ack=kafka replies carry partition and offset", async () => {
  await withServer(async (server, facade, clients) => {
    const client = clientFor(PROTO_PATH, "KafkaAmbassador", server.port);
    clients.push(client);
    const { replies } = await produceAll(client, [
      {
        topic: "alpha",
        message: text("v1"),
        ack: "kafka",
        key: text("k"),
        partition: 0,
        headers: [{ key: "h", value: text("1") }, { key: "h", value: text("2") }],
        streamOffset: "1",
      },
      { topic: "alpha", message: text("v2"), ack: "kafka", partition: 4, streamOffset: "2" },
      { topic: "alpha", message: text("v3"), ack: "wal", partition: -1, streamOffset: "3" },
    ]);
    const byOffset = new Map(replies.map((r) => [r.streamOffset, r]));
    assert.deepEqual([byOffset.get("1")?.partition, byOffset.get("1")?.offset], [0, "0"]);
    assert.deepEqual([byOffset.get("2")?.partition, byOffset.get("2")?.offset], [4, "1"]);
    assert.equal(byOffset.get("3")?.offset, undefined);
    const [first, second, third] = facade.produced;
    assert.equal(first.ack, "kafka");
    assert.deepEqual(new Uint8Array(first.message.key!), text("k"));
    assert.equal(first.message.partition, 0);
    assert.deepEqual(
      first.message.headers?.map(([k, v]) => [k, new TextDecoder().decode(v)]),
      [["h", "1"], ["h", "2"]],
    );
    assert.equal(second.message.partition, 4);
    assert.equal(second.message.key, undefined);
    assert.equal(third.ack, "wal");
    assert.equal(third.message.partition, undefined);
  });
});

Deno.test("an empty ack and a missing message mean ack none and an empty value", async () => {
  await withServer(async (server, facade, clients) => {
    const client = clientFor(PROTO_PATH, "KafkaAmbassador", server.port);
    clients.push(client);
    const { replies } = await produceAll(client, [{ topic: "alpha", streamOffset: "1" }]);
    assert.equal(replies[0].code, 0);
    assert.equal(facade.produced[0].ack, "none");
    assert.equal(facade.produced[0].message.value.byteLength, 0);
  });
});

Deno.test("the health service reports SERVING, and NOT_SERVING while draining", async () => {
  await withServer(async (server, _facade, clients) => {
    const client = clientFor(healthProtoPath, "grpc.health.v1.Health", server.port);
    clients.push(client);
    assert.deepEqual(await unary(client, "Check", { service: "" }), { status: "SERVING" });
    assert.deepEqual(await unary(client, "Check", { service: "KafkaAmbassador" }), { status: "SERVING" });
    server.setDraining(true);
    assert.deepEqual(await unary(client, "Check", { service: "KafkaAmbassador" }), { status: "NOT_SERVING" });
    server.setDraining(false);
    assert.deepEqual(await unary(client, "Check", { service: "" }), { status: "SERVING" });
  });
});

Deno.test("a health Check that does not decode is INTERNAL, saying why", async () => {
  await withServer(async (server) => {
    const client = new grpc.Client(`127.0.0.1:${server.port}`, grpc.credentials.createInsecure());
    try {
      const err = await new Promise<grpc.ServiceError | null>((resolve) => {
        client.makeUnaryRequest(
          "/grpc.health.v1.Health/Check",
          (bytes: Buffer) => bytes,
          (bytes: Buffer) => bytes,
          Buffer.from([0x0a, 0xff, 0xff]), // field 1 of a length past the message
          (e) => resolve(e),
        );
      });
      assert.equal(err?.code, grpc.status.INTERNAL);
      assert.match(err?.details ?? "", /^cannot decode HealthCheckRequest: /);
    } finally {
      client.close();
    }
  });
});

/** The part of grpc.reflection.{v1,v1alpha} that grpcurl uses (same field numbers as the real proto). */
function reflectionClient(version: "v1" | "v1alpha", port: number): Client {
  const messages = {
    ServerReflectionRequest: {
      fields: {
        host: { type: "string", id: 1 },
        file_containing_symbol: { type: "string", id: 4 },
        list_services: { type: "string", id: 7 },
      },
    },
    ServerReflectionResponse: {
      fields: {
        file_descriptor_response: { type: "FileDescriptorResponse", id: 4 },
        list_services_response: { type: "ListServiceResponse", id: 6 },
        error_response: { type: "ErrorResponse", id: 7 },
      },
    },
    FileDescriptorResponse: { fields: { file_descriptor_proto: { rule: "repeated", type: "bytes", id: 1 } } },
    ListServiceResponse: { fields: { service: { rule: "repeated", type: "ServiceResponse", id: 1 } } },
    ServiceResponse: { fields: { name: { type: "string", id: 1 } } },
    ErrorResponse: {
      fields: { error_code: { type: "int32", id: 1 }, error_message: { type: "string", id: 2 } },
    },
  };
  const service = {
    methods: {
      ServerReflectionInfo: {
        requestType: "ServerReflectionRequest",
        requestStream: true,
        responseType: "ServerReflectionResponse",
        responseStream: true,
      },
    },
  };
  const json = {
    nested: {
      grpc: {
        nested: {
          reflection: { nested: { [version]: { nested: { ...messages, ServerReflection: service } } } },
        },
      },
    },
  };
  const definition = protoLoader.fromJSON(json as Parameters<typeof protoLoader.fromJSON>[0], {
    keepCase: true,
  });
  // deno-lint-ignore no-explicit-any
  const Service = (grpc.loadPackageDefinition(definition) as any).grpc.reflection[version].ServerReflection;
  return new Service(`127.0.0.1:${port}`, grpc.credentials.createInsecure());
}

/** Sends one reflection request on a new stream and returns the first response. */
function reflect(client: Client, request: Reply): Promise<Reply> {
  return new Promise((resolve, reject) => {
    const call = client.ServerReflectionInfo();
    call.on("data", (rs: Reply) => {
      resolve(rs);
      call.end();
    });
    call.on("error", reject);
    call.write({ host: "", ...request });
  });
}

Deno.test("server reflection lists KafkaAmbassador and the health service, and resolves them by name", async () => {
  await withServer(async (server, _facade, clients) => {
    for (const version of ["v1", "v1alpha"] as const) {
      const client = reflectionClient(version, server.port);
      clients.push(client);
      const listed = await reflect(client, { list_services: "*" });
      const names = listed.list_services_response.service.map((s: Reply) => s.name);
      assert.deepEqual([...names].sort(), ["KafkaAmbassador", "grpc.health.v1.Health"], version);
      for (
        const symbol of ["KafkaAmbassador", "KafkaAmbassador.Produce", "ProdRq", "grpc.health.v1.Health"]
      ) {
        const found = await reflect(client, { file_containing_symbol: symbol });
        assert.equal(found.error_response, undefined, `${version} ${symbol}`);
        assert.ok(found.file_descriptor_response.file_descriptor_proto.length > 0, `${version} ${symbol}`);
      }
      // Health.List's map field comes out of protobufjs as a descriptor that grpcurl rejects; it must not be there.
      const health = await reflect(client, { file_containing_symbol: "grpc.health.v1.Health" });
      const described = health.file_descriptor_response.file_descriptor_proto.map((b: Uint8Array) =>
        new TextDecoder().decode(b)
      ).join("");
      assert.ok(
        described.includes("HealthCheckResponse") && !described.includes("HealthListResponse"),
        version,
      );
    }
  });
});

Deno.test("while draining, new streams end with UNAVAILABLE and records on open streams get code 503", async () => {
  await withServer(async (server, facade, clients) => {
    const client = clientFor(PROTO_PATH, "KafkaAmbassador", server.port);
    clients.push(client);
    const call = client.Produce();
    const replies: Reply[] = [];
    let wake = () => {};
    call.on("data", (rs: Reply) => {
      replies.push(rs);
      wake();
    });
    const next = () =>
      new Promise<Reply>((resolve) => {
        if (replies.length > 0) return resolve(replies.shift()!);
        wake = () => resolve(replies.shift()!);
      });
    const ended = new Promise<grpc.StatusObject>((resolve) => call.on("status", resolve));
    call.on("error", () => {});
    call.write({ topic: "alpha", message: text("before"), streamOffset: "1" });
    assert.equal((await next()).code, 0);

    server.setDraining(true);
    call.write({ topic: "alpha", message: text("during"), streamOffset: "2" });
    const refused = await next();
    assert.deepEqual([refused.streamOffset, refused.code, refused.error], [
      "2",
      503,
      "unavailable: shutting down",
    ]);
    const { status } = await produceAll(client, [{
      topic: "alpha",
      message: text("new"),
      streamOffset: "9",
    }]);
    assert.deepEqual([status.code, status.details], [grpc.status.UNAVAILABLE, "shutting down"]);

    server.setDraining(false);
    call.write({ topic: "alpha", message: text("after"), streamOffset: "3" });
    assert.equal((await next()).code, 0);
    call.end();
    assert.equal((await ended).code, grpc.status.OK);
    assert.deepEqual(facade.produced.map((p) => new TextDecoder().decode(p.message.value)), [
      "before",
      "after",
    ]);
  });
});

Deno.test("shutdown answers the records in flight, then ends open streams with UNAVAILABLE", async () => {
  const facade = new FakeFacade();
  let release = () => {};
  const gate = new Promise<void>((r) => release = r);
  facade.behaviour = async (m, ack) => {
    await gate;
    return facade.accept(m, ack);
  };
  const server = await startGrpcServer({ listen: "127.0.0.1:0", facade, maxRequestSize: 64 * 1024 });
  const client = clientFor(PROTO_PATH, "KafkaAmbassador", server.port);
  try {
    const call = client.Produce();
    const replies: Reply[] = [];
    call.on("data", (rs: Reply) => replies.push(rs));
    call.on("error", () => {});
    const ended = new Promise<grpc.StatusObject>((resolve) => call.on("status", resolve));
    call.write({ topic: "alpha", message: text("v"), ack: "kafka", streamOffset: "1" });
    await waitFor("the record to reach the facade", () => facade.produced.length > 0, 10_000, 2);
    let stopped = false;
    const stopping = server.shutdown().then(() => stopped = true);
    await delay(50);
    assert.equal(stopped, false);
    release();
    const status = await ended;
    assert.deepEqual([status.code, status.details], [grpc.status.UNAVAILABLE, "shutting down"]);
    assert.deepEqual(replies.map((r) => [r.streamOffset, r.code, r.offset]), [["1", 0, "0"]]);
    await stopping;
  } finally {
    client.close();
    await server.shutdown();
  }
});

Deno.test("a stream stops reading past MAX_IN_FLIGHT unanswered records, and resumes as they are answered", async () => {
  await withServer(async (server, facade, clients) => {
    let release = () => {};
    const gate = new Promise<void>((r) => release = r);
    facade.behaviour = async (m, ack) => {
      await gate;
      return facade.accept(m, ack);
    };
    const client = clientFor(PROTO_PATH, "KafkaAmbassador", server.port);
    clients.push(client);
    const total = MAX_IN_FLIGHT + 300;
    const requests = Array.from({ length: total }, (_, i) => ({ topic: "alpha", streamOffset: String(i) }));
    const done = produceAll(client, requests);
    await waitFor(
      "MAX_IN_FLIGHT records in the facade",
      () => facade.produced.length >= MAX_IN_FLIGHT,
      10_000,
      5,
    );
    await delay(100);
    assert.equal(facade.produced.length, MAX_IN_FLIGHT);
    release();
    const { replies, status } = await done;
    assert.equal(status.code, grpc.status.OK);
    assert.equal(replies.length, total);
    assert.equal(new Set(replies.map((r) => r.streamOffset)).size, total);
  });
});

Deno.test("streams stop reading once the listener's unanswered record bytes pass max_inflight_bytes, and resume", async () => {
  const facade = new FakeFacade({ maxMessageBytes: 1000, topics: ["alpha"] });
  let release = () => {};
  const gate = new Promise<void>((r) => release = r);
  facade.behaviour = async (m, ack) => {
    await gate;
    return facade.accept(m, ack);
  };
  const bound = 20_000;
  const server = await startGrpcServer({
    listen: "127.0.0.1:0",
    facade,
    maxRequestSize: 64 * 1024,
    maxInflightBytes: bound,
  });
  const client = clientFor(PROTO_PATH, "KafkaAmbassador", server.port);
  try {
    // Two streams of 100 records of about 510 bytes each, far below MAX_IN_FLIGHT per stream.
    const value = text("v".repeat(500));
    const streams = [1, 2].map(() =>
      produceAll(
        client,
        Array.from({ length: 100 }, (_, i) => ({ topic: "alpha", message: value, streamOffset: `${i}` })),
      )
    );
    await waitFor("records in the facade", () => facade.produced.length >= bound / 510, 10_000, 5);
    await delay(200);
    // Each stream reads on until a record of its own passes the bound: one past it each, at most.
    const taken = facade.produced.length;
    assert.ok(taken <= Math.ceil(bound / 510) + 2, `${taken} records read`);
    release();
    for (const done of streams) {
      const { replies, status } = await done;
      assert.equal(status.code, grpc.status.OK);
      assert.deepEqual(replies.map((r) => r.code), new Array(100).fill(0));
    }
    assert.equal(facade.produced.length, 200);
  } finally {
    client.close();
    await server.shutdown();
  }
});

Deno.test("a record over the max request size ends the stream with RESOURCE_EXHAUSTED", async () => {
  await withServer(async (server, facade, clients) => {
    const client = clientFor(PROTO_PATH, "KafkaAmbassador", server.port);
    clients.push(client);
    const { status } = await produceAll(client, [{
      topic: "alpha",
      message: new Uint8Array(65 * 1024),
      streamOffset: "1",
    }]);
    assert.equal(status.code, grpc.status.RESOURCE_EXHAUSTED);
    assert.equal(facade.produced.length, 0);
  });
});

Deno.test("records read before a message that ends the call (too large, undecodable, cut short) are all answered first", async () => {
  const tooLarge = new Uint8Array(PREFIX_BYTES);
  new DataView(tooLarge.buffer).setUint32(1, 65 * 1024);
  const undecodable = frameAll([new Uint8Array([0xff, 0xff, 0xff])], 3);
  const whole = encodeProdRq({ topic: "alpha", message: text("x"), ack: "", headers: [], streamOffset: 6n });
  const cut = frameAll([whole], whole.byteLength).subarray(0, 8);
  for (
    const [what, after, status] of [
      ["too large", tooLarge, grpc.status.RESOURCE_EXHAUSTED],
      ["undecodable", undecodable, grpc.status.INTERNAL],
      ["cut short", cut, grpc.status.INTERNAL],
    ] as const
  ) {
    await withServer(async (server, facade) => {
      const records = [1n, 2n, 3n, 4n, 5n].map((n) => ({
        streamOffset: n,
        message: text(`r${n}`),
        ack: "kafka",
      }));
      const { replies, status: got } = await produceInOneWrite(server.port, records, after);
      assert.equal(got, String(status), what);
      assert.deepEqual(
        replies.map((r) => [r.streamOffset, r.code]),
        records.map((r) => [r.streamOffset, 0]),
        what,
      );
      assert.equal(facade.produced.length, 5, what);
    });
  }
});

Deno.test("gRPC server metrics count calls and messages with go-grpc-prometheus labels", async () => {
  const labels = { grpc_type: "bidi_stream", grpc_service: "KafkaAmbassador", grpc_method: "Produce" };
  // deno-lint-ignore no-explicit-any
  async function value(metric: { get(): Promise<any> }, extra: Record<string, string> = {}): Promise<number> {
    const want: Record<string, string> = { ...labels, ...extra };
    const { values } = await metric.get();
    // deno-lint-ignore no-explicit-any
    return values.find((v: any) => Object.entries(want).every(([k, w]) => v.labels[k] === w))?.value ?? 0;
  }
  const before = [
    await value(grpcStarted),
    await value(grpcReceived),
    await value(grpcSent),
    await value(grpcHandled, { grpc_code: "OK" }),
    await value(grpcHandled, { grpc_code: "Unavailable" }),
  ];
  await withServer(async (server, _facade, clients) => {
    const client = clientFor(COMPAT_PROTO, "KafkaAmbassador", server.port);
    clients.push(client);
    const requests = [1, 2, 3].map((i) => ({ topic: "alpha", message: text("v"), streamOffset: String(i) }));
    await produceAll(client, requests);
    server.setDraining(true);
    await produceAll(client, requests);
  });
  assert.equal(await value(grpcStarted), before[0] + 2);
  assert.equal(await value(grpcReceived), before[1] + 3);
  assert.equal(await value(grpcSent), before[2] + 3);
  assert.equal(await value(grpcHandled, { grpc_code: "OK" }), before[3] + 1);
  assert.equal(await value(grpcHandled, { grpc_code: "Unavailable" }), before[4] + 1);
});

Deno.test("a call past its grpc-timeout ends with DEADLINE_EXCEEDED, on the server too", async () => {
  const labels = { grpc_type: "bidi_stream", grpc_service: "KafkaAmbassador", grpc_method: "Produce" };
  const exceeded = async () =>
    // deno-lint-ignore no-explicit-any
    (await grpcHandled.get()).values.find((v: any) =>
      Object.entries({ ...labels, grpc_code: "DeadlineExceeded" }).every(([k, w]) => v.labels[k] === w)
    )?.value ?? 0;
  const before = await exceeded();
  await withServer(async (server, facade, clients) => {
    facade.behaviour = () => new Promise(() => {}); // never answers
    const client = clientFor(PROTO_PATH, "KafkaAmbassador", server.port);
    clients.push(client);
    const status = await new Promise<grpc.StatusObject>((resolve) => {
      const call = client.Produce({ deadline: Date.now() + 200 });
      call.on("error", () => {});
      call.on("status", resolve);
      call.write({ topic: "alpha", message: text("v"), streamOffset: "1" });
    });
    assert.equal(status.code, grpc.status.DEADLINE_EXCEEDED);
    // The client gives up by itself at its deadline; the server's own timer ends the call on its side.
    await waitFor("the server to count DeadlineExceeded", async () => await exceeded() !== before, 2000, 20);
  });
  assert.equal(await exceeded(), before + 1);
});

Deno.test("an unknown method is UNIMPLEMENTED, and the connection serves the next call", async () => {
  await withServer(async (server, _facade, clients) => {
    const client = clientFor(PROTO_PATH, "KafkaAmbassador", server.port);
    clients.push(client);
    const err = await new Promise<grpc.ServiceError>((resolve) => {
      client.makeUnaryRequest(
        "/KafkaAmbassador/NoSuchMethod",
        (x: Uint8Array) => Buffer.from(x),
        (x: Uint8Array) => x,
        new Uint8Array(0),
        (e: grpc.ServiceError) => resolve(e),
      );
    });
    assert.equal(err.code, grpc.status.UNIMPLEMENTED);
    assert.equal(err.details, "unknown method /KafkaAmbassador/NoSuchMethod");
    assert.deepEqual(await unary(client, "ListTopics", {}), { topics: ["alpha", "beta"] });
  });
});

Deno.test("health Watch sends the status, then each change; an unknown service is SERVICE_UNKNOWN", async () => {
  await withServer(async (server, facade, clients) => {
    const client = clientFor(healthProtoPath, "grpc.health.v1.Health", server.port);
    clients.push(client);
    const seen: string[] = [];
    const call = client.Watch({ service: "KafkaAmbassador" });
    call.on("data", (rs: Reply) => seen.push(rs.status));
    call.on("error", () => {});
    const statuses = (n: number) => waitFor(`${n} health statuses`, () => seen.length >= n, 10_000, 5);
    await statuses(1);
    server.setDraining(true);
    await statuses(2);
    server.setDraining(false);
    await statuses(3);
    facade.ready = { ready: false, reasons: ["breaker open"] };
    await statuses(4); // readiness is polled about once a second
    assert.deepEqual(seen, ["SERVING", "NOT_SERVING", "SERVING", "NOT_SERVING"]);
    call.cancel();

    const unknown = client.Watch({ service: "nope" });
    unknown.on("error", () => {});
    const first = await new Promise<Reply>((resolve) => unknown.on("data", resolve));
    assert.equal(first.status, "SERVICE_UNKNOWN");
    unknown.cancel();
    const err = await unary(client, "Check", { service: "nope" }).then(() => undefined, (e) => e);
    assert.equal(err?.code, grpc.status.NOT_FOUND);
  });
});
