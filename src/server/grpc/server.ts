/**
 * The gRPC listener: KafkaAmbassador, grpc.health.v1.Health and server reflection, over node:http2 (cleartext
 * HTTP/2 with prior knowledge, as gRPC clients speak it, or TLS with ALPN h2). With a Gate, Produce and
 * ListTopics need a principal (`authorization: Bearer <token>` metadata, or a client certificate); health and
 * reflection stay open. Nothing a peer sends may end the process: every emitter has an `error` listener and
 * every stream operation is guarded (see call.ts).
 */
import http2 from "node:http2";
import type protobuf from "protobufjs";
import type { Http2Session, IncomingHttpHeaders, ServerHttp2Stream } from "node:http2";
import type { TLSSocket } from "node:tls";
import { log, logRepeated } from "../../log.ts";
import type { ProducerFacade } from "../../producer/types.ts";
import { formatHostPort, listenAddress } from "../../listen_address.ts";
import { type Principal, UNAUTHENTICATED_REASON } from "../auth.ts";
import { type Listener, type ListenerOptions, listenError, nodeListenError } from "../listener.ts";
import { certNameOf, nodeTlsOptions } from "../tls.ts";
import { Connection, Connections, defaultLimits } from "../limits.ts";
import { SCHEMA } from "../../config_keys.ts";
import { refusalOf } from "../refusal.ts";
import { GrpcCall, guard } from "./call.ts";
import { Health } from "./health.ts";
import { encodeGrpcMessage, isGrpcContentType, parseTimeout } from "./metadata.ts";
import { GRPC_SERVICE, MethodMetrics } from "./metrics.ts";
import { SessionOutbound } from "./outbound.ts";
import { ProduceStream } from "./produce.ts";
import { Reflection, REFLECTION_PATHS } from "./reflection.ts";
import { describeFile, HEALTH_SERVICE, loadSchemas } from "./schema.ts";
import { Status } from "./status.ts";
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
   * Bytes of frames, headers and buffered data one connection may hold (node:http2's `maxSessionMemory`,
   * counted in MiB; `server.grpc.max_session_memory`); past it, new streams are refused with
   * ENHANCE_YOUR_CALM.
   * @default 10_485_760
   */
  maxSessionMemory?: number;
}

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
  const sessions = new Set<Http2Session>();
  const outbounds = new WeakMap<Http2Session, SessionOutbound>();
  let draining = false;
  const health = new Health(schemas, opts.facade, () => draining);

  const gate = opts.gate;
  const mtls = opts.tls?.material.ca !== undefined;
  /** The caller of a Produce or ListTopics call; undefined ends the call with UNAUTHENTICATED. */
  const principalOf = (stream: ServerHttp2Stream, headers: IncomingHttpHeaders): Principal | undefined => {
    const certName = mtls && gate!.certNames
      ? certNameOf(stream.session?.socket as TLSSocket | undefined)
      : undefined;
    return gate!.authenticate(headerValue(headers["authorization"]), certName);
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

  const produce = (call: GrpcCall, principal: Principal | undefined) => {
    if (draining) {
      produceMetrics.begin().handled(Status.UNAVAILABLE);
      call.end(Status.UNAVAILABLE, "shutting down");
      return;
    }
    const access = principal === undefined ? undefined : { gate: gate!, principal };
    streams.add(
      new ProduceStream(call, opts.facade, () => draining, produceMetrics, (s) => streams.delete(s), access),
    );
  };

  const onStream = (stream: ServerHttp2Stream, headers: IncomingHttpHeaders) => {
    // First of all: an unhandled stream error would be thrown out of the event loop.
    stream.on(
      "error",
      (err) => logRepeated("grpc: stream error", "debug", "grpc: stream error", { error: err }),
    );
    const method = headers[":method"];
    const contentType = headers["content-type"];
    if (method !== "POST" || !isGrpcContentType(contentType)) {
      refuse(
        stream,
        415,
        `invalid gRPC request: ${method} with content-type ${JSON.stringify(contentType ?? "")}`,
      );
      return;
    }
    const path = headers[":path"] ?? "";
    const encoding = headers["grpc-encoding"];
    const call = new GrpcCall(stream, path, {
      maxMessageBytes: opts.maxRequestSize,
      outbound: outbounds.get(stream.session!),
      timeoutMs: parseTimeout(headerValue(headers["grpc-timeout"])),
    });
    if (encoding !== undefined && encoding !== "identity") {
      // No compression is supported; the spec asks for UNIMPLEMENTED and the encodings that are.
      guard("respond", () => {
        if (stream.destroyed || stream.closed) return;
        stream.respond({
          ":status": 200,
          "content-type": "application/grpc",
          "grpc-accept-encoding": "identity",
          "grpc-status": String(Status.UNIMPLEMENTED),
          "grpc-message": encodeGrpcMessage(`grpc-encoding ${headerValue(encoding)} is not supported`),
        }, { endStream: true });
      });
      call.start({ onMessage: () => {}, onHalfClose: () => {}, onEnd: () => {} });
      call.end(Status.UNIMPLEMENTED);
      return;
    }
    if (path === PRODUCE_PATH || path === LIST_TOPICS_PATH) {
      const principal = gate === undefined ? undefined : principalOf(stream, headers);
      if (gate !== undefined && principal === undefined) {
        (path === PRODUCE_PATH ? produceMetrics : listMetrics).begin().handled(Status.UNAUTHENTICATED);
        call.start({ onMessage: () => {}, onHalfClose: () => {}, onEnd: () => {} });
        call.end(Status.UNAUTHENTICATED, UNAUTHENTICATED_REASON);
        return;
      }
      return path === PRODUCE_PATH ? produce(call, principal) : listTopics(call, principal);
    }
    switch (path) {
      case HEALTH_CHECK_PATH:
        return health.check(call);
      case HEALTH_WATCH_PATH:
        return health.watch(call);
    }
    if (REFLECTION_PATHS.includes(path)) return reflection.serve(path, call);
    call.start({ onMessage: () => {}, onHalfClose: () => {}, onEnd: () => {} });
    call.end(Status.UNIMPLEMENTED, `unknown method ${path}`);
  };

  const grpcKeys = SCHEMA.server.grpc;
  const options = {
    settings: {
      maxConcurrentStreams: opts.maxConcurrentStreams ?? grpcKeys.maxConcurrentStreams.defaultValue,
    },
    maxSessionMemory: (opts.maxSessionMemory ?? grpcKeys.maxSessionMemory.defaultValue) / (1024 * 1024),
  };
  const tls = opts.tls;
  const server = tls === undefined
    ? http2.createServer(options)
    : http2.createSecureServer({ ...options, ...nodeTlsOptions(tls.material) });
  // Connections are counted and timed here rather than with server.setTimeout: that counts any byte as
  // activity, so a client sending a byte now and then would be kept for good.
  const conns = new Connections("grpc", opts.limits ?? defaultLimits("grpc"));
  const tracked = new WeakMap<Http2Session, Connection>();
  if (tls !== undefined) {
    // A new certificate applies to new connections; the listening socket stays open (tls.ts).
    tls.subscribe((material) =>
      (server as http2.Http2SecureServer).setSecureContext(nodeTlsOptions(material))
    );
    server.on("tlsClientError", (err: Error) => {
      logRepeated("grpc: tls handshake failed", "debug", "grpc: tls handshake failed", {
        error: err.message,
      });
    });
  }
  server.on("stream", (stream: ServerHttp2Stream, headers: IncomingHttpHeaders) => {
    const conn = tracked.get(stream.session!);
    if (conn !== undefined) {
      conn.requestStarted();
      stream.once("close", () => conn.requestEnded());
    }
    try {
      onStream(stream, headers);
    } catch (err) {
      log("error", "grpc: cannot serve a stream", { error: err });
      guard("close", () => stream.close(http2.constants.NGHTTP2_INTERNAL_ERROR));
    }
  });
  server.on("session", (session: Http2Session) => {
    const conn = conns.open(() => guard("destroy", () => session.destroy()));
    if (conn === undefined) {
      // GOAWAY with ENHANCE_YOUR_CALM says why, then the connection closes.
      guard("goaway", () => session.goaway(http2.constants.NGHTTP2_ENHANCE_YOUR_CALM));
      guard("destroy", () => session.destroy());
      return;
    }
    tracked.set(session, conn);
    session.once("close", () => conn.closed());
    sessions.add(session);
    outbounds.set(session, new SessionOutbound(session.socket));
    session.on(
      "error",
      (err) => logRepeated("grpc: session error", "debug", "grpc: session error", { error: err }),
    );
    session.on("frameError", (type: number, code: number) => {
      logRepeated("grpc: frame error", "debug", "grpc: frame error", { type, code });
    });
    session.on("close", () => sessions.delete(session));
  });
  server.on("sessionError", (err) => {
    logRepeated("grpc: session error", "debug", "grpc: session error", { error: err });
  });
  server.on("timeout", () => {});

  const port = await new Promise<number>((resolve, reject) => {
    const onError = (err: NodeJS.ErrnoException) => {
      reject(listenError("grpc", listen, nodeListenError(err)));
    };
    server.once("error", onError);
    server.listen({ port: listen.port, host: listen.hostname }, () => {
      server.off("error", onError);
      server.on("error", (err) => log("error", "grpc: listener error", { error: err }));
      resolve((server.address() as { port: number }).port);
    });
  });
  const address = formatHostPort({ ...listen, port });
  log("info", "grpc listening", tls === undefined ? { addr: address } : { addr: address, tls: true, mtls });

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
          for (const session of sessions) guard("destroy", () => session.destroy());
        }, SHUTDOWN_TIMEOUT_MS);
        server.close(() => {
          clearTimeout(timer);
          conns.stop();
          resolve();
        });
        // GOAWAY: no new streams; each connection closes once its open calls are over.
        for (const session of sessions) guard("close", () => session.close());
      });
      return stopping;
    },
  };
}

/** Answers a request that is not gRPC with an HTTP status and a gRPC status, and resets its stream. */
function refuse(stream: ServerHttp2Stream, httpStatus: number, message: string): void {
  logRepeated("grpc: request refused", "debug", "grpc: request refused", {
    status: httpStatus,
    reason: message,
  });
  guard("respond", () => {
    if (stream.destroyed || stream.closed) return;
    stream.respond({
      ":status": httpStatus,
      "content-type": "application/grpc",
      "grpc-status": String(Status.INVALID_ARGUMENT),
      "grpc-message": encodeGrpcMessage(message),
    }, { endStream: true });
  });
  setTimeout(() => guard("close", () => stream.destroyed || stream.close(0)), 0);
}

function headerValue(value: string | string[] | undefined): string | undefined {
  return Array.isArray(value) ? value[0] : value;
}
