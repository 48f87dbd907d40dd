/** A facade on librdkafka's mock cluster and an in-memory WAL whose storage fails on demand. */
import assert from "node:assert/strict";
import { type Config, defaultConfig } from "../../src/config.ts";
import { KafkaProducer } from "../../src/kafka/producer.ts";
import { Breaker } from "../../src/producer/breaker.ts";
import { Facade } from "../../src/producer/facade.ts";
import { KeyOrder } from "../../src/producer/key_order.ts";
import { ProduceError } from "../../src/producer/types.ts";
import type { Wal } from "../../src/wal/wal.ts";
import { type FaultStorage, openFaultyWal } from "./fault_storage.ts";

/** librdkafka's in-process mock cluster, one broker, with a short linger. */
export const MOCK_KAFKA = { "test.mock.num.brokers": "1", "linger.ms": "1" };

/** A facade and the parts it is built from; disposing of it closes them. */
export interface FacadeRig extends AsyncDisposable {
  facade: Facade;
  wal: Wal;
  /** The WAL's storage, which fails on demand. */
  storage: FaultStorage;
  breaker: Breaker;
  producer: KafkaProducer;
  /** The facade's key order, when the rig was built with `order: true`. */
  order: KeyOrder | null;
}

/** What a rig is built with: WAL settings, librdkafka properties, the breaker's open time. */
export interface FacadeRigOptions {
  wal?: Partial<Config["producer"]["wal"]>;
  kafka?: Record<string, string>;
  /** @default {60000} */
  breakerTimeoutMs?: number;
  /** producer.full_queue_wait. @default {1000} */
  fullQueueWaitMs?: number;
  /** `producer.wal.preserve_order: key` (with the idempotent producer it needs). @default {false} */
  order?: boolean;
}

/**
 * Builds a facade on the mock cluster.
 * @example await using r = await facadeRig({ wal: { mode: "always" } });
 */
export async function facadeRig(opts: FacadeRigOptions = {}): Promise<FacadeRig> {
  const config = defaultConfig();
  config.producer.wal = { ...config.producer.wal, inMemory: true, ...opts.wal };
  config.kafka = { ...MOCK_KAFKA, ...(opts.order && { "enable.idempotence": "true" }), ...opts.kafka };
  config.producer.fullQueueWaitMs = opts.fullQueueWaitMs ?? config.producer.fullQueueWaitMs;
  const { wal, storage } = await openFaultyWal(null, { maxBytes: config.producer.wal.maxBytes });
  const breaker = new Breaker({
    fails: 5,
    requests: 3,
    timeoutMs: opts.breakerTimeoutMs ?? 60_000,
    intervalMs: 0,
  });
  const producer = KafkaProducer.open({
    id: `facade-rig-${crypto.randomUUID().slice(0, 8)}`,
    config: config.kafka,
  });
  const order = opts.order ? new KeyOrder() : null;
  const facade = new Facade({ config, wal, breaker, producer, order });
  return {
    facade,
    order,
    wal,
    storage,
    breaker,
    producer,
    async [Symbol.asyncDispose]() {
      await producer.close(1000);
      await facade.settle();
      await wal.close();
      breaker.close();
    },
  };
}

/** The ProduceError `p` rejects with; fails the test when it resolves or rejects with something else. */
export async function refusal(p: Promise<unknown>): Promise<ProduceError> {
  try {
    await p;
  } catch (err) {
    assert.ok(err instanceof ProduceError, String(err));
    return err;
  }
  throw new Error("expected a ProduceError");
}
