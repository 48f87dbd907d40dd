/** A ProducerFacade for server tests: records what it is given and answers as the test decides. */
import type { AckLevel, Message } from "../../src/message.ts";
import {
  ProduceError,
  type ProduceResult,
  type ProducerFacade,
  type Readiness,
} from "../../src/producer/types.ts";

/** One call to `produce`, as the facade saw it. */
export interface Produced {
  message: Message;
  ack: AckLevel;
}

/** One call to `produceMany`: its ack level and how many messages it carried. */
export interface ProducedMany {
  ack: AckLevel;
  count: number;
}

/** Decides how one produce call ends: return a result, or throw to refuse. */
export type ProduceBehaviour = (message: Message, ack: AckLevel) => ProduceResult | Promise<ProduceResult>;

/** Records every message; by default accepts at once, with partition/offset for ack=kafka. */
export class FakeFacade implements ProducerFacade {
  readonly produced: Produced[] = [];
  /** Every `produceMany` call, in order; its messages are in `produced` too. */
  readonly producedMany: ProducedMany[] = [];
  maxMessageBytes: number;
  topics: string[];
  /** When set, `listTopics` rejects with it. */
  listError: Error | undefined;
  ready: Readiness = { ready: true, reasons: [] };
  behaviour: ProduceBehaviour = (message, ack) => this.accept(message, ack);
  private nextOffset = 0;

  constructor(opts: { maxMessageBytes?: number; topics?: string[] } = {}) {
    this.maxMessageBytes = opts.maxMessageBytes ?? 1_000_000;
    this.topics = opts.topics ?? [];
  }

  produce(message: Message, ack: AckLevel): Promise<ProduceResult> {
    this.produced.push({ message, ack });
    try {
      return Promise.resolve(this.behaviour(message, ack));
    } catch (err) {
      return Promise.reject(err);
    }
  }

  /** Each message as `produce` would take it, in order; a refusal other than a ProduceError rejects the batch. */
  async produceMany(
    messages: readonly Message[],
    ack: AckLevel,
  ): Promise<Array<ProduceResult | ProduceError>> {
    this.producedMany.push({ ack, count: messages.length });
    const outcomes = await Promise.allSettled(messages.map((m) => this.produce(m, ack)));
    return outcomes.map((o) => {
      if (o.status === "fulfilled") return o.value;
      if (o.reason instanceof ProduceError) return o.reason;
      throw o.reason;
    });
  }

  /** When set, what `roomForBatch` returns: batches wait for it before they are read. */
  room: Promise<unknown> | undefined;

  roomForBatch(): Promise<unknown> | undefined {
    return this.room;
  }

  listTopics(): Promise<string[]> {
    return this.listError ? Promise.reject(this.listError) : Promise.resolve([...this.topics]);
  }

  readiness(): Readiness {
    return this.ready;
  }

  /** The default behaviour: what a healthy facade answers. */
  accept(message: Message, ack: AckLevel): ProduceResult {
    if (ack === "kafka") {
      return { where: "kafka", partition: message.partition ?? 0, offset: String(this.nextOffset++) };
    }
    return { where: ack === "wal" ? "wal" : "queued" };
  }
}
