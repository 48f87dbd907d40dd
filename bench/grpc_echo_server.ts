/**
 * The ceiling for the gRPC benchmark: our gRPC listener (src/server/grpc, node:http2) with a facade that accepts
 * every record at once and touches no Kafka, so what is measured is framing, decoding and replying only.
 *
 *   deno run -A bench/grpc_echo_server.ts PORT
 *
 * Runs until killed.
 */
import type { AckLevel, Message } from "../src/message.ts";
import type { ProduceResult, ProducerFacade } from "../src/producer/types.ts";
import { startGrpcServer } from "../src/server/grpc/server.ts";

const port = Number(Deno.args[0]);
if (!Number.isInteger(port) || port <= 0) {
  console.error("usage: grpc_echo_server.ts PORT");
  Deno.exit(2);
}

const facade: ProducerFacade = {
  produce: (_m: Message, _a: AckLevel): Promise<ProduceResult> => Promise.resolve({ where: "queued" }),
  produceMany: (m: readonly Message[], _a: AckLevel) =>
    Promise.resolve(m.map(() => ({ where: "queued" as const }))),
  listTopics: () => Promise.resolve([]),
  maxMessageBytes: 1 << 20,
  readiness: () => ({ ready: true, reasons: [] }),
};

await startGrpcServer({ listen: `127.0.0.1:${port}`, facade, maxRequestSize: 4 << 20 });
