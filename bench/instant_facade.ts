/** A producer facade that accepts every record at once, without Kafka: what the gRPC ceilings measure against. */
import type { AckLevel, Message } from "../src/message.ts";
import type { ProduceResult, ProducerFacade } from "../src/producer/types.ts";

export const instantFacade: ProducerFacade = {
  produce: (_m: Message, _a: AckLevel): Promise<ProduceResult> => Promise.resolve({ where: "queued" }),
  produceMany: (m: readonly Message[], _a: AckLevel) =>
    Promise.resolve(m.map(() => ({ where: "queued" as const }))),
  roomForBatch: () => undefined,
  listTopics: () => Promise.resolve([]),
  maxMessageBytes: 1 << 20,
  readiness: () => ({ ready: true, reasons: [] }),
};
