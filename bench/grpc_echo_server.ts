/**
 * The ceiling for the gRPC benchmark: our gRPC listener (src/server/grpc on src/server/http2) with a facade that
 * accepts every record at once and touches no Kafka, so what is measured is framing, decoding and replying only.
 *
 *   deno run -A bench/grpc_echo_server.ts PORT
 *
 * Runs until killed.
 */
import { startGrpcServer } from "../src/server/grpc/server.ts";
import { instantFacade } from "./instant_facade.ts";

const port = Number(Deno.args[0]);
if (!Number.isInteger(port) || port <= 0) {
  console.error("usage: grpc_echo_server.ts PORT");
  Deno.exit(2);
}

await startGrpcServer({ listen: `127.0.0.1:${port}`, facade: instantFacade, maxRequestSize: 4 << 20 });
