/** The gRPC listener (COMPAT.md, gRPC): KafkaAmbassador, grpc.health.v1 and server reflection. */
import { fileURLToPath } from "node:url";
import * as grpc from "@grpc/grpc-js";
import * as protoLoader from "@grpc/proto-loader";
import { HealthImplementation } from "grpc-health-check";
import { log } from "../log.ts";
import type { ProducerFacade } from "../producer/types.ts";
import { GRPC_SERVICE, MethodMetrics } from "./grpc_metrics.ts";
import { type ProdRq, type ProdRs, ProduceStream } from "./grpc_produce.ts";
import { reflectionFor } from "./grpc_reflection.ts";
import { listenAddress } from "../config.ts";
import { formatHostPort } from "./listen.ts";
import { oneLine } from "./refusal.ts";

/** A running gRPC listener. */
export interface GrpcServer {
  readonly port: number;
  /** While on, health reports NOT_SERVING, new Produce streams end with UNAVAILABLE and records get code 503. */
  setDraining(on: boolean): void;
  /** Drains, ends each open stream once its records are answered, then stops; forced after a bound. */
  shutdown(): Promise<void>;
}

/** The service definition; `deno compile` must include this file (`--include proto/`). */
export const PROTO_PATH = fileURLToPath(new URL("../../proto/kafka_ambassador.proto", import.meta.url));

/** How long shutdown waits for calls to end before cutting them. */
const SHUTDOWN_TIMEOUT_MS = 10_000;

/**
 * Starts the gRPC listener on `listen` ("host:port" or ":port"; port 0 picks a free one).
 * @example const grpc = await startGrpcServer({ listen: ":18282", facade, maxRequestSize: 4 << 20 });
 */
export async function startGrpcServer(
  opts: { listen: string; facade: ProducerFacade; maxRequestSize: number },
): Promise<GrpcServer> {
  const listen = listenAddress(opts.listen);
  const address = formatHostPort(listen);
  const definition = protoLoader.loadSync(PROTO_PATH, { keepCase: true, defaults: false });
  const server = new grpc.Server({ "grpc.max_receive_message_length": opts.maxRequestSize });
  const health = new HealthImplementation({ "": "SERVING", [GRPC_SERVICE]: "SERVING" });
  const produceMetrics = new MethodMetrics("bidi_stream", "Produce");
  const listMetrics = new MethodMetrics("unary", "ListTopics");
  const streams = new Set<ProduceStream>();
  let draining = false;

  server.addService(definition[GRPC_SERVICE] as grpc.ServiceDefinition, {
    Produce: (call: grpc.ServerDuplexStream<ProdRq, ProdRs>) => {
      if (draining) {
        produceMetrics.begin().handled(grpc.status.UNAVAILABLE);
        call.emit("error", { code: grpc.status.UNAVAILABLE, details: "shutting down" });
        return;
      }
      const stream = new ProduceStream(
        call,
        opts.facade,
        () => draining,
        produceMetrics,
        (s) => streams.delete(s),
      );
      streams.add(stream);
    },
    ListTopics: (
      _call: grpc.ServerUnaryCall<unknown, { topics: string[] }>,
      callback: grpc.sendUnaryData<{ topics: string[] }>,
    ) => {
      const metrics = listMetrics.begin();
      listMetrics.received.inc();
      opts.facade.listTopics().then(
        (topics) => {
          metrics.handled(grpc.status.OK);
          listMetrics.sent.inc();
          callback(null, { topics });
        },
        (err) => {
          log("warn", "grpc: cannot list topics", { error: err });
          const reason = err instanceof Error ? err.message : String(err);
          metrics.handled(grpc.status.UNAVAILABLE);
          callback({ code: grpc.status.UNAVAILABLE, details: oneLine(`cannot list topics: ${reason}`) });
        },
      );
    },
  });
  health.addToServer(server);
  reflectionFor(definition).addToServer(server);

  const port = await new Promise<number>((resolve, reject) => {
    server.bindAsync(address, grpc.ServerCredentials.createInsecure(), (err, port) => {
      if (err) reject(new Error(`grpc: cannot listen on ${address}: ${err.message}`));
      else resolve(port);
    });
  });
  log("info", "grpc listening", { addr: formatHostPort({ ...listen, port }) });

  const setDraining = (on: boolean) => {
    draining = on;
    const status = on ? "NOT_SERVING" : "SERVING";
    health.setStatus("", status);
    health.setStatus(GRPC_SERVICE, status);
  };
  return {
    port,
    setDraining,
    shutdown: () => {
      setDraining(true);
      for (const stream of streams) stream.closeWhenIdle();
      return new Promise<void>((resolve) => {
        const timer = setTimeout(() => {
          log("warn", "grpc: calls still open at shutdown, cutting them", { streams: streams.size });
          server.forceShutdown();
          resolve();
        }, SHUTDOWN_TIMEOUT_MS);
        server.tryShutdown(() => {
          clearTimeout(timer);
          resolve();
        });
      });
    },
  };
}
