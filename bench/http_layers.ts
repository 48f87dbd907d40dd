/**
 * Where the CPU of one HTTP message goes, layer by layer, without Kafka: a bare `Deno.serve` that reads the body
 * and answers 200 (bench/baseline_server.ts), against this tree's HTTP listener (src/server/http.ts, as the
 * service binds it) with a facade that takes every message at once, as librdkafka takes an ack=none message, and
 * against the floor of a server of our own on `Deno.listen` (bench/http1_floor_server.ts, no checks at all).
 * Each in its own process with the V8 flags of deploy/deno-flags.txt, under wrk -t1 -c64 -d10s with 100-byte
 * POSTs (bench/post.lua), alternating (the first side swapped every round) so that both see the same machine.
 * Prints requests/s and CPU µs per request (utime + stime from /proc) per round, the medians, and the
 * listener's cost beyond `Deno.serve`, and the floor's below it. What the whole service adds beyond that (the facade, librdkafka and its
 * reports) is compare.ts's HTTP row, or bench/service_ab.ts.
 *
 * Run: deno run -A bench/http_layers.ts [rounds, default 3]
 */
import { v8Flags } from "../tests/support/service.ts";
import { postLoadOnChild } from "./wrk_post.ts";
import type { ProducerFacade } from "../src/producer/types.ts";

const ROOT = new URL("..", import.meta.url).pathname;

/** Child mode: `--serve PORT` serves this tree's HTTP listener with a facade that takes every message at once. */
async function serve(port: string): Promise<void> {
  const { startHttpServer } = await import("../src/server/http.ts");
  const { QUEUED_NOW } = await import("../src/producer/types.ts");
  const { instantFacade } = await import("./instant_facade.ts");
  // QUEUED_NOW, as the facade answers a message librdkafka took: the listener's path for the usual message.
  const facade: ProducerFacade = { ...instantFacade, produce: () => QUEUED_NOW };
  await startHttpServer({ listen: `127.0.0.1:${port}`, facade });
}

type Side = "Deno.serve" | "listener" | "floor";

const SCRIPTS: Record<Side, string[]> = {
  "Deno.serve": [`${ROOT}bench/baseline_server.ts`],
  listener: [import.meta.filename!, "--serve"],
  floor: [`${ROOT}bench/http1_floor_server.ts`],
};

function round(side: Side): Promise<{ rps: number; cpuUs: number }> {
  return postLoadOnChild([...v8Flags(ROOT), `--config=${ROOT}deno.json`, ...SCRIPTS[side]]);
}

async function main(rounds: number): Promise<void> {
  const cpu: Record<Side, number[]> = { "Deno.serve": [], listener: [], floor: [] };
  for (let i = 0; i < rounds; i++) {
    const sides: Side[] = ["Deno.serve", "listener", "floor"];
    const order = i % 2 === 0 ? sides : sides.reverse();
    for (const side of order) {
      const { rps, cpuUs } = await round(side);
      cpu[side].push(cpuUs);
      console.log(`round ${i + 1} ${side}: ${rps.toFixed(0)} req/s, ${cpuUs.toFixed(2)} µs CPU/request`);
    }
  }
  const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];
  const bare = median(cpu["Deno.serve"]), ours = median(cpu.listener), floor = median(cpu.floor);
  console.log(
    `median CPU/request: Deno.serve ${bare.toFixed(2)} µs, listener ${ours.toFixed(2)} µs ` +
      `(+${(ours - bare).toFixed(2)} µs, ${(ours / bare).toFixed(2)}x), floor on Deno.listen ` +
      `${floor.toFixed(2)} µs (${(floor - bare).toFixed(2)} µs)`,
  );
}

if (Deno.args[0] === "--serve") {
  await serve(Deno.args[1]);
} else {
  const rounds = Number(Deno.args[0] ?? 3);
  if (!(rounds >= 1)) throw new Error("usage: bench/http_layers.ts [rounds]");
  await main(rounds);
}
