/**
 * The gRPC listener: KafkaAmbassador, grpc.health.v1.Health and server reflection, over our HTTP/2 layer
 * (src/server/http2: cleartext HTTP/2 with prior knowledge, as gRPC clients speak it, or TLS with ALPN h2).
 * With a Gate, Produce and ListTopics need a principal (`authorization: Bearer <token>` metadata, or a client
 * certificate); health and reflection stay open. Nothing a peer sends may end the process: protocol errors end
 * the connection or the stream (http2/connection.ts), and a method that throws ends its call (call.ts).
 */
import type protobuf from "protobufjs";
import { log, logRepeated } from "../../log.ts";
import type { ProducerFacade } from "../../producer/types.ts";
import { listenAddress } from "../../listen_address.ts";
import { type Principal, UNAUTHENTICATED_REASON } from "../auth.ts";
import type { Listener, ListenerOptions } from "../listener.ts";
import { Connections, defaultLimits } from "../limits.ts";
import { SCHEMA } from "../../config_keys.ts";
import { refusalOf } from "../refusal.ts";
import { ErrorCode } from "../http2/frame.ts";
import { listenHttp2 } from "../http2/listen.ts";
import type { HeaderField } from "../http2/hpack.ts";
import type { Http2Stream } from "../http2/stream.ts";
import { GrpcCall } from "./call.ts";
import { ACCEPT_ENCODING, isEncoding } from "./framing.ts";
import { Health } from "./health.ts";
import { encodeGrpcMessage, isGrpcContentType, parseTimeout, shownHeader } from "./metadata.ts";
import { GRPC_SERVICE, MethodMetrics } from "./metrics.ts";
import { ProduceStream } from "./produce.ts";
import { RecordBudget } from "./record_budget.ts";
import { Reflection, REFLECTION_PATHS } from "./reflection.ts";
import { describeFile, HEALTH_SERVICE, loadSchemas } from "./schema.ts";
import { Status, type StatusCode } from "./status.ts";
import { CallError, serveUnary } from "./unary.ts";

/** How the gRPC listener is built. */
export interface GrpcServerOptions extends ListenerOptions {
  facade: ProducerFacade;
  /** Largest gRPC message accepted; a larger one ends its call with RESOURCE_EXHAUSTED. */
  maxRequestSize: number;
  /**
   * Streams open at once on one connection (SETTINGS_MAX_CONCURRENT_STREAMS; `server.grpc.max_concurrent_streams`);
   * a client opening more has them refused (RST_STREAM REFUSED_STREAM). Each Produce stream may hold
   * MAX_IN_FLIGHT records (produce.ts), so this bounds what one connection can make the server hold.
   * @default 128
   */
  maxConcurrentStreams?: number;
  /**
   * Bytes one connection may hold (`server.grpc.max_session_memory`): request DATA the calls have not taken
   * (the connection's HTTP/2 receive window), and our output the client has not read before we stop reading
   * from it.
   * @default 2_097_152
   */
  maxSessionMemory?: number;
  /**
   * Bytes of Produce records read and not yet answered, across the listener (`server.grpc.max_inflight_bytes`):
   * a stream that reads past it stops reading until half of it is free (record_budget.ts).
   * @default 33_554_432
   */
  maxInflightBytes?: number;
}

/** Largest request header list (SETTINGS_MAX_HEADER_LIST_SIZE); a larger one resets its stream. */
const MAX_HEADER_LIST_BYTES = 64 * 1024;

/** How long shutdown waits for calls to end before cutting them. */
const SHUTDOWN_TIMEOUT_MS = 10_000;

const PRODUCE_PATH = `/${GRPC_SERVICE}/Produce`;
const LIST_TOPICS_PATH = `/${GRPC_SERVICE}/ListTopics`;
const HEALTH_CHECK_PATH = `/${HEALTH_SERVICE}/Check`;
const HEALTH_WATCH_PATH = `/${HEALTH_SERVICE}/Watch`;

/**
 * Starts the gRPC listener. While draining, health reports NOT_SERVING, new Produce streams end with
 * UNAVAILABLE and records get code 503; shutdown sends GOAWAY, ends each stream once its records are answered,
 * and cuts what is still open after a bound.
 * @example const grpc = await startGrpcServer({ listen: ":18282", facade, maxRequestSize: 4 << 20 });
 */
export async function startGrpcServer(opts: GrpcServerOptions): Promise<Listener> {
  const listen = listenAddress(opts.listen);
  const schemas = loadSchemas();
  const reflection = new Reflection(schemas, [
    describeFile("kafka_ambassador.proto", "", schemas.service),
    describeFile(
      "grpc/health/v1/health.proto",
      "grpc.health.v1",
      schemas.health.lookup("grpc.health.v1") as protobuf.Namespace,
    ),
  ]);
  const produceMetrics = new MethodMetrics("bidi_stream", "Produce");
  const listMetrics = new MethodMetrics("unary", "ListTopics");
  const streams = new Set<ProduceStream>();
  const budget = new RecordBudget(opts.maxInflightBytes ?? SCHEMA.server.grpc.maxInflightBytes.defaultValue);
  let draining = false;
  const health = new Health(schemas, opts.facade, () => draining);

  const gate = opts.gate;
  const mtls = opts.tls?.material.ca !== undefined;
  /** The caller of a Produce or ListTopics call; undefined ends the call with UNAUTHENTICATED. */
  const principalOf = (stream: Http2Stream, certName: () => string | undefined): Principal | undefined => {
    return gate!.authenticate(
      stream.header("authorization"),
      mtls && gate!.certNames ? certName() : undefined,
    );
  };

  const listTopics = (call: GrpcCall, principal: Principal | undefined) => {
    const metrics = listMetrics.begin();
    serveUnary(call, async () => {
      listMetrics.received.inc();
      let topics: string[];
      try {
        topics = await opts.facade.listTopics();
        if (principal !== undefined) topics = topics.filter((topic) => gate!.mayWrite(principal, topic));
      } catch (err) {
        // The facade logs why; the client gets its stable reason, or "internal error" for anything unexpected.
        const refusal = refusalOf(err, "grpc: list topics", "");
        throw new CallError(refusal.status === 503 ? Status.UNAVAILABLE : Status.INTERNAL, refusal.reason);
      }
      listMetrics.sent.inc();
      const t = schemas.listTopicsResponse;
      return t.encode(t.fromObject({ topics })).finish();
    }, (code) => metrics.handled(code));
  };

  const produce = (
    call: GrpcCall,
    principal: Principal | undefined,
    authenticate: () => Principal | undefined,
  ) => {
    if (draining) {
      produceMetrics.begin().handled(Status.UNAVAILABLE);
      call.end(Status.UNAVAILABLE, "shutting down");
      return;
    }
    const access = principal === undefined ? undefined : {
      gate: gate!,
      principal,
      generation: gate!.generation,
      authenticate,
    };
    streams.add(
      new ProduceStream(
        call,
        opts.facade,
        budget,
        () => draining,
        produceMetrics,
        (s) => streams.delete(s),
        access,
      ),
    );
  };

  const onStream = (stream: Http2Stream, certName: () => string | undefined) => {
    const method = stream.header(":method");
    const contentType = stream.header("content-type");
    if (method !== "POST" || !isGrpcContentType(contentType)) {
      notGrpc(
        stream,
        `invalid gRPC request: ${shownHeader(method ?? "")} with content-type "${
          shownHeader(contentType ?? "")
        }"`,
      );
      return;
    }
    const path = stream.header(":path") ?? "";
    const named = stream.header("grpc-encoding");
    const encoding = named !== undefined && isEncoding(named) ? named : undefined;
    const timeout = stream.header("grpc-timeout");
    const timeoutMs = parseTimeout(timeout);
    const call = new GrpcCall(stream, path, {
      maxMessageBytes: opts.maxRequestSize,
      timeoutMs: timeoutMs === "malformed" ? undefined : timeoutMs,
      encoding,
    });
    if (named !== undefined && named !== "identity" && encoding === undefined) {
      // The spec asks for UNIMPLEMENTED and the encodings that are supported.
      refuseCall(stream, call, Status.UNIMPLEMENTED, `grpc-encoding ${shownHeader(named)} is not supported`, [
        ["grpc-accept-encoding", ACCEPT_ENCODING],
      ]);
      return;
    }
    if (timeoutMs === "malformed") {
      refuseCall(stream, call, Status.INTERNAL, `malformed grpc-timeout: ${shownHeader(timeout!)}`);
      return;
    }
    if (path === PRODUCE_PATH || path === LIST_TOPICS_PATH) {
      const principal = gate === undefined ? undefined : principalOf(stream, certName);
      if (gate !== undefined && principal === undefined) {
        (path === PRODUCE_PATH ? produceMetrics : listMetrics).begin().handled(Status.UNAUTHENTICATED);
        call.start({ onMessage: () => {}, onHalfClose: () => {}, onEnd: () => {} });
        call.end(Status.UNAUTHENTICATED, UNAUTHENTICATED_REASON);
        return;
      }
      return path === PRODUCE_PATH
        ? produce(call, principal, () => principalOf(stream, certName))
        : listTopics(call, principal);
    }
    switch (path) {
      case HEALTH_CHECK_PATH:
        return health.check(call);
      case HEALTH_WATCH_PATH:
        return health.watch(call);
    }
    if (REFLECTION_PATHS.includes(path)) return reflection.serve(path, call);
    call.start({ onMessage: () => {}, onHalfClose: () => {}, onEnd: () => {} });
    call.end(Status.UNIMPLEMENTED, `unknown method ${shownHeader(path)}`);
  };

  const grpcKeys = SCHEMA.server.grpc;
  // Connections are counted and timed by limits.ts: a client sending a byte now and then is not activity.
  const conns = new Connections("grpc", opts.limits ?? defaultLimits("grpc"));
  const server = await listenHttp2({
    name: "grpc",
    address: listen,
    tls: opts.tls,
    conns,
    connection: {
      maxConcurrentStreams: opts.maxConcurrentStreams ?? grpcKeys.maxConcurrentStreams.defaultValue,
      maxSessionMemory: opts.maxSessionMemory ?? grpcKeys.maxSessionMemory.defaultValue,
      maxHeaderListSize: MAX_HEADER_LIST_BYTES,
    },
    onStream: (stream, certName) => {
      try {
        onStream(stream, certName);
      } catch (err) {
        log("error", "grpc: cannot serve a stream", { error: err });
        stream.reset(ErrorCode.INTERNAL_ERROR);
      }
    },
  });
  const { address, port } = server;

  const setDraining = (on: boolean) => {
    draining = on;
    health.notify();
  };
  let stopping: Promise<void> | undefined;
  return {
    address,
    port,
    setDraining,
    shutdown: () => {
      stopping ??= new Promise<void>((resolve) => {
        setDraining(true);
        for (const stream of streams) stream.closeWhenIdle();
        health.endAll();
        const timer = setTimeout(() => {
          log("warn", "grpc: calls still open at shutdown, cutting them", { streams: streams.size });
          server.destroyAll();
        }, SHUTDOWN_TIMEOUT_MS);
        // GOAWAY: no new streams; each connection closes once its open calls are over.
        server.close().then(() => {
          clearTimeout(timer);
          conns.stop();
          resolve();
        });
      });
      return stopping;
    },
  };
}

const encoder = new TextEncoder();

/**
 * HTTP 415 to a request that is not gRPC (a browser, curl, a probe), with the reason both as grpc-message and as a
 * plain-text body that a person reading the response sees. The body is flow-controlled like any DATA, so a client
 * that gives no window keeps the stream open and counted against max_concurrent_streams, as the protocol says.
 */
function notGrpc(stream: Http2Stream, message: string): void {
  logRepeated("grpc: request refused", "debug", "grpc: request refused", { status: 415, reason: message });
  stream.respond([
    [":status", "415"],
    ["content-type", "text/plain; charset=utf-8"],
    ["grpc-status", String(Status.INVALID_ARGUMENT)],
    ["grpc-message", encodeGrpcMessage(message)],
  ]);
  stream.write(encoder.encode(`${message}; this port speaks gRPC (POST, content-type application/grpc)\n`));
  stream.end([]);
}

/** Ends a call before it starts, with `code` and `message` in a trailers-only response. */
function refuseCall(
  stream: Http2Stream,
  call: GrpcCall,
  code: StatusCode,
  message: string,
  extra: HeaderField[] = [],
): void {
  stream.respond([
    [":status", "200"],
    ["content-type", "application/grpc"],
    ...extra,
    ["grpc-status", String(code)],
    ["grpc-message", encodeGrpcMessage(message)],
  ], true);
  call.start({ onMessage: () => {}, onHalfClose: () => {}, onEnd: () => {} });
  call.end(code);
}
